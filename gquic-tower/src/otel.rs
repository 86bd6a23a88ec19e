//! OpenTelemetry for HTTP servers (feature `otel`): [`OtelLayer`] gives every request a server
//! span following the OpenTelemetry HTTP semantic conventions and records the request
//! duration metric; [`extract`] and [`inject`] carry the W3C Trace Context
//! (`traceparent`/`tracestate` headers) between services.
//!
//! Only the OpenTelemetry API crate is used: the tracer and meter providers (and their
//! exporters) are the application's.
//!
//! ```
//! use gquic_tower::otel::OtelLayer;
//! use tower::ServiceBuilder;
//!
//! // The application's providers (here the global ones; with opentelemetry_sdk, its
//! // `SdkTracerProvider` and `SdkMeterProvider` and `OtelLayer::from_tracer_provider`).
//! let meters = opentelemetry::global::meter_provider();
//! let service = ServiceBuilder::new()
//!     .layer(OtelLayer::new(opentelemetry::global::tracer("my-app")).with_meter_provider(&*meters))
//!     .service_fn(|_req: http::Request<String>| async {
//!         Ok::<_, std::convert::Infallible>(http::Response::new(String::from("hello")))
//!     });
//! # drop(service);
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use tokio::time::Instant;

use http::{HeaderMap, HeaderValue, Request, Response, Version};
use opentelemetry::context::{FutureExt as _, WithContext};
use opentelemetry::metrics::{Histogram, MeterProvider, UpDownCounter};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
    Tracer, TracerProvider,
};
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use tower_layer::Layer;
use tower_service::Service;

/// The `traceparent` header (W3C Trace Context §3.2).
pub const TRACEPARENT: &str = "traceparent";
/// The `tracestate` header (W3C Trace Context §3.3).
pub const TRACESTATE: &str = "tracestate";

fn hex_field(s: &str, len: usize) -> Option<&str> {
    (s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))).then_some(s)
}

/// The remote parent in `headers` (W3C Trace Context §3.2: `version-traceid-parentid-flags`,
/// lower-case hex, neither ID all zeros, version `ff` invalid; a later version may append
/// fields), as a [`Context`] to start a span in. Without a valid `traceparent`, an empty
/// context (the span becomes a root). `tracestate` is kept when it parses.
pub fn extract(headers: &HeaderMap) -> Context {
    match parse_traceparent(headers) {
        Some(sc) => Context::new().with_remote_span_context(sc),
        None => Context::new(),
    }
}

fn parse_traceparent(headers: &HeaderMap) -> Option<SpanContext> {
    let value = headers.get(TRACEPARENT)?.to_str().ok()?.trim();
    let mut parts = value.split('-');
    let version = hex_field(parts.next()?, 2)?;
    let trace_id = hex_field(parts.next()?, 32)?;
    let span_id = hex_field(parts.next()?, 16)?;
    let flags = hex_field(parts.next()?, 2)?;
    if version == "ff" || (version == "00" && parts.next().is_some()) {
        return None;
    }
    let trace_id = TraceId::from_hex(trace_id).ok()?;
    let span_id = SpanId::from_hex(span_id).ok()?;
    if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
        return None;
    }
    let flags = TraceFlags::new(u8::from_str_radix(flags, 16).ok()? & TraceFlags::SAMPLED.to_u8());
    let state = headers
        .get(TRACESTATE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<TraceState>().ok())
        .unwrap_or_default();
    Some(SpanContext::new(trace_id, span_id, flags, true, state))
}

/// Writes the span of `cx` into `headers` as `traceparent` (version `00`) and, when it has
/// entries, `tracestate`. Nothing is written for a context without a valid span.
pub fn inject(cx: &Context, headers: &mut HeaderMap) {
    let span = cx.span();
    let sc = span.span_context();
    if !sc.is_valid() {
        return;
    }
    let value = format!(
        "00-{}-{}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8()
    );
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(TRACEPARENT, v);
    }
    let state = sc.trace_state().header();
    if !state.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&state) {
            headers.insert(TRACESTATE, v);
        }
    }
}

