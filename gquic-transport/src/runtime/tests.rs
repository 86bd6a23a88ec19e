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

/// A server with `server_transport` and a client, connected: the endpoints (kept alive by
/// the caller), then the server's and the client's connection.
async fn connected(
    server_transport: TransportConfig,
) -> (Endpoint, Endpoint, Connection, Connection) {
    connected_with(server_transport, TransportConfig::default()).await
}

/// [`connected`] with the client's transport configuration too.
async fn connected_with(
    server_transport: TransportConfig,
    client_transport: TransportConfig,
) -> (Endpoint, Endpoint, Connection, Connection) {
    let certs = certs();
    let server = Endpoint::server(
        server_config(&certs, &[b"x"], server_transport),
        localhost(),
    )
    .unwrap();
    let client = Endpoint::client(localhost()).unwrap();
    let cc = client_config(&certs, &[b"x"], client_transport);
    let connecting = client
        .connect_with(cc, server.local_addr(), "localhost")
        .unwrap();
    let sconn = server.accept().await.unwrap().await.unwrap();
    let conn = connecting.await.unwrap();
    (server, client, sconn, conn)
}

/// Waits (up to 5 s) for `conn` to end and asserts that the peer closed it with `code`.
async fn assert_peer_closed(conn: &Connection, code: u32) {
    let err = tokio::time::timeout(Duration::from_secs(5), conn.closed())
        .await
        .expect("the connection ends");
    assert!(
        matches!(err, ConnectionError::ApplicationClosed { code: c, .. } if c == VarInt::from_u32(code)),
        "{err:?}"
    );
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
        // The client closes as soon as it has read everything, so the last ACK may lose the
        // race with its CONNECTION_CLOSE; either outcome is correct, a STOP_SENDING is not.
        let stopped = send.stopped().await;
        assert!(
            matches!(
                stopped,
                Ok(None)
                    | Err(StoppedError::ConnectionLost(
                        ConnectionError::ApplicationClosed { .. }
                    ))
            ),
            "{stopped:?}"
        );
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
    assert_peer_closed(&conn, 3).await;
    assert_eq!(sconn.close_reason(), Some(ConnectionError::LocallyClosed));
    tokio::time::timeout(Duration::from_secs(5), server.wait_idle())
        .await
        .unwrap();
}

#[tokio::test]
async fn wait_closes_sent_returns_once_the_close_is_out_not_after_the_closing_period() {
    // A long closing period (three PTOs, each with our max_ack_delay in it: over 6 s) that
    // `wait_closes_sent` must not wait out.
    let mut transport = TransportConfig::default();
    transport.max_ack_delay(Duration::from_secs(2));
    let (_server, client, sconn, conn) =
        connected_with(TransportConfig::default(), transport).await;
    // Not closed: nothing to wait for yet, so it waits.
    let early = tokio::time::timeout(Duration::from_millis(100), client.wait_closes_sent()).await;
    assert!(early.is_err(), "an open connection is waited for");
    client.close(VarInt::from_u32(7), b"bye");
    tokio::time::timeout(Duration::from_secs(5), client.wait_closes_sent())
        .await
        .expect("the close goes out at once");
    // Returned inside the closing period: the connection is still there, closing.
    assert_eq!(client.open_connections(), 1, "still in its closing period");
    // And the close was on the wire: the server gets it.
    assert_peer_closed(&sconn, 7).await;
    assert_eq!(conn.close_reason(), Some(ConnectionError::LocallyClosed));
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
    // The streams keep the connection alive, each with a reference of its own.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(sconn.close_reason().is_none());
    drop(send);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        sconn.close_reason().is_none(),
        "the receiving half still holds it"
    );
    drop(recv);
    assert_peer_closed(&sconn, 0).await;
}

