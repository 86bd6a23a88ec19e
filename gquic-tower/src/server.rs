//! The accept loop: [`serve`] and [`serve_with`].

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::{Future, IntoFuture};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use gquic_hyper::server::ShutdownHandle;
use gquic_hyper::{ConnectionInfo, Incoming};
use gquic_transport::runtime::Endpoint;
use http::{Request, Response};
use tokio::sync::Notify;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
/// The accept loop, waiting for its optional shutdown signal.
type Runner = Box<dyn FnOnce(Option<BoxFuture<()>>, Options) -> BoxFuture<io::Result<()>> + Send>;

/// Per-server settings applied to every connection.
#[derive(Debug, Clone, Copy, Default)]
struct Options {
    webtransport: bool,
}

impl Options {
    fn builder(self) -> gquic_hyper::server::Builder {
        gquic_hyper::server::Builder::new().enable_webtransport(self.webtransport)
    }
}

/// A make-service from a closure: `MakeServiceFn::new(|info: &ConnectionInfo| service)`.
#[derive(Debug, Clone)]
pub struct MakeServiceFn<F> {
    f: F,
}

impl<F> MakeServiceFn<F> {
    /// Wraps `f`, called once per connection.
    pub fn new(f: F) -> Self {
        Self { f }
    }
}

impl<F, S> tower_service::Service<ConnectionInfo> for MakeServiceFn<F>
where
    F: FnMut(&ConnectionInfo) -> S,
{
    type Response = S;
    type Error = Infallible;
    type Future = std::future::Ready<Result<S, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, info: ConnectionInfo) -> Self::Future {
        std::future::ready(Ok((self.f)(&info)))
    }
}

/// Serves HTTP/3 on every connection `endpoint` accepts. `make_service` is called once per
/// connection with its [`ConnectionInfo`] and returns the service for that connection's
/// requests. Resolves when the endpoint closes, or, with
/// [`Serve::with_graceful_shutdown`], after a graceful shutdown.
pub fn serve<M, S, B>(endpoint: Endpoint, make_service: M) -> Serve
where
    M: tower_service::Service<ConnectionInfo, Response = S> + Clone + Send + 'static,
    M::Future: Send + 'static,
    M::Error: Into<BoxError>,
    S: tower_service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    serve_with(endpoint, move |info| {
        let mut make = make_service.clone();
        async move {
            std::future::poll_fn(|cx| make.poll_ready(cx)).await.ok()?;
            make.call(info).await.ok()
        }
    })
}

/// The general form of [`serve`]: `make` is an async function from the connection's
/// [`ConnectionInfo`] to its service, or `None` to refuse the connection.
pub fn serve_with<F, Fut, S, B>(endpoint: Endpoint, make: F) -> Serve
where
    F: FnMut(ConnectionInfo) -> Fut + Send + 'static,
    Fut: Future<Output = Option<S>> + Send + 'static,
    S: tower_service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let local = endpoint.local_addr();
    let run: Runner =
        Box::new(move |signal, options| Box::pin(run(endpoint, make, signal, options)));
    Serve {
        run,
        signal: None,
        local,
        options: Options::default(),
    }
}

/// The future of [`serve`]: await it (it is `IntoFuture`), optionally after
/// [`Serve::with_graceful_shutdown`].
#[must_use = "a server does nothing until awaited"]
pub struct Serve {
    run: Runner,
    signal: Option<BoxFuture<()>>,
    local: SocketAddr,
    options: Options,
}

impl std::fmt::Debug for Serve {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serve").field("local", &self.local).finish()
    }
}

/// A future that starts a graceful shutdown when it completes.
pub trait ShutdownSignal: Future<Output = ()> + Send + 'static {}

impl<T: Future<Output = ()> + Send + 'static> ShutdownSignal for T {}

impl Serve {
    /// When `signal` completes: stop accepting (new connections are refused), send GOAWAY
    /// on every connection, let in-flight requests finish, close the connections, and
    /// resolve once they are closed.
    pub fn with_graceful_shutdown(mut self, signal: impl ShutdownSignal) -> Self {
        self.signal = Some(Box::pin(signal));
        self
    }

    /// The UDP address being served.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }

