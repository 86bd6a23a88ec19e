//! The state machine alone: 100 MiB on one stream between a client and a server endpoint over
//! the simulated network (no loss, no sockets). Single-threaded, so time per GB here is CPU
//! time per GB of the sans-IO transport (both sides plus the simulator).
//!
//! Run with: `cargo bench -p gquic-transport --features testing --bench simnet`

#![allow(missing_docs)] // criterion_group! generates undocumented public functions.
#![allow(clippy::disallowed_methods)] // A benchmark takes one real Instant as its time origin.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gquic_transport::config::{ClientConfig, ServerConfig, TransportConfig};
use gquic_transport::connection::{Event, ReadError, WriteError};
use gquic_transport::endpoint::{Endpoint, EndpointConfig};
use gquic_transport::testing::{LinkConfig, Network};
use gquic_transport::Dir;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

const SERVER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 4433);
const CLIENT: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 50000);
const LEN: usize = 100 << 20;

fn configs() -> (ClientConfig, ServerConfig) {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert = CertificateDer::from(c.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(c.signing_key.serialize_der()));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let mut transport = TransportConfig::default();
    transport
        .stream_receive_window(8 << 20, 16 << 20)
        .receive_window(16 << 20, 64 << 20);
    let transport = Arc::new(transport);
    let mut stls = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    stls.alpn_protocols = vec![b"bench".to_vec()];
    let mut ctls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    ctls.alpn_protocols = vec![b"bench".to_vec()];
    let mut server = ServerConfig::new(Arc::new(stls)).unwrap();
    server.transport(transport.clone()).unwrap();
    let mut client = ClientConfig::new(Arc::new(ctls)).unwrap();
    client.transport(transport).unwrap();
    (client, server)
}

fn run(client_config: &ClientConfig, server_config: &Arc<ServerConfig>, data: &Bytes) -> usize {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let link = LinkConfig {
        latency: Duration::from_millis(1),
        ..LinkConfig::default()
    };
    let mut net = Network::new(Instant::now(), 1, link);
    let s = net.add(
        SERVER,
        Endpoint::new(
            EndpointConfig::new(provider.clone(), [1; 32]),
            Some(server_config.clone()),
            [2; 32],
        )
        .unwrap(),
    );
    let c = net.add(
        CLIENT,
        Endpoint::new(EndpointConfig::new(provider, [3; 32]), None, [4; 32]).unwrap(),
    );
    let now = net.now();
    let ch = net
        .endpoint(c)
        .connect(now, client_config, SERVER, "localhost")
        .unwrap();
    let mut sh = None;
    let mut stream = None;
    let mut written = 0;
    let mut received = 0;
    let done = net.run_until(Duration::from_secs(600), |net| {
        let now = net.now();
        if sh.is_none() {
            sh = net.endpoint(s).accept();
        }
        let conn = net.endpoint(c).connection_mut(ch).unwrap();
        while let Some(e) = conn.poll_event() {
            if e == Event::Connected {
                stream = conn.open(Dir::Uni);
            }
        }
        if let Some(id) = stream {
            while written < data.len() {
                match conn.write(id, data.slice(written..)) {
                    Ok(n) => written += n,
                    Err(WriteError::Blocked) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            if written == data.len() {
                let _ = conn.finish(id);
            }
        }
        let Some(h) = sh else { return false };
        let sc = net.endpoint(s).connection_mut(h).unwrap();
        while sc.poll_event().is_some() {}
        if let Some(id) = stream {
            loop {
                match sc.read(id, usize::MAX, now) {
                    Ok(Some(d)) => received += d.len(),
                    Ok(None) => return true,
                    Err(ReadError::Blocked) | Err(ReadError::ClosedStream) => return false,
                    Err(e) => panic!("{e}"),
                }
            }
        }
        false
    });
    assert!(done && received == data.len());
    received
}

fn bulk(c: &mut Criterion) {
    let (client, server) = configs();
    let server = Arc::new(server);
    let data = Bytes::from(vec![0x5a; LEN]);
    let mut group = c.benchmark_group("simnet");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(LEN as u64));
    group.bench_function("bulk_100MiB_one_stream", |b| {
        b.iter(|| run(&client, &server, &data))
    });
    group.finish();
}

criterion_group!(benches, bulk);
criterion_main!(benches);
