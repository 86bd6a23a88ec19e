//! Packet-number spaces (RFC 9000 §12.3): keys, CRYPTO streams, sent and received packets.

use std::ops::Range;
use std::time::Instant;

use rustls::quic::Keys;

use super::streams::{StreamChunk, StreamControl};
use crate::range_set::RangeSet;
use crate::recovery::sent::SentPackets;
use crate::stream::{Assembler, SendBuffer};
use crate::wire::PacketType;

/// The three packet-number spaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SpaceId {
    /// Initial packets.
    Initial = 0,
    /// Handshake packets.
    Handshake = 1,
    /// 0-RTT and 1-RTT packets.
    Data = 2,
}

impl SpaceId {
    /// All three, in the order packets are coalesced (RFC 9000 §12.2).
    pub const ALL: [SpaceId; 3] = [SpaceId::Initial, SpaceId::Handshake, SpaceId::Data];

    /// The packet type this space sends.
    pub fn packet_type(self) -> PacketType {
        match self {
            Self::Initial => PacketType::Initial,
            Self::Handshake => PacketType::Handshake,
            Self::Data => PacketType::OneRtt,
        }
    }

    /// The qlog `PacketType` of the packets this space sends (draft-ietf-quic-qlog-quic-events
    /// §9.6; 0-RTT packets share the application data space).
    pub(crate) fn qlog_packet_type(self) -> &'static str {
        match self {
            Self::Initial => "initial",
            Self::Handshake => "handshake",
            Self::Data => "1RTT",
        }
    }
}

/// The stream chunks of a sent packet. Most packets carry one, kept inline, so that sending
/// does not allocate per packet; more go into a vector, reused from packet to packet. Not a
/// `SmallDeque` with its `SpillPool`: a `VecDeque` is 8 bytes more than a `Vec`, in a record
/// moved several times per packet (`a_sent_packet_record_stays_small`).
#[derive(Debug, Default, Clone)]
pub(super) struct Chunks {
    first: Option<StreamChunk>,
    rest: Vec<StreamChunk>,
}

/// Spill vectors kept for reuse ([`Chunks::take_spill`], [`Chunks::recycle`]) at most: enough
/// for the packets one ACK frame acknowledges when many small streams share packets.
const SPILL_POOL: usize = 32;
/// A spill vector longer than this is let go rather than kept (a packet of tiny frames).
const SPILL_KEEP: usize = 64;

impl Chunks {
    pub(super) fn push(&mut self, chunk: StreamChunk) {
        if self.first.is_none() {
            self.first = Some(chunk);
        } else {
            self.rest.push(chunk);
        }
    }

    /// Whether the next [`Chunks::push`] would allocate: the packet has its first chunk and
    /// no spill vector yet.
    pub(super) fn wants_spill(&self) -> bool {
        self.first.is_some() && self.rest.capacity() == 0
    }

    /// Takes a spill vector from `pool`, if it holds one: packets that carry several
    /// streams' frames then allocate nothing once earlier packets gave theirs back.
    pub(super) fn take_spill(&mut self, pool: &mut Vec<Vec<StreamChunk>>) {
        if let Some(v) = pool.pop() {
            self.rest = v;
        }
    }

    /// Whether the packet has a spill vector to give back ([`Chunks::recycle`]).
    pub(super) fn has_spill(&self) -> bool {
        self.rest.capacity() > 0
    }

    /// Gives the spill vector back to `pool` (emptied), once the packet is acknowledged or
    /// lost.
    pub(super) fn recycle(&mut self, pool: &mut Vec<Vec<StreamChunk>>) {
        if !self.has_spill() || self.rest.capacity() > SPILL_KEEP || pool.len() >= SPILL_POOL {
            return;
        }
        let mut v = std::mem::take(&mut self.rest);
        v.clear();
        pool.push(v);
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &StreamChunk> {
        self.first.iter().chain(self.rest.iter())
    }
}

impl<'a> IntoIterator for &'a Chunks {
    type Item = &'a StreamChunk;
    type IntoIter =
        std::iter::Chain<std::option::Iter<'a, StreamChunk>, std::slice::Iter<'a, StreamChunk>>;

