//! Serving HTTP/3 with a hyper `Service`: [`serve_connection`] and [`Builder`].

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use h3::error::Code;
use http::{Request, Response};
use http_body::Body;
use hyper::rt::Executor;
use hyper::service::Service;
use tokio::sync::Notify;

use crate::body::{content_length, Incoming};
use crate::error::Kind;
use crate::webtransport::{ConnectRecv, ConnectSend, Demux, PendingSession, Session};
use crate::Error;

/// Sessions announced in SETTINGS (h3's draft setting; Chromium does not read it).
const MAX_WEBTRANSPORT_SESSIONS: u64 = 64;

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What a service learns about the connection a request came on, in the request's extensions.
/// The extensions also carry the [`gquic_transport::runtime::Connection`] itself (for its
/// [`stats`](gquic_transport::runtime::Connection::stats), say).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionInfo {
    /// The client's address.
    pub remote_addr: SocketAddr,
    /// The address the client sent to: the server socket's address, with the IP address
    /// the client dialed when the socket is bound to a wildcard address (`0.0.0.0`, `::`;
    /// known on Linux).
    pub local_addr: SocketAddr,
    /// The server name (SNI) the client asked for.
    pub server_name: Option<String>,
    /// A number identifying the connection within its endpoint, for logs.
    pub connection_id: u64,
    /// The negotiated ALPN (`h3`).
    pub alpn: Option<Vec<u8>>,
    /// Whether the request arrived in 0-RTT data (RFC 9114 §10.9, RFC 8470): an attacker
    /// could replay it, so act on it only if repeating it is harmless (or answer 425 Too
    /// Early). Set per request; the server accepts 0-RTT with
    /// `gquic_transport::ServerConfig::enable_0rtt`.
    pub zero_rtt: bool,
}

impl ConnectionInfo {
    /// The information about `conn` that requests on it carry.
    pub fn from_connection(conn: &gquic_transport::runtime::Connection) -> Self {
        Self {
            remote_addr: conn.remote_address(),
            local_addr: conn.local_address(),
            server_name: conn.server_name(),
            connection_id: conn.stable_id(),
            alpn: conn.alpn(),
            zero_rtt: false,
        }
    }
}

/// Runs request futures on tokio (`tokio::spawn`). The default executor.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioExecutor;

impl<F> Executor<F> for TokioExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        tokio::spawn(fut);
    }
}

/// Settings for serving connections.
#[derive(Debug, Clone)]
pub struct Builder<E = TokioExecutor> {
    executor: E,
    extended_connect: bool,
    webtransport: bool,
}

impl Default for Builder<TokioExecutor> {
    fn default() -> Self {
        Self::new()
    }
}

impl Builder<TokioExecutor> {
    /// Requests run on tokio.
    pub fn new() -> Self {
        Self {
            executor: TokioExecutor,
            extended_connect: false,
            webtransport: false,
        }
    }
}

impl<E> Builder<E>
where
    E: Executor<BoxFuture> + Clone + Send + Sync + 'static,
{
    /// Requests run on `executor` (each request is one future).
    pub fn executor<E2>(self, executor: E2) -> Builder<E2> {
        Builder {
            executor,
            extended_connect: self.extended_connect,
            webtransport: self.webtransport,
        }
    }

    /// Accept extended CONNECT (RFC 9220: SETTINGS_ENABLE_CONNECT_PROTOCOL); the request's
    /// `:protocol` then reaches the service as a `hyper::ext::Protocol` extension.
    pub fn enable_extended_connect(mut self, enable: bool) -> Self {
        self.extended_connect = enable;
        self
    }

    /// Accept WebTransport sessions (draft-ietf-webtrans-http3, as Chromium speaks it):
    /// SETTINGS announce `SETTINGS_ENABLE_WEBTRANSPORT`, extended CONNECT and HTTP datagrams
    /// (RFC 9297). A WebTransport CONNECT request reaches the service with an empty body and a
    /// [`crate::webtransport::PendingSession`] in its extensions; the service claims it with
    /// [`crate::webtransport::on`] and answers 2xx. Sessions share the connection with
    /// ordinary requests; with this enabled, QUIC datagrams belong to the sessions.
    ///
    /// For datagrams the endpoint's transport config must accept them
    /// (`TransportConfig::datagram_receive_buffer_size`); Chromium requires that.
    pub fn enable_webtransport(mut self, enable: bool) -> Self {
        self.webtransport = enable;
        self
    }

    /// Serves HTTP/3 on an established connection (ALPN `h3`) with `service`. Each request
    /// runs concurrently. The returned future resolves when the connection ends.
    pub fn serve_connection<S, B>(
        &self,
        conn: gquic_transport::runtime::Connection,
        service: S,
    ) -> Connection
    where
        S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let shutdown = Arc::new(Shutdown::default());
        let fut = run(
            conn,
            service,
            self.executor.clone(),
            shutdown.clone(),
            self.extended_connect,
            self.webtransport,
        );
        Connection {
            fut: Box::pin(fut),
            shutdown,
        }
    }
}

