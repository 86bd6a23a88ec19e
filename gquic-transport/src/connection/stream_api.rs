//! The application's stream commands on a [`Connection`]: open and accept streams, write,
//! finish, reset, read and stop.

use std::time::Instant;

use bytes::Bytes;

use super::{Connection, ReadError, WriteError};
use crate::wire::VarInt;
use crate::{Dir, StreamId};

impl Connection {
    /// Opens a stream, or `None` if the peer's stream limit is reached (an
    /// [`StreamEvent::Available`](super::StreamEvent::Available) event follows when it rises) or the connection is closed.
    pub fn open(&mut self, dir: Dir) -> Option<StreamId> {
        if self.is_closed() {
            return None;
        }
        self.streams.open(dir)
    }

    /// Whether all stream data and FINs written so far were acknowledged by the peer: a
    /// connection can then be closed without cutting off a response (RFC 9114 §5.2).
    pub fn all_sent_acked(&self) -> bool {
        self.streams.all_sent_acked()
    }

    /// How many more streams of `dir` can be opened now under the peer's limit (0 once the
    /// connection is closed).
    pub fn streams_available(&self, dir: Dir) -> u64 {
        if self.is_closed() {
            return 0;
        }
        self.streams.available(dir)
    }

    /// Takes the next stream the peer opened.
    pub fn accept(&mut self, dir: Dir) -> Option<StreamId> {
        self.streams.accept(dir)
    }

    /// Writes to a stream; returns how many bytes were taken (the rest waits for
    /// [`StreamEvent::Writable`](super::StreamEvent::Writable)).
    ///
    /// # Errors
    /// See [`WriteError`].
    pub fn write(&mut self, id: StreamId, mut data: Bytes) -> Result<usize, WriteError> {
        self.write_from(id, &mut data)
    }

    /// [`Connection::write`] that takes what it can from the front of `data` and leaves the
    /// rest there. Taking all of it moves the buffer in without touching its reference count
    /// (a `Bytes` made from a `Vec` would otherwise allocate on its first clone).
    ///
    /// # Errors
    /// See [`WriteError`].
    pub fn write_from(&mut self, id: StreamId, data: &mut Bytes) -> Result<usize, WriteError> {
        if self.is_closed() {
            return Err(WriteError::ClosedStream);
        }
        self.streams.write_from(id, data)
    }

    /// [`Connection::write`] of the front of `data`, copying only what flow control and the
    /// send window take now.
    ///
    /// # Errors
    /// See [`WriteError`].
    pub fn write_slice(&mut self, id: StreamId, data: &[u8]) -> Result<usize, WriteError> {
        self.write_vectored(id, &[data], usize::MAX)
    }

    /// [`Connection::write_slice`] of the slices one after the other, as one chunk of at most
    /// `max` bytes.
    ///
    /// # Errors
    /// See [`WriteError`].
    pub fn write_vectored<T: std::ops::Deref<Target = [u8]>>(
        &mut self,
        id: StreamId,
        data: &[T],
        max: usize,
    ) -> Result<usize, WriteError> {
        if self.is_closed() {
            return Err(WriteError::ClosedStream);
        }
        let len = data.iter().map(|d| d.len()).sum::<usize>().min(max);
        self.streams
            .write_with(id, len, |n| crate::small_copy::copy_parts(data, n))
    }

    /// Ends a stream after the data written so far.
    ///
    /// # Errors
    /// See [`WriteError`].
    pub fn finish(&mut self, id: StreamId) -> Result<(), WriteError> {
        self.streams.finish(id)
    }

    /// Abandons sending on a stream (RESET_STREAM).
    ///
    /// # Errors
    /// [`WriteError::ClosedStream`] if there is nothing to reset.
    pub fn reset(&mut self, id: StreamId, code: VarInt) -> Result<(), WriteError> {
        self.streams.reset(id, code)
    }

    /// Reads up to `max` bytes from a stream; `Ok(None)` at the end.
    ///
    /// # Errors
    /// See [`ReadError`].
    pub fn read(
        &mut self,
        id: StreamId,
        max: usize,
        now: Instant,
    ) -> Result<Option<Bytes>, ReadError> {
        self.read_with_clock(id, max, &mut || now)
    }

    /// [`Connection::read`] asking `clock` for the time only when a flow-control window
    /// update is due, which a small read seldom needs (a runtime's clock is a system call
    /// away).
    ///
    /// # Errors
    /// See [`ReadError`].
    pub fn read_with_clock(
        &mut self,
        id: StreamId,
        max: usize,
        clock: &mut dyn FnMut() -> Instant,
    ) -> Result<Option<Bytes>, ReadError> {
        let rtt = self.rtt.smoothed();
        self.streams.read_with_clock(id, max, clock, rtt)
    }

    /// [`Connection::read_with_clock`], also telling whether the chunk read is the stream's
    /// last: the stream is then over, and is not read again (the read that would only have
    /// found its end is saved).
    ///
    /// # Errors
    /// See [`ReadError`].
    pub fn read_with_end(
        &mut self,
        id: StreamId,
        max: usize,
        clock: &mut dyn FnMut() -> Instant,
    ) -> Result<Option<(Bytes, bool)>, ReadError> {
        let rtt = self.rtt.smoothed();
        self.streams.read_with_end(id, max, clock, rtt)
    }

    /// Stops reading a stream (STOP_SENDING).
    ///
    /// # Errors
    /// [`ReadError::ClosedStream`] if the stream is not readable.
    pub fn stop(&mut self, id: StreamId, code: VarInt, now: Instant) -> Result<(), ReadError> {
        let rtt = self.rtt.smoothed();
        self.streams.stop(id, code, now, rtt)
    }
}
