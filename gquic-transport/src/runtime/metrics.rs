//! OpenTelemetry metrics of a runtime endpoint (`otel` feature): the application passes its
//! meter provider to [`super::Endpoint::set_meter_provider`]; nothing is exported by this
//! crate.
//!
//! The instruments are listed on [`super::Endpoint::set_meter_provider`].

use std::sync::{Arc, Weak};
use std::time::Duration;

use opentelemetry::metrics::{
    Counter, Histogram, Meter, ObservableCounter, ObservableUpDownCounter, UpDownCounter,
};
use opentelemetry::KeyValue;

use super::Shared;
use crate::connection::{ConnectionError, ConnectionStats};

/// Counters of connections already gone, so the observable counters never go back.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Gone {
    bytes_sent: u64,
    bytes_received: u64,
    packets_sent: u64,
    packets_received: u64,
    packets_lost: u64,
}

impl Gone {
    fn merge(&mut self, o: &Gone) {
        self.bytes_sent += o.bytes_sent;
        self.bytes_received += o.bytes_received;
        self.packets_sent += o.packets_sent;
        self.packets_received += o.packets_received;
        self.packets_lost += o.packets_lost;
    }

    pub(crate) fn add(&mut self, s: &ConnectionStats) {
        self.bytes_sent += s.bytes_sent;
        self.bytes_received += s.bytes_received;
        self.packets_sent += s.packets_sent;
        self.packets_received += s.packets_received;
        self.packets_lost += s.packets_lost;
    }
}

/// The synchronous instruments; the observable ones live in the meter provider through
/// their callbacks and are kept here only to keep them registered.
pub(crate) struct Metrics {
    client: KeyValue,
    server: KeyValue,
    opened: Counter<u64>,
    open: UpDownCounter<i64>,
    closed: Counter<u64>,
    handshake: Histogram<f64>,
    rtt: Histogram<f64>,
    cwnd: Histogram<u64>,
    zero_rtt: Counter<u64>,
    _observed: ([ObservableCounter<u64>; 6], ObservableUpDownCounter<i64>),
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// A `quic.close.reason` value.
fn close_reason(e: Option<&ConnectionError>) -> &'static str {
    match e {
        None | Some(ConnectionError::LocallyClosed) => "local",
        Some(ConnectionError::ApplicationClosed { .. }) => "application",
        Some(ConnectionError::ConnectionClosed { .. }) => "peer_error",
        Some(ConnectionError::TransportError(_)) => "transport_error",
        Some(ConnectionError::TimedOut) => "idle_timeout",
        Some(ConnectionError::Reset) => "stateless_reset",
        Some(ConnectionError::VersionMismatch) => "version_mismatch",
        #[allow(unreachable_patterns)]
        Some(_) => "other",
    }
}

/// Totals over the endpoint's live connections and those gone, over every shard still
/// alive (one lock at a time); `None` once the endpoint is gone.
fn totals(shards: &[Weak<Shared>]) -> Option<(Gone, i64, u64)> {
    let mut t = Gone::default();
    let mut streams = 0i64;
    let mut retries = 0;
    let mut alive = false;
    for shared in shards.iter().filter_map(Weak::upgrade) {
        alive = true;
        let s = shared.lock();
        t.merge(&s.gone);
        for &h in s.by_handle.keys() {
            // A hibernating connection has its counters read without waking it, and no
            // stream open.
            if let Some(stats) = s.ep.connection_stats(h) {
                t.add(&stats);
                streams += s.ep.connection(h).map_or(0, |c| c.open_streams()) as i64;
            }
        }
        retries += s.ep.stats().retries;
    }
    alive.then_some((t, streams, retries))
}

