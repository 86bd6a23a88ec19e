//! WebTransport over HTTP/3 (draft-ietf-webtrans-http3), several sessions per connection next
//! to ordinary requests.
//!
//! The wire format is the one Chromium speaks (draft-02 negotiation:
//! `SETTINGS_ENABLE_WEBTRANSPORT` 0x2b603742, extended CONNECT with `:protocol = webtransport`,
//! the `sec-webtransport-http3-draft: draft02` response header); streams and datagrams are
//! framed as the current draft describes them (§"Unidirectional streams", §"Bidirectional
//! Streams", §"Datagrams").
//!
//! How it works: with WebTransport enabled ([`crate::server::Builder::enable_webtransport`],
//! [`crate::client::Builder::enable_webtransport`]), a demultiplexer accepts every stream of
//! the connection and reads its first varint. Streams that start with a WebTransport header go
//! to their session; the others go to h3 with the bytes already read. Datagrams are routed by
//! their quarter stream ID (RFC 9297 §2.1). Streams and datagrams that arrive before their
//! session is established are buffered, within limits (§"Buffering Incoming Streams and
//! Datagrams").
//!
//! On the server, a handler for an extended CONNECT request calls [`on`] with the request's
//! extensions, answers 2xx, and gets a [`Session`] once the response is sent. On the client,
//! [`crate::client::SendRequest::webtransport`] opens one.
//!
//! Streams are the runtime's own [`SendStream`] and [`RecvStream`] (`AsyncWrite`/`AsyncRead`),
//! with the WebTransport header already written or read. Their reset and stop codes are raw
//! HTTP/3 codes; [`error_code_to_http`] maps a 32-bit WebTransport application code into the
//! range the draft reserves for it.

use std::collections::{HashMap, VecDeque};
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use gquic_transport::connection::{ConnectionError, SendDatagramError};
use gquic_transport::runtime::{self, ReadError, RecvStream, SendStream, WriteError};
use gquic_transport::VarInt;
use tokio::sync::{oneshot, Notify};

use crate::error::Kind;
use crate::Error;

/// The signal value that starts a bidirectional WebTransport stream (§"Bidirectional Streams").
const WT_STREAM: u64 = 0x41;
/// The stream type of a unidirectional WebTransport stream (§"Unidirectional streams").
const WT_UNI_STREAM: u64 = 0x54;
/// WT_CLOSE_SESSION capsule (§"Session Termination").
const WT_CLOSE_SESSION: u64 = 0x2843;
/// WT_DRAIN_SESSION capsule (§"Interaction with the HTTP/3 GOAWAY frame").
const WT_DRAIN_SESSION: u64 = 0x78ae;
/// WT_BUFFERED_STREAM_REJECTED (§"Buffering Incoming Streams and Datagrams").
const WT_BUFFERED_STREAM_REJECTED: u32 = 0x3994_bd84;
/// WT_SESSION_GONE (§"Session Termination").
const WT_SESSION_GONE: u32 = 0x170d_7b68;
/// H3_STREAM_CREATION_ERROR (RFC 9114 §8.1).
const H3_STREAM_CREATION_ERROR: u32 = 0x103;
/// H3_ID_ERROR (RFC 9114 §8.1).
const H3_ID_ERROR: u32 = 0x108;
/// H3_MESSAGE_ERROR (RFC 9114 §8.1).
const H3_MESSAGE_ERROR: u32 = 0x10e;

/// Streams buffered for sessions that are not established yet, per connection.
const MAX_BUFFERED_STREAMS: usize = 64;
/// Datagrams queued per session (the oldest is dropped beyond this).
const MAX_QUEUED_DATAGRAMS: usize = 256;
/// The longest capsule accepted on a CONNECT stream.
const MAX_CAPSULE: usize = 16 * 1024;
/// The longest close message (§"Session Termination").
const MAX_CLOSE_MESSAGE: usize = 1024;
/// How long a session closed on this side waits for the peer to finish the CONNECT stream
/// in answer before it lets go of it.
const PEER_CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// First and last HTTP/3 codes of the WebTransport application error range
/// (§"Resetting Data Streams").
const WT_APP_ERROR_FIRST: u64 = 0x52e4_a40f_a8db;

/// Maps a WebTransport application error code to the HTTP/3 error code that carries it on the
/// wire (§"Resetting Data Streams"): use it for [`SendStream::reset`] and [`RecvStream::stop`]
/// on WebTransport streams.
pub fn error_code_to_http(code: u32) -> VarInt {
    let n = u64::from(code);
    VarInt::from_u64(WT_APP_ERROR_FIRST + n + n / 0x1e).expect("below 2^62")
}

/// The WebTransport application error code an HTTP/3 error code carries, if it is in the
/// reserved range (§"Resetting Data Streams").
pub fn http_code_to_error(code: VarInt) -> Option<u32> {
    let h = code.into_inner();
    let last = 0x52e5_ac98_3162;
    if !(WT_APP_ERROR_FIRST..=last).contains(&h) || (h - 0x21) % 0x1f == 0 {
        return None;
    }
    let shifted = h - WT_APP_ERROR_FIRST;
    u32::try_from(shifted - shifted / 0x1f).ok()
}

