//! The receive path: datagrams to packets to frames (RFC 9000 §12, §13; RFC 9001 §5).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::spaces::{SentInfo, SpaceId};
use super::streams::StreamChunk;
use super::{CloseFrame, Connection, ConnectionError, Event, State, TransportError};
use crate::crypto;
use crate::error::TransportErrorCode;
use crate::recovery::congestion::AckedPacket;
use crate::recovery::sent::{
    is_persistent_congestion, SentPacket, K_PERSISTENT_CONGESTION_THRESHOLD,
};
use crate::wire::frame::{Ack, Frame, Iter};
use crate::wire::packet::{Header, PartialDecode, ProtectedHeader};
use crate::wire::{ConnectionId, LongType, PacketType, TransportParameters};
use crate::Side;

/// How long a connection with nothing in flight waits before freeing its busy-time buffers.
pub(super) const COMPACT_AFTER: Duration = Duration::from_secs(1);

/// How many 1-RTT packets a server keeps while it waits for the client's Finished.
const MAX_BUFFERED_1RTT: usize = 16;

/// Removes header protection from a long-header packet, recovers its packet number and opens
/// its payload (RFC 9001 §5.3, §5.4): the header, the packet number, the payload and whether
/// the reserved bits were zero. `None` if it does not authenticate.
fn open_long(
    partial: PartialDecode,
    largest_received: Option<u64>,
    header_key: &dyn rustls::quic::HeaderProtectionKey,
    packet_key: &dyn rustls::quic::PacketKey,
) -> Option<Opened> {
    let packet = partial.finish(header_key).ok()?;
    let pn = packet.header.number().expand(largest_received);
    let dst_cid = *packet.header.dst_cid();
    let initial_src_cid = match &packet.header {
        Header::Initial { src_cid, .. } => Some(*src_cid),
        _ => None,
    };
    let reserved_ok = packet.reserved_bits_valid();
    let payload = crypto::open(packet.buf, packet.header_len, pn, packet_key).ok()?;
    Some(Opened {
        dst_cid,
        initial_src_cid,
        pn,
        payload,
        reserved_ok,
    })
}

/// What handling a packet needs of it once it is opened: the header is not carried along
/// (a copy of it per packet, IDs and all, was a measurable part of receiving).
struct Opened {
    /// The destination connection ID it was sent to.
    dst_cid: ConnectionId,
    /// An Initial's source connection ID (a client takes the server's from it).
    initial_src_cid: Option<ConnectionId>,
    /// The full packet number.
    pn: u64,
    /// The plaintext frames.
    payload: bytes::Bytes,
    /// Whether the reserved header bits were zero (RFC 9000 §17.2, §17.3.1).
    reserved_ok: bool,
}

impl Connection {
    /// Handles a UDP datagram from `remote` routed to this connection (possibly several
    /// coalesced packets, RFC 9000 §12.2).
    pub fn handle_datagram(&mut self, now: Instant, remote: SocketAddr, datagram: BytesMut) {
        self.handle_datagram_ecn(now, remote, None, datagram);
    }

    /// [`Connection::handle_datagram`] with the ECN codepoint of the datagram's IP header
    /// (RFC 9000 §13.4.1: counted for every packet in it).
    pub fn handle_datagram_ecn(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        ecn: Option<super::EcnCodepoint>,
        datagram: BytesMut,
    ) {
        self.handle_datagram_at(now, remote, None, ecn, datagram);
    }

    /// [`Connection::handle_datagram_ecn`] with the local IP address the datagram was sent
    /// to (`IP_PKTINFO` / `IPV6_PKTINFO`), `None` if unknown. Once a packet in it
    /// authenticates, the connection's datagrams go from that address
    /// ([`Transmit::source`](super::Transmit::source)); a datagram that does not
    /// authenticate changes nothing.
    pub fn handle_datagram_at(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        local_ip: Option<std::net::IpAddr>,
        ecn: Option<super::EcnCodepoint>,
        datagram: BytesMut,
    ) {
        let authenticated = self.stats.packets_received;
        self.handle_datagram_inner(now, remote, ecn, datagram);
        if local_ip.is_some() && self.stats.packets_received > authenticated {
            if self.local_ip != local_ip {
                tracing::debug!(?local_ip, "replies go from the address the peer sends to");
            }
            self.local_ip = local_ip;
        }
    }

    fn handle_datagram_inner(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        ecn: Option<super::EcnCodepoint>,
        datagram: BytesMut,
    ) {
        self.incoming_ecn = ecn;
        let span = self.span.clone();
        let _guard = span.enter();
        if matches!(self.state, State::Drained | State::Draining { .. }) {
            // RFC 9000 §10.2.2: a draining endpoint sends nothing and reads nothing.
            if let Some(q) = self.qlog.on() {
                q.packet_dropped(now, None, None, "general");
            }
            return;
        }
        self.incoming_path = None;
        if remote != self.remote {
            if !self.accepts_new_path() {
                // RFC 9000 §9: no migration before the handshake is confirmed, and a client
                // takes packets from the server's address only (§9.6).
                tracing::trace!(%remote, "datagram from unknown address dropped");
                self.on_dropped(now, None, None, "rejected");
                return;
            }
            self.incoming_path = Some((remote, datagram.len() as u64));
        }
        self.stats.datagrams_received += 1;
        self.stats.bytes_received += datagram.len() as u64;
        self.bytes_received += datagram.len() as u64;
        self.datagram_tail = datagram.len().checked_sub(16).map(|at| {
            let mut tail = [0; 16];
            tail.copy_from_slice(&datagram[at..]);
            tail
        });
        let mut rest = Some(datagram);
        while let Some(data) = rest.take() {
            let (partial, next) = match PartialDecode::new(data, self.local_cid.len()) {
                Ok(x) => x,
                Err(e) => {
                    tracing::trace!(error = %e, "undecodable packet dropped");
                    self.on_dropped(now, None, None, "invalid");
                    return;
                }
            };
            rest = next;
            if let Err(error) = self.handle_packet(now, partial) {
                self.close_with_error(now, error);
                return;
            }
            if matches!(self.state, State::Draining { .. } | State::Drained) {
                return;
            }
        }
        self.after_packets(now);
    }

    /// Handles packets that waited (for keys, or for the handshake to get further), each with
    /// its ECN codepoint; `false` if the connection closed or started draining on one of them
    /// (the rest are dropped).
    pub(super) fn replay_packets(
        &mut self,
        now: Instant,
        packets: Vec<(PartialDecode, Option<super::EcnCodepoint>)>,
    ) -> bool {
        let ecn = self.incoming_ecn;
        for (partial, packet_ecn) in packets {
            self.incoming_ecn = packet_ecn;
            if let Err(error) = self.handle_packet(now, partial) {
                self.close_with_error(now, error);
                return false;
            }
            if matches!(self.state, State::Draining { .. } | State::Drained) {
                return false;
            }
        }
        self.incoming_ecn = ecn;
        true
    }

