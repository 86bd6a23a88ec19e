//! Async connection handles.

use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::ptr::NonNull;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::streams::{RecvStream, SendStream};
use super::{register_waker, Shared, State};
use crate::connection::{ConnectionError, SendDatagramError};
use crate::wire::VarInt;
use crate::Dir;

/// An endpoint's shared state as a [`ConnRef`] reaches it: a pointer that does not count in
/// the state's `Arc`. The state counts the references instead, under its lock (`conn_refs`),
/// and holds itself in memory while any is left (`keep_alive`): the lock a handle takes to be
/// made or let go anyway counts it, where an `Arc` per handle cost an atomic increment and
/// decrement more per handle. In the profile of a server of short streams the increments stood
/// out (`lock incq` drains the store buffer). Without them a stream costs the server about 80
/// instructions fewer and the client about 65 (callgrind, `gquic-bench streams-child`); 40
/// paired runs of 100k current-thread streams gave a geometric-mean speed-up of 1.034x
/// (95% interval 0.989x-1.082x, median 1.012x).
pub(crate) struct SharedRef(NonNull<Shared>);

// SAFETY: `SharedRef` only hands out `&Shared`, and `Shared` is `Send + Sync` (its state
// sits behind a mutex).
#[allow(unsafe_code)]
unsafe impl Send for SharedRef {}
// SAFETY: as for `Send`.
#[allow(unsafe_code)]
unsafe impl Sync for SharedRef {}

impl std::ops::Deref for SharedRef {
    type Target = Shared;

    #[allow(unsafe_code)]
    fn deref(&self) -> &Shared {
        // SAFETY: a `SharedRef` lives only in a `ConnRef`, and every `ConnRef` that is not
        // released is counted in `State::conn_refs`, so `State::keep_alive` keeps the
        // allocation. A released `ConnRef` (`RELEASED`) is never dereferenced: the release
        // runs in its owner's `Drop`, and its own `Drop` checks the id first.
        unsafe { self.0.as_ref() }
    }
}

/// A handle counted in the connection's references: the connection closes (code 0) when the
/// last handle, stream or connection, goes away.
pub(crate) struct ConnRef {
    pub(crate) shared: SharedRef,
    pub(crate) id: u64,
}

impl ConnRef {
    pub(crate) fn new(shared: &Arc<Shared>, id: u64) -> Self {
        let mut s = shared.lock();
        if let Some(st) = s.conns.get_mut(&id) {
            st.refs += 1;
        }
        s.hold_ref(shared);
        drop(s);
        Self::counted(shared, id)
    }

    /// For a reference the caller counted already, in the connection's references and in
    /// [`State::hold_ref`].
    pub(crate) fn counted(shared: &Arc<Shared>, id: u64) -> Self {
        Self {
            shared: SharedRef(NonNull::from(&**shared)),
            id,
        }
    }

    /// Another reference to this one's connection, made under its endpoint's lock `s`, for
    /// a reference the caller counts in the connection's references.
    pub(crate) fn another(&self, s: &mut State) -> Self {
        s.add_ref();
        Self {
            shared: SharedRef(self.shared.0),
            id: self.id,
        }
    }

    /// Runs `last` under the lock with this connection's id, then lets the reference go under
    /// the same lock: for a handle's `Drop`, whose own clean-up needs the lock anyway. Dropping
    /// this afterwards does not take the lock again.
    pub(crate) fn release_with(&mut self, last: impl FnOnce(&mut State, u64)) {
        self.release(|s, id| {
            last(s, id);
            s.release_conn(id);
        });
    }

    /// [`ConnRef::release_with`] for a clean-up that needs only the connection's own state:
    /// one look-up of it for both.
    pub(crate) fn release_in(&mut self, last: impl FnOnce(&mut super::ConnState)) {
        self.release(|s, id| s.release_conn_with(id, last));
    }

    /// Counts this reference out of the state and runs `release` (which lets the
    /// connection's reference go) under the lock; the one place a reference is let go.
    fn release(&mut self, release: impl FnOnce(&mut State, u64)) {
        // Released before `release` runs: were it to panic, this reference's own `Drop` must
        // not count it out a second time.
        let id = std::mem::replace(&mut self.id, RELEASED);
        // Declared before the guard, so that it goes after it (even when unwinding): the
        // state may go with it.
        let held;
        {
            let mut s = self.shared.lock();
            held = s.drop_ref();
            release(&mut s, id);
        }
        drop(held);
    }
}

