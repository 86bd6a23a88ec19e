//! CUBIC (RFC 9438), the default congestion controller.
//!
//! The window grows along a cubic function of the time since the last congestion event,
//! centred on the window where that event happened (`W_max`): quickly while far below it,
//! cautiously near it, then faster again to probe for more. A Reno-friendly estimate keeps it
//! at least as aggressive as Reno on short-RTT paths where the cubic curve is slow.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{
    finite_ssthresh, initial_window, loss_based_state, minimum_window, AckedPacket, Controller,
    ControllerFactory,
};
use crate::recovery::rtt::RttEstimator;

/// RFC 9438 §5: C, in segments per second cubed.
const C: f64 = 0.4;

/// CUBIC settings.
#[derive(Debug, Clone)]
pub struct CubicConfig {
    /// Multiplicative decrease factor (RFC 9438 §4.6: β_cubic, 0.7).
    pub beta: f64,
    /// Fast convergence (RFC 9438 §4.7): release bandwidth faster when `W_max` keeps falling.
    pub fast_convergence: bool,
    /// Initial window in bytes; `None` uses RFC 9002 §7.2's formula.
    pub initial_window: Option<u64>,
    /// HyStart++ (RFC 9406): leave slow start when the RTT starts rising, before a queue
    /// overflows, instead of on the first loss.
    pub hystart: bool,
}

impl Default for CubicConfig {
    fn default() -> Self {
        Self {
            beta: 0.7,
            fast_convergence: true,
            initial_window: None,
            hystart: true,
        }
    }
}

impl ControllerFactory for CubicConfig {
    fn build(&self, _now: Instant, max_datagram_size: u64) -> Box<dyn Controller> {
        Box::new(Cubic::new(Arc::new(self.clone()), max_datagram_size))
    }
}

/// The CUBIC congestion controller of RFC 9438, with RFC 9002's recovery periods and
/// persistent congestion.
#[derive(Debug, Clone)]
pub struct Cubic {
    config: Arc<CubicConfig>,
    max_datagram_size: u64,
    /// The congestion window in bytes (fractional: per-ACK increases are small).
    window: f64,
    ssthresh: u64,
    /// Start of the current recovery period (RFC 9002 §7.3.2).
    recovery_start: Option<Instant>,
    /// In a recovery period: from a congestion event until a packet sent after it is
    /// acknowledged.
    recovering: bool,
    /// Start of the current congestion-avoidance epoch (RFC 9438 §4.2: t_epoch), shifted
    /// forward over application-limited periods (§5.8).
    epoch_start: Option<Instant>,
    /// The window before the last reduction, in segments (RFC 9438 §4.2: W_max).
    w_max: f64,
    /// Time for the cubic curve to climb back to `w_max`, in seconds (RFC 9438 §4.2: K).
    k: f64,
    /// The Reno-friendly window estimate in segments (RFC 9438 §4.3: W_est).
    w_est: f64,
    /// The window before the last reduction, in segments (RFC 9438 §4.6: cwnd_prior).
    cwnd_prior: f64,
    /// Since when acknowledgments have been application-limited.
    app_limited_since: Option<Instant>,
    hystart: HyStart,
}

/// RFC 9406 §4.3's constants.
const MIN_RTT_THRESH: Duration = Duration::from_millis(4);
const MAX_RTT_THRESH: Duration = Duration::from_millis(16);
const MIN_RTT_DIVISOR: u32 = 8;
const N_RTT_SAMPLE: u32 = 8;
const CSS_GROWTH_DIVISOR: u64 = 4;
const CSS_ROUNDS: u32 = 5;

/// HyStart++ state (RFC 9406 §4.2). Rounds are told apart by send times: a round ends when a
/// packet sent after the previous round's end is acknowledged.
#[derive(Debug, Clone, Default)]
struct HyStart {
    /// The newest send time so far.
    last_sent: Option<Instant>,
    /// The current round ends when a packet sent after this is acknowledged.
    round_end: Option<Instant>,
    last_round_min_rtt: Option<Duration>,
    current_round_min_rtt: Option<Duration>,
    samples: u32,
    /// In Conservative Slow Start since this baseline minimum RTT, for this many rounds.
    css: Option<(Duration, u32)>,
}

