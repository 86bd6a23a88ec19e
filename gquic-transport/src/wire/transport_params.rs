//! Transport parameters (RFC 9000 §7.4, §18; RFC 9221 §3; RFC 9368 §3).
//!
//! Carried in the TLS `quic_transport_parameters` extension. [`TransportParameters::decode`]
//! validates every rule of RFC 9000 §18.2 that can be checked without connection state:
//! value ranges, lengths, server-only parameters sent by a client, and duplicates; unknown and
//! reserved (greased) parameters are skipped (RFC 9000 §18.1). The checks that need connection
//! state (the connection-ID parameters matching what was seen on the wire, RFC 9000 §7.3) belong
//! to the connection.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

use bytes::{Buf, BufMut};

use super::{cid::ConnectionId, cid::ResetToken, varint, DecodeError, VarInt, Version};
use crate::types::Side;

/// The parameter identifiers (RFC 9000 §18.2, RFC 9221 §3, RFC 9368 §3).
mod id {
    pub(super) const ORIGINAL_DESTINATION_CONNECTION_ID: u64 = 0x00;
    pub(super) const MAX_IDLE_TIMEOUT: u64 = 0x01;
    pub(super) const STATELESS_RESET_TOKEN: u64 = 0x02;
    pub(super) const MAX_UDP_PAYLOAD_SIZE: u64 = 0x03;
    pub(super) const INITIAL_MAX_DATA: u64 = 0x04;
    pub(super) const INITIAL_MAX_STREAM_DATA_BIDI_LOCAL: u64 = 0x05;
    pub(super) const INITIAL_MAX_STREAM_DATA_BIDI_REMOTE: u64 = 0x06;
    pub(super) const INITIAL_MAX_STREAM_DATA_UNI: u64 = 0x07;
    pub(super) const INITIAL_MAX_STREAMS_BIDI: u64 = 0x08;
    pub(super) const INITIAL_MAX_STREAMS_UNI: u64 = 0x09;
    pub(super) const ACK_DELAY_EXPONENT: u64 = 0x0a;
    pub(super) const MAX_ACK_DELAY: u64 = 0x0b;
    pub(super) const DISABLE_ACTIVE_MIGRATION: u64 = 0x0c;
    pub(super) const PREFERRED_ADDRESS: u64 = 0x0d;
    pub(super) const ACTIVE_CONNECTION_ID_LIMIT: u64 = 0x0e;
    pub(super) const INITIAL_SOURCE_CONNECTION_ID: u64 = 0x0f;
    pub(super) const RETRY_SOURCE_CONNECTION_ID: u64 = 0x10;
    pub(super) const VERSION_INFORMATION: u64 = 0x11;
    pub(super) const MAX_DATAGRAM_FRAME_SIZE: u64 = 0x20;
}

/// The server's preferred address (RFC 9000 §18.2, §9.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreferredAddress {
    /// IPv4 address and port (all zero when the server offers none).
    pub address_v4: SocketAddrV4,
    /// IPv6 address and port (all zero when the server offers none).
    pub address_v6: SocketAddrV6,
    /// The connection ID to use on the new address (never empty).
    pub connection_id: ConnectionId,
    /// The stateless reset token for that connection ID.
    pub stateless_reset_token: ResetToken,
}

/// The Version Information parameter for compatible version negotiation (RFC 9368 §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInformation {
    /// The version the sender chose for this connection.
    pub chosen: Version,
    /// The versions the sender supports (or, for a server, would have accepted).
    pub available: Vec<Version>,
}

