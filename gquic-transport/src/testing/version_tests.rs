//! QUIC v2 and compatible version negotiation (RFC 9368 §2.3, RFC 9369 §4) over the simulated
//! network: a server moving a v1 client that prefers v2, clients that stay in v1, a client
//! starting in v2, the switch under loss, and key updates under the switched client's own
//! key schedule.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;

use super::tests::{connect, pattern, transfer_observed, Sim, C, S};
use super::*;
use crate::config::TransportConfig;
use crate::connection::tests::{certs, client_config, server_config};
use crate::endpoint::{ConnectionHandle, EndpointConfig};
use crate::wire::{LongType, PartialDecode, ProtectedHeader, Version};

const SERVER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 4433);
const CLIENT: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 50000);

struct Versions<'a> {
    server: &'a [Version],
    client_first: Version,
    client_available: &'a [Version],
}

/// A server with v1 and v2, a client starting in v1 that prefers v2: the server moves it.
const PREFERS_V2: Versions<'static> = Versions {
    server: &[Version::V1, Version::V2],
    client_first: Version::V1,
    client_available: &[Version::V2, Version::V1],
};

fn sim_with(seed: u64, link: LinkConfig, transport: TransportConfig, v: &Versions<'_>) -> Sim {
    let certs = certs();
    let server = server_config(&certs, &[b"hq-interop"], transport.clone());
    let mut client_config = client_config(&certs, &[b"hq-interop"], transport);
    client_config.version(v.client_first);
    client_config
        .available_versions(v.client_available)
        .unwrap();
    let mut net = Network::new(Instant::now(), seed, link);
    net.capture();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut server_ep = EndpointConfig::new(provider.clone(), [7; 32]);
    server_ep.versions(v.server).unwrap();
    net.add(
        SERVER,
        Endpoint::new(server_ep, Some(Arc::new(server)), [1; 32]).unwrap(),
    );
    net.add(
        CLIENT,
        Endpoint::new(EndpointConfig::new(provider, [7; 32]), None, [2; 32]).unwrap(),
    );
    let now = net.now();
    let client = net
        .endpoint(C)
        .connect(now, &client_config, SERVER, "localhost")
        .unwrap();
    Sim {
        net,
        client_config,
        client,
    }
}

/// The long-header packets captured: sender, type and version.
fn long_headers(captured: &[(SocketAddr, Vec<u8>)]) -> Vec<(SocketAddr, LongType, Version)> {
    let mut out = Vec::new();
    for (from, data) in captured {
        let mut rest = Some(BytesMut::from(&data[..]));
        while let Some(d) = rest.take() {
            let Ok((p, next)) = PartialDecode::new(d, 8) else {
                break;
            };
            rest = next;
            match p.header() {
                ProtectedHeader::Initial { version, .. } => {
                    out.push((*from, LongType::Initial, *version))
                }
                ProtectedHeader::Long { ty, version, .. } => out.push((*from, *ty, *version)),
                _ => {}
            }
        }
    }
    out
}

fn versions(s: &mut Sim, server: ConnectionHandle) -> [(Version, Version); 2] {
    let c = s.net.endpoint(C).connection_mut(s.client).unwrap();
    let client = (c.original_version(), c.version());
    let sv = s.net.endpoint(S).connection_mut(server).unwrap();
    [client, (sv.original_version(), sv.version())]
}

