//! Frames (RFC 9000 §19, RFC 9221 §4) and where they may appear (RFC 9000 §12.4).
//!
//! [`Frame::decode`] reads one frame from a decrypted payload; [`Iter`] walks a whole payload
//! and enforces the packet-type rules of RFC 9000 §12.4 Table 3. Data-carrying frames (STREAM,
//! CRYPTO, DATAGRAM, NEW_TOKEN, reason phrases) hold [`Bytes`] slices of the payload: decoding
//! copies nothing.

mod ack;

use bytes::{Buf, BufMut, Bytes};

pub use self::ack::{encode_ack, Ack, AckIter, EcnCounts};
use super::{cid::ConnectionId, cid::ResetToken, varint, DecodeError, PacketType, VarInt};
use crate::error::TransportErrorCode;
use crate::types::{Dir, StreamId};

/// A frame type (RFC 9000 §12.4, Table 3; RFC 9221 §4).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameType(pub u64);

impl FrameType {
    /// PADDING (RFC 9000 §19.1).
    pub const PADDING: Self = Self(0x00);
    /// PING (RFC 9000 §19.2).
    pub const PING: Self = Self(0x01);
    /// ACK (RFC 9000 §19.3).
    pub const ACK: Self = Self(0x02);
    /// ACK with ECN counts (RFC 9000 §19.3).
    pub const ACK_ECN: Self = Self(0x03);
    /// RESET_STREAM (RFC 9000 §19.4).
    pub const RESET_STREAM: Self = Self(0x04);
    /// STOP_SENDING (RFC 9000 §19.5).
    pub const STOP_SENDING: Self = Self(0x05);
    /// CRYPTO (RFC 9000 §19.6).
    pub const CRYPTO: Self = Self(0x06);
    /// NEW_TOKEN (RFC 9000 §19.7).
    pub const NEW_TOKEN: Self = Self(0x07);
    /// The first STREAM type (RFC 9000 §19.8); types 0x08-0x0f carry OFF/LEN/FIN bits.
    pub const STREAM: Self = Self(0x08);
    /// MAX_DATA (RFC 9000 §19.9).
    pub const MAX_DATA: Self = Self(0x10);
    /// MAX_STREAM_DATA (RFC 9000 §19.10).
    pub const MAX_STREAM_DATA: Self = Self(0x11);
    /// MAX_STREAMS for bidirectional streams (RFC 9000 §19.11).
    pub const MAX_STREAMS_BIDI: Self = Self(0x12);
    /// MAX_STREAMS for unidirectional streams (RFC 9000 §19.11).
    pub const MAX_STREAMS_UNI: Self = Self(0x13);
    /// DATA_BLOCKED (RFC 9000 §19.12).
    pub const DATA_BLOCKED: Self = Self(0x14);
    /// STREAM_DATA_BLOCKED (RFC 9000 §19.13).
    pub const STREAM_DATA_BLOCKED: Self = Self(0x15);
    /// STREAMS_BLOCKED for bidirectional streams (RFC 9000 §19.14).
    pub const STREAMS_BLOCKED_BIDI: Self = Self(0x16);
    /// STREAMS_BLOCKED for unidirectional streams (RFC 9000 §19.14).
    pub const STREAMS_BLOCKED_UNI: Self = Self(0x17);
    /// NEW_CONNECTION_ID (RFC 9000 §19.15).
    pub const NEW_CONNECTION_ID: Self = Self(0x18);
    /// RETIRE_CONNECTION_ID (RFC 9000 §19.16).
    pub const RETIRE_CONNECTION_ID: Self = Self(0x19);
    /// PATH_CHALLENGE (RFC 9000 §19.17).
    pub const PATH_CHALLENGE: Self = Self(0x1a);
    /// PATH_RESPONSE (RFC 9000 §19.18).
    pub const PATH_RESPONSE: Self = Self(0x1b);
    /// CONNECTION_CLOSE for transport errors (RFC 9000 §19.19).
    pub const CONNECTION_CLOSE: Self = Self(0x1c);
    /// CONNECTION_CLOSE for application errors (RFC 9000 §19.19).
    pub const APPLICATION_CLOSE: Self = Self(0x1d);
    /// HANDSHAKE_DONE (RFC 9000 §19.20).
    pub const HANDSHAKE_DONE: Self = Self(0x1e);
    /// DATAGRAM without a Length field (RFC 9221 §4).
    pub const DATAGRAM: Self = Self(0x30);
    /// DATAGRAM with a Length field (RFC 9221 §4).
    pub const DATAGRAM_LEN: Self = Self(0x31);

