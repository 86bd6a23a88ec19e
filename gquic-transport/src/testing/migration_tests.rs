//! Connection migration over the simulated network (RFC 9000 §9): NAT rebinding under a
//! transfer in either direction, a client moving to a new IP address, and a NAT mapping that
//! flaps back.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use bytes::Bytes;

use super::tests::{connect, pattern, sim, transfer_observed, Sim, C, S};
use super::*;
use crate::config::TransportConfig;
use crate::connection::ReadError;
use crate::endpoint::ConnectionHandle;
use crate::Dir;

fn client_stats(net: &mut Network, h: ConnectionHandle) -> crate::connection::ConnectionStats {
    net.endpoint(C).connection(h).unwrap().stats()
}

/// The server sends `len` bytes on a uni stream; returns what the client read.
/// `observe` runs after every step.
fn download(
    s: &mut Sim,
    server: ConnectionHandle,
    len: usize,
    mut observe: impl FnMut(&mut Network),
) -> Vec<u8> {
    let client = s.client;
    let id = s
        .net
        .endpoint(S)
        .connection_mut(server)
        .unwrap()
        .open(Dir::Uni)
        .unwrap();
    let data = Bytes::from(pattern(len));
    let mut written = 0;
    let mut received = Vec::with_capacity(len);
    let mut accepted = None;
    let done = s.net.run_until(Duration::from_secs(60), |net| {
        observe(net);
        let now = net.now();
        let Some(sc) = net.endpoint(S).connection_mut(server) else {
            panic!(
                "server connection gone: {:?}",
                net.endpoint(C).connection(client)
            );
        };
        while written < len {
            match sc.write(id, data.slice(written..)) {
                Ok(n) => written += n,
                Err(_) => break,
            }
        }
        if written == len {
            let _ = sc.finish(id);
        }
        let Some(cc) = net.endpoint(C).connection_mut(client) else {
            panic!(
                "client connection gone: {:?}",
                net.endpoint(S).connection(server)
            );
        };
        while let Some(e) = cc.poll_event() {
            if let crate::connection::Event::ConnectionLost(e) = e {
                panic!("client connection lost: {e}");
            }
        }
        if accepted.is_none() {
            accepted = cc.accept(Dir::Uni);
        }
        if let Some(id) = accepted {
            loop {
                match cc.read(id, usize::MAX, now) {
                    Ok(Some(d)) => received.extend_from_slice(&d),
                    Ok(None) => return true,
                    Err(ReadError::Blocked) => return false,
                    Err(e) => panic!("{e}"),
                }
            }
        }
        false
    });
    assert!(done, "download of {len} bytes: {} received", received.len());
    received
}

const NEW_PORT: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 50001);
const NEW_IP: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), 50000);

#[test]
fn rfc9000_nat_rebinding_during_an_upload() {
    let mut s = sim(200, LinkConfig::default(), TransportConfig::default());
    let server = connect(&mut s);
    let client = s.client;
    let old = s.net.addr(C);
    let mut rebound = false;
    let got = transfer_observed(&mut s, server, 2 << 20, Duration::from_secs(60), |net| {
        if !rebound && client_stats(net, client).bytes_sent > 512 << 10 {
            // The NAT gives the client a new port; the client does not know.
            net.nat_rebind(C, NEW_PORT);
            rebound = true;
        }
    });
    assert!(got == pattern(2 << 20), "intact across the rebinding");
    let sc = s.net.endpoint(S).connection(server).unwrap();
    assert_eq!(
        sc.remote_address(),
        NEW_PORT,
        "the server followed (was {old})"
    );
    assert!(sc.is_path_validated());
    let st = sc.stats();
    assert_eq!((st.migrations, st.paths_validated), (1, 1), "{st:?}");
    // The client did not move: same connection ID, no migration on its side.
    assert_eq!(client_stats(&mut s.net, client).migrations, 0);
}

#[test]
fn rfc9000_nat_rebinding_during_a_download_with_only_acks_on_the_new_path() {
    // The client only acknowledges: the server's anti-amplification budget on the new path
    // starts from small ACK datagrams (RFC 9000 §9.3, §8.2.1).
    let mut s = sim(201, LinkConfig::default(), TransportConfig::default());
    let server = connect(&mut s);
    let client = s.client;
    let mut rebound = false;
    let got = download(&mut s, server, 2 << 20, |net| {
        if !rebound && client_stats(net, client).bytes_received > 512 << 10 {
            net.nat_rebind(C, NEW_PORT);
            rebound = true;
        }
    });
    assert!(got == pattern(2 << 20), "intact across the rebinding");
    let sc = s.net.endpoint(S).connection(server).unwrap();
    assert_eq!(sc.remote_address(), NEW_PORT);
    assert!(sc.is_path_validated());
    assert_eq!(sc.stats().paths_validated, 1);
}