#[test]
fn rfc9368_server_moves_a_v1_client_that_prefers_v2() {
    let mut transport = TransportConfig::default();
    // Key updates every 200 packets: the switched client's own key schedule ("quicv2 ku").
    transport.key_update_interval(200);
    let mut s = sim_with(41, LinkConfig::default(), transport, &PREFERS_V2);
    let server = connect(&mut s);
    assert_eq!(
        versions(&mut s, server),
        [(Version::V1, Version::V2), (Version::V1, Version::V2)]
    );
    let got = transfer_observed(&mut s, server, 1 << 20, Duration::from_secs(60), |_| {});
    assert_eq!(got, pattern(1 << 20));
    let client_updates = s
        .net
        .endpoint(C)
        .connection_mut(s.client)
        .unwrap()
        .stats()
        .key_updates;
    let server_updates = s
        .net
        .endpoint(S)
        .connection_mut(server)
        .unwrap()
        .stats()
        .key_updates;
    assert!(client_updates >= 2, "key updates: {client_updates}");
    assert_eq!(client_updates, server_updates);

    let headers = long_headers(&s.net.take_captured());
    // The client's first flight is v1 (the original version) ...
    let first = headers.first().unwrap();
    assert_eq!(
        (first.0, first.1, first.2),
        (CLIENT, LongType::Initial, Version::V1)
    );
    // ... the server sends all CRYPTO data, so every Handshake packet, in v2 (RFC 9369 §4),
    // and so does the client.
    let handshake: Vec<_> = headers
        .iter()
        .filter(|h| h.1 == LongType::Handshake)
        .collect();
    assert!(handshake.iter().any(|h| h.0 == SERVER) && handshake.iter().any(|h| h.0 == CLIENT));
    assert!(
        handshake.iter().all(|h| h.2 == Version::V2),
        "{handshake:?}"
    );
    // The server's Initials (its ServerHello) are v2.
    assert!(headers
        .iter()
        .filter(|h| h.0 == SERVER && h.1 == LongType::Initial)
        .all(|h| h.2 == Version::V2));
}

/// A connection moved to v2 hibernates and wakes with v2's key schedule ("quicv2 hp", "quicv2
/// ku", RFC 9369 §3.3.2): data after the wake, across key updates, on both sides.
#[test]
fn rfc9369_a_v2_connection_hibernates_and_wakes_in_v2() {
    let mut transport = TransportConfig::default();
    transport.key_update_interval(100);
    let mut s = sim_with(44, LinkConfig::default(), transport, &PREFERS_V2);
    let server = connect(&mut s);
    s.net.run_for(Duration::from_secs(3));
    assert_eq!(s.net.endpoint(S).hibernating_count(), 1);
    let got = transfer_observed(&mut s, server, 1 << 20, Duration::from_secs(60), |_| {});
    assert_eq!(got, pattern(1 << 20));
    assert_eq!(
        versions(&mut s, server),
        [(Version::V1, Version::V2), (Version::V1, Version::V2)]
    );
    let updates = s
        .net
        .endpoint(S)
        .connection_mut(server)
        .unwrap()
        .stats()
        .key_updates;
    assert!(updates >= 2, "key updates after the wake: {updates}");
}

#[test]
fn rfc9368_client_preferring_v1_and_server_without_v2_stay_on_v1() {
    for (server_versions, available) in [
        (
            &[Version::V1, Version::V2][..],
            &[Version::V1, Version::V2][..],
        ),
        (&[Version::V1][..], &[Version::V2, Version::V1][..]),
        (&[Version::V1, Version::V2][..], &[Version::V1][..]),
    ] {
        let mut s = sim_with(
            42,
            LinkConfig::default(),
            TransportConfig::default(),
            &Versions {
                server: server_versions,
                client_first: Version::V1,
                client_available: available,
            },
        );
        let server = connect(&mut s);
        assert_eq!(
            versions(&mut s, server),
            [(Version::V1, Version::V1), (Version::V1, Version::V1)],
            "server {server_versions:?}, client {available:?}"
        );
        let got = transfer_observed(&mut s, server, 64 << 10, Duration::from_secs(30), |_| {});
        assert_eq!(got.len(), 64 << 10);
        let headers = long_headers(&s.net.take_captured());
        assert!(headers.iter().all(|h| h.2 == Version::V1));
    }
}

#[test]
fn rfc9369_client_starts_in_v2() {
    let mut s = sim_with(
        43,
        LinkConfig::default(),
        TransportConfig::default(),
        &Versions {
            server: &[Version::V1, Version::V2],
            client_first: Version::V2,
            client_available: &[Version::V2, Version::V1],
        },
    );
    let server = connect(&mut s);
    assert_eq!(
        versions(&mut s, server),
        [(Version::V2, Version::V2), (Version::V2, Version::V2)]
    );
    let got = transfer_observed(&mut s, server, 256 << 10, Duration::from_secs(30), |_| {});
    assert_eq!(got, pattern(256 << 10));
    let headers = long_headers(&s.net.take_captured());
    assert!(!headers.is_empty());
    assert!(headers.iter().all(|h| h.2 == Version::V2));
}