/// A set of transport parameters, with the RFC's default for every one left unset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportParameters {
    /// The DCID of the client's first Initial (server only).
    pub original_destination_connection_id: Option<ConnectionId>,
    /// Idle timeout in milliseconds; 0 disables it.
    pub max_idle_timeout: u64,
    /// Stateless reset token for the server's handshake connection ID (server only).
    pub stateless_reset_token: Option<ResetToken>,
    /// Largest UDP payload the sender will receive (at least 1200; default 65527).
    pub max_udp_payload_size: u64,
    /// Initial connection flow-control limit in bytes.
    pub initial_max_data: u64,
    /// Initial limit for bidirectional streams the sender opens.
    pub initial_max_stream_data_bidi_local: u64,
    /// Initial limit for bidirectional streams the peer opens.
    pub initial_max_stream_data_bidi_remote: u64,
    /// Initial limit for unidirectional streams the peer opens.
    pub initial_max_stream_data_uni: u64,
    /// Bidirectional streams the peer may open (at most 2^60).
    pub initial_max_streams_bidi: u64,
    /// Unidirectional streams the peer may open (at most 2^60).
    pub initial_max_streams_uni: u64,
    /// Exponent for decoding ACK Delay (at most 20; default 3).
    pub ack_delay_exponent: u64,
    /// Maximum ACK delay in milliseconds (below 2^14; default 25).
    pub max_ack_delay: u64,
    /// The sender does not support active connection migration.
    pub disable_active_migration: bool,
    /// The server's preferred address (server only).
    pub preferred_address: Option<PreferredAddress>,
    /// How many connection IDs the sender will store (at least 2; default 2).
    pub active_connection_id_limit: u64,
    /// The SCID of the sender's first Initial packet.
    pub initial_source_connection_id: Option<ConnectionId>,
    /// The SCID of the server's Retry packet (server only).
    pub retry_source_connection_id: Option<ConnectionId>,
    /// Largest DATAGRAM frame the sender accepts; `None` means datagrams are not supported
    /// (RFC 9221 §3).
    pub max_datagram_frame_size: Option<u64>,
    /// Version Information for compatible version negotiation (RFC 9368 §3).
    pub version_information: Option<VersionInformation>,
}

impl Default for TransportParameters {
    /// Every parameter at its RFC 9000 §18.2 default.
    fn default() -> Self {
        Self {
            original_destination_connection_id: None,
            max_idle_timeout: 0,
            stateless_reset_token: None,
            max_udp_payload_size: 65527,
            initial_max_data: 0,
            initial_max_stream_data_bidi_local: 0,
            initial_max_stream_data_bidi_remote: 0,
            initial_max_stream_data_uni: 0,
            initial_max_streams_bidi: 0,
            initial_max_streams_uni: 0,
            ack_delay_exponent: 3,
            max_ack_delay: 25,
            disable_active_migration: false,
            preferred_address: None,
            active_connection_id_limit: 2,
            initial_source_connection_id: None,
            retry_source_connection_id: None,
            max_datagram_frame_size: None,
            version_information: None,
        }
    }
}

fn invalid(id: u64, reason: &'static str) -> DecodeError {
    DecodeError::InvalidTransportParameter { id, reason }
}

fn put_int<B: BufMut>(buf: &mut B, id: u64, value: u64) {
    varint::encode(id, buf);
    varint::encode(varint::size(value) as u64, buf);
    varint::encode(value, buf);
}

fn int_len(id: u64, value: u64) -> usize {
    varint::size(id) + 1 + varint::size(value)
}

fn put_bytes<B: BufMut>(buf: &mut B, id: u64, value: &[u8]) {
    varint::encode(id, buf);
    varint::encode(value.len() as u64, buf);
    buf.put_slice(value);
}

fn bytes_len(id: u64, len: usize) -> usize {
    varint::size(id) + varint::size(len as u64) + len
}

const PREFERRED_ADDRESS_FIXED_LEN: usize = 4 + 2 + 16 + 2 + 1 + ResetToken::LEN;