    fn into_iter(self) -> Self::IntoIter {
        self.first.iter().chain(self.rest.iter())
    }
}

/// What a sent packet carried that matters when it is acknowledged or lost.
///
/// A packet is moved several times between being sent and acknowledged (into the ring of
/// sent packets, out of it, through the acknowledgement's processing), a copy of the whole
/// value each time: what most packets carry (stream chunks, the rate snapshot's ticket) is
/// inline, the rest behind one box that only the few packets carrying it allocate.
#[derive(Debug, Default)]
pub(super) struct SentInfo {
    pub(super) chunks: Chunks,
    /// The delivery-rate snapshot of an in-flight packet, kept by the sampler (BBR only).
    pub(super) rate: Option<crate::recovery::rate::RateTicket>,
    /// Sent marked ECT(0) (RFC 9000 §13.4.2).
    pub(super) ecn: bool,
    /// The first control frame (a flow-control or stream-limit update is common: one per
    /// closed stream, say); more go into `extra`.
    control: Option<StreamControl>,
    /// What few packets carry (see [`SentInfo::extra`]).
    extra: Option<Box<SentExtra>>,
}

/// The rarely carried part of a [`SentInfo`].
#[derive(Debug, Default)]
pub(super) struct SentExtra {
    pub(super) crypto: Option<Range<u64>>,
    /// The control frames after the first.
    control: Vec<StreamControl>,
    pub(super) handshake_done: bool,
    pub(super) new_token: Option<bytes::Bytes>,
    /// A path MTU probe of this size (RFC 9000 §14.3.1).
    pub(super) mtu_probe: Option<u16>,
    pub(super) new_cids: Vec<u64>,
    pub(super) retire_cids: Vec<u64>,
}

impl SentInfo {
    /// Lets the sampler drop this packet's delivery-rate snapshot, if it has one: the packet
    /// will be neither acknowledged nor counted lost (its space was discarded, or it was a
    /// path MTU probe, whose loss is no congestion signal).
    pub(super) fn forget_rate(
        &self,
        sampler: &mut Option<Box<crate::recovery::rate::RateSampler>>,
    ) {
        if let (Some(t), Some(sampler)) = (self.rate, sampler.as_mut()) {
            sampler.forget(t);
        }
    }

    /// Records a control frame the packet carries.
    pub(super) fn push_control(&mut self, c: StreamControl) {
        if self.control.is_none() {
            self.control = Some(c);
        } else {
            self.extra_mut().control.push(c);
        }
    }

    /// Takes the control frames out, in the order they were recorded.
    pub(super) fn take_control(&mut self) -> impl Iterator<Item = StreamControl> {
        let rest = self
            .extra
            .as_mut()
            .map(|e| std::mem::take(&mut e.control))
            .unwrap_or_default();
        self.control.take().into_iter().chain(rest)
    }

    /// The rarely carried part, to record something in it.
    pub(super) fn extra_mut(&mut self) -> &mut SentExtra {
        self.extra.get_or_insert_with(Default::default)
    }

    /// The rarely carried part, if the packet carried any of it.
    pub(super) fn extra(&self) -> Option<&SentExtra> {
        self.extra.as_deref()
    }

    /// Takes the rarely carried part out.
    pub(super) fn take_extra(&mut self) -> Option<Box<SentExtra>> {
        self.extra.take()
    }

    /// The CRYPTO data range the packet carried.
    pub(super) fn crypto(&self) -> Option<Range<u64>> {
        self.extra().and_then(|e| e.crypto.clone())
    }

