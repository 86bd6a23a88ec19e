//! Explicit Congestion Notification (RFC 9000 §13.4, RFC 9002 §7.1, RFC 3168).
//!
//! - Receiving: the ECN codepoint of each datagram is counted per packet-number space for
//!   every packet it carried (§13.4.1), and the counts go back in ACK_ECN frames. A packet
//!   marked CE is acknowledged at once (§13.2.1).
//! - Sending: packets go out marked ECT(0) while the path is being tested or is known to
//!   carry ECN; acknowledgments validate it (§13.4.2.1). Missing or inconsistent counts, or
//!   every marked packet of the test lost (a path that drops marked packets), turn marking
//!   off. An increase of the peer's CE count is a congestion signal to the controller (RFC
//!   9002 §7.1) and increments [`ConnectionStats::ecn_ce`](super::ConnectionStats).

use std::time::Instant;

use super::spaces::SpaceId;
use super::Connection;
use crate::wire::frame::EcnCounts;

/// An IP header's ECN codepoint (RFC 3168 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EcnCodepoint {
    /// ECN-Capable Transport, codepoint 0b10.
    Ect0,
    /// ECN-Capable Transport, codepoint 0b01.
    Ect1,
    /// Congestion Experienced, 0b11.
    Ce,
}

impl EcnCodepoint {
    /// From the two ECN bits of the TOS / Traffic Class byte; `None` for Not-ECT.
    pub fn from_bits(bits: u8) -> Option<Self> {
        match bits & 0b11 {
            0b10 => Some(Self::Ect0),
            0b01 => Some(Self::Ect1),
            0b11 => Some(Self::Ce),
            _ => None,
        }
    }

    /// The two ECN bits.
    pub fn bits(self) -> u8 {
        match self {
            Self::Ect0 => 0b10,
            Self::Ect1 => 0b01,
            Self::Ce => 0b11,
        }
    }
}

/// Where ECN validation of the path stands (RFC 9000 §13.4.2, Appendix A.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EcnState {
    /// Packets are marked ECT(0); no acknowledgment has confirmed the marks yet.
    Testing,
    /// Acknowledgments reported our marks: the path carries ECN.
    Capable,
    /// Validation failed (or ECN is off): packets go out unmarked.
    Failed,
}

/// How many marked packets, all lost, make the test fail (RFC 9000 §A.4 suggests 10).
const TESTING_PACKETS: u64 = 10;

/// A connection's ECN state. The counts are per packet-number space (RFC 9000 §13.4.1) and
/// live in the spaces ([`SpaceEcn`]), so the Initial and Handshake ones go with their spaces.
#[derive(Debug)]
pub(super) struct Ecn {
    pub(super) state: EcnState,
    /// Marked packets sent and lost while testing.
    testing_sent: u64,
    testing_lost: u64,
}

/// The ECN counts of one packet-number space (RFC 9000 §13.4.1).
#[derive(Debug, Default)]
pub(super) struct SpaceEcn {
    /// Marks counted on packets received.
    received: EcnCounts,
    /// The peer's counts of our marked packets, as last reported.
    peer: EcnCounts,
}

impl SpaceEcn {
    /// No marks counted either way.
    pub(super) const fn new() -> Self {
        const ZERO: EcnCounts = EcnCounts {
            ect0: 0,
            ect1: 0,
            ce: 0,
        };
        Self {
            received: ZERO,
            peer: ZERO,
        }
    }

    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    /// Writes the counts out (connection hibernation).
    pub(super) fn pack(&self, p: &mut crate::pack::Packer) {
        for c in [&self.received, &self.peer] {
            p.u64(c.ect0);
            p.u64(c.ect1);
            p.u64(c.ce);
        }
    }

    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    /// Reads back what [`SpaceEcn::pack`] wrote.
    pub(super) fn unpack(u: &mut crate::pack::Unpacker<'_>) -> Option<Self> {
        let mut counts = || {
            Some(EcnCounts {
                ect0: u.u64()?,
                ect1: u.u64()?,
                ce: u.u64()?,
            })
        };
        Some(Self {
            received: counts()?,
            peer: counts()?,
        })
    }

