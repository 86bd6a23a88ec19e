//! Configuration: [`TransportConfig`] (limits and timers), [`ServerConfig`] and
//! [`ClientConfig`] (a rustls config plus transport settings).
//!
//! Defaults are safe and fast; every limit a peer could abuse is bounded here.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use crate::recovery::congestion::{ControllerFactory, CubicConfig};
use crate::wire::Version;

/// A configuration value that cannot work, with what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A value is outside what the RFCs allow.
    #[error("{field} = {value} is out of range: {hint}")]
    OutOfRange {
        /// The setting.
        field: &'static str,
        /// The value given.
        value: u64,
        /// What is allowed.
        hint: &'static str,
    },
    /// The rustls configuration cannot be used for QUIC.
    #[error("the rustls configuration cannot be used for QUIC: {0}")]
    Tls(&'static str),
    /// A QUIC version this crate does not implement (v1 and v2 are).
    #[error("QUIC version {0} is not supported: use Version::V1 or Version::V2")]
    UnsupportedVersion(Version),
}

/// Transport limits and timers, shared by both sides.
#[derive(Clone)]
pub struct TransportConfig {
    pub(crate) max_idle_timeout: Duration,
    pub(crate) initial_rtt: Duration,
    pub(crate) max_ack_delay: Duration,
    pub(crate) stream_receive_window: u64,
    pub(crate) max_stream_receive_window: u64,
    pub(crate) receive_window: u64,
    pub(crate) max_receive_window: u64,
    pub(crate) max_concurrent_bidi_streams: u64,
    pub(crate) max_concurrent_uni_streams: u64,
    pub(crate) send_window: u64,
    pub(crate) crypto_buffer_size: u64,
    pub(crate) max_ack_ranges: usize,
    pub(crate) max_udp_payload_size: u16,
    pub(crate) initial_mtu: u16,
    pub(crate) mtu_discovery_upper_bound: Option<u16>,
    pub(crate) ecn: bool,
    pub(crate) active_connection_id_limit: u64,
    pub(crate) keep_alive_interval: Option<Duration>,
    pub(crate) datagram_receive_buffer: Option<usize>,
    pub(crate) datagram_send_buffer: usize,
    pub(crate) congestion: Arc<dyn ControllerFactory>,
    pub(crate) key_update_interval: u64,
    pub(crate) hibernate: bool,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            max_idle_timeout: Duration::from_secs(30),
            initial_rtt: crate::recovery::rtt::K_INITIAL_RTT,
            max_ack_delay: Duration::from_millis(25),
            stream_receive_window: 1 << 20,
            max_stream_receive_window: 16 << 20,
            receive_window: 2 << 20,
            max_receive_window: 64 << 20,
            max_concurrent_bidi_streams: 100,
            max_concurrent_uni_streams: 100,
            send_window: 16 << 20,
            crypto_buffer_size: 64 << 10,
            max_ack_ranges: 64,
            ecn: true,
            max_udp_payload_size: 1472,
            initial_mtu: 1200,
            mtu_discovery_upper_bound: Some(1452),
            active_connection_id_limit: 4,
            keep_alive_interval: None,
            datagram_receive_buffer: Some(1 << 20),
            datagram_send_buffer: 1 << 20,
            congestion: Arc::new(CubicConfig::default()),
            key_update_interval: 1 << 23,
            hibernate: true,
        }
    }
}

impl fmt::Debug for TransportConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransportConfig")
            .field("max_idle_timeout", &self.max_idle_timeout)
            .field("stream_receive_window", &self.stream_receive_window)
            .field("receive_window", &self.receive_window)
            .field(
                "max_concurrent_bidi_streams",
                &self.max_concurrent_bidi_streams,
            )
            .field(
                "max_concurrent_uni_streams",
                &self.max_concurrent_uni_streams,
            )
            .field("congestion", &self.congestion)
            .finish_non_exhaustive()
    }
}

