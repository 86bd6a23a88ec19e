//! Sent-packet tracking and loss detection for one packet-number space (RFC 9002 §6, §A).

use std::collections::VecDeque;
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use super::rtt::RttEstimator;
use crate::error::TransportErrorCode;

/// RFC 9002 §6.1.1: kPacketThreshold.
pub const K_PACKET_THRESHOLD: u64 = 3;
/// RFC 9002 §7.6.1: kPersistentCongestionThreshold.
pub const K_PERSISTENT_CONGESTION_THRESHOLD: u32 = 3;

/// What the transport remembers about a packet until it is acknowledged or declared lost.
#[derive(Debug, Clone)]
pub struct SentPacket<T> {
    /// When it was sent.
    pub time_sent: Instant,
    /// Its size in bytes, counted toward bytes in flight when `in_flight`.
    pub size: u16,
    /// Whether it contained ack-eliciting frames.
    pub ack_eliciting: bool,
    /// Whether it counts toward bytes in flight (ack-eliciting or PADDING, RFC 9002 §2).
    pub in_flight: bool,
    /// What it carried that must be resent or acted on when lost or acknowledged.
    pub info: T,
}

/// The outcome of processing one ACK frame.
#[derive(Debug)]
pub struct AckOutcome<T> {
    /// Packets newly acknowledged, ascending by packet number.
    pub acked: Vec<(u64, SentPacket<T>)>,
    /// An RTT sample, if the largest acknowledged packet is newly acknowledged and
    /// ack-eliciting packets were among the newly acknowledged (RFC 9002 §5.1).
    pub rtt_sample: Option<Duration>,
}

/// The packets sent in one packet-number space and not yet acknowledged or lost.
///
/// Packet numbers only grow (RFC 9000 §12.3), so the packets live in a ring indexed by packet
/// number: no allocation per packet once it has grown to the window.
#[derive(Debug)]
pub struct SentPackets<T> {
    /// `packets[i]` is packet `base + i`; `None` once acknowledged or lost.
    packets: VecDeque<Option<SentPacket<T>>>,
    base: u64,
    /// The next packet number to send.
    next_pn: u64,
    /// Largest acknowledged packet number (RFC 9002 §A.1: largest_acked_packet).
    largest_acked: Option<u64>,
    /// Send time of the last ack-eliciting packet (for the PTO timer, §6.2.1).
    time_of_last_ack_eliciting: Option<Instant>,
    /// When the earliest not-yet-lost packet will be declared lost by time (§6.1.2).
    loss_time: Option<Instant>,
    /// Bytes in flight from this space.
    bytes_in_flight: u64,
    ack_eliciting_in_flight: u64,
}

impl<T> Default for SentPackets<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> SentPackets<T> {
    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    /// Writes the space's packet numbers out (connection hibernation); refuses while any
    /// packet is tracked.
    pub(crate) fn pack(&self, p: &mut crate::pack::Packer) -> crate::pack::Packed {
        p.require(
            self.packets.is_empty()
                && self.loss_time.is_none()
                && self.bytes_in_flight == 0
                && self.ack_eliciting_in_flight == 0,
        )?;
        p.u64(self.next_pn);
        p.opt_u64(self.largest_acked);
        p.opt_time(self.time_of_last_ack_eliciting);
        Some(())
    }

    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    /// Reads back what [`SentPackets::pack`] wrote.
    pub(crate) fn unpack(u: &mut crate::pack::Unpacker<'_>) -> Option<Self> {
        let next_pn = u.u64()?;
        Some(Self {
            packets: VecDeque::new(),
            base: next_pn,
            next_pn,
            largest_acked: u.opt_u64()?,
            time_of_last_ack_eliciting: u.opt_time()?,
            loss_time: None,
            bytes_in_flight: 0,
            ack_eliciting_in_flight: 0,
        })
    }

    /// An empty space.
    pub const fn new() -> Self {
        Self {
            packets: VecDeque::new(),
            base: 0,
            next_pn: 0,
            largest_acked: None,
            time_of_last_ack_eliciting: None,
            loss_time: None,
            bytes_in_flight: 0,
            ack_eliciting_in_flight: 0,
        }
    }

    /// The packet number the next packet gets.
    pub fn next_pn(&self) -> u64 {
        self.next_pn
    }

    /// The largest packet number the peer acknowledged.
    pub fn largest_acked(&self) -> Option<u64> {
        self.largest_acked
    }

    /// Bytes in flight from this space.
    pub fn bytes_in_flight(&self) -> u64 {
        self.bytes_in_flight
    }

