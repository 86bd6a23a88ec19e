//! Arbitrary datagrams reaching shard 0 of a four-shard group (SO_REUSEPORT sockets): the
//! connection-ID demultiplexing reads untrusted bytes. Nothing may panic; a datagram is
//! either handed on whole to another shard (never to shard 0 itself), or dealt with here;
//! the shard it names takes it without handing it on again; nothing creates a connection
//! that is not a full-size Initial.
#![no_main]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use gquic_transport::endpoint::{Endpoint, EndpointConfig};
use libfuzzer_sys::fuzz_target;

const PEER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 50000);

fn shard(index: usize) -> Endpoint {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = EndpointConfig::new(provider, [3; 32]);
    config.shard(index, 4).unwrap();
    Endpoint::new(config, None, [index as u8; 32]).unwrap()
}

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let mut zero = shard(0);
    assert!(zero
        .handle_datagram(now, PEER, BytesMut::from(data))
        .is_none());
    assert!(zero.accept().is_none(), "no server configuration, no connection");
    let mut tossed = 0;
    while let Some(t) = zero.poll_tossed() {
        tossed += 1;
        assert!((1..4).contains(&t.shard), "shard {}", t.shard);
        assert_eq!(&t.data[..], data, "handed on whole");
        let mut owner = shard(t.shard);
        assert!(owner.handle_tossed(now, t).is_none());
        assert!(owner.poll_tossed().is_none(), "never handed on twice");
    }
    assert!(tossed <= 1);
    assert_eq!(zero.stats().tossed, tossed);
});