fn range(field: &'static str, value: u64, ok: bool, hint: &'static str) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::OutOfRange { field, value, hint })
    }
}

impl TransportConfig {
    /// Idle timeout (RFC 9000 §10.1); zero disables it. Must be below 2^62 ms.
    pub fn max_idle_timeout(&mut self, value: Duration) -> &mut Self {
        self.max_idle_timeout = value;
        self
    }

    /// RTT assumed before the first sample (RFC 9002 §6.2.2; default 333 ms).
    pub fn initial_rtt(&mut self, value: Duration) -> &mut Self {
        self.initial_rtt = value;
        self
    }

    /// The longest we delay acknowledgments (RFC 9000 §13.2.1; below 2^14 ms).
    pub fn max_ack_delay(&mut self, value: Duration) -> &mut Self {
        self.max_ack_delay = value;
        self
    }

    /// Initial per-stream receive window and the most auto-tuning may grow it to.
    pub fn stream_receive_window(&mut self, initial: u64, max: u64) -> &mut Self {
        self.stream_receive_window = initial;
        self.max_stream_receive_window = max.max(initial);
        self
    }

    /// Initial connection receive window and the most auto-tuning may grow it to.
    pub fn receive_window(&mut self, initial: u64, max: u64) -> &mut Self {
        self.receive_window = initial;
        self.max_receive_window = max.max(initial);
        self
    }

    /// How many bidirectional streams the peer may have open at once (at most 2^60).
    pub fn max_concurrent_bidi_streams(&mut self, value: u64) -> &mut Self {
        self.max_concurrent_bidi_streams = value;
        self
    }

    /// How many unidirectional streams the peer may have open at once (at most 2^60).
    pub fn max_concurrent_uni_streams(&mut self, value: u64) -> &mut Self {
        self.max_concurrent_uni_streams = value;
        self
    }

    /// Unacknowledged bytes buffered for sending across all streams before writes block.
    pub fn send_window(&mut self, value: u64) -> &mut Self {
        self.send_window = value;
        self
    }

    /// Out-of-order CRYPTO data buffered per packet-number space before closing with
    /// CRYPTO_BUFFER_EXCEEDED (RFC 9000 §7.5; at least 4096).
    pub fn crypto_buffer_size(&mut self, value: u64) -> &mut Self {
        self.crypto_buffer_size = value;
        self
    }

    /// Packet-number ranges remembered for ACK frames (RFC 9000 §13.2.3).
    pub fn max_ack_ranges(&mut self, value: usize) -> &mut Self {
        self.max_ack_ranges = value;
        self
    }

    /// Largest UDP payload we accept (`max_udp_payload_size`, at least 1200).
    pub fn max_udp_payload_size(&mut self, value: u16) -> &mut Self {
        self.max_udp_payload_size = value;
        self
    }

    /// Path MTU discovery (RFC 8899, RFC 9000 §14.3): the largest UDP payload to probe for,
    /// default 1452 (a 1500-byte Ethernet path over IPv6); `None` keeps packets at 1200 bytes.
    /// The peer's `max_udp_payload_size` bounds it too.
    pub fn mtu_discovery_upper_bound(&mut self, value: Option<u16>) -> &mut Self {
        self.mtu_discovery_upper_bound = value;
        self
    }

    /// Unreliable datagrams (RFC 9221): how many bytes of received datagrams wait for the
    /// application before the oldest are dropped; `None` refuses datagrams (the
    /// `max_datagram_frame_size` transport parameter is then not sent). Default 1 MiB.
    pub fn datagram_receive_buffer_size(&mut self, value: Option<usize>) -> &mut Self {
        self.datagram_receive_buffer = value;
        self
    }

    /// How many bytes of datagrams may wait to be sent before the oldest are dropped.
    /// Default 1 MiB.
    pub fn datagram_send_buffer_size(&mut self, value: usize) -> &mut Self {
        self.datagram_send_buffer = value;
        self
    }