impl TransportParameters {
    /// Writes every parameter that differs from its default (RFC 9000 §18).
    pub fn encode<B: BufMut>(&self, buf: &mut B) {
        let d = Self::default();
        if let Some(cid) = &self.original_destination_connection_id {
            put_bytes(buf, id::ORIGINAL_DESTINATION_CONNECTION_ID, cid);
        }
        if self.max_idle_timeout != d.max_idle_timeout {
            put_int(buf, id::MAX_IDLE_TIMEOUT, self.max_idle_timeout);
        }
        if let Some(token) = &self.stateless_reset_token {
            put_bytes(buf, id::STATELESS_RESET_TOKEN, &token.0);
        }
        for (pid, value, default) in self.int_params(&d) {
            if value != default {
                put_int(buf, pid, value);
            }
        }
        if self.disable_active_migration {
            put_bytes(buf, id::DISABLE_ACTIVE_MIGRATION, &[]);
        }
        if let Some(pa) = &self.preferred_address {
            varint::encode(id::PREFERRED_ADDRESS, buf);
            varint::encode(
                (PREFERRED_ADDRESS_FIXED_LEN + pa.connection_id.len()) as u64,
                buf,
            );
            buf.put_slice(&pa.address_v4.ip().octets());
            buf.put_u16(pa.address_v4.port());
            buf.put_slice(&pa.address_v6.ip().octets());
            buf.put_u16(pa.address_v6.port());
            pa.connection_id.encode_prefixed(buf);
            buf.put_slice(&pa.stateless_reset_token.0);
        }
        if let Some(cid) = &self.initial_source_connection_id {
            put_bytes(buf, id::INITIAL_SOURCE_CONNECTION_ID, cid);
        }
        if let Some(cid) = &self.retry_source_connection_id {
            put_bytes(buf, id::RETRY_SOURCE_CONNECTION_ID, cid);
        }
        if let Some(size) = self.max_datagram_frame_size {
            put_int(buf, id::MAX_DATAGRAM_FRAME_SIZE, size);
        }
        if let Some(info) = &self.version_information {
            varint::encode(id::VERSION_INFORMATION, buf);
            varint::encode(4 * (1 + info.available.len() as u64), buf);
            buf.put_u32(info.chosen.0);
            for v in &info.available {
                buf.put_u32(v.0);
            }
        }
    }

