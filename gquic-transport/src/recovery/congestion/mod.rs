//! Congestion control behind one public trait (RFC 9002 §7).
//!
//! A [`Controller`] sees every packet sent, acknowledged and lost and answers with a congestion
//! window. GQUIC ships [`NewReno`] (RFC 9002 §7.3); users can implement their own and hand a
//! [`ControllerFactory`] to the transport configuration.

mod new_reno;

use std::fmt::Debug;
use std::time::Instant;

pub use new_reno::{NewReno, NewRenoConfig};

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

    /// The path's maximum datagram size changed.
    fn on_mtu_update(&mut self, max_datagram_size: u64);

    /// The congestion window in bytes.
    fn window(&self) -> u64;

    /// The window a new path starts with.
    fn initial_window(&self) -> u64;

    /// A boxed copy (for migration to a new path, where state is reset, RFC 9000 §9.4).
    fn clone_box(&self) -> Box<dyn Controller>;
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