/// The id of a [`ConnRef`] already let go; no connection gets it (ids count up from the
/// shard's index in steps of the shard count).
const RELEASED: u64 = u64::MAX;

impl Drop for ConnRef {
    fn drop(&mut self) {
        if self.id != RELEASED {
            self.release(State::release_conn);
        }
    }
}

impl std::fmt::Debug for ConnRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "conn#{}", self.id)
    }
}

/// The error a connection ended with, or a generic one if the runtime lost track of it.
pub(crate) fn lost(state: &State, id: u64) -> ConnectionError {
    state
        .conns
        .get(&id)
        .and_then(|c| c.error().cloned())
        .unwrap_or(ConnectionError::LocallyClosed)
}

/// A connection whose handshake is under way; await it for the [`Connection`].
#[derive(Debug)]
#[must_use = "a connection only completes when its Connecting is awaited"]
pub struct Connecting {
    conn: Option<Connection>,
}

impl Connecting {
    pub(crate) fn new(conn: Connection) -> Self {
        Self { conn: Some(conn) }
    }

    /// The peer's address.
    pub fn remote_address(&self) -> SocketAddr {
        self.conn.as_ref().map_or(
            SocketAddr::from(([0, 0, 0, 0], 0)),
            Connection::remote_address,
        )
    }
}

impl Connecting {
    /// Waits until the peer's first flight is processed: on a server, the ClientHello, so
    /// [`Connection::server_name`], [`Connection::alpn`] and the 0-RTT decision are known
    /// before [`Connecting::into_0rtt`]; on a client, until the handshake completes.
    ///
    /// # Errors
    /// The [`ConnectionError`] if the connection failed first.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn handshake_data(&mut self) -> Result<(), ConnectionError> {
        let Some(conn) = self.conn.as_ref() else {
            return Err(ConnectionError::LocallyClosed);
        };
        poll_fn(|cx| {
            let mut s = conn.inner.shared.lock();
            let Some(st) = s.conns.get_mut(&conn.inner.id) else {
                return Poll::Ready(Err(ConnectionError::LocallyClosed));
            };
            if st.handshake_data {
                return Poll::Ready(Ok(()));
            }
            if let Some(e) = st.error().cloned() {
                return Poll::Ready(Err(e));
            }
            register_waker(&mut st.handshake, cx.waker());
            Poll::Pending
        })
        .await
    }

    /// Uses the connection before its handshake completes (RFC 9001 §4.6).
    ///
    /// - **Client**: when resuming a session whose ticket allows early data (enable it with
    ///   [`crate::ClientConfig::enable_0rtt`]), gives the connection at once: streams opened
    ///   and data written now go in 0-RTT packets, under the limits remembered from the last
    ///   connection. Without such a ticket, gives `self` back: await it instead.
    /// - **Server**: always gives the connection at once, so requests that arrived in 0-RTT
    ///   are read half a round trip before the client's Finished (and responses go out in
    ///   1-RTT packets before the handshake completes).
    ///
    /// 0-RTT data can be replayed by an attacker (RFC 9001 §9.2); send only requests that
    /// are safe to repeat (idempotent ones), and on the server, see
    /// [`Connection::is_0rtt_stream`]. If the server rejects 0-RTT, what was sent in it goes
    /// again in 1-RTT packets: nothing is lost. [`ZeroRttAccepted`] says which happened.
    ///
    /// # Errors
    /// `Err(self)` for a client with no 0-RTT keys.
    pub fn into_0rtt(mut self) -> Result<(Connection, ZeroRttAccepted), Self> {
        let Some(conn) = self.conn.as_ref() else {
            return Err(self);
        };
        let usable = {
            let mut s = conn.inner.shared.lock();
            match s.proto(conn.inner.id) {
                Some(c) => c.side().is_server() || c.is_0rtt(),
                None => false,
            }
        };
        if !usable {
            return Err(self);
        }
        let conn = self.conn.take().expect("checked above");
        let accepted = ZeroRttAccepted { conn: conn.clone() };
        Ok((conn, accepted))
    }
}

