//! The bottom of the stack: one multiplexed HTTP/3 connection per origin, dialed on demand
//! (concurrent dials coalesced), replaced when it dies, evicted when idle.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use gquic_hyper::client::SendRequest;
use gquic_transport::runtime::Endpoint;
use http::{Request, Response};
use http_body::Frame;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::body::Body;
use crate::error::{Error, Kind};
use crate::ResBody;

/// The peer address of the connection a response came on (a response extension).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RemoteAddr(pub(crate) SocketAddr);

/// A response extension: `ZeroRtt(true)` when the request went in 0-RTT data that the server
/// accepted (see [`crate::ClientBuilder::zero_rtt`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZeroRtt(pub bool);

/// Origins whose TLS session tickets are kept (the oldest-dialed are forgotten beyond this).
const MAX_TICKET_ORIGINS: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Origin {
    host: String,
    port: u16,
}

/// How requests go out on a connection.
#[derive(Clone)]
enum Sender {
    H3(SendRequest<Body>),
    /// The HTTP/2 fallback over TCP (`http2_fallback`).
    H2(hyper::client::conn::http2::SendRequest<Body>),
}

impl Sender {
    fn is_closed(&self) -> bool {
        match self {
            Sender::H3(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }
}

#[derive(Clone)]
struct Conn {
    send: Sender,
    remote: SocketAddr,
    id: u64,
    in_flight: Arc<AtomicUsize>,
    /// An HTTP/3 connection used before its handshake completed (0-RTT): the QUIC
    /// connection, and `true` on the channel once the handshake is over.
    early: Option<(
        gquic_transport::runtime::Connection,
        tokio::sync::watch::Receiver<bool>,
    )>,
}

/// RFC 9110 §9.2.2: methods whose requests can be repeated, so may go in 0-RTT.
fn idempotent(method: &http::Method) -> bool {
    use http::Method;
    [
        Method::GET,
        Method::HEAD,
        Method::PUT,
        Method::DELETE,
        Method::OPTIONS,
        Method::TRACE,
    ]
    .contains(method)
}

/// What the client learned about reaching an origin (with `http2_fallback`).
#[derive(Debug, Clone, Copy, Default)]
struct Route {
    /// QUIC did not get through; HTTP/2 did.
    h2_only: bool,
    /// An `alt-svc: h3=":port"` advertisement, until it expires.
    alt: Option<(u16, Instant)>,
}

/// How long QUIC gets alone before HTTP/2 over TCP joins the race.
const FALLBACK_DELAY: Duration = Duration::from_millis(300);

/// Connection IDs for HTTP/2 connections (QUIC ones use the transport's stable ID).
static H2_IDS: AtomicUsize = AtomicUsize::new(0);

/// Why a dial failed, kept for the callers that waited on it.
#[derive(Clone, Debug)]
struct DialError {
    message: String,
    timeout: bool,
}

impl DialError {
    fn to_error(&self) -> Error {
        if self.timeout {
            Error::timeout_with(Kind::Connect, self.message.clone())
        } else {
            Error::connect(self.message.clone())
        }
    }
}

struct Slot {
    cell: OnceCell<Result<Conn, DialError>>,
    last_used: Mutex<Instant>,
}

impl Slot {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            cell: OnceCell::new(),
            last_used: Mutex::new(Instant::now()),
        })
    }

    fn touch(&self) {
        *self.last_used.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    /// Idle for longer than `timeout` with no request in flight.
    fn idle_for(&self, timeout: Duration, now: Instant) -> bool {
        let idle = now.duration_since(*self.last_used.lock().unwrap_or_else(|e| e.into_inner()));
        let busy = match self.cell.get() {
            Some(Ok(c)) => c.in_flight.load(Ordering::Acquire) > 0,
            Some(Err(_)) => false,
            None => true, // still dialing
        };
        !busy && idle > timeout
    }
}

pub(crate) struct PoolConfig {
    pub(crate) tls: Arc<rustls::ClientConfig>,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) max_idle_per_host: usize,
    pub(crate) connect_timeout: Option<Duration>,
    pub(crate) local_address: Option<IpAddr>,
    pub(crate) http2_fallback: bool,
    pub(crate) zero_rtt: bool,
}