impl HyStart {
    /// Feeds one acknowledgment in slow start; returns what slow start should do.
    fn on_ack(&mut self, sent: Instant, latest_rtt: Duration) -> SlowStart {
        let mut new_round = false;
        if self.round_end.is_none_or(|end| sent > end) {
            // RFC 9406 §4.2: a new round starts.
            new_round = self.round_end.is_some();
            self.round_end = self.last_sent;
            self.last_round_min_rtt = self.current_round_min_rtt.take();
            self.samples = 0;
        }
        self.current_round_min_rtt = Some(
            self.current_round_min_rtt
                .map_or(latest_rtt, |m| m.min(latest_rtt)),
        );
        self.samples += 1;
        let current = self.current_round_min_rtt.unwrap_or(latest_rtt);
        if let Some((baseline, rounds)) = self.css.as_mut() {
            if new_round {
                *rounds += 1;
                if *rounds >= CSS_ROUNDS {
                    return SlowStart::Exit;
                }
            }
            if self.samples >= N_RTT_SAMPLE && current < *baseline {
                // The RTT increase was spurious: back to slow start.
                self.css = None;
                return SlowStart::Grow;
            }
            return SlowStart::Conservative;
        }
        if let (true, Some(last)) = (self.samples >= N_RTT_SAMPLE, self.last_round_min_rtt) {
            let thresh = (last / MIN_RTT_DIVISOR).clamp(MIN_RTT_THRESH, MAX_RTT_THRESH);
            if current >= last + thresh {
                self.css = Some((current, 0));
                return SlowStart::Conservative;
            }
        }
        SlowStart::Grow
    }
}

enum SlowStart {
    Grow,
    Conservative,
    Exit,
}

impl Cubic {
    /// A controller in slow start with the initial window.
    pub fn new(config: Arc<CubicConfig>, max_datagram_size: u64) -> Self {
        let window = config
            .initial_window
            .unwrap_or_else(|| initial_window(max_datagram_size));
        Self {
            config,
            max_datagram_size,
            window: window as f64,
            ssthresh: u64::MAX,
            recovery_start: None,
            recovering: false,
            epoch_start: None,
            w_max: 0.0,
            k: 0.0,
            w_est: 0.0,
            cwnd_prior: 0.0,
            app_limited_since: None,
            hystart: HyStart::default(),
        }
    }

    /// Whether the controller is in slow start.
    pub fn in_slow_start(&self) -> bool {
        (self.window as u64) < self.ssthresh
    }

    fn in_recovery(&self, sent: Instant) -> bool {
        self.recovery_start.is_some_and(|start| sent <= start)
    }

    fn mss(&self) -> f64 {
        self.max_datagram_size as f64
    }

    /// RFC 9438 §4.1: `W_cubic(t) = C * (t - K)^3 + W_max`, in segments.
    fn w_cubic(&self, t: f64) -> f64 {
        C * (t - self.k).powi(3) + self.w_max
    }

    /// Starts a congestion-avoidance epoch at `now` from the current window (RFC 9438 §4.2).
    fn start_epoch(&mut self, now: Instant) {
        let cwnd = self.window / self.mss();
        self.epoch_start = Some(now);
        if self.w_max < cwnd {
            // Slow start ended without a loss, or the window already passed W_max: the curve
            // starts at its plateau here.
            self.w_max = cwnd;
            self.k = 0.0;
        } else {
            self.k = ((self.w_max - cwnd) / C).cbrt();
        }
        self.w_est = cwnd;
    }

    /// What every acknowledgment does first, with `newest` the send time of the newest packet
    /// acknowledged: recovery ends once a packet sent after it began is acknowledged, and
    /// no growth happens while application-limited (RFC 9438 §5.8), a period whose length
    /// the curve's clock skips (the epoch moves forward by it). Returns whether the window
    /// may grow.
    fn may_grow(&mut self, now: Instant, newest: Instant, app_limited: bool) -> bool {
        if self.recovering && !self.in_recovery(newest) {
            self.recovering = false;
        }
        if app_limited {
            self.app_limited_since.get_or_insert(now);
            return false;
        }
        if let Some(since) = self.app_limited_since.take() {
            if let Some(epoch) = self.epoch_start.as_mut() {
                *epoch += now.saturating_duration_since(since);
            }
        }
        true
    }

