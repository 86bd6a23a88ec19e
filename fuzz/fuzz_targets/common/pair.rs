//! A server and a client endpoint on a simulated network, the setup the connection fuzz
//! targets share (included with `#[path]`: each target is its own binary, and uses part of
//! it).
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use gquic_transport::config::{ClientConfig, ServerConfig};
use gquic_transport::connection::{ConnectionError, Event};
use gquic_transport::endpoint::{ConnectionHandle, Endpoint, EndpointConfig};
use gquic_transport::testing::{LinkConfig, Network};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

pub const SERVER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 4433);
pub const CLIENT: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 50000);

/// The network, its two nodes, and the client's connection (the server's once accepted).
pub struct Pair {
    pub net: Network,
    pub server: usize,
    pub client: usize,
    pub client_conn: ConnectionHandle,
    pub server_conn: Option<ConnectionHandle>,
}

/// A client and a server configuration for `localhost` with a fresh self-signed certificate
/// (ALPN `fuzz`), made once.
pub fn configs() -> &'static (ClientConfig, Arc<ServerConfig>) {
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

/// A client connecting to a server, 1 ms apart; with `establish`, run until both sides have
/// finished the handshake (otherwise the client has only queued its first Initial).
pub fn pair(establish: bool) -> Pair {
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
    if establish {
        let connected = net.run_until(Duration::from_secs(5), |net| {
            if sh.is_none() {
                sh = net.endpoint(s).accept();
            }
            sh.and_then(|h| net.endpoint(s).connection(h)).is_some_and(|conn| !conn.is_handshaking())
                && net.endpoint(c).connection(ch).is_some_and(|conn| !conn.is_handshaking())
        });
        assert!(connected);
    }
    Pair { net, server: s, client: c, client_conn: ch, server_conn: sh }
}

/// Takes the events of connection `h` of `node`: a connection lost must have closed with a
/// transport error code or been closed by its peer, or `also` must accept the error.
pub fn check_close(net: &mut Network, node: usize, h: ConnectionHandle, also: impl Fn(&ConnectionError) -> bool) {
    if let Some(conn) = net.endpoint(node).connection_mut(h) {
        while let Some(e) = conn.poll_event() {
            if let Event::ConnectionLost(err) = e {
                assert!(
                    matches!(
                        err,
                        ConnectionError::TransportError(_)
                            | ConnectionError::ApplicationClosed { .. }
                            | ConnectionError::ConnectionClosed { .. }
                    ) || also(&err),
                    "unexpected close: {err:?}"
                );
            }
        }
    }
}
