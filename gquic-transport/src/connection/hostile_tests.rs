//! A misbehaving peer meets the RFC's error code, never a panic: flow-control and stream
//! limits broken (RFC 9000 §4.1, §4.6), frames in packets that may not carry them (§12.4),
//! data beyond any bound (§4.5, §7.5), acknowledgements of packets never sent (§13.1), reserved
//! header bits set (§17.2, §17.3.1); a corrupted datagram is dropped, never accepted (RFC 9001
//! §5). The client of an established pair forges the packets with its keys.

use bytes::BytesMut;

use super::tests::{
    certs, client_config, established, forge, frame_bytes, lost_with, server_config, Pair,
    CLIENT_ADDR,
};
use super::*;
use crate::{Dir, StreamId};

/// Delivers a forged client datagram to the server and returns the code it closed with; also
/// checks that the client saw the same code in CONNECTION_CLOSE.
fn server_closes_with(p: &mut Pair, datagram: Vec<u8>) -> TransportErrorCode {
    let now = p.now;
    p.server
        .handle_datagram(now, CLIENT_ADDR, BytesMut::from(&datagram[..]));
    p.drive_for(Duration::from_millis(50));
    let code = lost_with(&p.server_events)
        .unwrap_or_else(|| panic!("server did not close: {:?}", p.server_events));
    assert!(
        p.client_events.iter().any(|e| matches!(e, Event::ConnectionLost(ConnectionError::ConnectionClosed { code: c, .. }) if *c == code)),
        "client did not see {code}: {:?}",
        p.client_events
    );
    code
}

#[test]
fn hostile_flow_control_error() {
    let mut p = established();
    let window = TransportConfig::default().stream_receive_window;
    let frame = crate::wire::Frame::Stream(crate::wire::frame::StreamFrame {
        id: StreamId(0),
        offset: window,
        fin: false,
        data: Bytes::from_static(b"over the limit"),
    });
    let d = forge(&mut p.client, SpaceId::Data, &frame_bytes(&[frame]));
    assert_eq!(
        server_closes_with(&mut p, d),
        TransportErrorCode::FLOW_CONTROL_ERROR
    );
}

#[test]
fn hostile_stream_limit_error() {
    let mut p = established();
    let limit = TransportConfig::default().max_concurrent_bidi_streams;
    let frame = crate::wire::Frame::Stream(crate::wire::frame::StreamFrame {
        id: StreamId::new(Side::Client, Dir::Bi, limit),
        offset: 0,
        fin: false,
        data: Bytes::from_static(b"x"),
    });
    let d = forge(&mut p.client, SpaceId::Data, &frame_bytes(&[frame]));
    assert_eq!(
        server_closes_with(&mut p, d),
        TransportErrorCode::STREAM_LIMIT_ERROR
    );
}

#[test]
fn hostile_frame_not_allowed_in_packet_type() {
    // A STREAM frame in the client's first Initial packet (RFC 9000 §12.4).
    let certs = certs();
    let server = server_config(&certs, &[b"hq-interop"], TransportConfig::default());
    let client = client_config(&certs, &[b"hq-interop"], TransportConfig::default());
    let mut p = Pair::new(&client, &server, Duration::from_millis(5));
    let frame = crate::wire::Frame::Stream(crate::wire::frame::StreamFrame {
        id: StreamId(0),
        offset: 0,
        fin: false,
        data: Bytes::from_static(b"early"),
    });
    let d = forge(&mut p.client, SpaceId::Initial, &frame_bytes(&[frame]));
    assert_eq!(
        server_closes_with(&mut p, d),
        TransportErrorCode::PROTOCOL_VIOLATION
    );

    // HANDSHAKE_DONE from a client (RFC 9000 §19.20).
    let mut p = established();
    let d = forge(&mut p.client, SpaceId::Data, &[0x1e]);
    assert_eq!(
        server_closes_with(&mut p, d),
        TransportErrorCode::PROTOCOL_VIOLATION
    );
}

