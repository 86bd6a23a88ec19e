//! Packet headers (RFC 9000 §17, RFC 9369 §3.2, RFC 8999) and coalesced packets (RFC 9000 §12.2).
//!
//! Decoding is in two steps, because the packet number and some bits of the first byte are
//! hidden by header protection (RFC 9001 §5.4):
//!
//! 1. [`PartialDecode::new`] parses everything that is not protected and splits the first packet
//!    off a datagram, returning what follows when packets are coalesced.
//! 2. [`PartialDecode::finish`] removes header protection with the packet-number space's key and
//!    yields a [`Packet`] whose [`Header`] carries the truncated packet number. Payload
//!    decryption is then [`crate::crypto::open`] over [`Packet::buf`].
//!
//! Encoding mirrors it: [`Header::encode`] writes a header and returns a [`PartialEncode`] that
//! patches the Length field once the payload is written; [`crate::crypto::seal`] then encrypts
//! the payload and applies header protection in place.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use rustls::quic::HeaderProtectionKey;

use super::{cid::ConnectionId, varint, DecodeError, Version};

/// The 2-bit long packet types (RFC 9000 §17.2, Table 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LongType {
    /// Initial (RFC 9000 §17.2.2).
    Initial,
    /// 0-RTT (RFC 9000 §17.2.3).
    ZeroRtt,
    /// Handshake (RFC 9000 §17.2.4).
    Handshake,
    /// Retry (RFC 9000 §17.2.5).
    Retry,
}

impl LongType {
    /// The type from the two type bits, which differ between versions (RFC 9369 §3.2).
    pub fn from_bits(version: Version, bits: u8) -> Self {
        let bits = bits & 0x03;
        if version == Version::V2 {
            match bits {
                0b01 => Self::Initial,
                0b10 => Self::ZeroRtt,
                0b11 => Self::Handshake,
                _ => Self::Retry,
            }
        } else {
            match bits {
                0b00 => Self::Initial,
                0b01 => Self::ZeroRtt,
                0b10 => Self::Handshake,
                _ => Self::Retry,
            }
        }
    }

    /// The two type bits for this type in `version` (RFC 9000 §17.2, RFC 9369 §3.2).
    pub fn to_bits(self, version: Version) -> u8 {
        if version == Version::V2 {
            match self {
                Self::Initial => 0b01,
                Self::ZeroRtt => 0b10,
                Self::Handshake => 0b11,
                Self::Retry => 0b00,
            }
        } else {
            match self {
                Self::Initial => 0b00,
                Self::ZeroRtt => 0b01,
                Self::Handshake => 0b10,
                Self::Retry => 0b11,
            }
        }
    }
}

/// The kinds of packets that carry frames, as used by RFC 9000 §12.4 Table 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketType {
    /// Initial packets.
    Initial,
    /// 0-RTT packets.
    ZeroRtt,
    /// Handshake packets.
    Handshake,
    /// 1-RTT (short header) packets.
    OneRtt,
}

/// The header bits that precede header protection removal: long header form.
const LONG_FORM: u8 = 0x80;
/// The fixed bit (RFC 9000 §17.2, §17.3.1), which must be 1 in v1 and v2.
const FIXED_BIT: u8 = 0x40;
/// Spin bit of short headers (RFC 9000 §17.3.1, §17.4); not header-protected.
const SPIN_BIT: u8 = 0x20;
/// Key phase bit of short headers (RFC 9000 §17.3.1).
const KEY_PHASE_BIT: u8 = 0x04;
/// Reserved bits: long headers (RFC 9000 §17.2).
const LONG_RESERVED: u8 = 0x0c;
/// Reserved bits: short headers (RFC 9000 §17.3.1).
const SHORT_RESERVED: u8 = 0x18;
/// Length of the Retry Integrity Tag (RFC 9001 §5.8).
pub const RETRY_INTEGRITY_TAG_LEN: usize = 16;

