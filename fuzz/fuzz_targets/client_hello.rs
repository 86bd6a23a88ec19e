//! Arbitrary CRYPTO data in genuine client Initial packets (anyone can seal them: Initial keys
//! come from the Destination Connection ID, RFC 9001 §5.2) against a server endpoint: the
//! ClientHello gathering and compatible version negotiation (RFC 9368) that run before TLS
//! sees the bytes, then rustls. The first input byte picks the version (v1 or v2), whether the
//! rest is wrapped in a ClientHello handshake header (so the extension parser is reached), and
//! where the data splits across two packets. Nothing may panic.
#![no_main]

#[path = "common/pair.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::{configs, CLIENT, SERVER};
use gquic_transport::endpoint::{Endpoint, EndpointConfig};
use gquic_transport::testing::{LinkConfig, Network};
use gquic_transport::wire::frame::Frame;
use gquic_transport::wire::packet::{Header, PacketNumber};
use gquic_transport::wire::{ConnectionId, Version};
use gquic_transport::{crypto, Side};
use libfuzzer_sys::fuzz_target;

/// One client Initial carrying `data` at CRYPTO `offset`, padded to 1200 bytes.
fn initial(version: Version, dcid: &ConnectionId, pn: u64, offset: u64, data: &[u8]) -> Option<BytesMut> {
    let provider = crypto::default_provider();
    let suite = crypto::initial_suite(&provider).ok()?;
    let keys = crypto::initial_keys(&suite, version, dcid, Side::Client).ok()?;
    let header = Header::Initial {
        version,
        dst_cid: *dcid,
        src_cid: ConnectionId::new(&[0xcc; 8]),
        token: Default::default(),
        number: PacketNumber::new(pn, None),
    };
    let mut buf = Vec::new();
    let partial = header.encode(&mut buf).ok()?;
    Frame::Crypto { offset, data: bytes::Bytes::copy_from_slice(data) }.encode(&mut buf);
    buf.resize(buf.len().max(1200 - 16) + 16, 0);
    partial.finish(&mut buf).ok()?;
    crypto::seal(&mut buf, partial.header_len(), partial.pn_offset, pn, &keys.local).ok()?;
    Some(BytesMut::from(&buf[..]))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else { return };
    let version = if mode & 1 == 0 { Version::V1 } else { Version::V2 };
    let mut crypto_data = Vec::new();
    if mode & 2 != 0 {
        // A ClientHello handshake header whose length covers the rest.
        crypto_data.push(1);
        crypto_data.extend_from_slice(&(input.len() as u32).to_be_bytes()[1..]);
    }
    crypto_data.extend_from_slice(input);
    // Where the data splits across two packets; each carries at most 1000 bytes of it.
    let split = (usize::from(mode >> 2) * 64).min(crypto_data.len());
    if split > 1000 || crypto_data.len() - split > 1000 {
        return;
    }
    let (a, b) = crypto_data.split_at(split);

    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    #[allow(clippy::disallowed_methods)]
    let start = Instant::now();
    let mut net = Network::new(start, 1, LinkConfig { latency: Duration::from_millis(1), ..LinkConfig::default() });
    let s = net.add(SERVER, Endpoint::new(EndpointConfig::new(provider, [1; 32]), Some(configs().1.clone()), [2; 32]).unwrap());
    let dcid = ConnectionId::new(&[0xd1; 8]);
    let now = net.now();
    // The second part goes first when the mode says so: the server must wait for the gap.
    let mut packets = [(0, 0u64, a), (1, a.len() as u64, b)];
    if mode & 0x80 != 0 {
        packets.swap(0, 1);
    }
    for (pn, offset, part) in packets {
        if part.is_empty() {
            continue;
        }
        if let Some(p) = initial(version, &dcid, pn, offset, part) {
            net.endpoint(s).handle_datagram(now, CLIENT, p);
        }
    }
    net.run_for(Duration::from_millis(50));
    while net.endpoint(s).accept().is_some() {}
});
