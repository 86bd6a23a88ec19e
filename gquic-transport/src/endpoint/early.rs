//! 0-RTT packets that arrive before their connection's first Initial (a reordering path can
//! deliver them first). RFC 9001 §4.7 lets a server "buffer a limited number" of them in
//! anticipation of the Initial; dropping them costs the client a retransmission of its early
//! data in 1-RTT, a round trip later.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::connection::EcnCodepoint;
use crate::wire::ConnectionId;

/// Datagrams held at most, over all connections.
const MAX_DATAGRAMS: usize = 64;
/// Bytes held at most, over all connections.
const MAX_BYTES: usize = 128 * 1024;
/// Datagrams held at most for one client (address and Destination Connection ID).
const MAX_PER_CLIENT: usize = 8;
/// How long a datagram waits for its Initial.
const MAX_AGE: Duration = Duration::from_millis(250);

struct Early {
    at: Instant,
    dst: ConnectionId,
    remote: SocketAddr,
    ecn: Option<EcnCodepoint>,
    data: BytesMut,
}

/// The held datagrams, oldest first.
#[derive(Default)]
pub(super) struct EarlyPackets {
    held: VecDeque<Early>,
    bytes: usize,
}

impl EarlyPackets {
    /// Holds a datagram of 0-RTT packets for `dst` from `remote`; `false` if it is refused
    /// (limits reached).
    pub(super) fn hold(
        &mut self,
        now: Instant,
        dst: ConnectionId,
        remote: SocketAddr,
        ecn: Option<EcnCodepoint>,
        data: BytesMut,
    ) -> bool {
        self.expire(now);
        let same = self
            .held
            .iter()
            .filter(|e| e.dst == dst && e.remote == remote)
            .count();
        if same >= MAX_PER_CLIENT
            || self.held.len() >= MAX_DATAGRAMS
            || self.bytes + data.len() > MAX_BYTES
        {
            return false;
        }
        self.bytes += data.len();
        self.held.push_back(Early {
            at: now,
            dst,
            remote,
            ecn,
            data,
        });
        true
    }

    /// Takes the datagrams held for `dst` from `remote`, in arrival order.
    pub(super) fn take(
        &mut self,
        now: Instant,
        dst: &ConnectionId,
        remote: SocketAddr,
    ) -> Vec<(Option<EcnCodepoint>, BytesMut)> {
        self.expire(now);
        if self.held.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut kept = VecDeque::with_capacity(self.held.len());
        for e in self.held.drain(..) {
            if e.dst == *dst && e.remote == remote {
                self.bytes -= e.data.len();
                out.push((e.ecn, e.data));
            } else {
                kept.push_back(e);
            }
        }
        self.held = kept;
        out
    }

    /// Drops datagrams that waited longer than [`MAX_AGE`].
    fn expire(&mut self, now: Instant) {
        while self
            .held
            .front()
            .is_some_and(|e| now.saturating_duration_since(e.at) > MAX_AGE)
        {
            if let Some(e) = self.held.pop_front() {
                self.bytes -= e.data.len();
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // One real Instant as the time origin.
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn held_per_client_in_order_within_limits_and_for_a_while() {
        let t0 = Instant::now();
        let a = ConnectionId::new(&[1; 8]);
        let b = ConnectionId::new(&[2; 8]);
        let mut e = EarlyPackets::default();
        for i in 0..MAX_PER_CLIENT {
            assert!(e.hold(t0, a, addr(1), None, BytesMut::from(&[i as u8; 100][..])));
        }
        assert!(
            !e.hold(t0, a, addr(1), None, BytesMut::from(&[9; 100][..])),
            "per client"
        );
        assert!(e.hold(t0, b, addr(1), None, BytesMut::from(&[7; 100][..])));
        assert!(
            e.hold(t0, a, addr(2), None, BytesMut::from(&[8; 100][..])),
            "another address"
        );
        let got = e.take(t0, &a, addr(1));
        assert_eq!(got.len(), MAX_PER_CLIENT);
        assert!(
            got.iter().enumerate().all(|(i, (_, d))| d[0] == i as u8),
            "in order"
        );
        assert!(e.take(t0, &a, addr(1)).is_empty(), "taken once");
        // Too old: gone.
        let later = t0 + MAX_AGE + Duration::from_millis(1);
        assert!(e.take(later, &b, addr(1)).is_empty());
        assert_eq!((e.held.len(), e.bytes), (0, 0));
        // The byte budget.
        let big = BytesMut::from(&vec![0u8; MAX_BYTES / 2 + 1][..]);
        assert!(e.hold(later, a, addr(3), None, big.clone()));
        assert!(!e.hold(later, b, addr(3), None, big), "bytes");
    }
}
