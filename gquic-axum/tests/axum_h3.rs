//! An axum Router with tower-http middleware behaves the same over HTTP/3 (gquic_axum::serve)
//! as over TCP (axum::serve): same status, the headers that matter, same bodies.
#![allow(clippy::disallowed_methods)]

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use gquic_transport::runtime::Endpoint;
use gquic_transport::{ClientConfig, ServerConfig};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = BoxBody<Bytes, BoxError>;

struct Certs {
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

fn certs() -> Certs {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    Certs {
        cert: CertificateDer::from(c.cert.der().to_vec()),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(c.signing_key.serialize_der())),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The server's TLS configuration (TLS 1.3, the test certificate, no ALPN yet).
fn server_tls(certs: &Certs) -> rustls::ServerConfig {
    rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certs.cert.clone()], certs.key.clone_key())
        .unwrap()
}

fn h3_endpoint(certs: &Certs) -> Endpoint {
    let mut tls = server_tls(certs);
    tls.alpn_protocols = vec![b"h3".to_vec()];
    Endpoint::server(
        ServerConfig::new(Arc::new(tls)).unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap()
}

fn client_config(certs: &Certs) -> ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certs.cert.clone()).unwrap();
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    ClientConfig::new(Arc::new(tls)).unwrap()
}

fn static_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("gquic-axum-static-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("file.txt"), "a static file\n".repeat(100)).unwrap();
    dir
}

/// The application under test, with the middleware a real app has.
fn app(dir: &std::path::Path, waiting: Arc<AtomicUsize>) -> Router {
    use tower_http::{
        compression::CompressionLayer, cors::CorsLayer, limit::RequestBodyLimitLayer,
        services::ServeDir, timeout::TimeoutLayer, trace::TraceLayer,
    };
    Router::new()
        .route("/", get(|| async { "hello" }))
        .route(
            "/json",
            get(|| async { axum::Json(serde_json::json!({"ok": true, "n": 42})) }),
        )
        .route("/big", get(|| async { "compress me ".repeat(2000) }))
        .route("/echo", post(|body: Bytes| async move { body }))
        .route(
            "/ip",
            get(|ConnectInfo(addr): ConnectInfo<SocketAddr>| async move { addr.ip().to_string() }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                "too late"
            }),
        )
        .route(
            "/wait",
            get(move || {
                let waiting = waiting.clone();
                async move {
                    waiting.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    "waited"
                }
            }),
        )
        .nest_service("/static", ServeDir::new(dir))
        .layer(RequestBodyLimitLayer::new(64 * 1024))
        .layer(CompressionLayer::new())
        .layer(CorsLayer::permissive())
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(1),
        ))
        .layer(TraceLayer::new_for_http())
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

/// (method, path, headers, body) of each request in the comparison table.
/// One row of the comparison table: method, path, extra headers, body.
type Row = (
    Method,
    &'static str,
    Vec<(&'static str, &'static str)>,
    Bytes,
);

fn table() -> Vec<Row> {
    vec![
        (Method::GET, "/", vec![], Bytes::new()),
        (Method::GET, "/json", vec![], Bytes::new()),
        (
            Method::GET,
            "/big",
            vec![("accept-encoding", "gzip")],
            Bytes::new(),
        ),
        (Method::GET, "/big", vec![], Bytes::new()),
        (
            Method::POST,
            "/echo",
            vec![],
            Bytes::from_static(b"echo this body"),
        ),
        (
            Method::POST,
            "/echo",
            vec![("content-length", "100000")],
            Bytes::from(vec![b'x'; 100_000]),
        ),
        (Method::GET, "/slow", vec![], Bytes::new()),
        (
            Method::OPTIONS,
            "/json",
            vec![
                ("origin", "https://example.com"),
                ("access-control-request-method", "GET"),
            ],
            Bytes::new(),
        ),
        (
            Method::GET,
            "/json",
            vec![("origin", "https://example.com")],
            Bytes::new(),
        ),
        (Method::GET, "/static/file.txt", vec![], Bytes::new()),
        (Method::GET, "/static/missing.txt", vec![], Bytes::new()),
        (Method::GET, "/nowhere", vec![], Bytes::new()),
        (Method::GET, "/ip", vec![], Bytes::new()),
    ]
}

fn request(
    m: &Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
    authority: &str,
) -> Request<Body> {
    let mut b = Request::builder()
        .method(m.clone())
        .uri(format!("https://{authority}{path}"));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(full(body)).unwrap()
}