    /// Whether this is one of the eight STREAM types.
    pub fn is_stream(self) -> bool {
        (0x08..=0x0f).contains(&self.0)
    }

    /// Whether a frame of this type may appear in a packet of type `packet` (RFC 9000 §12.4,
    /// Table 3; RFC 9221 §4 for DATAGRAM). Unknown types are not allowed anywhere.
    pub fn allowed_in(self, packet: PacketType) -> bool {
        use PacketType::*;
        match self.0 {
            // "IH01": PADDING, PING, CONNECTION_CLOSE (transport).
            0x00 | 0x01 | 0x1c => true,
            // "IH_1": ACK and CRYPTO are never in 0-RTT.
            0x02 | 0x03 | 0x06 => packet != ZeroRtt,
            // "___1": NEW_TOKEN, PATH_RESPONSE, HANDSHAKE_DONE only in 1-RTT.
            0x07 | 0x1b | 0x1e => packet == OneRtt,
            // "__01": everything else we know, including DATAGRAM.
            0x04 | 0x05 | 0x08..=0x1a | 0x1d | 0x30 | 0x31 => {
                matches!(packet, ZeroRtt | OneRtt)
            }
            _ => false,
        }
    }

    /// Whether receiving this frame makes a packet ack-eliciting (RFC 9002 §2: all but ACK,
    /// PADDING and CONNECTION_CLOSE).
    pub fn is_ack_eliciting(self) -> bool {
        !matches!(self.0, 0x00 | 0x02 | 0x03 | 0x1c | 0x1d)
    }
}

impl std::fmt::Debug for FrameType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self.0 {
            0x00 => "PADDING",
            0x01 => "PING",
            0x02 | 0x03 => "ACK",
            0x04 => "RESET_STREAM",
            0x05 => "STOP_SENDING",
            0x06 => "CRYPTO",
            0x07 => "NEW_TOKEN",
            0x08..=0x0f => "STREAM",
            0x10 => "MAX_DATA",
            0x11 => "MAX_STREAM_DATA",
            0x12 | 0x13 => "MAX_STREAMS",
            0x14 => "DATA_BLOCKED",
            0x15 => "STREAM_DATA_BLOCKED",
            0x16 | 0x17 => "STREAMS_BLOCKED",
            0x18 => "NEW_CONNECTION_ID",
            0x19 => "RETIRE_CONNECTION_ID",
            0x1a => "PATH_CHALLENGE",
            0x1b => "PATH_RESPONSE",
            0x1c | 0x1d => "CONNECTION_CLOSE",
            0x1e => "HANDSHAKE_DONE",
            0x30 | 0x31 => "DATAGRAM",
            other => return write!(f, "UNKNOWN({other:#x})"),
        };
        write!(f, "{name}({:#04x})", self.0)
    }
}

/// The largest value stream counts may take (RFC 9000 §19.11: 2^60).
pub const MAX_STREAM_COUNT: u64 = 1 << 60;

/// A STREAM frame (RFC 9000 §19.8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamFrame {
    /// The stream.
    pub id: StreamId,
    /// Offset of `data` in the stream.
    pub offset: u64,
    /// Whether this frame ends the stream.
    pub fin: bool,
    /// The stream data.
    pub data: Bytes,
}

impl StreamFrame {
    /// Writes a STREAM frame header for `len` bytes at `offset` (the data follows). When
    /// `with_len` is false the frame runs to the end of the packet, so it must be last.
    pub fn encode_header<B: BufMut>(
        id: StreamId,
        offset: u64,
        len: usize,
        fin: bool,
        with_len: bool,
        buf: &mut B,
    ) {
        let mut ty = 0x08;
        if offset != 0 {
            ty |= 0x04;
        }
        if with_len {
            ty |= 0x02;
        }
        if fin {
            ty |= 0x01;
        }
        buf.put_u8(ty);
        varint::encode(id.0, buf);
        if offset != 0 {
            varint::encode(offset, buf);
        }
        if with_len {
            varint::encode(len as u64, buf);
        }
    }

