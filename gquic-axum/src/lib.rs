//! # gquic-axum
//!
//! Serve an axum `Router` over HTTP/3 the way `axum::serve` serves it over
//! TCP, without changing a line of the app or its tower middleware:
//!
//! ```no_run
//! # async fn demo(endpoint: gquic_transport::runtime::Endpoint) -> std::io::Result<()> {
//! use axum::{routing::get, Router};
//!
//! let app = Router::new().route("/", get(|| async { "hello over HTTP/3" }));
//! gquic_axum::serve(endpoint, app)
//!     .with_graceful_shutdown(async { let _ = tokio::signal::ctrl_c().await; })
//!     .await
//! # }
//! ```
//!
//! `app.into_make_service()` and `app.into_make_service_with_connect_info::<SocketAddr>()`
//! work too; with the latter, handlers extract `ConnectInfo<SocketAddr>` (the client's UDP
//! address) exactly as over TCP. Every request also carries the connection's
//! [`ConnectionInfo`] (peer and local address, ALPN, server name, 0-RTT flag, connection id).
//!
//! [`dual::DualServer`] serves the same app over HTTP/1.1 and HTTP/2 on TCP and HTTP/3 on UDP
//! on one port, advertising HTTP/3 with Alt-Svc.
//!
//! WebTransport: with [`Serve::enable_webtransport`], handlers take sessions with the
//! [`WebTransportUpgrade`] extractor; sessions and ordinary requests share connections.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod dual;
mod webtransport;

pub use webtransport::{Session, SessionError, WebTransportUpgrade, WebTransportUpgradeRejection};

use std::convert::Infallible;
use std::future::{Future, IntoFuture};
use std::io;
use std::net::SocketAddr;

use axum::extract::connect_info::{Connected, IntoMakeServiceWithConnectInfo};
use axum::routing::IntoMakeService;
use axum::Router;
pub use gquic_hyper::{ConnectionInfo, Incoming};
use gquic_transport::runtime::Endpoint;
use http::{Request, Response};

/// What a make-service sees of a new connection (like `axum::serve::IncomingStream`).
#[derive(Debug, Clone, Copy)]
pub struct IncomingStream<'a> {
    info: &'a ConnectionInfo,
}

impl IncomingStream<'_> {
    /// The client's address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.info.remote_addr
    }

    /// Everything known about the connection.
    pub fn connection_info(&self) -> &ConnectionInfo {
        self.info
    }
}

impl Connected<IncomingStream<'_>> for SocketAddr {
    fn connect_info(stream: IncomingStream<'_>) -> Self {
        stream.remote_addr()
    }
}

impl Connected<IncomingStream<'_>> for ConnectionInfo {
    fn connect_info(stream: IncomingStream<'_>) -> Self {
        stream.info.clone()
    }
}

mod private {
    pub trait Sealed {}
}

/// What [`serve`] accepts: a `Router`, `router.into_make_service()` or
/// `router.into_make_service_with_connect_info::<C>()`. Sealed.
pub trait MakeService: private::Sealed + Clone + Send + 'static {
    /// The service for one connection's requests.
    type Service: tower_service::Service<
            Request<Incoming>,
            Response = Response<axum::body::Body>,
            Error = Infallible,
            Future: Send,
        > + Clone
        + Send
        + 'static;

    /// Makes the service for a new connection.
    fn make(&mut self, stream: IncomingStream<'_>) -> Self::Service;
}

impl private::Sealed for Router<()> {}

impl MakeService for Router<()> {
    type Service = Router<()>;

    fn make(&mut self, _stream: IncomingStream<'_>) -> Router<()> {
        self.clone()
    }
}

impl private::Sealed for IntoMakeService<Router<()>> {}

impl MakeService for IntoMakeService<Router<()>> {
    type Service = Router<()>;

    fn make(&mut self, stream: IncomingStream<'_>) -> Router<()> {
        ready(tower_service::Service::call(self, stream))
    }
}

impl<C> private::Sealed for IntoMakeServiceWithConnectInfo<Router<()>, C> {}

impl<C> MakeService for IntoMakeServiceWithConnectInfo<Router<()>, C>
where
    C: for<'a> Connected<IncomingStream<'a>>,
{
    type Service = axum::middleware::AddExtension<Router<()>, axum::extract::ConnectInfo<C>>;

    fn make(&mut self, stream: IncomingStream<'_>) -> Self::Service {
        ready(tower_service::Service::call(self, stream))
    }
}

/// axum's make-service futures are always ready; take the value without a runtime.
fn ready<F: Future<Output = Result<T, Infallible>>, T>(fut: F) -> T {
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(Ok(t)) => t,
        std::task::Poll::Ready(Err(e)) => match e {},
        // axum documents these futures as `Ready`; anything else is a bug upstream.
        std::task::Poll::Pending => unreachable!("axum make-service futures are ready"),
    }
}

/// Serves `make_service` (usually a `Router`) over HTTP/3 on every connection `endpoint`
/// accepts. Await the returned [`Serve`]; add [`Serve::with_graceful_shutdown`] to stop
/// cleanly.
pub fn serve<M: MakeService>(endpoint: Endpoint, make_service: M) -> Serve {
    let inner = gquic_tower::serve_with(endpoint, move |info: ConnectionInfo| {
        let mut make = make_service.clone();
        async move { Some(make.make(IncomingStream { info: &info })) }
    });
    Serve { inner }
}

/// The server future [`serve`] returns (`IntoFuture<Output = io::Result<()>>`).
#[must_use = "a server does nothing until awaited"]
#[derive(Debug)]
pub struct Serve {
    inner: gquic_tower::Serve,
}

impl Serve {
    /// When `signal` completes: stop accepting, send GOAWAY on every connection, let the
    /// requests in flight finish, close the connections, then resolve.
    pub fn with_graceful_shutdown<F>(self, signal: F) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        Self {
            inner: self.inner.with_graceful_shutdown(signal),
        }
    }

    /// Accept WebTransport sessions (draft-ietf-webtrans-http3, as Chromium speaks it) on
    /// every connection: handlers take them with the [`WebTransportUpgrade`] extractor,
    /// next to ordinary requests on the same connections.
    pub fn enable_webtransport(self, enable: bool) -> Self {
        Self {
            inner: self.inner.enable_webtransport(enable),
        }
    }

    /// The UDP address being served.
    ///
    /// # Errors
    /// Never in practice; `io::Result` mirrors `axum::serve`.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

impl IntoFuture for Serve {
    type Output = io::Result<()>;
    type IntoFuture = std::pin::Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        self.inner.into_future()
    }
}
