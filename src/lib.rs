//! # gquic
//!
//! QUIC and HTTP/3 for Rust: our own QUIC transport (RFC 9000/9001/9002, QUIC v2) under the
//! ecosystem's own HTTP stack: `h3`, `hyper`, `tower` and `axum`.
//!
//! This facade re-exports the member crates behind features:
//!
//! | feature     | module        | state today |
//! |-------------|---------------|-------------|
//! | `transport` | [`transport`] | the QUIC transport: sans-IO core and tokio runtime |
//! | `hyper`     | `hyper`       | HTTP/3 server and client in hyper's vocabulary, WebTransport |
//! | `tower`     | `tower`       | accept loop over any tower service, Alt-Svc layer, client service |
//! | `axum`      | `axum`        | `serve(endpoint, router)`, dual HTTP/1+2+3 server, WebTransport extractor |
//! | `client`    | `client`      | the reqwest-like HTTP/3 client |
//!
//! See the README's feature table for what works and how it is tested.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

/// The QUIC transport ([`gquic_transport`]).
#[cfg(feature = "transport")]
pub use gquic_transport as transport;

/// HTTP/3 in hyper's vocabulary ([`gquic_hyper`]).
#[cfg(feature = "hyper")]
pub use gquic_hyper as hyper;

/// tower Services and Layers ([`gquic_tower`]).
#[cfg(feature = "tower")]
pub use gquic_tower as tower;

/// axum integration ([`gquic_axum`]).
#[cfg(feature = "axum")]
pub use gquic_axum as axum;

/// The reqwest-like HTTP/3 client ([`gquic_client`]).
#[cfg(feature = "client")]
pub use gquic_client as client;