    /// The size of the header [`StreamFrame::encode_header`] writes.
    pub fn header_len(id: StreamId, offset: u64, len: usize, with_len: bool) -> usize {
        1 + varint::size(id.0)
            + if offset != 0 { varint::size(offset) } else { 0 }
            + if with_len {
                varint::size(len as u64)
            } else {
                0
            }
    }
}

/// A NEW_CONNECTION_ID frame (RFC 9000 §19.15).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewConnectionId {
    /// Sequence number of the connection ID.
    pub sequence: u64,
    /// Connection IDs below this sequence number are to be retired.
    pub retire_prior_to: u64,
    /// The connection ID (1 to 20 bytes).
    pub id: ConnectionId,
    /// The stateless reset token for the connection ID.
    pub reset_token: ResetToken,
}

/// A CONNECTION_CLOSE frame of type 0x1c, for transport errors (RFC 9000 §19.19).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionClose {
    /// Why the connection is closing.
    pub error_code: TransportErrorCode,
    /// The frame type that triggered the error (0 when unknown).
    pub frame_type: u64,
    /// A human-readable reason (UTF-8 by convention, not checked).
    pub reason: Bytes,
}

/// A CONNECTION_CLOSE frame of type 0x1d, for application errors (RFC 9000 §19.19).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplicationClose {
    /// The application protocol's error code.
    pub error_code: VarInt,
    /// A human-readable reason.
    pub reason: Bytes,
}

/// A frame (RFC 9000 §19, RFC 9221 §4).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Frame {
    /// A run of PADDING bytes (RFC 9000 §19.1), decoded as one frame of the run's length.
    Padding(usize),
    /// PING (RFC 9000 §19.2).
    Ping,
    /// ACK (RFC 9000 §19.3).
    Ack(Ack),
    /// RESET_STREAM (RFC 9000 §19.4).
    ResetStream {
        /// The stream being reset.
        id: StreamId,
        /// Application error code.
        error_code: VarInt,
        /// Final size of the stream.
        final_size: u64,
    },
    /// STOP_SENDING (RFC 9000 §19.5).
    StopSending {
        /// The stream whose incoming data is being discarded.
        id: StreamId,
        /// Application error code.
        error_code: VarInt,
    },
    /// CRYPTO (RFC 9000 §19.6).
    Crypto {
        /// Offset in the packet-number space's crypto stream.
        offset: u64,
        /// The handshake data.
        data: Bytes,
    },
    /// NEW_TOKEN (RFC 9000 §19.7); the token is never empty.
    NewToken(Bytes),
    /// STREAM (RFC 9000 §19.8).
    Stream(StreamFrame),
    /// MAX_DATA (RFC 9000 §19.9).
    MaxData(u64),
    /// MAX_STREAM_DATA (RFC 9000 §19.10).
    MaxStreamData {
        /// The stream.
        id: StreamId,
        /// Maximum stream data, in bytes.
        max: u64,
    },
    /// MAX_STREAMS (RFC 9000 §19.11).
    MaxStreams {
        /// Which kind of stream.
        dir: Dir,
        /// Cumulative number of streams of that kind the peer may open (at most 2^60).
        count: u64,
    },
    /// DATA_BLOCKED (RFC 9000 §19.12).
    DataBlocked(u64),
    /// STREAM_DATA_BLOCKED (RFC 9000 §19.13).
    StreamDataBlocked {
        /// The stream.
        id: StreamId,
        /// The offset at which the sender was blocked.
        limit: u64,
    },
    /// STREAMS_BLOCKED (RFC 9000 §19.14).
    StreamsBlocked {
        /// Which kind of stream.
        dir: Dir,
        /// The stream limit at the time (at most 2^60).
        limit: u64,
    },
    /// NEW_CONNECTION_ID (RFC 9000 §19.15).
    NewConnectionId(NewConnectionId),
    /// RETIRE_CONNECTION_ID (RFC 9000 §19.16).
    RetireConnectionId {
        /// Sequence number of the connection ID being retired.
        sequence: u64,
    },
    /// PATH_CHALLENGE (RFC 9000 §19.17).
    PathChallenge([u8; 8]),
    /// PATH_RESPONSE (RFC 9000 §19.18).
    PathResponse([u8; 8]),
    /// CONNECTION_CLOSE with a transport error (RFC 9000 §19.19).
    ConnectionClose(ConnectionClose),
    /// CONNECTION_CLOSE with an application error (RFC 9000 §19.19).
    ApplicationClose(ApplicationClose),
    /// HANDSHAKE_DONE (RFC 9000 §19.20).
    HandshakeDone,
    /// DATAGRAM (RFC 9221 §4).
    Datagram(Bytes),
}

