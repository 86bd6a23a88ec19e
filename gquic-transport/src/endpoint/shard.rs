//! Shards: several endpoints behind one address (SO_REUSEPORT sockets, one per core), each
//! owning its own connections.
//!
//! The kernel spreads datagrams over the sockets by their 4-tuple, so a connection's packets
//! normally reach the shard that owns it. When the 4-tuple changes (NAT rebinding, migration,
//! RFC 9000 §9) they land on another shard, which must hand them on. Every connection ID a
//! shard issues therefore names the shard, as draft-ietf-quic-load-balancers §"Server Process
//! Demultiplexing" proposes: the shard index sits in the low five bits of the first octet
//! (the bits §"First CID octet" leaves to the server), XORed with a keyed hash of the rest of
//! the ID, so an observer cannot tell which shard issued an ID and two IDs of one connection
//! stay unlinkable (RFC 9000 §5.1; the three high bits stay random). Every shard of a group
//! shares the endpoint configuration, and so the key (derived from the reset key).
//!
//! Only IDs the shards issued are routed this way: a client's first Initial (and its 0-RTT
//! packets) carry an ID the client chose, and are always handled where they arrive.

use std::net::SocketAddr;

use bytes::BytesMut;

use crate::connection::EcnCodepoint;

/// The most shards a group can have: the index takes five bits of the first octet.
pub const MAX_SHARDS: usize = 32;

/// A datagram that reached the wrong shard of a group, for the driver to hand to the shard
/// that owns its connection ([`crate::endpoint::Endpoint::poll_tossed`]).
#[derive(Debug)]
pub struct Tossed {
    /// The shard that owns the connection ID the datagram is addressed to.
    pub shard: usize,
    /// The peer's address.
    pub remote: SocketAddr,
    /// The local IP address it was sent to, if known.
    pub local_ip: Option<std::net::IpAddr>,
    /// The ECN codepoint of the datagram's IP header.
    pub ecn: Option<EcnCodepoint>,
    /// The datagram.
    pub data: BytesMut,
}

/// This shard's place in its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shard {
    pub(crate) index: u8,
    pub(crate) count: u8,
}

/// The keyed mask over a connection ID's bytes after the first (a 64-bit multiply-xorshift
/// mix: cheap enough for every unroutable packet, and not invertible without the key).
fn mask(rest: &[u8], key: u64) -> u8 {
    let mut word = [0u8; 8];
    let n = rest.len().min(8);
    word[..n].copy_from_slice(&rest[..n]);
    let mut h = u64::from_le_bytes(word) ^ key;
    for &b in rest.iter().skip(8) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h = (h ^ (h >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 32)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (h ^ (h >> 31)) as u8
}

/// Writes `shard` into the first octet of `cid` (random bytes of at least 4).
pub(crate) fn encode(cid: &mut [u8], shard: u8, key: u64) {
    let m = mask(&cid[1..], key);
    cid[0] = (cid[0] & 0xe0) | ((shard ^ m) & 0x1f);
}

/// The shard that issued `cid`, if `cid` could be one of the group's (right length, a valid
/// index).
pub(crate) fn decode(cid: &[u8], len: usize, count: u8, key: u64) -> Option<u8> {
    if cid.len() != len || cid.len() < 2 {
        return None;
    }
    let shard = (cid[0] ^ mask(&cid[1..], key)) & 0x1f;
    (shard < count).then_some(shard)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn every_encoded_id_decodes_to_its_shard(
            mut cid in proptest::collection::vec(any::<u8>(), 4..=20),
            shard in 0u8..32,
            key in any::<u64>(),
        ) {
            let len = cid.len();
            let high = cid[0] & 0xe0;
            encode(&mut cid, shard, key);
            prop_assert_eq!(decode(&cid, len, 32, key), Some(shard));
            // The high bits are left as they were (random).
            prop_assert_eq!(cid[0] & 0xe0, high);
            // Another length is never one of ours.
            prop_assert_eq!(decode(&cid[..len - 1], len, 32, key), None);
        }
    }

    #[test]
    fn the_first_octet_does_not_show_the_shard() {
        // Shard 0's IDs must not all share their low bits: with the keyed mask, the first
        // octets of 1,000 IDs of one shard take many values.
        let key = 0x0123_4567_89ab_cdef;
        let mut seen = std::collections::HashSet::new();
        for i in 0u32..1000 {
            let mut cid = [0u8; 8];
            cid[1..5].copy_from_slice(&i.wrapping_mul(2_654_435_761).to_le_bytes());
            encode(&mut cid, 0, key);
            seen.insert(cid[0] & 0x1f);
            assert_eq!(decode(&cid, 8, 4, key), Some(0));
        }
        assert!(seen.len() >= 30, "only {} low-bit patterns", seen.len());
        // A different key reads the shard differently for most IDs.
        let mut differ = 0;
        for i in 0u32..1000 {
            let mut cid = [0u8; 8];
            cid[1..5].copy_from_slice(&i.to_le_bytes());
            encode(&mut cid, 3, key);
            if decode(&cid, 8, 32, key ^ 1) != Some(3) {
                differ += 1;
            }
        }
        assert!(differ > 900, "{differ}");
    }
}
