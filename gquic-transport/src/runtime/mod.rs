//! The tokio runtime (feature `runtime-tokio`): the sans-IO [`crate::endpoint::Endpoint`] and
//! its connections driven over a UDP socket.
//!
//! One background task per [`Endpoint`] owns the socket. It feeds received datagrams to the
//! state machine, sends what the state machine produces, sleeps until the state machine's own
//! deadline ([`crate::endpoint::Endpoint::poll_timeout`]) and wakes the tasks waiting on
//! connections and streams. Application handles ([`Connection`], [`SendStream`],
//! [`RecvStream`]) share that state behind one lock and never touch the socket.
//!
//! ```no_run
//! # async fn demo(server_config: gquic_transport::ServerConfig) -> Result<(), Box<dyn std::error::Error>> {
//! use gquic_transport::runtime::Endpoint;
//!
//! let endpoint = Endpoint::server(server_config, "127.0.0.1:4433".parse()?)?;
//! while let Some(connecting) = endpoint.accept().await {
//!     tokio::spawn(async move {
//!         let connection = connecting.await?;
//!         let (mut send, mut recv) = connection.accept_bi().await?;
//!         let request = recv.read_to_end(64 * 1024).await?;
//!         send.write_all(&request).await?;
//!         send.finish()?;
//!         send.stopped().await?;
//!         Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
//!     });
//! }
//! # Ok(()) }
//! ```
//!
//! For the lowest latency on a current-thread runtime, wait on streams in a spawned task
//! rather than in the runtime's `block_on` future (the body of `#[tokio::main]`). Data reach
//! a stream through the background task, and when a task wakes the `block_on` future, tokio
//! polls its I/O driver once more, without blocking, before it polls that future: one more
//! `epoll_wait` system call per wake-up, which a spawned task, run in the same scheduler
//! tick, does not cost. In `gquic-bench latency` (1-byte round trips) the two sides made 4
//! `epoll_wait` calls per round trip as `block_on` futures and 2 as spawned tasks, as many as
//! a raw UDP ping-pong.

#![allow(clippy::disallowed_methods)] // The runtime is where the real clock is read.

mod connection;
mod driver;
#[cfg(feature = "otel")]
mod metrics;
mod streams;
mod udp;

use crate::fast_hash::FastMap;
use crate::stream_map::StreamMap;
use crate::StreamId;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::Bytes;

use crate::config::{ClientConfig, ServerConfig};
use crate::connection::ConnectionError;
use crate::endpoint::{self as proto, ConnectionHandle, EndpointConfig, EndpointConfigError};
use crate::wire::VarInt;

pub use connection::{Connecting, Connection, ConnectionStats, ZeroRttAccepted};
#[cfg(feature = "h3")]
pub(crate) use streams::PaceState;
pub use streams::{
    Read, ReadChunk, ReadChunks, ReadError, ReadToEnd, ReadToEndError, RecvStream, SendStream,
    StoppedError, Write, WriteAll, WriteAllChunks, WriteChunks, WriteError, Written,
};

/// Why [`Endpoint::connect`] could not start a connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// No client configuration: use [`Endpoint::connect_with`] or set one with
    /// [`Endpoint::set_default_client_config`].
    #[error("no default client configuration; call Endpoint::set_default_client_config or use connect_with")]
    NoDefaultClientConfig,
    /// The endpoint was closed with [`Endpoint::close`] or its driver stopped.
    #[error("the endpoint is closed")]
    EndpointClosed,
    /// The connection could not be set up (server name, TLS configuration).
    #[error(transparent)]
    Setup(#[from] crate::connection::ConnectError),
}

