//! Round-trip time estimation (RFC 9002 §5).

use std::time::Duration;

/// Timer granularity (RFC 9002 §6.1.2: kGranularity, 1 ms).
pub const K_GRANULARITY: Duration = Duration::from_millis(1);
/// The RTT assumed before any sample (RFC 9002 §6.2.2: kInitialRtt, 333 ms).
pub const K_INITIAL_RTT: Duration = Duration::from_millis(333);

/// The RTT estimator of RFC 9002 §5: latest, minimum and smoothed RTT, and its variation.
#[derive(Debug, Clone, Copy)]
pub struct RttEstimator {
    latest: Duration,
    smoothed: Option<Duration>,
    var: Duration,
    min: Duration,
}

impl RttEstimator {
    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    /// Writes the estimator out (connection hibernation).
    pub(crate) fn pack(&self, p: &mut crate::pack::Packer) {
        p.dur(self.latest);
        p.opt_dur(self.smoothed);
        p.dur(self.var);
        p.dur(self.min);
    }

    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    /// Reads back what [`RttEstimator::pack`] wrote.
    pub(crate) fn unpack(u: &mut crate::pack::Unpacker<'_>) -> Option<Self> {
        Some(Self {
            latest: u.dur()?,
            smoothed: u.opt_dur()?,
            var: u.dur()?,
            min: u.dur()?,
        })
    }

    /// An estimator that assumes `initial` until the first sample (RFC 9002 §5.3).
    pub fn new(initial: Duration) -> Self {
        Self {
            latest: initial,
            smoothed: None,
            var: initial / 2,
            min: initial,
        }
    }

    /// The smoothed RTT, or the initial RTT before any sample.
    pub fn smoothed(&self) -> Duration {
        self.smoothed.unwrap_or(self.latest)
    }

    /// The most recent sample.
    pub fn latest(&self) -> Duration {
        self.latest
    }

    /// The minimum RTT seen (RFC 9002 §5.2).
    pub fn min(&self) -> Duration {
        self.min
    }

    /// The mean deviation (rttvar).
    pub fn var(&self) -> Duration {
        self.var
    }

    /// Whether any sample has been taken.
    pub fn has_sample(&self) -> bool {
        self.smoothed.is_some()
    }

    /// `smoothed_rtt + max(4 * rttvar, kGranularity)`: the PTO before `max_ack_delay` and
    /// backoff (RFC 9002 §6.2.1).
    pub fn pto_base(&self) -> Duration {
        self.smoothed() + (self.var * 4).max(K_GRANULARITY)
    }

    /// The loss-detection delay `max(9/8 * max(smoothed_rtt, latest_rtt), kGranularity)`
    /// (RFC 9002 §6.1.2).
    pub fn loss_delay(&self) -> Duration {
        (self.smoothed().max(self.latest) * 9 / 8).max(K_GRANULARITY)
    }

    /// Takes an RTT sample (RFC 9002 §5.3). `ack_delay` is the peer's reported delay, already
    /// capped at its `max_ack_delay` once the handshake is confirmed (§5.3) by the caller.
    pub fn update(&mut self, ack_delay: Duration, rtt: Duration) {
        self.latest = rtt;
        self.min = if self.smoothed.is_none() {
            rtt
        } else {
            self.min.min(rtt)
        };
        let Some(smoothed) = self.smoothed else {
            // First sample (§5.3).
            self.smoothed = Some(rtt);
            self.var = rtt / 2;
            return;
        };
        // Subtract the ack delay unless that would go below min_rtt.
        let adjusted = if rtt >= self.min + ack_delay {
            rtt - ack_delay
        } else {
            rtt
        };
        let diff = smoothed.abs_diff(adjusted);
        self.var = (self.var * 3 + diff) / 4;
        self.smoothed = Some((smoothed * 7 + adjusted) / 8);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc9002_rtt_estimation() {
        let ms = Duration::from_millis;
        let mut r = RttEstimator::new(K_INITIAL_RTT);
        assert_eq!(r.smoothed(), ms(333));
        assert_eq!(r.pto_base(), ms(333) + ms(333) / 2 * 4);
        r.update(ms(10), ms(100));
        assert_eq!((r.smoothed(), r.var(), r.min()), (ms(100), ms(50), ms(100)));
        // 120 ms with 10 ms ack delay: adjusted 110, smoothed 7/8*100 + 110/8.
        r.update(ms(10), ms(120));
        assert_eq!(r.smoothed(), (ms(700) + ms(110)) / 8);
        assert_eq!(r.var(), (ms(150) + ms(10)) / 4);
        // An ack delay that would push the sample below min_rtt is ignored.
        r.update(ms(50), ms(110));
        assert_eq!(r.latest(), ms(110));
        assert_eq!(r.min(), ms(100));
        // Converges to a steady RTT.
        for _ in 0..100 {
            r.update(Duration::ZERO, ms(40));
        }
        assert!(r.smoothed().abs_diff(ms(40)) < ms(1));
        assert_eq!(r.min(), ms(40));
        assert!(r.loss_delay().abs_diff(ms(45)) < ms(1), "9/8 of the RTT");
    }
}
