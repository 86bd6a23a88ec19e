//! Byte-exact packet protection against the RFCs' own test vectors:
//! RFC 9001 Appendix A (QUIC v1) and RFC 9369 Appendix A (QUIC v2), with both rustls crypto
//! providers (aws-lc-rs and ring).

use bytes::{Bytes, BytesMut};
use gquic_transport::crypto::{self, retry};
use gquic_transport::wire::frame::{Frame, Iter};
use gquic_transport::wire::packet::{self, Header, PacketNumber, PartialDecode, ProtectedHeader};
use gquic_transport::wire::{ConnectionId, PacketType, Version};
use gquic_transport::Side;
use rustls::crypto::cipher::{AeadKey, Iv};
use rustls::crypto::tls13::OkmBlock;
use rustls::crypto::CryptoProvider;

macro_rules! vector {
    ($rfc:literal, $name:literal) => {
        hex::decode(include_str!(concat!("vectors/", $rfc, "_", $name, ".hex")).trim()).unwrap()
    };
}

struct Vectors {
    version: Version,
    client_initial_payload: Vec<u8>,
    client_initial_header: Vec<u8>,
    client_initial_protected: Vec<u8>,
    server_initial_payload: Vec<u8>,
    server_initial_header: Vec<u8>,
    server_initial_protected: Vec<u8>,
    retry: Vec<u8>,
    chacha_secret: Vec<u8>,
    chacha_header: Vec<u8>,
    chacha_packet: Vec<u8>,
    /// Label prefix for HKDF-Expand-Label: "quic " (v1) or "quicv2 " (v2).
    label_prefix: &'static str,
}

fn rfc9001() -> Vectors {
    Vectors {
        version: Version::V1,
        client_initial_payload: vector!("rfc9001", "client_initial_payload"),
        client_initial_header: vector!("rfc9001", "client_initial_header"),
        client_initial_protected: vector!("rfc9001", "client_initial_protected"),
        server_initial_payload: vector!("rfc9001", "server_initial_payload"),
        server_initial_header: vector!("rfc9001", "server_initial_header"),
        server_initial_protected: vector!("rfc9001", "server_initial_protected"),
        retry: vector!("rfc9001", "retry"),
        chacha_secret: vector!("rfc9001", "chacha_secret"),
        chacha_header: vector!("rfc9001", "chacha_header"),
        chacha_packet: vector!("rfc9001", "chacha_packet"),
        label_prefix: "quic ",
    }
}

fn rfc9369() -> Vectors {
    Vectors {
        version: Version::V2,
        client_initial_payload: vector!("rfc9369", "client_initial_payload"),
        client_initial_header: vector!("rfc9369", "client_initial_header"),
        client_initial_protected: vector!("rfc9369", "client_initial_protected"),
        server_initial_payload: vector!("rfc9369", "server_initial_payload"),
        server_initial_header: vector!("rfc9369", "server_initial_header"),
        server_initial_protected: vector!("rfc9369", "server_initial_protected"),
        retry: vector!("rfc9369", "retry"),
        chacha_secret: vector!("rfc9369", "chacha_secret"),
        chacha_header: vector!("rfc9369", "chacha_header"),
        chacha_packet: vector!("rfc9369", "chacha_packet"),
        label_prefix: "quicv2 ",
    }
}