/// Connection and stream handles point at their endpoint's state without an `Arc` each: the
/// state holds itself for them. Here they outlive their runtime, and so the driver and the
/// endpoint handles: the state stays while any of them lives, and goes with the last.
#[test]
fn handles_keep_the_endpoint_state_until_the_last_goes() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (weak, conn, accepted, send, recv) = rt.block_on(async {
        let (server, client, sconn, conn) = connected(TransportConfig::default()).await;
        let (mut send, recv) = conn.open_bi().await.unwrap();
        send.write_all(b"x").await.unwrap();
        let accepted = sconn.accept_bi().await.unwrap();
        let weak = Arc::downgrade(client.primary());
        drop((server, client, sconn));
        (weak, conn, accepted, send, recv)
    });
    drop(accepted);
    drop(rt);
    assert!(weak.upgrade().is_some(), "the handles hold the state");
    let clone = conn.clone();
    drop(conn);
    drop(send);
    assert!(weak.upgrade().is_some(), "a clone and a stream handle left");
    drop(clone);
    assert!(weak.upgrade().is_some(), "the receive handle left");
    drop(recv);
    assert!(
        weak.upgrade().is_none(),
        "the last handle lets the state go"
    );
}

#[tokio::test]
async fn one_client_socket_carries_many_connections() {
    // Sharing one rustls config also exercises TLS session resumption: the second connection
    // to a server resumes the first one's session.
    let (server_a, client, cc) = pair(&[b"x"]);
    let certs2 = certs();
    let server_b = Endpoint::server(
        server_config(&certs2, &[b"y"], TransportConfig::default()),
        localhost(),
    )
    .unwrap();
    let cc_b = client_config(&certs2, &[b"y"], TransportConfig::default());
    let accept = |ep: Endpoint| {
        tokio::spawn(async move {
            let mut conns = Vec::new();
            while let Some(c) = ep.accept().await {
                let conn = c.await.unwrap();
                let (mut send, mut recv) = conn.accept_bi().await.unwrap();
                let data = recv.read_to_end(1024).await.unwrap();
                send.write_all(&data).await.unwrap();
                send.finish().unwrap();
                conns.push(conn);
            }
        })
    };
    let (addr_a, addr_b) = (server_a.local_addr(), server_b.local_addr());
    let _a = accept(server_a.clone());
    let _b = accept(server_b.clone());
    let mut conns = Vec::new();
    for i in 0..3u8 {
        conns.push((
            client
                .connect_with(cc.clone(), addr_a, "localhost")
                .unwrap()
                .await
                .unwrap(),
            i,
        ));
        conns.push((
            client
                .connect_with(cc_b.clone(), addr_b, "localhost")
                .unwrap()
                .await
                .unwrap(),
            10 + i,
        ));
    }
    assert_eq!(client.open_connections(), 6);
    for (conn, tag) in &conns {
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(&[*tag; 100]).await.unwrap();
        send.finish().unwrap();
        assert_eq!(recv.read_to_end(1024).await.unwrap(), vec![*tag; 100]);
    }
    assert_eq!(server_a.stats().accepted, 3);
    assert_eq!(server_b.stats().accepted, 3);
}