    fn congestion_avoidance(&mut self, now: Instant, bytes: u64, rtt: &RttEstimator) {
        let Some(epoch) = self.epoch_start else {
            self.start_epoch(now);
            return self.congestion_avoidance(now, bytes, rtt);
        };
        let mss = self.mss();
        let cwnd = self.window / mss;
        let segments_acked = bytes as f64 / mss;
        let t = now.saturating_duration_since(epoch).as_secs_f64();
        // RFC 9438 §4.3: the Reno-friendly estimate grows by α_cubic per window, and like Reno
        // (α = 1) once it passes the window before the last reduction.
        let beta = self.config.beta;
        let alpha = if self.w_est >= self.cwnd_prior {
            1.0
        } else {
            3.0 * (1.0 - beta) / (1.0 + beta)
        };
        self.w_est += alpha * segments_acked / cwnd;
        let w_cubic = self.w_cubic(t);
        let new = if w_cubic < self.w_est {
            // Reno-friendly region.
            self.w_est
        } else {
            // RFC 9438 §4.4, §4.5: concave and convex regions, aiming at the curve one RTT
            // ahead, never more than 1.5 times the window.
            let rtt = rtt.smoothed().as_secs_f64();
            let target = self.w_cubic(t + rtt).clamp(cwnd, 1.5 * cwnd);
            cwnd + (target - cwnd) / cwnd * segments_acked
        };
        self.window = (new * mss).max(self.window);
    }
}

impl Controller for Cubic {
    fn on_sent(&mut self, now: Instant, _bytes: u64) {
        self.hystart.last_sent = Some(now);
    }

    fn on_ack(
        &mut self,
        now: Instant,
        sent: Instant,
        bytes: u64,
        app_limited: bool,
        rtt: &RttEstimator,
    ) {
        if !self.may_grow(now, sent, app_limited) {
            return;
        }
        // RFC 9002 §7.3.2: no increase for packets sent before recovery started.
        if self.in_recovery(sent) {
            return;
        }
        if self.in_slow_start() {
            // RFC 9438 §4.10: slow start as in Reno, with HyStart++ (RFC 9406 §4.3).
            let step = if self.config.hystart {
                self.hystart.on_ack(sent, rtt.latest())
            } else {
                SlowStart::Grow
            };
            match step {
                SlowStart::Grow => self.window += bytes as f64,
                SlowStart::Conservative => self.window += (bytes / CSS_GROWTH_DIVISOR) as f64,
                SlowStart::Exit => {
                    self.ssthresh = self.window as u64;
                    self.start_epoch(now);
                }
            }
            return;
        }
        self.congestion_avoidance(now, bytes, rtt);
    }

    /// Slow start goes packet by packet (HyStart++ counts its RTT samples and rounds so);
    /// congestion avoidance takes the frame's bytes at once: one evaluation of the curve per
    /// ACK, as RFC 9438 §4.2 describes it, instead of one per packet.
    fn on_acks(
        &mut self,
        now: Instant,
        acked: &[AckedPacket],
        app_limited: bool,
        rtt: &RttEstimator,
    ) {
        let mut rest = acked;
        while let [first, tail @ ..] = rest {
            if !self.in_slow_start() || app_limited {
                break;
            }
            self.on_ack(now, first.sent, first.bytes, app_limited, rtt);
            rest = tail;
        }
        let Some(newest) = rest.iter().map(|p| p.sent).max() else {
            return;
        };
        if !self.may_grow(now, newest, app_limited) {
            return;
        }
        // RFC 9002 §7.3.2: packets sent before recovery started do not count.
        let bytes: u64 = rest
            .iter()
            .filter(|p| !self.in_recovery(p.sent))
            .map(|p| p.bytes)
            .sum();
        if bytes > 0 {
            self.congestion_avoidance(now, bytes, rtt);
        }
    }