/// Serves HTTP/3 on `conn` with `service`, running requests on tokio. See
/// [`Builder::serve_connection`].
///
/// Tower services work through `hyper_util::service::TowerToHyperService`.
pub fn serve_connection<S, B>(conn: gquic_transport::runtime::Connection, service: S) -> Connection
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    Builder::new().serve_connection(conn, service)
}

struct Shutdown {
    requested: AtomicBool,
    notify: Notify,
    in_flight: AtomicUsize,
    idle: Notify,
    /// Tells WebTransport sessions that the connection is shutting down.
    drain: tokio::sync::watch::Sender<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self {
            requested: AtomicBool::new(false),
            notify: Notify::new(),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            drain: tokio::sync::watch::channel(false).0,
        }
    }
}

/// Decrements the in-flight count when a request task ends, however it ends.
struct InFlight(Arc<Shutdown>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// A connection being served: a future that resolves when it ends.
#[must_use = "futures do nothing unless polled"]
pub struct Connection {
    fut: Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>,
    shutdown: Arc<Shutdown>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("gquic_hyper::server::Connection")
            .field(
                "in_flight",
                &self.shutdown.in_flight.load(Ordering::Relaxed),
            )
            .finish()
    }
}

impl Connection {
    /// Starts a graceful shutdown (RFC 9114 §5.2): sends GOAWAY so the client opens no new
    /// requests, lets the requests in flight finish, then closes the connection with
    /// H3_NO_ERROR. Keep polling the connection until it resolves.
    pub fn graceful_shutdown(&self) {
        self.shutdown.requested.store(true, Ordering::Release);
        self.shutdown.notify.notify_one();
    }

    /// A handle that can start the graceful shutdown from elsewhere.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.shutdown.clone())
    }
}

/// Starts the graceful shutdown of a served connection (see [`Connection::graceful_shutdown`]).
#[derive(Clone)]
pub struct ShutdownHandle(Arc<Shutdown>);

impl std::fmt::Debug for ShutdownHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ShutdownHandle")
    }
}

impl ShutdownHandle {
    /// See [`Connection::graceful_shutdown`].
    pub fn graceful_shutdown(&self) {
        self.0.requested.store(true, Ordering::Release);
        self.0.notify.notify_one();
    }
}

impl Future for Connection {
    type Output = Result<(), Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.fut.as_mut().poll(cx)
    }
}

