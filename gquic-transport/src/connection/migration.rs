//! Connection migration (RFC 9000 §9) and path validation (§8.2).
//!
//! - A server whose client shows up at a new address (NAT rebinding, or a client that moved)
//!   follows it when a non-probing packet with the highest packet number so far arrives from
//!   there (§9.3). The new path is validated with PATH_CHALLENGE (§8.2.1); until then the
//!   server sends at most three times what it received on it (§9.3, §8.1). A new IP address
//!   also resets the congestion controller, RTT estimate and path MTU (§9.4); a new port alone
//!   keeps them. If validation fails, the connection returns to the last validated path
//!   (§9.3.2).
//! - A client whose local address changed ([`Connection::local_address_changed`], the
//!   runtime's `Endpoint::rebind`) moves to a connection ID the peer has not seen on the old
//!   path (§9.5), retires the old one, and sends at once so the server learns the new path.
//! - When the peer switches to a new connection ID on a new path, so do we (§9.5).

use std::net::SocketAddr;
use std::time::Instant;

use bytes::BufMut;

use super::Connection;
use crate::recovery::congestion::Controller;
use crate::recovery::RttEstimator;
use crate::wire::{ConnectionId, Frame};

/// PATH_CHALLENGE values kept while waiting for the PATH_RESPONSE.
const MAX_OUTSTANDING_CHALLENGES: usize = 4;

impl Migration {
    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    /// Writes the state out (connection hibernation); refuses during a path validation or
    /// with a previous path kept.
    pub(super) fn pack(&self, p: &mut crate::pack::Packer) -> crate::pack::Packed {
        p.require(
            self.validation.is_none()
                && self.previous.is_none()
                && !self.pad_packet
                && !self.ping_pending,
        )?;
        p.bool(self.peer_dcid.is_some());
        if let Some(c) = &self.peer_dcid {
            p.cid(c);
        }
        Some(())
    }

    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    /// Reads back what [`Migration::pack`] wrote.
    pub(super) fn unpack(u: &mut crate::pack::Unpacker<'_>) -> Option<Self> {
        Some(Self {
            validation: None,
            previous: None,
            peer_dcid: if u.bool()? { Some(u.cid()?) } else { None },
            pad_packet: false,
            ping_pending: false,
        })
    }
}

/// What the connection knows about migration and path validation.
#[derive(Debug, Default)]
pub(super) struct Migration {
    /// The path validation under way.
    validation: Option<Box<Validation>>,
    /// The last validated path, to return to if validation fails (RFC 9000 §9.3.2).
    previous: Option<Box<PreviousPath>>,
    /// The Destination Connection ID of the peer's newest packet.
    pub(super) peer_dcid: Option<ConnectionId>,
    /// The packet being written carries a PATH_CHALLENGE or PATH_RESPONSE: its datagram is
    /// padded to 1200 bytes (RFC 9000 §8.2.1, §8.2.2).
    pub(super) pad_packet: bool,
    /// A client moved: send something at once on the new path.
    pub(super) ping_pending: bool,
}

#[derive(Debug)]
struct Validation {
    /// Challenges sent and not yet answered.
    outstanding: Vec<[u8; 8]>,
    /// A new PATH_CHALLENGE is to be sent.
    send_pending: bool,
    /// When to send another challenge if no response came.
    resend_at: Option<Instant>,
    /// When validation fails (RFC 9000 §8.2.4).
    deadline: Instant,
}

struct PreviousPath {
    remote: SocketAddr,
    cc: Box<dyn Controller>,
    rtt: RttEstimator,
    max_datagram_size: u64,
}