    /// What follows the packets of a datagram: packets that waited for the handshake to get
    /// further, key-phase and recovery bookkeeping.
    pub(super) fn after_packets(&mut self, now: Instant) {
        // 1-RTT packets that came before the client's Finished, now that the handshake is
        // complete (RFC 9001 §5.7).
        if self.extras().is_some_and(|e| !e.early_1rtt.is_empty()) && self.state != State::Handshake
        {
            let early = std::mem::take(&mut self.extras_mut().early_1rtt);
            if !self.replay_packets(now, early) {
                return;
            }
        }
        // 0-RTT packets that came before the ClientHello, now that it is processed.
        if self.zero_rtt.waiting_packets() > 0 && self.zero_rtt.accepted.is_some() {
            let early = self.zero_rtt.take_packets();
            if self.zero_rtt.keys.is_none() {
                self.stats.packets_dropped += early.len() as u64;
            }
            for partial in early {
                if self.zero_rtt.keys.is_none() {
                    break;
                }
                if let Err(error) = self.handle_packet(now, partial) {
                    self.close_with_error(now, error);
                    return;
                }
            }
        }
        // The peer may have updated keys (RFC 9001 §6.2).
        self.key_phase_housekeeping(now);
        self.qlog_recovery(now);
    }

    fn handle_packet(
        &mut self,
        now: Instant,
        partial: PartialDecode,
    ) -> Result<(), TransportError> {
        let (space, early) = match partial.header() {
            ProtectedHeader::Initial { .. } => (SpaceId::Initial, false),
            ProtectedHeader::Long {
                ty: LongType::Handshake,
                ..
            } => (SpaceId::Handshake, false),
            // RFC 9000 §17.2.3: 0-RTT packets share the application data space; only a
            // server takes them.
            ProtectedHeader::Long {
                ty: LongType::ZeroRtt,
                ..
            } if self.side.is_server() => (SpaceId::Data, true),
            ProtectedHeader::Short { .. } => (SpaceId::Data, false),
            ProtectedHeader::VersionNegotiation { .. } => {
                self.on_version_negotiation(now, &partial);
                return Ok(());
            }
            ProtectedHeader::Retry { .. } => {
                self.on_retry(&partial);
                return Ok(());
            }
            // Retry and other versions are not accepted yet: dropped.
            _ => {
                self.on_dropped(now, None, None, "unsupported");
                return Ok(());
            }
        };
        let qtype = if early {
            "0RTT"
        } else {
            space.qlog_packet_type()
        };
        // RFC 9369 §4: besides the connection's version, a server still opens the client's
        // original-version Initials after switching, and a client not yet settled tries the
        // server's first Initial in another version it offered.
        let other_version = partial.header().version().filter(|v| *v != self.version);
        if let Some(v) = other_version {
            if !self.other_version_allowed(v, space, early) {
                self.on_dropped(now, Some(qtype), None, "unsupported");
                return Ok(());
            }
        }
        // RFC 9000 §10.2.1: while closing, packets are answered with CONNECTION_CLOSE, "a
        // progressively increasing number of received packets" apart: the 1st, 2nd, 4th, 8th...
        // Two endpoints closing at once would otherwise answer each other's CONNECTION_CLOSE
        // until their closing periods end (thousands of packets on a fast path). Packets that
        // arrive within the minimum RTT of our close left the peer before the close reached
        // it: the close already answers them, and if it was lost, the peer's retransmissions
        // arrive later and are answered. (A client that closes right after its handshake
        // would otherwise answer the server's HANDSHAKE_DONE with a second close.)
        let closing = if let State::Closing {
            received,
            quiet_until,
            ..
        } = &mut self.state
        {
            if now >= *quiet_until {
                *received = received.saturating_add(1);
                if received.is_power_of_two() {
                    self.close_pending = true;
                }
            }
            true
        } else {
            false
        };
        // RFC 9001 §5.7: "a server MUST NOT process incoming 1-RTT protected packets before
        // the TLS handshake is complete". Acknowledging one would let the client consider the
        // handshake confirmed (§4.1.2) and drop its Handshake keys, so a lost client Finished
        // would never come again. A few are kept and handled once the Finished is in.
        if self.side.is_server()
            && space == SpaceId::Data
            && !early
            && self.state == State::Handshake
        {
            let ecn = self.incoming_ecn;
            let early = &mut self.extras_mut().early_1rtt;
            if early.len() < MAX_BUFFERED_1RTT {
                early.push((partial, ecn));
            } else {
                self.on_dropped(now, Some(qtype), None, "rejected");
            }
            return Ok(());
        }
        // Header protection, packet number, payload protection.
        let decoded = match space {
            SpaceId::Data if early => {
                // RFC 9001 §5.3: 0-RTT keys open 0-RTT packets. Before the ClientHello is
                // processed they wait (§4.7, bounded); without keys after that (0-RTT
                // rejected or already discarded) the packet is dropped.
                let Some(keys) = self.zero_rtt.keys.as_deref() else {
                    if self.zero_rtt.accepted.is_none()
                        && self.zero_rtt.waiting_packets() < super::zero_rtt::MAX_BUFFERED_0RTT
                    {
                        self.zero_rtt.push_packet(partial);
                    } else {
                        self.on_dropped(now, Some(qtype), None, "key_unavailable");
                    }
                    return Ok(());
                };
                let largest = self.spaces[space as usize].largest_received;
                match open_long(partial, largest, keys.header.as_ref(), keys.packet.as_ref()) {
                    Some(decoded) => decoded,
                    None => {
                        self.on_dropped(now, Some(qtype), None, "decryption_failure");
                        return Ok(());
                    }
                }
            }
            SpaceId::Data => {
                self.wake_keys(now);
                if self.one_rtt.is_none() {
                    if !self.hold_packet(partial) {
                        self.on_dropped(now, Some(qtype), None, "key_unavailable");
                    }
                    return Ok(());
                }
                let Some(keys) = self.one_rtt.as_mut() else {
                    return Ok(());
                };
                let Ok(packet) = partial.finish(keys.remote_header_key()) else {
                    self.on_dropped(now, Some(qtype), None, "decryption_failure");
                    self.check_stateless_reset(now);
                    return Ok(());
                };
                let Header::Short {
                    key_phase,
                    number,
                    dst_cid,
                    ..
                } = &packet.header
                else {
                    return Ok(());
                };
                let (key_phase, number, dst_cid) = (*key_phase, *number, *dst_cid);
                let pn = number.expand(self.spaces[space as usize].largest_received);
                let Some((which, key)) = keys.remote_key_for(key_phase, pn) else {
                    self.on_dropped(now, Some(qtype), Some(pn), "key_unavailable");
                    self.check_stateless_reset(now);
                    return Ok(());
                };
                let reserved_ok = packet.reserved_bits_valid();
                match crypto::open(packet.buf, packet.header_len, pn, key) {
                    Ok(payload) => {
                        keys.on_packet_received(which, pn)
                            .map_err(|e| TransportError::new(e.code(), e.to_string()))?;
                        // RFC 9001 §4.9.3: after its first 1-RTT packet a server discards
                        // 0-RTT keys "within a short time", three PTOs recommended, so that
                        // reordered 0-RTT packets still open.
                        if self.side.is_server()
                            && self.zero_rtt.keys.is_some()
                            && self.zero_rtt.discard_at().is_none()
                        {
                            let pto = self.rtt.pto_base() + self.config.max_ack_delay;
                            self.zero_rtt.set_discard_at(Some(now + pto * 3));
                        }
                        Opened {
                            dst_cid,
                            initial_src_cid: None,
                            pn,
                            payload,
                            reserved_ok,
                        }
                    }
                    Err(_) => {
                        keys.on_decrypt_failure()
                            .map_err(|e| TransportError::new(e.code(), e.to_string()))?;
                        self.on_dropped(now, Some(qtype), Some(pn), "decryption_failure");
                        self.check_stateless_reset(now);
                        return Ok(());
                    }
                }
            }
            _ => {
                // A client's candidate Initial keys for the version a server may have switched
                // to (RFC 9368 §2.3): the connection moves only if the packet authenticates.
                let candidate = match other_version {
                    Some(v) if self.side.is_client() => self.initial_keys_for(v).map(|k| (v, k)),
                    _ => None,
                };
                let keys = match (&candidate, other_version) {
                    (Some((_, k)), _) => Some(k),
                    (None, Some(_)) => self.versions.original_initial.as_deref(),
                    (None, None) => self.spaces[space as usize].keys.as_deref(),
                };
                let Some(keys) = keys else {
                    // The keys may be what TLS, away in a job, is deriving.
                    let held = space == SpaceId::Handshake
                        && other_version.is_none()
                        && self.hold_packet(partial);
                    if !held {
                        self.on_dropped(now, Some(qtype), None, "key_unavailable");
                    }
                    return Ok(());
                };
                let largest = self.spaces[space as usize].largest_received;
                match open_long(
                    partial,
                    largest,
                    keys.remote.header.as_ref(),
                    keys.remote.packet.as_ref(),
                ) {
                    Some(decoded) => {
                        if let Some((v, keys)) = candidate {
                            self.switch_client(v, keys);
                        }
                        decoded
                    }
                    None => {
                        self.on_dropped(now, Some(qtype), None, "decryption_failure");
                        return Ok(());
                    }
                }
            }
        };
        let Opened {
            dst_cid: packet_dcid,
            initial_src_cid,
            pn,
            payload,
            reserved_ok,
        } = decoded;
        if closing {
            let ty = if early {
                PacketType::ZeroRtt
            } else {
                space.packet_type()
            };
            self.on_packet_while_closing(now, qtype, pn, payload, ty);
            return Ok(());
        }
        // RFC 9000 §17.2, §17.3.1: non-zero reserved bits, once the packet is authenticated,
        // are a PROTOCOL_VIOLATION.
        if !reserved_ok {
            return Err(TransportError::new(
                TransportErrorCode::PROTOCOL_VIOLATION,
                "reserved header bits set",
            ));
        }
        let sp = &mut self.spaces[space as usize];
        // RFC 9000 §12.3: duplicates are discarded.
        if sp.received.contains(pn) {
            self.on_dropped(now, Some(qtype), Some(pn), "duplicate");
            return Ok(());
        }
        self.stats.packets_received += 1;
        tracing::trace!(?space, pn, len = payload.len(), "packet received");

        // The client adopts the server's connection ID from its first packet (RFC 9000 §7.2).
        if self.side.is_client() && !self.remote_cid_set {
            if let Some(src_cid) = initial_src_cid {
                self.cids.set_initial_remote(src_cid);
                self.remote_cid_set = true;
            }
        }
        if space == SpaceId::Handshake && self.side.is_server() {
            // RFC 9001 §4.9.1: the server discards Initial keys on the first Handshake packet;
            // RFC 9000 §8.1: a Handshake packet validates the client's address.
            self.path_validated = true;
            self.discard_space(SpaceId::Initial);
        }

        let mut ack_eliciting = false;
        // RFC 9000 §9.1: PATH_CHALLENGE, PATH_RESPONSE, NEW_CONNECTION_ID and PADDING are
        // probing frames; anything else in a packet from a new address moves the connection.
        let mut non_probing = false;
        let is_largest = self.spaces[space as usize]
            .largest_received
            .is_none_or(|l| pn > l);
        let packet_type = if early {
            PacketType::ZeroRtt
        } else {
            space.packet_type()
        };
        self.receiving_0rtt = early;
        if let Some(q) = self.qlog.on() {
            let exponent = self
                .peer_params
                .as_ref()
                .map_or(3, |p| p.ack_delay_exponent);
            q.packet_received(now, qtype, pn, &payload, exponent);
        }
        for frame in Iter::new(payload, packet_type) {
            let frame = frame.map_err(|e| TransportError {
                code: e.code(),
                frame: e.frame_type(),
                reason: e.to_string(),
            })?;
            ack_eliciting |= frame.ty().is_ack_eliciting();
            non_probing |= !matches!(
                frame,
                Frame::Padding(_)
                    | Frame::PathChallenge(_)
                    | Frame::PathResponse(_)
                    | Frame::NewConnectionId(_)
            );
            self.handle_frame(now, space, frame, &packet_dcid)?;
            if matches!(self.state, State::Draining { .. } | State::Drained) {
                return Ok(());
            }
        }

        if space == SpaceId::Data && !early && is_largest {
            let new_path = self.incoming_path;
            self.note_peer_dcid(packet_dcid, new_path.is_some());
            if let (Some((remote, len)), true) = (new_path, non_probing) {
                self.on_packet_from_new_path(now, remote, len);
                self.incoming_path = None;
            }
        }

        // Record for acknowledgment (RFC 9000 §13.2), unless the packet completed the
        // handshake and its space is gone (looked at without `IndexMut`, which would bring a
        // freed space back).
        if self.spaces[space as usize].discarded {
            return Ok(());
        }
        let sp = &mut self.spaces[space as usize];
        let out_of_order = sp.largest_received.is_some_and(|l| pn < l);
        sp.received.insert_one(pn);
        sp.received.truncate_low(self.config.max_ack_ranges);
        if space != SpaceId::Data && ack_eliciting {
            sp.eliciting_received.insert_one(pn);
            sp.eliciting_received
                .truncate_low(self.config.max_ack_ranges);
        }
        if sp.largest_received.is_none_or(|l| pn > l) {
            sp.largest_received = Some(pn);
            sp.largest_received_time = Some(now);
        }
        // RFC 9000 §13.4.1: ECN marks are counted per packet; §13.2.1: CE is acknowledged
        // at once.
        let ce = self.spaces[space as usize]
            .ecn
            .on_packet_received(self.incoming_ecn);
        if self.incoming_ecn.is_some() {
            self.stats.ecn_marked_received += 1;
        }
        let sp = &mut self.spaces[space as usize];
        if ce {
            self.stats.ecn_ce_received += 1;
            sp.ack_deadline = Some(now);
        }
        if ack_eliciting {
            sp.unacked_eliciting += 1;
            // RFC 9000 §13.2.1: Initial and Handshake immediately; otherwise after a second
            // ack-eliciting packet, on reordering, or within max_ack_delay.
            let immediate = space != SpaceId::Data || sp.unacked_eliciting >= 2 || out_of_order;
            let deadline = if immediate {
                now
            } else {
                now + self.config.max_ack_delay
            };
            sp.ack_deadline = Some(sp.ack_deadline.map_or(deadline, |d| d.min(deadline)));
        }
        // RFC 9000 §10.1: any authenticated packet restarts the idle timer.
        self.eliciting_since_receive = false;
        self.reset_idle_timer(now);
        Ok(())
    }

