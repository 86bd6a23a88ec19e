//! Variable-length integers (RFC 9000 §16).

use std::fmt;

use bytes::{Buf, BufMut};

use super::DecodeError;

/// An integer below 2^62, encoded on the wire in 1, 2, 4 or 8 bytes (RFC 9000 §16).
///
/// The two most significant bits of the first byte give the length; the remaining bits hold the
/// value in network byte order. Constructing a `VarInt` checks the range once, so encoding never
/// fails.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VarInt(u64);

/// A value did not fit in a [`VarInt`] (it was 2^62 or larger).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("value {0} does not fit in a QUIC variable-length integer (maximum 2^62-1)")]
pub struct VarIntBoundsExceeded(pub u64);

impl VarInt {
    /// The largest representable value, 2^62 - 1.
    pub const MAX: Self = Self((1 << 62) - 1);
    /// The largest encoded size of a `VarInt`.
    pub const MAX_SIZE: usize = 8;

    /// Constructs a `VarInt` from a `u32`, which always fits.
    pub const fn from_u32(value: u32) -> Self {
        Self(value as u64)
    }

    /// Constructs a `VarInt` if `value` is below 2^62.
    pub const fn from_u64(value: u64) -> Result<Self, VarIntBoundsExceeded> {
        if value <= Self::MAX.0 {
            Ok(Self(value))
        } else {
            Err(VarIntBoundsExceeded(value))
        }
    }

    /// Constructs a `VarInt` without checking the range.
    ///
    /// The caller guarantees `value < 2^62`; a larger value is truncated when encoded.
    pub const fn from_u64_unchecked(value: u64) -> Self {
        Self(value)
    }

    /// The integer value.
    pub const fn into_inner(self) -> u64 {
        self.0
    }

    /// The number of bytes the shortest encoding of this value takes.
    pub const fn size(self) -> usize {
        size(self.0)
    }

    /// Writes the shortest encoding of this value.
    pub fn encode<B: BufMut>(self, buf: &mut B) {
        encode(self.0, buf)
    }

    /// Reads a `VarInt`, advancing `buf` past it.
    #[inline]
    pub fn decode<B: Buf>(buf: &mut B) -> Result<Self, DecodeError> {
        let first = *buf.chunk().first().ok_or(DecodeError::UnexpectedEnd)?;
        let len = 1usize << (first >> 6);
        if buf.remaining() < len {
            return Err(DecodeError::UnexpectedEnd);
        }
        let value = match len {
            1 => u64::from(buf.get_u8()),
            2 => u64::from(buf.get_u16() & 0x3fff),
            4 => u64::from(buf.get_u32() & 0x3fff_ffff),
            _ => buf.get_u64() & 0x3fff_ffff_ffff_ffff,
        };
        Ok(Self(value))
    }
}

/// The shortest encoded size of `value`, which must be below 2^62.
pub(crate) const fn size(value: u64) -> usize {
    if value < 1 << 6 {
        1
    } else if value < 1 << 14 {
        2
    } else if value < 1 << 30 {
        4
    } else {
        8
    }
}

/// Writes the shortest encoding of `value` (RFC 9000 §16); `value` must be below 2^62.
#[inline]
pub(crate) fn encode<B: BufMut>(value: u64, buf: &mut B) {
    debug_assert!(value <= VarInt::MAX.0, "varint out of range: {value}");
    if value < 1 << 6 {
        buf.put_u8(value as u8);
    } else if value < 1 << 14 {
        buf.put_u16(0x4000 | value as u16);
    } else if value < 1 << 30 {
        buf.put_u32(0x8000_0000 | value as u32);
    } else {
        buf.put_u64(0xc000_0000_0000_0000 | (value & VarInt::MAX.0));
    }
}

/// Writes `value` using exactly `len` bytes (1, 2, 4 or 8), as needed for fields that are
/// reserved before their value is known (the Length of a long header packet).
pub(crate) fn encode_with_len(value: u64, len: usize, out: &mut [u8]) {
    debug_assert!(size(value) <= len && out.len() >= len);
    match len {
        1 => out[0] = value as u8,
        2 => out[..2].copy_from_slice(&(0x4000 | value as u16).to_be_bytes()),
        4 => out[..4].copy_from_slice(&(0x8000_0000 | value as u32).to_be_bytes()),
        _ => out[..8].copy_from_slice(&(0xc000_0000_0000_0000 | value).to_be_bytes()),
    }
}