/// What a packet's header says before header protection is removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtectedHeader {
    /// An Initial packet (RFC 9000 §17.2.2).
    Initial {
        /// Version of the packet.
        version: Version,
        /// Destination connection ID.
        dst_cid: ConnectionId,
        /// Source connection ID.
        src_cid: ConnectionId,
        /// The address-validation token (empty if none).
        token: Bytes,
    },
    /// A 0-RTT or Handshake packet (RFC 9000 §17.2.3, §17.2.4).
    Long {
        /// [`LongType::ZeroRtt`] or [`LongType::Handshake`].
        ty: LongType,
        /// Version of the packet.
        version: Version,
        /// Destination connection ID.
        dst_cid: ConnectionId,
        /// Source connection ID.
        src_cid: ConnectionId,
    },
    /// A Retry packet (RFC 9000 §17.2.5); it has no packet number and no header protection.
    Retry {
        /// Version of the packet.
        version: Version,
        /// Destination connection ID.
        dst_cid: ConnectionId,
        /// Source connection ID: the connection ID the client must use from now on.
        src_cid: ConnectionId,
        /// The Retry token (never empty; RFC 9000 §17.2.5.2).
        token: Bytes,
        /// The Retry Integrity Tag (RFC 9001 §5.8).
        integrity_tag: [u8; RETRY_INTEGRITY_TAG_LEN],
    },
    /// A 1-RTT packet with a short header (RFC 9000 §17.3.1).
    Short {
        /// The latency spin bit (RFC 9000 §17.4), which header protection does not cover.
        spin: bool,
        /// Destination connection ID.
        dst_cid: ConnectionId,
    },
    /// A Version Negotiation packet (RFC 9000 §17.2.1).
    VersionNegotiation {
        /// Destination connection ID (up to 255 bytes, RFC 8999 §5.1).
        dst_cid: Bytes,
        /// Source connection ID (up to 255 bytes).
        src_cid: Bytes,
        /// The supported versions, four bytes each; see [`ProtectedHeader::versions`].
        versions: Bytes,
    },
    /// A long header packet of a version we do not speak, as far as RFC 8999 lets us read it:
    /// enough to answer with Version Negotiation (RFC 9000 §6.1).
    UnsupportedVersion {
        /// The version the peer used.
        version: Version,
        /// Destination connection ID (up to 255 bytes).
        dst_cid: Bytes,
        /// Source connection ID (up to 255 bytes).
        src_cid: Bytes,
    },
}

impl ProtectedHeader {
    /// The destination connection ID, when it fits in a [`ConnectionId`].
    pub fn dst_cid(&self) -> Option<ConnectionId> {
        match self {
            Self::Initial { dst_cid, .. }
            | Self::Long { dst_cid, .. }
            | Self::Retry { dst_cid, .. }
            | Self::Short { dst_cid, .. } => Some(*dst_cid),
            Self::VersionNegotiation { dst_cid, .. } | Self::UnsupportedVersion { dst_cid, .. } => {
                ConnectionId::try_from_slice(dst_cid)
            }
        }
    }

    /// The version field of a long header (`None` for short headers).
    pub fn version(&self) -> Option<Version> {
        match self {
            Self::Initial { version, .. }
            | Self::Long { version, .. }
            | Self::Retry { version, .. }
            | Self::UnsupportedVersion { version, .. } => Some(*version),
            Self::VersionNegotiation { .. } => Some(Version::NEGOTIATION),
            Self::Short { .. } => None,
        }
    }

