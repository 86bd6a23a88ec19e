//! The receive side of a stream's data: out-of-order reassembly (RFC 9000 §2.2), final size
//! (§4.5) and per-stream flow control (§4.1).

use std::collections::VecDeque;

use bytes::Bytes;

use crate::error::TransportErrorCode;
use crate::small_deque::{SmallDeque, SpillPool};

/// Reassembles stream data that may arrive out of order, duplicated or overlapping, holding
/// only zero-copy slices of the packets it came in.
///
/// Data contiguous with what was delivered waits in a queue whose memory is reused, so a
/// stream arriving in order costs no allocation per packet; only data beyond a gap goes into
/// an ordered map until the gap is filled.
#[derive(Debug, Default)]
pub struct Assembler {
    /// The chunks of `[read, contiguous_end)`, in order.
    contiguous: SmallDeque<Bytes>,
    /// One past the last byte of `contiguous`.
    contiguous_end: u64,
    /// Non-overlapping chunks beyond a gap, all starting after `contiguous_end`, with their
    /// stream offsets, in order. A queue rather than a tree: after a loss the chunks behind
    /// the gap mostly arrive in order (appended) and leave in order once it fills, and the
    /// queue keeps its memory from one loss to the next, where a B-tree allocated a node
    /// every few chunks (hundreds of allocations per loss burst at a few Gbit/s). `None`
    /// until a first gap: most streams never have one, and dropping an empty `VecDeque`
    /// costs some 35 instructions.
    chunks: Option<VecDeque<(u64, Bytes)>>,
    /// Bytes delivered to the application.
    read: u64,
    /// Bytes held in `contiguous` and `chunks`.
    buffered: u64,
}

/// Room for chunks beyond a gap that an assembler keeps once the gap is filled (40 KiB; a
/// larger burst's room is let go).
const KEEP_CHUNKS: usize = 1024;

impl Assembler {
    /// An empty assembler.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty assembler whose stream was already read up to `offset` (one released while
    /// idle, taken up again).
    pub fn resume_at(offset: u64) -> Self {
        Self {
            contiguous_end: offset,
            read: offset,
            ..Self::default()
        }
    }

    /// The offset of the next byte to deliver.
    pub fn read_offset(&self) -> u64 {
        self.read
    }

    /// Bytes buffered out of order or not yet read.
    pub fn buffered(&self) -> u64 {
        self.buffered
    }

    /// Number of separate chunks held (what fragmentation costs in bookkeeping).
    pub fn chunk_count(&self) -> usize {
        self.contiguous.len() + self.chunks.as_ref().map_or(0, VecDeque::len)
    }

    /// Lends the in-order queue spill room from `pool` if its next chunk would allocate some.
    pub(crate) fn spill_from<const N: usize>(&mut self, pool: &mut SpillPool<Bytes, N>) {
        pool.lend(&mut self.contiguous);
    }

    /// Gives the in-order queue's spill room back to `pool` (the stream is closed).
    pub(crate) fn spill_into<const N: usize>(&mut self, pool: &mut SpillPool<Bytes, N>) {
        pool.keep(&mut self.contiguous);
    }

    /// Adds `data` at `offset`, keeping only bytes not already delivered or held.
    pub fn insert(&mut self, mut offset: u64, mut data: Bytes) {
        // Drop what is already delivered or waiting in order.
        if offset < self.contiguous_end {
            let skip = (self.contiguous_end - offset).min(data.len() as u64) as usize;
            data = data.slice(skip..);
            offset = self.contiguous_end;
        }
        if data.is_empty() {
            return;
        }
        if offset == self.contiguous_end {
            self.push_contiguous(data);
            self.absorb();
            return;
        }
        // Beyond a gap: fill only the gaps between chunks already held.
        let chunks = self.chunks.get_or_insert_with(VecDeque::new);
        while !data.is_empty() {
            let end = offset + data.len() as u64;
            // The first held chunk that starts after `offset`.
            let i = chunks.partition_point(|(s, _)| *s <= offset);
            // A held chunk that starts at or before `offset` and covers it.
            if let Some((s, held)) = i.checked_sub(1).and_then(|j| chunks.get(j)) {
                let held_end = s + held.len() as u64;
                if held_end > offset {
                    let skip = (held_end - offset).min(data.len() as u64) as usize;
                    data = data.slice(skip..);
                    offset += skip as u64;
                    continue;
                }
            }
            // The next held chunk, if it starts before our end, bounds this piece.
            let piece_end = chunks.get(i).map_or(end, |(s, _)| (*s).min(end));
            let len = (piece_end - offset) as usize;
            let piece = data.split_to(len);
            self.buffered += piece.len() as u64;
            chunks.insert(i, (offset, piece));
            offset = piece_end;
        }
    }