/// Why an endpoint could not be created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// The socket could not be bound or configured.
    #[error("socket error: {0}")]
    Io(#[from] io::Error),
    /// The endpoint configuration is unusable.
    #[error(transparent)]
    Config(#[from] EndpointConfigError),
    /// No tokio runtime is running on this thread.
    #[error("no tokio runtime: create endpoints inside a tokio runtime")]
    NoRuntime,
    /// [`Endpoint::rebind`] on an endpoint with several sockets.
    #[error("rebind needs an endpoint with one socket; this one has {0}")]
    RebindSharded(usize),
}

impl From<EndpointError> for io::Error {
    fn from(e: EndpointError) -> Self {
        match e {
            EndpointError::Io(e) => e,
            other => io::Error::other(other),
        }
    }
}

/// Waiters on a connection, woken by the driver when the state machine reports an event.
#[derive(Debug, Default)]
pub(crate) struct ConnState {
    /// The state machine's handle while it lives in the endpoint.
    pub(crate) handle: Option<ConnectionHandle>,
    /// Application handles (connections and streams) alive.
    pub(crate) refs: usize,
    pub(crate) connected: bool,
    /// Server: the ClientHello was processed (server name, ALPN, 0-RTT decision known).
    pub(crate) handshake_data: bool,
    /// How the connection ended, once it is ending: 8 bytes while it lives (the table holds
    /// one entry per connection, idle ones included).
    ended: Option<Box<Ended>>,
    pub(crate) handshake: Vec<Waker>,
    pub(crate) closed: Vec<Waker>,
    /// Waiters on streams and datagrams, allocated when a task first waits on one: a
    /// connection that never has a stream pays 8 bytes for them (the idle-connection diet).
    pub(crate) waiters: Option<Box<StreamWaiters>>,
}

/// Tasks waiting on a connection's streams and datagrams, and what its stream handles
/// have yet to pick up.
#[derive(Debug, Default)]
pub(crate) struct StreamWaiters {
    /// Index 0: bidirectional, 1: unidirectional.
    pub(crate) accept: [Vec<Waker>; 2],
    pub(crate) open: [Vec<Waker>; 2],
    pub(crate) readable: StreamMap<Waker>,
    /// Tasks waiting for a datagram.
    pub(crate) datagrams: Vec<Waker>,
    /// Tasks waiting for all sent stream data to be acknowledged.
    pub(crate) flushed: Vec<Waker>,
    /// The live send-stream handles by stream: what each waits for and has yet to pick up.
    /// One entry per handle, made with it and removed when it drops, so an application that
    /// finishes and drops a stream before its acknowledgement (the usual way) leaves nothing
    /// behind; one map, so a stream's open and close cost one insertion and one removal.
    pub(crate) sends: StreamMap<SendRecord>,
    /// Read pacing registered by a body consumer and not yet picked up by the stream's
    /// reader (`crate::h3::pace_reads`).
    #[cfg(feature = "h3")]
    pub(crate) paced: FastMap<u64, Arc<streams::PaceState>>,
}

/// A live send-stream handle's record in [`StreamWaiters::sends`].
#[derive(Debug, Default)]
pub(crate) struct SendRecord {
    /// The task waiting for flow-control room.
    pub(crate) writable: Option<Waker>,
    /// The task waiting in [`SendStream::stopped`](streams::SendStream::stopped).
    pub(crate) stopped_waker: Option<Waker>,
    /// The STOP_SENDING code received, until the handle reads it.
    pub(crate) stopped: Option<VarInt>,
    /// All data and the FIN were acknowledged.
    pub(crate) acked: bool,
}

/// What is left of a connection that ended.
#[derive(Debug, Default)]
struct Ended {
    error: Option<ConnectionError>,
    /// The peer's address when the state machine went away.
    remote: Option<SocketAddr>,
    /// What `Connection::stats` said last, kept when the state machine went away.
    stats: Option<ConnectionStats>,
}

impl ConnState {
    /// Why the connection ended, once it has.
    pub(crate) fn error(&self) -> Option<&ConnectionError> {
        self.ended.as_ref()?.error.as_ref()
    }

    /// Records why the connection ended, unless a reason is known already.
    pub(crate) fn set_error(&mut self, error: ConnectionError) {
        self.ended
            .get_or_insert_with(Box::default)
            .error
            .get_or_insert(error);
    }

    /// The peer's last address, once the state machine is gone.
    pub(crate) fn last_remote(&self) -> Option<SocketAddr> {
        self.ended.as_ref()?.remote
    }

    /// Its statistics when the state machine went away.
    pub(crate) fn last_stats(&self) -> Option<ConnectionStats> {
        self.ended.as_ref()?.stats
    }

    /// Lets go of the state machine `conn` (drained, or the socket failed), keeping its last
    /// peer address and statistics, and a reason.
    fn detach(&mut self, conn: Option<&crate::connection::Connection>) {
        self.handle = None;
        let ended = self.ended.get_or_insert_with(Box::default);
        // A connection detached before (drained, then the socket failed) keeps what it had.
        if let Some(c) = conn {
            ended.remote = Some(c.remote_address());
            ended.stats = Some(ConnectionStats::of(c));
        }
        ended.error.get_or_insert(ConnectionError::LocallyClosed);
    }

    /// The stream waiters, allocated on first use.
    pub(crate) fn w(&mut self) -> &mut StreamWaiters {
        self.waiters.get_or_insert_with(Default::default)
    }

    /// The record of the live send-stream handle of stream `id`, if there is one.
    pub(crate) fn send_record(&mut self, id: u64) -> Option<&mut SendRecord> {
        self.w_if_any()?.sends.get_mut(&StreamId(id))
    }

    /// The stream waiters, if a task ever waited on a stream or datagram.
    pub(crate) fn w_if_any(&mut self) -> Option<&mut StreamWaiters> {
        self.waiters.as_deref_mut()
    }

    fn wake_all(&mut self) {
        let mut out = Vec::new();
        self.wake_all_into(&mut out);
        for w in out {
            w.wake();
        }
    }

    /// Moves every waiter's waker to `out`.
    fn wake_all_into(&mut self, out: &mut Vec<Waker>) {
        out.extend(self.handshake.drain(..).chain(self.closed.drain(..)));
        let Some(w) = self.waiters.as_deref_mut() else {
            return;
        };
        let wakers = w
            .accept
            .iter_mut()
            .flat_map(|v| v.drain(..))
            .chain(w.open.iter_mut().flat_map(|v| v.drain(..)))
            .chain(w.datagrams.drain(..))
            .chain(w.flushed.drain(..))
            .chain(std::mem::take(&mut w.readable).into_values())
            .chain(
                w.sends
                    .values_mut()
                    .flat_map(|r| r.writable.take().into_iter().chain(r.stopped_waker.take())),
            );
        out.extend(wakers);
    }
}

/// Everything the driver and the handles share.
pub(crate) struct State {
    pub(crate) ep: proto::Endpoint,
    /// Runtime connection state by runtime id (stable: sans-IO handles are reused).
    pub(crate) conns: FastMap<u64, ConnState>,
    pub(crate) by_handle: FastMap<ConnectionHandle, u64>,
    /// The next runtime id; shard `i` of `n` hands out `i, i + n, i + 2n, ...` so ids are
    /// unique across the endpoint ([`Connection::stable_id`]).
    next_id: u64,
    id_step: u64,
    incoming: VecDeque<u64>,
    accept_wakers: Vec<Waker>,
    pub(crate) driver_waker: Option<Waker>,
    /// Live [`Endpoint`] handles; the driver stops when none remain and no connection lives.
    endpoint_refs: usize,
    /// [`connection::ConnRef`]s not yet let go: connection and stream handles, which point
    /// at this state without counting in its `Arc`.
    conn_refs: usize,
    /// This state's own `Arc`, held while `conn_refs` is not zero: the one strong count that
    /// keeps it in memory for all those handles.
    keep_alive: Option<Arc<Shared>>,
    closed: bool,
    idle_wakers: Vec<Waker>,
    /// [`Endpoint::wait_closes_sent`] callers, woken at the end of every driver turn that
    /// leaves nothing unsent.
    close_wakers: Vec<Waker>,
    /// The driver holds datagrams taken from the state machine and not yet handed to the
    /// socket.
    pub(crate) send_backlog: bool,
    default_client: Option<ClientConfig>,
    /// A fatal socket error stops the driver; connections then fail.
    socket_error: Option<Arc<io::Error>>,
    pub(crate) driver_done: bool,
    /// The socket's local address.
    pub(crate) local: SocketAddr,
    /// A socket [`Endpoint::rebind`] handed over, for the driver to switch to.
    pub(crate) new_socket: Option<udp::UdpIo>,
    /// Datagrams another shard of the group handed over (their connection lives here).
    pub(crate) inbox: Vec<proto::Tossed>,
    /// Every shard of the group by index, this one included; empty for a lone socket.
    pub(crate) group: Vec<Weak<Shared>>,
    /// OpenTelemetry instruments, once [`Endpoint::set_meter_provider`] is called.
    #[cfg(feature = "otel")]
    pub(crate) metrics: Option<Arc<metrics::Metrics>>,
    /// Counters of the connections already gone (for the observable counters).
    #[cfg(feature = "otel")]
    pub(crate) gone: metrics::Gone,
}

impl State {
    pub(crate) fn wake_driver(&mut self) {
        if let Some(w) = self.driver_waker.take() {
            w.wake();
        }
    }

    fn register(&mut self, handle: ConnectionHandle) -> u64 {
        let id = self.next_id;
        self.next_id += self.id_step;
        self.conns.insert(
            id,
            ConnState {
                handle: Some(handle),
                ..ConnState::default()
            },
        );
        self.by_handle.insert(handle, id);
        #[cfg(feature = "otel")]
        if let (Some(m), Some(c)) = (&self.metrics, self.ep.connection(handle)) {
            m.on_created(c.side().is_server());
        }
        id
    }

    /// `f` on connection `id`'s state machine, for what only reads: a hibernating connection
    /// is read through a copy and stays asleep (`proto::Endpoint::inspect_connection`).
    pub(crate) fn peek<R>(
        &self,
        id: u64,
        f: impl FnOnce(&crate::connection::Connection) -> R,
    ) -> Option<R> {
        let h = self.conns.get(&id)?.handle?;
        self.ep.inspect_connection(h, f)
    }

    /// Connection `id`'s state machine if it lives, `Some(None)` while it hibernates (left
    /// asleep), for a call that has nothing to find in a hibernating connection.
    pub(crate) fn proto_unless_asleep(
        &mut self,
        id: u64,
    ) -> Option<Option<&mut crate::connection::Connection>> {
        let h = self.conns.get(&id)?.handle?;
        if self.ep.is_hibernating(h) {
            return Some(None);
        }
        self.ep.connection_mut(h).map(Some)
    }

    /// The sans-IO connection behind a runtime id, if it still lives; woken if it hibernates.
    pub(crate) fn proto(&mut self, id: u64) -> Option<&mut crate::connection::Connection> {
        let h = self.conns.get(&id)?.handle?;
        self.ep.connection_mut(h)
    }

    /// Moves the state machine's events to the waiting tasks.
    pub(crate) fn dispatch(&mut self) {
        let mut out = Vec::new();
        self.dispatch_into(&mut out);
        for w in out {
            w.wake();
        }
    }

    /// [`State::dispatch`], leaving the wakers in `out` for the caller to wake once the lock
    /// is let go (a woken task on another thread then does not find it held).
    pub(crate) fn dispatch_into(&mut self, out: &mut Vec<Waker>) {
        // New connections from peers.
        while let Some(h) = self.ep.accept() {
            let id = self.register(h);
            if self.closed {
                if let Some(c) = self.ep.connection_mut(h) {
                    c.close(Instant::now(), VarInt::from_u32(0), Bytes::new());
                }
                continue;
            }
            self.incoming.push_back(id);
            out.append(&mut self.accept_wakers);
        }
        // Only the connections the endpoint touched since the last turn can have events:
        // with many idle connections, a turn must not visit them all.
        while let Some(h) = self.ep.poll_touched() {
            let Some(&id) = self.by_handle.get(&h) else {
                continue;
            };
            let Some(st) = self.conns.get_mut(&id) else {
                continue;
            };
            while let Some(event) = self.ep.poll_connection_event(h) {
                #[cfg(feature = "otel")]
                if let (crate::connection::Event::Connected, Some(m), Some(c)) =
                    (&event, &self.metrics, self.ep.connection(h))
                {
                    m.on_connected(
                        c.side().is_server(),
                        c.handshake_duration().unwrap_or_default(),
                        c.rtt(),
                        c.zero_rtt_accepted(),
                    );
                }
                handle_event(st, event, out);
            }
        }
        self.reap_into(out);
    }

    /// Takes the connections the endpoint removed after draining; the wakers of the tasks
    /// waiting on them go to `out`.
    pub(crate) fn reap_into(&mut self, out: &mut Vec<Waker>) {
        while let Some((h, mut conn)) = self.ep.poll_drained() {
            let Some(id) = self.by_handle.remove(&h) else {
                continue;
            };
            let Some(st) = self.conns.get_mut(&id) else {
                continue;
            };
            while let Some(event) = conn.poll_event() {
                handle_event(st, event, out);
            }
            #[cfg(feature = "otel")]
            {
                self.gone.add(&conn.stats());
                if let Some(m) = &self.metrics {
                    m.on_gone(
                        conn.side().is_server(),
                        st.error(),
                        conn.rtt(),
                        conn.congestion_window(),
                        st.connected,
                    );
                }
            }
            st.detach(Some(&conn));
            st.wake_all_into(out);
            if st.refs == 0 {
                self.conns.remove(&id);
            }
        }
        if self.live_connections() == 0 {
            out.append(&mut self.idle_wakers);
            out.append(&mut self.close_wakers);
        }
    }

    /// The end of a driver turn: `backlog` datagrams it took are not sent yet. Without any,
    /// [`Endpoint::wait_closes_sent`] callers look again.
    pub(crate) fn end_send(&mut self, backlog: bool, out: &mut Vec<Waker>) {
        self.send_backlog = backlog;
        if !backlog {
            out.append(&mut self.close_wakers);
        }
    }

    fn live_connections(&self) -> usize {
        self.ep.connection_count()
    }

    /// Whether the driver may stop: nobody can use the endpoint any more.
    pub(crate) fn driver_may_stop(&self) -> bool {
        self.endpoint_refs == 0 && self.conns.is_empty() && self.live_connections() == 0
    }

    /// The socket failed: every connection fails with it.
    pub(crate) fn fail(&mut self, error: io::Error) {
        tracing::error!(%error, "endpoint socket failed");
        self.socket_error = Some(Arc::new(error));
        for st in self.conns.values_mut() {
            let conn = st.handle.and_then(|h| self.ep.connection_mut(h));
            st.detach(conn.as_deref());
            st.wake_all();
        }
        for w in self
            .accept_wakers
            .drain(..)
            .chain(self.idle_wakers.drain(..))
            .chain(self.close_wakers.drain(..))
        {
            w.wake();
        }
    }

    /// Closes the connections nobody accepted and wakes the acceptors.
    fn drop_incoming(&mut self) {
        for id in self.incoming.drain(..).collect::<Vec<_>>() {
            if let Some(st) = self.conns.get_mut(&id) {
                if st.refs == 0 {
                    st.refs = 1;
                    self.release_conn(id);
                }
            }
        }
        for w in self.accept_wakers.drain(..) {
            w.wake();
        }
    }

    /// Counts a new [`connection::ConnRef`] on `shared`, this state's own `Arc`; the first
    /// makes the state hold itself.
    pub(crate) fn hold_ref(&mut self, shared: &Arc<Shared>) {
        self.conn_refs += 1;
        if self.keep_alive.is_none() {
            self.keep_alive = Some(shared.clone());
        }
    }

    /// Counts a new [`connection::ConnRef`] made from one that is alive (so the state holds
    /// itself already).
    pub(crate) fn add_ref(&mut self) {
        debug_assert!(self.keep_alive.is_some());
        self.conn_refs += 1;
    }

    /// Uncounts a [`connection::ConnRef`]. With none left, the state's hold on itself is
    /// returned, to be dropped once the lock is let go (it may free the state).
    #[must_use = "dropped under the lock, the hold could free the lock it is under"]
    pub(crate) fn drop_ref(&mut self) -> Option<Arc<Shared>> {
        self.conn_refs -= 1;
        if self.conn_refs == 0 {
            self.keep_alive.take()
        } else {
            None
        }
    }

    pub(crate) fn release_conn(&mut self, id: u64) {
        self.release_conn_with(id, |_| {});
    }

    /// [`State::release_conn`], running `last` on the connection's state first (through the
    /// same look-up).
    pub(crate) fn release_conn_with(&mut self, id: u64, last: impl FnOnce(&mut ConnState)) {
        let Some(st) = self.conns.get_mut(&id) else {
            return;
        };
        last(st);
        st.refs -= 1;
        if st.refs > 0 {
            return;
        }
        match st.handle {
            // RFC 9000 §10.2: nobody can use it any more; close it gracefully (code 0).
            Some(h) => {
                if let Some(c) = self.ep.connection_mut(h) {
                    c.close(Instant::now(), VarInt::from_u32(0), Bytes::new());
                }
                self.wake_driver();
            }
            None => {
                self.conns.remove(&id);
                self.wake_driver();
            }
        }
    }
}

/// Moves the wakers of the tasks waiting for `event` to `out`.
fn handle_event(st: &mut ConnState, event: crate::connection::Event, out: &mut Vec<Waker>) {
    use crate::connection::{Event, StreamEvent};
    use crate::Dir;
    let dir_idx = |d: Dir| usize::from(d == Dir::Uni);
    match event {
        Event::HandshakeDataReady => {
            st.handshake_data = true;
            out.append(&mut st.handshake);
        }
        Event::Connected => {
            st.handshake_data = true;
            st.connected = true;
            out.append(&mut st.handshake);
        }
        Event::ConnectionLost(e) => {
            st.set_error(e);
            st.wake_all_into(out);
        }
        Event::DatagramReceived => {
            if let Some(w) = st.w_if_any() {
                out.append(&mut w.datagrams);
            }
        }
        Event::Stream(StreamEvent::Opened(d)) => {
            if let Some(w) = st.w_if_any() {
                out.append(&mut w.accept[dir_idx(d)]);
            }
        }
        Event::Stream(StreamEvent::Available(d)) => {
            if let Some(w) = st.w_if_any() {
                out.append(&mut w.open[dir_idx(d)]);
            }
        }
        Event::Stream(StreamEvent::Readable(id)) => {
            out.extend(st.w_if_any().and_then(|w| w.readable.remove(&id)));
        }
        Event::Stream(StreamEvent::Writable(id)) => {
            out.extend(st.send_record(id.0).and_then(|r| r.writable.take()));
        }
        Event::Stream(StreamEvent::Finished(id)) => {
            if let Some(w) = st.w_if_any() {
                out.append(&mut w.flushed);
            }
            if let Some(r) = st.send_record(id.0) {
                r.acked = true;
                out.extend(r.stopped_waker.take());
            }
        }
        Event::Stream(StreamEvent::Stopped(id, code)) => {
            if let Some(r) = st.send_record(id.0) {
                r.stopped = Some(code);
                out.extend(r.writable.take());
                out.extend(r.stopped_waker.take());
            }
        }
    }
}

pub(crate) struct Shared {
    state: Mutex<State>,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent-enough state for shutdown.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A QUIC endpoint on one UDP socket, or on several ([`Endpoint::new_sharded`]): accepts
/// connections (with a server configuration), starts them (with a client configuration), or
/// both. Many connections share a socket.
///
/// Cloning gives another handle to the same endpoint. The endpoint's background tasks run
/// while a handle or a connection lives; dropping every handle lets connections finish.
///
/// With several sockets, each has a background task (a shard) of its own with its own
/// connections, so a multi-thread runtime spreads them over its workers; the handle accepts
/// from every shard and starts each new connection on the least loaded one.
#[derive(Debug)]
pub struct Endpoint {
    shards: Arc<[Arc<Shared>]>,
    /// Where the next [`Endpoint::accept`] starts looking, so no shard starves.
    next: Arc<AtomicUsize>,
}

/// Sums of the group's counters; locks one shard at a time.
fn sum_stats(shards: &[Arc<Shared>]) -> proto::EndpointStats {
    let mut total = proto::EndpointStats::default();
    for sh in shards {
        total += sh.lock().ep.stats();
    }
    total
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shared")
    }
}

impl Clone for Endpoint {
    fn clone(&self) -> Self {
        for sh in self.shards.iter() {
            sh.lock().endpoint_refs += 1;
        }
        Self {
            shards: self.shards.clone(),
            next: self.next.clone(),
        }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        for sh in self.shards.iter() {
            let mut s = sh.lock();
            s.endpoint_refs -= 1;
            if s.endpoint_refs == 0 {
                s.ep.refuse_new_connections(true);
                s.closed = true;
                s.drop_incoming();
                s.wake_driver();
            }
        }
    }
}

fn random_bytes(provider: &rustls::crypto::CryptoProvider) -> [u8; 32] {
    let mut b = [0u8; 32];
    if provider.secure_random.fill(&mut b).is_err() {
        // The provider's RNG never fails in practice; fall back to address-space entropy.
        let seed = std::collections::hash_map::RandomState::new();
        for (i, chunk) in b.chunks_mut(8).enumerate() {
            use std::hash::BuildHasher;
            chunk.copy_from_slice(&seed.hash_one(i).to_le_bytes());
        }
    }
    b
}

/// Binds a UDP socket for an endpoint. An unspecified IPv6 address (`[::]`) gives a
/// dual-stack socket (`IPV6_V6ONLY` off), which carries IPv4 as well: the endpoint shows IPv4
/// peers by their IPv4 addresses and sends to IPv4 addresses through it. Any other address
/// binds as given.
///
/// # Errors
/// The socket cannot be created or bound (address in use, no IPv6 on this host, ...).
pub fn bind_socket(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    match addr {
        SocketAddr::V6(a) if a.ip().is_unspecified() => {
            let socket = socket2::Socket::new(
                socket2::Domain::IPV6,
                socket2::Type::DGRAM,
                Some(socket2::Protocol::UDP),
            )?;
            socket.set_only_v6(false)?;
            socket.bind(&addr.into())?;
            Ok(socket.into())
        }
        _ => std::net::UdpSocket::bind(addr),
    }
}

/// Binds `count` UDP sockets to one address with `SO_REUSEPORT`, for
/// [`Endpoint::new_sharded`]: the kernel spreads incoming datagrams over them by 4-tuple.
/// Port 0 picks a free port for the first and binds the others to it. An unspecified IPv6
/// address gives dual-stack sockets, as [`bind_socket`] does.
///
/// # Errors
/// The sockets cannot be created or bound; `count` is 0
/// ([`io::ErrorKind::InvalidInput`]); `count` is above 1 on a platform without
/// `SO_REUSEPORT` ([`io::ErrorKind::Unsupported`]).
pub fn bind_reuseport(addr: SocketAddr, count: usize) -> io::Result<Vec<std::net::UdpSocket>> {
    if count == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "bind_reuseport needs at least one socket",
        ));
    }
    if count == 1 {
        return Ok(vec![bind_socket(addr)?]);
    }
    #[cfg(all(unix, not(any(target_os = "solaris", target_os = "illumos"))))]
    {
        let mut addr = addr;
        let mut sockets = Vec::with_capacity(count);
        for _ in 0..count {
            let socket = socket2::Socket::new(
                socket2::Domain::for_address(addr),
                socket2::Type::DGRAM,
                Some(socket2::Protocol::UDP),
            )?;
            if let SocketAddr::V6(a) = addr {
                if a.ip().is_unspecified() {
                    socket.set_only_v6(false)?;
                }
            }
            socket.set_reuse_port(true)?;
            socket.bind(&addr.into())?;
            if addr.port() == 0 {
                if let Some(bound) = socket.local_addr()?.as_socket() {
                    addr.set_port(bound.port());
                }
            }
            sockets.push(socket.into());
        }
        Ok(sockets)
    }
    #[cfg(not(all(unix, not(any(target_os = "solaris", target_os = "illumos")))))]
    {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "SO_REUSEPORT is not available on this platform: use one socket",
        ))
    }
}

