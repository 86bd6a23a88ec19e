//! ACK frames (RFC 9000 §19.3), decoded without allocating: the ranges stay encoded in a
//! [`Bytes`] slice of the packet and are walked by [`AckIter`].

use std::ops::RangeInclusive;

use bytes::{Buf, BufMut, Bytes};

use super::{FrameType, VarInt};
use crate::wire::{varint, DecodeError};

/// ECN counts carried by an ACK frame of type 0x03 (RFC 9000 §19.3.2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct EcnCounts {
    /// Packets received with the ECT(0) codepoint.
    pub ect0: u64,
    /// Packets received with the ECT(1) codepoint.
    pub ect1: u64,
    /// Packets received with the ECN-CE codepoint.
    pub ce: u64,
}

/// An ACK frame (RFC 9000 §19.3).
#[derive(Clone, PartialEq, Eq)]
pub struct Ack {
    /// The largest packet number acknowledged.
    pub largest: u64,
    /// The encoded ACK Delay (scale it by the peer's `ack_delay_exponent`, RFC 9000 §19.3).
    pub delay: u64,
    /// ECN counts, for frame type 0x03.
    pub ecn: Option<EcnCounts>,
    /// Number of (gap, range) pairs after the first range.
    range_count: u64,
    /// The First ACK Range field followed by the (Gap, ACK Range Length) pairs, as encoded.
    ranges: Bytes,
}

impl Ack {
    /// Builds an ACK for `ranges`: disjoint, non-adjacent packet-number ranges in ascending
    /// order (as a receiver tracks them). Returns `None` if `ranges` is empty, unordered, or
    /// overlapping.
    pub fn from_ranges(
        ranges: &[RangeInclusive<u64>],
        delay: u64,
        ecn: Option<EcnCounts>,
    ) -> Option<Self> {
        let mut encoded = Vec::with_capacity(ranges.len() * 2 + 8);
        let largest = encode_ranges(ranges, &mut encoded)?;
        Some(Self {
            largest,
            delay,
            ecn,
            range_count: ranges.len() as u64 - 1,
            ranges: encoded.into(),
        })
    }

    /// The acknowledged ranges, highest first.
    pub fn iter(&self) -> AckIter {
        let mut data = self.ranges.clone();
        // Validated on decode / construction, so these cannot fail.
        let first = VarInt::decode(&mut data).map_or(0, VarInt::into_inner);
        AckIter {
            data,
            next: Some(self.largest.saturating_sub(first)..=self.largest),
            remaining: self.range_count,
        }
    }

    /// Number of ranges (at least one).
    pub fn range_count(&self) -> u64 {
        self.range_count + 1
    }

    /// The frame type: 0x02, or 0x03 when ECN counts are present.
    pub fn frame_type(&self) -> FrameType {
        if self.ecn.is_some() {
            FrameType::ACK_ECN
        } else {
            FrameType::ACK
        }
    }

    pub(super) fn decode(ty: FrameType, buf: &mut Bytes) -> Result<Self, DecodeError> {
        let err = |reason| DecodeError::InvalidFrame {
            frame_type: ty.0,
            reason,
        };
        let largest = VarInt::decode(buf)?.into_inner();
        let delay = VarInt::decode(buf)?.into_inner();
        let range_count = VarInt::decode(buf)?.into_inner();
        // Walk the ranges once to validate them and find where they end. Each range takes at
        // least two bytes, so a huge count runs out of input quickly.
        let start_len = buf.remaining();
        let mut probe: &[u8] = &buf[..];
        let first = VarInt::decode(&mut probe)?.into_inner();
        if first > largest {
            return Err(err("first ACK range below packet number 0"));
        }
        let mut smallest = largest - first;
        for _ in 0..range_count {
            let gap = VarInt::decode(&mut probe)?.into_inner();
            let len = VarInt::decode(&mut probe)?.into_inner();
            // RFC 9000 §19.3.1: largest = previous smallest - gap - 2; smallest = largest - len.
            smallest = smallest
                .checked_sub(gap)
                .and_then(|v| v.checked_sub(2))
                .and_then(|v| v.checked_sub(len))
                .ok_or_else(|| err("ACK range below packet number 0"))?;
        }
        let consumed = start_len - probe.len();
        let ranges = buf.split_to(consumed);
        let ecn = if ty == FrameType::ACK_ECN {
            Some(EcnCounts {
                ect0: VarInt::decode(buf)?.into_inner(),
                ect1: VarInt::decode(buf)?.into_inner(),
                ce: VarInt::decode(buf)?.into_inner(),
            })
        } else {
            None
        };
        Ok(Self {
            largest,
            delay,
            ecn,
            range_count,
            ranges,
        })
    }

    pub(super) fn encode<B: BufMut>(&self, buf: &mut B) {
        varint::encode(self.frame_type().0, buf);
        varint::encode(self.largest, buf);
        varint::encode(self.delay, buf);
        varint::encode(self.range_count, buf);
        buf.put_slice(&self.ranges);
        if let Some(ecn) = &self.ecn {
            encode_ecn(ecn, buf);
        }
    }

    pub(super) fn encoded_len(&self) -> usize {
        1 + varint::size(self.largest)
            + varint::size(self.delay)
            + varint::size(self.range_count)
            + self.ranges.len()
            + self.ecn.as_ref().map_or(0, |e| {
                varint::size(e.ect0) + varint::size(e.ect1) + varint::size(e.ce)
            })
    }
}

