//! qlog: a structured trace of one connection, for qvis and other qlog tools.
//!
//! Behind the `qlog` feature, an endpoint writes one file per connection into a directory
//! (`EndpointConfig::qlog_dir`; the runtime endpoints also take the
//! `QLOGDIR` environment variable, draft-ietf-quic-qlog-main-schema §10.1). A file is named
//! after the connection's original Destination Connection ID and the vantage point
//! (`<odcid>_client.sqlog`, `<odcid>_server.sqlog`), so the two ends of a connection are easy
//! to pair.
//!
//! The format is the `QlogFileSeq` of draft-ietf-quic-qlog-main-schema §5: JSON Text
//! Sequences (RFC 7464, §11.2 of the draft), each record an ASCII Record Separator, one JSON
//! object and a line feed. The first record is the header (`file_schema`
//! `urn:ietf:params:qlog:file:sequential`, the trace's vantage point and common fields:
//! times are milliseconds on a monotonic clock from the connection's start). Every other
//! record is an event (`time`, `name`, `data`) from draft-ietf-quic-qlog-quic-events
//! (identified as `urn:ietf:params:qlog:events:quic-13`):
//!
//! - `quic:connection_started`, `quic:connection_closed` (§5.2, §5.3);
//! - `quic:connection_state_updated` (§5.6): the base states `attempted` (first Initial
//!   packet sent or received), `handshake_started` (first Handshake packet),
//!   `handshake_complete` (RFC 9001 §4.1.1) and `closed` (the closing or draining period
//!   over, or the idle timeout: the state is discarded), and the finer `handshake_confirmed`
//!   (RFC 9001 §4.1.2), `closing` (we sent CONNECTION_CLOSE) and `draining` (the peer did,
//!   or a stateless reset came); each with the state before it as `old`;
//! - `quic:packet_sent`, `quic:packet_received` with their frames, `quic:packet_dropped`
//!   with a trigger (§6.5-§6.7);
//! - `quic:key_updated` for the keys TLS installs and for 1-RTT key updates by either side
//!   (§7.1);
//! - `quic:recovery_metrics_updated` (RTTs, congestion window, bytes in flight, ssthresh,
//!   PTO count; only the values that changed), `quic:congestion_state_updated`,
//!   `quic:packet_lost` (§8.2-§8.4).
//!
//! (Older qlog versions called these `connectivity:connection_started`,
//! `transport:packet_sent`, `recovery:metrics_updated`, `security:key_updated` and so on.)
//!
//! Nothing here runs unless a connection has a qlog: the connection checks one `Option`.
#![cfg_attr(not(feature = "qlog"), allow(dead_code))]

use std::fmt::Write as _;
use std::io::Write;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;

use crate::connection::ConnectionError;
use crate::wire::{ConnectionId, Frame};
use crate::{Dir, Side};

/// The event schema URI of the draft this implements (draft-ietf-quic-qlog-quic-events §2.1:
/// drafts append their number).
pub const EVENT_SCHEMA: &str = "urn:ietf:params:qlog:events:quic-13";

/// The file schema of a JSON-SEQ qlog (draft-ietf-quic-qlog-main-schema §5).
pub const FILE_SCHEMA: &str = "urn:ietf:params:qlog:file:sequential";

/// The connection's qlog, if it has one.
#[derive(Default)]
pub(crate) struct Qlog {
    inner: Option<Box<QlogStream>>,
}

impl std::fmt::Debug for Qlog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qlog")
            .field("enabled", &self.inner.is_some())
            .finish()
    }
}

impl Qlog {
    /// The stream to log to, when there is one.
    #[inline]
    pub(crate) fn on(&mut self) -> Option<&mut QlogStream> {
        self.inner.as_deref_mut()
    }

    /// Whether events are being logged.
    #[inline]
    pub(crate) fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    pub(crate) fn set(&mut self, stream: QlogStream) {
        self.inner = Some(Box::new(stream));
    }
}

/// Recovery values as last logged, to log only changes (quic-events §8.2).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Metrics {
    pub(crate) min_rtt: f64,
    pub(crate) smoothed_rtt: f64,
    pub(crate) latest_rtt: f64,
    pub(crate) rtt_variance: f64,
    pub(crate) pto_count: u32,
    pub(crate) congestion_window: u64,
    pub(crate) bytes_in_flight: u64,
    pub(crate) ssthresh: Option<u64>,
}

