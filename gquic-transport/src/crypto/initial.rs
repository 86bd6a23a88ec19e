//! Initial packet keys (RFC 9001 §5.2; RFC 9369 §3.3.1 for v2).

use rustls::crypto::CryptoProvider;
use rustls::quic::{Keys, Suite};
use rustls::CipherSuite;

use super::CryptoError;
use crate::types::Side;
use crate::wire::{ConnectionId, Version};

/// The suite Initial packets are protected with: TLS_AES_128_GCM_SHA256 (RFC 9001 §5.2:
/// "Initial packets use AEAD_AES_128_GCM", whatever TLS negotiates later). It comes from
/// `provider`, or, for a provider that offers TLS only other suites (a ChaCha20-only
/// client, say), from the crate's backend (feature `aws-lc-rs` or `ring`).
///
/// # Errors
/// [`CryptoError::NoInitialSuite`] if neither has it.
pub fn initial_suite(provider: &CryptoProvider) -> Result<Suite, CryptoError> {
    provider
        .cipher_suites
        .iter()
        .find(|s| s.suite() == CipherSuite::TLS13_AES_128_GCM_SHA256)
        .and_then(|s| s.tls13())
        .and_then(|s| s.quic_suite())
        .or_else(builtin_initial_suite)
        .ok_or(CryptoError::NoInitialSuite)
}

/// TLS_AES_128_GCM_SHA256 from the backend this crate was built with.
fn builtin_initial_suite() -> Option<Suite> {
    #[cfg(feature = "aws-lc-rs")]
    let suite = rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256;
    #[cfg(all(feature = "ring", not(feature = "aws-lc-rs")))]
    let suite = rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256;
    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    return suite.tls13().and_then(|s| s.quic_suite());
    #[cfg(not(any(feature = "aws-lc-rs", feature = "ring")))]
    None
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
