//! Async stream handles: [`SendStream`] (`AsyncWrite`) and [`RecvStream`] (`AsyncRead`).

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
#[cfg(feature = "h3")]
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
#[cfg(feature = "h3")]
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::connection::{lost, ConnRef};
use super::{ConnState, SendRecord, State};
use crate::connection::{self as proto, ConnectionError};
use crate::wire::VarInt;
use crate::StreamId;

/// Why a write failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The peer asked us to stop sending (STOP_SENDING, RFC 9000 §19.5) with this code.
    #[error("the peer stopped the stream with code {0}")]
    Stopped(VarInt),
    /// The connection ended.
    #[error("connection lost: {0}")]
    ConnectionLost(#[from] ConnectionError),
    /// The stream was already finished or reset by this side.
    #[error("the stream is closed for writing (already finished or reset)")]
    ClosedStream,
}

/// Why a read failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The peer abandoned the stream (RESET_STREAM, RFC 9000 §19.4) with this code.
    #[error("the peer reset the stream with code {0}")]
    Reset(VarInt),
    /// The connection ended.
    #[error("connection lost: {0}")]
    ConnectionLost(#[from] ConnectionError),
    /// The stream was already read to the end or stopped by this side.
    #[error("the stream is closed for reading (already finished or stopped)")]
    ClosedStream,
}

/// Why [`RecvStream::read_to_end`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReadToEndError {
    /// Reading failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The stream carried more than the limit given; raise the limit or stream the data with
    /// `read_chunk`.
    #[error("the stream is longer than the limit of {0} bytes")]
    TooLong(usize),
}

/// Why [`SendStream::stopped`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoppedError {
    /// The connection ended before the peer acknowledged the stream or stopped it.
    #[error("connection lost: {0}")]
    ConnectionLost(#[from] ConnectionError),
}

fn io_kind(e: &ConnectionError) -> io::ErrorKind {
    match e {
        ConnectionError::TimedOut => io::ErrorKind::TimedOut,
        ConnectionError::LocallyClosed => io::ErrorKind::NotConnected,
        _ => io::ErrorKind::ConnectionAborted,
    }
}

impl From<WriteError> for io::Error {
    fn from(e: WriteError) -> Self {
        let kind = match &e {
            WriteError::Stopped(_) => io::ErrorKind::ConnectionReset,
            WriteError::ConnectionLost(c) => io_kind(c),
            WriteError::ClosedStream => io::ErrorKind::NotConnected,
        };
        io::Error::new(kind, e)
    }
}

impl From<ReadError> for io::Error {
    fn from(e: ReadError) -> Self {
        let kind = match &e {
            ReadError::Reset(_) => io::ErrorKind::ConnectionReset,
            ReadError::ConnectionLost(c) => io_kind(c),
            ReadError::ClosedStream => io::ErrorKind::NotConnected,
        };
        io::Error::new(kind, e)
    }
}

impl From<ReadToEndError> for io::Error {
    fn from(e: ReadToEndError) -> Self {
        match e {
            ReadToEndError::Read(r) => r.into(),
            e @ ReadToEndError::TooLong(_) => io::Error::new(io::ErrorKind::InvalidData, e),
        }
    }
}

/// The most bytes one write from a slice ([`SendStream::write`], `AsyncWrite`) copies: the
/// copy is made under the connection's lock, and only of what flow control takes.
const WRITE_COPY_MAX: usize = 256 * 1024;

/// The sending half of a stream.
///
/// Dropping it without [`SendStream::finish`] or [`SendStream::reset`] finishes the stream
/// after the data written so far.
#[derive(Debug)]
pub struct SendStream {
    conn: ConnRef,
    id: u64,
    done: bool,
}

impl SendStream {
    /// A handle on stream `id` of `conn`'s connection, made under the lock `s` of the call
    /// that opened or accepted the stream: counts a reference and records the handle as live.
    pub(crate) fn new_locked(s: &mut State, conn: &ConnRef, id: u64) -> Self {
        if let Some(st) = s.conns.get_mut(&conn.id) {
            Self::record(st, id);
        }
        Self::counted(s, conn, id)
    }

    /// Counts the reference of a new handle on stream `id` in `st`, and records the handle
    /// as live.
    #[inline]
    pub(crate) fn record(st: &mut ConnState, id: u64) {
        st.refs += 1;
        st.w().sends.insert(StreamId(id), SendRecord::default());
    }

