//! Arbitrary input against an established server connection, through its endpoint: either a
//! raw datagram from the client's address (or a new one, with any ECN codepoint), or frames
//! sealed as a genuine 1-RTT packet by the
//! client (so the frame handlers themselves are reached). The network then runs for a while so
//! the server's replies and timers are exercised too. Nothing may panic, and a server that
//! closes must do so with a transport error code.
#![no_main]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use gquic_transport::config::{ClientConfig, ServerConfig};
use gquic_transport::connection::{ConnectionError, Event};
use gquic_transport::endpoint::{Endpoint, EndpointConfig};
use gquic_transport::testing::{LinkConfig, Network};
use libfuzzer_sys::fuzz_target;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

const SERVER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 4433);
const CLIENT: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 50000);

fn configs() -> &'static (ClientConfig, Arc<ServerConfig>) {
    static CONFIGS: OnceLock<(ClientConfig, Arc<ServerConfig>)> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = CertificateDer::from(c.cert.der().to_vec());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(c.signing_key.serialize_der()));
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.clone()).unwrap();
        let mut s = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap();
        s.alpn_protocols = vec![b"fuzz".to_vec()];
        let mut cl = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        cl.alpn_protocols = vec![b"fuzz".to_vec()];
        (ClientConfig::new(Arc::new(cl)).unwrap(), Arc::new(ServerConfig::new(Arc::new(s)).unwrap()))
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else { return };
    let (client_config, server_config) = configs();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    #[allow(clippy::disallowed_methods)]
    let start = Instant::now();
    let mut net = Network::new(start, 1, LinkConfig { latency: Duration::from_millis(1), ..LinkConfig::default() });
    let s = net.add(SERVER, Endpoint::new(EndpointConfig::new(provider.clone(), [1; 32]), Some(server_config.clone()), [2; 32]).unwrap());
    let c = net.add(CLIENT, Endpoint::new(EndpointConfig::new(provider, [3; 32]), None, [4; 32]).unwrap());
    let now = net.now();
    let ch = net.endpoint(c).connect(now, client_config, SERVER, "localhost").unwrap();
    let mut sh = None;
    let connected = net.run_until(Duration::from_secs(5), |net| {
        if sh.is_none() {
            sh = net.endpoint(s).accept();
        }
        sh.and_then(|h| net.endpoint(s).connection(h)).is_some_and(|conn| !conn.is_handshaking())
            && net.endpoint(c).connection(ch).is_some_and(|conn| !conn.is_handshaking())
    });
    assert!(connected);
    let sh = sh.unwrap();
    let now = net.now();
    let datagram = if mode & 1 == 0 {
        input.to_vec()
    } else {
        match net.endpoint(c).connection_mut(ch).unwrap().forge_one_rtt_packet(now, input) {
            Some(d) => d,
            None => return,
        }
    };
    // Mode bit 1: the datagram comes from another address (migration, RFC 9000 §9); bits 2-3:
    // its ECN codepoint (RFC 9000 §13.4).
    let from = if mode & 2 == 0 { CLIENT } else { SocketAddr::new(CLIENT.ip(), 50001) };
    let ecn = gquic_transport::connection::EcnCodepoint::from_bits(mode >> 2);
    net.endpoint(s).handle_datagram_ecn(now, from, ecn, BytesMut::from(&datagram[..]));
    net.run_for(Duration::from_millis(200));
    if let Some(conn) = net.endpoint(s).connection_mut(sh) {
        while let Some(e) = conn.poll_event() {
            if let Event::ConnectionLost(err) = e {
                assert!(
                    matches!(err, ConnectionError::TransportError(_) | ConnectionError::ApplicationClosed { .. } | ConnectionError::ConnectionClosed { .. }),
                    "unexpected close: {err:?}"
                );
            }
        }
    }
});
