//! The `h3` crate's QUIC traits (`h3::quic`) on the runtime types (feature `h3`), so
//! `h3::server::Connection` and `h3::client::Connection` run over gquic.
//!
//! Everything is poll-based over the runtime's own poll methods: no future is boxed per call.
//! Received data is handed to h3 as the `Bytes` the connection reassembled, without copying;
//! outgoing data is copied once per `send_data` into one `Bytes` (small frames into a block
//! the thread's streams share, so a HEADERS frame costs no allocation of its own) and then
//! written without further copies.
//!
//! ```no_run
//! # async fn demo(conn: gquic_transport::runtime::Connection) -> Result<(), Box<dyn std::error::Error>> {
//! let mut h3_conn = h3::server::Connection::new(gquic_transport::h3::Connection::new(conn)).await?;
//! while let Some(resolver) = h3_conn.accept().await? {
//!     let (request, mut stream) = resolver.resolve_request().await?;
//!     let response = http::Response::builder().status(200).body(())?;
//!     stream.send_response(response).await?;
//!     stream.send_data(bytes::Bytes::from_static(b"hello")).await?;
//!     stream.finish().await?;
//!     # let _ = request;
//! }
//! # Ok(()) }
//! ```
//!
//! Error mapping: the peer's application close becomes `ApplicationClose` with its code, an
//! idle timeout `Timeout`, a peer's RESET_STREAM or STOP_SENDING `StreamTerminated` with its
//! code; anything else is `Undefined` carrying our error.

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};

use crate::runtime::PaceState;
use h3::quic::{self, ConnectionErrorIncoming, StreamErrorIncoming, WriteBuf};

use crate::connection::ConnectionError;
use crate::runtime::{self, ReadError, WriteError};
use crate::wire::VarInt;

/// H3_NO_ERROR (RFC 9114 §8.1).
const H3_NO_ERROR: u64 = 0x100;

/// Converts an HTTP/3 error code (62 bits at most) to a [`VarInt`], saturating.
fn varint(code: u64) -> VarInt {
    VarInt::from_u64(code).unwrap_or(VarInt::MAX)
}

fn conn_error(e: ConnectionError) -> ConnectionErrorIncoming {
    match e {
        ConnectionError::ApplicationClosed { code, .. } => {
            ConnectionErrorIncoming::ApplicationClose {
                error_code: code.into_inner(),
            }
        }
        ConnectionError::TimedOut => ConnectionErrorIncoming::Timeout,
        other => ConnectionErrorIncoming::Undefined(Arc::new(other)),
    }
}

fn stream_conn_error(e: ConnectionError) -> StreamErrorIncoming {
    StreamErrorIncoming::ConnectionErrorIncoming {
        connection_error: conn_error(e),
    }
}

fn read_error(e: ReadError) -> StreamErrorIncoming {
    match e {
        ReadError::Reset(code) => StreamErrorIncoming::StreamTerminated {
            error_code: code.into_inner(),
        },
        ReadError::ConnectionLost(c) => stream_conn_error(c),
        other => StreamErrorIncoming::Unknown(Box::new(other)),
    }
}

fn write_error(e: WriteError) -> StreamErrorIncoming {
    match e {
        WriteError::Stopped(code) => StreamErrorIncoming::StreamTerminated {
            error_code: code.into_inner(),
        },
        WriteError::ConnectionLost(c) => stream_conn_error(c),
        other => StreamErrorIncoming::Unknown(Box::new(other)),
    }
}

fn h3_id(id: crate::StreamId) -> quic::StreamId {
    // Stream IDs are varints, always below 2^62: the conversion cannot fail.
    quic::StreamId::try_from(id.0)
        .unwrap_or_else(|_| quic::StreamId::try_from(0u64).expect("0 is a valid stream ID"))
}