/// Why a session is over, or why an operation on it failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The peer closed the session (a WT_CLOSE_SESSION capsule, or a FIN on the CONNECT
    /// stream, which means code 0 and no message).
    #[error("the peer closed the WebTransport session (code {code}, {reason:?})")]
    Closed {
        /// The application error code.
        code: u32,
        /// The application's message (UTF-8, at most 1024 bytes).
        reason: String,
    },
    /// This side closed the session ([`Session::close`], or every handle was dropped).
    #[error("the WebTransport session was closed locally")]
    LocallyClosed,
    /// The CONNECT stream was reset.
    #[error("the session's CONNECT stream was reset with code {0:#x}")]
    Reset(u64),
    /// The peer broke the protocol on the CONNECT stream; the stream was reset.
    #[error("the peer broke the WebTransport protocol: {0}")]
    Protocol(&'static str),
    /// The connection ended.
    #[error("the connection was lost: {0}")]
    ConnectionLost(ConnectionError),
    /// The datagram could not be sent (too large, or the peer takes none).
    #[error("datagram not sent: {0}")]
    Datagram(SendDatagramError),
    /// Writing a new stream's header failed.
    #[error("opening the stream failed: {0}")]
    Open(WriteError),
}

/// A list of tasks to wake, without duplicates.
#[derive(Default)]
struct Wakers(Vec<Waker>);

impl Wakers {
    fn register(&mut self, w: &Waker) {
        if !self.0.iter().any(|x| x.will_wake(w)) {
            self.0.push(w.clone());
        }
    }

    fn wake(&mut self) {
        for w in self.0.drain(..) {
            w.wake();
        }
    }
}

/// What one session (or a session not yet established) has waiting.
#[derive(Default)]
struct Slot {
    /// The session has been accepted (server: the 2xx was sent; client: received).
    active: bool,
    /// WT_DRAIN_SESSION was sent or received: the application should wrap up.
    draining: bool,
    closed: Option<SessionError>,
    bi: VecDeque<(SendStream, RecvStream)>,
    uni: VecDeque<RecvStream>,
    datagrams: VecDeque<Bytes>,
    bi_wakers: Wakers,
    uni_wakers: Wakers,
    datagram_wakers: Wakers,
    closed_wakers: Wakers,
    drain_wakers: Wakers,
}

impl Slot {
    fn wake_all(&mut self) {
        self.bi_wakers.wake();
        self.uni_wakers.wake();
        self.datagram_wakers.wake();
        self.closed_wakers.wake();
        self.drain_wakers.wake();
    }

    /// Resets every stream still queued (the session is gone or was never established).
    fn reject_streams(&mut self, code: u32) -> usize {
        let n = self.bi.len() + self.uni.len();
        for (mut s, mut r) in self.bi.drain(..) {
            let _ = s.reset(VarInt::from_u32(code));
            let _ = r.stop(VarInt::from_u32(code));
        }
        for mut r in self.uni.drain(..) {
            let _ = r.stop(VarInt::from_u32(code));
        }
        n
    }
}

#[derive(Default)]
struct State {
    /// Streams for h3, with the bytes read to classify them.
    h3_bi: VecDeque<(SendStream, RecvStream, Bytes)>,
    h3_uni: VecDeque<(RecvStream, Bytes)>,
    h3_bi_wakers: Wakers,
    h3_uni_wakers: Wakers,
    error: Option<ConnectionError>,
    sessions: HashMap<u64, Slot>,
    /// Streams queued in slots that are not active yet.
    buffered: usize,
}

struct Shared {
    conn: runtime::Connection,
    is_client: bool,
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The connection ended: everyone waiting learns why.
    fn fail(&self, e: ConnectionError) {
        let mut st = self.lock();
        st.error = Some(e.clone());
        st.h3_bi_wakers.wake();
        st.h3_uni_wakers.wake();
        for slot in st.sessions.values_mut() {
            if slot.closed.is_none() {
                slot.closed = Some(SessionError::ConnectionLost(e.clone()));
            }
            slot.wake_all();
        }
    }

    fn to_h3_bi(&self, send: SendStream, recv: RecvStream, prefix: Bytes) {
        let mut st = self.lock();
        st.h3_bi.push_back((send, recv, prefix));
        st.h3_bi_wakers.wake();
    }

    fn to_h3_uni(&self, recv: RecvStream, prefix: Bytes) {
        let mut st = self.lock();
        st.h3_uni.push_back((recv, prefix));
        st.h3_uni_wakers.wake();
    }

    /// Gives a WebTransport stream to session `id`, buffers it if the session is not
    /// established yet, or rejects it.
    fn route(&self, id: u64, stream: Incoming) {
        let mut st = self.lock();
        // Session IDs are the IDs of client-initiated bidirectional streams (the CONNECT
        // request's stream).
        let reject = if id % 4 != 0 {
            Some(H3_ID_ERROR)
        } else {
            let buffered = st.buffered;
            match st.sessions.get(&id) {
                Some(slot) if slot.closed.is_some() => Some(WT_SESSION_GONE),
                Some(slot) if slot.active => None,
                _ if buffered >= MAX_BUFFERED_STREAMS => Some(WT_BUFFERED_STREAM_REJECTED),
                _ => None,
            }
        };
        if let Some(code) = reject {
            tracing::debug!(session = id, code, "WebTransport stream rejected");
            stream.reject(code);
            return;
        }
        let slot = st.sessions.entry(id).or_default();
        let active = slot.active;
        match stream {
            Incoming::Bi(s, r) => {
                slot.bi.push_back((s, r));
                slot.bi_wakers.wake();
            }
            Incoming::Uni(r) => {
                slot.uni.push_back(r);
                slot.uni_wakers.wake();
            }
        }
        if !active {
            st.buffered += 1;
        }
    }