#[test]
fn rfc9000_client_moves_to_a_new_ip_with_a_new_connection_id() {
    let mut s = sim(202, LinkConfig::default(), TransportConfig::default());
    let server = connect(&mut s);
    let client = s.client;
    // Let NEW_CONNECTION_ID frames arrive first.
    s.net.run_for(Duration::from_millis(100));
    let cid_before = s
        .net
        .endpoint(C)
        .connection(client)
        .unwrap()
        .remote_connection_id();
    let server_cid_before = s
        .net
        .endpoint(S)
        .connection(server)
        .unwrap()
        .remote_connection_id();
    let mut moved = false;
    let got = transfer_observed(&mut s, server, 2 << 20, Duration::from_secs(60), |net| {
        if !moved && client_stats(net, client).bytes_sent > 512 << 10 {
            net.set_addr(C, NEW_IP);
            let now = net.now();
            net.endpoint(C).local_address_changed(now, true);
            moved = true;
        }
    });
    assert!(got == pattern(2 << 20), "intact across the move");
    let cc = s.net.endpoint(C).connection(client).unwrap();
    assert_ne!(
        cc.remote_connection_id(),
        cid_before,
        "RFC 9000 §9.5: a new ID on the new path"
    );
    assert_eq!(cc.stats().migrations, 1);
    let sc = s.net.endpoint(S).connection(server).unwrap();
    assert_eq!(sc.remote_address(), NEW_IP);
    assert!(sc.is_path_validated());
    assert_ne!(
        sc.remote_connection_id(),
        server_cid_before,
        "the server moved to a new ID too"
    );
    assert_eq!(sc.stats().paths_validated, 1);
    // The new path's MTU was discovered again (a new IP resets path state, §9.4); the
    // search may still be going when the transfer ends.
    s.net.run_for(Duration::from_secs(5));
    let sc = s.net.endpoint(S).connection(server).unwrap();
    assert_eq!(sc.path_mtu(), 1452);
}

#[test]
fn a_nat_mapping_that_flaps_back_leaves_the_connection_on_the_working_path() {
    let mut s = sim(203, LinkConfig::default(), TransportConfig::default());
    let server = connect(&mut s);
    let client = s.client;
    let old = s.net.addr(C);
    let mut step = 0;
    let got = transfer_observed(&mut s, server, 2 << 20, Duration::from_secs(60), |net| {
        let sent = client_stats(net, client).bytes_sent;
        if step == 0 && sent > 256 << 10 {
            net.nat_rebind(C, NEW_PORT);
            step = 1;
        } else if step == 1 && sent > 300 << 10 {
            // Back to the old mapping before the new path was validated (or just after).
            net.nat_rebind(C, old);
            step = 2;
        }
    });
    assert!(got == pattern(2 << 20), "intact across both changes");
    let sc = s.net.endpoint(S).connection(server).unwrap();
    assert_eq!(sc.remote_address(), old);
    assert!(sc.is_path_validated());
    assert!(sc.stats().migrations >= 2, "{:?}", sc.stats());
}

#[test]
fn rfc9000_packets_from_a_new_address_before_confirmation_are_dropped() {
    // A server does not follow a client to a new address during the handshake (§9).
    let mut s = sim(204, LinkConfig::default(), TransportConfig::default());
    s.net.run_for(Duration::from_millis(15)); // the client's Initial has arrived
    let server = s
        .net
        .endpoint(S)
        .accept()
        .expect("the server accepted the Initial");
    s.net.set_addr(C, NEW_PORT);
    s.net.run_for(Duration::from_secs(2));
    let sc = s.net.endpoint(S).connection(server).unwrap();
    assert!(
        sc.is_handshaking(),
        "the client's Finished came from elsewhere: never taken"
    );
    assert_eq!(
        sc.remote_address(),
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 50000)
    );
    assert!(sc.stats().packets_dropped > 0);
    assert_eq!(sc.stats().migrations, 0);
}

#[test]
fn rfc9000_failed_path_validation_returns_to_the_last_validated_path() {
    // One ACK arrives from an address the client then loses at once: the server moves there,
    // its PATH_CHALLENGE goes unanswered, and it returns to the old path (§9.3.2).
    let mut s = sim(205, LinkConfig::default(), TransportConfig::default());
    let server = connect(&mut s);
    let client = s.client;
    s.net.run_for(Duration::from_millis(200));
    let old = s.net.addr(C);
    let id = {
        let sc = s.net.endpoint(S).connection_mut(server).unwrap();
        let id = sc.open(Dir::Uni).unwrap();
        sc.write(id, Bytes::from(pattern(1000))).unwrap();
        sc.finish(id).unwrap();
        id
    };
    let received = client_stats(&mut s.net, client).datagrams_received;
    assert!(s.net.run_until(Duration::from_secs(1), |net| {
        client_stats(net, client).datagrams_received > received
    }));
    // The client's ACK (delayed, RFC 9000 §13.2.1) leaves from a new address...
    s.net.set_addr(C, NEW_PORT);
    let sent = client_stats(&mut s.net, client).datagrams_sent;
    assert!(s.net.run_until(Duration::from_secs(1), |net| {
        client_stats(net, client).datagrams_sent > sent
    }));
    // ...that vanishes right after.
    s.net.set_addr(C, old);
    s.net.run_for(Duration::from_secs(5));
    let sc = s.net.endpoint(S).connection(server).unwrap();
    assert_eq!(sc.stats().migrations, 1, "{:?}", sc.stats());
    assert_eq!(sc.stats().paths_validated, 0);
    assert_eq!(sc.remote_address(), old, "back on the validated path");
    assert!(sc.is_path_validated());
    // And the connection works there.
    let now = s.net.now();
    let cc = s.net.endpoint(C).connection_mut(client).unwrap();
    let got = cc.accept(Dir::Uni);
    assert_eq!(got, Some(id));
    let mut data = Vec::new();
    while let Ok(Some(d)) = cc.read(id, usize::MAX, now) {
        data.extend_from_slice(&d);
    }
    assert!(data == pattern(1000));
}