#[tokio::test]
async fn async_read_write_reset_and_stop() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (server, client, cc) = pair(&[b"x"]);
    let addr = server.local_addr();
    let connecting = client.connect_with(cc, addr, "localhost").unwrap();
    let sconn = server.accept().await.unwrap().await.unwrap();
    let conn = connecting.await.unwrap();

    // AsyncWrite + shutdown on one side, AsyncRead to the end on the other.
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    AsyncWriteExt::write_all(&mut send, b"through the io traits")
        .await
        .unwrap();
    // Vectored: the slices go as one chunk.
    assert!(tokio::io::AsyncWrite::is_write_vectored(&send));
    let slices = [
        std::io::IoSlice::new(b", "),
        std::io::IoSlice::new(b""),
        std::io::IoSlice::new(b"vectored"),
    ];
    assert_eq!(send.write_vectored(&slices).await.unwrap(), 10);
    send.shutdown().await.unwrap();
    let (_ssend, mut srecv) = sconn.accept_bi().await.unwrap();
    let mut got = String::new();
    srecv.read_to_string(&mut got).await.unwrap();
    assert_eq!(got, "through the io traits, vectored");
    assert_eq!(send.stopped().await.unwrap(), None);
    assert_eq!(send.finish(), Err(WriteError::ClosedStream));

    // A reset reaches the reader with its code.
    let mut send = conn.open_uni().await.unwrap();
    send.write_all(b"partial").await.unwrap();
    send.reset(VarInt::from_u32(77)).unwrap();
    let mut recv = sconn.accept_uni().await.unwrap();
    let err = loop {
        match recv.read_chunk(1024).await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("reset stream ended normally"),
            Err(e) => break e,
        }
    };
    assert_eq!(err, ReadError::Reset(VarInt::from_u32(77)));

    // STOP_SENDING reaches the writer with its code.
    let mut send = conn.open_uni().await.unwrap();
    send.write_all(b"x").await.unwrap();
    let mut recv = sconn.accept_uni().await.unwrap();
    recv.stop(VarInt::from_u32(9)).unwrap();
    assert_eq!(send.stopped().await.unwrap(), Some(VarInt::from_u32(9)));
    let big = vec![0u8; 1 << 16];
    let err = loop {
        if let Err(e) = send.write_all(&big).await {
            break e;
        }
    };
    assert_eq!(err, WriteError::Stopped(VarInt::from_u32(9)));
    let io_err: std::io::Error = err.into();
    assert_eq!(io_err.kind(), std::io::ErrorKind::ConnectionReset);

    // An AsyncRead with room for several packets' data gets them in one call.
    let mut send = conn.open_uni().await.unwrap();
    let payload: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    send.write_all(&payload).await.unwrap();
    send.finish().unwrap();
    let mut recv = sconn.accept_uni().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut big = vec![0u8; 1 << 16];
    let first = AsyncReadExt::read(&mut recv, &mut big).await.unwrap();
    assert!(first > 2_000, "one packet per read: {first}");
    let mut got = big[..first].to_vec();
    AsyncReadExt::read_to_end(&mut recv, &mut got)
        .await
        .unwrap();
    assert_eq!(got, payload);
    assert_eq!(AsyncReadExt::read(&mut recv, &mut big).await.unwrap(), 0);
    // So does `read`, which then reports the end as `None`.
    let mut send = conn.open_uni().await.unwrap();
    send.write_all(&payload).await.unwrap();
    send.finish().unwrap();
    let mut recv = sconn.accept_uni().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut got = Vec::new();
    let mut calls = 0;
    while let Some(n) = recv.read(&mut big).await.unwrap() {
        got.extend_from_slice(&big[..n]);
        calls += 1;
    }
    assert_eq!(got, payload);
    assert!(calls < 5, "{calls} reads for 20,000 bytes that had arrived");
    assert_eq!(recv.read(&mut big).await, Ok(None));
    assert_eq!(recv.read(&mut []).await, Ok(Some(0)));

    // read_to_end enforces its limit.
    let mut send = conn.open_uni().await.unwrap();
    send.write_all(&[1u8; 5000]).await.unwrap();
    send.finish().unwrap();
    let mut recv = sconn.accept_uni().await.unwrap();
    assert_eq!(
        recv.read_to_end(4000).await,
        Err(ReadToEndError::TooLong(4000))
    );
}

#[tokio::test]
async fn stream_limit_makes_open_wait() {
    let mut t = TransportConfig::default();
    t.max_concurrent_bidi_streams(2);
    let (_server, _client, sconn, conn) = connected(t).await;
    let mut first = conn.open_bi().await.unwrap();
    let _second = conn.open_bi().await.unwrap();
    // The third waits until the server lets the first end.
    let third = tokio::time::timeout(Duration::from_millis(200), conn.open_bi()).await;
    assert!(third.is_err(), "a third stream opened past the limit of 2");
    first.0.write_all(b"a").await.unwrap();
    first.0.finish().unwrap();
    let (mut s, mut r) = sconn.accept_bi().await.unwrap();
    assert_eq!(r.read_to_end(10).await.unwrap(), b"a");
    s.finish().unwrap();
    assert_eq!(first.1.read_to_end(10).await.unwrap(), b"");
    let third = tokio::time::timeout(Duration::from_secs(5), conn.open_bi()).await;
    assert!(third.is_ok_and(|r| r.is_ok()));
}