    /// The handle whose reference [`SendStream::record`] counted, made under the lock `s`.
    pub(crate) fn counted(s: &mut State, conn: &ConnRef, id: u64) -> Self {
        Self {
            conn: conn.another(s),
            id,
            done: false,
        }
    }

    /// The stream's ID.
    pub fn id(&self) -> StreamId {
        StreamId(self.id)
    }

    /// Offers `data` and advances it past what was taken; `Pending` while flow control is
    /// full. The poll-based, copy-free form of [`SendStream::write_chunk`].
    ///
    /// # Errors
    /// See [`WriteError`].
    pub fn poll_write_bytes(
        &mut self,
        cx: &mut Context<'_>,
        data: &mut Bytes,
    ) -> Poll<Result<usize, WriteError>> {
        self.poll_write_chunks(cx, std::slice::from_mut(data))
            .map_ok(|w| w.bytes)
    }

    /// Offers `bufs` in order under one lock, as much as flow control takes: chunks taken
    /// whole are left empty, a chunk taken in part is advanced past what was taken (offer it
    /// again with the rest), and the chunks after it are untouched. `Pending` while flow
    /// control takes nothing. The poll-based form of [`SendStream::write_chunks`].
    ///
    /// # Errors
    /// See [`WriteError`].
    pub fn poll_write_chunks(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &mut [Bytes],
    ) -> Poll<Result<Written, WriteError>> {
        self.poll_write_locked(cx, |c, id| {
            let mut written = Written::default();
            for data in bufs.iter_mut() {
                match c.write_from(id, data) {
                    Ok(n) => written.bytes += n,
                    Err(proto::WriteError::Blocked) => break,
                    Err(e) => return Err(e),
                }
                if !data.is_empty() {
                    // Flow control took only part of it.
                    break;
                }
                written.chunks += 1;
            }
            let progress = written.bytes > 0 || written.chunks > 0 || bufs.is_empty();
            Ok(progress.then_some(written))
        })
    }

    /// Copies into the stream as much of `slices` (one after the other) as flow control takes
    /// now, at most [`WRITE_COPY_MAX`] bytes: only what is taken is copied. `Pending` while
    /// it takes nothing.
    pub(crate) fn poll_write_slices<T: std::ops::Deref<Target = [u8]>>(
        &mut self,
        cx: &mut Context<'_>,
        slices: &[T],
    ) -> Poll<Result<usize, WriteError>> {
        let empty = slices.iter().all(|s| s.is_empty());
        self.poll_write_locked(cx, |c, id| {
            match c.write_vectored(id, slices, WRITE_COPY_MAX) {
                Ok(0) if !empty => Ok(None),
                Ok(n) => Ok(Some(Written {
                    bytes: n,
                    chunks: 0,
                })),
                Err(proto::WriteError::Blocked) => Ok(None),
                Err(e) => Err(e),
            }
        })
        .map_ok(|w| w.bytes)
    }