/// Found by the `server_connection` fuzz target: a CE-marked packet from a new address made an
/// ACK due at once while the anti-amplification limit of the new path allowed nothing, and the
/// ACK deadline fired at the same instant forever (a busy loop in the runtime).
#[test]
fn fuzz_regression_forged_ack_ecn_from_a_new_address() {
    let mut s = sim(206, LinkConfig::default(), TransportConfig::default());
    let server = connect(&mut s);
    let now = s.net.now();
    let frames = [0x03u8, 0, 0, 0, 0, 0, 0, 0, 5, 0, 5];
    let d = s
        .net
        .endpoint(C)
        .connection_mut(s.client)
        .unwrap()
        .forge_one_rtt_packet(now, &frames)
        .unwrap();
    s.net.endpoint(S).handle_datagram_ecn(
        now,
        NEW_PORT,
        Some(crate::connection::EcnCodepoint::Ce),
        bytes::BytesMut::from(&d[..]),
    );
    let limit = s.net.now() + Duration::from_millis(200);
    let mut steps = 0;
    while s.net.step(limit) {
        steps += 1;
        if steps > 100_000 {
            let now = s.net.now();
            let sc = s.net.endpoint(S).connection(server).unwrap();
            panic!(
                "no progress at {now:?}: {sc:?} timeout {:?}",
                sc.poll_timeout()
            );
        }
    }
}

/// A client that moves to a new address ten times rotates connection IDs both ways each time
/// (RFC 9000 §9.5): the endpoints' routing tables keep only the IDs and reset tokens in use,
/// rather than growing with every rotation (a peer could otherwise grow them for as long as
/// the connection lives).
#[test]
fn routing_tables_stay_bounded_across_connection_id_rotations() {
    let mut s = sim(203, LinkConfig::default(), TransportConfig::default());
    let server = connect(&mut s);
    let client = s.client;
    s.net.run_for(Duration::from_millis(100));
    let before = (
        s.net.endpoint(C).routing_sizes(),
        s.net.endpoint(S).routing_sizes(),
    );
    for i in 0..10u8 {
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 1, i + 1)), 50000);
        s.net.set_addr(C, addr);
        let now = s.net.now();
        s.net.endpoint(C).local_address_changed(now, true);
        // Traffic on the new path, then time for the retirements and new IDs to go round.
        let got = download(&mut s, server, 64 << 10, |_| {});
        assert_eq!(got, pattern(64 << 10), "move {i}");
        s.net.run_for(Duration::from_millis(300));
    }
    assert_eq!(client_stats(&mut s.net, client).migrations, 10);
    let after = (
        s.net.endpoint(C).routing_sizes(),
        s.net.endpoint(S).routing_sizes(),
    );
    // Routed IDs: the same number as before. Watched tokens: at most one per peer ID the
    // connection may hold (the default active_connection_id_limit, 4); the handshake ID
    // came without a token, so its successor can add one. Without the retirements reaching
    // the endpoint, each rotation added an ID and a token.
    for (side, b, a) in [("client", before.0, after.0), ("server", before.1, after.1)] {
        assert_eq!(
            [a[0], a[2]],
            [b[0], b[2]],
            "{side}: IDs routed, before {b:?} after {a:?}"
        );
        assert!(a[1] <= 4, "{side}: tokens, before {b:?} after {a:?}");
    }
    // Once the connection is closed and drained, nothing routes to its slot any more: the
    // endpoints unroute what the connection lists then (its IDs and its peer's tokens not
    // retired, and the Initial's ID), which must be all they routed for it.
    let now = s.net.now();
    s.net.endpoint(C).connection_mut(client).unwrap().close(
        now,
        crate::VarInt::from_u32(0),
        bytes::Bytes::new(),
    );
    s.net.run_for(Duration::from_secs(5));
    for side in [C, S] {
        assert_eq!(s.net.endpoint(side).connection_count(), 0);
        assert_eq!(s.net.endpoint(side).routing_sizes(), [0, 0, 0]);
    }
}
