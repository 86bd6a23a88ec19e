//! The compact byte form a hibernating connection is kept in (`gquic-bench idle`): integers
//! as LEB128 varints, instants as signed offsets from the moment the connection went to
//! sleep, byte strings with their length first.
//!
//! Each piece of connection state writes itself with a [`Packer`] and reads itself back with
//! an [`Unpacker`], listing its fields in the same order both ways. A piece that is in a state
//! not worth keeping in this form (packets in flight, open streams, queued frames) refuses
//! ([`Packer::require`]); the connection then stays awake.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use crate::wire::{ConnectionId, ResetToken};

/// Writes state out.
pub(crate) struct Packer {
    pub(crate) buf: Vec<u8>,
    base: Instant,
}

/// Refusal: the state cannot be packed now.
pub(crate) type Packed = Option<()>;

impl Packer {
    /// A packer whose instants count from `base`.
    pub(crate) fn new(base: Instant) -> Self {
        Self {
            buf: Vec::with_capacity(512),
            base,
        }
    }

    /// Refuses unless `ok`.
    pub(crate) fn require(&self, ok: bool) -> Packed {
        ok.then_some(())
    }

    pub(crate) fn u64(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    pub(crate) fn bool(&mut self, v: bool) {
        self.buf.push(u8::from(v));
    }

    pub(crate) fn opt_u64(&mut self, v: Option<u64>) {
        self.bool(v.is_some());
        if let Some(v) = v {
            self.u64(v);
        }
    }

    pub(crate) fn dur(&mut self, d: Duration) {
        self.u64(d.as_secs());
        self.u64(u64::from(d.subsec_nanos()));
    }

    pub(crate) fn opt_dur(&mut self, d: Option<Duration>) {
        self.bool(d.is_some());
        if let Some(d) = d {
            self.dur(d);
        }
    }

    pub(crate) fn time(&mut self, t: Instant) {
        match t.checked_duration_since(self.base) {
            Some(after) => {
                self.bool(true);
                self.dur(after);
            }
            None => {
                self.bool(false);
                self.dur(self.base - t);
            }
        }
    }

    pub(crate) fn opt_time(&mut self, t: Option<Instant>) {
        self.bool(t.is_some());
        if let Some(t) = t {
            self.time(t);
        }
    }

    pub(crate) fn bytes(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        self.buf.extend_from_slice(b);
    }

    pub(crate) fn cid(&mut self, c: &ConnectionId) {
        self.bytes(c);
    }

    pub(crate) fn token(&mut self, t: &ResetToken) {
        self.buf.extend_from_slice(&t.0);
    }

    pub(crate) fn addr(&mut self, a: SocketAddr) {
        match a.ip() {
            IpAddr::V4(ip) => {
                self.bool(false);
                self.buf.extend_from_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                self.bool(true);
                self.buf.extend_from_slice(&ip.octets());
                if let SocketAddr::V6(v6) = a {
                    self.u64(u64::from(v6.flowinfo()));
                    self.u64(u64::from(v6.scope_id()));
                }
            }
        }
        self.u64(u64::from(a.port()));
    }

    /// An optional IP address: a length byte (0, 4 or 16), then the octets.
    pub(crate) fn opt_ip(&mut self, ip: Option<IpAddr>) {
        match ip {
            None => self.buf.push(0),
            Some(IpAddr::V4(ip)) => {
                self.buf.push(4);
                self.buf.extend_from_slice(&ip.octets());
            }
            Some(IpAddr::V6(ip)) => {
                self.buf.push(16);
                self.buf.extend_from_slice(&ip.octets());
            }
        }
    }
}

/// Reads state back; every read is `None` on malformed input.
pub(crate) struct Unpacker<'a> {
    buf: &'a [u8],
    base: Instant,
}

impl<'a> Unpacker<'a> {
    /// An unpacker of `buf`, written by a [`Packer`] with the same `base`.
    pub(crate) fn new(buf: &'a [u8], base: Instant) -> Self {
        Self { buf, base }
    }

    /// Whether everything was read.
    pub(crate) fn is_done(&self) -> bool {
        self.buf.is_empty()
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.buf.split_at_checked(n)?;
        self.buf = rest;
        Some(head)
    }

    pub(crate) fn u64(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.take(1)?.first()?;
            v |= u64::from(b & 0x7f).checked_shl(shift)?;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        u32::try_from(self.u64()?).ok()
    }

    pub(crate) fn u16(&mut self) -> Option<u16> {
        u16::try_from(self.u64()?).ok()
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        u8::try_from(self.u64()?).ok()
    }

