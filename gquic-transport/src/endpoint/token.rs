//! Address-validation tokens (RFC 9000 §8.1.2-§8.1.4): minted by a server for Retry packets
//! and NEW_TOKEN frames, checked on the client's next Initial.
//!
//! A token is integrity-protected, not encrypted (§8.1.4 requires the former): its fields, then
//! a 16-byte tag computed with HKDF-Expand (an HMAC) under a key the operator can share across
//! a fleet ([`crate::endpoint::EndpointConfig::token_key`]), so any server behind one address
//! accepts another's tokens. The client learns nothing it did not know: its own address and
//! the connection ID it chose.
//!
//! ```text
//! kind (1) | issued, Unix ms (8) | address | [Retry: port (2) | ODCID len (1) + ODCID |
//! Retry SCID len (1) + Retry SCID] | tag (16)
//! ```
//! The address is one byte of family (4 or 6) and the IP; a NEW_TOKEN token binds only the IP,
//! as NATs change ports between connections.

use std::net::{IpAddr, SocketAddr};

use rustls::crypto::tls13::HkdfExpander;

use crate::wire::{ConnectionId, Version};

const KIND_RETRY: u8 = 0;
const KIND_NEW_TOKEN: u8 = 1;
const TAG_LEN: usize = 16;

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Validated {
    /// From a Retry: the client's original Destination Connection ID and the Source
    /// Connection ID of the Retry (RFC 9000 §7.3 checks both).
    Retry {
        original_dst_cid: ConnectionId,
        retry_src_cid: ConnectionId,
    },
    /// From a NEW_TOKEN frame: the address was seen on an earlier connection.
    NewToken,
}

/// Why a token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Invalid {
    /// Not one of ours (bad tag, malformed): treat as if there were no token (§8.1.3).
    Unknown,
    /// Ours, but a Retry token that expired or names another address: INVALID_TOKEN (§8.1.3).
    Retry,
    /// Ours, but an expired NEW_TOKEN token or another address: ignore it.
    NewToken,
}

fn push_addr(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            out.push(4);
            out.extend_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            out.push(6);
            out.extend_from_slice(&v6.octets());
        }
    }
}

fn tag(key: &dyn HkdfExpander, version: Version, body: &[u8]) -> [u8; TAG_LEN] {
    let mut out = [0u8; TAG_LEN];
    // HKDF-Expand(PRK, info) is HMAC(PRK, info || 0x01): a MAC over the body. The QUIC
    // version is in it too, so a token is good only for the version of the connection that
    // issued it (RFC 9369 §5), without taking room in the token.
    let _ = key.expand_slice(&[b"gquic token", &version.0.to_be_bytes(), body], &mut out);
    out
}

/// A Retry token for a client at `remote` whose first Initial went to `original_dst_cid`,
/// answered by a Retry with Source Connection ID `retry_src_cid`.
pub(crate) fn mint_retry(
    key: &dyn HkdfExpander,
    version: Version,
    now_ms: u64,
    remote: SocketAddr,
    original_dst_cid: &ConnectionId,
    retry_src_cid: &ConnectionId,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(80);
    out.push(KIND_RETRY);
    out.extend_from_slice(&now_ms.to_be_bytes());
    push_addr(&mut out, remote.ip());
    out.extend_from_slice(&remote.port().to_be_bytes());
    original_dst_cid.encode_prefixed(&mut out);
    retry_src_cid.encode_prefixed(&mut out);
    let t = tag(key, version, &out);
    out.extend_from_slice(&t);
    out
}

/// A NEW_TOKEN token for a client at `remote` (RFC 9000 §8.1.3), on a connection of `version`.
pub(crate) fn mint_new_token(
    key: &dyn HkdfExpander,
    version: Version,
    now_ms: u64,
    remote: SocketAddr,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(48);
    out.push(KIND_NEW_TOKEN);
    out.extend_from_slice(&now_ms.to_be_bytes());
    push_addr(&mut out, remote.ip());
    let t = tag(key, version, &out);
    out.extend_from_slice(&t);
    out
}

