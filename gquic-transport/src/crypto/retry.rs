//! The Retry Integrity Tag (RFC 9001 §5.8; RFC 9369 §3.3.3 for v2).
//!
//! The tag is AES-128-GCM over an empty plaintext, with a key and nonce fixed by the version and
//! the Retry pseudo-packet (the client's original Destination Connection ID, then the Retry
//! packet without its tag) as associated data. rustls does not expose a general AEAD for
//! 16-byte keys, so this uses the AEAD of the selected provider library directly.

use crate::wire::packet::RETRY_INTEGRITY_TAG_LEN;
use crate::wire::{ConnectionId, Version};

#[cfg(feature = "aws-lc-rs")]
use aws_lc_rs::aead;
#[cfg(all(feature = "ring", not(feature = "aws-lc-rs")))]
use ring::aead;

/// RFC 9001 §5.8: the v1 Retry integrity key and nonce.
const V1_KEY: [u8; 16] = [
    0xbe, 0x0c, 0x69, 0x0b, 0x9f, 0x66, 0x57, 0x5a, 0x1d, 0x76, 0x6b, 0x54, 0xe3, 0x68, 0xc8, 0x4e,
];
const V1_NONCE: [u8; 12] = [
    0x46, 0x15, 0x99, 0xd3, 0x5d, 0x63, 0x2b, 0xf2, 0x23, 0x98, 0x25, 0xbb,
];
/// RFC 9369 §3.3.3: the v2 Retry integrity key and nonce.
const V2_KEY: [u8; 16] = [
    0x8f, 0xb4, 0xb0, 0x1b, 0x56, 0xac, 0x48, 0xe2, 0x60, 0xfb, 0xcb, 0xce, 0xad, 0x7c, 0xcc, 0x92,
];
const V2_NONCE: [u8; 12] = [
    0xd8, 0x69, 0x69, 0xbc, 0x2d, 0x7c, 0x6d, 0x99, 0x90, 0xef, 0xb0, 0x4a,
];

/// Computes the Retry Integrity Tag for `retry_without_tag` (the whole Retry packet up to the
/// tag) sent in answer to a client whose first Initial had Destination Connection ID
/// `original_dst_cid`. Returns `None` for a version without Retry keys.
pub fn retry_tag(
    version: Version,
    original_dst_cid: &ConnectionId,
    retry_without_tag: &[u8],
) -> Option<[u8; RETRY_INTEGRITY_TAG_LEN]> {
    let (key, nonce) = match version {
        Version::V1 => (&V1_KEY, V1_NONCE),
        Version::V2 => (&V2_KEY, V2_NONCE),
        _ => return None,
    };
    // The Retry pseudo-packet (RFC 9001 §5.8, Figure 8). Retry is off the hot path; one buffer
    // per Retry is fine.
    let mut pseudo = Vec::with_capacity(1 + original_dst_cid.len() + retry_without_tag.len());
    pseudo.push(original_dst_cid.len() as u8);
    pseudo.extend_from_slice(original_dst_cid);
    pseudo.extend_from_slice(retry_without_tag);

    let key = aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_128_GCM, key).ok()?);
    let tag = key
        .seal_in_place_separate_tag(
            aead::Nonce::assume_unique_for_key(nonce),
            aead::Aad::from(&pseudo[..]),
            &mut [],
        )
        .ok()?;
    let mut out = [0; RETRY_INTEGRITY_TAG_LEN];
    out.copy_from_slice(tag.as_ref());
    Some(out)
}

/// Checks the tag at the end of a received Retry `packet` (RFC 9001 §5.8: a client MUST discard
/// a Retry whose tag does not verify). The comparison is constant-time.
pub fn verify_retry(version: Version, original_dst_cid: &ConnectionId, packet: &[u8]) -> bool {
    let Some(split) = packet.len().checked_sub(RETRY_INTEGRITY_TAG_LEN) else {
        return false;
    };
    let (body, tag) = packet.split_at(split);
    let Some(expected) = retry_tag(version, original_dst_cid, body) else {
        return false;
    };
    expected
        .iter()
        .zip(tag)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}