    /// RFC 9297 §2.1: a datagram starts with the quarter stream ID of its request.
    fn route_datagram(&self, mut d: Bytes) {
        let Some((quarter, len)) = decode_varint(&d) else {
            return;
        };
        d.advance(len);
        let Some(id) = quarter.checked_mul(4) else {
            return;
        };
        let mut st = self.lock();
        // Datagrams for unknown sessions are dropped; for sessions not yet accepted they wait.
        if let Some(slot) = st.sessions.get_mut(&id) {
            if slot.closed.is_none() {
                if slot.datagrams.len() == MAX_QUEUED_DATAGRAMS {
                    slot.datagrams.pop_front();
                }
                slot.datagrams.push_back(d);
                slot.datagram_wakers.wake();
            }
        }
    }

    /// A CONNECT request for session `id` arrived (server) or was sent (client).
    fn expect(&self, id: u64) {
        self.lock().sessions.entry(id).or_default();
    }

    /// The session was accepted: what was buffered for it is its own now.
    fn activate(&self, id: u64) {
        let mut st = self.lock();
        let error = st.error.clone();
        let slot = st.sessions.entry(id).or_default();
        if slot.active {
            return;
        }
        slot.active = true;
        let n = slot.bi.len() + slot.uni.len();
        if let Some(e) = error {
            slot.closed.get_or_insert(SessionError::ConnectionLost(e));
        }
        st.buffered -= n;
    }

    /// The CONNECT request for `id` did not become a session.
    fn abandon(&self, id: u64) {
        let mut st = self.lock();
        if let Some(mut slot) = st.sessions.remove(&id) {
            let n = slot.reject_streams(WT_SESSION_GONE);
            if !slot.active {
                st.buffered -= n;
            }
            slot.wake_all();
        }
    }

    /// The session is asked to wrap up.
    fn drain_session(&self, id: u64) {
        let mut st = self.lock();
        if let Some(slot) = st.sessions.get_mut(&id) {
            slot.draining = true;
            slot.drain_wakers.wake();
        }
    }

    /// The session ended: reset what is queued, wake everyone waiting.
    fn close_session(&self, id: u64, reason: SessionError) {
        let mut st = self.lock();
        if let Some(slot) = st.sessions.get_mut(&id) {
            slot.closed.get_or_insert(reason);
            slot.reject_streams(WT_SESSION_GONE);
            slot.datagrams.clear();
            slot.wake_all();
        }
    }
}

/// A stream with a WebTransport header, before it reaches its session.
enum Incoming {
    Bi(SendStream, RecvStream),
    Uni(RecvStream),
}

impl Incoming {
    fn reject(self, code: u32) {
        let code = VarInt::from_u32(code);
        match self {
            Incoming::Bi(mut s, mut r) => {
                let _ = s.reset(code);
                let _ = r.stop(code);
            }
            Incoming::Uni(mut r) => {
                let _ = r.stop(code);
            }
        }
    }
}

/// The demultiplexer of one connection (see the module docs). h3 takes its streams from it
/// through [`gquic_transport::h3::StreamSource`]; sessions keep it alive. When the last
/// handle goes, the accept task stops.
pub(crate) struct Demux {
    shared: Arc<Shared>,
    stop: Arc<Notify>,
}

impl Drop for Demux {
    fn drop(&mut self) {
        self.stop.notify_one();
    }
}

impl Demux {
    /// Starts demultiplexing `conn` on a tokio task.
    pub(crate) fn start(conn: runtime::Connection, is_client: bool) -> Arc<Self> {
        let shared = Arc::new(Shared {
            conn,
            is_client,
            state: Mutex::new(State::default()),
        });
        let stop = Arc::new(Notify::new());
        tokio::spawn(accept_loop(shared.clone(), stop.clone()));
        Arc::new(Self { shared, stop })
    }

    pub(crate) fn expect(&self, id: u64) {
        self.shared.expect(id);
    }

    pub(crate) fn abandon(&self, id: u64) {
        self.shared.abandon(id);
    }
}

