//! # gquic-transport
//!
//! The QUIC transport of GQUIC (RFC 9000, RFC 9001, RFC 9002; QUIC v2, RFC 9369), written on
//! top of [`rustls::quic`].
//!
//! This release contains the foundation every later layer stands on: the complete wire format
//! and packet protection. Both are pure and sans-IO: no sockets, no tasks, no clock.
//!
//! - [`wire`]: variable-length integers, connection IDs, long and short headers for v1 and v2,
//!   Version Negotiation and Retry, packet numbers, every RFC 9000 frame plus DATAGRAM (RFC
//!   9221), the frame/packet-type rules, transport parameters, and coalesced packets.
//! - [`crypto`]: Initial keys (v1 and v2), packet and header protection applied in place, the
//!   Retry integrity tag, and the key-phase bookkeeping of key update.
//!
//! ## Protecting and reading a packet
//!
//! A client's first Initial, sealed and then read back the way a server does:
//!
//! ```
//! # #[cfg(feature = "aws-lc-rs")] {
//! use bytes::BytesMut;
//! use gquic_transport::{crypto, wire, Side};
//! use gquic_transport::wire::frame::{Frame, Iter};
//! use gquic_transport::wire::packet::{Header, PacketNumber, PartialDecode};
//! use gquic_transport::wire::{ConnectionId, Version};
//!
//! let provider = crypto::default_provider();
//! let suite = crypto::initial_suite(&provider).unwrap();
//! let dcid = ConnectionId::new(&[0x83, 0x94, 0xc8, 0xf0, 0x3e, 0x51, 0x57, 0x08]);
//! let client = crypto::initial_keys(&suite, Version::V1, &dcid, Side::Client).unwrap();
//! let server = crypto::initial_keys(&suite, Version::V1, &dcid, Side::Server).unwrap();
//!
//! // Write the header, the frames, padding to 1200 bytes (RFC 9000 §14.1), room for the tag.
//! let header = Header::Initial {
//!     version: Version::V1,
//!     dst_cid: dcid,
//!     src_cid: ConnectionId::EMPTY,
//!     token: Default::default(),
//!     number: PacketNumber::new(0, None),
//! };
//! let mut buf = Vec::new();
//! let partial = header.encode(&mut buf).unwrap();
//! Frame::Ping.encode(&mut buf);
//! buf.resize(1200, 0);
//! partial.finish(&mut buf).unwrap();
//! crypto::seal(&mut buf, partial.header_len(), partial.pn_offset, 0, &client.local).unwrap();
//!
//! // The server splits the datagram, removes header protection, then decrypts.
//! let (partial, rest) = PartialDecode::new(BytesMut::from(&buf[..]), 8).unwrap();
//! assert!(rest.is_none());
//! let packet = partial.finish(server.remote.header.as_ref()).unwrap();
//! let pn = packet.header.number().expand(None);
//! let payload = crypto::open(packet.buf, packet.header_len, pn, server.remote.packet.as_ref()).unwrap();
//! let frames: Vec<_> = Iter::new(payload, wire::PacketType::Initial).collect::<Result<_, _>>().unwrap();
//! assert_eq!(frames[0], Frame::Ping);
//! assert!(matches!(frames[1], Frame::Padding(_)));
//! # }
//! ```
//!
//! Decoders never panic on input: every malformed byte sequence becomes a
//! [`wire::DecodeError`] carrying the [`TransportErrorCode`] the RFC prescribes.

#![warn(missing_docs)]
// Unsafe code is allowed locally in two places only: the Linux socket layer (`runtime::udp`:
// `recvmsg`/`sendmsg` with ECN control messages), and the pointer through which connection and
// stream handles reach their endpoint's state (`runtime::connection::SharedRef`, counted under
// the state's lock instead of in its `Arc`).
#![deny(unsafe_code)]

pub mod config;
pub mod connection;
pub mod crypto;
pub mod endpoint;
pub mod error;
mod fast_hash;
#[cfg(feature = "h3")]
pub mod h3;
#[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
mod pack;
pub mod qlog;
pub mod range_set;
pub mod recovery;
#[cfg(feature = "runtime-tokio")]
pub mod runtime;
mod small_copy;
mod small_deque;
pub mod stream;
mod stream_map;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod types;
pub mod wire;

pub use config::{
    ClientConfig, RetryPolicy, ServerConfig, TokenMemoryCache, TokenStore, TransportConfig,
};
pub use error::TransportErrorCode;
pub use types::{Dir, Side, StreamId};
pub use wire::{VarInt, Version};
