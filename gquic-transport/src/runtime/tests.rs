//! Runtime tests over loopback UDP between two gquic endpoints (interop with other stacks
//! lives in `tests/interop_quinn.rs`).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::config::TransportConfig;
use crate::connection::tests::{certs, client_config, server_config};

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn pair(alpn: &[&[u8]]) -> (Endpoint, Endpoint, ClientConfig) {
    let certs = certs();
    let server = Endpoint::server(
        server_config(&certs, alpn, TransportConfig::default()),
        localhost(),
    )
    .unwrap();
    let client = Endpoint::client(localhost()).unwrap();
    let cc = client_config(&certs, alpn, TransportConfig::default());
    (server, client, cc)
}

#[tokio::test]
async fn echo_over_loopback() {
    let (server, client, cc) = pair(&[b"echo"]);
    let addr = server.local_addr();
    let srv = tokio::spawn(async move {
        let conn = server.accept().await.unwrap().await.unwrap();
        assert_eq!(conn.alpn().as_deref(), Some(&b"echo"[..]));
        let (mut send, mut recv) = conn.accept_bi().await.unwrap();
        let data = recv.read_to_end(1 << 20).await.unwrap();
        send.write_all(&data).await.unwrap();
        send.finish().unwrap();
        assert_eq!(send.stopped().await.unwrap(), None);
        let err = conn.closed().await;
        assert!(
            matches!(err, ConnectionError::ApplicationClosed { code, ref reason } if code == VarInt::from_u32(7) && &reason[..] == b"bye"),
            "{err:?}"
        );
        server.wait_idle().await;
    });
    let conn = client
        .connect_with(cc, addr, "localhost")
        .unwrap()
        .await
        .unwrap();
    assert!(conn.peer_certificates().is_some_and(|c| c.len() == 1));
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let payload: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
    send.write_chunk(Bytes::from(payload.clone()))
        .await
        .unwrap();
    send.finish().unwrap();
    let back = recv.read_to_end(1 << 20).await.unwrap();
    assert_eq!(back, payload);
    let stats = conn.stats();
    assert!(stats.rtt > Duration::ZERO && stats.counters.bytes_sent > 300_000);
    conn.close(VarInt::from_u32(7), b"bye");
    client.wait_idle().await;
    tokio::time::timeout(Duration::from_secs(10), srv)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn connect_without_config_is_a_typed_error() {
    let client = Endpoint::client(localhost()).unwrap();
    let err = client.connect(localhost(), "localhost").unwrap_err();
    assert!(matches!(err, ConnectError::NoDefaultClientConfig));
    assert!(err.to_string().contains("set_default_client_config"));
}

#[tokio::test]
async fn endpoint_close_ends_accept_and_connections() {
    let (server, client, cc) = pair(&[b"x"]);
    let addr = server.local_addr();
    let connecting = client.connect_with(cc, addr, "localhost").unwrap();
    let sconn = server.accept().await.unwrap().await.unwrap();
    let conn = connecting.await.unwrap();
    server.close(VarInt::from_u32(3), b"shutdown");
    assert!(server.accept().await.is_none());
    let err = conn.closed().await;
    assert!(
        matches!(err, ConnectionError::ApplicationClosed { code, .. } if code == VarInt::from_u32(3))
    );
    assert_eq!(sconn.close_reason(), Some(ConnectionError::LocallyClosed));
    tokio::time::timeout(Duration::from_secs(5), server.wait_idle())
        .await
        .unwrap();
}

#[tokio::test]
async fn dropping_every_handle_closes_with_code_zero() {
    let (server, client, cc) = pair(&[b"x"]);
    let addr = server.local_addr();
    let connecting = client.connect_with(cc, addr, "localhost").unwrap();
    let sconn = server.accept().await.unwrap().await.unwrap();
    let conn = connecting.await.unwrap();
    let (send, recv) = conn.open_bi().await.unwrap();
    drop(conn);
    // The streams keep the connection alive.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(sconn.close_reason().is_none());
    drop((send, recv));
    let err = tokio::time::timeout(Duration::from_secs(5), sconn.closed())
        .await
        .unwrap();
    assert!(
        matches!(err, ConnectionError::ApplicationClosed { code, .. } if code == VarInt::from_u32(0)),
        "{err:?}"
    );
}
