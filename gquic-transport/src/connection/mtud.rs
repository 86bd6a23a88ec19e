//! Datagram Packetization Layer PMTU Discovery (RFC 8899 §5, RFC 9000 §14.3).
//!
//! Connections start at 1200 bytes (the QUIC minimum, RFC 9000 §14). Once the handshake is
//! confirmed, probe packets (PING and PADDING, RFC 9000 §14.3.1) of growing sizes search the
//! largest size the path carries, up to the smaller of our configured upper bound and the
//! peer's `max_udp_payload_size`: a binary search, each size tried up to three times (RFC 8899
//! MAX_PROBES). A probe that is acknowledged raises the datagram size; lost probes are not a
//! congestion signal (RFC 9000 §14.4). The search runs again after ten minutes (RFC 8899 §5.3
//! raise timer).
//!
//! Black holes (RFC 8899 §4.3): if packets above the base size keep getting lost while none
//! of that size gets through, the path stopped carrying them; the size drops back to 1200 and
//! the search starts again a minute later, below the size that failed. A large packet lost
//! while one sent after it was acknowledged is not such evidence: the path carried that one,
//! so the loss was congestion (a queue overflowing drops a run of packets of every size).
//!
//! Repeated PTOs with nothing acknowledged fall back to 1200 too (the ACKs that would declare
//! large packets lost never come if those are all the path drops). But an outage of the whole
//! path looks the same and says nothing about size, so this fallback keeps the ceiling: as
//! soon as a packet is acknowledged again, the size used before is probed (RFC 8899 §4.3:
//! the PLPMTU is confirmed before it is used again). Acknowledged, it is back within a round
//! trip; lost `MAX_PROBES` times, it was a black hole, and the search continues below it.

use std::time::{Duration, Instant};

/// The QUIC minimum (RFC 9000 §14), the base PLPMTU.
pub(super) const BASE: u16 = 1200;
/// RFC 8899 MAX_PROBES.
const MAX_PROBES: u8 = 3;
/// The search stops when the bounds are this close.
const GRANULARITY: u16 = 16;
/// RFC 8899 §5.3: re-probe for a larger size after this long.
const RAISE_TIMER: Duration = Duration::from_secs(600);
/// After a black hole, wait this long before searching again.
const BLACK_HOLE_PAUSE: Duration = Duration::from_secs(60);
/// Large packets lost in a row (none of that size acknowledged in between) that make a black
/// hole.
const BLACK_HOLE_LOSSES: u32 = 6;
/// Consecutive PTOs (nothing acknowledged) that make a black hole.
const PTO_BLACK_HOLE: u32 = 3;

/// The discovery state of one connection.
#[derive(Debug)]
pub(super) struct Mtud {
    /// The largest size confirmed (what packets use).
    pub(super) current: u16,
    /// The largest size we would ever try.
    upper: u16,
    /// Search bounds: `low` works, `high` is the most that might.
    low: u16,
    high: u16,
    /// The size being probed, and how many probes of it were lost.
    probe: Option<u16>,
    attempts: u8,
    /// A probe is in flight (its packet number).
    in_flight: Option<u64>,
    /// When to search again (None: searching, or not yet allowed).
    next_search: Option<Instant>,
    searching: bool,
    /// Packets larger than `BASE` lost since one of them was acknowledged.
    large_losses: u32,
    /// One more than the newest packet number of an acknowledged packet larger than `BASE`
    /// (0: none): losses of packets sent before it do not count toward a black hole.
    large_acked_above: u64,
    /// After a fallback on PTOs: the size used before it, to probe again once a packet is
    /// acknowledged.
    confirm: Option<u16>,
    enabled: bool,
    started: bool,
}

impl Mtud {
    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    /// Writes the search state out (connection hibernation); refuses while a search is under
    /// way.
    pub(super) fn pack(&self, p: &mut crate::pack::Packer) -> crate::pack::Packed {
        p.require(self.in_flight.is_none() && !(self.enabled && self.searching))?;
        for v in [self.current, self.upper, self.low, self.high] {
            p.u64(u64::from(v));
        }
        p.opt_u64(self.probe.map(u64::from));
        p.u64(u64::from(self.attempts));
        p.opt_time(self.next_search);
        p.bool(self.searching);
        p.u64(u64::from(self.large_losses));
        p.opt_u64(self.confirm.map(u64::from));
        p.bool(self.enabled);
        p.bool(self.started);
        Some(())
    }

    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    /// Reads back what [`Mtud::pack`] wrote.
    pub(super) fn unpack(u: &mut crate::pack::Unpacker<'_>) -> Option<Self> {
        Some(Self {
            current: u.u16()?,
            upper: u.u16()?,
            low: u.u16()?,
            high: u.u16()?,
            probe: u.opt_u64()?.map(u16::try_from).transpose().ok()?,
            attempts: u.u8()?,
            in_flight: None,
            next_search: u.opt_time()?,
            searching: u.bool()?,
            large_losses: u.u32()?,
            large_acked_above: 0,
            confirm: u.opt_u64()?.map(u16::try_from).transpose().ok()?,
            enabled: u.bool()?,
            started: u.bool()?,
        })
    }