    /// The versions listed in a Version Negotiation packet (empty for other packets).
    pub fn versions(&self) -> impl Iterator<Item = Version> + '_ {
        let list: &[u8] = match self {
            Self::VersionNegotiation { versions, .. } => versions,
            _ => &[],
        };
        list.chunks_exact(4)
            .map(|c| Version(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
    }

    /// The frame-carrying packet type, for packets that carry frames.
    pub fn packet_type(&self) -> Option<PacketType> {
        match self {
            Self::Initial { .. } => Some(PacketType::Initial),
            Self::Long {
                ty: LongType::ZeroRtt,
                ..
            } => Some(PacketType::ZeroRtt),
            Self::Long { .. } => Some(PacketType::Handshake),
            Self::Short { .. } => Some(PacketType::OneRtt),
            _ => None,
        }
    }

    /// Whether a packet number follows this header (and so header protection applies).
    pub fn has_packet_number(&self) -> bool {
        self.packet_type().is_some()
    }
}

/// A packet split off a datagram whose header protection has not been removed yet.
#[derive(Debug)]
pub struct PartialDecode {
    header: ProtectedHeader,
    buf: BytesMut,
    pn_offset: usize,
}

impl PartialDecode {
    /// Parses the unprotected part of the first packet in `datagram` and splits it off.
    ///
    /// `local_cid_len` is the length of the connection IDs this endpoint issues, needed to read
    /// short headers (RFC 9000 §17.3.1). Returns the packet and, when packets are coalesced
    /// (RFC 9000 §12.2), the rest of the datagram, to be decoded in turn.
    ///
    /// # Errors
    /// A [`DecodeError`] when the packet cannot be parsed; the caller drops the datagram
    /// (RFC 9000 §12.2: "If the packet ... cannot be processed, the rest of the datagram may
    /// be dropped").
    pub fn new(
        mut datagram: BytesMut,
        local_cid_len: usize,
    ) -> Result<(Self, Option<BytesMut>), DecodeError> {
        let total = datagram.len();
        let mut r: &[u8] = &datagram[..];
        if !r.has_remaining() {
            return Err(DecodeError::UnexpectedEnd);
        }
        let first = r.get_u8();

        if first & LONG_FORM == 0 {
            // RFC 9000 §17.3.1: the 1-RTT packet takes the rest of the datagram.
            if first & FIXED_BIT == 0 {
                return Err(DecodeError::InvalidPacket("fixed bit not set"));
            }
            let dst_cid = ConnectionId::decode_fixed(&mut r, local_cid_len)?;
            let header = ProtectedHeader::Short {
                spin: first & SPIN_BIT != 0,
                dst_cid,
            };
            return Ok((
                Self {
                    header,
                    buf: datagram,
                    pn_offset: 1 + local_cid_len,
                },
                None,
            ));
        }

        // RFC 8999 §5.1: version-independent long header.
        if r.remaining() < 4 {
            return Err(DecodeError::UnexpectedEnd);
        }
        let version = Version(r.get_u32());
        let dst_cid = read_invariant_cid(&mut r, total)?;
        let src_cid = read_invariant_cid(&mut r, total)?;
        let offset = total - r.remaining();

        if version == Version::NEGOTIATION {
            // RFC 9000 §17.2.1: the rest of the datagram is a list of 32-bit versions.
            if r.remaining() % 4 != 0 {
                return Err(DecodeError::InvalidPacket(
                    "version negotiation list not a multiple of 4 bytes",
                ));
            }
            let frozen = datagram.freeze();
            let header = ProtectedHeader::VersionNegotiation {
                dst_cid: frozen.slice(dst_cid.clone()),
                src_cid: frozen.slice(src_cid.clone()),
                versions: frozen.slice(offset..),
            };
            return Ok((
                Self {
                    header,
                    buf: BytesMut::new(),
                    pn_offset: 0,
                },
                None,
            ));
        }
        if !version.is_supported() {
            let frozen = datagram.freeze();
            let header = ProtectedHeader::UnsupportedVersion {
                version,
                dst_cid: frozen.slice(dst_cid.clone()),
                src_cid: frozen.slice(src_cid.clone()),
            };
            return Ok((
                Self {
                    header,
                    buf: BytesMut::new(),
                    pn_offset: 0,
                },
                None,
            ));
        }

        // From here on the packet is QUIC v1 or v2 (RFC 9000 §17.2; RFC 9369 §3).
        if dst_cid.len() > ConnectionId::MAX_LEN || src_cid.len() > ConnectionId::MAX_LEN {
            return Err(DecodeError::InvalidPacket(
                "connection ID longer than 20 bytes",
            ));
        }
        if first & FIXED_BIT == 0 {
            return Err(DecodeError::InvalidPacket("fixed bit not set"));
        }
        let dst = ConnectionId::new(&datagram[dst_cid]);
        let src = ConnectionId::new(&datagram[src_cid]);
        let ty = LongType::from_bits(version, first >> 4);

        if ty == LongType::Retry {
            // RFC 9000 §17.2.5: the token runs to the integrity tag at the end of the datagram.
            if r.remaining() < RETRY_INTEGRITY_TAG_LEN {
                return Err(DecodeError::UnexpectedEnd);
            }
            let token_len = r.remaining() - RETRY_INTEGRITY_TAG_LEN;
            if token_len == 0 {
                return Err(DecodeError::InvalidPacket("retry with an empty token"));
            }
            let mut integrity_tag = [0; RETRY_INTEGRITY_TAG_LEN];
            integrity_tag.copy_from_slice(&r[token_len..]);
            let frozen = datagram.freeze();
            let header = ProtectedHeader::Retry {
                version,
                dst_cid: dst,
                src_cid: src,
                token: frozen.slice(offset..offset + token_len),
                integrity_tag,
            };
            return Ok((
                Self {
                    header,
                    buf: BytesMut::from(frozen),
                    pn_offset: 0,
                },
                None,
            ));
        }

        let token = if ty == LongType::Initial {
            let token_len = varint::VarInt::decode(&mut r)?.into_inner();
            if token_len > r.remaining() as u64 {
                return Err(DecodeError::UnexpectedEnd);
            }
            let start = total - r.remaining();
            r.advance(token_len as usize);
            Some(start..start + token_len as usize)
        } else {
            None
        };
        let length = varint::VarInt::decode(&mut r)?.into_inner();
        let pn_offset = total - r.remaining();
        if length > r.remaining() as u64 {
            return Err(DecodeError::InvalidPacket("length exceeds the datagram"));
        }
        let end = pn_offset + length as usize;
        let rest = datagram.split_off(end);
        let rest = (!rest.is_empty()).then_some(rest);

        let header = match token {
            Some(range) => ProtectedHeader::Initial {
                version,
                dst_cid: dst,
                src_cid: src,
                // A copy only of the (rare, short) token; STREAM and CRYPTO data stay zero-copy.
                token: Bytes::copy_from_slice(&datagram[range]),
            },
            None => ProtectedHeader::Long {
                ty,
                version,
                dst_cid: dst,
                src_cid: src,
            },
        };
        Ok((
            Self {
                header,
                buf: datagram,
                pn_offset,
            },
            rest,
        ))
    }

