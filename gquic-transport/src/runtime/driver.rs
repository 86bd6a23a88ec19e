//! The endpoint's background task: socket in, state machine, socket out, timer.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::BytesMut;
use tokio::time::Sleep;

use super::udp::{is_transient, Received, UdpIo, RECV_MMSG, SEND_MMSG};
use super::Shared;
use crate::connection::Transmit;

/// Datagrams received per turn before the driver sends and checks timers. A bulk receiver
/// acknowledges once per turn: at 64, one ACK every 64-90 datagrams took a twentieth of its
/// time in `sendmsg` alone (a loopback send runs the peer's receive path too); at 128 the
/// receiver's CPU per GiB fell 8-12% and the sender's up to 5% (`gquic-bench bulk`, 8
/// interleaved runs each way), and 256 gained nothing more.
const RECV_BATCH: usize = 128;
/// A turn also stops receiving once it has run this long (checked after each receive call):
/// datagrams that cost much to handle, such as a current-thread server's handshakes with a
/// TLS step each, would otherwise hold back the answers to those already handled (128 of
/// them without this bound: 3,000 handshakes took 1.08 s instead of 0.89 s).
const RECV_TIME: std::time::Duration = std::time::Duration::from_micros(500);
/// Once handling what arrived has made this many tasks ready, the driver stops taking in
/// more and lets them run; the next turn sends what they wrote, then handles the rest: their
/// answers go out while the rest is handled instead of all answers after all of it. Two
/// peers exchanging many small requests and answers otherwise fall into lockstep, each idle
/// while the other handles one large batch (receive offload brings a whole batch in one
/// message).
///
/// Measured (interleaved runs, current-thread runtimes unless said): `gquic-bench
/// streams-child`, 100k streams, 0.178 -> 0.139 s with the early stream credit
/// (`Streams::credit_early`), 0.157 s without it; `h3-child`, 1 connection (multi-thread),
/// 0.409 -> 0.340 s per 50k requests; 10 connections and bulk transfers within their noise.
/// 8 to 32 tasks gave the same times; 4 datagrams between looks beat 2 (smaller batches)
/// and 8 (a batch of 100 answers is about 8 datagrams, so no hand-over). Sending at the
/// hand-over itself, before the tasks ran, sent mostly acknowledgements: 8 interleaved runs
/// of `streams-child` gave 0.131 s against 0.126 s now, and multi-thread streams 0.269 s
/// against 0.229 s, `h3-child` 0.327 / 0.344 s against 0.313 / 0.329 s (1 / 10 connections).
const HAND_OVER_WAKERS: usize = 16;
/// Datagrams handled between looks at how many tasks are ready.
const DISPATCH_EVERY: usize = 4;
/// Datagrams sent per turn before the driver yields to other tasks.
const SEND_BATCH: usize = 128;
/// Transmits are taken for one send call until they hold this many bytes (or
/// [`SEND_MMSG`] of them): what one segmentation-offload batch holds at most.
const SEND_MMSG_BYTES: usize = 1 << 16;
/// The largest UDP payload we read (RFC 9000 §18.2 max_udp_payload_size upper bound).
const MAX_DATAGRAM: usize = 65_527;
/// One message's room in the receive block: the largest UDP payload, or a receive-offload
/// batch (at most 64 KiB).
const RECV_SLOT: usize = 1 << 16;
/// Receives bring several messages per call only while messages are at most this long (they
/// are moved down from their slots to follow each other: a copy worth making for small ones).
const COMPACT_MAX: usize = 4096;
/// Receives of small messages only in a row before the driver takes several per call.
const WIDEN_AFTER: u32 = 4;
/// A driver woken only by application writes this soon after its last send lets the other
/// ready tasks run once before sending (see [`Driver::coalesce`]).
const COALESCE_WITHIN: std::time::Duration = std::time::Duration::from_micros(50);
/// Receive memory is allocated in blocks of this size and handed out as `BytesMut` slices, so
/// a received datagram costs no allocation of its own.
const RECV_BLOCK: usize = 1 << 20;
/// Used-up receive blocks the driver keeps to use again once every datagram cut from them is
/// dropped (see [`RecvBlocks::ensure_space`]).
const RECV_SPARES: usize = 8;
/// Spare receive blocks are let go at the first turn that receives and sends nothing this
/// long after the last receive, or when no connection is left.
const SPARES_KEPT: std::time::Duration = std::time::Duration::from_millis(100);