impl Endpoint {
    /// A server endpoint bound to `addr`, accepting connections with `config`.
    ///
    /// # Errors
    /// [`EndpointError`] if the socket cannot be bound or no tokio runtime is running.
    ///
    /// An unspecified IPv6 address (`[::]:port`) binds one dual-stack socket: it serves IPv4
    /// peers too, whatever the system's default (`net.ipv6.bindv6only`); they appear with
    /// their IPv4 addresses. See [`bind_socket`].
    pub fn server(config: ServerConfig, addr: SocketAddr) -> Result<Self, EndpointError> {
        let provider = config.crypto.crypto_provider().clone();
        let socket = bind_socket(addr)?;
        let ep_config = EndpointConfig::new(provider.clone(), random_bytes(&provider));
        Self::new(ep_config, Some(config), socket)
    }

    /// A server endpoint with `sockets` sockets bound to `addr` with `SO_REUSEPORT`
    /// ([`bind_reuseport`]), one shard each ([`Endpoint::new_sharded`]): on a multi-thread
    /// runtime, connections are processed on several cores. One socket per core is the usual
    /// choice (`std::thread::available_parallelism`).
    ///
    /// # Errors
    /// As [`Endpoint::server`] and [`bind_reuseport`]; [`EndpointConfigError::Shard`] above
    /// [`proto::MAX_SHARDS`] sockets.
    pub fn server_reuseport(
        config: ServerConfig,
        addr: SocketAddr,
        sockets: usize,
    ) -> Result<Self, EndpointError> {
        let provider = config.crypto.crypto_provider().clone();
        if sockets > proto::MAX_SHARDS {
            return Err(EndpointConfigError::Shard {
                index: 0,
                count: sockets,
            }
            .into());
        }
        let sockets = bind_reuseport(addr, sockets)?;
        let ep_config = EndpointConfig::new(provider.clone(), random_bytes(&provider));
        Self::new_sharded(ep_config, Some(config), sockets)
    }

