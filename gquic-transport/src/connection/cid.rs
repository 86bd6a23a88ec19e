//! Connection-ID management (RFC 9000 §5.1): the IDs we issue to the peer and the ones it
//! issues to us, retirement, and stateless-reset tokens (§10.3).

use std::collections::VecDeque;

use crate::error::TransportErrorCode;
use crate::wire::frame::NewConnectionId;
use crate::wire::{ConnectionId, ResetToken};

/// Something the endpoint must do for a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndpointEvent {
    /// Issue this many new connection IDs with [`super::Connection::issue_cids`].
    NeedCids(usize),
    /// The peer retired this connection ID; stop routing it to the connection.
    RetireCid(ConnectionId),
    /// The peer gave this stateless reset token: route unroutable datagrams ending in it to
    /// the connection (RFC 9000 §10.3.1).
    PeerResetToken(ResetToken),
    /// The peer connection ID this token came with is retired: stop routing on it (RFC 9000
    /// §10.3.1: tokens of retired IDs are not checked). Without it, a peer that rotates its
    /// IDs would grow the endpoint's token map for as long as the connection lives.
    PeerResetTokenRetired(ResetToken),
    /// The connection is drained; forget it.
    Drained,
    /// A TLS step waits to be taken out ([`super::Connection::take_tls_job`]).
    TlsReady,
}

/// Connection IDs by sequence number: a few entries (the active_connection_id_limit, RFC
/// 9000 §5.1.1), kept sorted in a vector. A `BTreeMap` would take a 500-byte node for them.
#[derive(Debug)]
struct SeqMap<V>(Vec<(u64, V)>);

impl<V> Default for SeqMap<V> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<V> SeqMap<V> {
    fn find(&self, seq: u64) -> Result<usize, usize> {
        self.0.binary_search_by_key(&seq, |(s, _)| *s)
    }

    fn insert(&mut self, seq: u64, v: V) {
        match self.find(seq) {
            Ok(i) => self.0[i].1 = v,
            Err(i) => self.0.insert(i, (seq, v)),
        }
    }

    fn get(&self, seq: &u64) -> Option<&V> {
        self.find(*seq).ok().map(|i| &self.0[i].1)
    }

    fn get_mut(&mut self, seq: &u64) -> Option<&mut V> {
        self.find(*seq).ok().map(|i| &mut self.0[i].1)
    }

    fn contains_key(&self, seq: &u64) -> bool {
        self.find(*seq).is_ok()
    }

    fn remove(&mut self, seq: &u64) -> Option<V> {
        self.find(*seq).ok().map(|i| self.0.remove(i).1)
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    /// Entries in sequence order.
    fn iter(&self) -> impl Iterator<Item = (&u64, &V)> {
        self.0.iter().map(|(s, v)| (s, v))
    }

    fn values(&self) -> impl Iterator<Item = &V> {
        self.0.iter().map(|(_, v)| v)
    }

    /// Entries with a sequence number below `end`.
    fn range(&self, end: std::ops::RangeTo<u64>) -> impl Iterator<Item = (&u64, &V)> {
        self.iter().take_while(move |(s, _)| **s < end.end)
    }

    /// Entries with a sequence number of `start` or more.
    fn from(&self, start: u64) -> impl Iterator<Item = (&u64, &V)> {
        self.iter().skip_while(move |(s, _)| **s < start)
    }

    fn shrink_to_fit(&mut self) {
        self.0.shrink_to_fit();
    }
}

/// The connection IDs of one connection.
#[derive(Debug)]
pub(super) struct CidState {
    /// Ours, by sequence number (sequence 0 is the handshake ID).
    local: SeqMap<(ConnectionId, ResetToken)>,
    next_local_seq: u64,
    /// The peer's, by sequence number, with their reset tokens.
    remote: SeqMap<(ConnectionId, Option<ResetToken>)>,
    /// The sequence number of the remote ID in use.
    remote_seq: u64,
    /// Highest Retire Prior To seen from the peer.
    retire_prior_to: u64,
    /// How many peer IDs we store (our active_connection_id_limit).
    limit: u64,
    /// The reset token the endpoint watches for us: that of the peer ID in use. RFC 9000
    /// §10.3.1: an endpoint must not check the tokens of IDs it has not used, or has retired.
    watched: Option<ResetToken>,
    /// Frames to send and endpoint events, boxed while any wait (an idle connection has
    /// none: 96 bytes inline before).
    pending: Option<Box<Pending>>,
}

/// What a connection's ID management has waiting.
#[derive(Debug, Default)]
struct Pending {
    /// NEW_CONNECTION_ID frames to send, by sequence number.
    new: VecDeque<u64>,
    /// RETIRE_CONNECTION_ID frames to send.
    retire: VecDeque<u64>,
    /// What the endpoint must do, in order.
    events: VecDeque<EndpointEvent>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.new.is_empty() && self.retire.is_empty() && self.events.is_empty()
    }
}