pub(super) struct Driver {
    shared: Arc<Shared>,
    socket: UdpIo,
    timer: Pin<Box<Sleep>>,
    timer_deadline: Option<Instant>,
    recv: RecvBlocks,
    /// Transmits taken from the endpoint and not yet sent, in order (`queued[head..]`), the
    /// i-th written in `send[i]`: one system call sends several (`sendmmsg`).
    send: Vec<Vec<u8>>,
    queued: Vec<Transmit>,
    head: usize,
    /// Receive calls in a row that brought only small messages (see [`WIDEN_AFTER`]).
    small_receives: u32,
    /// Datagrams for other shards of the group, handed on once this shard's lock is let go.
    outbox: Vec<crate::endpoint::Tossed>,
    /// The inbox's datagrams while they are handled (keeps both vectors' allocations).
    inbox: Vec<crate::endpoint::Tossed>,
    /// Received datagrams not handled yet, each with what the socket said of it: the rest of
    /// a receive that stopped early to let the tasks it woke run (see [`HAND_OVER_WAKERS`]).
    unhandled: std::collections::VecDeque<(BytesMut, Received)>,
    /// Tasks the datagrams handled this turn made ready, woken at the end of the turn or at a
    /// hand-over, not at the turn's next receive: a lone reader woken mid-turn on another
    /// worker would contend for the lock with the driver handling its data (a multi-thread
    /// download took 0.73 s per GiB instead of 0.61 s).
    ready: Vec<std::task::Waker>,
    /// The last turn handed over: this one sends what the tasks wrote before it receives or
    /// handles anything more.
    send_first: bool,
    /// Tasks to wake, woken once the lock is let go (before each system call and at the
    /// end of a turn), so that they do not find it held.
    wakers: Vec<std::task::Waker>,
    /// When the last datagrams went out.
    last_send: Option<Instant>,
    /// This wake-up already let the other tasks run once (see [`Driver::coalesce`]).
    coalesced: bool,
    span: tracing::Span,
}

impl Driver {
    pub(super) fn new(shared: Arc<Shared>, socket: UdpIo, span: tracing::Span) -> Self {
        Self {
            shared,
            socket,
            timer: Box::pin(tokio::time::sleep_until(tokio::time::Instant::now())),
            timer_deadline: None,
            recv: RecvBlocks::default(),
            send: (0..SEND_MMSG).map(|_| Vec::new()).collect(),
            queued: Vec::with_capacity(SEND_MMSG),
            head: 0,
            small_receives: 0,
            outbox: Vec::new(),
            inbox: Vec::new(),
            unhandled: std::collections::VecDeque::new(),
            ready: Vec::new(),
            send_first: false,
            wakers: Vec::new(),
            last_send: None,
            coalesced: false,
            span,
        }
    }
}

/// The receive memory: a block that receives land in back to back, and used-up blocks kept
/// to use again.
///
/// A block stays alive as long as datagrams cut from it do. Kept as a spare, it is used again
/// once they are all gone; a new block for every MiB received made the allocator hand memory
/// back to the system and fault it in again page by page (55,000-67,000 page faults per GiB
/// received, 4,000-8,000 with the spares).
#[derive(Default)]
struct RecvBlocks {
    /// The block receives land in.
    current: BytesMut,
    /// Used-up blocks (at most [`RECV_SPARES`]).
    spare: Vec<BytesMut>,
    /// `current` is a block (at first it is an empty handle).
    started: bool,
    /// When the last datagrams came in.
    last_receive: Option<Instant>,
}

