//! Run with: cargo run --release --example hello
//!
//! Serves an axum app on `https://localhost:4433` over HTTP/1.1 and HTTP/2 (TCP) and HTTP/3
//! (UDP) on the same port, with Alt-Svc advertising HTTP/3 on the TCP responses:
//!
//! - `/`: an HTML page that says which protocol it came over;
//! - `/bytes/{n}`: `n` bytes;
//! - `POST /echo`: the request body back;
//! - `/api/info`: JSON with the protocol, the client's address and the server's; over
//!   HTTP/3 also the connection's stats (RTT, congestion window, path MTU, handshake time,
//!   packets and bytes) and the QUIC endpoint's (connections, datagrams, Retry packets).
//!
//! The app carries tower-http trace, compression and timeout layers; it is a plain axum
//! `Router` that knows nothing about QUIC.
//!
//! Flags: `--listen ADDR` (default `127.0.0.1:4433`), `--cert cert.pem --key key.pem` to use
//! given PEM files, `--quic-sockets N` to spread HTTP/3 over N UDP sockets in a
//! `SO_REUSEPORT` group (one shard each; default 1), `--qlog DIR` to write a qlog trace of every QUIC connection into DIR (as
//! the `QLOGDIR` variable does; open them in qvis). `SSLKEYLOGFILE` is honoured (TLS secrets
//! for Wireshark). Without them it makes an ECDSA P-256 development certificate for
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

/// A QUIC connection's stats as JSON (`Connection::stats`).
fn connection_stats(c: &gquic::transport::runtime::Connection) -> serde_json::Value {
    let s = c.stats();
    let n = s.counters;
    serde_json::json!({
        "rtt_ms": s.rtt.as_secs_f64() * 1e3,
        "min_rtt_ms": s.min_rtt.as_secs_f64() * 1e3,
        "congestion_window": s.congestion_window,
        "bytes_in_flight": s.bytes_in_flight,
        "path_mtu": s.path_mtu,
        "handshake_ms": s.handshake_duration.map(|d| d.as_secs_f64() * 1e3),
        "open_streams": s.open_streams,
        "datagrams_sent": n.datagrams_sent,
        "datagrams_received": n.datagrams_received,
        "bytes_sent": n.bytes_sent,
        "bytes_received": n.bytes_received,
        "packets_sent": n.packets_sent,
        "packets_received": n.packets_received,
        "packets_lost": n.packets_lost,
        "packets_dropped": n.packets_dropped,
        "key_updates": n.key_updates,
        "migrations": n.migrations,
        "ecn_ce": n.ecn_ce,
    })
}

/// The QUIC endpoint's stats as JSON (`Endpoint::stats`).
fn endpoint_stats(e: &gquic::transport::runtime::Endpoint) -> serde_json::Value {
    let s = e.stats();
    serde_json::json!({
        "open_connections": e.open_connections(),
        "accepted": s.accepted,
        "refused": s.refused,
        "drained": s.drained,
        "retries": s.retries,
        "version_negotiations": s.version_negotiations,
        "stateless_resets": s.stateless_resets,
        "datagrams_received": s.datagrams_received,
        "bytes_received": s.bytes_received,
        "datagrams_sent": s.datagrams_sent,
        "bytes_sent": s.bytes_sent,
        "dropped": s.dropped,
        "sockets": e.sockets(),
        "tossed": s.tossed,
        "accepted_per_socket": e.socket_stats().iter().map(|s| s.accepted).collect::<Vec<_>>(),
    })
}

/// The app: an ordinary axum Router with ordinary tower-http middleware; `endpoint` is the
/// QUIC endpoint whose stats `/api/info` shows.
fn app(endpoint: Option<gquic::transport::runtime::Endpoint>) -> Router {
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
                move |ConnectInfo(peer): ConnectInfo<SocketAddr>, req: Request| {
                    let endpoint = endpoint.clone();
                    async move {
                    let info = req.extensions().get::<gquic_axum::ConnectionInfo>().cloned();
                    let conn = req
                        .extensions()
                        .get::<gquic::transport::runtime::Connection>()
                        .map(connection_stats);
                    Json(serde_json::json!({
                        "protocol": protocol(&req),
                        "peer": peer.to_string(),
                        "server_name": info.as_ref().and_then(|i| i.server_name.clone()),
                        "connection_id": info.as_ref().map(|i| i.connection_id),
                        "connection": conn,
                        "endpoint": endpoint.as_ref().map(endpoint_stats),
                    }))
                    }
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

fn main() -> Result<(), BoxError> {
    let args = common::args().map_err(|e| -> BoxError { format!("hello: {e}").into() })?;
    // Before the runtime's threads exist: it sets QLOGDIR.
    common::qlog_dir(&args)?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: common::Args) -> Result<(), BoxError> {
    common::init_tracing();
    let tls = common::server_tls(&args, "gquic-hello")?;
    let server =
        gquic_axum::dual::DualServer::bind_sockets(args.listen, tls, args.quic_sockets).await?;
    let endpoint = server.quic_endpoint().clone();
    let addr = server.local_addr();
    println!(
        "serving https://localhost:{} on {addr} (TCP: HTTP/1.1 + HTTP/2, UDP: HTTP/3)",
        addr.port()
    );
    server
        .serve(app(Some(endpoint)))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
            println!("shutting down gracefully");
        })
        .await?;
    Ok(())
}