/// Where records go: memory until a connection is known to be worth a file, then a writer.
enum Sink {
    Memory(Vec<u8>),
    Writer(Box<dyn Write + Send>),
}

impl Sink {
    fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        match self {
            Self::Memory(v) => {
                v.extend_from_slice(b);
                Ok(())
            }
            Self::Writer(w) => w.write_all(b),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Memory(_) => Ok(()),
            Self::Writer(w) => w.flush(),
        }
    }
}

/// The JSON-SEQ writer of one connection's events.
pub(crate) struct QlogStream {
    out: Sink,
    start: Instant,
    /// The record being built (reused).
    buf: String,
    last: Metrics,
    cc_state: &'static str,
    /// The last `connection_state_updated` state ("" before the first).
    conn_state: &'static str,
    /// Set after a write error: nothing more is written.
    failed: bool,
    /// When the records were last flushed to the file.
    flushed_at: Instant,
}

/// Buffered records reach the file at least this often while the connection is active (and
/// at handshake completion and when it closes), so a live connection's trace can be read.
const FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Milliseconds as qlog `float64` (microsecond resolution).
fn ms(d: std::time::Duration) -> f64 {
    (d.as_nanos() as f64 / 1_000.0).round() / 1_000.0
}

/// A JSON string literal.
fn json_str(buf: &mut String, s: &str) {
    buf.push('"');
    for c in s.chars() {
        match c {
            '"' => buf.push_str("\\\""),
            '\\' => buf.push_str("\\\\"),
            '\n' => buf.push_str("\\n"),
            '\r' => buf.push_str("\\r"),
            '\t' => buf.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(buf, "\\u{:04x}", c as u32);
            }
            c => buf.push(c),
        }
    }
    buf.push('"');
}

fn hex(buf: &mut String, bytes: &[u8]) {
    buf.push('"');
    for b in bytes {
        let _ = write!(buf, "{b:02x}");
    }
    buf.push('"');
}

fn endpoint_info(buf: &mut String, addr: SocketAddr, cid: Option<&ConnectionId>) {
    buf.push('{');
    match addr {
        SocketAddr::V4(a) => {
            let _ = write!(buf, "\"ip_v4\":\"{}\",\"port_v4\":{}", a.ip(), a.port());
        }
        SocketAddr::V6(a) => {
            let _ = write!(buf, "\"ip_v6\":\"{}\",\"port_v6\":{}", a.ip(), a.port());
        }
    }
    if let Some(cid) = cid {
        buf.push_str(",\"connection_ids\":[");
        hex(buf, cid);
        buf.push(']');
    }
    buf.push('}');
}

/// The qlog name of a transport error code (quic-events §9.16.1, lower case), if it has one.
fn transport_error_name(code: u64) -> Option<&'static str> {
    Some(match code {
        0x00 => "no_error",
        0x01 => "internal_error",
        0x02 => "connection_refused",
        0x03 => "flow_control_error",
        0x04 => "stream_limit_error",
        0x05 => "stream_state_error",
        0x06 => "final_size_error",
        0x07 => "frame_encoding_error",
        0x08 => "transport_parameter_error",
        0x09 => "connection_id_limit_error",
        0x0a => "protocol_violation",
        0x0b => "invalid_token",
        0x0c => "application_error",
        0x0d => "crypto_buffer_exceeded",
        0x0e => "key_update_error",
        0x0f => "aead_limit_reached",
        0x10 => "no_viable_path",
        0x11 => "version_negotiation_error",
        _ => return None,
    })
}

/// `"error": ..., "error_code": ...` for a transport error code (CryptoError for TLS alerts,
/// quic-events §9.16.3).
fn transport_error(buf: &mut String, code: u64) {
    match transport_error_name(code) {
        Some(name) => {
            let _ = write!(buf, "\"error\":\"{name}\"");
        }
        None if (0x100..=0x1ff).contains(&code) => {
            let _ = write!(buf, "\"error\":\"crypto_error_{code:#x}\"");
        }
        None => {
            let _ = write!(buf, "\"error\":\"unknown\",\"error_code\":{code}");
        }
    }
}