    /// The number of bytes [`TransportParameters::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        let d = Self::default();
        let mut len = 0;
        if let Some(cid) = &self.original_destination_connection_id {
            len += bytes_len(id::ORIGINAL_DESTINATION_CONNECTION_ID, cid.len());
        }
        if self.max_idle_timeout != d.max_idle_timeout {
            len += int_len(id::MAX_IDLE_TIMEOUT, self.max_idle_timeout);
        }
        if self.stateless_reset_token.is_some() {
            len += bytes_len(id::STATELESS_RESET_TOKEN, ResetToken::LEN);
        }
        for (pid, value, default) in self.int_params(&d) {
            if value != default {
                len += int_len(pid, value);
            }
        }
        if self.disable_active_migration {
            len += bytes_len(id::DISABLE_ACTIVE_MIGRATION, 0);
        }
        if let Some(pa) = &self.preferred_address {
            len += bytes_len(
                id::PREFERRED_ADDRESS,
                PREFERRED_ADDRESS_FIXED_LEN + pa.connection_id.len(),
            );
        }
        if let Some(cid) = &self.initial_source_connection_id {
            len += bytes_len(id::INITIAL_SOURCE_CONNECTION_ID, cid.len());
        }
        if let Some(cid) = &self.retry_source_connection_id {
            len += bytes_len(id::RETRY_SOURCE_CONNECTION_ID, cid.len());
        }
        if let Some(size) = self.max_datagram_frame_size {
            len += int_len(id::MAX_DATAGRAM_FRAME_SIZE, size);
        }
        if let Some(info) = &self.version_information {
            len += bytes_len(id::VERSION_INFORMATION, 4 * (1 + info.available.len()));
        }
        len
    }

    /// The plain integer parameters with their current and default values.
    fn int_params(&self, d: &Self) -> [(u64, u64, u64); 10] {
        [
            (
                id::MAX_UDP_PAYLOAD_SIZE,
                self.max_udp_payload_size,
                d.max_udp_payload_size,
            ),
            (
                id::INITIAL_MAX_DATA,
                self.initial_max_data,
                d.initial_max_data,
            ),
            (
                id::INITIAL_MAX_STREAM_DATA_BIDI_LOCAL,
                self.initial_max_stream_data_bidi_local,
                d.initial_max_stream_data_bidi_local,
            ),
            (
                id::INITIAL_MAX_STREAM_DATA_BIDI_REMOTE,
                self.initial_max_stream_data_bidi_remote,
                d.initial_max_stream_data_bidi_remote,
            ),
            (
                id::INITIAL_MAX_STREAM_DATA_UNI,
                self.initial_max_stream_data_uni,
                d.initial_max_stream_data_uni,
            ),
            (
                id::INITIAL_MAX_STREAMS_BIDI,
                self.initial_max_streams_bidi,
                d.initial_max_streams_bidi,
            ),
            (
                id::INITIAL_MAX_STREAMS_UNI,
                self.initial_max_streams_uni,
                d.initial_max_streams_uni,
            ),
            (
                id::ACK_DELAY_EXPONENT,
                self.ack_delay_exponent,
                d.ack_delay_exponent,
            ),
            (id::MAX_ACK_DELAY, self.max_ack_delay, d.max_ack_delay),
            (
                id::ACTIVE_CONNECTION_ID_LIMIT,
                self.active_connection_id_limit,
                d.active_connection_id_limit,
            ),
        ]
    }

    /// Decodes the parameters a peer on side `sender` sent.
    ///
    /// # Errors
    /// [`DecodeError::InvalidTransportParameter`] or
    /// [`DecodeError::DuplicateTransportParameter`] (both TRANSPORT_PARAMETER_ERROR) for any
    /// violation of RFC 9000 §18.2 or RFC 9368 §4, or [`DecodeError::UnexpectedEnd`] for a
    /// truncated list.
    pub fn decode(sender: Side, mut buf: &[u8]) -> Result<Self, DecodeError> {
        let mut params = Self::default();
        // One bit per known parameter ID (all below 64) to reject duplicates (RFC 9000 §7.4).
        let mut seen = 0u64;
        while buf.has_remaining() {
            let pid = VarInt::decode(&mut buf)?.into_inner();
            let len = VarInt::decode(&mut buf)?.into_inner();
            if len > buf.remaining() as u64 {
                return Err(invalid(pid, "length exceeds the extension"));
            }
            let (mut value, rest) = buf.split_at(len as usize);
            buf = rest;
            let known = matches!(pid, 0x00..=0x11 | 0x20);
            if !known {
                // RFC 9000 §18.1: unknown and reserved (31 * N + 27) parameters are ignored.
                continue;
            }
            if seen & (1 << pid) != 0 {
                return Err(DecodeError::DuplicateTransportParameter(pid));
            }
            seen |= 1 << pid;
            // RFC 9000 §18.2: a client MUST NOT send server-only parameters.
            if sender == Side::Client
                && matches!(
                    pid,
                    id::ORIGINAL_DESTINATION_CONNECTION_ID
                        | id::STATELESS_RESET_TOKEN
                        | id::PREFERRED_ADDRESS
                        | id::RETRY_SOURCE_CONNECTION_ID
                )
            {
                return Err(invalid(pid, "server-only parameter sent by a client"));
            }
            match pid {
                id::ORIGINAL_DESTINATION_CONNECTION_ID => {
                    params.original_destination_connection_id = Some(cid_value(pid, value)?)
                }
                id::INITIAL_SOURCE_CONNECTION_ID => {
                    params.initial_source_connection_id = Some(cid_value(pid, value)?)
                }
                id::RETRY_SOURCE_CONNECTION_ID => {
                    params.retry_source_connection_id = Some(cid_value(pid, value)?)
                }
                id::STATELESS_RESET_TOKEN => {
                    if value.len() != ResetToken::LEN {
                        return Err(invalid(pid, "stateless reset token must be 16 bytes"));
                    }
                    params.stateless_reset_token = Some(ResetToken::decode(&mut value)?);
                }
                id::DISABLE_ACTIVE_MIGRATION => {
                    if !value.is_empty() {
                        return Err(invalid(pid, "disable_active_migration must be empty"));
                    }
                    params.disable_active_migration = true;
                }
                id::PREFERRED_ADDRESS => {
                    params.preferred_address = Some(preferred_address(pid, value)?);
                }
                id::VERSION_INFORMATION => {
                    params.version_information = Some(version_information(sender, value)?);
                }
                _ => {
                    let v = int_value(pid, value)?;
                    match pid {
                        id::MAX_IDLE_TIMEOUT => params.max_idle_timeout = v,
                        id::MAX_UDP_PAYLOAD_SIZE => {
                            if v < 1200 {
                                return Err(invalid(pid, "max_udp_payload_size below 1200"));
                            }
                            params.max_udp_payload_size = v;
                        }
                        id::INITIAL_MAX_DATA => params.initial_max_data = v,
                        id::INITIAL_MAX_STREAM_DATA_BIDI_LOCAL => {
                            params.initial_max_stream_data_bidi_local = v
                        }
                        id::INITIAL_MAX_STREAM_DATA_BIDI_REMOTE => {
                            params.initial_max_stream_data_bidi_remote = v
                        }
                        id::INITIAL_MAX_STREAM_DATA_UNI => params.initial_max_stream_data_uni = v,
                        id::INITIAL_MAX_STREAMS_BIDI | id::INITIAL_MAX_STREAMS_UNI => {
                            // RFC 9000 §4.6: above 2^60 is a TRANSPORT_PARAMETER_ERROR.
                            if v > super::frame::MAX_STREAM_COUNT {
                                return Err(invalid(pid, "stream limit above 2^60"));
                            }
                            if pid == id::INITIAL_MAX_STREAMS_BIDI {
                                params.initial_max_streams_bidi = v;
                            } else {
                                params.initial_max_streams_uni = v;
                            }
                        }
                        id::ACK_DELAY_EXPONENT => {
                            if v > 20 {
                                return Err(invalid(pid, "ack_delay_exponent above 20"));
                            }
                            params.ack_delay_exponent = v;
                        }
                        id::MAX_ACK_DELAY => {
                            if v >= 1 << 14 {
                                return Err(invalid(pid, "max_ack_delay of 2^14 or more"));
                            }
                            params.max_ack_delay = v;
                        }
                        id::ACTIVE_CONNECTION_ID_LIMIT => {
                            if v < 2 {
                                return Err(invalid(pid, "active_connection_id_limit below 2"));
                            }
                            params.active_connection_id_limit = v;
                        }
                        id::MAX_DATAGRAM_FRAME_SIZE => params.max_datagram_frame_size = Some(v),
                        _ => {}
                    }
                }
            }
        }
        Ok(params)
    }
}