    /// Accept WebTransport sessions on every connection (see
    /// `gquic_hyper::server::Builder::enable_webtransport`); handlers claim them with
    /// `gquic_hyper::webtransport::on`.
    pub fn enable_webtransport(mut self, enable: bool) -> Self {
        self.options.webtransport = enable;
        self
    }
}

impl IntoFuture for Serve {
    type Output = io::Result<()>;
    type IntoFuture = BoxFuture<io::Result<()>>;

    fn into_future(self) -> Self::IntoFuture {
        (self.run)(self.signal, self.options)
    }
}

#[derive(Default)]
struct Tracker {
    conns: Mutex<HashMap<u64, ShutdownHandle>>,
    shutting_down: AtomicBool,
    changed: Notify,
}

impl Tracker {
    fn live(&self) -> usize {
        self.conns.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

async fn run<F, Fut, S, B>(
    endpoint: Endpoint,
    make: F,
    signal: Option<BoxFuture<()>>,
    options: Options,
) -> io::Result<()>
where
    F: FnMut(ConnectionInfo) -> Fut + Send + 'static,
    Fut: Future<Output = Option<S>> + Send + 'static,
    S: tower_service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let tracker = Arc::new(Tracker::default());
    // Called from each connection's task once its handshake is done, so a slow handshake
    // never holds up the others.
    let make = Arc::new(Mutex::new(make));
    let mut signal = signal.unwrap_or_else(|| Box::pin(std::future::pending()));
    loop {
        tokio::select! {
            incoming = endpoint.accept() => {
                let Some(connecting) = incoming else { break };
                tokio::spawn(serve_one(connecting, make.clone(), tracker.clone(), options));
            }
            _ = &mut signal => {
                tracing::debug!(local = %endpoint.local_addr(), "graceful shutdown");
                break;
            }
        }
    }
    // Graceful shutdown: refuse newcomers, GOAWAY everywhere, wait for the drains.
    endpoint.refuse_new_connections(true);
    tracker.shutting_down.store(true, Ordering::SeqCst);
    let handles: Vec<ShutdownHandle> = tracker
        .conns
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .cloned()
        .collect();
    for h in handles {
        h.graceful_shutdown();
    }
    loop {
        let changed = tracker.changed.notified();
        if tracker.live() == 0 {
            break;
        }
        changed.await;
    }
    // Let the CONNECTION_CLOSE frames go out before resolving.
    endpoint.wait_idle().await;
    Ok(())
}

async fn serve_one<F, Fut, S, B>(
    connecting: gquic_transport::runtime::Connecting,
    make: Arc<Mutex<F>>,
    tracker: Arc<Tracker>,
    options: Options,
) where
    F: FnMut(ConnectionInfo) -> Fut + Send + 'static,
    Fut: Future<Output = Option<S>> + Send + 'static,
    S: tower_service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let remote = connecting.remote_address();
    let mut connecting = connecting;
    // Once the ClientHello is in (server name, ALPN known), the connection serves at once:
    // requests that came in 0-RTT are answered half a round trip before the handshake ends.
    if let Err(e) = connecting.handshake_data().await {
        tracing::debug!(%remote, error = %e, "handshake failed");
        return;
    }
    let conn = match connecting.into_0rtt() {
        Ok((conn, _)) => conn,
        Err(connecting) => match connecting.await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(%remote, error = %e, "handshake failed");
                return;
            }
        },
    };
    let info = ConnectionInfo::from_connection(&conn);
    let id = info.connection_id;
    let made = {
        let mut make = make.lock().unwrap_or_else(|e| e.into_inner());
        (make)(info)
    };
    let Some(service) = made.await else {
        conn.close(gquic_transport::VarInt::from_u32(0x10b), b"refused"); // H3_REQUEST_REJECTED
        return;
    };
    let served = options
        .builder()
        .serve_connection(conn, hyper_util::service::TowerToHyperService::new(service));
    let handle = served.shutdown_handle();
    tracker
        .conns
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id, handle.clone());
    if tracker.shutting_down.load(Ordering::SeqCst) {
        handle.graceful_shutdown();
    }
    if let Err(e) = served.await {
        tracing::debug!(%remote, error = %e, "connection ended");
    }
    tracker
        .conns
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&id);
    tracker.changed.notify_waiters();
}