#[test]
fn hostile_huge_crypto_offset_is_bounded() {
    let mut p = established();
    let frame = crate::wire::Frame::Crypto {
        offset: 1 << 40,
        data: Bytes::from_static(b"far away"),
    };
    let d = forge(&mut p.client, SpaceId::Data, &frame_bytes(&[frame]));
    assert_eq!(
        server_closes_with(&mut p, d),
        TransportErrorCode::CRYPTO_BUFFER_EXCEEDED
    );
    assert_eq!(
        p.server.spaces[SpaceId::Data as usize]
            .crypto()
            .map_or(0, |c| c.recv.buffered()),
        0,
        "nothing was buffered"
    );
}

#[test]
fn hostile_huge_stream_offset_is_bounded() {
    let mut p = established();
    let frame = crate::wire::Frame::Stream(crate::wire::frame::StreamFrame {
        id: StreamId(0),
        offset: (1 << 62) - 100,
        fin: false,
        data: Bytes::from_static(b"far away"),
    });
    let d = forge(&mut p.client, SpaceId::Data, &frame_bytes(&[frame]));
    assert_eq!(
        server_closes_with(&mut p, d),
        TransportErrorCode::FLOW_CONTROL_ERROR
    );
    assert_eq!(p.server.streams.recv_buffered(), 0, "nothing was buffered");
    assert!(p.server.open_streams() <= 1);
}

#[test]
fn hostile_ack_of_never_sent_packet() {
    let mut p = established();
    let next = p.server.spaces[SpaceId::Data as usize].sent.next_pn();
    let ack = crate::wire::frame::Ack::from_ranges(&[0..=next + 1000], 0, None).unwrap();
    let d = forge(
        &mut p.client,
        SpaceId::Data,
        &frame_bytes(&[crate::wire::Frame::Ack(ack)]),
    );
    assert_eq!(
        server_closes_with(&mut p, d),
        TransportErrorCode::PROTOCOL_VIOLATION
    );
}

#[test]
fn corrupted_datagram_is_dropped_never_accepted() {
    let mut p = established();
    let frame = crate::wire::Frame::Ping;
    let mut d = forge(&mut p.client, SpaceId::Data, &frame_bytes(&[frame]));
    let before = p.server.stats();
    for i in [10, d.len() / 2, d.len() - 1] {
        let mut bad = d.clone();
        bad[i] ^= 0x40;
        let now = p.now;
        p.server
            .handle_datagram(now, CLIENT_ADDR, BytesMut::from(&bad[..]));
    }
    let after = p.server.stats();
    assert_eq!(
        after.packets_received, before.packets_received,
        "no corrupted packet authenticated"
    );
    assert_eq!(after.packets_dropped, before.packets_dropped + 3);
    // The genuine packet still goes through.
    let now = p.now;
    p.server
        .handle_datagram(now, CLIENT_ADDR, BytesMut::from(&d[..]));
    assert_eq!(
        p.server.stats().packets_received,
        before.packets_received + 1
    );
    d.clear();
    assert!(!p.server.is_closed());
}

#[test]
fn hostile_reserved_bits_are_a_protocol_violation() {
    // RFC 9000 §17.3.1: a 1-RTT packet whose reserved bits are set after removing protection.
    let mut p = established();
    let mut buf = Vec::new();
    let (start, partial, pn) = p.client.begin_packet(SpaceId::Data, &mut buf).unwrap();
    buf[start] |= 0x08;
    buf.push(0x01); // PING
    let now = p.now;
    p.client.finish_packet(
        now,
        SpaceId::Data,
        &mut buf,
        start,
        partial,
        pn,
        Default::default(),
        true,
        0,
        None,
    );
    assert_eq!(
        server_closes_with(&mut p, buf),
        TransportErrorCode::PROTOCOL_VIOLATION
    );
}
