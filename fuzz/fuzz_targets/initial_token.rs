//! Arbitrary address-validation tokens (RFC 9000 §8.1) in client Initials sent to a server
//! that validates addresses with Retry: the token parser and checker see untrusted bytes
//! before any packet protection. Nothing may panic, no connection may be created for a token
//! that is not ours (the payload is not a valid Initial), and whatever the server answers
//! must be a Retry or nothing.
#![no_main]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::{BufMut, BytesMut};
use gquic_transport::config::{RetryPolicy, ServerConfig};
use gquic_transport::endpoint::{Endpoint, EndpointConfig};
use libfuzzer_sys::fuzz_target;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

const CLIENT: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 50000);

fn server() -> &'static Arc<ServerConfig> {
    static CONFIG: OnceLock<Arc<ServerConfig>> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = CertificateDer::from(c.cert.der().to_vec());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(c.signing_key.serialize_der()));
        let s = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap();
        let mut config = ServerConfig::new(Arc::new(s)).unwrap();
        config.retry(RetryPolicy::Always);
        Arc::new(config)
    })
}

fuzz_target!(|token: &[u8]| {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut ep = Endpoint::new(EndpointConfig::new(provider, [3; 32]), Some(server().clone()), [4; 32]).unwrap();
    // A v1 Initial header carrying `token`, padded to 1200 bytes.
    let mut d = BytesMut::with_capacity(1300 + token.len());
    d.put_u8(0xc3);
    d.put_u32(1);
    d.put_u8(8);
    d.put_slice(&[0xd1; 8]);
    d.put_u8(8);
    d.put_slice(&[0xc1; 8]);
    let token = &token[..token.len().min(1 << 14)];
    // A two-byte varint length (RFC 9000 §16).
    d.put_u16(0x4000 | token.len() as u16);
    d.put_slice(token);
    d.put_u16(0x4000 | 1100);
    d.put_bytes(0, 1100);
    let now = Instant::now();
    assert!(ep.handle_datagram(now, CLIENT, d).is_none());
    assert!(ep.accept().is_none(), "no connection from a forged Initial");
    let mut buf = Vec::new();
    while let Some(t) = ep.poll_transmit(now, &mut buf) {
        // A Retry, or a CONNECTION_CLOSE in an Initial (for a token of ours that is wrong):
        // long headers only.
        assert!(t.size > 0 && buf[0] & 0x80 != 0, "long header");
    }
});