fn int_value(pid: u64, mut value: &[u8]) -> Result<u64, DecodeError> {
    let v = VarInt::decode(&mut value).map_err(|_| invalid(pid, "truncated integer"))?;
    if !value.is_empty() {
        return Err(invalid(pid, "integer does not fill the parameter"));
    }
    Ok(v.into_inner())
}

fn cid_value(pid: u64, value: &[u8]) -> Result<ConnectionId, DecodeError> {
    ConnectionId::try_from_slice(value).ok_or(invalid(pid, "connection ID longer than 20 bytes"))
}

fn preferred_address(pid: u64, mut v: &[u8]) -> Result<PreferredAddress, DecodeError> {
    if v.len() < PREFERRED_ADDRESS_FIXED_LEN {
        return Err(invalid(pid, "truncated preferred_address"));
    }
    let mut ip4 = [0; 4];
    v.copy_to_slice(&mut ip4);
    let port4 = v.get_u16();
    let mut ip6 = [0; 16];
    v.copy_to_slice(&mut ip6);
    let port6 = v.get_u16();
    let cid_len = v.get_u8() as usize;
    // RFC 9000 §18.2: a zero-length connection ID here is a TRANSPORT_PARAMETER_ERROR.
    if cid_len == 0 || cid_len > ConnectionId::MAX_LEN || v.len() != cid_len + ResetToken::LEN {
        return Err(invalid(pid, "bad connection ID in preferred_address"));
    }
    let connection_id = ConnectionId::decode_fixed(&mut v, cid_len)?;
    let stateless_reset_token = ResetToken::decode(&mut v)?;
    Ok(PreferredAddress {
        address_v4: SocketAddrV4::new(Ipv4Addr::from(ip4), port4),
        address_v6: SocketAddrV6::new(Ipv6Addr::from(ip6), port6, 0, 0),
        connection_id,
        stateless_reset_token,
    })
}

/// RFC 9368 §4: parse failures are TRANSPORT_PARAMETER_ERROR.
fn version_information(sender: Side, v: &[u8]) -> Result<VersionInformation, DecodeError> {
    let pid = id::VERSION_INFORMATION;
    if v.is_empty() || v.len() % 4 != 0 {
        return Err(invalid(pid, "length not a non-zero multiple of 4"));
    }
    let mut versions = v
        .chunks_exact(4)
        .map(|c| Version(u32::from_be_bytes([c[0], c[1], c[2], c[3]])));
    let chosen = versions.next().unwrap_or(Version::NEGOTIATION);
    let available: Vec<Version> = versions.collect();
    if chosen == Version::NEGOTIATION || available.contains(&Version::NEGOTIATION) {
        return Err(invalid(pid, "version zero"));
    }
    if sender == Side::Client && !available.contains(&chosen) {
        return Err(invalid(
            pid,
            "chosen version not among the available versions",
        ));
    }
    Ok(VersionInformation { chosen, available })
}

#[cfg(test)]
mod tests;
