//! `examples/perf` (the QUIC performance protocol, draft-banks-quic-performance) against quinn
//! speaking the same protocol: our client against a quinn server, quinn's client against our
//! server, bidirectional and unidirectional requests, with uploads.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

mod common;

const TIMEOUT: Duration = Duration::from_secs(60);

/// A localhost certificate written to a fresh directory: (chain, key, cert path, key path).
fn certificate(
    tag: &str,
) -> (
    CertificateDer<'static>,
    PrivateKeyDer<'static>,
    PathBuf,
    PathBuf,
) {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let dir = std::env::temp_dir().join(format!("gquic-perf-test-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, c.cert.pem()).unwrap();
    std::fs::write(&key_path, c.signing_key.serialize_pem()).unwrap();
    (
        c.cert.der().clone(),
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(c.signing_key.serialize_der())),
        cert_path,
        key_path,
    )
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// What a quinn perf server saw.
#[derive(Default)]
struct Seen {
    requests: AtomicU64,
    uploaded: AtomicU64,
}

/// Reads a perf request (8-byte size, then the upload to its end) from a quinn stream.
async fn quinn_request(recv: &mut quinn::RecvStream, seen: &Seen) -> u64 {
    let mut head = [0u8; 8];
    recv.read_exact(&mut head).await.unwrap();
    let mut up = 0;
    while let Some(c) = recv.read_chunk(usize::MAX, true).await.unwrap() {
        up += c.bytes.len() as u64;
    }
    seen.requests.fetch_add(1, Ordering::Relaxed);
    seen.uploaded.fetch_add(up, Ordering::Relaxed);
    u64::from_be_bytes(head)
}

async fn quinn_respond(send: &mut quinn::SendStream, mut n: u64) {
    static DATA: [u8; 65536] = [7; 65536];
    while n > 0 {
        let take = n.min(DATA.len() as u64) as usize;
        send.write_chunk(Bytes::from_static(&DATA[..take]))
            .await
            .unwrap();
        n -= take as u64;
    }
    send.finish().unwrap();
}

/// A quinn server speaking the perf protocol; returns its address.
fn quinn_server(
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    seen: Arc<Seen>,
) -> SocketAddr {
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    tls.alpn_protocols = vec![b"perf".to_vec()];
    let config = quinn::ServerConfig::with_crypto(Arc::new(
        quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap(),
    ));
    let endpoint = quinn::Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = endpoint.local_addr().unwrap();
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                let bi = {
                    let (conn, seen) = (conn.clone(), seen.clone());
                    async move {
                        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                            let seen = seen.clone();
                            tokio::spawn(async move {
                                let n = quinn_request(&mut recv, &seen).await;
                                quinn_respond(&mut send, n).await;
                            });
                        }
                    }
                };
                let uni = async move {
                    while let Ok(mut recv) = conn.accept_uni().await {
                        let (conn, seen) = (conn.clone(), seen.clone());
                        tokio::spawn(async move {
                            let n = quinn_request(&mut recv, &seen).await;
                            let mut send = conn.open_uni().await.unwrap();
                            quinn_respond(&mut send, n).await;
                        });
                    }
                };
                tokio::join!(bi, uni);
            });
        }
    });
    addr
}

fn perf_client(addr: SocketAddr, ca: &Path, extra: &[&str]) -> String {
    let out = Command::new(common::example("perf"))
        .arg("client")
        .arg(addr.to_string())
        .arg("--ca")
        .arg(ca)
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "perf client failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_perf_client_against_a_quinn_perf_server() {
    let (cert, key, cert_path, _) = certificate("client");
    let seen = Arc::new(Seen::default());
    let addr = quinn_server(cert, key, seen.clone());
    let out = tokio::task::spawn_blocking(move || {
        let bi = perf_client(
            addr,
            &cert_path,
            &[
                "--download",
                "3000000",
                "--upload",
                "1000000",
                "--requests",
                "4",
                "--concurrency",
                "2",
            ],
        );
        let uni = perf_client(
            addr,
            &cert_path,
            &["--download", "500000", "--upload", "1234", "--uni"],
        );
        (bi, uni)
    });
    let (bi, uni) = tokio::time::timeout(TIMEOUT, out).await.unwrap().unwrap();
    assert!(
        bi.contains("perf: 4 requests, 12000000 bytes down, 4000000 bytes up"),
        "{bi}"
    );
    assert!(
        uni.contains("perf: 1 requests, 500000 bytes down, 1234 bytes up"),
        "{uni}"
    );
    assert_eq!(seen.requests.load(Ordering::Relaxed), 5);
    assert_eq!(seen.uploaded.load(Ordering::Relaxed), 4_001_234);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quinn_perf_client_against_our_perf_server() {
    let (cert, _, cert_path, key_path) = certificate("server");
    let mut child = common::Kill::new(
        Command::new(common::example("perf"))
            .args(["server", "--listen", "127.0.0.1:0", "--cert"])
            .arg(&cert_path)
            .arg("--key")
            .arg(&key_path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.stdout().unwrap();
    let addr: SocketAddr = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| {
            l.strip_prefix("perf server listening on ")
                .map(str::to_owned)
        })
        .expect("the server's address")
        .parse()
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"perf".to_vec()];
    let config = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap(),
    ));
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    tokio::time::timeout(TIMEOUT, async {
        let conn = endpoint
            .connect_with(config, addr, "localhost")
            .unwrap()
            .await
            .unwrap();
        // Bidirectional: three requests at once, each with an upload.
        let mut tasks = Vec::new();
        for i in 0..3u64 {
            let conn = conn.clone();
            tasks.push(tokio::spawn(async move {
                let (mut send, mut recv) = conn.open_bi().await.unwrap();
                let want = 1_000_000 + i;
                send.write_all(&want.to_be_bytes()).await.unwrap();
                send.write_all(&vec![1u8; 300_000]).await.unwrap();
                send.finish().unwrap();
                let mut got = 0u64;
                while let Some(c) = recv.read_chunk(usize::MAX, true).await.unwrap() {
                    got += c.bytes.len() as u64;
                }
                assert_eq!(got, want);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        // Unidirectional: the answer comes on a stream the server opens.
        let mut send = conn.open_uni().await.unwrap();
        send.write_all(&777_777u64.to_be_bytes()).await.unwrap();
        send.write_all(b"upload").await.unwrap();
        send.finish().unwrap();
        let mut recv = conn.accept_uni().await.unwrap();
        let body = recv.read_to_end(1 << 20).await.unwrap();
        assert_eq!(body.len(), 777_777);
        conn.close(0u32.into(), b"done");
    })
    .await
    .expect("timed out");
    endpoint.wait_idle().await;
}
