//! Hibernation of idle connections (`connection::hibernate`) through the endpoint, over the
//! simulated network.

use std::time::Duration;

use bytes::Bytes;

use std::sync::Arc;

use super::tests::{connect, pattern, sim, sim_with_client, Sim, C, S};
use super::*;
use crate::config::TransportConfig;
use crate::connection::{ConnectionError, Event};
use crate::endpoint::ConnectionHandle;
use crate::{Dir, StreamId};

/// Opens a unidirectional stream on `node`'s connection `h` (waking it if packed), writes
/// `data` on it and finishes it.
fn send_uni(s: &mut Sim, node: usize, h: ConnectionHandle, data: Bytes) -> StreamId {
    let c = s.net.endpoint(node).connection_mut(h).unwrap();
    let id = c.open(Dir::Uni).unwrap();
    c.write(id, data).unwrap();
    c.finish(id).unwrap();
    id
}

/// Accepts the unidirectional stream `id` on `node`'s connection `h` and reads it to its end.
fn read_uni(s: &mut Sim, node: usize, h: ConnectionHandle, id: StreamId) -> Vec<u8> {
    let now = s.net.now();
    let c = s.net.endpoint(node).connection_mut(h).unwrap();
    assert_eq!(c.accept(Dir::Uni), Some(id));
    let mut got = Vec::new();
    while let Ok(Some(d)) = c.read(id, usize::MAX, now) {
        got.extend_from_slice(&d);
    }
    got
}

fn events(s: &mut Sim, node: usize, h: ConnectionHandle) -> Vec<Event> {
    let ep = s.net.endpoint(node);
    std::iter::from_fn(|| ep.poll_connection_event(h)).collect()
}

/// An idle server connection is packed after a quiet second; a datagram for it wakes it (no
/// call on it needed), it reads the data, and it goes back to sleep when quiet again.
#[test]
fn an_idle_server_connection_hibernates_and_a_datagram_wakes_it() {
    let mut s = sim(21, LinkConfig::default(), TransportConfig::default());
    let server = connect(&mut s);
    s.net.run_for(Duration::from_secs(3));
    let ep = s.net.endpoint(S);
    assert_eq!(ep.hibernating_count(), 1);
    assert!(ep.connection(server).is_none(), "packed, not awake");
    let stats = ep
        .connection_stats(server)
        .expect("counters of a packed connection");
    assert!(stats.packets_received >= 3, "{stats:?}");
    // Read through an unpacked copy: the same counters and the path as it was, still asleep.
    let (counters, rtt, remote) = ep
        .inspect_connection(server, |c| (c.stats(), c.rtt(), c.remote_address()))
        .expect("a packed connection can be read");
    assert_eq!(counters, stats);
    assert!(rtt > Duration::ZERO);
    assert_eq!(remote, super::tests::CLIENT);
    assert_eq!(ep.hibernating_count(), 1, "inspecting does not wake");
    assert_eq!(ep.connection_count(), 1);
    assert_eq!(
        s.net.endpoint(C).hibernating_count(),
        1,
        "the client sleeps too (its TLS session finished when it was first quiet)"
    );
    let client = s.client;
    for round in 0..3 {
        let id = send_uni(&mut s, C, client, Bytes::from(pattern(50_000)));
        s.net.run_for(Duration::from_millis(200));
        let ep = s.net.endpoint(S);
        assert_eq!(
            ep.hibernating_count(),
            0,
            "round {round}: woken by the data"
        );
        let got = read_uni(&mut s, S, server, id);
        assert!(got == pattern(50_000), "round {round}: {} bytes", got.len());
        // The application takes the stream events (what the runtime's driver does).
        events(&mut s, S, server);
        s.net.run_for(Duration::from_secs(3));
        assert_eq!(
            s.net.endpoint(S).hibernating_count(),
            1,
            "round {round}: asleep again"
        );
    }
    let client = s.client;
    let c = s.net.endpoint(C).connection_stats(client).unwrap();
    assert_eq!(c.packets_lost, 0, "nothing lost to a sleeping server");
}

/// The application calls on a packed connection (here: opening a stream and writing), which
/// wakes it; the data reaches the client.
#[test]
fn an_application_call_wakes_a_hibernating_connection() {
    let mut s = sim(22, LinkConfig::default(), TransportConfig::default());
    let server = connect(&mut s);
    s.net.run_for(Duration::from_secs(3));
    assert_eq!(s.net.endpoint(S).hibernating_count(), 1);
    let id = send_uni(&mut s, S, server, Bytes::from_static(b"from a sleeper"));
    s.net.run_for(Duration::from_millis(200));
    let client = s.client;
    assert_eq!(read_uni(&mut s, C, client, id), b"from a sleeper");
}