impl gquic_transport::h3::StreamSource for Demux {
    fn poll_accept_bi(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(SendStream, RecvStream, Bytes), ConnectionError>> {
        let mut st = self.shared.lock();
        if let Some(s) = st.h3_bi.pop_front() {
            return Poll::Ready(Ok(s));
        }
        if let Some(e) = &st.error {
            return Poll::Ready(Err(e.clone()));
        }
        st.h3_bi_wakers.register(cx.waker());
        Poll::Pending
    }

    fn poll_accept_uni(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(RecvStream, Bytes), ConnectionError>> {
        let mut st = self.shared.lock();
        if let Some(s) = st.h3_uni.pop_front() {
            return Poll::Ready(Ok(s));
        }
        if let Some(e) = &st.error {
            return Poll::Ready(Err(e.clone()));
        }
        st.h3_uni_wakers.register(cx.waker());
        Poll::Pending
    }
}

async fn accept_loop(shared: Arc<Shared>, stop: Arc<Notify>) {
    let conn = shared.conn.clone();
    let span = tracing::debug_span!("webtransport_demux", conn = conn.stable_id());
    let error = loop {
        tokio::select! {
            r = conn.accept_bi() => match r {
                Ok((s, r)) => {
                    tokio::spawn(classify_bi(shared.clone(), s, r));
                }
                Err(e) => break e,
            },
            r = conn.accept_uni() => match r {
                Ok(r) => {
                    tokio::spawn(classify_uni(shared.clone(), r));
                }
                Err(e) => break e,
            },
            r = conn.read_datagram() => match r {
                Ok(d) => shared.route_datagram(d),
                Err(e) => break e,
            },
            () = stop.notified() => {
                tracing::trace!(parent: &span, "no handle left: demultiplexer stops");
                return;
            }
        }
    };
    tracing::trace!(parent: &span, error = %error, "connection ended");
    shared.fail(error);
}

/// Reads exactly `n` bytes into `raw`; `false` if the stream ended first.
async fn read_exact(
    recv: &mut RecvStream,
    n: usize,
    raw: &mut BytesMut,
) -> Result<bool, ReadError> {
    let mut got = 0;
    while got < n {
        match recv.read_chunk(n - got).await? {
            Some(b) => {
                got += b.len();
                raw.extend_from_slice(&b);
            }
            None => return Ok(false),
        }
    }
    Ok(true)
}

/// Reads one varint (RFC 9000 §16) byte-exactly, keeping the raw bytes; `None` if the stream
/// ended first.
async fn read_varint(recv: &mut RecvStream, raw: &mut BytesMut) -> Result<Option<u64>, ReadError> {
    let start = raw.len();
    if !read_exact(recv, 1, raw).await? {
        return Ok(None);
    }
    let len = 1usize << (raw[start] >> 6);
    if !read_exact(recv, len - 1, raw).await? {
        return Ok(None);
    }
    Ok(decode_varint(&raw[start..]).map(|(v, _)| v))
}

fn decode_varint(b: &[u8]) -> Option<(u64, usize)> {
    let first = *b.first()?;
    let len = 1usize << (first >> 6);
    let bytes = b.get(..len)?;
    let mut v = u64::from(first & 0x3f);
    for &x in &bytes[1..] {
        v = (v << 8) | u64::from(x);
    }
    Some((v, len))
}

fn put_varint(buf: &mut BytesMut, v: u64) {
    match v {
        0..=0x3f => buf.put_u8(v as u8),
        0x40..=0x3fff => buf.put_u16(0x4000 | v as u16),
        0x4000..=0x3fff_ffff => buf.put_u32(0x8000_0000 | v as u32),
        _ => buf.put_u64(0xc000_0000_0000_0000 | v),
    }
}

async fn classify_bi(shared: Arc<Shared>, mut send: SendStream, mut recv: RecvStream) {
    let mut raw = BytesMut::new();
    match read_varint(&mut recv, &mut raw).await {
        Ok(Some(WT_STREAM)) => match read_varint(&mut recv, &mut raw).await {
            Ok(Some(id)) => shared.route(id, Incoming::Bi(send, recv)),
            _ => Incoming::Bi(send, recv).reject(H3_MESSAGE_ERROR),
        },
        // RFC 9114 §6.1: servers do not open request streams.
        _ if shared.is_client => {
            let _ = send.reset(VarInt::from_u32(H3_STREAM_CREATION_ERROR));
            let _ = recv.stop(VarInt::from_u32(H3_STREAM_CREATION_ERROR));
        }
        // A request (or a stream that failed early: h3 sees the error itself).
        _ => shared.to_h3_bi(send, recv, raw.freeze()),
    }
}

async fn classify_uni(shared: Arc<Shared>, mut recv: RecvStream) {
    let mut raw = BytesMut::new();
    match read_varint(&mut recv, &mut raw).await {
        Ok(Some(WT_UNI_STREAM)) => match read_varint(&mut recv, &mut raw).await {
            Ok(Some(id)) => shared.route(id, Incoming::Uni(recv)),
            _ => Incoming::Uni(recv).reject(H3_MESSAGE_ERROR),
        },
        _ => shared.to_h3_uni(recv, raw.freeze()),
    }
}

type ServerSend = h3::server::RequestStream<gquic_transport::h3::SendStream<Bytes>, Bytes>;
type ServerRecv = h3::server::RequestStream<gquic_transport::h3::RecvStream, Bytes>;
type ClientSend = h3::client::RequestStream<gquic_transport::h3::SendStream<Bytes>, Bytes>;
type ClientRecv = h3::client::RequestStream<gquic_transport::h3::RecvStream, Bytes>;

/// The sending half of a CONNECT stream.
pub(crate) enum ConnectSend {
    Server(ServerSend),
    Client(ClientSend),
}

/// The receiving half of a CONNECT stream.
pub(crate) enum ConnectRecv {
    Server(ServerRecv),
    Client(ClientRecv),
}

impl ConnectSend {
    async fn send(&mut self, data: Bytes) -> Result<(), h3::error::StreamError> {
        match self {
            ConnectSend::Server(s) => s.send_data(data).await,
            ConnectSend::Client(s) => s.send_data(data).await,
        }
    }

    async fn finish(&mut self) -> Result<(), h3::error::StreamError> {
        match self {
            ConnectSend::Server(s) => s.finish().await,
            ConnectSend::Client(s) => s.finish().await,
        }
    }

    fn reset(&mut self, code: u32) {
        let code = h3::error::Code::from(u64::from(code));
        match self {
            ConnectSend::Server(s) => s.stop_stream(code),
            ConnectSend::Client(s) => s.stop_stream(code),
        }
    }
}

impl ConnectRecv {
    fn poll_recv(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Bytes>, h3::error::StreamError>> {
        match self {
            ConnectRecv::Server(r) => r
                .poll_recv_data(cx)
                .map_ok(|o| o.map(|mut b| b.copy_to_bytes(b.remaining()))),
            ConnectRecv::Client(r) => r
                .poll_recv_data(cx)
                .map_ok(|o| o.map(|mut b| b.copy_to_bytes(b.remaining()))),
        }
    }

    fn stop(&mut self, code: u32) {
        let code = h3::error::Code::from(u64::from(code));
        match self {
            ConnectRecv::Server(r) => r.stop_sending(code),
            ConnectRecv::Client(r) => r.stop_sending(code),
        }
    }
}

/// What the CONNECT stream said.
enum Capsules {
    /// Nothing conclusive yet.
    More,
    /// WT_CLOSE_SESSION.
    Close(u32, String),
}

/// Parses the capsules (RFC 9297 §3.2) at the front of `buf`, consuming the complete ones;
/// sets `drain` on WT_DRAIN_SESSION.
fn parse_capsules(buf: &mut BytesMut, drain: &mut bool) -> Result<Capsules, &'static str> {
    loop {
        let Some((ty, a)) = decode_varint(buf) else {
            return Ok(Capsules::More);
        };
        let Some((len, b)) = decode_varint(&buf[a..]) else {
            return Ok(Capsules::More);
        };
        let len = usize::try_from(len).map_err(|_| "capsule too long")?;
        if len > MAX_CAPSULE {
            return Err("capsule too long");
        }
        if buf.len() < a + b + len {
            return Ok(Capsules::More);
        }
        buf.advance(a + b);
        let payload = buf.split_to(len).freeze();
        match ty {
            WT_CLOSE_SESSION => {
                if payload.len() < 4 || payload.len() - 4 > MAX_CLOSE_MESSAGE {
                    return Err("malformed WT_CLOSE_SESSION capsule");
                }
                let code = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
                let reason = std::str::from_utf8(&payload[4..])
                    .map_err(|_| "WT_CLOSE_SESSION message is not UTF-8")?
                    .to_owned();
                return Ok(Capsules::Close(code, reason));
            }
            WT_DRAIN_SESSION => *drain = true,
            // RFC 9297 §3.2: unknown capsule types are skipped.
            _ => {}
        }
    }
}

/// What a server session holds: its share of the in-flight count, and the shutdown signal.
pub(crate) type ServerDrain = (
    Box<dyn std::any::Any + Send>,
    tokio::sync::watch::Receiver<bool>,
);

/// Owns the CONNECT stream for the life of the session.
async fn session_task(
    id: u64,
    demux: Arc<Demux>,
    mut send: ConnectSend,
    mut recv: ConnectRecv,
    mut close_rx: oneshot::Receiver<(u32, String)>,
    server_drain: Option<ServerDrain>,
) {
    let (_in_flight, mut shutdown) = match server_drain {
        Some((guard, rx)) => (Some(guard), Some(rx)),
        None => (None, None),
    };
    let mut buf = BytesMut::new();
    let reason = loop {
        tokio::select! {
            // The server is shutting down: WT_DRAIN_SESSION, once
            // (§"Interaction with the HTTP/3 GOAWAY frame").
            changed = async { shutdown.as_mut().expect("guarded").wait_for(|d| *d).await.is_ok() },
                if shutdown.is_some() => {
                shutdown = None;
                if changed {
                    demux.shared.drain_session(id);
                    let mut capsule = BytesMut::new();
                    put_varint(&mut capsule, WT_DRAIN_SESSION);
                    put_varint(&mut capsule, 0);
                    let _ = send.send(capsule.freeze()).await;
                }
            }
            data = poll_fn(|cx| recv.poll_recv(cx)) => match data {
                Ok(Some(b)) => {
                    buf.extend_from_slice(&b);
                    let mut drain = false;
                    let parsed = parse_capsules(&mut buf, &mut drain);
                    if drain {
                        demux.shared.drain_session(id);
                    }
                    match parsed {
                        Ok(Capsules::More) => {}
                        Ok(Capsules::Close(code, reason)) => {
                            // The peer FINs next; anything else it sends is an error we need
                            // not read.
                            recv.stop(WT_SESSION_GONE);
                            break SessionError::Closed { code, reason };
                        }
                        Err(what) => {
                            recv.stop(H3_MESSAGE_ERROR);
                            send.reset(H3_MESSAGE_ERROR);
                            break SessionError::Protocol(what);
                        }
                    }
                }
                // A clean FIN is a close with code 0 and no message.
                Ok(None) => break SessionError::Closed { code: 0, reason: String::new() },
                Err(e) => break stream_error(&demux, &e),
            },
            close = &mut close_rx => {
                if let Ok((code, reason)) = close {
                    let mut capsule = BytesMut::new();
                    put_varint(&mut capsule, WT_CLOSE_SESSION);
                    put_varint(&mut capsule, 4 + reason.len() as u64);
                    capsule.put_u32(code);
                    capsule.put_slice(reason.as_bytes());
                    let _ = send.send(capsule.freeze()).await;
                }
                let _ = send.finish().await;
                demux.shared.close_session(id, SessionError::LocallyClosed);
                // The peer answers the close by finishing its side (§"Session Termination").
                // Until it has, the session is still in flight: a server shutting down
                // gracefully that closed the connection now could cut off the capsule before
                // the peer's application read it. Bounded, in case the peer never answers.
                let _ = tokio::time::timeout(PEER_CLOSE_WAIT, async {
                    while let Ok(Some(_)) = poll_fn(|cx| recv.poll_recv(cx)).await {}
                })
                .await;
                break SessionError::LocallyClosed;
            }
        }
    };
    tracing::debug!(session = id, %reason, "WebTransport session ended");
    demux.shared.close_session(id, reason.clone());
    if matches!(reason, SessionError::Closed { .. }) {
        // §"Session Termination": the recipient closes the CONNECT stream in response.
        let _ = send.finish().await;
    }
}

fn stream_error(demux: &Demux, e: &h3::error::StreamError) -> SessionError {
    if let Some(err) = demux.shared.conn.close_reason() {
        return SessionError::ConnectionLost(err);
    }
    match e {
        h3::error::StreamError::RemoteTerminate { code, .. } => SessionError::Reset(code.value()),
        _ => SessionError::Protocol("the CONNECT stream failed"),
    }
}

struct SessionInner {
    id: u64,
    demux: Arc<Demux>,
    close_tx: Mutex<Option<oneshot::Sender<(u32, String)>>>,
    /// What keeps the HTTP/3 connection open while the session lives (on the client, a
    /// request sender: h3 closes the connection when the last one is dropped).
    _keep_alive: Option<Box<dyn std::any::Any + Send + Sync>>,
}

/// A WebTransport session: streams and datagrams multiplexed on an HTTP/3 connection, next
/// to other sessions and requests.
///
/// Cheap to clone. When the last clone is dropped the session is closed (code 0).
#[derive(Clone)]
pub struct Session {
    inner: Arc<SessionInner>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.inner.id)
            .finish()
    }
}

