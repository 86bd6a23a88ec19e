//! OpenTelemetry through an axum app over HTTP/3, with the SDK's in-memory exporters: the
//! transport's metrics (`Endpoint::set_meter_provider`), the server span and request metrics
//! of `gquic_tower::OtelLayer` with the HTTP semantic-convention attributes, and the client's
//! W3C trace-context propagation (the server span is the child of the client's span).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use gquic::transport::runtime::Endpoint;
use gquic::transport::ServerConfig;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry::{Context, KeyValue, Value};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A response body that sends one chunk after `delay`, then ends: a span that ends with the
/// body lasts at least that long.
struct SlowBody {
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    sent: bool,
}

impl http_body::Body for SlowBody {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        if self.sent {
            return std::task::Poll::Ready(None);
        }
        std::task::ready!(self.sleep.as_mut().poll(cx));
        self.sent = true;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(bytes::Bytes::from_static(
            b"slow",
        )))))
    }
}

fn attr<'a>(attrs: impl IntoIterator<Item = &'a KeyValue>, key: &str) -> Option<Value> {
    attrs
        .into_iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.clone())
}

/// Sum of a counter (all data points) or count of a histogram, by metric name.
fn total(metrics: &[ResourceMetrics], name: &str) -> Option<f64> {
    let mut found = None;
    for rm in metrics {
        for sm in rm.scope_metrics() {
            for m in sm.metrics().filter(|m| m.name() == name) {
                let v = match m.data() {
                    AggregatedMetrics::U64(MetricData::Sum(s)) => {
                        s.data_points().map(|p| p.value() as f64).sum()
                    }
                    AggregatedMetrics::I64(MetricData::Sum(s)) => {
                        s.data_points().map(|p| p.value() as f64).sum()
                    }
                    AggregatedMetrics::F64(MetricData::Histogram(h)) => {
                        h.data_points().map(|p| p.count() as f64).sum()
                    }
                    AggregatedMetrics::U64(MetricData::Histogram(h)) => {
                        h.data_points().map(|p| p.count() as f64).sum()
                    }
                    other => panic!("{name}: unexpected data {other:?}"),
                };
                // Cumulative temporality: the last export has the totals.
                found = Some(v);
            }
        }
    }
    found
}