/// `network.protocol.version` of an HTTP version.
fn protocol_version(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_11 => "1.1",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "unknown",
    }
}

/// `http.request.method`: the known methods as they are, anything else `_OTHER` (the
/// conventions keep the cardinality bounded).
fn method(m: &http::Method) -> &'static str {
    match *m {
        http::Method::GET => "GET",
        http::Method::HEAD => "HEAD",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::CONNECT => "CONNECT",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::TRACE => "TRACE",
        http::Method::PATCH => "PATCH",
        _ => "_OTHER",
    }
}

struct HttpMetrics {
    duration: Histogram<f64>,
    active: UpDownCounter<i64>,
}

/// A tower [`Layer`] for HTTP servers: a span of kind `Server` per request, child of the
/// remote parent in the request's `traceparent` ([`extract`]) and current while the inner
/// service runs, named after the method and carrying the attributes of the OpenTelemetry
/// HTTP semantic conventions:
///
/// - `http.request.method`, `url.path`, `url.scheme`, `url.query` (when present),
///   `network.protocol.name` = `http`, `network.protocol.version` (`3` over HTTP/3),
///   `user_agent.original`, `server.address` (the request's authority host);
/// - `http.response.status_code` once the response head is ready; span status `Error` for
///   5xx responses, service and body errors and requests cancelled before the response.
///
/// The span ends when the response body has been sent to its end (or fails, or is dropped
/// when the client goes away), so streamed responses count in full. The responses' bodies
/// are wrapped in [`OtelBody`] for that.
///
/// With [`OtelLayer::with_meter_provider`] it also records `http.server.request.duration`
/// (histogram, seconds, until the span ends; attributes `http.request.method`,
/// `http.response.status_code`, `url.scheme`, `network.protocol.name`,
/// `network.protocol.version`) and `http.server.active_requests`.
pub struct OtelLayer<T> {
    tracer: Arc<T>,
    metrics: Option<Arc<HttpMetrics>>,
}