/// Resolves when the handshake completes, to whether the server accepted 0-RTT (`false` also
/// when the connection failed first). From [`Connecting::into_0rtt`].
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct ZeroRttAccepted {
    conn: Connection,
}

impl Future for ZeroRttAccepted {
    type Output = bool;

    /// # Cancel safety
    /// Cancel safe.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<bool> {
        let id = self.conn.inner.id;
        let mut s = self.conn.inner.shared.lock();
        let accepted = s.proto(id).and_then(|c| c.zero_rtt_accepted());
        let Some(st) = s.conns.get_mut(&id) else {
            return Poll::Ready(false);
        };
        if st.connected {
            return Poll::Ready(accepted.unwrap_or(false));
        }
        if st.error().is_some() {
            return Poll::Ready(false);
        }
        register_waker(&mut st.handshake, cx.waker());
        Poll::Pending
    }
}

impl Future for Connecting {
    type Output = Result<Connection, ConnectionError>;

    /// # Cancel safety
    /// Dropping a `Connecting` abandons the connection (it closes with code 0).
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(conn) = self.conn.as_ref() else {
            return Poll::Ready(Err(ConnectionError::LocallyClosed));
        };
        let id = conn.inner.id;
        let mut s = conn.inner.shared.lock();
        let Some(st) = s.conns.get_mut(&id) else {
            return Poll::Ready(Err(ConnectionError::LocallyClosed));
        };
        if st.connected {
            drop(s);
            return Poll::Ready(Ok(self.conn.take().expect("checked above")));
        }
        if let Some(e) = st.error().cloned() {
            return Poll::Ready(Err(e));
        }
        register_waker(&mut st.handshake, cx.waker());
        Poll::Pending
    }
}

/// An established QUIC connection. Cheap to clone; every clone is the same connection.
///
/// Dropping every clone and every stream closes the connection with code 0.
#[derive(Debug, Clone)]
pub struct Connection {
    /// One counted reference shared by every clone: cloning and dropping a clone (per
    /// request in a server that hands the connection to its handlers) take no lock; the
    /// last clone lets the reference go.
    inner: Arc<ConnRef>,
}

/// A snapshot of a connection's path and counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionStats {
    /// Smoothed round-trip time (RFC 9002 §5.3).
    pub rtt: Duration,
    /// Minimum round-trip time seen (RFC 9002 §5.2).
    pub min_rtt: Duration,
    /// Congestion window in bytes.
    pub congestion_window: u64,
    /// Bytes in flight (RFC 9002 §2).
    pub bytes_in_flight: u64,
    /// The largest UDP payload packets use now: 1200 until path MTU discovery (RFC 8899)
    /// finds more.
    pub path_mtu: u16,
    /// How long the handshake took, once it completed.
    pub handshake_duration: Option<Duration>,
    /// Streams with state on this connection.
    pub open_streams: usize,
    /// Datagrams, packets and bytes sent, received, lost and dropped.
    pub counters: crate::connection::ConnectionStats,
}

impl ConnectionStats {
    /// A snapshot of a state machine.
    pub(crate) fn of(c: &crate::connection::Connection) -> Self {
        Self {
            rtt: c.rtt(),
            min_rtt: c.rtt_estimator().min(),
            congestion_window: c.congestion_window(),
            bytes_in_flight: c.bytes_in_flight(),
            path_mtu: c.path_mtu(),
            handshake_duration: c.handshake_duration(),
            open_streams: c.open_streams(),
            counters: c.stats(),
        }
    }
}

impl Connection {
    pub(crate) fn new(shared: &Arc<Shared>, id: u64) -> Self {
        Self {
            inner: Arc::new(ConnRef::new(shared, id)),
        }
    }

    /// For a reference the caller counted already ([`ConnRef::counted`]).
    pub(crate) fn counted(shared: &Arc<Shared>, id: u64) -> Self {
        Self {
            inner: Arc::new(ConnRef::counted(shared, id)),
        }
    }

