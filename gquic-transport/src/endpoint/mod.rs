//! The sans-IO endpoint (RFC 9000 §5.2, §6, §10.3): one UDP socket's worth of connections.
//!
//! [`Endpoint`] routes each datagram to its connection by Destination Connection ID (a hash
//! map, no scan), creates server connections for acceptable client Initials, answers unknown
//! versions with Version Negotiation, sends rate-limited stateless resets for short-header
//! packets of unknown connections, and can refuse new connections. Like [`Connection`], it has
//! no I/O: the runtime (or the `testing` network) feeds it datagrams and time.

mod early;
mod id_pool;
#[cfg(all(test, any(feature = "aws-lc-rs", feature = "ring")))]
mod route_tests;
mod shard;
mod slots;
mod timers;
mod tls_jobs;
mod token;
mod transmit;

use timers::Timers;

pub use self::shard::{Tossed, MAX_SHARDS};

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rustls::crypto::tls13::HkdfExpander;
use rustls::crypto::CryptoProvider;

use crate::config::{ClientConfig, ServerConfig};
use crate::connection::{
    ConnectError, Connection, EcnCodepoint, EndpointEvent, ServerConnectionParams, Transmit,
    TransportError,
};
use crate::error::TransportErrorCode;
use crate::wire::packet::{encode_retry, encode_version_negotiation};
use crate::wire::{ConnectionId, LongType, ResetToken, Version};

/// Endpoint settings.
#[derive(Clone)]
pub struct EndpointConfig {
    provider: Arc<CryptoProvider>,
    reset_key: [u8; 32],
    cid_len: usize,
    versions: Vec<Version>,
    max_stateless_per_second: u32,
    token_key: Option<[u8; 32]>,
    retry_token_lifetime: Duration,
    new_token_lifetime: Duration,
    shard: Option<shard::Shard>,
    #[cfg(feature = "qlog")]
    qlog_dir: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for EndpointConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointConfig")
            .field("cid_len", &self.cid_len)
            .field("versions", &self.versions)
            .field("max_stateless_per_second", &self.max_stateless_per_second)
            .field("shard", &self.shard)
            .finish_non_exhaustive()
    }
}

/// A setting the endpoint cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointConfigError {
    /// Connection IDs must be 4 to 20 bytes here (RFC 9000 §17.2 allows up to 20; shorter
    /// than 4 makes collisions and guessing too easy).
    #[error("connection ID length {0} is outside 4..=20")]
    CidLength(usize),
    /// The provider has no TLS 1.3 suite to derive tokens with.
    #[error("the crypto provider has no TLS 1.3 cipher suite")]
    NoHkdf,
    /// A version this crate does not implement, or an empty list.
    #[error(
        "unsupported QUIC version list {0:?}: use a non-empty list of Version::V1 and Version::V2"
    )]
    Versions(Vec<Version>),
    /// A shard index outside the group, or a group larger than [`MAX_SHARDS`].
    #[error("shard {index} of {count}: a group has 1 to {MAX_SHARDS} shards, indexed from 0")]
    Shard {
        /// The index asked for.
        index: usize,
        /// The group size asked for.
        count: usize,
    },
}

impl EndpointConfig {
    /// Settings whose stateless-reset tokens are derived from `reset_key` with `provider`'s HKDF.
    /// Servers behind one address share the key so any of them can reset another's
    /// connections (RFC 9000 §10.3.2).
    pub fn new(provider: Arc<CryptoProvider>, reset_key: [u8; 32]) -> Self {
        Self {
            provider,
            reset_key,
            cid_len: 8,
            versions: vec![Version::V1, Version::V2],
            max_stateless_per_second: 100,
            token_key: None,
            retry_token_lifetime: Duration::from_secs(10),
            new_token_lifetime: Duration::from_secs(24 * 3600),
            shard: None,
            #[cfg(feature = "qlog")]
            qlog_dir: None,
        }
    }

    /// Writes a qlog trace of every connection into `dir` (`None`, the default: no traces):
    /// one JSON-SEQ file per connection, `<odcid>_client.sqlog` or `<odcid>_server.sqlog`
    /// (see [`crate::qlog`]). The directory must exist. The runtime endpoints
    /// ([`crate::runtime::Endpoint::server`], [`crate::runtime::Endpoint::client`]) take the
    /// `QLOGDIR` environment variable when this is not set.
    #[cfg(feature = "qlog")]
    pub fn qlog_dir(&mut self, dir: impl Into<Option<std::path::PathBuf>>) -> &mut Self {
        self.qlog_dir = dir.into();
        self
    }

    /// The directory qlog traces go to, if any.
    #[cfg(feature = "qlog")]
    pub fn qlog_dir_path(&self) -> Option<&std::path::Path> {
        self.qlog_dir.as_deref()
    }

    /// The key that seals address-validation tokens (Retry and NEW_TOKEN, RFC 9000 §8.1).
    /// Servers behind one address share it so a token from one is good at another. By
    /// default it is derived from the reset key.
    pub fn token_key(&mut self, key: [u8; 32]) -> &mut Self {
        self.token_key = Some(key);
        self
    }

    /// Makes this endpoint shard `index` of a group of `count` endpoints behind one address
    /// (SO_REUSEPORT sockets): every connection ID it issues names the shard, and a datagram
    /// for another shard's connection is handed out through [`Endpoint::poll_tossed`] instead
    /// of being answered with a stateless reset. The shards of a group must share the rest of
    /// the configuration (clone it). See [`crate::runtime::Endpoint::new_sharded`], which
    /// does all this.
    ///
    /// # Errors
    /// [`EndpointConfigError::Shard`] unless `index < count <= MAX_SHARDS`.
    pub fn shard(&mut self, index: usize, count: usize) -> Result<&mut Self, EndpointConfigError> {
        if count == 0 || count > MAX_SHARDS || index >= count {
            return Err(EndpointConfigError::Shard { index, count });
        }
        self.shard = (count > 1).then_some(shard::Shard {
            index: index as u8,
            count: count as u8,
        });
        Ok(self)
    }

    /// How long a Retry token is good for (default 10 s: the client uses it at once).
    pub fn retry_token_lifetime(&mut self, d: Duration) -> &mut Self {
        self.retry_token_lifetime = d;
        self
    }

    /// How long a NEW_TOKEN token is good for (default 24 h).
    pub fn new_token_lifetime(&mut self, d: Duration) -> &mut Self {
        self.new_token_lifetime = d;
        self
    }

    /// The crypto provider (its HKDF derives tokens; its RNG seeds the runtime's secrets).
    pub fn provider(&self) -> &Arc<CryptoProvider> {
        &self.provider
    }

    /// Length of the connection IDs this endpoint issues (default 8).
    ///
    /// # Errors
    /// [`EndpointConfigError::CidLength`] outside 4..=20.
    pub fn cid_len(&mut self, len: usize) -> Result<&mut Self, EndpointConfigError> {
        if !(4..=20).contains(&len) {
            return Err(EndpointConfigError::CidLength(len));
        }
        self.cid_len = len;
        Ok(self)
    }