fn invalid(ty: FrameType, reason: &'static str) -> DecodeError {
    DecodeError::InvalidFrame {
        frame_type: ty.0,
        reason,
    }
}

/// How many zero bytes `b` starts with: the rest of a run of PADDING frames (RFC 9000 §19.1).
/// Sixteen bytes at a time, since a 1200-byte Initial datagram is mostly padding.
fn zero_run(b: &[u8]) -> usize {
    let mut n = 0;
    for chunk in b.chunks_exact(16) {
        if chunk.iter().fold(0u8, |acc, &x| acc | x) != 0 {
            break;
        }
        n += 16;
    }
    n + b[n..].iter().take_while(|&&x| x == 0).count()
}

fn get_var(buf: &mut Bytes) -> Result<u64, DecodeError> {
    Ok(VarInt::decode(buf)?.into_inner())
}

/// Reads a length-prefixed byte string as a zero-copy slice.
fn get_bytes(ty: FrameType, buf: &mut Bytes) -> Result<Bytes, DecodeError> {
    let len = get_var(buf)?;
    if len > buf.remaining() as u64 {
        return Err(invalid(ty, "length exceeds the packet"));
    }
    Ok(buf.split_to(len as usize))
}

fn get_array<const N: usize>(buf: &mut Bytes) -> Result<[u8; N], DecodeError> {
    if buf.remaining() < N {
        return Err(DecodeError::UnexpectedEnd);
    }
    let mut out = [0; N];
    buf.copy_to_slice(&mut out);
    Ok(out)
}

/// RFC 9000 §19.6/§19.8: offset + length may not exceed 2^62 - 1.
fn check_end(ty: FrameType, offset: u64, len: usize) -> Result<(), DecodeError> {
    if offset.saturating_add(len as u64) > VarInt::MAX.into_inner() {
        return Err(invalid(ty, "data extends beyond 2^62 - 1"));
    }
    Ok(())
}

impl Frame {
    /// The frame's type as it is encoded by [`Frame::encode`].
    pub fn ty(&self) -> FrameType {
        match self {
            Self::Padding(_) => FrameType::PADDING,
            Self::Ping => FrameType::PING,
            Self::Ack(ack) => ack.frame_type(),
            Self::ResetStream { .. } => FrameType::RESET_STREAM,
            Self::StopSending { .. } => FrameType::STOP_SENDING,
            Self::Crypto { .. } => FrameType::CRYPTO,
            Self::NewToken(_) => FrameType::NEW_TOKEN,
            Self::Stream(s) => {
                FrameType(0x0a | if s.offset != 0 { 0x04 } else { 0 } | u64::from(s.fin))
            }
            Self::MaxData(_) => FrameType::MAX_DATA,
            Self::MaxStreamData { .. } => FrameType::MAX_STREAM_DATA,
            Self::MaxStreams { dir: Dir::Bi, .. } => FrameType::MAX_STREAMS_BIDI,
            Self::MaxStreams { dir: Dir::Uni, .. } => FrameType::MAX_STREAMS_UNI,
            Self::DataBlocked(_) => FrameType::DATA_BLOCKED,
            Self::StreamDataBlocked { .. } => FrameType::STREAM_DATA_BLOCKED,
            Self::StreamsBlocked { dir: Dir::Bi, .. } => FrameType::STREAMS_BLOCKED_BIDI,
            Self::StreamsBlocked { dir: Dir::Uni, .. } => FrameType::STREAMS_BLOCKED_UNI,
            Self::NewConnectionId(_) => FrameType::NEW_CONNECTION_ID,
            Self::RetireConnectionId { .. } => FrameType::RETIRE_CONNECTION_ID,
            Self::PathChallenge(_) => FrameType::PATH_CHALLENGE,
            Self::PathResponse(_) => FrameType::PATH_RESPONSE,
            Self::ConnectionClose(_) => FrameType::CONNECTION_CLOSE,
            Self::ApplicationClose(_) => FrameType::APPLICATION_CLOSE,
            Self::HandshakeDone => FrameType::HANDSHAKE_DONE,
            Self::Datagram(_) => FrameType::DATAGRAM_LEN,
        }
    }

