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

/// HTTP datagrams (RFC 9297) over QUIC datagrams: the client sends on a request's stream ID,
/// the server reads it with that ID and echoes it back.
async fn h3_datagram_echo(server_addr: SocketAddr, certs: &crate::connection::tests::Certs) {
    use h3_datagram::datagram_handler::HandleDatagramsExt;
    let client = Endpoint::client(localhost()).unwrap();
    let conn = client
        .connect_with(
            client_config(certs, &[b"h3"], TransportConfig::default()),
            server_addr,
            "localhost",
        )
        .unwrap()
        .await
        .unwrap();
    let (mut driver, mut send) = h3::client::builder()
        .enable_datagram(true)
        .build::<_, _, Bytes>(Connection::new(conn))
        .await
        .unwrap();
    let req = http::Request::get("https://localhost/datagrams")
        .body(())
        .unwrap();
    let stream = send.send_request(req).await.unwrap();
    let id = stream.id();
    let mut sender = driver.get_datagram_sender(id);
    let mut reader = driver.get_datagram_reader();
    tokio::spawn(async move { std::future::poll_fn(|cx| driver.poll_close(cx)).await });
    for i in 0..5u8 {
        sender.send_datagram(Bytes::from(vec![i; 500])).unwrap();
    }
    let mut seen = [false; 5];
    for _ in 0..5 {
        let d = tokio::time::timeout(std::time::Duration::from_secs(5), reader.read_datagram())
            .await
            .expect("echo in time")
            .unwrap();
        assert_eq!(d.stream_id(), id);
        let payload = d.payload().clone();
        assert!(payload.len() == 500 && payload.iter().all(|&b| b == payload[0]));
        seen[payload[0] as usize] = true;
    }
    assert!(seen.iter().all(|&s| s));
    drop(stream);
}

#[tokio::test]
async fn h3_datagrams_gquic_to_gquic() {
    use h3_datagram::datagram_handler::HandleDatagramsExt;
    let certs = certs();
    let server = Endpoint::server(
        server_config(&certs, &[b"h3"], TransportConfig::default()),
        localhost(),
    )
    .unwrap();
    let addr = server.local_addr();
    tokio::spawn(async move {
        let conn = server.accept().await.unwrap().await.unwrap();
        let mut h3c = h3::server::builder()
            .enable_datagram(true)
            .build::<_, Bytes>(Connection::new(conn))
            .await
            .unwrap();
        let mut reader = h3c.get_datagram_reader();
        let resolver = h3c.accept().await.unwrap().unwrap();
        let (_req, _stream) = resolver.resolve_request().await.unwrap();
        while let Ok(d) = reader.read_datagram().await {
            let mut sender = h3c.get_datagram_sender(d.stream_id());
            sender.send_datagram(d.payload().clone()).unwrap();
        }
    });
    h3_datagram_echo(addr, &certs).await;
}

#[tokio::test]
async fn h3_datagrams_gquic_client_h3_quinn_server() {
    use h3_datagram::datagram_handler::HandleDatagramsExt;
    let certs = certs();
    let tls = crate::connection::tests::server_tls(&certs, &[b"h3"]);
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
    let endpoint = quinn::Endpoint::server(
        quinn::ServerConfig::with_crypto(std::sync::Arc::new(crypto)),
        localhost(),
    )
    .unwrap();
    let addr = endpoint.local_addr().unwrap();
    tokio::spawn(async move {
        let conn = endpoint.accept().await.unwrap().await.unwrap();
        let mut h3c = h3::server::builder()
            .enable_datagram(true)
            .build::<_, Bytes>(h3_quinn::Connection::new(conn))
            .await
            .unwrap();
        let mut reader = h3c.get_datagram_reader();
        let resolver = h3c.accept().await.unwrap().unwrap();
        let (_req, _stream) = resolver.resolve_request().await.unwrap();
        while let Ok(d) = reader.read_datagram().await {
            let mut sender = h3c.get_datagram_sender(d.stream_id());
            sender.send_datagram(d.payload().clone()).unwrap();
        }
    });
    h3_datagram_echo(addr, &certs).await;
}

#[test]
fn h3_types_are_send_sync_static() {
    fn check<T: Send + Sync + 'static>() {}
    check::<Connection>();
    check::<super::OpenStreams>();
    check::<super::SendStream<Bytes>>();
    check::<super::RecvStream>();
    check::<super::BidiStream<Bytes>>();
    check::<super::SendDatagramHandler>();
    check::<super::RecvDatagramHandler>();
}

/// Small frames are cut from one shared block, back to back (one allocation for many), with
/// their bytes intact; a larger frame, and a frame that no longer fits the block's rest, get
/// memory of their own.
#[test]
fn small_frames_share_a_block_and_keep_their_bytes() {
    use crate::small_copy::{
        copy_buf as frame_bytes, BLOCK as FRAME_BLOCK, SMALL_COPY as SMALL_FRAME,
    };
    // Start on a fresh block whatever this thread cut before.
    let _ = frame_bytes(&mut Bytes::from(vec![0u8; SMALL_FRAME]));
    let mut frames = Vec::new();
    for i in 0..FRAME_BLOCK / 100 {
        let mut src = Bytes::from(vec![i as u8; 100]).chain(Bytes::from_static(b"xy"));
        frames.push(frame_bytes(&mut src));
        assert!(!src.has_remaining(), "the whole frame is taken");
    }
    let mut adjacent = 0;
    for (i, pair) in frames.windows(2).enumerate() {
        assert_eq!(pair[1][..100], [(i + 1) as u8; 100][..]);
        assert_eq!(&pair[1][100..], b"xy");
        if pair[0].as_ptr().wrapping_add(pair[0].len()) == pair[1].as_ptr() {
            adjacent += 1;
        }
    }
    // 40 frames of 102 bytes fill a 4 KiB block once, and start one more.
    assert!(
        adjacent >= frames.len() - 3,
        "{adjacent} of {} frames follow the previous one in memory",
        frames.len() - 1
    );
    let big = frame_bytes(&mut Bytes::from(vec![7u8; SMALL_FRAME + 1]));
    assert_eq!(big.len(), SMALL_FRAME + 1);
    assert!(big.iter().all(|b| *b == 7));
    let last = frames.last().unwrap();
    assert_ne!(last.as_ptr().wrapping_add(last.len()), big.as_ptr());
}