impl RecvBlocks {
    /// Makes room for one more receive: the current block's rest, else a spare block that
    /// nothing refers to any more, else a new block.
    fn ensure_space(&mut self) {
        if self.current.capacity() - self.current.len() >= MAX_DATAGRAM {
            return;
        }
        let fresh = match self
            .spare
            .iter_mut()
            .position(|b| b.try_reclaim(RECV_BLOCK))
        {
            Some(i) => self.spare.swap_remove(i),
            // Not zeroed: the socket writes what is read (`UdpIo::poll_recv_block`).
            None => BytesMut::with_capacity(RECV_BLOCK),
        };
        let used = std::mem::replace(&mut self.current, fresh);
        // The first call replaces a handle without a block. With every spare still in use,
        // the used block is let go (the datagrams cut from it keep it alive).
        if std::mem::replace(&mut self.started, true) && self.spare.len() < RECV_SPARES {
            self.spare.push(used);
        }
    }

    /// The end of a driver's turn: the spares are let go once the traffic they are kept for
    /// has stopped (a turn that receives and sends nothing [`SPARES_KEPT`] after the last
    /// receive, or no connection left).
    fn end_turn(&mut self, now: Instant, received: usize, sent: usize, connections: usize) {
        if received > 0 {
            self.last_receive = Some(now);
        } else if connections == 0
            || sent == 0
                && self
                    .last_receive
                    .is_none_or(|t| now.saturating_duration_since(t) >= SPARES_KEPT)
        {
            self.spare.clear();
        }
    }
}

impl Future for Driver {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let r = this.turn(cx);
        // The lock is let go: wake the tasks the turn's events concern.
        this.wakers.append(&mut this.ready);
        wake(&mut this.wakers);
        r
    }
}

/// Runs a connection's TLS step and gives it back; the driver sends what follows.
async fn run_tls_job(
    shared: Arc<Shared>,
    handle: crate::endpoint::ConnectionHandle,
    mut job: crate::connection::TlsJob,
) {
    job.run();
    let mut state = shared.lock();
    state.ep.finish_tls_job(Instant::now(), handle, job);
    state.wake_driver();
}

/// Wakes and empties `wakers`.
fn wake(wakers: &mut Vec<std::task::Waker>) {
    for w in wakers.drain(..) {
        w.wake();
    }
}

