//! The sans-IO QUIC connection (RFC 9000, RFC 9001, RFC 9002).
//!
//! [`Connection`] is a state machine with no sockets, tasks or clock: time comes in as `now`,
//! datagrams come in through [`Connection::handle_datagram`] and go out through
//! [`Connection::poll_transmit`]. See the type's documentation for the call contract.

mod cid;
mod ecn;
#[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
mod hibernate;
mod idle;
mod migration;
mod mtud;
mod peer;
mod qlog_hooks;
mod recv;
mod send;
mod spaces;
mod stream_api;
pub mod streams;
mod tls_job;
mod tls_state;
mod version;
mod zero_rtt;

pub use self::ecn::{EcnCodepoint, EcnState};
pub use self::send::Transmit;

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustls::pki_types::ServerName;
use rustls::quic::{self as tls};

use self::cid::CidState;
pub use self::cid::EndpointEvent;
#[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
pub(crate) use self::hibernate::Hibernated;
pub use self::spaces::SpaceId;
use self::spaces::Spaces;
use self::streams::Streams;
pub use self::streams::{ReadError, StreamEvent, WriteError};
pub use self::tls_job::TlsJob;
use self::zero_rtt::ZeroRtt;
use crate::config::{ClientConfig, ServerConfig, TransportConfig};
use crate::crypto::{self, KeyPhase};
use crate::error::TransportErrorCode;
use crate::recovery::congestion::Controller;
use crate::recovery::pacing::Pacer;
use crate::recovery::rate::RateSampler;
use crate::recovery::RttEstimator;
use crate::wire::{ConnectionId, ResetToken, TransportParameters, VarInt, Version};
use crate::Side;

/// A transport error found locally, to be sent in CONNECTION_CLOSE (RFC 9000 §19.19).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {reason}")]
pub struct TransportError {
    /// The error code.
    pub code: TransportErrorCode,
    /// The frame type that caused it, if any.
    pub frame: Option<u64>,
    /// A description for the peer and the logs.
    pub reason: String,
}

impl TransportError {
    pub(crate) fn new(code: TransportErrorCode, reason: impl Into<String>) -> Self {
        Self {
            code,
            frame: None,
            reason: reason.into(),
        }
    }
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The peer closed the connection with a transport error (CONNECTION_CLOSE 0x1c).
    #[error(
        "the peer closed the connection: {code} ({})",
        String::from_utf8_lossy(reason)
    )]
    ConnectionClosed {
        /// The peer's error code; TLS alerts are in the CRYPTO_ERROR range.
        code: TransportErrorCode,
        /// The peer's reason phrase.
        reason: Bytes,
    },
    /// The peer's application closed the connection (CONNECTION_CLOSE 0x1d).
    #[error(
        "the peer's application closed the connection with code {code} ({})",
        String::from_utf8_lossy(reason)
    )]
    ApplicationClosed {
        /// The application's error code.
        code: VarInt,
        /// The reason phrase.
        reason: Bytes,
    },
    /// We detected a protocol error and closed the connection.
    #[error("transport error: {0}")]
    TransportError(TransportError),
    /// Nothing was heard from the peer for the idle timeout (RFC 9000 §10.1).
    #[error("the connection timed out")]
    TimedOut,
    /// The peer sent a stateless reset (RFC 9000 §10.3).
    #[error("the peer reset the connection (stateless reset)")]
    Reset,
    /// The application closed the connection locally.
    #[error("the connection was closed locally")]
    LocallyClosed,
    /// The server does not speak any version we offered (RFC 9000 §6.2).
    #[error("no QUIC version in common with the server")]
    VersionMismatch,
}

/// Something the application or driver should react to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Server: the ClientHello was processed, so the server name, ALPN and the 0-RTT decision
    /// are known (streams can be used from now on, in 0.5-RTT).
    HandshakeDataReady,
    /// The handshake completed: ALPN, peer certificates and streams are available.
    Connected,
    /// Something happened on a stream.
    Stream(StreamEvent),
    /// The connection ended; [`Connection::is_drained`] says when its state can be dropped.
    ConnectionLost(ConnectionError),
    /// Datagrams arrived (RFC 9221); take them with [`Connection::read_datagram`].
    DatagramReceived,
}

/// Why a datagram could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendDatagramError {
    /// The peer did not offer `max_datagram_frame_size` (or the handshake has not told us yet).
    #[error("the peer does not accept datagrams")]
    UnsupportedByPeer,
    /// The datagram does not fit in one packet or exceeds the peer's limit; see
    /// `max_datagram_size`.
    #[error("datagram of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The datagram's size.
        size: usize,
        /// The largest datagram that can be sent now.
        max: usize,
    },
    /// The connection is closed.
    #[error("the connection is closed")]
    ConnectionClosed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Handshake,
    Established,
    /// We sent CONNECTION_CLOSE; we answer further packets with it until `until` (RFC 9000
    /// §10.2.1), fewer and fewer as `received` of them come in. Packets that arrive before
    /// `quiet_until` (the minimum RTT after the close) are not answered: the peer sent them
    /// before our close could reach it.
    Closing {
        until: Instant,
        received: u32,
        quiet_until: Instant,
    },
    /// The peer closed; we send nothing until `until` (§10.2.2).
    Draining {
        until: Instant,
    },
    Drained,
}

/// The frame to repeat while closing.
#[derive(Debug, Clone)]
enum CloseFrame {
    Transport {
        code: TransportErrorCode,
        frame: u64,
        reason: Bytes,
    },
    Application {
        code: VarInt,
        reason: Bytes,
    },
}