    /// Counts a received packet's codepoint; true when it was CE.
    pub(super) fn on_packet_received(&mut self, ecn: Option<EcnCodepoint>) -> bool {
        let c = &mut self.received;
        match ecn {
            Some(EcnCodepoint::Ect0) => c.ect0 += 1,
            Some(EcnCodepoint::Ect1) => c.ect1 += 1,
            Some(EcnCodepoint::Ce) => {
                c.ce += 1;
                return true;
            }
            None => {}
        }
        false
    }

    /// The counts to put in an ACK frame: `None` (plain ACK) until a marked packet arrived.
    pub(super) fn ack_counts(&self) -> Option<EcnCounts> {
        let c = self.received;
        (c.ect0 + c.ect1 + c.ce > 0).then_some(c)
    }
}

impl Ecn {
    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    /// Writes the path's ECN state out (connection hibernation).
    pub(super) fn pack(&self, p: &mut crate::pack::Packer) {
        p.u64(match self.state {
            EcnState::Testing => 0,
            EcnState::Capable => 1,
            EcnState::Failed => 2,
        });
        p.u64(self.testing_sent);
        p.u64(self.testing_lost);
    }

    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    /// Reads back what [`Ecn::pack`] wrote.
    pub(super) fn unpack(u: &mut crate::pack::Unpacker<'_>) -> Option<Self> {
        Some(Self {
            state: match u.u64()? {
                0 => EcnState::Testing,
                1 => EcnState::Capable,
                2 => EcnState::Failed,
                _ => return None,
            },
            testing_sent: u.u64()?,
            testing_lost: u.u64()?,
        })
    }

    pub(super) fn new(enabled: bool) -> Self {
        Self {
            state: if enabled {
                EcnState::Testing
            } else {
                EcnState::Failed
            },
            testing_sent: 0,
            testing_lost: 0,
        }
    }

    /// The codepoint for the next datagram.
    pub(super) fn marking(&self) -> Option<EcnCodepoint> {
        (self.state != EcnState::Failed).then_some(EcnCodepoint::Ect0)
    }

    /// A new path: validate ECN on it again (RFC 9000 §13.4.2: per path); counts go on.
    pub(super) fn restart_validation(&mut self, enabled: bool) {
        self.state = if enabled {
            EcnState::Testing
        } else {
            EcnState::Failed
        };
        self.testing_sent = 0;
        self.testing_lost = 0;
    }

    pub(super) fn on_marked_sent(&mut self) {
        if self.state == EcnState::Testing {
            self.testing_sent += 1;
        }
    }

    /// A marked packet was declared lost.
    pub(super) fn on_marked_lost(&mut self) {
        if self.state == EcnState::Testing {
            self.testing_lost += 1;
            if self.testing_lost >= TESTING_PACKETS && self.testing_lost == self.testing_sent {
                // RFC 9000 §13.4.2: every marked packet lost; the path may drop them.
                tracing::debug!("ECN: every marked packet lost; marking off");
                self.state = EcnState::Failed;
            }
        }
    }
}