    /// Restarts the idle timer (once per received packet: the deadline is worked out when
    /// asked for, not here).
    pub(super) fn reset_idle_timer(&mut self, now: Instant) {
        self.idle_since = now;
    }

    /// When the connection times out if nothing arrives (RFC 9000 §10.1): the negotiated idle
    /// timeout, and at least three PTOs, after the timer last restarted.
    pub(super) fn idle_deadline(&self) -> Option<Instant> {
        let timeout = self.idle_timeout?;
        Some(self.idle_since + timeout.max(self.rtt.pto_base() * 3))
    }

    /// RFC 9000 §17.2.5.2: a client follows at most one Retry, only before it has processed
    /// any packet from the server, and only one whose integrity tag verifies (RFC 9001 §5.8).
    fn on_retry(&mut self, partial: &PartialDecode) {
        let ProtectedHeader::Retry {
            version,
            dst_cid,
            src_cid,
            token,
            ..
        } = partial.header()
        else {
            return;
        };
        if self.side.is_server()
            || self.retry_src_cid().is_some()
            || self.stats.packets_received > 0
            || *version != self.version
            || *dst_cid != self.local_cid
            || *src_cid == self.original_dst_cid
        {
            self.stats.packets_dropped += 1;
            return;
        }
        #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
        let verified =
            crypto::retry::verify_retry(self.version, &self.original_dst_cid, partial.data());
        #[cfg(not(any(feature = "aws-lc-rs", feature = "ring")))]
        let verified = false;
        if !verified {
            tracing::debug!("Retry with a bad integrity tag dropped");
            self.stats.packets_dropped += 1;
            return;
        }
        tracing::debug!(new_dcid = %src_cid, "following a Retry");
        let Ok(suite) = crypto::initial_suite(self.tls_provider()) else {
            return;
        };
        let Ok(keys) = crypto::initial_keys(&suite, self.version, src_cid, crate::Side::Client)
        else {
            return;
        };
        // New Initial keys from the Retry's connection ID; its token goes in every Initial
        // from now on; everything sent so far is sent again (packet numbers go on, §17.2.5.3).
        self.extras_mut().retry_src_cid = Some(*src_cid);
        self.extras_mut().token = token.clone();
        self.cids.set_initial_remote(*src_cid);
        let initial = &mut self.spaces[SpaceId::Initial as usize];
        initial.keys = Some(Box::new(keys));
        for (_, p) in initial.sent.discard() {
            if let (Some(r), Some(c)) = (p.info.crypto(), initial.crypto_if_held()) {
                c.send.lost(r);
            }
            p.info.forget_rate(&mut self.rate);
        }
        // 0-RTT packets sent to the old connection ID are lost too (RFC 9001 §4.6.2 allows
        // sending them again).
        self.resend_0rtt();
        self.pto_count = 0;
    }

