//! BBR version 3 (draft-ietf-ccwg-bbr), a model-based congestion controller.
//!
//! BBR estimates the path's bottleneck bandwidth (a windowed maximum of delivery rate samples)
//! and its round-trip propagation delay (a windowed minimum of RTT samples), paces at about the
//! bandwidth, and keeps about one bandwidth-delay product in flight. A state machine probes for
//! more bandwidth (Startup, ProbeBW_UP), drains the queue it made (Drain, ProbeBW_DOWN), cruises
//! (ProbeBW_CRUISE) and now and then drains the pipe to measure the RTT again (ProbeRTT). Loss
//! above 2% per round bounds the data in flight (`inflight_longterm`, `inflight_shortterm`).
//!
//! It needs the connection's delivery rate samples ([`RateSample`]), which GQUIC's connection
//! computes for every controller.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{initial_window, Controller, ControllerFactory};
use crate::recovery::rate::{LostPacket, RateSample};
use crate::recovery::rtt::RttEstimator;

// draft-ietf-ccwg-bbr §2.7 and §5: the algorithm's constants.
const STARTUP_PACING_GAIN: f64 = 2.77;
const DRAIN_PACING_GAIN: f64 = 0.5;
const DEFAULT_CWND_GAIN: f64 = 2.0;
const PROBE_UP_PACING_GAIN: f64 = 1.25;
const PROBE_UP_CWND_GAIN: f64 = 2.25;
const PROBE_DOWN_PACING_GAIN: f64 = 0.9;
const PROBE_RTT_CWND_GAIN: f64 = 0.5;
const PACING_MARGIN: f64 = 0.01;
const LOSS_THRESH: f64 = 0.02;
const BETA: f64 = 0.7;
const HEADROOM: f64 = 0.15;
const STARTUP_FULL_LOSS_COUNT: u32 = 6;
const MAX_BW_FILTER_LEN: u64 = 2;
const EXTRA_ACKED_FILTER_LEN: u64 = 10;
const MIN_RTT_FILTER_LEN: Duration = Duration::from_secs(10);
const PROBE_RTT_INTERVAL: Duration = Duration::from_secs(5);
const PROBE_RTT_DURATION: Duration = Duration::from_millis(200);

/// BBR settings.
#[derive(Debug, Clone, Default)]
pub struct BbrConfig {
    /// Initial window in bytes; `None` uses RFC 9002 §7.2's formula.
    pub initial_window: Option<u64>,
}

impl ControllerFactory for BbrConfig {
    fn build(&self, now: Instant, max_datagram_size: u64) -> Box<dyn Controller> {
        Box::new(Bbr::new(Arc::new(self.clone()), now, max_datagram_size))
    }
}

/// The BBR state machine (draft-ietf-ccwg-bbr §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BbrState {
    /// Exponential growth until the bandwidth stops growing or loss is high.
    Startup,
    /// Draining the queue Startup built.
    Drain,
    /// Decelerating below the estimated bandwidth.
    ProbeBwDown,
    /// Sending at the estimated bandwidth.
    ProbeBwCruise,
    /// Refilling the pipe before probing.
    ProbeBwRefill,
    /// Probing for more bandwidth.
    ProbeBwUp,
    /// Draining the pipe to measure the propagation delay.
    ProbeRtt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AckPhase {
    Init,
    ProbeStarting,
    ProbeFeedback,
    ProbeStopping,
    Refilling,
}

/// Kathleen Nichols' windowed max filter over three samples (draft-ietf-ccwg-bbr §5.5.3).
#[derive(Debug, Clone, Copy, Default)]
struct MaxFilter {
    s: [(u64, u64); 3],
}

impl MaxFilter {
    #[cfg(test)]
    fn get(&self) -> u64 {
        self.s[0].1
    }

    fn reset(&mut self, t: u64, v: u64) -> u64 {
        self.s = [(t, v); 3];
        v
    }

    fn update(&mut self, window: u64, t: u64, v: u64) -> u64 {
        if v >= self.s[0].1 || t.saturating_sub(self.s[2].0) > window {
            return self.reset(t, v);
        }
        if v >= self.s[1].1 {
            self.s[1] = (t, v);
            self.s[2] = (t, v);
        } else if v >= self.s[2].1 {
            self.s[2] = (t, v);
        }
        let dt = t.saturating_sub(self.s[0].0);
        if dt > window {
            self.s[0] = self.s[1];
            self.s[1] = self.s[2];
            self.s[2] = (t, v);
            if t.saturating_sub(self.s[0].0) > window {
                self.s[0] = self.s[1];
                self.s[1] = self.s[2];
                self.s[2] = (t, v);
            }
        } else if self.s[1].0 == self.s[0].0 && dt > window / 4 {
            self.s[1] = (t, v);
            self.s[2] = (t, v);
        } else if self.s[2].0 == self.s[1].0 && dt > window / 2 {
            self.s[2] = (t, v);
        }
        self.s[0].1
    }
}

