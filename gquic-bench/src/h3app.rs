//! The HTTP/3 benchmark's application, written once as macros over the `h3` crate's API so
//! the gquic side (`gquic_transport::h3`) and the quinn side (`h3_quinn`) run the same code.

/// Serves a connection (an `h3::quic::Connection` value): every request gets 100 bytes.
macro_rules! h3_serve {
    ($quic:expr) => {{
        let mut conn = h3::server::Connection::<_, bytes::Bytes>::new($quic)
            .await
            .expect("h3 server handshake");
        let body = bytes::Bytes::from(vec![b'x'; 100]);
        loop {
            match conn.accept().await {
                Ok(Some(resolver)) => {
                    let body = body.clone();
                    tokio::spawn(async move {
                        let Ok((_req, mut stream)) = resolver.resolve_request().await else {
                            return;
                        };
                        let resp = http::Response::builder().status(200).body(()).unwrap();
                        if stream.send_response(resp).await.is_ok()
                            && stream.send_data(body).await.is_ok()
                        {
                            let _ = stream.finish().await;
                        }
                    });
                }
                _ => break,
            }
        }
    }};
}

/// Runs `$per_conn` concurrent request loops on a client connection until `$left` (an
/// `Arc<AtomicU64>` budget) is spent; returns how many requests completed.
macro_rules! h3_load {
    ($quic:expr, $per_conn:expr, $left:expr) => {{
        let (mut driver, send) = h3::client::new($quic).await.expect("h3 client handshake");
        tokio::spawn(async move { std::future::poll_fn(|cx| driver.poll_close(cx)).await });
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..$per_conn {
            let mut send = send.clone();
            let left = $left.clone();
            workers.spawn(async move {
                let mut done = 0u64;
                while left
                    .fetch_update(
                        std::sync::atomic::Ordering::AcqRel,
                        std::sync::atomic::Ordering::Acquire,
                        |n| n.checked_sub(1),
                    )
                    .is_ok()
                {
                    let req = http::Request::get("https://localhost/100")
                        .body(())
                        .unwrap();
                    let mut stream = send.send_request(req).await.expect("request");
                    // RFC 9114 §4.1.1: a server that has answered may stop reading the
                    // request with H3_NO_ERROR before our FIN arrives; the response still
                    // counts (and a real failure shows up reading it).
                    let _ = stream.finish().await;
                    let resp = stream.recv_response().await.expect("response");
                    assert_eq!(resp.status(), 200);
                    let mut n = 0;
                    while let Some(chunk) = stream.recv_data().await.expect("body") {
                        n += bytes::Buf::remaining(&chunk);
                    }
                    assert_eq!(n, 100);
                    done += 1;
                }
                done
            });
        }
        let mut total = 0u64;
        while let Some(r) = workers.join_next().await {
            total += r.expect("worker");
        }
        total
    }};
}