fn stream_type(dir: Dir) -> &'static str {
    match dir {
        Dir::Bi => "bidirectional",
        Dir::Uni => "unidirectional",
    }
}

/// One frame as a qlog `QuicFrame` (quic-events §9.16). `ack_delay_exponent` scales ACK
/// delays to milliseconds (RFC 9000 §19.3: the sender's exponent).
fn frame(buf: &mut String, f: &Frame, ack_delay_exponent: u8) {
    match f {
        Frame::Padding(n) => {
            let _ = write!(
                buf,
                "{{\"frame_type\":\"padding\",\"raw\":{{\"length\":{n},\"payload_length\":{n}}}}}"
            );
        }
        Frame::Ping => buf.push_str("{\"frame_type\":\"ping\"}"),
        Frame::Ack(ack) => {
            let delay_us = ack
                .delay
                .checked_shl(u32::from(ack_delay_exponent))
                .unwrap_or(u64::MAX);
            let _ = write!(
                buf,
                "{{\"frame_type\":\"ack\",\"ack_delay\":{},\"acked_ranges\":[",
                delay_us as f64 / 1000.0
            );
            for (i, r) in ack.iter().enumerate() {
                if i > 0 {
                    buf.push(',');
                }
                if r.start() == r.end() {
                    let _ = write!(buf, "[{}]", r.start());
                } else {
                    let _ = write!(buf, "[{},{}]", r.start(), r.end());
                }
            }
            buf.push(']');
            if let Some(e) = ack.ecn {
                let _ = write!(
                    buf,
                    ",\"ect0\":{},\"ect1\":{},\"ce\":{}",
                    e.ect0, e.ect1, e.ce
                );
            }
            buf.push('}');
        }
        Frame::ResetStream {
            id,
            error_code,
            final_size,
        } => {
            let _ = write!(
                buf,
                "{{\"frame_type\":\"reset_stream\",\"stream_id\":{},\"error\":\"unknown\",\"error_code\":{},\"final_size\":{final_size}}}",
                id.0,
                error_code.into_inner()
            );
        }
        Frame::StopSending { id, error_code } => {
            let _ = write!(
                buf,
                "{{\"frame_type\":\"stop_sending\",\"stream_id\":{},\"error\":\"unknown\",\"error_code\":{}}}",
                id.0,
                error_code.into_inner()
            );
        }
        Frame::Crypto { offset, data } => {
            let _ = write!(
                buf,
                "{{\"frame_type\":\"crypto\",\"offset\":{offset},\"raw\":{{\"length\":{},\"payload_length\":{}}}}}",
                data.len(),
                data.len()
            );
        }
        Frame::NewToken(token) => {
            let _ = write!(
                buf,
                "{{\"frame_type\":\"new_token\",\"token\":{{\"raw\":{{\"length\":{}}}}}}}",
                token.len()
            );
        }
        Frame::Stream(s) => {
            let _ = write!(
                buf,
                "{{\"frame_type\":\"stream\",\"stream_id\":{},\"offset\":{},\"fin\":{},\"raw\":{{\"length\":{},\"payload_length\":{}}}}}",
                s.id.0,
                s.offset,
                s.fin,
                s.data.len(),
                s.data.len()
            );
        }
        Frame::MaxData(max) => {
            let _ = write!(buf, "{{\"frame_type\":\"max_data\",\"maximum\":{max}}}");
        }
        Frame::MaxStreamData { id, max } => {
            let _ = write!(
                buf,
                "{{\"frame_type\":\"max_stream_data\",\"stream_id\":{},\"maximum\":{max}}}",
                id.0
            );
        }
        Frame::MaxStreams { dir, count } => {
            let _ = write!(
                buf,
                "{{\"frame_type\":\"max_streams\",\"stream_type\":\"{}\",\"maximum\":{count}}}",
                stream_type(*dir)
            );
        }
        Frame::DataBlocked(limit) => {
            let _ = write!(buf, "{{\"frame_type\":\"data_blocked\",\"limit\":{limit}}}");
        }
        Frame::StreamDataBlocked { id, limit } => {
            let _ = write!(
                buf,
                "{{\"frame_type\":\"stream_data_blocked\",\"stream_id\":{},\"limit\":{limit}}}",
                id.0
            );
        }
        Frame::StreamsBlocked { dir, limit } => {
            let _ = write!(
                buf,
                "{{\"frame_type\":\"streams_blocked\",\"stream_type\":\"{}\",\"limit\":{limit}}}",
                stream_type(*dir)
            );
        }
        Frame::NewConnectionId(n) => {
            let _ = write!(
                buf,
                "{{\"frame_type\":\"new_connection_id\",\"sequence_number\":{},\"retire_prior_to\":{},\"connection_id_length\":{},\"connection_id\":",
                n.sequence,
                n.retire_prior_to,
                n.id.len()
            );
            hex(buf, &n.id);
            buf.push_str(",\"stateless_reset_token\":");
            hex(buf, &n.reset_token.0);
            buf.push('}');
        }
        Frame::RetireConnectionId { sequence } => {
            let _ = write!(
                buf,
                "{{\"frame_type\":\"retire_connection_id\",\"sequence_number\":{sequence}}}"
            );
        }
        Frame::PathChallenge(data) | Frame::PathResponse(data) => {
            let ty = if matches!(f, Frame::PathChallenge(_)) {
                "path_challenge"
            } else {
                "path_response"
            };
            let _ = write!(buf, "{{\"frame_type\":\"{ty}\",\"data\":");
            hex(buf, data);
            buf.push('}');
        }
        Frame::ConnectionClose(c) => {
            buf.push_str("{\"frame_type\":\"connection_close\",\"error_space\":\"transport\",");
            transport_error(buf, c.error_code.0);
            if c.frame_type != 0 {
                let _ = write!(buf, ",\"trigger_frame_type\":{}", c.frame_type);
            }
            buf.push_str(",\"reason\":");
            json_str(buf, &String::from_utf8_lossy(&c.reason));
            buf.push('}');
        }
        Frame::ApplicationClose(c) => {
            let _ = write!(
                buf,
                "{{\"frame_type\":\"connection_close\",\"error_space\":\"application\",\"error\":\"unknown\",\"error_code\":{},\"reason\":",
                c.error_code.into_inner()
            );
            json_str(buf, &String::from_utf8_lossy(&c.reason));
            buf.push('}');
        }
        Frame::HandshakeDone => buf.push_str("{\"frame_type\":\"handshake_done\"}"),
        Frame::Datagram(data) => {
            let _ = write!(
                buf,
                "{{\"frame_type\":\"datagram\",\"raw\":{{\"length\":{},\"payload_length\":{}}}}}",
                data.len(),
                data.len()
            );
        }
        // Frames added to the wire layer later than this mapping.
        #[allow(unreachable_patterns)]
        other => {
            let _ = write!(
                buf,
                "{{\"frame_type\":\"unknown\",\"frame_type_bytes\":{}}}",
                other.ty().0
            );
        }
    }
}

