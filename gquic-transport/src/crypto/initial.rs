//! Initial packet keys (RFC 9001 §5.2; RFC 9369 §3.3.1 for v2).

use rustls::crypto::CryptoProvider;
use rustls::quic::{Keys, Suite};
use rustls::CipherSuite;

use super::CryptoError;
use crate::types::Side;
use crate::wire::{ConnectionId, Version};

/// The suite Initial packets are protected with: TLS_AES_128_GCM_SHA256 from `provider`
/// (RFC 9001 §5.2: "Initial packets use AEAD_AES_128_GCM").
///
/// # Errors
/// [`CryptoError::NoInitialSuite`] if the provider does not offer it for QUIC.
pub fn initial_suite(provider: &CryptoProvider) -> Result<Suite, CryptoError> {
    provider
        .cipher_suites
        .iter()
        .find(|s| s.suite() == CipherSuite::TLS13_AES_128_GCM_SHA256)
        .and_then(|s| s.tls13())
        .and_then(|s| s.quic_suite())
        .ok_or(CryptoError::NoInitialSuite)
}

/// The Initial keys for `side`, derived from the Destination Connection ID of the client's first
/// Initial packet (RFC 9001 §5.2) with the version's salt and labels.
///
/// # Errors
/// [`CryptoError::UnsupportedVersion`] for a version without a key schedule here.
pub fn initial_keys(
    suite: &Suite,
    version: Version,
    client_dst_cid: &ConnectionId,
    side: Side,
) -> Result<Keys, CryptoError> {
    let tls_version = version
        .tls_version()
        .ok_or(CryptoError::UnsupportedVersion(version))?;
    let side = match side {
        Side::Client => rustls::Side::Client,
        Side::Server => rustls::Side::Server,
    };
    Ok(suite.keys(client_dst_cid, side, tls_version))
}
