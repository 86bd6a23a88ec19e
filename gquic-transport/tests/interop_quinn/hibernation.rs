//! Hibernation of idle gquic server connections, with a quinn client: the connection is
//! packed while quiet and carries on when quinn comes back (data both ways, a key update,
//! the congestion window restarted).

use super::*;

/// Echoes every bidirectional stream of one connection; after the third, waits for the
/// connection to go quiet and then sends on a stream of its own. Reports the connection's
/// counters at the end.
fn echo_then_speak(endpoint: Endpoint) -> tokio::sync::oneshot::Receiver<(u64, u64)> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let conn = endpoint.accept().await.unwrap().await.unwrap();
        for _ in 0..3 {
            let (mut send, mut recv) = conn.accept_bi().await.unwrap();
            let data = recv.read_to_end(64 << 20).await.unwrap();
            send.write_all(&data).await.unwrap();
            send.finish().unwrap();
            let _ = send.stopped().await;
        }
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(
            endpoint.hibernating_connections(),
            1,
            "asleep before speaking"
        );
        // Statistics and the handshake's outcome are read from the packed connection, which
        // stays asleep.
        let asleep = conn.stats();
        assert!(asleep.counters.packets_received > 0 && asleep.rtt > Duration::ZERO);
        assert_eq!(conn.alpn().as_deref(), Some(&b"interop"[..]));
        assert_eq!(conn.server_name().as_deref(), Some("localhost"));
        assert!(conn.remote_address().port() != 0 && conn.version().is_some());
        // Nor does waiting for a stream or a datagram: a sleeping connection has none.
        let wait = Duration::from_millis(50);
        assert!(tokio::time::timeout(wait, conn.accept_uni()).await.is_err());
        assert!(tokio::time::timeout(wait, conn.read_datagram())
            .await
            .is_err());
        assert_eq!(
            endpoint.hibernating_connections(),
            1,
            "reading left it asleep"
        );
        let mut uni = conn.open_uni().await.unwrap();
        uni.write_all(b"woken by the application").await.unwrap();
        uni.finish().unwrap();
        let _ = uni.stopped().await;
        let stats = conn.stats().counters;
        let _ = tx.send((stats.key_updates, stats.packets_lost));
    });
    rx
}

#[tokio::test]
async fn quinn_client_finds_a_hibernated_gquic_connection_awake() {
    tokio::time::timeout(TIMEOUT, async {
        let certs = certs();
        let endpoint = gquic_server(&certs, b"interop", Settings::default());
        let addr = endpoint.local_addr();
        let report = echo_then_speak(endpoint.clone());
        let mut client = quinn::Endpoint::client(localhost()).unwrap();
        client.set_default_client_config(quinn_client_config(
            &certs,
            b"interop",
            Settings::default(),
        ));
        let conn = client.connect(addr, "localhost").unwrap().await.unwrap();
        for round in 0..3u64 {
            if round > 0 {
                // A quiet while: the server connection hibernates.
                tokio::time::sleep(Duration::from_millis(2500)).await;
                assert_eq!(
                    endpoint.hibernating_connections(),
                    1,
                    "round {round}: asleep"
                );
            }
            if round == 2 {
                // RFC 9001 §6: keys updated across the sleep (from the kept secrets).
                conn.force_key_update();
            }
            let data = pattern(2 << 20, round);
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            let writer = async {
                send.write_all(&data).await.unwrap();
                send.finish().unwrap();
            };
            let (_, back) = tokio::join!(writer, recv.read_to_end(64 << 20));
            assert_eq!(
                Sha256::digest(back.unwrap()),
                Sha256::digest(&data),
                "round {round}: the echo came back intact"
            );
            assert_eq!(
                endpoint.hibernating_connections(),
                0,
                "round {round}: awake"
            );
        }
        // The server wakes itself to send.
        let mut uni = conn.accept_uni().await.unwrap();
        let got = uni.read_to_end(1024).await.unwrap();
        assert_eq!(&got[..], b"woken by the application");
        let (key_updates, _lost) = report.await.unwrap();
        assert!(
            key_updates >= 1,
            "the key update after the sleep: {key_updates}"
        );
        conn.close(0u32.into(), b"done");
    })
    .await
    .unwrap();
}

/// `TransportConfig::keep_alive_interval` (RFC 9000 §10.1.2): a gquic client's PINGs keep a
/// quiet connection to a quinn server with a 3 s idle timeout open for 7 s, and it still
/// carries data.
#[tokio::test]
async fn gquic_keep_alive_outlives_a_quinn_idle_timeout() {
    tokio::time::timeout(TIMEOUT, async {
        let certs = certs();
        let s = Settings {
            idle: Duration::from_secs(3),
            ..Settings::default()
        };
        let server = run_quinn_server(quinn_server(&certs, b"interop", s));
        let mut t = (*gquic_transport(s)).clone();
        t.keep_alive_interval(Some(Duration::from_secs(1)));
        let mut config = ClientConfig::new(Arc::new(tls_client(&certs, b"interop"))).unwrap();
        config.transport(Arc::new(t)).unwrap();
        let client = Endpoint::client(localhost()).unwrap();
        let addr = server.endpoint.local_addr().unwrap();
        let conn = client
            .connect_with(config, addr, "localhost")
            .unwrap()
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(7)).await;
        assert!(conn.close_reason().is_none(), "{:?}", conn.close_reason());
        echo!(conn, pattern(64 << 10, 5));
    })
    .await
    .unwrap();
}

/// A gquic client hibernates too, once its TLS session is finished (after quinn's session
/// tickets came): echoes after each sleep, and a second connection resumes with the ticket it
/// stored.
#[tokio::test]
async fn a_hibernated_gquic_client_carries_on_with_a_quinn_server() {
    tokio::time::timeout(TIMEOUT, async {
        let (client, conn, server) = gquic_to_quinn(Settings::default()).await;
        for round in 0..2u64 {
            tokio::time::sleep(Duration::from_millis(2500)).await;
            assert_eq!(client.hibernating_connections(), 1, "round {round}: asleep");
            // The name it dialed is kept beside the packed bytes, and read without waking it.
            assert_eq!(conn.server_name().as_deref(), Some("localhost"));
            assert_eq!(
                client.hibernating_connections(),
                1,
                "round {round}: still asleep"
            );
            echo!(conn, pattern(1 << 20, round));
            assert_eq!(client.hibernating_connections(), 0, "round {round}: awake");
        }
        assert_eq!(conn.is_resumed(), Some(false));
        let again = client
            .connect(server.endpoint.local_addr().unwrap(), "localhost")
            .unwrap()
            .await
            .unwrap();
        assert_eq!(again.is_resumed(), Some(true), "the ticket was stored");
        echo!(again, pattern(4096, 9));
    })
    .await
    .unwrap();
}