    /// Frees the tracking memory when nothing is in flight (an idle connection). Packets not
    /// in flight (ACK-only ones, RFC 9002 §2) may still be tracked then, perhaps for good: the
    /// peer need not acknowledge them. They are forgotten; an acknowledgment of one later is
    /// ignored like that of any packet already acknowledged or declared lost.
    pub fn shrink(&mut self) {
        if self.bytes_in_flight == 0 && self.ack_eliciting_in_flight == 0 {
            self.base = self.next_pn;
            self.packets = VecDeque::new();
            self.loss_time = None;
        }
    }

    /// Whether ack-eliciting packets are outstanding (RFC 9002 §6.2.1: arms the PTO).
    pub fn has_ack_eliciting_in_flight(&self) -> bool {
        self.ack_eliciting_in_flight > 0
    }

    /// When the last ack-eliciting packet was sent.
    pub fn time_of_last_ack_eliciting(&self) -> Option<Instant> {
        self.time_of_last_ack_eliciting
    }

    /// When time-threshold loss detection next fires (RFC 9002 §6.1.2).
    pub fn loss_time(&self) -> Option<Instant> {
        self.loss_time
    }

    /// Records a packet sent with the next packet number; returns that number.
    pub fn on_sent(&mut self, packet: SentPacket<T>) -> u64 {
        let pn = self.next_pn;
        self.next_pn += 1;
        if packet.in_flight {
            self.bytes_in_flight += u64::from(packet.size);
        }
        if packet.ack_eliciting {
            self.ack_eliciting_in_flight += 1;
            self.time_of_last_ack_eliciting = Some(packet.time_sent);
        }
        if self.packets.is_empty() {
            self.base = pn;
        }
        self.packets.push_back(Some(packet));
        pn
    }

    fn take(&mut self, pn: u64) -> Option<SentPacket<T>> {
        let idx = pn.checked_sub(self.base)? as usize;
        let packet = self.packets.get_mut(idx)?.take()?;
        if packet.in_flight {
            self.bytes_in_flight -= u64::from(packet.size);
        }
        if packet.ack_eliciting {
            self.ack_eliciting_in_flight -= 1;
        }
        Some(packet)
    }

    /// Drops the records already taken from the front. In place: popping each would copy
    /// its slot (a record's size) out first.
    fn trim(&mut self) {
        let taken = self
            .packets
            .iter()
            .position(Option::is_some)
            .unwrap_or(self.packets.len());
        if taken > 0 {
            self.packets.drain(..taken);
            self.base += taken as u64;
        }
    }

    /// Processes the ranges of an ACK frame, highest first (RFC 9002 §A.7).
    ///
    /// # Errors
    /// PROTOCOL_VIOLATION if a packet number that was never sent is acknowledged (RFC 9000
    /// §13.1).
    pub fn on_ack(
        &mut self,
        ranges: impl Iterator<Item = RangeInclusive<u64>>,
        largest: u64,
        now: Instant,
    ) -> Result<AckOutcome<T>, TransportErrorCode> {
        let mut acked = Vec::new();
        let rtt_sample = self.on_ack_into(ranges, largest, now, &mut acked)?;
        acked.reverse();
        Ok(AckOutcome { acked, rtt_sample })
    }

    /// [`SentPackets::on_ack`] into a caller's vector (cleared first), so that a connection
    /// can reuse one across ACK frames; returns the RTT sample. The packets come in the order
    /// the frame names them: **descending** by packet number (reversing them would move each
    /// packet once more).
    ///
    /// # Errors
    /// As [`SentPackets::on_ack`].
    pub fn on_ack_into(
        &mut self,
        ranges: impl Iterator<Item = RangeInclusive<u64>>,
        largest: u64,
        now: Instant,
        acked: &mut Vec<(u64, SentPacket<T>)>,
    ) -> Result<Option<Duration>, TransportErrorCode> {
        acked.clear();
        if largest >= self.next_pn {
            return Err(TransportErrorCode::PROTOCOL_VIOLATION);
        }
        let mut largest_newly_acked = None;
        let mut any_ack_eliciting = false;
        for range in ranges {
            // Only the part of the range still tracked.
            let lo = (*range.start()).max(self.base);
            let hi = (*range.end()).min(self.next_pn.saturating_sub(1));
            if lo > hi {
                continue;
            }
            for pn in (lo..=hi).rev() {
                if let Some(p) = self.take(pn) {
                    any_ack_eliciting |= p.ack_eliciting;
                    if pn == largest {
                        largest_newly_acked = Some(p.time_sent);
                    }
                    acked.push((pn, p));
                }
            }
        }
        self.trim();
        self.largest_acked = Some(self.largest_acked.map_or(largest, |l| l.max(largest)));
        Ok(match largest_newly_acked {
            Some(sent) if any_ack_eliciting => Some(now.saturating_duration_since(sent)),
            _ => None,
        })
    }

