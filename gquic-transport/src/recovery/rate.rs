//! Delivery rate sampling (draft-ietf-ccwg-bbr §4.1, "Delivery Rate Samples").
//!
//! Each sent packet snapshots how much had been delivered and when; when it is acknowledged the
//! difference gives the rate at which the path delivered data over that packet's flight. The
//! connection runs one sampler and hands a [`RateSample`] per ACK frame to the congestion
//! controller ([`Controller::on_rate_sample`](super::congestion::Controller::on_rate_sample)).

use std::collections::VecDeque;
use std::num::NonZeroU64;
use std::time::{Duration, Instant};

/// What the sampler snapshots in each sent packet (draft-ietf-ccwg-bbr §4.1.2.2, per-packet
/// state).
#[derive(Debug, Clone, Copy)]
pub struct PacketRateState {
    /// Bytes delivered when the packet was sent (P.delivered).
    pub delivered: u64,
    /// When `delivered` was last updated (P.delivered_time).
    pub delivered_time: Instant,
    /// Send time of the first packet of the current flight (P.first_send_time).
    pub first_send_time: Instant,
    /// Whether the sender was application-limited (P.is_app_limited).
    pub is_app_limited: bool,
    /// Bytes in flight, this packet included (P.tx_in_flight).
    pub tx_in_flight: u64,
    /// Bytes declared lost when the packet was sent (P.lost).
    pub lost: u64,
}

/// One ACK frame's delivery rate sample (draft-ietf-ccwg-bbr §4.1.2.2, RS).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RateSample {
    /// Delivery rate in bytes per second; 0 when the ACK gives no reliable sample.
    pub delivery_rate: u64,
    /// Bytes delivered over the sample's interval (RS.delivered).
    pub delivered: u64,
    /// Bytes delivered when the newest acknowledged packet was sent (RS.prior_delivered).
    pub prior_delivered: u64,
    /// The sample's interval (RS.interval).
    pub interval: Duration,
    /// Whether the newest acknowledged packet was sent while application-limited.
    pub is_app_limited: bool,
    /// Bytes newly acknowledged by this ACK (RS.newly_acked).
    pub newly_acked: u64,
    /// Bytes newly declared lost while processing this ACK (RS.newly_lost).
    pub newly_lost: u64,
    /// Bytes in flight when the newest acknowledged packet was sent (RS.tx_in_flight).
    pub tx_in_flight: u64,
    /// Bytes lost between the newest acknowledged packet's send and now (RS.lost).
    pub lost: u64,
    /// Round-trip time of the newest acknowledged packet (RS.rtt).
    pub rtt: Option<Duration>,
    /// Bytes delivered over the connection so far (C.delivered).
    pub total_delivered: u64,
    /// Bytes in flight after this ACK (C.inflight).
    pub bytes_in_flight: u64,
}

/// One lost packet as a model-based controller sees it (draft-ietf-ccwg-bbr §5.5.10.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LostPacket {
    /// The packet's size.
    pub size: u64,
    /// Bytes in flight when it was sent, itself included.
    pub tx_in_flight: u64,
    /// Bytes lost between its send and now, itself included.
    pub lost_since_sent: u64,
    /// Whether it was sent while application-limited.
    pub is_app_limited: bool,
}

/// Names the snapshot a [`RateSampler`] keeps for a packet it [tracked](RateSampler::track).
///
/// Eight bytes where the snapshot itself ([`PacketRateState`]) takes 64: a transport keeps it
/// in each sent packet's record, which then stays small enough to be moved without a call
/// to `memcpy` (records are moved as they go into and out of the ring of sent packets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateTicket(NonZeroU64);

/// The snapshots of the tracked packets, in the order they were sent.
#[derive(Debug, Clone)]
struct Snapshots {
    /// `ring[i]` belongs to ticket `first + i`; `None` once acknowledged, lost or forgotten.
    ring: VecDeque<Option<PacketRateState>>,
    first: u64,
    /// The next ticket's number.
    next: u64,
}

impl Default for Snapshots {
    fn default() -> Self {
        Self {
            ring: VecDeque::new(),
            first: 1,
            next: 1,
        }
    }
}

