//! Small copies cut from a block the thread's writes share: a write of a few hundred bytes
//! (an HTTP/3 frame, a short request or answer) costs no allocation of its own, only a
//! reference to the block, which is freed once every copy cut from it is gone.

use bytes::{Bytes, BytesMut};

/// Copies of at most this many bytes are cut from the shared block.
pub(crate) const SMALL_COPY: usize = 512;
/// The shared block's size: small, as a copy kept unsent or unacknowledged (a peer that
/// grants no credit) keeps its whole block alive.
pub(crate) const BLOCK: usize = 4096;

thread_local! {
    static SPARE: std::cell::RefCell<BytesMut> = std::cell::RefCell::new(BytesMut::new());
}

/// The first `n` bytes of `parts`, in order, copied into one `Bytes` (`n` at most their
/// total length): cut from the thread's block when `n` is at most [`SMALL_COPY`], in an
/// allocation of its own otherwise.
pub(crate) fn copy_parts<T: std::ops::Deref<Target = [u8]>>(parts: &[T], n: usize) -> Bytes {
    if n > SMALL_COPY {
        let mut joined = BytesMut::with_capacity(n);
        fill(&mut joined, parts, n);
        return joined.freeze();
    }
    cut(n, |block| fill(block, parts, n))
}

/// What remains of `buf`, copied into one `Bytes` and consumed, as [`copy_parts`] does.
#[cfg(feature = "h3")]
pub(crate) fn copy_buf<B: bytes::Buf>(buf: &mut B) -> Bytes {
    let n = buf.remaining();
    if n > SMALL_COPY {
        return buf.copy_to_bytes(n);
    }
    cut(n, |block| {
        while buf.has_remaining() {
            let chunk = buf.chunk();
            let len = chunk.len();
            block.extend_from_slice(chunk);
            buf.advance(len);
        }
    })
}

/// `n` bytes that `write` appends to the thread's block, cut from it (a new block once the
/// current one has no room for them).
#[inline]
fn cut(n: usize, write: impl FnOnce(&mut BytesMut)) -> Bytes {
    SPARE.with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.capacity() - spare.len() < n {
            *spare = BytesMut::with_capacity(BLOCK);
        }
        write(&mut spare);
        spare.split().freeze()
    })
}

fn fill<T: std::ops::Deref<Target = [u8]>>(out: &mut BytesMut, parts: &[T], n: usize) {
    let end = out.len() + n;
    for p in parts {
        let room = end - out.len();
        if room == 0 {
            break;
        }
        out.extend_from_slice(&p[..p.len().min(room)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Small copies share a block back to back, each with its own bytes; a larger one, and
    /// one that does not fit the block's rest, get room of their own.
    #[test]
    fn small_copies_share_a_block_with_their_bytes_intact() {
        let a = copy_parts(&[&b"abc"[..], &b"def"[..]], 5);
        let b = copy_parts(&[&[7u8; 100][..]], 100);
        assert_eq!(&a[..], b"abcde");
        assert_eq!(&b[..], &[7u8; 100][..]);
        assert_eq!(
            a.as_ptr().wrapping_add(a.len()),
            b.as_ptr(),
            "the second copy follows the first in the block"
        );
        let big = copy_parts(&[&[1u8; 600][..]], 600);
        assert_eq!(big.len(), 600);
        let c = copy_parts(&[&b"xyz"[..]], 3);
        assert_eq!(&c[..], b"xyz");
        assert_eq!(
            b.as_ptr().wrapping_add(b.len()),
            c.as_ptr(),
            "the big one is not in the block"
        );
        // Filling the block moves on to a new one; the copies already made stay intact.
        let many: Vec<Bytes> = (0..20u8)
            .map(|i| copy_parts(&[&[i; 500][..]], 500))
            .collect();
        for (i, m) in many.iter().enumerate() {
            assert!(m.iter().all(|&x| x == i as u8));
        }
        assert_eq!(&a[..], b"abcde");
    }
}
