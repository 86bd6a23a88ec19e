//! Inputs shared by the criterion benches and `gquic-bench wire`: a full 1350-byte packet of
//! STREAM frames, ACK ranges, and 1-RTT-sized packet keys for each AEAD and provider.
//! (Included with `#[path]` by both, so they measure the same thing.)

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::ops::RangeInclusive;

use bytes::Bytes;
use gquic_transport::crypto;
use gquic_transport::wire::frame::{Frame, StreamFrame};
use gquic_transport::wire::packet::{Header, PacketNumber};
use gquic_transport::wire::{ConnectionId, Version};
use gquic_transport::{Side, StreamId};
use rustls::crypto::cipher::{AeadKey, Iv};
use rustls::crypto::tls13::OkmBlock;
use rustls::crypto::CryptoProvider;
use rustls::quic::{HeaderProtectionKey, PacketKey};

/// The packet size the benches use: a typical QUIC packet on a 1500-byte path.
pub const PACKET_SIZE: usize = 1350;

/// A 1350-byte payload of STREAM frames on eight streams, as a busy sender produces.
pub fn stream_payload() -> Bytes {
    let mut buf = Vec::with_capacity(PACKET_SIZE);
    let mut i = 0u64;
    while buf.len() < PACKET_SIZE - 200 {
        Frame::Stream(StreamFrame {
            id: StreamId(i * 4),
            offset: 1_000_000 + i * 150,
            fin: false,
            data: Bytes::from(vec![i as u8; 150]),
        })
        .encode(&mut buf);
        i += 1;
    }
    let left = PACKET_SIZE - buf.len();
    let header = StreamFrame::header_len(StreamId(i * 4), 5_000_000, left, false);
    StreamFrame::encode_header(
        StreamId(i * 4),
        5_000_000,
        left - header,
        false,
        false,
        &mut buf,
    );
    buf.resize(PACKET_SIZE, 0x55);
    Bytes::from(buf)
}

/// `n` ACK ranges with small gaps, ascending, as a receiver under loss tracks them.
pub fn ack_ranges(n: u64) -> Vec<RangeInclusive<u64>> {
    (0..n).map(|i| (i * 10 + 1)..=(i * 10 + 7)).collect()
}

/// Packet and header keys of `cipher` from `provider`.
pub fn keys(
    provider: &CryptoProvider,
    cipher: rustls::CipherSuite,
) -> (Box<dyn PacketKey>, Box<dyn HeaderProtectionKey>) {
    if cipher == rustls::CipherSuite::TLS13_AES_128_GCM_SHA256 {
        // Initial keys are AES-128-GCM with AES header protection: the same work per packet as
        // 1-RTT keys of that suite.
        let suite = crypto::initial_suite(provider).unwrap();
        let keys = crypto::initial_keys(
            &suite,
            Version::V1,
            &ConnectionId::new(&[1; 8]),
            Side::Client,
        )
        .unwrap();
        return (keys.local.packet, keys.local.header);
    }
    let suite = provider
        .cipher_suites
        .iter()
        .find(|s| s.suite() == cipher)
        .and_then(|s| s.tls13())
        .unwrap();
    let quic = suite.quic_suite().unwrap().quic;
    let expander = suite
        .hkdf_provider
        .expander_for_okm(&OkmBlock::new(&[0x42; 32]));
    let mut key = [0u8; 32];
    let mut iv = [0u8; 12];
    let mut hp = [0u8; 32];
    for (label, out) in [
        ("quic key", &mut key[..]),
        ("quic iv", &mut iv[..]),
        ("quic hp", &mut hp[..]),
    ] {
        let full = format!("tls13 {label}");
        expander
            .expand_slice(
                &[
                    &(out.len() as u16).to_be_bytes(),
                    &[full.len() as u8],
                    full.as_bytes(),
                    &[0],
                ],
                out,
            )
            .unwrap();
    }
    (
        quic.packet_key(AeadKey::from(key), Iv::from(iv)),
        quic.header_protection_key(AeadKey::from(hp)),
    )
}

/// A 1350-byte 1-RTT packet (8-byte DCID, 2-byte packet number) ready to seal: returns the
/// buffer (with room for the tag), header length and packet-number offset.
pub fn one_rtt_packet() -> (Vec<u8>, usize, usize) {
    let header = Header::Short {
        spin: false,
        key_phase: false,
        dst_cid: ConnectionId::new(&[7; 8]),
        number: PacketNumber::with_len(1000, 2),
    };
    let mut buf = Vec::with_capacity(PACKET_SIZE + 16);
    let partial = header.encode(&mut buf).unwrap();
    let payload = stream_payload();
    buf.extend_from_slice(&payload[..PACKET_SIZE - partial.header_len() - 16]);
    buf.resize(PACKET_SIZE, 0);
    (buf, partial.header_len(), partial.pn_offset)
}

/// Seal, remove header protection, open: one packet's round trip, on a reused buffer.
pub fn seal_open(
    buf: &mut [u8],
    header_len: usize,
    pn_offset: usize,
    packet_key: &dyn PacketKey,
    header_key: &dyn HeaderProtectionKey,
) {
    crypto::seal_with(buf, header_len, pn_offset, 1000, packet_key, header_key).unwrap();
    crypto::remove_header_protection(buf, pn_offset, header_key).unwrap();
    crypto::open_in_place(buf, header_len, 1000, packet_key).unwrap();
}

/// Every (provider, cipher) pair the benches cover.
pub fn providers() -> Vec<(
    &'static str,
    CryptoProvider,
    rustls::CipherSuite,
    &'static str,
)> {
    let mut out = Vec::new();
    for (pname, provider) in [
        ("aws-lc-rs", rustls::crypto::aws_lc_rs::default_provider()),
        ("ring", rustls::crypto::ring::default_provider()),
    ] {
        for (cipher, cname) in [
            (rustls::CipherSuite::TLS13_AES_128_GCM_SHA256, "aes128gcm"),
            (rustls::CipherSuite::TLS13_AES_256_GCM_SHA384, "aes256gcm"),
            (
                rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
                "chacha20",
            ),
        ] {
            out.push((pname, provider.clone(), cipher, cname));
        }
    }
    out
}