/// The frames of a packet payload, as far as they decode.
fn frames(buf: &mut String, mut payload: Bytes, ack_delay_exponent: u8) {
    buf.push_str(",\"frames\":[");
    let mut first = true;
    while !payload.is_empty() {
        let Ok(f) = Frame::decode(&mut payload) else {
            break;
        };
        if !first {
            buf.push(',');
        }
        first = false;
        frame(buf, &f, ack_delay_exponent);
    }
    buf.push(']');
}

impl QlogStream {
    /// A trace for the connection whose original Destination Connection ID is `odcid`,
    /// seen from `side`; writes the `QlogFileSeq` header to `out`.
    pub(crate) fn new(
        out: Box<dyn Write + Send>,
        now: Instant,
        side: Side,
        odcid: &ConnectionId,
    ) -> Self {
        Self::with_sink(Sink::Writer(out), now, side, odcid)
    }

    /// A trace kept in memory until [`QlogStream::redirect`]: a server does not create a file
    /// for a connection before a packet of it authenticates.
    pub(crate) fn buffered(now: Instant, side: Side, odcid: &ConnectionId) -> Self {
        Self::with_sink(Sink::Memory(Vec::new()), now, side, odcid)
    }

    fn with_sink(out: Sink, now: Instant, side: Side, odcid: &ConnectionId) -> Self {
        let mut s = Self {
            out,
            start: now,
            buf: String::with_capacity(512),
            last: Metrics::default(),
            cc_state: "",
            conn_state: "",
            failed: false,
            flushed_at: now,
        };
        let side = if side.is_client() { "client" } else { "server" };
        s.buf.push('\u{1e}');
        let _ = write!(
            s.buf,
            "{{\"file_schema\":\"{FILE_SCHEMA}\",\"serialization_format\":\"application/qlog+json-seq\",\"title\":\"gquic {side} "
        );
        for b in odcid.iter() {
            let _ = write!(s.buf, "{b:02x}");
        }
        s.buf
            .push_str("\",\"trace\":{\"common_fields\":{\"group_id\":");
        hex(&mut s.buf, odcid);
        let _ = writeln!(
            s.buf,
            ",\"time_format\":\"relative_to_epoch\",\"reference_time\":{{\"clock_type\":\"monotonic\",\"epoch\":\"unknown\"}}}},\"vantage_point\":{{\"name\":\"gquic\",\"type\":\"{side}\"}},\"event_schemas\":[\"{EVENT_SCHEMA}\"]}}}}"
        );
        s.write_record();
        s
    }