/// Where h3 takes its incoming streams from when something sits between it and the
/// connection: a demultiplexer that keeps some streams for itself (WebTransport streams, say)
/// and passes the others on, with the bytes it read from each to classify it.
pub trait StreamSource: Send + Sync + 'static {
    /// The next bidirectional stream for h3, with the bytes already read from it.
    fn poll_accept_bi(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(runtime::SendStream, runtime::RecvStream, Bytes), ConnectionError>>;

    /// The next unidirectional stream for h3, with the bytes already read from it.
    fn poll_accept_uni(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(runtime::RecvStream, Bytes), ConnectionError>>;
}

/// A gquic connection as an `h3::quic::Connection`.
#[derive(Clone)]
pub struct Connection {
    conn: runtime::Connection,
    source: Option<Arc<dyn StreamSource>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("conn", &self.conn)
            .field("source", &self.source.is_some())
            .finish()
    }
}

impl Connection {
    /// Wraps an established connection (negotiate ALPN `h3` before handing it to h3).
    pub fn new(conn: runtime::Connection) -> Self {
        Self { conn, source: None }
    }

    /// Wraps `conn`, taking incoming streams from `source` instead of accepting them from
    /// the connection (streams are still opened on `conn`).
    pub fn with_source(conn: runtime::Connection, source: Arc<dyn StreamSource>) -> Self {
        Self {
            conn,
            source: Some(source),
        }
    }

    /// The connection underneath.
    pub fn get_ref(&self) -> &runtime::Connection {
        &self.conn
    }

    /// Unwraps the connection.
    pub fn into_inner(self) -> runtime::Connection {
        self.conn
    }
}

impl<B: Buf> quic::Connection<B> for Connection {
    type RecvStream = RecvStream;
    type OpenStreams = OpenStreams;

