//! h3 over gquic, both ends ours (interop with h3-quinn is in `tests/interop_h3_quinn.rs`).

use std::net::SocketAddr;

use bytes::{Buf, Bytes};

use super::Connection;
use crate::config::TransportConfig;
use crate::connection::tests::{certs, client_config, server_config};
use crate::runtime::Endpoint;

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

#[tokio::test]
async fn get_and_post_through_h3() {
    let certs = certs();
    let server = Endpoint::server(
        server_config(&certs, &[b"h3"], TransportConfig::default()),
        localhost(),
    )
    .unwrap();
    let addr = server.local_addr();
    let srv = tokio::spawn(async move {
        let conn = server.accept().await.unwrap().await.unwrap();
        let mut h3c = h3::server::Connection::<_, Bytes>::new(Connection::new(conn))
            .await
            .unwrap();
        while let Ok(Some(resolver)) = h3c.accept().await {
            let (req, mut stream) = resolver.resolve_request().await.unwrap();
            let mut body = Vec::new();
            while let Some(mut chunk) = stream.recv_data().await.unwrap() {
                body.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
            }
            let resp = http::Response::builder()
                .status(200)
                .header("x-method", req.method().as_str())
                .body(())
                .unwrap();
            stream.send_response(resp).await.unwrap();
            if req.method() == http::Method::POST {
                stream.send_data(Bytes::from(body)).await.unwrap();
            } else {
                stream
                    .send_data(Bytes::from_static(b"hello"))
                    .await
                    .unwrap();
            }
            stream.finish().await.unwrap();
        }
    });
    let client = Endpoint::client(localhost()).unwrap();
    let conn = client
        .connect_with(
            client_config(&certs, &[b"h3"], TransportConfig::default()),
            addr,
            "localhost",
        )
        .unwrap()
        .await
        .unwrap();
    let (mut driver, mut send) = h3::client::new(Connection::new(conn)).await.unwrap();
    let drive = tokio::spawn(async move { std::future::poll_fn(|cx| driver.poll_close(cx)).await });

    let req = http::Request::get("https://localhost/x").body(()).unwrap();
    let mut stream = send.send_request(req).await.unwrap();
    stream.finish().await.unwrap();
    let resp = stream.recv_response().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-method"], "GET");
    let mut body = Vec::new();
    while let Some(mut chunk) = stream.recv_data().await.unwrap() {
        body.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
    }
    assert_eq!(body, b"hello");

    let payload: Vec<u8> = (0..2_000_000u32).map(|i| (i * 7) as u8).collect();
    let req = http::Request::post("https://localhost/echo")
        .body(())
        .unwrap();
    let mut stream = send.send_request(req).await.unwrap();
    for part in payload.chunks(100_000) {
        stream
            .send_data(Bytes::copy_from_slice(part))
            .await
            .unwrap();
    }
    stream.finish().await.unwrap();
    let resp = stream.recv_response().await.unwrap();
    assert_eq!(resp.headers()["x-method"], "POST");
    let mut body = Vec::new();
    while let Some(mut chunk) = stream.recv_data().await.unwrap() {
        body.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
    }
    assert_eq!(body, payload);
    drop(send);
    drop(stream);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), drive).await;
    srv.abort();
}