    /// Moves the trace to `out`, with what was kept in memory so far.
    pub(crate) fn redirect(&mut self, mut out: Box<dyn Write + Send>) {
        if let Sink::Memory(v) = &self.out {
            if out.write_all(v).is_err() {
                self.failed = true;
            }
        }
        self.out = Sink::Writer(out);
    }

    fn write_record(&mut self) {
        if !self.failed && self.out.write_all(self.buf.as_bytes()).is_err() {
            tracing::warn!("qlog write failed; no more events for this connection");
            self.failed = true;
        }
        self.buf.clear();
    }

    /// Starts an event record; the caller writes the members of `data` and calls `end`.
    fn begin(&mut self, now: Instant, name: &str) {
        self.buf.clear();
        let t = ms(now.saturating_duration_since(self.start));
        let _ = write!(
            self.buf,
            "\u{1e}{{\"time\":{t},\"name\":\"quic:{name}\",\"data\":{{"
        );
    }

    fn end(&mut self) {
        self.buf.push_str("}}\n");
        self.write_record();
    }

    /// Flushes when the last flush is [`FLUSH_INTERVAL`] old.
    pub(crate) fn flush_if_due(&mut self, now: Instant) {
        if now.saturating_duration_since(self.flushed_at) >= FLUSH_INTERVAL {
            self.flushed_at = now;
            self.flush();
        }
    }

    /// Writes buffered records out.
    pub(crate) fn flush(&mut self) {
        if !self.failed && self.out.flush().is_err() {
            self.failed = true;
        }
    }

    /// `quic:connection_started` (quic-events §5.2).
    pub(crate) fn connection_started(
        &mut self,
        now: Instant,
        local: Option<SocketAddr>,
        local_cid: &ConnectionId,
        remote: SocketAddr,
        remote_cid: &ConnectionId,
    ) {
        self.begin(now, "connection_started");
        if let Some(local) = local {
            self.buf.push_str("\"local\":");
            endpoint_info(&mut self.buf, local, Some(local_cid));
        } else {
            self.buf.push_str("\"local\":{\"connection_ids\":[");
            hex(&mut self.buf, local_cid);
            self.buf.push_str("]}");
        }
        self.buf.push_str(",\"remote\":");
        endpoint_info(&mut self.buf, remote, Some(remote_cid));
        self.end();
    }