    /// The peer's address: where the connection sends now (it follows a peer that migrates,
    /// RFC 9000 §9); after the connection is gone, the last one.
    pub fn remote_address(&self) -> SocketAddr {
        let s = self.inner.shared.lock();
        if let Some(a) = s.peek(self.inner.id, |c| c.remote_address()) {
            return a;
        }
        s.conns
            .get(&self.inner.id)
            .and_then(|c| c.last_remote())
            .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The local IP address the peer sends to, and this connection's datagrams go from,
    /// when the endpoint's socket is bound to a wildcard address (`0.0.0.0`, `::`) on Linux,
    /// where the kernel reports each datagram's destination; `None` otherwise (the socket's
    /// own address is [`Endpoint::local_addr`](super::Endpoint::local_addr)) or once the
    /// connection is gone.
    pub fn local_ip(&self) -> Option<std::net::IpAddr> {
        let s = self.inner.shared.lock();
        s.peek(self.inner.id, |c| c.local_ip()).flatten()
    }

    /// Where ECN validation of the path stands (RFC 9000 §13.4.2): `Capable` once the
    /// peer's acknowledgments reported our ECT(0) marks; `None` once the connection is gone.
    pub fn ecn_state(&self) -> Option<crate::connection::EcnState> {
        let s = self.inner.shared.lock();
        s.peek(self.inner.id, |c| c.ecn_state())
    }

    /// The local address the peer sends to: the endpoint socket's address, with the IP
    /// address the peer's datagrams arrive at when the socket is bound to a wildcard
    /// address ([`Connection::local_ip`]) rather than `0.0.0.0` or `::`.
    pub fn local_address(&self) -> SocketAddr {
        let s = self.inner.shared.lock();
        let ip = s.peek(self.inner.id, |c| c.local_ip()).flatten();
        let mut local = s.local;
        if let Some(ip) = ip.filter(|_| local.ip().is_unspecified()) {
            local.set_ip(ip);
        }
        local
    }

    /// The TLS server name: the SNI the client sent (server side) or the name dialed
    /// (client side).
    pub fn server_name(&self) -> Option<String> {
        let s = self.inner.shared.lock();
        s.peek(self.inner.id, |c| c.server_name().map(str::to_owned))?
    }

    /// The negotiated application protocol (ALPN), once the handshake completed.
    pub fn alpn(&self) -> Option<Vec<u8>> {
        let s = self.inner.shared.lock();
        s.peek(self.inner.id, |c| c.alpn().map(<[u8]>::to_vec))?
    }

    /// The peer's certificate chain, leaf first, if it presented one.
    pub fn peer_certificates(&self) -> Option<Vec<rustls::pki_types::CertificateDer<'static>>> {
        let s = self.inner.shared.lock();
        s.peek(self.inner.id, |c| c.peer_certificates().map(<[_]>::to_vec))?
    }

    /// Records of send-stream handles: tests that they do not outlive the handles.
    #[cfg(test)]
    pub(crate) fn send_records(&self) -> usize {
        let s = self.inner.shared.lock();
        s.conns
            .get(&self.inner.id)
            .and_then(|c| c.waiters.as_deref())
            .map_or(0, |w| w.sends.len())
    }

    /// Whether the runtime has allocated this connection's stream waiters (tests of the
    /// idle-connection diet).
    #[cfg(test)]
    pub(crate) fn has_stream_waiters(&self) -> bool {
        let s = self.inner.shared.lock();
        s.conns
            .get(&self.inner.id)
            .is_some_and(|c| c.waiters.is_some())
    }

    /// Registers a consumer's read pace for `stream` (see `crate::h3::pace_reads`).
    #[cfg(feature = "h3")]
    pub(crate) fn register_pace(&self, stream: u64, state: Arc<super::streams::PaceState>) {
        if let Some(st) = self.inner.shared.lock().conns.get_mut(&self.inner.id) {
            st.w().paced.insert(stream, state);
        }
    }

