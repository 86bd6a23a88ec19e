//! Packet number encoding and decoding (RFC 9000 §17.1, Appendix A.2 and A.3).

/// The number of bytes (1 to 4) needed to send `full_pn` so that a peer which has acknowledged
/// up to `largest_acked` can recover it (RFC 9000 §17.1, Appendix A.2).
///
/// The encoding covers more than twice the range of unacknowledged packets, as the RFC requires.
pub fn encoded_len(full_pn: u64, largest_acked: Option<u64>) -> usize {
    let num_unacked = match largest_acked {
        Some(acked) => full_pn.saturating_sub(acked),
        None => full_pn.saturating_add(1),
    };
    // min_bits = log2(num_unacked) + 1, plus one bit so the window is twice the range.
    let min_bits = 64 - num_unacked.leading_zeros() as usize + 1;
    min_bits.div_ceil(8).clamp(1, 4)
}

/// Truncates `full_pn` to its `len` least significant bytes (1 to 4), as written in a header.
pub fn truncate(full_pn: u64, len: usize) -> u32 {
    debug_assert!((1..=4).contains(&len));
    (full_pn & ((1u64 << (len * 8)) - 1)) as u32
}

/// Writes the truncated packet number in `len` bytes, big-endian.
pub fn write(full_pn: u64, len: usize, out: &mut [u8]) {
    let truncated = truncate(full_pn, len).to_be_bytes();
    out[..len].copy_from_slice(&truncated[4 - len..]);
}

/// Recovers a full packet number from its truncated form (RFC 9000 Appendix A.3).
///
/// `largest_pn` is the largest packet number successfully processed in this packet-number space
/// (`None` before any). `pn_len` is the number of bytes the truncated value was sent in.
pub fn decode(largest_pn: Option<u64>, truncated_pn: u32, pn_len: usize) -> u64 {
    debug_assert!((1..=4).contains(&pn_len));
    let pn_nbits = pn_len as u32 * 8;
    let expected_pn = largest_pn.map_or(0, |pn| pn + 1);
    let pn_win = 1u64 << pn_nbits;
    let pn_hwin = pn_win / 2;
    let pn_mask = pn_win - 1;
    let truncated = u64::from(truncated_pn) & pn_mask;
    // The incoming packet number should be greater than expected_pn - pn_hwin and less than or
    // equal to expected_pn + pn_hwin: replace the high bits of expected_pn with the truncated
    // value, then shift by one window in whichever direction lands it in range.
    let candidate_pn = (expected_pn & !pn_mask) | truncated;
    if candidate_pn + pn_hwin <= expected_pn && candidate_pn < (1u64 << 62) - pn_win {
        candidate_pn + pn_win
    } else if candidate_pn > expected_pn + pn_hwin && candidate_pn >= pn_win {
        candidate_pn - pn_win
    } else {
        candidate_pn
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// RFC 9000 Appendix A.2: "if an endpoint has received an acknowledgment for packet
    /// 0xabe8b3 and is sending a packet with a number of 0xac5c02, there are 29,519 (0x734f)
    /// outstanding packet numbers. In order to represent at least twice this range (59,038
    /// packets, or 0xe69e), 16 bits are required." And 0xace8fe needs 24 bits.
    #[test]
    fn rfc9000_pn_encoding_examples() {
        assert_eq!(encoded_len(0xac5c02, Some(0xabe8b3)), 2);
        assert_eq!(truncate(0xac5c02, 2), 0x5c02);
        assert_eq!(encoded_len(0xace8fe, Some(0xabe8b3)), 3);
        assert_eq!(truncate(0xace8fe, 3), 0xace8fe);
        assert_eq!(encoded_len(0, None), 1);
        assert_eq!(encoded_len(1 << 40, Some(0)), 4);
    }

    /// RFC 9000 Appendix A.3: "if the highest successfully authenticated packet had a packet
    /// number of 0xa82f30ea, then a packet containing a 16-bit value of 0x9b32 will be decoded
    /// as 0xa82f9b32."
    #[test]
    fn rfc9000_pn_decoding_example() {
        assert_eq!(decode(Some(0xa82f30ea), 0x9b32, 2), 0xa82f9b32);
        // RFC 9001 A.2/A.3 packets: first packets of a space.
        assert_eq!(decode(None, 2, 4), 2);
        assert_eq!(decode(None, 1, 2), 1);
        // Wrapping down across a window boundary.
        assert_eq!(decode(Some(0x1_00), 0xff, 1), 0xff);
        assert_eq!(decode(Some(0xfe), 0x01, 1), 0x101);
    }

    proptest! {
        /// Whatever the peer last acknowledged, the truncation we pick is recovered exactly by a
        /// receiver that has seen anything within the window.
        #[test]
        fn pn_roundtrip(largest_acked in 0u64..(1 << 60), gap in 1u64..(1 << 20), seen_back in 0u64..(1 << 20)) {
            let full = largest_acked + gap;
            let len = encoded_len(full, Some(largest_acked));
            // The receiver has processed some packet between largest_acked and full - 1.
            let largest_seen = full - 1 - (seen_back % gap);
            let mut out = [0u8; 4];
            write(full, len, &mut out);
            let mut t = 0u32;
            for b in &out[..len] { t = (t << 8) | u32::from(*b); }
            prop_assert_eq!(decode(Some(largest_seen), t, len), full);
        }

        #[test]
        fn pn_decode_never_panics(largest in proptest::option::of(0u64..(1 << 62)), t: u32, len in 1usize..=4) {
            let pn = decode(largest, t, len);
            prop_assert!(pn < (1 << 62) + (1 << 32));
        }
    }
}