impl Snapshots {
    fn push(&mut self, state: PacketRateState) -> RateTicket {
        if self.ring.is_empty() {
            self.first = self.next;
        }
        let n = self.next;
        self.next += 1;
        self.ring.push_back(Some(state));
        // Numbers start at 1 and only grow: never zero.
        RateTicket(NonZeroU64::new(n).unwrap_or(NonZeroU64::MIN))
    }

    fn take(&mut self, t: RateTicket) -> Option<PacketRateState> {
        let at = t.0.get().checked_sub(self.first)?;
        let state = self.ring.get_mut(usize::try_from(at).ok()?)?.take();
        while let Some(None) = self.ring.front() {
            self.ring.pop_front();
            self.first += 1;
        }
        state
    }
}

/// The connection's delivery rate sampler (per-connection state C.* of the draft).
#[derive(Debug, Clone, Default)]
pub struct RateSampler {
    /// The snapshots of tracked packets ([`RateSampler::track`]).
    snapshots: Snapshots,
    delivered: u64,
    delivered_time: Option<Instant>,
    first_send_time: Option<Instant>,
    /// Nonzero while application-limited: the `delivered` value that ends the bubble.
    app_limited: u64,
    lost: u64,
    // The sample being built for the current ACK.
    rs: RateSample,
    rs_prior_time: Option<Instant>,
    rs_send_elapsed: Duration,
    rs_ack_elapsed: Duration,
    rs_newest_sent: Option<Instant>,
}

impl RateSampler {
    /// Snapshots a packet being sent (OnPacketSent). `in_flight_before` is what was in flight
    /// before it.
    pub fn on_sent(&mut self, now: Instant, in_flight_before: u64, size: u64) -> PacketRateState {
        if in_flight_before == 0 {
            self.first_send_time = Some(now);
            self.delivered_time = Some(now);
        }
        PacketRateState {
            delivered: self.delivered,
            delivered_time: self.delivered_time.unwrap_or(now),
            first_send_time: self.first_send_time.unwrap_or(now),
            is_app_limited: self.app_limited != 0,
            tx_in_flight: in_flight_before + size,
            lost: self.lost,
        }
    }

    /// [`RateSampler::on_sent`], with the snapshot kept here until the packet is
    /// acknowledged ([`RateSampler::on_tracked_acked`]), lost
    /// ([`RateSampler::on_tracked_lost`]) or forgotten ([`RateSampler::forget`]): one of
    /// the three must come for every ticket, or its snapshot stays.
    pub fn track(&mut self, now: Instant, in_flight_before: u64, size: u64) -> RateTicket {
        let state = self.on_sent(now, in_flight_before, size);
        self.snapshots.push(state)
    }

    /// [`RateSampler::on_acked`] for a tracked packet. A ticket whose snapshot is gone (taken
    /// already, or never kept by this sampler) counts nothing.
    pub fn on_tracked_acked(&mut self, now: Instant, sent: Instant, size: u64, t: RateTicket) {
        if let Some(p) = self.snapshots.take(t) {
            self.on_acked(now, sent, size, &p);
        }
    }

    /// [`RateSampler::on_lost`] for a tracked packet; `None` if its snapshot is gone.
    pub fn on_tracked_lost(&mut self, size: u64, t: RateTicket) -> Option<LostPacket> {
        let p = self.snapshots.take(t)?;
        Some(self.on_lost(size, &p))
    }

    /// Drops a tracked packet's snapshot: the packet will be neither acknowledged nor
    /// declared lost (its packet number space was discarded, say).
    pub fn forget(&mut self, t: RateTicket) {
        self.snapshots.take(t);
    }

    /// How many snapshot slots are kept: from the oldest tracked packet not yet acknowledged,
    /// lost or forgotten to the newest (the slots freed after the oldest wait for it to go).
    pub fn tracked(&self) -> usize {
        self.snapshots.ring.len()
    }

    /// Takes over the snapshots of `old`, the sampler this one replaces (a new path, RFC
    /// 9000 §9.4): the packets `old` tracked are still in flight, and their tickets name
    /// their snapshots here.
    pub fn take_tracked(&mut self, old: &mut RateSampler) {
        self.snapshots = std::mem::take(&mut old.snapshots);
    }

    /// The sender has nothing to send although the window has room (MarkConnectionAppLimited).
    pub fn on_app_limited(&mut self, bytes_in_flight: u64) {
        self.app_limited = (self.delivered + bytes_in_flight).max(1);
    }