/// A packed connection still times out (RFC 9000 §10.1): its deadline wakes it, and it is
/// gone on both sides with its routes.
#[test]
fn a_hibernating_connection_still_times_out() {
    let mut t = TransportConfig::default();
    t.max_idle_timeout(Duration::from_secs(5));
    let mut s = sim(23, LinkConfig::default(), t);
    let server = connect(&mut s);
    s.net.run_for(Duration::from_secs(3));
    assert_eq!(s.net.endpoint(S).hibernating_count(), 1);
    s.net.run_for(Duration::from_secs(5));
    let client = s.net.endpoint(C);
    assert_eq!(client.connection_count(), 0, "the client timed out");
    let (_, mut last) = client
        .poll_drained()
        .expect("the client's connection drained");
    let events: Vec<_> = std::iter::from_fn(|| last.poll_event()).collect();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::ConnectionLost(ConnectionError::TimedOut))),
        "{events:?}"
    );
    let ep = s.net.endpoint(S);
    assert_eq!((ep.hibernating_count(), ep.connection_count()), (0, 0));
    assert_eq!(ep.routing_sizes(), [0, 0, 0], "no route left behind");
    assert!(ep.connection_stats(server).is_none());
}

/// A packed connection survives a NAT rebinding of its client: the datagram from the new
/// address wakes it, the path is validated (RFC 9000 §9) and data flows on it.
#[test]
fn a_hibernating_connection_follows_its_client_to_a_new_address() {
    let mut s = sim(24, LinkConfig::default(), TransportConfig::default());
    let server = connect(&mut s);
    s.net.run_for(Duration::from_secs(3));
    assert_eq!(s.net.endpoint(S).hibernating_count(), 1);
    let moved: std::net::SocketAddr = "127.0.0.1:50123".parse().unwrap();
    s.net.nat_rebind(C, moved);
    let client = s.client;
    let id = send_uni(&mut s, C, client, Bytes::from_static(b"moved"));
    s.net.run_for(Duration::from_millis(500));
    assert_eq!(read_uni(&mut s, S, server, id), b"moved");
    let sc = s.net.endpoint(S).connection_mut(server).unwrap();
    assert_eq!(sc.remote_address(), moved);
    assert_eq!(sc.stats().paths_validated, 1);
}

/// A stream holding unread data keeps a connection awake (only a connection with nothing
/// going on sleeps).
#[test]
fn a_stream_with_unread_data_keeps_a_connection_awake() {
    let mut s = sim(25, LinkConfig::default(), TransportConfig::default());
    let server = connect(&mut s);
    let c = s.net.endpoint(C).connection_mut(s.client).unwrap();
    let id = c.open(Dir::Bi).unwrap();
    c.write(id, Bytes::from_static(b"left open")).unwrap();
    s.net.run_for(Duration::from_secs(3));
    assert_eq!(s.net.endpoint(S).hibernating_count(), 0);
    assert!(s.net.endpoint(S).connection(server).is_some());
}

/// `TransportConfig::keep_alive_interval`: PINGs keep a quiet connection open past its idle
/// timeout (RFC 9000 §10.1.2); the server sleeps between them and each one wakes it.
#[test]
fn keep_alive_pings_outlive_the_idle_timeout_and_wake_a_sleeping_server() {
    let mut t = TransportConfig::default();
    t.max_idle_timeout(Duration::from_secs(4))
        .keep_alive_interval(Some(Duration::from_millis(2500)));
    let mut s = sim(26, LinkConfig::default(), t);
    let server = connect(&mut s);
    let sent = |s: &mut Sim| {
        let client = s.client;
        // Read without waking it.
        s.net
            .endpoint(C)
            .connection_stats(client)
            .unwrap()
            .packets_sent
    };
    let before = sent(&mut s);
    let mut slept = 0;
    for _ in 0..40 {
        s.net.run_for(Duration::from_millis(500));
        slept += s.net.endpoint(S).hibernating_count();
    }
    assert_eq!(s.net.endpoint(C).connection_count(), 1, "alive after 20 s");
    assert_eq!(s.net.endpoint(S).connection_count(), 1);
    let pings = sent(&mut s) - before;
    assert!((6..=20).contains(&pings), "{pings} packets in 20 s");
    assert!(
        slept >= 10,
        "the server slept between the PINGs ({slept} of 40 looks)"
    );
    // Data still flows.
    let client = s.client;
    let id = send_uni(&mut s, C, client, Bytes::from_static(b"still here"));
    s.net.run_for(Duration::from_millis(200));
    assert_eq!(read_uni(&mut s, S, server, id), b"still here");
}

/// Without keep-alive the same quiet connection times out.
#[test]
fn without_keep_alive_the_connection_times_out() {
    let mut t = TransportConfig::default();
    t.max_idle_timeout(Duration::from_secs(4));
    let mut s = sim(27, LinkConfig::default(), t);
    connect(&mut s);
    s.net.run_for(Duration::from_secs(20));
    assert_eq!(s.net.endpoint(C).connection_count(), 0);
    assert_eq!(s.net.endpoint(S).connection_count(), 0);
}