    fn on_version_negotiation(&mut self, now: Instant, partial: &PartialDecode) {
        // RFC 9000 §6.2: only a client, only before it has processed any packet, and only if
        // the list does not contain the version it used.
        if self.side.is_server() || self.stats.packets_received > 0 {
            return;
        }
        if partial.header().dst_cid() != Some(self.local_cid) {
            return;
        }
        if partial.header().versions().any(|v| v == self.version) {
            return;
        }
        tracing::debug!("version negotiation: no common version");
        self.state = State::Drained;
        self.qlog_closed(now, &ConnectionError::VersionMismatch);
        self.qlog_state(now, "closed");
        self.events
            .push_back(Event::ConnectionLost(ConnectionError::VersionMismatch));
    }

    fn handle_frame(
        &mut self,
        now: Instant,
        space: SpaceId,
        frame: Frame,
        packet_dcid: &crate::wire::ConnectionId,
    ) -> Result<(), TransportError> {
        let rtt = self.rtt.smoothed();
        let stream_err = |code: TransportErrorCode, frame: u64| TransportError {
            code,
            frame: Some(frame),
            reason: format!("stream frame rejected: {code}"),
        };
        let ty = frame.ty().0;
        match frame {
            Frame::Padding(_) | Frame::Ping => {}
            Frame::Ack(ack) => self.on_ack_frame(now, space, &ack)?,
            Frame::Crypto { offset, data } => {
                // The space went away with an earlier frame of this packet (the Finished that
                // completed the handshake): the rest of its CRYPTO data is already in.
                if self.spaces[space as usize].discarded {
                    return Ok(());
                }
                let sp = &mut self.spaces[space as usize];
                let end = offset + data.len() as u64;
                // RFC 9000 §7.5: bounded buffering of out-of-order CRYPTO data.
                if end > sp.crypto_read_offset() + self.config.crypto_buffer_size {
                    return Err(TransportError {
                        code: TransportErrorCode::CRYPTO_BUFFER_EXCEEDED,
                        frame: Some(ty),
                        reason: "CRYPTO data beyond the buffer".into(),
                    });
                }
                let duplicate = end <= sp.crypto_read_offset();
                if !duplicate {
                    sp.crypto_mut().recv.insert(offset, data);
                }
                // RFC 9369 §4: the server's CRYPTO data fixes the version it came in.
                if self.side.is_client() {
                    self.settle_version();
                }
                self.read_crypto(now, space)?;
                // RFC 9002 §6.2.3: a server that gets the client's Initial CRYPTO data again
                // can tell its own flight did not all arrive, and resends it at once instead
                // of waiting for its PTO (within the anti-amplification limit).
                if duplicate && space == SpaceId::Initial && self.side.is_server() {
                    for s in [SpaceId::Initial, SpaceId::Handshake] {
                        if self.spaces[s as usize].keys.is_some()
                            && self.spaces[s as usize].sent.has_ack_eliciting_in_flight()
                        {
                            self.resend_unacked_crypto(s);
                            let sp = &mut self.spaces[s as usize];
                            sp.probes = sp.probes.max(1);
                        }
                    }
                }
            }
            Frame::NewToken(token) => {
                // RFC 9000 §19.7: a server receiving NEW_TOKEN is a PROTOCOL_VIOLATION; an
                // empty token is a FRAME_ENCODING_ERROR.
                if self.side.is_server() {
                    return Err(TransportError {
                        code: TransportErrorCode::PROTOCOL_VIOLATION,
                        frame: Some(ty),
                        reason: "NEW_TOKEN from a client".into(),
                    });
                }
                if token.is_empty() {
                    return Err(TransportError {
                        code: TransportErrorCode::FRAME_ENCODING_ERROR,
                        frame: Some(ty),
                        reason: "empty NEW_TOKEN".into(),
                    });
                }
                // Kept for the next connection to this server (§8.1.3).
                let extras = self.extras();
                if let Some((store, name)) =
                    extras.and_then(|e| e.token_store.as_ref().zip(e.dialed_name.as_ref()))
                {
                    // RFC 9369 §5: the token belongs to the negotiated version.
                    store.insert(&crate::config::token_key(name, self.version), token);
                }
            }
            Frame::Stream(s) => {
                self.streams
                    .on_stream_frame(s.id, s.offset, s.data, s.fin, now, rtt)
                    .map_err(|c| stream_err(c, ty))?;
                self.note_0rtt_stream(s.id);
            }
            Frame::ResetStream {
                id,
                error_code,
                final_size,
            } => {
                self.streams
                    .on_reset_stream(id, error_code, final_size, now, rtt)
                    .map_err(|c| stream_err(c, ty))?;
                self.note_0rtt_stream(id);
            }
            Frame::StopSending { id, error_code } => self
                .streams
                .on_stop_sending(id, error_code)
                .map_err(|c| stream_err(c, ty))?,
            Frame::MaxData(max) => self.streams.on_max_data(max),
            Frame::MaxStreamData { id, max } => self
                .streams
                .on_max_stream_data(id, max)
                .map_err(|c| stream_err(c, ty))?,
            Frame::MaxStreams { dir, count } => self.streams.on_max_streams(dir, count),
            Frame::DataBlocked(_)
            | Frame::StreamDataBlocked { .. }
            | Frame::StreamsBlocked { .. } => {}
            Frame::NewConnectionId(f) => {
                // RFC 9000 §19.15: a peer using a zero-length CID must not send this.
                if self.cids.remote().is_empty() {
                    return Err(TransportError {
                        code: TransportErrorCode::PROTOCOL_VIOLATION,
                        frame: Some(ty),
                        reason: "NEW_CONNECTION_ID with zero-length connection IDs".into(),
                    });
                }
                self.cids
                    .on_new_connection_id(f)
                    .map_err(|code| TransportError {
                        code,
                        frame: Some(ty),
                        reason: "bad NEW_CONNECTION_ID".into(),
                    })?;
            }
            Frame::RetireConnectionId { sequence } => {
                self.cids
                    .on_retire(sequence, packet_dcid)
                    .map_err(|code| TransportError {
                        code,
                        frame: Some(ty),
                        reason: "bad RETIRE_CONNECTION_ID".into(),
                    })?;
            }
            Frame::PathChallenge(data) => {
                // RFC 9000 §8.2.2: answered on the path it came from.
                let from = self.incoming_path.map_or(self.remote, |(a, _)| a);
                let responses = &mut self.queued_mut().path_responses;
                if responses.len() < 4 {
                    responses.push_back((data, from));
                }
            }
            Frame::PathResponse(data) => self.on_path_response(data),
            Frame::ConnectionClose(c) => {
                self.enter_draining(
                    now,
                    ConnectionError::ConnectionClosed {
                        code: c.error_code,
                        reason: c.reason,
                    },
                );
            }
            Frame::ApplicationClose(c) => {
                self.enter_draining(
                    now,
                    ConnectionError::ApplicationClosed {
                        code: c.error_code,
                        reason: c.reason,
                    },
                );
            }
            Frame::HandshakeDone => {
                // RFC 9000 §19.20: a server receiving HANDSHAKE_DONE is a PROTOCOL_VIOLATION.
                if self.side.is_server() {
                    return Err(TransportError {
                        code: TransportErrorCode::PROTOCOL_VIOLATION,
                        frame: Some(ty),
                        reason: "HANDSHAKE_DONE from a client".into(),
                    });
                }
                self.confirm_handshake(now);
            }
            Frame::Datagram(data) => self.on_datagram(data)?,
        }
        Ok(())
    }

