//! TLS-level transport features with quinn: 0-RTT (RFC 9001 §4.6), key update (§6), Retry
//! (RFC 9000 §8.1) and ChaCha20-only TLS.

use super::*;

// ---------------------------------------------------------------------------------------
// 0-RTT (RFC 9001 §4.6) in both directions
// ---------------------------------------------------------------------------------------

/// A quinn server that accepts early data (rustls needs 0xffffffff for QUIC).
fn quinn_server_0rtt(certs: &Certs) -> QuinnServer {
    let mut tls = tls_server(certs, b"interop");
    tls.max_early_data_size = u32::MAX;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
    let config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    run_quinn_server(quinn::Endpoint::server(config, localhost()).unwrap())
}

/// Opens a stream in 0-RTT, sends `data` and checks the echo.
async fn early_echo(conn: &Connection, data: Bytes) {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&data).await.unwrap();
    send.finish().unwrap();
    let back = recv.read_to_end(64 << 20).await.unwrap();
    assert_eq!(Sha256::digest(&back), Sha256::digest(&data), "echo differs");
}

#[tokio::test]
async fn gquic_client_quinn_server_0rtt_accepted_then_rejected_and_resent() {
    tokio::time::timeout(TIMEOUT, async {
        let certs = certs();
        let server = quinn_server_0rtt(&certs);
        let client = Endpoint::client(localhost()).unwrap();
        let mut config = gquic_client_config(&certs, b"interop", Settings::default());
        config.enable_0rtt(true);
        client.set_default_client_config(config);
        let addr = server.endpoint.local_addr().unwrap();

        let first = client.connect(addr, "localhost").unwrap();
        let first = match first.into_0rtt() {
            Ok(_) => panic!("no ticket yet: no 0-RTT"),
            Err(connecting) => connecting.await.unwrap(),
        };
        echo!(first, pattern(1000, 1));
        assert_eq!(first.zero_rtt_accepted(), Some(false));
        first.close(VarInt::from_u32(0), b"");

        // Resumed: the request goes in 0-RTT and quinn accepts it.
        let (conn, accepted) = client
            .connect(addr, "localhost")
            .unwrap()
            .into_0rtt()
            .expect("a ticket with early data");
        assert!(conn.is_0rtt());
        early_echo(&conn, pattern(100_000, 2)).await;
        assert!(accepted.await, "quinn accepted 0-RTT");
        assert_eq!(conn.zero_rtt_accepted(), Some(true));
        conn.close(VarInt::from_u32(0), b"");

        // Another quinn server knows nothing of the ticket: 0-RTT is rejected and the data is
        // sent again in 1-RTT, unseen by the application.
        let other = quinn_server_0rtt(&certs);
        let addr = other.endpoint.local_addr().unwrap();
        let (conn, accepted) = client
            .connect(addr, "localhost")
            .unwrap()
            .into_0rtt()
            .expect("the client still holds a ticket for localhost");
        early_echo(&conn, pattern(100_000, 3)).await;
        assert!(!accepted.await, "the other server rejects 0-RTT");
        echo!(conn, pattern(5000, 4));
    })
    .await
    .unwrap();
}

/// A gquic echo server with 0-RTT on, using connections before their handshake completes;
/// reports, per stream, whether it came in 0-RTT (seen two ways).
fn gquic_0rtt_echo_server(
    certs: &Certs,
) -> (
    Endpoint,
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<(bool, bool)>,
) {
    let mut config = ServerConfig::new(Arc::new(tls_server(certs, b"interop"))).unwrap();
    config.enable_0rtt(true).unwrap();
    let endpoint = Endpoint::server(config, localhost()).unwrap();
    let addr = endpoint.local_addr();
    let (tx, early) = tokio::sync::mpsc::unbounded_channel();
    let ep = endpoint.clone();
    tokio::spawn(async move {
        while let Some(connecting) = ep.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut connecting = connecting;
                connecting.handshake_data().await.unwrap();
                let (conn, _accepted) = connecting.into_0rtt().expect("servers always can");
                assert_eq!(conn.alpn().as_deref(), Some(&b"interop"[..]));
                assert_eq!(conn.server_name().as_deref(), Some("localhost"));
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    let data = recv.read_to_end(64 << 20).await.unwrap();
                    let _ = tx.send((recv.is_0rtt(), conn.is_0rtt_stream(recv.id())));
                    send.write_all(&data).await.unwrap();
                    send.finish().unwrap();
                }
            });
        }
    });
    (endpoint, addr, early)
}

