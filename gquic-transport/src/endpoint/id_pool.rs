//! Unpredictable bytes for new connection IDs, expanded from the endpoint's secret a block at
//! a time.
//!
//! RFC 9000 §5.1 asks that connection IDs carry nothing an observer could use to link them;
//! §7.2 that a client's first Destination Connection ID be unpredictable. HKDF-Expand under a
//! secret gives that, and stays replayable from the seed (tests pass fixed secrets). One
//! expansion per ID cost a whole HMAC setup and finish for 8 bytes; the pool expands
//! [`POOL`] bytes at once (one HMAC block per 32 bytes) and hands them out in turn.

use rustls::crypto::tls13::HkdfExpander;

/// Bytes expanded per refill: 32 IDs of the default 8 bytes.
const POOL: usize = 256;

/// The pool: `bytes[used..]` are still to hand out.
pub(super) struct IdPool {
    bytes: [u8; POOL],
    used: usize,
    refills: u64,
}

impl Default for IdPool {
    fn default() -> Self {
        Self {
            bytes: [0; POOL],
            used: POOL,
            refills: 0,
        }
    }
}

impl IdPool {
    /// Fills `out` (at most [`POOL`] bytes) with the next unused bytes of the pool, expanding
    /// the next block from `expander` when the pool runs short. Bytes are never handed out
    /// twice: what is left of a block too short for `out` is dropped.
    pub(super) fn take(&mut self, expander: &dyn HkdfExpander, out: &mut [u8]) {
        debug_assert!(out.len() <= POOL);
        let n = out.len().min(POOL);
        if POOL - self.used < n {
            self.refills += 1;
            // HKDF-Expand of the refill counter (RFC 5869 §2.3); the label differs from every
            // other expansion under the same secret.
            if expander
                .expand_slice(&[b"cid pool", &self.refills.to_be_bytes()], &mut self.bytes)
                .is_err()
            {
                // Only with an output longer than HKDF allows, which POOL is not; still
                // distinct IDs (the caller checks for collisions).
                for (i, b) in self.bytes.iter_mut().enumerate() {
                    *b = (self.refills as u8) ^ (i as u8);
                }
            }
            self.used = 0;
        }
        out[..n].copy_from_slice(&self.bytes[self.used..self.used + n]);
        self.used += n;
    }
}

#[cfg(all(test, any(feature = "aws-lc-rs", feature = "ring")))]
mod tests {
    use super::*;

    fn expander(seed: u8) -> Box<dyn HkdfExpander> {
        let provider = crate::crypto::default_provider();
        let suite = provider
            .cipher_suites
            .iter()
            .find_map(|s| s.tls13())
            .expect("a TLS 1.3 suite");
        suite
            .hkdf_provider
            .expander_for_okm(&rustls::crypto::tls13::OkmBlock::new(&[seed; 32]))
    }

    /// Bytes never repeat across refills and takes of mixed sizes, the same seed gives the
    /// same sequence, and another seed another.
    #[test]
    fn takes_are_fresh_and_replayable() {
        let e = expander(7);
        let mut pool = IdPool::default();
        let mut seen = std::collections::HashSet::new();
        let mut first = Vec::new();
        for i in 0..200 {
            let mut out = [0u8; 20];
            let len = [8, 16, 20, 4][i % 4];
            pool.take(e.as_ref(), &mut out[..len]);
            assert!(seen.insert(out[..len].to_vec()), "take {i} repeated");
            assert!(out[..len].iter().any(|&b| b != 0), "take {i} is all zero");
            first.push(out);
        }
        // 2,400 bytes taken: at least 9 blocks of 256.
        assert!(pool.refills >= 9, "{} refills", pool.refills);
        let mut again = IdPool::default();
        for (i, want) in first.iter().enumerate() {
            let mut out = [0u8; 20];
            let len = [8, 16, 20, 4][i % 4];
            again.take(e.as_ref(), &mut out[..len]);
            assert_eq!(&out, want, "replay of take {i}");
        }
        let mut other = IdPool::default();
        let mut out = [0u8; 20];
        other.take(expander(8).as_ref(), &mut out);
        assert_ne!(out, first[0], "another seed");
    }
}
