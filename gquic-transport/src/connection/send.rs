//! The send path: frames into packets, packets coalesced into a datagram (RFC 9000 §12.2,
//! §13; RFC 9001 §5; RFC 9002 §7).

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use bytes::{BufMut, Bytes};

use super::spaces::{SentInfo, SpaceId};
use super::{CloseFrame, Connection, EcnCodepoint, State};
use crate::crypto;
use crate::error::TransportErrorCode;
use crate::recovery::sent::SentPacket;
use crate::wire::frame::{encode_ack, ApplicationClose, ConnectionClose, Frame, StreamFrame};
use crate::wire::packet::{Header, PacketNumber, PartialEncode};
use crate::wire::{varint, LongType};

/// AEAD tag length of every QUIC v1/v2 cipher suite.
const TAG_LEN: usize = 16;
/// RFC 9000 §14.1: datagrams with Initial packets are at least this large.
const MIN_INITIAL_SIZE: usize = 1200;
/// Worst-case STREAM frame header: type, 8-byte ID, 8-byte offset, 2-byte length.
const STREAM_OVERHEAD: usize = 19;
/// Worst-case CRYPTO frame header: type, 8-byte offset, 2-byte length.
const CRYPTO_OVERHEAD: usize = 11;
/// Room a datagram needs left for another long-header packet worth coalescing: a header with
/// two 20-byte connection IDs, a few bytes of frames and the AEAD tag.
const LATER_PACKET_ROOM: usize = 128;

/// The smallest datagram worth sending on an unvalidated new path under the
/// anti-amplification limit.
const MIN_MIGRATION_DATAGRAM: usize = 64;

