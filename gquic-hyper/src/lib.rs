//! # gquic-hyper
//!
//! HTTP/3 in hyper's vocabulary, over the GQUIC transport and the `h3` crate. You never touch
//! a QUIC type to speak HTTP/3: requests are `http::Request`, bodies are `http_body::Body`,
//! services are `hyper::service::Service` (tower services through
//! `hyper_util::service::TowerToHyperService`).
//!
//! - Server: [`server::serve_connection`] serves one connection with a service, each request
//!   on its own task, bodies streaming both ways with trailers and back-pressure;
//!   [`server::Connection::graceful_shutdown`] sends GOAWAY and lets requests finish.
//! - Client: [`client::handshake`] gives a [`client::SendRequest`] (cloneable, multiplexing)
//!   and a [`client::Connection`] to spawn, like `hyper::client::conn::http2`;
//!   [`client::Connector`] dials by URI.
//! - WebTransport ([`webtransport`]): sessions at extended CONNECT routes, several per
//!   connection next to ordinary requests, on both sides.
//!
//! ```no_run
//! # async fn demo(endpoint: gquic_transport::runtime::Endpoint) {
//! use http::{Request, Response};
//! use hyper::service::service_fn;
//!
//! while let Some(connecting) = endpoint.accept().await {
//!     tokio::spawn(async move {
//!         let conn = connecting.await?;
//!         let service = service_fn(|req: Request<gquic_hyper::Incoming>| async move {
//!             Ok::<_, std::convert::Infallible>(Response::new(format!("you asked for {}", req.uri())))
//!         });
//!         gquic_hyper::server::serve_connection(conn, service).await?;
//!         Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
//!     });
//! }
//! # }
//! ```

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod body;
pub mod client;
mod error;
pub mod server;
pub mod webtransport;

pub use body::Incoming;
pub use error::Error;
pub use server::{serve_connection, ConnectionInfo};