    /// A client endpoint bound to `addr` (use port 0 for any), with the default crypto
    /// provider. Set a client configuration with [`Endpoint::set_default_client_config`] or
    /// pass one to [`Endpoint::connect_with`]. Bound to `[::]:0`, it reaches IPv4 and IPv6
    /// servers alike (see [`bind_socket`]).
    ///
    /// # Errors
    /// [`EndpointError`] if the socket cannot be bound or no tokio runtime is running.
    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    pub fn client(addr: SocketAddr) -> Result<Self, EndpointError> {
        let provider = Arc::new(crate::crypto::default_provider());
        let socket = bind_socket(addr)?;
        let ep_config = EndpointConfig::new(provider.clone(), random_bytes(&provider));
        Self::new(ep_config, None, socket)
    }

    /// An endpoint over an existing socket, with full control of the settings.
    ///
    /// With the `qlog` feature, a configuration without a
    /// `EndpointConfig::qlog_dir` takes the `QLOGDIR` environment variable
    /// (draft-ietf-quic-qlog-main-schema §10.1), creating the directory if need be.
    ///
    /// # Errors
    /// [`EndpointError`] if the socket cannot be registered with tokio or the configuration
    /// is unusable.
    pub fn new(
        config: EndpointConfig,
        server: Option<ServerConfig>,
        socket: std::net::UdpSocket,
    ) -> Result<Self, EndpointError> {
        Self::new_sharded(config, server, vec![socket])
    }

