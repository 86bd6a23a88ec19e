//! Run by `gquic-bench h3` (not by hand): the h3-quinn side of the HTTP/3 benchmark, with the
//! same h3 application (`src/h3app.rs`), certificate and crypto provider as the gquic side.
//!
//! Usage: `quinn_h3 DIR CONNS REQUESTS`; prints `RESULT <requests> <wall s> <cpu s> 0`.

#![allow(clippy::disallowed_methods)] // A measuring tool reads the clock.

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

#[path = "../src/measure.rs"]
#[allow(dead_code)]
mod measure;
#[path = "support/quinn_endpoint.rs"]
mod quinn_endpoint;
#[path = "../src/h3app.rs"]
#[macro_use]
mod h3app;

const CONCURRENCY: usize = 100;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().ok_or("DIR")?);
    let conns: usize = args.next().ok_or("CONNS")?.parse()?;
    let requests: u64 = args.next().ok_or("REQUESTS")?.parse()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let outcome = rt.block_on(async move {
        let (mut server_tls, mut client_tls) = measure::tls_configs(&dir);
        server_tls.alpn_protocols = vec![b"h3".to_vec()];
        client_tls.alpn_protocols = vec![b"h3".to_vec()];
        let sc = quinn::ServerConfig::with_crypto(Arc::new(
            quinn::crypto::rustls::QuicServerConfig::try_from(server_tls)?,
        ));
        let cc = quinn::ClientConfig::new(Arc::new(
            quinn::crypto::rustls::QuicClientConfig::try_from(client_tls)?,
        ));
        let server = quinn_endpoint::server(sc)?;
        let addr = server.local_addr()?;
        tokio::spawn(async move {
            while let Some(incoming) = server.accept().await {
                tokio::spawn(async move {
                    if let Ok(conn) = incoming.await {
                        h3_serve!(h3_quinn::Connection::new(conn));
                    }
                });
            }
        });
        let client = quinn_endpoint::client()?;
        let mut quics = Vec::new();
        for _ in 0..conns {
            quics.push(client.connect_with(cc.clone(), addr, "localhost")?.await?);
        }
        let left = Arc::new(AtomicU64::new(requests));
        let cpu0 = measure::cpu_time();
        let t0 = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for q in quics {
            let left = left.clone();
            tasks.spawn(async move {
                h3_load!(h3_quinn::Connection::new(q), CONCURRENCY / conns, left)
            });
        }
        let mut done = 0;
        while let Some(r) = tasks.join_next().await {
            done += r?;
        }
        Ok::<_, Box<dyn std::error::Error>>(measure::Outcome {
            bytes: done,
            wall: t0.elapsed(),
            cpu: measure::cpu_time() - cpu0,
            client_cpu: None,
            server_cpu: None,
            lost: 0,
            percentiles: None,
        })
    })?;
    println!("{}", outcome.line());
    Ok(())
}