impl Connection {
    /// Writes the next datagram to send into `buf` (replacing its contents), or returns `None`
    /// when there is nothing to send now.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        buf.clear();
        self.poll_transmit_appended(now, buf)
    }

    /// Writes the next datagram to send at the end of `buf`, after what it holds (a
    /// segmentation batch built in place), or returns `None`, with `buf` as it was, when there
    /// is nothing to send now. The [`Transmit`]'s size is the new datagram's alone.
    pub fn poll_transmit_appended(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        let span = self.span.clone();
        let _guard = span.enter();
        let base = buf.len();
        match self.state {
            State::Drained | State::Draining { .. } => return None,
            State::Closing { .. } => return self.poll_close(now, buf, base),
            _ => {}
        }
        self.key_phase_housekeeping(now);
        let max_size = self.max_datagram_size as usize;
        // RFC 9000 §8.1: before validating the client's address a server sends at most three
        // times what it received.
        let limit = if self.side.is_server() && !self.path_validated {
            let budget = self.amplification_budget();
            if self.handshake_confirmed && budget >= MIN_MIGRATION_DATAGRAM {
                // A client that moved (RFC 9000 §9.3): smaller datagrams within the budget,
                // so that validation is not stuck behind a peer that only sends ACKs
                // (§8.2.1 allows a PATH_CHALLENGE below 1200 bytes then).
                budget.min(max_size)
            } else if budget < max_size {
                tracing::trace!(budget, "amplification limit");
                return None;
            } else {
                max_size
            }
        } else {
            max_size
        };
        // Offsets below are in `buf`: the datagram's room ends at `limit`.
        let limit = base + limit;
        if let Some(t) = self.poll_mtu_probe(now, buf, base) {
            return Some(t);
        }
        let mut needs_padding = false;
        let mut last_space = None;
        for space in SpaceId::ALL {
            if buf.len() + 64 > limit {
                break;
            }
            // Initial and Handshake keys once discarded (RFC 9001 §4.9) send nothing more: an
            // established connection's packets do not ask them.
            if self.spaces[space as usize].discarded {
                continue;
            }
            if let Some(summary) = self.write_packet(now, space, buf, base, limit, needs_padding) {
                needs_padding = summary.needs_padding;
                last_space = Some(space);
            }
        }
        if let (true, Some(space)) = (needs_padding, last_space) {
            // The packet that was to pad the datagram did not get written (congestion window,
            // pacing): RFC 9000 §14.1 still wants 1200 bytes, so a packet of PADDING follows
            // in the last space written (a long header: the datagram can go on).
            if let Some((start, partial, pn)) = self.begin_packet(space, buf) {
                self.finish_packet(
                    now,
                    space,
                    buf,
                    start,
                    partial,
                    pn,
                    SentInfo::default(),
                    false,
                    (base + MIN_INITIAL_SIZE).min(limit),
                    None,
                );
            }
        }
        if buf.len() == base {
            self.note_if_app_limited(now);
        }
        self.datagram_written(buf, base)
    }

    /// What a server may still send to an unvalidated address (RFC 9000 §8.1: three times
    /// what it received).
    fn amplification_budget(&self) -> usize {
        (3 * self.bytes_received).saturating_sub(self.bytes_sent) as usize
    }

    /// Whether the anti-amplification limit stops every datagram now: then timers that only
    /// lead to sending (ACK deadlines, pacing) must wait for more input, not fire in a loop.
    pub(super) fn amplification_blocked(&self) -> bool {
        if !self.side.is_server() || self.path_validated {
            return false;
        }
        let needed = if self.handshake_confirmed {
            MIN_MIGRATION_DATAGRAM
        } else {
            self.max_datagram_size as usize
        };
        self.amplification_budget() < needed
    }

    /// Nothing was sent although the window and the pacer allowed it: the sender is
    /// application-limited, and delivery rate samples taken now say so
    /// (draft-ietf-ccwg-bbr §4.1.2.3).
    fn note_if_app_limited(&mut self, now: Instant) {
        let in_flight = self.bytes_in_flight();
        let paced = self.pacing_until.is_some_and(|t| t > now);
        if !paced && in_flight + self.max_datagram_size <= self.cc.window() {
            if let Some(sampler) = self.rate.as_mut() {
                sampler.on_app_limited(in_flight);
            }
        }
    }

    /// A path MTU probe (RFC 9000 §14.3.1: PING and PADDING in a 1-RTT packet of the size
    /// to test), once the handshake is confirmed and the congestion window has room.
    fn poll_mtu_probe(&mut self, now: Instant, buf: &mut Vec<u8>, base: usize) -> Option<Transmit> {
        if !self.handshake_confirmed || self.one_rtt.is_none() {
            return None;
        }
        let peer_max = self
            .peer_params
            .as_ref()
            .map_or(u64::from(super::mtud::BASE), |p| p.max_udp_payload_size);
        self.mtud.start(peer_max);
        let size = self.mtud.poll_probe(now)?;
        if self.bytes_in_flight() + u64::from(size) > self.cc.window() {
            return None;
        }
        let (start, partial, pn) = self.begin_packet(SpaceId::Data, buf)?;
        buf.put_u8(0x01); // PING
        let mut info = SentInfo::default();
        info.extra_mut().mtu_probe = Some(size);
        self.finish_packet(
            now,
            SpaceId::Data,
            buf,
            start,
            partial,
            pn,
            info,
            true,
            base + usize::from(size),
            None,
        );
        if buf.len() - base != usize::from(size) {
            buf.truncate(base);
            return None;
        }
        tracing::trace!(size, pn, "path MTU probe");
        self.mtud.on_probe_sent(pn);
        self.datagram_written(buf, base)
    }

    /// Accounts for a datagram now in `buf` after `base` (counted toward the amplification
    /// limit too).
    fn datagram_written(&mut self, buf: &[u8], base: usize) -> Option<Transmit> {
        let size = buf.len() - base;
        if size == 0 {
            return None;
        }
        self.stats.datagrams_sent += 1;
        self.stats.bytes_sent += size as u64;
        self.bytes_sent += size as u64;
        Some(Transmit {
            destination: self.remote,
            source: self.local_ip,
            size,
            ecn: self.ecn.marking(),
            segment_size: None,
        })
    }

    fn has_keys(&self, space: SpaceId) -> bool {
        match space {
            SpaceId::Data => self.one_rtt.is_some() || self.is_0rtt(),
            _ => self.spaces[space as usize].keys.is_some(),
        }
    }

    /// Whether `space` has anything to send now.
    #[inline]
    fn space_wants_to_send(&self, now: Instant, space: SpaceId) -> bool {
        if !self.has_keys(space) {
            return false;
        }
        let sp = &self.spaces[space as usize];
        // While TLS is away in a job, ACKs wait for the flight it brings back (a few hundred
        // microseconds) rather than going alone.
        let ack_due = sp.ack_due(now) && !self.tls_busy();
        if ack_due || sp.probes > 0 || sp.crypto_pending() {
            return true;
        }
        space == SpaceId::Data
            && (self.handshake_done_pending
                || (self.extras().is_some_and(|e| e.new_token.is_some())
                    && self.handshake_confirmed)
                || self
                    .queued
                    .as_ref()
                    .is_some_and(|q| !q.path_responses.is_empty())
                || self.migration_wants_to_send()
                || self.streams.has_pending()
                || self
                    .queued
                    .as_ref()
                    .is_some_and(|q| !q.datagrams_out.is_empty())
                || self.cids.has_pending())
    }

    pub(super) fn begin_packet(
        &self,
        space: SpaceId,
        buf: &mut Vec<u8>,
    ) -> Option<(usize, PartialEncode, u64)> {
        let sp = &self.spaces[space as usize];
        let pn = sp.sent.next_pn();
        let number = PacketNumber::new(pn, sp.sent.largest_acked());
        let header = match space {
            SpaceId::Initial => Header::Initial {
                version: self.version,
                dst_cid: self.cids.remote(),
                src_cid: self.local_cid,
                token: self.extras().map(|e| e.token.clone()).unwrap_or_default(),
                number,
            },
            SpaceId::Handshake => Header::Long {
                ty: LongType::Handshake,
                version: self.version,
                dst_cid: self.cids.remote(),
                src_cid: self.local_cid,
                number,
            },
            // RFC 9000 §17.2.3: before 1-RTT keys, a resuming client sends 0-RTT packets.
            // RFC 9369 §4: "The client MUST NOT send 0-RTT packets using the negotiated
            // version": they keep the original one.
            SpaceId::Data if self.is_0rtt() => Header::Long {
                ty: LongType::ZeroRtt,
                version: self.original_version(),
                dst_cid: self.cids.remote(),
                src_cid: self.local_cid,
                number,
            },
            SpaceId::Data => Header::Short {
                spin: false,
                key_phase: self.one_rtt.as_ref()?.phase(),
                dst_cid: self.cids.remote(),
                number,
            },
        };
        let start = buf.len();
        let partial = header.encode(buf).ok()?;
        Some((start, partial, pn))
    }

    /// Pads, seals and records a packet whose frames are written after `start`. A last stream
    /// chunk whose bytes are not written yet (`deferred`) is sealed from the stream's buffer
    /// when it ends the plaintext and the key can, copied in first otherwise.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn finish_packet(
        &mut self,
        now: Instant,
        space: SpaceId,
        buf: &mut Vec<u8>,
        start: usize,
        partial: PartialEncode,
        pn: u64,
        mut info: SentInfo,
        ack_eliciting: bool,
        pad_to: usize,
        deferred: Option<Deferred>,
    ) {
        let header_end = start + partial.header_len();
        // RFC 9001 §5.4.2: leave room for the header-protection sample.
        let min_payload = 4usize.saturating_sub(partial.pn_len);
        if buf.len() < header_end + min_payload {
            buf.resize(header_end + min_payload, 0);
        }
        if buf.len() + TAG_LEN < pad_to {
            buf.resize(pad_to - TAG_LEN, 0);
        }
        let padded = buf.len() + TAG_LEN >= pad_to && pad_to > 0;
        // Sealed from where it lies only if it ends the plaintext of a 1-RTT packet.
        let deferred = match deferred {
            Some(d) if space == SpaceId::Data && !self.is_0rtt() && d.at + d.len() == buf.len() => {
                Some(d)
            }
            Some(d) => {
                d.fill(&self.streams, buf);
                None
            }
            None => None,
        };
        buf.resize(buf.len() + TAG_LEN, 0);
        if partial.finish(buf).is_err() {
            buf.truncate(start);
            return;
        }
        // qlog: the frames, read back from the plaintext before it is sealed.
        let qlog_payload = self
            .qlog
            .enabled()
            .then(|| bytes::Bytes::copy_from_slice(&buf[header_end..buf.len() - TAG_LEN]));
        let qlog_type = match space {
            SpaceId::Data if self.is_0rtt() => "0RTT",
            s => s.qlog_packet_type(),
        };
        let mtu_probe = info.mtu_probe().is_some();
        let sealed = match space {
            SpaceId::Data if self.is_0rtt() => match self.zero_rtt.keys.as_deref() {
                Some(keys) => {
                    self.zero_rtt.sent = true;
                    crypto::seal(
                        &mut buf[start..],
                        partial.header_len(),
                        partial.pn_offset,
                        pn,
                        keys,
                    )
                }
                None => return,
            },
            SpaceId::Data => match self.one_rtt.as_mut() {
                Some(k) => {
                    if k.wake() {
                        self.compact_at
                            .get_or_insert(now + super::recv::COMPACT_AFTER);
                    }
                    let r = seal_one_rtt(
                        k,
                        &self.streams,
                        &mut buf[start..],
                        &partial,
                        pn,
                        deferred.map(|d| Deferred {
                            at: d.at - start,
                            chunk: d.chunk,
                        }),
                    );
                    if k.on_packet_sent(pn).is_err() && k.initiate_update().is_err() {
                        tracing::warn!(
                            "AEAD confidentiality limit reached without a confirmed key update"
                        );
                    }
                    r
                }
                None => return,
            },
            _ => match self.spaces[space as usize].keys.as_ref() {
                Some(keys) => crypto::seal(
                    &mut buf[start..],
                    partial.header_len(),
                    partial.pn_offset,
                    pn,
                    &keys.local,
                ),
                None => return,
            },
        };
        if sealed.is_err() {
            buf.truncate(start);
            return;
        }
        let size = buf.len() - start;
        let in_flight = ack_eliciting || padded;
        if in_flight {
            let before = self.bytes_in_flight();
            info.rate = self
                .rate
                .as_mut()
                .map(|sampler| sampler.track(now, before, size as u64));
        }
        if self.ecn.marking().is_some() {
            info.ecn = true;
            self.ecn.on_marked_sent();
        }
        let recorded = self.spaces[space as usize].sent.on_sent(SentPacket {
            time_sent: now,
            size: size as u16,
            ack_eliciting,
            in_flight,
            info,
        });
        debug_assert_eq!(recorded, pn);
        tracing::trace!(?space, pn, size, ack_eliciting, "packet sent");
        self.stats.packets_sent += 1;
        if let (Some(q), Some(payload)) = (self.qlog.on(), qlog_payload) {
            // Our ACK delays use ack_delay_exponent 3 (RFC 9000 §18.2).
            q.packet_sent(now, qlog_type, pn, size, payload, 3, mtu_probe);
        }
        if in_flight {
            self.cc.on_sent(now, size as u64);
        }
        if ack_eliciting {
            self.last_ack_eliciting_sent = Some(now);
            // RFC 9000 §10.1: the first ack-eliciting packet after a receipt restarts the timer.
            if !self.eliciting_since_receive {
                self.eliciting_since_receive = true;
                self.reset_idle_timer(now);
            }
        }
        if space == SpaceId::Handshake && self.side.is_client() {
            // RFC 9001 §4.9.1: a client discards Initial keys when it first sends a Handshake
            // packet.
            self.discard_space(SpaceId::Initial);
        }
    }

    fn write_ack(&mut self, now: Instant, space: SpaceId, buf: &mut Vec<u8>, end: usize) -> bool {
        if self.spaces[space as usize].ack_ranges(space).is_empty() {
            return false;
        }
        // One vector reused across ACK frames: no allocation per ACK.
        let mut scratch = std::mem::take(&mut self.scratch().ack);
        let written = self.write_ack_from(now, space, buf, end, &mut scratch);
        self.scratch().ack = scratch;
        written
    }

    /// [`Connection::write_ack`] with the vector to collect the ranges in.
    fn write_ack_from(
        &mut self,
        now: Instant,
        space: SpaceId,
        buf: &mut Vec<u8>,
        end: usize,
        scratch: &mut Vec<std::ops::RangeInclusive<u64>>,
    ) -> bool {
        let sp = &mut self.spaces[space as usize];
        scratch.clear();
        scratch.extend(sp.ack_ranges(space).iter().map(|r| r.start..=r.end - 1));
        // ACK Delay in microseconds scaled by our ack_delay_exponent (3, RFC 9000 §18.2).
        let delay = sp.largest_received_time.map_or(0, |t| {
            now.saturating_duration_since(t).as_micros() as u64 >> 3
        });
        let mark = buf.len();
        // RFC 9000 §13.4.1: ACK_ECN once any marked packet arrived in this space.
        let ecn = sp.ecn.ack_counts();
        encode_ack(scratch, delay, ecn.as_ref(), buf);
        if buf.len() > end {
            // Too many ranges for the space left: keep the newest ones.
            buf.truncate(mark);
            let keep = scratch.len() / 2;
            let from = scratch.len() - keep.max(1);
            encode_ack(&scratch[from..], delay, ecn.as_ref(), buf);
            if buf.len() > end {
                buf.truncate(mark);
                return false;
            }
        }
        sp.unacked_eliciting = 0;
        sp.ack_deadline = None;
        if space == SpaceId::Data {
            if let (Some(k), Some(largest)) = (self.one_rtt.as_mut(), scratch.last()) {
                k.on_ack_sent(*largest.end());
            }
        }
        true
    }

    /// Builds one packet of `space` at the end of `buf`, in the datagram that starts at `base`
    /// and ends by `limit` (both offsets in `buf`).
    fn write_packet(
        &mut self,
        now: Instant,
        space: SpaceId,
        buf: &mut Vec<u8>,
        base: usize,
        limit: usize,
        datagram_needs_padding: bool,
    ) -> Option<PacketSummary> {
        if !self.space_wants_to_send(now, space) {
            return None;
        }
        let max_size = self.max_datagram_size;
        let probe = self.spaces[space as usize].probes > 0;
        // RFC 9002 §7: ack-eliciting packets wait for congestion window and pacing; ACKs and
        // probes do not.
        let mut can_elicit = probe || self.bytes_in_flight() + max_size <= self.cc.window();
        if can_elicit && !probe {
            let delay = match self.cc.pacing_rate() {
                Some(rate) => self
                    .pacer
                    .delay_at_rate(now, max_size, rate as f64, max_size),
                None => self.pacer.delay(
                    now,
                    max_size,
                    self.cc.window(),
                    self.rtt.smoothed(),
                    max_size,
                ),
            };
            if let Some(t) = delay {
                self.pacing_until = Some(t);
                can_elicit = false;
            }
        }
        let ack_wanted = (self.spaces[space as usize].ack_due(now) && !self.tls_busy())
            || (can_elicit && self.spaces[space as usize].ack_pending());
        if !can_elicit && !ack_wanted {
            tracing::trace!(
                ?space,
                window = self.cc.window(),
                in_flight = self.bytes_in_flight(),
                pacing_until = ?self.pacing_until.map(|t| t.saturating_duration_since(now)),
                "waiting for the congestion window or the pacer"
            );
            return None;
        }
        let (start, partial, pn) = self.begin_packet(space, buf)?;
        let end = limit - TAG_LEN;
        let mut info = SentInfo::default();
        let mut ack_eliciting = false;
        let mut deferred = None;

        // RFC 9000 §17.2.3: 0-RTT packets carry no ACK frames.
        let zero_rtt = space == SpaceId::Data && self.is_0rtt();
        // Handshake-space packets and probes repeat the ACK even when nothing new needs one:
        // the peer's view of what arrived (and its RTT sample) should not hang on one lost
        // ACK-only packet while the handshake is stuck behind loss (RFC 9002 §6.2.4).
        let repeat_ack = can_elicit
            && (space != SpaceId::Data || probe)
            && !self.spaces[space as usize].ack_ranges(space).is_empty();
        if !zero_rtt && (ack_wanted || repeat_ack || self.spaces[space as usize].ack_pending()) {
            self.write_ack(now, space, buf, end);
        }
        if can_elicit {
            // CRYPTO data (RFC 9000 §19.6): one frame per packet.
            let room = end.saturating_sub(buf.len() + CRYPTO_OVERHEAD);
            if room > 0 {
                if let Some(c) = self.spaces[space as usize].crypto_if_held() {
                    if let Some(range) = c.send.poll_transmit(room, u64::MAX) {
                        buf.put_u8(0x06);
                        varint::encode(range.start, buf);
                        varint::encode(range.end - range.start, buf);
                        c.send.copy_range(range.clone(), buf);
                        info.extra_mut().crypto = Some(range);
                        ack_eliciting = true;
                    }
                }
            }
            if space == SpaceId::Data {
                if !zero_rtt {
                    ack_eliciting |= self.write_migration_frames(now, buf, end);
                }
                ack_eliciting |= self.write_data_frames(buf, end, &mut info, &mut deferred);
            }
            if probe && !ack_eliciting && buf.len() < end {
                buf.put_u8(0x01); // PING
                ack_eliciting = true;
            }
            if ack_eliciting && probe {
                self.spaces[space as usize].probes -= 1;
            }
        }
        if buf.len() == start + partial.header_len() {
            // Nothing fitted after all.
            buf.truncate(start);
            return None;
        }
        // RFC 9000 §14.1: a client's Initial datagrams, and a server's ack-eliciting Initial
        // datagrams, are padded to 1200 bytes; padding goes in the last packet.
        let path_padding = std::mem::take(&mut self.migration.pad_packet);
        let needs_padding = datagram_needs_padding
            || path_padding
            || (space == SpaceId::Initial && (self.side.is_client() || ack_eliciting));
        // A later packet pads only if one can still fit (room for a header, a frame and the
        // tag); otherwise this one does.
        let later_fits = limit.saturating_sub(buf.len() + TAG_LEN) >= LATER_PACKET_ROOM;
        let later_wants = later_fits
            && SpaceId::ALL
                .iter()
                .filter(|&&s| s > space)
                .any(|&s| self.space_wants_to_send(now, s));
        let pad_to = if needs_padding && !later_wants {
            (base + MIN_INITIAL_SIZE).min(limit)
        } else {
            0
        };
        self.finish_packet(
            now,
            space,
            buf,
            start,
            partial,
            pn,
            info,
            ack_eliciting,
            pad_to,
            deferred,
        );
        Some(PacketSummary {
            needs_padding: needs_padding && later_wants,
        })
    }

    /// HANDSHAKE_DONE, PATH_RESPONSE, stream control frames and stream data; returns whether
    /// anything ack-eliciting was written.
    fn write_data_frames(
        &mut self,
        buf: &mut Vec<u8>,
        end: usize,
        info: &mut SentInfo,
        deferred: &mut Option<Deferred>,
    ) -> bool {
        let mut wrote = false;
        if self.handshake_done_pending && buf.len() < end {
            buf.put_u8(0x1e);
            self.handshake_done_pending = false;
            info.extra_mut().handshake_done = true;
            wrote = true;
        }
        // RFC 9000 §8.1.3: a token for the client's next connection, once confirmed.
        if self.handshake_confirmed {
            if let Some(token) = self.extras.as_mut().and_then(|e| e.new_token.take()) {
                let frame = Frame::NewToken(token.clone());
                if buf.len() + frame.encoded_len() <= end {
                    frame.encode(buf);
                    info.extra_mut().new_token = Some(token);
                    wrote = true;
                } else {
                    self.extras_mut().new_token = Some(token);
                }
            }
        }
        let remote = self.remote;
        while let Some(responses) = self.queued.as_deref_mut().map(|q| &mut q.path_responses) {
            let Some((data, to)) = responses.front().copied() else {
                break;
            };
            if to != remote {
                // A probe from a path we did not move to: not answered (we do not send on
                // paths other than the current one).
                responses.pop_front();
                continue;
            }
            if buf.len() + 9 > end {
                break;
            }
            Frame::PathResponse(data).encode(buf);
            responses.pop_front();
            // RFC 9000 §8.2.2: padded to 1200 bytes like the challenge.
            self.migration.pad_packet = true;
            wrote = true;
        }
        while let Some(f) = self.cids.poll_new() {
            if buf.len() + 45 > end {
                self.cids.on_new_lost(f.sequence);
                break;
            }
            info.extra_mut().new_cids.push(f.sequence);
            Frame::NewConnectionId(f).encode(buf);
            wrote = true;
        }
        while let Some(seq) = self.cids.poll_retire() {
            if buf.len() + 9 > end {
                self.cids.on_retire_lost(seq);
                break;
            }
            Frame::RetireConnectionId { sequence: seq }.encode(buf);
            info.extra_mut().retire_cids.push(seq);
            wrote = true;
        }
        while let Some(c) = self.streams.poll_control() {
            let Some(frame) = self.streams.control_frame(c) else {
                continue;
            };
            if buf.len() + frame.encoded_len() > end {
                self.streams.on_control_lost(c);
                break;
            }
            frame.encode(buf);
            info.push_control(c);
            wrote = true;
        }
        // RFC 9221 §5: datagrams go before stream data; they are not retransmitted.
        wrote |= self.write_datagrams(buf, end);
        let early = self.is_0rtt();
        // A 1-RTT packet's last stream chunk is sealed from the stream's buffer instead of
        // being copied in first; its room here stays zero until then (RFC 9001 §5.3: the
        // payload is the same plaintext either way). Only the last can be: one written
        // after it is copied in, and so is one whose bytes span two writes.
        let split = !early
            && !self.qlog.enabled()
            && self
                .one_rtt
                .as_ref()
                .is_some_and(crate::crypto::KeyPhase::seals_split);
        loop {
            let room = end.saturating_sub(buf.len());
            if room <= STREAM_OVERHEAD {
                break;
            }
            let Some(chunk) = self.streams.poll_chunk(room - STREAM_OVERHEAD) else {
                break;
            };
            let len = (chunk.range.end - chunk.range.start) as usize;
            StreamFrame::encode_header(chunk.id, chunk.range.start, len, chunk.fin, true, buf);
            if let Some(d) = deferred.take() {
                d.fill(&self.streams, buf);
            }
            if split && len > 0 {
                let at = buf.len();
                buf.resize(at + len, 0);
                *deferred = Some(Deferred {
                    at,
                    chunk: chunk.clone(),
                });
            } else {
                self.streams.copy_chunk(&chunk, buf);
            }
            if early {
                self.note_0rtt_sent(chunk.id);
            }
            if info.chunks.wants_spill() {
                info.chunks.take_spill(&mut self.scratch().chunk_spills);
            }
            info.chunks.push(chunk);
            wrote = true;
        }
        wrote
    }

    /// While closing, sends CONNECTION_CLOSE once per trigger (RFC 9000 §10.2.1).
    fn poll_close(&mut self, now: Instant, buf: &mut Vec<u8>, base: usize) -> Option<Transmit> {
        if !std::mem::take(&mut self.close_pending) {
            return None;
        }
        let close = self.close_frame()?.clone();
        let limit = base + self.max_datagram_size as usize;
        for space in SpaceId::ALL {
            if !self.has_keys(space) {
                continue;
            }
            // RFC 9000 §10.2.3: before 1-RTT, an application close is sent as a transport close
            // with APPLICATION_ERROR and no reason.
            let frame = match (&close, space) {
                (CloseFrame::Application { code, reason }, SpaceId::Data) => {
                    Frame::ApplicationClose(ApplicationClose {
                        error_code: *code,
                        reason: reason.clone(),
                    })
                }
                (CloseFrame::Application { .. }, _) => Frame::ConnectionClose(ConnectionClose {
                    error_code: TransportErrorCode::APPLICATION_ERROR,
                    frame_type: 0,
                    reason: Bytes::new(),
                }),
                (
                    CloseFrame::Transport {
                        code,
                        frame,
                        reason,
                    },
                    _,
                ) => Frame::ConnectionClose(ConnectionClose {
                    error_code: *code,
                    frame_type: *frame,
                    reason: reason.slice(..reason.len().min(256)),
                }),
            };
            if buf.len() + frame.encoded_len() + 64 > limit {
                break;
            }
            let Some((start, partial, pn)) = self.begin_packet(space, buf) else {
                continue;
            };
            frame.encode(buf);
            let pad_to = if space == SpaceId::Initial && self.side.is_client() {
                base + MIN_INITIAL_SIZE
            } else {
                0
            };
            self.finish_packet(
                now,
                space,
                buf,
                start,
                partial,
                pn,
                SentInfo::default(),
                false,
                pad_to,
                None,
            );
        }
        self.datagram_written(buf, base)
    }
}