impl std::fmt::Debug for PreviousPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreviousPath")
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Whether a datagram from `remote`, not the current peer address, may be processed.
    /// Only servers follow a peer to a new address, and only once the handshake is
    /// confirmed (RFC 9000 §9: no migration before that; §9.6: clients ignore a server's
    /// packets from elsewhere).
    pub(super) fn accepts_new_path(&self) -> bool {
        self.side.is_server() && self.handshake_confirmed && self.one_rtt.is_some()
    }

    /// A 1-RTT packet from `remote` (not the current address) with a non-probing frame and
    /// the largest packet number so far was processed (RFC 9000 §9.3): the connection follows
    /// the peer there. `datagram_len` is what arrived on the new path.
    pub(super) fn on_packet_from_new_path(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        datagram_len: u64,
    ) {
        let old = self.remote;
        let port_only = old.ip() == remote.ip();
        tracing::debug!(%old, new = %remote, port_only, "peer address changed: migrating");
        self.stats.migrations += 1;
        if self.path_validated {
            self.migration.previous = Some(Box::new(PreviousPath {
                remote: old,
                cc: self.cc.clone_box(),
                rtt: self.rtt,
                max_datagram_size: self.max_datagram_size,
            }));
        }
        self.remote = remote;
        // RFC 9000 §9.3: the new address is not validated; the anti-amplification limit
        // applies to what arrived on it.
        self.path_validated = false;
        self.bytes_received = datagram_len;
        self.bytes_sent = 0;
        if !port_only {
            // RFC 9000 §9.4: a new path starts with fresh congestion and RTT state; its MTU is
            // discovered again.
            self.reset_path_state(now);
        }
        self.start_path_validation(now);
    }

    /// Fresh congestion controller, RTT estimate and path MTU for a new path (RFC 9000 §9.4).
    fn reset_path_state(&mut self, now: Instant) {
        let base = u64::from(super::mtud::BASE);
        self.cc = self.config.congestion.build(now, base);
        self.rtt = RttEstimator::new(self.config.initial_rtt);
        let old = std::mem::replace(&mut self.rate, rate_sampler_for(self.cc.as_ref()));
        // The packets still in flight on the old path keep their delivery-rate snapshots: the
        // new sampler takes them over (and keeps their old-path counts out of its samples,
        // see `RateSampler::on_lost` and `RateSampler::generate`).
        if let (Some(mut old), Some(new)) = (old, self.rate.as_mut()) {
            new.take_tracked(&mut old);
        }
        self.max_datagram_size = base;
        // RFC 9000 §13.4.2: ECN is validated per path.
        self.ecn.restart_validation(self.config.ecn);
        self.mtud = super::mtud::Mtud::new(
            self.config
                .mtu_discovery_upper_bound
                .unwrap_or(0)
                .min(self.config.max_udp_payload_size),
            self.config.mtu_discovery_upper_bound.is_some(),
        );
    }

    /// Starts validating the current peer address (RFC 9000 §8.2.1).
    fn start_path_validation(&mut self, now: Instant) {
        // RFC 9000 §8.2.4: three times the larger of the current PTO and the PTO for a new
        // path (kInitialRtt).
        let pto = self.rtt.pto_base() + self.peer_max_ack_delay();
        let initial_pto =
            RttEstimator::new(self.config.initial_rtt).pto_base() + self.peer_max_ack_delay();
        let deadline = now + pto.max(initial_pto) * 3;
        self.migration.validation = Some(Box::new(Validation {
            outstanding: Vec::new(),
            send_pending: true,
            resend_at: None,
            deadline,
        }));
    }

    /// A PATH_RESPONSE arrived (RFC 9000 §8.2.3).
    pub(super) fn on_path_response(&mut self, data: [u8; 8]) {
        let Some(v) = self.migration.validation.as_ref() else {
            return;
        };
        if !v.outstanding.contains(&data) {
            return;
        }
        tracing::debug!(remote = %self.remote, "path validated");
        self.migration.validation = None;
        self.migration.previous = None;
        self.path_validated = true;
        self.stats.paths_validated += 1;
    }

    /// Whether a PATH_CHALLENGE or a PING for migration is waiting to be sent.
    pub(super) fn migration_wants_to_send(&self) -> bool {
        self.migration.ping_pending
            || self
                .migration
                .validation
                .as_ref()
                .is_some_and(|v| v.send_pending)
    }

    /// Writes a PATH_CHALLENGE (or the PING a moved client owes) if one is due; returns
    /// whether it wrote something ack-eliciting.
    pub(super) fn write_migration_frames(
        &mut self,
        now: Instant,
        buf: &mut Vec<u8>,
        end: usize,
    ) -> bool {
        let mut wrote = false;
        let pto = self.rtt.pto_base() + self.peer_max_ack_delay();
        if let Some(v) = self.migration.validation.as_mut() {
            if v.send_pending && buf.len() + 9 <= end {
                let mut data = [0u8; 8];
                if self.provider.secure_random.fill(&mut data).is_ok() {
                    Frame::PathChallenge(data).encode(buf);
                    if v.outstanding.len() == MAX_OUTSTANDING_CHALLENGES {
                        v.outstanding.remove(0);
                    }
                    v.outstanding.push(data);
                    v.send_pending = false;
                    v.resend_at = Some(now + pto);
                    self.migration.pad_packet = true;
                    wrote = true;
                }
            }
        }
        if self.migration.ping_pending && !wrote && buf.len() < end {
            buf.put_u8(0x01); // PING
            wrote = true;
        }
        if wrote {
            self.migration.ping_pending = false;
        }
        wrote
    }

    /// The next migration timer: a challenge to resend, or validation to give up.
    pub(super) fn migration_timeout(&self) -> Option<Instant> {
        let v = self.migration.validation.as_ref()?;
        Some(v.resend_at.map_or(v.deadline, |r| r.min(v.deadline)))
    }

    /// Handles the migration timer.
    pub(super) fn on_migration_timeout(&mut self, now: Instant) {
        let Some(v) = self.migration.validation.as_mut() else {
            return;
        };
        if now >= v.deadline {
            // RFC 9000 §9.3.2: validation failed; go back to the last validated path.
            self.migration.validation = None;
            match self.migration.previous.take() {
                Some(prev) => {
                    tracing::debug!(failed = %self.remote, back_to = %prev.remote, "path validation failed");
                    self.remote = prev.remote;
                    self.cc = prev.cc;
                    self.rtt = prev.rtt;
                    self.max_datagram_size = prev.max_datagram_size;
                    self.path_validated = true;
                }
                None => {
                    tracing::debug!(remote = %self.remote, "path validation failed");
                }
            }
            return;
        }
        if v.resend_at.is_some_and(|t| now >= t) {
            // RFC 9000 §8.2.1: PATH_CHALLENGE may be sent again, with new data, against loss.
            v.resend_at = None;
            v.send_pending = true;
        }
    }

    /// Tells a client connection that its local address changed (the runtime's
    /// `Endpoint::rebind` calls this). It moves to a new connection ID when the server gave
    /// it one (RFC 9000 §9.5), resets its path state when the IP address changed (§9.4), and
    /// sends at once so that the server sees the new path.
    pub fn local_address_changed(&mut self, now: Instant, ip_changed: bool) {
        let span = self.span.clone();
        let _guard = span.enter();
        if self.is_closed() {
            return;
        }
        tracing::debug!(ip_changed, "local address changed");
        self.stats.migrations += 1;
        // The new socket's replies go from its own address until the peer's datagrams say
        // where they arrive.
        self.local_ip = None;
        if self.handshake_confirmed && self.cids.rotate_remote() {
            tracing::debug!(cid = %self.cids.remote(), "new connection ID for the new path");
        }
        if ip_changed {
            self.reset_path_state(now);
        }
        self.migration.ping_pending = true;
    }

    /// Called for each authenticated 1-RTT packet with the largest packet number so far:
    /// remembers the peer's Destination Connection ID and, when it moved to a new one on a
    /// new path, moves too (RFC 9000 §9.5).
    #[inline]
    pub(super) fn note_peer_dcid(&mut self, dcid: ConnectionId, new_path: bool) {
        let changed = self.migration.peer_dcid.is_some_and(|d| d != dcid);
        self.migration.peer_dcid = Some(dcid);
        if new_path && changed && self.cids.rotate_remote() {
            tracing::debug!(cid = %self.cids.remote(), "peer changed connection ID: so do we");
        }
    }
}

/// A delivery-rate sampler for `cc` if it uses the samples (BBR), else none: the loss-based
/// controllers ignore them, and sampling costs bookkeeping for every packet.
pub(super) fn rate_sampler_for(
    cc: &dyn Controller,
) -> Option<Box<crate::recovery::rate::RateSampler>> {
    cc.wants_rate_samples().then(Box::default)
}