    /// The size of the path MTU probe the packet was.
    pub(super) fn mtu_probe(&self) -> Option<u16> {
        self.extra().and_then(|e| e.mtu_probe)
    }
}

/// The CRYPTO streams of a packet-number space (RFC 9000 §19.6).
#[derive(Debug)]
pub(super) struct CryptoStreams {
    /// Ours.
    pub(super) send: SendBuffer,
    /// The peer's.
    pub(super) recv: Assembler,
}

/// The state of one packet-number space.
pub(super) struct PacketSpace {
    /// Packet protection: Initial and Handshake keys (the 1-RTT keys live in `Connection::one_rtt`); boxed,
    /// as the application space never holds any.
    pub(super) keys: Option<Box<Keys>>,
    /// The CRYPTO streams while they are in use; an idle connection lets them go and keeps
    /// only their offsets (see [`PacketSpace::release_crypto`]).
    crypto: Option<Box<CryptoStreams>>,
    /// Where our CRYPTO stream ends and how far the peer's was read, while `crypto` is let go.
    crypto_offsets: [u64; 2],
    pub(super) sent: SentPackets<SentInfo>,
    /// Packet numbers received (for ACK frames and duplicate detection).
    pub(super) received: RangeSet,
    /// Initial and Handshake: the ack-eliciting packets received, the only ones the ACK frames
    /// of these spaces name. A server whose lost CRYPTO data waits behind a congestion window
    /// kept full by Handshake packets we cannot open yet would otherwise see its CRYPTO
    /// packets declared lost (after our ACK of a later ACK-only packet) and wait for the window
    /// for good; left in flight, they are resent by its PTO probes, which the window does not
    /// hold back (RFC 9002 §6.2.4; RFC 9000 §13.2.1 does not require acknowledging
    /// non-ack-eliciting packets).
    pub(super) eliciting_received: RangeSet,
    pub(super) largest_received: Option<u64>,
    pub(super) largest_received_time: Option<Instant>,
    /// Ack-eliciting packets received since our last ACK.
    pub(super) unacked_eliciting: u64,
    /// When an ACK must go out at the latest.
    pub(super) ack_deadline: Option<Instant>,
    /// Ack-eliciting probe packets to send after a PTO (RFC 9002 §6.2.4).
    pub(super) probes: u8,
    /// The space's ECN counts, ours and the peer's (RFC 9000 §13.4.1).
    pub(super) ecn: super::ecn::SpaceEcn,
    /// Whether the space was discarded (keys dropped, RFC 9001 §4.9).
    pub(super) discarded: bool,
}

impl PacketSpace {
    /// The packet numbers the ACK frames of `space` (this space) name: every packet in the
    /// application space, the ack-eliciting ones in Initial and Handshake.
    pub(super) fn ack_ranges(&self, space: SpaceId) -> &RangeSet {
        if space == SpaceId::Data {
            &self.received
        } else {
            &self.eliciting_received
        }
    }

    pub(super) const fn new() -> Self {
        Self::empty(false)
    }

    /// An empty space, marked `discarded` or not (a `const fn`: [`DISCARDED`] is a plain
    /// static, read without the check a lazily built one costs on every look).
    const fn empty(discarded: bool) -> Self {
        Self {
            keys: None,
            crypto: None,
            crypto_offsets: [0; 2],
            sent: SentPackets::new(),
            received: RangeSet::new(),
            eliciting_received: RangeSet::new(),
            largest_received: None,
            largest_received_time: None,
            unacked_eliciting: 0,
            ack_deadline: None,
            probes: 0,
            ecn: super::ecn::SpaceEcn::new(),
            discarded,
        }
    }

    /// The CRYPTO streams, taken up again (at their offsets) if they were let go.
    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    /// Writes the application space out (connection hibernation); refuses while it holds
    /// keys, CRYPTO data or packets in flight.
    pub(super) fn pack(&self, p: &mut crate::pack::Packer) -> crate::pack::Packed {
        p.require(self.keys.is_none() && self.crypto.is_none() && !self.discarded)?;
        p.u64(self.crypto_offsets[0]);
        p.u64(self.crypto_offsets[1]);
        self.sent.pack(p)?;
        self.received.pack(p);
        self.eliciting_received.pack(p);
        p.opt_u64(self.largest_received);
        p.opt_time(self.largest_received_time);
        p.u64(self.unacked_eliciting);
        p.opt_time(self.ack_deadline);
        p.u64(u64::from(self.probes));
        self.ecn.pack(p);
        Some(())
    }

    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    /// Reads back what [`PacketSpace::pack`] wrote.
    pub(super) fn unpack(u: &mut crate::pack::Unpacker<'_>) -> Option<Self> {
        Some(Self {
            keys: None,
            crypto: None,
            crypto_offsets: [u.u64()?, u.u64()?],
            sent: SentPackets::unpack(u)?,
            received: RangeSet::unpack(u)?,
            eliciting_received: RangeSet::unpack(u)?,
            largest_received: u.opt_u64()?,
            largest_received_time: u.opt_time()?,
            unacked_eliciting: u.u64()?,
            ack_deadline: u.opt_time()?,
            probes: u.u8()?,
            ecn: super::ecn::SpaceEcn::unpack(u)?,
            discarded: false,
        })
    }