/// Seals a 1-RTT packet (`packet` holds just it); its last stream chunk, if `deferred` (`at`
/// counted from the packet's start), from the stream's buffer when the key can, copied in
/// first otherwise.
fn seal_one_rtt(
    k: &crate::crypto::KeyPhase,
    streams: &crate::connection::streams::Streams,
    packet: &mut [u8],
    partial: &PartialEncode,
    pn: u64,
    deferred: Option<Deferred>,
) -> Result<(), crypto::CryptoError> {
    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    if let Some(d) = &deferred {
        if let (Some(data), Some(key)) = (streams.chunk_slice(&d.chunk), k.split_sealer()) {
            return crypto::seal_split(
                packet,
                partial.header_len(),
                partial.pn_offset,
                pn,
                key,
                k.local_header_key(),
                d.at,
                data,
            );
        }
    }
    if let Some(d) = deferred {
        d.fill(streams, packet);
    }
    crypto::seal_with(
        packet,
        partial.header_len(),
        partial.pn_offset,
        pn,
        k.local_key(),
        k.local_header_key(),
    )
}

/// A packet's last stream chunk whose bytes are not in the packet yet: `at` is where the room
/// kept for them starts in the datagram buffer.
pub(super) struct Deferred {
    at: usize,
    chunk: crate::connection::streams::StreamChunk,
}