fn providers() -> [(&'static str, CryptoProvider); 2] {
    [
        ("aws-lc-rs", rustls::crypto::aws_lc_rs::default_provider()),
        ("ring", rustls::crypto::ring::default_provider()),
    ]
}

/// The client-chosen Destination Connection ID of every vector.
fn odcid() -> ConnectionId {
    ConnectionId::new(&hex::decode("8394c8f03e515708").unwrap())
}

fn server_cid() -> ConnectionId {
    ConnectionId::new(&hex::decode("f067a5502a4262b5").unwrap())
}

/// Encodes a header with our encoder, appends `payload` padded to `payload_len` and room for the
/// tag, and seals it with `keys`.
fn build_initial(
    header: &Header,
    payload: &[u8],
    payload_len: usize,
    pn: u64,
    keys: &rustls::quic::DirectionalKeys,
) -> (Vec<u8>, Vec<u8>) {
    let mut buf = Vec::new();
    let partial = header.encode(&mut buf).unwrap();
    buf.extend_from_slice(payload);
    buf.resize(partial.header_len() + payload_len + 16, 0);
    partial.finish(&mut buf).unwrap();
    let unprotected_header = buf[..partial.header_len()].to_vec();
    crypto::seal(&mut buf, partial.header_len(), partial.pn_offset, pn, keys).unwrap();
    (unprotected_header, buf)
}

/// Decodes `datagram` the way a receiver does and checks header and payload.
fn receive(
    datagram: &[u8],
    local_cid_len: usize,
    keys: &rustls::quic::DirectionalKeys,
    largest_pn: Option<u64>,
    expected_header: &Header,
    expected_payload: &[u8],
    packet_type: PacketType,
) {
    let (partial, rest) = PartialDecode::new(BytesMut::from(datagram), local_cid_len).unwrap();
    assert!(rest.is_none());
    let packet = partial.finish(keys.header.as_ref()).unwrap();
    assert_eq!(&packet.header, expected_header);
    assert!(packet.reserved_bits_valid());
    let pn = packet.header.number().expand(largest_pn);
    let payload = crypto::open(packet.buf, packet.header_len, pn, keys.packet.as_ref()).unwrap();
    assert_eq!(&payload[..expected_payload.len()], expected_payload);
    assert!(payload[expected_payload.len()..].iter().all(|&b| b == 0));
    // Every frame of the vectors decodes and is allowed in its packet type.
    let frames: Vec<Frame> = Iter::new(payload, packet_type)
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(frames.iter().any(|f| matches!(f, Frame::Crypto { .. })));
}

fn client_initial(v: &Vectors) {
    for (name, provider) in providers() {
        let suite = crypto::initial_suite(&provider).unwrap();
        let client = crypto::initial_keys(&suite, v.version, &odcid(), Side::Client).unwrap();
        let server = crypto::initial_keys(&suite, v.version, &odcid(), Side::Server).unwrap();
        let header = Header::Initial {
            version: v.version,
            dst_cid: odcid(),
            src_cid: ConnectionId::EMPTY,
            token: Bytes::new(),
            number: PacketNumber::with_len(2, 4),
        };
        let (unprotected, packet) =
            build_initial(&header, &v.client_initial_payload, 1162, 2, &client.local);
        assert_eq!(
            hex::encode(&unprotected),
            hex::encode(&v.client_initial_header),
            "{name}"
        );
        assert_eq!(
            hex::encode(&packet),
            hex::encode(&v.client_initial_protected),
            "{name}"
        );
        receive(
            &v.client_initial_protected,
            8,
            &server.remote,
            None,
            &header,
            &v.client_initial_payload,
            PacketType::Initial,
        );
    }
}

fn server_initial(v: &Vectors) {
    for (name, provider) in providers() {
        let suite = crypto::initial_suite(&provider).unwrap();
        let client = crypto::initial_keys(&suite, v.version, &odcid(), Side::Client).unwrap();
        let server = crypto::initial_keys(&suite, v.version, &odcid(), Side::Server).unwrap();
        let header = Header::Initial {
            version: v.version,
            dst_cid: ConnectionId::EMPTY,
            src_cid: server_cid(),
            token: Bytes::new(),
            number: PacketNumber::with_len(1, 2),
        };
        let len = v.server_initial_payload.len();
        let (unprotected, packet) =
            build_initial(&header, &v.server_initial_payload, len, 1, &server.local);
        assert_eq!(
            hex::encode(&unprotected),
            hex::encode(&v.server_initial_header),
            "{name}"
        );
        assert_eq!(
            hex::encode(&packet),
            hex::encode(&v.server_initial_protected),
            "{name}"
        );
        receive(
            &v.server_initial_protected,
            0,
            &client.remote,
            None,
            &header,
            &v.server_initial_payload,
            PacketType::Initial,
        );
    }
}

fn retry_packet(v: &Vectors) {
    let mut buf = Vec::new();
    let unused = v.retry[0] & 0x0f;
    packet::encode_retry(
        &mut buf,
        v.version,
        &ConnectionId::EMPTY,
        &server_cid(),
        b"token",
        unused,
    )
    .unwrap();
    let tag = retry::retry_tag(v.version, &odcid(), &buf).unwrap();
    buf.extend_from_slice(&tag);
    assert_eq!(hex::encode(&buf), hex::encode(&v.retry));
    assert!(retry::verify_retry(v.version, &odcid(), &v.retry));

    // Any flipped bit, or the wrong original DCID, fails verification.
    for i in 0..v.retry.len() {
        let mut bad = v.retry.clone();
        bad[i] ^= 0x01;
        assert!(!retry::verify_retry(v.version, &odcid(), &bad), "byte {i}");
    }
    assert!(!retry::verify_retry(v.version, &server_cid(), &v.retry));
    let other = if v.version == Version::V1 {
        Version::V2
    } else {
        Version::V1
    };
    assert!(!retry::verify_retry(other, &odcid(), &v.retry));

    let (partial, rest) = PartialDecode::new(BytesMut::from(&v.retry[..]), 0).unwrap();
    assert!(rest.is_none());
    match partial.header() {
        ProtectedHeader::Retry {
            version,
            src_cid,
            token,
            integrity_tag,
            ..
        } => {
            assert_eq!(*version, v.version);
            assert_eq!(*src_cid, server_cid());
            assert_eq!(&token[..], b"token");
            assert_eq!(integrity_tag, &tag);
        }
        other => panic!("decoded as {other:?}"),
    }
}

/// HKDF-Expand-Label (RFC 8446 §7.1) with an empty context.
fn expand_label(suite: &rustls::Tls13CipherSuite, secret: &[u8], label: &str, out: &mut [u8]) {
    let expander = suite.hkdf_provider.expander_for_okm(&OkmBlock::new(secret));
    let full = format!("tls13 {label}");
    let len = (out.len() as u16).to_be_bytes();
    let label_len = [full.len() as u8];
    expander
        .expand_slice(&[&len, &label_len, full.as_bytes(), &[0]], out)
        .unwrap();
}

fn chacha_short_header(v: &Vectors) {
    let pn = 654_360_564;
    for (name, provider) in providers() {
        let suite = provider
            .cipher_suites
            .iter()
            .find(|s| s.suite() == rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256)
            .and_then(|s| s.tls13())
            .unwrap();
        let quic = suite.quic_suite().unwrap().quic;
        let mut key = [0u8; 32];
        let mut iv = [0u8; 12];
        let mut hp = [0u8; 32];
        expand_label(
            suite,
            &v.chacha_secret,
            &format!("{}key", v.label_prefix),
            &mut key,
        );
        expand_label(
            suite,
            &v.chacha_secret,
            &format!("{}iv", v.label_prefix),
            &mut iv,
        );
        expand_label(
            suite,
            &v.chacha_secret,
            &format!("{}hp", v.label_prefix),
            &mut hp,
        );
        let packet_key = quic.packet_key(AeadKey::from(key), Iv::from(iv));
        let header_key = quic.header_protection_key(AeadKey::from(hp));

        let header = Header::Short {
            spin: false,
            key_phase: false,
            dst_cid: ConnectionId::EMPTY,
            number: PacketNumber::with_len(pn, 3),
        };
        let mut buf = Vec::new();
        let partial = header.encode(&mut buf).unwrap();
        assert_eq!(hex::encode(&buf), hex::encode(&v.chacha_header), "{name}");
        Frame::Ping.encode(&mut buf);
        buf.resize(buf.len() + 16, 0);
        crypto::seal_with(
            &mut buf,
            partial.header_len(),
            partial.pn_offset,
            pn,
            packet_key.as_ref(),
            header_key.as_ref(),
        )
        .unwrap();
        assert_eq!(hex::encode(&buf), hex::encode(&v.chacha_packet), "{name}");

        // And back: the smallest possible packet still yields a header-protection sample.
        let (partial, _) = PartialDecode::new(BytesMut::from(&v.chacha_packet[..]), 0).unwrap();
        let packet = partial.finish(header_key.as_ref()).unwrap();
        assert_eq!(packet.header, header);
        let full = packet.header.number().expand(Some(pn - 1));
        assert_eq!(full, pn);
        let payload =
            crypto::open(packet.buf, packet.header_len, full, packet_key.as_ref()).unwrap();
        assert_eq!(&payload[..], &[0x01]);
    }
}

#[test]
fn rfc9001_a2_client_initial() {
    client_initial(&rfc9001());
}

#[test]
fn rfc9001_a3_server_initial() {
    server_initial(&rfc9001());
}

#[test]
fn rfc9001_a4_retry() {
    retry_packet(&rfc9001());
}

#[test]
fn rfc9001_a5_chacha20_short_header() {
    chacha_short_header(&rfc9001());
}

#[test]
fn rfc9369_a2_client_initial() {
    client_initial(&rfc9369());
}

#[test]
fn rfc9369_a3_server_initial() {
    server_initial(&rfc9369());
}

#[test]
fn rfc9369_a4_retry() {
    retry_packet(&rfc9369());
}

#[test]
fn rfc9369_a5_chacha20_short_header() {
    chacha_short_header(&rfc9369());
}

/// A datagram with the client Initial coalesced with a second packet splits into both
/// (RFC 9000 §12.2), and a Length beyond the datagram is rejected.
#[test]
fn rfc9000_coalesced_packets_split() {
    let v = rfc9001();
    let mut datagram = v.server_initial_protected.clone();
    datagram.extend_from_slice(&v.client_initial_protected);
    let (first, rest) = PartialDecode::new(BytesMut::from(&datagram[..]), 0).unwrap();
    assert_eq!(first.len(), v.server_initial_protected.len());
    let rest = rest.expect("second packet");
    assert_eq!(&rest[..], &v.client_initial_protected[..]);
    let (second, none) = PartialDecode::new(rest, 0).unwrap();
    assert!(none.is_none());
    assert_eq!(second.header().dst_cid(), Some(odcid()));

    let truncated = &v.client_initial_protected[..1000];
    assert!(PartialDecode::new(BytesMut::from(truncated), 0).is_err());
}