    /// Decodes one frame from the front of `buf`, advancing past it.
    ///
    /// # Errors
    /// A [`DecodeError`] whose [`DecodeError::code`] is FRAME_ENCODING_ERROR for malformed or
    /// unknown frames and PROTOCOL_VIOLATION for a non-minimal frame type (RFC 9000 §12.4).
    /// The packet-type check is [`FrameType::allowed_in`], applied by [`Iter`].
    pub fn decode(buf: &mut Bytes) -> Result<Self, DecodeError> {
        let before = buf.remaining();
        let ty = FrameType(get_var(buf)?);
        // RFC 9000 §12.4: the frame type must use the shortest possible encoding.
        if before - buf.remaining() != varint::size(ty.0) {
            return Err(DecodeError::NonMinimalFrameType(ty.0));
        }
        Ok(match ty.0 {
            0x00 => {
                let run = 1 + zero_run(buf);
                buf.advance(run - 1);
                Self::Padding(run)
            }
            0x01 => Self::Ping,
            0x02 | 0x03 => Self::Ack(Ack::decode(ty, buf)?),
            0x04 => Self::ResetStream {
                id: StreamId(get_var(buf)?),
                error_code: VarInt::decode(buf)?,
                final_size: get_var(buf)?,
            },
            0x05 => Self::StopSending {
                id: StreamId(get_var(buf)?),
                error_code: VarInt::decode(buf)?,
            },
            0x06 => {
                let offset = get_var(buf)?;
                let data = get_bytes(ty, buf)?;
                check_end(ty, offset, data.len())?;
                Self::Crypto { offset, data }
            }
            0x07 => {
                let token = get_bytes(ty, buf)?;
                // RFC 9000 §19.7: an empty token is a FRAME_ENCODING_ERROR.
                if token.is_empty() {
                    return Err(invalid(ty, "empty token"));
                }
                Self::NewToken(token)
            }
            0x08..=0x0f => {
                let id = StreamId(get_var(buf)?);
                let offset = if ty.0 & 0x04 != 0 { get_var(buf)? } else { 0 };
                let data = if ty.0 & 0x02 != 0 {
                    get_bytes(ty, buf)?
                } else {
                    buf.split_off(0)
                };
                check_end(ty, offset, data.len())?;
                Self::Stream(StreamFrame {
                    id,
                    offset,
                    fin: ty.0 & 0x01 != 0,
                    data,
                })
            }
            0x10 => Self::MaxData(get_var(buf)?),
            0x11 => Self::MaxStreamData {
                id: StreamId(get_var(buf)?),
                max: get_var(buf)?,
            },
            0x12 | 0x13 | 0x16 | 0x17 => {
                let count = get_var(buf)?;
                // RFC 9000 §19.11, §19.14: counts above 2^60 are a FRAME_ENCODING_ERROR.
                if count > MAX_STREAM_COUNT {
                    return Err(invalid(ty, "stream count above 2^60"));
                }
                let dir = if ty.0 & 1 == 0 { Dir::Bi } else { Dir::Uni };
                if ty.0 < 0x16 {
                    Self::MaxStreams { dir, count }
                } else {
                    Self::StreamsBlocked { dir, limit: count }
                }
            }
            0x14 => Self::DataBlocked(get_var(buf)?),
            0x15 => Self::StreamDataBlocked {
                id: StreamId(get_var(buf)?),
                limit: get_var(buf)?,
            },
            0x18 => {
                let sequence = get_var(buf)?;
                let retire_prior_to = get_var(buf)?;
                // RFC 9000 §19.15: Retire Prior To greater than Sequence Number is a
                // FRAME_ENCODING_ERROR, and so is a length outside 1..=20.
                if retire_prior_to > sequence {
                    return Err(invalid(ty, "retire_prior_to above sequence number"));
                }
                if !buf.has_remaining() {
                    return Err(DecodeError::UnexpectedEnd);
                }
                let len = buf.get_u8() as usize;
                if len == 0 || len > ConnectionId::MAX_LEN {
                    return Err(invalid(ty, "connection ID length outside 1..=20"));
                }
                let id = ConnectionId::decode_fixed(buf, len)?;
                let reset_token = ResetToken::decode(buf)?;
                Self::NewConnectionId(NewConnectionId {
                    sequence,
                    retire_prior_to,
                    id,
                    reset_token,
                })
            }
            0x19 => Self::RetireConnectionId {
                sequence: get_var(buf)?,
            },
            0x1a => Self::PathChallenge(get_array(buf)?),
            0x1b => Self::PathResponse(get_array(buf)?),
            0x1c => {
                let error_code = TransportErrorCode(get_var(buf)?);
                let frame_type = get_var(buf)?;
                let reason = get_bytes(ty, buf)?;
                Self::ConnectionClose(ConnectionClose {
                    error_code,
                    frame_type,
                    reason,
                })
            }
            0x1d => {
                let error_code = VarInt::decode(buf)?;
                let reason = get_bytes(ty, buf)?;
                Self::ApplicationClose(ApplicationClose { error_code, reason })
            }
            0x1e => Self::HandshakeDone,
            0x30 => Self::Datagram(buf.split_off(0)),
            0x31 => Self::Datagram(get_bytes(ty, buf)?),
            _ => return Err(DecodeError::UnknownFrameType(ty.0)),
        })
    }

