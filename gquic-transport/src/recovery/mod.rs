//! Loss detection and congestion control (RFC 9002).
//!
//! - [`rtt`]: the RTT estimator (§5).
//! - [`sent`]: sent-packet tracking per packet-number space, ACK processing, packet- and
//!   time-threshold loss detection (§6.1) and persistent congestion (§7.6).
//! - [`congestion`]: the public [`Controller`](congestion::Controller) trait, CUBIC (RFC 9438,
//!   the default) and NewReno (§7).
//! - [`pacing`]: the pacer (§7.7).
//! - [`rate`]: delivery rate sampling for model-based controllers (draft-ietf-ccwg-bbr §4.1).

pub mod congestion;
pub mod pacing;
pub mod rate;
pub mod rtt;
pub mod sent;

pub use rtt::RttEstimator;