/// Seeds for the per-connection randomness of the probing schedule.
static SEED: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);

/// The BBRv3 congestion controller.
#[derive(Debug, Clone)]
pub struct Bbr {
    config: Arc<BbrConfig>,
    mss: u64,
    cwnd: u64,
    /// Bytes per second; 0 until the first RTT sample.
    pacing_rate: u64,
    state: BbrState,
    pacing_gain: f64,
    cwnd_gain: f64,
    rng: u64,

    // The connection as last seen.
    delivered: u64,
    inflight: u64,
    srtt: Option<Duration>,
    recovery_start: Option<Instant>,
    /// Samples whose flight began before this much was delivered are application-limited
    /// (ProbeRTT, §5.3.4.4: MarkConnectionAppLimited).
    app_limited_until: u64,
    last_sample_app_limited: bool,

    // Path model (§5.5).
    max_bw_filter: MaxFilter,
    cycle_count: u64,
    max_bw: u64,
    bw: u64,
    bw_shortterm: u64,
    inflight_shortterm: u64,
    inflight_longterm: u64,
    bw_latest: u64,
    inflight_latest: u64,
    bdp: u64,
    min_rtt: Option<Duration>,
    min_rtt_stamp: Instant,
    extra_acked_filter: MaxFilter,
    extra_acked: u64,
    extra_acked_interval_start: Instant,
    extra_acked_delivered: u64,

    // Rounds (§5.5.1).
    next_round_delivered: u64,
    round_start: bool,
    round_count: u64,
    rounds_since_probe_up: u64,

    // Full pipe (§5.3.1.2).
    full_bw_reached: bool,
    full_bw_now: bool,
    full_bw: u64,
    full_bw_count: u32,

    // Loss (§5.5.10).
    loss_round_delivered: u64,
    loss_round_start: bool,
    is_loss_in_round: bool,
    loss_events_in_round: u32,
    lost_in_round: u64,
    prior_cwnd: u64,

    // ProbeBW (§5.3.3).
    drain_start_round: u64,
    cycle_stamp: Instant,
    bw_probe_wait: Duration,
    ack_phase: AckPhase,
    bw_probe_up_rounds: u32,
    bw_probe_up_acked: u64,
    probe_up_acked_per_inc: u64,
    is_bw_probe_sample: bool,
    prev_probe_too_high: bool,
    prev_probe_precautionary: bool,

    // ProbeRTT (§5.3.4).
    probe_rtt_min_delay: Option<Duration>,
    probe_rtt_min_stamp: Instant,
    probe_rtt_expired: bool,
    probe_rtt_done_stamp: Option<Instant>,
    probe_rtt_round_done: bool,
    idle_restart: bool,
}

impl Bbr {
    /// A controller in Startup (§5.2.1, OnInit).
    pub fn new(config: Arc<BbrConfig>, now: Instant, max_datagram_size: u64) -> Self {
        let cwnd = config
            .initial_window
            .unwrap_or_else(|| initial_window(max_datagram_size));
        let seed = SEED.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        let mut bbr = Self {
            config,
            mss: max_datagram_size,
            cwnd,
            pacing_rate: 0,
            state: BbrState::Startup,
            pacing_gain: STARTUP_PACING_GAIN,
            cwnd_gain: DEFAULT_CWND_GAIN,
            rng: seed | 1,
            delivered: 0,
            inflight: 0,
            srtt: None,
            recovery_start: None,
            app_limited_until: 0,
            last_sample_app_limited: false,
            max_bw_filter: MaxFilter::default(),
            cycle_count: 0,
            max_bw: 0,
            bw: 0,
            bw_shortterm: u64::MAX,
            inflight_shortterm: u64::MAX,
            inflight_longterm: u64::MAX,
            bw_latest: 0,
            inflight_latest: 0,
            bdp: 0,
            min_rtt: None,
            min_rtt_stamp: now,
            extra_acked_filter: MaxFilter::default(),
            extra_acked: 0,
            extra_acked_interval_start: now,
            extra_acked_delivered: 0,
            next_round_delivered: 0,
            round_start: false,
            round_count: 0,
            rounds_since_probe_up: 0,
            full_bw_reached: false,
            full_bw_now: false,
            full_bw: 0,
            full_bw_count: 0,
            loss_round_delivered: 0,
            loss_round_start: false,
            is_loss_in_round: false,
            loss_events_in_round: 0,
            lost_in_round: 0,
            prior_cwnd: 0,
            drain_start_round: 0,
            cycle_stamp: now,
            bw_probe_wait: Duration::ZERO,
            ack_phase: AckPhase::Init,
            bw_probe_up_rounds: 0,
            bw_probe_up_acked: 0,
            probe_up_acked_per_inc: u64::MAX,
            is_bw_probe_sample: false,
            prev_probe_too_high: false,
            prev_probe_precautionary: false,
            probe_rtt_min_delay: None,
            probe_rtt_min_stamp: now,
            probe_rtt_expired: false,
            probe_rtt_done_stamp: None,
            probe_rtt_round_done: false,
            idle_restart: false,
        };
        bbr.enter_startup();
        bbr
    }

