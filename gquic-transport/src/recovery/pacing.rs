//! Pacing (RFC 9002 §7.7): spread a window's packets over a round trip instead of bursting.

use std::time::{Duration, Instant};

/// How long a burst may last at the pacing rate (quinn and Linux's fq use similar bounds).
const BURST_INTERVAL: Duration = Duration::from_millis(2);
/// The largest burst, in datagrams.
const MAX_BURST_PACKETS: u64 = 256;

/// A token-bucket pacer: tokens (bytes) refill at `N * cwnd / smoothed_rtt` with N = 1.25 (RFC
/// 9002 §7.7 recommends a small N above 1), up to a burst of what the rate sends in 2 ms,
/// at least `burst_packets` datagrams.
#[derive(Debug, Clone)]
pub struct Pacer {
    tokens: u64,
    capacity: u64,
    last: Option<Instant>,
    burst_packets: u64,
}

impl Pacer {
    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    /// Writes the pacer out (connection hibernation).
    pub(crate) fn pack(&self, p: &mut crate::pack::Packer) {
        p.u64(self.tokens);
        p.u64(self.capacity);
        p.opt_time(self.last);
        p.u64(self.burst_packets);
    }

    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    /// Reads back what [`Pacer::pack`] wrote.
    pub(crate) fn unpack(u: &mut crate::pack::Unpacker<'_>) -> Option<Self> {
        Some(Self {
            tokens: u.u64()?,
            capacity: u.u64()?,
            last: u.opt_time()?,
            burst_packets: u.u64()?,
        })
    }

    /// A pacer allowing bursts of `burst_packets` datagrams of `max_datagram_size`.
    pub fn new(burst_packets: u64, max_datagram_size: u64) -> Self {
        let capacity = burst_packets * max_datagram_size;
        Self {
            tokens: capacity,
            capacity,
            last: None,
            burst_packets,
        }
    }

    /// When a packet of `bytes` may be sent: `None` for now, or the time to wait until.
    /// Consumes the tokens when it may be sent now.
    pub fn delay(
        &mut self,
        now: Instant,
        bytes: u64,
        window: u64,
        rtt: Duration,
        max_datagram_size: u64,
    ) -> Option<Instant> {
        if self.take_in_batch(now, bytes) {
            return None;
        }
        let rtt = rtt.max(Duration::from_micros(1));
        // rate in bytes per second = 1.25 * window / rtt
        let rate = (window as f64 * 1.25) / rtt.as_secs_f64();
        self.delay_at_rate(now, bytes, rate, max_datagram_size)
    }

    /// The next packet of a batch (the same `now` as the last one) while the tokens last:
    /// nothing refills between them, and the rate and the bucket's size only matter for a
    /// refill, so they are not worked out again per packet.
    fn take_in_batch(&mut self, now: Instant, bytes: u64) -> bool {
        if self.last == Some(now) && self.tokens >= bytes {
            self.tokens -= bytes;
            return true;
        }
        false
    }

    /// [`Pacer::delay`] at a rate (bytes per second) the congestion controller chose.
    pub fn delay_at_rate(
        &mut self,
        now: Instant,
        bytes: u64,
        rate: f64,
        max_datagram_size: u64,
    ) -> Option<Instant> {
        if self.take_in_batch(now, bytes) {
            return None;
        }
        let rate = rate.max(1.0);
        // The bucket holds what the rate sends in BURST_INTERVAL (at least `burst_packets`,
        // at most MAX_BURST_PACKETS datagrams): a runtime's timers fire a millisecond or so
        // late, and a bucket smaller than what the rate sends meanwhile would cap the rate.
        let interval = (rate * BURST_INTERVAL.as_secs_f64()) as u64;
        self.capacity = interval
            .min(MAX_BURST_PACKETS * max_datagram_size)
            .max(self.burst_packets * max_datagram_size)
            .max(bytes);
        if let Some(last) = self.last.filter(|&l| l != now) {
            // (Packets of one batch share `now`: nothing to refill between them.)
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            let refill = (elapsed * rate) as u64;
            if refill > 0 {
                self.tokens = (self.tokens + refill).min(self.capacity);
                self.last = Some(now);
            }
        } else if self.last.is_none() {
            self.last = Some(now);
        }
        if self.tokens >= bytes {
            self.tokens -= bytes;
            return None;
        }
        let missing = (bytes - self.tokens) as f64;
        // Always strictly in the future: a zero wait would have the driver fire the pacing
        // timer at `now` again and again without time advancing.
        let wait = Duration::from_secs_f64(missing / rate).max(Duration::from_micros(1));
        Some(now + wait)
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Tests take one real Instant as their time origin.
mod tests {
    use super::*;

    /// Regression: with a huge rate and a few bytes missing, the wait used to round to zero and
    /// the pacing timer fired at `now` forever.
    #[test]
    fn wait_is_never_zero() {
        let t0 = Instant::now();
        let mut p = Pacer::new(1, 1200);
        assert_eq!(
            p.delay(t0, 1200, 1 << 40, Duration::from_micros(1), 1200),
            None
        );
        let mut now = t0;
        for _ in 0..1000 {
            if let Some(at) = p.delay(now, 1200, 1 << 40, Duration::from_micros(1), 1200) {
                assert!(at > now, "pacing wait must advance time");
                now = at;
            }
        }
    }

    #[test]
    fn rfc9002_paces_after_burst() {
        let t0 = Instant::now();
        let rtt = Duration::from_millis(100);
        let mut p = Pacer::new(10, 1200);
        // 10 packets go at once.
        for _ in 0..10 {
            assert_eq!(p.delay(t0, 1200, 120_000, rtt, 1200), None);
        }
        // The 11th waits: 1200 bytes at 1.25 * 120000 B / 100 ms = 1.5 MB/s -> 0.8 ms.
        let at = p.delay(t0, 1200, 120_000, rtt, 1200).unwrap();
        let wait = at - t0;
        assert!(
            wait > Duration::from_micros(790) && wait < Duration::from_micros(810),
            "{wait:?}"
        );
        assert_eq!(p.delay(at, 1200, 120_000, rtt, 1200), None);
    }
}