    /// The QUIC versions a server accepts (default v1 and v2). A client's first Initial in
    /// another version gets a Version Negotiation packet listing these (RFC 9000 §6). A
    /// client that starts in one of them and lists another one of them earlier in its
    /// `version_information` is moved to that one during the handshake (compatible version
    /// negotiation, RFC 9368 §2.3; the client's order of preference is honoured). The
    /// server's own `version_information` lists them as its Available Versions.
    ///
    /// # Errors
    /// [`EndpointConfigError::Versions`] for an empty list or a version other than v1 and
    /// v2.
    pub fn versions(&mut self, versions: &[Version]) -> Result<&mut Self, EndpointConfigError> {
        if versions.is_empty() || versions.iter().any(|v| !v.is_supported()) {
            return Err(EndpointConfigError::Versions(versions.to_vec()));
        }
        self.versions = versions.to_vec();
        Ok(self)
    }

    /// At most this many Version Negotiation and stateless reset packets per second.
    pub fn max_stateless_per_second(&mut self, n: u32) -> &mut Self {
        self.max_stateless_per_second = n;
        self
    }

    fn expander(&self, secret: &[u8]) -> Result<Box<dyn HkdfExpander>, EndpointConfigError> {
        let suite = self
            .provider
            .cipher_suites
            .iter()
            .find_map(|s| s.tls13())
            .ok_or(EndpointConfigError::NoHkdf)?;
        Ok(suite
            .hkdf_provider
            .extract_from_secret(Some(b"gquic endpoint"), secret))
    }
}

/// How many drained connections wait for [`Endpoint::poll_drained`] before the oldest is
/// dropped.
const MAX_DRAINED: usize = 1024;
/// Tossed datagrams waiting for [`Endpoint::poll_tossed`] at most.
pub const TOSSED_QUEUE: usize = 1024;

/// Identifies a connection within its endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionHandle(pub usize);

/// The connection IDs of a client connection about to be built ([`Endpoint::client_ids`]).
#[derive(Debug, Clone, Copy)]
pub struct ClientIds {
    /// Our connection ID: the peer's packets to us carry it.
    pub local: ConnectionId,
    /// The Destination Connection ID of the first Initial, chosen at random (RFC 9000 §7.2).
    pub remote: ConnectionId,
}

/// Counters the endpoint keeps, from its creation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EndpointStats {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections refused (CONNECTION_REFUSED sent).
    pub refused: u64,
    /// Version Negotiation packets sent.
    pub version_negotiations: u64,
    /// Stateless resets sent.
    pub stateless_resets: u64,
    /// Datagrams dropped before reaching a connection.
    pub dropped: u64,
    /// Retry packets sent (RFC 9000 §8.1.2).
    pub retries: u64,
    /// Initials whose token did not validate.
    pub invalid_tokens: u64,
    /// UDP datagrams handed to the endpoint (a segment of a coalesced receive counts as one).
    pub datagrams_received: u64,
    /// Their bytes.
    pub bytes_received: u64,
    /// UDP datagrams the endpoint gave out to send (each segment of a batch counts).
    pub datagrams_sent: u64,
    /// Their bytes.
    pub bytes_sent: u64,
    /// Connections removed after closing and draining (RFC 9000 §10).
    pub drained: u64,
    /// Datagrams handed to another shard of the group ([`Endpoint::poll_tossed`]).
    pub tossed: u64,
    /// Handshake TLS steps handed out ([`Endpoint::poll_tls_job`]).
    pub tls_jobs: u64,
}

impl std::ops::AddAssign for EndpointStats {
    fn add_assign(&mut self, o: Self) {
        self.accepted += o.accepted;
        self.refused += o.refused;
        self.version_negotiations += o.version_negotiations;
        self.stateless_resets += o.stateless_resets;
        self.dropped += o.dropped;
        self.retries += o.retries;
        self.invalid_tokens += o.invalid_tokens;
        self.datagrams_received += o.datagrams_received;
        self.bytes_received += o.bytes_received;
        self.datagrams_sent += o.datagrams_sent;
        self.bytes_sent += o.bytes_sent;
        self.drained += o.drained;
        self.tossed += o.tossed;
        self.tls_jobs += o.tls_jobs;
    }
}

/// The sans-IO endpoint. See the module documentation.
pub struct Endpoint {
    config: EndpointConfig,
    server: Option<Arc<ServerConfig>>,
    connections: slots::Slots,
    free: Vec<usize>,
    by_cid: crate::fast_hash::FastMap<ConnectionId, usize>,
    /// The last route `by_cid` gave (datagrams come in runs for one connection: a GRO batch
    /// is one flow); cleared whenever a route is added or removed.
    last_route: Option<(ConnectionId, usize)>,
    /// The peers' stateless reset tokens, to recognise resets (RFC 9000 §10.3.1).
    by_reset_token: HashMap<ResetToken, usize>,
    /// 0-RTT datagrams that came before their connection's Initial.
    early: early::EarlyPackets,
    /// Server: the Destination Connection ID of the client Initial that created the
    /// connection in each slot, routed besides the connection's own IDs (RFC 9000 §7.2). The
    /// rest of what routes to a connection, its IDs and its peer's reset tokens, the
    /// connection itself lists when it drains: no list of them per connection here.
    initial_route: Vec<Option<ConnectionId>>,
    incoming: VecDeque<ConnectionHandle>,
    /// Connections removed after draining, with their last events, for the driver.
    drained: VecDeque<(ConnectionHandle, Box<Connection>)>,
    /// Stateless answers: to whom, from which local address (that of the datagram answered,
    /// if known), what.
    responses: VecDeque<(SocketAddr, Option<IpAddr>, Vec<u8>)>,
    cid_expander: Box<dyn HkdfExpander>,
    /// Unpredictable bytes for new connection IDs, from `cid_expander`.
    id_pool: id_pool::IdPool,
    reset_expander: Box<dyn HkdfExpander>,
    token_expander: Box<dyn HkdfExpander>,
    /// The key of the shard mask in connection IDs ([`shard`]).
    shard_key: u64,
    /// Datagrams for another shard's connections, for the driver to hand on.
    tossed: VecDeque<Tossed>,
    /// An instant and the Unix time in ms at it: tokens carry wall-clock times so that other
    /// servers (and restarts) can check them.
    clock: Option<(Instant, u64)>,
    cid_counter: u64,
    refuse: bool,
    /// Whether connections hand their handshake TLS steps out ([`Endpoint::poll_tls_job`]).
    tls_offload: bool,
    /// Connections with a TLS step to hand out.
    tls_ready: VecDeque<usize>,
    stateless_tokens: f64,
    stateless_refill: Option<Instant>,
    /// A connection's datagram that did not fit the last batch, in `held_buf`, with the
    /// connection's index.
    held: Option<(Transmit, usize)>,
    held_buf: Vec<u8>,
    /// The connections' deadlines, sorted: the earliest costs no scan of every connection.
    timers: std::cell::RefCell<Timers>,
    /// Connections that may have something to send (touched since they last had nothing),
    /// in round-robin order: sending never scans every connection.
    send_ready: VecDeque<usize>,
    in_send_ready: Vec<bool>,
    /// Connections touched since [`Endpoint::poll_touched`] last returned them: the only
    /// ones that can have new application events.
    touched: VecDeque<usize>,
    in_touched: Vec<bool>,
    stats: EndpointStats,
    /// The latest time the endpoint was given: a connection woken by an application call
    /// (which brings no time) counts its quiet second from here.
    latest: Option<Instant>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("connections", &self.connection_count())
            .field("server", &self.server.is_some())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// The version-independent fields of a datagram's first packet (RFC 8999 §5).
struct Peek<'a> {
    long: bool,
    version: Option<Version>,
    long_type_bits: u8,
    dst_cid: &'a [u8],
    src_cid: &'a [u8],
}