    /// Whether samples are currently marked application-limited.
    pub fn is_app_limited(&self) -> bool {
        self.app_limited != 0
    }

    /// Bytes delivered so far.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// A packet was acknowledged (UpdateRateSample). Call in ascending send order.
    pub fn on_acked(&mut self, now: Instant, sent: Instant, size: u64, p: &PacketRateState) {
        self.delivered += size;
        self.delivered_time = Some(now);
        self.rs.newly_acked += size;
        if self.rs_newest_sent.is_none_or(|t| sent >= t) {
            self.rs_newest_sent = Some(sent);
            self.rs_prior_time = Some(p.delivered_time);
            self.rs.prior_delivered = p.delivered;
            self.rs.is_app_limited = p.is_app_limited;
            self.rs.tx_in_flight = p.tx_in_flight;
            self.rs.lost = p.lost;
            self.rs_send_elapsed = sent.saturating_duration_since(p.first_send_time);
            self.rs_ack_elapsed = now.saturating_duration_since(p.delivered_time);
            self.rs.rtt = Some(now.saturating_duration_since(sent));
            self.first_send_time = Some(sent);
        }
    }

    /// A packet was declared lost.
    pub fn on_lost(&mut self, size: u64, p: &PacketRateState) -> LostPacket {
        self.lost += size;
        self.rs.newly_lost += size;
        LostPacket {
            size,
            tx_in_flight: p.tx_in_flight,
            // A packet sent before the sampler was reset (a new path, RFC 9000 §9.4) carries
            // the old path's count, which can be the larger.
            lost_since_sent: self.lost.saturating_sub(p.lost),
            is_app_limited: p.is_app_limited,
        }
    }

