//! The QUIC wire format: pure encoders and decoders over [`bytes`].
//!
//! Everything here is a function of its input: no connection state, no clock, no I/O. Decoders
//! never panic, never loop without consuming input and never allocate more than the input they
//! were given; a malformed input yields a [`DecodeError`] whose [`DecodeError::code`] is the
//! transport error code the RFC prescribes for it.
//!
//! - [`VarInt`]: variable-length integers (RFC 9000 §16).
//! - [`ConnectionId`] and [`ResetToken`] (RFC 9000 §5.1, §10.3).
//! - [`packet`]: long and short headers for QUIC v1 and v2, Version Negotiation, Retry, and
//!   splitting coalesced packets (RFC 9000 §12.2, §17; RFC 9369 §3).
//! - [`pn`]: packet number truncation and recovery (RFC 9000 §17.1, Appendix A.2/A.3).
//! - [`frame`]: every RFC 9000 §19 frame plus DATAGRAM (RFC 9221), and which packet types may
//!   carry which frames (RFC 9000 §12.4).
//! - [`transport_params`]: transport parameters (RFC 9000 §18, RFC 9221 §3, RFC 9368 §3).

pub mod cid;
pub mod frame;
pub mod packet;
pub mod pn;
pub mod transport_params;
pub mod varint;
pub mod version;

pub use cid::{ConnectionId, ResetToken};
pub use frame::{Frame, FrameType};
pub use packet::{Header, LongType, PacketType, PartialDecode, ProtectedHeader};
pub use transport_params::TransportParameters;
pub use varint::VarInt;
pub use version::Version;

use crate::error::TransportErrorCode;

/// Why a decoder rejected its input.
///
/// [`DecodeError::code`] gives the transport error code a connection closes with when the input
/// came from an authenticated packet. Packet-level errors ([`DecodeError::InvalidPacket`]) are
/// normally answered by dropping the datagram, not by closing (RFC 9000 §12.2, §17).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended in the middle of a field.
    #[error("unexpected end of input")]
    UnexpectedEnd,
    /// A frame was malformed (RFC 9000 §12.4: FRAME_ENCODING_ERROR).
    #[error("malformed frame of type {frame_type:#x}: {reason}")]
    InvalidFrame {
        /// The type of the frame that failed to decode.
        frame_type: u64,
        /// What was wrong with it.
        reason: &'static str,
    },
    /// The frame type is not one this endpoint knows (RFC 9000 §12.4: FRAME_ENCODING_ERROR).
    #[error("unknown frame type {0:#x}")]
    UnknownFrameType(u64),
    /// A frame type used a longer encoding than needed (RFC 9000 §12.4: PROTOCOL_VIOLATION).
    #[error("frame type {0:#x} not minimally encoded")]
    NonMinimalFrameType(u64),
    /// A frame arrived in a packet type that may not carry it (RFC 9000 §12.4, Table 3).
    #[error("frame type {frame_type:#x} is not allowed in {packet_type:?} packets")]
    FrameNotAllowed {
        /// The offending frame's type.
        frame_type: u64,
        /// The packet type it arrived in.
        packet_type: PacketType,
    },
    /// Transport parameters were malformed or invalid (RFC 9000 §7.4, §18).
    #[error("invalid transport parameter {id:#x}: {reason}")]
    InvalidTransportParameter {
        /// The parameter's identifier.
        id: u64,
        /// What was wrong with it.
        reason: &'static str,
    },
    /// A transport parameter appeared more than once (RFC 9000 §7.4).
    #[error("duplicate transport parameter {0:#x}")]
    DuplicateTransportParameter(u64),
    /// A packet header was malformed; the packet is dropped.
    #[error("invalid packet: {0}")]
    InvalidPacket(&'static str),
}

impl DecodeError {
    /// The transport error code the RFC prescribes when this error is found in an authenticated
    /// packet.
    pub fn code(&self) -> TransportErrorCode {
        match self {
            Self::UnexpectedEnd | Self::InvalidFrame { .. } | Self::UnknownFrameType(_) => {
                TransportErrorCode::FRAME_ENCODING_ERROR
            }
            Self::NonMinimalFrameType(_) | Self::FrameNotAllowed { .. } => {
                TransportErrorCode::PROTOCOL_VIOLATION
            }
            Self::InvalidTransportParameter { .. } | Self::DuplicateTransportParameter(_) => {
                TransportErrorCode::TRANSPORT_PARAMETER_ERROR
            }
            Self::InvalidPacket(_) => TransportErrorCode::PROTOCOL_VIOLATION,
        }
    }

    /// The frame type to report in CONNECTION_CLOSE, where the error concerns one frame.
    pub fn frame_type(&self) -> Option<u64> {
        match *self {
            Self::InvalidFrame { frame_type, .. }
            | Self::FrameNotAllowed { frame_type, .. }
            | Self::UnknownFrameType(frame_type)
            | Self::NonMinimalFrameType(frame_type) => Some(frame_type),
            _ => None,
        }
    }
}
