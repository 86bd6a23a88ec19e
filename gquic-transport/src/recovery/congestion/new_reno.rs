//! NewReno (RFC 9002 §7.3 and Appendix B).

use std::sync::Arc;
use std::time::Instant;

use super::{
    finite_ssthresh, initial_window, loss_based_state, minimum_window, Controller,
    ControllerFactory,
};
use crate::recovery::rtt::RttEstimator;

/// NewReno settings.
#[derive(Debug, Clone)]
pub struct NewRenoConfig {
    /// Window reduction on loss (RFC 9002 §7.3.2: kLossReductionFactor, 0.5).
    pub loss_reduction_factor: f64,
    /// Initial window in bytes; `None` uses RFC 9002 §7.2's formula.
    pub initial_window: Option<u64>,
}

impl Default for NewRenoConfig {
    fn default() -> Self {
        Self {
            loss_reduction_factor: 0.5,
            initial_window: None,
        }
    }
}

impl ControllerFactory for NewRenoConfig {
    fn build(&self, _now: Instant, max_datagram_size: u64) -> Box<dyn Controller> {
        Box::new(NewReno::new(Arc::new(self.clone()), max_datagram_size))
    }
}

/// The NewReno congestion controller of RFC 9002 §7.3: slow start, congestion avoidance and
/// one window reduction per recovery period.
#[derive(Debug, Clone)]
pub struct NewReno {
    config: Arc<NewRenoConfig>,
    max_datagram_size: u64,
    window: u64,
    ssthresh: u64,
    /// Start of the current recovery period (RFC 9002 §7.3.2).
    recovery_start: Option<Instant>,
    /// Bytes acknowledged toward the next congestion-avoidance increase (Appendix B.5).
    bytes_acked: u64,
    /// In a recovery period: from a congestion event until a packet sent after it is
    /// acknowledged (RFC 9002 §7.3.2).
    recovering: bool,
}

impl NewReno {
    /// A controller in slow start with the initial window.
    pub fn new(config: Arc<NewRenoConfig>, max_datagram_size: u64) -> Self {
        let window = config
            .initial_window
            .unwrap_or_else(|| initial_window(max_datagram_size));
        Self {
            config,
            max_datagram_size,
            window,
            ssthresh: u64::MAX,
            recovery_start: None,
            bytes_acked: 0,
            recovering: false,
        }
    }

    /// Whether the controller is in slow start.
    pub fn in_slow_start(&self) -> bool {
        self.window < self.ssthresh
    }

    fn in_recovery(&self, sent: Instant) -> bool {
        self.recovery_start.is_some_and(|start| sent <= start)
    }
}

impl Controller for NewReno {
    fn on_ack(
        &mut self,
        _now: Instant,
        sent: Instant,
        bytes: u64,
        app_limited: bool,
        _rtt: &RttEstimator,
    ) {
        // RFC 9002 §7.3.2: no increase for packets sent before recovery started; §7.8: nor when
        // the window is not being used.
        if self.in_recovery(sent) {
            return;
        }
        self.recovering = false;
        if app_limited {
            return;
        }
        if self.in_slow_start() {
            self.window += bytes;
            if self.window >= self.ssthresh {
                self.bytes_acked = self.window - self.ssthresh;
            }
        } else {
            // Congestion avoidance: one max_datagram_size per window acknowledged.
            self.bytes_acked += bytes;
            if self.bytes_acked >= self.window {
                self.bytes_acked -= self.window;
                self.window += self.max_datagram_size;
            }
        }
    }

    fn on_congestion_event(
        &mut self,
        now: Instant,
        sent: Instant,
        persistent: bool,
        _lost_bytes: u64,
    ) {
        if persistent {
            // RFC 9002 §7.6.2: collapse to the minimum window.
            self.window = minimum_window(self.max_datagram_size);
            self.recovery_start = None;
            self.bytes_acked = 0;
            return;
        }
        if self.in_recovery(sent) {
            return;
        }
        self.recovery_start = Some(now);
        self.recovering = true;
        let reduced = (self.window as f64 * self.config.loss_reduction_factor) as u64;
        self.window = reduced.max(minimum_window(self.max_datagram_size));
        self.ssthresh = self.window;
        self.bytes_acked = 0;
    }

    fn on_mtu_update(&mut self, max_datagram_size: u64) {
        self.max_datagram_size = max_datagram_size;
        self.window = self.window.max(minimum_window(max_datagram_size));
    }

    fn window(&self) -> u64 {
        self.window
    }

    fn state(&self) -> &'static str {
        loss_based_state(self.recovering, self.in_slow_start())
    }

    fn wants_rate_samples(&self) -> bool {
        false
    }

    fn ssthresh(&self) -> Option<u64> {
        finite_ssthresh(self.ssthresh)
    }

    fn initial_window(&self) -> u64 {
        self.config
            .initial_window
            .unwrap_or_else(|| initial_window(self.max_datagram_size))
    }

    fn clone_box(&self) -> Box<dyn Controller> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Tests take one real Instant as their time origin.
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc9002_new_reno() {
        let t0 = Instant::now();
        let rtt = RttEstimator::new(Duration::from_millis(100));
        let mut cc = NewReno::new(Arc::default(), 1200);
        assert_eq!(cc.window(), 12000, "min(10 * 1200, max(14720, 2400))");
        // Slow start: the window grows by the bytes acknowledged.
        cc.on_ack(t0, t0, 1200, false, &rtt);
        assert_eq!(cc.window(), 13200);
        // App-limited: no growth.
        cc.on_ack(t0, t0, 1200, true, &rtt);
        assert_eq!(cc.window(), 13200);
        // Loss halves the window once per recovery period.
        let t1 = t0 + Duration::from_millis(10);
        cc.on_congestion_event(t1, t0, false, 1200);
        assert_eq!(cc.window(), 6600);
        cc.on_congestion_event(t1, t0, false, 1200);
        assert_eq!(
            cc.window(),
            6600,
            "packets sent before recovery do not reduce again"
        );
        // Acks of packets sent before recovery do not grow the window.
        cc.on_ack(t1, t0, 1200, false, &rtt);
        assert_eq!(cc.window(), 6600);
        // Congestion avoidance: +1 datagram per window of acknowledged bytes.
        let t2 = t1 + Duration::from_millis(10);
        for _ in 0..5 {
            cc.on_ack(t2, t2, 1200, false, &rtt);
        }
        assert_eq!(cc.window(), 6600);
        cc.on_ack(t2, t2, 1200, false, &rtt);
        assert_eq!(cc.window(), 7800);
        // Persistent congestion collapses to the minimum window.
        cc.on_congestion_event(t2, t2, true, 10_000);
        assert_eq!(cc.window(), 2400);
    }
}