/// A stream read one chunk at a time ends with its last chunk: the peer gets the stream's
/// slot back before the reader asks once more only to learn of the end, and that ask, or a
/// `stop`, has nothing left to do.
#[tokio::test]
async fn the_last_chunk_read_ends_the_stream() {
    let mut t = TransportConfig::default();
    t.max_concurrent_uni_streams(1);
    let (_server, _client, sconn, conn) = connected(t).await;
    let mut send = conn.open_uni().await.unwrap();
    send.write_all(b"only chunk").await.unwrap();
    send.finish().unwrap();
    let mut recv = sconn.accept_uni().await.unwrap();
    // Wait for the data and its end to be there, so one read takes both.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let chunk = recv.read_chunk(usize::MAX).await.unwrap();
    assert_eq!(chunk.as_deref(), Some(&b"only chunk"[..]));
    // The limit of one stream: a second opens only once the first is over on the server.
    let second = tokio::time::timeout(Duration::from_secs(5), conn.open_uni()).await;
    assert!(
        second.is_ok_and(|r| r.is_ok()),
        "the stream read to its last chunk still held the peer's only slot"
    );
    assert_eq!(recv.stop(VarInt::from_u32(1)), Err(ReadError::ClosedStream));
    assert_eq!(recv.read_chunk(usize::MAX).await, Ok(None));
}

/// One server socket on `[::]` serves IPv4 and IPv6 clients; IPv4 peers show by their IPv4
/// addresses, and a client on `[::]` reaches an IPv4 address.
#[tokio::test]
async fn a_dual_stack_endpoint_serves_ipv4_and_ipv6() {
    let certs = certs();
    let server = Endpoint::server(
        server_config(&certs, &[b"echo"], TransportConfig::default()),
        "[::]:0".parse().unwrap(),
    )
    .unwrap();
    let port = server.local_addr().port();
    assert!(server.local_addr().is_ipv6());
    let srv = tokio::spawn(async move {
        let mut peers = Vec::new();
        for _ in 0..3 {
            let conn = server.accept().await.unwrap().await.unwrap();
            let (mut send, mut recv) = conn.accept_bi().await.unwrap();
            let data = recv.read_to_end(1 << 16).await.unwrap();
            send.write_all(&data).await.unwrap();
            send.finish().unwrap();
            peers.push(conn.remote_address());
            let _ = conn.closed().await;
        }
        peers
    });
    let targets: [(&str, SocketAddr); 3] = [
        ("127.0.0.1:0", SocketAddr::from(([127, 0, 0, 1], port))),
        ("[::1]:0", format!("[::1]:{port}").parse().unwrap()),
        ("[::]:0", SocketAddr::from(([127, 0, 0, 1], port))),
    ];
    let mut locals = Vec::new();
    for (bind, target) in targets {
        let client = Endpoint::client(bind.parse().unwrap()).unwrap();
        let cc = client_config(&certs, &[b"echo"], TransportConfig::default());
        let conn = client
            .connect_with(cc, target, "localhost")
            .unwrap()
            .await
            .unwrap();
        assert_eq!(
            conn.remote_address(),
            target,
            "the client sees what it dialed"
        );
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(bind.as_bytes()).await.unwrap();
        send.finish().unwrap();
        assert_eq!(recv.read_to_end(1 << 16).await.unwrap(), bind.as_bytes());
        locals.push(client.local_addr().port());
        conn.close(VarInt::from_u32(0), b"");
        client.wait_idle().await;
        assert_eq!(
            conn.remote_address(),
            target,
            "the last address, after the connection is gone"
        );
        assert_eq!(conn.close_reason(), Some(ConnectionError::LocallyClosed));
    }
    let peers = srv.await.unwrap();
    assert_eq!(peers[0], SocketAddr::from(([127, 0, 0, 1], locals[0])));
    assert_eq!(peers[1], format!("[::1]:{}", locals[1]).parse().unwrap());
    // The dual-stack client's IPv4 datagrams reach the server as plain IPv4.
    assert_eq!(peers[2], SocketAddr::from(([127, 0, 0, 1], locals[2])));
}

