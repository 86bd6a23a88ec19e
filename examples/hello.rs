//! Run with: cargo run --release --example hello
//!
//! Serves an axum app on `https://localhost:4433` over HTTP/1.1 and HTTP/2 (TCP) and HTTP/3
//! (UDP) on the same port, with Alt-Svc advertising HTTP/3 on the TCP responses:
//!
//! - `/`: an HTML page that says which protocol it came over;
//! - `/bytes/{n}`: `n` bytes;
//! - `POST /echo`: the request body back;
//! - `/api/info`: JSON with the protocol, the client's address and the server's.
//!
//! The app carries tower-http trace, compression and timeout layers; it is a plain axum
//! `Router` that knows nothing about QUIC.
//!
//! Flags: `--listen ADDR` (default `127.0.0.1:4433`), `--cert cert.pem --key key.pem` to use
//! given PEM files. Without them it makes an ECDSA P-256 development certificate for
//! `localhost` (valid 14 days), writes it next to the system temp directory and prints its
//! path and the SPKI sha256 to give Chrome:
//!
//! ```text
//! chromium --origin-to-force-quic-on=localhost:4433 \
//!          --ignore-certificate-errors-spki-list=<SPKI> https://localhost:4433/
//! ```

#![allow(clippy::disallowed_methods)] // A program reads the real clock.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use axum::extract::{ConnectInfo, Path, Request};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tower_http::{compression::CompressionLayer, timeout::TimeoutLayer, trace::TraceLayer};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn protocol(req: &Request) -> &'static str {
    match req.version() {
        axum::http::Version::HTTP_3 => "h3",
        axum::http::Version::HTTP_2 => "h2",
        axum::http::Version::HTTP_11 => "http/1.1",
        _ => "other",
    }
}

/// The app: an ordinary axum Router with ordinary tower-http middleware.
fn app() -> Router {
    Router::new()
        .route(
            "/",
            get(|req: Request| async move {
                let proto = protocol(&req);
                Html(format!(
                    "<!doctype html><html><head><meta charset=\"utf-8\"><title>GQUIC hello</title></head>\
                     <body><h1>Hello from GQUIC</h1><p id=\"proto\">served over {proto}</p>\
                     <p><a href=\"/api/info\">/api/info</a> · <a href=\"/bytes/1024\">/bytes/1024</a></p>\
                     <p id=\"nav\">navigation protocol: unknown</p>\
                     <script>document.getElementById('nav').textContent = 'navigation protocol: ' + \
                     performance.getEntriesByType('navigation')[0].nextHopProtocol;</script>\
                     </body></html>"
                ))
            }),
        )
        .route(
            "/bytes/{n}",
            get(|Path(n): Path<usize>| async move {
                if n > 1 << 30 {
                    return (StatusCode::BAD_REQUEST, "at most 1 GiB").into_response();
                }
                Bytes::from(vec![b'x'; n]).into_response()
            }),
        )
        .route("/echo", post(|body: Bytes| async move { body }))
        .route(
            "/api/info",
            get(
                |ConnectInfo(peer): ConnectInfo<SocketAddr>, req: Request| async move {
                    let info = req.extensions().get::<gquic_axum::ConnectionInfo>().cloned();
                    Json(serde_json::json!({
                        "protocol": protocol(&req),
                        "peer": peer.to_string(),
                        "server_name": info.as_ref().and_then(|i| i.server_name.clone()),
                        "connection_id": info.as_ref().map(|i| i.connection_id),
                    }))
                },
            ),
        )
        .layer(CompressionLayer::new())
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(30),
        ))
        .layer(TraceLayer::new_for_http())
}

struct Args {
    listen: SocketAddr,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        listen: "127.0.0.1:4433".parse().expect("valid address"),
        cert: None,
        key: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => a.listen = value()?.parse().map_err(|e| format!("--listen: {e}"))?,
            "--cert" => a.cert = Some(value()?.into()),
            "--key" => a.key = Some(value()?.into()),
            other => return Err(format!("unknown flag {other}; use --listen, --cert, --key")),
        }
    }
    if a.cert.is_some() != a.key.is_some() {
        return Err("--cert and --key go together".into());
    }
    Ok(a)
}

/// A 14-day ECDSA P-256 certificate for localhost, written to disk; returns the chain, the
/// key, where it was written, and the base64 SPKI sha256 Chrome's
/// `--ignore-certificate-errors-spki-list` wants.
fn dev_certificate() -> Result<
    (
        Vec<CertificateDer<'static>>,
        PrivateKeyDer<'static>,
        PathBuf,
        String,
    ),
    BoxError,
> {
    use base64::Engine;
    use rcgen::PublicKeyData;
    use sha2::Digest;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
    let now = std::time::SystemTime::now();
    params.not_before = now.into();
    params.not_after = (now + Duration::from_secs(14 * 24 * 3600)).into();
    let cert = params.self_signed(&key)?;
    let dir = std::env::temp_dir().join("gquic-hello");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("cert.pem");
    std::fs::write(&path, cert.pem())?;
    std::fs::write(dir.join("key.pem"), key.serialize_pem())?;
    let spki = base64::engine::general_purpose::STANDARD
        .encode(sha2::Sha256::digest(key.subject_public_key_info()));
    Ok((
        vec![cert.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        path,
        spki,
    ))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = args().map_err(|e| -> BoxError { format!("hello: {e}").into() })?;
    let (chain, key) = match (&args.cert, &args.key) {
        (Some(c), Some(k)) => (
            CertificateDer::pem_file_iter(c)?.collect::<Result<Vec<_>, _>>()?,
            PrivateKeyDer::from_pem_file(k)?,
        ),
        _ => {
            let (chain, key, path, spki) = dev_certificate()?;
            println!("development certificate: {}", path.display());
            println!("SPKI sha256 (base64): {spki}");
            (chain, key)
        }
    };
    let provider = std::sync::Arc::new(gquic::transport::crypto::default_provider());
    let tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    let server = gquic_axum::dual::DualServer::bind(args.listen, tls).await?;
    let addr = server.local_addr();
    println!(
        "serving https://localhost:{} on {addr} (TCP: HTTP/1.1 + HTTP/2, UDP: HTTP/3)",
        addr.port()
    );
    server
        .serve(app())
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
            println!("shutting down gracefully");
        })
        .await?;
    Ok(())
}
