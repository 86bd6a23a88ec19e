//! gquic-hyper client against gquic-hyper server over loopback: the acceptance cases.
#![allow(clippy::disallowed_methods)]

mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gquic_hyper::client::SendRequest;
use gquic_hyper::server::ShutdownHandle;
use gquic_transport::runtime::Endpoint;
use gquic_transport::{ClientConfig, ServerConfig};
use http::{HeaderMap, Request};
use http_body_util::BodyExt;
use hyper::service::service_fn;
use support::*;

const TIMEOUT: Duration = Duration::from_secs(120);

struct Setup {
    send: SendRequest<Body>,
    seen: Arc<Seen>,
    shutdowns: tokio::sync::mpsc::UnboundedReceiver<(
        ShutdownHandle,
        tokio::task::JoinHandle<Result<(), gquic_hyper::Error>>,
    )>,
    client: Endpoint,
    addr: std::net::SocketAddr,
    certs: Certs,
}

async fn setup() -> Setup {
    let certs = certs();
    let server = Endpoint::server(
        ServerConfig::new(Arc::new(tls_server(&certs))).unwrap(),
        localhost(),
    )
    .unwrap();
    let addr = server.local_addr();
    let seen = Arc::new(Seen::default());
    let (tx, shutdowns) = tokio::sync::mpsc::unbounded_channel();
    let seen2 = seen.clone();
    tokio::spawn(async move {
        while let Some(connecting) = server.accept().await {
            let Ok(conn) = connecting.await else { continue };
            let seen = seen2.clone();
            let served =
                gquic_hyper::serve_connection(conn, service_fn(move |req| app(req, seen.clone())));
            let handle = served.shutdown_handle();
            let join = tokio::spawn(served);
            let _ = tx.send((handle, join));
        }
    });
    let client = Endpoint::client(localhost()).unwrap();
    let send = connect(&client, addr, &certs).await;
    Setup {
        send,
        seen,
        shutdowns,
        client,
        addr,
        certs,
    }
}

async fn connect(
    client: &Endpoint,
    addr: std::net::SocketAddr,
    certs: &Certs,
) -> SendRequest<Body> {
    h3_client(client, addr, certs, gquic_hyper::client::Builder::new()).await
}

fn get(path: &str) -> Request<Body> {
    Request::get(format!("https://localhost{path}"))
        .body(full(Bytes::new()))
        .unwrap()
}

async fn body_of(resp: http::Response<gquic_hyper::Incoming>) -> (Bytes, Option<HeaderMap>) {
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    (collected.to_bytes(), trailers)
}

