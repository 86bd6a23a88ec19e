//! gquic-client against our own axum server over HTTP/3: pooling, retries, redirects,
//! cookies, decompression, timeouts, streaming with trailers.
#![allow(clippy::disallowed_methods)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body as AxumBody;
use axum::extract::{Path, Query, Request};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Extension, Router};
use bytes::Bytes;
use gquic_client::{Body, Certificate, Client};
use gquic_transport::runtime::{Connection, Endpoint};
use gquic_transport::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

struct Server {
    addr: SocketAddr,
    /// Connections accepted so far.
    connections: Arc<AtomicUsize>,
    /// Hits per `key` on `/drop`.
    hits: Arc<Mutex<HashMap<String, usize>>>,
}

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

fn pattern(n: usize) -> Bytes {
    (0..n).map(|i| (i % 251) as u8).collect::<Vec<u8>>().into()
}

/// What `/target` saw: method, body length, and the credentials that arrived.
async fn target(req: Request) -> String {
    let method = req.method().clone();
    let h = req.headers().clone();
    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap();
    let get = |k: &str| h.get(k).map_or("-", |v| v.to_str().unwrap()).to_owned();
    format!(
        "{method} len={} auth={} cookie={}",
        body.len(),
        get("authorization"),
        get("cookie")
    )
}

type Shutdowns = Arc<Mutex<HashMap<u64, gquic_hyper::server::ShutdownHandle>>>;

fn app(hits: Arc<Mutex<HashMap<String, usize>>>, shutdowns: Shutdowns) -> Router {
    Router::new()
        // Starts a graceful shutdown (GOAWAY) of the connection this request came on.
        .route(
            "/goaway",
            get(move |req: Request| {
                let shutdowns = shutdowns.clone();
                async move {
                    let id = req
                        .extensions()
                        .get::<gquic_hyper::ConnectionInfo>()
                        .unwrap()
                        .connection_id;
                    let handle = shutdowns.lock().unwrap().get(&id).cloned();
                    handle.unwrap().graceful_shutdown();
                    "going away"
                }
            }),
        )
        .route(
            "/conn",
            get(|req: Request| async move {
                let info = req
                    .extensions()
                    .get::<gquic_hyper::ConnectionInfo>()
                    .unwrap();
                info.connection_id.to_string()
            }),
        )
        .route(
            "/bytes/{n}",
            get(|Path(n): Path<usize>| async move { pattern(n) }),
        )
        // The first hit for a key closes the connection before any response; later hits
        // answer.
        .route(
            "/drop",
            any(
                move |Query(q): Query<HashMap<String, String>>,
                      Extension(conn): Extension<Connection>| {
                    let hits = hits.clone();
                    async move {
                        let key = q.get("key").cloned().unwrap_or_default();
                        let n = {
                            let mut h = hits.lock().unwrap();
                            let n = h.entry(key).or_default();
                            *n += 1;
                            *n
                        };
                        if n == 1 {
                            conn.close(gquic_transport::VarInt::from_u32(0x102), b"dropped");
                            tokio::time::sleep(Duration::from_secs(5)).await;
                        }
                        format!("hit {n}")
                    }
                },
            ),
        )
        .route(
            "/redirect/{code}",
            any(
                |Path(code): Path<u16>, Query(q): Query<HashMap<String, String>>| async move {
                    let to = q.get("to").cloned().unwrap_or_else(|| "/target".into());
                    Response::builder()
                        .status(code)
                        .header("location", to)
                        .body(AxumBody::empty())
                        .unwrap()
                },
            ),
        )
        .route("/target", any(target))
        // Everything the request carried: method, query, headers, body.
        .route(
            "/inspect",
            any(|req: Request| async move {
                let (parts, body) = req.into_parts();
                let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
                let headers: HashMap<String, String> = parts
                    .headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").to_owned()))
                    .collect();
                axum::Json(serde_json::json!({
                    "method": parts.method.as_str(),
                    "query": parts.uri.query(),
                    "headers": headers,
                    "body": String::from_utf8_lossy(&body),
                }))
            }),
        )
        .route(
            "/proto",
            get(|req: Request| async move { format!("{:?}", req.version()) }),
        )
        .route(
            "/chain/{n}",
            get(|Path(n): Path<u32>| async move {
                if n == 0 {
                    return "end".into_response();
                }
                (
                    StatusCode::FOUND,
                    [("location", format!("/chain/{}", n - 1))],
                )
                    .into_response()
            }),
        )
        .route(
            "/loop/a",
            get(|| async { (StatusCode::FOUND, [("location", "/loop/b")]) }),
        )
        .route(
            "/loop/b",
            get(|| async { (StatusCode::FOUND, [("location", "/loop/a")]) }),
        )
        .route(
            "/set-cookies",
            get(|| async {
                let mut h = HeaderMap::new();
                for c in [
                    "a=1; Path=/",
                    "b=2; Path=/cookies/sub",
                    "e=3; Max-Age=1",
                    "s=4; Secure; HttpOnly; SameSite=Strict",
                    "d=5; Domain=evil.example",
                ] {
                    h.append("set-cookie", c.parse().unwrap());
                }
                (h, "set")
            }),
        )
        .route("/cookies", get(cookies))
        .route("/cookies/sub", get(cookies))
        .route(
            "/text",
            get(|| async { "compress me please ".repeat(2000) }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                "slow"
            }),
        )
        .route(
            "/stall",
            get(|| async {
                let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
                tokio::spawn(async move {
                    let _ = tx.send(Ok(Bytes::from_static(b"first"))).await;
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    let _ = tx.send(Ok(Bytes::from_static(b"late"))).await;
                });
                AxumBody::from_stream(tokio_stream(rx))
            }),
        )
        .route(
            "/upload",
            post(|body: AxumBody| async move {
                let mut n = 0usize;
                let mut stream = body.into_data_stream();
                while let Some(chunk) = std::future::poll_fn(|cx| {
                    futures_core::Stream::poll_next(std::pin::Pin::new(&mut stream), cx)
                })
                .await
                {
                    n += chunk.unwrap().len();
                }
                n.to_string()
            }),
        )
        .route(
            "/trailers",
            get(|| async {
                let mut t = HeaderMap::new();
                t.insert("x-checksum", "abc123".parse().unwrap());
                let frames = vec![
                    Ok::<_, std::io::Error>(http_body::Frame::data(pattern(100_000))),
                    Ok(http_body::Frame::trailers(t)),
                ];
                AxumBody::new(http_body_util::StreamBody::new(IterStream(
                    frames.into_iter(),
                )))
            }),
        )
        .layer(tower_http::compression::CompressionLayer::new())
}