/// The idle-connection diet: a connection keeps its stream waiters behind one pointer that is
/// allocated only when a task first waits on a stream, and a task waiting for the close does
/// not allocate them.
#[tokio::test]
async fn stream_waiters_are_allocated_only_when_a_stream_is_awaited() {
    let (server, client, cc) = pair(&[b"x"]);
    let addr = server.local_addr();
    let connecting = client.connect_with(cc, addr, "localhost").unwrap();
    let sconn = server.accept().await.unwrap().await.unwrap();
    let conn = connecting.await.unwrap();
    let has_waiters = Connection::has_stream_waiters;
    let closing = {
        let sconn = sconn.clone();
        tokio::spawn(async move { sconn.closed().await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!has_waiters(&sconn) && !has_waiters(&conn));
    // A server task waits for a stream, which then arrives and echoes.
    let echo = {
        let sconn = sconn.clone();
        tokio::spawn(async move {
            let (mut send, mut recv) = sconn.accept_bi().await.unwrap();
            let data = recv.read_to_end(64).await.unwrap();
            send.write_all(&data).await.unwrap();
            send.finish().unwrap();
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(has_waiters(&sconn), "accept_bi waits on the stream waiters");
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(b"ping").await.unwrap();
    send.finish().unwrap();
    assert_eq!(recv.read_to_end(64).await.unwrap(), b"ping");
    echo.await.unwrap();
    conn.close(VarInt::from_u32(0), b"");
    assert!(matches!(
        closing.await.unwrap(),
        ConnectionError::ApplicationClosed { .. }
    ));
}

/// Streams finished and dropped before their acknowledgement (the usual way to send a
/// response) leave nothing behind in the runtime's per-stream records, and neither do streams
/// the peer stops after their handle is gone: a long-lived connection does not grow with the
/// number of streams it carried. A live handle still learns both.
#[tokio::test]
async fn dropped_send_streams_leave_no_records() {
    let (server, client, cc) = pair(&[b"x"]);
    let addr = server.local_addr();
    let connecting = client.connect_with(cc, addr, "localhost").unwrap();
    let sconn = server.accept().await.unwrap().await.unwrap();
    let conn = connecting.await.unwrap();
    let reader = {
        let sconn = sconn.clone();
        tokio::spawn(async move {
            for i in 0..200 {
                let mut recv = sconn.accept_uni().await.unwrap();
                if i % 2 == 0 {
                    assert_eq!(recv.read_to_end(64).await.unwrap(), b"response");
                } else {
                    // Stopped after the client dropped its handle.
                    recv.stop(VarInt::from_u32(5)).unwrap();
                }
            }
        })
    };
    for _ in 0..200 {
        let mut send = conn.open_uni().await.unwrap();
        send.write_all(b"response").await.unwrap();
        send.finish().unwrap();
    }
    reader.await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), conn.flushed())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(conn.send_records(), 0, "records outlived their handles");
    // A live handle is still told: acknowledged, then stopped.
    let mut kept = conn.open_uni().await.unwrap();
    kept.write_all(b"x").await.unwrap();
    kept.finish().unwrap();
    let mut recv = sconn.accept_uni().await.unwrap();
    assert_eq!(recv.read_to_end(8).await.unwrap(), b"x");
    assert_eq!(kept.stopped().await.unwrap(), None);
    let mut stopped = conn.open_uni().await.unwrap();
    stopped.write_all(b"y").await.unwrap();
    let mut recv = sconn.accept_uni().await.unwrap();
    recv.stop(VarInt::from_u32(9)).unwrap();
    assert_eq!(stopped.stopped().await.unwrap(), Some(VarInt::from_u32(9)));
    drop((kept, stopped));
    assert_eq!(conn.send_records(), 0);
}

/// The runtime keeps one `ConnState` per connection in a hash table, idle connections
/// included (`gquic-bench idle`): what only an ended connection needs lives behind a box.
#[test]
fn the_runtime_entry_of_a_connection_stays_small() {
    let size = std::mem::size_of::<super::ConnState>();
    assert!(size <= 96, "ConnState is {size} bytes");
}

/// What an ended connection keeps: the first reason recorded, its last peer address and its
/// statistics, which a later failure of the socket (with no state machine left to ask) does
/// not erase.
#[test]
fn an_ended_connection_keeps_its_reason_last_address_and_stats() {
    let p = crate::connection::tests::established();
    let mut st = ConnState::default();
    assert_eq!(
        (st.error(), st.last_remote(), st.last_stats()),
        (None, None, None)
    );
    st.set_error(ConnectionError::TimedOut);
    st.set_error(ConnectionError::Reset);
    st.detach(Some(&p.client));
    st.detach(None);
    assert_eq!(st.error(), Some(&ConnectionError::TimedOut));
    assert_eq!(st.last_remote(), Some(p.client.remote_address()));
    let stats = st.last_stats().expect("kept");
    assert_eq!(stats.counters, p.client.stats());
    assert!(stats.counters.packets_sent > 0 && stats.rtt > Duration::ZERO);
    assert!(st.handle.is_none());
}

/// On a multi-thread runtime the endpoints hand handshake TLS steps to tasks of their own
/// (several handshakes' key exchanges and signature checks run at once): 48 connections, 16
/// at a time, each echoing 20 KB, all complete intact, and both endpoints counted the steps
/// they handed out. On a current-thread runtime TLS stays in place (no steps).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_run_their_tls_steps_on_every_worker() {
    let (server, client, cc) = pair(&[b"echo"]);
    let addr = server.local_addr();
    let srv = server.clone();
    let accept = tokio::spawn(async move {
        while let Some(connecting) = srv.accept().await {
            tokio::spawn(async move {
                let Ok(conn) = connecting.await else { return };
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    let data = recv.read_to_end(1 << 20).await.unwrap();
                    send.write_all(&data).await.unwrap();
                    send.finish().unwrap();
                }
            });
        }
    });
    let left = Arc::new(std::sync::atomic::AtomicUsize::new(48));
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..16u8 {
        let (client, cc, left) = (client.clone(), cc.clone(), left.clone());
        tasks.spawn(async move {
            while left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                let conn = client
                    .connect_with(cc.clone(), addr, "localhost")
                    .unwrap()
                    .await
                    .unwrap();
                let (mut send, mut recv) = conn.open_bi().await.unwrap();
                let data = vec![t; 20_000];
                send.write_all(&data).await.unwrap();
                send.finish().unwrap();
                assert_eq!(recv.read_to_end(1 << 20).await.unwrap(), data);
                conn.close(0u32.into(), b"");
            }
        });
    }
    let all = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
    })
    .await;
    assert!(all.is_ok(), "every connection completed");
    let (c, s) = (client.stats().tls_jobs, server.stats().tls_jobs);
    assert!(
        c >= 48 && s >= 48,
        "TLS steps handed out: client {c}, server {s}"
    );
    server.close(0u32.into(), b"");
    accept.abort();
    client.wait_idle().await;
}