impl Session {
    /// Starts the session on its CONNECT stream, after the 2xx response.
    /// `server_drain`: held for the session's life (the server's in-flight count) and the
    /// signal that the server is shutting down.
    pub(crate) fn start(
        id: u64,
        demux: Arc<Demux>,
        send: ConnectSend,
        recv: ConnectRecv,
        keep_alive: Option<Box<dyn std::any::Any + Send + Sync>>,
        server_drain: Option<ServerDrain>,
    ) -> Self {
        demux.shared.activate(id);
        let (close_tx, close_rx) = oneshot::channel();
        tokio::spawn(session_task(
            id,
            demux.clone(),
            send,
            recv,
            close_rx,
            server_drain,
        ));
        Self {
            inner: Arc::new(SessionInner {
                id,
                demux,
                close_tx: Mutex::new(Some(close_tx)),
                _keep_alive: keep_alive,
            }),
        }
    }

    /// The session ID: the stream ID of its CONNECT request.
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// The peer's address.
    pub fn remote_address(&self) -> SocketAddr {
        self.inner.demux.shared.conn.remote_address()
    }

    fn poll_slot<T>(
        &self,
        cx: &mut Context<'_>,
        take: impl FnOnce(&mut Slot) -> Option<T>,
        wakers: impl FnOnce(&mut Slot) -> &mut Wakers,
    ) -> Poll<Result<T, SessionError>> {
        let mut st = self.inner.demux.shared.lock();
        let Some(slot) = st.sessions.get_mut(&self.inner.id) else {
            return Poll::Ready(Err(SessionError::LocallyClosed));
        };
        if let Some(t) = take(slot) {
            return Poll::Ready(Ok(t));
        }
        if let Some(e) = &slot.closed {
            return Poll::Ready(Err(e.clone()));
        }
        wakers(slot).register(cx.waker());
        Poll::Pending
    }