/// The attributes of the data points of a histogram.
fn histogram_attrs(metrics: &[ResourceMetrics], name: &str) -> Vec<Vec<KeyValue>> {
    let mut out = Vec::new();
    for rm in metrics {
        for sm in rm.scope_metrics() {
            for m in sm.metrics().filter(|m| m.name() == name) {
                if let AggregatedMetrics::F64(MetricData::Histogram(h)) = m.data() {
                    out = h
                        .data_points()
                        .map(|p| p.attributes().cloned().collect())
                        .collect();
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_the_server_span_of_a_request_through_axum_over_http3() {
    let spans = InMemorySpanExporter::default();
    let tracers = SdkTracerProvider::builder()
        .with_simple_exporter(spans.clone())
        .build();
    let exported = InMemoryMetricExporter::default();
    let meters = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exported.clone()).build())
        .build();

    // The server: an ordinary axum Router with the OpenTelemetry layer, over HTTP/3.
    let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert = CertificateDer::from(c.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(c.signing_key.serialize_der()));
    let provider = Arc::new(gquic::transport::crypto::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let endpoint = Endpoint::server(
        ServerConfig::new(Arc::new(tls)).unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    endpoint.set_meter_provider(&meters);
    let port = endpoint.local_addr().port();
    let app = Router::new()
        .route("/hello/{name}", get(|| async { "hello" }))
        .route(
            "/slow",
            get(|| async {
                axum::body::Body::new(SlowBody {
                    sleep: Box::pin(tokio::time::sleep(Duration::from_millis(300))),
                    sent: false,
                })
            }),
        )
        .route(
            "/boom",
            get(|| async { (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
        )
        .layer(gquic_tower::OtelLayer::from_tracer_provider(&tracers).with_meter_provider(&meters));
    let serving = endpoint.clone();
    tokio::spawn(async move { gquic_axum::serve(serving, app).await });

    // The client, inside a span of its own: the request carries it as `traceparent`.
    let client = gquic_client::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(gquic_client::Certificate::from_der(&cert).unwrap())
        .build()
        .unwrap();
    let tracer = tracers.tracer("test-client");
    let parent = tracer.start("client request");
    let parent_cx = Context::current_with_span(parent);
    let parent_ids = parent_cx.span().span_context().clone();
    let url = format!("https://localhost:{port}/hello/otel?x=1");
    let resp = {
        use opentelemetry::context::FutureExt as _;
        client
            .get(&url)
            .send()
            .with_context(parent_cx.clone())
            .await
            .unwrap()
    };
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_3);
    assert_eq!(resp.text().await.unwrap(), "hello");
    let boom = client
        .get(format!("https://localhost:{port}/boom"))
        .send()
        .await
        .unwrap();
    assert_eq!(boom.status(), 500);
    let slow = client
        .get(format!("https://localhost:{port}/slow"))
        .send()
        .await
        .unwrap();
    assert_eq!(slow.text().await.unwrap(), "slow");
    parent_cx.span().end();

    // The server span, with the HTTP semantic conventions, child of the client's span.
    let finished: Vec<SpanData> = spans.get_finished_spans().unwrap();
    let server: Vec<&SpanData> = finished
        .iter()
        .filter(|s| s.span_kind == SpanKind::Server)
        .collect();
    assert_eq!(server.len(), 3, "{finished:#?}");
    let hello = server
        .iter()
        .find(|s| attr(&s.attributes, "url.path") == Some("/hello/otel".into()))
        .expect("no span for /hello/otel");
    assert_eq!(hello.name, "GET");
    for (key, value) in [
        ("http.request.method", Value::from("GET")),
        ("http.response.status_code", Value::I64(200)),
        ("network.protocol.name", Value::from("http")),
        ("network.protocol.version", Value::from("3")),
        ("url.path", Value::from("/hello/otel")),
        ("url.query", Value::from("x=1")),
        ("url.scheme", Value::from("https")),
    ] {
        assert_eq!(
            attr(&hello.attributes, key),
            Some(value),
            "{key} in {:?}",
            hello.attributes
        );
    }
    assert!(attr(&hello.attributes, "user_agent.original").is_some());
    assert_eq!(hello.status, Status::Unset);
    assert_eq!(
        hello.span_context.trace_id(),
        parent_ids.trace_id(),
        "the server span is not in the client's trace"
    );
    assert_eq!(hello.parent_span_id, parent_ids.span_id());
    assert!(hello.parent_span_is_remote);
    let boom = server
        .iter()
        .find(|s| attr(&s.attributes, "url.path") == Some("/boom".into()))
        .unwrap();
    assert_eq!(
        attr(&boom.attributes, "http.response.status_code"),
        Some(Value::I64(500))
    );
    assert!(matches!(boom.status, Status::Error { .. }));
    // Without a current span, no traceparent: the second request's span is a root.
    assert_ne!(boom.span_context.trace_id(), parent_ids.trace_id());
    // The span lasts until the streamed body has ended, not only until its head.
    let slow = server
        .iter()
        .find(|s| attr(&s.attributes, "url.path") == Some("/slow".into()))
        .unwrap();
    let lasted = slow.end_time.duration_since(slow.start_time).unwrap();
    assert!(lasted >= Duration::from_millis(290), "{lasted:?}");

    // The metrics: the transport's and the HTTP layer's.
    drop(client);
    tokio::time::sleep(Duration::from_millis(100)).await;
    meters.force_flush().unwrap();
    let metrics = exported.get_finished_metrics().unwrap();
    let get = |name: &str| total(&metrics, name).unwrap_or_else(|| panic!("no {name}"));
    assert_eq!(get("quic.connections.opened"), 1.0);
    assert_eq!(get("quic.handshake.duration"), 1.0);
    assert!(get("quic.connection.rtt") >= 1.0);
    assert!(get("quic.bytes.sent") > 1000.0);
    assert!(get("quic.bytes.received") > 1000.0);
    assert!(get("quic.packets.sent") > 3.0);
    assert!(get("quic.packets.received") > 3.0);
    assert!(total(&metrics, "quic.packets.lost").is_some());
    assert!(total(&metrics, "quic.streams.open").is_some());
    assert_eq!(get("quic.retries.sent"), 0.0);
    assert_eq!(get("http.server.request.duration"), 3.0);
    let statuses: Vec<Option<Value>> = histogram_attrs(&metrics, "http.server.request.duration")
        .iter()
        .map(|a| attr(a, "http.response.status_code"))
        .collect();
    assert!(statuses.contains(&Some(Value::I64(200))), "{statuses:?}");
    assert!(statuses.contains(&Some(Value::I64(500))), "{statuses:?}");
    for a in histogram_attrs(&metrics, "http.server.request.duration") {
        assert_eq!(attr(&a, "network.protocol.version"), Some("3".into()));
        assert_eq!(attr(&a, "http.request.method"), Some("GET".into()));
    }
    assert_eq!(get("http.server.active_requests"), 0.0);

    // Closing the connection counts it as closed, by reason.
    endpoint.close(gquic::transport::VarInt::from_u32(0), b"bye");
    tokio::time::timeout(Duration::from_secs(5), endpoint.wait_idle())
        .await
        .unwrap();
    meters.force_flush().unwrap();
    let metrics = exported.get_finished_metrics().unwrap();
    assert_eq!(total(&metrics, "quic.connections.closed"), Some(1.0));
    assert_eq!(total(&metrics, "quic.connections.open"), Some(0.0));
    assert!(total(&metrics, "quic.connection.congestion_window").unwrap() >= 1.0);
}