    fn push_contiguous(&mut self, data: Bytes) {
        self.contiguous_end += data.len() as u64;
        self.buffered += data.len() as u64;
        self.contiguous.push_back(data);
    }

    /// Moves the held chunks that the contiguous data now reaches into the queue.
    fn absorb(&mut self) {
        // Taken out for the loop (and put back below), so that `push_contiguous` can run on
        // `self` meanwhile.
        let Some(mut chunks) = self.chunks.take() else {
            return;
        };
        while let Some(&(start, _)) = chunks.front() {
            if start > self.contiguous_end {
                break;
            }
            let Some((_, mut data)) = chunks.pop_front() else {
                break;
            };
            self.buffered -= data.len() as u64;
            let skip = (self.contiguous_end - start).min(data.len() as u64) as usize;
            data = data.slice(skip..);
            if !data.is_empty() {
                self.push_contiguous(data);
            }
        }
        if chunks.is_empty() && chunks.capacity() > KEEP_CHUNKS {
            // A burst beyond the usual: its memory goes, the usual room stays.
            chunks.shrink_to(KEEP_CHUNKS);
        }
        self.chunks = Some(chunks);
    }

    /// Whether the next byte to deliver has arrived ([`Assembler::read`] gives data).
    pub fn has_readable(&self) -> bool {
        !self.contiguous.is_empty()
    }

    /// Takes the next contiguous data, at most `max` bytes, or `None` if the next byte has not
    /// arrived.
    pub fn read(&mut self, max: usize) -> Option<Bytes> {
        if max == 0 {
            return None;
        }
        let front = self.contiguous.front_mut()?;
        let data = if front.len() > max {
            front.split_to(max)
        } else {
            self.contiguous.pop_front()?
        };
        self.read += data.len() as u64;
        self.buffered -= data.len() as u64;
        Some(data)
    }

    /// Discards everything buffered (the stream was reset or stopped).
    pub fn clear(&mut self) {
        self.contiguous.clear();
        self.chunks = None;
        self.contiguous_end = self.read;
        self.buffered = 0;
    }
}

/// The state of a stream's receive side that the peer's frames drive: data, final size and
/// flow control.
#[derive(Debug)]
pub struct RecvStream {
    /// Reassembly of the data.
    pub assembler: Assembler,
    /// One past the highest byte received (what counts toward connection flow control).
    highest: u64,
    /// The final size, once known (RFC 9000 §4.5).
    final_size: Option<u64>,
    /// The flow-control limit advertised to the peer.
    max_data: u64,
}

impl RecvStream {
    /// Whether nothing is buffered (read or not).
    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    pub(crate) fn is_quiet(&self) -> bool {
        self.assembler.buffered() == 0 && self.assembler.chunk_count() == 0
    }

    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    /// Writes a quiet stream out (connection hibernation): its offsets and limits.
    pub(crate) fn pack(&self, p: &mut crate::pack::Packer) -> crate::pack::Packed {
        p.require(self.is_quiet())?;
        p.u64(self.assembler.read_offset());
        p.u64(self.highest);
        p.opt_u64(self.final_size);
        p.u64(self.max_data);
        Some(())
    }

    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    /// Reads back what [`RecvStream::pack`] wrote.
    pub(crate) fn unpack(u: &mut crate::pack::Unpacker<'_>) -> Option<Self> {
        Some(Self {
            assembler: Assembler::resume_at(u.u64()?),
            highest: u.u64()?,
            final_size: u.opt_u64()?,
            max_data: u.u64()?,
        })
    }

