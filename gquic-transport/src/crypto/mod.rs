//! Packet protection: the glue between the wire format and `rustls::quic` (RFC 9001 §5).
//!
//! TLS itself, the key schedule and the AEADs are rustls and its crypto provider. This module
//! applies them to packets, in place and without allocating:
//!
//! - [`seal`] encrypts a packet's payload and applies header protection (RFC 9001 §5.3, §5.4);
//!   [`remove_header_protection`] and [`open`] undo it on receipt.
//! - [`initial`]: Initial keys for QUIC v1 and v2 (RFC 9001 §5.2, RFC 9369 §3.3.1).
//! - [`retry`]: the Retry Integrity Tag (RFC 9001 §5.8, RFC 9369 §3.3.3).
//! - [`version_keys`]: packet keys for the version a server switched a client to (RFC 9368
//!   §2.3), from TLS secrets, when rustls was started with another version.
//! - [`key_phase`]: 1-RTT key generations and the key-update bookkeeping of RFC 9001 §6,
//!   including the AEAD usage limits of §6.6.

pub mod initial;
pub mod key_phase;
#[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
pub mod retry;
#[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
pub mod version_keys;

use bytes::{Buf, Bytes, BytesMut};
use rustls::quic::{DirectionalKeys, HeaderProtectionKey, PacketKey};

pub use initial::{initial_keys, initial_suite};
pub use key_phase::{KeyPhase, KeyUpdateError, NextSecrets};

/// Offset of the header-protection sample after the start of the packet number
/// (RFC 9001 §5.4.2: the sample is taken as if the packet number were four bytes long).
pub const SAMPLE_OFFSET: usize = 4;

/// Why packet protection failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The packet is too short to take a header-protection sample from (RFC 9001 §5.4.2);
    /// senders must pad such packets.
    #[error("packet too short for a header protection sample: {len} bytes, need {needed}")]
    PacketTooShort {
        /// The packet's length.
        len: usize,
        /// The length needed.
        needed: usize,
    },
    /// The AEAD rejected the packet (forged, corrupted, or the wrong key). The packet is dropped
    /// and counts toward the integrity limit (RFC 9001 §6.6).
    #[error("packet authentication failed")]
    DecryptFailed,
    /// Encryption failed; only possible for a payload beyond the AEAD's limits.
    #[error("packet encryption failed")]
    EncryptFailed,
    /// The crypto provider has no cipher suite usable for QUIC Initial packets
    /// (TLS_AES_128_GCM_SHA256, RFC 9001 §5.2).
    #[error(
        "the rustls crypto provider lacks TLS13_AES_128_GCM_SHA256, needed for Initial packets"
    )]
    NoInitialSuite,
    /// The QUIC version has no key schedule here.
    #[error("QUIC version {0:?} is not supported")]
    UnsupportedVersion(crate::wire::Version),
    /// The TLS cipher suite is not one of the three QUIC uses (AES-128-GCM, AES-256-GCM,
    /// ChaCha20-Poly1305), so packet keys cannot be derived for it here.
    #[error("cipher suite {0:?} cannot protect QUIC packets here")]
    UnsupportedSuite(rustls::CipherSuite),
}

/// Encrypts a packet in place and applies header protection (RFC 9001 §5.3, §5.4.1).
///
/// `packet` holds exactly one packet: the header (`header_len` bytes, ending with the packet
/// number at `pn_offset`), the plaintext payload, and `tag_len` bytes of room for the AEAD tag
/// at the end. A long header's Length field must already be final
/// ([`crate::wire::packet::PartialEncode::finish`]).
///
/// # Errors
/// [`CryptoError::PacketTooShort`] if the packet leaves no room for the header-protection
/// sample; [`CryptoError::EncryptFailed`] if the AEAD refuses.
pub fn seal(
    packet: &mut [u8],
    header_len: usize,
    pn_offset: usize,
    packet_number: u64,
    keys: &DirectionalKeys,
) -> Result<(), CryptoError> {
    seal_with(
        packet,
        header_len,
        pn_offset,
        packet_number,
        keys.packet.as_ref(),
        keys.header.as_ref(),
    )
}