#[tokio::test]
async fn quinn_client_gquic_server_0rtt_accepted_and_seen_as_early() {
    tokio::time::timeout(TIMEOUT, async {
        let certs = certs();
        let (_endpoint, addr, mut early) = gquic_0rtt_echo_server(&certs);

        let mut tls = tls_client(&certs, b"interop");
        tls.enable_early_data = true;
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
        let mut client = quinn::Endpoint::client(localhost()).unwrap();
        client.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));

        let first = client.connect(addr, "localhost").unwrap().await.unwrap();
        echo!(first, pattern(1000, 5));
        assert_eq!(early.recv().await, Some((false, false)), "a full handshake");
        first.close(0u32.into(), b"");

        let (conn, accepted) = client
            .connect(addr, "localhost")
            .unwrap()
            .into_0rtt()
            .expect("quinn has a ticket with early data");
        echo!(conn, pattern(50_000, 6));
        assert!(accepted.await, "gquic accepted quinn's 0-RTT");
        assert_eq!(
            early.recv().await,
            Some((true, true)),
            "the server saw the stream arrive in 0-RTT"
        );
        // A stream opened after the handshake is not early.
        echo!(conn, pattern(1000, 7));
        assert_eq!(early.recv().await, Some((false, false)));
        conn.close(0u32.into(), b"");

        // Another gquic server knows nothing of the ticket: it rejects quinn's 0-RTT. quinn
        // fails the early stream with ZeroRttRejected (its API leaves resending to the
        // application), the application sends again in 1-RTT, and the server never saw early
        // data.
        let (_other, other_addr, mut other_early) = gquic_0rtt_echo_server(&certs);
        let (conn, accepted) = client
            .connect(other_addr, "localhost")
            .unwrap()
            .into_0rtt()
            .expect("quinn still holds a ticket for localhost");
        let data = pattern(50_000, 8);
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        let _ = send.write_all(&data).await;
        let _ = send.finish();
        assert!(!accepted.await, "the other gquic server rejected 0-RTT");
        assert!(matches!(
            recv.read_to_end(1 << 20).await,
            Err(quinn::ReadToEndError::Read(
                quinn::ReadError::ZeroRttRejected
            ))
        ));
        echo!(conn, data);
        assert_eq!(other_early.recv().await, Some((false, false)));
    })
    .await
    .unwrap();
}

