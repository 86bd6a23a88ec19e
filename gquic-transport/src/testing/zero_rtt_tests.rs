//! 0-RTT over the simulated network (RFC 9001 §4.6, RFC 9000 §7.4.1): accepted, rejected with
//! the data sent again, and refused for a ticket issued under higher limits.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;

use super::*;
use crate::config::{ClientConfig, ServerConfig, TransportConfig};
use crate::connection::tests::{certs, client_config, server_tls, Certs};
use crate::connection::{Event, ReadError};
use crate::endpoint::{ConnectionHandle, EndpointConfig};
use crate::Dir;

const SERVER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 4433);
const CLIENT: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 50000);
const S: usize = 0;
const C: usize = 1;

fn endpoint_config() -> EndpointConfig {
    EndpointConfig::new(
        Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
        [7; 32],
    )
}

/// A server config over one rustls config (so one session store) with the given settings.
fn server(
    tls: &Arc<rustls::ServerConfig>,
    zero_rtt: bool,
    transport: TransportConfig,
) -> ServerConfig {
    let mut config = ServerConfig::new(tls.clone()).unwrap();
    config.transport(Arc::new(transport)).unwrap();
    config.enable_0rtt(zero_rtt).unwrap();
    config
}

struct Setup {
    net: Network,
    client: ClientConfig,
    tls: Arc<rustls::ServerConfig>,
    _certs: Certs,
}

