//! Connection IDs and stateless reset tokens (RFC 9000 §5.1, §10.3).

use std::fmt;

use bytes::{Buf, BufMut};

use super::DecodeError;

/// A QUIC connection ID of 0 to 20 bytes (RFC 9000 §5.1, §17.2), stored inline.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConnectionId {
    len: u8,
    bytes: [u8; ConnectionId::MAX_LEN],
}

impl std::hash::Hash for ConnectionId {
    /// The bytes in use only (an 8-byte ID is one word, not three): equal IDs have equal
    /// lengths and bytes, so equal hashes. IDs are hashed per received packet.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write(&self.bytes[..usize::from(self.len)]);
    }
}

impl ConnectionId {
    /// The longest connection ID QUIC v1 and v2 allow (RFC 9000 §17.2).
    pub const MAX_LEN: usize = 20;

    /// A connection ID holding a copy of `bytes`.
    ///
    /// # Panics
    /// If `bytes` is longer than [`ConnectionId::MAX_LEN`]; use [`ConnectionId::try_from_slice`]
    /// for bytes that came off the wire.
    pub fn new(bytes: &[u8]) -> Self {
        Self::try_from_slice(bytes).expect("connection ID longer than 20 bytes")
    }

    /// A connection ID holding a copy of `bytes`, or `None` if it is longer than 20 bytes.
    pub fn try_from_slice(bytes: &[u8]) -> Option<Self> {
        if bytes.len() > Self::MAX_LEN {
            return None;
        }
        let mut cid = Self {
            len: bytes.len() as u8,
            bytes: [0; Self::MAX_LEN],
        };
        cid.bytes[..bytes.len()].copy_from_slice(bytes);
        Some(cid)
    }

    /// The empty (zero-length) connection ID.
    pub const EMPTY: Self = Self {
        len: 0,
        bytes: [0; Self::MAX_LEN],
    };

    /// The length in bytes.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether this is the zero-length connection ID.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The ID's bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    /// Reads a connection ID of a known length (short headers).
    pub(crate) fn decode_fixed<B: Buf>(buf: &mut B, len: usize) -> Result<Self, DecodeError> {
        if len > Self::MAX_LEN {
            return Err(DecodeError::InvalidPacket(
                "connection ID longer than 20 bytes",
            ));
        }
        if buf.remaining() < len {
            return Err(DecodeError::UnexpectedEnd);
        }
        let mut cid = Self {
            len: len as u8,
            bytes: [0; Self::MAX_LEN],
        };
        buf.copy_to_slice(&mut cid.bytes[..len]);
        Ok(cid)
    }

    /// Writes the length byte followed by the ID.
    pub(crate) fn encode_prefixed<B: BufMut>(&self, buf: &mut B) {
        buf.put_u8(self.len);
        buf.put_slice(self.as_slice());
    }
}

impl std::ops::Deref for ConnectionId {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsRef<[u8]> for ConnectionId {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl fmt::Debug for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("<empty>");
        }
        for b in self.as_slice() {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A 16-byte stateless reset token (RFC 9000 §10.3), compared in constant time.
#[derive(Clone, Copy, Eq)]
pub struct ResetToken(pub [u8; ResetToken::LEN]);

impl ResetToken {
    /// The length of a stateless reset token.
    pub const LEN: usize = 16;

    pub(crate) fn decode<B: Buf>(buf: &mut B) -> Result<Self, DecodeError> {
        if buf.remaining() < Self::LEN {
            return Err(DecodeError::UnexpectedEnd);
        }
        let mut token = [0; Self::LEN];
        buf.copy_to_slice(&mut token);
        Ok(Self(token))
    }
}

impl PartialEq for ResetToken {
    /// RFC 9000 §10.3.1: comparisons of tokens should not leak timing information.
    fn eq(&self, other: &Self) -> bool {
        self.0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl std::hash::Hash for ResetToken {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl fmt::Debug for ResetToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResetToken(")?;
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cid_limits() {
        assert!(ConnectionId::try_from_slice(&[0; 21]).is_none());
        let cid = ConnectionId::new(&[1, 2, 3]);
        assert_eq!(cid.len(), 3);
        assert_eq!(cid.to_string(), "010203");
        assert_eq!(ConnectionId::EMPTY.to_string(), "<empty>");
        let mut bad: &[u8] = &[0; 22];
        assert!(ConnectionId::decode_fixed(&mut bad, 21).is_err());
        let mut short: &[u8] = &[1, 2];
        assert_eq!(
            ConnectionId::decode_fixed(&mut short, 4),
            Err(DecodeError::UnexpectedEnd)
        );
    }

    #[test]
    fn reset_token_eq() {
        assert_eq!(ResetToken([7; 16]), ResetToken([7; 16]));
        let mut other = [7; 16];
        other[15] = 8;
        assert_ne!(ResetToken([7; 16]), ResetToken(other));
    }

    /// An ID hashes as exactly the bytes in use (one write, not the 20-byte array and its
    /// length), and IDs that are prefixes of one another stay distinct map keys.
    #[test]
    fn an_id_hashes_its_bytes_in_use_only() {
        use std::hash::{Hash, Hasher};
        #[derive(Default)]
        struct Record(Vec<Vec<u8>>);
        impl Hasher for Record {
            fn finish(&self) -> u64 {
                0
            }
            fn write(&mut self, bytes: &[u8]) {
                self.0.push(bytes.to_vec());
            }
        }
        let mut r = Record::default();
        ConnectionId::new(&[1, 2, 3, 4, 5, 6, 7, 8]).hash(&mut r);
        assert_eq!(r.0, vec![vec![1, 2, 3, 4, 5, 6, 7, 8]]);
        let mut map = crate::fast_hash::FastMap::default();
        for len in 0..=ConnectionId::MAX_LEN {
            map.insert(ConnectionId::new(&[9; 20][..len]), len);
        }
        for len in 0..=ConnectionId::MAX_LEN {
            assert_eq!(map.get(&ConnectionId::new(&[9; 20][..len])), Some(&len));
        }
    }
}