    /// One write under the lock: the STOP_SENDING check, the connection's state machine,
    /// `write` on it (`None`: nothing taken), the driver woken after data; `Pending` with the
    /// task registered for room when nothing was taken.
    fn poll_write_locked(
        &mut self,
        cx: &mut Context<'_>,
        write: impl FnOnce(
            &mut proto::Connection,
            StreamId,
        ) -> Result<Option<Written>, proto::WriteError>,
    ) -> Poll<Result<Written, WriteError>> {
        let mut s = self.conn.shared.lock();
        let cid = self.conn.id;
        // One look-up of the connection's entry for the STOP_SENDING check and its handle.
        let handle = match s.conns.get_mut(&cid) {
            Some(st) => {
                if let Some(code) = st.send_record(self.id).and_then(|r| r.stopped) {
                    return Poll::Ready(Err(WriteError::Stopped(code)));
                }
                st.handle
            }
            None => None,
        };
        let Some(c) = handle.and_then(|h| s.ep.connection_mut(h)) else {
            return Poll::Ready(Err(lost(&s, cid).into()));
        };
        match write(c, StreamId(self.id)) {
            Ok(Some(written)) => {
                if written.bytes > 0 {
                    s.wake_driver();
                }
                return Poll::Ready(Ok(written));
            }
            Ok(None) | Err(proto::WriteError::Blocked) => {}
            Err(proto::WriteError::Stopped(code)) => {
                return Poll::Ready(Err(WriteError::Stopped(code)))
            }
            Err(proto::WriteError::ClosedStream) => {
                let err = match s.conns.get(&cid).and_then(|c| c.error().cloned()) {
                    Some(e) => WriteError::ConnectionLost(e),
                    None => WriteError::ClosedStream,
                };
                return Poll::Ready(Err(err));
            }
        }
        if let Some(st) = s.conns.get_mut(&cid) {
            st.w()
                .sends
                .get_or_insert_with(StreamId(self.id), SendRecord::default)
                .writable = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Writes as many of `bufs` as flow control takes now, without copying (waits while it
    /// takes nothing): chunks taken whole are left empty, a chunk taken in part is advanced
    /// past what was taken. One lock for all of them, where [`SendStream::write_chunk`] takes
    /// one per chunk.
    ///
    /// # Errors
    /// See [`WriteError`].
    ///
    /// # Cancel safety
    /// Cancel safe: if cancelled, nothing was written.
    pub fn write_chunks<'a>(&'a mut self, bufs: &'a mut [Bytes]) -> WriteChunks<'a> {
        WriteChunks { stream: self, bufs }
    }

    /// Writes all of `bufs` without copying; each is left empty.
    ///
    /// # Errors
    /// See [`WriteError`].
    ///
    /// # Cancel safety
    /// Not cancel safe: if cancelled, the chunks already written are empty and the one in
    /// progress is advanced past what was taken.
    pub fn write_all_chunks<'a>(&'a mut self, bufs: &'a mut [Bytes]) -> WriteAllChunks<'a> {
        WriteAllChunks { stream: self, bufs }
    }

    /// Writes some of `buf`; returns how many bytes were taken.
    ///
    /// # Errors
    /// See [`WriteError`].
    ///
    /// # Cancel safety
    /// Cancel safe: if cancelled, nothing was written.
    pub fn write<'a>(&'a mut self, buf: &'a [u8]) -> Write<'a> {
        Write { stream: self, buf }
    }

    /// Writes all of `buf`.
    ///
    /// # Errors
    /// See [`WriteError`].
    ///
    /// # Cancel safety
    /// Not cancel safe: if cancelled, an unknown prefix of `buf` was written.
    pub fn write_all(&mut self, buf: &[u8]) -> WriteAll<'_> {
        self.write_chunk(crate::small_copy::copy_parts(&[buf], buf.len()))
    }

    /// Writes all of `data` without copying it.
    ///
    /// # Errors
    /// See [`WriteError`].
    ///
    /// # Cancel safety
    /// Not cancel safe: if cancelled, an unknown prefix of `data` was written.
    pub fn write_chunk(&mut self, data: Bytes) -> WriteAll<'_> {
        WriteAll { stream: self, data }
    }

    /// Ends the stream after the data written so far (a STREAM frame with FIN). Await
    /// [`SendStream::stopped`] to learn when the peer has everything.
    ///
    /// # Errors
    /// [`WriteError::ClosedStream`] if already finished or reset;
    /// [`WriteError::ConnectionLost`] if the connection ended.
    pub fn finish(&mut self) -> Result<(), WriteError> {
        let mut s = self.conn.shared.lock();
        let cid = self.conn.id;
        let Some(c) = s.proto(cid) else {
            return Err(lost(&s, cid).into());
        };
        let r = c.finish(StreamId(self.id));
        s.wake_driver();
        match r {
            Ok(()) => {
                self.done = true;
                Ok(())
            }
            Err(proto::WriteError::Stopped(code)) => Err(WriteError::Stopped(code)),
            Err(_) => Err(WriteError::ClosedStream),
        }
    }

    /// Abandons the stream (RESET_STREAM with `code`, RFC 9000 §19.4): unsent and lost data
    /// is not sent.
    ///
    /// # Errors
    /// [`WriteError::ClosedStream`] if there is nothing left to reset.
    pub fn reset(&mut self, code: VarInt) -> Result<(), WriteError> {
        let mut s = self.conn.shared.lock();
        let cid = self.conn.id;
        let Some(c) = s.proto(cid) else {
            return Err(lost(&s, cid).into());
        };
        let r = c.reset(StreamId(self.id), code);
        s.wake_driver();
        self.done = true;
        r.map_err(|_| WriteError::ClosedStream)
    }

    /// Waits until the peer acknowledged everything including the FIN (`Ok(None)`) or
    /// asked us to stop sending (`Ok(Some(code))`).
    ///
    /// # Errors
    /// [`StoppedError::ConnectionLost`] if the connection ended first.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn stopped(&mut self) -> Result<Option<VarInt>, StoppedError> {
        poll_fn(|cx| {
            let mut s = self.conn.shared.lock();
            let cid = self.conn.id;
            let Some(st) = s.conns.get_mut(&cid) else {
                return Poll::Ready(Err(ConnectionError::LocallyClosed.into()));
            };
            if let Some(r) = st.send_record(self.id) {
                if let Some(code) = r.stopped {
                    return Poll::Ready(Ok(Some(code)));
                }
                if r.acked {
                    return Poll::Ready(Ok(None));
                }
            }
            if let Some(e) = st.error().cloned() {
                return Poll::Ready(Err(e.into()));
            }
            st.w()
                .sends
                .get_or_insert_with(StreamId(self.id), SendRecord::default)
                .stopped_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

/// The future of [`SendStream::write`].
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct Write<'a> {
    stream: &'a mut SendStream,
    buf: &'a [u8],
}

impl Future for Write<'_> {
    type Output = Result<usize, WriteError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.stream.poll_write_slices(cx, &[this.buf])
    }
}

/// What [`SendStream::write_chunks`] took: bytes, and chunks taken whole.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    /// Bytes taken, from all the chunks.
    pub bytes: usize,
    /// Chunks taken whole (empty ones included), from the front.
    pub chunks: usize,
}