    /// An endpoint over several sockets, one shard (state machine and background task) per
    /// socket. Either a group bound to one address with `SO_REUSEPORT` ([`bind_reuseport`]),
    /// which spreads one server address over several cores, or sockets on different ports
    /// (a client spreading its connections over several local ports).
    ///
    /// Every connection lives on one shard. New connections go to the shard whose socket
    /// received their first Initial (server) or to the shard with the fewest connections
    /// ([`Endpoint::connect_with`]). The connection IDs a shard issues name it
    /// ([`EndpointConfig::shard`]), so a datagram the kernel delivers to another socket of the
    /// group (after a NAT rebinding or a migration changed its 4-tuple) is handed to the right
    /// shard instead of being answered with a stateless reset. The shards share `config`: its
    /// reset key and token key, so a Retry or NEW_TOKEN token from one is good at another.
    ///
    /// # Errors
    /// [`EndpointError`] if a socket cannot be registered with tokio or the configuration is
    /// unusable; [`EndpointConfigError::Shard`] for no sockets or more than
    /// [`proto::MAX_SHARDS`].
    pub fn new_sharded(
        #[allow(unused_mut)] mut config: EndpointConfig,
        server: Option<ServerConfig>,
        sockets: Vec<std::net::UdpSocket>,
    ) -> Result<Self, EndpointError> {
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| EndpointError::NoRuntime)?;
        let count = sockets.len();
        if count == 0 || count > proto::MAX_SHARDS {
            return Err(EndpointConfigError::Shard { index: 0, count }.into());
        }
        #[cfg(feature = "qlog")]
        if config.qlog_dir_path().is_none() {
            if let Some(dir) = std::env::var_os("QLOGDIR").filter(|d| !d.is_empty()) {
                let dir = std::path::PathBuf::from(dir);
                if let Err(e) = std::fs::create_dir_all(&dir) {
                    tracing::warn!(dir = %dir.display(), error = %e, "QLOGDIR cannot be created");
                } else {
                    config.qlog_dir(dir);
                }
            }
        }
        let server = server.map(Arc::new);
        let mut shards = Vec::with_capacity(count);
        let mut drivers = Vec::with_capacity(count);
        for (index, socket) in sockets.into_iter().enumerate() {
            let local = socket.local_addr()?;
            let socket = {
                let _enter = runtime.enter();
                udp::UdpIo::new(socket)?
            };
            let mut config = config.clone();
            config.shard(index, count)?;
            let secret = random_bytes(config.provider());
            let mut ep = proto::Endpoint::new(config, server.clone(), secret)?;
            // Tokens carry wall-clock times, so a fleet (or a restarted server) can check them.
            let unix_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            ep.set_unix_time(Instant::now(), unix_ms);
            // With several workers, handshakes' TLS steps run on all of them
            // (`proto::Endpoint::set_tls_offload`); one thread gains nothing from it.
            ep.set_tls_offload(
                runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread,
            );
            let shared = Arc::new(Shared {
                state: Mutex::new(State {
                    ep,
                    conns: FastMap::default(),
                    by_handle: FastMap::default(),
                    next_id: index as u64,
                    id_step: count as u64,
                    incoming: VecDeque::new(),
                    accept_wakers: Vec::new(),
                    driver_waker: None,
                    endpoint_refs: 1,
                    conn_refs: 0,
                    keep_alive: None,
                    closed: false,
                    idle_wakers: Vec::new(),
                    close_wakers: Vec::new(),
                    send_backlog: false,
                    default_client: None,
                    socket_error: None,
                    driver_done: false,
                    local,
                    new_socket: None,
                    inbox: Vec::new(),
                    group: Vec::new(),
                    #[cfg(feature = "otel")]
                    metrics: None,
                    #[cfg(feature = "otel")]
                    gone: metrics::Gone::default(),
                }),
            });
            let span = if count == 1 {
                tracing::info_span!("endpoint", local = %local)
            } else {
                tracing::info_span!("endpoint", local = %local, shard = index)
            };
            drivers.push((shared.clone(), socket, span));
            shards.push(shared);
        }
        if count > 1 {
            let group: Vec<Weak<Shared>> = shards.iter().map(Arc::downgrade).collect();
            for sh in &shards {
                sh.lock().group = group.clone();
            }
        }
        for (shared, socket, span) in drivers {
            runtime.spawn(driver::Driver::new(shared, socket, span));
        }
        Ok(Self {
            shards: shards.into(),
            next: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// The first shard (the only one of a single-socket endpoint).
    fn primary(&self) -> &Arc<Shared> {
        &self.shards[0]
    }

    /// The address the socket is bound to (the first socket's, with several).
    pub fn local_addr(&self) -> SocketAddr {
        self.primary().lock().local
    }

    /// The addresses of every socket, one per shard.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.shards.iter().map(|sh| sh.lock().local).collect()
    }

    /// How many sockets (shards) the endpoint has.
    pub fn sockets(&self) -> usize {
        self.shards.len()
    }

    /// Moves the endpoint to another UDP socket, as after a network change: its connections
    /// go on over the new local address (RFC 9000 §9). Client connections move to a fresh
    /// connection ID (§9.5) and send at once so their servers see the new path; servers
    /// validate it. The old socket is closed.
    ///
    /// # Errors
    /// [`EndpointError`] if the socket cannot be registered with tokio;
    /// [`EndpointError::RebindSharded`] for an endpoint with several sockets.
    pub fn rebind(&self, socket: std::net::UdpSocket) -> Result<(), EndpointError> {
        if self.shards.len() > 1 {
            return Err(EndpointError::RebindSharded(self.shards.len()));
        }
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| EndpointError::NoRuntime)?;
        let local = socket.local_addr()?;
        let socket = {
            let _enter = runtime.enter();
            udp::UdpIo::new(socket)?
        };
        let mut state = self.primary().lock();
        let ip_changed = state.local.ip() != local.ip();
        tracing::debug!(old = %state.local, new = %local, "endpoint rebinding");
        state.local = local;
        state.new_socket = Some(socket);
        state.ep.local_address_changed(Instant::now(), ip_changed);
        state.wake_driver();
        Ok(())
    }