    /// Writes the frame. Data-carrying frames always include their Length field here; the send
    /// path uses [`StreamFrame::encode_header`] to omit it on a packet's last frame.
    pub fn encode<B: BufMut>(&self, buf: &mut B) {
        match self {
            Self::Padding(n) => buf.put_bytes(0, *n),
            Self::Ping | Self::HandshakeDone => buf.put_u8(self.ty().0 as u8),
            Self::Ack(ack) => ack.encode(buf),
            Self::ResetStream {
                id,
                error_code,
                final_size,
            } => {
                buf.put_u8(0x04);
                varint::encode(id.0, buf);
                error_code.encode(buf);
                varint::encode(*final_size, buf);
            }
            Self::StopSending { id, error_code } => {
                buf.put_u8(0x05);
                varint::encode(id.0, buf);
                error_code.encode(buf);
            }
            Self::Crypto { offset, data } => {
                buf.put_u8(0x06);
                varint::encode(*offset, buf);
                varint::encode(data.len() as u64, buf);
                buf.put_slice(data);
            }
            Self::NewToken(token) => {
                buf.put_u8(0x07);
                varint::encode(token.len() as u64, buf);
                buf.put_slice(token);
            }
            Self::Stream(s) => {
                StreamFrame::encode_header(s.id, s.offset, s.data.len(), s.fin, true, buf);
                buf.put_slice(&s.data);
            }
            Self::MaxData(v) | Self::DataBlocked(v) => {
                buf.put_u8(self.ty().0 as u8);
                varint::encode(*v, buf);
            }
            Self::MaxStreamData { id, max: value }
            | Self::StreamDataBlocked { id, limit: value } => {
                buf.put_u8(self.ty().0 as u8);
                varint::encode(id.0, buf);
                varint::encode(*value, buf);
            }
            Self::MaxStreams { count: value, .. } | Self::StreamsBlocked { limit: value, .. } => {
                buf.put_u8(self.ty().0 as u8);
                varint::encode(*value, buf);
            }
            Self::NewConnectionId(f) => {
                buf.put_u8(0x18);
                varint::encode(f.sequence, buf);
                varint::encode(f.retire_prior_to, buf);
                f.id.encode_prefixed(buf);
                buf.put_slice(&f.reset_token.0);
            }
            Self::RetireConnectionId { sequence } => {
                buf.put_u8(0x19);
                varint::encode(*sequence, buf);
            }
            Self::PathChallenge(data) | Self::PathResponse(data) => {
                buf.put_u8(self.ty().0 as u8);
                buf.put_slice(data);
            }
            Self::ConnectionClose(c) => {
                buf.put_u8(0x1c);
                varint::encode(c.error_code.0, buf);
                varint::encode(c.frame_type, buf);
                varint::encode(c.reason.len() as u64, buf);
                buf.put_slice(&c.reason);
            }
            Self::ApplicationClose(c) => {
                buf.put_u8(0x1d);
                c.error_code.encode(buf);
                varint::encode(c.reason.len() as u64, buf);
                buf.put_slice(&c.reason);
            }
            Self::Datagram(data) => {
                buf.put_u8(0x31);
                varint::encode(data.len() as u64, buf);
                buf.put_slice(data);
            }
        }
    }