    /// `quic:connection_closed` (quic-events §5.3). `local_app` is the code and reason of
    /// an application close we initiated.
    pub(crate) fn connection_closed(
        &mut self,
        now: Instant,
        error: &ConnectionError,
        local_app: Option<(u64, &[u8])>,
    ) {
        self.begin(now, "connection_closed");
        let b = &mut self.buf;
        match error {
            ConnectionError::LocallyClosed => {
                b.push_str("\"initiator\":\"local\",\"trigger\":\"application\"");
                if let Some((code, reason)) = local_app {
                    let _ = write!(
                        b,
                        ",\"application_error\":\"unknown\",\"error_code\":{code},\"reason\":"
                    );
                    json_str(b, &String::from_utf8_lossy(reason));
                }
            }
            ConnectionError::TransportError(e) => {
                b.push_str("\"initiator\":\"local\",\"trigger\":\"error\",\"connection_");
                transport_error(b, e.code.0);
                b.push_str(",\"reason\":");
                json_str(b, &e.reason);
            }
            ConnectionError::ConnectionClosed { code, reason, .. } => {
                b.push_str("\"initiator\":\"remote\",\"trigger\":\"error\",\"connection_");
                transport_error(b, code.0);
                b.push_str(",\"reason\":");
                json_str(b, &String::from_utf8_lossy(reason));
            }
            ConnectionError::ApplicationClosed { code, reason } => {
                let _ = write!(
                    b,
                    "\"initiator\":\"remote\",\"trigger\":\"application\",\"application_error\":\"unknown\",\"error_code\":{},\"reason\":",
                    code.into_inner()
                );
                json_str(b, &String::from_utf8_lossy(reason));
            }
            ConnectionError::TimedOut => {
                b.push_str("\"initiator\":\"local\",\"trigger\":\"idle_timeout\"");
            }
            ConnectionError::Reset => {
                b.push_str("\"initiator\":\"remote\",\"trigger\":\"stateless_reset\"");
            }
            ConnectionError::VersionMismatch => {
                b.push_str("\"initiator\":\"remote\",\"trigger\":\"version_mismatch\"");
            }
            #[allow(unreachable_patterns)]
            other => {
                b.push_str("\"trigger\":\"unspecified\",\"reason\":");
                json_str(b, &other.to_string());
            }
        }
        self.end();
        self.flush();
    }

    /// `quic:connection_state_updated` (quic-events §5.6), when `new` differs from the last
    /// state logged.
    pub(crate) fn state_updated(&mut self, now: Instant, new: &'static str) {
        if self.conn_state == new {
            return;
        }
        let old = std::mem::replace(&mut self.conn_state, new);
        self.begin(now, "connection_state_updated");
        if !old.is_empty() {
            let _ = write!(self.buf, "\"old\":\"{old}\",");
        }
        let _ = write!(self.buf, "\"new\":\"{new}\"");
        self.end();
        if new == "closed" {
            // The trace's last event: on the file now, not when the connection is dropped.
            self.flush();
        }
    }

    /// The states a packet of `packet_type` starts (quic-events §5.6): the first Initial
    /// packet sent or received, `attempted`; the first Handshake packet, `handshake_started`.
    fn packet_state(&mut self, now: Instant, packet_type: &'static str) {
        match (self.conn_state, packet_type) {
            ("", "initial") => self.state_updated(now, "attempted"),
            ("" | "attempted", "handshake") => self.state_updated(now, "handshake_started"),
            _ => {}
        }
    }

