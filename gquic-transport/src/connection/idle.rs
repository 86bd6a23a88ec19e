//! The idle-connection diet: what a quiet connection gives back (busy-time buffers, the next
//! key generation, the current 1-RTT keys) and how it wakes.

use std::time::Instant;

use super::{recv, Connection};
use crate::crypto::KeyPhase;

impl Connection {
    /// Whether the connection is compacted: nothing in flight, next-generation keys dropped.
    #[cfg(test)]
    pub(crate) fn is_compacted(&self) -> bool {
        self.one_rtt.as_ref().is_some_and(|k| k.is_hibernating())
    }

    /// Whether the handshake-time and client-only state is held ([`Extras`]).
    #[cfg(test)]
    pub(crate) fn holds_extras(&self) -> bool {
        self.extras.is_some()
    }

    /// Whether the current 1-RTT keys are dropped until the connection wakes (idle diet).
    #[cfg(test)]
    pub(crate) fn keys_asleep(&self) -> bool {
        self.one_rtt.as_ref().is_some_and(KeyPhase::is_asleep)
    }

    /// Whether packets of stream data are sealed from the streams' buffers (the 1-RTT key
    /// for what we send came from the connection's key source and was found to be TLS's).
    #[cfg(all(test, feature = "aws-lc-rs", not(feature = "ring")))]
    pub(crate) fn seals_split(&self) -> bool {
        self.one_rtt.as_ref().is_some_and(KeyPhase::seals_split)
    }

    /// Expands hibernating 1-RTT keys again before a packet is sealed or opened, and plans the
    /// next compaction (a peer's packet that only gets an ACK back leaves nothing in flight).
    pub(super) fn wake_keys(&mut self, now: Instant) {
        if self.one_rtt.as_mut().is_some_and(KeyPhase::wake) {
            tracing::trace!("1-RTT keys expanded again");
            self.compact_at.get_or_insert(now + recv::COMPACT_AFTER);
        }
    }

    /// When to send a PING to keep a quiet connection alive (RFC 9000 §10.1.2; also its NAT
    /// bindings): `TransportConfig::keep_alive_interval` after the last ack-eliciting packet
    /// sent or the last packet received, once the handshake is confirmed.
    pub(super) fn keep_alive_at(&self) -> Option<Instant> {
        let interval = self.config.keep_alive_interval?;
        if self.state != super::State::Established
            || !self.handshake_confirmed
            || self.migration.ping_pending
        {
            return None;
        }
        Some(self.last_activity().unwrap_or(self.created) + interval)
    }

    /// When the connection last received a packet (in order) or sent an ack-eliciting one.
    pub(super) fn last_activity(&self) -> Option<Instant> {
        let received = self.spaces[super::SpaceId::Data as usize].largest_received_time;
        [self.last_ack_eliciting_sent, received]
            .into_iter()
            .flatten()
            .max()
    }

    /// Idle-connection diet: once nothing is in flight, the buffers a busy connection keeps
    /// for reuse (sent-packet tracking, ACK scratch space, event and datagram queues, the
    /// streams' queues when empty) and the CRYPTO streams (their offsets kept) go back to the
    /// allocator. A connection that is
    /// still sending keeps them.
    pub(super) fn compact(&mut self) {
        // During the handshake there is nothing to gain, and a server's buffered early 1-RTT
        // packets (RFC 9001 §5.7) are data the client counts as sent: they wait for the
        // client's Finished, however long the handshake takes.
        if self.bytes_in_flight() > 0 || !self.handshake_confirmed {
            return;
        }
        tracing::trace!("compacting an idle connection");
        // A client has had the server's session tickets by now (a server let its session go
        // when the handshake completed).
        self.tls.finish();
        for space in self.spaces.iter_mut() {
            space.sent.shrink();
            space.release_crypto();
            // One range of received packet numbers (the usual) goes back inline: 192 bytes.
            space.received.shrink();
            space.eliciting_received.shrink();
        }
        self.scratch = None;
        // The versions offered or supported matter only until the handshake settles the
        // version (RFC 9368 §4, §6): confirmed, it has.
        self.versions.available = Vec::new();
        if self.extras.as_ref().is_some_and(|e| e.is_empty()) {
            self.extras = None;
        }
        if let Some(k) = self.one_rtt.as_mut() {
            k.hibernate();
        }
        self.events.shrink_to_fit();
        self.streams.release_queues();
        self.zero_rtt.shrink();
        self.cids.shrink();
        if self.queued.as_ref().is_some_and(|q| q.is_empty()) {
            self.queued = None;
        }
    }
}

/// A connection's tracing span (when it is created, and again when it wakes from
/// hibernation); the ALPN is recorded when the handshake completes.
pub(super) fn conn_span(
    side: crate::types::Side,
    remote: std::net::SocketAddr,
    local_cid: crate::wire::ConnectionId,
    original_dst_cid: crate::wire::ConnectionId,
) -> tracing::Span {
    tracing::debug_span!(
        "conn",
        side = ?side,
        remote = %remote,
        cid = %local_cid,
        odcid = %original_dst_cid,
        alpn = tracing::field::Empty
    )
}

