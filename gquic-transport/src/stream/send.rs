//! The send side of a stream's data: what was written, sent, acknowledged and lost
//! (RFC 9000 §2.2, §13.3).

use std::ops::Range;

use bytes::{BufMut, Bytes};

use crate::range_set::RangeSet;
use crate::small_deque::{SmallDeque, SpillPool};

/// Data written to a stream and not yet acknowledged, kept as the `Bytes` the application gave
/// (no copy until it is written into a packet).
#[derive(Debug, Default)]
pub struct SendBuffer {
    /// Unacknowledged chunks with the stream offset each starts at, ascending.
    chunks: SmallDeque<(u64, Bytes)>,
    /// Everything below this offset is acknowledged and released.
    acked_prefix: u64,
    /// Total bytes written: the offset the next write starts at.
    end: u64,
    /// Everything below this offset was sent at least once.
    unsent: u64,
    /// Acknowledged ranges above `acked_prefix`.
    acked: RangeSet,
    /// Ranges declared lost, to be sent again before new data.
    retransmits: RangeSet,
}

impl SendBuffer {
    /// Whether everything written is acknowledged and nothing waits to be sent again.
    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    pub(crate) fn is_quiet(&self) -> bool {
        self.is_fully_acked() && !self.has_pending(u64::MAX)
    }

    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    /// Writes a quiet buffer out (connection hibernation): only where it ends.
    pub(crate) fn pack(&self, p: &mut crate::pack::Packer) -> crate::pack::Packed {
        p.require(self.is_quiet())?;
        p.u64(self.end);
        Some(())
    }

    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    /// Reads back what [`SendBuffer::pack`] wrote.
    pub(crate) fn unpack(u: &mut crate::pack::Unpacker<'_>) -> Option<Self> {
        Some(Self::resume_at(u.u64()?))
    }

    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `data` at the end of the stream.
    pub fn write(&mut self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        let len = data.len() as u64;
        self.chunks.push_back((self.end, data));
        self.end += len;
    }

    /// Lends the chunk queue spill room from `pool` if its next write would allocate some.
    pub(crate) fn spill_from<const N: usize>(&mut self, pool: &mut SpillPool<(u64, Bytes), N>) {
        pool.lend(&mut self.chunks);
    }

    /// Gives the chunk queue's spill room back to `pool` (the stream is closed).
    pub(crate) fn spill_into<const N: usize>(&mut self, pool: &mut SpillPool<(u64, Bytes), N>) {
        pool.keep(&mut self.chunks);
    }

    /// An empty buffer whose stream already carried `offset` bytes, all of them acknowledged
    /// (a stream whose buffer was released while idle, taken up again).
    pub fn resume_at(offset: u64) -> Self {
        Self {
            acked_prefix: offset,
            end: offset,
            unsent: offset,
            ..Self::default()
        }
    }

    /// The offset the next write starts at (bytes written so far).
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Bytes held: written but not yet acknowledged.
    pub fn buffered(&self) -> u64 {
        self.end - self.acked_prefix
    }

    /// The offset below which everything was sent at least once.
    pub fn sent_offset(&self) -> u64 {
        self.unsent
    }

    /// Whether there is anything to (re)send, given that new data may go up to `limit` (the
    /// stream's flow-control limit; retransmissions are not limited).
    pub fn has_pending(&self, limit: u64) -> bool {
        !self.retransmits.is_empty() || self.unsent < self.end.min(limit)
    }

    /// Whether every written byte has been acknowledged.
    pub fn is_fully_acked(&self) -> bool {
        self.acked_prefix == self.end
    }

    /// Takes the next range to send, at most `max_len` bytes: lost data first, then new data up
    /// to `limit`. The range is considered sent from now on.
    #[inline]
    pub fn poll_transmit(&mut self, max_len: usize, limit: u64) -> Option<Range<u64>> {
        if max_len == 0 {
            return None;
        }
        if let Some(lost) = self.retransmits.first() {
            let end = lost.end.min(lost.start + max_len as u64);
            self.retransmits.remove(lost.start..end);
            return Some(lost.start..end);
        }
        let stop = self.end.min(limit);
        if self.unsent >= stop {
            return None;
        }
        let start = self.unsent;
        let end = stop.min(start + max_len as u64);
        self.unsent = end;
        Some(start..end)
    }

    /// Copies the bytes of `range` (which must lie within unacknowledged data) into `out`.
    pub fn copy_range<B: BufMut>(&self, range: Range<u64>, out: &mut B) {
        let mut pos = range.start;
        let first = self
            .chunks
            .partition_point(|(start, data)| start + data.len() as u64 <= pos);
        for (start, data) in self.chunks.iter_from(first) {
            if pos >= range.end {
                break;
            }
            let from = (pos - start) as usize;
            let to = ((range.end - start) as usize).min(data.len());
            out.put_slice(&data[from..to]);
            pos = start + to as u64;
        }
        debug_assert_eq!(pos, range.end, "range outside buffered data");
    }

    /// The bytes of `range` where they lie, when one written chunk holds them all (the range
    /// must lie within unacknowledged data).
    pub fn slice(&self, range: Range<u64>) -> Option<&[u8]> {
        let i = self
            .chunks
            .partition_point(|(start, data)| start + data.len() as u64 <= range.start);
        let (start, data) = self.chunks.iter_from(i).next()?;
        let from = usize::try_from(range.start.checked_sub(*start)?).ok()?;
        let to = usize::try_from(range.end.checked_sub(*start)?).ok()?;
        data.get(from..to)
    }

