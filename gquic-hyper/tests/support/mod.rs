//! The test application and helpers shared by the HTTP/3 tests.
#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gquic_hyper::Incoming;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = BoxBody<Bytes, BoxError>;

pub struct Certs {
    pub cert: CertificateDer<'static>,
    pub key: PrivateKeyDer<'static>,
}

pub fn certs() -> Certs {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    Certs {
        cert: CertificateDer::from(c.cert.der().to_vec()),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(c.signing_key.serialize_der())),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

pub fn tls_server(certs: &Certs) -> rustls::ServerConfig {
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certs.cert.clone()], certs.key.clone_key())
        .unwrap();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    tls.max_early_data_size = 0;
    tls
}

pub fn tls_client(certs: &Certs) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certs.cert.clone()).unwrap();
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    tls
}

/// A QUIC connection from `endpoint` to `addr` as `localhost`, trusting `certs` (ALPN h3).
pub async fn quic_connect(
    endpoint: &gquic_transport::runtime::Endpoint,
    addr: SocketAddr,
    certs: &Certs,
) -> gquic_transport::runtime::Connection {
    endpoint
        .connect_with(
            gquic_transport::ClientConfig::new(Arc::new(tls_client(certs))).unwrap(),
            addr,
            "localhost",
        )
        .unwrap()
        .await
        .unwrap()
}

/// Connects `endpoint` to `addr` (trusting `certs`) and starts HTTP/3 with `builder`, the
/// connection driven on its own task.
pub async fn h3_client(
    endpoint: &gquic_transport::runtime::Endpoint,
    addr: SocketAddr,
    certs: &Certs,
    builder: gquic_hyper::client::Builder,
) -> gquic_hyper::client::SendRequest<Body> {
    let conn = quic_connect(endpoint, addr, certs).await;
    let (send, driver) = builder.handshake(conn).await.unwrap();
    tokio::spawn(driver);
    send
}

pub fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

pub fn pattern(len: usize, seed: u64) -> Bytes {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|e: Infallible| match e {})
        .boxed()
}

/// What the test application saw, for assertions.
#[derive(Default)]
pub struct Seen {
    /// HTTP/3 codes of request bodies that failed (a cancelled upload shows 0x10c).
    pub body_errors: std::sync::Mutex<Vec<Option<u64>>>,
    /// Requests that reached /wait.
    pub waiting: AtomicUsize,
    /// Request trailers received by /echo.
    pub trailers: std::sync::Mutex<Vec<HeaderMap>>,
}

/// The test application:
/// - `GET /bytes/N`: N bytes of `pattern(N, N)`;
/// - `POST /echo`: streams the request body back, request trailers as response trailers;
/// - `POST /drain`: reads the body, answers with its length (records body errors);
/// - `GET /trailers`: "body" then trailers `x-checksum: abc`;
/// - `GET /wait`: answers "done" after 300 ms;
/// - `GET /stream`: 64 KiB chunks for 10 s (for cancellation);
/// - anything else: 404.
pub async fn app(req: Request<Incoming>, seen: Arc<Seen>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let ok = |b: Body| Ok(Response::new(b));
    if let Some(n) = path.strip_prefix("/bytes/") {
        let n: usize = n.parse().unwrap_or(0);
        return ok(full(pattern(n, n as u64)));
    }
    match (req.method().as_str(), path.as_str()) {
        ("POST", "/echo") => {
            let seen2 = seen.clone();
            let body = req.into_body().map_frame(move |f| {
                if let Some(t) = f.trailers_ref() {
                    seen2.trailers.lock().unwrap().push(t.clone());
                }
                f
            });
            ok(body.map_err(|e| Box::new(e) as BoxError).boxed())
        }
        ("POST", "/drain") => {
            let mut body = req.into_body();
            let mut n = 0usize;
            loop {
                match body.frame().await {
                    None => break,
                    Some(Ok(f)) => n += f.data_ref().map_or(0, |d| d.len()),
                    Some(Err(e)) => {
                        seen.body_errors.lock().unwrap().push(e.code());
                        return ok(full("aborted"));
                    }
                }
            }
            ok(full(n.to_string()))
        }
        ("GET", "/trailers") => {
            let mut t = HeaderMap::new();
            t.insert("x-checksum", "abc".parse().unwrap());
            let frames = vec![
                Ok::<_, BoxError>(http_body::Frame::data(Bytes::from_static(b"body"))),
                Ok(http_body::Frame::trailers(t)),
            ];
            ok(StreamBody::new(futures_stream(frames)).boxed())
        }
        ("GET", "/wait") => {
            seen.waiting.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(300)).await;
            ok(full("done"))
        }
        ("GET", "/stream") => {
            let (tx, rx) =
                tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, BoxError>>(2);
            tokio::spawn(async move {
                let chunk = pattern(64 * 1024, 3);
                for _ in 0..1000 {
                    if tx
                        .send(Ok(http_body::Frame::data(chunk.clone())))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            });
            ok(StreamBody::new(ReceiverStream(rx)).boxed())
        }
        _ => {
            let mut r = Response::new(full("not found"));
            *r.status_mut() = StatusCode::NOT_FOUND;
            Ok(r)
        }
    }
}

/// A `Stream` over a vector (to avoid a futures dependency).
pub fn futures_stream<T: Unpin>(items: Vec<T>) -> IterStream<T> {
    IterStream(items.into_iter())
}

pub struct IterStream<T>(std::vec::IntoIter<T>);

impl<T: Unpin> futures_core::Stream for IterStream<T> {
    type Item = T;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        std::task::Poll::Ready(self.0.next())
    }
}

pub struct ReceiverStream<T>(pub tokio::sync::mpsc::Receiver<T>);

impl<T> futures_core::Stream for ReceiverStream<T> {
    type Item = T;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}

pub fn sha(b: &[u8]) -> Vec<u8> {
    Sha256::digest(b).to_vec()
}