/// Handshake-time and client-only state, boxed: an idle server connection holds none of it
/// (about 150 bytes inline otherwise).
#[derive(Default)]
pub(super) struct Extras {
    /// Server: 1-RTT packets that arrived before the handshake completed, with their ECN
    /// codepoints, handled once the client's Finished is in (RFC 9001 §5.7).
    pub(super) early_1rtt: Vec<(crate::wire::PartialDecode, Option<super::EcnCodepoint>)>,
    /// Client: the token its Initials carry (from a Retry or an earlier NEW_TOKEN), and the
    /// Source Connection ID of the Retry it followed (RFC 9000 §17.2.5.2, §7.3).
    pub(super) token: bytes::Bytes,
    pub(super) retry_src_cid: Option<crate::wire::ConnectionId>,
    /// Client: where tokens from NEW_TOKEN frames go, for the next connection to this server.
    pub(super) token_store: Option<std::sync::Arc<dyn crate::config::TokenStore>>,
    /// Server: a NEW_TOKEN token to send once the handshake is confirmed (RFC 9000 §8.1.3).
    pub(super) new_token: Option<bytes::Bytes>,
    /// The name a client connection checks the server's certificate against.
    pub(super) dialed_name: Option<String>,
    /// TLS steps handed out while the handshake runs (`tls_job`).
    pub(super) offload: Option<Box<super::tls_job::Offload>>,
}

impl Extras {
    /// A copy for a connection read while it hibernates (which holds no early 1-RTT
    /// packets).
    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    pub(super) fn copy_quiet(&self) -> Self {
        Self {
            early_1rtt: Vec::new(),
            token: self.token.clone(),
            retry_src_cid: self.retry_src_cid,
            token_store: self.token_store.clone(),
            new_token: self.new_token.clone(),
            dialed_name: self.dialed_name.clone(),
            offload: None,
        }
    }

    fn is_empty(&self) -> bool {
        self.early_1rtt.is_empty()
            && self.token.is_empty()
            && self.retry_src_cid.is_none()
            && self.token_store.is_none()
            && self.new_token.is_none()
            && self.dialed_name.is_none()
            && self.offload.is_none()
    }
}

/// PATH_RESPONSE frames and datagrams waiting: boxed while any wait (a connection that never
/// uses datagrams or sees a new path pays 8 bytes for them, 112 before).
#[derive(Default)]
pub(crate) struct Queued {
    /// PATH_RESPONSE frames to send, with the address the challenge came from.
    pub(super) path_responses: std::collections::VecDeque<([u8; 8], std::net::SocketAddr)>,
    /// Received datagrams for the application, and their total size (RFC 9221).
    pub(super) datagrams_in: std::collections::VecDeque<bytes::Bytes>,
    pub(super) datagrams_in_bytes: usize,
    /// Datagrams waiting to be sent, and their total size.
    pub(crate) datagrams_out: std::collections::VecDeque<bytes::Bytes>,
    pub(super) datagrams_out_bytes: usize,
}

impl Queued {
    fn is_empty(&self) -> bool {
        self.path_responses.is_empty()
            && self.datagrams_in.is_empty()
            && self.datagrams_out.is_empty()
    }
}

/// Vectors a connection reuses across ACK frames (no allocation per ACK), let go while it is
/// idle (see `Connection::compact`).
#[derive(Default)]
pub(super) struct Scratch {
    /// The packets an ACK frame newly acknowledges.
    pub(super) acked: Vec<(
        u64,
        crate::recovery::sent::SentPacket<super::spaces::SentInfo>,
    )>,
    /// Their packet numbers, for persistent congestion (RFC 9002 §7.6.2).
    pub(super) acked_pns: Vec<u64>,
    /// The in-flight ones, for the congestion controller.
    pub(super) acked_cc: Vec<crate::recovery::congestion::AckedPacket>,
    /// The ranges of an ACK frame we send.
    pub(super) ack: Vec<std::ops::RangeInclusive<u64>>,
    /// Spill vectors of sent packets' stream chunks, given back when the packets were
    /// acknowledged or lost, for the next packets that carry several chunks.
    pub(super) chunk_spills: Vec<Vec<super::streams::StreamChunk>>,
}

impl Connection {
    /// The handshake-time and client-only state, if any.
    pub(super) fn extras(&self) -> Option<&Extras> {
        self.extras.as_deref()
    }

    /// The handshake-time and client-only state, allocated on first use.
    pub(super) fn extras_mut(&mut self) -> &mut Extras {
        self.extras.get_or_insert_with(Box::default)
    }

    /// Client: the Source Connection ID of the Retry it followed.
    pub(super) fn retry_src_cid(&self) -> Option<crate::wire::ConnectionId> {
        self.extras()?.retry_src_cid
    }

    /// The PATH_RESPONSE and datagram queues, allocated on first use.
    pub(crate) fn queued_mut(&mut self) -> &mut Queued {
        self.queued.get_or_insert_with(Box::default)
    }

    /// The reused vectors, allocated again if they were let go.
    pub(super) fn scratch(&mut self) -> &mut Scratch {
        self.scratch.get_or_insert_with(Box::default)
    }
}

#[cfg(test)]
mod tests {
    /// An idle connection's own struct is most of what it costs (`gquic-bench idle`): a field
    /// that is large and mostly unused belongs behind a `Box` or in the handshake-time state.
    #[test]
    fn an_idle_connection_struct_stays_under_2_kib() {
        let size = std::mem::size_of::<super::Connection>();
        assert!(size <= 2048, "Connection is {size} bytes");
    }
}
