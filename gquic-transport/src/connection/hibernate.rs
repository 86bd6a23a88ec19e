//! Hibernation: an idle server connection packed into a few hundred bytes (`gquic-bench idle`).
//!
//! A compacted connection ([`Connection::compact`]) still keeps about 2 KB of live state in its
//! struct and some 800 bytes around it (connection-ID lists, the congestion controller, the
//! key source, the TLS summary). Once it is fully quiet, the endpoint packs all of it
//! ([`crate::pack`]) and keeps only the bytes; the first datagram, timer or application call
//! for the connection unpacks it again, and the 1-RTT keys are expanded from the secrets as
//! after compaction.
//!
//! Only a connection with nothing going on sleeps: handshake confirmed, the TLS session
//! finished (a server's at once, a client's at its first quiet second), no stream holding
//! data, nothing in flight, queued or unacknowledged, no path validation or MTU search, 1-RTT
//! keys asleep, no qlog trace. Each piece refuses to pack otherwise, and the connection simply
//! stays awake. A client's own state (the name it dialed, where NEW_TOKEN tokens go) is kept
//! as it is, boxed beside the bytes.
//!
//! The congestion controller (and its delivery-rate sampler) is the one piece not kept: a
//! connection wakes with a new controller at the initial window, as a TCP sender restarts its
//! window after an idle period longer than its retransmission timeout (RFC 9002 §7.8 lets a
//! sender reduce its window when it was not using it; RFC 5681 §4.1).

use std::sync::Arc;
use std::time::Instant;

use super::{idle, Connection, ConnectionStats, State};
use crate::config::TransportConfig;
use crate::crypto::KeyPhase;
use crate::pack::{Packed, Packer, Unpacker};
use crate::types::Side;
use crate::wire::Version;

/// A connection packed while it sleeps.
pub(crate) struct Hibernated {
    blob: Box<[u8]>,
    /// When it went to sleep: the instants in `blob` count from here.
    base: Instant,
    /// When it must wake even if nothing comes ([`Connection::poll_timeout`]).
    deadline: Option<Instant>,
    config: Arc<TransportConfig>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    /// Client-only state, not packed (`None` on a server).
    extras: Option<Box<idle::Extras>>,
}

impl std::fmt::Debug for Hibernated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hibernated")
            .field("bytes", &self.blob.len())
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl Drop for Hibernated {
    fn drop(&mut self) {
        // The bytes hold the 1-RTT traffic secrets.
        self.blob.fill(0);
        std::hint::black_box(&self.blob);
    }
}

fn pack_stats(p: &mut Packer, s: &ConnectionStats) {
    for v in [
        s.datagrams_sent,
        s.datagrams_received,
        s.bytes_sent,
        s.bytes_received,
        s.packets_sent,
        s.packets_received,
        s.packets_lost,
        s.packets_dropped,
        s.key_updates,
        s.migrations,
        s.paths_validated,
        s.ecn_marked_received,
        s.ecn_ce_received,
        s.ecn_ce,
    ] {
        p.u64(v);
    }
}

fn unpack_stats(u: &mut Unpacker<'_>) -> Option<ConnectionStats> {
    Some(ConnectionStats {
        datagrams_sent: u.u64()?,
        datagrams_received: u.u64()?,
        bytes_sent: u.u64()?,
        bytes_received: u.u64()?,
        packets_sent: u.u64()?,
        packets_received: u.u64()?,
        packets_lost: u.u64()?,
        packets_dropped: u.u64()?,
        key_updates: u.u64()?,
        migrations: u.u64()?,
        paths_validated: u.u64()?,
        ecn_marked_received: u.u64()?,
        ecn_ce_received: u.u64()?,
        ecn_ce: u.u64()?,
    })
}

impl Connection {
    /// Whether the connection looks quiet enough to try [`Connection::hibernate`]: the
    /// cheap checks, made after every timer.
    pub(crate) fn may_hibernate(&self) -> bool {
        self.config.hibernate
            && self.state == State::Established
            && self.handshake_confirmed
            && self.compact_at.is_none()
            && self.events.is_empty()
            && self.streams.is_idle()
            && self.bytes_in_flight() == 0
            && !self.spaces[super::SpaceId::Data as usize].ack_pending()
            && self.one_rtt.as_ref().is_some_and(KeyPhase::is_asleep)
            && matches!(self.tls, super::tls_state::Tls::Done(_))
    }