/// A QUIC connection, client or server, with no I/O of its own.
///
/// # Call contract
///
/// The methods fall in four groups, in the style of a sans-IO state machine:
///
/// - **Inputs** (`handle_*`): [`handle_datagram`](Self::handle_datagram) for each UDP
///   datagram routed to this connection, [`handle_timeout`](Self::handle_timeout) when the time
///   from [`poll_timeout`](Self::poll_timeout) is reached.
/// - **Application commands**: [`open`](Self::open), [`accept`](Self::accept),
///   [`write`](Self::write), [`finish`](Self::finish), [`reset`](Self::reset),
///   [`read`](Self::read), [`stop`](Self::stop), [`close`](Self::close).
/// - **Outputs** (`poll_*`): [`poll_transmit`](Self::poll_transmit) for datagrams to send,
///   [`poll_event`](Self::poll_event) for events, [`poll_timeout`](Self::poll_timeout) for the
///   next deadline.
/// - **Getters**: [`side`](Self::side), [`rtt`](Self::rtt), [`alpn`](Self::alpn),
///   [`stats`](Self::stats), ...
///
/// After any input or command, a driver calls, in this order: `poll_transmit` until it returns
/// `None` (sending each datagram), then `poll_event` until `None`, then `poll_timeout` to
/// (re)arm its single timer. Every input takes `now`; the connection never reads a clock.
pub struct Connection {
    /// Vectors reused across ACK frames; let go while idle.
    scratch: Option<Box<idle::Scratch>>,
    /// When to free the buffers a busy connection keeps, if it is still quiet then.
    compact_at: Option<Instant>,
    side: Side,
    version: Version,
    config: Arc<TransportConfig>,
    tls: tls_state::Tls,
    state: State,
    spaces: Spaces,
    one_rtt: Option<KeyPhase>,
    /// 0-RTT keys and outcome (RFC 9001 §4.6).
    zero_rtt: ZeroRtt,
    /// Compatible version negotiation (RFC 9368).
    versions: version::VersionState,
    /// Whether the frames being handled came in a 0-RTT packet.
    receiving_0rtt: bool,
    /// The space TLS output goes to next.
    tls_space: SpaceId,
    handshake_confirmed: bool,
    handshake_done_pending: bool,
    peer_params: Option<peer::PeerParams>,
    local_cid: ConnectionId,
    cids: CidState,
    /// The last 16 bytes of the datagram being processed (stateless reset check, RFC 9000
    /// §10.3.1).
    datagram_tail: Option<[u8; 16]>,
    drained_reported: bool,
    /// The Destination Connection ID of the client's first Initial (RFC 9000 §7.3).
    original_dst_cid: ConnectionId,
    /// Whether the client has switched to the server's chosen connection ID.
    remote_cid_set: bool,
    /// The crypto provider (for Initial keys after a Retry).
    provider: Arc<rustls::crypto::CryptoProvider>,
    remote: SocketAddr,
    /// The local IP address the peer's authenticated datagrams last arrived at, if the
    /// runtime knows it: replies go from there (a server on a wildcard address of a host
    /// with several addresses answers from the one its client chose).
    local_ip: Option<IpAddr>,
    /// Whether the peer's address is validated (RFC 9000 §8.1); until then a server sends at
    /// most three times what it received.
    path_validated: bool,
    bytes_received: u64,
    bytes_sent: u64,
    rtt: RttEstimator,
    first_rtt_sample: Option<Instant>,
    cc: Box<dyn Controller>,
    /// Delivery rate sampling for the controller (draft-ietf-ccwg-bbr §4.1), if it wants the
    /// samples ([`Controller::wants_rate_samples`]).
    rate: Option<Box<RateSampler>>,
    pacer: Pacer,
    pacing_until: Option<Instant>,
    pto_count: u32,
    max_datagram_size: u64,
    /// Path MTU discovery (RFC 8899).
    mtud: mtud::Mtud,
    /// Negotiated idle timeout (RFC 9000 §10.1).
    idle_timeout: Option<Duration>,
    /// When the idle timer last restarted; the deadline is [`Connection::idle_deadline`].
    idle_since: Instant,
    /// Whether an ack-eliciting packet was sent since the last packet was received.
    eliciting_since_receive: bool,
    last_ack_eliciting_sent: Option<Instant>,
    /// The key generation last seen, and when the previous generation's receive key goes
    /// (RFC 9001 §6.5: about three PTOs after an update).
    key_generation: u64,
    discard_old_key_at: Option<Instant>,
    streams: Streams,
    events: VecDeque<Event>,
    /// The CONNECTION_CLOSE to send while closing (boxed: 56 bytes a live connection never
    /// uses).
    close: Option<Box<CloseFrame>>,
    close_pending: bool,
    /// Migration and path validation (RFC 9000 §8.2, §9).
    migration: migration::Migration,
    /// ECN (RFC 9000 §13.4).
    ecn: ecn::Ecn,
    /// The ECN codepoint of the datagram being processed.
    incoming_ecn: Option<EcnCodepoint>,
    /// The datagram being processed came from this address, not the current peer address;
    /// with its size.
    incoming_path: Option<(SocketAddr, u64)>,
    stats: ConnectionStats,
    /// Handshake-time and client-only state ([`idle::Extras`]); an idle server connection
    /// lets it go.
    extras: Option<Box<idle::Extras>>,
    /// PATH_RESPONSE frames and datagrams waiting ([`idle::Queued`]), boxed while any wait.
    pub(crate) queued: Option<Box<idle::Queued>>,
    span: tracing::Span,
    /// The qlog trace, when one is being written (`qlog` feature).
    pub(crate) qlog: crate::qlog::Qlog,
    /// Whether the last 1-RTT key update was ours (for qlog's `key_updated` trigger).
    local_key_update: bool,
    /// When the connection was created, and how long its handshake took once complete.
    created: Instant,
    handshake_duration: Option<Duration>,
}

/// Counters a connection keeps about itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionStats {
    /// UDP datagrams sent.
    pub datagrams_sent: u64,
    /// UDP datagrams received.
    pub datagrams_received: u64,
    /// Bytes sent in UDP payloads.
    pub bytes_sent: u64,
    /// Bytes received in UDP payloads.
    pub bytes_received: u64,
    /// Packets sent.
    pub packets_sent: u64,
    /// Packets received and authenticated.
    pub packets_received: u64,
    /// Packets declared lost.
    pub packets_lost: u64,
    /// Packets dropped on receipt (undecryptable, duplicate, malformed).
    pub packets_dropped: u64,
    /// 1-RTT key updates, initiated by either side (RFC 9001 §6).
    pub key_updates: u64,
    /// Moves to a new path: the peer's address changed (server) or ours did (client), RFC
    /// 9000 §9.
    pub migrations: u64,
    /// New peer addresses validated with PATH_CHALLENGE / PATH_RESPONSE (RFC 9000 §8.2).
    pub paths_validated: u64,
    /// Packets received with an ECN codepoint (ECT(0), ECT(1) or CE) in their IP header.
    pub ecn_marked_received: u64,
    /// Of those, packets marked CE (Congestion Experienced).
    pub ecn_ce_received: u64,
    /// CE marks the peer reported on our packets (RFC 9002 §7.1: congestion signals).
    pub ecn_ce: u64,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("side", &self.side)
            .field("state", &self.state)
            .field("local_cid", &self.local_cid)
            .field("remote_cid", &self.cids.remote())
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

