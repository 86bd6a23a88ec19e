//! Arbitrary `traceparent` / `tracestate` header values through the W3C Trace Context parser
//! (`gquic_tower::otel::extract`): no panic; a context it accepts has valid, non-zero IDs and
//! is written back by `inject` as the same lower-case version-00 header.
#![no_main]

use gquic_tower::otel::{extract, inject, TRACEPARENT, TRACESTATE};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use opentelemetry::trace::TraceContextExt;

fuzz_target!(|data: &[u8]| {
    let (parent, state) = data.split_at(data.len() / 2);
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_bytes(parent) {
        headers.insert(TRACEPARENT, v);
    }
    if let Ok(v) = HeaderValue::from_bytes(state) {
        headers.insert(TRACESTATE, v);
    }
    let cx = extract(&headers);
    let sc = cx.span().span_context().clone();
    if sc.is_valid() {
        assert!(sc.is_remote());
        let mut out = HeaderMap::new();
        inject(&cx, &mut out);
        let written = out.get(TRACEPARENT).unwrap().to_str().unwrap().to_owned();
        assert!(written.starts_with("00-") && written.len() == 55);
        // The IDs survive the round trip.
        let again = extract(&out);
        assert_eq!(again.span().span_context().trace_id(), sc.trace_id());
        assert_eq!(again.span().span_context().span_id(), sc.span_id());
    }
});