    /// The header as far as it is readable before header protection is removed.
    pub fn header(&self) -> &ProtectedHeader {
        &self.header
    }

    /// The whole packet's bytes (header and protected payload).
    pub fn data(&self) -> &[u8] {
        &self.buf
    }

    /// The packet's length in bytes.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// The offset of the packet number within the packet.
    pub fn pn_offset(&self) -> usize {
        self.pn_offset
    }

    /// Consumes the partial decode, returning its header and the raw packet bytes (for packets
    /// without a packet number, such as Retry).
    pub fn into_parts(self) -> (ProtectedHeader, BytesMut) {
        (self.header, self.buf)
    }

    /// Removes header protection with the packet-number space's header key (RFC 9001 §5.4) and
    /// reads the packet number.
    ///
    /// # Errors
    /// [`DecodeError::InvalidPacket`] if the packet has no packet number (Retry, Version
    /// Negotiation) or is too short to hold a header-protection sample (RFC 9001 §5.4.2).
    pub fn finish(self, hp: &dyn HeaderProtectionKey) -> Result<Packet, DecodeError> {
        let Self {
            header,
            mut buf,
            pn_offset,
        } = self;
        if !header.has_packet_number() {
            return Err(DecodeError::InvalidPacket("packet has no packet number"));
        }
        let pn_len = crate::crypto::remove_header_protection(&mut buf, pn_offset, hp)
            .map_err(|_| DecodeError::InvalidPacket("too short for a header protection sample"))?;
        let first = buf[0];
        let mut truncated = 0u32;
        for b in &buf[pn_offset..pn_offset + pn_len] {
            truncated = (truncated << 8) | u32::from(*b);
        }
        let number = PacketNumber {
            truncated,
            len: pn_len as u8,
        };
        let header = match header {
            ProtectedHeader::Initial {
                version,
                dst_cid,
                src_cid,
                token,
            } => Header::Initial {
                version,
                dst_cid,
                src_cid,
                token,
                number,
            },
            ProtectedHeader::Long {
                ty,
                version,
                dst_cid,
                src_cid,
            } => Header::Long {
                ty,
                version,
                dst_cid,
                src_cid,
                number,
            },
            ProtectedHeader::Short { spin, dst_cid } => Header::Short {
                spin,
                key_phase: first & KEY_PHASE_BIT != 0,
                dst_cid,
                number,
            },
            // has_packet_number() excluded the rest.
            _ => return Err(DecodeError::InvalidPacket("packet has no packet number")),
        };
        Ok(Packet {
            header,
            header_len: pn_offset + pn_len,
            buf,
        })
    }
}

/// Reads a connection ID under the version-independent rules (RFC 8999 §5.1: up to 255 bytes)
/// and returns its position in the datagram, whose total length is `total`.
fn read_invariant_cid(r: &mut &[u8], total: usize) -> Result<std::ops::Range<usize>, DecodeError> {
    if !r.has_remaining() {
        return Err(DecodeError::UnexpectedEnd);
    }
    let len = r.get_u8() as usize;
    if r.remaining() < len {
        return Err(DecodeError::UnexpectedEnd);
    }
    let start = total - r.remaining();
    r.advance(len);
    Ok(start..start + len)
}

/// A packet number as written in a header: its low bytes and how many there are (RFC 9000
/// §17.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PacketNumber {
    truncated: u32,
    len: u8,
}