    /// Waits for the peer's next bidirectional stream in this session.
    ///
    /// # Errors
    /// Once the session is over, why.
    ///
    /// # Cancel safety
    /// Cancel safe: a stream is taken only when this returns it.
    pub async fn accept_bi(&self) -> Result<(SendStream, RecvStream), SessionError> {
        poll_fn(|cx| self.poll_slot(cx, |s| s.bi.pop_front(), |s| &mut s.bi_wakers)).await
    }

    /// Waits for the peer's next unidirectional stream in this session.
    ///
    /// # Errors
    /// Once the session is over, why.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn accept_uni(&self) -> Result<RecvStream, SessionError> {
        poll_fn(|cx| self.poll_slot(cx, |s| s.uni.pop_front(), |s| &mut s.uni_wakers)).await
    }

    /// Waits for the next datagram of this session.
    ///
    /// # Errors
    /// Once the session is over, why.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn read_datagram(&self) -> Result<Bytes, SessionError> {
        poll_fn(|cx| self.poll_slot(cx, |s| s.datagrams.pop_front(), |s| &mut s.datagram_wakers))
            .await
    }

    fn check_open(&self) -> Result<(), SessionError> {
        let st = self.inner.demux.shared.lock();
        match st.sessions.get(&self.inner.id) {
            Some(slot) => match &slot.closed {
                Some(e) => Err(e.clone()),
                None => Ok(()),
            },
            None => Err(SessionError::LocallyClosed),
        }
    }

    fn header(&self, ty: u64) -> Bytes {
        let mut h = BytesMut::with_capacity(10);
        put_varint(&mut h, ty);
        put_varint(&mut h, self.inner.id);
        h.freeze()
    }

    /// Opens a bidirectional stream in this session (its header is written before this
    /// returns, so the peer sees the stream).
    ///
    /// # Errors
    /// If the session is over or the connection failed.
    pub async fn open_bi(&self) -> Result<(SendStream, RecvStream), SessionError> {
        self.check_open()?;
        let (mut send, recv) = self
            .inner
            .demux
            .shared
            .conn
            .open_bi()
            .await
            .map_err(SessionError::ConnectionLost)?;
        send.write_chunk(self.header(WT_STREAM))
            .await
            .map_err(SessionError::Open)?;
        Ok((send, recv))
    }

    /// Opens a unidirectional stream in this session (header written before this returns).
    ///
    /// # Errors
    /// If the session is over or the connection failed.
    pub async fn open_uni(&self) -> Result<SendStream, SessionError> {
        self.check_open()?;
        let mut send = self
            .inner
            .demux
            .shared
            .conn
            .open_uni()
            .await
            .map_err(SessionError::ConnectionLost)?;
        send.write_chunk(self.header(WT_UNI_STREAM))
            .await
            .map_err(SessionError::Open)?;
        Ok(send)
    }

    /// Sends an unreliable datagram in this session (RFC 9297 §2.1 framing). It must fit
    /// [`Session::max_datagram_size`].
    ///
    /// # Errors
    /// If the session is over, or the datagram is too large or not accepted by the peer.
    pub fn send_datagram(&self, data: Bytes) -> Result<(), SessionError> {
        self.check_open()?;
        let mut d = BytesMut::with_capacity(8 + data.len());
        put_varint(&mut d, self.inner.id / 4);
        d.put_slice(&data);
        self.inner
            .demux
            .shared
            .conn
            .send_datagram(d.freeze())
            .map_err(SessionError::Datagram)
    }

    /// The largest datagram payload [`Session::send_datagram`] can send now, or `None` if the
    /// peer takes no datagrams.
    pub fn max_datagram_size(&self) -> Option<usize> {
        let mut h = BytesMut::new();
        put_varint(&mut h, self.inner.id / 4);
        self.inner
            .demux
            .shared
            .conn
            .max_datagram_size()
            .map(|m| m.saturating_sub(h.len()))
    }

    /// Closes the session with an application error code and message (WT_CLOSE_SESSION),
    /// then FIN on the CONNECT stream. A message longer than 1024 bytes is truncated at a
    /// character boundary.
    pub fn close(&self, code: u32, reason: &str) {
        let mut end = reason.len().min(MAX_CLOSE_MESSAGE);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let tx = self
            .inner
            .close_tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(tx) = tx {
            let _ = tx.send((code, reason[..end].to_owned()));
        }
    }

    /// Resolves when the session should wrap up: the peer sent WT_DRAIN_SESSION, or (on a
    /// server) a graceful shutdown began, which waits for the session to end. Also resolves
    /// once the session is over.
    pub async fn draining(&self) {
        poll_fn(|cx| {
            let mut st = self.inner.demux.shared.lock();
            match st.sessions.get_mut(&self.inner.id) {
                Some(slot) if !slot.draining && slot.closed.is_none() => {
                    slot.drain_wakers.register(cx.waker());
                    Poll::Pending
                }
                _ => Poll::Ready(()),
            }
        })
        .await;
    }

    /// Waits until the session is over, and says why.
    pub async fn closed(&self) -> SessionError {
        match poll_fn(|cx| self.poll_slot(cx, |_| None::<()>, |s| &mut s.closed_wakers)).await {
            Err(e) => e,
            Ok(()) => SessionError::LocallyClosed,
        }
    }
}

