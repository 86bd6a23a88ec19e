//! HTTP/3 interop with `h3` over `h3-quinn` (dev-dependencies only), both directions:
//! an h3 + h3-quinn client against `gquic_hyper::serve_connection`, and the gquic-hyper client
//! against an h3 + h3-quinn server.
#![allow(clippy::disallowed_methods)]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use gquic_transport::runtime::Endpoint;
use gquic_transport::{ClientConfig, ServerConfig};
use http::{HeaderMap, Request, Response};
use http_body_util::BodyExt;
use hyper::service::service_fn;
use support::*;

const TIMEOUT: Duration = Duration::from_secs(120);

fn quinn_transport() -> Arc<quinn::TransportConfig> {
    let t = quinn::TransportConfig::default();
    Arc::new(t)
}

// ---------------------------------------------------------------------------------------
// h3-quinn client -> gquic-hyper server
// ---------------------------------------------------------------------------------------

type QuinnSend = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;

struct GquicServer {
    addr: std::net::SocketAddr,
    endpoint: Endpoint,
    seen: Arc<Seen>,
    shutdowns: tokio::sync::mpsc::UnboundedReceiver<(
        gquic_hyper::server::ShutdownHandle,
        tokio::task::JoinHandle<Result<(), gquic_hyper::Error>>,
    )>,
    certs: Certs,
}

fn gquic_server() -> GquicServer {
    let certs = certs();
    let server = Endpoint::server(
        ServerConfig::new(Arc::new(tls_server(&certs))).unwrap(),
        localhost(),
    )
    .unwrap();
    let addr = server.local_addr();
    let endpoint = server.clone();
    let seen = Arc::new(Seen::default());
    let (tx, shutdowns) = tokio::sync::mpsc::unbounded_channel();
    let seen2 = seen.clone();
    tokio::spawn(async move {
        while let Some(connecting) = server.accept().await {
            let Ok(conn) = connecting.await else { continue };
            let seen = seen2.clone();
            let served =
                gquic_hyper::serve_connection(conn, service_fn(move |req| app(req, seen.clone())));
            let _ = tx.send((served.shutdown_handle(), tokio::spawn(served)));
        }
    });
    GquicServer {
        addr,
        endpoint,
        seen,
        shutdowns,
        certs,
    }
}

async fn quinn_client(server: &GquicServer) -> (quinn::Endpoint, QuinnSend) {
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(tls_client(&server.certs)).unwrap();
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(quinn_transport());
    let endpoint = quinn::Endpoint::client(localhost()).unwrap();
    let conn = endpoint
        .connect_with(config, server.addr, "localhost")
        .unwrap()
        .await
        .unwrap();
    let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(conn))
        .await
        .unwrap();
    tokio::spawn(async move { std::future::poll_fn(|cx| driver.poll_close(cx)).await });
    (endpoint, send)
}

/// Sends a request with an optional body and trailers; returns the response, body and
/// trailers.
async fn quinn_request(
    send: &mut QuinnSend,
    req: Request<()>,
    body: Option<Bytes>,
    trailers: Option<HeaderMap>,
) -> (Response<()>, Bytes, Option<HeaderMap>) {
    let stream = send.send_request(req).await.unwrap();
    let (mut tx, mut rx) = stream.split();
    let upload = tokio::spawn(async move {
        if let Some(body) = body {
            for chunk in body.chunks(64 * 1024) {
                tx.send_data(Bytes::copy_from_slice(chunk)).await.unwrap();
            }
        }
        if let Some(t) = trailers {
            tx.send_trailers(t).await.unwrap();
        }
        tx.finish().await.unwrap();
    });
    let resp = rx.recv_response().await.unwrap();
    let mut body = BytesMut::new();
    while let Some(mut chunk) = rx.recv_data().await.unwrap() {
        body.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
    }
    let trailers = rx.recv_trailers().await.unwrap();
    upload.await.unwrap();
    (resp, body.freeze(), trailers)
}