impl PacketNumber {
    /// The encoding of `full` that a peer which has acknowledged `largest_acked` can recover
    /// (RFC 9000 §17.1).
    pub fn new(full: u64, largest_acked: Option<u64>) -> Self {
        let len = super::pn::encoded_len(full, largest_acked);
        Self::with_len(full, len)
    }

    /// `full` truncated to `len` bytes (clamped to 1..=4).
    pub fn with_len(full: u64, len: usize) -> Self {
        let len = len.clamp(1, 4);
        Self {
            truncated: super::pn::truncate(full, len),
            len: len as u8,
        }
    }

    /// The truncated value as sent.
    pub fn truncated(self) -> u32 {
        self.truncated
    }

    /// The number of bytes it occupies (1 to 4).
    #[allow(clippy::len_without_is_empty)]
    pub fn len(self) -> usize {
        self.len as usize
    }

    /// The full packet number, given the largest one processed so far in this space
    /// (RFC 9000 Appendix A.3).
    #[inline]
    pub fn expand(self, largest_pn: Option<u64>) -> u64 {
        super::pn::decode(largest_pn, self.truncated, self.len())
    }

    fn write<B: BufMut>(self, buf: &mut B) {
        let bytes = self.truncated.to_be_bytes();
        buf.put_slice(&bytes[4 - self.len()..]);
    }
}

/// A packet header with its packet number: what [`PartialDecode::finish`] yields and what
/// [`Header::encode`] writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Header {
    /// An Initial packet (RFC 9000 §17.2.2).
    Initial {
        /// Version of the packet.
        version: Version,
        /// Destination connection ID.
        dst_cid: ConnectionId,
        /// Source connection ID.
        src_cid: ConnectionId,
        /// Address-validation token (empty if none).
        token: Bytes,
        /// Packet number.
        number: PacketNumber,
    },
    /// A 0-RTT or Handshake packet (RFC 9000 §17.2.3, §17.2.4).
    Long {
        /// [`LongType::ZeroRtt`] or [`LongType::Handshake`].
        ty: LongType,
        /// Version of the packet.
        version: Version,
        /// Destination connection ID.
        dst_cid: ConnectionId,
        /// Source connection ID.
        src_cid: ConnectionId,
        /// Packet number.
        number: PacketNumber,
    },
    /// A 1-RTT packet (RFC 9000 §17.3.1).
    Short {
        /// Latency spin bit (RFC 9000 §17.4).
        spin: bool,
        /// Key phase (RFC 9001 §6).
        key_phase: bool,
        /// Destination connection ID.
        dst_cid: ConnectionId,
        /// Packet number.
        number: PacketNumber,
    },
}

impl Header {
    /// The packet number.
    pub fn number(&self) -> PacketNumber {
        match self {
            Self::Initial { number, .. }
            | Self::Long { number, .. }
            | Self::Short { number, .. } => *number,
        }
    }

    /// The destination connection ID.
    pub fn dst_cid(&self) -> &ConnectionId {
        match self {
            Self::Initial { dst_cid, .. }
            | Self::Long { dst_cid, .. }
            | Self::Short { dst_cid, .. } => dst_cid,
        }
    }