    /// Sets the configuration [`Endpoint::connect`] uses.
    pub fn set_default_client_config(&self, config: ClientConfig) {
        for sh in self.shards.iter() {
            sh.lock().default_client = Some(config.clone());
        }
    }

    /// Replaces (or removes, with `None`) the server configuration for new connections.
    pub fn set_server_config(&self, config: Option<ServerConfig>) {
        let config = config.map(Arc::new);
        for sh in self.shards.iter() {
            sh.lock().ep.set_server_config(config.clone());
        }
    }

    /// Connects to `addr`, checking the server's certificate against `server_name`, with
    /// the default client configuration.
    ///
    /// # Errors
    /// [`ConnectError::NoDefaultClientConfig`] if none was set; see [`Endpoint::connect_with`].
    pub fn connect(&self, addr: SocketAddr, server_name: &str) -> Result<Connecting, ConnectError> {
        let config = self
            .primary()
            .lock()
            .default_client
            .clone()
            .ok_or(ConnectError::NoDefaultClientConfig)?;
        self.connect_with(config, addr, server_name)
    }

    /// Connects to `addr` with `config`. The returned [`Connecting`] resolves when the
    /// handshake completes. With several sockets, the connection goes to the one with the
    /// fewest connections.
    ///
    /// # Errors
    /// [`ConnectError::EndpointClosed`] after [`Endpoint::close`];
    /// [`ConnectError::Setup`] for an invalid server name or TLS configuration.
    pub fn connect_with(
        &self,
        config: ClientConfig,
        addr: SocketAddr,
        server_name: &str,
    ) -> Result<Connecting, ConnectError> {
        let shared = if self.shards.len() == 1 {
            self.primary()
        } else {
            // Least loaded; ties go round-robin from a moving start.
            let start = self.next.fetch_add(1, Ordering::Relaxed);
            let n = self.shards.len();
            (0..n)
                .map(|i| &self.shards[(start + i) % n])
                .min_by_key(|sh| sh.lock().live_connections())
                .unwrap_or(self.primary())
        };
        let open = |s: &State| !(s.closed || s.driver_done || s.socket_error.is_some());
        let ids = {
            let mut s = shared.lock();
            if !open(&s) {
                return Err(ConnectError::EndpointClosed);
            }
            s.ep.client_ids()
        };
        // The key shares and the ClientHello are built without the endpoint's lock, so that
        // the driver goes on with other connections meanwhile, and connects from tasks on
        // several threads build theirs in parallel.
        let conn = crate::connection::Connection::connect(
            &config,
            Instant::now(),
            addr,
            server_name,
            ids.local,
            ids.remote,
        )?;
        let mut s = shared.lock();
        if !open(&s) {
            return Err(ConnectError::EndpointClosed);
        }
        let h = s.ep.adopt_client(Instant::now(), conn)?;
        let id = s.register(h);
        s.wake_driver();
        drop(s);
        Ok(Connecting::new(Connection::new(shared, id)))
    }

