//! Handshakes whose TLS steps a gquic endpoint hands to tasks of their own (multi-thread
//! runtimes), against quinn: many at once each way, and TLS failures inside a handed-out step
//! closing with the alert's code.

use super::*;

/// gquic clients on a 2-worker runtime: 32 connections to quinn, 8 at a time, each echoing
/// 64 KB; the client endpoint handed its TLS steps out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gquic_clients_hand_tls_steps_out_against_quinn() {
    tokio::time::timeout(TIMEOUT, async {
        let certs = certs();
        let mut server = run_quinn_server(quinn_server(&certs, b"interop", Settings::default()));
        let addr = server.endpoint.local_addr().unwrap();
        let client = Endpoint::client(localhost()).unwrap();
        let config = gquic_client_config(&certs, b"interop", Settings::default());
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..8u8 {
            let (client, config) = (client.clone(), config.clone());
            tasks.spawn(async move {
                for _ in 0..4 {
                    let conn = client
                        .connect_with(config.clone(), addr, "localhost")
                        .unwrap()
                        .await
                        .unwrap();
                    assert_eq!(conn.alpn().as_deref(), Some(&b"interop"[..]));
                    echo!(conn, pattern(64 << 10, u64::from(t)));
                    conn.close(0u32.into(), b"");
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
        for _ in 0..32 {
            assert_eq!(server.handshakes.recv().await.unwrap().unwrap(), b"interop");
        }
        let jobs = client.stats().tls_jobs;
        assert!(jobs >= 32, "TLS steps handed out: {jobs}");
    })
    .await
    .unwrap();
}

/// quinn clients against a gquic server on a 2-worker runtime: 32 connections, 8 at a time,
/// each echoing 64 KB; the server handed its TLS steps out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gquic_server_hands_tls_steps_out_against_quinn_clients() {
    tokio::time::timeout(TIMEOUT, async {
        let certs = certs();
        let mut server = run_gquic_server(gquic_server(&certs, b"interop", Settings::default()));
        let addr = server.endpoint.local_addr();
        let client = quinn::Endpoint::client(localhost()).unwrap();
        let config = quinn_client_config(&certs, b"interop", Settings::default());
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..8u8 {
            let (client, config) = (client.clone(), config.clone());
            tasks.spawn(async move {
                for _ in 0..4 {
                    let conn = client
                        .connect_with(config.clone(), addr, "localhost")
                        .unwrap()
                        .await
                        .unwrap();
                    echo!(conn, pattern(64 << 10, u64::from(t)));
                    conn.close(0u32.into(), b"");
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
        for _ in 0..32 {
            assert_eq!(server.handshakes.recv().await.unwrap().unwrap(), b"interop");
        }
        let jobs = server.endpoint.stats().tls_jobs;
        assert!(jobs >= 32, "TLS steps handed out: {jobs}");
    })
    .await
    .unwrap();
}

/// A TLS failure inside a handed-out step closes with the TLS alert as CRYPTO_ERROR (RFC 9001
/// §4.8): a gquic server refusing quinn's ALPN (no_application_protocol, 120), and a gquic
/// client refusing a certificate from a CA it does not trust.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_failures_in_handed_out_steps_close_with_the_alert() {
    tokio::time::timeout(TIMEOUT, async {
        let server = quinn_alpn_refused_by_gquic().await;
        assert!(server.stats().tls_jobs >= 1, "the step went out");

        let certs = certs();

        let mut quinn_server = run_quinn_server(quinn_server(&certs, b"interop", Settings::default()));
        let client = Endpoint::client(localhost()).unwrap();
        let err = client
            .connect_with(
                gquic_client_config(&super::certs(), b"interop", Settings::default()),
                quinn_server.endpoint.local_addr().unwrap(),
                "localhost",
            )
            .unwrap()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("certificate"), "{err}");
        let quinn_err = quinn_server.handshakes.recv().await.unwrap().unwrap_err();
        assert!(
            matches!(quinn_err, quinn::ConnectionError::ConnectionClosed(ref c) if u64::from(c.error_code) & !0xff == 0x100),
            "quinn saw {quinn_err:?}"
        );
        assert!(client.stats().tls_jobs >= 1, "the step went out");
    })
    .await
    .unwrap();
}
