//! # gquic-tower
//!
//! **Not implemented yet.** This crate will provide tower Services and Layers for HTTP/3 servers and clients (accept loop, Alt-Svc layer, connection info).
//! It is part of the workspace layout (see `ARCHITECTURE.md`) and exports nothing today; the
//! README's feature table lists what works.

#![warn(missing_docs)]
#![forbid(unsafe_code)]
