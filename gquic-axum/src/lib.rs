//! # gquic-axum
//!
//! **Not implemented yet.** This crate will provide serve(endpoint, router) for axum over HTTP/3, dual HTTP/1+2+3 serving, WebTransport.
//! It is part of the workspace layout (see `ARCHITECTURE.md`) and exports nothing today; the
//! README's feature table lists what works.

#![warn(missing_docs)]
#![forbid(unsafe_code)]