impl CidState {
    pub(super) fn new(
        local: ConnectionId,
        local_token: Option<ResetToken>,
        remote: ConnectionId,
        limit: u64,
    ) -> Self {
        let mut l = SeqMap::default();
        l.insert(0, (local, local_token.unwrap_or(ResetToken([0; 16]))));
        let mut r = SeqMap::default();
        r.insert(0, (remote, None));
        Self {
            local: l,
            next_local_seq: 1,
            remote: r,
            remote_seq: 0,
            retire_prior_to: 0,
            limit,
            watched: None,
            pending: None,
        }
    }

    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    /// Writes the IDs out (connection hibernation); refuses while frames or endpoint events
    /// wait.
    pub(super) fn pack(&self, p: &mut crate::pack::Packer) -> crate::pack::Packed {
        p.require(self.pending.as_deref().is_none_or(Pending::is_empty))?;
        p.u64(self.local.len() as u64);
        for (seq, (cid, token)) in self.local.iter() {
            p.u64(*seq);
            p.cid(cid);
            p.token(token);
        }
        p.u64(self.next_local_seq);
        p.u64(self.remote.len() as u64);
        for (seq, (cid, token)) in self.remote.iter() {
            p.u64(*seq);
            p.cid(cid);
            p.bool(token.is_some());
            if let Some(t) = token {
                p.token(t);
            }
        }
        p.u64(self.remote_seq);
        p.u64(self.retire_prior_to);
        p.u64(self.limit);
        p.bool(self.watched.is_some());
        if let Some(t) = &self.watched {
            p.token(t);
        }
        Some(())
    }

    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    /// Reads back what [`CidState::pack`] wrote.
    pub(super) fn unpack(u: &mut crate::pack::Unpacker<'_>) -> Option<Self> {
        let mut local = SeqMap::default();
        for _ in 0..u.u64()? {
            local.0.push((u.u64()?, (u.cid()?, u.token()?)));
        }
        let next_local_seq = u.u64()?;
        let mut remote = SeqMap::default();
        for _ in 0..u.u64()? {
            let seq = u.u64()?;
            let cid = u.cid()?;
            let token = if u.bool()? { Some(u.token()?) } else { None };
            remote.0.push((seq, (cid, token)));
        }
        // Written in sequence order; anything else is not ours.
        fn sorted<V>(v: &[(u64, V)]) -> bool {
            v.windows(2).all(|w| w[0].0 < w[1].0)
        }
        if !sorted(&local.0) || !sorted(&remote.0) {
            return None;
        }
        Some(Self {
            local,
            next_local_seq,
            remote,
            remote_seq: u.u64()?,
            retire_prior_to: u.u64()?,
            limit: u.u64()?,
            watched: if u.bool()? { Some(u.token()?) } else { None },
            pending: None,
        })
    }