impl Connection {
    /// Validates the ECN counts of an ACK frame that newly acknowledged `newly_marked` packets
    /// we sent marked ECT(0) and raised the largest acknowledged (RFC 9000 §13.4.2.1); returns
    /// whether the peer's CE count increased.
    pub(super) fn on_ack_ecn(
        &mut self,
        space: SpaceId,
        counts: Option<&EcnCounts>,
        newly_marked: u64,
    ) -> bool {
        if self.ecn.state == EcnState::Failed {
            return false;
        }
        let Some(c) = counts else {
            if newly_marked > 0 {
                // Our marks were acknowledged without counts: the path or the peer drops them.
                tracing::debug!(?space, "ECN: ACK without ECN counts; marking off");
                self.ecn.state = EcnState::Failed;
            }
            return false;
        };
        let prev = self.spaces[space as usize].ecn.peer;
        if c.ect0 < prev.ect0 || c.ect1 < prev.ect1 || c.ce < prev.ce {
            // Counts never decrease (§13.4.2.1).
            tracing::debug!(?space, "ECN: counts went down; marking off");
            self.ecn.state = EcnState::Failed;
            return false;
        }
        let ect0_ce = (c.ect0 - prev.ect0) + (c.ce - prev.ce);
        if ect0_ce < newly_marked || c.ect1 > prev.ect1 {
            // Fewer marks than marked packets acknowledged (bleaching), or ECT(1) we never
            // sent (remarking).
            tracing::debug!(
                ?space,
                ect0_ce,
                newly_marked,
                "ECN: counts do not match; marking off"
            );
            self.ecn.state = EcnState::Failed;
            return false;
        }
        self.spaces[space as usize].ecn.peer = *c;
        if newly_marked > 0 && self.ecn.state == EcnState::Testing {
            tracing::debug!("ECN: path validated");
            self.ecn.state = EcnState::Capable;
        }
        let ce = c.ce > prev.ce;
        if ce {
            self.stats.ecn_ce += c.ce - prev.ce;
        }
        ce
    }

    /// Where ECN validation of the path stands (RFC 9000 §13.4.2).
    pub fn ecn_state(&self) -> EcnState {
        self.ecn.state
    }

    /// A congestion signal from CE marks (RFC 9002 §7.1): `sent` is the send time of the
    /// largest newly acknowledged packet.
    pub(super) fn on_ecn_congestion(&mut self, now: Instant, sent: Instant) {
        tracing::debug!("ECN: congestion experienced");
        self.cc.on_ecn_ce(now, sent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3168_codepoints() {
        assert_eq!(EcnCodepoint::from_bits(0b00), None);
        for c in [EcnCodepoint::Ect0, EcnCodepoint::Ect1, EcnCodepoint::Ce] {
            assert_eq!(EcnCodepoint::from_bits(c.bits()), Some(c));
            // Only the two low bits matter (the rest is DSCP).
            assert_eq!(EcnCodepoint::from_bits(0xb8 | c.bits()), Some(c));
        }
    }

    #[test]
    fn rfc9000_receive_counts_and_testing_failure() {
        let mut e = Ecn::new(true);
        let mut data = SpaceEcn::default();
        let initial = SpaceEcn::default();
        assert_eq!(e.marking(), Some(EcnCodepoint::Ect0));
        assert_eq!(data.ack_counts(), None, "plain ACK until a mark arrives");
        assert!(!data.on_packet_received(Some(EcnCodepoint::Ect0)));
        assert!(data.on_packet_received(Some(EcnCodepoint::Ce)));
        assert!(!data.on_packet_received(None));
        assert_eq!(
            data.ack_counts(),
            Some(EcnCounts {
                ect0: 1,
                ect1: 0,
                ce: 1
            })
        );
        assert_eq!(initial.ack_counts(), None, "counts are per space");
        // Every marked packet of the test lost: the path drops them, marking stops.
        for _ in 0..TESTING_PACKETS {
            e.on_marked_sent();
        }
        for _ in 0..TESTING_PACKETS - 1 {
            e.on_marked_lost();
        }
        assert_eq!(e.state, EcnState::Testing);
        e.on_marked_lost();
        assert_eq!(e.state, EcnState::Failed);
        assert_eq!(e.marking(), None);
        // A new path tests again; the receive counts go on.
        e.restart_validation(true);
        assert_eq!(e.state, EcnState::Testing);
        assert_eq!(data.ack_counts().map(|c| c.ce), Some(1));
        assert_eq!(Ecn::new(false).marking(), None, "ECN off");
    }
}