#[test]
fn rfc9368_switch_under_loss() {
    // Lost and reordered Initials on both sides: the server opens the client's v1 Initials
    // after switching, the client switches on whichever v2 Initial arrives first.
    for seed in 0..20 {
        let mut s = sim_with(
            1000 + seed,
            LinkConfig {
                loss: 0.15,
                jitter: Duration::from_millis(5),
                ..LinkConfig::default()
            },
            TransportConfig::default(),
            &PREFERS_V2,
        );
        let server = connect(&mut s);
        assert_eq!(
            versions(&mut s, server),
            [(Version::V1, Version::V2), (Version::V1, Version::V2)],
            "seed {}",
            1000 + seed
        );
        let got = transfer_observed(&mut s, server, 64 << 10, Duration::from_secs(60), |_| {});
        assert_eq!(got, pattern(64 << 10), "seed {}", 1000 + seed);
    }
}

#[test]
fn rfc9368_a_server_chosen_version_that_differs_closes_the_connection() {
    let mut s = sim_with(
        44,
        LinkConfig::default(),
        TransportConfig::default(),
        &PREFERS_V2,
    );
    let server = connect(&mut s);
    let c = s.net.endpoint(C).connection_mut(s.client).unwrap();
    use crate::wire::transport_params::VersionInformation;
    // A forged long-header Version field could not have moved us (the packet authenticates
    // under that version's keys only), but the check stands: the server's Chosen Version
    // must be the negotiated one, and one we offered (RFC 9368 §4).
    let v1 = VersionInformation {
        chosen: Version::V1,
        available: vec![Version::V1],
    };
    let err = c.validate_version_information(Some(&v1)).unwrap_err();
    assert_eq!(
        err.code,
        crate::error::TransportErrorCode::VERSION_NEGOTIATION_ERROR
    );
    let err = c.validate_version_information(None).unwrap_err();
    assert_eq!(
        err.code,
        crate::error::TransportErrorCode::VERSION_NEGOTIATION_ERROR
    );
    // The server side: a client's chosen version must be its first flight's.
    let sv = s.net.endpoint(S).connection_mut(server).unwrap();
    let v2 = VersionInformation {
        chosen: Version::V2,
        available: vec![Version::V2, Version::V1],
    };
    let err = sv.validate_version_information(Some(&v2)).unwrap_err();
    assert_eq!(
        err.code,
        crate::error::TransportErrorCode::VERSION_NEGOTIATION_ERROR
    );
}

/// RFC 9369 §5: session tickets belong to the negotiated version. A ticket from a connection
/// moved to v2 resumes a v2 connection, not a v1 one (the server checks: a full handshake).
#[test]
fn rfc9369_tickets_resume_only_their_version() {
    let mut s = sim_with(
        45,
        LinkConfig::default(),
        TransportConfig::default(),
        &PREFERS_V2,
    );
    let server = connect(&mut s);
    assert_eq!(versions(&mut s, server)[0], (Version::V1, Version::V2));
    // The tickets follow the handshake.
    s.net.run_for(Duration::from_millis(200));
    let mut again = |version: Version, available: &[Version]| {
        let mut config = s.client_config.clone();
        config.version(version);
        config.available_versions(available).unwrap();
        let now = s.net.now();
        s.client = s
            .net
            .endpoint(C)
            .connect(now, &config, SERVER, "localhost")
            .unwrap();
        connect(&mut s);
        let c = s.net.endpoint(C).connection_mut(s.client).unwrap();
        let resumed = c.is_resumed();
        s.net.run_for(Duration::from_millis(200));
        resumed
    };
    // v2 from the start: the v2 ticket resumes.
    assert_eq!(again(Version::V2, &[Version::V2]), Some(true));
    // v1 only: the client still offers a v2 ticket (rustls does not know versions), and the
    // server refuses it.
    assert_eq!(again(Version::V1, &[Version::V1]), Some(false));
}