    /// Waits for the next connection a client starts; `None` once the endpoint is closed.
    /// The [`Connecting`] resolves when its handshake completes.
    ///
    /// # Cancel safety
    /// Cancel safe: a connection is taken from the queue only when this returns it.
    pub async fn accept(&self) -> Option<Connecting> {
        let (shard, id) = poll_fn(|cx| self.poll_accept(cx)).await?;
        Some(Connecting::new(Connection::counted(
            &self.shards[shard],
            id,
        )))
    }

    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<Option<(usize, u64)>> {
        let n = self.shards.len();
        let start = if n == 1 {
            0
        } else {
            self.next.fetch_add(1, Ordering::Relaxed)
        };
        let mut finished = 0;
        for i in 0..n {
            let shard = (start + i) % n;
            let mut s = self.shards[shard].lock();
            while let Some(id) = s.incoming.pop_front() {
                // A connection that failed before it was accepted is skipped.
                if let Some(st) = s.conns.get_mut(&id) {
                    st.refs += 1;
                    // Counted for the handle `accept` makes right away.
                    s.hold_ref(&self.shards[shard]);
                    return Poll::Ready(Some((shard, id)));
                }
            }
            if s.closed || s.driver_done || s.socket_error.is_some() {
                finished += 1;
            } else {
                register_waker(&mut s.accept_wakers, cx.waker());
            }
        }
        if finished == n {
            return Poll::Ready(None);
        }
        Poll::Pending
    }