    /// `quic:packet_sent` (quic-events §6.5): the header, the datagram bytes the packet took
    /// and its frames, decoded from the plaintext payload.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn packet_sent(
        &mut self,
        now: Instant,
        packet_type: &'static str,
        pn: u64,
        size: usize,
        payload: Bytes,
        ack_delay_exponent: u8,
        mtu_probe: bool,
    ) {
        self.packet_state(now, packet_type);
        self.begin(now, "packet_sent");
        let _ = write!(
            self.buf,
            "\"header\":{{\"packet_type\":\"{packet_type}\",\"packet_number\":{pn}}},\"raw\":{{\"length\":{size},\"payload_length\":{}}}",
            payload.len()
        );
        if mtu_probe {
            self.buf.push_str(",\"is_mtu_probe_packet\":true");
        }
        frames(&mut self.buf, payload, ack_delay_exponent);
        self.end();
    }

    /// `quic:packet_received` (quic-events §6.6).
    pub(crate) fn packet_received(
        &mut self,
        now: Instant,
        packet_type: &'static str,
        pn: u64,
        payload: &Bytes,
        ack_delay_exponent: u8,
    ) {
        self.packet_state(now, packet_type);
        self.begin(now, "packet_received");
        let _ = write!(
            self.buf,
            "\"header\":{{\"packet_type\":\"{packet_type}\",\"packet_number\":{pn}}},\"raw\":{{\"payload_length\":{}}}",
            payload.len()
        );
        frames(&mut self.buf, payload.clone(), ack_delay_exponent);
        self.end();
    }

    /// `quic:packet_dropped` (quic-events §6.7), with the packet type when the header said
    /// it and the packet number when it was decrypted.
    pub(crate) fn packet_dropped(
        &mut self,
        now: Instant,
        packet_type: Option<&'static str>,
        pn: Option<u64>,
        trigger: &'static str,
    ) {
        self.begin(now, "packet_dropped");
        if let Some(ty) = packet_type {
            let _ = write!(self.buf, "\"header\":{{\"packet_type\":\"{ty}\"");
            if let Some(pn) = pn {
                let _ = write!(self.buf, ",\"packet_number\":{pn}");
            }
            self.buf.push_str("},");
        }
        let _ = write!(self.buf, "\"trigger\":\"{trigger}\"");
        self.end();
    }

    /// `quic:packet_lost` (quic-events §8.4).
    pub(crate) fn packet_lost(&mut self, now: Instant, packet_type: &'static str, pn: u64) {
        self.begin(now, "packet_lost");
        let _ = write!(
            self.buf,
            "\"header\":{{\"packet_type\":\"{packet_type}\",\"packet_number\":{pn}}}"
        );
        self.end();
    }

    /// `quic:key_updated` (quic-events §7.1).
    pub(crate) fn key_updated(
        &mut self,
        now: Instant,
        key_type: &'static str,
        key_phase: Option<u64>,
        trigger: &'static str,
    ) {
        self.begin(now, "key_updated");
        let _ = write!(self.buf, "\"key_type\":\"{key_type}\"");
        if let Some(p) = key_phase {
            let _ = write!(self.buf, ",\"key_phase\":{p}");
        }
        let _ = write!(self.buf, ",\"trigger\":\"{trigger}\"");
        self.end();
    }

    /// `quic:recovery_metrics_updated` with the values that changed since the last one
    /// (quic-events §8.2), and `quic:congestion_state_updated` when the controller's state
    /// changed (§8.3).
    pub(crate) fn recovery(&mut self, now: Instant, m: Metrics, cc_state: &'static str) {
        if m != self.last {
            let last = self.last;
            self.begin(now, "recovery_metrics_updated");
            let mut sep = "";
            let mut field = |buf: &mut String, name: &str, changed: bool, value: String| {
                if changed {
                    let _ = write!(buf, "{sep}\"{name}\":{value}");
                    sep = ",";
                }
            };
            let b = &mut self.buf;
            field(
                b,
                "min_rtt",
                m.min_rtt != last.min_rtt,
                m.min_rtt.to_string(),
            );
            field(
                b,
                "smoothed_rtt",
                m.smoothed_rtt != last.smoothed_rtt,
                m.smoothed_rtt.to_string(),
            );
            field(
                b,
                "latest_rtt",
                m.latest_rtt != last.latest_rtt,
                m.latest_rtt.to_string(),
            );
            field(
                b,
                "rtt_variance",
                m.rtt_variance != last.rtt_variance,
                m.rtt_variance.to_string(),
            );
            field(
                b,
                "pto_count",
                m.pto_count != last.pto_count,
                m.pto_count.to_string(),
            );
            field(
                b,
                "congestion_window",
                m.congestion_window != last.congestion_window,
                m.congestion_window.to_string(),
            );
            field(
                b,
                "bytes_in_flight",
                m.bytes_in_flight != last.bytes_in_flight,
                m.bytes_in_flight.to_string(),
            );
            if let Some(t) = m.ssthresh {
                field(b, "ssthresh", m.ssthresh != last.ssthresh, t.to_string());
            }
            self.last = m;
            self.end();
        }
        if cc_state != self.cc_state {
            self.begin(now, "congestion_state_updated");
            if !self.cc_state.is_empty() {
                let _ = write!(self.buf, "\"old\":\"{}\",", self.cc_state);
            }
            let _ = write!(self.buf, "\"new\":\"{cc_state}\"");
            self.cc_state = cc_state;
            self.end();
        }
    }
}