    /// Send a PING when idle this long, to keep NAT bindings and the idle timer alive.
    pub fn keep_alive_interval(&mut self, value: Option<Duration>) -> &mut Self {
        self.keep_alive_interval = value;
        self
    }

    /// Packets sent under one 1-RTT key before the connection updates keys on its own
    /// (RFC 9001 §6; default 2^23). Always kept below the AEAD's confidentiality limit
    /// (§6.6), so a long-lived connection never reaches it.
    pub fn key_update_interval(&mut self, packets: u64) -> &mut Self {
        self.key_update_interval = packets.max(1);
        self
    }

    /// The congestion controller for new connections (default [`CubicConfig`], RFC 9438; also
    /// [`NewRenoConfig`](crate::recovery::congestion::NewRenoConfig), or any
    /// [`ControllerFactory`] of your own).
    pub fn congestion_controller_factory(
        &mut self,
        factory: Arc<dyn ControllerFactory>,
    ) -> &mut Self {
        self.congestion = factory;
        self
    }

    /// Whether an idle server connection may hibernate (default on): once it has had nothing
    /// to do for a second (no stream open, nothing in flight or queued), its whole state is
    /// packed into a few hundred bytes until a datagram, a timer or a call on it wakes it,
    /// which costs a few microseconds. It wakes with its congestion window back at the
    /// initial window, as TCP restarts after idle (RFC 9002 §7.8, RFC 5681 §4.1). Turn it
    /// off to keep every connection unpacked at about twice the memory.
    pub fn hibernate(&mut self, enabled: bool) -> &mut Self {
        self.hibernate = enabled;
        self
    }

    /// Whether to use ECN (RFC 9000 §13.4; default on): mark packets ECT(0), validate the
    /// path, report received marks in ACK_ECN frames and react to CE. Received marks are
    /// always counted and reported, as RFC 9000 §13.4.1 requires.
    pub fn ecn(&mut self, enabled: bool) -> &mut Self {
        self.ecn = enabled;
        self
    }

    /// Checks every value against the RFCs' ranges.
    ///
    /// # Errors
    /// [`ConfigError::OutOfRange`] naming the first bad setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let ms = |d: Duration| d.as_millis().min(u128::from(u64::MAX)) as u64;
        range(
            "max_idle_timeout",
            ms(self.max_idle_timeout),
            ms(self.max_idle_timeout) < 1 << 62,
            "milliseconds below 2^62",
        )?;
        range(
            "max_ack_delay",
            ms(self.max_ack_delay),
            ms(self.max_ack_delay) < 1 << 14,
            "below 2^14 ms (RFC 9000 §18.2)",
        )?;
        range(
            "max_concurrent_bidi_streams",
            self.max_concurrent_bidi_streams,
            self.max_concurrent_bidi_streams <= 1 << 60,
            "at most 2^60",
        )?;
        range(
            "max_concurrent_uni_streams",
            self.max_concurrent_uni_streams,
            self.max_concurrent_uni_streams <= 1 << 60,
            "at most 2^60",
        )?;
        range(
            "max_udp_payload_size",
            u64::from(self.max_udp_payload_size),
            self.max_udp_payload_size >= 1200,
            "at least 1200 (RFC 9000 §18.2)",
        )?;
        range(
            "crypto_buffer_size",
            self.crypto_buffer_size,
            self.crypto_buffer_size >= 4096,
            "at least 4096 (RFC 9000 §7.5)",
        )?;
        range(
            "max_ack_ranges",
            self.max_ack_ranges as u64,
            self.max_ack_ranges >= 1,
            "at least 1",
        )?;
        range(
            "stream_receive_window",
            self.stream_receive_window,
            self.stream_receive_window < 1 << 62,
            "below 2^62",
        )?;
        range(
            "receive_window",
            self.receive_window,
            self.receive_window < 1 << 62,
            "below 2^62",
        )?;
        Ok(())
    }
}