    /// The packet type, for the frame checks of RFC 9000 §12.4.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Self::Initial { .. } => PacketType::Initial,
            Self::Long {
                ty: LongType::ZeroRtt,
                ..
            } => PacketType::ZeroRtt,
            Self::Long { .. } => PacketType::Handshake,
            Self::Short { .. } => PacketType::OneRtt,
        }
    }

    /// Writes the header (with a two-byte Length placeholder for long headers) at the end of
    /// `buf` and returns what [`PartialEncode::finish`] and [`crate::crypto::seal`] need.
    ///
    /// # Errors
    /// [`EncodeError`] for a header that cannot be sent: a 0-RTT/Handshake type that is not one
    /// of those, or a token too large for a varint.
    pub fn encode(&self, buf: &mut Vec<u8>) -> Result<PartialEncode, EncodeError> {
        let start = buf.len();
        let (version, ty, dst_cid, src_cid, number, token) = match self {
            Self::Short {
                spin,
                key_phase,
                dst_cid,
                number,
            } => {
                let mut first = FIXED_BIT | (number.len() as u8 - 1);
                if *spin {
                    first |= SPIN_BIT;
                }
                if *key_phase {
                    first |= KEY_PHASE_BIT;
                }
                buf.put_u8(first);
                buf.put_slice(dst_cid);
                let pn_offset = buf.len() - start;
                number.write(buf);
                return Ok(PartialEncode {
                    start,
                    pn_offset,
                    pn_len: number.len(),
                    length_offset: None,
                });
            }
            Self::Initial {
                version,
                dst_cid,
                src_cid,
                token,
                number,
            } => (
                *version,
                LongType::Initial,
                dst_cid,
                src_cid,
                *number,
                Some(token),
            ),
            Self::Long {
                ty,
                version,
                dst_cid,
                src_cid,
                number,
            } => {
                if !matches!(ty, LongType::ZeroRtt | LongType::Handshake) {
                    return Err(EncodeError::WrongLongType(*ty));
                }
                (*version, *ty, dst_cid, src_cid, *number, None)
            }
        };
        buf.put_u8(LONG_FORM | FIXED_BIT | (ty.to_bits(version) << 4) | (number.len() as u8 - 1));
        buf.put_u32(version.0);
        dst_cid.encode_prefixed(buf);
        src_cid.encode_prefixed(buf);
        if let Some(token) = token {
            let len =
                varint::VarInt::try_from(token.len()).map_err(|_| EncodeError::TooLong("token"))?;
            len.encode(buf);
            buf.put_slice(token);
        }
        let length_offset = buf.len() - start;
        buf.put_u16(0x4000); // Length placeholder, patched by PartialEncode::finish.
        let pn_offset = buf.len() - start;
        number.write(buf);
        Ok(PartialEncode {
            start,
            pn_offset,
            pn_len: number.len(),
            length_offset: Some(length_offset),
        })
    }
}

/// A header written by [`Header::encode`] whose Length field still needs the payload size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartialEncode {
    /// Offset of the packet's first byte in the buffer.
    pub start: usize,
    /// Offset of the packet number, relative to `start`.
    pub pn_offset: usize,
    /// Length of the packet number in bytes.
    pub pn_len: usize,
    length_offset: Option<usize>,
}

impl PartialEncode {
    /// The header's length (up to and including the packet number).
    pub fn header_len(&self) -> usize {
        self.pn_offset + self.pn_len
    }

    /// The largest payload (plaintext plus AEAD tag) a long-header packet can announce with the
    /// two-byte Length field.
    pub const MAX_LONG_PAYLOAD: usize = (1 << 14) - 1 - 4;

    /// Patches the Length field of a long header now that the packet (header, payload and the
    /// `tag_len` bytes of room reserved for the AEAD tag) ends at `buf.len()`.
    ///
    /// # Errors
    /// [`EncodeError::TooLong`] if the packet does not fit the two-byte Length field.
    pub fn finish(&self, buf: &mut [u8]) -> Result<(), EncodeError> {
        if let Some(offset) = self.length_offset {
            // RFC 9000 §17.2: Length covers the packet number and the protected payload.
            let length = buf.len() - self.start - self.pn_offset;
            if length >= 1 << 14 {
                return Err(EncodeError::TooLong("long header packet"));
            }
            varint::encode_with_len(length as u64, 2, &mut buf[self.start + offset..]);
        }
        Ok(())
    }
}