    pub(super) fn crypto_mut(&mut self) -> &mut CryptoStreams {
        let [send, recv] = self.crypto_offsets;
        self.crypto.get_or_insert_with(|| {
            Box::new(CryptoStreams {
                send: SendBuffer::resume_at(send),
                recv: Assembler::resume_at(recv),
            })
        })
    }

    /// The CRYPTO streams, unless they are let go (nothing to send, resend or read then).
    pub(super) fn crypto(&self) -> Option<&CryptoStreams> {
        self.crypto.as_deref()
    }

    /// The CRYPTO streams, unless they are let go.
    pub(super) fn crypto_if_held(&mut self) -> Option<&mut CryptoStreams> {
        self.crypto.as_deref_mut()
    }

    /// Whether CRYPTO data waits to be sent or resent.
    pub(super) fn crypto_pending(&self) -> bool {
        self.crypto().is_some_and(|c| c.send.has_pending(u64::MAX))
    }

    /// How far the peer's CRYPTO stream was read.
    pub(super) fn crypto_read_offset(&self) -> u64 {
        self.crypto()
            .map_or(self.crypto_offsets[1], |c| c.recv.read_offset())
    }

    /// Idle diet: lets the CRYPTO streams go once everything we wrote is acknowledged and
    /// everything received was read, keeping their offsets (a session ticket later continues
    /// the stream where it ended, RFC 9000 §19.6). About 250 bytes per connection.
    pub(super) fn release_crypto(&mut self) {
        if let Some(c) = &self.crypto {
            if c.send.is_fully_acked() && c.recv.buffered() == 0 {
                self.crypto_offsets = [c.send.end(), c.recv.read_offset()];
                self.crypto = None;
            }
        }
    }

    /// Whether an ACK frame is owed.
    pub(super) fn ack_pending(&self) -> bool {
        self.unacked_eliciting > 0
    }

    /// Whether an ACK should go out now, alone if necessary.
    pub(super) fn ack_due(&self, now: Instant) -> bool {
        self.ack_deadline.is_some_and(|d| d <= now)
    }
}

/// What the index of a discarded space reads: no keys, nothing sent or received.
static DISCARDED: PacketSpace = PacketSpace::empty(true);

/// The three packet number spaces (RFC 9000 §12.3), indexed by `SpaceId as usize`. Initial and
/// Handshake are freed once discarded (RFC 9001 §4.9): an idle connection keeps only the
/// application space. Reading a discarded space gives an empty one marked `discarded`.
pub(super) struct Spaces {
    initial: Option<Box<PacketSpace>>,
    handshake: Option<Box<PacketSpace>>,
    data: PacketSpace,
}

impl Spaces {
    pub(super) fn new() -> Self {
        Self {
            initial: Some(Box::new(PacketSpace::new())),
            handshake: Some(Box::new(PacketSpace::new())),
            data: PacketSpace::new(),
        }
    }

    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    /// Writes the spaces out (connection hibernation): only once the Initial and Handshake
    /// spaces are gone.
    pub(super) fn pack(&self, p: &mut crate::pack::Packer) -> crate::pack::Packed {
        p.require(self.initial.is_none() && self.handshake.is_none())?;
        self.data.pack(p)
    }

    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    /// Reads back what [`Spaces::pack`] wrote.
    pub(super) fn unpack(u: &mut crate::pack::Unpacker<'_>) -> Option<Self> {
        Some(Self {
            initial: None,
            handshake: None,
            data: PacketSpace::unpack(u)?,
        })
    }

    /// Frees a discarded Initial or Handshake space (the application space stays).
    pub(super) fn free(&mut self, space: SpaceId) {
        match space {
            SpaceId::Initial => self.initial = None,
            SpaceId::Handshake => self.handshake = None,
            SpaceId::Data => {}
        }
    }

    /// Whether the Initial and the Handshake space are freed.
    #[cfg(test)]
    pub(super) fn freed(&self) -> (bool, bool) {
        (self.initial.is_none(), self.handshake.is_none())
    }

    /// The spaces not freed.
    pub(super) fn iter(&self) -> impl Iterator<Item = &PacketSpace> {
        [self.initial.as_deref(), self.handshake.as_deref()]
            .into_iter()
            .flatten()
            .chain(std::iter::once(&self.data))
    }

    /// The spaces not freed, mutably.
    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = &mut PacketSpace> {
        [self.initial.as_deref_mut(), self.handshake.as_deref_mut()]
            .into_iter()
            .flatten()
            .chain(std::iter::once(&mut self.data))
    }
}

impl std::ops::Index<usize> for Spaces {
    type Output = PacketSpace;