/// The token of a long-header Initial packet (RFC 9000 §17.2.2), unauthenticated.
fn initial_token(data: &[u8]) -> Option<&[u8]> {
    let dlen = usize::from(*data.get(5)?);
    let slen = usize::from(*data.get(6 + dlen)?);
    let mut at = 7 + dlen + slen;
    let first = *data.get(at)?;
    let len_bytes = 1usize << (first >> 6);
    let mut len = u64::from(first & 0x3f);
    for i in 1..len_bytes {
        len = (len << 8) | u64::from(*data.get(at + i)?);
    }
    at += len_bytes;
    data.get(at..at.checked_add(usize::try_from(len).ok()?)?)
}

fn peek(data: &[u8], cid_len: usize) -> Option<Peek<'_>> {
    let first = *data.first()?;
    if first & 0x80 == 0 {
        return Some(Peek {
            long: false,
            version: None,
            long_type_bits: 0,
            dst_cid: data.get(1..1 + cid_len)?,
            src_cid: &[],
        });
    }
    let version = Version(u32::from_be_bytes(data.get(1..5)?.try_into().ok()?));
    let dlen = *data.get(5)? as usize;
    let dst_cid = data.get(6..6 + dlen)?;
    let slen = *data.get(6 + dlen)? as usize;
    let src_cid = data.get(7 + dlen..7 + dlen + slen)?;
    Some(Peek {
        long: true,
        version: Some(version),
        long_type_bits: (first >> 4) & 0x03,
        dst_cid,
        src_cid,
    })
}

impl Endpoint {
    /// An endpoint; with `server` it accepts connections. `secret` seeds connection-ID
    /// generation (the runtime passes random bytes; tests pass fixed ones for replay).
    ///
    /// # Errors
    /// [`EndpointConfigError::NoHkdf`] if the provider cannot derive keys.
    pub fn new(
        config: EndpointConfig,
        server: Option<Arc<ServerConfig>>,
        secret: [u8; 32],
    ) -> Result<Self, EndpointConfigError> {
        let cid_expander = config.expander(&secret)?;
        let reset_expander = config.expander(&config.reset_key)?;
        let token_secret = match config.token_key {
            Some(k) => k,
            None => {
                let mut k = [0u8; 32];
                let _ = reset_expander.expand_slice(&[b"token key"], &mut k);
                k
            }
        };
        let token_expander = config.expander(&token_secret)?;
        let mut shard_key = [0u8; 8];
        let _ = reset_expander.expand_slice(&[b"shard key"], &mut shard_key);
        Ok(Self {
            stateless_tokens: f64::from(config.max_stateless_per_second),
            config,
            server,
            connections: slots::Slots::default(),
            free: Vec::new(),
            by_cid: crate::fast_hash::FastMap::default(),
            last_route: None,
            by_reset_token: HashMap::new(),
            early: early::EarlyPackets::default(),
            initial_route: Vec::new(),
            incoming: VecDeque::new(),
            drained: VecDeque::new(),
            responses: VecDeque::new(),
            cid_expander,
            id_pool: id_pool::IdPool::default(),
            reset_expander,
            token_expander,
            shard_key: u64::from_le_bytes(shard_key),
            tossed: VecDeque::new(),
            clock: None,
            cid_counter: 0,
            refuse: false,
            tls_offload: false,
            tls_ready: VecDeque::new(),
            stateless_refill: None,
            held: None,
            held_buf: Vec::new(),
            timers: std::cell::RefCell::default(),
            send_ready: VecDeque::new(),
            in_send_ready: Vec::new(),
            touched: VecDeque::new(),
            in_touched: Vec::new(),
            stats: EndpointStats::default(),
            latest: None,
        })
    }

    /// The server configuration, if the endpoint accepts connections.
    pub fn server_config(&self) -> Option<&Arc<ServerConfig>> {
        self.server.as_ref()
    }

    /// Replaces (or removes) the server configuration.
    pub fn set_server_config(&mut self, server: Option<Arc<ServerConfig>>) {
        self.server = server;
    }

    /// Anchors token times: at `now` the Unix time is `unix_ms` (the runtime passes the system
    /// clock; without it tokens count from the endpoint's first datagram, which is enough
    /// within one process).
    pub fn set_unix_time(&mut self, now: Instant, unix_ms: u64) {
        self.clock = Some((now, unix_ms));
    }

    fn unix_ms(&mut self, now: Instant) -> u64 {
        let (at, unix) = *self.clock.get_or_insert((now, 0));
        unix + now.saturating_duration_since(at).as_millis() as u64
    }

    /// While `true`, new connections are answered with CONNECTION_REFUSED (RFC 9000 §20.1).
    pub fn refuse_new_connections(&mut self, refuse: bool) {
        self.refuse = refuse;
    }

    /// Sizes of the routing tables: connection IDs routed, peer reset tokens watched, and
    /// Initial IDs routed besides (tests of what a peer can make them hold).
    #[cfg(any(test, feature = "testing"))]
    pub fn routing_sizes(&self) -> [usize; 3] {
        [
            self.by_cid.len(),
            self.by_reset_token.len(),
            self.initial_route.iter().flatten().count(),
        ]
    }

    /// Counters.
    pub fn stats(&self) -> EndpointStats {
        self.stats
    }

    /// Live connections.
    pub fn connection_count(&self) -> usize {
        self.connections.len() - self.free.len()
    }

    /// Connections hibernating: idle, their state packed until something wakes them
    /// ([`crate::config::TransportConfig::hibernate`]).
    pub fn hibernating_count(&self) -> usize {
        self.connections.asleep()
    }

    /// Whether the connection hibernates. A hibernating connection has nothing queued for the
    /// application (no stream to accept or read, no datagram, no event), so a wait for one can
    /// stay pending without waking it.
    pub fn is_hibernating(&self, h: ConnectionHandle) -> bool {
        self.connections.is_asleep(h.0)
    }

