//! # gquic-client
//!
//! **Not implemented yet.** This crate will provide a reqwest-like HTTP/3 client (pooling, retries, redirects, cookies, 0-RTT).
//! It is part of the workspace layout (see `ARCHITECTURE.md`) and exports nothing today; the
//! README's feature table lists what works.

#![warn(missing_docs)]
#![forbid(unsafe_code)]