/// A header or packet that cannot be encoded as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// `Header::Long` takes only 0-RTT and Handshake; Initial has its own variant and Retry its
    /// own encoder ([`encode_retry`]).
    #[error("long header type {0:?} cannot be encoded with Header::Long")]
    WrongLongType(LongType),
    /// A field exceeded what its length field can express.
    #[error("{0} too long to encode")]
    TooLong(&'static str),
    /// A Retry must carry a token (RFC 9000 §17.2.5.2).
    #[error("a Retry packet needs a non-empty token")]
    EmptyRetryToken,
    /// A connection ID exceeded the version-independent 255-byte limit.
    #[error("connection ID longer than 255 bytes")]
    ConnectionIdTooLong,
}

/// A decoded packet whose header protection has been removed; the payload is still encrypted.
#[derive(Debug)]
pub struct Packet {
    /// The unprotected header.
    pub header: Header,
    /// The header's length: `buf[..header_len]` is the AEAD associated data.
    pub header_len: usize,
    /// The whole packet: header, then the encrypted payload and tag.
    pub buf: BytesMut,
}

impl Packet {
    /// Whether the reserved bits of the first byte are zero. RFC 9000 §17.2 and §17.3.1: a
    /// non-zero value after removing packet and header protection is a PROTOCOL_VIOLATION, to
    /// be checked once the payload has been authenticated.
    pub fn reserved_bits_valid(&self) -> bool {
        let mask = match self.header {
            Header::Short { .. } => SHORT_RESERVED,
            _ => LONG_RESERVED,
        };
        self.buf.first().is_some_and(|b| b & mask == 0)
    }
}

/// Writes a Version Negotiation packet (RFC 9000 §17.2.1) answering a packet whose connection
/// IDs were `their_dst_cid`/`their_src_cid`: ours echo them swapped (RFC 9000 §6.1).
///
/// `random` supplies the seven unused bits of the first byte; `versions` is what we support
/// (a reserved version may be included to exercise negotiation, RFC 9000 §6.3).
///
/// # Errors
/// [`EncodeError::ConnectionIdTooLong`] if a connection ID exceeds 255 bytes.
pub fn encode_version_negotiation(
    buf: &mut Vec<u8>,
    random: u8,
    their_dst_cid: &[u8],
    their_src_cid: &[u8],
    versions: &[Version],
) -> Result<(), EncodeError> {
    if their_dst_cid.len() > 255 || their_src_cid.len() > 255 {
        return Err(EncodeError::ConnectionIdTooLong);
    }
    buf.put_u8(LONG_FORM | random);
    buf.put_u32(0);
    buf.put_u8(their_src_cid.len() as u8);
    buf.put_slice(their_src_cid);
    buf.put_u8(their_dst_cid.len() as u8);
    buf.put_slice(their_dst_cid);
    for v in versions {
        buf.put_u32(v.0);
    }
    Ok(())
}

/// Writes a Retry packet without its integrity tag (RFC 9000 §17.2.5); the tag from
/// `crypto::retry::retry_tag` is appended afterwards. `unused` fills the four unused bits.
///
/// # Errors
/// [`EncodeError::EmptyRetryToken`] if the token is empty (RFC 9000 §17.2.5.2: clients
/// discard such a Retry).
pub fn encode_retry(
    buf: &mut Vec<u8>,
    version: Version,
    dst_cid: &ConnectionId,
    src_cid: &ConnectionId,
    token: &[u8],
    unused: u8,
) -> Result<(), EncodeError> {
    if token.is_empty() {
        return Err(EncodeError::EmptyRetryToken);
    }
    buf.put_u8(LONG_FORM | FIXED_BIT | (LongType::Retry.to_bits(version) << 4) | (unused & 0x0f));
    buf.put_u32(version.0);
    dst_cid.encode_prefixed(buf);
    src_cid.encode_prefixed(buf);
    buf.put_slice(token);
    Ok(())
}

#[cfg(test)]
mod tests;