    /// RFC 9000 §10.3.1: an unauthenticated packet ending in one of the peer's reset tokens
    /// is a stateless reset; the connection is over.
    fn check_stateless_reset(&mut self, now: Instant) {
        if let Some(tail) = self.datagram_tail {
            if self.cids.is_stateless_reset(&tail) {
                tracing::debug!("stateless reset received");
                self.enter_draining(now, ConnectionError::Reset);
            }
        }
    }

    /// A packet that opened while we are closing. Its frames are not acted on, but a
    /// CONNECTION_CLOSE in it means the peer is closing or draining too: we go on to draining
    /// and send nothing more (RFC 9000 §10.2.2).
    fn on_packet_while_closing(
        &mut self,
        now: Instant,
        qtype: &'static str,
        pn: u64,
        payload: bytes::Bytes,
        ty: PacketType,
    ) {
        let peer_closed = Iter::new(payload, ty)
            .map_while(Result::ok)
            .any(|f| matches!(f, Frame::ConnectionClose(_) | Frame::ApplicationClose(_)));
        if let (State::Closing { until, .. }, true) = (self.state, peer_closed) {
            tracing::debug!("the peer closed too; draining");
            self.state = State::Draining { until };
            self.close_pending = false;
            self.close = None;
            self.qlog_state(now, "draining");
        }
        self.on_dropped(now, Some(qtype), Some(pn), "general");
    }