impl Drop for QlogStream {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Creates `<dir>/<odcid>_<side>.sqlog` (draft-ietf-quic-qlog-main-schema §10.1's naming)
/// for a new connection's trace.
#[cfg(feature = "qlog")]
pub(crate) fn open_file(
    dir: &std::path::Path,
    side: Side,
    odcid: &ConnectionId,
) -> std::io::Result<Box<dyn Write + Send>> {
    let mut name = String::with_capacity(2 * odcid.len() + 13);
    for b in odcid.iter() {
        let _ = write!(name, "{b:02x}");
    }
    name.push_str(if side.is_client() {
        "_client.sqlog"
    } else {
        "_server.sqlog"
    });
    let file = std::fs::File::create(dir.join(name))?;
    Ok(Box::new(std::io::BufWriter::with_capacity(64 * 1024, file)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A trace seen from `side` that writes into the returned sink, started now.
    fn trace(side: Side) -> (Sink, Instant, QlogStream) {
        let sink = Sink::default();
        #[allow(clippy::disallowed_methods)] // A test's clock.
        let now = Instant::now();
        let odcid = ConnectionId::new(&[0xab; 8]);
        let q = QlogStream::new(Box::new(sink.clone()), now, side, &odcid);
        (sink, now, q)
    }

    /// A state is logged once, with the one before it as `old`; the first has none.
    #[test]
    fn a_state_is_logged_once_with_the_one_before() {
        let (sink, now, mut q) = trace(Side::Client);
        for pn in 0..2 {
            let ping = Bytes::from_static(&[0x01]);
            q.packet_sent(now, "initial", pn, 1200, ping, 3, false);
        }
        q.packet_received(now, "handshake", 0, &Bytes::from_static(&[0x01]), 3);
        q.state_updated(now, "handshake_complete");
        q.state_updated(now, "handshake_complete");
        q.packet_received(now, "handshake", 1, &Bytes::from_static(&[0x01]), 3);
        q.state_updated(now, "closed");
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let states: Vec<&str> = text
            .split('\u{1e}')
            .filter(|r| r.contains("connection_state_updated"))
            .map(|r| &r[r.find("\"data\":").unwrap()..])
            .collect();
        assert_eq!(
            states,
            [
                "\"data\":{\"new\":\"attempted\"}}\n",
                "\"data\":{\"old\":\"attempted\",\"new\":\"handshake_started\"}}\n",
                "\"data\":{\"old\":\"handshake_started\",\"new\":\"handshake_complete\"}}\n",
                "\"data\":{\"old\":\"handshake_complete\",\"new\":\"closed\"}}\n",
            ]
        );
    }

    /// Every record is RS, one JSON object and LF; reasons with quotes and control
    /// characters stay valid JSON; frames decode from the payload.
    #[test]
    fn records_are_json_seq() {
        let (sink, now, mut q) = trace(Side::Server);
        // PING, 3 PADDING, ACK 0..=2 with delay 8 (exponent 3: 64 µs).
        let payload = [0x01, 0, 0, 0, 0x02, 0x02, 0x08, 0x00, 0x02];
        q.packet_sent(
            now + std::time::Duration::from_micros(1500),
            "1RTT",
            7,
            40,
            Bytes::copy_from_slice(&payload),
            3,
            false,
        );
        q.connection_closed(
            now,
            &ConnectionError::ApplicationClosed {
                code: crate::VarInt::from_u32(3),
                reason: Bytes::from_static(b"a \"quoted\"\n\x01 reason"),
            },
            None,
        );
        let out = sink.0.lock().unwrap().clone();
        let text = String::from_utf8(out).unwrap();
        let records: Vec<&str> = text.split('\u{1e}').skip(1).collect();
        assert_eq!(records.len(), 3, "{text}");
        assert!(text.starts_with('\u{1e}'));
        for r in &records {
            assert!(r.ends_with('\n'), "{r:?}");
            assert_eq!(r.matches('\n').count(), 1, "{r:?}");
        }
        assert!(records[0].contains("\"file_schema\":\"urn:ietf:params:qlog:file:sequential\""));
        assert!(records[0].contains("\"type\":\"server\""));
        assert!(records[0].contains("\"group_id\":\"abababababababab\""));
        assert!(records[1].starts_with("{\"time\":1.5,\"name\":\"quic:packet_sent\""));
        assert!(records[1].contains(
            "\"frames\":[{\"frame_type\":\"ping\"},{\"frame_type\":\"padding\",\"raw\":{\"length\":3,\"payload_length\":3}},{\"frame_type\":\"ack\",\"ack_delay\":0.064,\"acked_ranges\":[[0,2]]}]"
        ), "{}", records[1]);
        assert!(
            records[2].contains("\"reason\":\"a \\\"quoted\\\"\\n\\u0001 reason\""),
            "{}",
            records[2]
        );
    }
}