impl std::fmt::Debug for Ack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ack")
            .field("delay", &self.delay)
            .field("ecn", &self.ecn)
            .field("ranges", &self.iter().collect::<Vec<_>>())
            .finish()
    }
}

fn encode_ecn<B: BufMut>(ecn: &EcnCounts, buf: &mut B) {
    varint::encode(ecn.ect0, buf);
    varint::encode(ecn.ect1, buf);
    varint::encode(ecn.ce, buf);
}

/// Writes First ACK Range and the (Gap, Length) pairs for ascending `ranges`; returns the
/// largest acknowledged packet number.
fn encode_ranges<B: BufMut>(ranges: &[RangeInclusive<u64>], buf: &mut B) -> Option<u64> {
    let (last, rest) = ranges.split_last()?;
    if last.start() > last.end() || *last.end() > VarInt::MAX.into_inner() {
        return None;
    }
    varint::encode(last.end() - last.start(), buf);
    let mut prev_smallest = *last.start();
    for r in rest.iter().rev() {
        // RFC 9000 §19.3.1: Gap = previous smallest - this largest - 2.
        if r.start() > r.end() || r.end().checked_add(2)? > prev_smallest {
            return None;
        }
        varint::encode(prev_smallest - r.end() - 2, buf);
        varint::encode(r.end() - r.start(), buf);
        prev_smallest = *r.start();
    }
    Some(*last.end())
}

/// Writes a whole ACK frame straight from a receiver's ranges (ascending), without building an
/// [`Ack`]; used on the send path. Returns false (writing nothing useful) if `ranges` is empty
/// or not ascending and disjoint.
pub fn encode_ack<B: BufMut>(
    ranges: &[RangeInclusive<u64>],
    delay: u64,
    ecn: Option<&EcnCounts>,
    buf: &mut B,
) -> bool {
    let Some(last) = ranges.last() else {
        return false;
    };
    let ty = if ecn.is_some() {
        FrameType::ACK_ECN
    } else {
        FrameType::ACK
    };
    // Validate before writing anything.
    let mut prev = None::<&RangeInclusive<u64>>;
    for r in ranges {
        if r.start() > r.end() || prev.is_some_and(|p| p.end().saturating_add(2) > *r.start()) {
            return false;
        }
        prev = Some(r);
    }
    varint::encode(ty.0, buf);
    varint::encode(*last.end(), buf);
    varint::encode(delay, buf);
    varint::encode(ranges.len() as u64 - 1, buf);
    encode_ranges(ranges, buf);
    if let Some(ecn) = ecn {
        encode_ecn(ecn, buf);
    }
    true
}

/// Iterates the ranges of an [`Ack`], highest first.
#[derive(Debug, Clone)]
pub struct AckIter {
    data: Bytes,
    next: Option<RangeInclusive<u64>>,
    remaining: u64,
}

impl Iterator for AckIter {
    type Item = RangeInclusive<u64>;

    fn next(&mut self) -> Option<Self::Item> {
        let current = self.next.take()?;
        if self.remaining > 0 {
            self.remaining -= 1;
            let gap = VarInt::decode(&mut self.data).ok()?.into_inner();
            let len = VarInt::decode(&mut self.data).ok()?.into_inner();
            let largest = current.start().checked_sub(gap + 2)?;
            self.next = Some(largest.checked_sub(len)?..=largest);
        }
        Some(current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_ranges_roundtrip() {
        let ranges = [1..=3, 7..=7, 10..=20];
        let ack = Ack::from_ranges(&ranges, 25, None).unwrap();
        assert_eq!(ack.largest, 20);
        let got: Vec<_> = ack.iter().collect();
        assert_eq!(got, vec![10..=20, 7..=7, 1..=3]);
        assert!(
            Ack::from_ranges(&[5..=6, 7..=9], 0, None).is_none(),
            "adjacent ranges"
        );
        assert!(
            Ack::from_ranges(&[5..=9, 1..=2], 0, None).is_none(),
            "descending"
        );
        assert!(Ack::from_ranges(&[], 0, None).is_none());

        let mut direct = Vec::new();
        assert!(encode_ack(&ranges, 25, None, &mut direct));
        let mut via_frame = Vec::new();
        ack.encode(&mut via_frame);
        assert_eq!(direct, via_frame);
        assert_eq!(direct.len(), ack.encoded_len());
    }

    #[test]
    fn rfc9000_ack_underflow_is_frame_encoding_error() {
        // largest 5, first range 6: below packet number 0.
        let mut b = Bytes::from_static(&[5, 0, 0, 6]);
        let e = Ack::decode(FrameType::ACK, &mut b).unwrap_err();
        assert_eq!(
            e.code(),
            crate::error::TransportErrorCode::FRAME_ENCODING_ERROR
        );
        // largest 5, first range 0 (5..=5), then gap 3: 5 - 3 - 2 = 0, len 1 -> underflow.
        let mut b = Bytes::from_static(&[5, 0, 1, 0, 3, 1]);
        assert!(Ack::decode(FrameType::ACK, &mut b).is_err());
        // A count of ranges far beyond the input ends cleanly.
        let mut b = Bytes::from_static(&[5, 0, 0x80, 0xff, 0xff, 0xff, 0]);
        assert_eq!(
            Ack::decode(FrameType::ACK, &mut b),
            Err(DecodeError::UnexpectedEnd)
        );
    }
}