    /// Packs the connection to sleep, or gives it back if any of its state is not quiet
    /// (see the module documentation).
    pub(crate) fn hibernate(
        mut self: Box<Self>,
        now: Instant,
    ) -> Result<Box<Hibernated>, Box<Connection>> {
        let deadline = self.poll_timeout();
        let mut p = Packer::new(now);
        if self.pack(&mut p).is_none() {
            return Err(self);
        }
        let extras = self.extras.take();
        tracing::trace!(parent: &self.span, bytes = p.buf.len(), "hibernating");
        Ok(Box::new(Hibernated {
            blob: p.buf.into_boxed_slice(),
            base: now,
            deadline,
            config: self.config.clone(),
            provider: self.provider.clone(),
            extras,
        }))
    }

    fn pack(&self, p: &mut Packer) -> Packed {
        p.require(
            self.may_hibernate()
                && !self.receiving_0rtt
                && !self.handshake_done_pending
                && self.close.is_none()
                && !self.close_pending
                && self.discard_old_key_at.is_none()
                && self.incoming_path.is_none()
                && self.extras.as_ref().is_none_or(|e| e.early_1rtt.is_empty())
                && self.queued.is_none()
                && self.scratch.is_none()
                && !self.qlog.enabled(),
        )?;
        // The counters first: `Hibernated::stats` reads only them.
        pack_stats(p, &self.stats);
        p.bool(self.side.is_server());
        p.u64(u64::from(self.version.0));
        p.u64(self.tls_space as u64);
        p.cid(&self.local_cid);
        p.cid(&self.original_dst_cid);
        p.bool(self.remote_cid_set);
        p.bool(self.drained_reported);
        p.addr(self.remote);
        p.opt_ip(self.local_ip);
        p.bool(self.path_validated);
        p.u64(self.bytes_received);
        p.u64(self.bytes_sent);
        p.opt_time(self.first_rtt_sample);
        p.opt_time(self.pacing_until);
        p.u64(u64::from(self.pto_count));
        p.u64(self.max_datagram_size);
        p.opt_dur(self.idle_timeout);
        p.time(self.idle_since);
        p.bool(self.eliciting_since_receive);
        p.opt_time(self.last_ack_eliciting_sent);
        p.u64(self.key_generation);
        p.bool(self.local_key_update);
        p.time(self.created);
        p.opt_dur(self.handshake_duration);
        self.tls.pack(p)?;
        self.spaces.pack(p)?;
        self.one_rtt.as_ref()?.pack(p)?;
        self.zero_rtt.pack(p)?;
        self.versions.pack(p)?;
        p.bool(self.peer_params.is_some());
        if let Some(pp) = &self.peer_params {
            pp.pack(p);
        }
        self.cids.pack(p)?;
        self.rtt.pack(p);
        self.pacer.pack(p);
        self.mtud.pack(p)?;
        self.streams.pack(p)?;
        self.migration.pack(p)?;
        self.ecn.pack(p);
        Some(())
    }
}

impl Hibernated {
    /// When the connection must wake even if nothing comes for it.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The connection's counters, read without waking it.
    pub(crate) fn stats(&self) -> ConnectionStats {
        unpack_stats(&mut Unpacker::new(&self.blob, self.base)).unwrap_or_default()
    }

    /// A copy of the connection as it would wake, to read (it stays packed); `None` only if
    /// the bytes do not read back.
    pub(crate) fn peek(&self) -> Option<Box<Connection>> {
        let mut c = self.unpack(&mut Unpacker::new(&self.blob, self.base))?;
        c.extras = self.extras.as_ref().map(|e| Box::new(e.copy_quiet()));
        Some(c)
    }

    /// Its packed size in bytes.
    #[cfg(test)]
    pub(crate) fn packed_len(&self) -> usize {
        self.blob.len()
    }

    /// Unpacks the connection at `now` (if known: an application call brings no time). `None`
    /// only if the bytes do not read back, which would be a bug here: the caller then drops
    /// the connection.
    pub(crate) fn wake(mut self, now: Option<Instant>) -> Option<Box<Connection>> {
        let mut u = Unpacker::new(&self.blob, self.base);
        let mut conn = self.unpack(&mut u);
        if let Some(c) = conn.as_mut() {
            c.extras = self.extras.take();
            // It may sleep again after a quiet second, as after any activity.
            c.compact_at =
                Some(now.unwrap_or(self.base).max(self.base) + super::recv::COMPACT_AFTER);
        }
        debug_assert!(conn.is_some(), "a hibernated connection did not unpack");
        let conn = conn.filter(|_| u.is_done())?;
        tracing::trace!(parent: &conn.span, "woke from hibernation");
        Some(conn)
    }

