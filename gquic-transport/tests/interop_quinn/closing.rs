//! Closing with quinn (RFC 9000 §10.2): both ends closing at once.

use super::*;

/// gquic and quinn close the same connection at the same moment, through a proxy that holds
/// every datagram 2-11 ms, so each CONNECTION_CLOSE reaches an end that is closing itself.
/// gquic takes quinn's as the peer closing too and drains (§10.2.2): its own close is the only
/// packet it sends. Before, it answered quinn's close with another.
#[tokio::test]
async fn gquic_and_quinn_closing_at_once() {
    tokio::time::timeout(TIMEOUT, async {
        let certs = certs();
        let endpoint = quinn_server(&certs, b"interop", Settings::default());
        let addr = endpoint.local_addr().unwrap();
        let (tx, mut accepted) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                if let Ok(conn) = incoming.await {
                    let _ = tx.send(conn);
                }
            }
        });
        let hold = Impairment {
            loss: 0,
            reorder: 1000,
            corrupt: 0,
            duplicate: 0,
        };
        let proxy = Proxy::start_with(addr, 0x5eed_c105, hold).await;
        let client = Endpoint::client(localhost()).unwrap();
        for round in 0..3u32 {
            let conn = gquic_connect(&client, &certs, proxy.addr).await;
            let quinn_conn = accepted.recv().await.unwrap();
            // Both handshakes confirmed and everything acknowledged.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let before = conn.stats().counters.packets_sent;
            conn.close(VarInt::from_u32(1), b"gquic");
            quinn_conn.close(quinn::VarInt::from_u32(2), b"quinn");
            client.wait_idle().await;
            let sent = conn.stats().counters.packets_sent - before;
            assert_eq!(
                sent, 1,
                "round {round}: gquic sent {sent} packets after its close"
            );
            assert_eq!(conn.close_reason(), Some(ConnectionError::LocallyClosed));
            assert!(matches!(
                quinn_conn.closed().await,
                quinn::ConnectionError::LocallyClosed
            ));
        }
    })
    .await
    .unwrap();
}