    /// Idle-connection diet: gives back the spare capacity of the ID lists and queues.
    pub(super) fn shrink(&mut self) {
        self.local.shrink_to_fit();
        self.remote.shrink_to_fit();
        if self.pending.as_deref().is_some_and(Pending::is_empty) {
            self.pending = None;
        }
    }

    fn pending(&mut self) -> &mut Pending {
        self.pending.get_or_insert_with(Box::default)
    }

    /// Queues something for the endpoint to do.
    pub(super) fn push_event(&mut self, event: EndpointEvent) {
        self.pending().events.push_back(event);
    }

    /// The next thing for the endpoint to do.
    pub(super) fn pop_event(&mut self) -> Option<EndpointEvent> {
        self.pending.as_mut()?.events.pop_front()
    }

    /// The peer's connection ID to send to.
    pub(super) fn remote(&self) -> ConnectionId {
        self.remote
            .get(&self.remote_seq)
            .map(|(c, _)| *c)
            .unwrap_or(ConnectionId::EMPTY)
    }

    /// Replaces the handshake remote ID (the client adopting the server's choice).
    pub(super) fn set_initial_remote(&mut self, cid: ConnectionId) {
        self.remote.insert(0, (cid, None));
        self.watch_in_use();
    }

    /// Our IDs not retired: what the endpoint routes to this connection (with the Initial's
    /// ID), and unroutes when it drains.
    pub(super) fn local_ids(&self) -> Vec<ConnectionId> {
        self.local.values().map(|(c, _)| *c).collect()
    }

    /// The peer's reset token the endpoint watches for this connection, if any (announced
    /// with `PeerResetToken`, let go with `PeerResetTokenRetired`).
    pub(super) fn remote_tokens(&self) -> Option<ResetToken> {
        self.watched
    }

    /// Has the endpoint watch the token of the peer ID in use, and only that one (RFC 9000
    /// §10.3.1). Called whenever the ID in use or its token changes.
    fn watch_in_use(&mut self) {
        let in_use = self.remote.get(&self.remote_seq).and_then(|(_, t)| *t);
        if in_use == self.watched {
            return;
        }
        if let Some(old) = self.watched.take() {
            self.push_event(EndpointEvent::PeerResetTokenRetired(old));
        }
        if let Some(new) = in_use {
            self.push_event(EndpointEvent::PeerResetToken(new));
        }
        self.watched = in_use;
    }

    /// Records the reset token the server gave for its handshake ID (transport parameter).
    pub(super) fn set_initial_remote_token(&mut self, token: ResetToken) {
        if let Some(entry) = self.remote.get_mut(&0) {
            entry.1 = Some(token);
            self.watch_in_use();
        }
    }

    /// Whether `tail` (the last 16 bytes of a datagram) is the reset token of the peer ID in
    /// use (RFC 9000 §10.3.1: not of one we have not used, nor of one retired).
    pub(super) fn is_stateless_reset(&self, tail: &[u8; 16]) -> bool {
        self.watched == Some(ResetToken(*tail))
    }

    /// Adds IDs supplied by the endpoint and queues NEW_CONNECTION_ID frames for them.
    pub(super) fn issue(&mut self, cids: impl IntoIterator<Item = (ConnectionId, ResetToken)>) {
        for (cid, token) in cids {
            let seq = self.next_local_seq;
            self.next_local_seq += 1;
            self.local.insert(seq, (cid, token));
            self.pending().new.push_back(seq);
        }
    }

    /// The next NEW_CONNECTION_ID frame to send.
    #[inline]
    pub(super) fn poll_new(&mut self) -> Option<NewConnectionId> {
        while let Some(seq) = self.pending.as_mut().and_then(|p| p.new.pop_front()) {
            if let Some((id, reset_token)) = self.local.get(&seq) {
                return Some(NewConnectionId {
                    sequence: seq,
                    retire_prior_to: 0,
                    id: *id,
                    reset_token: *reset_token,
                });
            }
        }
        None
    }

    /// A NEW_CONNECTION_ID frame was lost.
    pub(super) fn on_new_lost(&mut self, seq: u64) {
        if self.local.contains_key(&seq) {
            self.pending().new.push_back(seq);
        }
    }

