//! The sans-IO QUIC connection.

pub mod streams;