    /// Closes every connection with `code` and `reason` and refuses new ones; pending
    /// [`Endpoint::accept`] calls return `None`. Use [`Endpoint::wait_idle`] to let the
    /// closes reach the peers before the process exits.
    pub fn close(&self, code: VarInt, reason: &[u8]) {
        let reason = Bytes::copy_from_slice(reason);
        for sh in self.shards.iter() {
            let mut s = sh.lock();
            s.closed = true;
            s.ep.refuse_new_connections(true);
            let now = Instant::now();
            let handles: Vec<ConnectionHandle> =
                s.conns.values().filter_map(|c| c.handle).collect();
            for h in handles {
                if let Some(c) = s.ep.connection_mut(h) {
                    c.close(now, code, reason.clone());
                }
            }
            s.drop_incoming();
            s.wake_driver();
        }
    }

    /// Waits until every connection is closed and its CONNECTION_CLOSE has been handed to the
    /// socket (or the peer closed it), without waiting out the closing periods as
    /// [`Endpoint::wait_idle`] does (three PTOs: about 80 ms on a local path, a second or more
    /// on a slow one). RFC 9000 §10.2 lets an endpoint end the closing state early once it
    /// closes its socket: call this after [`Endpoint::close`] before a process exits. A
    /// connection that is not closed is waited for.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn wait_closes_sent(&self) {
        self.wait_every_shard(
            |s| !s.send_backlog && s.ep.closes_sent(),
            |s| &mut s.close_wakers,
        )
        .await;
    }

    /// Waits until every shard has no live connection or `done`, or its driver stopped; a
    /// shard not there yet gets the waker in `wakers`.
    async fn wait_every_shard(
        &self,
        done: impl Fn(&State) -> bool,
        wakers: impl Fn(&mut State) -> &mut Vec<Waker>,
    ) {
        poll_fn(|cx| {
            let mut all = true;
            for sh in self.shards.iter() {
                let mut s = sh.lock();
                if s.live_connections() == 0
                    || s.driver_done
                    || s.socket_error.is_some()
                    || done(&s)
                {
                    continue;
                }
                all = false;
                register_waker(wakers(&mut s), cx.waker());
            }
            if all {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }

    /// While `true`, new connections are refused (CONNECTION_REFUSED, RFC 9000 §20.1) and
    /// existing ones carry on: the first step of a graceful shutdown.
    pub fn refuse_new_connections(&self, refuse: bool) {
        for sh in self.shards.iter() {
            sh.lock().ep.refuse_new_connections(refuse);
        }
    }

    /// Waits until every connection has finished closing (drained, RFC 9000 §10.2).
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn wait_idle(&self) {
        self.wait_every_shard(|_| false, |s| &mut s.idle_wakers)
            .await;
    }

    /// The endpoint's counters (connections accepted and refused, stateless packets), summed
    /// over its sockets.
    pub fn stats(&self) -> proto::EndpointStats {
        sum_stats(&self.shards)
    }

    /// The counters of each socket (shard) on its own, in [`Endpoint::local_addrs`] order:
    /// how evenly the kernel spreads connections over a `SO_REUSEPORT` group, and how many
    /// datagrams each handed to another ([`proto::EndpointStats::tossed`]).
    pub fn socket_stats(&self) -> Vec<proto::EndpointStats> {
        self.shards.iter().map(|sh| sh.lock().ep.stats()).collect()
    }

    /// Connections alive on this endpoint (including those still closing).
    pub fn open_connections(&self) -> usize {
        self.shards
            .iter()
            .map(|sh| sh.lock().live_connections())
            .sum()
    }

    /// Of those, the connections hibernating: idle, their state packed into a few hundred
    /// bytes until a datagram, a timer or a call on them wakes them
    /// ([`crate::TransportConfig::hibernate`]).
    pub fn hibernating_connections(&self) -> usize {
        self.shards
            .iter()
            .map(|sh| sh.lock().ep.hibernating_count())
            .sum()
    }

    /// Records OpenTelemetry metrics of this endpoint's connections with a meter (scope
    /// `gquic`) from `provider`, from now on. Only the OpenTelemetry API is used: the
    /// provider (and its exporter) are the application's, for example `opentelemetry_sdk`'s,
    /// or `opentelemetry::global::meter_provider()`.
    ///
    /// Instruments (meter `gquic`; the connection instruments carry `quic.side` = `client` or
    /// `server`, the endpoint-wide observable ones no attribute):
    ///
    /// | name | kind | unit | recorded |
    /// |---|---|---|---|
    /// | `quic.connections.opened` | counter | `{connection}` | a connection is created |
    /// | `quic.connections.open` | up-down counter | `{connection}` | +1 created, -1 gone |
    /// | `quic.connections.closed` | counter | `{connection}` | gone; `quic.close.reason` |
    /// | `quic.handshake.duration` | histogram | `s` | handshake complete |
    /// | `quic.connection.rtt` | histogram | `s` | smoothed RTT at handshake completion and at the end |
    /// | `quic.connection.congestion_window` | histogram | `By` | at the end of a connection |
    /// | `quic.zero_rtt` | counter | `{connection}` | handshake complete after 0-RTT was offered; `quic.zero_rtt.result` = `accepted` / `rejected` |
    /// | `quic.bytes.sent`, `quic.bytes.received` | observable counter | `By` | UDP payload bytes |
    /// | `quic.packets.sent`, `quic.packets.received`, `quic.packets.lost` | observable counter | `{packet}` | |
    /// | `quic.streams.open` | observable up-down counter | `{stream}` | streams with state |
    /// | `quic.retries.sent` | observable counter | `{packet}` | Retry packets (server) |
    ///
    /// The observable counters add up live connections and those already gone, when the
    /// exporter collects.
    #[cfg(feature = "otel")]
    pub fn set_meter_provider<P>(&self, provider: &P)
    where
        P: opentelemetry::metrics::MeterProvider + ?Sized,
    {
        let scope = opentelemetry::InstrumentationScope::builder("gquic")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        metrics::install(&self.shards, &provider.meter_with_scope(scope));
    }
}

#[cfg(test)]
mod tests;

/// Adds `waker` to `list` unless a waker for the same task is already there, so a task that
/// polls again and again (in a `select!` loop, say) does not grow the list.
pub(crate) fn register_waker(list: &mut Vec<Waker>, waker: &Waker) {
    if !list.iter().any(|w| w.will_wake(waker)) {
        list.push(waker.clone());
    }
}