    fn poll_accept_recv(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::RecvStream, ConnectionErrorIncoming>> {
        if let Some(source) = &self.source {
            return source
                .poll_accept_uni(cx)
                .map_ok(|(r, prefix)| RecvStream::with_prefix(r, prefix))
                .map_err(conn_error);
        }
        self.conn
            .poll_accept_uni(cx)
            .map_ok(RecvStream::new)
            .map_err(conn_error)
    }

    fn poll_accept_bidi(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::BidiStream, ConnectionErrorIncoming>> {
        if let Some(source) = &self.source {
            return source
                .poll_accept_bi(cx)
                .map_ok(|(s, r, prefix)| BidiStream {
                    send: SendStream::new(s),
                    recv: RecvStream::with_prefix(r, prefix),
                })
                .map_err(conn_error);
        }
        self.conn
            .poll_accept_bi(cx)
            .map_ok(|(s, r)| BidiStream {
                send: SendStream::new(s),
                recv: RecvStream::new(r),
            })
            .map_err(conn_error)
    }

    fn opener(&self) -> Self::OpenStreams {
        OpenStreams {
            conn: self.conn.clone(),
        }
    }
}

fn poll_open_bidi<B: Buf>(
    conn: &runtime::Connection,
    cx: &mut Context<'_>,
) -> Poll<Result<BidiStream<B>, StreamErrorIncoming>> {
    conn.poll_open_bi(cx)
        .map_ok(|(s, r)| BidiStream {
            send: SendStream::new(s),
            recv: RecvStream::new(r),
        })
        .map_err(stream_conn_error)
}

fn poll_open_send<B: Buf>(
    conn: &runtime::Connection,
    cx: &mut Context<'_>,
) -> Poll<Result<SendStream<B>, StreamErrorIncoming>> {
    conn.poll_open_uni(cx)
        .map_ok(SendStream::new)
        .map_err(stream_conn_error)
}

impl<B: Buf> quic::OpenStreams<B> for Connection {
    type BidiStream = BidiStream<B>;
    type SendStream = SendStream<B>;

    fn poll_open_bidi(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::BidiStream, StreamErrorIncoming>> {
        poll_open_bidi(&self.conn, cx)
    }

    fn poll_open_send(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::SendStream, StreamErrorIncoming>> {
        poll_open_send(&self.conn, cx)
    }

    fn close(&mut self, code: h3::error::Code, reason: &[u8]) {
        self.conn.close(varint(code.value()), reason);
    }
}

/// Opens streams on a connection h3 drives (`h3::quic::OpenStreams`); cheap to clone.
#[derive(Debug, Clone)]
pub struct OpenStreams {
    conn: runtime::Connection,
}

impl<B: Buf> quic::OpenStreams<B> for OpenStreams {
    type BidiStream = BidiStream<B>;
    type SendStream = SendStream<B>;

    fn poll_open_bidi(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::BidiStream, StreamErrorIncoming>> {
        poll_open_bidi(&self.conn, cx)
    }

    fn poll_open_send(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::SendStream, StreamErrorIncoming>> {
        poll_open_send(&self.conn, cx)
    }

    fn close(&mut self, code: h3::error::Code, reason: &[u8]) {
        self.conn.close(varint(code.value()), reason);
    }
}

/// The sending half of a stream for h3.
#[derive(Debug)]
pub struct SendStream<B: Buf> {
    stream: runtime::SendStream,
    /// Data accepted by `send_data` and not yet taken by the connection.
    pending: Bytes,
    _buf: std::marker::PhantomData<fn(B)>,
}

impl<B: Buf> SendStream<B> {
    fn new(stream: runtime::SendStream) -> Self {
        Self {
            stream,
            pending: Bytes::new(),
            _buf: std::marker::PhantomData,
        }
    }

    fn poll_flush_pending(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), StreamErrorIncoming>> {
        while !self.pending.is_empty() {
            match self.stream.poll_write_bytes(cx, &mut self.pending) {
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(write_error(e))),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<B: Buf> quic::SendStream<B> for SendStream<B> {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        self.poll_flush_pending(cx)
    }

    fn send_data<T: Into<WriteBuf<B>>>(&mut self, data: T) -> Result<(), StreamErrorIncoming> {
        if !self.pending.is_empty() {
            return Err(StreamErrorIncoming::Unknown(
                "send_data called before poll_ready finished the previous frame".into(),
            ));
        }
        let mut buf: WriteBuf<B> = data.into();
        // One copy of the frame header and payload; written later without copying again.
        self.pending = crate::small_copy::copy_buf(&mut buf);
        Ok(())
    }

    fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        match self.poll_flush_pending(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        match self.stream.finish() {
            Ok(()) | Err(WriteError::ClosedStream) => Poll::Ready(Ok(())),
            // RFC 9114 §4.1.2: a server that has what it needs stops the request stream with
            // H3_NO_ERROR; that is not a failure of the request.
            Err(WriteError::Stopped(code)) if code.into_inner() == H3_NO_ERROR => {
                Poll::Ready(Ok(()))
            }
            Err(e) => Poll::Ready(Err(write_error(e))),
        }
    }

    fn reset(&mut self, reset_code: u64) {
        self.pending = Bytes::new();
        let _ = self.stream.reset(varint(reset_code));
    }

    fn send_id(&self) -> quic::StreamId {
        h3_id(self.stream.id())
    }
}

impl<B: Buf> quic::SendStreamUnframed<B> for SendStream<B> {
    fn poll_send<D: Buf>(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut D,
    ) -> Poll<Result<usize, StreamErrorIncoming>> {
        match self.poll_flush_pending(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
        // Only what flow control takes is copied.
        match self.stream.poll_write_slices(cx, &[buf.chunk()]) {
            Poll::Ready(Ok(n)) => {
                buf.advance(n);
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(write_error(e))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The receiving half of a stream for h3.
///
/// Dropped before its end, it stops the stream with H3_NO_ERROR (RFC 9114 §4.1.2), the code
/// HTTP/3 uses for "the rest is not needed", where a bare QUIC stream would use 0.
#[derive(Debug)]
pub struct RecvStream {
    stream: runtime::RecvStream,
    /// Bytes read before h3 got the stream, returned first.
    prefix: Bytes,
    /// The consumer's pace, once registered with [`pace_reads`].
    pace: Option<Arc<PaceState>>,
}

impl Drop for RecvStream {
    fn drop(&mut self) {
        // A no-op if the stream was read to its end or already stopped.
        let _ = self.stream.stop(VarInt::from_u32(H3_NO_ERROR as u32));
    }
}

impl RecvStream {
    fn new(stream: runtime::RecvStream) -> Self {
        Self::with_prefix(stream, Bytes::new())
    }

    fn with_prefix(stream: runtime::RecvStream, prefix: Bytes) -> Self {
        Self {
            stream,
            prefix,
            pace: None,
        }
    }
}

impl quic::RecvStream for RecvStream {
    type Buf = Bytes;

    fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Self::Buf>, StreamErrorIncoming>> {
        if !self.prefix.is_empty() {
            return Poll::Ready(Ok(Some(std::mem::take(&mut self.prefix))));
        }
        self.stream
            .poll_read_chunk_paced(cx, &mut self.pace)
            .map_err(read_error)
    }

    fn stop_sending(&mut self, error_code: u64) {
        let _ = self.stream.stop(varint(error_code));
    }

    fn recv_id(&self) -> quic::StreamId {
        h3_id(self.stream.id())
    }
}

/// A bidirectional stream for h3.
#[derive(Debug)]
pub struct BidiStream<B: Buf> {
    send: SendStream<B>,
    recv: RecvStream,
}

impl<B: Buf> quic::BidiStream<B> for BidiStream<B> {
    type SendStream = SendStream<B>;
    type RecvStream = RecvStream;

    fn split(self) -> (Self::SendStream, Self::RecvStream) {
        (self.send, self.recv)
    }
}

impl<B: Buf> quic::RecvStream for BidiStream<B> {
    type Buf = Bytes;

    fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Self::Buf>, StreamErrorIncoming>> {
        self.recv.poll_data(cx)
    }

    fn stop_sending(&mut self, error_code: u64) {
        self.recv.stop_sending(error_code);
    }

    fn recv_id(&self) -> quic::StreamId {
        self.recv.recv_id()
    }
}

impl<B: Buf> quic::SendStream<B> for BidiStream<B> {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        self.send.poll_ready(cx)
    }

    fn send_data<T: Into<WriteBuf<B>>>(&mut self, data: T) -> Result<(), StreamErrorIncoming> {
        self.send.send_data(data)
    }

    fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        self.send.poll_finish(cx)
    }

    fn reset(&mut self, reset_code: u64) {
        self.send.reset(reset_code);
    }

    fn send_id(&self) -> quic::StreamId {
        self.send.send_id()
    }
}

impl<B: Buf> quic::SendStreamUnframed<B> for BidiStream<B> {
    fn poll_send<D: Buf>(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut D,
    ) -> Poll<Result<usize, StreamErrorIncoming>> {
        self.send.poll_send(cx, buf)
    }
}

/// Sends HTTP datagrams (RFC 9297) for `h3-datagram` as QUIC datagrams (RFC 9221).
#[derive(Debug, Clone)]
pub struct SendDatagramHandler {
    conn: runtime::Connection,
}

/// Receives HTTP datagrams for `h3-datagram`.
#[derive(Debug, Clone)]
pub struct RecvDatagramHandler {
    conn: runtime::Connection,
}

impl<B: Buf> h3_datagram::quic_traits::DatagramConnectionExt<B> for Connection {
    type SendDatagramHandler = SendDatagramHandler;
    type RecvDatagramHandler = RecvDatagramHandler;

    fn send_datagram_handler(&self) -> Self::SendDatagramHandler {
        SendDatagramHandler {
            conn: self.conn.clone(),
        }
    }

    fn recv_datagram_handler(&self) -> Self::RecvDatagramHandler {
        RecvDatagramHandler {
            conn: self.conn.clone(),
        }
    }
}

impl<B: Buf> h3_datagram::quic_traits::SendDatagram<B> for SendDatagramHandler {
    fn send_datagram<T: Into<h3_datagram::datagram::EncodedDatagram<B>>>(
        &mut self,
        data: T,
    ) -> Result<(), h3_datagram::quic_traits::SendDatagramErrorIncoming> {
        use h3_datagram::quic_traits::SendDatagramErrorIncoming as E;
        let mut datagram: h3_datagram::datagram::EncodedDatagram<B> = data.into();
        // One copy: the quarter-stream-ID prefix and the payload become one QUIC datagram.
        let bytes = datagram.copy_to_bytes(datagram.remaining());
        self.conn.send_datagram(bytes).map_err(|e| match e {
            crate::connection::SendDatagramError::UnsupportedByPeer => E::NotAvailable,
            crate::connection::SendDatagramError::TooLarge { .. } => E::TooLarge,
            _ => E::ConnectionError(conn_error(
                self.conn
                    .close_reason()
                    .unwrap_or(ConnectionError::LocallyClosed),
            )),
        })
    }
}

impl h3_datagram::quic_traits::RecvDatagram for RecvDatagramHandler {
    type Buffer = Bytes;

    fn poll_incoming_datagram(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Buffer, ConnectionErrorIncoming>> {
        self.conn.poll_read_datagram(cx).map_err(conn_error)
    }
}

#[cfg(test)]
mod tests;

/// Keeps h3 from reading far ahead of whoever consumes a request or response body.
///
/// h3 0.0.8 pulls another chunk from the transport each time it looks for the next frame,
/// even when complete frames are already in its buffer (hyperium/h3#308). With small DATA
/// frames and a consumer slower than the network, its buffer grows without bound, and so does
/// the flow-control credit the transport hands out for data nobody has consumed yet (RFC 9000
/// §4.1 intends that credit to follow the application's reading).
///
/// A body type built on `h3::server::RequestStream` / `h3::client::RequestStream` over gquic
/// makes one with [`pace_reads`], calls [`ReadPace::arm`] before it polls h3 for body data,
/// reports what it takes with [`ReadPace::consumed`], and when h3 returns `Pending` asks
/// [`ReadPace::release`] whether that was the pace holding h3 back; if so it polls again at
/// once. The stream then stays at most 256 KiB ahead of the consumer. Without an armed pace,
/// a stream reads as fast as h3 asks.
#[derive(Debug)]
pub struct ReadPace {
    state: Arc<PaceState>,
    conn: runtime::Connection,
    stream: u64,
    /// Registered with the connection (by [`ReadPace::arm`]).
    armed: std::sync::atomic::AtomicBool,
}

/// A read pace for `stream` of `conn` (a stream whose receiving half h3 owns); see
/// [`ReadPace`]. Nothing is registered until [`ReadPace::arm`]: a body nobody reads (a GET
/// handler that ignores it) costs the connection nothing.
pub fn pace_reads(conn: &runtime::Connection, stream: crate::StreamId) -> ReadPace {
    ReadPace {
        state: Arc::new(PaceState::default()),
        conn: conn.clone(),
        stream: stream.0,
        armed: std::sync::atomic::AtomicBool::new(false),
    }
}

impl ReadPace {
    /// Registers the pace with the connection, once; call it before each poll of h3 for body
    /// data (after the first call it is an atomic load). The stream's next read picks it up.
    pub fn arm(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        if !self.armed.load(Relaxed) && !self.armed.swap(true, Relaxed) {
            self.conn.register_pace(self.stream, self.state.clone());
        }
    }

    /// The consumer took `n` bytes of body data.
    pub fn consumed(&self, n: usize) {
        self.state
            .consumed
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Call when h3 returned `Pending`: true if the pace held a read back (h3 then needs more
    /// than it buffered, e.g. the rest of a frame header or trailers); the pace is reset and
    /// the caller must poll again now, since no waker was registered for that read.
    pub fn release(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        if self.state.held.swap(false, Relaxed) {
            self.state
                .consumed
                .store(self.state.handed.load(Relaxed), Relaxed);
            true
        } else {
            false
        }
    }
}

impl Drop for ReadPace {
    fn drop(&mut self) {
        if *self.armed.get_mut() {
            self.conn.unregister_pace(self.stream, &self.state);
        }
    }
}