    /// A connection by handle, if it is awake: `None` once drained and removed, or while it
    /// hibernates ([`Endpoint::connection_mut`] wakes it; [`Endpoint::connection_stats`]
    /// reads its counters either way).
    pub fn connection(&self, h: ConnectionHandle) -> Option<&Connection> {
        self.connections.awake(h.0)
    }

    /// A connection's counters, without waking it if it hibernates.
    pub fn connection_stats(
        &self,
        h: ConnectionHandle,
    ) -> Option<crate::connection::ConnectionStats> {
        self.connections.stats(h.0)
    }

    /// `f` applied to a connection, without waking it if it hibernates: it then reads a copy
    /// unpacked for the call (whose congestion window is the initial one it will wake with).
    /// For statistics and the like; what changes a connection goes through
    /// [`Endpoint::connection_mut`].
    pub fn inspect_connection<R>(
        &self,
        h: ConnectionHandle,
        f: impl FnOnce(&Connection) -> R,
    ) -> Option<R> {
        self.connections.inspect(h.0, f)
    }

    /// A connection by handle, mutable; wakes it if it hibernates.
    #[inline]
    pub fn connection_mut(&mut self, h: ConnectionHandle) -> Option<&mut Connection> {
        let idx = h.0;
        // Already marked for all three since the driver last looked (the common case: many
        // calls on one connection between two turns of the driver), and awake.
        let marked = |flags: &[bool]| flags.get(idx).copied().unwrap_or(false);
        if marked(&self.in_touched)
            && marked(&self.in_send_ready)
            && self.timers.get_mut().is_dirty(idx)
            && !self.connections.is_asleep(idx)
        {
            return self.connections.awake_mut(idx);
        }
        self.connection_mut_marking(idx)
    }

    /// [`Endpoint::connection_mut`] for a connection not marked yet, or asleep: kept out of
    /// line, so that the common case saves and restores few registers.
    #[inline(never)]
    fn connection_mut_marking(&mut self, idx: usize) -> Option<&mut Connection> {
        self.conn_mut(idx, None)?;
        // Whatever the caller does may move the connection's deadline or give it something
        // to send.
        self.timers.get_mut().touch(idx);
        self.mark_send_ready(idx);
        self.connections.awake_mut(idx)
    }

    /// The connection in slot `idx`, woken if it hibernates (at `now`, or else the latest time
    /// the endpoint knows).
    #[inline]
    fn conn_mut(&mut self, idx: usize, now: Option<Instant>) -> Option<&mut Connection> {
        if let Some(now) = now {
            self.latest = Some(self.latest.map_or(now, |l| l.max(now)));
        }
        match self.connections.wake(idx, self.latest) {
            slots::Wake::Awake => {}
            slots::Wake::Free => return None,
            #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
            slots::Wake::Lost => {
                tracing::error!(idx, "a hibernated connection did not unpack; dropped");
                self.forget(idx);
                return None;
            }
        }
        self.connections.awake_mut(idx)
    }

    /// Drops every route to slot `idx`, whose connection is gone without draining.
    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    fn forget(&mut self, idx: usize) {
        self.by_cid.retain(|_, i| *i != idx);
        self.last_route = None;
        self.by_reset_token.retain(|_, i| *i != idx);
        if let Some(r) = self.initial_route.get_mut(idx) {
            *r = None;
        }
        self.timers.get_mut().touch(idx);
        self.free.push(idx);
    }

    /// The endpoint's socket moved to a new local address (`ip_changed`: not just a new
    /// port). Every connection is told ([`Connection::local_address_changed`]): client
    /// connections migrate to the new path (RFC 9000 §9.2, §9.5).
    pub fn local_address_changed(&mut self, now: Instant, ip_changed: bool) {
        for idx in 0..self.connections.len() {
            if let Some(conn) = self.conn_mut(idx, Some(now)) {
                conn.local_address_changed(now, ip_changed);
                self.timers.get_mut().touch(idx);
                self.mark_send_ready(idx);
            }
        }
    }

    /// The next connection a peer opened.
    pub fn accept(&mut self) -> Option<ConnectionHandle> {
        self.incoming.pop_front()
    }

    /// Takes a connection that finished draining and was removed from the endpoint, so a
    /// driver can read its last events (the reason it closed) before dropping it. Its handle
    /// may be reused by the next new connection: call this after every call that can drain a
    /// connection ([`Endpoint::handle_datagram`], [`Endpoint::handle_timeout`],
    /// [`Endpoint::poll_transmit`]). Unclaimed ones beyond a bound are dropped, oldest first.
    pub fn poll_drained(&mut self) -> Option<(ConnectionHandle, Connection)> {
        self.drained.pop_front().map(|(h, c)| (h, *c))
    }

    fn new_cid(&mut self) -> ConnectionId {
        loop {
            self.cid_counter += 1;
            let mut bytes = [0u8; ConnectionId::MAX_LEN];
            let out = &mut bytes[..self.config.cid_len];
            // Unpredictable and unlinkable IDs (RFC 9000 §5.1), replayable from the seed.
            self.id_pool.take(self.cid_expander.as_ref(), out);
            if let Some(sh) = self.config.shard {
                shard::encode(out, sh.index, self.shard_key);
            }
            let cid = ConnectionId::new(out);
            if !self.by_cid.contains_key(&cid) {
                return cid;
            }
        }
    }

    /// The stateless reset token for `cid` (RFC 9000 §10.3.2: a keyed function of the ID).
    pub fn reset_token(&self, cid: &ConnectionId) -> ResetToken {
        let mut token = [0u8; 16];
        let _ = self
            .reset_expander
            .expand_slice(&[b"reset", cid], &mut token);
        ResetToken(token)
    }

    fn insert(&mut self, conn: Connection) -> usize {
        let cid = conn.local_cid();
        let idx = self.connections.put(self.free.pop(), Box::new(conn));
        self.route(cid, idx);
        self.timers.get_mut().touch(idx);
        self.mark_send_ready(idx);
        idx
    }

    /// Puts a connection in the queue of those that may have application events.
    #[inline]
    fn mark_touched(&mut self, idx: usize) {
        if idx >= self.in_touched.len() {
            self.in_touched.resize(idx + 1, false);
        }
        if !self.in_touched[idx] {
            self.in_touched[idx] = true;
            self.touched.push_back(idx);
        }
    }

    /// The next connection that may have application events ([`Connection::poll_event`])
    /// since it was last returned: input, timers, sending and application calls mark it. A
    /// driver drains the events of these instead of visiting every connection.
    pub fn poll_touched(&mut self) -> Option<ConnectionHandle> {
        let idx = self.touched.pop_front()?;
        self.in_touched[idx] = false;
        Some(ConnectionHandle(idx))
    }