impl From<u8> for VarInt {
    fn from(value: u8) -> Self {
        Self(value.into())
    }
}

impl From<u16> for VarInt {
    fn from(value: u16) -> Self {
        Self(value.into())
    }
}

impl From<u32> for VarInt {
    fn from(value: u32) -> Self {
        Self(value.into())
    }
}

impl TryFrom<u64> for VarInt {
    type Error = VarIntBoundsExceeded;
    fn try_from(value: u64) -> Result<Self, Self::Error> {
        Self::from_u64(value)
    }
}

impl TryFrom<usize> for VarInt {
    type Error = VarIntBoundsExceeded;
    fn try_from(value: usize) -> Result<Self, Self::Error> {
        Self::from_u64(value as u64)
    }
}

impl From<VarInt> for u64 {
    fn from(value: VarInt) -> Self {
        value.0
    }
}

impl fmt::Debug for VarInt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for VarInt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_hex(s: &str) -> u64 {
        let bytes = hex::decode(s).unwrap();
        let mut slice = &bytes[..];
        let v = VarInt::decode(&mut slice).unwrap();
        assert!(slice.is_empty(), "{s} not fully consumed");
        v.into_inner()
    }

    /// RFC 9000 §16 / Appendix A.1: the worked examples of variable-length integers.
    #[test]
    fn rfc9000_varint_examples() {
        assert_eq!(decode_hex("c2197c5eff14e88c"), 151_288_809_941_952_652);
        assert_eq!(decode_hex("9d7f3e7d"), 494_878_333);
        assert_eq!(decode_hex("7bbd"), 15_293);
        assert_eq!(decode_hex("25"), 37);
        // "the two-byte sequence 0x4025 also decodes to 37"
        assert_eq!(decode_hex("4025"), 37);

        let mut out = Vec::new();
        VarInt::from_u64(151_288_809_941_952_652)
            .unwrap()
            .encode(&mut out);
        VarInt::from_u32(494_878_333).encode(&mut out);
        VarInt::from_u32(15_293).encode(&mut out);
        VarInt::from_u32(37).encode(&mut out);
        assert_eq!(hex::encode(out), "c2197c5eff14e88c9d7f3e7d7bbd25");
    }

    #[test]
    fn rfc9000_varint_bounds() {
        assert!(VarInt::from_u64(1 << 62).is_err());
        assert_eq!(VarInt::MAX.size(), 8);
        assert_eq!(VarInt::from_u32(63).size(), 1);
        assert_eq!(VarInt::from_u32(64).size(), 2);
        assert_eq!(VarInt::from_u32(16383).size(), 2);
        assert_eq!(VarInt::from_u32(16384).size(), 4);
        assert_eq!(VarInt::from_u64((1 << 30) - 1).unwrap().size(), 4);
        assert_eq!(VarInt::from_u64(1 << 30).unwrap().size(), 8);
        let mut empty: &[u8] = &[];
        assert_eq!(VarInt::decode(&mut empty), Err(DecodeError::UnexpectedEnd));
        let mut short: &[u8] = &[0xc0, 0, 0];
        assert_eq!(VarInt::decode(&mut short), Err(DecodeError::UnexpectedEnd));
    }

    #[test]
    fn fixed_length_encoding() {
        for (value, len) in [
            (5u64, 1usize),
            (5, 2),
            (5, 4),
            (5, 8),
            (1000, 2),
            (1 << 40, 8),
        ] {
            let mut out = [0u8; 8];
            encode_with_len(value, len, &mut out);
            let mut slice = &out[..len];
            assert_eq!(VarInt::decode(&mut slice).unwrap().into_inner(), value);
            assert!(slice.is_empty());
        }
    }

    proptest! {
        #[test]
        fn varint_roundtrip(value in 0u64..=VarInt::MAX.into_inner()) {
            let v = VarInt::from_u64(value).unwrap();
            let mut out = Vec::new();
            v.encode(&mut out);
            prop_assert_eq!(out.len(), v.size());
            let mut slice = &out[..];
            prop_assert_eq!(VarInt::decode(&mut slice).unwrap(), v);
            prop_assert!(slice.is_empty());
        }

        #[test]
        fn varint_arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
            let mut slice = &bytes[..];
            if let Ok(v) = VarInt::decode(&mut slice) {
                prop_assert!(v <= VarInt::MAX);
            }
        }
    }
}