impl Metrics {
    /// Creates the instruments on `meter` for an endpoint whose shards are `shared`.
    pub(crate) fn new(meter: &Meter, shared: Arc<[Weak<Shared>]>) -> Self {
        let observed = |name: &'static str,
                        unit: &'static str,
                        description: &'static str,
                        pick: fn(&Gone, u64) -> u64| {
            let shared = shared.clone();
            meter
                .u64_observable_counter(name)
                .with_unit(unit)
                .with_description(description)
                .with_callback(move |o| {
                    if let Some((t, _, retries)) = totals(&shared) {
                        o.observe(pick(&t, retries), &[]);
                    }
                })
                .build()
        };
        let counters = [
            observed("quic.bytes.sent", "By", "UDP payload bytes sent", |t, _| {
                t.bytes_sent
            }),
            observed(
                "quic.bytes.received",
                "By",
                "UDP payload bytes received",
                |t, _| t.bytes_received,
            ),
            observed(
                "quic.packets.sent",
                "{packet}",
                "QUIC packets sent",
                |t, _| t.packets_sent,
            ),
            observed(
                "quic.packets.received",
                "{packet}",
                "QUIC packets received and authenticated",
                |t, _| t.packets_received,
            ),
            observed(
                "quic.packets.lost",
                "{packet}",
                "QUIC packets declared lost (RFC 9002 §6.1)",
                |t, _| t.packets_lost,
            ),
            observed(
                "quic.retries.sent",
                "{packet}",
                "Retry packets sent (RFC 9000 §8.1.2)",
                |_, retries| retries,
            ),
        ];
        let streams = {
            let shared = shared.clone();
            meter
                .i64_observable_up_down_counter("quic.streams.open")
                .with_unit("{stream}")
                .with_description("Streams with state on the endpoint's connections")
                .with_callback(move |o| {
                    if let Some((_, streams, _)) = totals(&shared) {
                        o.observe(streams, &[]);
                    }
                })
                .build()
        };
        Self {
            opened: meter
                .u64_counter("quic.connections.opened")
                .with_unit("{connection}")
                .with_description("Connections created (accepted by a server, started by a client)")
                .build(),
            open: meter
                .i64_up_down_counter("quic.connections.open")
                .with_unit("{connection}")
                .with_description("Connections alive, including those still closing")
                .build(),
            closed: meter
                .u64_counter("quic.connections.closed")
                .with_unit("{connection}")
                .with_description("Connections gone, by quic.close.reason")
                .build(),
            handshake: meter
                .f64_histogram("quic.handshake.duration")
                .with_unit("s")
                .with_description("From a connection's creation to its handshake's completion")
                .with_boundaries(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0,
                ])
                .build(),
            rtt: meter
                .f64_histogram("quic.connection.rtt")
                .with_unit("s")
                .with_description(
                    "Smoothed RTT (RFC 9002 §5.3) when the handshake completes and at the end",
                )
                .with_boundaries(vec![
                    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                ])
                .build(),
            cwnd: meter
                .u64_histogram("quic.connection.congestion_window")
                .with_unit("By")
                .with_description("Congestion window at the end of a connection")
                .build(),
            zero_rtt: meter
                .u64_counter("quic.zero_rtt")
                .with_unit("{connection}")
                .with_description("0-RTT offered, by quic.zero_rtt.result (accepted or rejected)")
                .build(),
            client: KeyValue::new("quic.side", "client"),
            server: KeyValue::new("quic.side", "server"),
            _observed: (counters, streams),
        }
    }

    fn side(&self, server: bool) -> &KeyValue {
        if server {
            &self.server
        } else {
            &self.client
        }
    }

    pub(crate) fn on_created(&self, server: bool) {
        let attrs = std::slice::from_ref(self.side(server));
        self.opened.add(1, attrs);
        self.open.add(1, attrs);
    }

    /// The handshake completed after `duration`; `zero_rtt` is whether 0-RTT was accepted
    /// when it was offered.
    pub(crate) fn on_connected(
        &self,
        server: bool,
        duration: Duration,
        rtt: Duration,
        zero_rtt: Option<bool>,
    ) {
        let attrs = std::slice::from_ref(self.side(server));
        self.handshake.record(duration.as_secs_f64(), attrs);
        self.rtt.record(rtt.as_secs_f64(), attrs);
        if let Some(accepted) = zero_rtt {
            self.zero_rtt.add(
                1,
                &[
                    self.side(server).clone(),
                    KeyValue::new(
                        "quic.zero_rtt.result",
                        if accepted { "accepted" } else { "rejected" },
                    ),
                ],
            );
        }
    }

    /// The connection is gone.
    pub(crate) fn on_gone(
        &self,
        server: bool,
        error: Option<&ConnectionError>,
        rtt: Duration,
        cwnd: u64,
        connected: bool,
    ) {
        let attrs = std::slice::from_ref(self.side(server));
        self.open.add(-1, attrs);
        self.closed.add(
            1,
            &[
                self.side(server).clone(),
                KeyValue::new("quic.close.reason", close_reason(error)),
            ],
        );
        if connected {
            self.rtt.record(rtt.as_secs_f64(), attrs);
            self.cwnd.record(cwnd, attrs);
        }
    }
}

/// Installs metrics on an endpoint's state.
pub(crate) fn install(shards: &[Arc<Shared>], meter: &Meter) {
    let weak: Arc<[Weak<Shared>]> = shards.iter().map(Arc::downgrade).collect();
    let metrics = Arc::new(Metrics::new(meter, weak));
    for shared in shards {
        shared.lock().metrics = Some(metrics.clone());
    }
}