    /// The next RETIRE_CONNECTION_ID sequence number to send.
    pub(super) fn poll_retire(&mut self) -> Option<u64> {
        self.pending.as_mut()?.retire.pop_front()
    }

    /// A RETIRE_CONNECTION_ID frame was lost.
    pub(super) fn on_retire_lost(&mut self, seq: u64) {
        self.pending().retire.push_back(seq);
    }

    /// The peer sent NEW_CONNECTION_ID (RFC 9000 §19.15, §5.1.1, §5.1.2).
    pub(super) fn on_new_connection_id(
        &mut self,
        f: NewConnectionId,
    ) -> Result<(), TransportErrorCode> {
        if let Some((existing, token)) = self.remote.get(&f.sequence) {
            // A repeat must be identical (§19.15).
            if *existing != f.id || token.is_some_and(|t| t != f.reset_token) {
                return Err(TransportErrorCode::PROTOCOL_VIOLATION);
            }
            return Ok(());
        }
        if f.sequence < self.retire_prior_to {
            // Already retired: retire it straight away (§19.15).
            self.pending().retire.push_back(f.sequence);
            return Ok(());
        }
        self.remote.insert(f.sequence, (f.id, Some(f.reset_token)));
        if f.retire_prior_to > self.retire_prior_to {
            self.retire_prior_to = f.retire_prior_to;
            let retired: Vec<u64> = self
                .remote
                .range(..f.retire_prior_to)
                .map(|(s, _)| *s)
                .collect();
            for seq in retired {
                self.forget_remote(seq);
                self.pending().retire.push_back(seq);
            }
            if self.remote_seq < self.retire_prior_to {
                if let Some((&seq, _)) = self.remote.iter().next() {
                    self.remote_seq = seq;
                }
            }
            self.watch_in_use();
        }
        // §5.1.1: more than our active_connection_id_limit is CONNECTION_ID_LIMIT_ERROR.
        if self.remote.len() as u64 > self.limit {
            return Err(TransportErrorCode::CONNECTION_ID_LIMIT_ERROR);
        }
        Ok(())
    }

    /// The peer sent RETIRE_CONNECTION_ID (RFC 9000 §19.16).
    pub(super) fn on_retire(
        &mut self,
        seq: u64,
        packet_dcid: &ConnectionId,
    ) -> Result<(), TransportErrorCode> {
        if seq >= self.next_local_seq {
            return Err(TransportErrorCode::PROTOCOL_VIOLATION);
        }
        if let Some((cid, _)) = self.local.get(&seq) {
            // §19.16: it may not retire the ID the packet was sent to.
            if cid == packet_dcid {
                return Err(TransportErrorCode::PROTOCOL_VIOLATION);
            }
            self.push_event(EndpointEvent::RetireCid(*cid));
            self.local.remove(&seq);
            self.push_event(EndpointEvent::NeedCids(1));
        }
        Ok(())
    }

    /// Moves to the next peer connection ID not used yet and retires the one in use (RFC 9000
    /// §9.5, for a new path); `false` when the peer has given no spare ID.
    pub(super) fn rotate_remote(&mut self) -> bool {
        let Some((&next, _)) = self.remote.from(self.remote_seq + 1).next() else {
            return false;
        };
        let old = self.remote_seq;
        self.remote_seq = next;
        self.forget_remote(old);
        self.pending().retire.push_back(old);
        self.watch_in_use();
        true
    }

    /// Drops a peer ID (its token stops being watched at the next `watch_in_use`).
    fn forget_remote(&mut self, seq: u64) {
        self.remote.remove(&seq);
    }

    /// Whether NEW_CONNECTION_ID or RETIRE_CONNECTION_ID frames are waiting.
    pub(super) fn has_pending(&self) -> bool {
        self.pending
            .as_ref()
            .is_some_and(|p| !p.new.is_empty() || !p.retire.is_empty())
    }