    /// A receive side with `max_data` as the initial flow-control limit.
    pub fn new(max_data: u64) -> Self {
        Self {
            assembler: Assembler::new(),
            highest: 0,
            final_size: None,
            max_data,
        }
    }

    /// One past the highest offset received.
    pub fn highest(&self) -> u64 {
        self.highest
    }

    /// The final size, if the peer has sent it.
    pub fn final_size(&self) -> Option<u64> {
        self.final_size
    }

    /// The current flow-control limit.
    pub fn max_data(&self) -> u64 {
        self.max_data
    }

    /// Raises the flow-control limit (when a MAX_STREAM_DATA frame is sent).
    pub fn set_max_data(&mut self, max_data: u64) {
        self.max_data = self.max_data.max(max_data);
    }

    /// Whether every byte up to the final size has been delivered.
    pub fn is_finished(&self) -> bool {
        self.final_size == Some(self.assembler.read_offset())
    }

    /// Checks and records the end of data at `end` (with `fin`), without buffering it;
    /// returns how far `highest` moved (bytes to count toward connection flow control).
    ///
    /// # Errors
    /// FLOW_CONTROL_ERROR past the limit (RFC 9000 §4.1); FINAL_SIZE_ERROR if the data goes
    /// past a known final size, or a final size changes or falls below data received (§4.5).
    pub fn check_end(&mut self, end: u64, fin: bool) -> Result<u64, TransportErrorCode> {
        if let Some(final_size) = self.final_size {
            if end > final_size || (fin && end != final_size) {
                return Err(TransportErrorCode::FINAL_SIZE_ERROR);
            }
        }
        if fin && end < self.highest {
            return Err(TransportErrorCode::FINAL_SIZE_ERROR);
        }
        if end > self.max_data {
            return Err(TransportErrorCode::FLOW_CONTROL_ERROR);
        }
        if fin {
            self.final_size = Some(end);
        }
        let grew = end.saturating_sub(self.highest);
        self.highest = self.highest.max(end);
        Ok(grew)
    }

    /// Ingests a STREAM frame's data; returns how far `highest` moved.
    ///
    /// # Errors
    /// As [`RecvStream::check_end`].
    pub fn ingest(
        &mut self,
        offset: u64,
        data: Bytes,
        fin: bool,
    ) -> Result<u64, TransportErrorCode> {
        let grew = self.check_end(offset + data.len() as u64, fin)?;
        self.assembler.insert(offset, data);
        Ok(grew)
    }