    fn on_congestion_event(
        &mut self,
        now: Instant,
        sent: Instant,
        persistent: bool,
        _lost_bytes: u64,
    ) {
        let mss = self.mss();
        let min = minimum_window(self.max_datagram_size) as f64;
        if persistent {
            // RFC 9438 §4.8 with RFC 9002 §7.6.2: ssthresh as for a loss, the window to the
            // minimum, and a new epoch once congestion avoidance resumes.
            self.ssthresh = ((self.window * self.config.beta) as u64).max(min as u64);
            self.cwnd_prior = self.window / mss;
            self.w_max = self.cwnd_prior;
            self.window = min;
            self.recovery_start = None;
            self.epoch_start = None;
            return;
        }
        if self.in_recovery(sent) {
            return;
        }
        self.recovery_start = Some(now);
        self.recovering = true;
        let cwnd = self.window / mss;
        // RFC 9438 §4.7: fast convergence.
        self.w_max = if self.config.fast_convergence && cwnd < self.w_max {
            cwnd * (1.0 + self.config.beta) / 2.0
        } else {
            cwnd
        };
        self.cwnd_prior = cwnd;
        // RFC 9438 §4.6: multiplicative decrease.
        self.window = (self.window * self.config.beta).max(min);
        self.ssthresh = self.window as u64;
        self.epoch_start = None;
        self.start_epoch(now);
    }

    fn on_mtu_update(&mut self, max_datagram_size: u64) {
        // Keep the window in bytes; the segment-based state scales with the new size.
        let ratio = self.max_datagram_size as f64 / max_datagram_size as f64;
        self.w_max *= ratio;
        self.w_est *= ratio;
        self.cwnd_prior *= ratio;
        self.max_datagram_size = max_datagram_size;
        self.window = self.window.max(minimum_window(max_datagram_size) as f64);
        if self.epoch_start.is_some() {
            let cwnd = self.window / self.mss();
            self.k = ((self.w_max - cwnd).max(0.0) / C).cbrt();
        }
    }