/// The future of [`SendStream::write_chunks`].
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct WriteChunks<'a> {
    stream: &'a mut SendStream,
    bufs: &'a mut [Bytes],
}

impl Future for WriteChunks<'_> {
    type Output = Result<Written, WriteError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.stream.poll_write_chunks(cx, this.bufs)
    }
}

/// The future of [`SendStream::write_all_chunks`].
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct WriteAllChunks<'a> {
    stream: &'a mut SendStream,
    bufs: &'a mut [Bytes],
}

impl Future for WriteAllChunks<'_> {
    type Output = Result<(), WriteError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        while !this.bufs.is_empty() {
            let w = std::task::ready!(this.stream.poll_write_chunks(cx, this.bufs))?;
            let bufs = std::mem::take(&mut this.bufs);
            this.bufs = &mut bufs[w.chunks..];
        }
        Poll::Ready(Ok(()))
    }
}

/// The future of [`RecvStream::read_chunks`].
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct ReadChunks<'a> {
    stream: &'a mut RecvStream,
    bufs: &'a mut [Bytes],
}

impl Future for ReadChunks<'_> {
    type Output = Result<Option<usize>, ReadError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.stream.poll_read_chunks(cx, this.bufs)
    }
}

/// The future of [`RecvStream::read_chunk`].
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct ReadChunk<'a> {
    stream: &'a mut RecvStream,
    max: usize,
}

impl Future for ReadChunk<'_> {
    type Output = Result<Option<Bytes>, ReadError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.stream.poll_read_chunk(cx, this.max)
    }
}

/// The future of [`RecvStream::read`].
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct Read<'a> {
    stream: &'a mut RecvStream,
    buf: &'a mut [u8],
}

impl Future for Read<'_> {
    type Output = Result<Option<usize>, ReadError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.buf.is_empty() {
            return Poll::Ready(Ok(Some(0)));
        }
        let mut buf = ReadBuf::new(this.buf);
        std::task::ready!(this.stream.poll_read_buf(cx, &mut buf))?;
        let n = buf.filled().len();
        // Nothing read into a buffer with room: the end.
        Poll::Ready(Ok((n > 0).then_some(n)))
    }
}

/// The future of [`SendStream::write_all`] and [`SendStream::write_chunk`]: the data not yet
/// taken and the stream, nothing more (a task that awaits it stays small).
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct WriteAll<'a> {
    stream: &'a mut SendStream,
    data: Bytes,
}