    /// The state machine's current state.
    pub fn state(&self) -> BbrState {
        self.state
    }

    /// The bottleneck bandwidth estimate in bytes per second (BBR.bw).
    pub fn bandwidth(&self) -> u64 {
        self.bw
    }

    /// The propagation delay estimate (BBR.min_rtt).
    pub fn min_rtt(&self) -> Option<Duration> {
        self.min_rtt
    }

    fn random(&mut self) -> u64 {
        // xorshift64
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn min_pipe_cwnd(&self) -> u64 {
        4 * self.mss
    }

    fn initial_cwnd(&self) -> u64 {
        self.config
            .initial_window
            .unwrap_or_else(|| initial_window(self.mss))
    }

    fn is_probe_bw(&self) -> bool {
        matches!(
            self.state,
            BbrState::ProbeBwDown
                | BbrState::ProbeBwCruise
                | BbrState::ProbeBwRefill
                | BbrState::ProbeBwUp
        )
    }

    fn is_probing_bw(&self) -> bool {
        matches!(
            self.state,
            BbrState::Startup | BbrState::ProbeBwRefill | BbrState::ProbeBwUp
        )
    }

    // §5.3.1: Startup.
    fn enter_startup(&mut self) {
        self.state = BbrState::Startup;
        self.pacing_gain = STARTUP_PACING_GAIN;
        self.cwnd_gain = DEFAULT_CWND_GAIN;
    }

    fn reset_full_bw(&mut self) {
        self.full_bw = 0;
        self.full_bw_count = 0;
        self.full_bw_now = false;
    }

    fn check_full_bw_reached(&mut self, rs: &RateSample, app_limited: bool) {
        if self.full_bw_now || !self.round_start || app_limited {
            return;
        }
        if rs.delivery_rate as f64 >= self.full_bw as f64 * 1.25 {
            self.reset_full_bw();
            self.full_bw = rs.delivery_rate;
            return;
        }
        self.full_bw_count += 1;
        self.full_bw_now = self.full_bw_count >= 3;
        if self.full_bw_now {
            self.full_bw_reached = true;
        }
    }

    /// §5.3.1.3: leave Startup after a round with more than 2% loss in six or more events.
    fn check_startup_high_loss(&mut self) {
        if self.state != BbrState::Startup || !self.loss_round_start || !self.is_loss_in_round {
            return;
        }
        let delivered_in_round = self
            .delivered
            .saturating_sub(self.loss_round_delivered)
            .max(1);
        let rate = self.lost_in_round as f64 / (delivered_in_round + self.lost_in_round) as f64;
        if self.loss_events_in_round >= STARTUP_FULL_LOSS_COUNT && rate > LOSS_THRESH {
            self.full_bw_reached = true;
            self.inflight_longterm = self.bdp.max(self.inflight_latest);
        }
    }

    fn check_startup_done(&mut self) {
        self.check_startup_high_loss();
        if self.state == BbrState::Startup && self.full_bw_reached {
            // §5.3.2: Drain.
            self.state = BbrState::Drain;
            self.pacing_gain = DRAIN_PACING_GAIN;
            self.cwnd_gain = DEFAULT_CWND_GAIN;
            self.drain_start_round = self.round_count;
        }
    }

    fn check_drain_done(&mut self, now: Instant) {
        if self.state == BbrState::Drain
            && (self.inflight <= self.inflight_for(1.0)
                || self.round_count > self.drain_start_round + 3)
        {
            self.enter_probe_bw(now);
        }
    }

    // §5.3.3: ProbeBW.
    fn enter_probe_bw(&mut self, now: Instant) {
        self.cwnd_gain = DEFAULT_CWND_GAIN;
        self.start_probe_bw_down(now);
    }

    fn pick_probe_wait(&mut self) {
        self.rounds_since_probe_up = self.random() % 2;
        let frac = (self.random() % 1000) as f64 / 1000.0;
        self.bw_probe_wait = Duration::from_secs_f64(2.0 + frac);
    }

    fn start_round(&mut self) {
        self.next_round_delivered = self.delivered;
    }

    fn reset_congestion_signals(&mut self) {
        self.is_loss_in_round = false;
        self.loss_events_in_round = 0;
        self.lost_in_round = 0;
        self.bw_latest = 0;
        self.inflight_latest = 0;
    }

    fn reset_short_term_model(&mut self) {
        self.bw_shortterm = u64::MAX;
        self.inflight_shortterm = u64::MAX;
    }

    fn start_probe_bw_down(&mut self, now: Instant) {
        self.reset_congestion_signals();
        self.probe_up_acked_per_inc = u64::MAX;
        self.pick_probe_wait();
        self.cycle_stamp = now;
        self.ack_phase = AckPhase::ProbeStopping;
        self.start_round();
        self.state = BbrState::ProbeBwDown;
        self.pacing_gain = PROBE_DOWN_PACING_GAIN;
        self.cwnd_gain = DEFAULT_CWND_GAIN;
    }

    fn start_probe_bw_cruise(&mut self) {
        self.state = BbrState::ProbeBwCruise;
        self.pacing_gain = 1.0;
        self.cwnd_gain = DEFAULT_CWND_GAIN;
    }

    fn start_probe_bw_refill(&mut self) {
        self.reset_short_term_model();
        self.bw_probe_up_rounds = 0;
        self.bw_probe_up_acked = 0;
        self.prev_probe_precautionary = false;
        self.ack_phase = AckPhase::Refilling;
        self.start_round();
        self.state = BbrState::ProbeBwRefill;
        self.pacing_gain = 1.0;
        self.cwnd_gain = DEFAULT_CWND_GAIN;
    }

    fn start_probe_bw_up(&mut self, rs: &RateSample) {
        self.ack_phase = AckPhase::ProbeStarting;
        self.start_round();
        self.reset_full_bw();
        self.full_bw = rs.delivery_rate;
        self.state = BbrState::ProbeBwUp;
        self.pacing_gain = PROBE_UP_PACING_GAIN;
        self.cwnd_gain = PROBE_UP_CWND_GAIN;
        self.raise_inflight_longterm_slope();
    }

    fn raise_inflight_longterm_slope(&mut self) {
        let growth_this_round = 1u64 << self.bw_probe_up_rounds;
        self.bw_probe_up_rounds = (self.bw_probe_up_rounds + 1).min(30);
        self.probe_up_acked_per_inc = (self.cwnd / growth_this_round).max(self.mss);
    }

    fn probe_inflight_longterm_upward(&mut self, rs: &RateSample) {
        // C.is_cwnd_limited: the window, not the application, bounded the flight.
        let cwnd_limited = self.inflight + self.mss >= self.cwnd;
        if !cwnd_limited || self.cwnd < self.inflight_longterm {
            return;
        }
        self.bw_probe_up_acked += rs.newly_acked;
        if self.bw_probe_up_acked >= self.probe_up_acked_per_inc {
            let delta = self.bw_probe_up_acked / self.probe_up_acked_per_inc;
            self.bw_probe_up_acked -= delta * self.probe_up_acked_per_inc;
            self.inflight_longterm = self.inflight_longterm.saturating_add(delta * self.mss);
        }
        if self.round_start {
            self.raise_inflight_longterm_slope();
        }
    }

    fn is_inflight_too_high(lost: u64, tx_in_flight: u64) -> bool {
        lost as f64 > tx_in_flight as f64 * LOSS_THRESH
    }

    fn target_inflight(&self) -> u64 {
        self.bdp.min(self.cwnd)
    }

    fn handle_inflight_too_high(&mut self, now: Instant, tx_in_flight: u64, app_limited: bool) {
        self.prev_probe_too_high = true;
        self.is_bw_probe_sample = false;
        if !app_limited {
            self.inflight_longterm =
                tx_in_flight.max((self.target_inflight() as f64 * BETA) as u64);
        }
        if self.state == BbrState::ProbeBwUp {
            self.start_probe_bw_down(now);
        }
    }

    /// Returns whether it decided a state transition.
    fn adapt_long_term_model(&mut self, rs: &RateSample, app_limited: bool) -> bool {
        if self.ack_phase == AckPhase::ProbeStarting && self.round_start {
            self.ack_phase = AckPhase::ProbeFeedback;
        }
        if self.ack_phase == AckPhase::ProbeStopping && self.round_start {
            self.is_bw_probe_sample = false;
            self.ack_phase = AckPhase::Init;
            if self.is_probe_bw() && !app_limited {
                self.cycle_count += 1;
            }
            if self.is_probe_bw() && self.prev_probe_precautionary && !self.prev_probe_too_high {
                self.start_probe_bw_refill();
                return true;
            }
        }
        if !Self::is_inflight_too_high(rs.lost, rs.tx_in_flight) {
            if self.inflight_longterm == u64::MAX {
                return false;
            }
            if rs.tx_in_flight > self.inflight_longterm {
                self.inflight_longterm = rs.tx_in_flight;
            }
            if self.state == BbrState::ProbeBwUp {
                self.probe_inflight_longterm_upward(rs);
            }
        }
        false
    }

    fn inflight_with_headroom(&self) -> u64 {
        if self.inflight_longterm == u64::MAX {
            return u64::MAX;
        }
        let headroom = ((HEADROOM * self.inflight_longterm as f64) as u64).max(self.mss);
        self.inflight_longterm
            .saturating_sub(headroom)
            .max(self.min_pipe_cwnd())
    }

    fn has_elapsed_in_phase(&self, now: Instant, interval: Duration) -> bool {
        now > self.cycle_stamp + interval
    }

    fn is_reno_coexistence_probe_time(&self) -> bool {
        let reno_rounds = self.target_inflight() / self.mss;
        self.rounds_since_probe_up >= reno_rounds.min(63)
    }

    fn is_time_to_probe_bw(&mut self, now: Instant) -> bool {
        if self.has_elapsed_in_phase(now, self.bw_probe_wait)
            || self.is_reno_coexistence_probe_time()
        {
            self.start_probe_bw_refill();
            return true;
        }
        false
    }

    fn is_time_to_cruise(&self) -> bool {
        self.inflight <= self.inflight_with_headroom() && self.inflight <= self.inflight_for(1.0)
    }

    fn is_time_to_go_down(&mut self, rs: &RateSample) -> bool {
        let cwnd_limited = self.inflight + self.mss >= self.cwnd;
        if self.prev_probe_too_high && self.inflight >= self.inflight_longterm {
            self.prev_probe_precautionary = true;
            return true;
        }
        if cwnd_limited && self.cwnd >= self.inflight_longterm {
            self.reset_full_bw();
            self.full_bw = rs.delivery_rate;
        } else if self.full_bw_now {
            return true;
        }
        false
    }

    fn update_probe_bw_cycle_phase(&mut self, now: Instant, rs: &RateSample, app_limited: bool) {
        if !self.full_bw_reached {
            return;
        }
        if self.adapt_long_term_model(rs, app_limited) {
            return;
        }
        let state = self.state;
        match state {
            BbrState::ProbeBwDown => {
                if self.is_time_to_probe_bw(now) {
                    return;
                }
                if self.is_time_to_cruise() {
                    self.start_probe_bw_cruise();
                }
            }
            BbrState::ProbeBwCruise => {
                self.is_time_to_probe_bw(now);
            }
            BbrState::ProbeBwRefill if self.round_start => {
                // After one round of REFILL, probe.
                self.is_bw_probe_sample = true;
                self.start_probe_bw_up(rs);
            }
            BbrState::ProbeBwUp if self.is_time_to_go_down(rs) => {
                self.prev_probe_too_high = false;
                self.start_probe_bw_down(now);
            }
            _ => {}
        }
    }

    // §5.3.4: ProbeRTT and BBR.min_rtt.
    fn update_min_rtt(&mut self, now: Instant, rs: &RateSample) {
        self.probe_rtt_expired = now > self.probe_rtt_min_stamp + PROBE_RTT_INTERVAL;
        if let Some(rtt) = rs.rtt {
            if self.probe_rtt_min_delay.is_none_or(|d| rtt < d) || self.probe_rtt_expired {
                self.probe_rtt_min_delay = Some(rtt);
                self.probe_rtt_min_stamp = now;
            }
        }
        let min_rtt_expired = now > self.min_rtt_stamp + MIN_RTT_FILTER_LEN;
        if let Some(d) = self.probe_rtt_min_delay {
            if self.min_rtt.is_none_or(|m| d < m) || min_rtt_expired {
                self.min_rtt = Some(d);
                self.min_rtt_stamp = self.probe_rtt_min_stamp;
            }
        }
    }

    fn probe_rtt_cwnd(&self) -> u64 {
        self.bdp_multiple(PROBE_RTT_CWND_GAIN)
            .max(self.min_pipe_cwnd())
    }

    fn check_probe_rtt(&mut self, now: Instant, rs: &RateSample) {
        if self.state != BbrState::ProbeRtt && self.probe_rtt_expired && !self.idle_restart {
            self.state = BbrState::ProbeRtt;
            self.pacing_gain = 1.0;
            self.cwnd_gain = PROBE_RTT_CWND_GAIN;
            self.save_cwnd();
            self.probe_rtt_done_stamp = None;
            self.ack_phase = AckPhase::ProbeStopping;
            self.start_round();
        }
        if self.state == BbrState::ProbeRtt {
            // Samples from the drained pipe are not the path's bandwidth.
            self.app_limited_until = (self.delivered + self.inflight).max(1);
            if self.probe_rtt_done_stamp.is_none() && self.inflight <= self.probe_rtt_cwnd() {
                self.probe_rtt_done_stamp = Some(now + PROBE_RTT_DURATION);
                self.probe_rtt_round_done = false;
                self.start_round();
            } else if self.probe_rtt_done_stamp.is_some() {
                if self.round_start {
                    self.probe_rtt_round_done = true;
                }
                if self.probe_rtt_round_done {
                    self.check_probe_rtt_done(now);
                }
            }
        }
        if rs.delivered > 0 {
            self.idle_restart = false;
        }
    }

    fn check_probe_rtt_done(&mut self, now: Instant) {
        if self.probe_rtt_done_stamp.is_some_and(|t| now > t) {
            self.probe_rtt_min_stamp = now;
            self.restore_cwnd();
            // §5.3.4.5: ExitProbeRTT.
            self.reset_short_term_model();
            if self.full_bw_reached {
                self.start_probe_bw_down(now);
                self.start_probe_bw_cruise();
            } else {
                self.enter_startup();
            }
        }
    }

    // §5.5: the model.
    fn update_round(&mut self, rs: &RateSample) {
        if rs.prior_delivered >= self.next_round_delivered {
            self.start_round();
            self.round_count += 1;
            self.rounds_since_probe_up += 1;
            self.round_start = true;
        } else {
            self.round_start = false;
        }
    }

    fn update_max_bw(&mut self, rs: &RateSample, app_limited: bool) {
        self.update_round(rs);
        if rs.delivery_rate > 0 && (rs.delivery_rate >= self.max_bw || !app_limited) {
            self.max_bw =
                self.max_bw_filter
                    .update(MAX_BW_FILTER_LEN, self.cycle_count, rs.delivery_rate);
        }
    }

    fn update_latest_delivery_signals(&mut self, rs: &RateSample) {
        self.loss_round_start = false;
        self.bw_latest = self.bw_latest.max(rs.delivery_rate);
        self.inflight_latest = self.inflight_latest.max(rs.delivered);
        if rs.prior_delivered >= self.loss_round_delivered {
            self.loss_round_delivered = self.delivered;
            self.loss_round_start = true;
        }
    }

    fn advance_latest_delivery_signals(&mut self, rs: &RateSample) {
        if self.loss_round_start {
            self.bw_latest = rs.delivery_rate;
            self.inflight_latest = rs.delivered;
        }
    }

    fn update_congestion_signals(&mut self, rs: &RateSample, app_limited: bool) {
        self.update_max_bw(rs, app_limited);
        if !self.loss_round_start {
            return;
        }
        // §5.5.10.3: once per round, adapt the short-term model to loss.
        if !self.is_probing_bw() && self.is_loss_in_round {
            if self.bw_shortterm == u64::MAX {
                self.bw_shortterm = self.max_bw;
            }
            if self.inflight_shortterm == u64::MAX {
                self.inflight_shortterm = self.cwnd;
            }
            self.bw_shortterm = self.bw_latest.max((BETA * self.bw_shortterm as f64) as u64);
            self.inflight_shortterm = self
                .inflight_latest
                .max((BETA * self.inflight_shortterm as f64) as u64);
        }
        self.check_startup_high_loss();
        self.is_loss_in_round = false;
        self.loss_events_in_round = 0;
        self.lost_in_round = 0;
    }

    fn update_ack_aggregation(&mut self, now: Instant, rs: &RateSample) {
        let interval = now.saturating_duration_since(self.extra_acked_interval_start);
        let mut expected = (self.bw as f64 * interval.as_secs_f64()) as u64;
        if self.extra_acked_delivered <= expected {
            self.extra_acked_delivered = 0;
            self.extra_acked_interval_start = now;
            expected = 0;
        }
        self.extra_acked_delivered += rs.newly_acked;
        let extra = self
            .extra_acked_delivered
            .saturating_sub(expected)
            .min(self.cwnd);
        let len = if self.full_bw_reached {
            EXTRA_ACKED_FILTER_LEN
        } else {
            1
        };
        self.extra_acked = self.extra_acked_filter.update(len, self.round_count, extra);
    }

    fn bdp_multiple(&self, gain: f64) -> u64 {
        match self.min_rtt {
            None => self.initial_cwnd(),
            Some(rtt) => (gain * self.bw as f64 * rtt.as_secs_f64()) as u64,
        }
    }

    fn send_quantum(&self) -> u64 {
        (self.pacing_rate / 1000).clamp(2 * self.mss, 64 * 1024)
    }

    fn quantization_budget(&self, cap: u64) -> u64 {
        let mut cap = cap.max(self.send_quantum()).max(self.min_pipe_cwnd());
        if self.state == BbrState::ProbeBwUp {
            cap += 2 * self.mss;
        }
        cap
    }

    fn inflight_for(&self, gain: f64) -> u64 {
        self.quantization_budget(self.bdp_multiple(gain))
    }

    // §5.6: the control parameters.
    fn set_pacing_rate_with_gain(&mut self, gain: f64) {
        let rate = (gain * self.bw as f64 * (1.0 - PACING_MARGIN)) as u64;
        if (self.full_bw_reached || rate > self.pacing_rate) && rate > 0 {
            self.pacing_rate = rate;
        }
    }

    fn save_cwnd(&mut self) {
        if self.recovery_start.is_none() && self.state != BbrState::ProbeRtt {
            self.prior_cwnd = self.cwnd;
        } else {
            self.prior_cwnd = self.prior_cwnd.max(self.cwnd);
        }
    }

    fn restore_cwnd(&mut self) {
        self.cwnd = self.cwnd.max(self.prior_cwnd);
    }

    fn set_cwnd(&mut self, rs: &RateSample) {
        let max_inflight =
            self.quantization_budget(self.bdp_multiple(self.cwnd_gain) + self.extra_acked);
        if self.full_bw_reached {
            self.cwnd = (self.cwnd + rs.newly_acked).min(max_inflight);
        } else if self.cwnd < max_inflight || self.delivered < self.initial_cwnd() {
            self.cwnd += rs.newly_acked;
        }
        self.cwnd = self.cwnd.max(self.min_pipe_cwnd());
        if self.state == BbrState::ProbeRtt {
            self.cwnd = self.cwnd.min(self.probe_rtt_cwnd());
        }
        // §5.6.4.6: BoundCwndForModel.
        let mut cap = u64::MAX;
        if self.is_probe_bw() && self.state != BbrState::ProbeBwCruise {
            cap = self.inflight_longterm;
        } else if matches!(self.state, BbrState::ProbeRtt | BbrState::ProbeBwCruise) {
            cap = self.inflight_with_headroom();
        }
        cap = cap.min(self.inflight_shortterm).max(self.min_pipe_cwnd());
        self.cwnd = self.cwnd.min(cap);
    }
}

impl Controller for Bbr {
    fn on_sent(&mut self, now: Instant, bytes: u64) {
        // §5.4: HandleRestartFromIdle.
        if self.inflight == 0 && self.last_sample_app_limited {
            self.idle_restart = true;
            self.extra_acked_interval_start = now;
            if self.is_probe_bw() {
                self.set_pacing_rate_with_gain(1.0);
            } else if self.state == BbrState::ProbeRtt {
                self.check_probe_rtt_done(now);
            }
        }
        self.inflight += bytes;
    }