    #[inline]
    fn index(&self, i: usize) -> &PacketSpace {
        match i {
            0 => self.initial.as_deref().unwrap_or(&DISCARDED),
            1 => self.handshake.as_deref().unwrap_or(&DISCARDED),
            _ => &self.data,
        }
    }
}

impl std::ops::IndexMut<usize> for Spaces {
    /// A write to a freed space (none is expected) gets a fresh discarded space rather than
    /// a panic.
    #[inline]
    fn index_mut(&mut self, i: usize) -> &mut PacketSpace {
        let slot = match i {
            0 => &mut self.initial,
            1 => &mut self.handshake,
            _ => return &mut self.data,
        };
        slot.get_or_insert_with(|| {
            tracing::debug!(space = i, "a freed packet number space written to");
            Box::new(PacketSpace {
                discarded: true,
                ..PacketSpace::new()
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CRYPTO streams go only when everything written is acknowledged and everything
    /// received read, and come back at the offsets where they ended.
    #[test]
    fn crypto_streams_are_let_go_when_done_and_resume_at_their_offsets() {
        let mut sp = PacketSpace::new();
        sp.release_crypto();
        assert!(sp.crypto().is_none(), "never taken up");
        let c = sp.crypto_mut();
        c.send.write(bytes::Bytes::from(vec![1u8; 100]));
        let sent = c.send.poll_transmit(1000, u64::MAX).unwrap();
        c.recv.insert(0, bytes::Bytes::from_static(b"ticket"));
        sp.release_crypto();
        assert!(
            sp.crypto().is_some(),
            "unacknowledged and unread data keep them"
        );
        sp.crypto_mut().send.ack(sent);
        sp.release_crypto();
        assert!(sp.crypto().is_some(), "unread data keeps them");
        assert_eq!(sp.crypto_mut().recv.read(usize::MAX).unwrap().len(), 6);
        sp.release_crypto();
        assert!(sp.crypto().is_none() && !sp.crypto_pending());
        assert_eq!(sp.crypto_read_offset(), 6);
        let c = sp.crypto_mut();
        assert_eq!((c.send.end(), c.recv.read_offset()), (100, 6));
        c.send.write(bytes::Bytes::from_static(b"more"));
        assert_eq!(c.send.poll_transmit(1000, u64::MAX), Some(100..104));
        c.recv.insert(6, bytes::Bytes::from_static(b"next"));
        assert_eq!(&c.recv.read(usize::MAX).unwrap()[..], b"next");
    }

    /// A sent packet's record is copied several times between sending and acknowledgement:
    /// it stays small, and a packet of stream data and one control frame allocates nothing
    /// for the rare fields. At 128 bytes or less, the compiler moves it with a few vector
    /// loads and stores (x86-64: eight of 16 bytes at most) instead of a call to `memcpy`,
    /// which cost about 4% of a bulk sender's CPU time (`perf`) when the record was 176.
    #[test]
    fn a_sent_packet_record_stays_small() {
        use crate::recovery::sent::SentPacket;
        assert!(
            std::mem::size_of::<SentPacket<SentInfo>>() <= 128,
            "{} bytes",
            std::mem::size_of::<SentPacket<SentInfo>>()
        );
        let mut info = SentInfo {
            ecn: true,
            ..SentInfo::default()
        };
        assert!(info.extra().is_none() && info.crypto().is_none());
        // One control frame stays inline; more go into the rarely carried part, in order.
        info.push_control(StreamControl::MaxData);
        assert!(info.extra().is_none());
        info.push_control(StreamControl::StreamsBlocked(crate::Dir::Bi));
        info.push_control(StreamControl::MaxStreams(crate::Dir::Uni));
        assert!(info.extra().is_some());
        let taken: Vec<_> = info.take_control().collect();
        assert_eq!(
            taken,
            [
                StreamControl::MaxData,
                StreamControl::StreamsBlocked(crate::Dir::Bi),
                StreamControl::MaxStreams(crate::Dir::Uni)
            ]
        );
        assert_eq!(info.take_control().count(), 0);
        info.extra_mut().crypto = Some(0..10);
        assert_eq!(info.crypto(), Some(0..10));
        assert!(info.take_extra().is_some() && info.extra().is_none());
    }
}