/// A network whose client holds a ticket from a first, completed connection.
fn with_ticket(seed: u64) -> Setup {
    let certs = certs();
    let tls = Arc::new(server_tls(&certs, &[b"hq-interop"]));
    let mut client = client_config(&certs, &[b"hq-interop"], TransportConfig::default());
    client.enable_0rtt(true);
    let mut net = Network::new(Instant::now(), seed, LinkConfig::default());
    let server_config = server(&tls, true, TransportConfig::default());
    net.add(
        SERVER,
        Endpoint::new(endpoint_config(), Some(Arc::new(server_config)), [1; 32]).unwrap(),
    );
    net.add(
        CLIENT,
        Endpoint::new(endpoint_config(), None, [2; 32]).unwrap(),
    );
    let now = net.now();
    let first = net
        .endpoint(C)
        .connect(now, &client, SERVER, "localhost")
        .unwrap();
    assert!(
        !net.endpoint(C).connection(first).unwrap().is_0rtt(),
        "no ticket yet, so no 0-RTT"
    );
    // The handshake, then the NewSessionTicket in 1-RTT CRYPTO frames.
    net.run_for(Duration::from_millis(300));
    let now = net.now();
    let c = net.endpoint(C).connection_mut(first).unwrap();
    assert!(!c.is_handshaking());
    assert_eq!(c.zero_rtt_accepted(), Some(false));
    c.close(now, 0u32.into(), Bytes::new());
    net.run_for(Duration::from_secs(2));
    assert!(
        net.endpoint(S).accept().is_some(),
        "the first connection was accepted"
    );
    Setup {
        net,
        client,
        tls,
        _certs: certs,
    }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// Opens a second connection and writes `data` and a FIN on a bidi stream, all before any
/// packet leaves (so in 0-RTT). Returns the connection and the stream.
fn write_early(s: &mut Setup, data: &[u8]) -> (ConnectionHandle, crate::StreamId) {
    let now = s.net.now();
    let h = s
        .net
        .endpoint(C)
        .connect(now, &s.client, SERVER, "localhost")
        .unwrap();
    let c = s.net.endpoint(C).connection_mut(h).unwrap();
    assert!(
        c.is_0rtt(),
        "a resumed session with early data gives 0-RTT keys"
    );
    let id = c
        .open(Dir::Bi)
        .expect("remembered stream limits allow a stream");
    assert_eq!(c.write(id, Bytes::copy_from_slice(data)), Ok(data.len()));
    c.finish(id).unwrap();
    (h, id)
}

/// Opens a second connection, writes `data` on a bidi stream before any packet leaves, and
/// runs until the server has read it all. Returns the handles and whether the server had the
/// first bytes before its handshake completed.
fn early_request(s: &mut Setup, data: &[u8]) -> (ConnectionHandle, ConnectionHandle, bool) {
    let (h, id) = write_early(s, data);
    let mut server = None;
    let mut got = Vec::new();
    let mut before_handshake = None;
    let done = s.net.run_until(Duration::from_secs(20), |net| {
        let now = net.now();
        if server.is_none() {
            server = net.endpoint(S).accept();
        }
        let Some(sh) = server else { return false };
        let sc = net.endpoint(S).connection_mut(sh).unwrap();
        loop {
            match sc.read(id, usize::MAX, now) {
                Ok(Some(d)) => {
                    before_handshake.get_or_insert(sc.is_handshaking());
                    got.extend_from_slice(&d);
                }
                Ok(None) => return true,
                Err(ReadError::Blocked | ReadError::ClosedStream) => return false,
                Err(e) => panic!("{e}"),
            }
        }
    });
    assert!(done, "seed {}: request not delivered", s.net.seed());
    assert!(got == data, "request intact");
    s.net.run_for(Duration::from_millis(200));
    let sh = server.unwrap();
    let lossless = s.net.link.loss == 0.0;
    let sc = s.net.endpoint(S).connection(sh).unwrap();
    if lossless {
        // (With loss, all 0-RTT packets of the stream may be lost and resent in 1-RTT.)
        assert_eq!(
            sc.is_0rtt_stream(id),
            sc.zero_rtt_accepted() == Some(true),
            "the stream counts as 0-RTT exactly when 0-RTT was accepted"
        );
    }
    (h, sh, before_handshake.unwrap_or(false))
}

#[test]
fn zero_rtt_is_accepted_and_read_before_the_handshake_completes() {
    let mut s = with_ticket(1);
    let data = pattern(20_000);
    let (h, sh, before_handshake) = early_request(&mut s, &data);
    let c = s.net.endpoint(C).connection_mut(h).unwrap();
    assert_eq!(c.zero_rtt_accepted(), Some(true));
    assert!(!c.is_0rtt(), "0-RTT ends with the handshake");
    assert!(
        std::iter::from_fn(|| c.poll_event()).any(|e| e == Event::Connected),
        "client connected"
    );
    // Nothing had to be sent twice: the 0-RTT packets were acknowledged in 1-RTT.
    assert_eq!(c.stats().packets_lost, 0);
    let sc = s.net.endpoint(S).connection(sh).unwrap();
    assert_eq!(sc.zero_rtt_accepted(), Some(true));
    assert!(
        before_handshake,
        "the server reads 0-RTT data half a round trip before the client's Finished"
    );
}

#[test]
fn rejected_zero_rtt_data_is_sent_again_in_one_rtt() {
    let mut s = with_ticket(2);
    // The server stops accepting early data: the ticket still resumes nothing (the store
    // format differs) and the early data is rejected.
    let cfg = server(&s.tls, false, TransportConfig::default());
    s.net.endpoint(S).set_server_config(Some(Arc::new(cfg)));
    let data = pattern(30_000);
    let (h, sh, before_handshake) = early_request(&mut s, &data);
    let c = s.net.endpoint(C).connection(h).unwrap();
    assert_eq!(c.zero_rtt_accepted(), Some(false));
    assert!(!c.is_closed(), "a rejection is not an error");
    let sc = s.net.endpoint(S).connection(sh).unwrap();
    assert_eq!(sc.zero_rtt_accepted(), Some(false));
    assert!(!before_handshake, "rejected 0-RTT data waits for 1-RTT");
    assert!(
        sc.stats().packets_dropped > 0,
        "the server dropped the 0-RTT packets it could not open"
    );
}

#[test]
fn a_ticket_from_higher_limits_is_not_resumed_and_data_still_arrives() {
    let mut s = with_ticket(3);
    // RFC 9000 §7.4.1: the server now allows fewer streams than the ticket promised.
    let mut lower = TransportConfig::default();
    lower.max_concurrent_bidi_streams(50);
    let cfg = server(&s.tls, true, lower);
    s.net.endpoint(S).set_server_config(Some(Arc::new(cfg)));
    let data = pattern(5_000);
    let (h, sh, _) = early_request(&mut s, &data);
    let c = s.net.endpoint(C).connection(h).unwrap();
    assert_eq!(c.zero_rtt_accepted(), Some(false));
    assert!(
        !c.is_closed(),
        "one stream fits the new limits: replayed, not failed"
    );
    let sc = s.net.endpoint(S).connection(sh).unwrap();
    assert_eq!(sc.zero_rtt_accepted(), Some(false));
}

#[test]
fn zero_rtt_survives_loss_over_twenty_seeds() {
    for seed in 10..30 {
        let mut s = with_ticket(seed);
        s.net.link = LinkConfig {
            loss: 0.15,
            jitter: Duration::from_millis(5),
            ..LinkConfig::default()
        };
        let data = pattern(64_000);
        let (h, _, _) = early_request(&mut s, &data);
        let c = s.net.endpoint(C).connection(h).unwrap();
        assert!(c.zero_rtt_accepted().is_some(), "seed {seed}");
    }
}

/// 0-RTT datagrams that overtake their Initial (a reordering path) are held by the server
/// until the Initial comes (RFC 9001 §4.7), so the early data counts as 0-RTT and nothing is
/// sent again. Before, the server dropped them and the client resent the data in 1-RTT.
#[test]
fn zero_rtt_ahead_of_its_initial_is_held_until_the_initial_comes() {
    let mut s = with_ticket(11);
    let data = pattern(6_000);
    let (h, id) = write_early(&mut s, &data);
    let now = s.net.now();
    // The client's first flight, one datagram at a time, delivered last first.
    let mut flight = Vec::new();
    let mut buf = Vec::new();
    while let Some(t) = s.net.endpoint(C).poll_transmit_batch(now, 1, &mut buf) {
        flight.push(bytes::BytesMut::from(&buf[..t.size]));
    }
    assert!(
        flight.len() >= 3,
        "an Initial and 0-RTT datagrams: {}",
        flight.len()
    );
    let zero_rtt_only = flight.iter().filter(|d| d[0] & 0x30 == 0x10).count();
    assert!(
        zero_rtt_only >= 2,
        "datagrams of 0-RTT packets alone: {zero_rtt_only}"
    );
    for d in flight.into_iter().rev() {
        s.net.endpoint(S).handle_datagram(now, CLIENT, d);
    }
    let server = s
        .net
        .endpoint(S)
        .accept()
        .expect("the Initial made a connection");
    let mut got = Vec::new();
    let done = s.net.run_until(Duration::from_secs(10), |net| {
        let now = net.now();
        let sc = net.endpoint(S).connection_mut(server).unwrap();
        loop {
            match sc.read(id, usize::MAX, now) {
                Ok(Some(d)) => got.extend_from_slice(&d),
                Ok(None) => return true,
                Err(ReadError::Blocked) => return false,
                // The stream opens once the server's TLS step for the ClientHello is back
                // (the network hands TLS steps out) and the held 0-RTT packets are read.
                Err(ReadError::ClosedStream) if got.is_empty() => return false,
                Err(e) => panic!("{e}"),
            }
        }
    });
    assert!(done && got == data, "request intact");
    s.net.run_for(Duration::from_millis(500));
    let sc = s.net.endpoint(S).connection(server).unwrap();
    assert_eq!(sc.zero_rtt_accepted(), Some(true));
    assert!(
        sc.is_0rtt_stream(id),
        "the server read it from 0-RTT packets"
    );
    let c = s.net.endpoint(C).connection(h).unwrap();
    assert_eq!(c.stats().packets_lost, 0, "nothing had to be sent again");
}