    /// Declares lost the packets that RFC 9002 §6.1 says are lost, and sets the next loss time.
    /// Returns them ascending by packet number.
    pub fn detect_lost(&mut self, now: Instant, rtt: &RttEstimator) -> Vec<(u64, SentPacket<T>)> {
        self.loss_time = None;
        let Some(largest_acked) = self.largest_acked else {
            return Vec::new();
        };
        let loss_delay = rtt.loss_delay();
        let lost_send_time = now.checked_sub(loss_delay);
        let mut lost = Vec::new();
        let end = largest_acked.min(self.next_pn.saturating_sub(1));
        let mut pn = self.base;
        while pn <= end {
            let idx = (pn - self.base) as usize;
            if let Some(Some(p)) = self.packets.get(idx) {
                let by_time = lost_send_time.is_some_and(|t| p.time_sent <= t);
                let by_count = largest_acked >= pn + K_PACKET_THRESHOLD;
                if by_time || by_count {
                    if let Some(p) = self.take(pn) {
                        lost.push((pn, p));
                    }
                } else {
                    let when = p.time_sent + loss_delay;
                    self.loss_time = Some(self.loss_time.map_or(when, |t| t.min(when)));
                }
            }
            pn += 1;
        }
        self.trim();
        lost
    }

    /// Removes and returns every packet still tracked (the space's keys were discarded, RFC
    /// 9002 §6.4: they no longer count toward bytes in flight).
    pub fn discard(&mut self) -> Vec<(u64, SentPacket<T>)> {
        let mut out = Vec::new();
        for pn in self.base..self.next_pn {
            if let Some(p) = self.take(pn) {
                out.push((pn, p));
            }
        }
        self.packets = VecDeque::new();
        self.base = self.next_pn;
        self.loss_time = None;
        self.time_of_last_ack_eliciting = None;
        out
    }

    /// Takes the oldest unacknowledged ack-eliciting packets' info for a PTO probe
    /// (RFC 9002 §6.2.4), without removing them.
    pub fn oldest_unacked(&self) -> impl Iterator<Item = (u64, &SentPacket<T>)> {
        let base = self.base;
        self.packets
            .iter()
            .enumerate()
            .filter_map(move |(i, p)| p.as_ref().map(|p| (base + i as u64, p)))
    }
}

