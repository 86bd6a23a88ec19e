//! Arbitrary input against a client connection, through its endpoint: the server-side
//! mirror of `server_connection`. Either a raw datagram (from the server's address or
//! another, with any ECN codepoint) or frames sealed as a genuine 1-RTT packet by the server
//! (so the handlers only a client runs are reached: HANDSHAKE_DONE, NEW_TOKEN, the server's
//! connection IDs); the raw datagram arrives either once the connection is established or
//! right after the client's first Initial, before anything from the server (Version
//! Negotiation and Retry are the packets a client takes unauthenticated, RFC 9000 §17.2.1 and
//! §17.2.5). The network then runs for a while so the client's replies and timers are
//! exercised too. Nothing may panic, and a client that closes must do so with a transport
//! error code (or report the server's close, a stateless reset or a failed version
//! negotiation).
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
    // Mode bit 1: during the handshake (a raw datagram before the server's first flight);
    // otherwise once both sides are established.
    let handshaking = mode & 2 != 0;
    let mut sh = None;
    if !handshaking {
        let connected = net.run_until(Duration::from_secs(5), |net| {
            if sh.is_none() {
                sh = net.endpoint(s).accept();
            }
            sh.and_then(|h| net.endpoint(s).connection(h)).is_some_and(|conn| !conn.is_handshaking())
                && net.endpoint(c).connection(ch).is_some_and(|conn| !conn.is_handshaking())
        });
        assert!(connected);
    }
    let now = net.now();
    let datagram = if mode & 1 == 0 || handshaking {
        input.to_vec()
    } else {
        let Some(sh) = sh else { return };
        match net.endpoint(s).connection_mut(sh).and_then(|conn| conn.forge_one_rtt_packet(now, input)) {
            Some(d) => d,
            None => return,
        }
    };
    // Bit 2: from an address other than the server's (a client accepts no migration, RFC
    // 9000 §9); bits 3-4: the ECN codepoint (RFC 9000 §13.4).
    let from = if mode & 4 == 0 { SERVER } else { SocketAddr::new(SERVER.ip(), 4434) };
    let ecn = gquic_transport::connection::EcnCodepoint::from_bits(mode >> 3);
    net.endpoint(c).handle_datagram_ecn(now, from, ecn, BytesMut::from(&datagram[..]));
    net.run_for(Duration::from_millis(200));
    if let Some(conn) = net.endpoint(c).connection_mut(ch) {
        while let Some(e) = conn.poll_event() {
            if let Event::ConnectionLost(err) = e {
                assert!(
                    matches!(
                        err,
                        ConnectionError::TransportError(_)
                            | ConnectionError::ApplicationClosed { .. }
                            | ConnectionError::ConnectionClosed { .. }
                            | ConnectionError::VersionMismatch
                            | ConnectionError::Reset
                    ),
                    "unexpected close: {err:?}"
                );
            }
        }
    }
});
