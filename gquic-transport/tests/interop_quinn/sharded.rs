//! Endpoints on several sockets with quinn: a server spread over a `SO_REUSEPORT` group (one
//! shard per socket), datagrams that land on the wrong shard after a client moves, and a
//! client spreading its connections over several local ports.

use super::*;

/// A gquic server on `sockets` `SO_REUSEPORT` sockets that hands out its connections.
fn sharded_server(
    certs: &Certs,
    sockets: usize,
) -> (Endpoint, tokio::sync::mpsc::UnboundedReceiver<Connection>) {
    let config = ServerConfig::new(Arc::new(tls_server(certs, b"interop"))).unwrap();
    let ep = Endpoint::server_reuseport(config, localhost(), sockets).unwrap();
    assert_eq!(ep.sockets(), sockets);
    let addrs = ep.local_addrs();
    assert!(
        addrs.iter().all(|a| *a == addrs[0]),
        "one address: {addrs:?}"
    );
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let accept = ep.clone();
    tokio::spawn(async move {
        while let Some(connecting) = accept.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                if let Ok(conn) = connecting.await {
                    serve!(conn.clone());
                    let _ = tx.send(conn);
                }
            });
        }
    });
    (ep, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quinn_clients_are_spread_over_a_reuseport_group() {
    tokio::time::timeout(TIMEOUT, async {
        let certs = certs();
        let (server, mut conns) = sharded_server(&certs, 2);
        let addr = server.local_addr();
        let mut clients = JoinSet::new();
        for i in 0..16u64 {
            let config = quinn_client_config(&certs, b"interop", Settings::default());
            clients.spawn(async move {
                // One endpoint (source port) each: the kernel hashes the 4-tuple.
                let client = quinn::Endpoint::client(localhost()).unwrap();
                let conn = client
                    .connect_with(config, addr, "localhost")
                    .unwrap()
                    .await
                    .unwrap();
                echo!(conn, pattern(256 * 1024, 300 + i));
                uni!(conn, pattern(10_000, 400 + i));
                conn.close(0u32.into(), b"done");
                client.wait_idle().await;
            });
        }
        while let Some(r) = clients.join_next().await {
            r.unwrap();
        }
        let mut ids = std::collections::HashSet::new();
        while let Ok(c) = conns.try_recv() {
            ids.insert(c.stable_id());
        }
        // One id per connection across the shards (servers key their connections by it).
        assert_eq!(ids.len(), 16, "{ids:?}");
        let per_socket = server.socket_stats();
        let accepted: Vec<u64> = per_socket.iter().map(|s| s.accepted).collect();
        assert_eq!(accepted.iter().sum::<u64>(), 16, "{per_socket:?}");
        // All 16 on one socket would happen with probability 2^-15 if the kernel spreads
        // them (it hashes the 4-tuple).
        assert!(accepted.iter().all(|&a| a > 0), "{accepted:?}");
        assert_eq!(server.stats().accepted, 16);
        assert_eq!(server.stats().stateless_resets, 0);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moving_quinn_client_is_handed_to_its_shard() {
    tokio::time::timeout(TIMEOUT, async {
        let certs = certs();
        let (server, mut conns) = sharded_server(&certs, 2);
        let client = quinn::Endpoint::client(localhost()).unwrap();
        let conn = client
            .connect_with(
                quinn_client_config(&certs, b"interop", Settings::default()),
                server.local_addr(),
                "localhost",
            )
            .unwrap()
            .await
            .unwrap();
        let server_conn = conns.recv().await.unwrap();
        echo!(conn, pattern(64 * 1024, 500));
        // Each move gives a new 4-tuple, which the kernel hashes to either socket: half the
        // moves land on the other shard, which must hand the datagrams on (a shard that
        // answered them with a stateless reset would kill the connection).
        let mut moves = 0;
        while server.stats().tossed == 0 {
            assert!(moves < 30, "30 moves and none reached the other socket");
            moves += 1;
            let socket = std::net::UdpSocket::bind(localhost()).unwrap();
            let after = socket.local_addr().unwrap();
            client.rebind(socket).unwrap();
            echo!(conn, pattern(64 * 1024, 500 + moves));
            assert_eq!(
                server_conn.remote_address(),
                after,
                "gquic follows the client"
            );
        }
        // Keep going on the path that crosses shards.
        echo!(conn, pattern(1 << 20, 600));
        uni!(conn, pattern(100_000, 601));
        let stats = server.stats();
        assert!(stats.tossed > 0);
        assert_eq!(stats.stateless_resets, 0, "{stats:?}");
        assert!(conn.close_reason().is_none(), "{:?}", conn.close_reason());
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gquic_client_spreads_connections_over_its_sockets() {
    tokio::time::timeout(TIMEOUT, async {
        let certs = certs();
        let server = quinn_server(&certs, b"interop", Settings::default());
        let accept = server.clone();
        tokio::spawn(async move {
            while let Some(incoming) = accept.accept().await {
                tokio::spawn(async move {
                    if let Ok(conn) = incoming.await {
                        serve!(conn);
                    }
                });
            }
        });
        let sockets: Vec<std::net::UdpSocket> = (0..3)
            .map(|_| std::net::UdpSocket::bind(localhost()).unwrap())
            .collect();
        let ports: Vec<SocketAddr> = sockets.iter().map(|s| s.local_addr().unwrap()).collect();
        let provider = provider();
        let client = Endpoint::new_sharded(
            gquic_transport::endpoint::EndpointConfig::new(provider, [7; 32]),
            None,
            sockets,
        )
        .unwrap();
        assert_eq!(client.local_addrs(), ports);
        let mut conns = Vec::new();
        for _ in 0..6 {
            conns.push(gquic_connect(&client, &certs, server.local_addr().unwrap()).await);
        }
        let mut per_port = std::collections::HashMap::new();
        for (i, conn) in conns.iter().enumerate() {
            *per_port.entry(conn.local_address()).or_insert(0) += 1;
            echo!(conn, pattern(128 * 1024, 700 + i as u64));
        }
        // The least loaded socket takes each new connection: two each.
        assert_eq!(per_port.len(), 3, "{per_port:?}");
        assert!(per_port.values().all(|&n| n == 2), "{per_port:?}");
        assert_eq!(client.open_connections(), 6);
        // A rebind needs one socket.
        let err = client
            .rebind(std::net::UdpSocket::bind(localhost()).unwrap())
            .unwrap_err();
        assert!(matches!(
            err,
            gquic_transport::runtime::EndpointError::RebindSharded(3)
        ));
        client.close(0u32.into(), b"bye");
        client.wait_idle().await;
        assert_eq!(client.open_connections(), 0);
    })
    .await
    .unwrap();
}
