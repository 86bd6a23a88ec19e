//! WebTransport over gquic-hyper, client and server: several sessions on one connection next
//! to ordinary requests, and across connections; streams both ways, datagrams, close codes,
//! refusal.
#![allow(clippy::disallowed_methods)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gquic_hyper::client::SendRequest;
use gquic_hyper::webtransport::{Session, SessionError};
use gquic_transport::runtime::Endpoint;
use gquic_transport::ServerConfig;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::service::service_fn;
use support::*;
use tokio::sync::mpsc;

const TIMEOUT: Duration = Duration::from_secs(60);

/// The echo service every session gets (the behaviour `examples/webtransport` has), plus a
/// server-opened bidirectional stream saying hello.
async fn echo(session: Session) {
    if let Ok((mut s, _r)) = session.open_bi().await {
        let _ = s
            .write_all(format!("hello {}", session.id()).as_bytes())
            .await;
        let _ = s.finish();
    }
    loop {
        tokio::select! {
            bi = session.accept_bi() => {
                let Ok((mut s, mut r)) = bi else { break };
                tokio::spawn(async move {
                    while let Ok(Some(chunk)) = r.read_chunk(usize::MAX).await {
                        if s.write_chunk(chunk).await.is_err() {
                            return;
                        }
                    }
                    let _ = s.finish();
                });
            }
            uni = session.accept_uni() => {
                let Ok(mut r) = uni else { break };
                let session = session.clone();
                tokio::spawn(async move {
                    let Ok(data) = r.read_to_end(1 << 20).await else { return };
                    if let Ok(mut s) = session.open_uni().await {
                        let _ = s.write_all(&data).await;
                        let _ = s.finish();
                    }
                });
            }
            d = session.read_datagram() => {
                let Ok(d) = d else { break };
                let _ = session.send_datagram(d);
            }
        }
    }
}

/// Serves `app` plus WebTransport at `/wt` (echo), `/wt-close` (closes at once with 42
/// "bye") and `/wt-report` (sends why the session ended to `ended`); `/wt-refuse` answers 403.
async fn server(ended: mpsc::UnboundedSender<SessionError>) -> (std::net::SocketAddr, Certs) {
    let (addr, certs, _handles) = server_with_handles(ended).await;
    (addr, certs)
}

/// [`server`], also handing out each connection's shutdown handle; `/wt-drain` sessions
/// close with 99 "shutting down" once asked to drain.
async fn server_with_handles(
    ended: mpsc::UnboundedSender<SessionError>,
) -> (
    std::net::SocketAddr,
    Certs,
    mpsc::UnboundedReceiver<gquic_hyper::server::ShutdownHandle>,
) {
    let (handles_tx, handles) = mpsc::unbounded_channel();
    let certs = certs();
    let server = Endpoint::server(
        ServerConfig::new(Arc::new(tls_server(&certs))).unwrap(),
        localhost(),
    )
    .unwrap();
    let addr = server.local_addr();
    let seen = Arc::new(Seen::default());
    tokio::spawn(async move {
        while let Some(connecting) = server.accept().await {
            let Ok(conn) = connecting.await else { continue };
            let seen = seen.clone();
            let ended = ended.clone();
            let service = service_fn(move |mut req: Request<gquic_hyper::Incoming>| {
                let seen = seen.clone();
                let ended = ended.clone();
                async move {
                    let path = req.uri().path().to_owned();
                    if req.method() != http::Method::CONNECT {
                        return app(req, seen).await;
                    }
                    let mut res = Response::new(full(""));
                    if path == "/wt-refuse" {
                        *res.status_mut() = StatusCode::FORBIDDEN;
                        return Ok(res);
                    }
                    let on = gquic_hyper::webtransport::on(req.extensions_mut())
                        .expect("a WebTransport CONNECT carries a pending session");
                    tokio::spawn(async move {
                        let session = on.await.expect("session after the 200");
                        match path.as_str() {
                            "/wt-close" => session.close(42, "bye"),
                            "/wt-drain" => {
                                session.draining().await;
                                session.close(99, "shutting down");
                            }
                            "/wt-report" => {
                                let _ = ended.send(session.closed().await);
                            }
                            _ => echo(session).await,
                        }
                    });
                    Ok(res)
                }
            });
            let served = gquic_hyper::server::Builder::new()
                .enable_webtransport(true)
                .serve_connection(conn, service);
            let _ = handles_tx.send(served.shutdown_handle());
            tokio::spawn(served);
        }
    });
    (addr, certs, handles)
}

async fn client(
    endpoint: &Endpoint,
    addr: std::net::SocketAddr,
    certs: &Certs,
) -> SendRequest<Body> {
    let builder = gquic_hyper::client::Builder::new().enable_webtransport(true);
    h3_client(endpoint, addr, certs, builder).await
}