async fn cookies(headers: HeaderMap) -> String {
    headers
        .get("cookie")
        .map_or(String::new(), |v| v.to_str().unwrap().to_owned())
}

struct IterStream<I>(I);

impl<I: Iterator + Unpin> futures_core::Stream for IterStream<I> {
    type Item = I::Item;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<I::Item>> {
        std::task::Poll::Ready(self.0.next())
    }
}

struct RxStream<T>(tokio::sync::mpsc::Receiver<T>);

impl<T> futures_core::Stream for RxStream<T> {
    type Item = T;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}

fn tokio_stream<T>(rx: tokio::sync::mpsc::Receiver<T>) -> RxStream<T> {
    RxStream(rx)
}

/// TLS 1.3 with the test certificate, offering `alpn`.
fn tls_server(certs: &Certs, alpn: &[u8]) -> rustls::ServerConfig {
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![certs.cert.clone()], certs.key.clone_key())
    .unwrap();
    tls.alpn_protocols = vec![alpn.to_vec()];
    tls
}

async fn server(certs: &Certs) -> Server {
    let tls = tls_server(certs, b"h3");
    let endpoint = Endpoint::server(
        ServerConfig::new(Arc::new(tls)).unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let addr = endpoint.local_addr();
    let connections = Arc::new(AtomicUsize::new(0));
    let hits = Arc::new(Mutex::new(HashMap::new()));
    let shutdowns: Shutdowns = Arc::default();
    let router = app(hits.clone(), shutdowns.clone());
    let count = connections.clone();
    tokio::spawn(async move {
        while let Some(connecting) = endpoint.accept().await {
            let Ok(conn) = connecting.await else { continue };
            count.fetch_add(1, Ordering::SeqCst);
            let service = router.clone().layer(Extension(conn.clone()));
            let id = conn.stable_id();
            let served = gquic_hyper::serve_connection(
                conn,
                hyper_util::service::TowerToHyperService::new(service),
            );
            shutdowns
                .lock()
                .unwrap()
                .insert(id, served.shutdown_handle());
            tokio::spawn(served);
        }
    });
    Server {
        addr,
        connections,
        hits,
    }
}

fn client_builder(certs: &Certs) -> gquic_client::ClientBuilder {
    Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(Certificate::from_der(&certs.cert).unwrap())
}

/// GET `u` and read the body as text.
async fn text(client: &Client, u: impl gquic_client::IntoUrl) -> String {
    client.get(u).send().await.unwrap().text().await.unwrap()
}

fn url(s: &Server, path: &str) -> String {
    format!("https://localhost:{}{path}", s.addr.port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooling_reuses_one_connection_and_replaces_a_dead_one() {
    let certs = certs();
    let s = server(&certs).await;
    let client = client_builder(&certs).build().unwrap();
    // 50 concurrent requests: one connection (concurrent dials are coalesced).
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (client, u) = (client.clone(), url(&s, "/conn"));
        tasks.push(tokio::spawn(async move {
            client.get(u).send().await.unwrap().text().await.unwrap()
        }));
    }
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        ids.insert(t.await.unwrap());
    }
    assert_eq!(ids.len(), 1, "requests spread over {ids:?}");
    assert_eq!(s.connections.load(Ordering::SeqCst), 1);

    // The server kills the connection (the first /drop): the next request gets a new one.
    let resp = client.get(url(&s, "/drop?key=pool")).send().await.unwrap();
    assert_eq!(
        resp.text().await.unwrap(),
        "hit 2",
        "GET retried on a new connection"
    );
    let id = text(&client, url(&s, "/conn")).await;
    assert!(!ids.contains(&id), "dead connection reused");
    assert_eq!(s.connections.load(Ordering::SeqCst), 2);

    // GOAWAY: the connection takes no new requests; the next one goes to a new connection.
    let going = client.get(url(&s, "/goaway")).send().await.unwrap();
    assert_eq!(going.text().await.unwrap(), "going away");
    let after = text(&client, url(&s, "/conn")).await;
    assert_ne!(after, id, "request sent on a connection that sent GOAWAY");
    assert_eq!(s.connections.load(Ordering::SeqCst), 3);
    // A POST after GOAWAY too: it was never sent on the old connection.
    let going = client.get(url(&s, "/goaway")).send().await.unwrap();
    assert_eq!(going.text().await.unwrap(), "going away");
    // The GOAWAY frame travels on the control stream, the response on its own stream: the
    // response can be read before the GOAWAY is processed. A POST is not retried, so give
    // the GOAWAY time to arrive (the GET above is retried, so it needs no such pause).
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let posted = client
        .post(url(&s, "/target"))
        .body("after goaway")
        .send()
        .await
        .unwrap();
    assert!(posted.text().await.unwrap().starts_with("POST len=12"));
    assert_eq!(s.connections.load(Ordering::SeqCst), 4);

    // Responses say where they came from.
    let resp = client.get(url(&s, "/bytes/10")).send().await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_3);
    assert_eq!(resp.remote_addr(), Some(s.addr));
    assert_eq!(resp.url().as_str(), url(&s, "/bytes/10"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_requests_are_retried_and_posts_are_not() {
    let certs = certs();
    let s = server(&certs).await;
    let client = client_builder(&certs).build().unwrap();
    let resp = client.get(url(&s, "/drop?key=get")).send().await.unwrap();
    assert_eq!(resp.text().await.unwrap(), "hit 2");
    assert_eq!(s.hits.lock().unwrap()["get"], 2);

    let err = client
        .post(url(&s, "/drop?key=post"))
        .body("payload")
        .send()
        .await
        .unwrap_err();
    assert!(err.is_request(), "{err:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(s.hits.lock().unwrap()["post"], 1, "POST was retried");

    // With retries off, even a GET fails.
    let client = client_builder(&certs)
        .retry(gquic_client::retry::Policy::never())
        .build()
        .unwrap();
    let err = client
        .get(url(&s, "/drop?key=never"))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_request(), "{err:?}");
    assert_eq!(s.hits.lock().unwrap()["never"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_follow_the_rules() {
    let certs = certs();
    let s = server(&certs).await;
    let other = server(&certs).await;
    let client = client_builder(&certs).build().unwrap();
    // 301/302/303 turn a POST into a GET without body; 307/308 keep both.
    for (code, expect) in [
        (301, "GET len=0"),
        (302, "GET len=0"),
        (303, "GET len=0"),
        (307, "POST len=5"),
        (308, "POST len=5"),
    ] {
        let resp = client
            .post(url(&s, &format!("/redirect/{code}")))
            .body("hello")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.url().path(), "/target", "{code}");
        let text = resp.text().await.unwrap();
        assert!(text.starts_with(expect), "{code}: {text}");
    }
    // 301/302 keep HEAD; 303 makes it GET.
    // A HEAD answer has no body; a GET to /target would.
    for (code, body_len) in [(301, 0), (302, 0), (303, "GET len=0 auth=- cookie=-".len())] {
        let resp = client
            .head(url(&s, &format!("/redirect/{code}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{code}");
        assert_eq!(resp.text().await.unwrap().len(), body_len, "{code}");
    }
    // A streamed body cannot be sent twice: the 307 comes back as it is.
    let stream = IterStream(vec![Ok::<_, std::io::Error>(Bytes::from_static(b"x"))].into_iter());
    let resp = client
        .post(url(&s, "/redirect/307"))
        .body(Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 307);

    // The limit: 10 by default; 11 hops fail, 10 succeed.
    let ok = client.get(url(&s, "/chain/10")).send().await.unwrap();
    assert_eq!(ok.text().await.unwrap(), "end");
    let err = client.get(url(&s, "/chain/11")).send().await.unwrap_err();
    assert!(err.is_redirect(), "{err:?}");
    // A loop is detected.
    let err = client.get(url(&s, "/loop/a")).send().await.unwrap_err();
    assert!(err.is_redirect(), "{err:?}");
    assert!(err.to_string().contains("loop"), "{err}");
    // Policy::none returns the 3xx.
    let none = client_builder(&certs)
        .redirect(gquic_client::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = none.get(url(&s, "/redirect/302")).send().await.unwrap();
    assert_eq!(resp.status(), 302);

    // Credentials stay on the origin: kept for a same-origin hop, stripped across origins.
    let same = client
        .get(url(&s, "/redirect/302?to=/target"))
        .bearer_auth("secret")
        .header("cookie", "k=v")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        same.contains("auth=Bearer secret") && same.contains("cookie=k=v"),
        "{same}"
    );
    let cross = client
        .get(url(
            &s,
            &format!("/redirect/302?to={}", url(&other, "/target")),
        ))
        .bearer_auth("secret")
        .header("cookie", "k=v")
        .send()
        .await
        .unwrap();
    assert_eq!(cross.url().port(), Some(other.addr.port()));
    let cross = cross.text().await.unwrap();
    assert!(
        cross.contains("auth=-") && cross.contains("cookie=-"),
        "{cross}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookies_are_kept_and_sent_by_the_rules() {
    let certs = certs();
    let s = server(&certs).await;
    let jar = Arc::new(gquic_client::cookie::Jar::default());
    let client = client_builder(&certs)
        .cookie_provider(jar.clone())
        .build()
        .unwrap();
    client.get(url(&s, "/set-cookies")).send().await.unwrap();
    let root = text(&client, url(&s, "/cookies")).await;
    for c in ["a=1", "e=3", "s=4"] {
        assert!(root.contains(c), "{c} missing: {root}");
    }
    assert!(!root.contains("b=2"), "path rule broken: {root}");
    assert!(!root.contains("d=5"), "foreign domain accepted: {root}");
    let sub = text(&client, url(&s, "/cookies/sub")).await;
    assert!(sub.contains("b=2") && sub.contains("a=1"), "{sub}");
    let u: gquic_client::Url = url(&s, "/").parse().unwrap();
    assert_eq!(jar.get(&u, "s"), Some(("4".into(), Some("Strict".into()))));
    // Shared across connections: a second client with the same jar sends them too.
    let other = client_builder(&certs)
        .cookie_provider(jar.clone())
        .build()
        .unwrap();
    let again = text(&other, url(&s, "/cookies")).await;
    assert!(again.contains("a=1"), "{again}");
    // Expiry.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let later = text(&client, url(&s, "/cookies")).await;
    assert!(later.contains("a=1") && !later.contains("e=3"), "{later}");
    // Without a store, nothing is sent.
    let plain = client_builder(&certs).build().unwrap();
    plain.get(url(&s, "/set-cookies")).send().await.unwrap();
    let none = text(&plain, url(&s, "/cookies")).await;
    assert_eq!(none, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_are_decompressed() {
    let certs = certs();
    let s = server(&certs).await;
    let client = client_builder(&certs).build().unwrap();
    let expected = "compress me please ".repeat(2000);
    for enc in ["gzip", "br", "zstd", "deflate"] {
        // Ask for one encoding; the server's CompressionLayer uses it.
        let resp = client
            .get(url(&s, "/text"))
            .header("accept-encoding", enc)
            .send()
            .await
            .unwrap();
        assert!(resp.headers().get("content-encoding").is_none(), "{enc}");
        assert_eq!(resp.text().await.unwrap(), expected, "{enc}");
    }
    // The client asks for all four by default, and the body still arrives plain.
    let resp = client.get(url(&s, "/text")).send().await.unwrap();
    assert_eq!(resp.text().await.unwrap(), expected);
    // Turned off, the client gets the identity encoding.
    let raw = client_builder(&certs)
        .gzip(false)
        .brotli(false)
        .zstd(false)
        .deflate(false)
        .build()
        .unwrap();
    let resp = raw.get(url(&s, "/text")).send().await.unwrap();
    assert!(resp.headers().get("content-encoding").is_none());
    assert_eq!(resp.text().await.unwrap().len(), expected.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_fire() {
    let certs = certs();
    let s = server(&certs).await;
    let client = client_builder(&certs)
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let err = client.get(url(&s, "/slow")).send().await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert_eq!(err.url().map(|u| u.path()), Some("/slow"));
    // A request's own timeout wins.
    let resp = client
        .get(url(&s, "/slow"))
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap(), "slow");

    // read_timeout: the head and first chunk arrive, the stalled rest times out.
    let reader = client_builder(&certs)
        .read_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let mut resp = reader.get(url(&s, "/stall")).send().await.unwrap();
    assert_eq!(&resp.chunk().await.unwrap().unwrap()[..], b"first");
    let err = resp.chunk().await.unwrap_err();
    assert!(err.is_timeout() && err.is_body(), "{err:?}");

    // connect_timeout: nothing answers on this port.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let dialer = client_builder(&certs)
        .connect_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let err = dialer
        .get(format!("https://localhost:{port}/"))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect() && err.is_timeout(), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_upload_and_download_with_trailers() {
    let certs = certs();
    let s = server(&certs).await;
    let client = client_builder(&certs).build().unwrap();
    // 4 MiB streamed up in 64 KiB chunks.
    let chunks: Vec<Result<Bytes, std::io::Error>> =
        (0..64).map(|_| Ok(pattern(64 * 1024))).collect();
    let resp = client
        .post(url(&s, "/upload"))
        .body(Body::wrap_stream(IterStream(chunks.into_iter())))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap(), (4 << 20).to_string());

    // Downloaded chunk by chunk, then the trailers.
    let mut resp = client
        .get(url(&s, "/trailers"))
        .header("accept-encoding", "identity")
        .send()
        .await
        .unwrap();
    let mut got = Vec::new();
    while let Some(c) = resp.chunk().await.unwrap() {
        got.extend_from_slice(&c);
    }
    assert_eq!(got, pattern(100_000));
    let trailers = resp.trailers().await.unwrap().expect("trailers");
    assert_eq!(trailers["x-checksum"], "abc123");

    // bytes_stream and json.
    let resp = client.get(url(&s, "/bytes/300000")).send().await.unwrap();
    let mut stream = resp.bytes_stream();
    let mut n = 0;
    while let Some(c) = std::future::poll_fn(|cx| {
        futures_core::Stream::poll_next(std::pin::Pin::new(&mut stream), cx)
    })
    .await
    {
        n += c.unwrap().len();
    }
    assert_eq!(n, 300_000);
    let err = client
        .get(url(&s, "/bytes/5"))
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap_err();
    assert!(err.is_decode(), "{err:?}");
    // error_for_status.
    let err = client
        .get(url(&s, "/missing"))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap_err();
    assert!(err.is_status());
    assert_eq!(err.status(), Some(StatusCode::NOT_FOUND));
}

/// `http2_fallback`: nothing answers QUIC on the URL's port, so HTTP/2 over TCP wins the
/// race; its `alt-svc` sends the next request to the HTTP/3 server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_fallback_then_alt_svc_upgrade() {
    let certs = certs();
    let h3 = server(&certs).await;
    // An HTTP/2-only server on TCP (its UDP port is closed), advertising HTTP/3 elsewhere.
    let tls = tls_server(&certs, b"h2");
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let alt_svc = format!("h3=\":{}\"; ma=60", h3.addr.port());
    let app = Router::new().route(
        "/proto",
        get(move |req: Request| {
            let alt_svc = alt_svc.clone();
            async move { ([("alt-svc", alt_svc)], format!("{:?}", req.version())) }
        }),
    );
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    tokio::spawn(async move {
        while let Ok((stream, _)) = tcp.accept().await {
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(
                    hyper_util::rt::TokioIo::new(tls),
                    hyper_util::service::TowerToHyperService::new(app),
                )
                .await;
            });
        }
    });
    let u = format!("https://localhost:{port}/proto");

    // Without the fallback, HTTP/3 alone cannot reach it.
    let strict = client_builder(&certs)
        .connect_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let err = strict.get(&u).send().await.unwrap_err();
    assert!(err.is_connect(), "{err:?}");

    let client = client_builder(&certs).http2_fallback(true).build().unwrap();
    let first = client.get(&u).send().await.unwrap();
    assert_eq!(first.version(), http::Version::HTTP_2);
    assert!(first.headers().contains_key("alt-svc"));
    assert_eq!(first.text().await.unwrap(), "HTTP/2.0");
    // The advertisement moves the origin to HTTP/3 (served on the other port).
    let second = client.get(&u).send().await.unwrap();
    assert_eq!(second.version(), http::Version::HTTP_3);
    assert_eq!(second.remote_addr(), Some(h3.addr));
    assert_eq!(second.text().await.unwrap(), "HTTP/3.0");
}

/// The request builder's pieces reach the server as reqwest would send them, and user
/// layers see every exchange (each redirect hop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_builder_and_user_layers() {
    let certs = certs();
    let s = server(&certs).await;
    let mut defaults = http::HeaderMap::new();
    defaults.insert("x-default", "d".parse().unwrap());
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let client = client_builder(&certs)
        .default_headers(defaults)
        .layer(tower::layer::layer_fn(
            move |inner: gquic_client::HttpService| {
                let counter = counter.clone();
                tower::service_fn(move |req: http::Request<Body>| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let mut inner = inner.clone();
                    async move {
                        let mut resp = tower::Service::call(&mut inner, req).await?;
                        resp.headers_mut()
                            .insert("x-layer", "seen".parse().unwrap());
                        Ok::<_, gquic_client::Error>(resp)
                    }
                })
            },
        ))
        .build()
        .unwrap();

    // Default user agent and default header; query pairs appended to an existing query.
    let v: serde_json::Value = client
        .get(url(&s, "/inspect?a=1"))
        .query(&[("b", "two words"), ("c", "&")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["query"], "a=1&b=two+words&c=%26");
    assert!(v["headers"]["user-agent"]
        .as_str()
        .unwrap()
        .starts_with("gquic-client/"));
    assert_eq!(v["headers"]["x-default"], "d");

    // A request's own header wins over the default; basic auth; a form body.
    let resp = client
        .post(url(&s, "/inspect"))
        .header("x-default", "mine")
        .basic_auth("user", Some("pass"))
        .form(&[("k", "v w")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-layer"], "seen");
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["method"], "POST");
    assert_eq!(v["headers"]["x-default"], "mine");
    assert_eq!(v["headers"]["authorization"], "Basic dXNlcjpwYXNz");
    assert_eq!(
        v["headers"]["content-type"],
        "application/x-www-form-urlencoded"
    );
    assert_eq!(v["body"], "k=v+w");

    // JSON body and a custom user agent.
    let agent = client_builder(&certs)
        .user_agent("probe/1")
        .build()
        .unwrap();
    let v: serde_json::Value = agent
        .put(url(&s, "/inspect"))
        .json(&serde_json::json!({"x": [1, 2]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["method"], "PUT");
    assert_eq!(v["headers"]["user-agent"], "probe/1");
    assert_eq!(v["headers"]["content-type"], "application/json");
    assert_eq!(v["body"], r#"{"x":[1,2]}"#);

    // The layer sits below redirects: three hops and the target are four exchanges.
    let before = seen.load(Ordering::SeqCst);
    assert_eq!(text(&client, url(&s, "/chain/3")).await, "end");
    assert_eq!(seen.load(Ordering::SeqCst) - before, 4);

    // A bad header is a builder error, reported at send.
    let err = client
        .get(url(&s, "/inspect"))
        .header("bad header", "x")
        .send()
        .await
        .unwrap_err();
    assert!(err.is_builder(), "{err:?}");
    // http:// cannot be HTTP/3.
    let err = client.get("http://localhost/").send().await.unwrap_err();
    assert!(err.is_builder(), "{err:?}");
}

/// A UDP relay that delays every datagram by `delay` each way, so a round trip takes long
/// enough that a request sent right after the ClientHello reliably goes in 0-RTT, however
/// loaded the machine is. Returns the address to connect to.
async fn delay_proxy(server: SocketAddr, delay: Duration) -> SocketAddr {
    let front = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let back = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let addr = front.local_addr().unwrap();
    let client = Arc::new(Mutex::new(None::<SocketAddr>));
    // Each direction keeps its datagrams in order, as a path with a fixed delay does: a task
    // per datagram, each sleeping the delay, could reorder two sent in the same millisecond
    // (a 0-RTT packet overtaking its Initial).
    let relay = |from: Arc<tokio::net::UdpSocket>,
                 to: Arc<tokio::net::UdpSocket>,
                 client: Arc<Mutex<Option<SocketAddr>>>,
                 upstream: bool| async move {
        let (tx, mut rx) =
            tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>, SocketAddr)>();
        tokio::spawn(async move {
            while let Some((due, data, dest)) = rx.recv().await {
                tokio::time::sleep_until(due).await;
                let _ = to.send_to(&data, dest).await;
            }
        });
        let mut buf = vec![0u8; 65536];
        while let Ok((n, peer)) = from.recv_from(&mut buf).await {
            let dest = if upstream {
                *client.lock().unwrap() = Some(peer);
                server
            } else {
                match *client.lock().unwrap() {
                    Some(c) => c,
                    None => continue,
                }
            };
            let due = tokio::time::Instant::now() + delay;
            if tx.send((due, buf[..n].to_vec(), dest)).is_err() {
                break;
            }
        }
    };
    tokio::spawn(relay(front.clone(), back.clone(), client.clone(), true));
    tokio::spawn(relay(back, front, client, false));
    addr
}

/// What `/early` answers: the method and whether the request came in 0-RTT.
async fn early(req: Request) -> String {
    let info = req
        .extensions()
        .get::<gquic_hyper::ConnectionInfo>()
        .unwrap()
        .clone();
    format!("{} early={}", req.method(), info.zero_rtt)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_rtt_on_the_second_connection_and_replay_after_rejection() {
    let certs = certs();
    let server_config = |certs: &Certs| {
        let mut config = ServerConfig::new(Arc::new(tls_server(certs, b"h3"))).unwrap();
        config.enable_0rtt(true).unwrap();
        config
    };
    let endpoint = Endpoint::server(server_config(&certs), "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = endpoint.local_addr();
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let router = Router::new().route(
        "/early",
        any(move |req: Request| {
            counted.fetch_add(1, Ordering::SeqCst);
            early(req)
        }),
    );
    let serving = endpoint.clone();
    tokio::spawn(async move { gquic_axum::serve(serving, router).await });
    // A connection per request, so each one is a new handshake.
    let client = client_builder(&certs)
        .zero_rtt(true)
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    // 25 ms each way: the handshake cannot beat a request sent right after the ClientHello.
    let proxy = delay_proxy(addr, Duration::from_millis(25)).await;
    let u = format!("https://localhost:{}/early", proxy.port());

    let first = client.get(&u).send().await.unwrap();
    assert!(!first.zero_rtt(), "no ticket yet");
    assert_eq!(first.text().await.unwrap(), "GET early=false");
    // The session tickets follow the handshake.
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The next connection resumes and its GET goes in 0-RTT. Client and server must agree on
    // that for every request (a retry only guards against a ticket that did not arrive).
    let mut requests = 1;
    let mut early_seen = false;
    for _ in 0..3 {
        let resp = client.get(&u).send().await.unwrap();
        requests += 1;
        let zero_rtt = resp.zero_rtt();
        assert_eq!(
            resp.extensions().get::<gquic_client::ZeroRtt>(),
            Some(&gquic_client::ZeroRtt(zero_rtt))
        );
        assert_eq!(
            resp.text().await.unwrap(),
            format!("GET early={zero_rtt}"),
            "the server saw the request in 0-RTT exactly when the client says it went so"
        );
        if zero_rtt {
            early_seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(early_seen, "a resumed connection's GET went in 0-RTT");

    // A POST is not idempotent: it waits for the handshake even with a ticket.
    let post = client.post(&u).body("x").send().await.unwrap();
    requests += 1;
    assert!(!post.zero_rtt());
    assert_eq!(post.text().await.unwrap(), "POST early=false");

    // A server that forgot its tickets rejects 0-RTT; the GET is sent again in 1-RTT.
    endpoint.set_server_config(Some(server_config(&certs)));
    let replayed = client.get(&u).send().await.unwrap();
    requests += 1;
    assert!(!replayed.zero_rtt(), "0-RTT was rejected");
    assert_eq!(replayed.text().await.unwrap(), "GET early=false");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        requests,
        "each request reached the service once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_tells_the_server_at_once() {
    let certs = certs();
    let endpoint = Endpoint::server(
        ServerConfig::new(Arc::new(tls_server(&certs, b"h3"))).unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let addr = endpoint.local_addr();
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let conn = endpoint.accept().await.unwrap().await.unwrap();
        let router = Router::new().route("/", get(|| async { "hi" }));
        tokio::spawn(gquic_hyper::serve_connection(
            conn.clone(),
            hyper_util::service::TowerToHyperService::new(router),
        ));
        let _ = closed_tx.send(conn.closed().await);
        drop(endpoint);
    });
    let client = client_builder(&certs).build().unwrap();
    assert_eq!(
        text(&client, format!("https://localhost:{}/", addr.port())).await,
        "hi"
    );
    client.close().await;
    // Without the close the server would learn only at its idle timeout (30 s).
    let reason = tokio::time::timeout(Duration::from_secs(2), closed_rx)
        .await
        .expect("the server saw the close within 2 s")
        .unwrap();
    assert!(
        matches!(
            reason,
            gquic_transport::connection::ConnectionError::ApplicationClosed { code, .. }
                if code.into_inner() == 0x100
        ),
        "{reason:?}"
    );
    // The client's HTTP/3 side is closed for good.
    assert!(client
        .get(format!("https://localhost:{}/", addr.port()))
        .send()
        .await
        .is_err());
}