    /// Applies a RESET_STREAM's final size (RFC 9000 §4.5, §19.4); returns how far `highest`
    /// moved. Buffered data is discarded.
    ///
    /// # Errors
    /// As [`RecvStream::check_end`].
    pub fn reset(&mut self, final_size: u64) -> Result<u64, TransportErrorCode> {
        let grew = self.check_end(final_size, true)?;
        self.assembler.clear();
        Ok(grew)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The capacity of the out-of-order queue (0 before it first exists).
    fn room_of(a: &Assembler) -> usize {
        a.chunks.as_ref().map_or(0, VecDeque::capacity)
    }

    #[test]
    fn reassembles_out_of_order() {
        let mut a = Assembler::new();
        a.insert(5, Bytes::from_static(b"fghij"));
        assert_eq!(a.read(100), None);
        a.insert(0, Bytes::from_static(b"abcdefg"));
        assert_eq!(a.buffered(), 10);
        assert_eq!(&a.read(3).unwrap()[..], b"abc");
        // The in-order data is kept whole; the held chunk keeps only what it adds.
        assert_eq!(&a.read(100).unwrap()[..], b"defg");
        assert_eq!(&a.read(100).unwrap()[..], b"hij");
        assert_eq!(a.read(100), None);
        a.insert(2, Bytes::from_static(b"cdefghijkl"));
        assert_eq!(&a.read(100).unwrap()[..], b"kl");
        assert_eq!(a.buffered(), 0);
    }

    /// A loss burst: chunks behind a gap, some duplicated and some out of order, then the
    /// gap filled. Everything comes out in order; the room for held chunks stays for the
    /// next burst (no allocation per burst), and a burst beyond the usual gives back what it
    /// took beyond [`KEEP_CHUNKS`].
    #[test]
    fn held_chunks_keep_their_room_from_one_loss_to_the_next() {
        let chunk = |i: u64| Bytes::from(vec![i as u8; 10]);
        let mut a = Assembler::new();
        let mut next = 0u64;
        for (burst, held) in [(0, 200u64), (1, 200), (2, 5000)] {
            let gap = next;
            // Chunks 1..=held behind the gap, the 5th before the 4th, each 7th twice.
            let mut order: Vec<u64> = (1..=held).collect();
            order.swap(3, 4);
            for &i in &order {
                a.insert((gap + i) * 10, chunk(gap + i));
                if i % 7 == 0 {
                    a.insert((gap + i) * 10 + 3, chunk(gap + i).slice(3..));
                }
            }
            assert_eq!(a.chunk_count(), held as usize, "burst {burst}");
            let room = room_of(&a);
            a.insert(gap * 10, chunk(gap));
            let mut out = Vec::new();
            while let Some(d) = a.read(usize::MAX) {
                out.extend_from_slice(&d);
            }
            let want: Vec<u8> = (gap..=gap + held).flat_map(|i| [i as u8; 10]).collect();
            assert_eq!(out, want, "burst {burst}");
            assert_eq!(a.buffered(), 0);
            if held <= KEEP_CHUNKS as u64 {
                assert_eq!(room_of(&a), room, "the room stays");
            } else {
                assert!(room_of(&a) < room && room_of(&a) >= KEEP_CHUNKS);
            }
            next = gap + held + 1;
        }
    }

    #[test]
    fn rfc9000_final_size_rules() {
        let mut r = RecvStream::new(100);
        assert_eq!(r.ingest(0, Bytes::from_static(b"hello"), false), Ok(5));
        assert_eq!(r.ingest(10, Bytes::from_static(b"x"), true), Ok(6));
        assert_eq!(r.final_size(), Some(11));
        // Data beyond the final size, a changed final size, an earlier final size.
        assert_eq!(
            r.ingest(11, Bytes::from_static(b"y"), false),
            Err(TransportErrorCode::FINAL_SIZE_ERROR)
        );
        assert_eq!(
            r.ingest(5, Bytes::from_static(b"ab"), true),
            Err(TransportErrorCode::FINAL_SIZE_ERROR)
        );
        assert_eq!(r.reset(12), Err(TransportErrorCode::FINAL_SIZE_ERROR));
        assert_eq!(r.reset(11), Ok(0));

        let mut r = RecvStream::new(100);
        r.ingest(0, Bytes::from_static(b"0123456789"), false)
            .unwrap();
        assert_eq!(
            r.ingest(0, Bytes::from_static(b"01"), true),
            Err(TransportErrorCode::FINAL_SIZE_ERROR),
            "final size below data received"
        );
        assert_eq!(
            r.ingest(99, Bytes::from_static(b"ab"), false),
            Err(TransportErrorCode::FLOW_CONTROL_ERROR)
        );
        assert_eq!(r.ingest(98, Bytes::from_static(b"ab"), false), Ok(90));
    }

    proptest! {
        /// Any set of (possibly overlapping, duplicated, reordered) pieces of a message
        /// reassembles to the message, and nothing is ever delivered twice.
        #[test]
        fn reassembly_matches(msg in proptest::collection::vec(any::<u8>(), 1..300),
                              pieces in proptest::collection::vec((any::<prop::sample::Index>(), 0usize..64), 1..60),
                              reads in proptest::collection::vec(1usize..50, 1..20)) {
            let mut a = Assembler::new();
            let mut out = Vec::new();
            let mut reads = reads.into_iter().cycle();
            // The pieces, then the whole message once more so everything arrives.
            let all = pieces.iter().map(|(i, len)| { let s = i.index(msg.len()); (s, (s + len).min(msg.len())) }).chain(std::iter::once((0, msg.len())));
            for (s, e) in all {
                a.insert(s as u64, Bytes::copy_from_slice(&msg[s..e]));
                while let Some(d) = a.read(reads.next().unwrap()) {
                    out.extend_from_slice(&d);
                }
                prop_assert!(a.buffered() <= msg.len() as u64);
            }
            prop_assert_eq!(out, msg);
            prop_assert_eq!(a.buffered(), 0);
        }
    }
}