impl Driver {
    /// One turn: receive, timers, send, events; returns with the lock let go.
    fn turn(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let this = self;
        let span = this.span.clone();
        let _guard = span.enter();
        let shared = this.shared.clone();
        let mut state = shared.lock();
        state.driver_waker = Some(cx.waker().clone());
        loop {
            let now = Instant::now();
            // 0. A new socket from `Endpoint::rebind`: the old one closes here.
            if let Some(socket) = state.new_socket.take() {
                this.socket = socket;
            }
            // 1. Receive: up to RECV_MMSG messages per system call, into the receive block
            // back to back.
            let mut received = 0;
            let mut cut_short = false;
            let mut handed_over = false;
            let skip_receive = std::mem::take(&mut this.send_first);
            while !skip_receive && received < RECV_BATCH {
                if this.unhandled.is_empty() {
                    this.recv.ensure_space();
                    let mut meta = [Received::EMPTY; RECV_MMSG];
                    // While receive offload coalesces (large messages), one per call: a
                    // message lands in a 64 KiB slot and is then moved down to follow the
                    // previous one, a copy worth making for small messages only. Small
                    // messages (many flows, or no offload) come many per call.
                    let slots = if this.small_receives >= WIDEN_AFTER {
                        ((this.recv.current.capacity() - this.recv.current.len()) / RECV_SLOT)
                            .clamp(1, RECV_MMSG)
                    } else {
                        1
                    };
                    // The system call runs without the lock: application tasks on other
                    // threads (stream reads and writes) are not held up by the kernel's time.
                    drop(state);
                    wake(&mut this.wakers);
                    let r = this.socket.poll_recv_block(
                        cx,
                        &mut this.recv.current,
                        RECV_SLOT,
                        &mut meta[..slots],
                    );
                    state = shared.lock();
                    match r {
                        Poll::Ready(Ok(n)) => {
                            if meta[..n].iter().all(|m| m.len <= COMPACT_MAX) {
                                this.small_receives = this.small_receives.saturating_add(1);
                            } else {
                                this.small_receives = 0;
                            }
                            for m in &meta[..n] {
                                let data = this.recv.current.split_to(m.len);
                                this.unhandled.push_back((data, *m));
                            }
                        }
                        Poll::Ready(Err(e)) if is_transient(&e) => {
                            tracing::debug!(error = %e, "receive error ignored");
                            received += 1;
                            continue;
                        }
                        Poll::Ready(Err(e)) => {
                            state.fail(e);
                            state.driver_done = true;
                            return Poll::Ready(());
                        }
                        Poll::Pending => break,
                    }
                }
                handed_over = this.handle_unhandled(&mut state, now, &mut received);
                state.reap_into(&mut this.wakers);
                if handed_over {
                    break;
                }
                // Datagrams that take long to handle (handshakes: a TLS step each) end the
                // receiving early: what they brought goes out first.
                if Instant::now().saturating_duration_since(now) >= RECV_TIME {
                    cut_short = true;
                    break;
                }
            }
            // 1b. Datagrams other shards of the group received for connections of this one.
            if !state.inbox.is_empty() {
                std::mem::swap(&mut this.inbox, &mut state.inbox);
                for t in this.inbox.drain(..) {
                    received += 1;
                    state.ep.handle_tossed(now, t);
                }
                state.reap_into(&mut this.wakers);
            }
            // 1c. Datagrams this shard received for another's connections (after a 4-tuple
            // change): handed on without holding two shards' locks at once.
            while let Some(t) = state.ep.poll_tossed() {
                this.outbox.push(t);
            }
            if !this.outbox.is_empty() {
                let group = state.group.clone();
                drop(state);
                wake(&mut this.wakers);
                hand_on(&group, &mut this.outbox);
                state = shared.lock();
            }
            // 2. Timers due by the deadlines as read at the end of the last turn
            // (`handle_timeout` reads the touched connections' afresh; one that became due
            // during this turn is handled at its end, or at the start of the next).
            if state.ep.recorded_timeout_due(now) {
                state.ep.handle_timeout(now);
                state.reap_into(&mut this.wakers);
            }
            // 2b. Handshake TLS steps (offload is on with several workers), each in a task of
            // its own: the key exchanges and signature checks of many handshakes run on every
            // worker, not one after the other in this turn.
            while let Some((handle, job)) = state.ep.poll_tls_job() {
                tokio::spawn(run_tls_job(shared.clone(), handle, job));
            }
            // A hand-over sends nothing now: what the woken tasks write goes out first thing in
            // the next turn, before the rest is handled, with the acknowledgement of what was
            // handled (sent now, that would often take a packet of its own).
            if handed_over {
                state.ep.refresh_timers();
                this.send_first = true;
                this.recv.last_receive = Some(now);
                this.wakers.append(&mut this.ready);
                state.dispatch_into(&mut this.wakers);
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            // 3. Send.
            if received == 0 && !skip_receive && this.coalesce(now) {
                state.ep.refresh_timers();
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let mut sent = 0;
            let mut blocked = false;
            while sent < SEND_BATCH {
                if this.head == this.queued.len() {
                    this.queued.clear();
                    this.head = 0;
                    let max = this.socket.max_segments();
                    // Small transmits (many connections, or few packets each) share a
                    // system call; a full segmentation batch has one to itself already.
                    let (mut taken, mut bytes) = (0, 0);
                    while this.queued.len() < SEND_MMSG
                        && sent + taken < SEND_BATCH
                        && bytes < SEND_MMSG_BYTES
                    {
                        let buf = &mut this.send[this.queued.len()];
                        let Some(t) = state.ep.poll_transmit_batch(now, max, buf) else {
                            break;
                        };
                        taken += t.datagrams();
                        bytes += t.size;
                        this.queued.push(t);
                    }
                    // Taken and not sent yet: closes are not out before the system call.
                    state.send_backlog |= !this.queued.is_empty();
                    state.reap_into(&mut this.wakers);
                }
                if this.head == this.queued.len() {
                    break;
                }
                drop(state);
                wake(&mut this.wakers);
                let r = this.socket.poll_send_many(
                    cx,
                    &this.send[this.head..this.queued.len()],
                    &this.queued[this.head..],
                );
                state = shared.lock();
                match r {
                    Poll::Ready(Ok(n)) => {
                        let gone = &this.queued[this.head..this.head + n];
                        sent += gone.iter().map(Transmit::datagrams).sum::<usize>();
                        this.head += n;
                        this.last_send = Some(now);
                    }
                    Poll::Ready(Err(e)) if is_transient(&e) => {
                        let t = this.queued[this.head];
                        tracing::debug!(error = %e, dst = %t.destination, "send error; datagram dropped");
                        this.head += 1;
                        sent += 1;
                    }
                    Poll::Ready(Err(e)) => {
                        state.fail(e);
                        state.driver_done = true;
                        return Poll::Ready(());
                    }
                    Poll::Pending => {
                        blocked = true;
                        break;
                    }
                }
            }
            this.coalesced = false;
            state.end_send(this.head < this.queued.len(), &mut this.wakers);
            this.recv
                .end_turn(now, received, sent, state.ep.connection_count());
            // 4. Wake the application.
            this.wakers.append(&mut this.ready);
            state.dispatch_into(&mut this.wakers);
            if state.driver_may_stop() {
                state.driver_done = true;
                tracing::debug!("endpoint driver finished");
                return Poll::Ready(());
            }
            // More work is ready right now: let other tasks run, then come back. A turn that
            // did not receive comes back too: the socket's readiness is only watched again
            // once a receive finds it empty, so the driver must not sleep before one has.
            if received >= RECV_BATCH
                || cut_short
                || skip_receive
                || !this.unhandled.is_empty()
                || (sent >= SEND_BATCH && !blocked)
            {
                state.ep.refresh_timers();
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            // 5. Sleep until the state machine's next deadline.
            let deadline = state.ep.poll_timeout();
            if deadline != this.timer_deadline && !timer_stays(this.timer_deadline, deadline) {
                this.timer_deadline = deadline;
                if let Some(d) = deadline {
                    this.timer.as_mut().reset(tokio::time::Instant::from_std(d));
                }
            }
            if deadline.is_some() && this.timer.as_mut().poll(cx).is_ready() {
                // Force a fresh reset next time around even if the deadline is unchanged.
                this.timer_deadline = None;
                continue;
            }
            // Application calls made since the last turn registered their work under the lock
            // we hold, and wake us through `driver_waker` afterwards.
            if received > 0 || sent > 0 {
                // Input may have produced output: one more turn before sleeping.
                if state.ep.poll_timeout().is_some_and(|t| t <= Instant::now()) {
                    continue;
                }
            }
            return Poll::Pending;
        }
    }
}

impl Driver {
    /// Handles received datagrams (a receive-offload message one datagram at a time) until
    /// none is left or, counted in `received`, [`RECV_BATCH`] are; returns true when it stopped
    /// early because [`HAND_OVER_WAKERS`] tasks have become ready, leaving the rest for the
    /// next turn.
    fn handle_unhandled(
        &mut self,
        state: &mut super::State,
        now: Instant,
        received: &mut usize,
    ) -> bool {
        let mut since_dispatch = 0;
        while let Some((data, m)) = self.unhandled.front_mut() {
            if data.is_empty() {
                // At least one per message: a flood of empty datagrams must not keep the
                // turn receiving forever.
                if m.len == 0 {
                    *received += 1;
                }
                self.unhandled.pop_front();
                continue;
            }
            if *received >= RECV_BATCH {
                return false;
            }
            // With receive offload, several datagrams of one flow.
            let one = data.split_to(m.stride.min(data.len()).max(1));
            *received += 1;
            state
                .ep
                .handle_datagram_at(now, m.from, m.dst_ip, m.ecn, one);
            since_dispatch += 1;
            if since_dispatch == DISPATCH_EVERY {
                since_dispatch = 0;
                state.dispatch_into(&mut self.ready);
                if self.ready.len() >= HAND_OVER_WAKERS {
                    self.wakers.append(&mut self.ready);
                    return true;
                }
            }
        }
        false
    }

    /// Whether to let the other ready tasks run once before sending (see [`coalesce`]).
    fn coalesce(&mut self, now: Instant) -> bool {
        let pending = self.head < self.queued.len();
        let yes = coalesce(self.coalesced, pending, self.last_send, now);
        self.coalesced |= yes;
        yes
    }
}

/// Whether a driver with nothing received should let the other ready tasks run once before
/// sending: when the last send was less than [`COALESCE_WITHIN`] ago (a busy connection, not
/// a ping-pong), nothing is held back from an earlier turn, and this wake-up has not done so
/// yet. On a multi-thread runtime the driver otherwise wakes on another worker at each
/// stream write and sends each in a datagram of its own; one turn later, the writes of every
/// task that was ready share packets (`gquic-bench streams`, mt: about 1 datagram per
/// 100-byte stream before, 165k -> 280k streams/s).
fn coalesce(coalesced: bool, pending: bool, last_send: Option<Instant>, now: Instant) -> bool {
    !coalesced
        && !pending
        && last_send.is_some_and(|t| now.saturating_duration_since(t) < COALESCE_WITHIN)
}

/// Tossed datagrams a shard's inbox holds at most; more are dropped (the peer retransmits).
const INBOX_LIMIT: usize = 4096;

/// How much later a deadline may move and leave the sleep timer armed where it was. Traffic
/// moves the state machine's deadline a little later with nearly every datagram (a received
/// packet arms the acknowledgement delay, the answer sent then moves the probe timeout on),
/// and resetting tokio's timer each time cost 2% of the driver's instructions in a 1-byte
/// ping-pong. A timer left early fires early at worst, and the turn that finds nothing due
/// arms it again; an earlier deadline is always armed at once.
const TIMER_SLACK: std::time::Duration = std::time::Duration::from_millis(5);

/// Whether the sleep timer, armed at `armed`, can stay there for the deadline `new` (see
/// [`TIMER_SLACK`]).
fn timer_stays(armed: Option<Instant>, new: Option<Instant>) -> bool {
    matches!((armed, new), (Some(armed), Some(new)) if new > armed && new - armed < TIMER_SLACK)
}

/// Gives each tossed datagram to its shard and wakes that shard's driver.
fn hand_on(group: &[std::sync::Weak<Shared>], outbox: &mut Vec<crate::endpoint::Tossed>) {
    for t in outbox.drain(..) {
        let Some(target) = group.get(t.shard).and_then(std::sync::Weak::upgrade) else {
            continue;
        };
        let mut s = target.lock();
        if s.inbox.len() < INBOX_LIMIT && !s.driver_done {
            s.inbox.push(t);
            s.wake_driver();
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // One real Instant as the time origin.
mod tests {
    use super::*;
    use std::time::Duration;

    /// Fills the current block up to the point where the next receive needs another, as
    /// datagrams cut from it; returns them.
    fn use_up(blocks: &mut RecvBlocks) -> Vec<BytesMut> {
        let mut cut = Vec::new();
        blocks.ensure_space();
        while blocks.current.capacity() - blocks.current.len() >= MAX_DATAGRAM {
            blocks.current.extend_from_slice(&[0u8; 1000]);
            cut.push(blocks.current.split_to(1000));
        }
        cut
    }

    #[test]
    fn a_used_up_receive_block_is_used_again_once_its_datagrams_are_gone() {
        let mut blocks = RecvBlocks::default();
        let first = use_up(&mut blocks);
        let first_block = first[0].as_ptr();
        let second = use_up(&mut blocks);
        assert_ne!(
            second[0].as_ptr(),
            first_block,
            "the first block is still referred to"
        );
        assert_eq!(blocks.spare.len(), 1);
        drop(first);
        // The first block's datagrams are gone: the next block is the first one again.
        blocks.ensure_space();
        assert_eq!(blocks.current.as_ptr(), first_block);
        assert_eq!(blocks.current.capacity(), RECV_BLOCK);
        assert_eq!(blocks.spare.len(), 1, "the second block is now the spare");
        drop(second);
        // At most RECV_SPARES blocks are kept while datagrams hold them.
        let held: Vec<_> = (0..RECV_SPARES + 3).map(|_| use_up(&mut blocks)).collect();
        assert_eq!(blocks.spare.len(), RECV_SPARES);
        drop(held);
    }

    #[test]
    fn spare_receive_blocks_go_when_the_traffic_stops() {
        let t0 = Instant::now();
        let mut blocks = RecvBlocks::default();
        drop(use_up(&mut blocks));
        drop(use_up(&mut blocks));
        assert_eq!(blocks.spare.len(), 1);
        blocks.end_turn(t0, 5, 0, 1);
        blocks.end_turn(t0 + Duration::from_millis(10), 0, 0, 1);
        assert_eq!(blocks.spare.len(), 1, "a short pause keeps them");
        blocks.end_turn(t0 + SPARES_KEPT, 0, 3, 1);
        assert_eq!(blocks.spare.len(), 1, "still sending");
        blocks.end_turn(t0 + SPARES_KEPT, 0, 0, 1);
        assert!(blocks.spare.is_empty(), "quiet for SPARES_KEPT");
        drop(use_up(&mut blocks));
        assert_eq!(blocks.spare.len(), 1);
        blocks.end_turn(t0 + SPARES_KEPT, 0, 3, 0);
        assert!(blocks.spare.is_empty(), "no connection left");
    }

    #[test]
    fn the_sleep_timer_stays_armed_only_for_a_deadline_a_little_later() {
        let t = Instant::now();
        let us = std::time::Duration::from_micros(1);
        assert!(timer_stays(Some(t), Some(t + 70 * us)));
        assert!(timer_stays(Some(t), Some(t + TIMER_SLACK - us)));
        assert!(
            !timer_stays(Some(t), Some(t + TIMER_SLACK)),
            "far enough later: armed again"
        );
        assert!(
            !timer_stays(Some(t + 70 * us), Some(t)),
            "an earlier deadline is armed"
        );
        assert!(
            !timer_stays(Some(t), Some(t)),
            "an unchanged one needs nothing"
        );
        assert!(!timer_stays(None, Some(t)));
        assert!(!timer_stays(Some(t), None));
    }

    #[test]
    fn coalesces_once_per_wake_and_only_when_busy() {
        let t0 = Instant::now();
        let soon = t0 + Duration::from_micros(10);
        let later = t0 + COALESCE_WITHIN + Duration::from_micros(1);
        assert!(coalesce(false, false, Some(t0), soon), "busy: one yield");
        assert!(
            !coalesce(true, false, Some(t0), soon),
            "not twice in one wake-up"
        );
        assert!(
            !coalesce(false, true, Some(t0), soon),
            "held-back datagrams go first"
        );
        assert!(
            !coalesce(false, false, Some(t0), later),
            "a ping-pong sends at once"
        );
        assert!(!coalesce(false, false, None, soon), "nothing sent yet");
    }
}
