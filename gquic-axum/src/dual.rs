//! One origin on TCP and UDP: HTTP/1.1 and HTTP/2 over TLS on TCP (hyper-util) and HTTP/3 on
//! UDP, the same port number, the same rustls configuration, Alt-Svc on TCP responses, one
//! graceful shutdown for both.

use std::future::{Future, IntoFuture};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use gquic_tower::AltSvcLayer;
use gquic_transport::runtime::Endpoint;
use tower_layer::Layer;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A TCP listener and a QUIC endpoint bound to the same port, sharing one TLS configuration.
#[derive(Debug)]
pub struct DualServer {
    tcp: tokio::net::TcpListener,
    tcp_tls: Arc<rustls::ServerConfig>,
    endpoint: Endpoint,
    local: SocketAddr,
}

impl DualServer {
    /// Binds TCP and UDP on `addr` (port 0 picks a port free on both). `tls` is used for
    /// both: ALPN `h2` and `http/1.1` on TCP, `h3` on UDP.
    ///
    /// # Errors
    /// If either socket cannot be bound, or `tls` cannot do TLS 1.3 for QUIC.
    pub async fn bind(addr: SocketAddr, tls: rustls::ServerConfig) -> io::Result<Self> {
        Self::bind_sockets(addr, tls, 1).await
    }

    /// [`DualServer::bind`] with `quic_sockets` UDP sockets on the port in a `SO_REUSEPORT`
    /// group ([`Endpoint::server_reuseport`]): HTTP/3 connections are spread over that many
    /// shards, which a multi-thread runtime runs on several cores. One per core is the usual
    /// choice.
    ///
    /// # Errors
    /// As [`DualServer::bind`]; `quic_sockets` of 0, above 32, or above 1 on a platform
    /// without `SO_REUSEPORT`.
    pub async fn bind_sockets(
        addr: SocketAddr,
        tls: rustls::ServerConfig,
        quic_sockets: usize,
    ) -> io::Result<Self> {
        let mut tcp_tls = tls.clone();
        tcp_tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let mut quic_tls = tls;
        quic_tls.alpn_protocols = vec![b"h3".to_vec()];
        quic_tls.max_early_data_size = 0;
        let quic =
            gquic_transport::ServerConfig::new(Arc::new(quic_tls)).map_err(io::Error::other)?;
        // With port 0, take the TCP port the system chose and try the same for UDP.
        for _ in 0..16 {
            let tcp = tokio::net::TcpListener::bind(addr).await?;
            let local = tcp.local_addr()?;
            let endpoint = if quic_sockets == 1 {
                Endpoint::server(quic.clone(), local)
            } else {
                Endpoint::server_reuseport(quic.clone(), local, quic_sockets)
            };
            match endpoint {
                Ok(endpoint) => {
                    return Ok(Self {
                        tcp,
                        tcp_tls: Arc::new(tcp_tls),
                        endpoint,
                        local,
                    })
                }
                Err(e)
                    if addr.port() != 0
                        || !matches!(&e, gquic_transport::runtime::EndpointError::Io(_)) =>
                {
                    return Err(e.into())
                }
                Err(_) => continue,
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "no port free on both TCP and UDP",
        ))
    }

    /// The address both sockets are bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The QUIC endpoint serving HTTP/3 (for its [`Endpoint::stats`], say).
    pub fn quic_endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Serves `app` on both transports. Handlers can extract `ConnectInfo<SocketAddr>`;
    /// TCP responses carry `alt-svc: h3=":PORT"; ma=86400`.
    pub fn serve(self, app: Router) -> DualServe {
        DualServe {
            server: self,
            app,
            signal: None,
            webtransport: false,
        }
    }
}

/// The future of [`DualServer::serve`] (`IntoFuture<Output = io::Result<()>>`).
#[must_use = "a server does nothing until awaited"]
pub struct DualServe {
    server: DualServer,
    app: Router,
    signal: Option<BoxFuture<()>>,
    webtransport: bool,
}

impl std::fmt::Debug for DualServe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DualServe")
            .field("local", &self.server.local)
            .finish()
    }
}

impl DualServe {
    /// When `signal` completes, both transports stop accepting, let in-flight requests
    /// finish (GOAWAY on HTTP/2 and HTTP/3), close, and the future resolves.
    pub fn with_graceful_shutdown<F>(mut self, signal: F) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.signal = Some(Box::pin(signal));
        self
    }

    /// Accept WebTransport sessions over HTTP/3 (see [`crate::Serve::enable_webtransport`]);
    /// over TCP the [`crate::WebTransportUpgrade`] extractor rejects the request.
    pub fn enable_webtransport(mut self, enable: bool) -> Self {
        self.webtransport = enable;
        self
    }
}

impl IntoFuture for DualServe {
    type Output = io::Result<()>;
    type IntoFuture = BoxFuture<io::Result<()>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(run(self))
    }
}

async fn run(s: DualServe) -> io::Result<()> {
    let DualServe {
        server,
        app,
        signal,
        webtransport,
    } = s;
    let port = server.local.port();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut h3_stop = stop_rx.clone();
    let h3 = crate::serve(
        server.endpoint,
        app.clone()
            .into_make_service_with_connect_info::<SocketAddr>(),
    )
    .enable_webtransport(webtransport)
    .with_graceful_shutdown(async move {
        let _ = h3_stop.wait_for(|s| *s).await;
    });
    let h3 = tokio::spawn(h3.into_future());

    let alt_svc = AltSvcLayer::new(port, Duration::from_secs(86_400));
    let acceptor = tokio_rustls::TlsAcceptor::from(server.tcp_tls);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut signal = signal.unwrap_or_else(|| Box::pin(std::future::pending()));
    loop {
        tokio::select! {
            accepted = server.tcp.accept() => {
                let (stream, remote) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // Per-connection errors (e.g. EMFILE) must not end the server.
                        tracing::debug!(error = %e, "TCP accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                // `ConnectInfo<SocketAddr>` as `into_make_service_with_connect_info` provides it.
                let service = alt_svc.layer(axum::Extension(ConnectInfo(remote)).layer(app.clone()));
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let tls = match acceptor.accept(stream).await {
                        Ok(t) => t,
                        Err(e) => {
                            tracing::debug!(%remote, error = %e, "TLS handshake failed");
                            return;
                        }
                    };
                    let builder = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    );
                    let conn = builder.serve_connection_with_upgrades(
                        hyper_util::rt::TokioIo::new(tls),
                        hyper_util::service::TowerToHyperService::new(service),
                    );
                    if let Err(e) = watcher.watch(conn.into_owned()).await {
                        tracing::debug!(%remote, error = %e, "TCP connection ended");
                    }
                });
            }
            _ = &mut signal => break,
        }
    }
    drop(server.tcp);
    let _ = stop_tx.send(true);
    graceful.shutdown().await;
    h3.await.map_err(io::Error::other)??;
    Ok(())
}
