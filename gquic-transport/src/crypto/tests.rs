//! Key-phase tests over the keys of a real rustls QUIC handshake, run in memory.

use std::sync::Arc;

use bytes::BytesMut;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::quic::{self, Connection, KeyChange};

use super::key_phase::RemoteKey;
use super::*;
use crate::wire::packet::{Header, PacketNumber, PartialDecode};
use crate::wire::{ConnectionId, TransportParameters};
use crate::Side;

struct Handshake {
    client: Connection,
    server: Connection,
    client_1rtt: Option<(quic::Keys, quic::Secrets)>,
    server_1rtt: Option<(quic::Keys, quic::Secrets)>,
}

fn configs(
    provider: rustls::crypto::CryptoProvider,
) -> (Arc<rustls::ClientConfig>, Arc<rustls::ServerConfig>) {
    let provider = Arc::new(provider);
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert_der = CertificateDer::from(cert.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der.clone()).unwrap();
    let mut client = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"hq-interop".to_vec()];
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert_der], key)
        .unwrap();
    server.alpn_protocols = vec![b"hq-interop".to_vec()];
    (Arc::new(client), Arc::new(server))
}

fn transfer(
    from: &mut Connection,
    to: &mut Connection,
    one_rtt: &mut Option<(quic::Keys, quic::Secrets)>,
) {
    // Each write_hs call returns the bytes of one key epoch; the peer must read them before the
    // next epoch's (rustls rejects fragments spanning a key change).
    loop {
        let mut buf = Vec::new();
        let change = from.write_hs(&mut buf);
        if !buf.is_empty() {
            to.read_hs(&buf).unwrap();
        }
        match change {
            Some(KeyChange::OneRtt { keys, next }) => *one_rtt = Some((keys, next)),
            Some(KeyChange::Handshake { .. }) => {}
            None => break,
        }
    }
}

fn handshake(provider: rustls::crypto::CryptoProvider) -> Handshake {
    let (client_config, server_config) = configs(provider);
    let client_params = TransportParameters {
        initial_max_data: 1 << 20,
        initial_source_connection_id: Some(ConnectionId::new(&[1; 8])),
        ..Default::default()
    };
    let server_params = TransportParameters {
        original_destination_connection_id: Some(ConnectionId::new(&[2; 8])),
        max_datagram_frame_size: Some(1200),
        ..Default::default()
    };
    let encode = |p: &TransportParameters| {
        let mut v = Vec::new();
        p.encode(&mut v);
        v
    };
    let client = quic::ClientConnection::new(
        client_config,
        quic::Version::V1,
        ServerName::try_from("localhost").unwrap(),
        encode(&client_params),
    )
    .unwrap();
    let server =
        quic::ServerConnection::new(server_config, quic::Version::V1, encode(&server_params))
            .unwrap();
    let mut hs = Handshake {
        client: client.into(),
        server: server.into(),
        client_1rtt: None,
        server_1rtt: None,
    };
    for _ in 0..10 {
        transfer(&mut hs.client, &mut hs.server, &mut hs.client_1rtt);
        transfer(&mut hs.server, &mut hs.client, &mut hs.server_1rtt);
        if !hs.client.is_handshaking() && !hs.server.is_handshaking() {
            break;
        }
    }
    // Collect any keys produced by the last message.
    transfer(&mut hs.client, &mut hs.server, &mut hs.client_1rtt);
    assert!(!hs.client.is_handshaking() && !hs.server.is_handshaking());

    // The transport parameters made it across TLS and decode.
    let got =
        TransportParameters::decode(Side::Server, hs.client.quic_transport_parameters().unwrap())
            .unwrap();
    assert_eq!(got, server_params);
    let got =
        TransportParameters::decode(Side::Client, hs.server.quic_transport_parameters().unwrap())
            .unwrap();
    assert_eq!(got, client_params);
    hs
}

fn phases(provider: rustls::crypto::CryptoProvider, interval: u64) -> (KeyPhase, KeyPhase) {
    let hs = handshake(provider);
    let (ck, cn) = hs.client_1rtt.unwrap();
    let (sk, sn) = hs.server_1rtt.unwrap();
    (
        KeyPhase::new(ck, cn, interval),
        KeyPhase::new(sk, sn, interval),
    )
}