/// RFC 9001 §4.2 and §5.2: QUIC needs TLS 1.3, and TLS_AES_128_GCM_SHA256 for Initial packets.
fn check_provider(provider: &rustls::crypto::CryptoProvider) -> Result<(), ConfigError> {
    if !provider.cipher_suites.iter().any(|s| s.tls13().is_some()) {
        return Err(ConfigError::Tls(
            "no TLS 1.3 cipher suite; QUIC requires TLS 1.3",
        ));
    }
    crate::crypto::initial_suite(provider).map_err(|_| {
        ConfigError::Tls("the provider lacks TLS13_AES_128_GCM_SHA256, needed for Initial packets")
    })?;
    Ok(())
}

/// When a server validates a client's address with a Retry before keeping any state for it
/// (RFC 9000 §8.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RetryPolicy {
    /// Never: handshakes start at once, under the 3x amplification limit (the default).
    #[default]
    Never,
    /// Every new connection without a valid token (from a Retry or NEW_TOKEN) gets a Retry:
    /// one more round trip, but no state for spoofed addresses.
    Always,
    /// A Retry only while the endpoint has at least this many connections.
    UnderLoad(usize),
}

/// Where a client keeps the address-validation tokens servers send in NEW_TOKEN frames
/// (RFC 9000 §8.1.3), to present on its next connection to the same server.
///
/// Tokens belong to the QUIC version of the connection that received them (RFC 9369 §5: not
/// used across versions), so for versions other than v1 the key is the server name followed
/// by a space and the version (`"example.com v2"`).
pub trait TokenStore: Send + Sync + fmt::Debug {
    /// Keeps `token` for `server_name`.
    fn insert(&self, server_name: &str, token: Bytes);
    /// Takes a token for `server_name` (each is used once, §8.1.3 discourages reuse).
    fn take(&self, server_name: &str) -> Option<Bytes>;
}

/// An in-memory [`TokenStore`]: a few tokens per server, for a bounded number of servers.
#[derive(Debug)]
pub struct TokenMemoryCache {
    servers: usize,
    inner: Mutex<HashMap<String, VecDeque<Bytes>>>,
}

impl TokenMemoryCache {
    /// Tokens per server kept (the newest).
    const PER_SERVER: usize = 2;

    /// A cache for up to `servers` server names.
    pub fn new(servers: usize) -> Self {
        Self {
            servers: servers.max(1),
            inner: Mutex::new(HashMap::new()),
        }
    }
}

impl TokenStore for TokenMemoryCache {
    fn insert(&self, server_name: &str, token: Bytes) {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if !map.contains_key(server_name) && map.len() >= self.servers {
            if let Some(k) = map.keys().next().cloned() {
                map.remove(&k);
            }
        }
        let q = map.entry(server_name.to_owned()).or_default();
        if q.len() >= Self::PER_SERVER {
            q.pop_front();
        }
        q.push_back(token);
    }

    fn take(&self, server_name: &str) -> Option<Bytes> {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let q = map.get_mut(server_name)?;
        let t = q.pop_back();
        if q.is_empty() {
            map.remove(server_name);
        }
        t
    }
}

/// Server settings: the rustls server config (certificates, ALPN) and transport settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// What v1 connections use: the user's config, or a copy set up for 0-RTT, with session
    /// tickets bound to v1.
    pub(crate) crypto: Arc<rustls::ServerConfig>,
    /// The same for v2 connections, tickets bound to v2 (RFC 9369 §5).
    crypto_v2: Arc<rustls::ServerConfig>,
    /// The config as the user gave it.
    user_crypto: Arc<rustls::ServerConfig>,
    pub(crate) transport: Arc<TransportConfig>,
    zero_rtt: bool,
    pub(crate) retry: RetryPolicy,
    /// Hands each connection its 1-RTT traffic secrets, so that an idle connection can drop
    /// its expanded keys and expand them again when it wakes (the idle-connection diet).
    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    pub(crate) secret_capture: Arc<crate::crypto::version_keys::SecretCapture>,
}