/// [`seal`] with the packet and header keys given separately (1-RTT packet keys change on key
/// update while the header key stays, RFC 9001 §6).
///
/// # Errors
/// As [`seal`].
pub fn seal_with(
    packet: &mut [u8],
    header_len: usize,
    pn_offset: usize,
    packet_number: u64,
    packet_key: &dyn PacketKey,
    header_key: &dyn HeaderProtectionKey,
) -> Result<(), CryptoError> {
    let tag_len = packet_key.tag_len();
    check_room(packet.len(), header_len, pn_offset, tag_len, header_key)?;
    let (header, rest) = packet.split_at_mut(header_len);
    let payload_len = rest.len() - tag_len;
    let (payload, tag_space) = rest.split_at_mut(payload_len);
    let tag = packet_key
        .encrypt_in_place(packet_number, header, payload)
        .map_err(|_| CryptoError::EncryptFailed)?;
    tag_space.copy_from_slice(tag.as_ref());
    let pn_len = header_len - pn_offset;
    apply_header_protection(packet, pn_offset, pn_len, header_key)
}

/// [`seal_with`] for a packet whose plaintext ends with `extra`, which is encrypted from where
/// it lies into `packet[split..]` instead of being copied there first
/// ([`version_keys::OwnPacketKey::seal_split`]). `packet` holds the header, the plaintext up
/// to `split`, then room for `extra` and the tag.
///
/// # Errors
/// As [`seal`]; [`CryptoError::EncryptFailed`] also if `split` is inside the header or the
/// room after it is not `extra.len()` plus the tag.
#[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
#[allow(clippy::too_many_arguments)]
pub fn seal_split(
    packet: &mut [u8],
    header_len: usize,
    pn_offset: usize,
    packet_number: u64,
    packet_key: &version_keys::OwnPacketKey,
    header_key: &dyn HeaderProtectionKey,
    split: usize,
    extra: &[u8],
) -> Result<(), CryptoError> {
    check_room(
        packet.len(),
        header_len,
        pn_offset,
        packet_key.tag_len(),
        header_key,
    )?;
    if split < header_len {
        return Err(CryptoError::EncryptFailed);
    }
    let (header, payload) = packet.split_at_mut(header_len);
    packet_key.seal_split(packet_number, header, payload, split - header_len, extra)?;
    let pn_len = header_len - pn_offset;
    apply_header_protection(packet, pn_offset, pn_len, header_key)
}

/// Whether a packet of `len` bytes holds its header, the AEAD tag and the header-protection
/// sample (RFC 9001 §5.4.2).
fn check_room(
    len: usize,
    header_len: usize,
    pn_offset: usize,
    tag_len: usize,
    header_key: &dyn HeaderProtectionKey,
) -> Result<(), CryptoError> {
    let needed = pn_offset + SAMPLE_OFFSET + header_key.sample_len();
    if len < needed || len < header_len + tag_len {
        return Err(CryptoError::PacketTooShort {
            len,
            needed: needed.max(header_len + tag_len),
        });
    }
    Ok(())
}

fn apply_header_protection(
    packet: &mut [u8],
    pn_offset: usize,
    pn_len: usize,
    hp: &dyn HeaderProtectionKey,
) -> Result<(), CryptoError> {
    let sample_start = pn_offset + SAMPLE_OFFSET;
    let (head, tail) = packet.split_at_mut(sample_start);
    let sample = &tail[..hp.sample_len()];
    let (first, after_first) = head.split_at_mut(1);
    let pn = &mut after_first[pn_offset - 1..pn_offset - 1 + pn_len];
    hp.encrypt_in_place(sample, &mut first[0], pn)
        .map_err(|_| CryptoError::EncryptFailed)
}

/// Removes header protection in place (RFC 9001 §5.4.1) and returns the packet number length.
///
/// # Errors
/// [`CryptoError::PacketTooShort`] if there is no room for the sample (RFC 9001 §5.4.2).
pub fn remove_header_protection(
    packet: &mut [u8],
    pn_offset: usize,
    hp: &dyn HeaderProtectionKey,
) -> Result<usize, CryptoError> {
    let sample_start = pn_offset + SAMPLE_OFFSET;
    let needed = sample_start + hp.sample_len();
    if packet.len() < needed || pn_offset == 0 {
        return Err(CryptoError::PacketTooShort {
            len: packet.len(),
            needed,
        });
    }
    let (head, tail) = packet.split_at_mut(sample_start);
    let sample = &tail[..hp.sample_len()];
    let (first, after_first) = head.split_at_mut(1);
    // All four possible packet-number bytes; the provider unmasks only as many as the
    // unprotected first byte says.
    let pn = &mut after_first[pn_offset - 1..];
    hp.decrypt_in_place(sample, &mut first[0], pn)
        .map_err(|_| CryptoError::DecryptFailed)?;
    Ok(usize::from(first[0] & 0x03) + 1)
}