    pub(super) fn new(upper: u16, enabled: bool) -> Self {
        Self {
            current: BASE,
            upper: upper.max(BASE),
            low: BASE,
            high: upper.max(BASE),
            probe: None,
            attempts: 0,
            in_flight: None,
            next_search: None,
            searching: false,
            large_losses: 0,
            large_acked_above: 0,
            confirm: None,
            enabled: enabled && upper > BASE,
            started: false,
        }
    }

    /// The handshake is confirmed: the search may start, bounded by the peer's
    /// `max_udp_payload_size` too (RFC 9000 §18.2).
    pub(super) fn start(&mut self, peer_max_udp_payload: u64) {
        if !self.enabled || self.started {
            return;
        }
        self.started = true;
        self.upper = self
            .upper
            .min(u16::try_from(peer_max_udp_payload).unwrap_or(u16::MAX));
        if self.upper <= BASE {
            self.enabled = false;
            return;
        }
        self.high = self.upper;
        self.begin_search();
    }

    fn begin_search(&mut self) {
        self.searching = true;
        self.next_search = None;
        self.low = self.current;
        self.attempts = 0;
        self.probe = self.next_probe();
        if self.probe.is_none() {
            self.finish_search(None);
        }
    }

    /// Binary search; when the bounds are close, the upper bound itself is tried once (so a
    /// path that carries it gets exactly it).
    fn next_probe(&self) -> Option<u16> {
        if self.high <= self.low {
            return None;
        }
        if self.high - self.low < GRANULARITY {
            return (self.high == self.upper).then_some(self.high);
        }
        Some(self.low + (self.high - self.low).div_ceil(2))
    }

    fn finish_search(&mut self, now: Option<Instant>) {
        self.searching = false;
        self.probe = None;
        self.next_search = now.map(|n| n + RAISE_TIMER);
    }

    /// The size of a probe to send now, if one is due (none in flight).
    pub(super) fn poll_probe(&mut self, now: Instant) -> Option<u16> {
        if !self.enabled {
            return None;
        }
        if !self.searching {
            if self.next_search.is_some_and(|t| now >= t) {
                self.high = self.upper;
                self.begin_search();
            } else {
                return None;
            }
        }
        if self.in_flight.is_some() {
            return None;
        }
        self.probe
    }

    /// A probe of `size` went out as packet `pn`.
    pub(super) fn on_probe_sent(&mut self, pn: u64) {
        self.in_flight = Some(pn);
    }

    /// A probe of `size` was acknowledged: the path carries it. Returns the new datagram size.
    pub(super) fn on_probe_acked(&mut self, now: Instant, size: u16) -> Option<u16> {
        self.in_flight = None;
        self.large_losses = 0;
        if size <= self.current {
            return None;
        }
        self.current = size;
        self.low = size;
        self.attempts = 0;
        self.probe = self.next_probe();
        if self.probe.is_none() {
            self.finish_search(Some(now));
        }
        Some(size)
    }

    /// A probe of `size` was declared lost (not a congestion signal, RFC 9000 §14.4).
    pub(super) fn on_probe_lost(&mut self, now: Instant, size: u16) {
        self.in_flight = None;
        if Some(size) != self.probe {
            return;
        }
        self.attempts += 1;
        if self.attempts < MAX_PROBES {
            return;
        }
        // RFC 8899 §5.1.4: this size does not get through.
        self.high = size - 1;
        self.attempts = 0;
        self.probe = self.next_probe();
        if self.probe.is_none() {
            self.finish_search(Some(now));
        }
    }