async fn run<S, B, E>(
    conn: gquic_transport::runtime::Connection,
    service: S,
    executor: E,
    shutdown: Arc<Shutdown>,
    extended_connect: bool,
    webtransport: bool,
) -> Result<(), Error>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: Executor<BoxFuture>,
{
    let info = ConnectionInfo::from_connection(&conn);
    // A server knows whether it accepted 0-RTT once it has the ClientHello, before this
    // runs; without it no request can be early, and none needs asking about.
    let early = conn.zero_rtt_accepted() != Some(false);
    let span =
        tracing::debug_span!("h3_server", remote = %info.remote_addr, conn = info.connection_id);
    let quic = conn.clone();
    let demux = webtransport.then(|| Demux::start(conn.clone(), false));
    let mut builder = h3::server::builder();
    builder.enable_extended_connect(extended_connect || webtransport);
    let h3_conn = match &demux {
        Some(d) => {
            builder
                .enable_webtransport(true)
                .enable_datagram(true)
                .max_webtransport_sessions(MAX_WEBTRANSPORT_SESSIONS);
            gquic_transport::h3::Connection::with_source(conn, d.clone())
        }
        None => gquic_transport::h3::Connection::new(conn),
    };
    let mut h3c = builder
        .build::<_, Bytes>(h3_conn)
        .await
        .map_err(Error::connection)?;
    let mut draining = false;
    loop {
        if !draining && shutdown.requested.load(Ordering::Acquire) {
            draining = true;
            tracing::debug!(parent: &span, "graceful shutdown: GOAWAY");
            // WebTransport sessions count as requests in flight; they are asked to wrap up.
            shutdown.drain.send_replace(true);
            if let Err(e) = h3c.shutdown(0).await {
                tracing::debug!(parent: &span, error = %e, "GOAWAY failed");
                break;
            }
        }
        if draining && shutdown.in_flight.load(Ordering::Acquire) == 0 {
            break;
        }
        let accepted = tokio::select! {
            r = h3c.accept() => r,
            _ = shutdown.notify.notified(), if !draining => continue,
            _ = shutdown.idle.notified(), if draining => continue,
        };
        let resolver = match accepted {
            Ok(Some(r)) => r,
            Ok(None) => break,
            Err(e) if e.is_h3_no_error() => break,
            Err(e) => {
                tracing::debug!(parent: &span, error = %e, "connection ended");
                // Let the requests in flight see the error themselves.
                return Err(Error::connection(e));
            }
        };
        shutdown.in_flight.fetch_add(1, Ordering::AcqRel);
        let guard = InFlight(shutdown.clone());
        let service = service.clone();
        let info = info.clone();
        let quic = quic.clone();
        let span = span.clone();
        let demux = demux.clone();
        let drain = shutdown.drain.subscribe();
        executor.execute(Box::pin(async move {
            if let Err(e) =
                handle(resolver, service, info, (&quic, early), demux, guard, drain).await
            {
                tracing::debug!(parent: &span, error = %e, "request ended with an error");
            }
        }));
    }
    // Wait for the requests still running, then close cleanly.
    while shutdown.in_flight.load(Ordering::Acquire) > 0 {
        let idle = shutdown.idle.notified();
        if shutdown.in_flight.load(Ordering::Acquire) == 0 {
            break;
        }
        idle.await;
    }
    // The last responses may still be in flight: closing now would cut them off. Wait for
    // their acknowledgement, bounded in case the peer has stopped acknowledging.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), quic.flushed()).await;
    quic.close(
        gquic_transport::VarInt::from_u32(0x100), // H3_NO_ERROR (RFC 9114 §8.1)
        b"",
    );
    Ok(())
}