/// Open streams with nothing buffered (as an HTTP/3 connection's control streams) do not keep
/// a connection awake: it sleeps with the stream half-way, and the stream carries on after.
#[test]
fn a_quiet_open_stream_does_not_keep_a_connection_awake() {
    let mut s = sim(28, LinkConfig::default(), TransportConfig::default());
    let server = connect(&mut s);
    let c = s.net.endpoint(C).connection_mut(s.client).unwrap();
    let id = c.open(Dir::Bi).unwrap();
    c.write(id, Bytes::from_static(b"part one, ")).unwrap();
    s.net.run_for(Duration::from_millis(200));
    let now = s.net.now();
    let sc = s.net.endpoint(S).connection_mut(server).unwrap();
    assert_eq!(sc.accept(Dir::Bi), Some(id));
    let mut got = sc.read(id, usize::MAX, now).unwrap().unwrap().to_vec();
    sc.write(id, Bytes::from_static(b"reply, ")).unwrap();
    s.net.run_for(Duration::from_millis(200));
    let now = s.net.now();
    let c = s.net.endpoint(C).connection_mut(s.client).unwrap();
    let mut back = c.read(id, usize::MAX, now).unwrap().unwrap().to_vec();
    events(&mut s, S, server);
    let client = s.client;
    events(&mut s, C, client);
    s.net.run_for(Duration::from_secs(3));
    assert_eq!(
        s.net.endpoint(S).hibernating_count(),
        1,
        "asleep with the stream open"
    );
    // The same stream, both ways, after the sleep.
    let c = s.net.endpoint(C).connection_mut(s.client).unwrap();
    c.write(id, Bytes::from_static(b"part two")).unwrap();
    c.finish(id).unwrap();
    s.net.run_for(Duration::from_millis(200));
    let now = s.net.now();
    let sc = s.net.endpoint(S).connection_mut(server).unwrap();
    while let Ok(Some(d)) = sc.read(id, usize::MAX, now) {
        got.extend_from_slice(&d);
    }
    assert_eq!(&got[..], b"part one, part two");
    sc.write(id, Bytes::from_static(b"the end")).unwrap();
    sc.finish(id).unwrap();
    s.net.run_for(Duration::from_millis(200));
    let now = s.net.now();
    let c = s.net.endpoint(C).connection_mut(s.client).unwrap();
    while let Ok(Some(d)) = c.read(id, usize::MAX, now) {
        back.extend_from_slice(&d);
    }
    assert_eq!(&back[..], b"reply, the end");
    // Both halves done: the stream is gone on the server, which sleeps again.
    events(&mut s, S, server);
    s.net.run_for(Duration::from_secs(3));
    assert_eq!(s.net.endpoint(S).hibernating_count(), 1);
    let sc = s.net.endpoint(S).connection_mut(server).unwrap();
    assert_eq!(sc.open_streams(), 0);
}

/// Hibernation with each of the other cipher suites (the suite and its AEAD are found again
/// from the packed suite id, RFC 9001 §5.3): a client that offers only that suite, a server
/// that sleeps, and data after the wake across key updates.
#[test]
fn hibernation_with_aes_256_gcm_and_chacha20_poly1305() {
    use rustls::crypto::aws_lc_rs::cipher_suite as cs;
    for (seed, suite) in [
        (29, cs::TLS13_AES_256_GCM_SHA384),
        (30, cs::TLS13_CHACHA20_POLY1305_SHA256),
    ] {
        let mut t = TransportConfig::default();
        t.key_update_interval(100);
        let mut s = sim_with_client(seed, LinkConfig::default(), t, |certs, t| {
            let mut provider = rustls::crypto::aws_lc_rs::default_provider();
            provider.cipher_suites = vec![suite];
            let mut roots = rustls::RootCertStore::empty();
            roots.add(certs.cert.clone()).unwrap();
            let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
                .with_protocol_versions(&[&rustls::version::TLS13])
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
            tls.alpn_protocols = vec![b"hq-interop".to_vec()];
            let mut client = crate::ClientConfig::new(Arc::new(tls)).unwrap();
            client.transport(Arc::new(t)).unwrap();
            client
        });
        let server = connect(&mut s);
        let used = s.net.endpoint(S).connection(server).unwrap().cipher_suite();
        assert_eq!(used, Some(suite.suite()));
        s.net.run_for(Duration::from_secs(3));
        assert_eq!(
            s.net.endpoint(S).hibernating_count(),
            1,
            "{:?}",
            suite.suite()
        );
        let client = s.client;
        let id = send_uni(&mut s, C, client, Bytes::from(pattern(200_000)));
        s.net.run_for(Duration::from_secs(2));
        let got = read_uni(&mut s, S, server, id);
        let sc = s.net.endpoint(S).connection_mut(server).unwrap();
        assert_eq!(
            sc.cipher_suite(),
            Some(suite.suite()),
            "the TLS summary unpacked"
        );
        assert!(
            got == pattern(200_000),
            "{:?}: {} bytes",
            suite.suite(),
            got.len()
        );
        assert!(sc.stats().key_updates >= 1, "{:?}", suite.suite());
    }
}