fn req(method: &str, path: &str) -> Request<()> {
    Request::builder()
        .method(method)
        .uri(format!("https://localhost{path}"))
        .body(())
        .unwrap()
}

#[tokio::test]
async fn h3_quinn_client_gquic_server_gets_posts_trailers() {
    tokio::time::timeout(TIMEOUT, async {
        let server = gquic_server();
        let (_ep, mut send) = quinn_client(&server).await;
        for n in [0usize, 1024, 10 << 20] {
            let (resp, body, _) =
                quinn_request(&mut send, req("GET", &format!("/bytes/{n}")), None, None).await;
            assert_eq!(resp.status(), 200);
            assert_eq!(sha(&body), sha(&pattern(n, n as u64)), "GET {n}");
        }
        let data = pattern(5 << 20, 5);
        let mut t = HeaderMap::new();
        t.insert("x-request-trailer", "from-h3-quinn".parse().unwrap());
        let (resp, echo, trailers) =
            quinn_request(&mut send, req("POST", "/echo"), Some(data.clone()), Some(t)).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(echo, data);
        assert_eq!(trailers.unwrap()["x-request-trailer"], "from-h3-quinn");
        assert_eq!(
            server.seen.trailers.lock().unwrap()[0]["x-request-trailer"],
            "from-h3-quinn"
        );
        let (_, body, trailers) =
            quinn_request(&mut send, req("GET", "/trailers"), None, None).await;
        assert_eq!(&body[..], b"body");
        assert_eq!(trailers.unwrap()["x-checksum"], "abc");
    })
    .await
    .unwrap();
}

