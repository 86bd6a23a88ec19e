//! Transport error codes (RFC 9000 §20.1) shared by every layer of the transport.

use std::fmt;

/// A QUIC transport error code, as carried in a CONNECTION_CLOSE frame of type 0x1c
/// (RFC 9000 §20.1).
///
/// Codes are plain numbers on the wire; the constants name the ones the RFCs define. TLS alerts
/// map into the `CRYPTO_ERROR` range with [`TransportErrorCode::crypto`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransportErrorCode(pub u64);

impl TransportErrorCode {
    /// An endpoint uses this with CONNECTION_CLOSE to signal that the connection is being closed
    /// abruptly in the absence of any error.
    pub const NO_ERROR: Self = Self(0x00);
    /// The endpoint encountered an internal error and cannot continue with the connection.
    pub const INTERNAL_ERROR: Self = Self(0x01);
    /// The server refused to accept a new connection.
    pub const CONNECTION_REFUSED: Self = Self(0x02);
    /// An endpoint received more data than it permitted in its advertised data limits.
    pub const FLOW_CONTROL_ERROR: Self = Self(0x03);
    /// An endpoint received a frame for a stream identifier that exceeded its advertised limit.
    pub const STREAM_LIMIT_ERROR: Self = Self(0x04);
    /// An endpoint received a frame for a stream that was not in a state that permitted it.
    pub const STREAM_STATE_ERROR: Self = Self(0x05);
    /// The final size of a stream changed, or data was received beyond it.
    pub const FINAL_SIZE_ERROR: Self = Self(0x06);
    /// An endpoint received a frame that was badly formatted.
    pub const FRAME_ENCODING_ERROR: Self = Self(0x07);
    /// Transport parameters were badly formatted, invalid, absent when mandatory or redundant.
    pub const TRANSPORT_PARAMETER_ERROR: Self = Self(0x08);
    /// The peer provided more connection IDs than the advertised `active_connection_id_limit`.
    pub const CONNECTION_ID_LIMIT_ERROR: Self = Self(0x09);
    /// A protocol compliance error not covered by a more specific code.
    pub const PROTOCOL_VIOLATION: Self = Self(0x0a);
    /// A server received a client Initial that contained an invalid Token field.
    pub const INVALID_TOKEN: Self = Self(0x0b);
    /// The application or application protocol caused the connection to be closed.
    pub const APPLICATION_ERROR: Self = Self(0x0c);
    /// An endpoint received more data in CRYPTO frames than it can buffer.
    pub const CRYPTO_BUFFER_EXCEEDED: Self = Self(0x0d);
    /// An endpoint detected errors in performing key updates (RFC 9001 §6).
    pub const KEY_UPDATE_ERROR: Self = Self(0x0e);
    /// The AEAD confidentiality or integrity limit was reached (RFC 9001 §6.6).
    pub const AEAD_LIMIT_REACHED: Self = Self(0x0f);
    /// No network path could support the connection.
    pub const NO_VIABLE_PATH: Self = Self(0x10);
    /// Compatible version negotiation failed (RFC 9368 §10.2).
    pub const VERSION_NEGOTIATION_ERROR: Self = Self(0x11);

    /// The code for a TLS alert: `CRYPTO_ERROR` (0x0100-0x01ff) plus the alert number
    /// (RFC 9001 §4.8).
    pub const fn crypto(alert: u8) -> Self {
        Self(0x0100 | alert as u64)
    }

    /// The TLS alert carried by a `CRYPTO_ERROR` code, if this is one.
    pub const fn tls_alert(self) -> Option<u8> {
        if self.0 >= 0x0100 && self.0 <= 0x01ff {
            Some((self.0 & 0xff) as u8)
        } else {
            None
        }
    }

    fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0x00 => "NO_ERROR",
            0x01 => "INTERNAL_ERROR",
            0x02 => "CONNECTION_REFUSED",
            0x03 => "FLOW_CONTROL_ERROR",
            0x04 => "STREAM_LIMIT_ERROR",
            0x05 => "STREAM_STATE_ERROR",
            0x06 => "FINAL_SIZE_ERROR",
            0x07 => "FRAME_ENCODING_ERROR",
            0x08 => "TRANSPORT_PARAMETER_ERROR",
            0x09 => "CONNECTION_ID_LIMIT_ERROR",
            0x0a => "PROTOCOL_VIOLATION",
            0x0b => "INVALID_TOKEN",
            0x0c => "APPLICATION_ERROR",
            0x0d => "CRYPTO_BUFFER_EXCEEDED",
            0x0e => "KEY_UPDATE_ERROR",
            0x0f => "AEAD_LIMIT_REACHED",
            0x10 => "NO_VIABLE_PATH",
            0x11 => "VERSION_NEGOTIATION_ERROR",
            _ => return None,
        })
    }
}

impl fmt::Debug for TransportErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for TransportErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.name(), self.tls_alert()) {
            (Some(name), _) => f.write_str(name),
            (None, Some(alert)) => match alert_name(alert) {
                Some(name) => write!(f, "CRYPTO_ERROR(TLS alert {alert}: {name})"),
                None => write!(f, "CRYPTO_ERROR(TLS alert {alert})"),
            },
            (None, None) => write!(f, "unknown transport error {:#x}", self.0),
        }
    }
}

/// Names of the TLS alerts a QUIC handshake can end with (RFC 8446 §6, RFC 7301 §3.2).
fn alert_name(alert: u8) -> Option<&'static str> {
    Some(match alert {
        10 => "unexpected_message",
        20 => "bad_record_mac",
        40 => "handshake_failure",
        42 => "bad_certificate",
        43 => "unsupported_certificate",
        44 => "certificate_revoked",
        45 => "certificate_expired",
        46 => "certificate_unknown",
        47 => "illegal_parameter",
        48 => "unknown_ca",
        50 => "decode_error",
        51 => "decrypt_error",
        70 => "protocol_version",
        71 => "insufficient_security",
        80 => "internal_error",
        109 => "missing_extension",
        110 => "unsupported_extension",
        112 => "unrecognized_name",
        116 => "certificate_required",
        120 => "no_application_protocol (no ALPN in common)",
        _ => return None,
    })
}

impl From<TransportErrorCode> for u64 {
    fn from(code: TransportErrorCode) -> Self {
        code.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc9000_error_codes_display() {
        assert_eq!(TransportErrorCode::PROTOCOL_VIOLATION.0, 0x0a);
        assert_eq!(
            TransportErrorCode::PROTOCOL_VIOLATION.to_string(),
            "PROTOCOL_VIOLATION"
        );
        let alert = TransportErrorCode::crypto(120); // no_application_protocol
        assert_eq!(alert.0, 0x178);
        assert_eq!(alert.tls_alert(), Some(120));
        assert_eq!(
            alert.to_string(),
            "CRYPTO_ERROR(TLS alert 120: no_application_protocol (no ALPN in common))"
        );
        assert_eq!(
            TransportErrorCode::crypto(0xff).to_string(),
            "CRYPTO_ERROR(TLS alert 255)"
        );
        assert_eq!(
            TransportErrorCode(0x4242).to_string(),
            "unknown transport error 0x4242"
        );
        assert_eq!(TransportErrorCode::NO_ERROR.tls_alert(), None);
    }
}