impl Future for WriteAll<'_> {
    type Output = Result<(), WriteError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        while !this.data.is_empty() {
            std::task::ready!(this.stream.poll_write_bytes(cx, &mut this.data))?;
        }
        Poll::Ready(Ok(()))
    }
}

/// The future of [`RecvStream::read_to_end`]: what was read so far and the stream.
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct ReadToEnd<'a> {
    stream: &'a mut RecvStream,
    out: Vec<u8>,
    limit: usize,
}

impl Future for ReadToEnd<'_> {
    type Output = Result<Vec<u8>, ReadToEndError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        std::task::ready!(this.stream.poll_read_to_end(cx, &mut this.out, this.limit))?;
        Poll::Ready(Ok(std::mem::take(&mut this.out)))
    }
}

impl Drop for SendStream {
    fn drop(&mut self) {
        let (id, done) = (self.id, self.done);
        if done {
            // Finished or reset already (which woke the driver): only the record goes.
            self.conn.release_in(|st| {
                if let Some(w) = st.w_if_any() {
                    w.sends.discard(&StreamId(id));
                }
            });
            return;
        }
        self.conn.release_with(|s, cid| {
            if let Some(c) = s.proto(cid) {
                let _ = c.finish(StreamId(id));
            }
            if let Some(w) = s.conns.get_mut(&cid).and_then(ConnState::w_if_any) {
                w.sends.discard(&StreamId(id));
            }
            s.wake_driver();
        });
    }
}

impl AsyncWrite for SendStream {
    /// Copies only what flow control takes now (at most 256 KiB).
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_write_slices(cx, &[buf])
            .map_err(Into::into)
    }

    /// The slices copied as one chunk, only as much of them as flow control takes now (at
    /// most 256 KiB), under one lock.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_write_slices(cx, bufs)
            .map_err(Into::into)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Written data is already queued in the connection; there is no buffer of ours.
        Poll::Ready(Ok(()))
    }

    /// Finishes the stream.
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(Ok(()));
        }
        Poll::Ready(this.finish().map_err(Into::into))
    }
}

/// The receiving half of a stream.
///
/// Dropping it before the end stops the stream (STOP_SENDING with code 0).
#[derive(Debug)]
pub struct RecvStream {
    pub(crate) conn: ConnRef,
    id: u64,
    done: bool,
}

impl RecvStream {
    /// A handle on stream `id` of `conn`'s connection, made under the lock `s` of the call
    /// that opened or accepted the stream: counts a reference.
    pub(crate) fn new_locked(s: &mut State, conn: &ConnRef, id: u64) -> Self {
        if let Some(st) = s.conns.get_mut(&conn.id) {
            Self::record(st);
        }
        Self::counted(s, conn, id)
    }

    /// Counts the reference of a new receive handle in `st`.
    #[inline]
    pub(crate) fn record(st: &mut ConnState) {
        st.refs += 1;
    }

    /// The handle on stream `id` whose reference [`RecvStream::record`] counted, made under
    /// the lock `s`.
    pub(crate) fn counted(s: &mut State, conn: &ConnRef, id: u64) -> Self {
        Self {
            conn: conn.another(s),
            id,
            done: false,
        }
    }

    /// The stream's ID.
    pub fn id(&self) -> StreamId {
        StreamId(self.id)
    }

    /// Server: whether the client sent on this stream in 0-RTT packets, which could be
    /// replayed (RFC 9001 §9.2).
    pub fn is_0rtt(&self) -> bool {
        let mut s = self.conn.shared.lock();
        s.proto(self.conn.id)
            .is_some_and(|c| c.is_0rtt_stream(StreamId(self.id)))
    }