    fn enter_draining(&mut self, now: Instant, error: ConnectionError) {
        tracing::debug!(%error, "peer closed; draining");
        self.state = State::Draining {
            until: now + self.close_period(),
        };
        self.close = None;
        self.qlog_state(now, "draining");
        self.qlog_closed(now, &error);
        self.events.push_back(Event::ConnectionLost(error));
    }

    /// Feeds contiguous CRYPTO data to TLS and advances the handshake (RFC 9001 §4.1.3); with
    /// TLS offload, hands the step out instead ([`Connection::take_tls_job`]).
    pub(super) fn read_crypto(
        &mut self,
        now: Instant,
        space: SpaceId,
    ) -> Result<(), TransportError> {
        if self.tls_busy() {
            // The data waits in its stream for the step that is out to come back.
            return Ok(());
        }
        if space == SpaceId::Initial && self.side.is_server() {
            // The server's TLS starts once the whole ClientHello is in, in the version chosen
            // from it (RFC 9368 §2.3).
            match self.server_client_hello()? {
                Some(hello) => {
                    self.on_client_hello(&hello);
                    if self.offloads_tls() {
                        self.tls_step_ready(space, Some(hello));
                        return Ok(());
                    }
                    self.tls_read(&hello)?;
                }
                None if self.versions_pending() => return Ok(()),
                None => {}
            }
        }
        let readable = |c: &Self| {
            c.spaces[space as usize]
                .crypto()
                .is_some_and(|c| c.recv.has_readable())
        };
        if self.offloads_tls() && readable(self) {
            self.tls_step_ready(space, None);
            return Ok(());
        }
        while let Some(data) = self.spaces[space as usize]
            .crypto_if_held()
            .and_then(|c| c.recv.read(usize::MAX))
        {
            self.tls_read(&data)?;
        }
        self.after_tls(now, space)
    }

    /// What follows TLS reading the data of `space`: its output and keys, the peer's
    /// transport parameters, the handshake's completion.
    pub(super) fn after_tls(&mut self, now: Instant, space: SpaceId) -> Result<(), TransportError> {
        self.write_tls(now)?;
        self.server_0rtt_decided();
        // A resuming rustls client reports the parameters remembered from the last session
        // (for 0-RTT) until the new EncryptedExtensions arrive, in the Handshake space; the
        // checks of RFC 9000 §7.3 apply to the new ones.
        let fresh = self.side.is_server() || space != SpaceId::Initial;
        if self.peer_params.is_none() && fresh {
            if let Some(raw) = self.tls.quic_transport_parameters() {
                let params = TransportParameters::decode(self.side.peer(), raw)
                    .map_err(|e| TransportError::new(e.code(), e.to_string()))?;
                self.validate_peer_params(&params)?;
                if let Some(token) = params.stateless_reset_token {
                    self.cids.set_initial_remote_token(token);
                }
                self.streams.set_peer_params(&params);
                if params.max_idle_timeout > 0 {
                    let peer = Duration::from_millis(params.max_idle_timeout);
                    self.idle_timeout = Some(self.idle_timeout.map_or(peer, |t| t.min(peer)));
                }
                self.peer_params =
                    Some(super::peer::PeerParams::new(&params, self.side.peer(), raw));
            }
        }
        self.client_0rtt_outcome()?;
        if self.state == State::Handshake && !self.tls.is_handshaking() && self.one_rtt.is_some() {
            let alpn = self.tls.alpn_protocol().map(String::from_utf8_lossy);
            if let Some(a) = &alpn {
                self.span.record("alpn", a.as_ref());
            }
            tracing::debug!(?alpn, "handshake complete");
            self.state = State::Established;
            self.handshake_duration = Some(now.saturating_duration_since(self.created));
            self.events.push_back(Event::Connected);
            self.qlog_state(now, "handshake_complete");
            // RFC 9000 §5.1.1: offer the peer spare connection IDs, up to its limit.
            let limit = self
                .peer_params
                .as_ref()
                .map_or(2, |p| p.active_connection_id_limit)
                .min(8);
            if limit > 1 {
                self.cids
                    .push_event(super::EndpointEvent::NeedCids((limit - 1) as usize));
            }
            if self.side.is_server() {
                // RFC 9001 §4.1.2: the server's handshake is confirmed on completion.
                self.handshake_confirmed = true;
                self.qlog_state(now, "handshake_confirmed");
                self.handshake_done_pending = true;
                self.discard_space(SpaceId::Handshake);
                // The tickets are written: the TLS session is no longer needed.
                self.tls.finish_server();
            }
            if let Some(q) = self.qlog.on() {
                q.flush();
            }
        }
        Ok(())
    }

    fn tls_read(&mut self, data: &[u8]) -> Result<(), TransportError> {
        self.tls.read_hs(data).map_err(|e| self.tls_error(&e))
    }

    /// The transport error for a TLS failure (RFC 9001 §4.8: TLS alerts become CRYPTO_ERROR
    /// codes).
    pub(super) fn tls_error(&self, e: &rustls::Error) -> TransportError {
        let code = match self.tls.alert() {
            Some(alert) => TransportErrorCode::crypto(u8::from(alert)),
            None => TransportErrorCode::PROTOCOL_VIOLATION,
        };
        TransportError::new(code, format!("TLS: {e}"))
    }

    /// RFC 9000 §7.3: the connection-ID parameters must match what was seen on the wire.
    fn validate_peer_params(&self, p: &TransportParameters) -> Result<(), TransportError> {
        self.validate_version_information(p.version_information.as_ref())?;
        let bad = |reason: &str| -> Result<(), TransportError> {
            Err(TransportError::new(
                TransportErrorCode::TRANSPORT_PARAMETER_ERROR,
                reason,
            ))
        };
        if p.initial_source_connection_id != Some(self.cids.remote()) {
            return bad(&format!(
                "initial_source_connection_id {:?} does not match the peer's connection ID {:?}",
                p.initial_source_connection_id,
                self.cids.remote()
            ));
        }
        if self.side == Side::Client {
            if p.original_destination_connection_id != Some(self.original_dst_cid) {
                return bad("original_destination_connection_id does not match");
            }
            // RFC 9000 §7.3: present exactly when we followed a Retry, and equal to its SCID.
            if p.retry_source_connection_id != self.retry_src_cid() {
                return bad(if self.retry_src_cid().is_some() {
                    "retry_source_connection_id does not match the Retry"
                } else {
                    "retry_source_connection_id without a Retry"
                });
            }
        }
        Ok(())
    }

