//! # gquic-tower
//!
//! tower for HTTP/3 over GQUIC:
//!
//! - [`serve`]: an accept loop over any `tower::Service<Request<Incoming>>`, made per
//!   connection by a make-service that sees the connection's [`ConnectionInfo`]; each request
//!   also carries the [`ConnectionInfo`] in its extensions (peer and local address, ALPN,
//!   server name, 0-RTT flag, connection id for logs). Graceful shutdown stops accepting,
//!   sends GOAWAY on every connection, lets in-flight requests finish, then closes.
//! - [`Client`]: a `tower::Service<Request<B>>` over a pooled HTTP/3 connection to one
//!   origin, whose `poll_ready` honours the peer's stream limit.
//! - [`AltSvcLayer`]: advertises HTTP/3 (`alt-svc: h3=":PORT"; ma=...`) on responses served
//!   over TCP, so browsers and clients upgrade.
//!
//! ```no_run
//! # async fn demo(endpoint: gquic_transport::runtime::Endpoint) -> std::io::Result<()> {
//! use std::convert::Infallible;
//! use http::{Request, Response};
//!
//! let service = tower::service_fn(|req: Request<gquic_hyper::Incoming>| async move {
//!     Ok::<_, Infallible>(Response::new(format!("hello over {:?}", req.version())))
//! });
//! gquic_tower::serve(endpoint, gquic_tower::MakeServiceFn::new(move |_info: &gquic_tower::ConnectionInfo| service.clone())).await
//! # }
//! ```

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod alt_svc;
mod client;
#[cfg(feature = "otel")]
pub mod otel;
mod server;

pub use alt_svc::{parse_alt_svc, AltSvc, AltSvcLayer, AltSvcValue, Alternative, ResponseFuture};
pub use client::Client;
pub use gquic_hyper::{ConnectionInfo, Incoming};
#[cfg(feature = "otel")]
pub use otel::OtelLayer;
pub use server::{serve, serve_with, MakeServiceFn, Serve, ShutdownSignal};