/// The headers whose values must match between the two transports.
const COMPARED: &[&str] = &[
    "content-type",
    "content-encoding",
    "access-control-allow-origin",
    "access-control-allow-methods",
    "vary",
];

fn summary(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> String {
    let mut s = format!("{status}");
    for h in COMPARED {
        if let Some(v) = headers.get(*h) {
            s.push_str(&format!(" {h}={}", v.to_str().unwrap_or("?")));
        }
    }
    s.push_str(&format!(" body={}B", body.len()));
    s
}

/// One request on a fresh HTTP/1.1 connection (a 413 may close the connection).
async fn tcp_request(
    addr: SocketAddr,
    req: Request<Body>,
) -> http::Response<hyper::body::Incoming> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut h1, conn) =
        hyper::client::conn::http1::handshake::<_, Body>(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    h1.ready().await.unwrap();
    h1.send_request(req).await.unwrap()
}

#[tokio::test]
async fn router_with_tower_http_behaves_the_same_over_h3_and_tcp() {
    let certs = certs();
    let dir = static_dir();
    let waiting = Arc::new(AtomicUsize::new(0));

    // TCP: axum::serve as users run it today (HTTP/1.1, plain, for the comparison).
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp_addr = tcp.local_addr().unwrap();
    let tcp_app = app(&dir, waiting.clone());
    tokio::spawn(async move {
        axum::serve(
            tcp,
            tcp_app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    // HTTP/3: the same app, unchanged.
    let endpoint = h3_endpoint(&certs);
    let h3_addr = endpoint.local_addr();
    let h3_app = app(&dir, waiting.clone());
    tokio::spawn(async move {
        gquic_axum::serve(
            endpoint,
            h3_app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });

    let client = Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let quic = client
        .connect_with(client_config(&certs), h3_addr, "localhost")
        .unwrap()
        .await
        .unwrap();
    let (mut h3, driver) = gquic_hyper::client::handshake::<Body>(quic).await.unwrap();
    tokio::spawn(driver);

    for (m, path, headers, body) in table() {
        let r1 = tcp_request(
            tcp_addr,
            request(&m, path, &headers, body.clone(), &tcp_addr.to_string()),
        )
        .await;
        let (p1, b1) = r1.into_parts();
        let b1 = b1.collect().await.unwrap().to_bytes();
        let r3 = h3
            .send_request(request(&m, path, &headers, body.clone(), "localhost"))
            .await
            .unwrap();
        let (p3, b3) = r3.into_parts();
        let b3 = b3.collect().await.unwrap().to_bytes();
        let (s1, s3) = (
            summary(p1.status, &p1.headers, &b1),
            summary(p3.status, &p3.headers, &b3),
        );
        assert_eq!(s1, s3, "{m} {path}: TCP and HTTP/3 differ");
        assert_eq!(b1, b3, "{m} {path}: bodies differ");
        // Spot checks that the middleware really ran.
        match path {
            "/slow" => assert_eq!(p3.status, StatusCode::REQUEST_TIMEOUT),
            "/ip" => assert_eq!(&b3[..], b"127.0.0.1"),
            "/echo" if body.len() > 64 * 1024 => {
                assert_eq!(p3.status, StatusCode::PAYLOAD_TOO_LARGE)
            }
            "/big" if !headers.is_empty() => assert_eq!(p3.headers["content-encoding"], "gzip"),
            "/static/file.txt" => assert_eq!(b3.len(), 1400),
            _ => {}
        }
    }
}

#[tokio::test]
async fn graceful_shutdown_with_100_requests_in_flight_loses_none() {
    let certs = certs();
    let dir = static_dir();
    let waiting = Arc::new(AtomicUsize::new(0));
    let endpoint = h3_endpoint(&certs);
    let addr = endpoint.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        gquic_axum::serve(endpoint, app(&dir, waiting.clone()))
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .into_future(),
    );
    let client = Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let quic = client
        .connect_with(client_config(&certs), addr, "localhost")
        .unwrap()
        .await
        .unwrap();
    let (h3, driver) = gquic_hyper::client::handshake::<Body>(quic).await.unwrap();
    tokio::spawn(driver);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let mut h3 = h3.clone();
        set.spawn(async move {
            let r = h3
                .send_request(request(
                    &Method::GET,
                    "/wait",
                    &[],
                    Bytes::new(),
                    "localhost",
                ))
                .await?;
            let b = r.into_body().collect().await?.to_bytes();
            Ok::<_, gquic_hyper::Error>(b)
        });
    }
    while waiting.load(Ordering::SeqCst) < 100 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.send(()).unwrap();
    let mut ok = 0;
    while let Some(r) = set.join_next().await {
        assert_eq!(&r.unwrap().unwrap()[..], b"waited");
        ok += 1;
    }
    assert_eq!(ok, 100);
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the server finished its graceful shutdown")
        .unwrap()
        .unwrap();
    // New connections are refused after the shutdown.
    let refused = client
        .connect_with(client_config(&certs), addr, "localhost")
        .unwrap();
    assert!(tokio::time::timeout(Duration::from_secs(5), refused)
        .await
        .map_or(true, |r| r.is_err()));
}

#[tokio::test]
async fn dual_server_answers_over_h2_with_alt_svc_and_over_h3() {
    let certs = certs();
    let tls = server_tls(&certs);
    let server = gquic_axum::dual::DualServer::bind("127.0.0.1:0".parse().unwrap(), tls)
        .await
        .unwrap();
    let addr = server.local_addr();
    let app = Router::new().route(
        "/who",
        get(
            |ConnectInfo(a): ConnectInfo<SocketAddr>, req: axum::extract::Request| async move {
                format!("{} {:?}", a.ip(), req.version())
            },
        ),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(
        server
            .serve(app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .into_future(),
    );

    // HTTP/2 over TLS on TCP.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certs.cert.clone()).unwrap();
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let (mut h2, conn) = hyper::client::conn::http2::handshake::<_, _, Body>(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let resp = h2
        .send_request(request(
            &Method::GET,
            "/who",
            &[],
            Bytes::new(),
            &format!("localhost:{}", addr.port()),
        ))
        .await
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(
        resp.headers()["alt-svc"],
        format!("h3=\":{}\"; ma=86400", addr.port())
    );
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"127.0.0.1 HTTP/2.0");

    // HTTP/3 on UDP, the same port.
    let client = Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let quic = client
        .connect_with(client_config(&certs), addr, "localhost")
        .unwrap()
        .await
        .unwrap();
    let (mut h3, driver) = gquic_hyper::client::handshake::<Body>(quic).await.unwrap();
    tokio::spawn(driver);
    let resp = h3
        .send_request(request(
            &Method::GET,
            "/who",
            &[],
            Bytes::new(),
            "localhost",
        ))
        .await
        .unwrap();
    assert!(resp.headers().get("alt-svc").is_none());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"127.0.0.1 HTTP/3.0");

    stop.send(()).unwrap();
    drop(h2);
    drop(h3);
    tokio::time::timeout(Duration::from_secs(10), serving)
        .await
        .expect("both transports shut down")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_server_over_a_reuseport_group_serves_many_h3_clients() {
    let certs = certs();
    let tls = server_tls(&certs);
    let server = gquic_axum::dual::DualServer::bind_sockets("127.0.0.1:0".parse().unwrap(), tls, 2)
        .await
        .unwrap();
    let addr = server.local_addr();
    let endpoint = server.quic_endpoint().clone();
    assert_eq!(endpoint.sockets(), 2);
    assert_eq!(endpoint.local_addrs(), vec![addr, addr]);
    let app = Router::new().route(
        "/who",
        get(|ConnectInfo(a): ConnectInfo<SocketAddr>| async move { a.to_string() }),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(
        server
            .serve(app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .into_future(),
    );
    // Twelve clients, each from its own port: the kernel spreads them over the two sockets.
    let mut clients = Vec::new();
    for _ in 0..12 {
        let client = Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        let quic = client
            .connect_with(client_config(&certs), addr, "localhost")
            .unwrap()
            .await
            .unwrap();
        let (mut h3, driver) = gquic_hyper::client::handshake::<Body>(quic).await.unwrap();
        tokio::spawn(driver);
        for _ in 0..3 {
            let resp = h3
                .send_request(request(
                    &Method::GET,
                    "/who",
                    &[],
                    Bytes::new(),
                    "localhost",
                ))
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], client.local_addr().to_string().as_bytes());
        }
        clients.push((client, h3));
    }
    let accepted: Vec<u64> = endpoint.socket_stats().iter().map(|s| s.accepted).collect();
    assert_eq!(accepted.iter().sum::<u64>(), 12);
    // All twelve on one socket: probability 2^-11 if the kernel spreads them.
    assert!(accepted.iter().all(|&a| a > 0), "{accepted:?}");
    stop.send(()).unwrap();
    drop(clients);
    tokio::time::timeout(Duration::from_secs(10), serving)
        .await
        .expect("every shard shuts down")
        .unwrap()
        .unwrap();
}

/// An h3 client with WebTransport enabled, connected to `addr`.
async fn wt_client(addr: SocketAddr, certs: &Certs) -> gquic_hyper::client::SendRequest<Body> {
    let client = Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let quic = client
        .connect_with(client_config(certs), addr, "localhost")
        .unwrap()
        .await
        .unwrap();
    let (send, driver) = gquic_hyper::client::Builder::new()
        .enable_webtransport(true)
        .handshake(quic)
        .await
        .unwrap();
    tokio::spawn(driver);
    send
}

/// The `WebTransportUpgrade` extractor in a Router with tower-http middleware: four sessions
/// on one connection next to ordinary requests, each echoing a stream; close codes reach the
/// handler; a GET to the WebTransport route and a server without WebTransport are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webtransport_extractor_serves_sessions_next_to_requests() {
    use gquic_axum::{Session, SessionError, WebTransportUpgrade};
    let certs = certs();
    let endpoint = h3_endpoint(&certs);
    let addr = endpoint.local_addr();
    let (ended_tx, mut ended) = tokio::sync::mpsc::unbounded_channel();
    let wt_route = axum::routing::any(move |upgrade: WebTransportUpgrade| {
        let ended = ended_tx.clone();
        async move {
            upgrade.on_session(move |session: Session| async move {
                while let Ok((mut send, mut recv)) = session.accept_bi().await {
                    tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut recv, &mut send).await;
                        let _ = send.finish();
                    });
                }
                let _ = ended.send((session.id(), session.closed().await));
            })
        }
    });
    let app = Router::new()
        .route("/hello", get(|| async { "hello" }))
        .route("/wt", wt_route)
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .layer(tower_http::compression::CompressionLayer::new());
    tokio::spawn(
        gquic_axum::serve(endpoint, app)
            .enable_webtransport(true)
            .into_future(),
    );

    let send = wt_client(addr, &certs).await;
    let url: http::Uri = format!("https://localhost:{}/wt", addr.port())
        .parse()
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..4u32 {
        let mut send = send.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let session = send.webtransport(url).await.unwrap();
            let data = Bytes::from(vec![i as u8; 64 * 1024]);
            let (mut s, mut r) = session.open_bi().await.unwrap();
            let sent = data.clone();
            let writer = tokio::spawn(async move {
                s.write_all(&sent).await.unwrap();
                s.finish().unwrap();
            });
            // An ordinary request on the same connection while the session is busy.
            let resp = send
                .send_request(request(
                    &Method::GET,
                    "/hello",
                    &[],
                    Bytes::new(),
                    "localhost",
                ))
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            assert_eq!(
                &resp.into_body().collect().await.unwrap().to_bytes()[..],
                b"hello"
            );
            assert_eq!(r.read_to_end(1 << 20).await.unwrap(), data);
            writer.await.unwrap();
            session.close(100 + i, &format!("done {i}"));
            (session.id(), i)
        }));
    }
    let mut expected = std::collections::HashMap::new();
    for t in tasks {
        let (id, i) = t.await.unwrap();
        expected.insert(id, i);
    }
    assert_eq!(expected.len(), 4, "four distinct sessions");
    for _ in 0..4 {
        let (id, why) = tokio::time::timeout(Duration::from_secs(10), ended.recv())
            .await
            .unwrap()
            .unwrap();
        let i = expected[&id];
        assert_eq!(
            why,
            SessionError::Closed {
                code: 100 + i,
                reason: format!("done {i}")
            }
        );
    }

    // A GET to the WebTransport route is refused by the extractor.
    let resp = send
        .clone()
        .send_request(request(&Method::GET, "/wt", &[], Bytes::new(), "localhost"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);

    // A server without WebTransport enabled: the extractor refuses the CONNECT.
    let endpoint = h3_endpoint(&certs);
    let plain = endpoint.local_addr();
    let app = Router::new().route(
        "/wt",
        axum::routing::any(|upgrade: WebTransportUpgrade| async move {
            upgrade.on_session(|_s| async {})
        }),
    );
    tokio::spawn(gquic_axum::serve(endpoint, app).into_future());
    let mut send = wt_client(plain, &certs).await;
    let err = send
        .webtransport(
            format!("https://localhost:{}/wt", plain.port())
                .parse()
                .unwrap(),
        )
        .await
        .unwrap_err();
    // The extractor's rejection: 400 with a message naming `enable_webtransport`.
    assert!(err.is_connect(), "{err:?}");
    assert!(format!("{err:?}").contains("400"), "{err:?}");
}