// ---------------------------------------------------------------------------------------
// Key update (RFC 9001 §6), initiated by each side during a 3 MiB transfer
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn gquic_client_updates_keys_with_quinn_during_3mib() {
    tokio::time::timeout(TIMEOUT, async {
        let certs = certs();
        let server = run_quinn_server(quinn_server(&certs, b"interop", Settings::default()));
        let client = Endpoint::client(localhost()).unwrap();
        let mut transport = TransportConfig::default();
        transport.key_update_interval(300);
        let mut config = ClientConfig::new(Arc::new(tls_client(&certs, b"interop"))).unwrap();
        config.transport(Arc::new(transport)).unwrap();
        client.set_default_client_config(config);
        let conn = client
            .connect(server.endpoint.local_addr().unwrap(), "localhost")
            .unwrap()
            .await
            .unwrap();
        echo!(conn, pattern(3 << 20, 11));
        let updates = conn.stats().counters.key_updates;
        assert!(updates >= 3, "quinn followed {updates} key updates");
        // And one on demand, after which data still flows.
        tokio::time::sleep(Duration::from_millis(50)).await;
        conn.force_key_update().unwrap();
        echo!(conn, pattern(100_000, 12));
        assert!(conn.stats().counters.key_updates > updates);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn quinn_client_updates_keys_with_gquic_during_3mib() {
    tokio::time::timeout(TIMEOUT, async {
        let certs = certs();
        let endpoint = gquic_server(&certs, b"interop", Settings::default());
        let addr = endpoint.local_addr();
        let (tx, mut stats) = tokio::sync::mpsc::unbounded_channel();
        let ep = endpoint.clone();
        tokio::spawn(async move {
            let conn = ep.accept().await.unwrap().await.unwrap();
            let (mut send, mut recv) = conn.accept_bi().await.unwrap();
            let data = recv.read_to_end(64 << 20).await.unwrap();
            send.write_all(&data).await.unwrap();
            send.finish().unwrap();
            let _ = send.stopped().await;
            let _ = tx.send(conn.stats().counters.key_updates);
        });
        let mut client = quinn::Endpoint::client(localhost()).unwrap();
        client.set_default_client_config(quinn_client_config(
            &certs,
            b"interop",
            Settings::default(),
        ));
        let conn = client.connect(addr, "localhost").unwrap().await.unwrap();
        let data = pattern(3 << 20, 13);
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        let writer = {
            let (data, conn) = (data.clone(), conn.clone());
            async move {
                // quinn updates its keys every 512 KiB (it ignores a request while it still
                // keeps the previous keys, about three PTOs, hence the pauses).
                for chunk in data.chunks(512 << 10) {
                    send.write_all(chunk).await.unwrap();
                    conn.force_key_update();
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                send.finish().unwrap();
            }
        };
        let (_, back) = tokio::join!(writer, recv.read_to_end(64 << 20));
        assert_eq!(Sha256::digest(back.unwrap()), Sha256::digest(&data));
        let updates = stats.recv().await.unwrap();
        assert!(
            updates >= 2,
            "gquic followed {updates} of quinn's key updates"
        );
    })
    .await
    .unwrap();
}

// ---------------------------------------------------------------------------------------
// Retry (RFC 9000 §8.1.2) in both directions, and NEW_TOKEN
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn quinn_client_follows_gquic_retry() {
    tokio::time::timeout(TIMEOUT, async {
        let certs = certs();
        let mut config = ServerConfig::new(Arc::new(tls_server(&certs, b"interop"))).unwrap();
        config.retry(gquic_transport::RetryPolicy::Always);
        let server = run_gquic_server(Endpoint::server(config, localhost()).unwrap());
        let mut client = quinn::Endpoint::client(localhost()).unwrap();
        client.set_default_client_config(quinn_client_config(
            &certs,
            b"interop",
            Settings::default(),
        ));
        let conn = client
            .connect(server.endpoint.local_addr(), "localhost")
            .unwrap()
            .await
            .unwrap();
        echo!(conn, pattern(200_000, 31));
        assert!(server.endpoint.stats().retries >= 1, "gquic sent a Retry");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn gquic_client_follows_quinn_retry() {
    tokio::time::timeout(TIMEOUT, async {
        let certs = certs();
        let endpoint = quinn_server(&certs, b"interop", Settings::default());
        let ep = endpoint.clone();
        let retried = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = retried.clone();
        tokio::spawn(async move {
            while let Some(incoming) = ep.accept().await {
                if !incoming.remote_address_validated() {
                    count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    incoming.retry().unwrap();
                    continue;
                }
                let conn = incoming.await.unwrap();
                serve!(conn);
            }
        });
        let client = Endpoint::client(localhost()).unwrap();
        client.set_default_client_config(gquic_client_config(
            &certs,
            b"interop",
            Settings::default(),
        ));
        let conn = client
            .connect(endpoint.local_addr().unwrap(), "localhost")
            .unwrap()
            .await
            .unwrap();
        echo!(conn, pattern(200_000, 32));
        assert!(retried.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    })
    .await
    .unwrap();
}

// ---------------------------------------------------------------------------------------
// ChaCha20-Poly1305 only (Initial packets still use AES-128-GCM, RFC 9001 §5.2)
// ---------------------------------------------------------------------------------------

fn chacha_only() -> Arc<rustls::crypto::CryptoProvider> {
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    p.cipher_suites
        .retain(|s| s.suite() == rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256);
    Arc::new(p)
}

#[tokio::test]
async fn chacha20_only_both_ways() {
    tokio::time::timeout(TIMEOUT, async {
        let certs = certs();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(certs.cert.clone()).unwrap();
        let mut tls = rustls::ClientConfig::builder_with_provider(chacha_only())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"interop".to_vec()];
        let config = ClientConfig::new(Arc::new(tls)).unwrap();

        // gquic client (ChaCha20 only) -> quinn server.
        let server = run_quinn_server(quinn_server(&certs, b"interop", Settings::default()));
        let client = Endpoint::client(localhost()).unwrap();
        let conn = client
            .connect_with(config, server.endpoint.local_addr().unwrap(), "localhost")
            .unwrap()
            .await
            .unwrap();
        assert_eq!(
            conn.cipher_suite(),
            Some(rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256)
        );
        echo!(conn, pattern(1 << 20, 51));

        // quinn client (ChaCha20 only) -> gquic server.
        let server = run_gquic_server(gquic_server(&certs, b"interop", Settings::default()));
        let mut tls = rustls::ClientConfig::builder_with_provider(chacha_only())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"interop".to_vec()];
        // quinn needs the Initial suite given separately when TLS does not offer it.
        let initial = rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256
            .tls13()
            .and_then(|s| s.quic_suite())
            .unwrap();
        let crypto =
            quinn::crypto::rustls::QuicClientConfig::with_initial(Arc::new(tls), initial).unwrap();
        let mut client = quinn::Endpoint::client(localhost()).unwrap();
        client.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
        let conn = client
            .connect(server.endpoint.local_addr(), "localhost")
            .unwrap()
            .await
            .unwrap();
        echo!(conn, pattern(1 << 20, 52));
    })
    .await
    .unwrap();
}