    fn on_ack_frame(
        &mut self,
        now: Instant,
        space: SpaceId,
        ack: &Ack,
    ) -> Result<(), TransportError> {
        // The packet's earlier frames completed the handshake and its space is gone (a client
        // may put its Finished before the ACK): nothing of the space is tracked any more.
        if self.spaces[space as usize].discarded {
            return Ok(());
        }
        let largest_before = self.spaces[space as usize].sent.largest_acked();
        // One vector reused across ACK frames: no allocation per ACK.
        let mut acked = std::mem::take(&mut self.scratch().acked);
        let rtt_sample = self.spaces[space as usize]
            .sent
            .on_ack_into(ack.iter(), ack.largest, now, &mut acked)
            .map_err(|code| TransportError {
                code,
                frame: Some(ack.frame_type().0),
                reason: "ACK of a packet never sent".into(),
            })?;
        // The records are handled in place (their spill vectors taken back), then dropped
        // where they are: draining would move each one out.
        let result = self.on_packets_acked(now, space, ack, largest_before, rtt_sample, &mut acked);
        acked.clear();
        self.scratch().acked = acked;
        result
    }

    /// The rest of [`Connection::on_ack_frame`], with the newly acknowledged packets
    /// (descending by packet number), whose stream chunks' spill vectors it takes back.
    fn on_packets_acked(
        &mut self,
        now: Instant,
        space: SpaceId,
        ack: &Ack,
        largest_before: Option<u64>,
        rtt_sample: Option<Duration>,
        acked: &mut [(u64, SentPacket<SentInfo>)],
    ) -> Result<(), TransportError> {
        if let Some(sample) = rtt_sample {
            let exponent = self
                .peer_params
                .as_ref()
                .map_or(3, |p| p.ack_delay_exponent);
            let mut delay = Duration::from_micros(ack.delay.saturating_mul(1 << exponent));
            if space != SpaceId::Data {
                delay = Duration::ZERO;
            } else if self.handshake_confirmed {
                delay = delay.min(self.peer_max_ack_delay());
            }
            self.rtt.update(delay, sample);
            self.first_rtt_sample.get_or_insert(now);
        }
        if acked.is_empty() {
            return Ok(());
        }
        // One pass over the records for what is counted across them.
        let scratch = self.scratch();
        let mut acked_pns = std::mem::take(&mut scratch.acked_pns);
        let mut acked_cc = std::mem::take(&mut scratch.acked_cc);
        acked_pns.clear();
        acked_cc.clear();
        let mut newly_marked = 0u64;
        let mut acked_in_flight = 0u64;
        // `acked` is descending (as the frame names them); handled ascending.
        for (pn, p) in acked.iter().rev() {
            acked_pns.push(*pn);
            newly_marked += u64::from(p.info.ecn);
            if p.in_flight {
                acked_in_flight += u64::from(p.size);
                acked_cc.push(AckedPacket {
                    sent: p.time_sent,
                    bytes: u64::from(p.size),
                });
            }
        }
        // RFC 9000 §13.4.2.1: ECN counts are checked on ACKs that raise the largest
        // acknowledged.
        if largest_before.is_none_or(|l| ack.largest > l)
            && self.on_ack_ecn(space, ack.ecn.as_ref(), newly_marked)
        {
            if let Some((_, newest)) = acked.first() {
                let sent = newest.time_sent;
                self.on_ecn_congestion(now, sent);
            }
        }
        // RFC 9002 §7.8: the window grows only when it limits the sender. What was in flight
        // before this ACK says so; what is left after it does not (one ACK for a whole batch
        // of datagrams, as receive offload brings, leaves nothing in flight, and the window
        // would never grow).
        let app_limited = self.bytes_in_flight() + acked_in_flight + self.max_datagram_size
            < self.cc.window() / 2;
        // Once per frame: Cubic evaluates its curve once, not per packet.
        self.cc.on_acks(now, &acked_cc, app_limited, &self.rtt);
        self.scratch().acked_cc = acked_cc;
        // Stream data acknowledged by consecutive packets, one range per stream run.
        let mut run: Option<StreamChunk> = None;
        let mut one_rtt_acked = false;
        // By reference: a record is not moved again on its way (the caller clears them).
        for (pn, packet) in acked.iter_mut().rev() {
            let pn = *pn;
            if space == SpaceId::Data {
                match packet.info.mtu_probe() {
                    Some(size) => {
                        if let Some(new) = self.mtud.on_probe_acked(now, size) {
                            self.set_datagram_size(new);
                        }
                    }
                    None => self.mtud.on_acked(pn, packet.size),
                }
            }
            if let (Some(t), Some(sampler)) = (packet.info.rate, self.rate.as_mut()) {
                sampler.on_tracked_acked(now, packet.time_sent, u64::from(packet.size), t);
            }
            if space == SpaceId::Data {
                if let Some(k) = self.one_rtt.as_mut() {
                    one_rtt_acked |= k.on_ack(pn);
                }
            }
            self.on_info_acked(space, &mut packet.info, &mut run);
            // The chunks' spill vector back for the next packets; the record itself is
            // dropped where it is by the caller.
            packet.info.chunks.recycle(&mut self.scratch().chunk_spills);
        }
        if let Some(c) = run {
            self.streams.on_chunk_acked(&c);
        }
        // RFC 9001 §4.1.2: a client may take the acknowledgment of a 1-RTT packet (not a
        // 0-RTT one) as confirmation, as a server reads 1-RTT packets only once the handshake
        // is complete: a lost HANDSHAKE_DONE then costs no Handshake probes.
        if one_rtt_acked && self.side.is_client() {
            self.confirm_handshake(now);
        }
        // RFC 9002 §6.2.1: the PTO backoff resets on an acknowledgment (except a client's
        // Initial-only ACK before the handshake, which we still count as progress).
        if self.pto_count > 0 {
            tracing::debug!(
                pto_count = self.pto_count,
                ?space,
                in_flight = self.bytes_in_flight(),
                "acknowledged after PTOs"
            );
        }
        self.pto_count = 0;
        let lost = self.spaces[space as usize].sent.detect_lost(now, &self.rtt);
        self.on_packets_lost(now, space, lost, &acked_pns);
        self.scratch().acked_pns = acked_pns;
        if self.bytes_in_flight() == 0 {
            // Quiet for now: free the busy-time buffers in a second if it stays so.
            self.compact_at = Some(now + COMPACT_AFTER);
        }
        let in_flight = self.bytes_in_flight();
        if let Some(sampler) = self.rate.as_mut() {
            let sample = sampler.generate(self.rtt.min(), in_flight);
            self.cc.on_rate_sample(now, &sample, &self.rtt);
        }
        Ok(())
    }

