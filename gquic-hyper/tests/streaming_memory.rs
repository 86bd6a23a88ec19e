//! A 1 GiB upload echoed through `serve_connection` while both sides stream: resident memory
//! must not grow by more than 80 MiB, what the four flow-control windows in play hold at most
//! plus slack (bodies are never buffered whole; flow control and back-pressure bound what is
//! in flight). And the same with a reader slower than the
//! network, which is what made h3's receive buffer grow without bound before reads were paced
//! to the body's consumer (`gquic_transport::h3::ReadPace`). Linux only (reads
//! /proc/self/status).
#![allow(clippy::disallowed_methods)]
#![cfg(target_os = "linux")]

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gquic_transport::runtime::Endpoint;
use gquic_transport::{ClientConfig, ServerConfig};
use http::Request;
use http_body_util::BodyExt;
use hyper::service::service_fn;
use support::*;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

/// Yields `total` bytes as clones of one 1 MiB chunk (no allocation per frame).
struct Generator {
    chunk: Bytes,
    left: u64,
}

impl http_body::Body for Generator {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        let n = self.left.min(self.chunk.len() as u64) as usize;
        self.left -= n as u64;
        let data = self.chunk.slice(..n);
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(data))))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_echo_keeps_memory_bounded() {
    let total: u64 = std::env::var("GQUIC_STREAM_TEST_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
        << 20;
    let growth = echo(total, None).await;
    // Both ends live in this process, with the default windows: the client's send buffer, the
    // server's stream receive window, the server's send buffer and the client's receive
    // window may each hold 16 MiB at once (64 MiB of payload in flight by design), plus the
    // sockets' 2 MiB buffers and the allocator's slack. Runs peak at 54-66 MiB; a body
    // buffered whole would take 1 GiB.
    assert!(
        growth < 80 << 20,
        "resident memory grew by {} MiB",
        growth >> 20
    );
}

/// The echo comes back in DATA frames of one packet's payload each (the server forwards each
/// chunk as it reads it), and the client reads them slower than they arrive: without read
/// pacing h3 pulled two transport chunks per frame it handed out and buffered nearly all
/// of the 64 MiB (and released flow-control credit for it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_of_small_frames_keeps_memory_bounded() {
    let growth = echo(64 << 20, Some(Duration::from_millis(1))).await;
    assert!(
        growth < 24 << 20,
        "resident memory grew by {} MiB",
        growth >> 20
    );
}

/// Echoes `total` bytes; `pause`: the client sleeps this long every 64 frames it reads.
/// Returns the peak growth of resident memory while the echo ran.
async fn echo(total: u64, pause: Option<Duration>) -> u64 {
    // Resident memory is the whole process's: one echo at a time.
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _serial = SERIAL.lock().await;
    let certs = certs();
    let server = Endpoint::server(
        ServerConfig::new(Arc::new(tls_server(&certs))).unwrap(),
        localhost(),
    )
    .unwrap();
    let addr = server.local_addr();
    tokio::spawn(async move {
        while let Some(connecting) = server.accept().await {
            let Ok(conn) = connecting.await else { continue };
            tokio::spawn(gquic_hyper::serve_connection(
                conn,
                service_fn(|req: Request<gquic_hyper::Incoming>| async move {
                    Ok::<_, std::convert::Infallible>(http::Response::new(req.into_body()))
                }),
            ));
        }
    });
    let client = Endpoint::client(localhost()).unwrap();
    let conn = client
        .connect_with(
            ClientConfig::new(Arc::new(tls_client(&certs))).unwrap(),
            addr,
            "localhost",
        )
        .unwrap()
        .await
        .unwrap();
    let (mut send, driver) = gquic_hyper::client::handshake(conn).await.unwrap();
    tokio::spawn(driver);

    // Warm up (allocator arenas, windows), then take the baseline.
    let warm = send
        .send_request(
            Request::post("https://localhost/echo")
                .body(
                    Generator {
                        chunk: Bytes::from(vec![7u8; 1 << 20]),
                        left: 8 << 20,
                    }
                    .boxed(),
                )
                .unwrap(),
        )
        .await
        .unwrap();
    warm.into_body().collect().await.unwrap();
    let baseline = rss_bytes();
    let peak = Arc::new(AtomicU64::new(baseline));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_bytes(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let started = std::time::Instant::now();
    let resp = send
        .send_request(
            Request::post("https://localhost/echo")
                .body(
                    Generator {
                        chunk: Bytes::from(vec![0x5au8; 1 << 20]),
                        left: total,
                    }
                    .boxed(),
                )
                .unwrap(),
        )
        .await
        .unwrap();
    let mut body = resp.into_body();
    let mut received = 0u64;
    let mut frames = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.unwrap();
        frames += 1;
        if let Some(pause) = pause.filter(|_| frames % 64 == 0) {
            tokio::time::sleep(pause).await;
        }
        if let Some(d) = frame.data_ref() {
            assert!(d.iter().all(|&b| b == 0x5a));
            received += d.len() as u64;
        }
    }
    sampler.abort();
    let growth = peak.load(Ordering::Relaxed).saturating_sub(baseline);
    eprintln!(
        "echoed {} MiB in {:.1} s; RSS baseline {} MiB, peak growth {:.1} MiB",
        total >> 20,
        started.elapsed().as_secs_f64(),
        baseline >> 20,
        growth as f64 / (1 << 20) as f64
    );
    assert_eq!(received, total);
    growth
}
