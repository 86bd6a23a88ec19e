//! A gquic server bound to a wildcard address answers each client from the address that
//! client sent to (`IP_PKTINFO`). On loopback every 127.0.0.0/8 address is ours, and the
//! kernel's own choice of source for a reply to 127.0.0.1 is 127.0.0.1: a client that dialed
//! 127.0.0.2 drops packets from there (RFC 9000 §9.6; quinn and gquic clients both do).

use super::*;

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_wildcard_gquic_server_answers_from_the_address_each_client_dialed() {
    tokio::time::timeout(TIMEOUT, async {
        let certs = certs();
        let mut config = ServerConfig::new(Arc::new(tls_server(&certs, b"interop"))).unwrap();
        config
            .transport(gquic_transport(Settings::default()))
            .unwrap();
        let server = Endpoint::server(config, "0.0.0.0:0".parse().unwrap()).unwrap();
        let port = server.local_addr().port();
        let (conn_tx, mut conns) = tokio::sync::mpsc::unbounded_channel();
        let ep = server.clone();
        tokio::spawn(async move {
            while let Some(connecting) = ep.accept().await {
                let conn = connecting.await.unwrap();
                serve!(conn.clone());
                conn_tx.send(conn).unwrap();
            }
        });
        // Two quinn clients, each to another of the server's addresses, at once.
        let mut quinn_conns = Vec::new();
        for last in [2u8, 3] {
            let client = quinn::Endpoint::client(localhost()).unwrap();
            let conn = client
                .connect_with(
                    quinn_client_config(&certs, b"interop", Settings::default()),
                    SocketAddr::from(([127, 0, 0, last], port)),
                    "localhost",
                )
                .unwrap()
                .await
                .expect("quinn takes the server's packets");
            assert_eq!(
                conn.remote_address().ip().to_string(),
                format!("127.0.0.{last}")
            );
            quinn_conns.push((client, conn));
        }
        let mut seen = Vec::new();
        for (_, conn) in &quinn_conns {
            echo!(conn, pattern(1 << 20, 7));
            let server_side = conns.recv().await.unwrap();
            seen.push(server_side.local_ip().map(|ip| ip.to_string()));
            // The address the client dialed, port included.
            assert_eq!(server_side.local_address().port(), port);
            assert_eq!(
                Some(server_side.local_address().ip()),
                server_side.local_ip()
            );
        }
        seen.sort();
        assert_eq!(
            seen,
            [Some("127.0.0.2".to_string()), Some("127.0.0.3".to_string())]
        );
        // A gquic client too.
        let client = Endpoint::client(localhost()).unwrap();
        let conn = gquic_connect(&client, &certs, SocketAddr::from(([127, 0, 0, 4], port))).await;
        echo!(conn, pattern(1 << 20, 8));
        let server_side = conns.recv().await.unwrap();
        assert_eq!(server_side.local_ip(), Some([127, 0, 0, 4].into()));
        // A server bound to one address knows no other.
        let bound = gquic_server(&certs, b"interop", Settings::default());
        let ep = bound.clone();
        let accepted = tokio::spawn(async move {
            let conn = ep.accept().await.unwrap().await.unwrap();
            serve!(conn.clone());
            conn
        });
        let conn = gquic_connect(&client, &certs, bound.local_addr()).await;
        echo!(conn, pattern(1000, 9));
        let accepted = accepted.await.unwrap();
        assert_eq!(accepted.local_ip(), None);
        assert_eq!(accepted.local_address(), bound.local_addr());
    })
    .await
    .unwrap();
}
