//! Receive-side flow-control windows that grow with the measured bandwidth-delay product
//! (RFC 9000 §4.1, §4.2).

use std::time::{Duration, Instant};

/// A receive window for a stream or the whole connection.
///
/// The limit advertised to the peer is `consumed + window`. An update is due once the peer
/// could be blocked within half a window. If updates come faster than every two round trips,
/// the window is too small for the path's bandwidth-delay product and doubles, up to
/// `max_window` (the auto-tuning Chromium and quinn use).
#[derive(Debug, Clone)]
pub struct RecvWindow {
    window: u64,
    max_window: u64,
    /// The limit last advertised.
    max_data: u64,
    /// Bytes the application has consumed.
    consumed: u64,
    last_update: Option<Instant>,
}

impl RecvWindow {
    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    /// Writes the window out (connection hibernation).
    pub(crate) fn pack(&self, p: &mut crate::pack::Packer) {
        p.u64(self.window);
        p.u64(self.max_window);
        p.u64(self.max_data);
        p.u64(self.consumed);
        p.opt_time(self.last_update);
    }

    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    /// Reads back what [`RecvWindow::pack`] wrote.
    pub(crate) fn unpack(u: &mut crate::pack::Unpacker<'_>) -> Option<Self> {
        Some(Self {
            window: u.u64()?,
            max_window: u.u64()?,
            max_data: u.u64()?,
            consumed: u.u64()?,
            last_update: u.opt_time()?,
        })
    }

    /// A window starting at `initial` bytes and growing up to `max_window`.
    pub fn new(initial: u64, max_window: u64) -> Self {
        Self {
            window: initial,
            max_window: max_window.max(initial),
            max_data: initial,
            consumed: 0,
            last_update: None,
        }
    }

    /// The limit currently advertised.
    pub fn max_data(&self) -> u64 {
        self.max_data
    }

    /// The current window size.
    pub fn window(&self) -> u64 {
        self.window
    }

    /// Records `n` bytes consumed by the application. Returns a new limit to advertise when an
    /// update is due (RFC 9000 §4.2: send before the peer is blocked).
    /// `now` is asked for only when an update is due (reading the clock costs more than the
    /// rest of a small read).
    pub fn on_consumed(
        &mut self,
        n: u64,
        now: impl FnOnce() -> Instant,
        rtt: Duration,
    ) -> Option<u64> {
        self.consumed += n;
        let remaining = self.max_data.saturating_sub(self.consumed);
        if remaining > self.window / 2 {
            return None;
        }
        let now = now();
        if let Some(last) = self.last_update {
            if now.saturating_duration_since(last) < rtt * 2 {
                self.window = (self.window * 2).min(self.max_window);
            }
        }
        self.last_update = Some(now);
        self.max_data = self.consumed + self.window;
        Some(self.max_data)
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Tests take one real Instant as their time origin.
mod tests {
    use super::*;

    #[test]
    fn updates_at_half_window_and_grows_with_bdp() {
        let t0 = Instant::now();
        let rtt = Duration::from_millis(100);
        let mut w = RecvWindow::new(1000, 8000);
        assert_eq!(w.on_consumed(400, || t0, rtt), None);
        assert_eq!(w.on_consumed(100, || t0, rtt), Some(1500));
        assert_eq!(w.window(), 1000, "first update only records the time");
        // Another update within 2 RTT: the window is too small and doubles.
        assert_eq!(
            w.on_consumed(500, || t0 + Duration::from_millis(50), rtt),
            Some(3000)
        );
        assert_eq!(w.window(), 2000);
        // A slow reader (updates far apart) does not grow the window.
        assert_eq!(
            w.on_consumed(1000, || t0 + Duration::from_secs(10), rtt),
            Some(4000)
        );
        assert_eq!(w.window(), 2000);
        for i in 0..10 {
            w.on_consumed(
                w.window(),
                || t0 + Duration::from_secs(10) + Duration::from_millis(i),
                rtt,
            );
        }
        assert_eq!(w.window(), 8000, "capped at max_window");
    }
}