    fn on_ack(&mut self, _now: Instant, sent: Instant, bytes: u64, _: bool, _: &RttEstimator) {
        self.inflight = self.inflight.saturating_sub(bytes);
        // §5.6.4.4: leaving loss recovery restores the last good window.
        if self.recovery_start.is_some_and(|start| sent > start) {
            self.recovery_start = None;
            self.restore_cwnd();
        }
    }

    fn on_packet_lost(&mut self, now: Instant, lost: &LostPacket) {
        self.inflight = self.inflight.saturating_sub(lost.size);
        // §5.5.10.2: NoteLoss and HandleLostPacket.
        if !self.is_loss_in_round {
            self.loss_round_delivered = self.delivered;
        }
        self.is_loss_in_round = true;
        self.loss_events_in_round += 1;
        self.lost_in_round += lost.size;
        if !self.is_bw_probe_sample {
            return;
        }
        if Self::is_inflight_too_high(lost.lost_since_sent, lost.tx_in_flight) {
            // InflightAtLoss: where, within this packet, the loss rate crossed the threshold.
            let inflight_prev = lost.tx_in_flight.saturating_sub(lost.size) as f64;
            let lost_prev = lost.lost_since_sent.saturating_sub(lost.size) as f64;
            let prefix = ((LOSS_THRESH * inflight_prev - lost_prev) / (1.0 - LOSS_THRESH)).max(0.0);
            let at_loss = (inflight_prev + prefix) as u64;
            self.handle_inflight_too_high(now, at_loss, lost.is_app_limited);
        }
    }