    /// Records that `range` was acknowledged; releases data acknowledged from the front.
    pub fn ack(&mut self, range: Range<u64>) {
        let range = range.start.max(self.acked_prefix)..range.end.min(self.end);
        if range.is_empty() {
            return;
        }
        self.retransmits.remove(range.clone());
        if range.start == self.acked_prefix {
            // In order (the common case): the prefix grows and the set is not touched, which
            // for a small stream means it never allocates.
            self.acked_prefix = range.end;
        } else {
            self.acked.insert(range);
        }
        // Ranges acknowledged earlier that the prefix now reaches join it.
        while let Some(first) = self.acked.first() {
            if first.start > self.acked_prefix {
                break;
            }
            self.acked.pop_first();
            self.acked_prefix = self.acked_prefix.max(first.end);
        }
        // Release chunks now entirely acknowledged; trim a partially acknowledged front chunk.
        while let Some((start, data)) = self.chunks.front_mut() {
            let chunk_end = *start + data.len() as u64;
            if chunk_end <= self.acked_prefix {
                self.chunks.pop_front();
            } else {
                if *start < self.acked_prefix {
                    let skip = (self.acked_prefix - *start) as usize;
                    *data = data.slice(skip..);
                    *start = self.acked_prefix;
                }
                break;
            }
        }
    }

    /// Records that `range` was lost: it will be sent again, except parts acknowledged since.
    pub fn lost(&mut self, range: Range<u64>) {
        let range = range.start.max(self.acked_prefix)..range.end.min(self.unsent);
        if range.is_empty() {
            return;
        }
        self.retransmits.insert(range.clone());
        let acked: Vec<Range<u64>> = self.acked.overlapping(range).collect();
        for r in acked {
            self.retransmits.remove(r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn collect(buf: &SendBuffer, r: Range<u64>) -> Vec<u8> {
        let mut out = Vec::new();
        buf.copy_range(r, &mut out);
        out
    }

    #[test]
    fn send_ack_release() {
        let mut b = SendBuffer::new();
        b.write(Bytes::from_static(b"hello "));
        b.write(Bytes::from_static(b"world"));
        assert_eq!(b.end(), 11);
        let r = b.poll_transmit(4, u64::MAX).unwrap();
        assert_eq!(r, 0..4);
        assert_eq!(collect(&b, 3..9), b"lo wor");
        let r2 = b.poll_transmit(100, 8).unwrap();
        assert_eq!(r2, 4..8, "flow control limits new data");
        assert!(!b.has_pending(8));
        assert!(b.has_pending(11));
        b.ack(4..8);
        assert_eq!(b.buffered(), 11);
        b.lost(0..8);
        assert_eq!(
            b.poll_transmit(100, 8),
            Some(0..4),
            "only the unacked part is resent"
        );
        b.ack(0..4);
        assert_eq!(b.buffered(), 3);
        assert_eq!(collect(&b, 8..11), b"rld");
        assert_eq!(b.poll_transmit(100, u64::MAX), Some(8..11));
        b.ack(8..11);
        assert!(b.is_fully_acked());
        assert!(b.chunks.is_empty());
    }

    proptest! {
        /// Whatever order of sends, losses and acks, every byte is eventually sent and
        /// acknowledged with the right content, and nothing is sent after being acked.
        #[test]
        fn eventually_delivers(
            writes in proptest::collection::vec(1usize..50, 1..10),
            events in proptest::collection::vec((0u8..3, 1usize..30), 0..80),
        ) {
            let mut b = SendBuffer::new();
            let mut expected = Vec::new();
            for (i, n) in writes.iter().enumerate() {
                let chunk: Vec<u8> = (0..*n).map(|j| (i * 31 + j) as u8).collect();
                expected.extend_from_slice(&chunk);
                b.write(chunk.into());
            }
            let mut in_flight: Vec<Range<u64>> = Vec::new();
            let mut received = vec![None; expected.len()];
            let mut step = |b: &mut SendBuffer, in_flight: &mut Vec<Range<u64>>, op: u8, n: usize| {
                match op {
                    0 => if let Some(r) = b.poll_transmit(n, u64::MAX) {
                        let mut data = Vec::new();
                        b.copy_range(r.clone(), &mut data);
                        for (k, byte) in data.into_iter().enumerate() {
                            received[r.start as usize + k] = Some(byte);
                        }
                        in_flight.push(r);
                    },
                    1 => if !in_flight.is_empty() {
                        let r = in_flight.remove(n % in_flight.len());
                        b.ack(r);
                    },
                    _ => if !in_flight.is_empty() {
                        let r = in_flight.remove(n % in_flight.len());
                        b.lost(r);
                    },
                }
            };
            for (op, n) in events {
                step(&mut b, &mut in_flight, op, n);
            }
            // Drain: send everything, ack everything.
            for _ in 0..10_000 {
                if b.is_fully_acked() { break; }
                step(&mut b, &mut in_flight, 0, 7);
                while !in_flight.is_empty() { step(&mut b, &mut in_flight, 1, 0); }
                // Anything lost earlier and still pending goes again.
            }
            prop_assert!(b.is_fully_acked());
            let got: Vec<u8> = received.into_iter().map(|b| b.unwrap()).collect();
            prop_assert_eq!(got, expected);
        }
    }
}