async fn handle<S, B>(
    resolver: h3::server::RequestResolver<gquic_transport::h3::Connection, Bytes>,
    service: S,
    mut info: ConnectionInfo,
    // The connection, and whether it accepted 0-RTT (else no request can be early).
    (quic, early): (&gquic_transport::runtime::Connection, bool),
    demux: Option<Arc<Demux>>,
    in_flight: InFlight,
    drain: tokio::sync::watch::Receiver<bool>,
) -> Result<(), Error>
where
    S: Service<Request<Incoming>, Response = Response<B>>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (req, stream) = resolver.resolve_request().await.map_err(Error::stream)?;
    let id = stream.id().into_inner();
    info.zero_rtt = early && quic.is_0rtt_stream(gquic_transport::StreamId(id));
    let (mut send, recv) = stream.split();
    let (parts, ()) = req.into_parts();
    // A WebTransport CONNECT (draft-ietf-webtrans-http3 §"Creating a New Session"): the
    // stream stays with the session, the service sees an empty body.
    let demux = demux.filter(|_| {
        parts.method == http::Method::CONNECT
            && parts.extensions.get::<h3::ext::Protocol>()
                == Some(&h3::ext::Protocol::WEB_TRANSPORT)
    });
    let (body, mut connect_recv) = match demux {
        Some(_) => (Incoming::empty(), Some(recv)),
        None => {
            let pace = gquic_transport::h3::pace_reads(quic, gquic_transport::StreamId(id));
            (
                Incoming::server(recv, content_length(&parts.headers), pace),
                None,
            )
        }
    };
    let mut req = Request::from_parts(parts, body);
    let pending = demux.as_ref().map(|d| {
        d.expect(id);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let pending = PendingSession {
            id,
            rx: Arc::new(std::sync::Mutex::new(Some(rx))),
        };
        req.extensions_mut().insert(pending.clone());
        (tx, pending)
    });
    // Extended CONNECT (RFC 9220): hyper's name for the :protocol pseudo-header.
    if let Some(p) = req.extensions().get::<h3::ext::Protocol>().copied() {
        let proto = if p == h3::ext::Protocol::WEB_TRANSPORT {
            Some(hyper::ext::Protocol::from_static("webtransport"))
        } else if p == h3::ext::Protocol::CONNECT_UDP {
            Some(hyper::ext::Protocol::from_static("connect-udp"))
        } else {
            None
        };
        if let Some(proto) = proto {
            req.extensions_mut().insert(proto);
        }
    }
    req.extensions_mut().insert(info);
    // The connection itself, for handlers that want its stats or to open streams.
    req.extensions_mut().insert(quic.clone());
    let response = match service.call(req).await {
        Ok(r) => r,
        Err(e) => {
            if let Some(d) = &demux {
                d.abandon(id);
            }
            // RFC 9114 §8.1: the request failed for a reason of ours.
            send.stop_stream(Code::H3_INTERNAL_ERROR);
            return Err(Error::new(Kind::Service, e.into()));
        }
    };
    let (mut parts, body) = response.into_parts();
    if let (Some(demux), Some((tx, pending))) = (demux, pending) {
        if parts.status.is_success() && pending.claimed() {
            // Chromium's draft-02 client insists on this header.
            parts
                .headers
                .entry(http::header::HeaderName::from_static(
                    "sec-webtransport-http3-draft",
                ))
                .or_insert(http::HeaderValue::from_static("draft02"));
            if let Err(e) = send.send_response(Response::from_parts(parts, ())).await {
                demux.abandon(id);
                return Err(Error::stream(e));
            }
            let recv = connect_recv.take().expect("kept for WebTransport");
            // The session holds the in-flight count until it ends, so a graceful shutdown
            // waits for it (after asking it to drain).
            let session = Session::start(
                id,
                demux,
                ConnectSend::Server(send),
                ConnectRecv::Server(recv),
                None,
                Some((Box::new(in_flight), drain)),
            );
            // If the handler gave up on it, dropping the session closes it.
            let _ = tx.send(Ok(session));
            return Ok(());
        }
        // Refused (or never claimed): an ordinary response ends the request.
        demux.abandon(id);
    }
    drop(connect_recv);
    send.send_response(Response::from_parts(parts, ()))
        .await
        .map_err(Error::stream)?;
    let mut body = std::pin::pin!(body);
    loop {
        let frame = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx))
            .await
            .map(|r| r.map_err(Into::<Box<dyn std::error::Error + Send + Sync>>::into));
        match frame {
            None => break,
            Some(Ok(frame)) => match frame.into_data() {
                Ok(mut data) => {
                    let bytes = data.copy_to_bytes(data.remaining());
                    if !bytes.is_empty() {
                        send.send_data(bytes).await.map_err(Error::stream)?;
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        send.send_trailers(trailers).await.map_err(Error::stream)?;
                        break;
                    }
                }
            },
            Some(Err(e)) => {
                send.stop_stream(Code::H3_INTERNAL_ERROR);
                return Err(Error::new(Kind::Body, e));
            }
        }
    }
    send.finish().await.map_err(Error::stream)
}