    fn on_congestion_event(&mut self, now: Instant, sent: Instant, persistent: bool, _: u64) {
        if persistent {
            // §5.6.4.4: OnEnterRTO.
            self.save_cwnd();
            self.cwnd = self.inflight + self.mss;
            self.recovery_start = Some(now);
            return;
        }
        if self.recovery_start.is_some_and(|start| sent <= start) {
            return;
        }
        // OnEnterFastRecovery: remember the window; the model does the reducing.
        self.save_cwnd();
        self.recovery_start = Some(now);
    }

    fn on_rate_sample(&mut self, now: Instant, rs: &RateSample, rtt: &RttEstimator) {
        self.delivered = rs.total_delivered;
        self.inflight = rs.bytes_in_flight;
        if rtt.has_sample() {
            self.srtt = Some(rtt.smoothed());
        }
        if self.pacing_rate == 0 {
            if let Some(srtt) = self.srtt {
                // §5.6.2: InitPacingRate.
                let nominal = self.initial_cwnd() as f64 / srtt.as_secs_f64().max(1e-3);
                self.pacing_rate = (STARTUP_PACING_GAIN * nominal) as u64;
            }
        }
        if rs.newly_acked == 0 {
            return;
        }
        let app_limited = rs.is_app_limited || rs.prior_delivered < self.app_limited_until;
        if self.delivered >= self.app_limited_until {
            self.app_limited_until = 0;
        }
        self.last_sample_app_limited = app_limited;
        // §5.2.3: UpdateModelAndState.
        self.update_latest_delivery_signals(rs);
        self.update_congestion_signals(rs, app_limited);
        self.update_ack_aggregation(now, rs);
        self.check_full_bw_reached(rs, app_limited);
        self.check_startup_done();
        self.check_drain_done(now);
        self.update_probe_bw_cycle_phase(now, rs, app_limited);
        self.update_min_rtt(now, rs);
        self.check_probe_rtt(now, rs);
        self.advance_latest_delivery_signals(rs);
        self.bw = self.max_bw.min(self.bw_shortterm);
        if let Some(rtt) = self.min_rtt {
            self.bdp = (self.bw as f64 * rtt.as_secs_f64()) as u64;
        }
        // UpdateControlParameters.
        self.set_pacing_rate_with_gain(self.pacing_gain);
        self.set_cwnd(rs);
    }