/// Decrypts the payload of a packet whose header protection is removed (RFC 9001 §5.3) and
/// returns it as a zero-copy slice of `packet`.
///
/// # Errors
/// [`CryptoError::DecryptFailed`] if authentication fails; `packet` is then garbage and must be
/// dropped.
pub fn open(
    mut packet: BytesMut,
    header_len: usize,
    packet_number: u64,
    key: &dyn PacketKey,
) -> Result<Bytes, CryptoError> {
    let plain_len = open_in_place(&mut packet, header_len, packet_number, key)?;
    // Narrowed in place: `slice` would take a reference to the shared buffer (an atomic
    // increment) and dropping the whole would give it back (a decrement), per packet.
    packet.truncate(header_len + plain_len);
    packet.advance(header_len);
    Ok(packet.freeze())
}

/// [`open`] on a caller-owned buffer: decrypts `packet[header_len..]` in place and returns the
/// plaintext length (the plaintext starts at `header_len`).
///
/// # Errors
/// [`CryptoError::DecryptFailed`] if authentication fails.
pub fn open_in_place(
    packet: &mut [u8],
    header_len: usize,
    packet_number: u64,
    key: &dyn PacketKey,
) -> Result<usize, CryptoError> {
    if packet.len() < header_len + key.tag_len() {
        return Err(CryptoError::DecryptFailed);
    }
    let (header, payload) = packet.split_at_mut(header_len);
    Ok(key
        .decrypt_in_place(packet_number, header, payload)
        .map_err(|_| CryptoError::DecryptFailed)?
        .len())
}

/// The crypto provider GQUIC uses when the user supplies none. With both crypto features (the
/// default): aws-lc-rs for the key exchange (the hybrid post-quantum X25519MLKEM768 first),
/// signatures, keys and randomness, and ring's TLS 1.3 cipher suites for packet and header
/// protection and the key schedule. With one feature, that library's provider alone (ring's
/// offers no post-quantum group).
///
/// The combination is chosen by measurement (interleaved `gquic-bench` runs of 512 MiB, 20 a
/// side): ring opens a 1-RTT packet with less per-packet work than aws-lc-rs (which copies
/// its GCM context for each one), so receiving took 8-13% less CPU, with sending the same;
/// full handshakes took about 5% less. The ceilings' seal+open loop on one hot key shows the
/// two libraries within noise of each other; the per-packet costs show in real traffic.
///
/// TLS_AES_128_GCM_SHA256 comes first among the cipher suites (then TLS_AES_256_GCM_SHA384
/// and TLS_CHACHA20_POLY1305_SHA256), also chosen by measurement (`gquic-bench wire`,
/// `handshakes`): AES-128-GCM seals and opens a 1350-byte packet faster than AES-256-GCM (10
/// AES rounds against 14), and its SHA-256 key schedule runs on the CPU's SHA extensions where
/// SHA-384 has none, which made about a quarter of a handshake's CPU time. aws-lc-rs' own
/// order puts AES-256-GCM first. Every suite stays offered, and a server follows the client's
/// order (rustls' default), so peers that prefer another suite get it.
#[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
pub fn default_provider() -> rustls::crypto::CryptoProvider {
    #[cfg(feature = "aws-lc-rs")]
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    #[cfg(all(feature = "ring", not(feature = "aws-lc-rs")))]
    let mut provider = rustls::crypto::ring::default_provider();
    #[cfg(all(feature = "aws-lc-rs", feature = "ring"))]
    {
        provider.cipher_suites = rustls::crypto::ring::default_provider().cipher_suites;
    }
    prefer_aes_128_gcm(&mut provider.cipher_suites);
    provider
}

/// Moves TLS_AES_128_GCM_SHA256 to the front, keeping the others in order.
#[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
fn prefer_aes_128_gcm(suites: &mut [rustls::SupportedCipherSuite]) {
    if let Some(i) = suites
        .iter()
        .position(|s| s.suite() == rustls::CipherSuite::TLS13_AES_128_GCM_SHA256)
    {
        suites[..=i].rotate_right(1);
    }
}

#[cfg(test)]
mod tests;
