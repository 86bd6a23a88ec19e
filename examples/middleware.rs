//! Run with: cargo run --release --example middleware
//!
//! Composing tower layers around an axum app served over HTTP/3 (and HTTP/1.1 + HTTP/2 on the
//! same port): tower-http CORS and request-body limit, tower's concurrency limit, and a
//! custom layer that reads the QUIC connection's [`gquic_axum::ConnectionInfo`] and reports
//! it in a response header. The layers are ordinary tower layers; none knows about QUIC
//! except the custom one, which only reads a request extension.
//!
//! Flags: `--listen ADDR` (default `127.0.0.1:4434`). It makes a development certificate
//! for `localhost` and prints where it wrote it.

#![allow(clippy::disallowed_methods)] // A program reads the real clock.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::http::{HeaderValue, Request, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tower::{Layer, Service, ServiceBuilder};
use tower_http::{cors::CorsLayer, limit::RequestBodyLimitLayer};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Adds `x-quic-peer: <address> conn=<id>` to responses of requests that came over QUIC.
#[derive(Debug, Clone, Copy)]
struct QuicPeerLayer;

impl<S> Layer<S> for QuicPeerLayer {
    type Service = QuicPeer<S>;

    fn layer(&self, inner: S) -> QuicPeer<S> {
        QuicPeer { inner }
    }
}

#[derive(Debug, Clone)]
struct QuicPeer<S> {
    inner: S,
}

impl<S, B, R> Service<Request<B>> for QuicPeer<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<R>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let peer = req
            .extensions()
            .get::<gquic_axum::ConnectionInfo>()
            .map(|i| format!("{} conn={}", i.remote_addr, i.connection_id));
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut resp = fut.await?;
            if let Some(v) = peer.and_then(|p| HeaderValue::from_str(&p).ok()) {
                resp.headers_mut().insert("x-quic-peer", v);
            }
            Ok(resp)
        })
    }
}

fn app() -> Router {
    Router::new()
        .route("/", get(|| async { "hello through four layers\n" }))
        .route("/hello", get(|| async { "hello through four layers\n" }))
        .route(
            "/upload",
            post(|body: Bytes| async move { format!("{} bytes\n", body.len()) }),
        )
        .layer(
            ServiceBuilder::new()
                .layer(QuicPeerLayer)
                .layer(RequestBodyLimitLayer::new(1 << 20))
                .layer(CorsLayer::permissive())
                .layer(tower::limit::ConcurrencyLimitLayer::new(64)),
        )
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let mut listen: SocketAddr = "127.0.0.1:4434".parse()?;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => listen = args.next().ok_or("--listen needs a value")?.parse()?,
            other => return Err(format!("unknown flag {other}; use --listen ADDR").into()),
        }
    }
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()])?;
    let dir = std::env::temp_dir().join("gquic-middleware");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("cert.pem"), cert.cert.pem())?;
    println!(
        "development certificate: {}",
        dir.join("cert.pem").display()
    );
    let provider = std::sync::Arc::new(gquic::transport::crypto::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der())),
        )?;
    // SSLKEYLOGFILE: NSS key log lines for Wireshark (nothing while the variable is unset).
    tls.key_log = std::sync::Arc::new(rustls::KeyLogFile::new());
    let server = gquic_axum::dual::DualServer::bind(listen, tls).await?;
    println!("serving https://localhost:{}", server.local_addr().port());
    server
        .serve(app())
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