    /// The number of bytes [`Frame::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        let v = varint::size;
        let with_len = |n: usize| v(n as u64) + n;
        match self {
            Self::Padding(n) => *n,
            Self::Ping | Self::HandshakeDone => 1,
            Self::Ack(ack) => ack.encoded_len(),
            Self::ResetStream {
                id,
                error_code,
                final_size,
            } => 1 + v(id.0) + error_code.size() + v(*final_size),
            Self::StopSending { id, error_code } => 1 + v(id.0) + error_code.size(),
            Self::Crypto { offset, data } => 1 + v(*offset) + with_len(data.len()),
            Self::NewToken(token) => 1 + with_len(token.len()),
            Self::Stream(s) => {
                StreamFrame::header_len(s.id, s.offset, s.data.len(), true) + s.data.len()
            }
            Self::MaxData(x) | Self::DataBlocked(x) => 1 + v(*x),
            Self::MaxStreamData { id, max: x } | Self::StreamDataBlocked { id, limit: x } => {
                1 + v(id.0) + v(*x)
            }
            Self::MaxStreams { count: x, .. } | Self::StreamsBlocked { limit: x, .. } => 1 + v(*x),
            Self::NewConnectionId(f) => {
                1 + v(f.sequence) + v(f.retire_prior_to) + 1 + f.id.len() + ResetToken::LEN
            }
            Self::RetireConnectionId { sequence } => 1 + v(*sequence),
            Self::PathChallenge(_) | Self::PathResponse(_) => 9,
            Self::ConnectionClose(c) => {
                1 + v(c.error_code.0) + v(c.frame_type) + with_len(c.reason.len())
            }
            Self::ApplicationClose(c) => 1 + c.error_code.size() + with_len(c.reason.len()),
            Self::Datagram(data) => 1 + with_len(data.len()),
        }
    }
}

/// Decodes the frames of one packet's payload, checking each against the packet type
/// (RFC 9000 §12.4). After the first error it yields nothing more.
#[derive(Debug, Clone)]
pub struct Iter {
    buf: Bytes,
    packet_type: PacketType,
    failed: bool,
    first: bool,
}

impl Iter {
    /// Walks `payload`, a decrypted packet payload of type `packet_type`.
    pub fn new(payload: Bytes, packet_type: PacketType) -> Self {
        Self {
            buf: payload,
            packet_type,
            failed: false,
            first: true,
        }
    }
}

impl Iterator for Iter {
    type Item = Result<Frame, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if !self.buf.has_remaining() {
            if std::mem::take(&mut self.first) {
                // RFC 9000 §12.4: a packet containing no frames is a PROTOCOL_VIOLATION.
                self.failed = true;
                return Some(Err(DecodeError::InvalidPacket("packet contains no frames")));
            }
            return None;
        }
        self.first = false;
        let result = Frame::decode(&mut self.buf).and_then(|frame| {
            let ty = frame.ty();
            if ty.allowed_in(self.packet_type) {
                Ok(frame)
            } else {
                Err(DecodeError::FrameNotAllowed {
                    frame_type: ty.0,
                    packet_type: self.packet_type,
                })
            }
        });
        if result.is_err() {
            self.failed = true;
        }
        Some(result)
    }
}

#[cfg(test)]
mod tests;