#[tokio::test]
async fn gets_of_0_1k_and_10mib() {
    tokio::time::timeout(TIMEOUT, async {
        let mut s = setup().await;
        for n in [0usize, 1024, 10 << 20] {
            let resp = s
                .send
                .send_request(get(&format!("/bytes/{n}")))
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            let (body, _) = body_of(resp).await;
            assert_eq!(body.len(), n);
            assert_eq!(sha(&body), sha(&pattern(n, n as u64)));
        }
        let resp = s.send.send_request(get("/nope")).await.unwrap();
        assert_eq!(resp.status(), 404);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn post_5mib_echoed_with_trailers_both_ways() {
    tokio::time::timeout(TIMEOUT, async {
        let mut s = setup().await;
        let data = pattern(5 << 20, 42);
        let mut t = HeaderMap::new();
        t.insert("x-request-trailer", "yes".parse().unwrap());
        let frames: Vec<Result<http_body::Frame<Bytes>, BoxError>> = data
            .chunks(100_000)
            .map(|c| Ok(http_body::Frame::data(Bytes::copy_from_slice(c))))
            .chain(std::iter::once(Ok(http_body::Frame::trailers(t))))
            .collect();
        let body = http_body_util::StreamBody::new(futures_stream(frames)).boxed();
        let req = Request::post("https://localhost/echo").body(body).unwrap();
        let resp = s.send.send_request(req).await.unwrap();
        let (echo, trailers) = body_of(resp).await;
        assert_eq!(echo.len(), data.len());
        assert_eq!(sha(&echo), sha(&data));
        assert_eq!(trailers.unwrap()["x-request-trailer"], "yes");
        assert_eq!(
            s.seen.trailers.lock().unwrap()[0]["x-request-trailer"],
            "yes"
        );

        let resp = s.send.send_request(get("/trailers")).await.unwrap();
        let (body, trailers) = body_of(resp).await;
        assert_eq!(&body[..], b"body");
        assert_eq!(trailers.unwrap()["x-checksum"], "abc");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn hundred_concurrent_and_thousand_sequential_requests() {
    tokio::time::timeout(TIMEOUT, async {
        let mut s = setup().await;
        let mut set = tokio::task::JoinSet::new();
        for i in 0..100usize {
            let mut send = s.send.clone();
            set.spawn(async move {
                let n = 1000 + i * 13;
                let resp = send
                    .send_request(get(&format!("/bytes/{n}")))
                    .await
                    .unwrap();
                let (body, _) = body_of(resp).await;
                assert_eq!(body, pattern(n, n as u64));
            });
        }
        while let Some(r) = set.join_next().await {
            r.unwrap();
        }
        // More requests than the server's stream limit (100): MAX_STREAMS must be renewed.
        for i in 0..1000usize {
            let resp = s
                .send
                .send_request(get(&format!("/bytes/{}", i % 50)))
                .await
                .unwrap();
            let (body, _) = body_of(resp).await;
            assert_eq!(body.len(), i % 50);
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn cancelled_request_leaves_the_server_healthy() {
    tokio::time::timeout(TIMEOUT, async {
        let mut s = setup().await;
        // A download abandoned mid-body.
        let resp = s.send.send_request(get("/stream")).await.unwrap();
        let mut body = resp.into_body();
        let first = body.frame().await.unwrap().unwrap();
        assert!(first.data_ref().is_some_and(|d| !d.is_empty()));
        drop(body);

        // An upload abandoned mid-body: the server sees H3_REQUEST_CANCELLED (0x10c).
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, BoxError>>(1);
        tx.send(Ok(http_body::Frame::data(pattern(10_000, 1))))
            .await
            .unwrap();
        let req = Request::post("https://localhost/drain")
            .body(http_body_util::StreamBody::new(ReceiverStream(rx)).boxed())
            .unwrap();
        let mut send = s.send.clone();
        let pending = tokio::spawn(async move { send.send_request(req).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        pending.abort();
        let _ = pending.await;
        drop(tx);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if !s.seen.body_errors.lock().unwrap().is_empty() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "server never saw the cancellation"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(s.seen.body_errors.lock().unwrap()[0], Some(0x10c));

        // The connection and the server still work.
        let resp = s.send.send_request(get("/bytes/1000")).await.unwrap();
        assert_eq!(body_of(resp).await.0.len(), 1000);
        let mut other = connect(&s.client, s.addr, &s.certs).await;
        let resp = other.send_request(get("/bytes/10")).await.unwrap();
        assert_eq!(body_of(resp).await.0.len(), 10);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn graceful_shutdown_completes_50_requests_in_flight() {
    tokio::time::timeout(TIMEOUT, async {
        let mut s = setup().await;
        let (handle, served) = s.shutdowns.recv().await.unwrap();
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let mut send = s.send.clone();
            set.spawn(async move {
                let resp = send.send_request(get("/wait")).await?;
                Ok::<_, gquic_hyper::Error>(body_of(resp).await.0)
            });
        }
        while s.seen.waiting.load(Ordering::SeqCst) < 50 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        handle.graceful_shutdown();
        let mut done = 0;
        while let Some(r) = set.join_next().await {
            assert_eq!(&r.unwrap().unwrap()[..], b"done");
            done += 1;
        }
        assert_eq!(done, 50);
        served.await.unwrap().unwrap();
        // After GOAWAY, new requests on that connection are refused.
        assert!(s.send.send_request(get("/bytes/1")).await.is_err());
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn tower_service_through_tower_to_hyper_service() {
    tokio::time::timeout(TIMEOUT, async {
        let certs = certs();
        let server = Endpoint::server(
            ServerConfig::new(Arc::new(tls_server(&certs))).unwrap(),
            localhost(),
        )
        .unwrap();
        let addr = server.local_addr();
        tokio::spawn(async move {
            let conn = server.accept().await.unwrap().await.unwrap();
            // A tower service with a tower middleware: the request's ConnectionInfo is visible.
            let svc = tower::ServiceBuilder::new()
                .map_response(|mut r: http::Response<Body>| {
                    r.headers_mut().insert("x-layer", "tower".parse().unwrap());
                    r
                })
                .service(tower::service_fn(
                    |req: Request<gquic_hyper::Incoming>| async move {
                        let info = req
                            .extensions()
                            .get::<gquic_hyper::ConnectionInfo>()
                            .cloned();
                        let alpn = info.and_then(|i| i.alpn).unwrap_or_default();
                        Ok::<_, std::convert::Infallible>(http::Response::new(full(alpn)))
                    },
                ));
            let _ = gquic_hyper::serve_connection(
                conn,
                hyper_util::service::TowerToHyperService::new(svc),
            )
            .await;
        });
        let client = Endpoint::client(localhost()).unwrap();
        let mut send = connect(&client, addr, &certs).await;
        let resp = send.send_request(get("/")).await.unwrap();
        assert_eq!(resp.headers()["x-layer"], "tower");
        assert_eq!(&body_of(resp).await.0[..], b"h3");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn service_error_is_h3_internal_error_and_connector_dials() {
    use tower::ServiceExt;
    tokio::time::timeout(TIMEOUT, async {
        let certs = certs();
        let server = Endpoint::server(
            ServerConfig::new(Arc::new(tls_server(&certs))).unwrap(),
            localhost(),
        )
        .unwrap();
        let addr = server.local_addr();
        tokio::spawn(async move {
            while let Some(connecting) = server.accept().await {
                let Ok(conn) = connecting.await else { continue };
                tokio::spawn(gquic_hyper::serve_connection(
                    conn,
                    service_fn(|req: Request<gquic_hyper::Incoming>| async move {
                        if req.uri().path() == "/fail" {
                            return Err::<http::Response<Body>, BoxError>(
                                "the service failed".into(),
                            );
                        }
                        let info = req
                            .extensions()
                            .get::<gquic_hyper::ConnectionInfo>()
                            .cloned()
                            .unwrap();
                        Ok(http::Response::new(full(info.remote_addr.ip().to_string())))
                    }),
                ));
            }
        });
        // The connector resolves `localhost`, connects with ALPN h3 and hands back a ready
        // SendRequest.
        let client = Endpoint::client(localhost()).unwrap();
        let connector = gquic_hyper::client::Connector::<Body>::new(
            client.clone(),
            ClientConfig::new(Arc::new(tls_client(&certs))).unwrap(),
        );
        let uri: http::Uri = format!("https://localhost:{}/", addr.port())
            .parse()
            .unwrap();
        let mut send = connector.oneshot(uri).await.unwrap();
        let resp = send.send_request(get("/")).await.unwrap();
        assert_eq!(&body_of(resp).await.0[..], b"127.0.0.1");
        // RFC 9114 §8.1: a failing service resets the request with H3_INTERNAL_ERROR.
        let err = send.send_request(get("/fail")).await.unwrap_err();
        assert_eq!(err.code(), Some(0x102), "{err:?}");
        // The connection still serves.
        let resp = send.send_request(get("/")).await.unwrap();
        assert_eq!(resp.status(), 200);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn extended_connect_protocol_reaches_the_service() {
    tokio::time::timeout(TIMEOUT, async {
        let certs = certs();
        let server = Endpoint::server(
            ServerConfig::new(Arc::new(tls_server(&certs))).unwrap(),
            localhost(),
        )
        .unwrap();
        let addr = server.local_addr();
        tokio::spawn(async move {
            let conn = server.accept().await.unwrap().await.unwrap();
            let service = service_fn(|req: Request<gquic_hyper::Incoming>| async move {
                let proto = req
                    .extensions()
                    .get::<hyper::ext::Protocol>()
                    .map(|p| p.as_str().to_string())
                    .unwrap_or_default();
                Ok::<_, std::convert::Infallible>(http::Response::new(full(proto)))
            });
            let _ = gquic_hyper::server::Builder::new()
                .enable_extended_connect(true)
                .serve_connection(conn, service)
                .await;
        });
        // A raw h3 client over gquic sends an extended CONNECT (RFC 9220, RFC 9298).
        let client = Endpoint::client(localhost()).unwrap();
        let conn = quic_connect(&client, addr, &certs).await;
        let (mut driver, mut send) = h3::client::builder()
            .enable_extended_connect(true)
            .build::<_, _, Bytes>(gquic_transport::h3::Connection::new(conn))
            .await
            .unwrap();
        tokio::spawn(async move { std::future::poll_fn(|cx| driver.poll_close(cx)).await });
        let mut req = Request::connect("https://localhost/.well-known/masque/udp/x/1/")
            .body(())
            .unwrap();
        req.extensions_mut().insert(h3::ext::Protocol::CONNECT_UDP);
        let mut stream = send.send_request(req).await.unwrap();
        let resp = stream.recv_response().await.unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = Vec::new();
        while let Some(mut chunk) = stream.recv_data().await.unwrap() {
            use bytes::Buf;
            body.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
        }
        assert_eq!(body, b"connect-udp");
    })
    .await
    .unwrap();
}
