//! Arbitrary datagrams through the whole receive path of packet protection: header decode,
//! header-protection removal with real Initial keys, AEAD open, frame iteration. Nothing may
//! panic, and nothing forged may authenticate.
#![no_main]

use std::sync::OnceLock;

use bytes::BytesMut;
use gquic_transport::crypto;
use gquic_transport::wire::frame::Iter;
use gquic_transport::wire::packet::PartialDecode;
use gquic_transport::wire::{ConnectionId, Version};
use gquic_transport::Side;
use libfuzzer_sys::fuzz_target;

fn keys() -> &'static (rustls::quic::Keys, rustls::quic::Keys) {
    static KEYS: OnceLock<(rustls::quic::Keys, rustls::quic::Keys)> = OnceLock::new();
    KEYS.get_or_init(|| {
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let suite = crypto::initial_suite(&provider).unwrap();
        let dcid = ConnectionId::new(&[0x83, 0x94, 0xc8, 0xf0, 0x3e, 0x51, 0x57, 0x08]);
        (
            crypto::initial_keys(&suite, Version::V1, &dcid, Side::Server).unwrap(),
            crypto::initial_keys(&suite, Version::V2, &dcid, Side::Server).unwrap(),
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let (v1, v2) = keys();
    let mut rest = Some(BytesMut::from(data));
    while let Some(d) = rest.take() {
        let Ok((partial, r)) = PartialDecode::new(d, 8) else {
            return;
        };
        rest = r;
        let keys = match partial.header().version() {
            Some(Version::V2) => v2,
            _ => v1,
        };
        let Some(packet_type) = partial.header().packet_type() else {
            continue;
        };
        let Ok(packet) = partial.finish(keys.remote.header.as_ref()) else {
            continue;
        };
        let pn = packet.header.number().expand(None);
        if let Ok(payload) = crypto::open(packet.buf, packet.header_len, pn, keys.remote.packet.as_ref()) {
            for frame in Iter::new(payload, packet_type) {
                let _ = frame;
            }
        }
    }
});