/// Checks `token` from a client at `remote` at time `now_ms`, in an Initial of `version`, with
/// the two lifetimes. A token issued on a connection of another version is not ours.
#[allow(clippy::too_many_arguments)]
pub(crate) fn validate(
    key: &dyn HkdfExpander,
    version: Version,
    token: &[u8],
    remote: SocketAddr,
    now_ms: u64,
    retry_lifetime_ms: u64,
    new_token_lifetime_ms: u64,
) -> Result<Validated, Invalid> {
    let body_len = token.len().checked_sub(TAG_LEN).ok_or(Invalid::Unknown)?;
    let (body, t) = token.split_at(body_len);
    let expected = tag(key, version, body);
    if expected
        .iter()
        .zip(t)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        != 0
    {
        return Err(Invalid::Unknown);
    }
    let mut r = body;
    let mut take = |n: usize| -> Result<&[u8], Invalid> {
        if r.len() < n {
            return Err(Invalid::Unknown);
        }
        let (a, b) = r.split_at(n);
        r = b;
        Ok(a)
    };
    let kind = take(1)?[0];
    let issued = u64::from_be_bytes(take(8)?.try_into().map_err(|_| Invalid::Unknown)?);
    let ip: IpAddr = match take(1)?[0] {
        4 => <[u8; 4]>::try_from(take(4)?)
            .map_err(|_| Invalid::Unknown)?
            .into(),
        6 => <[u8; 16]>::try_from(take(16)?)
            .map_err(|_| Invalid::Unknown)?
            .into(),
        _ => return Err(Invalid::Unknown),
    };
    let age = now_ms.saturating_sub(issued);
    match kind {
        KIND_RETRY => {
            let port = u16::from_be_bytes(take(2)?.try_into().map_err(|_| Invalid::Unknown)?);
            let n = usize::from(take(1)?[0]);
            let odcid = ConnectionId::try_from_slice(take(n)?).ok_or(Invalid::Unknown)?;
            let n = usize::from(take(1)?[0]);
            let rscid = ConnectionId::try_from_slice(take(n)?).ok_or(Invalid::Unknown)?;
            if SocketAddr::new(ip, port) != remote || age > retry_lifetime_ms || issued > now_ms {
                return Err(Invalid::Retry);
            }
            Ok(Validated::Retry {
                original_dst_cid: odcid,
                retry_src_cid: rscid,
            })
        }
        KIND_NEW_TOKEN => {
            if ip != remote.ip() || age > new_token_lifetime_ms {
                return Err(Invalid::NewToken);
            }
            Ok(Validated::NewToken)
        }
        _ => Err(Invalid::Unknown),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(secret: &[u8]) -> Box<dyn HkdfExpander> {
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let suite = provider
            .cipher_suites
            .iter()
            .find_map(|s| s.tls13())
            .unwrap();
        suite.hkdf_provider.extract_from_secret(None, secret)
    }

    const A: &str = "192.0.2.1:4433";

    #[test]
    fn retry_tokens_bind_address_cids_and_time() {
        let k = key(b"fleet key");
        let remote: SocketAddr = A.parse().unwrap();
        let odcid = ConnectionId::new(&[1; 8]);
        let rscid = ConnectionId::new(&[2; 8]);
        let t = mint_retry(k.as_ref(), Version::V1, 1000, remote, &odcid, &rscid);
        assert_eq!(
            validate(k.as_ref(), Version::V1, &t, remote, 2000, 10_000, 0),
            Ok(Validated::Retry {
                original_dst_cid: odcid,
                retry_src_cid: rscid
            })
        );
        // Another server of the fleet, same key: accepted.
        let k2 = key(b"fleet key");
        assert!(validate(k2.as_ref(), Version::V1, &t, remote, 2000, 10_000, 0).is_ok());
        // Another key, another port, too late.
        let other = key(b"other key");
        assert_eq!(
            validate(other.as_ref(), Version::V1, &t, remote, 2000, 10_000, 0),
            Err(Invalid::Unknown)
        );
        let moved: SocketAddr = "192.0.2.1:4434".parse().unwrap();
        assert_eq!(
            validate(k.as_ref(), Version::V1, &t, moved, 2000, 10_000, 0),
            Err(Invalid::Retry)
        );
        assert_eq!(
            validate(k.as_ref(), Version::V1, &t, remote, 20_000, 10_000, 0),
            Err(Invalid::Retry)
        );
    }

    #[test]
    fn new_tokens_bind_the_ip_only() {
        let k = key(b"k");
        let remote: SocketAddr = A.parse().unwrap();
        let t = mint_new_token(k.as_ref(), Version::V1, 5, remote);
        let rebound: SocketAddr = "192.0.2.1:9999".parse().unwrap();
        assert_eq!(
            validate(k.as_ref(), Version::V1, &t, rebound, 10, 0, 1000),
            Ok(Validated::NewToken)
        );
        let elsewhere: SocketAddr = "192.0.2.2:4433".parse().unwrap();
        assert_eq!(
            validate(k.as_ref(), Version::V1, &t, elsewhere, 10, 0, 1000),
            Err(Invalid::NewToken)
        );
        assert_eq!(
            validate(k.as_ref(), Version::V1, &t, remote, 2000, 0, 1000),
            Err(Invalid::NewToken)
        );
    }

    /// RFC 9369 §5: a token is good only for the version of the connection that issued it.
    #[test]
    fn tokens_bind_the_quic_version() {
        let k = key(b"k");
        let remote: SocketAddr = A.parse().unwrap();
        let t = mint_new_token(k.as_ref(), Version::V2, 5, remote);
        assert_eq!(
            validate(k.as_ref(), Version::V2, &t, remote, 10, 0, 1000),
            Ok(Validated::NewToken)
        );
        assert_eq!(
            validate(k.as_ref(), Version::V1, &t, remote, 10, 0, 1000),
            Err(Invalid::Unknown)
        );
        let odcid = ConnectionId::new(&[1; 8]);
        let t = mint_retry(k.as_ref(), Version::V1, 5, remote, &odcid, &odcid);
        assert_eq!(
            validate(k.as_ref(), Version::V2, &t, remote, 10, 1000, 0),
            Err(Invalid::Unknown)
        );
    }

    proptest! {
        #[test]
        fn arbitrary_tokens_are_unknown_and_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let k = key(b"k");
            let remote: SocketAddr = A.parse().unwrap();
            prop_assert_eq!(validate(k.as_ref(), Version::V1, &bytes, remote, 0, 1, 1), Err(Invalid::Unknown));
        }

        #[test]
        fn any_flipped_bit_is_rejected(byte in 0usize..60, bit in 0u8..8) {
            let k = key(b"k");
            let remote: SocketAddr = A.parse().unwrap();
            let mut t = mint_retry(k.as_ref(), Version::V1, 1, remote, &ConnectionId::new(&[1; 8]), &ConnectionId::new(&[2; 8]));
            let i = byte % t.len();
            t[i] ^= 1 << bit;
            prop_assert!(validate(k.as_ref(), Version::V1, &t, remote, 1, 1000, 1000).is_err());
        }
    }
}