/// Parameters of a new server connection, decided by the endpoint from the client's first
/// Initial.
#[derive(Debug, Clone)]
pub struct ServerConnectionParams {
    /// The client's address.
    pub remote: SocketAddr,
    /// The connection ID the server chose for itself.
    pub local_cid: ConnectionId,
    /// The Destination Connection ID of the client's Initial.
    pub original_dst_cid: ConnectionId,
    /// The client's Source Connection ID.
    pub client_cid: ConnectionId,
    /// The QUIC version of the client's Initial.
    pub version: Version,
    /// Stateless reset token for `local_cid` (RFC 9000 §10.3).
    pub reset_token: ResetToken,
    /// After a Retry: its Source Connection ID, now the Destination Connection ID of the
    /// client's Initials (so the Initial keys come from it) and echoed in
    /// `retry_source_connection_id` (RFC 9000 §7.3). `original_dst_cid` is then the one from
    /// the client's very first Initial, taken from the token.
    pub retry_src_cid: Option<ConnectionId>,
    /// Whether a token already proved the client's address (RFC 9000 §8.1.2, §8.1.3): no
    /// amplification limit.
    pub address_validated: bool,
    /// A token for the client's next connection, sent in NEW_TOKEN once the handshake is
    /// confirmed (RFC 9000 §8.1.3).
    pub new_token: Option<Bytes>,
    /// The versions the server supports: its Available Versions, and what it may switch the
    /// client to if the client prefers one (compatible version negotiation, RFC 9368 §2.3).
    pub supported_versions: Vec<Version>,
    /// NEW_TOKEN tokens for the other supported versions, sent instead of `new_token` when
    /// the connection moves to one of them (tokens are bound to a version, RFC 9369 §5).
    pub new_tokens_for_other_versions: Vec<(Version, Bytes)>,
}

