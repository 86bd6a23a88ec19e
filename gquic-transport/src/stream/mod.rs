//! Streams (RFC 9000 §2-§4): send buffers, reassembly, final size and flow control.
//!
//! The building blocks here are used by the connection: [`SendBuffer`] tracks what was
//! written, sent, acknowledged and lost; [`RecvStream`] reassembles data and enforces the
//! final-size and flow-control rules; [`RecvWindow`] sizes flow-control windows from the
//! measured bandwidth-delay product.

mod flow;
mod recv;
mod send;

pub use flow::RecvWindow;
pub use recv::{Assembler, RecvStream};
pub use send::SendBuffer;