/// Whether `lost` (ascending, all from one ACK) establishes persistent congestion (RFC 9002
/// §7.6): two ack-eliciting packets lost, sent at least `duration` apart, with no packet
/// acknowledged between them, both sent after the first RTT sample.
///
/// `acked` are the packet numbers acknowledged by the same ACK; `duration` is
/// `(smoothed_rtt + max(4 * rttvar, kGranularity) + max_ack_delay) *
/// kPersistentCongestionThreshold`.
pub fn is_persistent_congestion<T>(
    lost: &[(u64, SentPacket<T>)],
    acked: &[u64],
    duration: Duration,
    first_rtt_sample: Option<Instant>,
) -> bool {
    let Some(first_sample) = first_rtt_sample else {
        return false;
    };
    let mut start: Option<(u64, Instant)> = None;
    for (pn, p) in lost {
        if !p.ack_eliciting || p.time_sent < first_sample {
            continue;
        }
        match start {
            Some((start_pn, start_time)) => {
                // No acknowledged packet between the first and this one.
                if acked.iter().any(|&a| a > start_pn && a < *pn) {
                    start = Some((*pn, p.time_sent));
                } else if p.time_sent.saturating_duration_since(start_time) >= duration {
                    return true;
                }
            }
            None => start = Some((*pn, p.time_sent)),
        }
    }
    false
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Tests take one real Instant as their time origin.
mod tests {
    use super::*;

    fn packet(t: Instant) -> SentPacket<()> {
        SentPacket {
            time_sent: t,
            size: 1200,
            ack_eliciting: true,
            in_flight: true,
            info: (),
        }
    }

    /// `on_ack_into` hands the packets over in the frame's order (descending), `on_ack` in
    /// ascending order; both take exactly the packets the ranges name.
    #[test]
    fn acknowledged_packets_come_in_frame_order_or_ascending() {
        let t0 = Instant::now();
        let mut a = SentPackets::new();
        let mut b = SentPackets::new();
        for _ in 0..10 {
            a.on_sent(packet(t0));
            b.on_sent(packet(t0));
        }
        let ranges = || [7..=9, 2..=4].into_iter();
        let mut acked = Vec::new();
        a.on_ack_into(ranges(), 9, t0, &mut acked).unwrap();
        let pns: Vec<u64> = acked.iter().map(|(pn, _)| *pn).collect();
        assert_eq!(pns, [9, 8, 7, 4, 3, 2]);
        let out = b.on_ack(ranges(), 9, t0).unwrap();
        let pns: Vec<u64> = out.acked.iter().map(|(pn, _)| *pn).collect();
        assert_eq!(pns, [2, 3, 4, 7, 8, 9]);
        assert_eq!(a.bytes_in_flight(), b.bytes_in_flight());
    }

    /// Idle-connection diet: once nothing is in flight, ACK-only packets (never acknowledged,
    /// perhaps) no longer hold the tracking memory; a late acknowledgment of one is ignored.
    #[test]
    fn shrink_forgets_ack_only_packets_once_nothing_is_in_flight() {
        let t0 = Instant::now();
        let mut s = SentPackets::new();
        s.on_sent(packet(t0));
        let ack_only = SentPacket {
            ack_eliciting: false,
            in_flight: false,
            ..packet(t0)
        };
        for _ in 0..3 {
            s.on_sent(ack_only.clone());
        }
        s.shrink();
        assert!(
            s.packets.capacity() > 0,
            "a packet in flight keeps the tracking"
        );
        s.on_ack([0..=0].into_iter(), 0, t0).unwrap();
        assert_eq!(s.bytes_in_flight(), 0);
        s.shrink();
        assert_eq!(
            s.packets.capacity(),
            0,
            "the ACK-only packets are forgotten"
        );
        let late = s.on_ack([1..=3].into_iter(), 3, t0).unwrap();
        assert!(late.acked.is_empty() && late.rtt_sample.is_none());
        assert_eq!(s.on_sent(packet(t0)), 4, "numbering goes on");
    }

    #[test]
    fn rfc9002_ack_and_loss_detection() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut s = SentPackets::new();
        for i in 0..10 {
            assert_eq!(s.on_sent(packet(t0 + ms(i))), i);
        }
        assert_eq!(s.bytes_in_flight(), 12000);
        // ACK of a never-sent packet (RFC 9000 §13.1).
        assert_eq!(
            s.on_ack([10..=10].into_iter(), 10, t0).unwrap_err(),
            TransportErrorCode::PROTOCOL_VIOLATION
        );

        let mut rtt = RttEstimator::new(ms(100));
        let out = s.on_ack([5..=6].into_iter(), 6, t0 + ms(106)).unwrap();
        assert_eq!(
            out.acked.iter().map(|(pn, _)| *pn).collect::<Vec<_>>(),
            vec![5, 6]
        );
        assert_eq!(out.rtt_sample, Some(ms(100)));
        rtt.update(Duration::ZERO, ms(100));
        // Packet threshold: 0..=3 are 3 or more below 6; 4 is not, so it waits for the timer.
        let lost = s.detect_lost(t0 + ms(106), &rtt);
        assert_eq!(
            lost.iter().map(|(pn, _)| *pn).collect::<Vec<_>>(),
            vec![0, 1, 2, 3]
        );
        assert_eq!(s.loss_time(), Some(t0 + ms(4) + rtt.loss_delay()));
        // Time threshold: after 9/8 RTT, packet 4 is lost too.
        let lost = s.detect_lost(t0 + ms(4) + rtt.loss_delay(), &rtt);
        assert_eq!(lost.iter().map(|(pn, _)| *pn).collect::<Vec<_>>(), vec![4]);
        assert_eq!(s.loss_time(), None);
        assert_eq!(s.bytes_in_flight(), 3 * 1200);
        // A duplicate ACK acknowledges nothing new and gives no RTT sample.
        let out = s.on_ack([5..=6].into_iter(), 6, t0 + ms(200)).unwrap();
        assert!(out.acked.is_empty() && out.rtt_sample.is_none());
        let rest = s.discard();
        assert_eq!(rest.len(), 3);
        assert_eq!(s.bytes_in_flight(), 0);
        assert!(!s.has_ack_eliciting_in_flight());
    }

    #[test]
    fn rfc9002_persistent_congestion() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let lost: Vec<(u64, SentPacket<()>)> =
            (1..=8).map(|i| (i, packet(t0 + ms(i * 100)))).collect();
        let duration = ms(600);
        assert!(is_persistent_congestion(&lost, &[], duration, Some(t0)));
        // An acknowledged packet in the middle breaks the period.
        assert!(!is_persistent_congestion(&lost, &[4], duration, Some(t0)));
        // Packets sent before the first RTT sample do not count.
        assert!(!is_persistent_congestion(
            &lost,
            &[],
            duration,
            Some(t0 + ms(350))
        ));
        assert!(!is_persistent_congestion(&lost, &[], duration, None));
    }
}
