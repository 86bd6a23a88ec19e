//! gquic-client against an `h3` + `h3-quinn` server (a peer nobody here wrote; a
//! dev-dependency only): GET 10 MiB, POST echo, 100 parallel requests on one connection,
//! a redirect and a cookie round trip.
#![allow(clippy::disallowed_methods)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use gquic_client::{Certificate, Client};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

fn pattern(n: usize) -> Bytes {
    (0..n).map(|i| (i % 253) as u8).collect::<Vec<u8>>().into()
}

/// Requests `/reject` refused so far.
static REJECTED: AtomicUsize = AtomicUsize::new(0);

async fn handle(
    resolver: h3::server::RequestResolver<h3_quinn::Connection, Bytes>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let (req, mut stream) = resolver.resolve_request().await?;
    let path = req.uri().path().to_owned();
    // The first `/reject` is refused unprocessed (RFC 9114 §4.1.1: H3_REQUEST_REJECTED).
    if path == "/reject" && REJECTED.fetch_add(1, Ordering::SeqCst) == 0 {
        stream.stop_stream(h3::error::Code::H3_REQUEST_REJECTED);
        return Ok(());
    }
    let mut body = BytesMut::new();
    while let Some(mut chunk) = stream.recv_data().await? {
        body.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
    }
    let cookie = req
        .headers()
        .get("cookie")
        .map(|v| v.to_str().unwrap_or_default().to_owned())
        .unwrap_or_default();
    let (status, headers, out): (u16, Vec<(&str, String)>, Bytes) = match path.as_str() {
        "/echo" => (200, vec![], body.freeze()),
        "/redirect" => (302, vec![("location", "/bytes/3".into())], Bytes::new()),
        "/set-cookie" => (
            200,
            vec![("set-cookie", "q=quinn; Path=/".into())],
            Bytes::new(),
        ),
        "/cookie" => (200, vec![], Bytes::from(cookie)),
        p => match p.strip_prefix("/bytes/").and_then(|n| n.parse().ok()) {
            Some(n) => (200, vec![], pattern(n)),
            None => (404, vec![], Bytes::from_static(b"not found")),
        },
    };
    let mut resp = http::Response::builder().status(status);
    for (k, v) in headers {
        resp = resp.header(k, v);
    }
    stream.send_response(resp.body(())?).await?;
    for chunk in out.chunks(64 * 1024) {
        stream.send_data(Bytes::copy_from_slice(chunk)).await?;
    }
    stream.finish().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gquic_client_against_h3_quinn_server() {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert = CertificateDer::from(c.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(c.signing_key.serialize_der()));
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.clone()], key)
    .unwrap();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
    let endpoint = quinn::Endpoint::server(
        quinn::ServerConfig::with_crypto(Arc::new(crypto)),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let port = endpoint.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            let Ok(conn) = incoming.await else { continue };
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut h3c =
                    h3::server::Connection::<_, Bytes>::new(h3_quinn::Connection::new(conn))
                        .await
                        .unwrap();
                while let Ok(Some(resolver)) = h3c.accept().await {
                    tokio::spawn(handle(resolver));
                }
            });
        }
    });

    let client = Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(Certificate::from_der(&cert).unwrap())
        .cookie_store(true)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let url = |p: &str| format!("https://localhost:{port}{p}");

    let big = client.get(url("/bytes/10485760")).send().await.unwrap();
    assert_eq!(big.version(), http::Version::HTTP_3);
    assert_eq!(big.bytes().await.unwrap(), pattern(10 << 20));

    let payload = pattern(1 << 20);
    let echoed = client
        .post(url("/echo"))
        .body(payload.clone())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(echoed, payload);

    let mut tasks = Vec::new();
    for i in 0..100usize {
        let (client, u) = (client.clone(), url(&format!("/bytes/{}", 100 + i)));
        tasks.push(tokio::spawn(async move {
            assert_eq!(
                client.get(u).send().await.unwrap().bytes().await.unwrap(),
                pattern(100 + i)
            );
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "one pooled connection"
    );

    let redirected = client.get(url("/redirect")).send().await.unwrap();
    assert_eq!(redirected.url().path(), "/bytes/3");
    assert_eq!(redirected.bytes().await.unwrap(), pattern(3));

    // A POST the server rejected unprocessed is sent again.
    let echoed = client
        .post(url("/reject"))
        .body("once")
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.status(), 404);
    assert_eq!(
        REJECTED.load(Ordering::SeqCst),
        2,
        "the POST was not re-sent"
    );

    client.get(url("/set-cookie")).send().await.unwrap();
    let cookie = client
        .get(url("/cookie"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(cookie, "q=quinn");

    let missing = client.get(url("/nope")).send().await.unwrap();
    assert!(missing.error_for_status().unwrap_err().is_status());
}