impl<T> Clone for OtelLayer<T> {
    fn clone(&self) -> Self {
        Self {
            tracer: self.tracer.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

impl<T> std::fmt::Debug for OtelLayer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtelLayer")
            .field("metrics", &self.metrics.is_some())
            .finish_non_exhaustive()
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope::builder("gquic-tower")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}

impl<T: Tracer> OtelLayer<T> {
    /// Spans from `tracer`.
    pub fn new(tracer: T) -> Self {
        Self {
            tracer: Arc::new(tracer),
            metrics: None,
        }
    }

    /// Spans from a tracer (scope `gquic-tower`) of `provider`.
    pub fn from_tracer_provider<P>(provider: &P) -> Self
    where
        P: TracerProvider<Tracer = T> + ?Sized,
    {
        Self::new(provider.tracer_with_scope(scope()))
    }

    /// Also records the request metrics with a meter (scope `gquic-tower`) of `provider`.
    pub fn with_meter_provider<P: MeterProvider + ?Sized>(mut self, provider: &P) -> Self {
        let meter = provider.meter_with_scope(scope());
        self.metrics = Some(Arc::new(HttpMetrics {
            duration: meter
                .f64_histogram("http.server.request.duration")
                .with_unit("s")
                .with_description("Duration of HTTP server requests (until the response body ends)")
                .with_boundaries(vec![
                    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                ])
                .build(),
            active: meter
                .i64_up_down_counter("http.server.active_requests")
                .with_unit("{request}")
                .with_description("HTTP server requests in progress")
                .build(),
        }));
        self
    }
}

impl<S, T> Layer<S> for OtelLayer<T> {
    type Service = OtelService<S, T>;

    fn layer(&self, inner: S) -> Self::Service {
        OtelService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`OtelLayer`] makes.
pub struct OtelService<S, T> {
    inner: S,
    layer: OtelLayer<T>,
}

impl<S: Clone, T> Clone for OtelService<S, T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S, T> std::fmt::Debug for OtelService<S, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtelService").finish_non_exhaustive()
    }
}

impl<S, T, B, RB> Service<Request<B>> for OtelService<S, T>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: std::fmt::Display,
    T: Tracer,
    T::Span: Send + Sync + 'static,
{
    type Response = Response<OtelBody<RB>>;
    type Error = S::Error;
    type Future = OtelFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let parent = extract(req.headers());
        let method = method(req.method());
        let version = protocol_version(req.version());
        let scheme = req.uri().scheme_str().unwrap_or("https").to_owned();
        let mut attributes = vec![
            KeyValue::new("http.request.method", method),
            KeyValue::new("url.path", req.uri().path().to_owned()),
            KeyValue::new("url.scheme", scheme.clone()),
            KeyValue::new("network.protocol.name", "http"),
            KeyValue::new("network.protocol.version", version),
        ];
        if let Some(q) = req.uri().query() {
            attributes.push(KeyValue::new("url.query", q.to_owned()));
        }
        if let Some(host) = req.uri().host() {
            attributes.push(KeyValue::new("server.address", host.to_owned()));
        }
        if let Some(ua) = req
            .headers()
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
        {
            attributes.push(KeyValue::new("user_agent.original", ua.to_owned()));
        }
        let span = self
            .layer
            .tracer
            .span_builder(method)
            .with_kind(SpanKind::Server)
            .with_attributes(attributes)
            .start_with_context(self.layer.tracer.as_ref(), &parent);
        let cx = parent.with_span(span);
        let metric_attrs = vec![
            KeyValue::new("http.request.method", method),
            KeyValue::new("url.scheme", scheme),
            KeyValue::new("network.protocol.name", "http"),
            KeyValue::new("network.protocol.version", version),
        ];
        if let Some(m) = &self.layer.metrics {
            m.active.add(1, &metric_attrs);
        }
        let inner = {
            let _guard = cx.clone().attach();
            self.inner.call(req)
        };
        OtelFuture {
            inner: inner.with_context(cx.clone()),
            finish: Some(Finish {
                cx,
                metrics: self.layer.metrics.clone(),
                attrs: metric_attrs,
                has_status: false,
                start: Instant::now(),
            }),
        }
    }
}

/// Ends a request's span and records its duration once: when the response body ends, fails
/// or is dropped (or the response never came).
struct Finish {
    cx: Context,
    metrics: Option<Arc<HttpMetrics>>,
    /// The metric attributes; the status code (or error type) last when known.
    attrs: Vec<KeyValue>,
    /// Whether `attrs` ends with the response's status (not part of the active-requests
    /// attributes).
    has_status: bool,
    start: Instant,
}

