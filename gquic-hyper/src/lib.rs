//! # gquic-hyper
//!
//! **Not implemented yet.** This crate will provide HTTP/3 connections in hyper's vocabulary (serve_connection, SendRequest, a connector).
//! It is part of the workspace layout (see `ARCHITECTURE.md`) and exports nothing today; the
//! README's feature table lists what works.

#![warn(missing_docs)]
#![forbid(unsafe_code)]
