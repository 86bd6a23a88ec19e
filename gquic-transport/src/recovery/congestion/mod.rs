//! Congestion control behind one public trait (RFC 9002 §7).
//!
//! A [`Controller`] sees every packet sent, acknowledged and lost and answers with a congestion
//! window. GQUIC ships [`Cubic`] (RFC 9438, the default), [`Bbr`] (BBRv3,
//! draft-ietf-ccwg-bbr) and [`NewReno`] (RFC 9002 §7.3);
//! users can implement their own and hand a [`ControllerFactory`] to the transport
//! configuration (`TransportConfig::congestion_controller_factory`).
//!
//! A custom controller, here a fixed window (useful on a dedicated link, never on the
//! Internet):
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Instant;
//! use gquic_transport::recovery::congestion::{Controller, ControllerFactory};
//! use gquic_transport::recovery::RttEstimator;
//! use gquic_transport::TransportConfig;
//!
//! #[derive(Debug, Clone)]
//! struct Fixed(u64);
//!
//! impl Controller for Fixed {
//!     fn on_ack(&mut self, _: Instant, _: Instant, _: u64, _: bool, _: &RttEstimator) {}
//!     fn on_congestion_event(&mut self, _: Instant, _: Instant, _: bool, _: u64) {}
//!     fn on_mtu_update(&mut self, _: u64) {}
//!     fn window(&self) -> u64 {
//!         self.0
//!     }
//!     fn initial_window(&self) -> u64 {
//!         self.0
//!     }
//!     fn clone_box(&self) -> Box<dyn Controller> {
//!         Box::new(self.clone())
//!     }
//! }
//!
//! #[derive(Debug)]
//! struct FixedFactory(u64);
//!
//! impl ControllerFactory for FixedFactory {
//!     fn build(&self, _now: Instant, _max_datagram_size: u64) -> Box<dyn Controller> {
//!         Box::new(Fixed(self.0))
//!     }
//! }
//!
//! let mut transport = TransportConfig::default();
//! transport.congestion_controller_factory(Arc::new(FixedFactory(1 << 20)));
//! ```
//!
//! The simulated-network tests run every controller, and a custom AIMD one, over random loss,
//! deep and shallow bottleneck queues and a path whose RTT changes.

mod bbr;
mod cubic;
mod new_reno;

use std::fmt::Debug;
use std::time::Instant;

pub use bbr::{Bbr, BbrConfig, BbrState};
pub use cubic::{cubic_k, Cubic, CubicConfig};
pub use new_reno::{NewReno, NewRenoConfig};

use super::rate::{LostPacket, RateSample};
use super::rtt::RttEstimator;

/// A congestion controller for one path of one connection.
///
/// The connection calls the `on_*` methods as events happen, with the time they happened; the
/// controller answers with [`Controller::window`], the number of bytes that may be in flight.
pub trait Controller: Send + Sync + Debug {
    /// A packet of `bytes` bytes that counts toward bytes in flight was sent.
    fn on_sent(&mut self, now: Instant, bytes: u64) {
        let _ = (now, bytes);
    }

    /// An in-flight packet of `bytes` bytes sent at `sent` was acknowledged. `app_limited` is
    /// true when the sender was not using the whole window (RFC 9002 §7.8: do not grow then).
    fn on_ack(
        &mut self,
        now: Instant,
        sent: Instant,
        bytes: u64,
        app_limited: bool,
        rtt: &RttEstimator,
    );

    /// The in-flight packets one ACK frame newly acknowledged, ascending by packet number,
    /// all with the same `app_limited`. The connection calls this once per ACK frame; the
    /// default hands each packet to [`Controller::on_ack`]. A controller whose per-packet work
    /// can be done once per frame (Cubic's congestion avoidance) overrides it.
    fn on_acks(
        &mut self,
        now: Instant,
        acked: &[AckedPacket],
        app_limited: bool,
        rtt: &RttEstimator,
    ) {
        for p in acked {
            self.on_ack(now, p.sent, p.bytes, app_limited, rtt);
        }
    }

    /// Packets were declared lost (RFC 9002 §7.3.2). `sent` is the send time of the newest lost
    /// packet; `persistent` says whether the loss amounts to persistent congestion (§7.6).
    fn on_congestion_event(
        &mut self,
        now: Instant,
        sent: Instant,
        persistent: bool,
        lost_bytes: u64,
    );