/// An idle HTTP/3 connection hibernates on the gquic server (its control streams stay open,
/// quiet), and the next requests wake it: GETs and a 1 MiB POST after each sleep.
#[tokio::test]
async fn h3_quinn_client_wakes_a_hibernated_gquic_server_connection() {
    tokio::time::timeout(TIMEOUT, async {
        let server = gquic_server();
        let (_ep, mut send) = quinn_client(&server).await;
        for round in 0..3usize {
            if round > 0 {
                tokio::time::sleep(Duration::from_millis(2500)).await;
                assert_eq!(
                    server.endpoint.hibernating_connections(),
                    1,
                    "round {round}: the idle HTTP/3 connection sleeps"
                );
            }
            let n = 100_000 + round;
            let (resp, body, _) =
                quinn_request(&mut send, req("GET", &format!("/bytes/{n}")), None, None).await;
            assert_eq!(resp.status(), 200);
            assert_eq!(sha(&body), sha(&pattern(n, n as u64)), "round {round}");
            let data = pattern(1 << 20, round as u64);
            let (_, echo, _) =
                quinn_request(&mut send, req("POST", "/echo"), Some(data.clone()), None).await;
            assert_eq!(echo, data, "round {round}");
            assert_eq!(server.endpoint.hibernating_connections(), 0);
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn h3_quinn_client_gquic_server_concurrency_and_sequence() {
    tokio::time::timeout(TIMEOUT, async {
        let server = gquic_server();
        let (_ep, send) = quinn_client(&server).await;
        let mut set = tokio::task::JoinSet::new();
        for i in 0..100usize {
            let mut send = send.clone();
            set.spawn(async move {
                let n = 500 + i * 17;
                let (_, body, _) =
                    quinn_request(&mut send, req("GET", &format!("/bytes/{n}")), None, None).await;
                assert_eq!(body, pattern(n, n as u64));
            });
        }
        while let Some(r) = set.join_next().await {
            r.unwrap();
        }
        let mut send = send;
        for i in 0..1000usize {
            let (_, body, _) = quinn_request(
                &mut send,
                req("GET", &format!("/bytes/{}", i % 40)),
                None,
                None,
            )
            .await;
            assert_eq!(body.len(), i % 40);
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn h3_quinn_client_gquic_server_cancel_and_graceful_shutdown() {
    tokio::time::timeout(TIMEOUT, async {
        let mut server = gquic_server();
        let (_ep, mut send) = quinn_client(&server).await;
        let (handle, served) = server.shutdowns.recv().await.unwrap();

        // The client cancels an upload mid-body with H3_REQUEST_CANCELLED.
        let stream = send.send_request(req("POST", "/drain")).await.unwrap();
        let (mut tx, _rx) = stream.split();
        tx.send_data(pattern(10_000, 9)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        tx.stop_stream(h3::error::Code::H3_REQUEST_CANCELLED);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while server.seen.body_errors.lock().unwrap().is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the server never saw the cancel"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(server.seen.body_errors.lock().unwrap()[0], Some(0x10c));
        let (_, body, _) = quinn_request(&mut send, req("GET", "/bytes/100"), None, None).await;
        assert_eq!(body.len(), 100, "the server is still healthy");

        // Graceful shutdown with 50 requests in flight: all 50 complete.
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let mut send = send.clone();
            set.spawn(async move {
                quinn_request(&mut send, req("GET", "/wait"), None, None)
                    .await
                    .1
            });
        }
        while server.seen.waiting.load(Ordering::SeqCst) < 50 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        handle.graceful_shutdown();
        let mut done = 0;
        while let Some(r) = set.join_next().await {
            assert_eq!(&r.unwrap()[..], b"done");
            done += 1;
        }
        assert_eq!(done, 50);
        served.await.unwrap().unwrap();
    })
    .await
    .unwrap();
}

// ---------------------------------------------------------------------------------------
// gquic-hyper client -> h3-quinn server
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct QuinnSeen {
    body_errors: Mutex<Vec<String>>,
    waiting: AtomicUsize,
    trailers: Mutex<Vec<HeaderMap>>,
}

/// The same application as `support::app`, written on h3's own API over h3-quinn.
async fn quinn_app(
    resolver: h3::server::RequestResolver<h3_quinn::Connection, Bytes>,
    seen: Arc<QuinnSeen>,
) {
    let Ok((req, mut stream)) = resolver.resolve_request().await else {
        return;
    };
    let path = req.uri().path().to_string();
    let mut resp = Response::builder().status(200);
    let mut body = Bytes::new();
    let mut trailers = None;
    if let Some(n) = path.strip_prefix("/bytes/") {
        let n: usize = n.parse().unwrap_or(0);
        body = pattern(n, n as u64);
    } else if path == "/echo" {
        stream.send_response(resp.body(()).unwrap()).await.unwrap();
        while let Some(mut chunk) = stream.recv_data().await.unwrap() {
            stream
                .send_data(chunk.copy_to_bytes(chunk.remaining()))
                .await
                .unwrap();
        }
        if let Some(t) = stream.recv_trailers().await.unwrap() {
            seen.trailers.lock().unwrap().push(t.clone());
            stream.send_trailers(t).await.unwrap();
        }
        let _ = stream.finish().await;
        return;
    } else if path == "/drain" {
        loop {
            match stream.recv_data().await {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(e) => {
                    seen.body_errors.lock().unwrap().push(format!("{e:?}"));
                    return;
                }
            }
        }
        body = Bytes::from_static(b"drained");
    } else if path == "/trailers" {
        body = Bytes::from_static(b"body");
        let mut t = HeaderMap::new();
        t.insert("x-checksum", "abc".parse().unwrap());
        trailers = Some(t);
    } else if path == "/wait" {
        seen.waiting.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(300)).await;
        body = Bytes::from_static(b"done");
    } else {
        resp = resp.status(404);
    }
    if stream.send_response(resp.body(()).unwrap()).await.is_err() {
        return;
    }
    if !body.is_empty() && stream.send_data(body).await.is_err() {
        return;
    }
    if let Some(t) = trailers {
        let _ = stream.send_trailers(t).await;
    }
    let _ = stream.finish().await;
}

struct QuinnServer {
    addr: std::net::SocketAddr,
    seen: Arc<QuinnSeen>,
    /// Ask the server to shut its connections down gracefully.
    shutdown: Arc<tokio::sync::Notify>,
    /// Signals when a connection's accept loop ended.
    _shut_down: tokio::sync::mpsc::UnboundedReceiver<()>,
    certs: Certs,
}

fn quinn_server() -> QuinnServer {
    let certs = certs();
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls_server(&certs)).unwrap();
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(quinn_transport());
    let endpoint = quinn::Endpoint::server(config, localhost()).unwrap();
    let addr = endpoint.local_addr().unwrap();
    let seen = Arc::new(QuinnSeen::default());
    let shutdown = Arc::new(tokio::sync::Notify::new());
    let (done_tx, shut_down) = tokio::sync::mpsc::unbounded_channel();
    let (seen2, shutdown2) = (seen.clone(), shutdown.clone());
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            let Ok(conn) = incoming.await else { continue };
            let seen = seen2.clone();
            let shutdown = shutdown2.clone();
            let done_tx = done_tx.clone();
            tokio::spawn(async move {
                let mut h3c =
                    h3::server::Connection::<_, Bytes>::new(h3_quinn::Connection::new(conn))
                        .await
                        .unwrap();
                let mut tasks = tokio::task::JoinSet::new();
                loop {
                    tokio::select! {
                        r = h3c.accept() => match r {
                            Ok(Some(resolver)) => { tasks.spawn(quinn_app(resolver, seen.clone())); }
                            _ => break,
                        },
                        _ = shutdown.notified() => {
                            let _ = h3c.shutdown(0).await;
                        }
                    }
                }
                while tasks.join_next().await.is_some() {}
                let _ = done_tx.send(());
            });
        }
    });
    QuinnServer {
        addr,
        seen,
        shutdown,
        _shut_down: shut_down,
        certs,
    }
}

async fn gquic_client(server: &QuinnServer) -> (Endpoint, gquic_hyper::client::SendRequest<Body>) {
    let client = Endpoint::client(localhost()).unwrap();
    let conn = client
        .connect_with(
            ClientConfig::new(Arc::new(tls_client(&server.certs))).unwrap(),
            server.addr,
            "localhost",
        )
        .unwrap()
        .await
        .unwrap();
    let (send, driver) = gquic_hyper::client::handshake(conn).await.unwrap();
    tokio::spawn(driver);
    (client, send)
}

fn get(path: &str) -> Request<Body> {
    Request::get(format!("https://localhost{path}"))
        .body(full(Bytes::new()))
        .unwrap()
}

async fn collect(resp: Response<gquic_hyper::Incoming>) -> (Bytes, Option<HeaderMap>) {
    let c = resp.into_body().collect().await.unwrap();
    let t = c.trailers().cloned();
    (c.to_bytes(), t)
}

#[tokio::test]
async fn gquic_client_h3_quinn_server_gets_posts_trailers() {
    tokio::time::timeout(TIMEOUT, async {
        let server = quinn_server();
        let (_ep, mut send) = gquic_client(&server).await;
        for n in [0usize, 1024, 10 << 20] {
            let resp = send
                .send_request(get(&format!("/bytes/{n}")))
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            let (body, _) = collect(resp).await;
            assert_eq!(sha(&body), sha(&pattern(n, n as u64)), "GET {n}");
        }
        let data = pattern(5 << 20, 6);
        let mut t = HeaderMap::new();
        t.insert("x-request-trailer", "from-gquic".parse().unwrap());
        let frames: Vec<Result<http_body::Frame<Bytes>, BoxError>> = data
            .chunks(100_000)
            .map(|c| Ok(http_body::Frame::data(Bytes::copy_from_slice(c))))
            .chain(std::iter::once(Ok(http_body::Frame::trailers(t))))
            .collect();
        let req = Request::post("https://localhost/echo")
            .body(http_body_util::StreamBody::new(futures_stream(frames)).boxed())
            .unwrap();
        let (echo, trailers) = collect(send.send_request(req).await.unwrap()).await;
        assert_eq!(echo, data);
        assert_eq!(trailers.unwrap()["x-request-trailer"], "from-gquic");
        assert_eq!(
            server.seen.trailers.lock().unwrap()[0]["x-request-trailer"],
            "from-gquic"
        );
        let (body, trailers) = collect(send.send_request(get("/trailers")).await.unwrap()).await;
        assert_eq!(&body[..], b"body");
        assert_eq!(trailers.unwrap()["x-checksum"], "abc");
        let resp = send.send_request(get("/nope")).await.unwrap();
        assert_eq!(resp.status(), 404);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn gquic_client_h3_quinn_server_concurrency_and_sequence() {
    tokio::time::timeout(TIMEOUT, async {
        let server = quinn_server();
        let (_ep, send) = gquic_client(&server).await;
        let mut set = tokio::task::JoinSet::new();
        for i in 0..100usize {
            let mut send = send.clone();
            set.spawn(async move {
                let n = 700 + i * 11;
                let (body, _) = collect(
                    send.send_request(get(&format!("/bytes/{n}")))
                        .await
                        .unwrap(),
                )
                .await;
                assert_eq!(body, pattern(n, n as u64));
            });
        }
        while let Some(r) = set.join_next().await {
            r.unwrap();
        }
        let mut send = send;
        for i in 0..1000usize {
            let (body, _) = collect(
                send.send_request(get(&format!("/bytes/{}", i % 30)))
                    .await
                    .unwrap(),
            )
            .await;
            assert_eq!(body.len(), i % 30);
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn gquic_client_h3_quinn_server_cancel_and_graceful_shutdown() {
    tokio::time::timeout(TIMEOUT, async {
        let server = quinn_server();
        let (_ep, send) = gquic_client(&server).await;

        // Our client abandons an upload: the h3-quinn server sees H3_REQUEST_CANCELLED.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, BoxError>>(1);
        tx.send(Ok(http_body::Frame::data(pattern(10_000, 2))))
            .await
            .unwrap();
        let req = Request::post("https://localhost/drain")
            .body(http_body_util::StreamBody::new(ReceiverStream(rx)).boxed())
            .unwrap();
        let mut s2 = send.clone();
        let pending = tokio::spawn(async move { s2.send_request(req).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        pending.abort();
        let _ = pending.await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while server.seen.body_errors.lock().unwrap().is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "h3-quinn never saw the cancel"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let err = server.seen.body_errors.lock().unwrap()[0].clone();
        assert!(err.contains("H3_REQUEST_CANCELLED"), "h3-quinn saw {err}");
        drop(tx);

        // h3-quinn shuts down gracefully with 50 of our requests in flight: all complete.
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let mut send = send.clone();
            set.spawn(async move {
                collect(send.send_request(get("/wait")).await?)
                    .await
                    .0
                    .len()
                    .pipe_ok()
            });
        }
        while server.seen.waiting.load(Ordering::SeqCst) < 50 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        server.shutdown.notify_one();
        let mut done = 0;
        while let Some(r) = set.join_next().await {
            assert_eq!(r.unwrap().unwrap(), 4);
            done += 1;
        }
        assert_eq!(done, 50);
        // After the GOAWAY our client refuses new requests on this connection.
        let mut send = send;
        let err = send.send_request(get("/bytes/1")).await.unwrap_err();
        assert!(err.is_closed(), "{err:?}");
    })
    .await
    .unwrap();
}

trait PipeOk: Sized {
    fn pipe_ok(self) -> Result<Self, gquic_hyper::Error> {
        Ok(self)
    }
}

impl PipeOk for usize {}