/// Why a connection could not be created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The server name is not a valid DNS name or IP address.
    #[error("invalid server name {0:?}")]
    InvalidServerName(String),
    /// rustls refused the configuration.
    #[error("TLS configuration rejected: {0}")]
    Tls(#[from] rustls::Error),
    /// The version has no key schedule.
    #[error("unsupported QUIC version {0:?}")]
    UnsupportedVersion(Version),
    /// Packet protection could not be set up.
    #[error(transparent)]
    Crypto(#[from] crypto::CryptoError),
    /// The connection's ID went to another connection between
    /// [`crate::endpoint::Endpoint::client_ids`] and
    /// [`crate::endpoint::Endpoint::adopt_client`]: take new IDs and build it again.
    #[error("the connection ID was taken by another connection; build the connection again with new IDs")]
    ConnectionIdTaken,
}

fn local_params(config: &TransportConfig, local_cid: ConnectionId) -> TransportParameters {
    TransportParameters {
        max_idle_timeout: config.max_idle_timeout.as_millis() as u64,
        max_udp_payload_size: u64::from(config.max_udp_payload_size),
        initial_max_data: config.receive_window,
        initial_max_stream_data_bidi_local: config.stream_receive_window,
        initial_max_stream_data_bidi_remote: config.stream_receive_window,
        initial_max_stream_data_uni: config.stream_receive_window,
        initial_max_streams_bidi: config.max_concurrent_bidi_streams,
        initial_max_streams_uni: config.max_concurrent_uni_streams,
        max_ack_delay: config.max_ack_delay.as_millis() as u64,
        active_connection_id_limit: config.active_connection_id_limit,
        initial_source_connection_id: Some(local_cid),
        disable_active_migration: true,
        // RFC 9221 §3: the largest DATAGRAM frame we take, if we take any.
        max_datagram_frame_size: config
            .datagram_receive_buffer
            .map(|_| MAX_DATAGRAM_FRAME_SIZE),
        ..TransportParameters::default()
    }
}

/// The largest DATAGRAM frame we accept (RFC 9221 §3); any datagram fits in a UDP payload.
pub(crate) const MAX_DATAGRAM_FRAME_SIZE: u64 = 65_535;

impl Connection {
    /// Starts a client connection to `remote`, verifying the certificate for `server_name`.
    ///
    /// `local_cid` is the connection ID the endpoint chose for us and `initial_dst_cid` a
    /// random Destination Connection ID of at least 8 bytes (RFC 9000 §7.2).
    ///
    /// # Errors
    /// [`ConnectError`] for a bad server name or a TLS configuration rustls rejects.
    pub fn connect(
        config: &ClientConfig,
        now: Instant,
        remote: SocketAddr,
        server_name: &str,
        local_cid: ConnectionId,
        initial_dst_cid: ConnectionId,
    ) -> Result<Self, ConnectError> {
        let name = ServerName::try_from(server_name.to_owned())
            .map_err(|_| ConnectError::InvalidServerName(server_name.to_owned()))?;
        let version = config.version;
        let tls_version = version
            .tls_version()
            .ok_or(ConnectError::UnsupportedVersion(version))?;
        let mut params = local_params(&config.transport, local_cid);
        // RFC 9368 §5, RFC 9369 §4: the versions this first flight is compatible with.
        let offered = config.offered_versions();
        params.version_information = Some(crate::wire::transport_params::VersionInformation {
            chosen: version,
            available: offered.clone(),
        });
        let mut encoded = Vec::with_capacity(params.encoded_len());
        params.encode(&mut encoded);
        let tls = tls::ClientConnection::new(config.crypto.clone(), tls_version, name, encoded)?;
        let suite = crypto::initial_suite(config.crypto.crypto_provider())?;
        let keys = crypto::initial_keys(&suite, version, &initial_dst_cid, Side::Client)?;
        let mut conn = Self::new(
            Side::Client,
            version,
            config.transport.clone(),
            tls.into(),
            now,
            remote,
            local_cid,
            initial_dst_cid,
            initial_dst_cid,
            &params,
            None,
            config.crypto.crypto_provider().clone(),
        );
        conn.spaces[SpaceId::Initial as usize].keys = Some(Box::new(keys));
        conn.extras_mut().dialed_name = Some(server_name.to_owned());
        #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
        let capture_source = Some(config.secret_capture.clone());
        conn.versions = version::VersionState {
            original: Some(version),
            available: offered,
            #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
            capture_source,
            ..version::VersionState::default()
        };
        // RFC 9000 §8.1.3: a token from an earlier connection to this server lets it skip
        // address validation.
        if let Some(store) = &config.token_store {
            if let Some(token) = store.take(&crate::config::token_key(server_name, version)) {
                conn.extras_mut().token = token;
            }
            conn.extras_mut().token_store = Some(store.clone());
        }
        // The address of the server we chose is validated by definition (RFC 9000 §8.1).
        conn.path_validated = true;
        conn.write_tls(now)
            .map_err(|e| ConnectError::Tls(rustls::Error::General(e.reason)))?;
        conn.start_0rtt();
        Ok(conn)
    }

    /// Accepts a server connection for a client's first Initial; the endpoint then passes that
    /// datagram to [`Connection::handle_datagram`].
    ///
    /// # Errors
    /// [`ConnectError`] if rustls rejects the configuration or the version is unsupported.
    pub fn accept_incoming(
        config: &ServerConfig,
        now: Instant,
        incoming: ServerConnectionParams,
    ) -> Result<Self, ConnectError> {
        let version = incoming.version;
        let tls_version = version
            .tls_version()
            .ok_or(ConnectError::UnsupportedVersion(version))?;
        let mut params = local_params(&config.transport, incoming.local_cid);
        params.original_destination_connection_id = Some(incoming.original_dst_cid);
        params.retry_source_connection_id = incoming.retry_src_cid;
        params.stateless_reset_token = Some(incoming.reset_token);
        // RFC 9368 §5: the server's Available Versions are those it supports.
        let mut supported = incoming.supported_versions.clone();
        if !supported.contains(&version) {
            supported.push(version);
        }
        params.version_information = Some(crate::wire::transport_params::VersionInformation {
            chosen: version,
            available: supported.clone(),
        });
        let mut encoded = Vec::with_capacity(params.encoded_len());
        params.encode(&mut encoded);
        let tls =
            tls::ServerConnection::new(config.crypto_for(version).clone(), tls_version, encoded)?;
        let suite = crypto::initial_suite(config.crypto.crypto_provider())?;
        // RFC 9001 §5.2: Initial keys come from the Destination Connection ID of the client's
        // Initial, which after a Retry is the Retry's Source Connection ID.
        let initial_dcid = incoming.retry_src_cid.unwrap_or(incoming.original_dst_cid);
        let keys = crypto::initial_keys(&suite, version, &initial_dcid, Side::Server)?;
        let mut conn = Self::new(
            Side::Server,
            version,
            config.transport.clone(),
            tls.into(),
            now,
            incoming.remote,
            incoming.local_cid,
            incoming.client_cid,
            incoming.original_dst_cid,
            &params,
            Some(incoming.reset_token),
            config.crypto.crypto_provider().clone(),
        );
        conn.spaces[SpaceId::Initial as usize].keys = Some(Box::new(keys));
        conn.versions = version::VersionState::server(
            version,
            supported,
            config.crypto_for(Version::V1).clone(),
            config.crypto_for(Version::V2).clone(),
            incoming.new_tokens_for_other_versions,
            params,
            initial_dcid,
        );
        #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
        {
            conn.versions.capture_source = Some(config.secret_capture.clone());
        }
        conn.remote_cid_set = true;
        conn.path_validated = incoming.address_validated;
        if let Some(token) = incoming.new_token {
            conn.extras_mut().new_token = Some(token);
        }
        Ok(conn)
    }

    #[allow(clippy::too_many_arguments)]
    fn new(
        side: Side,
        version: Version,
        config: Arc<TransportConfig>,
        tls: tls::Connection,
        now: Instant,
        remote: SocketAddr,
        local_cid: ConnectionId,
        remote_cid: ConnectionId,
        original_dst_cid: ConnectionId,
        params: &TransportParameters,
        reset_token: Option<ResetToken>,
        provider: Arc<rustls::crypto::CryptoProvider>,
    ) -> Self {
        let max_datagram_size = u64::from(config.initial_mtu);
        let span = idle::conn_span(side, remote, local_cid, original_dst_cid);
        let streams = Streams::new(
            side,
            params,
            config.max_stream_receive_window,
            config.max_receive_window,
            config.send_window,
        );
        let cc = config.congestion.build(now, max_datagram_size);
        let rate = migration::rate_sampler_for(cc.as_ref());
        Self {
            side,
            version,
            tls: tls.into(),
            state: State::Handshake,
            spaces: Spaces::new(),
            one_rtt: None,
            zero_rtt: ZeroRtt::default(),
            versions: version::VersionState::default(),
            receiving_0rtt: false,
            tls_space: SpaceId::Initial,
            handshake_confirmed: false,
            handshake_done_pending: false,
            peer_params: None,
            local_cid,
            cids: CidState::new(
                local_cid,
                reset_token,
                remote_cid,
                config.active_connection_id_limit,
            ),
            datagram_tail: None,
            drained_reported: false,
            original_dst_cid,
            remote_cid_set: false,
            provider,
            remote,
            local_ip: None,
            path_validated: false,
            bytes_received: 0,
            bytes_sent: 0,
            rtt: RttEstimator::new(config.initial_rtt),
            first_rtt_sample: None,
            cc,
            rate,
            pacer: Pacer::new(10, max_datagram_size),
            pacing_until: None,
            pto_count: 0,
            max_datagram_size,
            mtud: mtud::Mtud::new(
                config
                    .mtu_discovery_upper_bound
                    .unwrap_or(0)
                    .min(config.max_udp_payload_size),
                config.mtu_discovery_upper_bound.is_some(),
            ),
            idle_timeout: (!config.max_idle_timeout.is_zero()).then_some(config.max_idle_timeout),
            idle_since: now,
            eliciting_since_receive: false,
            last_ack_eliciting_sent: None,
            key_generation: 0,
            discard_old_key_at: None,
            streams,
            events: VecDeque::new(),
            close: None,
            close_pending: false,
            migration: migration::Migration::default(),
            ecn: ecn::Ecn::new(config.ecn),
            incoming_ecn: None,
            incoming_path: None,
            stats: ConnectionStats::default(),
            extras: None,
            scratch: None,
            compact_at: None,
            queued: None,
            span,
            qlog: crate::qlog::Qlog::default(),
            local_key_update: false,
            created: now,
            handshake_duration: None,
            config,
        }
    }

    // ---- getters ----

    /// Client or server.
    pub fn side(&self) -> Side {
        self.side
    }

    /// The QUIC version in use.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The peer's address.
    pub fn remote_address(&self) -> SocketAddr {
        self.remote
    }

    /// The local IP address the peer's datagrams arrive at (and replies go from), if the
    /// caller passed it with them ([`Connection::handle_datagram_at`]).
    pub fn local_ip(&self) -> Option<IpAddr> {
        self.local_ip
    }

    /// The peer's connection ID this connection sends to now (it changes on migration, RFC
    /// 9000 §9.5).
    pub fn remote_connection_id(&self) -> ConnectionId {
        self.cids.remote()
    }

    /// Whether the peer's current address is validated (RFC 9000 §8): false from a
    /// migration until PATH_RESPONSE arrives.
    pub fn is_path_validated(&self) -> bool {
        self.path_validated
    }

    /// The connection ID the peer sends to us with.
    pub fn local_cid(&self) -> ConnectionId {
        self.local_cid
    }

    /// The smoothed round-trip time.
    pub fn rtt(&self) -> Duration {
        self.rtt.smoothed()
    }

    /// The RTT estimator.
    pub fn rtt_estimator(&self) -> &RttEstimator {
        &self.rtt
    }

    /// The largest UDP payload packets use now (1200 until path MTU discovery finds more).
    pub fn path_mtu(&self) -> u16 {
        self.max_datagram_size as u16
    }

    /// The congestion window in bytes.
    pub fn congestion_window(&self) -> u64 {
        self.cc.window()
    }

    /// The negotiated application protocol, once the handshake has progressed far enough.
    pub fn alpn(&self) -> Option<&[u8]> {
        self.tls.alpn_protocol()
    }

    /// The TLS server name: the SNI a client sent (server side), or the name a client checks
    /// the certificate against (client side).
    pub fn server_name(&self) -> Option<&str> {
        if self.side.is_server() {
            self.tls.sni()
        } else {
            self.extras().and_then(|e| e.dialed_name.as_deref())
        }
    }

    /// Whether the TLS session has been reduced to its summary (a server after the
    /// handshake).
    #[cfg(test)]
    pub(crate) fn tls_finished(&self) -> bool {
        matches!(self.tls, tls_state::Tls::Done(_))
    }

    /// The negotiated TLS cipher suite (which protects Handshake and 1-RTT packets), once
    /// known.
    pub fn cipher_suite(&self) -> Option<rustls::CipherSuite> {
        self.tls.negotiated_cipher_suite().map(|s| s.suite())
    }

    /// The peer's certificate chain, once received.
    pub fn peer_certificates(&self) -> Option<&[rustls::pki_types::CertificateDer<'static>]> {
        self.tls.peer_certificates()
    }

    /// The peer's transport parameters, once received (decoded from the form the connection
    /// keeps them in).
    pub fn peer_params(&self) -> Option<TransportParameters> {
        self.peer_params.as_ref()?.decode()
    }

    /// Whether the handshake is complete.
    pub fn is_handshaking(&self) -> bool {
        self.state == State::Handshake
    }

    /// Whether the connection is closing or draining (no new streams or data).
    pub fn is_closed(&self) -> bool {
        matches!(
            self.state,
            State::Closing { .. } | State::Draining { .. } | State::Drained
        )
    }

    /// Whether the connection is closed and has nothing of its own left to send: our
    /// CONNECTION_CLOSE went out (none is waiting to be sent again), or the peer closed it.
    /// What an endpoint about to close its socket waits for (RFC 9000 §10.2: an endpoint that
    /// closes its socket may end the closing state early).
    pub fn close_sent(&self) -> bool {
        match self.state {
            State::Closing { .. } => !self.close_pending,
            State::Draining { .. } | State::Drained => true,
            State::Handshake | State::Established => false,
        }
    }

    /// Whether all state can be dropped: closing and draining are over (RFC 9000 §10.2).
    pub fn is_drained(&self) -> bool {
        self.state == State::Drained
    }

    /// Counters.
    pub fn stats(&self) -> ConnectionStats {
        let mut stats = self.stats;
        stats.key_updates = self.one_rtt.as_ref().map_or(0, KeyPhase::generation);
        stats
    }

    /// Updates the 1-RTT keys now (RFC 9001 §6.1): the next packet goes out under new keys
    /// with the Key Phase bit flipped, and the peer follows.
    ///
    /// # Errors
    /// [`crypto::KeyUpdateError::HandshakeNotConfirmed`] before the handshake is confirmed (§6.1);
    /// [`crypto::KeyUpdateError::NotConfirmed`] while the previous update is not yet acknowledged.
    pub fn initiate_key_update(&mut self) -> Result<(), crypto::KeyUpdateError> {
        if !self.handshake_confirmed || self.is_closed() {
            return Err(crypto::KeyUpdateError::HandshakeNotConfirmed);
        }
        let keys = self
            .one_rtt
            .as_mut()
            .ok_or(crypto::KeyUpdateError::HandshakeNotConfirmed)?;
        keys.initiate_update()?;
        self.local_key_update = true;
        tracing::debug!(generation = keys.generation(), "key update initiated");
        Ok(())
    }

    /// Gives the connection new connection IDs to issue to the peer (after
    /// [`EndpointEvent::NeedCids`]); the endpoint routes them to this connection.
    pub fn issue_cids(&mut self, cids: impl IntoIterator<Item = (ConnectionId, ResetToken)>) {
        self.cids.issue(cids);
    }

    /// The next thing the endpoint must do for this connection.
    pub fn poll_endpoint_event(&mut self) -> Option<EndpointEvent> {
        if let Some(e) = self.cids.pop_event() {
            return Some(e);
        }
        if self.state == State::Drained && !self.drained_reported {
            self.drained_reported = true;
            return Some(EndpointEvent::Drained);
        }
        None
    }

    /// Client: whether the server made us follow a Retry (RFC 9000 §8.1.2).
    pub fn retried(&self) -> bool {
        self.retry_src_cid().is_some()
    }

    /// The number of streams with state.
    pub fn open_streams(&self) -> usize {
        self.streams.open_count()
    }

    // ---- datagrams (RFC 9221) ----

    /// The largest datagram [`Connection::send_datagram`] takes now: the peer's
    /// `max_datagram_frame_size` less the frame header, bounded by what fits in one packet at
    /// the current datagram size. `None` if the peer does not accept datagrams.
    pub fn max_datagram_size(&self) -> Option<usize> {
        let peer = self.peer_params.as_ref()?.max_datagram_frame_size?;
        // Short header (1 + CID + 4-byte packet number), AEAD tag, frame type and length.
        let overhead = 1 + self.cids.remote().len() + 4 + 16 + 1 + 2;
        let packet = (self.max_datagram_size as usize).saturating_sub(overhead);
        let frame = usize::try_from(peer)
            .unwrap_or(usize::MAX)
            .saturating_sub(1 + 2);
        Some(packet.min(frame))
    }

    /// Queues an unreliable datagram (RFC 9221). It is sent once, never retransmitted; if the
    /// send buffer is full the oldest queued datagrams are dropped to make room.
    ///
    /// # Errors
    /// See [`SendDatagramError`].
    pub fn send_datagram(&mut self, data: Bytes) -> Result<(), SendDatagramError> {
        if self.is_closed() {
            return Err(SendDatagramError::ConnectionClosed);
        }
        let max = self
            .max_datagram_size()
            .ok_or(SendDatagramError::UnsupportedByPeer)?;
        if data.len() > max {
            return Err(SendDatagramError::TooLarge {
                size: data.len(),
                max,
            });
        }
        let limit = self.config.datagram_send_buffer;
        let q = self.queued_mut();
        while q.datagrams_out_bytes + data.len() > limit {
            match q.datagrams_out.pop_front() {
                Some(old) => q.datagrams_out_bytes -= old.len(),
                None => break,
            }
        }
        q.datagrams_out_bytes += data.len();
        q.datagrams_out.push_back(data);
        Ok(())
    }

    /// Takes the oldest received datagram.
    pub fn read_datagram(&mut self) -> Option<Bytes> {
        let q = self.queued.as_deref_mut()?;
        let d = q.datagrams_in.pop_front()?;
        q.datagrams_in_bytes -= d.len();
        Some(d)
    }

    /// RFC 9221 §3, §5: a DATAGRAM frame from the peer.
    pub(crate) fn on_datagram(&mut self, data: Bytes) -> Result<(), TransportError> {
        let Some(limit) = self.config.datagram_receive_buffer else {
            return Err(TransportError {
                code: TransportErrorCode::PROTOCOL_VIOLATION,
                frame: Some(0x31),
                reason: "DATAGRAM frames were not negotiated".into(),
            });
        };
        if data.len() as u64 > MAX_DATAGRAM_FRAME_SIZE {
            return Err(TransportError {
                code: TransportErrorCode::PROTOCOL_VIOLATION,
                frame: Some(0x31),
                reason: "DATAGRAM frame larger than max_datagram_frame_size".into(),
            });
        }
        // Bounded: the oldest datagrams make room (they are unreliable by definition).
        let q = self.queued_mut();
        while q.datagrams_in_bytes + data.len() > limit {
            match q.datagrams_in.pop_front() {
                Some(old) => q.datagrams_in_bytes -= old.len(),
                None => return Ok(()),
            }
        }
        let first = q.datagrams_in.is_empty();
        q.datagrams_in_bytes += data.len();
        q.datagrams_in.push_back(data);
        if first {
            self.events.push_back(Event::DatagramReceived);
        }
        Ok(())
    }

    /// Writes queued datagrams that fit before `end`; returns whether any was written.
    pub(crate) fn write_datagrams(&mut self, buf: &mut Vec<u8>, end: usize) -> bool {
        let mut wrote = false;
        let Some(q) = self.queued.as_deref_mut() else {
            return false;
        };
        while let Some(d) = q.datagrams_out.front() {
            let len = 1 + crate::wire::varint::size(d.len() as u64) + d.len();
            if buf.len() + len > end {
                break;
            }
            buf.push(0x31);
            crate::wire::varint::encode(d.len() as u64, buf);
            buf.extend_from_slice(d);
            q.datagrams_out_bytes = q.datagrams_out_bytes.saturating_sub(d.len());
            q.datagrams_out.pop_front();
            wrote = true;
        }
        wrote
    }

    /// Closes the connection with an application error code and reason (RFC 9000 §10.2).
    pub fn close(&mut self, now: Instant, code: VarInt, reason: Bytes) {
        if self.is_closed() {
            return;
        }
        let span = self.span.clone();
        let _guard = span.enter();
        tracing::debug!(%code, "closing");
        self.close = Some(Box::new(CloseFrame::Application { code, reason }));
        self.close_pending = true;
        self.state = self.closing_state(now);
        self.qlog_state(now, "closing");
        self.qlog_closed(now, &ConnectionError::LocallyClosed);
        self.events
            .push_back(Event::ConnectionLost(ConnectionError::LocallyClosed));
    }

    /// Closes the connection because of a transport error we detected.
    pub(crate) fn close_with_error(&mut self, now: Instant, error: TransportError) {
        if self.is_closed() {
            return;
        }
        tracing::debug!(code = %error.code, reason = %error.reason, "transport error; closing");
        self.close = Some(Box::new(CloseFrame::Transport {
            code: error.code,
            frame: error.frame.unwrap_or(0),
            reason: Bytes::from(error.reason.clone()),
        }));
        self.close_pending = true;
        self.state = self.closing_state(now);
        self.qlog_state(now, "closing");
        let error = ConnectionError::TransportError(error);
        self.qlog_closed(now, &error);
        self.events.push_back(Event::ConnectionLost(error));
    }

    /// After a key update by either side, schedules the previous receive key's discard
    /// (RFC 9001 §6.5) and updates on our own when a key has been used long enough (§6.6).
    #[inline]
    pub(super) fn key_phase_housekeeping(&mut self, now: Instant) {
        // Called for every datagram in and out: the PTO is worked out only on a change.
        let confirmed = self.handshake_confirmed;
        let Some(k) = self.one_rtt.as_ref() else {
            return;
        };
        if !(confirmed && k.should_update()) && k.generation() == self.key_generation {
            return;
        }
        let pto = self.rtt.pto_base() + self.peer_max_ack_delay();
        let Some(k) = self.one_rtt.as_mut() else {
            return;
        };
        // RFC 9001 §6.1: never before the handshake is confirmed.
        if confirmed && k.should_update() && k.initiate_update().is_ok() {
            tracing::debug!(generation = k.generation(), "automatic key update");
            self.local_key_update = true;
        }
        if k.generation() != self.key_generation {
            self.key_generation = k.generation();
            self.discard_old_key_at = k.has_previous().then_some(now + pto * 3);
            let trigger = if std::mem::take(&mut self.local_key_update) {
                "local_update"
            } else {
                "remote_update"
            };
            let phase = self.key_generation;
            if let Some(q) = self.qlog.on() {
                // RFC 9001 §6: both directions move to the next generation.
                q.key_updated(now, "client_1rtt_secret", Some(phase), trigger);
                q.key_updated(now, "server_1rtt_secret", Some(phase), trigger);
            }
        }
    }

    /// The crypto provider of the TLS configuration (for Initial keys after a Retry).
    pub(super) fn tls_provider(&self) -> &rustls::crypto::CryptoProvider {
        self.provider.as_ref()
    }

    /// Applies a new datagram size from path MTU discovery.
    pub(super) fn set_datagram_size(&mut self, size: u16) {
        tracing::debug!(size, "path MTU");
        self.max_datagram_size = u64::from(size);
        self.cc.on_mtu_update(u64::from(size));
    }

    /// The closing state entered at `now`, as the first CONNECTION_CLOSE goes out.
    fn closing_state(&self, now: Instant) -> State {
        // A packet the peer sent before our close reached it arrives within one round trip
        // of the close, and the minimum RTT is a lower bound of that round trip (RFC 9002
        // §5.2). Without a sample it is unknown: every packet counts.
        let quiet = if self.rtt.has_sample() {
            self.rtt.min()
        } else {
            Duration::ZERO
        };
        State::Closing {
            until: now + self.close_period(),
            received: 0,
            quiet_until: now + quiet,
        }
    }

    /// Three times the current PTO (RFC 9000 §10.2).
    fn close_period(&self) -> Duration {
        (self.rtt.pto_base() + self.config.max_ack_delay) * 3
    }

    // ---- outputs ----

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        if let Some(e) = self.events.pop_front() {
            return Some(e);
        }
        self.streams.poll_event().map(Event::Stream)
    }

    /// When [`Connection::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Drained => return None,
            State::Closing { until, .. } | State::Draining { until } => return Some(until),
            _ => {}
        }
        let mut next = self.idle_deadline();
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        consider(self.loss_detection_timer());
        // Blocked by the anti-amplification limit, a server can send nothing: ACK and pacing
        // deadlines would fire at once, again and again (only new input unblocks it).
        let blocked = self.amplification_blocked();
        if !blocked {
            consider(self.pacing_until);
        }
        consider(self.discard_old_key_at);
        consider(self.compact_at);
        consider(self.keep_alive_at());
        consider(self.zero_rtt.discard_at());
        consider(self.mtud.timeout());
        consider(self.migration_timeout());
        // While TLS is away in a job, the flight it brings back carries the ACKs.
        if !blocked && !self.tls_busy() {
            for space in self.spaces.iter() {
                if space.ack_pending() {
                    consider(space.ack_deadline);
                }
            }
        }
        next
    }

    /// Handles the expiry of the time from [`Connection::poll_timeout`].
    pub fn handle_timeout(&mut self, now: Instant) {
        let span = self.span.clone();
        let _guard = span.enter();
        match self.state {
            State::Drained => return,
            State::Closing { until, .. } | State::Draining { until } => {
                if now >= until {
                    self.state = State::Drained;
                    self.qlog_state(now, "closed");
                }
                return;
            }
            _ => {}
        }
        if self.idle_deadline().is_some_and(|d| now >= d) {
            // RFC 9000 §10.1: the connection is silently closed and its state discarded.
            tracing::debug!("idle timeout");
            self.state = State::Drained;
            self.qlog_closed(now, &ConnectionError::TimedOut);
            self.qlog_state(now, "closed");
            self.events
                .push_back(Event::ConnectionLost(ConnectionError::TimedOut));
            return;
        }
        if self.pacing_until.is_some_and(|t| now >= t) {
            self.pacing_until = None;
        }
        if self.compact_at.is_some_and(|t| now >= t) {
            // Quiet means nothing received or sent for a second, not only nothing in
            // flight: a receiver's ACKs leave nothing in flight while data keeps coming.
            match self.last_activity().map(|t| t + recv::COMPACT_AFTER) {
                Some(later) if later > now => self.compact_at = Some(later),
                _ => {
                    self.compact_at = None;
                    self.compact();
                }
            }
        }
        if self.keep_alive_at().is_some_and(|t| now >= t) {
            tracing::trace!("keep-alive PING");
            self.migration.ping_pending = true;
        }
        if self.zero_rtt.discard_at().is_some_and(|t| now >= t) {
            tracing::debug!("discarding 0-RTT keys");
            self.zero_rtt.set_discard_at(None);
            self.zero_rtt.keys = None;
        }
        if self.discard_old_key_at.is_some_and(|t| now >= t) {
            self.discard_old_key_at = None;
            if let Some(k) = self.one_rtt.as_mut() {
                k.discard_previous();
            }
        }
        if self.migration_timeout().is_some_and(|t| now >= t) {
            self.on_migration_timeout(now);
        }
        if self.loss_detection_timer().is_some_and(|t| now >= t) {
            self.on_loss_detection_timeout(now);
        }
        self.qlog_recovery(now);
    }

    /// RFC 9002 §A.8: the earliest loss time, or else the PTO.
    fn loss_detection_timer(&self) -> Option<Instant> {
        if let Some(t) = SpaceId::ALL
            .iter()
            .filter_map(|&s| self.spaces[s as usize].sent.loss_time())
            .min()
        {
            return Some(t);
        }
        // RFC 9002 §6.2.2.1: a server that cannot send anything more before the client's
        // address is validated arms no PTO until datagrams arrive from the client: a probe
        // could not go out, and backing off for nothing would only delay the probe that can
        // once the client's next datagram raises the limit.
        if self.amplification_blocked() {
            return None;
        }
        let backoff = 2u32.saturating_pow(self.pto_count.min(16));
        let mut best: Option<Instant> = None;
        for &s in &SpaceId::ALL {
            let space = &self.spaces[s as usize];
            if !space.sent.has_ack_eliciting_in_flight() {
                continue;
            }
            // RFC 9002 §6.2.1: no application-data PTO before the handshake is confirmed.
            if s == SpaceId::Data && !self.handshake_confirmed {
                continue;
            }
            let mut pto = self.rtt.pto_base();
            if s == SpaceId::Data {
                pto += self.peer_max_ack_delay();
            }
            if let Some(sent) = space.sent.time_of_last_ack_eliciting() {
                let t = sent + pto * backoff;
                best = Some(best.map_or(t, |b| b.min(t)));
            }
        }
        if best.is_none() && self.side.is_client() && !self.handshake_confirmed {
            // RFC 9002 §6.2.2.1: a client keeps a PTO armed until the handshake is confirmed so
            // an amplification-limited server is never deadlocked.
            if let Some(last) = self.last_ack_eliciting_sent {
                return Some(last + self.rtt.pto_base() * backoff);
            }
        }
        best
    }

    fn peer_max_ack_delay(&self) -> Duration {
        Duration::from_millis(self.peer_params.as_ref().map_or(25, |p| p.max_ack_delay))
    }

    fn on_loss_detection_timeout(&mut self, now: Instant) {
        // How late the timer fired (a driver that slept past it shows here).
        let late = self
            .loss_detection_timer()
            .map(|t| now.saturating_duration_since(t));
        // Time-threshold loss first (RFC 9002 §6.1.2).
        for &s in &SpaceId::ALL {
            if self.spaces[s as usize]
                .sent
                .loss_time()
                .is_some_and(|t| t <= now)
            {
                let lost = self.spaces[s as usize].sent.detect_lost(now, &self.rtt);
                self.on_packets_lost(now, s, lost, &[]);
                return;
            }
        }
        // PTO (RFC 9002 §6.2.4): send probes in the space with the earliest PTO.
        self.pto_count += 1;
        let space = SpaceId::ALL
            .iter()
            .copied()
            .filter(|&s| self.spaces[s as usize].sent.has_ack_eliciting_in_flight())
            .filter(|&s| s != SpaceId::Data || self.handshake_confirmed)
            .min_by_key(|&s| self.spaces[s as usize].sent.time_of_last_ack_eliciting())
            .unwrap_or(if self.spaces[SpaceId::Handshake as usize].keys.is_some() {
                SpaceId::Handshake
            } else if self.spaces[SpaceId::Initial as usize].keys.is_some() {
                SpaceId::Initial
            } else {
                SpaceId::Data
            });
        tracing::debug!(
            ?space,
            pto_count = self.pto_count,
            srtt = ?self.rtt.smoothed(),
            pto_base = ?self.rtt.pto_base(),
            ?late,
            in_flight = self.bytes_in_flight(),
            "PTO"
        );
        if space == SpaceId::Data {
            if let Some(base) = self.mtud.on_pto(self.pto_count) {
                self.set_datagram_size(base);
            }
        }
        // CRYPTO data declared lost in another space may be waiting for a congestion window
        // that packets the peer cannot acknowledge yet keep full (Handshake packets before it
        // has the keys): it goes out as a probe too, or the handshake could stall for good.
        for other in SpaceId::ALL {
            if other == space || self.spaces[other as usize].discarded {
                continue;
            }
            let sp = &mut self.spaces[other as usize];
            if sp.keys.is_some() && sp.crypto_pending() {
                sp.probes = sp.probes.max(1);
            }
        }
        self.spaces[space as usize].probes = 2;
        // Resend the CRYPTO data still in flight: probes should carry data (RFC 9002 §6.2.4).
        self.resend_unacked_crypto(space);
        // In the data space, the oldest unacknowledged stream data goes again too.
        if space == SpaceId::Data {
            let chunks: Vec<streams::StreamChunk> = self.spaces[space as usize]
                .sent
                .oldest_unacked()
                .take(2)
                .flat_map(|(_, p)| p.info.chunks.iter().cloned())
                .collect();
            for c in &chunks {
                self.streams.on_chunk_lost(c);
            }
        }
    }

    /// Queues the CRYPTO data of `space` that is in flight and not acknowledged to go again.
    pub(super) fn resend_unacked_crypto(&mut self, space: SpaceId) {
        let sp = &mut self.spaces[space as usize];
        let ranges: Vec<std::ops::Range<u64>> = sp
            .sent
            .oldest_unacked()
            .filter_map(|(_, p)| p.info.crypto())
            .collect();
        if let Some(c) = sp.crypto_if_held() {
            for r in ranges {
                c.send.lost(r);
            }
        }
    }

    // ---- TLS ----

    /// Moves TLS output into the CRYPTO streams and installs new keys (RFC 9001 §4.1).
    fn write_tls(&mut self, now: Instant) -> Result<(), TransportError> {
        loop {
            let mut buf = Vec::new();
            let change = self.tls.write_hs(&mut buf);
            if !buf.is_empty() {
                if self.side.is_client() && self.tls_space == SpaceId::Initial {
                    self.on_client_hello(&buf);
                }
                self.spaces[self.tls_space as usize]
                    .crypto_mut()
                    .send
                    .write(buf.into());
            }
            let Some(change) = change else {
                break;
            };
            match self.keys_for_version(change)? {
                (keys, None) => {
                    self.spaces[SpaceId::Handshake as usize].keys = Some(Box::new(keys));
                    self.tls_space = SpaceId::Handshake;
                    if let Some(q) = self.qlog.on() {
                        q.key_updated(now, "client_handshake_secret", None, "tls");
                        q.key_updated(now, "server_handshake_secret", None, "tls");
                    }
                }
                (keys, Some(next)) => {
                    #[cfg_attr(
                        not(any(feature = "aws-lc-rs", feature = "ring")),
                        allow(unused_mut)
                    )]
                    let mut phase = KeyPhase::new(keys, next, self.config.key_update_interval);
                    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
                    if let Some(source) = self.versions.key_source.take() {
                        phase.set_source(source);
                    }
                    self.one_rtt = Some(phase);
                    self.tls_space = SpaceId::Data;
                    if let Some(q) = self.qlog.on() {
                        q.key_updated(now, "client_1rtt_secret", Some(0), "tls");
                        q.key_updated(now, "server_1rtt_secret", Some(0), "tls");
                    }
                }
            }
        }
        Ok(())
    }

    /// Discards a packet-number space's keys and in-flight packets (RFC 9001 §4.9, RFC 9002
    /// §6.4).
    fn discard_space(&mut self, space: SpaceId) {
        // Looked at first without `IndexMut`, which would bring a freed space back.
        if self.spaces[space as usize].discarded {
            return;
        }
        let sp = &mut self.spaces[space as usize];
        tracing::debug!(?space, "discarding keys");
        sp.discarded = true;
        sp.keys = None;
        let gone = sp.sent.discard();
        for (_, p) in &gone {
            p.info.forget_rate(&mut self.rate);
        }
        let sp = &mut self.spaces[space as usize];
        sp.unacked_eliciting = 0;
        sp.ack_deadline = None;
        sp.probes = 0;
        self.pto_count = 0;
        if space == SpaceId::Initial {
            // The original version's Initial keys go with the negotiated version's.
            self.versions.original_initial = None;
        }
        // Nothing of the space is sent or opened again: its CRYPTO streams, the packet numbers
        // it received and the space itself go (the idle-connection diet).
        self.spaces.free(space);
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Tests take one real Instant as their time origin.
pub(crate) mod tests;

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Tests take one real Instant as their time origin.
mod hostile_tests;