/// Seals a 1-RTT packet with the sender's current keys.
fn send(from: &mut KeyPhase, pn: u64, payload: &[u8]) -> Vec<u8> {
    let header = Header::Short {
        spin: false,
        key_phase: from.phase(),
        dst_cid: ConnectionId::new(&[7; 8]),
        number: PacketNumber::with_len(pn, 2),
    };
    let mut buf = Vec::new();
    let partial = header.encode(&mut buf).unwrap();
    buf.extend_from_slice(payload);
    buf.resize(buf.len().max(partial.pn_offset + 4 + 16) + 16, 0);
    seal_with(
        &mut buf,
        partial.header_len(),
        partial.pn_offset,
        pn,
        from.local_key(),
        from.local_header_key(),
    )
    .unwrap();
    from.on_packet_sent(pn).unwrap();
    buf
}

/// Receives a 1-RTT packet the way a connection will: header protection, key selection by the
/// Key Phase bit, decryption, then the bookkeeping.
fn receive(
    to: &mut KeyPhase,
    datagram: &[u8],
    largest: Option<u64>,
) -> Result<(RemoteKey, Vec<u8>), CryptoError> {
    let (partial, _) = PartialDecode::new(BytesMut::from(datagram), 8).unwrap();
    let packet = partial.finish(to.remote_header_key()).unwrap();
    let Header::Short {
        key_phase, number, ..
    } = packet.header
    else {
        panic!("short header")
    };
    let pn = number.expand(largest);
    let (which, key) = to
        .remote_key_for(key_phase, pn)
        .ok_or(CryptoError::DecryptFailed)?;
    let payload = open(packet.buf, packet.header_len, pn, key)?;
    to.on_packet_received(which, pn).unwrap();
    // Strip the sender's padding (PADDING frames are zero bytes).
    let mut payload = payload.to_vec();
    while payload.last() == Some(&0) {
        payload.pop();
    }
    Ok((which, payload))
}

fn key_update_both_ways(provider: rustls::crypto::CryptoProvider) {
    let (mut client, mut server) = phases(provider, 1 << 20);
    let p0 = send(&mut client, 0, b"phase zero");
    assert_eq!(
        receive(&mut server, &p0, None).unwrap(),
        (RemoteKey::Current, b"phase zero".to_vec())
    );

    // RFC 9001 §6.1: the client initiates; the server detects the flipped bit and follows.
    let early = send(&mut client, 1, b"late old-phase packet");
    client.initiate_update().unwrap();
    assert!(client.phase());
    let p2 = send(&mut client, 2, b"phase one");
    assert_eq!(
        receive(&mut server, &p2, Some(0)).unwrap(),
        (RemoteKey::Next, b"phase one".to_vec())
    );
    assert!(server.phase(), "server follows the update (RFC 9001 §6.2)");

    // A packet from before the update, reordered, still opens with the previous key (§6.5).
    assert_eq!(
        receive(&mut server, &early, Some(2)).unwrap().0,
        RemoteKey::Previous
    );

    // No second update until one of our new-phase packets is acknowledged (§6.1).
    assert_eq!(client.initiate_update(), Err(KeyUpdateError::NotConfirmed));
    client.on_ack(1);
    assert_eq!(client.initiate_update(), Err(KeyUpdateError::NotConfirmed));
    client.on_ack(2);

    // The server answers with its updated send keys.
    let s0 = send(&mut server, 0, b"from server");
    assert_eq!(
        receive(&mut client, &s0, None).unwrap(),
        (RemoteKey::Current, b"from server".to_vec())
    );

    // Now the server initiates the next update.
    server.on_ack(0);
    server.initiate_update().unwrap();
    let s1 = send(&mut server, 1, b"phase two");
    assert_eq!(
        receive(&mut client, &s1, Some(0)).unwrap(),
        (RemoteKey::Next, b"phase two".to_vec())
    );
    assert_eq!(client.phase(), server.phase());
    let p3 = send(&mut client, 3, b"phase two from client");
    assert_eq!(
        receive(&mut server, &p3, Some(2)).unwrap().0,
        RemoteKey::Current
    );

    // After discarding the previous generation, an old packet no longer opens.
    server.discard_previous();
    assert!(receive(&mut server, &p2, Some(3)).is_err());
}