    /// Finishes the sample for this ACK (GenerateRateSample) and starts the next one.
    pub fn generate(&mut self, min_rtt: Duration, bytes_in_flight: u64) -> RateSample {
        if self.app_limited != 0 && self.delivered > self.app_limited {
            self.app_limited = 0;
        }
        let mut rs = std::mem::take(&mut self.rs);
        let prior_time = self.rs_prior_time.take();
        self.rs_newest_sent = None;
        rs.total_delivered = self.delivered;
        rs.bytes_in_flight = bytes_in_flight;
        rs.lost = self.lost.saturating_sub(rs.lost);
        // No sample from a packet sent before the sampler was reset (a new path, RFC 9000
        // §9.4): its snapshot counts deliveries of the old one.
        if prior_time.is_none() || rs.prior_delivered > self.delivered {
            return rs;
        }
        rs.interval = self.rs_send_elapsed.max(self.rs_ack_elapsed);
        rs.delivered = self.delivered - rs.prior_delivered;
        if rs.interval < min_rtt || rs.interval.is_zero() {
            return rs;
        }
        rs.delivery_rate = (rs.delivered as f64 / rs.interval.as_secs_f64()) as u64;
        rs
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Tests take one real Instant as their time origin.
mod tests {
    use super::*;

    /// A packet sent before a reset (a new path) and lost after it: no underflow (this
    /// panicked in debug builds, found by the CID-rotation migration test) and no loss
    /// counted from the old path.
    #[test]
    fn a_packet_from_before_a_reset_is_lost_after_it() {
        let mut before = RateSampler::default();
        let sent = before.on_sent(Instant::now(), 0, 1000);
        // The old path had lost 5000 bytes when it was sent.
        let sent = PacketRateState { lost: 5000, ..sent };
        let mut after = RateSampler::default();
        assert_eq!(after.on_lost(1000, &sent).lost_since_sent, 0);
    }

    /// Tracked snapshots come back by ticket in any order, each once; the slots of those
    /// acknowledged, lost or forgotten go as soon as no older one is left; a sampler that
    /// replaces another takes its snapshots, so the old tickets still name theirs.
    #[test]
    fn tracked_snapshots_come_back_by_ticket() {
        let t0 = Instant::now();
        let mut r = RateSampler::default();
        let a = r.track(t0, 0, 1000);
        let b = r.track(t0, 1000, 1000);
        let c = r.track(t0, 2000, 1000);
        assert_eq!(r.tracked(), 3);
        // The newest first: the older ones keep the ring's front.
        r.on_tracked_acked(t0 + Duration::from_millis(10), t0, 1000, c);
        assert_eq!(r.tracked(), 3);
        assert_eq!(r.delivered(), 1000);
        // Again: already taken, nothing counted twice.
        r.on_tracked_acked(t0 + Duration::from_millis(10), t0, 1000, c);
        assert_eq!(r.delivered(), 1000);
        let lost = r.on_tracked_lost(1000, a).expect("a's snapshot");
        assert_eq!((lost.tx_in_flight, lost.lost_since_sent), (1000, 1000));
        assert!(r.on_tracked_lost(1000, a).is_none());
        assert_eq!(r.tracked(), 2, "a's slot went; b holds the front");
        let mut next = RateSampler::default();
        let d = r.track(t0, 0, 1000);
        next.take_tracked(&mut r);
        assert_eq!((r.tracked(), next.tracked()), (0, 3));
        next.forget(b);
        let lost = next
            .on_tracked_lost(1000, d)
            .expect("d's snapshot, taken over");
        assert_eq!(lost.tx_in_flight, 1000);
        assert_eq!(next.tracked(), 0);
        // Numbering goes on after the taken-over tickets: a new one never names an old one.
        let e = next.track(t0, 0, 1000);
        assert!(![a, b, c, d].contains(&e));
        assert_eq!(next.tracked(), 1);
    }

    #[test]
    fn a_paced_flight_samples_the_bottleneck_rate() {
        // 10 packets of 1000 bytes sent 1 ms apart, acknowledged 1 ms apart after 20 ms: the
        // path delivers 1 MB/s.
        let t0 = Instant::now();
        let ms = |n: u64| Duration::from_millis(n);
        let mut r = RateSampler::default();
        let mut inflight = 0;
        let mut sent = Vec::new();
        for i in 0..10 {
            sent.push((t0 + ms(i), r.on_sent(t0 + ms(i), inflight, 1000)));
            inflight += 1000;
        }
        let mut last = RateSample::default();
        for (i, (at, p)) in sent.iter().enumerate() {
            let now = t0 + ms(20 + i as u64);
            r.on_acked(now, *at, 1000, p);
            inflight -= 1000;
            last = r.generate(ms(20), inflight);
        }
        assert_eq!(last.newly_acked, 1000);
        assert_eq!(last.total_delivered, 10_000);
        assert_eq!(last.rtt, Some(ms(20)));
        assert_eq!(last.tx_in_flight, 10_000);
        // The tenth packet: 9000 bytes delivered between its send (t0 + 9, delivered_time of
        // t0) and now (t0 + 29): ack_elapsed 29 ms, send_elapsed 9 ms.
        assert_eq!(last.interval, ms(29));
        assert_eq!(last.delivered, 10_000);
        assert!(
            (340_000..=350_000).contains(&last.delivery_rate),
            "{last:?}"
        );
        // The next flight, sent as ACKs arrive, measures the steady 1 MB/s.
        let t1 = t0 + ms(30);
        let mut sent = Vec::new();
        for i in 0..10 {
            let at = t1 + ms(i);
            sent.push((at, r.on_sent(at, inflight, 1000)));
            inflight += 1000;
        }
        for (i, (at, p)) in sent.iter().enumerate() {
            let now = t1 + ms(20 + i as u64);
            r.on_acked(now, *at, 1000, p);
            inflight -= 1000;
            last = r.generate(ms(20), inflight);
        }
        assert!(last.delivery_rate > 300_000, "{last:?}");
    }

    #[test]
    fn samples_shorter_than_min_rtt_and_app_limited_flights_are_marked() {
        let t0 = Instant::now();
        let ms = |n: u64| Duration::from_millis(n);
        let mut r = RateSampler::default();
        let p = r.on_sent(t0, 0, 1200);
        r.on_app_limited(1200);
        let q = r.on_sent(t0 + ms(1), 1200, 1200);
        assert!(!p.is_app_limited);
        assert!(q.is_app_limited);
        r.on_acked(t0 + ms(5), t0, 1200, &p);
        let s = r.generate(ms(10), 1200);
        assert_eq!(
            s.delivery_rate, 0,
            "an interval below min_rtt gives no rate"
        );
        assert_eq!(s.newly_acked, 1200);
        r.on_acked(t0 + ms(20), t0 + ms(1), 1200, &q);
        let s = r.generate(ms(10), 0);
        assert!(s.is_app_limited);
        assert!(!r.is_app_limited(), "the bubble is acknowledged and gone");
        // A loss reports the bytes lost since the packet left.
        let a = r.on_sent(t0 + ms(30), 0, 1000);
        let b = r.on_sent(t0 + ms(31), 1000, 1000);
        let la = r.on_lost(1000, &a);
        let lb = r.on_lost(1000, &b);
        assert_eq!(la.lost_since_sent, 1000);
        assert_eq!(lb.lost_since_sent, 2000);
        assert_eq!(lb.tx_in_flight, 2000);
        assert_eq!(r.generate(ms(10), 0).newly_lost, 2000);
    }

    mod ticket_props {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            Send(u64),
            Ack(prop::sample::Index),
            Lose(prop::sample::Index),
            Forget(prop::sample::Index),
            /// A new path: a fresh sampler takes over the snapshots.
            NewPath,
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                4 => (1u64..1500).prop_map(Op::Send),
                3 => any::<prop::sample::Index>().prop_map(Op::Ack),
                1 => any::<prop::sample::Index>().prop_map(Op::Lose),
                1 => any::<prop::sample::Index>().prop_map(Op::Forget),
                1 => Just(Op::NewPath),
            ]
        }

        proptest! {
            /// Tickets handed out, then returned in any order (acknowledged, lost, forgotten,
            /// some twice, some across a new path), against a model of the packets still
            /// out: a ticket counts once and only while it is out (acknowledged bytes add
            /// to `delivered`, a loss comes back `Some`), its snapshot is the one taken when
            /// it was sent, and the kept slots span exactly the oldest ticket still out to
            /// the newest handed out, none once every ticket is back.
            #[test]
            fn tickets_count_once_and_leave_nothing_behind(
                ops in proptest::collection::vec(op(), 1..200),
            ) {
                let t0 = Instant::now();
                let mut r = RateSampler::default();
                // (ticket, its number, size, `delivered` when sent, still out)
                let mut sent: Vec<(RateTicket, u64, u64, u64, bool)> = Vec::new();
                let mut delivered = 0u64;
                let mut number = 0u64;
                for (k, op) in ops.into_iter().enumerate() {
                    let now = t0 + Duration::from_millis(k as u64);
                    match op {
                        Op::Send(size) => {
                            let before = r.delivered();
                            number += 1;
                            sent.push((r.track(now, 0, size), number, size, before, true));
                        }
                        Op::Ack(i) if !sent.is_empty() => {
                            let at = i.index(sent.len());
                            let e = &mut sent[at];
                            r.on_tracked_acked(now, t0, e.2, e.0);
                            if std::mem::replace(&mut e.4, false) {
                                delivered += e.2;
                                // The snapshot taken when this packet was sent.
                                prop_assert_eq!(r.rs.prior_delivered, e.3);
                            }
                        }
                        Op::Lose(i) if !sent.is_empty() => {
                            let at = i.index(sent.len());
                            let e = &mut sent[at];
                            let lost = r.on_tracked_lost(e.2, e.0);
                            prop_assert_eq!(lost.is_some(), std::mem::replace(&mut e.4, false));
                            if let Some(l) = lost {
                                prop_assert_eq!(l.size, e.2);
                            }
                        }
                        Op::Forget(i) if !sent.is_empty() => {
                            let at = i.index(sent.len());
                            let e = &mut sent[at];
                            r.forget(e.0);
                            e.4 = false;
                        }
                        Op::NewPath => {
                            let mut fresh = RateSampler::default();
                            fresh.take_tracked(&mut r);
                            prop_assert_eq!(r.tracked(), 0);
                            r = fresh;
                            delivered = 0;
                        }
                        _ => {}
                    }
                    prop_assert_eq!(r.delivered(), delivered);
                    let oldest = sent.iter().filter(|e| e.4).map(|e| e.1).min();
                    let expect = oldest.map_or(0, |o| (number - o + 1) as usize);
                    prop_assert_eq!(r.tracked(), expect);
                }
                // Every ticket still out comes back; nothing is left.
                for e in sent.iter_mut().filter(|e| e.4) {
                    r.forget(e.0);
                    e.4 = false;
                }
                prop_assert_eq!(r.tracked(), 0);
            }
        }
    }
}