/// Where a claimed session arrives once the response is sent.
pub(crate) type SessionReceiver = oneshot::Receiver<Result<Session, Error>>;

/// A pending session on the server, in the extensions of an extended CONNECT request with
/// `:protocol = webtransport` when WebTransport is enabled. Take it with [`on`].
#[derive(Clone)]
pub struct PendingSession {
    pub(crate) id: u64,
    pub(crate) rx: Arc<Mutex<Option<SessionReceiver>>>,
}

impl std::fmt::Debug for PendingSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingSession")
            .field("id", &self.id)
            .finish()
    }
}

impl PendingSession {
    /// The ID the session will have.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Whether a handler has claimed the session (see [`on`]).
    pub(crate) fn claimed(&self) -> bool {
        self.rx.lock().unwrap_or_else(|e| e.into_inner()).is_none()
    }
}

/// Resolves to the [`Session`] once the server has sent its 2xx response to the CONNECT
/// request (see [`on`]).
#[must_use = "futures do nothing unless polled"]
pub struct OnSession {
    rx: oneshot::Receiver<Result<Session, Error>>,
}

impl std::fmt::Debug for OnSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnSession")
    }
}

impl Future for OnSession {
    type Output = Result<Session, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx).poll(cx).map(|r| match r {
            Ok(r) => r,
            Err(_) => Err(Error::new(
                Kind::Connection,
                "the CONNECT request ended without a WebTransport session (the response was not 2xx, or the connection closed)",
            )),
        })
    }
}

/// Claims the WebTransport session of an extended CONNECT request, like
/// `hyper::upgrade::on`: pass the request's extensions, answer the request with a 2xx
/// response, and the returned future resolves to the [`Session`] once that response is sent.
///
/// `None` if the request is not a WebTransport CONNECT on a server with WebTransport enabled
/// ([`crate::server::Builder::enable_webtransport`]), or if the session was already claimed.
pub fn on(extensions: &mut http::Extensions) -> Option<OnSession> {
    let pending = extensions.get::<PendingSession>()?;
    let rx = pending
        .rx
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()?;
    Some(OnSession { rx })
}