impl ServerConfig {
    /// A server using `crypto`, which must allow TLS 1.3 (RFC 9001 §4.2).
    ///
    /// # Errors
    /// [`ConfigError::Tls`] if `crypto` cannot negotiate TLS 1.3.
    pub fn new(crypto: Arc<rustls::ServerConfig>) -> Result<Self, ConfigError> {
        check_provider(crypto.crypto_provider())?;
        #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
        let secret_capture = Arc::new(crate::crypto::version_keys::SecretCapture::new(
            crypto.key_log.clone(),
        ));
        let mut config = Self {
            user_crypto: crypto.clone(),
            crypto_v2: crypto.clone(),
            crypto,
            transport: Arc::new(TransportConfig::default()),
            zero_rtt: false,
            retry: RetryPolicy::Never,
            #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
            secret_capture,
        };
        config.rebuild_crypto();
        Ok(config)
    }

    /// The rustls config for connections of `version`: session tickets issued on a connection
    /// resume only connections of the same version (RFC 9369 §5: "Servers MUST validate the
    /// originating version of any session ticket").
    pub(crate) fn crypto_for(&self, version: Version) -> &Arc<rustls::ServerConfig> {
        if version == Version::V2 {
            &self.crypto_v2
        } else {
            &self.crypto
        }
    }

    /// Replaces the transport settings.
    ///
    /// # Errors
    /// As [`TransportConfig::validate`].
    pub fn transport(&mut self, transport: Arc<TransportConfig>) -> Result<&mut Self, ConfigError> {
        transport.validate()?;
        self.transport = transport;
        self.rebuild_crypto();
        Ok(self)
    }

    /// Accepts 0-RTT data from clients resuming a session (RFC 9001 §4.6.1); off by default.
    ///
    /// Replay protection comes from single-use tickets: rustls accepts early data only with
    /// stateful resumption, where a ticket is taken out of the session store
    /// (`rustls::ServerConfig::session_storage`) when it is used. A store shared by several
    /// servers must keep `take` single-use across all of them. The transport parameters a
    /// ticket was issued under are kept with it, and a ticket whose limits are above this
    /// configuration's is not resumed (RFC 9000 §7.4.1), so 0-RTT is then rejected and the
    /// client sends its data again in 1-RTT.
    ///
    /// Data in 0-RTT can be replayed by an attacker within these limits only as a whole
    /// connection's first flight; applications see which streams came in 0-RTT
    /// ([`crate::connection::Connection::is_0rtt_stream`]).
    ///
    /// # Errors
    /// [`ConfigError::Tls`] if the rustls config uses stateless tickets
    /// (`ServerConfig::ticketer`), with which rustls never accepts early data.
    pub fn enable_0rtt(&mut self, enable: bool) -> Result<&mut Self, ConfigError> {
        if enable && self.user_crypto.ticketer.enabled() {
            return Err(ConfigError::Tls(
                "0-RTT needs stateful session resumption: remove the rustls ticketer (stateless \
                 tickets could be replayed, so rustls refuses early data with them)",
            ));
        }
        if enable && self.user_crypto.send_tls13_tickets == 0 {
            return Err(ConfigError::Tls(
                "0-RTT needs session tickets: set rustls ServerConfig::send_tls13_tickets above 0",
            ));
        }
        self.zero_rtt = enable;
        self.rebuild_crypto();
        Ok(self)
    }

    /// Whether 0-RTT is accepted.
    pub fn is_0rtt_enabled(&self) -> bool {
        self.zero_rtt
    }

    /// When to validate client addresses with a Retry (RFC 9000 §8.1.2; default
    /// [`RetryPolicy::Never`]). Tokens are sealed with the endpoint's token key
    /// ([`crate::endpoint::EndpointConfig::token_key`]). A connection that passed a Retry, or
    /// presented a NEW_TOKEN token, is not amplification-limited.
    pub fn retry(&mut self, policy: RetryPolicy) -> &mut Self {
        self.retry = policy;
        self
    }