fn url(addr: std::net::SocketAddr, path: &str) -> http::Uri {
    format!("https://localhost:{}{path}", addr.port())
        .parse()
        .unwrap()
}

/// Every echo of `examples/webtransport`'s service, on one session.
async fn exercise(session: &Session, tag: u64) {
    // The server's own bidirectional stream.
    let (_s, mut r) = session.accept_bi().await.unwrap();
    let hello = r.read_to_end(1024).await.unwrap();
    assert_eq!(hello, format!("hello {}", session.id()).as_bytes());

    // Bidirectional echo of 200 KiB, FIN after ours.
    let data = pattern(200 * 1024, tag);
    let (mut s, mut r) = session.open_bi().await.unwrap();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        s.write_all(&sent).await.unwrap();
        s.finish().unwrap();
    });
    let echoed = r.read_to_end(1 << 20).await.unwrap();
    writer.await.unwrap();
    assert_eq!(echoed, data, "bidi echo of session {}", session.id());

    // Unidirectional: the same bytes come back on a server-opened uni stream.
    let msg = format!("ping-uni-{tag}");
    let mut s = session.open_uni().await.unwrap();
    s.write_all(msg.as_bytes()).await.unwrap();
    s.finish().unwrap();
    let mut r = session.accept_uni().await.unwrap();
    assert_eq!(r.read_to_end(1024).await.unwrap(), msg.as_bytes());

    // Datagrams (unreliable: resend until the echo comes).
    let msg = Bytes::from(format!("ping-dgram-{tag}"));
    assert!(session.max_datagram_size().unwrap() > 1000);
    let echoed = loop {
        session.send_datagram(msg.clone()).unwrap();
        if let Ok(d) =
            tokio::time::timeout(Duration::from_millis(200), session.read_datagram()).await
        {
            break d.unwrap();
        }
    };
    assert_eq!(echoed, msg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_share_connections_with_requests() {
    tokio::time::timeout(TIMEOUT, async {
        let (ended_tx, _ended) = mpsc::unbounded_channel();
        let (addr, certs) = server(ended_tx).await;
        let endpoint = Endpoint::client(localhost()).unwrap();
        let mut tasks = Vec::new();
        for conn in 0..2u64 {
            let mut send = client(&endpoint, addr, &certs).await;
            // Three sessions on this connection, and ordinary requests among them.
            for i in 0..3u64 {
                let session = send.webtransport(url(addr, "/wt")).await.unwrap();
                tasks.push(tokio::spawn(async move {
                    exercise(&session, conn * 10 + i).await;
                    session.id()
                }));
                let mut send = send.clone();
                tasks.push(tokio::spawn(async move {
                    let res = send
                        .send_request(
                            Request::get(url(addr, "/bytes/5000"))
                                .body(full(""))
                                .unwrap(),
                        )
                        .await
                        .unwrap();
                    assert_eq!(res.status(), StatusCode::OK);
                    let body = res.into_body().collect().await.unwrap().to_bytes();
                    assert_eq!(body, pattern(5000, 5000));
                    u64::MAX
                }));
            }
        }
        let mut ids = Vec::new();
        for t in tasks {
            let id = t.await.unwrap();
            if id != u64::MAX {
                ids.push(id);
            }
        }
        assert_eq!(ids.len(), 6);
        // Session IDs are CONNECT stream IDs: client-initiated bidirectional.
        assert!(ids.iter().all(|id| id % 4 == 0));
    })
    .await
    .expect("timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_codes_travel_and_refusals_are_errors() {
    tokio::time::timeout(TIMEOUT, async {
        let (ended_tx, mut ended) = mpsc::unbounded_channel();
        let (addr, certs) = server(ended_tx).await;
        let endpoint = Endpoint::client(localhost()).unwrap();
        let mut send = client(&endpoint, addr, &certs).await;

        // The server closes with a code and a message: the client sees both.
        let session = send.webtransport(url(addr, "/wt-close")).await.unwrap();
        assert_eq!(
            session.closed().await,
            SessionError::Closed {
                code: 42,
                reason: "bye".into()
            }
        );
        assert!(matches!(
            session.open_bi().await,
            Err(SessionError::Closed { code: 42, .. })
        ));

        // The client closes: the server sees the code and message.
        let session = send.webtransport(url(addr, "/wt-report")).await.unwrap();
        session.close(7, "done");
        assert_eq!(
            ended.recv().await.unwrap(),
            SessionError::Closed {
                code: 7,
                reason: "done".into()
            }
        );
        assert_eq!(session.closed().await, SessionError::LocallyClosed);

        // Dropping every handle closes the session with code 0.
        let session = send.webtransport(url(addr, "/wt-report")).await.unwrap();
        drop(session);
        assert_eq!(
            ended.recv().await.unwrap(),
            SessionError::Closed {
                code: 0,
                reason: String::new()
            }
        );

        // A refusal is an error that says so.
        let err = send
            .webtransport(url(addr, "/wt-refuse"))
            .await
            .unwrap_err();
        assert!(err.is_connect(), "{err}");
        assert!(err.to_string().contains("403") || format!("{err:?}").contains("403"));

        // The connection still serves requests.
        let res = send
            .send_request(Request::get(url(addr, "/bytes/10")).body(full("")).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);

        // Without WebTransport enabled on the client, asking for a session is a typed error.
        let conn = quic_connect(&endpoint, addr, &certs).await;
        let (mut plain, driver) = gquic_hyper::client::handshake::<Body>(conn).await.unwrap();
        tokio::spawn(driver);
        let err = plain.webtransport(url(addr, "/wt")).await.unwrap_err();
        assert!(err.is_connect());
    })
    .await
    .expect("timed out");
}

/// A misbehaving peer is limited: streams for sessions that do not exist are buffered up to
/// 64 per connection, then refused with WT_BUFFERED_STREAM_REJECTED; a session ID that is not
/// a client-initiated bidirectional stream is refused with H3_ID_ERROR. Requests still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_for_unknown_sessions_are_bounded() {
    tokio::time::timeout(TIMEOUT, async {
        let (ended_tx, _ended) = mpsc::unbounded_channel();
        let (addr, certs) = server(ended_tx).await;
        let endpoint = Endpoint::client(localhost()).unwrap();
        let conn = quic_connect(&endpoint, addr, &certs).await;
        let (mut send, driver) = gquic_hyper::client::Builder::new()
            .enable_webtransport(true)
            .handshake::<Body>(conn.clone())
            .await
            .unwrap();
        tokio::spawn(driver);

        /// A uni stream claiming session `id` (type 0x54, then the ID; both 2-byte varints
        /// or 1-byte for small IDs).
        async fn wt_uni(
            conn: &gquic_transport::runtime::Connection,
            id: u8,
        ) -> gquic_transport::runtime::SendStream {
            let mut s = conn.open_uni().await.unwrap();
            s.write_all(&[0x40, 0x54, id]).await.unwrap();
            s
        }

        // Session 4 never exists: 64 streams wait for it, one more is refused. The server
        // classifies streams concurrently, so any one of the 65 may be the refused one.
        let (codes_tx, mut codes) = mpsc::unbounded_channel();
        for _ in 0..65 {
            let mut s = wt_uni(&conn, 4).await;
            let codes_tx = codes_tx.clone();
            tokio::spawn(async move {
                if let Ok(code) = s.stopped().await {
                    let _ = codes_tx.send(code.map(|c| c.into_inner()));
                }
            });
        }
        let code = tokio::time::timeout(Duration::from_secs(10), codes.recv())
            .await
            .expect("no stream was refused")
            .unwrap();
        assert_eq!(code, Some(0x3994_bd84));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(codes.try_recv().is_err(), "more than one stream refused");
        // Session ID 2 is a server-initiated stream's ID: refused outright.
        let mut bad = wt_uni(&conn, 2).await;
        let code = tokio::time::timeout(Duration::from_secs(10), bad.stopped())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(code.map(|c| c.into_inner()), Some(0x108));
        // The connection still serves requests and sessions.
        let res = send
            .send_request(Request::get(url(addr, "/bytes/7")).body(full("")).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    })
    .await
    .expect("timed out");
}

/// Graceful shutdown sends WT_DRAIN_SESSION and waits for the session, which closes itself
/// with its own code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_drains_sessions() {
    tokio::time::timeout(TIMEOUT, async {
        let (ended_tx, _ended) = mpsc::unbounded_channel();
        let (addr, certs, mut handles) = server_with_handles(ended_tx).await;
        let endpoint = Endpoint::client(localhost()).unwrap();
        let mut send = client(&endpoint, addr, &certs).await;
        let session = send.webtransport(url(addr, "/wt-drain")).await.unwrap();
        let handle = handles.recv().await.unwrap();
        // Not draining until the server shuts down.
        assert!(
            tokio::time::timeout(Duration::from_millis(200), session.draining())
                .await
                .is_err()
        );
        handle.graceful_shutdown();
        tokio::time::timeout(Duration::from_secs(10), session.draining())
            .await
            .expect("the client saw WT_DRAIN_SESSION");
        assert_eq!(
            session.closed().await,
            SessionError::Closed {
                code: 99,
                reason: "shutting down".into()
            }
        );
    })
    .await
    .expect("timed out");
}