    /// Drops a registered pace the stream's reader never picked up.
    #[cfg(feature = "h3")]
    pub(crate) fn unregister_pace(&self, stream: u64, state: &Arc<super::streams::PaceState>) {
        if let Some(st) = self.inner.shared.lock().conns.get_mut(&self.inner.id) {
            if let Some(w) = st.w_if_any() {
                if w.paced.get(&stream).is_some_and(|p| Arc::ptr_eq(p, state)) {
                    w.paced.remove(&stream);
                }
            }
        }
    }

    /// RTT, congestion window and counters. Read without waking a hibernating connection
    /// (whose congestion window is then the initial one it will wake with). Once the
    /// connection is gone (drained after its close, or its socket failed), the values it had
    /// last: the final counters.
    pub fn stats(&self) -> ConnectionStats {
        let s = self.inner.shared.lock();
        if let Some(stats) = s.peek(self.inner.id, ConnectionStats::of) {
            return stats;
        }
        s.conns
            .get(&self.inner.id)
            .and_then(|st| st.last_stats())
            .unwrap_or(ConnectionStats {
                rtt: Duration::ZERO,
                min_rtt: Duration::ZERO,
                congestion_window: 0,
                bytes_in_flight: 0,
                path_mtu: 0,
                handshake_duration: None,
                open_streams: 0,
                counters: Default::default(),
            })
    }

    /// Updates the 1-RTT keys now (RFC 9001 §6); the peer follows. Keys also update on their
    /// own after [`crate::TransportConfig::key_update_interval`] packets.
    ///
    /// # Errors
    /// [`crate::crypto::KeyUpdateError`]: before the handshake is confirmed, or while the
    /// previous update is not yet acknowledged.
    pub fn force_key_update(&self) -> Result<(), crate::crypto::KeyUpdateError> {
        let mut s = self.inner.shared.lock();
        let r = match s.proto(self.inner.id) {
            Some(c) => c.initiate_key_update(),
            None => Err(crate::crypto::KeyUpdateError::HandshakeNotConfirmed),
        };
        s.wake_driver();
        r
    }

    /// Whether the handshake has completed.
    pub fn is_handshake_complete(&self) -> bool {
        let s = self.inner.shared.lock();
        s.conns.get(&self.inner.id).is_some_and(|c| c.connected)
    }

    /// Client: whether data written now still goes out in 0-RTT packets (see
    /// [`Connecting::into_0rtt`]).
    pub fn is_0rtt(&self) -> bool {
        let s = self.inner.shared.lock();
        s.peek(self.inner.id, |c| c.is_0rtt()).unwrap_or(false)
    }

    /// The negotiated TLS cipher suite, once known.
    pub fn cipher_suite(&self) -> Option<rustls::CipherSuite> {
        let s = self.inner.shared.lock();
        s.peek(self.inner.id, |c| c.cipher_suite())?
    }

    /// The QUIC version in use: after compatible version negotiation (RFC 9368 §2.3) the one
    /// the server chose, otherwise the version of the first Initial. `None` once the
    /// connection's state is gone.
    pub fn version(&self) -> Option<crate::wire::Version> {
        let s = self.inner.shared.lock();
        s.peek(self.inner.id, |c| c.version())
    }

    /// The version of the client's first Initial (the "original version", RFC 9368 §2);
    /// differs from [`Connection::version`] when the server switched versions.
    pub fn original_version(&self) -> Option<crate::wire::Version> {
        let s = self.inner.shared.lock();
        s.peek(self.inner.id, |c| c.original_version())
    }

    /// Client: whether the server made this connection follow a Retry (RFC 9000 §8.1.2).
    pub fn retried(&self) -> bool {
        let s = self.inner.shared.lock();
        s.peek(self.inner.id, |c| c.retried()).unwrap_or(false)
    }

    /// Whether the TLS handshake resumed an earlier session; `None` until it is known.
    pub fn is_resumed(&self) -> Option<bool> {
        let s = self.inner.shared.lock();
        s.peek(self.inner.id, |c| c.is_resumed())?
    }

    /// Whether the server accepted 0-RTT; `None` until the handshake says.
    pub fn zero_rtt_accepted(&self) -> Option<bool> {
        let s = self.inner.shared.lock();
        s.peek(self.inner.id, |c| c.zero_rtt_accepted())?
    }