#[tokio::test]
async fn a_current_thread_runtime_keeps_tls_in_place() {
    let (server, client, cc) = pair(&[b"echo"]);
    let addr = server.local_addr();
    let srv = tokio::spawn(async move {
        let conn = server.accept().await.unwrap().await.unwrap();
        let _ = conn.closed().await;
        server.stats().tls_jobs
    });
    let conn = client
        .connect_with(cc, addr, "localhost")
        .unwrap()
        .await
        .unwrap();
    conn.close(0u32.into(), b"");
    assert_eq!(srv.await.unwrap(), 0);
    assert_eq!(client.stats().tls_jobs, 0);
}

/// On a current-thread runtime every TLS step runs in the driver's turn, so a turn handling
/// the Initials of many handshakes runs long and stops receiving early (`RECV_TIME`); it must
/// come back for the datagrams it left in the socket at once, not when more arrive. Left
/// there, a handshake waits for its client's probe timeout (about a second).
#[tokio::test]
async fn a_turn_cut_short_comes_back_for_the_rest() {
    let (server, client, cc) = pair(&[b"echo"]);
    let addr = server.local_addr();
    let accept = tokio::spawn(async move {
        while let Some(connecting) = server.accept().await {
            tokio::spawn(async move {
                if let Ok(conn) = connecting.await {
                    let _ = conn.closed().await;
                }
            });
        }
    });
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..48 {
        let connecting = client.connect_with(cc.clone(), addr, "localhost").unwrap();
        tasks.spawn(async move {
            let conn = connecting.await.unwrap();
            let took = conn.stats().handshake_duration.unwrap();
            conn.close(0u32.into(), b"");
            took
        });
    }
    let mut slowest = Duration::ZERO;
    while let Some(took) = tasks.join_next().await {
        slowest = slowest.max(took.unwrap());
    }
    // 48 handshakes on loopback take tens of milliseconds; one that waited for a probe
    // timeout took a second or more.
    assert!(
        slowest < Duration::from_millis(800),
        "slowest handshake {slowest:?}"
    );
    accept.abort();
    client.wait_idle().await;
}

