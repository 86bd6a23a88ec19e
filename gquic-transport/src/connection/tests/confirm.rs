//! How a client confirms the handshake (RFC 9001 §4.1.2): by HANDSHAKE_DONE, or by the
//! acknowledgment of one of its 1-RTT packets, never of a 0-RTT one.

use super::*;

/// The client's Finished and 1-RTT data reach the server, whose whole answer (HANDSHAKE_DONE
/// with it) is lost. The client is not confirmed yet: its Handshake space is still there
/// (and its PTO would send Handshake probes the server drops for want of keys).
fn finished_delivered_answer_lost(p: &mut Pair) -> Instant {
    let now = exchange_first_flights(p);
    let id = p.client.open(Dir::Bi).unwrap();
    p.client
        .write(id, Bytes::from_static(b"1-RTT data"))
        .unwrap();
    p.client.finish(id).unwrap();
    let (initial, handshake, one_rtt) = client_packets_by_kind(p, now);
    assert!(!handshake.is_empty() && !one_rtt.is_empty());
    for d in initial.into_iter().chain(handshake).chain(one_rtt) {
        p.server.handle_datagram(now, CLIENT_ADDR, d);
    }
    assert!(
        !p.server.is_handshaking(),
        "the server completed the handshake"
    );
    let mut buf = Vec::new();
    let mut lost = 0;
    while p.server.poll_transmit(now, &mut buf).is_some() {
        lost += 1;
    }
    assert!(lost > 0, "the server answered");
    assert!(!p.client.handshake_confirmed);
    assert_eq!(p.client.spaces.freed(), (true, false));
    now
}

/// The server acknowledges client packets `acked` in a 1-RTT packet of its own (an ACK frame
/// alone, no HANDSHAKE_DONE), which reaches the client.
fn server_acks(p: &mut Pair, now: Instant, acked: std::ops::RangeInclusive<u64>) {
    let ack = crate::wire::frame::Ack::from_ranges(&[acked], 0, None).unwrap();
    let packet = forge(
        &mut p.server,
        SpaceId::Data,
        &frame_bytes(&[crate::wire::Frame::Ack(ack)]),
    );
    p.client
        .handle_datagram(now, SERVER_ADDR, BytesMut::from(&packet[..]));
    assert!(!p.client.is_closed(), "{:?}", p.client.close);
}

#[test]
fn an_acknowledged_1rtt_packet_confirms_the_clients_handshake() {
    let mut p = default_pair(Duration::from_millis(10));
    let now = finished_delivered_answer_lost(&mut p);
    let last = p.client.spaces[SpaceId::Data as usize].sent.next_pn() - 1;
    server_acks(&mut p, now, 0..=last);
    assert!(p.client.handshake_confirmed);
    assert_eq!(
        p.client.spaces.freed(),
        (true, true),
        "the Handshake keys went with the confirmation"
    );
    // No Handshake probe follows: the next datagrams are 1-RTT only, and the connection
    // goes on once HANDSHAKE_DONE is sent again.
    p.drive_for(Duration::from_millis(500));
    let first = p.server.accept(Dir::Bi).expect("the first stream");
    let now = p.now;
    assert_eq!(
        p.server.read(first, usize::MAX, now).unwrap().as_deref(),
        Some(&b"1-RTT data"[..])
    );
    let got = transfer(&mut p, 16 << 10, Duration::from_secs(10)).expect("transfer");
    assert_eq!(got, expected(16 << 10));
}

/// 0-RTT and 1-RTT packets share a packet number space, and a server acknowledges 0-RTT
/// packets before the handshake is complete: such an ACK proves nothing. One that covers a
/// 1-RTT packet too confirms.
#[test]
fn an_acknowledged_0rtt_packet_does_not_confirm_the_clients_handshake() {
    let certs = certs();
    let tls = Arc::new(server_tls(&certs, &[b"hq-interop"]));
    let mut server = ServerConfig::new(tls).unwrap();
    server.enable_0rtt(true).unwrap();
    let mut client = client_config(&certs, &[b"hq-interop"], TransportConfig::default());
    client.enable_0rtt(true);
    // A first connection leaves the client a ticket.
    let mut first = Pair::new(&client, &server, Duration::from_millis(5));
    first.drive_for(Duration::from_millis(300));
    assert!(!first.client.is_handshaking());
    let mut p = Pair::new(&client, &server, Duration::from_millis(5));
    assert!(p.client.is_0rtt(), "resumed with early data");
    let id = p.client.open(Dir::Bi).unwrap();
    p.client.write(id, Bytes::from(vec![7u8; 4000])).unwrap();
    // The client's first flight carries its 0-RTT packets; the server's answer has its
    // Handshake flight and a 1-RTT ACK of them, which must not confirm.
    let now = exchange_first_flights(&mut p);
    let zero_rtt_end = p.client.spaces[SpaceId::Data as usize].sent.next_pn();
    assert!(zero_rtt_end >= 2, "several 0-RTT packets went out");
    assert_eq!(p.client.zero_rtt_accepted(), Some(true));
    assert!(
        p.client.spaces[SpaceId::Data as usize]
            .sent
            .largest_acked()
            .is_some(),
        "the server acknowledged 0-RTT packets"
    );
    assert!(!p.client.handshake_confirmed);
    // The Finished and 1-RTT packets go out (and are lost); an ACK of the 0-RTT packets
    // alone still confirms nothing.
    p.client.finish(id).unwrap();
    let (_, handshake, one_rtt) = client_packets_by_kind(&mut p, now);
    assert!(!handshake.is_empty() && !one_rtt.is_empty());
    assert!(p.client.spaces[SpaceId::Data as usize].sent.next_pn() > zero_rtt_end);
    server_acks(&mut p, now, 0..=zero_rtt_end - 1);
    assert!(!p.client.handshake_confirmed);
    assert_eq!(p.client.spaces.freed(), (true, false));
    // One that covers the first 1-RTT packet does.
    server_acks(&mut p, now, 0..=zero_rtt_end);
    assert!(p.client.handshake_confirmed);
    assert_eq!(p.client.spaces.freed(), (true, true));
}
