//! A fast hasher for maps whose keys this crate chooses or bounds (connection IDs it issued,
//! stream IDs under its stream limits, its own connection numbers) and that are looked up per
//! packet: SipHash, the standard library's default, costs more than the lookup it serves.
//!
//! Not for keys a peer chooses freely and without bound: those keep the standard library's
//! keyed hasher (`by_reset_token`, for instance).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A folded-multiply hasher (each word is mixed in by a 64x64->128-bit multiplication whose
/// halves are xored, as foldhash does).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FastHasher(u64);

const SEED: u64 = 0xf135_7aea_2e62_a9c5;

impl FastHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        let full = u128::from(self.0 ^ word) * u128::from(SEED);
        self.0 = (full as u64) ^ ((full >> 64) as u64);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes([
                c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7],
            ]));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(last) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

/// A `HashMap` with [`FastHasher`].
pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// A `HashSet` with [`FastHasher`].
pub(crate) type FastSet<K> = std::collections::HashSet<K, BuildHasherDefault<FastHasher>>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{BuildHasher, Hash};

    fn hash<T: Hash + ?Sized>(t: &T) -> u64 {
        BuildHasherDefault::<FastHasher>::default().hash_one(t)
    }

    #[test]
    fn distinct_small_keys_spread_over_the_low_bits() {
        // Sequential stream IDs (client bidi: 0, 4, 8, ...) land in distinct buckets of a
        // 1024-bucket table, mostly.
        let mut buckets = std::collections::HashSet::new();
        for i in 0..1024u64 {
            buckets.insert(hash(&(i * 4)) & 1023);
        }
        assert!(buckets.len() > 600, "{} buckets of 1024", buckets.len());
        // Byte strings of different lengths differ even when zero-padded alike.
        assert_ne!(hash(&[0u8; 3][..]), hash(&[0u8; 4][..]));
        let mut m: FastMap<u64, u64> = FastMap::default();
        for i in 0..1000 {
            m.insert(i, i * 2);
        }
        assert!((0..1000).all(|i| m[&i] == i * 2));
    }
}