/// The stream futures hold the stream and the data, nothing more: a task per stream that
/// awaits them stays small, and spawning it copies little (as `async fn`s `read_to_end` and
/// `write_all` were 112 and 136 bytes, `read` and `write` 96 and 80, and a server's echo task
/// 280; now 184).
#[tokio::test]
async fn stream_futures_stay_small() {
    let (server, client, cc) = pair(&[b"x"]);
    let addr = server.local_addr();
    let conn = client
        .connect_with(cc, addr, "localhost")
        .unwrap()
        .await
        .unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let word = std::mem::size_of::<usize>();
    assert!(std::mem::size_of_val(&recv.read_to_end(100)) <= 5 * word);
    assert!(std::mem::size_of_val(&send.write_all(b"x")) <= 5 * word);
    assert!(std::mem::size_of_val(&send.write(b"x")) <= 5 * word);
    assert!(std::mem::size_of_val(&recv.read_chunk(100)) <= 5 * word);
    let mut buf = [0u8; 8];
    assert!(std::mem::size_of_val(&recv.read(&mut buf)) <= 5 * word);
    let echo = async move {
        if let Ok(data) = recv.read_to_end(100).await {
            let _ = send.write_all(&data).await;
            let _ = send.finish();
        }
    };
    assert!(
        std::mem::size_of_val(&echo) <= 200,
        "{}",
        std::mem::size_of_val(&echo)
    );
}

/// `write_chunks` takes whole chunks and part of the one flow control cuts, `write_all_chunks`
/// the rest; `read_chunks` fills its slots from one look-up and reports the end once.
#[tokio::test]
async fn chunks_are_written_and_read_in_batches() {
    let mut t = TransportConfig::default();
    t.stream_receive_window(16 * 1024, 16 * 1024);
    let (_server, _client, sconn, conn) = connected(t).await;

    // 40 chunks of 1,000 distinct bytes, and an empty one among them.
    let originals: Vec<Bytes> = (0..41u32)
        .map(|i| match i {
            5 => Bytes::new(),
            _ => (0..1000u32).map(|j| (i * 7 + j) as u8).collect(),
        })
        .collect();
    let expected: Vec<u8> = originals.iter().flatten().copied().collect();
    let mut bufs = originals.clone();
    let mut send = conn.open_uni().await.unwrap();
    // The server's 16 KiB stream window takes chunks 0-16 (16,000 bytes and the empty one)
    // and 384 bytes of chunk 17.
    let w = send.write_chunks(&mut bufs).await.unwrap();
    assert_eq!(
        w,
        Written {
            bytes: 16 * 1024,
            chunks: 17
        }
    );
    assert!(bufs[..17].iter().all(Bytes::is_empty));
    assert_eq!(bufs[17], originals[17].slice(384..));
    assert_eq!(bufs[18..], originals[18..]);
    let writer = tokio::spawn(async move {
        send.write_all_chunks(&mut bufs[17..]).await.unwrap();
        assert!(bufs.iter().all(Bytes::is_empty));
        send.finish().unwrap();
        send
    });

    let mut recv = sconn.accept_uni().await.unwrap();
    assert_eq!(recv.read_chunks(&mut []).await, Ok(Some(0)));
    // Give the first 16 KiB time to arrive: one call then takes several packets' data.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut slots = vec![Bytes::new(); 64];
    let first = recv.read_chunks(&mut slots).await.unwrap().unwrap();
    assert!(first >= 2, "one chunk per call: {first}");
    let mut got: Vec<u8> = slots[..first].iter().flatten().copied().collect();
    let mut small = [Bytes::new(), Bytes::new(), Bytes::new()];
    while let Some(n) = recv.read_chunks(&mut small).await.unwrap() {
        assert!((1..=3).contains(&n));
        got.extend(small[..n].iter().flatten());
    }
    assert_eq!(got, expected);
    assert_eq!(recv.read_chunks(&mut small).await, Ok(None));
    let mut send = writer.await.unwrap();
    assert_eq!(send.stopped().await.unwrap(), None);
    assert_eq!(
        send.write_chunks(&mut [Bytes::from_static(b"late")]).await,
        Err(WriteError::ClosedStream)
    );

    // Writes from slices take (and copy) what the 16 KiB stream window allows.
    let mut send = conn.open_uni().await.unwrap();
    assert_eq!(send.write(&[7u8; 40_000]).await, Ok(16 * 1024));
    let mut send2 = conn.open_uni().await.unwrap();
    let slices = [std::io::IoSlice::new(&[1u8; 10_000]); 4];
    assert_eq!(
        tokio::io::AsyncWriteExt::write_vectored(&mut send2, &slices)
            .await
            .unwrap(),
        16 * 1024
    );
    let mut recv = sconn.accept_uni().await.unwrap();
    let mut recv2 = sconn.accept_uni().await.unwrap();
    send.finish().unwrap();
    send2.finish().unwrap();
    assert_eq!(
        recv.read_to_end(1 << 20).await.unwrap(),
        vec![7u8; 16 * 1024]
    );
    assert_eq!(
        recv2.read_to_end(1 << 20).await.unwrap(),
        vec![1u8; 16 * 1024]
    );

    // A reset reaches `read_chunks`, STOP_SENDING reaches `write_chunks`, with their codes.
    let mut send = conn.open_uni().await.unwrap();
    send.write_all_chunks(&mut [Bytes::from_static(b"partial")])
        .await
        .unwrap();
    send.reset(VarInt::from_u32(77)).unwrap();
    let mut recv = sconn.accept_uni().await.unwrap();
    let err = loop {
        match recv.read_chunks(&mut slots).await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("reset stream ended normally"),
            Err(e) => break e,
        }
    };
    assert_eq!(err, ReadError::Reset(VarInt::from_u32(77)));
    let mut send = conn.open_uni().await.unwrap();
    send.write_all_chunks(&mut [Bytes::from_static(b"x")])
        .await
        .unwrap();
    let mut recv = sconn.accept_uni().await.unwrap();
    recv.stop(VarInt::from_u32(9)).unwrap();
    assert_eq!(send.stopped().await.unwrap(), Some(VarInt::from_u32(9)));
    assert_eq!(
        send.write_chunks(&mut [Bytes::from_static(b"y")]).await,
        Err(WriteError::Stopped(VarInt::from_u32(9)))
    );
}

