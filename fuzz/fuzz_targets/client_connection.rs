//! Arbitrary input against a client connection, through its endpoint: the mirror of
//! `server_connection`. Either a raw datagram (from the server's address or another, with
//! any ECN codepoint) or frames sealed as a genuine 1-RTT packet by the server (so the
//! handlers only a client runs are reached: HANDSHAKE_DONE, NEW_TOKEN, the server's
//! connection IDs); the raw datagram arrives either once the connection is established or
//! right after the client's first Initial, before anything from the server (Version
//! Negotiation and Retry are the packets a client takes unauthenticated, RFC 9000 §17.2.1 and
//! §17.2.5). The network then runs for a while so the client's replies and timers are
//! exercised too. Nothing may panic, and a client that closes must do so with a transport
//! error code (or report the server's close, a stateless reset or a failed version
//! negotiation).
#![no_main]

#[path = "common/pair.rs"]
mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use common::{pair, SERVER};
use gquic_transport::connection::ConnectionError;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else { return };
    // Mode bit 1: during the handshake (a raw datagram before the server's first flight);
    // otherwise once both sides are established.
    let handshaking = mode & 2 != 0;
    let common::Pair { mut net, server: s, client: c, client_conn: ch, server_conn } = pair(!handshaking);
    let now = net.now();
    let datagram = if mode & 1 == 0 || handshaking {
        input.to_vec()
    } else {
        let Some(sh) = server_conn else { return };
        match net.endpoint(s).connection_mut(sh).and_then(|conn| conn.forge_one_rtt_packet(now, input)) {
            Some(d) => d,
            None => return,
        }
    };
    // Bit 2: from an address other than the server's (a client accepts no migration, RFC
    // 9000 §9); bits 3-4: the ECN codepoint (RFC 9000 §13.4).
    let from = if mode & 4 == 0 { SERVER } else { SocketAddr::new(SERVER.ip(), 4434) };
    let ecn = gquic_transport::connection::EcnCodepoint::from_bits(mode >> 3);
    net.endpoint(c).handle_datagram_ecn(now, from, ecn, BytesMut::from(&datagram[..]));
    net.run_for(Duration::from_millis(200));
    common::check_close(&mut net, c, ch, |e| matches!(e, ConnectionError::VersionMismatch | ConnectionError::Reset));
});