impl Deferred {
    fn len(&self) -> usize {
        (self.chunk.range.end - self.chunk.range.start) as usize
    }

    /// Copies the chunk's bytes into the room kept for them.
    fn fill(&self, streams: &crate::connection::streams::Streams, buf: &mut [u8]) {
        if let Some(room) = buf.get_mut(self.at..self.at + self.len()) {
            streams.copy_chunk(&self.chunk, &mut &mut room[..]);
        }
    }
}

/// What a built packet means for the rest of the datagram.
struct PacketSummary {
    /// A later packet in the datagram must pad it to 1200 bytes.
    needs_padding: bool,
}

#[cfg(any(test, feature = "testing"))]
impl Connection {
    /// Seals `payload` (raw frames, unchecked) in a 1-RTT packet to the peer, as a misbehaving
    /// endpoint would; for fuzzing and hostile-peer tests (feature `testing`). Returns `None`
    /// before 1-RTT keys exist.
    pub fn forge_one_rtt_packet(&mut self, now: Instant, payload: &[u8]) -> Option<Vec<u8>> {
        self.one_rtt.as_ref()?;
        let mut buf = Vec::with_capacity(payload.len() + 64);
        let (start, partial, pn) = self.begin_packet(SpaceId::Data, &mut buf)?;
        buf.extend_from_slice(payload);
        self.finish_packet(
            now,
            SpaceId::Data,
            &mut buf,
            start,
            partial,
            pn,
            SentInfo::default(),
            true,
            0,
            None,
        );
        (!buf.is_empty()).then_some(buf)
    }
}

/// Datagrams to send, written by [`Connection::poll_transmit`] (one datagram) or
/// [`Endpoint::poll_transmit_batch`](crate::endpoint::Endpoint::poll_transmit_batch) (several
/// for one destination) into the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it.
    pub destination: SocketAddr,
    /// The local IP address to send it from: the address the peer's datagrams arrive at
    /// (known from `IP_PKTINFO` / `IPV6_PKTINFO` on a socket bound to a wildcard address),
    /// or `None` to leave the choice to the socket.
    pub source: Option<IpAddr>,
    /// Its length in bytes (the buffer holds exactly this).
    pub size: usize,
    /// The ECN codepoint to set in the IP header (RFC 9000 §13.4).
    pub ecn: Option<EcnCodepoint>,
    /// `Some(n)`: the buffer holds several datagrams back to back, each `n` bytes long but the
    /// last, which may be shorter (a UDP generic segmentation offload send, Linux
    /// `UDP_SEGMENT`). `None`: one datagram.
    pub segment_size: Option<usize>,
}

impl Transmit {
    /// How many datagrams the buffer holds.
    pub fn datagrams(&self) -> usize {
        match self.segment_size {
            Some(n) if n > 0 => self.size.div_ceil(n),
            _ => 1,
        }
    }
}