    /// Packet `pn` (not a probe) of `size` was acknowledged.
    pub(super) fn on_acked(&mut self, pn: u64, size: u16) {
        if size > BASE {
            self.large_losses = 0;
            self.large_acked_above = self.large_acked_above.max(pn.saturating_add(1));
        }
        if let Some(old) = self.confirm.take() {
            // The path carries packets again after a fallback on PTOs: the size used before
            // goes first, then a binary search below it if it no longer gets through.
            tracing::debug!(
                size = old,
                "path back after PTOs: probing the previous size"
            );
            self.searching = true;
            self.next_search = None;
            self.low = self.current;
            self.high = old;
            self.attempts = 0;
            self.probe = (old > self.current).then_some(old);
            if self.probe.is_none() {
                self.searching = false;
            }
        }
    }

    /// Packet `pn` (not a probe) of `size` was lost. Returns the size to fall back to if this
    /// looks like a black hole (RFC 8899 §4.3).
    pub(super) fn on_lost(&mut self, now: Instant, pn: u64, size: u16) -> Option<u16> {
        if !self.enabled || size <= BASE || self.current <= BASE {
            return None;
        }
        if pn < self.large_acked_above {
            // A large packet sent after this one got through: congestion, not a black hole.
            return None;
        }
        self.large_losses += 1;
        if self.large_losses < BLACK_HOLE_LOSSES {
            return None;
        }
        tracing::debug!(size = self.current, "PMTU black hole: back to {BASE}");
        // Search again later, below the size that stopped working.
        self.upper = self.current - 1;
        self.fall_back(Some(now + BLACK_HOLE_PAUSE));
        Some(BASE)
    }

    /// Consecutive PTOs with nothing acknowledged: if packets above the base size are what
    /// gets lost, no ACK ever comes to declare them lost, so repeated PTOs fall back to `BASE`
    /// too (returned). The ceiling stays: the size used before is probed again as soon as a
    /// packet is acknowledged (see the module documentation).
    pub(super) fn on_pto(&mut self, pto_count: u32) -> Option<u16> {
        if !self.enabled || self.current <= BASE || pto_count < PTO_BLACK_HOLE {
            return None;
        }
        tracing::debug!(
            size = self.current,
            "PTOs in a row: back to {BASE} until confirmed"
        );
        self.confirm = Some(self.current);
        self.fall_back(None);
        Some(BASE)
    }

    /// Back to `BASE` with no search under way; the next one starts at `next_search`.
    fn fall_back(&mut self, next_search: Option<Instant>) {
        self.large_losses = 0;
        self.current = BASE;
        self.low = BASE;
        self.in_flight = None;
        self.searching = false;
        self.probe = None;
        self.next_search = next_search;
    }