    fn rebuild_crypto(&mut self) {
        let mut crypto = (*self.user_crypto).clone();
        if self.zero_rtt {
            // RFC 9001 §4.6.1: QUIC requires 0xffffffff here.
            crypto.max_early_data_size = u32::MAX;
            crypto.session_storage = Arc::new(ZeroRttSessions {
                inner: self.user_crypto.session_storage.clone(),
                limits: zero_rtt_limits(&self.transport),
            });
        }
        // Every line still reaches the key log the user configured (SSLKEYLOGFILE).
        #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
        {
            crypto.key_log = self.secret_capture.clone();
        }
        self.crypto = Arc::new(version_bound(&crypto, Version::V1));
        self.crypto_v2 = Arc::new(version_bound(&crypto, Version::V2));
    }
}

/// A copy of `base` whose session tickets, stateful or stateless, carry `version` and resume
/// only connections of that version (RFC 9369 §5).
fn version_bound(base: &rustls::ServerConfig, version: Version) -> rustls::ServerConfig {
    let mut c = base.clone();
    c.session_storage = Arc::new(VersionSessions {
        inner: base.session_storage.clone(),
        version,
    });
    if base.ticketer.enabled() {
        c.ticketer = Arc::new(VersionTickets {
            inner: base.ticketer.clone(),
            version,
        });
    }
    c
}

/// Prefixes `value` with the version's four bytes.
fn tag_version(version: Version, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + value.len());
    out.extend_from_slice(&version.0.to_be_bytes());
    out.extend_from_slice(value);
    out
}

/// The value after the version prefix, if it is `version`'s.
fn untag_version(version: Version, value: &[u8]) -> Option<Vec<u8>> {
    let (tag, rest) = value.split_at_checked(4)?;
    if tag != version.0.to_be_bytes() {
        tracing::debug!(%version, "session ticket from another QUIC version: not resumed");
        return None;
    }
    Some(rest.to_vec())
}

/// A session store whose entries carry the QUIC version of the connection that made them.
#[derive(Debug)]
struct VersionSessions {
    inner: Arc<dyn rustls::server::StoresServerSessions>,
    version: Version,
}

impl rustls::server::StoresServerSessions for VersionSessions {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.inner.put(key, tag_version(self.version, &value))
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        untag_version(self.version, &self.inner.get(key)?)
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        untag_version(self.version, &self.inner.take(key)?)
    }

    fn can_cache(&self) -> bool {
        self.inner.can_cache()
    }
}

/// Stateless tickets that seal the QUIC version of the connection that issued them.
#[derive(Debug)]
struct VersionTickets {
    inner: Arc<dyn rustls::server::ProducesTickets>,
    version: Version,
}

impl rustls::server::ProducesTickets for VersionTickets {
    fn enabled(&self) -> bool {
        self.inner.enabled()
    }

    fn lifetime(&self) -> u32 {
        self.inner.lifetime()
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.inner.encrypt(&tag_version(self.version, plain))
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        untag_version(self.version, &self.inner.decrypt(cipher)?)
    }
}

/// The transport limits a 0-RTT client relies on (RFC 9000 §7.4.1), as this server sets them.
fn zero_rtt_limits(t: &TransportConfig) -> [u64; 7] {
    [
        t.active_connection_id_limit,
        t.receive_window,
        t.stream_receive_window,
        t.stream_receive_window,
        t.stream_receive_window,
        t.max_concurrent_bidi_streams,
        t.max_concurrent_uni_streams,
    ]
}

/// A session store that keeps, with each ticket, the limits it was issued under, and resumes
/// only tickets whose limits this server still honours (RFC 9000 §7.4.1: "A server MUST
/// reject 0-RTT data if the restored values for transport parameters cannot be supported").
#[derive(Debug)]
struct ZeroRttSessions {
    inner: Arc<dyn rustls::server::StoresServerSessions>,
    limits: [u64; 7],
}