    /// [`Self::poll_read_chunk`] held back by a body consumer's pace: picks up the pacing the
    /// consumer registered for this stream, and returns `Pending` (without registering a
    /// waker: the consumer re-polls at once, see `crate::h3::ReadPace`) while more than
    /// [`PACE_AHEAD`] bytes were handed out and not yet consumed.
    #[cfg(feature = "h3")]
    pub(crate) fn poll_read_chunk_paced(
        &mut self,
        cx: &mut Context<'_>,
        pace: &mut Option<Arc<PaceState>>,
    ) -> Poll<Result<Option<Bytes>, ReadError>> {
        if self.done {
            return Poll::Ready(Ok(None));
        }
        // One lock for the pickup and the read.
        let mut s = self.conn.shared.lock();
        if pace.is_none() {
            if let Some(w) = s.conns.get_mut(&self.conn.id).and_then(ConnState::w_if_any) {
                if !w.paced.is_empty() {
                    *pace = w.paced.remove(&self.id);
                }
            }
        }
        if let Some(p) = pace {
            if p.ahead() >= PACE_AHEAD {
                p.held.store(true, Ordering::Relaxed);
                return Poll::Pending;
            }
        }
        let r = read_locked(
            &mut s,
            self.conn.id,
            self.id,
            &mut self.done,
            cx,
            usize::MAX,
        );
        if let (Some(p), Poll::Ready(Ok(Some(b)))) = (pace, &r) {
            p.handed.fetch_add(b.len() as u64, Ordering::Relaxed);
        }
        r
    }

    /// Polls for up to `max` bytes in order; `None` at the end of the stream.
    ///
    /// # Errors
    /// See [`ReadError`].
    pub fn poll_read_chunk(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
    ) -> Poll<Result<Option<Bytes>, ReadError>> {
        if self.done {
            return Poll::Ready(Ok(None));
        }
        let mut s = self.conn.shared.lock();
        read_locked(&mut s, self.conn.id, self.id, &mut self.done, cx, max)
    }