pub(crate) struct Pool {
    config: PoolConfig,
    v4: OnceCell<Endpoint>,
    v6: OnceCell<Endpoint>,
    slots: Mutex<HashMap<Origin, Arc<Slot>>>,
    routes: Mutex<HashMap<Origin, Route>>,
    /// The TLS configuration per origin: each has its own session ticket store, so tickets
    /// (and 0-RTT) are per origin, not per host name.
    tls: Mutex<HashMap<Origin, (Arc<rustls::ClientConfig>, Instant)>>,
}

impl Pool {
    pub(crate) fn new(config: PoolConfig) -> Self {
        Self {
            config,
            v4: OnceCell::new(),
            v6: OnceCell::new(),
            slots: Mutex::new(HashMap::new()),
            routes: Mutex::new(HashMap::new()),
            tls: Mutex::new(HashMap::new()),
        }
    }

    /// Closes every HTTP/3 connection (H3_NO_ERROR, RFC 9114 §8.1) and waits, at most
    /// `bound`, for the closes to be sent; drops the pooled connections.
    pub(crate) async fn close(&self, bound: Duration) {
        let endpoints: Vec<&Endpoint> = [self.v4.get(), self.v6.get()]
            .into_iter()
            .flatten()
            .collect();
        for ep in &endpoints {
            ep.close(gquic_transport::VarInt::from_u32(0x100), b"");
        }
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).clear();
        // Until the closes are on the wire, not through the closing periods (RFC 9000 §10.2:
        // the socket closes with the process).
        let _ = tokio::time::timeout(bound, async {
            for ep in endpoints {
                ep.wait_closes_sent().await;
            }
        })
        .await;
    }

    /// The TLS configuration for QUIC connections to `origin`, with its own ticket store.
    fn origin_tls(&self, origin: &Origin) -> Arc<rustls::ClientConfig> {
        let mut map = self.tls.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if let Some((tls, used)) = map.get_mut(origin) {
            *used = now;
            return tls.clone();
        }
        if map.len() >= MAX_TICKET_ORIGINS {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(o, _)| o.clone())
            {
                map.remove(&oldest);
            }
        }
        let mut tls = (*self.config.tls).clone();
        tls.resumption = rustls::client::Resumption::in_memory_sessions(8);
        tls.enable_early_data = self.config.zero_rtt;
        let tls = Arc::new(tls);
        map.insert(origin.clone(), (tls.clone(), now));
        tls
    }

    fn route(&self, origin: &Origin) -> Route {
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        let r = routes.entry(origin.clone()).or_default();
        if r.alt.is_some_and(|(_, until)| until <= Instant::now()) {
            r.alt = None;
        }
        *r
    }

    fn set_route(&self, origin: &Origin, f: impl FnOnce(&mut Route)) {
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        f(routes.entry(origin.clone()).or_default());
    }

    /// Dials `origin`: over QUIC, or with `http2_fallback` as a race in which HTTP/2 over
    /// TCP joins after a short delay (or at once if QUIC fails), remembering the winner.
    /// An `alt-svc` advertisement sends the next dial to HTTP/3 again.
    async fn dial(&self, origin: &Origin) -> Result<Conn, DialError> {
        if !self.config.http2_fallback {
            return self.dial_h3(origin, origin.port).await;
        }
        let route = self.route(origin);
        if route.h2_only && route.alt.is_none() {
            return self.dial_h2(origin).await;
        }
        let h3_port = route.alt.map_or(origin.port, |(p, _)| p);
        let h3 = self.dial_h3(origin, h3_port);
        tokio::pin!(h3);
        let early = tokio::select! {
            r = &mut h3 => Some(r),
            () = tokio::time::sleep(FALLBACK_DELAY) => None,
        };
        let won_h2 = |c: Conn| {
            self.set_route(origin, |r| {
                r.h2_only = true;
                r.alt = None;
            });
            c
        };
        match early {
            Some(Ok(c)) => return Ok(c),
            Some(Err(e)) => {
                tracing::debug!(error = %e.message, "QUIC failed: HTTP/2 over TCP");
                return self.dial_h2(origin).await.map(won_h2).map_err(|_| e);
            }
            None => {}
        }
        let h2 = self.dial_h2(origin);
        tokio::pin!(h2);
        tokio::select! {
            r = &mut h3 => match r {
                Ok(c) => Ok(c),
                Err(e) => h2.await.map(won_h2).map_err(|_| e),
            },
            r = &mut h2 => match r {
                Ok(c) => Ok(won_h2(c)),
                Err(_) => h3.await,
            },
        }
    }

    /// HTTP/2 over TLS over TCP (ALPN `h2`), with hyper.
    async fn dial_h2(&self, origin: &Origin) -> Result<Conn, DialError> {
        let fail = |e: &dyn std::fmt::Display| DialError {
            message: format!("{}:{} (HTTP/2): {e}", origin.host, origin.port),
            timeout: false,
        };
        let host = origin.host.trim_start_matches('[').trim_end_matches(']');
        let dial = async {
            let tcp = tokio::net::TcpStream::connect((host, origin.port))
                .await
                .map_err(|e| fail(&e))?;
            let remote = tcp.peer_addr().map_err(|e| fail(&e))?;
            let _ = tcp.set_nodelay(true);
            let mut tls = (*self.config.tls).clone();
            tls.alpn_protocols = vec![b"h2".to_vec()];
            let name =
                rustls::pki_types::ServerName::try_from(host.to_owned()).map_err(|e| fail(&e))?;
            let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
                .connect(name, tcp)
                .await
                .map_err(|e| fail(&e))?;
            if stream.get_ref().1.alpn_protocol() != Some(b"h2") {
                return Err(fail(&"the server did not agree to HTTP/2"));
            }
            let (send, conn) = hyper::client::conn::http2::handshake(
                hyper_util::rt::TokioExecutor::new(),
                hyper_util::rt::TokioIo::new(stream),
            )
            .await
            .map_err(|e| fail(&e))?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "HTTP/2 connection ended");
                }
            });
            tracing::debug!(%remote, host, "connected over HTTP/2");
            Ok(Conn {
                send: Sender::H2(send),
                remote,
                id: u64::MAX - H2_IDS.fetch_add(1, Ordering::Relaxed) as u64,
                in_flight: Arc::new(AtomicUsize::new(0)),
                early: None,
            })
        };
        match self.config.connect_timeout {
            Some(t) => tokio::time::timeout(t, dial).await.map_err(|_| DialError {
                message: format!(
                    "{}:{}: no TLS handshake within {t:?}",
                    origin.host, origin.port
                ),
                timeout: true,
            })?,
            None => dial.await,
        }
    }

    /// Reads `alt-svc` on an HTTP/2 response (RFC 7838): the first `h3` alternative on this
    /// host is used until its `ma` expires; `clear` forgets alternatives.
    fn alt_svc(&self, origin: &Origin, value: &str) {
        match gquic_tower::parse_alt_svc(value) {
            Some(gquic_tower::AltSvcValue::Clear) => self.set_route(origin, |r| r.alt = None),
            Some(gquic_tower::AltSvcValue::Alternatives(alts)) => {
                // Only the same host: another one would need its own certificate check.
                let h3 = alts.iter().find(|a| {
                    a.protocol == "h3" && a.host.as_deref().is_none_or(|h| h == origin.host)
                });
                if let Some(a) = h3 {
                    let until = Instant::now() + a.max_age;
                    self.set_route(origin, |r| r.alt = Some((a.port, until)));
                }
            }
            None => {}
        }
    }

    /// The client endpoint for `family` (created on first use, so a client can be built
    /// outside a runtime).
    async fn endpoint(&self, v6: bool) -> Result<&Endpoint, Error> {
        let cell = if v6 { &self.v6 } else { &self.v4 };
        cell.get_or_try_init(|| async {
            let ip = match (self.config.local_address, v6) {
                (Some(ip), _) => ip,
                (None, false) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                (None, true) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            };
            Endpoint::client(SocketAddr::new(ip, 0)).map_err(Error::connect)
        })
        .await
    }

    async fn dial_h3(&self, origin: &Origin, port: u16) -> Result<Conn, DialError> {
        let fail = |e: &dyn std::fmt::Display| DialError {
            message: format!("{}:{}: {e}", origin.host, origin.port),
            timeout: false,
        };
        let host = origin.host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| fail(&e))?
            .collect();
        // Prefer the family of the local address, if one was given.
        let addr = addrs
            .iter()
            .find(|a| {
                self.config
                    .local_address
                    .is_none_or(|l| l.is_ipv6() == a.is_ipv6())
            })
            .or(addrs.first())
            .copied()
            .ok_or_else(|| fail(&"no address"))?;
        let endpoint = self.endpoint(addr.is_ipv6()).await.map_err(|e| fail(&e))?;
        let config =
            gquic_transport::ClientConfig::new(self.origin_tls(origin)).map_err(|e| fail(&e))?;
        let connecting = endpoint
            .connect_with(config, addr, host)
            .map_err(|e| fail(&e))?;
        let timeout = self.config.connect_timeout;
        let no_handshake = |t: Duration| DialError {
            message: format!("{}:{}: no handshake within {t:?}", origin.host, origin.port),
            timeout: true,
        };
        // With a ticket allowing early data, the connection is used at once (0-RTT).
        let (conn, early) = match connecting.into_0rtt() {
            Ok((conn, accepted)) => {
                let (tx, rx) = tokio::sync::watch::channel(false);
                let watched = conn.clone();
                tokio::spawn(async move {
                    let handshake = async {
                        let accepted = accepted.await;
                        tracing::debug!(accepted, "0-RTT outcome");
                    };
                    match timeout {
                        // The handshake still has `connect_timeout` to complete: requests sent
                        // in 0-RTT then fail as a connection that could not be made.
                        Some(t) => {
                            if tokio::time::timeout(t, handshake).await.is_err() {
                                watched.close(gquic_transport::VarInt::from_u32(0x10c), b"");
                            }
                        }
                        None => handshake.await,
                    }
                    let _ = tx.send(true);
                });
                (conn.clone(), Some((conn, rx)))
            }
            Err(connecting) => {
                let conn = match timeout {
                    Some(t) => tokio::time::timeout(t, connecting)
                        .await
                        .map_err(|_| no_handshake(t))?,
                    None => connecting.await,
                }
                .map_err(|e| fail(&e))?;
                (conn, None)
            }
        };
        let id = conn.stable_id();
        let (send, driver) = gquic_hyper::client::handshake::<Body>(conn)
            .await
            .map_err(|e| fail(&e))?;
        tokio::spawn(async move {
            if let Err(e) = driver.await {
                tracing::debug!(error = %e, "HTTP/3 connection ended");
            }
        });
        tracing::debug!(%addr, host, zero_rtt = early.is_some(), "connected");
        Ok(Conn {
            send: Sender::H3(send),
            remote: addr,
            id,
            in_flight: Arc::new(AtomicUsize::new(0)),
            early,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Origin, Arc<Slot>>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A live connection to `origin`: the pooled one, or a new one (one dial however many
    /// callers wait for it).
    async fn checkout(&self, origin: &Origin) -> Result<Conn, Error> {
        if self.config.max_idle_per_host == 0 {
            return self.dial(origin).await.map_err(|e| e.to_error());
        }
        loop {
            let slot = {
                let mut slots = self.lock();
                if let Some(timeout) = self.config.idle_timeout {
                    let now = Instant::now();
                    slots.retain(|_, s| !s.idle_for(timeout, now));
                }
                slots
                    .entry(origin.clone())
                    .or_insert_with(Slot::new)
                    .clone()
            };
            let result = slot.cell.get_or_init(|| self.dial(origin)).await;
            match result {
                Ok(c) if !c.send.is_closed() => {
                    slot.touch();
                    return Ok(c.clone());
                }
                Ok(_) => self.remove(origin, &slot),
                Err(e) => {
                    self.remove(origin, &slot);
                    // The dial failed (ours, or the one we waited for): report it.
                    return Err(e.to_error());
                }
            }
        }
    }

    fn remove(&self, origin: &Origin, slot: &Arc<Slot>) {
        let mut slots = self.lock();
        if slots.get(origin).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            slots.remove(origin);
        }
    }

    /// Drops the pooled connection to `origin` if it is connection `id` (it failed).
    fn evict(&self, origin: &Origin, id: u64) {
        let mut slots = self.lock();
        let dead = slots
            .get(origin)
            .and_then(|s| s.cell.get())
            .is_some_and(|r| r.as_ref().is_ok_and(|c| c.id == id));
        if dead {
            slots.remove(origin);
        }
    }

    /// Connections currently pooled (for tests and stats).
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

/// The pool as a tower service: sends each request on its origin's connection.
#[derive(Clone)]
pub(crate) struct PoolService {
    pub(crate) pool: Arc<Pool>,
}

impl tower_service::Service<Request<Body>> for PoolService {
    type Response = Response<ResBody>;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ResBody>, Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let pool = self.pool.clone();
        Box::pin(async move {
            let uri = req.uri();
            if uri.scheme_str() != Some("https") {
                return Err(Error::builder(format!(
                    "HTTP/3 needs an https URL, not {uri}"
                )));
            }
            let origin = Origin {
                host: uri
                    .host()
                    .ok_or_else(|| Error::builder(format!("URL {uri} has no host")))?
                    .to_owned(),
                port: uri.port_u16().unwrap_or(443),
            };
            let conn = pool.checkout(&origin).await?;
            conn.in_flight.fetch_add(1, Ordering::AcqRel);
            let guard = InFlight(conn.in_flight.clone());
            let remote = conn.remote;
            // 0-RTT: an idempotent request goes now; any other waits for the handshake.
            let mut sent_early = None;
            if let Some((quic, done)) = &conn.early {
                if quic.is_0rtt() && idempotent(req.method()) {
                    sent_early = Some(quic.clone());
                } else {
                    let mut done = done.clone();
                    let _ = done.wait_for(|d| *d).await;
                }
            }
            let sent = match conn.send.clone() {
                Sender::H3(mut send) => {
                    // Wait for room under the peer's stream limit (RFC 9000 §4.6).
                    match std::future::poll_fn(|cx| send.poll_ready(cx)).await {
                        Ok(()) => send.send_request(req).await.map(|r| {
                            r.map(|body| {
                                ResBody::new(Tracked {
                                    inner: body,
                                    _guard: guard,
                                })
                            })
                        }),
                        Err(e) => Err(e),
                    }
                    .map_err(|e| Error::from_h3(e, true))
                }
                Sender::H2(mut send) => {
                    let sent = match send.ready().await {
                        Ok(()) => send.send_request(req).await,
                        Err(e) => Err(e),
                    };
                    match sent {
                        Ok(r) => {
                            if let Some(v) = r
                                .headers()
                                .get(http::header::ALT_SVC)
                                .and_then(|v| v.to_str().ok())
                            {
                                pool.alt_svc(&origin, v);
                                if pool.route(&origin).alt.is_some() {
                                    // The next request goes to HTTP/3.
                                    pool.evict(&origin, conn.id);
                                }
                            }
                            Ok(r.map(|body| {
                                ResBody::new(Tracked {
                                    inner: body,
                                    _guard: guard,
                                })
                            }))
                        }
                        Err(e) => Err(Error::from_h2(e)),
                    }
                }
            };
            let mut resp = match sent {
                Ok(r) => r,
                Err(err) => {
                    if err.connection_failed {
                        pool.evict(&origin, conn.id);
                    }
                    return Err(err);
                }
            };
            resp.extensions_mut().insert(RemoteAddr(remote));
            // The response came in 1-RTT packets, so the client knows the 0-RTT outcome; the
            // request went in 0-RTT if its stream's data did.
            let stream = resp
                .extensions()
                .get::<gquic_transport::StreamId>()
                .copied();
            let zero_rtt = sent_early.is_some_and(|q| {
                q.zero_rtt_accepted() == Some(true) && stream.is_some_and(|s| q.is_0rtt_stream(s))
            });
            resp.extensions_mut().insert(ZeroRtt(zero_rtt));
            Ok(resp)
        })
    }
}

/// Counts a request in flight on its connection until its response body is dropped.
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

struct Tracked<B> {
    inner: B,
    _guard: InFlight,
}

impl<B> http_body::Body for Tracked<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<crate::error::BoxError>,
{
    type Data = Bytes;
    type Error = crate::error::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner)
            .poll_frame(cx)
            .map(|o| o.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