    fn pacing_rate(&self) -> Option<u64> {
        (self.pacing_rate > 0).then_some(self.pacing_rate)
    }

    fn on_mtu_update(&mut self, max_datagram_size: u64) {
        self.mss = max_datagram_size;
        self.cwnd = self.cwnd.max(self.min_pipe_cwnd());
    }

    fn window(&self) -> u64 {
        self.cwnd
    }

    fn state(&self) -> &'static str {
        match self.state {
            BbrState::Startup => "startup",
            BbrState::Drain => "drain",
            BbrState::ProbeBwDown => "probe_bw_down",
            BbrState::ProbeBwCruise => "probe_bw_cruise",
            BbrState::ProbeBwRefill => "probe_bw_refill",
            BbrState::ProbeBwUp => "probe_bw_up",
            BbrState::ProbeRtt => "probe_rtt",
        }
    }

    fn initial_window(&self) -> u64 {
        self.initial_cwnd()
    }

    fn clone_box(&self) -> Box<dyn Controller> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Tests take one real Instant as their time origin.
mod tests {
    use super::*;

    #[test]
    fn windowed_max_filter_forgets_old_maxima() {
        let mut f = MaxFilter::default();
        assert_eq!(f.update(2, 0, 100), 100);
        assert_eq!(f.update(2, 1, 50), 100);
        assert_eq!(f.update(2, 2, 60), 100);
        // Round 3 is more than two rounds after the 100: it ages out.
        assert_eq!(f.update(2, 3, 40), 60);
        assert_eq!(f.update(2, 6, 10), 10);
        assert_eq!(f.get(), 10);
    }