    /// Whether stream `id` carried data in 0-RTT packets. Server: the client sent on it in
    /// 0-RTT, which could be a replay (RFC 9001 §9.2, RFC 8470): act on it only if repeating
    /// it is harmless. Client: its data went out before the handshake completed.
    pub fn is_0rtt_stream(&self, id: crate::StreamId) -> bool {
        let s = self.inner.shared.lock();
        s.peek(self.inner.id, |c| c.is_0rtt_stream(id))
            .unwrap_or(false)
    }

    /// Smoothed round-trip time.
    pub fn rtt(&self) -> Duration {
        self.stats().rtt
    }

    /// Why the connection ended, if it did.
    pub fn close_reason(&self) -> Option<ConnectionError> {
        let s = self.inner.shared.lock();
        s.conns.get(&self.inner.id).and_then(|c| c.error().cloned())
    }

    /// Closes the connection with an application error code and reason (RFC 9000 §10.2.3).
    /// Streams fail with [`ConnectionError::LocallyClosed`]; the peer sees `code` and
    /// `reason`. Keep the endpoint alive ([`super::Endpoint::wait_idle`]) for the close to be
    /// sent.
    pub fn close(&self, code: VarInt, reason: &[u8]) {
        let mut s = self.inner.shared.lock();
        if let Some(c) = s.proto(self.inner.id) {
            c.close(Instant::now(), code, Bytes::copy_from_slice(reason));
        }
        s.dispatch();
        s.wake_driver();
    }