    /// When the next search may start (for the connection's timer).
    pub(super) fn timeout(&self) -> Option<Instant> {
        if self.enabled && !self.searching {
            self.next_search
        } else {
            None
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Tests take one real Instant as their time origin.
mod tests {
    use super::*;

    /// Runs a search on a path that carries `mtu` bytes; returns the size found and probes.
    fn search(upper: u16, peer: u64, mtu: u16) -> (u16, usize) {
        let now = Instant::now();
        let mut m = Mtud::new(upper, true);
        m.start(peer);
        let mut probes = 0;
        let mut pn = 0;
        while let Some(size) = m.poll_probe(now) {
            probes += 1;
            pn += 1;
            m.on_probe_sent(pn);
            if size <= mtu {
                m.on_probe_acked(now, size);
            } else {
                m.on_probe_lost(now, size);
            }
            assert!(probes < 100, "the search ends");
        }
        (m.current, probes)
    }

    #[test]
    fn finds_the_largest_size_within_bounds() {
        // A 1500-byte Ethernet path over IPv6: 1452 bytes of UDP payload.
        assert_eq!(search(1452, 65527, 1452).0, 1452);
        // The peer's max_udp_payload_size bounds it.
        assert_eq!(search(1452, 1350, 1500).0, 1350);
        // A smaller path: within the granularity below it, never above.
        let (found, probes) = search(1452, 65527, 1300);
        assert!(found <= 1300 && found > 1300 - GRANULARITY, "{found}");
        assert!(probes < 30, "{probes} probes");
        // Nothing above the base: stays at 1200.
        assert_eq!(search(1452, 65527, 1200).0, 1200);
        assert_eq!(search(1200, 65527, 1500).0, 1200);
    }

    #[test]
    fn black_hole_falls_back_and_searches_again_later() {
        let now = Instant::now();
        let mut m = at_1452(now);
        // Large packets are lost, small ones are not a signal.
        for pn in 10..20 {
            assert_eq!(m.on_lost(now, pn, 1100), None);
        }
        let mut fell = None;
        for pn in 20..20 + u64::from(BLACK_HOLE_LOSSES) {
            fell = fell.or(m.on_lost(now, pn, 1452));
        }
        assert_eq!(fell, Some(BASE));
        assert_eq!(m.current, BASE);
        assert_eq!(m.poll_probe(now), None, "a pause first");
        let later = now + BLACK_HOLE_PAUSE;
        assert_eq!(m.timeout(), Some(later));
        let probe = m.poll_probe(later).expect("searching again");
        assert!(probe < 1452, "below the size that failed");
    }

    #[test]
    fn an_acknowledged_large_packet_resets_the_black_hole_count() {
        let now = Instant::now();
        let mut m = Mtud::new(1452, true);
        m.current = 1452;
        for pn in 0..u64::from(BLACK_HOLE_LOSSES) - 1 {
            assert_eq!(m.on_lost(now, pn, 1452), None);
        }
        m.on_acked(10, 1452);
        for pn in 20..20 + u64::from(BLACK_HOLE_LOSSES) - 1 {
            assert_eq!(m.on_lost(now, pn, 1452), None);
        }
        assert_eq!(m.on_lost(now, 30, 1452), Some(BASE), "the count ran on");
    }

    /// A connection that found 1452 bytes.
    fn at_1452(now: Instant) -> Mtud {
        let mut m = Mtud::new(1452, true);
        m.start(65527);
        while let Some(size) = m.poll_probe(now) {
            m.on_probe_sent(1);
            m.on_probe_acked(now, size);
        }
        assert_eq!(m.current, 1452);
        m
    }

    #[test]
    fn an_outage_falls_back_on_ptos_and_the_size_comes_back_once_confirmed() {
        let now = Instant::now();
        let mut m = at_1452(now);
        assert_eq!(m.on_pto(PTO_BLACK_HOLE - 1), None);
        assert_eq!(m.on_pto(PTO_BLACK_HOLE), Some(BASE));
        assert_eq!(m.current, BASE);
        assert_eq!(m.on_pto(PTO_BLACK_HOLE + 1), None, "once");
        // Nothing to probe while nothing gets through.
        assert_eq!(m.poll_probe(now), None);
        assert_eq!(m.timeout(), None);
        // A packet is acknowledged: the size used before is tried at once, not a search.
        m.on_acked(40, BASE);
        assert_eq!(m.poll_probe(now), Some(1452));
        m.on_probe_sent(41);
        assert_eq!(m.on_probe_acked(now, 1452), Some(1452));
        assert_eq!(m.current, 1452);
        assert_eq!(m.poll_probe(now), None, "done");
        assert_eq!(m.timeout(), Some(now + RAISE_TIMER));
        // The ceiling did not move: a later search may still reach it.
        assert_eq!(m.upper, 1452);
    }

    #[test]
    fn a_black_hole_found_on_ptos_is_searched_below_once_confirmed() {
        let now = Instant::now();
        let mut m = at_1452(now);
        assert_eq!(m.on_pto(PTO_BLACK_HOLE), Some(BASE));
        m.on_acked(40, BASE);
        // The path now carries 1300: 1452 is lost MAX_PROBES times, then the search goes on
        // below it.
        let mut pn = 41;
        let mut probes = 0;
        while let Some(size) = m.poll_probe(now) {
            probes += 1;
            assert!(probes < 30, "the search ends");
            if probes == 1 {
                assert_eq!(size, 1452, "the previous size first");
            }
            m.on_probe_sent(pn);
            pn += 1;
            if size <= 1300 {
                m.on_probe_acked(now, size);
            } else {
                m.on_probe_lost(now, size);
            }
        }
        assert!(
            m.current <= 1300 && m.current > 1300 - GRANULARITY,
            "{}",
            m.current
        );
    }

    #[test]
    fn a_congestion_burst_is_not_a_black_hole() {
        // A queue overflowed and dropped packets 100..1100, all of the full size; the ACK
        // that declares them lost acknowledges packets sent after them, as large.
        let now = Instant::now();
        let mut m = Mtud::new(1452, true);
        m.current = 1452;
        for pn in 1100..1200 {
            m.on_acked(pn, 1452);
        }
        for pn in 100..1100 {
            assert_eq!(m.on_lost(now, pn, 1452), None, "packet {pn}");
        }
        assert_eq!(m.current, 1452);
        // Packets sent after the last acknowledged one, lost in a row: that is a black hole.
        let mut fell = None;
        for pn in 1200..1200 + u64::from(BLACK_HOLE_LOSSES) {
            fell = fell.or(m.on_lost(now, pn, 1452));
        }
        assert_eq!(fell, Some(BASE));
    }
}