    /// A packet arrived with ECN-CE marks newly counted (RFC 9002 §7.1); the default treats it
    /// as a congestion event.
    fn on_ecn_ce(&mut self, now: Instant, sent: Instant) {
        self.on_congestion_event(now, sent, false, 0);
    }

    /// One packet was declared lost, before the [`Controller::on_congestion_event`] covering it.
    /// Model-based controllers (BBR) use it; the default ignores it.
    fn on_packet_lost(&mut self, now: Instant, lost: &LostPacket) {
        let _ = (now, lost);
    }

    /// Once per ACK frame that acknowledged packets, after [`Controller::on_ack`] for each
    /// and the losses it revealed: the delivery rate sample (draft-ietf-ccwg-bbr §4.1). The
    /// default ignores it.
    fn on_rate_sample(&mut self, now: Instant, sample: &RateSample, rtt: &RttEstimator) {
        let _ = (now, sample, rtt);
    }

    /// Whether the controller uses delivery-rate samples ([`Controller::on_rate_sample`]) and
    /// the lost packets' rate state ([`Controller::on_packet_lost`]). A connection samples
    /// (bookkeeping for every packet sent and acknowledged) only for a controller that does;
    /// the default says yes, the loss-based controllers (Cubic, NewReno), which use neither,
    /// say no.
    fn wants_rate_samples(&self) -> bool {
        true
    }

    /// The rate to pace at, in bytes per second, for controllers that choose one (BBR).
    /// `None`, the default, paces at 1.25 times the window per smoothed RTT (RFC 9002 §7.7).
    fn pacing_rate(&self) -> Option<u64> {
        None
    }

    /// The path's maximum datagram size changed.
    fn on_mtu_update(&mut self, max_datagram_size: u64);

    /// The congestion window in bytes.
    fn window(&self) -> u64;

    /// The window a new path starts with.
    fn initial_window(&self) -> u64;

    /// A boxed copy (for migration to a new path, where state is reset, RFC 9000 §9.4).
    fn clone_box(&self) -> Box<dyn Controller>;

    /// A short name for the state the controller is in, for qlog's
    /// `congestion_state_updated` (draft-ietf-quic-qlog-quic-events §8.3) and logs: for
    /// example `slow_start`, `congestion_avoidance` and `recovery` (RFC 9002 §7.3.1), or a
    /// BBR state. The default, `unknown`, never changes.
    fn state(&self) -> &'static str {
        "unknown"
    }

    /// The slow start threshold in bytes, for controllers that have one (RFC 9002 §7.3.1);
    /// `None`, the default, also while it is still unset (infinite).
    fn ssthresh(&self) -> Option<u64> {
        None
    }
}

/// The state name of a loss-based controller (RFC 9002 §7.3.1), for [`Controller::state`].
pub(crate) fn loss_based_state(recovering: bool, slow_start: bool) -> &'static str {
    if recovering {
        "recovery"
    } else if slow_start {
        "slow_start"
    } else {
        "congestion_avoidance"
    }
}

/// A slow start threshold for [`Controller::ssthresh`]: `None` while still unset (infinite).
pub(crate) fn finite_ssthresh(ssthresh: u64) -> Option<u64> {
    (ssthresh != u64::MAX).then_some(ssthresh)
}

/// An in-flight packet an ACK frame newly acknowledged, as [`Controller::on_acks`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckedPacket {
    /// When it was sent.
    pub sent: Instant,
    /// Its size in bytes.
    pub bytes: u64,
}

/// Builds a [`Controller`] for each new connection or path.
pub trait ControllerFactory: Send + Sync + Debug {
    /// A fresh controller for a path whose maximum datagram size is `max_datagram_size`.
    fn build(&self, now: Instant, max_datagram_size: u64) -> Box<dyn Controller>;
}

/// RFC 9002 §7.2: `min(10 * max_datagram_size, max(14720, 2 * max_datagram_size))`.
pub fn initial_window(max_datagram_size: u64) -> u64 {
    (10 * max_datagram_size).min(14720.max(2 * max_datagram_size))
}

/// RFC 9002 §7.2: the minimum congestion window, two datagrams.
pub fn minimum_window(max_datagram_size: u64) -> u64 {
    2 * max_datagram_size
}