    /// Waits until the peer has acknowledged every byte and FIN written to our streams (or the
    /// connection ends), so a following [`Connection::close`] cuts nothing off.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn flushed(&self) {
        poll_fn(|cx| {
            let mut s = self.inner.shared.lock();
            let id = self.inner.id;
            let done = match s.proto(id) {
                Some(c) => c.is_closed() || c.all_sent_acked(),
                None => true,
            };
            if done {
                return Poll::Ready(());
            }
            if let Some(st) = s.conns.get_mut(&id) {
                register_waker(&mut st.w().flushed, cx.waker());
            }
            Poll::Pending
        })
        .await;
    }

    /// Waits until the connection ends and says why.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn closed(&self) -> ConnectionError {
        poll_fn(|cx| {
            let mut s = self.inner.shared.lock();
            let id = self.inner.id;
            match s.conns.get_mut(&id) {
                None => Poll::Ready(ConnectionError::LocallyClosed),
                Some(st) => match st.error() {
                    Some(e) => Poll::Ready(e.clone()),
                    None => {
                        register_waker(&mut st.closed, cx.waker());
                        Poll::Pending
                    }
                },
            }
        })
        .await
    }

    /// Opens a stream of `dir` and makes its handles with `make`, under one lock.
    fn poll_open<T>(
        &self,
        cx: &mut Context<'_>,
        dir: Dir,
        make: fn(&mut State, &ConnRef, u64) -> T,
    ) -> Poll<Result<T, ConnectionError>> {
        let mut s = self.inner.shared.lock();
        let id = self.inner.id;
        // One look-up for the error and the state machine.
        let handle = match s.conns.get(&id) {
            Some(st) => match st.error() {
                Some(e) => return Poll::Ready(Err(e.clone())),
                None => st.handle,
            },
            None => None,
        };
        let opened = match handle.and_then(|h| s.ep.connection_mut(h)) {
            Some(c) => c.open(dir),
            None => return Poll::Ready(Err(lost(&s, id))),
        };
        if let Some(stream) = opened {
            s.wake_driver();
            return Poll::Ready(Ok(make(&mut s, &self.inner, stream.0)));
        }
        if let Some(st) = s.conns.get_mut(&id) {
            register_waker(&mut st.w().open[usize::from(dir == Dir::Uni)], cx.waker());
        }
        Poll::Pending
    }

    /// Accepts a stream of `dir` the peer opened and makes its handles with `make`, under one
    /// lock.
    fn poll_accept<T>(
        &self,
        cx: &mut Context<'_>,
        dir: Dir,
        make: fn(&mut State, &ConnRef, u64) -> T,
    ) -> Poll<Result<T, ConnectionError>> {
        let mut s = self.inner.shared.lock();
        let id = self.inner.id;
        // A hibernating connection has no stream to accept: the wait goes on without waking it.
        let accepted = match s.proto_unless_asleep(id) {
            Some(c) => c.and_then(|c| c.accept(dir)),
            None => return Poll::Ready(Err(lost(&s, id))),
        };
        if let Some(stream) = accepted {
            return Poll::Ready(Ok(make(&mut s, &self.inner, stream.0)));
        }
        if let Some(e) = s.conns.get(&id).and_then(|c| c.error().cloned()) {
            return Poll::Ready(Err(e));
        }
        if let Some(st) = s.conns.get_mut(&id) {
            register_waker(&mut st.w().accept[usize::from(dir == Dir::Uni)], cx.waker());
        }
        Poll::Pending
    }

    /// `Ready(Ok(()))` when a stream of `dir` can be opened without waiting (the peer's limit
    /// allows it); `Pending` until it can. Opens nothing: a readiness check for
    /// `tower::Service::poll_ready`.
    ///
    /// # Errors
    /// The [`ConnectionError`] if the connection ended.
    pub fn poll_stream_available(
        &self,
        cx: &mut Context<'_>,
        dir: Dir,
    ) -> Poll<Result<(), ConnectionError>> {
        let mut s = self.inner.shared.lock();
        let id = self.inner.id;
        if let Some(e) = s.conns.get(&id).and_then(|c| c.error().cloned()) {
            return Poll::Ready(Err(e));
        }
        let available = match s.peek(id, |c| c.streams_available(dir)) {
            Some(n) => n,
            None => return Poll::Ready(Err(lost(&s, id))),
        };
        if available > 0 {
            return Poll::Ready(Ok(()));
        }
        if let Some(st) = s.conns.get_mut(&id) {
            register_waker(&mut st.w().open[usize::from(dir == Dir::Uni)], cx.waker());
        }
        Poll::Pending
    }

    /// Polls for a new bidirectional stream: `Pending` while the peer's stream limit is
    /// reached. The poll-based form of [`Connection::open_bi`].
    ///
    /// # Errors
    /// The [`ConnectionError`] if the connection ended.
    pub fn poll_open_bi(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(SendStream, RecvStream), ConnectionError>> {
        self.poll_open(cx, Dir::Bi, bi_handles)
    }

    /// Polls for a new unidirectional stream. The poll-based form of [`Connection::open_uni`].
    ///
    /// # Errors
    /// The [`ConnectionError`] if the connection ended.
    pub fn poll_open_uni(&self, cx: &mut Context<'_>) -> Poll<Result<SendStream, ConnectionError>> {
        self.poll_open(cx, Dir::Uni, SendStream::new_locked)
    }

    /// Polls for the next bidirectional stream the peer opened. The poll-based form of
    /// [`Connection::accept_bi`].
    ///
    /// # Errors
    /// The [`ConnectionError`] once the connection ended.
    pub fn poll_accept_bi(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(SendStream, RecvStream), ConnectionError>> {
        self.poll_accept(cx, Dir::Bi, bi_handles)
    }

    /// Polls for the next unidirectional stream the peer opened. The poll-based form of
    /// [`Connection::accept_uni`].
    ///
    /// # Errors
    /// The [`ConnectionError`] once the connection ended.
    pub fn poll_accept_uni(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<RecvStream, ConnectionError>> {
        self.poll_accept(cx, Dir::Uni, RecvStream::new_locked)
    }

    /// Opens a bidirectional stream, waiting while the peer's stream limit is reached.
    ///
    /// # Errors
    /// The [`ConnectionError`] if the connection ended.
    ///
    /// # Cancel safety
    /// Cancel safe: a stream is opened only when this returns it.
    pub async fn open_bi(&self) -> Result<(SendStream, RecvStream), ConnectionError> {
        poll_fn(|cx| self.poll_open(cx, Dir::Bi, bi_handles)).await
    }

    /// Opens a unidirectional stream, waiting while the peer's stream limit is reached.
    ///
    /// # Errors
    /// The [`ConnectionError`] if the connection ended.
    ///
    /// # Cancel safety
    /// Cancel safe: a stream is opened only when this returns it.
    pub async fn open_uni(&self) -> Result<SendStream, ConnectionError> {
        poll_fn(|cx| self.poll_open(cx, Dir::Uni, SendStream::new_locked)).await
    }

    /// Waits for the next bidirectional stream the peer opens.
    ///
    /// # Errors
    /// The [`ConnectionError`] once the connection ended and no opened stream is left.
    ///
    /// # Cancel safety
    /// Cancel safe: a stream is taken only when this returns it.
    pub async fn accept_bi(&self) -> Result<(SendStream, RecvStream), ConnectionError> {
        poll_fn(|cx| self.poll_accept(cx, Dir::Bi, bi_handles)).await
    }

    /// Waits for the next unidirectional stream the peer opens.
    ///
    /// # Errors
    /// The [`ConnectionError`] once the connection ended and no opened stream is left.
    ///
    /// # Cancel safety
    /// Cancel safe: a stream is taken only when this returns it.
    pub async fn accept_uni(&self) -> Result<RecvStream, ConnectionError> {
        poll_fn(|cx| self.poll_accept(cx, Dir::Uni, RecvStream::new_locked)).await
    }

    /// Queues an unreliable datagram (RFC 9221); it is sent once and never retransmitted.
    ///
    /// # Errors
    /// [`SendDatagramError`]: the peer does not accept datagrams, the datagram is larger than
    /// [`Connection::max_datagram_size`], or the connection is closed.
    pub fn send_datagram(&self, data: Bytes) -> Result<(), SendDatagramError> {
        let mut s = self.inner.shared.lock();
        let r = match s.proto(self.inner.id) {
            Some(c) => c.send_datagram(data),
            None => Err(SendDatagramError::ConnectionClosed),
        };
        s.wake_driver();
        r
    }

    /// The largest datagram [`Connection::send_datagram`] takes now; `None` if the peer does
    /// not accept datagrams.
    pub fn max_datagram_size(&self) -> Option<usize> {
        let s = self.inner.shared.lock();
        s.peek(self.inner.id, |c| c.max_datagram_size())?
    }

    /// Polls for the next received datagram. The poll-based form of
    /// [`Connection::read_datagram`].
    ///
    /// # Errors
    /// The [`ConnectionError`] once the connection ended.
    pub fn poll_read_datagram(&self, cx: &mut Context<'_>) -> Poll<Result<Bytes, ConnectionError>> {
        let mut s = self.inner.shared.lock();
        let id = self.inner.id;
        // A hibernating connection holds no datagram: the wait goes on without waking it.
        let got = match s.proto_unless_asleep(id) {
            Some(c) => c.and_then(|c| c.read_datagram()),
            None => return Poll::Ready(Err(lost(&s, id))),
        };
        if let Some(d) = got {
            return Poll::Ready(Ok(d));
        }
        match s.conns.get_mut(&id) {
            Some(st) => match st.error() {
                Some(e) => Poll::Ready(Err(e.clone())),
                None => {
                    register_waker(&mut st.w().datagrams, cx.waker());
                    Poll::Pending
                }
            },
            None => Poll::Ready(Err(ConnectionError::LocallyClosed)),
        }
    }

    /// Waits for the next datagram the peer sends.
    ///
    /// # Errors
    /// The [`ConnectionError`] once the connection ended.
    ///
    /// # Cancel safety
    /// Cancel safe: a datagram is taken only when this returns it.
    pub async fn read_datagram(&self) -> Result<Bytes, ConnectionError> {
        poll_fn(|cx| self.poll_read_datagram(cx)).await
    }

    /// A number identifying this connection within its endpoint (stable for its life).
    pub fn stable_id(&self) -> u64 {
        self.inner.id
    }
}

/// Both handles of bidirectional stream `id`, made under the lock `s` of the call that opened
/// or accepted it.
fn bi_handles(s: &mut State, conn: &ConnRef, id: u64) -> (SendStream, RecvStream) {
    // One look-up of the connection for both handles.
    if let Some(st) = s.conns.get_mut(&conn.id) {
        SendStream::record(st, id);
        RecvStream::record(st);
    }
    (
        SendStream::counted(s, conn, id),
        RecvStream::counted(s, conn, id),
    )
}