    #[test]
    fn startup_leaves_on_a_bandwidth_plateau_and_drains_into_probe_bw() {
        let t0 = Instant::now();
        let mut bbr = Bbr::new(Arc::default(), t0, 1200);
        let mut rtt = RttEstimator::new(Duration::from_millis(20));
        rtt.update(Duration::ZERO, Duration::from_millis(20));
        let mut delivered = 0;
        let mut now = t0;
        let mut states = Vec::new();
        for round in 0..12u32 {
            now += Duration::from_millis(20);
            // The delivery rate doubles for four rounds, then stays at 1.6 MB/s.
            let rate = 100_000u64 << round.min(4);
            let acked = rate / 50;
            let rs = RateSample {
                delivery_rate: rate,
                delivered: acked,
                prior_delivered: delivered,
                interval: Duration::from_millis(20),
                newly_acked: acked,
                rtt: Some(Duration::from_millis(20)),
                total_delivered: delivered + acked,
                bytes_in_flight: 10_000,
                ..RateSample::default()
            };
            delivered += acked;
            bbr.on_rate_sample(now, &rs, &rtt);
            states.push(bbr.state());
        }
        assert_eq!(bbr.bandwidth(), 1_600_000);
        assert_eq!(bbr.min_rtt(), Some(Duration::from_millis(20)));
        // Three rounds without 25% growth after the plateau: the pipe is full.
        let startup = states
            .iter()
            .take_while(|s| **s == BbrState::Startup)
            .count();
        assert_eq!(startup, 7, "{states:?}");
        assert!(
            states[startup..].iter().all(|s| bbr_probe_bw(*s)),
            "with little in flight, Drain ends at once: {states:?}"
        );
        // Less than a BDP in flight: ProbeBW_DOWN has nothing to drain and cruises, pacing at
        // the bandwidth less the 1% margin.
        assert_eq!(bbr.state(), BbrState::ProbeBwCruise);
        let pacing = bbr.pacing_rate().unwrap();
        assert!((1_580_000..=1_590_000).contains(&pacing), "{pacing}");
    }

    fn bbr_probe_bw(s: BbrState) -> bool {
        matches!(
            s,
            BbrState::ProbeBwDown
                | BbrState::ProbeBwCruise
                | BbrState::ProbeBwRefill
                | BbrState::ProbeBwUp
        )
    }
}