    /// Reads up to `max` bytes in order, without copying; `None` at the end of the stream.
    ///
    /// # Errors
    /// See [`ReadError`].
    ///
    /// # Cancel safety
    /// Cancel safe: data is taken only when this returns it.
    pub fn read_chunk(&mut self, max: usize) -> ReadChunk<'_> {
        ReadChunk { stream: self, max }
    }

    /// Fills `bufs` from the front with the next chunks of data in order, without copying,
    /// under one lock; returns how many, or `None` at the end of the stream. Waits while
    /// nothing can be read. Chunk boundaries are where data arrived, not the peer's writes.
    ///
    /// # Errors
    /// See [`ReadError`]. A reset is reported as soon as it is known, and the chunks of the
    /// call that sees it are dropped (RFC 9000 §3.2: a reset stream's data may be discarded).
    ///
    /// # Cancel safety
    /// Cancel safe: data is taken only when this returns it.
    pub fn read_chunks<'a>(&'a mut self, bufs: &'a mut [Bytes]) -> ReadChunks<'a> {
        ReadChunks { stream: self, bufs }
    }

    /// The poll-based form of [`RecvStream::read_chunks`].
    ///
    /// # Errors
    /// See [`ReadError`].
    pub fn poll_read_chunks(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &mut [Bytes],
    ) -> Poll<Result<Option<usize>, ReadError>> {
        let mut n = 0;
        let room = if bufs.is_empty() { 0 } else { usize::MAX };
        self.poll_read_each(cx, room, |chunk| {
            bufs[n] = chunk;
            n += 1;
            if n < bufs.len() {
                usize::MAX
            } else {
                0
            }
        })
        .map_ok(|more| more.map(|()| n))
    }

    /// Reads into `buf`; returns how many bytes, or `None` at the end of the stream.
    ///
    /// # Errors
    /// See [`ReadError`].
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub fn read<'a>(&'a mut self, buf: &'a mut [u8]) -> Read<'a> {
        Read { stream: self, buf }
    }

    /// Reads the whole stream, failing if it is longer than `limit` bytes (the stream is then
    /// stopped).
    ///
    /// # Errors
    /// [`ReadToEndError::TooLong`] beyond `limit`; [`ReadToEndError::Read`] otherwise.
    ///
    /// # Cancel safety
    /// Not cancel safe: data read before cancellation is lost.
    pub fn read_to_end(&mut self, limit: usize) -> ReadToEnd<'_> {
        // Straight into the Vec returned: one allocation for a stream that arrives in one
        // chunk.
        ReadToEnd {
            stream: self,
            out: Vec::new(),
            limit,
        }
    }

    /// Appends to `out` everything that can be read now, under one lock: a stream whose data
    /// and end are both there is read to its end in one call.
    fn poll_read_to_end(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Poll<Result<(), ReadToEndError>> {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        {
            let mut s = self.conn.shared.lock();
            let cid = self.conn.id;
            let Some(c) = s.proto(cid) else {
                return Poll::Ready(Err(ReadError::from(lost(&s, cid)).into()));
            };
            // Every chunk there is, through one look-up of the connection.
            let (mut read, mut clock) = (false, Instant::now);
            let last = loop {
                match c.read_with_end(StreamId(self.id), usize::MAX, &mut clock) {
                    Ok(Some((chunk, _))) if out.len() + chunk.len() > limit => break None,
                    Ok(Some((chunk, end))) => {
                        out.extend_from_slice(&chunk);
                        read = true;
                        if end {
                            // The last chunk: the stream is over without a read to say so.
                            break Some(Ok(None));
                        }
                    }
                    Ok(None) => break Some(Ok(None)),
                    Err(e) => break Some(Err(e)),
                }
            };
            if read {
                // Reading may have opened flow-control windows to announce.
                s.wake_driver();
            }
            if let Some(r) = last {
                return settle_read(&mut s, cid, self.id, &mut self.done, cx, r)
                    .map_ok(|_| ())
                    .map_err(Into::into);
            }
        }
        let _ = self.stop(VarInt::from_u32(0));
        Poll::Ready(Err(ReadToEndError::TooLong(limit)))
    }

    /// Copies into `buf` as many received chunks as it has room for, under one lock; `buf`
    /// left unfilled means the end of the stream (or no room). The end found right after data
    /// is reported by the next call.
    fn poll_read_buf(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<Result<(), ReadError>> {
        let room = buf.remaining();
        self.poll_read_each(cx, room, |chunk| {
            buf.put_slice(&chunk);
            buf.remaining()
        })
        .map_ok(|_| ())
    }

    /// Hands `put` the chunks that can be read now, in order, under one lock and through one
    /// look-up of the connection; each is at most `room` bytes, and `put` returns the room
    /// left for the next (0 stops). `Some(())` once data was read (or with no room at all),
    /// `None` at the end of the stream; the end found right after data is reported by the
    /// next call. A reset is reported as soon as it is known, and the chunks of the call that
    /// sees it count for nothing (RFC 9000 §3.2: a reset stream's data may be discarded).
    fn poll_read_each(
        &mut self,
        cx: &mut Context<'_>,
        mut room: usize,
        mut put: impl FnMut(Bytes) -> usize,
    ) -> Poll<Result<Option<()>, ReadError>> {
        if room == 0 {
            return Poll::Ready(Ok(Some(())));
        }
        if self.done {
            return Poll::Ready(Ok(None));
        }
        let mut s = self.conn.shared.lock();
        let cid = self.conn.id;
        let Some(c) = s.proto(cid) else {
            return Poll::Ready(Err(lost(&s, cid).into()));
        };
        let (mut read, mut clock) = (false, Instant::now);
        let last = loop {
            if room == 0 {
                break None;
            }
            match c.read_with_end(StreamId(self.id), room, &mut clock) {
                Ok(Some((chunk, end))) => {
                    room = put(chunk);
                    read = true;
                    if end {
                        break Some(Ok(None));
                    }
                }
                Ok(None) => break Some(Ok(None)),
                Err(e) => break Some(Err(e)),
            }
        };
        match last {
            // The end right after the data: the next call reports it.
            Some(Ok(None)) if read => self.done = true,
            // Out of room, or all there is for now.
            None | Some(Err(proto::ReadError::Blocked)) if read => {}
            // Nothing read (the end, a wait, a reset, a failure), or a reset after data.
            Some(r) => {
                return settle_read(&mut s, cid, self.id, &mut self.done, cx, r)
                    .map_ok(|end| end.map(|_| ()))
            }
            // The loop reads at least once, so it stops on no room only after data.
            None => {}
        }
        // Reading may have opened flow-control windows to announce.
        s.wake_driver();
        Poll::Ready(Ok(Some(())))
    }

    /// Stops reading (STOP_SENDING with `code`, RFC 9000 §19.5); data not yet read is
    /// discarded.
    ///
    /// # Errors
    /// [`ReadError::ClosedStream`] if the stream was already read to the end or stopped.
    pub fn stop(&mut self, code: VarInt) -> Result<(), ReadError> {
        if self.done {
            return Err(ReadError::ClosedStream);
        }
        self.done = true;
        let mut s = self.conn.shared.lock();
        let cid = self.conn.id;
        let Some(c) = s.proto(cid) else {
            return Err(lost(&s, cid).into());
        };
        let r = c.stop(StreamId(self.id), code, Instant::now());
        s.wake_driver();
        r.map_err(|_| ReadError::ClosedStream)
    }
}

/// [`RecvStream::poll_read_chunk`] of stream `id` on connection `cid`, under the lock `s` the
/// caller holds (`*done` is false, and set once the stream ended or was reset).
fn read_locked(
    s: &mut State,
    cid: u64,
    id: u64,
    done: &mut bool,
    cx: &mut Context<'_>,
    max: usize,
) -> Poll<Result<Option<Bytes>, ReadError>> {
    let Some(c) = s.proto(cid) else {
        return Poll::Ready(Err(lost(s, cid).into()));
    };
    let mut clock = Instant::now;
    // A chunk that was the last: its end is taken now, under this lock, and the next call
    // reports it without one (a reader of one chunk per call, h3's among them, otherwise
    // locks once more only to learn of the end, and a stream dropped right after its last
    // chunk would lock to stop what is already over).
    let r = match c.read_with_end(StreamId(id), max, &mut clock) {
        Ok(Some((chunk, end))) => {
            *done |= end;
            Ok(Some(chunk))
        }
        Ok(None) => Ok(None),
        Err(e) => Err(e),
    };
    settle_read(s, cid, id, done, cx, r)
}

/// What a read `r` of stream `id` means for its reader: the driver is woken after data or
/// the end (flow-control windows may open), the task waits for more when there is none.
fn settle_read(
    s: &mut State,
    cid: u64,
    id: u64,
    done: &mut bool,
    cx: &mut Context<'_>,
    r: Result<Option<Bytes>, proto::ReadError>,
) -> Poll<Result<Option<Bytes>, ReadError>> {
    match r {
        Ok(Some(b)) => {
            // Reading may have opened flow-control windows to announce.
            s.wake_driver();
            Poll::Ready(Ok(Some(b)))
        }
        Ok(None) => {
            *done = true;
            s.wake_driver();
            Poll::Ready(Ok(None))
        }
        Err(proto::ReadError::Blocked) => {
            if let Some(st) = s.conns.get_mut(&cid) {
                if let Some(e) = st.error() {
                    return Poll::Ready(Err(e.clone().into()));
                }
                st.w().readable.insert(StreamId(id), cx.waker().clone());
            }
            Poll::Pending
        }
        Err(proto::ReadError::Reset(code)) => {
            *done = true;
            Poll::Ready(Err(ReadError::Reset(code)))
        }
        Err(_) => Poll::Ready(Err(
            match s.conns.get(&cid).and_then(|c| c.error().cloned()) {
                Some(e) => ReadError::ConnectionLost(e),
                None => ReadError::ClosedStream,
            },
        )),
    }
}

impl Drop for RecvStream {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.stop(VarInt::from_u32(0));
        }
        let id = self.id;
        self.conn.release_in(|st| {
            if let Some(w) = st.w_if_any() {
                w.readable.discard(&StreamId(id));
            }
        });
    }
}

impl AsyncRead for RecvStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.get_mut().poll_read_buf(cx, buf).map_err(Into::into)
    }
}

/// How far (bytes) a layer above a stream may read ahead of the consumer of what it reads
/// when the consumer paces it.
#[cfg(feature = "h3")]
pub(crate) const PACE_AHEAD: u64 = 256 << 10;

/// Counters shared by a paced stream reader and the consumer of what it reads.
#[cfg(feature = "h3")]
#[derive(Debug, Default)]
pub(crate) struct PaceState {
    /// Bytes the stream handed to the layer above.
    pub(crate) handed: AtomicU64,
    /// Bytes the consumer took from that layer (or, after a release, the handed count then).
    pub(crate) consumed: AtomicU64,
    /// A read was held back since the consumer last looked.
    pub(crate) held: AtomicBool,
}

#[cfg(feature = "h3")]
impl PaceState {
    pub(crate) fn ahead(&self) -> u64 {
        self.handed
            .load(Ordering::Relaxed)
            .saturating_sub(self.consumed.load(Ordering::Relaxed))
    }
}