impl Finish {
    fn error(&self, what: &str) {
        let span = self.cx.span();
        span.set_attribute(KeyValue::new("error.type", what.to_owned()));
        span.set_status(Status::error(what.to_owned()));
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        if !self.has_status {
            // The response future was dropped: the client went away first.
            self.error("request_cancelled");
        }
        self.cx.span().end();
        if let Some(m) = &self.metrics {
            m.duration
                .record(self.start.elapsed().as_secs_f64(), &self.attrs);
            let n = self.attrs.len() - usize::from(self.has_status);
            m.active.add(-1, &self.attrs[..n]);
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`OtelService`].
    pub struct OtelFuture<F> {
        #[pin]
        inner: WithContext<F>,
        finish: Option<Finish>,
    }
}

impl<F, RB, E> Future for OtelFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
    E: std::fmt::Display,
{
    type Output = Result<Response<OtelBody<RB>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = std::task::ready!(this.inner.poll(cx));
        let Some(mut finish) = this.finish.take() else {
            panic!("OtelFuture polled after completion");
        };
        match out {
            Ok(resp) => {
                let status = resp.status();
                let code = i64::from(status.as_u16());
                let span = finish.cx.span();
                span.set_attribute(KeyValue::new("http.response.status_code", code));
                if status.is_server_error() {
                    span.set_status(Status::error(status.as_u16().to_string()));
                }
                finish
                    .attrs
                    .push(KeyValue::new("http.response.status_code", code));
                finish.has_status = true;
                Poll::Ready(Ok(resp.map(|inner| OtelBody {
                    inner,
                    finish: Some(finish),
                })))
            }
            Err(e) => {
                finish.error("service_error");
                finish.cx.span().set_status(Status::error(e.to_string()));
                finish
                    .attrs
                    .push(KeyValue::new("error.type", "service_error"));
                finish.has_status = true;
                Poll::Ready(Err(e))
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body whose end (or failure, or drop) ends the request's span and records
    /// its duration.
    pub struct OtelBody<B> {
        #[pin]
        inner: B,
        finish: Option<Finish>,
    }
}

impl<B: std::fmt::Debug> std::fmt::Debug for OtelBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtelBody")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<B> http_body::Body for OtelBody<B>
where
    B: http_body::Body,
    B::Error: std::fmt::Display,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let out = std::task::ready!(this.inner.poll_frame(cx));
        match &out {
            None => drop(this.finish.take()),
            Some(Err(e)) => {
                if let Some(f) = this.finish.take() {
                    f.error("body_error");
                    f.cx.span().set_status(Status::error(e.to_string()));
                }
            }
            Some(Ok(_)) => {}
        }
        Poll::Ready(out)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(tp: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, HeaderValue::from_str(tp).unwrap());
        h
    }

    #[test]
    fn traceparent_round_trips_and_rejects_invalid_values() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = extract(&headers(tp));
        let sc = cx.span().span_context().clone();
        assert!(sc.is_valid() && sc.is_remote() && sc.is_sampled());
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let mut out = HeaderMap::new();
        inject(&cx, &mut out);
        assert_eq!(out.get(TRACEPARENT).unwrap(), tp);
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "garbage",
        ] {
            assert!(
                !extract(&headers(bad)).span().span_context().is_valid(),
                "{bad} accepted"
            );
        }
        // A later version may append fields.
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-more";
        assert!(extract(&headers(later)).span().span_context().is_valid());
        // No span, no header.
        let mut none = HeaderMap::new();
        inject(&Context::new(), &mut none);
        assert!(none.is_empty());
    }

    use proptest::prelude::*;

    proptest! {
        /// Any header value: no panic, and whatever is accepted has valid IDs.
        #[test]
        fn arbitrary_traceparent_values_never_panic(value in "[ -~]{0,80}") {
            let mut h = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(TRACEPARENT, v);
            }
            let cx = extract(&h);
            let sc = cx.span().span_context().clone();
            if sc.is_valid() {
                prop_assert!(sc.trace_id() != TraceId::INVALID && sc.span_id() != SpanId::INVALID);
            }
        }

        /// Well-formed version-00 headers round-trip through `extract` and `inject`.
        #[test]
        fn valid_traceparents_round_trip(
            trace in 1u128..,
            span in 1u64..,
            sampled in any::<bool>(),
        ) {
            let tp = format!("00-{trace:032x}-{span:016x}-{:02x}", u8::from(sampled));
            let cx = extract(&headers(&tp));
            let sc = cx.span().span_context().clone();
            prop_assert!(sc.is_valid());
            prop_assert_eq!(sc.is_sampled(), sampled);
            let mut out = HeaderMap::new();
            inject(&cx, &mut out);
            prop_assert_eq!(out.get(TRACEPARENT).unwrap().to_str().unwrap(), tp.as_str());
        }
    }
}
