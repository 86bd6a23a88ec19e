//! gquic-tower: the accept loop over a tower service, connection info, Alt-Svc.
#![allow(clippy::disallowed_methods)]

use std::convert::Infallible;
use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gquic_tower::{AltSvcLayer, ConnectionInfo, MakeServiceFn};
use gquic_transport::runtime::Endpoint;
use gquic_transport::{ClientConfig, ServerConfig};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tower::{Layer, Service, ServiceExt};

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn configs() -> (ServerConfig, ClientConfig) {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert = CertificateDer::from(c.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(c.signing_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut s = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    s.alpn_protocols = vec![b"h3".to_vec()];
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let mut c = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    c.alpn_protocols = vec![b"h3".to_vec()];
    (
        ServerConfig::new(Arc::new(s)).unwrap(),
        ClientConfig::new(Arc::new(c)).unwrap(),
    )
}

fn full(s: String) -> Body {
    Full::new(Bytes::from(s)).boxed()
}

#[tokio::test]
async fn serves_a_tower_service_with_connection_info() {
    let (sc, cc) = configs();
    // On Linux the server is bound to every address and the client dials 127.0.0.2: the
    // handler's `local_addr` is the address dialed, not `0.0.0.0` (`IP_PKTINFO`).
    #[cfg(target_os = "linux")]
    let (bind, dial_ip) = ("0.0.0.0:0", [127, 0, 0, 2]);
    #[cfg(not(target_os = "linux"))]
    let (bind, dial_ip) = ("127.0.0.1:0", [127, 0, 0, 1]);
    let endpoint = Endpoint::server(sc, bind.parse().unwrap()).unwrap();
    let addr = std::net::SocketAddr::from((dial_ip, endpoint.local_addr().port()));
    let make = MakeServiceFn::new(|info: &ConnectionInfo| {
        let made_for = info.remote_addr;
        // The Alt-Svc layer must leave HTTP/3 responses alone.
        AltSvcLayer::new(443, Duration::from_secs(60)).layer(tower::service_fn(
            move |req: Request<gquic_tower::Incoming>| async move {
                let info = req.extensions().get::<ConnectionInfo>().cloned().unwrap();
                let text = format!(
                    "{} {} {} {:?} {}",
                    made_for == info.remote_addr,
                    info.local_addr,
                    info.server_name.as_deref().unwrap_or("-"),
                    info.alpn.as_deref().map(String::from_utf8_lossy),
                    info.zero_rtt,
                );
                Ok::<_, Infallible>(Response::new(full(text)))
            },
        ))
    });
    tokio::spawn(gquic_tower::serve(endpoint, make).into_future());
    let client = Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let conn = client
        .connect_with(cc, addr, "localhost")
        .unwrap()
        .await
        .unwrap();
    let (mut send, driver) = gquic_hyper::client::handshake::<Body>(conn).await.unwrap();
    tokio::spawn(driver);
    let resp = send
        .send_request(
            Request::get("https://localhost/")
                .body(full(String::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(resp.headers().get("alt-svc").is_none());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        String::from_utf8_lossy(&body),
        format!("true {addr} localhost Some(\"h3\") false")
    );
}

#[tokio::test]
async fn alt_svc_is_added_to_responses_over_tcp() {
    let svc = AltSvcLayer::new(4433, Duration::from_secs(86400)).layer(tower::service_fn(
        |_req: Request<()>| async { Ok::<_, Infallible>(Response::new(())) },
    ));
    let resp = svc.oneshot(Request::new(())).await.unwrap();
    assert_eq!(resp.headers()["alt-svc"], "h3=\":4433\"; ma=86400");
}

#[tokio::test]
async fn client_service_pools_one_connection_and_honours_the_stream_limit() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (mut sc, cc) = configs();
    let mut transport = gquic_transport::TransportConfig::default();
    transport.max_concurrent_bidi_streams(2);
    sc.transport(Arc::new(transport)).unwrap();
    let endpoint = Endpoint::server(sc, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = endpoint.local_addr();
    let connections = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let (counted, seen) = (connections.clone(), requests.clone());
    let make = MakeServiceFn::new(move |_info: &ConnectionInfo| {
        counted.fetch_add(1, Ordering::SeqCst);
        let seen = seen.clone();
        tower::service_fn(move |_req: Request<gquic_tower::Incoming>| {
            seen.fetch_add(1, Ordering::SeqCst);
            async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                Ok::<_, Infallible>(Response::new(full("slow".into())))
            }
        })
    });
    tokio::spawn(gquic_tower::serve(endpoint, make).into_future());

    let client_ep = Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let connector = gquic_hyper::client::Connector::<Body>::new(client_ep, cc);
    let origin: http::Uri = format!("https://localhost:{}", addr.port())
        .parse()
        .unwrap();
    let client = gquic_tower::Client::new(connector, origin);
    let req = || {
        Request::get("https://localhost/")
            .body(full(String::new()))
            .unwrap()
    };

    // Two requests fill the server's limit of two concurrent streams.
    let mut in_flight = Vec::new();
    for _ in 0..2 {
        let mut c = client.clone();
        c.ready().await.unwrap();
        in_flight.push(tokio::spawn(c.call(req())));
    }
    while requests.load(Ordering::SeqCst) < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A third is not ready until one of them ends and the server raises the limit.
    let mut third = client.clone();
    assert!(
        tokio::time::timeout(Duration::from_millis(150), third.ready())
            .await
            .is_err(),
        "poll_ready ignored the peer's stream limit"
    );
    tokio::time::timeout(Duration::from_secs(5), third.ready())
        .await
        .unwrap()
        .unwrap();
    let resp = third.call(req()).await.unwrap();
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "slow");
    for f in in_flight {
        assert_eq!(f.await.unwrap().unwrap().status(), 200);
    }
    // All clones shared one connection.
    assert_eq!(connections.load(Ordering::SeqCst), 1);
}