/// A driver whose datagrams have made many tasks ready lets them run before it handles the
/// rest of what arrived with them: the first answers go out while the rest is handled. Here
/// 64 server tasks wait on their streams, and the ends of all 64 arrive in one burst of a
/// few datagrams: the tasks that finish first see fewer of those datagrams handled than
/// the last ones do (all would see the same count if the whole burst were handled before
/// any task ran).
#[tokio::test]
async fn ready_tasks_run_before_the_rest_of_a_burst_is_handled() {
    const STREAMS: usize = 64;
    let (_server, _client, sconn, conn) = connected(TransportConfig::default()).await;
    let mut sends = Vec::new();
    for _ in 0..STREAMS {
        let (mut send, _recv) = conn.open_bi().await.unwrap();
        send.write_all(b"x").await.unwrap();
        sends.push(send);
    }
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..STREAMS {
        let (_send, mut recv) = sconn.accept_bi().await.unwrap();
        let (sconn, seen) = (sconn.clone(), seen.clone());
        tasks.spawn(async move {
            let data = recv.read_to_end(1 << 10).await.unwrap();
            seen.lock()
                .unwrap()
                .push(sconn.stats().counters.packets_received);
            data.len()
        });
    }
    // Every task waits on its stream before the rest comes.
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The rest of all 64, in one go: the client's driver sends it in one burst.
    for send in &mut sends {
        send.write_all(&[0x42; 99]).await.unwrap();
        send.finish().unwrap();
    }
    while let Some(n) = tasks.join_next().await {
        assert_eq!(n.unwrap(), 100);
    }
    let seen = seen.lock().unwrap().clone();
    let (first, last) = (seen[0], seen[STREAMS - 1]);
    assert!(
        first < last,
        "every task ran only after the whole burst was handled: {seen:?}"
    );
}