    /// Whether the peer gave `cid` and it is not retired.
    #[cfg(test)]
    pub(super) fn has_remote(&self, cid: &ConnectionId) -> bool {
        self.remote.values().any(|(c, _)| c == cid)
    }

    /// How many of our IDs are active.
    #[cfg(test)]
    pub(super) fn local_count(&self) -> usize {
        self.local.len()
    }
}

impl super::Connection {
    /// Our connection IDs not retired (the endpoint routes them to this connection).
    pub(crate) fn routed_cids(&self) -> Vec<ConnectionId> {
        self.cids.local_ids()
    }

    /// The peer's stateless reset token the endpoint watches for this connection: that of
    /// the peer connection ID in use (RFC 9000 §10.3.1).
    pub(crate) fn peer_reset_tokens(&self) -> Option<ResetToken> {
        self.cids.remote_tokens()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ncid(seq: u64, rpt: u64, b: u8) -> NewConnectionId {
        NewConnectionId {
            sequence: seq,
            retire_prior_to: rpt,
            id: ConnectionId::new(&[b; 8]),
            reset_token: ResetToken([b; 16]),
        }
    }

    #[test]
    fn rfc9000_remote_ids_limit_and_retire_prior_to() {
        let mut s = CidState::new(
            ConnectionId::new(&[1; 8]),
            None,
            ConnectionId::new(&[2; 8]),
            3,
        );
        s.on_new_connection_id(ncid(1, 0, 3)).unwrap();
        s.on_new_connection_id(ncid(1, 0, 3)).unwrap();
        assert_eq!(
            s.on_new_connection_id(ncid(1, 0, 4)),
            Err(TransportErrorCode::PROTOCOL_VIOLATION)
        );
        s.on_new_connection_id(ncid(2, 0, 5)).unwrap();
        assert_eq!(
            s.on_new_connection_id(ncid(3, 0, 6)),
            Err(TransportErrorCode::CONNECTION_ID_LIMIT_ERROR)
        );
        // Retire Prior To 2: sequences 0 and 1 go; we switch to 2 and send two RETIREs.
        let mut s = CidState::new(
            ConnectionId::new(&[1; 8]),
            None,
            ConnectionId::new(&[2; 8]),
            3,
        );
        s.on_new_connection_id(ncid(1, 0, 3)).unwrap();
        s.on_new_connection_id(ncid(2, 2, 5)).unwrap();
        assert_eq!(s.remote(), ConnectionId::new(&[5; 8]));
        assert_eq!(
            (s.poll_retire(), s.poll_retire(), s.poll_retire()),
            (Some(0), Some(1), None)
        );
        assert!(s.is_stateless_reset(&[5; 16]));
        assert!(!s.is_stateless_reset(&[3; 16]));
    }

    #[test]
    fn rfc9000_retire_local_ids() {
        let mut s = CidState::new(
            ConnectionId::new(&[1; 8]),
            None,
            ConnectionId::new(&[2; 8]),
            3,
        );
        s.issue([(ConnectionId::new(&[7; 8]), ResetToken([7; 16]))]);
        assert_eq!(s.poll_new().map(|f| f.sequence), Some(1));
        assert_eq!(
            s.on_retire(5, &ConnectionId::new(&[1; 8])),
            Err(TransportErrorCode::PROTOCOL_VIOLATION)
        );
        assert_eq!(
            s.on_retire(1, &ConnectionId::new(&[7; 8])),
            Err(TransportErrorCode::PROTOCOL_VIOLATION),
            "not the ID in use"
        );
        s.on_retire(1, &ConnectionId::new(&[1; 8])).unwrap();
        assert_eq!(
            s.pop_event(),
            Some(EndpointEvent::RetireCid(ConnectionId::new(&[7; 8])))
        );
        assert_eq!(s.pop_event(), Some(EndpointEvent::NeedCids(1)));
        assert_eq!(s.local_count(), 1);
    }
}