impl ZeroRttSessions {
    const PREFIX: usize = 7 * 8;

    fn unwrap(&self, value: Vec<u8>) -> Option<Vec<u8>> {
        let prefix = value.get(..Self::PREFIX)?;
        let honoured = prefix
            .chunks_exact(8)
            .zip(self.limits)
            .all(|(old, now)| u64::from_be_bytes(old.try_into().unwrap_or([0xff; 8])) <= now);
        if !honoured {
            tracing::debug!("ticket issued under higher limits: not resumed, 0-RTT rejected");
            return None;
        }
        Some(value[Self::PREFIX..].to_vec())
    }
}

impl rustls::server::StoresServerSessions for ZeroRttSessions {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        let mut stored = Vec::with_capacity(Self::PREFIX + value.len());
        for l in self.limits {
            stored.extend_from_slice(&l.to_be_bytes());
        }
        stored.extend_from_slice(&value);
        self.inner.put(key, stored)
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.unwrap(self.inner.get(key)?)
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.unwrap(self.inner.take(key)?)
    }

    fn can_cache(&self) -> bool {
        self.inner.can_cache()
    }
}

/// The [`TokenStore`] key for tokens of `version` from `server_name`.
pub(crate) fn token_key(server_name: &str, version: Version) -> std::borrow::Cow<'_, str> {
    if version == Version::V1 {
        server_name.into()
    } else {
        format!("{server_name} {version}").into()
    }
}

fn default_available_versions() -> Vec<Version> {
    vec![Version::V1, Version::V2]
}

/// Client settings: the rustls client config (roots, ALPN), transport settings and the
/// version to start with.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub(crate) crypto: Arc<rustls::ClientConfig>,
    pub(crate) transport: Arc<TransportConfig>,
    pub(crate) version: Version,
    /// The Available Versions of our version information (RFC 9368 §5), most preferred first.
    pub(crate) available_versions: Vec<Version>,
    pub(crate) token_store: Option<Arc<dyn TokenStore>>,
    /// Hands TLS secrets to connections a server switches to another version (RFC 9368 §2.3).
    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    pub(crate) secret_capture: Arc<crate::crypto::version_keys::SecretCapture>,
}

impl ClientConfig {
    /// A client using `crypto`, which must allow TLS 1.3 (RFC 9001 §4.2).
    ///
    /// # Errors
    /// [`ConfigError::Tls`] if `crypto` cannot negotiate TLS 1.3.
    pub fn new(crypto: Arc<rustls::ClientConfig>) -> Result<Self, ConfigError> {
        check_provider(crypto.crypto_provider())?;
        // The key log is wrapped so a connection a server switches to another version can
        // derive that version's keys from the TLS secrets (rustls keeps the version it was
        // created with); every line still reaches the configured key log.
        #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
        let (crypto, secret_capture) = {
            let capture = Arc::new(crate::crypto::version_keys::SecretCapture::new(
                crypto.key_log.clone(),
            ));
            let mut c = (*crypto).clone();
            c.key_log = capture.clone();
            (Arc::new(c), capture)
        };
        Ok(Self {
            crypto,
            transport: Arc::new(TransportConfig::default()),
            version: Version::V1,
            available_versions: default_available_versions(),
            token_store: Some(Arc::new(TokenMemoryCache::new(256))),
            #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
            secret_capture,
        })
    }

    /// Replaces the transport settings.
    ///
    /// # Errors
    /// As [`TransportConfig::validate`].
    pub fn transport(&mut self, transport: Arc<TransportConfig>) -> Result<&mut Self, ConfigError> {
        transport.validate()?;
        self.transport = transport;
        Ok(self)
    }

