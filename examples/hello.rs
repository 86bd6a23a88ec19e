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

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, Path, Request};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use tower_http::{compression::CompressionLayer, timeout::TimeoutLayer, trace::TraceLayer};

use common::BoxError;

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

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    common::init_tracing();
    let args = common::args().map_err(|e| -> BoxError { format!("hello: {e}").into() })?;
    let tls = common::server_tls(&args, "gquic-hello")?;
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