    fn unpack(&self, u: &mut Unpacker<'_>) -> Option<Box<Connection>> {
        let stats = unpack_stats(u)?;
        let side = if u.bool()? {
            Side::Server
        } else {
            Side::Client
        };
        let version = Version(u.u32()?);
        let tls_space = match u.u64()? {
            0 => super::SpaceId::Initial,
            1 => super::SpaceId::Handshake,
            2 => super::SpaceId::Data,
            _ => return None,
        };
        let local_cid = u.cid()?;
        let original_dst_cid = u.cid()?;
        let remote_cid_set = u.bool()?;
        let drained_reported = u.bool()?;
        let remote = u.addr()?;
        let local_ip = u.opt_ip()?;
        let path_validated = u.bool()?;
        let bytes_received = u.u64()?;
        let bytes_sent = u.u64()?;
        let first_rtt_sample = u.opt_time()?;
        let pacing_until = u.opt_time()?;
        let pto_count = u.u32()?;
        let max_datagram_size = u.u64()?;
        let idle_timeout = u.opt_dur()?;
        let idle_since = u.time()?;
        let eliciting_since_receive = u.bool()?;
        let last_ack_eliciting_sent = u.opt_time()?;
        let key_generation = u.u64()?;
        let local_key_update = u.bool()?;
        let created = u.time()?;
        let handshake_duration = u.opt_dur()?;
        let tls = super::tls_state::Tls::unpack(u, &self.provider)?;
        let spaces = super::spaces::Spaces::unpack(u)?;
        let one_rtt = KeyPhase::unpack(u, &self.provider)?;
        let zero_rtt = super::zero_rtt::ZeroRtt::unpack(u)?;
        let versions = super::version::VersionState::unpack(u)?;
        let peer_params = if u.bool()? {
            Some(super::peer::PeerParams::unpack(u)?)
        } else {
            None
        };
        let cids = super::cid::CidState::unpack(u)?;
        let rtt = crate::recovery::RttEstimator::unpack(u)?;
        let pacer = crate::recovery::pacing::Pacer::unpack(u)?;
        let mtud = super::mtud::Mtud::unpack(u)?;
        let streams = super::streams::Streams::unpack(u)?;
        let migration = super::migration::Migration::unpack(u)?;
        let ecn = super::ecn::Ecn::unpack(u)?;
        // RFC 9002 §7.8: the window restarts after the idle period (module documentation).
        let cc = self.config.congestion.build(self.base, max_datagram_size);
        let rate = super::migration::rate_sampler_for(cc.as_ref());
        let span = idle::conn_span(side, remote, local_cid, original_dst_cid);
        if let Some(alpn) = tls.alpn_protocol() {
            span.record(
                "alpn",
                tracing::field::display(String::from_utf8_lossy(alpn)),
            );
        }
        Some(Box::new(Connection {
            scratch: None::<Box<idle::Scratch>>,
            // Set by `wake`.
            compact_at: None,
            side,
            version,
            config: self.config.clone(),
            tls,
            state: State::Established,
            spaces,
            one_rtt: Some(one_rtt),
            zero_rtt,
            versions,
            receiving_0rtt: false,
            tls_space,
            handshake_confirmed: true,
            handshake_done_pending: false,
            peer_params,
            local_cid,
            cids,
            // Per-datagram scratch, set again by the next datagram.
            datagram_tail: None,
            drained_reported,
            original_dst_cid,
            remote_cid_set,
            provider: self.provider.clone(),
            remote,
            local_ip,
            path_validated,
            bytes_received,
            bytes_sent,
            rtt,
            first_rtt_sample,
            cc,
            rate,
            pacer,
            pacing_until,
            pto_count,
            max_datagram_size,
            mtud,
            idle_timeout,
            idle_since,
            eliciting_since_receive,
            last_ack_eliciting_sent,
            key_generation,
            discard_old_key_at: None,
            streams,
            events: Default::default(),
            close: None,
            close_pending: false,
            migration,
            ecn,
            incoming_ecn: None,
            incoming_path: None,
            stats,
            extras: None,
            queued: None,
            span,
            qlog: crate::qlog::Qlog::default(),
            local_key_update,
            created,
            handshake_duration,
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::connection::tests::established;
    use crate::Dir;

    /// Packs `conn` as the endpoint would, at `now`.
    fn packed(conn: &Connection, now: Instant) -> Option<Vec<u8>> {
        let mut p = Packer::new(now);
        conn.pack(&mut p)?;
        Some(p.buf)
    }

    /// Every field written is read back: packing what was unpacked gives the same bytes.
    /// And the unpacked connection carries on (both ways, across a key update).
    #[test]
    fn an_unpacked_connection_packs_to_the_same_bytes_and_carries_on() {
        let mut p = established();
        let now = p.now;
        assert!(packed(&p.server, now).is_none(), "not quiet yet: refused");
        p.drive_for(Duration::from_secs(3));
        let now = p.now;
        assert!(p.server.may_hibernate());
        // No endpoint here to take the connection-ID events.
        while p.server.poll_endpoint_event().is_some() {}
        let local_ip = Some(std::net::IpAddr::from([192, 0, 2, 7]));
        p.server.local_ip = local_ip;
        let first = packed(&p.server, now).expect("an idle server packs");
        let before = (
            p.server.stats(),
            p.server.rtt(),
            p.server.remote_connection_id(),
        );
        let asleep = Box::new(p.server).hibernate(now).expect("hibernates");
        assert_eq!(asleep.packed_len(), first.len());
        assert_eq!(asleep.stats(), before.0, "counters read without waking");
        let mut woken = (*asleep).wake(Some(now)).expect("unpacks");
        assert_eq!(
            woken.compact_at,
            Some(now + super::super::recv::COMPACT_AFTER)
        );
        woken.compact_at = None;
        assert_eq!(packed(&woken, now).as_deref(), Some(&first[..]));
        assert_eq!(woken.local_ip, local_ip);
        assert_eq!(
            (woken.stats(), woken.rtt(), woken.remote_connection_id()),
            before
        );
        p.server = *woken;
        // The client updates its keys, then both sides send on new streams.
        p.client
            .initiate_key_update()
            .expect("the client may update");
        let up = p.client.open(Dir::Bi).unwrap();
        let data = Bytes::from(vec![7u8; 100_000]);
        let mut written = 0;
        let mut got = Vec::new();
        for _ in 0..200 {
            while written < data.len() {
                match p.client.write(up, data.slice(written..)) {
                    Ok(n) => written += n,
                    Err(_) => break,
                }
            }
            if written == data.len() {
                let _ = p.client.finish(up);
            }
            p.drive_for(Duration::from_millis(20));
            let now = p.now;
            let _ = p.server.accept(Dir::Bi);
            while let Ok(Some(d)) = p.server.read(up, usize::MAX, now) {
                got.extend_from_slice(&d);
            }
            if got.len() == data.len() {
                break;
            }
        }
        assert!(
            got == data,
            "{} of {} bytes after waking",
            got.len(),
            data.len()
        );
        assert!(p.server.stats().key_updates >= 1);
        // The server ends its half of the client's stream, and sends on one of its own.
        p.server.finish(up).unwrap();
        let down = p.server.open(Dir::Uni).unwrap();
        p.server.write(down, Bytes::from_static(b"back")).unwrap();
        p.server.finish(down).unwrap();
        p.drive_for(Duration::from_millis(100));
        let now = p.now;
        assert_eq!(p.client.accept(Dir::Uni), Some(down));
        let back = p.client.read(down, usize::MAX, now).unwrap().unwrap();
        assert_eq!(&back[..], b"back");
        // Quiet again: it packs again.
        p.drive_for(Duration::from_secs(3));
        while p.server.poll_endpoint_event().is_some() {}
        assert!(packed(&p.server, p.now).is_some(), "packs again once quiet");
    }

    /// Quiet open streams are packed too (an HTTP/3 connection's control streams): the same
    /// bytes again after unpacking, and the streams carry on.
    #[test]
    fn quiet_open_streams_are_packed_and_carry_on() {
        let mut p = established();
        let bi = p.client.open(Dir::Bi).unwrap();
        p.client.write(bi, Bytes::from_static(b"ping ")).unwrap();
        let uni = p.server.open(Dir::Uni).unwrap();
        p.server
            .write(uni, Bytes::from_static(b"settings"))
            .unwrap();
        p.drive_for(Duration::from_millis(100));
        let now = p.now;
        assert_eq!(p.server.accept(Dir::Bi), Some(bi));
        let first = p.server.read(bi, usize::MAX, now).unwrap().unwrap();
        assert_eq!(&first[..], b"ping ");
        assert_eq!(p.client.accept(Dir::Uni), Some(uni));
        p.client.read(uni, usize::MAX, now).unwrap().unwrap();
        p.drive_for(Duration::from_secs(3));
        while p.server.poll_endpoint_event().is_some() {}
        let now = p.now;
        let bytes = packed(&p.server, now).expect("quiet open streams pack");
        let mut woken = Hibernated {
            blob: bytes.clone().into_boxed_slice(),
            base: now,
            deadline: None,
            config: p.server.config.clone(),
            provider: p.server.provider.clone(),
            extras: None,
        }
        .wake(Some(now))
        .expect("unpacks");
        assert_eq!(woken.open_streams(), 2);
        woken.compact_at = None;
        assert_eq!(packed(&woken, now), Some(bytes));
        p.server = *woken;
        p.client.write(bi, Bytes::from_static(b"pong")).unwrap();
        p.client.finish(bi).unwrap();
        p.server.write(uni, Bytes::from_static(b" more")).unwrap();
        p.drive_for(Duration::from_millis(100));
        let now = p.now;
        assert_eq!(
            &p.server.read(bi, usize::MAX, now).unwrap().unwrap()[..],
            b"pong"
        );
        assert_eq!(
            &p.client.read(uni, usize::MAX, now).unwrap().unwrap()[..],
            b" more"
        );
    }

    /// A client lets its rustls session go at its first quiet second (the tickets are in)
    /// and packs too, its own state (the dialed name) kept beside the bytes; a session ticket
    /// after that is ignored, the connection goes on.
    #[test]
    fn a_client_finishes_its_tls_session_when_quiet_and_packs() {
        use crate::connection::tests::{forge, frame_bytes, SERVER_ADDR};
        use crate::connection::SpaceId;
        let mut p = established();
        assert!(!p.client.tls_finished(), "tickets may still come");
        p.drive_for(Duration::from_secs(3));
        assert!(p.client.tls_finished());
        assert!(p.client.may_hibernate());
        while p.client.poll_endpoint_event().is_some() {}
        let now = p.now;
        let bytes = packed(&p.client, now).expect("an idle client packs");
        let asleep = Box::new(p.client).hibernate(now).expect("hibernates");
        let mut woken = (*asleep).wake(Some(now)).expect("unpacks");
        assert_eq!(
            woken.server_name(),
            Some("localhost"),
            "the dialed name kept"
        );
        woken.compact_at = None;
        assert_eq!(packed(&woken, now), Some(bytes));
        p.client = *woken;
        // A late session ticket (a CRYPTO frame in 1-RTT): ignored.
        let offset = p.client.spaces[SpaceId::Data as usize].crypto_read_offset();
        let frame = crate::wire::Frame::Crypto {
            offset,
            data: Bytes::from_static(&[4, 0, 0, 1, 0]),
        };
        let d = forge(&mut p.server, SpaceId::Data, &frame_bytes(&[frame]));
        let now = p.now;
        p.client
            .handle_datagram(now, SERVER_ADDR, bytes::BytesMut::from(&d[..]));
        let up = p.client.open(Dir::Uni).unwrap();
        p.client.write(up, Bytes::from_static(b"after")).unwrap();
        p.client.finish(up).unwrap();
        p.drive_for(Duration::from_millis(100));
        let now = p.now;
        assert_eq!(p.server.accept(Dir::Uni), Some(up));
        assert_eq!(
            &p.server.read(up, usize::MAX, now).unwrap().unwrap()[..],
            b"after"
        );
        assert!(
            !p.client_events
                .iter()
                .any(|e| matches!(e, crate::connection::Event::ConnectionLost(_))),
            "{:?}",
            p.client_events
        );
    }

    /// With hibernation off, an idle server stays unpacked.
    #[test]
    fn hibernation_can_be_turned_off() {
        let mut p = established();
        let mut t = (*p.server.config).clone();
        t.hibernate(false);
        p.server.config = Arc::new(t);
        p.drive_for(Duration::from_secs(3));
        assert!(!p.server.may_hibernate());
    }
}
