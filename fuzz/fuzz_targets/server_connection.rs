//! Arbitrary input against an established server connection, through its endpoint: either a
//! raw datagram from the client's address (or a new one, with any ECN codepoint), or frames
//! sealed as a genuine 1-RTT packet by the
//! client (so the frame handlers themselves are reached). The network then runs for a while so
//! the server's replies and timers are exercised too. Nothing may panic, and a server that
//! closes must do so with a transport error code.
#![no_main]

#[path = "common/pair.rs"]
mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use common::{pair, CLIENT};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else { return };
    let common::Pair { mut net, server: s, client: c, client_conn: ch, server_conn } = pair(true);
    let sh = server_conn.unwrap();
    let now = net.now();
    let datagram = if mode & 1 == 0 {
        input.to_vec()
    } else {
        match net.endpoint(c).connection_mut(ch).unwrap().forge_one_rtt_packet(now, input) {
            Some(d) => d,
            None => return,
        }
    };
    // Mode bit 1: the datagram comes from another address (migration, RFC 9000 §9); bits 2-3:
    // its ECN codepoint (RFC 9000 §13.4).
    let from = if mode & 2 == 0 { CLIENT } else { SocketAddr::new(CLIENT.ip(), 50001) };
    let ecn = gquic_transport::connection::EcnCodepoint::from_bits(mode >> 2);
    net.endpoint(s).handle_datagram_ecn(now, from, ecn, BytesMut::from(&datagram[..]));
    net.run_for(Duration::from_millis(200));
    common::check_close(&mut net, s, sh, |_| false);
});