/// Entry points for `fuzz/` (feature `fuzzing`): the CONNECT-stream decoder on raw bytes.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    use super::*;

    /// Feeds `data` to the capsule parser whole and in two pieces (split where the first
    /// byte says); both must agree, and a parsed close must respect the draft's limits.
    pub fn capsules(data: &[u8]) {
        let whole = parse_capsules(&mut BytesMut::from(data), &mut false);
        let split = data
            .first()
            .map_or(0, |b| usize::from(*b) % (data.len() + 1));
        let mut buf = BytesMut::from(&data[..split]);
        let mut first = parse_capsules(&mut buf, &mut false);
        if matches!(first, Ok(Capsules::More)) {
            buf.extend_from_slice(&data[split..]);
            first = parse_capsules(&mut buf, &mut false);
        }
        match (&whole, &first) {
            (Ok(Capsules::Close(c1, r1)), Ok(Capsules::Close(c2, r2))) => {
                assert_eq!((c1, r1), (c2, r2));
                assert!(r1.len() <= MAX_CLOSE_MESSAGE);
            }
            (Ok(Capsules::More), Ok(Capsules::More)) | (Err(_), Err(_)) => {}
            _ => panic!("whole and split parses disagree"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// One capsule on the wire: (type, payload).
    fn encode(capsules: &[(u64, Vec<u8>)]) -> BytesMut {
        let mut buf = BytesMut::new();
        for (ty, payload) in capsules {
            put_varint(&mut buf, *ty);
            put_varint(&mut buf, payload.len() as u64);
            buf.put_slice(payload);
        }
        buf
    }

    proptest! {
        /// Any sequence of unknown capsules followed by a close parses to that close,
        /// however the bytes are split.
        #[test]
        fn close_after_unknown_capsules_survives_any_split(
            others in proptest::collection::vec((0u64..0x2800, proptest::collection::vec(any::<u8>(), 0..64)), 0..6),
            code in any::<u32>(),
            reason in "[a-zA-Z0-9 é]{0,60}",
            split in any::<usize>(),
        ) {
            let mut all: Vec<(u64, Vec<u8>)> = others
                .into_iter()
                .filter(|(t, _)| *t != WT_CLOSE_SESSION)
                .collect();
            let mut close = code.to_be_bytes().to_vec();
            close.extend_from_slice(reason.as_bytes());
            all.push((WT_CLOSE_SESSION, close));
            let wire = encode(&all);
            let split = split % (wire.len() + 1);
            let mut buf = BytesMut::from(&wire[..split]);
            let first = parse_capsules(&mut buf, &mut false).unwrap();
            let result = match first {
                Capsules::Close(c, r) => (c, r),
                Capsules::More => {
                    buf.extend_from_slice(&wire[split..]);
                    match parse_capsules(&mut buf, &mut false).unwrap() {
                        Capsules::Close(c, r) => (c, r),
                        Capsules::More => panic!("complete close not parsed"),
                    }
                }
            };
            prop_assert_eq!(result, (code, reason));
        }

        /// Arbitrary bytes never panic the parser and never yield an oversized message.
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(Capsules::Close(_, r)) = parse_capsules(&mut BytesMut::from(&data[..]), &mut false) {
                prop_assert!(r.len() <= MAX_CLOSE_MESSAGE);
            }
        }
    }

    #[test]
    fn error_codes_round_trip_and_skip_reserved() {
        // §"Resetting Data Streams": 0 maps to the first code, u32::MAX to the last.
        assert_eq!(error_code_to_http(0).into_inner(), 0x52e4_a40f_a8db);
        assert_eq!(error_code_to_http(u32::MAX).into_inner(), 0x52e5_ac98_3162);
        for n in [0u32, 1, 0x1d, 0x1e, 0x1f, 1000, 123_456_789, u32::MAX] {
            let h = error_code_to_http(n);
            assert_ne!(
                (h.into_inner() - 0x21) % 0x1f,
                0,
                "{n} maps onto a reserved code"
            );
            assert_eq!(http_code_to_error(h), Some(n));
        }
        assert_eq!(http_code_to_error(VarInt::from_u32(0x100)), None);
    }

    #[test]
    fn capsules_parse_close_skip_unknown_and_reject_garbage() {
        let mut buf = BytesMut::new();
        // WT_DRAIN_SESSION, an unknown capsule, then WT_CLOSE_SESSION (code 7, "bye").
        put_varint(&mut buf, WT_DRAIN_SESSION);
        put_varint(&mut buf, 0);
        put_varint(&mut buf, 0x1234);
        put_varint(&mut buf, 2);
        buf.put_slice(b"xx");
        put_varint(&mut buf, WT_CLOSE_SESSION);
        put_varint(&mut buf, 7);
        buf.put_u32(7);
        buf.put_slice(b"bye");
        // Fed one byte at a time it only completes at the end.
        let mut feed = BytesMut::new();
        let mut drained = false;
        for (i, b) in buf.iter().enumerate() {
            feed.put_u8(*b);
            let parsed = parse_capsules(&mut feed, &mut drained).expect("well formed");
            // The drain capsule is 5 bytes (a 4-byte type, a 1-byte length).
            assert_eq!(drained, i >= 4, "drain seen at byte {i}");
            match parsed {
                Capsules::More => assert!(i + 1 < buf.len()),
                Capsules::Close(code, reason) => {
                    assert_eq!(i + 1, buf.len());
                    assert_eq!((code, reason.as_str()), (7, "bye"));
                }
            }
        }
        let mut bad = BytesMut::new();
        put_varint(&mut bad, WT_CLOSE_SESSION);
        put_varint(&mut bad, 2);
        bad.put_slice(b"ab");
        assert!(parse_capsules(&mut bad, &mut false).is_err());
        let mut huge = BytesMut::new();
        put_varint(&mut huge, 0);
        put_varint(&mut huge, 1 << 40);
        assert!(parse_capsules(&mut huge, &mut false).is_err());
    }

    #[test]
    fn varints_round_trip() {
        for v in [
            0u64,
            0x3f,
            0x40,
            0x3fff,
            0x4000,
            0x3fff_ffff,
            0x4000_0000,
            (1 << 62) - 1,
        ] {
            let mut b = BytesMut::new();
            put_varint(&mut b, v);
            assert_eq!(decode_varint(&b), Some((v, b.len())));
        }
        assert_eq!(decode_varint(&[0x40]), None);
    }
}