    fn window(&self) -> u64 {
        self.window as u64
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

/// How long the cubic curve takes to return to `W_max` after a reduction by `beta` from a
/// window of `w_max` segments (RFC 9438 §4.2's K with `cwnd_epoch = beta * W_max`).
pub fn cubic_k(w_max: f64, beta: f64) -> Duration {
    Duration::from_secs_f64((w_max * (1.0 - beta) / C).cbrt())
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Tests take one real Instant as their time origin.
mod tests {
    use super::*;

    fn rtt(ms: u64) -> RttEstimator {
        let mut r = RttEstimator::new(Duration::from_millis(ms));
        r.update(Duration::ZERO, Duration::from_millis(ms));
        r
    }

    /// A controller slow-started to 100 segments of 1200 bytes at `t0`.
    fn at_100_segments(t0: Instant, path: &RttEstimator) -> Cubic {
        let mut cc = Cubic::new(Arc::default(), 1200);
        while cc.window() < 120_000 {
            cc.on_ack(t0, t0, 1200, false, path);
        }
        cc
    }

    /// Acknowledges one full window, packet by packet, at `now`.
    fn ack_window(cc: &mut Cubic, now: Instant, sent: Instant, rtt: &RttEstimator) {
        let n = cc.window() / 1200;
        for _ in 0..n {
            cc.on_ack(now, sent, 1200, false, rtt);
        }
    }

    #[test]
    fn rfc9438_multiplicative_decrease_and_fast_convergence() {
        let t0 = Instant::now();
        let rtt = rtt(100);
        let mut cc = Cubic::new(Arc::default(), 1200);
        assert_eq!(cc.window(), 12000);
        cc.on_ack(t0, t0, 1200, false, &rtt);
        assert_eq!(
            cc.window(),
            13200,
            "slow start grows by the bytes acknowledged"
        );
        cc.on_ack(t0, t0, 1200, true, &rtt);
        assert_eq!(cc.window(), 13200, "no growth while application-limited");
        // §4.6: β = 0.7.
        let t1 = t0 + Duration::from_millis(10);
        cc.on_congestion_event(t1, t0, false, 1200);
        assert_eq!(cc.window(), 9240);
        assert!(!cc.in_slow_start());
        assert!(
            (cc.w_max - 11.0).abs() < 1e-9,
            "W_max is the window before the loss"
        );
        cc.on_congestion_event(t1, t0, false, 1200);
        assert_eq!(cc.window(), 9240, "one reduction per recovery period");
        // §4.7: a second loss below W_max lowers W_max further than the window.
        let t2 = t1 + Duration::from_millis(10);
        cc.on_congestion_event(t2, t2, false, 1200);
        assert_eq!(cc.window(), 6468);
        assert!(
            (cc.w_max - 7.7 * 1.7 / 2.0).abs() < 1e-9,
            "W_max = cwnd * (1 + β) / 2"
        );
        // Persistent congestion: the minimum window.
        cc.on_congestion_event(t2, t2, true, 100_000);
        assert_eq!(cc.window(), 2400);
    }

    #[test]
    fn rfc9438_window_follows_the_cubic_curve_back_to_w_max() {
        let t0 = Instant::now();
        // A long RTT keeps the Reno-friendly estimate below the cubic curve.
        let path = rtt(200);
        // Slow start to 100 segments, then a loss.
        let mut cc = at_100_segments(t0, &path);
        let t1 = t0 + Duration::from_millis(200);
        cc.on_congestion_event(t1, t0, false, 1200);
        let w_max = cc.w_max;
        let k = cubic_k(w_max, 0.7);
        assert!((cc.k - k.as_secs_f64()).abs() < 1e-9);
        // Concave: the window climbs, quickly at first, and stays below W_max until K.
        let mut now = t1;
        let mut windows = vec![cc.window()];
        while now < t1 + k - Duration::from_millis(400) {
            now += Duration::from_millis(200);
            ack_window(&mut cc, now, now, &path);
            windows.push(cc.window());
        }
        assert!(windows.windows(2).all(|w| w[1] >= w[0]), "{windows:?}");
        let last = *windows.last().unwrap() as f64 / 1200.0;
        assert!(
            last < w_max,
            "still below W_max before K: {last} vs {w_max}"
        );
        assert!(
            last > 0.9 * w_max,
            "near W_max close to K: {last} vs {w_max}"
        );
        let early_gain = windows[1] - windows[0];
        let late_gain = windows[windows.len() - 1] - windows[windows.len() - 2];
        assert!(
            early_gain > 2 * late_gain,
            "concave: {early_gain} then {late_gain}"
        );
        // Convex: well after K the window passes W_max and accelerates.
        let mut gains = Vec::new();
        while now < t1 + k + Duration::from_secs(3) {
            let before = cc.window();
            now += Duration::from_millis(200);
            ack_window(&mut cc, now, now, &path);
            gains.push(cc.window() - before);
        }
        assert!(cc.window() as f64 / 1200.0 > w_max * 1.1);
        assert!(gains[gains.len() - 1] > gains[gains.len() / 2], "{gains:?}");
    }

    #[test]
    fn rfc9438_reno_friendly_region_on_a_short_rtt() {
        let t0 = Instant::now();
        let path = rtt(1);
        let mut cc = at_100_segments(t0, &path);
        cc.on_congestion_event(t0, t0, false, 1200);
        let after_loss = cc.window();
        // 50 windows at 1 ms: the cubic curve has hardly moved (50 ms of a K of 4.2 s), while
        // Reno-friendly growth adds α_cubic (0.53) segments per window, below cwnd_prior.
        let mut now = t0;
        for _ in 0..50 {
            now += Duration::from_millis(1);
            ack_window(&mut cc, now, now, &path);
        }
        let grown = (cc.window() - after_loss) as f64 / 1200.0;
        assert!((24.0..29.0).contains(&grown), "grew {grown} segments");
        // Past the window before the loss (100 segments), one segment per window, like Reno.
        for _ in 0..10 {
            now += Duration::from_millis(1);
            ack_window(&mut cc, now, now, &path);
        }
        assert!(cc.w_est >= 100.0);
        let before = cc.window();
        for _ in 0..10 {
            now += Duration::from_millis(1);
            ack_window(&mut cc, now, now, &path);
        }
        let grown = (cc.window() - before) as f64 / 1200.0;
        assert!((9.0..11.0).contains(&grown), "grew {grown} segments");
    }

    #[test]
    fn rfc9438_application_limited_time_does_not_advance_the_curve() {
        let t0 = Instant::now();
        let path = rtt(200);
        let mut a = at_100_segments(t0, &path);
        a.on_congestion_event(t0, t0, false, 1200);
        let mut b = a.clone();
        // `b` idles (application-limited) for 10 s; afterwards it must not jump ahead on the
        // curve compared with `a`, which acknowledged the same amount without the pause.
        b.on_ack(t0, t0, 1200, true, &path);
        let later = t0 + Duration::from_secs(10);
        let mut ta = t0;
        let mut tb = later;
        for _ in 0..5 {
            ta += Duration::from_millis(200);
            tb += Duration::from_millis(200);
            ack_window(&mut a, ta, ta, &path);
            ack_window(&mut b, tb, tb, &path);
        }
        let (wa, wb) = (a.window() as f64, b.window() as f64);
        assert!((wa - wb).abs() / wa < 0.05, "{wa} vs {wb}");
    }

    fn acked(sent: Instant, n: usize) -> Vec<AckedPacket> {
        vec![AckedPacket { sent, bytes: 1200 }; n]
    }

    /// In slow start a frame's packets go one by one (HyStart++ counts them): the window is
    /// exactly what per-packet acknowledgments give, and slow start ending inside a frame
    /// hands the rest of the frame to congestion avoidance.
    #[test]
    fn a_frame_in_slow_start_grows_as_its_packets_one_by_one() {
        let t0 = Instant::now();
        let path = rtt(100);
        let mut by_frame = Cubic::new(Arc::default(), 1200);
        let mut by_packet = by_frame.clone();
        by_frame.on_acks(t0, &acked(t0, 10), false, &path);
        for _ in 0..10 {
            by_packet.on_ack(t0, t0, 1200, false, &path);
        }
        assert_eq!(by_frame.window(), 24_000);
        assert_eq!(by_frame.window(), by_packet.window());

        // An ssthresh inside the next frame: slow start stops there.
        by_frame.ssthresh = 30_000;
        by_frame.on_acks(t0, &acked(t0, 20), false, &path);
        assert!(!by_frame.in_slow_start());
        assert!(by_frame.epoch_start.is_some(), "congestion avoidance began");
        assert!(
            by_frame.window() < 30_000 + 2 * 1200,
            "the rest of the frame grew the window as congestion avoidance: {}",
            by_frame.window()
        );
    }

    /// In congestion avoidance one evaluation of the curve covers the whole frame: close to
    /// per-packet growth, and packets sent before the recovery period began count for
    /// nothing (RFC 9002 §7.3.2).
    #[test]
    fn a_frame_in_congestion_avoidance_counts_only_packets_sent_since_recovery() {
        let t0 = Instant::now();
        let path = rtt(100);
        let mut cc = at_100_segments(t0, &path);
        let t1 = t0 + Duration::from_millis(100);
        cc.on_congestion_event(t1, t1, false, 1200);
        assert!(cc.recovering);
        let after_loss = cc.window();

        // Only packets sent before the loss: no growth, and still recovering.
        let t2 = t1 + Duration::from_millis(100);
        let mut old = cc.clone();
        old.on_acks(t2, &acked(t0, 50), false, &path);
        assert_eq!(old.window(), after_loss);
        assert!(old.recovering);

        // A frame mixing both grows as its new packets alone, and ends recovery.
        let mut mixed = cc.clone();
        let mut frame = acked(t0, 50);
        frame.extend(acked(t2, 50));
        mixed.on_acks(t2, &frame, false, &path);
        let mut new_only = cc.clone();
        new_only.on_acks(t2, &acked(t2, 50), false, &path);
        assert!(!mixed.recovering);
        assert!(mixed.window() > after_loss);
        assert_eq!(mixed.window(), new_only.window());

        // Per packet, the same packets give nearly the same window when the frames are
        // small against the window (here five frames of a seventh of it; one frame of 70%
        // of the window overshoots by about 1%, as the increment is not recomputed as the
        // window grows within the frame).
        let mut by_frames = cc.clone();
        let mut by_packet = cc.clone();
        for _ in 0..5 {
            by_frames.on_acks(t2, &acked(t2, 10), false, &path);
        }
        for _ in 0..50 {
            by_packet.on_ack(t2, t2, 1200, false, &path);
        }
        let (a, b) = (by_frames.window() as f64, by_packet.window() as f64);
        assert!(a > after_loss as f64 && b > after_loss as f64);
        assert!((a - b).abs() / b < 0.003, "{a} vs {b}");

        // Application-limited: no growth, whatever the frame holds.
        let mut limited = cc.clone();
        limited.on_acks(t2, &acked(t2, 50), true, &path);
        assert_eq!(limited.window(), after_loss);
        assert!(limited.app_limited_since.is_some());
    }
}