    /// Where NEW_TOKEN tokens are kept between connections (RFC 9000 §8.1.3; an in-memory
    /// [`TokenMemoryCache`] by default, shared by clones of this config); `None` to neither
    /// keep nor present them.
    pub fn token_store(&mut self, store: Option<Arc<dyn TokenStore>>) -> &mut Self {
        self.token_store = store;
        self
    }

    /// The QUIC version of the first Initial, the "original version" (v1 by default; v2 per
    /// RFC 9369). It is always among the versions offered to the server (see
    /// [`ClientConfig::available_versions`]).
    pub fn version(&mut self, version: Version) -> &mut Self {
        self.version = version;
        self
    }

    /// The versions this client accepts for a connection, most preferred first, sent to the
    /// server in the `version_information` transport parameter (RFC 9368 §5). A server that
    /// supports a compatible version listed before the original one may switch the connection
    /// to it during the handshake (compatible version negotiation, RFC 9368 §2.3; v1 and v2
    /// are compatible both ways, RFC 9369 §4).
    ///
    /// The default is `[V1, V2]`: start in v1, prefer it, accept v2 when a server prefers it.
    /// `[V2, V1]` asks servers that honour the client's preference (as GQUIC and aioquic do)
    /// to move a v1 connection to v2; `[V1]` disables compatible version negotiation.
    /// (Without the `aws-lc-rs` or `ring` feature only the original version is offered: the
    /// keys of a switched connection come from the crate's own backend.)
    ///
    /// # Errors
    /// [`ConfigError::UnsupportedVersion`] for a version other than v1 and v2;
    /// [`ConfigError::OutOfRange`] for an empty list.
    pub fn available_versions(&mut self, versions: &[Version]) -> Result<&mut Self, ConfigError> {
        if let Some(v) = versions.iter().find(|v| !v.is_supported()) {
            return Err(ConfigError::UnsupportedVersion(*v));
        }
        if versions.is_empty() {
            return Err(ConfigError::OutOfRange {
                field: "available_versions",
                value: 0,
                hint: "at least one version",
            });
        }
        let mut list = Vec::with_capacity(versions.len());
        for v in versions {
            if !list.contains(v) {
                list.push(*v);
            }
        }
        self.available_versions = list;
        Ok(self)
    }

    /// The Available Versions sent with the original version `self.version`: the configured
    /// list, the original version added last if missing (RFC 9368 §5: it must be there), and
    /// only the original version when no backend can derive another version's keys.
    pub(crate) fn offered_versions(&self) -> Vec<Version> {
        #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
        let mut list = self.available_versions.clone();
        #[cfg(not(any(feature = "aws-lc-rs", feature = "ring")))]
        let mut list = Vec::new();
        if !list.contains(&self.version) {
            list.push(self.version);
        }
        list
    }

    /// Offers 0-RTT when resuming a session whose ticket allows it (RFC 9001 §4.6.1): sets
    /// rustls' `enable_early_data` on a copy of the TLS config. Tickets are kept by the rustls
    /// config's resumption store (`rustls::ClientConfig::resumption`), per server name.
    /// Send early data with [`crate::runtime::Connecting::into_0rtt`].
    pub fn enable_0rtt(&mut self, enable: bool) -> &mut Self {
        if self.crypto.enable_early_data != enable {
            let mut crypto = (*self.crypto).clone();
            crypto.enable_early_data = enable;
            self.crypto = Arc::new(crypto);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_setting() {
        assert!(TransportConfig::default().validate().is_ok());
        let mut c = TransportConfig::default();
        c.max_udp_payload_size(1000);
        let err = c.validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "max_udp_payload_size = 1000 is out of range: at least 1200 (RFC 9000 §18.2)"
        );
        let mut c = TransportConfig::default();
        c.max_ack_delay(Duration::from_secs(20));
        assert!(matches!(
            c.validate(),
            Err(ConfigError::OutOfRange {
                field: "max_ack_delay",
                ..
            })
        ));
    }
}