#[test]
fn rfc9001_key_update_aws_lc_rs() {
    key_update_both_ways(rustls::crypto::aws_lc_rs::default_provider());
}

#[test]
fn rfc9001_key_update_ring() {
    key_update_both_ways(rustls::crypto::ring::default_provider());
}

/// RFC 9001 §6.2: a responder whose own packets carry only ACKs (so nothing of its new phase
/// is acknowledged) takes the peer's next update once it has sent an ACK under the new keys,
/// and refuses it before that.
#[test]
fn rfc9001_responder_takes_a_second_update_after_acknowledging_the_first() {
    let (mut client, mut server) = phases(rustls::crypto::aws_lc_rs::default_provider(), 1 << 20);
    client.initiate_update().unwrap();
    let p0 = send(&mut client, 0, b"phase one");
    assert_eq!(receive(&mut server, &p0, None).unwrap().0, RemoteKey::Next);
    // The server acknowledges packet 0 in an ACK-only packet of the new phase, which the
    // client acknowledges never; the client's update is confirmed by that ACK.
    server.on_ack_sent(0);
    client.on_ack(0);
    client.initiate_update().unwrap();
    let p1 = send(&mut client, 1, b"phase two");
    let (partial, _) = PartialDecode::new(BytesMut::from(&p1[..]), 8).unwrap();
    let packet = partial.finish(server.remote_header_key()).unwrap();
    let Header::Short { key_phase, .. } = packet.header else {
        panic!("short header")
    };
    let (which, key) = server.remote_key_for(key_phase, 1).unwrap();
    assert_eq!(which, RemoteKey::Next);
    open(packet.buf, packet.header_len, 1, key).unwrap();
    assert_eq!(server.on_packet_received(which, 1), Ok(()));

    // Without the ACK having gone out, the same second update is an error.
    let (mut client, mut server) = phases(rustls::crypto::aws_lc_rs::default_provider(), 1 << 20);
    client.initiate_update().unwrap();
    let p0 = send(&mut client, 0, b"phase one");
    receive(&mut server, &p0, None).unwrap();
    client.on_ack(0);
    client.initiate_update().unwrap();
    assert_eq!(
        server.on_packet_received(RemoteKey::Next, 1),
        Err(KeyUpdateError::NotConfirmed)
    );
}

/// After our own update, a packet the peer sent before it saw it (old phase, no new-phase
/// packet from the peer yet) opens with the previous key rather than being taken for an
/// update by the peer.
#[test]
fn rfc9001_old_phase_packet_after_our_update_opens() {
    let (mut client, mut server) = phases(rustls::crypto::aws_lc_rs::default_provider(), 1 << 20);
    let s0 = send(&mut server, 0, b"before");
    receive(&mut client, &s0, None).unwrap();
    let s1 = send(&mut server, 1, b"in flight");
    client.on_ack(0);
    client.initiate_update().unwrap();
    assert_eq!(
        receive(&mut client, &s1, Some(0)).unwrap(),
        (RemoteKey::Previous, b"in flight".to_vec())
    );
}

#[test]
fn rfc9001_tampered_packet_fails_and_counts() {
    let (mut client, mut server) = phases(rustls::crypto::aws_lc_rs::default_provider(), 1 << 20);
    let mut p = send(&mut client, 0, b"hello");
    let last = p.len() - 1;
    p[last] ^= 1;
    assert_eq!(
        receive(&mut server, &p, None),
        Err(CryptoError::DecryptFailed)
    );
    assert!(server.on_decrypt_failure().is_ok());
}

#[test]
fn automatic_update_interval() {
    let (mut client, _server) = phases(rustls::crypto::aws_lc_rs::default_provider(), 3);
    for pn in 0..2 {
        send(&mut client, pn, b"x");
        assert!(!client.should_update());
    }
    send(&mut client, 2, b"x");
    assert!(client.should_update());
    client.initiate_update().unwrap();
    assert!(!client.should_update());
}