    /// The next application event of a connection, without marking it touched (what
    /// [`Endpoint::connection_mut`] does).
    pub fn poll_connection_event(
        &mut self,
        h: ConnectionHandle,
    ) -> Option<crate::connection::Event> {
        // A hibernating connection has no events.
        self.connections.awake_mut(h.0)?.poll_event()
    }

    /// Puts a connection in the queue of those that may have something to send (and marks
    /// it touched).
    #[inline]
    fn mark_send_ready(&mut self, idx: usize) {
        self.mark_touched(idx);
        if idx >= self.in_send_ready.len() {
            self.in_send_ready.resize(idx + 1, false);
        }
        if !self.in_send_ready[idx] {
            self.in_send_ready[idx] = true;
            self.send_ready.push_back(idx);
        }
    }

    fn route(&mut self, cid: ConnectionId, idx: usize) {
        self.by_cid.insert(cid, idx);
        self.last_route = None;
    }

    /// The slot of the connection `cid` routes to.
    fn routed(&mut self, cid: &ConnectionId) -> Option<usize> {
        if let Some((last, idx)) = &self.last_route {
            if last == cid {
                return Some(*idx);
            }
        }
        let idx = *self.by_cid.get(cid)?;
        self.last_route = Some((*cid, idx));
        Some(idx)
    }

    /// Removes the route of `cid` if it leads to the connection in slot `idx`.
    fn unroute(&mut self, cid: &ConnectionId, idx: usize) {
        if self.by_cid.get(cid) == Some(&idx) {
            self.by_cid.remove(cid);
            self.last_route = None;
        }
    }

    /// Stops watching `token` if it is the one of the connection in slot `idx`.
    fn unwatch(&mut self, token: &ResetToken, idx: usize) {
        if self.by_reset_token.get(token) == Some(&idx) {
            self.by_reset_token.remove(token);
        }
    }