    /// Client: the handshake is confirmed (RFC 9001 §4.1.2), by HANDSHAKE_DONE or by the
    /// acknowledgment of a 1-RTT packet; the Handshake keys go (§4.9.2).
    fn confirm_handshake(&mut self, now: Instant) {
        if !self.handshake_confirmed {
            tracing::debug!("handshake confirmed");
            self.handshake_confirmed = true;
            self.qlog_state(now, "handshake_confirmed");
            self.discard_space(SpaceId::Handshake);
        }
    }

    /// What one acknowledged packet carried. Its stream chunks extend `run` while they
    /// continue it (the same stream, from where it ends, no FIN yet): a bulk sender's packets
    /// each carry the next bytes of one stream, and their acknowledgment then costs one
    /// stream lookup per ACK frame instead of one per packet. The caller acknowledges what is
    /// left in `run` at the end.
    fn on_info_acked(
        &mut self,
        space: SpaceId,
        info: &mut SentInfo,
        run: &mut Option<StreamChunk>,
    ) {
        for c in &info.chunks {
            match run {
                Some(r) if r.id == c.id && r.range.end == c.range.start && !r.fin => {
                    r.range.end = c.range.end;
                    r.fin = c.fin;
                }
                _ => {
                    if let Some(done) = run.replace(c.clone()) {
                        self.streams.on_chunk_acked(&done);
                    }
                }
            }
        }
        let mut controls = info.take_control().peekable();
        if controls.peek().is_some() {
            // A RESET_STREAM acknowledged after the data before it, as the packet had them.
            if let Some(done) = run.take() {
                self.streams.on_chunk_acked(&done);
            }
        }
        for c in controls {
            if let super::streams::StreamControl::ResetStream(id) = c {
                self.streams.on_reset_acked(id);
            }
        }
        if let Some(r) = info.take_extra().and_then(|e| e.crypto) {
            if let Some(c) = self.spaces[space as usize].crypto_if_held() {
                c.send.ack(r);
            }
        }
    }

    pub(super) fn on_packets_lost(
        &mut self,
        now: Instant,
        space: SpaceId,
        lost: Vec<(u64, SentPacket<SentInfo>)>,
        acked: &[u64],
    ) {
        if lost.is_empty() {
            return;
        }
        self.stats.packets_lost += lost.len() as u64;
        let duration =
            (self.rtt.pto_base() + self.peer_max_ack_delay()) * K_PERSISTENT_CONGESTION_THRESHOLD;
        let persistent = is_persistent_congestion(&lost, acked, duration, self.first_rtt_sample);
        let mut lost_bytes = 0;
        let mut newest_sent = None;
        for (pn, packet) in lost {
            tracing::trace!(?space, pn, "packet lost");
            if let Some(q) = self.qlog.on() {
                q.packet_lost(now, space.qlog_packet_type(), pn);
            }
            if space == SpaceId::Data {
                // RFC 9000 §14.4: a lost probe is not a congestion signal.
                if let Some(size) = packet.info.mtu_probe() {
                    self.mtud.on_probe_lost(now, size);
                    packet.info.forget_rate(&mut self.rate);
                    continue;
                }
                if let Some(base) = self.mtud.on_lost(now, pn, packet.size) {
                    self.set_datagram_size(base);
                }
            }
            if packet.info.ecn {
                self.ecn.on_marked_lost();
            }
            if let (Some(t), Some(sampler)) = (packet.info.rate, self.rate.as_mut()) {
                if let Some(lost) = sampler.on_tracked_lost(u64::from(packet.size), t) {
                    self.cc.on_packet_lost(now, &lost);
                }
            }
            if packet.in_flight {
                lost_bytes += u64::from(packet.size);
                newest_sent = Some(
                    newest_sent.map_or(packet.time_sent, |t: Instant| t.max(packet.time_sent)),
                );
            }
            let mut info = packet.info;
            for c in &info.chunks {
                self.streams.on_chunk_lost(c);
            }
            if info.chunks.has_spill() {
                info.chunks.recycle(&mut self.scratch().chunk_spills);
            }
            for c in info.take_control() {
                self.streams.on_control_lost(c);
            }
            let Some(extra) = info.take_extra() else {
                continue;
            };
            if let Some(r) = extra.crypto {
                if let Some(c) = self.spaces[space as usize].crypto_if_held() {
                    c.send.lost(r);
                }
            }
            if extra.handshake_done {
                self.handshake_done_pending = true;
            }
            if let Some(token) = extra.new_token {
                self.extras_mut().new_token.get_or_insert(token);
            }
            for seq in extra.new_cids {
                self.cids.on_new_lost(seq);
            }
            for seq in extra.retire_cids {
                self.cids.on_retire_lost(seq);
            }
        }
        if let Some(sent) = newest_sent {
            self.cc
                .on_congestion_event(now, sent, persistent, lost_bytes);
        }
    }

    /// Bytes of ack-eliciting or padded packets sent and neither acknowledged nor declared
    /// lost (RFC 9002 §2: in flight).
    pub fn bytes_in_flight(&self) -> u64 {
        self.spaces.iter().map(|s| s.sent.bytes_in_flight()).sum()
    }

    /// The close frame to send while closing, if any (for the send path).
    pub(super) fn close_frame(&self) -> Option<&CloseFrame> {
        self.close.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{forge, idle_pair, SERVER_ADDR};
    use super::*;
    use bytes::BytesMut;

    /// RFC 9000 §10.1: each packet received restarts the idle timer, and the timeout is at
    /// least three PTOs: on a 400 ms path a 1 s idle timeout becomes 3 PTOs after the last
    /// packet, and a packet 700 ms later moves the deadline by 700 ms.
    #[test]
    fn the_idle_timer_restarts_on_receipt_and_spans_three_ptos() {
        let mut p = idle_pair(
            Duration::from_secs(1),
            Duration::from_millis(200),
            Duration::from_secs(2),
        );
        let mut deadlines = Vec::new();
        for at in [p.now, p.now + Duration::from_millis(700)] {
            let ping = forge(&mut p.server, SpaceId::Data, &[0x01]);
            p.client
                .handle_datagram(at, SERVER_ADDR, BytesMut::from(&ping[..]));
            let three_ptos = p.client.rtt.pto_base() * 3;
            assert!(three_ptos > Duration::from_secs(1), "{three_ptos:?}");
            assert_eq!(p.client.idle_deadline(), Some(at + three_ptos));
            deadlines.push(p.client.idle_deadline().unwrap());
        }
        assert_eq!(deadlines[1] - deadlines[0], Duration::from_millis(700));
        // Past the deadline with nothing received, the connection is gone.
        p.client.handle_timeout(deadlines[1]);
        assert!(p.client.is_drained());
    }
}
