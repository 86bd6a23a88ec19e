//! # gquic
//!
//! QUIC and HTTP/3 for Rust: our own QUIC transport (RFC 9000/9001/9002, QUIC v2) under the
//! ecosystem's own HTTP stack: `h3`, `hyper`, `tower` and `axum`.
//!
//! This facade re-exports the member crates behind features:
//!
//! | feature     | module        | state today |
//! |-------------|---------------|-------------|
//! | `transport` | [`transport`] | wire format and packet protection (sans-IO) |
//! | `hyper`     | `hyper`       | not implemented yet (empty crate) |
//! | `tower`     | `tower`       | not implemented yet (empty crate) |
//! | `axum`      | `axum`        | not implemented yet (empty crate) |
//! | `client`    | `client`      | not implemented yet (empty crate) |
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

/// The reqwest-like client ([`gquic_client`]); empty until its issue lands.
#[cfg(feature = "client")]
pub use gquic_client as client;