    /// Starts the qlog trace of a new connection, when traces are on. A file that cannot be
    /// created costs the trace, not the connection.
    #[cfg(feature = "qlog")]
    fn attach_qlog(&self, conn: &mut Connection, now: Instant) {
        let Some(dir) = &self.config.qlog_dir else {
            return;
        };
        match crate::qlog::open_file(dir, conn.side(), conn.original_dst_cid()) {
            Ok(file) => conn.start_qlog(
                crate::qlog::QlogStream::new(file, now, conn.side(), conn.original_dst_cid()),
                now,
            ),
            Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "cannot create a qlog file"),
        }
    }

    /// A new server connection's trace stays in memory until its first datagram
    /// authenticates ([`Endpoint::file_qlog`]): forged Initials create no files.
    #[cfg(feature = "qlog")]
    fn attach_buffered_qlog(&self, conn: &mut Connection, now: Instant) {
        if self.config.qlog_dir.is_some() {
            let stream =
                crate::qlog::QlogStream::buffered(now, conn.side(), conn.original_dst_cid());
            conn.start_qlog(stream, now);
        }
    }

    /// Moves an accepted connection's buffered trace to its file.
    #[cfg(feature = "qlog")]
    fn file_qlog(&self, conn: &mut Connection) {
        let Some(dir) = &self.config.qlog_dir else {
            return;
        };
        if !conn.qlog.enabled() {
            return;
        }
        match crate::qlog::open_file(dir, conn.side(), conn.original_dst_cid()) {
            Ok(file) => {
                if let Some(stream) = conn.qlog.on() {
                    stream.redirect(file);
                }
            }
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot create a qlog file");
                conn.qlog = crate::qlog::Qlog::default();
            }
        }
    }

    /// Starts a client connection: [`Endpoint::client_ids`], [`Connection::connect`] and
    /// [`Endpoint::adopt_client`] in one call.
    ///
    /// # Errors
    /// [`ConnectError`] as from [`Connection::connect`].
    pub fn connect(
        &mut self,
        now: Instant,
        config: &ClientConfig,
        remote: SocketAddr,
        server_name: &str,
    ) -> Result<ConnectionHandle, ConnectError> {
        let ids = self.client_ids();
        let conn = Connection::connect(config, now, remote, server_name, ids.local, ids.remote)?;
        self.adopt_client(now, conn)
    }

    /// The connection IDs for a new client connection: ours, and the unpredictable
    /// Destination Connection ID of its first Initial (RFC 9000 §7.2).
    ///
    /// Building the connection ([`Connection::connect`]: the TLS key shares and the
    /// ClientHello, most of a client's handshake work before the server answers) needs nothing
    /// else from the endpoint, so a caller that shares the endpoint between threads can do it
    /// without holding the endpoint, then hand it over with [`Endpoint::adopt_client`].
    pub fn client_ids(&mut self) -> ClientIds {
        let local = self.new_cid();
        // RFC 9000 §7.2: unpredictable, at least 8 bytes.
        let mut dcid = [0u8; 16];
        self.cid_counter += 1;
        self.id_pool.take(self.cid_expander.as_ref(), &mut dcid);
        ClientIds {
            local,
            remote: ConnectionId::new(&dcid),
        }
    }

    /// Takes over a client connection built with IDs from [`Endpoint::client_ids`].
    ///
    /// # Errors
    /// [`ConnectError::ConnectionIdTaken`] if the connection's ID was given to another
    /// connection in the meantime (IDs from [`Endpoint::client_ids`] never are: they are
    /// drawn from a counter this endpoint alone moves).
    pub fn adopt_client(
        &mut self,
        now: Instant,
        mut conn: Connection,
    ) -> Result<ConnectionHandle, ConnectError> {
        if self.by_cid.contains_key(&conn.local_cid()) {
            return Err(ConnectError::ConnectionIdTaken);
        }
        conn.set_tls_offload(self.tls_offload);
        #[cfg(feature = "qlog")]
        self.attach_qlog(&mut conn, now);
        #[cfg(not(feature = "qlog"))]
        let _ = now;
        let idx = self.insert(conn);
        Ok(ConnectionHandle(idx))
    }

    /// Handles a datagram from `remote`; returns the connection it went to, if any.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        data: BytesMut,
    ) -> Option<ConnectionHandle> {
        self.handle_datagram_ecn(now, remote, None, data)
    }

    /// [`Endpoint::handle_datagram`] with the ECN codepoint from the datagram's IP header
    /// (RFC 9000 §13.4).
    pub fn handle_datagram_ecn(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        ecn: Option<EcnCodepoint>,
        data: BytesMut,
    ) -> Option<ConnectionHandle> {
        self.handle_inner(now, remote, None, ecn, data, true)
    }

    /// [`Endpoint::handle_datagram_ecn`] with the local IP address the datagram was sent to
    /// (`IP_PKTINFO` / `IPV6_PKTINFO` on a socket bound to a wildcard address): its
    /// connection's datagrams, and any stateless answer to it, go from that address
    /// ([`Transmit::source`]), so a host with several addresses answers from the one its
    /// peer chose.
    pub fn handle_datagram_at(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        local_ip: Option<IpAddr>,
        ecn: Option<EcnCodepoint>,
        data: BytesMut,
    ) -> Option<ConnectionHandle> {
        self.handle_inner(now, remote, local_ip, ecn, data, true)
    }

    /// Handles a datagram another shard of the group tossed to this one
    /// ([`Endpoint::poll_tossed`]): like [`Endpoint::handle_datagram_ecn`], except that it is
    /// never tossed again (an ID no shard knows gets a stateless reset from this one).
    pub fn handle_tossed(&mut self, now: Instant, tossed: Tossed) -> Option<ConnectionHandle> {
        self.handle_inner(
            now,
            tossed.remote,
            tossed.local_ip,
            tossed.ecn,
            tossed.data,
            false,
        )
    }

    /// The next datagram that arrived here but belongs to a connection of another shard
    /// ([`EndpointConfig::shard`]): the driver hands it to that shard's
    /// [`Endpoint::handle_tossed`]. Call after [`Endpoint::handle_datagram_ecn`]; at most
    /// [`TOSSED_QUEUE`] wait, the oldest are dropped beyond.
    pub fn poll_tossed(&mut self) -> Option<Tossed> {
        self.tossed.pop_front()
    }

    /// The shard that owns `dst_cid`, if it is another shard of this one's group.
    fn other_shard(&self, dst_cid: &[u8]) -> Option<u8> {
        let sh = self.config.shard?;
        shard::decode(dst_cid, self.config.cid_len, sh.count, self.shard_key)
            .filter(|&t| t != sh.index)
    }

    /// Queues a datagram for the shard that owns its connection.
    fn toss(
        &mut self,
        shard: u8,
        remote: SocketAddr,
        local_ip: Option<IpAddr>,
        ecn: Option<EcnCodepoint>,
        data: BytesMut,
    ) {
        if self.tossed.len() >= TOSSED_QUEUE {
            self.tossed.pop_front();
            self.stats.dropped += 1;
        }
        self.stats.tossed += 1;
        tracing::trace!(shard, %remote, "datagram for another shard");
        self.tossed.push_back(Tossed {
            shard: usize::from(shard),
            remote,
            local_ip,
            ecn,
            data,
        });
    }

    fn handle_inner(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        local_ip: Option<IpAddr>,
        ecn: Option<EcnCodepoint>,
        data: BytesMut,
        may_toss: bool,
    ) -> Option<ConnectionHandle> {
        self.stats.datagrams_received += 1;
        self.stats.bytes_received += data.len() as u64;
        let Some(p) = peek(&data, self.config.cid_len) else {
            self.stats.dropped += 1;
            return None;
        };
        let dst = ConnectionId::try_from_slice(p.dst_cid);
        if let Some(idx) = dst.as_ref().and_then(|c| self.routed(c)) {
            if let Some(conn) = self.conn_mut(idx, Some(now)) {
                conn.handle_datagram_at(now, remote, local_ip, ecn, data);
                self.mark_send_ready(idx);
                self.process_events(idx);
                return Some(ConnectionHandle(idx));
            }
        }
        if !p.long {
            // A stateless reset for one of our connections looks like an unroutable short
            // packet ending in the peer's token (RFC 9000 §10.3.1).
            if let Some(at) = data.len().checked_sub(ResetToken::LEN) {
                let mut tail = [0u8; ResetToken::LEN];
                tail.copy_from_slice(&data[at..]);
                if let Some(&idx) = self.by_reset_token.get(&ResetToken(tail)) {
                    if let Some(conn) = self.conn_mut(idx, Some(now)) {
                        conn.handle_datagram_at(now, remote, local_ip, ecn, data);
                        self.mark_send_ready(idx);
                        self.process_events(idx);
                        return Some(ConnectionHandle(idx));
                    }
                }
            }
            if let Some(shard) = self.other_shard(p.dst_cid).filter(|_| may_toss) {
                self.toss(shard, remote, local_ip, ecn, data);
                return None;
            }
            self.stateless_reset(now, remote, local_ip, &data, p.dst_cid);
            return None;
        }
        let version = p.version.unwrap_or(Version::NEGOTIATION);
        if version == Version::NEGOTIATION {
            self.stats.dropped += 1;
            return None;
        }
        if !self.config.versions.contains(&version) {
            // RFC 9000 §6.1: answer with Version Negotiation, only for datagrams that could
            // carry a first Initial (at least 1200 bytes, §14.1).
            if data.len() >= 1200 && self.take_stateless_token(now) {
                let mut buf = Vec::with_capacity(64);
                let random = (self.cid_counter as u8) & 0x7f;
                if encode_version_negotiation(
                    &mut buf,
                    random,
                    p.dst_cid,
                    p.src_cid,
                    &self.config.versions,
                )
                .is_ok()
                {
                    self.stats.version_negotiations += 1;
                    self.responses.push_back((remote, local_ip, buf));
                }
            } else {
                self.stats.dropped += 1;
            }
            return None;
        }
        // A new connection: only from an Initial in a full-size datagram (RFC 9000 §14.1)
        // with a Destination Connection ID of at least 8 bytes (§7.2).
        let long_type = LongType::from_bits(version, p.long_type_bits);
        let is_initial = long_type == LongType::Initial;
        // Handshake packets carry an ID this group issued; Initial and 0-RTT ones may carry
        // the client's own choice, and stay where they land.
        if long_type == LongType::Handshake && may_toss {
            if let Some(shard) = self.other_shard(p.dst_cid) {
                self.toss(shard, remote, local_ip, ecn, data);
                return None;
            }
        }
        let (Some(server), Some(dst), Some(src)) = (
            self.server.clone(),
            dst,
            ConnectionId::try_from_slice(p.src_cid),
        ) else {
            self.stats.dropped += 1;
            return None;
        };
        if long_type == LongType::ZeroRtt && dst.len() >= 8 {
            // Ahead of its Initial (reordered): held a while (RFC 9001 §4.7).
            if !self.early.hold(now, dst, remote, ecn, data) {
                self.stats.dropped += 1;
            }
            return None;
        }
        if !is_initial || data.len() < 1200 || dst.len() < 8 {
            self.stats.dropped += 1;
            return None;
        }
        // Address validation (RFC 9000 §8.1): a token from a Retry or a NEW_TOKEN frame, or a
        // Retry if the policy wants one and there is no valid token.
        let now_ms = self.unix_ms(now);
        let checked = match initial_token(&data) {
            Some(t) if !t.is_empty() => Some(token::validate(
                self.token_expander.as_ref(),
                version,
                t,
                remote,
                now_ms,
                self.config.retry_token_lifetime.as_millis() as u64,
                self.config.new_token_lifetime.as_millis() as u64,
            )),
            _ => None,
        };
        let (original_dst_cid, retry_src_cid, validated) = match checked {
            Some(Ok(token::Validated::Retry {
                original_dst_cid,
                retry_src_cid,
            })) if retry_src_cid == dst => (original_dst_cid, Some(retry_src_cid), true),
            Some(Ok(token::Validated::NewToken)) => (dst, None, true),
            Some(Ok(token::Validated::Retry { .. }) | Err(token::Invalid::Retry)) => {
                // RFC 9000 §8.1.3: a Retry token that is ours but wrong closes with
                // INVALID_TOKEN.
                self.stats.invalid_tokens += 1;
                self.reject(
                    now,
                    &server,
                    (remote, local_ip),
                    dst,
                    src,
                    version,
                    TransportErrorCode::INVALID_TOKEN,
                );
                return None;
            }
            Some(Err(_)) => {
                self.stats.invalid_tokens += 1;
                (dst, None, false)
            }
            None => (dst, None, false),
        };
        let wants_retry = match server.retry {
            crate::config::RetryPolicy::Never => false,
            crate::config::RetryPolicy::Always => true,
            crate::config::RetryPolicy::UnderLoad(n) => self.connection_count() >= n,
        };
        if wants_retry && !validated {
            self.send_retry(now_ms, (remote, local_ip), version, dst, src);
            return None;
        }
        let local_cid = self.new_cid();
        // A NEW_TOKEN token for the version of the connection (RFC 9369 §5), and one for each
        // version compatible version negotiation may move it to.
        let new_tokens = self
            .config
            .versions
            .iter()
            .filter(|v| **v != version)
            .map(|v| {
                let t = token::mint_new_token(self.token_expander.as_ref(), *v, now_ms, remote);
                (*v, bytes::Bytes::from(t))
            })
            .collect::<Vec<_>>();
        let new_token = Some(bytes::Bytes::from(token::mint_new_token(
            self.token_expander.as_ref(),
            version,
            now_ms,
            remote,
        )));
        let params = ServerConnectionParams {
            remote,
            local_cid,
            original_dst_cid,
            client_cid: src,
            version,
            reset_token: self.reset_token(&local_cid),
            retry_src_cid,
            address_validated: validated,
            new_token,
            supported_versions: self.config.versions.clone(),
            new_tokens_for_other_versions: new_tokens,
        };
        let mut conn = match Connection::accept_incoming(&server, now, params) {
            Ok(c) => c,
            Err(_) => {
                self.stats.dropped += 1;
                return None;
            }
        };
        if self.refuse {
            // RFC 9000 §20.1: CONNECTION_REFUSED, sent in an Initial packet.
            Self::close_unborn(
                &mut conn,
                now,
                (remote, local_ip),
                TransportErrorCode::CONNECTION_REFUSED,
                &mut self.responses,
            );
            self.stats.refused += 1;
            return None;
        }
        #[cfg(feature = "qlog")]
        self.attach_buffered_qlog(&mut conn, now);
        conn.set_tls_offload(self.tls_offload);
        conn.handle_datagram_at(now, remote, local_ip, ecn, data);
        if conn.stats().packets_received == 0 {
            // Nothing in the datagram authenticated: its header (the client's connection ID
            // above all) cannot be trusted, and keeping the state would let one corrupted or
            // forged Initial take the connection ID the real client's Initials are routed by.
            self.stats.dropped += 1;
            return None;
        }
        #[cfg(feature = "qlog")]
        self.file_qlog(&mut conn);
        let idx = self.insert(conn);
        // Retransmitted client Initials still carry the original DCID until the client adopts
        // ours (RFC 9000 §7.2).
        self.route(dst, idx);
        if idx >= self.initial_route.len() {
            self.initial_route.resize(idx + 1, None);
        }
        self.initial_route[idx] = Some(dst);
        self.stats.accepted += 1;
        // 0-RTT datagrams that overtook this Initial.
        for (ecn, early) in self.early.take(now, &dst, remote) {
            if let Some(conn) = self.connections.awake_mut(idx) {
                conn.handle_datagram_ecn(now, remote, ecn, early);
            }
        }
        self.incoming.push_back(ConnectionHandle(idx));
        self.process_events(idx);
        Some(ConnectionHandle(idx))
    }

    /// Closes a connection that never got state, with `code` in an Initial packet.
    fn close_unborn(
        conn: &mut Connection,
        now: Instant,
        (remote, local_ip): (SocketAddr, Option<IpAddr>),
        code: TransportErrorCode,
        responses: &mut VecDeque<(SocketAddr, Option<IpAddr>, Vec<u8>)>,
    ) {
        let reason = if code == TransportErrorCode::INVALID_TOKEN {
            "invalid address-validation token"
        } else {
            "not accepting connections"
        };
        conn.close_with_error(now, TransportError::new(code, reason));
        let mut buf = Vec::new();
        if let Some(t) = conn.poll_transmit(now, &mut buf) {
            buf.truncate(t.size);
            responses.push_back((remote, local_ip, buf));
        }
    }

    /// Answers an Initial whose token is ours but invalid with `code` (RFC 9000 §8.1.3).
    #[allow(clippy::too_many_arguments)]
    fn reject(
        &mut self,
        now: Instant,
        server: &Arc<ServerConfig>,
        (remote, local_ip): (SocketAddr, Option<IpAddr>),
        dst: ConnectionId,
        src: ConnectionId,
        version: Version,
        code: TransportErrorCode,
    ) {
        let local_cid = self.new_cid();
        let params = ServerConnectionParams {
            remote,
            local_cid,
            original_dst_cid: dst,
            client_cid: src,
            version,
            reset_token: self.reset_token(&local_cid),
            retry_src_cid: None,
            address_validated: false,
            new_token: None,
            supported_versions: self.config.versions.clone(),
            new_tokens_for_other_versions: Vec::new(),
        };
        if let Ok(mut conn) = Connection::accept_incoming(server, now, params) {
            Self::close_unborn(
                &mut conn,
                now,
                (remote, local_ip),
                code,
                &mut self.responses,
            );
        }
    }

    /// RFC 9000 §8.1.2, §17.2.5: a Retry with a token binding the client's address and its
    /// original Destination Connection ID; no state is kept.
    fn send_retry(
        &mut self,
        now_ms: u64,
        (remote, local_ip): (SocketAddr, Option<IpAddr>),
        version: Version,
        original_dst_cid: ConnectionId,
        client_cid: ConnectionId,
    ) {
        let retry_src_cid = self.new_cid();
        let token = token::mint_retry(
            self.token_expander.as_ref(),
            version,
            now_ms,
            remote,
            &original_dst_cid,
            &retry_src_cid,
        );
        let mut buf = Vec::with_capacity(128);
        let unused = (self.cid_counter as u8) & 0x0f;
        if encode_retry(
            &mut buf,
            version,
            &client_cid,
            &retry_src_cid,
            &token,
            unused,
        )
        .is_err()
        {
            return;
        }
        #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
        {
            let Some(tag) = crate::crypto::retry::retry_tag(version, &original_dst_cid, &buf)
            else {
                return;
            };
            buf.extend_from_slice(&tag);
            self.stats.retries += 1;
            self.responses.push_back((remote, local_ip, buf));
        }
        #[cfg(not(any(feature = "aws-lc-rs", feature = "ring")))]
        let _ = (buf, local_ip);
    }

    fn take_stateless_token(&mut self, now: Instant) -> bool {
        let rate = f64::from(self.config.max_stateless_per_second);
        if let Some(last) = self.stateless_refill {
            let refill = now.saturating_duration_since(last).as_secs_f64() * rate;
            self.stateless_tokens = (self.stateless_tokens + refill).min(rate);
        }
        self.stateless_refill = Some(now);
        if self.stateless_tokens >= 1.0 {
            self.stateless_tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// RFC 9000 §10.3: a short-header packet for no known connection gets a stateless reset,
    /// smaller than the packet that triggered it (§10.3.3, against reset loops).
    fn stateless_reset(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        local_ip: Option<IpAddr>,
        data: &[u8],
        dst_cid: &[u8],
    ) {
        const MIN_RESET: usize = 21;
        if data.len() <= MIN_RESET || !self.take_stateless_token(now) {
            self.stats.dropped += 1;
            return;
        }
        let Some(cid) = ConnectionId::try_from_slice(dst_cid) else {
            return;
        };
        let len = (data.len() - 1).min(43);
        let mut buf = vec![0u8; len];
        self.cid_counter += 1;
        let _ = self.cid_expander.expand_slice(
            &[b"pad", &self.cid_counter.to_be_bytes()],
            &mut buf[..len - 16],
        );
        // Short header form with the fixed bit, the rest unpredictable (§10.3).
        buf[0] = 0x40 | (buf[0] & 0x3f);
        buf[len - 16..].copy_from_slice(&self.reset_token(&cid).0);
        self.stats.stateless_resets += 1;
        self.responses.push_back((remote, local_ip, buf));
    }

    /// Acts on a connection's requests: new connection IDs, retired ones, removal.
    fn process_events(&mut self, idx: usize) {
        // Called after every change to a connection: its deadline may have moved.
        self.timers.get_mut().touch(idx);
        while let Some(event) = self
            .connections
            .awake_mut(idx)
            .and_then(|c| c.poll_endpoint_event())
        {
            match event {
                EndpointEvent::NeedCids(n) => {
                    let cids: Vec<(ConnectionId, ResetToken)> = (0..n)
                        .map(|_| {
                            let cid = self.new_cid();
                            self.route(cid, idx);
                            (cid, self.reset_token(&cid))
                        })
                        .collect();
                    if let Some(c) = self.connections.awake_mut(idx) {
                        c.issue_cids(cids);
                        // NEW_CONNECTION_ID frames to send.
                        self.mark_send_ready(idx);
                    }
                }
                EndpointEvent::RetireCid(cid) => self.unroute(&cid, idx),
                EndpointEvent::PeerResetToken(token) => {
                    self.by_reset_token.insert(token, idx);
                }
                EndpointEvent::PeerResetTokenRetired(token) => self.unwatch(&token, idx),
                EndpointEvent::TlsReady => self.tls_ready.push_back(idx),
                EndpointEvent::Drained => {
                    // What routes to the connection: its own IDs not retired, the Initial's
                    // ID, and the reset token of the peer ID in use (the changes came
                    // through the events above, in order).
                    let (cids, token) = self
                        .connections
                        .awake(idx)
                        .map(|c| (c.routed_cids(), c.peer_reset_tokens()))
                        .unwrap_or_default();
                    let initial = self.initial_route.get_mut(idx).and_then(Option::take);
                    for cid in cids.iter().chain(initial.as_ref()) {
                        self.unroute(cid, idx);
                    }
                    if let Some(token) = token {
                        self.unwatch(&token, idx);
                    }
                    if let Some(conn) = self.connections.take(idx) {
                        if self.drained.len() >= MAX_DRAINED {
                            self.drained.pop_front();
                        }
                        self.stats.drained += 1;
                        self.drained.push_back((ConnectionHandle(idx), conn));
                    }
                    self.free.push(idx);
                    return;
                }
            }
        }
    }

    /// When [`Endpoint::handle_timeout`] is next wanted: the earliest deadline of any
    /// connection, or a deadline one of them had before it moved later. Such an entry is kept
    /// until it comes due (moving it costs more than the extra call): `handle_timeout` then
    /// finds nothing due for that connection and records its deadline afresh. Never later than
    /// the earliest deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.refresh_timers();
        self.timers.borrow().set.first().map(|&(t, _)| t)
    }

    /// Whether a deadline as recorded at the last look ([`Endpoint::poll_timeout`],
    /// [`Endpoint::handle_timeout`], [`Endpoint::refresh_timers`]) is due at `now`, without
    /// looking again at the connections touched since: a touched connection's new deadline
    /// may be due already without this saying so. The runtime's driver asks here before it
    /// sends, and reads every deadline afresh at the end of each turn, so that one due is
    /// handled before it sleeps (or at the start of the next turn). Once per turn instead of
    /// twice: a 1-byte ping-pong's server read its connection's deadline 4 times per message,
    /// about 600 instructions each of 24.4k (callgrind).
    #[cfg(feature = "runtime-tokio")]
    pub(crate) fn recorded_timeout_due(&self, now: Instant) -> bool {
        self.timers
            .borrow()
            .set
            .first()
            .is_some_and(|&(t, _)| t <= now)
    }

    /// Brings the deadlines of the connections touched since the last look up to date (what
    /// [`Endpoint::poll_timeout`] does first; the runtime's driver calls it at the end of each
    /// turn, for [`Endpoint::recorded_timeout_due`]).
    pub(crate) fn refresh_timers(&self) {
        let mut timers = self.timers.borrow_mut();
        let mut dirty = std::mem::take(&mut timers.dirty);
        for &idx in &dirty {
            let t = self.connections.deadline(idx);
            timers.set(idx, t);
        }
        dirty.clear();
        timers.dirty = dirty;
    }

    /// Fires the timers of every connection due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.latest = Some(self.latest.map_or(now, |l| l.max(now)));
        self.refresh_timers();
        let mut due = std::mem::take(&mut self.timers.get_mut().due);
        self.timers.get_mut().take_due(now, &mut due);
        for &idx in &due {
            if let Some(c) = self.conn_mut(idx, Some(now)) {
                c.handle_timeout(now);
                self.mark_send_ready(idx);
            }
            if self.connections.is_live(idx) {
                self.process_events(idx);
                // Quiet, with nothing to send or track: packed until woken.
                if self.connections.hibernate(idx, now) {
                    self.timers.get_mut().touch(idx);
                }
            } else {
                self.timers.get_mut().touch(idx);
            }
        }
        self.timers.get_mut().due = due;
    }
}