/// Idle-connection diet: secrets that do not give the keys in use (a key log entry that
/// belonged to another connection with the same ClientHello random) are never trusted to
/// replace them: the keys stay awake and packets keep opening.
#[test]
fn a_key_source_that_does_not_match_is_not_used() {
    use super::version_keys::{KeySource, TrafficSecrets};
    use rustls::crypto::tls13::OkmBlock;
    let (mut client, mut server) = phases(rustls::crypto::aws_lc_rs::default_provider(), 1 << 20);
    let suite = rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256
        .tls13()
        .unwrap();
    let wrong = TrafficSecrets {
        client: OkmBlock::new(&[1; 32]),
        server: OkmBlock::new(&[2; 32]),
    };
    server.set_source(Box::new(
        KeySource::new(suite, crate::wire::Version::V1, Side::Server, wrong).unwrap(),
    ));
    server.hibernate();
    assert!(server.is_hibernating(), "the next generation goes anyway");
    assert!(!server.is_asleep(), "the current keys stay");
    let p = send(&mut client, 0, b"still opens");
    assert_eq!(
        receive(&mut server, &p, None).unwrap(),
        (RemoteKey::Current, b"still opens".to_vec())
    );
}

/// The default provider puts TLS_AES_128_GCM_SHA256 first, keeps every suite of the library's
/// default in its order after it, and still offers X25519MLKEM768 first; with both crypto
/// libraries, the cipher suites are ring's and the rest aws-lc-rs'.
#[cfg(feature = "aws-lc-rs")]
#[test]
fn default_provider_prefers_aes_128_gcm_and_keeps_the_rest() {
    use rustls::CipherSuite as C;
    let ours = super::default_provider();
    // TLS 1.3's (a workspace build may enable rustls' TLS 1.2 suites too; QUIC uses none).
    let suites: Vec<C> = ours
        .cipher_suites
        .iter()
        .filter(|s| s.tls13().is_some())
        .map(|s| s.suite())
        .collect();
    assert_eq!(
        suites,
        [
            C::TLS13_AES_128_GCM_SHA256,
            C::TLS13_AES_256_GCM_SHA384,
            C::TLS13_CHACHA20_POLY1305_SHA256
        ]
    );
    assert_eq!(
        ours.kx_groups[0].name(),
        rustls::NamedGroup::X25519MLKEM768,
        "the hybrid post-quantum group stays first"
    );
    #[cfg(feature = "ring")]
    let (suite_lib, other) = (
        rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256,
        rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256,
    );
    #[cfg(not(feature = "ring"))]
    let (suite_lib, other) = (
        rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256,
        rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256,
    );
    // The suites' statics are copied per crate; their hash providers are one static each.
    let hash = |s: &rustls::SupportedCipherSuite| s.tls13().unwrap().common.hash_provider;
    let first = hash(&ours.cipher_suites[0]);
    assert!(
        std::ptr::addr_eq(first, hash(&suite_lib)),
        "the suites come from the packet-protection library"
    );
    assert!(!std::ptr::addr_eq(first, hash(&other)));
    let aws = rustls::crypto::aws_lc_rs::default_provider();
    assert_eq!(aws.cipher_suites.len(), ours.cipher_suites.len());
    assert_eq!(aws.kx_groups.len(), ours.kx_groups.len());
}

/// A payload sealed from two places (its head in the packet, its tail where it lies) is the
/// same ciphertext and tag as the whole payload sealed in place, at every split; a payload
/// whose room does not fit is refused.
#[test]
fn a_payload_sealed_from_two_places_is_the_same_packet() {
    use super::version_keys::{KeySource, TrafficSecrets};
    use rustls::crypto::tls13::OkmBlock;
    let suite = rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256
        .tls13()
        .unwrap();
    let secrets = TrafficSecrets {
        client: OkmBlock::new(&[3; 32]),
        server: OkmBlock::new(&[4; 32]),
    };
    let source = KeySource::new(suite, crate::wire::Version::V1, Side::Client, secrets).unwrap();
    let own = source.local_packet_key();
    let plain: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
    let header = b"a short header";
    let mut whole = plain.clone();
    let tag = own.encrypt_in_place(42, header, &mut whole).unwrap();
    whole.extend_from_slice(tag.as_ref());
    for split in [0, 1, 15, 16, 17, 150, 299, 300] {
        let mut payload = plain[..split].to_vec();
        payload.resize(plain.len() + 16, 0);
        own.seal_split(42, header, &mut payload, split, &plain[split..])
            .unwrap();
        assert_eq!(payload, whole, "split at {split}");
    }
    let mut short = vec![0u8; 100];
    assert!(own.seal_split(42, header, &mut short, 10, &plain).is_err());
}