    pub(crate) fn bool(&mut self) -> Option<bool> {
        match self.take(1)?.first()? {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }

    pub(crate) fn opt_u64(&mut self) -> Option<Option<u64>> {
        Some(if self.bool()? {
            Some(self.u64()?)
        } else {
            None
        })
    }

    pub(crate) fn dur(&mut self) -> Option<Duration> {
        let secs = self.u64()?;
        let nanos = self.u32()?;
        (nanos < 1_000_000_000).then(|| Duration::new(secs, nanos))
    }

    pub(crate) fn opt_dur(&mut self) -> Option<Option<Duration>> {
        Some(if self.bool()? {
            Some(self.dur()?)
        } else {
            None
        })
    }

    pub(crate) fn time(&mut self) -> Option<Instant> {
        let after = self.bool()?;
        let d = self.dur()?;
        if after {
            self.base.checked_add(d)
        } else {
            self.base.checked_sub(d)
        }
    }

    pub(crate) fn opt_time(&mut self) -> Option<Option<Instant>> {
        Some(if self.bool()? {
            Some(self.time()?)
        } else {
            None
        })
    }

    pub(crate) fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.u64()?).ok()?;
        self.take(n)
    }

    pub(crate) fn cid(&mut self) -> Option<ConnectionId> {
        ConnectionId::try_from_slice(self.bytes()?)
    }

    pub(crate) fn token(&mut self) -> Option<ResetToken> {
        Some(ResetToken(self.take(ResetToken::LEN)?.try_into().ok()?))
    }

    pub(crate) fn addr(&mut self) -> Option<SocketAddr> {
        if self.bool()? {
            let ip: [u8; 16] = self.take(16)?.try_into().ok()?;
            let flow = self.u32()?;
            let scope = self.u32()?;
            let port = self.u16()?;
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                Ipv6Addr::from(ip),
                port,
                flow,
                scope,
            )))
        } else {
            let ip: [u8; 4] = self.take(4)?.try_into().ok()?;
            let port = self.u16()?;
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port))
        }
    }

    pub(crate) fn opt_ip(&mut self) -> Option<Option<IpAddr>> {
        Some(match *self.take(1)?.first()? {
            0 => None,
            4 => {
                let ip: [u8; 4] = self.take(4)?.try_into().ok()?;
                Some(IpAddr::V4(Ipv4Addr::from(ip)))
            }
            16 => {
                let ip: [u8; 16] = self.take(16)?.try_into().ok()?;
                Some(IpAddr::V6(Ipv6Addr::from(ip)))
            }
            _ => return None,
        })
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Tests take one real Instant as their time origin.
mod tests {
    use super::*;

    #[test]
    fn values_come_back_as_written() {
        let base = Instant::now();
        let mut p = Packer::new(base);
        let later = base + Duration::from_millis(1500);
        let earlier = base - Duration::from_nanos(7);
        let v6: SocketAddr = "[2001:db8::1]:4433".parse().unwrap();
        let v4: SocketAddr = "192.0.2.7:443".parse().unwrap();
        p.u64(u64::MAX);
        p.u64(0);
        p.u64(300);
        p.opt_u64(None);
        p.opt_u64(Some(5));
        p.bool(true);
        p.time(later);
        p.time(earlier);
        p.opt_time(None);
        p.opt_dur(Some(Duration::new(3, 999_999_999)));
        p.bytes(b"abc");
        p.cid(&ConnectionId::new(&[1, 2, 3, 4]));
        p.token(&ResetToken([9; 16]));
        p.addr(v6);
        p.addr(v4);
        let mut u = Unpacker::new(&p.buf, base);
        assert_eq!(u.u64(), Some(u64::MAX));
        assert_eq!(u.u64(), Some(0));
        assert_eq!(u.u64(), Some(300));
        assert_eq!(u.opt_u64(), Some(None));
        assert_eq!(u.opt_u64(), Some(Some(5)));
        assert_eq!(u.bool(), Some(true));
        assert_eq!(u.time(), Some(later));
        assert_eq!(u.time(), Some(earlier));
        assert_eq!(u.opt_time(), Some(None));
        assert_eq!(u.opt_dur(), Some(Some(Duration::new(3, 999_999_999))));
        assert_eq!(u.bytes(), Some(&b"abc"[..]));
        assert_eq!(u.cid(), Some(ConnectionId::new(&[1, 2, 3, 4])));
        assert_eq!(u.token(), Some(ResetToken([9; 16])));
        assert_eq!(u.addr(), Some(v6));
        assert_eq!(u.addr(), Some(v4));
        assert!(u.is_done());
    }

    proptest::proptest! {
        /// Any value comes back as written, whatever surrounds it.
        #[test]
        fn any_values_come_back(
            ints in proptest::collection::vec(proptest::num::u64::ANY, 0..20),
            secs in 0u64..1 << 40,
            nanos in 0u32..1_000_000_000,
            after in proptest::bool::ANY,
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
        ) {
            let base = Instant::now();
            let d = Duration::new(secs, nanos);
            let t = if after { base.checked_add(d) } else { base.checked_sub(d) };
            let mut p = Packer::new(base);
            for &v in &ints {
                p.u64(v);
            }
            p.opt_time(t);
            p.bytes(&bytes);
            let mut u = Unpacker::new(&p.buf, base);
            for &v in &ints {
                proptest::prop_assert_eq!(u.u64(), Some(v));
            }
            proptest::prop_assert_eq!(u.opt_time(), Some(t));
            proptest::prop_assert_eq!(u.bytes(), Some(&bytes[..]));
            proptest::prop_assert!(u.is_done());
        }

        /// Arbitrary bytes read as `None` or some value, never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let base = Instant::now();
            let mut u = Unpacker::new(&data, base);
            for step in 0.. {
                let more = match step % 6 {
                    0 => u.u64().is_some(),
                    1 => u.opt_time().is_some(),
                    2 => u.bytes().is_some(),
                    3 => u.addr().is_some(),
                    4 => u.cid().is_some(),
                    _ => u.opt_dur().is_some(),
                };
                if !more || u.is_done() {
                    break;
                }
            }
        }
    }

    #[test]
    fn malformed_input_reads_as_none() {
        let base = Instant::now();
        // An unterminated varint, an overlong one, a length past the end, a bad bool.
        assert_eq!(Unpacker::new(&[0x80], base).u64(), None);
        assert_eq!(Unpacker::new(&[0xff; 11], base).u64(), None);
        assert_eq!(Unpacker::new(&[5, 1, 2], base).bytes(), None);
        assert_eq!(Unpacker::new(&[2], base).bool(), None);
        assert_eq!(Unpacker::new(&[], base).addr(), None);
    }
}
