//! Run by `gquic-bench bulk` (not by hand): the quinn side of the bulk scenario, with the
//! same certificate, crypto provider and windows as the gquic side.
//!
//! Usage: `quinn_bulk DIR BYTES`; prints `RESULT <bytes> <wall s> <cpu s> <lost>`.

#![allow(clippy::disallowed_methods)] // A measuring tool reads the clock.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

#[path = "../src/measure.rs"]
#[allow(dead_code)]
mod measure;

fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.stream_receive_window(quinn::VarInt::from_u64(measure::STREAM_WINDOW).unwrap())
        .receive_window(quinn::VarInt::from_u64(measure::CONN_WINDOW).unwrap())
        .send_window(measure::SEND_WINDOW);
    Arc::new(t)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().ok_or("DIR")?);
    let bytes: u64 = args.next().ok_or("BYTES")?.parse()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let outcome = rt.block_on(async move {
        let (server_tls, client_tls) = measure::tls_configs(&dir);
        let mut sc = quinn::ServerConfig::with_crypto(Arc::new(
            quinn::crypto::rustls::QuicServerConfig::try_from(server_tls)?,
        ));
        sc.transport_config(transport());
        let mut cc = quinn::ClientConfig::new(Arc::new(
            quinn::crypto::rustls::QuicClientConfig::try_from(client_tls)?,
        ));
        cc.transport_config(transport());
        let server = quinn::Endpoint::server(sc, "127.0.0.1:0".parse()?)?;
        let addr = server.local_addr()?;
        let srv = tokio::spawn(async move {
            let conn = server.accept().await.ok_or("no connection")?.await?;
            let (mut send, mut recv) = conn.accept_bi().await?;
            let mut n = 0u64;
            while let Some(chunk) = recv.read_chunk(usize::MAX, true).await? {
                n += chunk.bytes.len() as u64;
            }
            send.write_all(&n.to_be_bytes()).await?;
            send.finish()?;
            let _ = send.stopped().await;
            let _ = conn.closed().await;
            server.wait_idle().await;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        });
        let client = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
        let conn = client.connect_with(cc, addr, "localhost")?.await?;
        let chunk = Bytes::from(vec![0xa5u8; measure::CHUNK]);
        let cpu0 = measure::cpu_time();
        let t0 = Instant::now();
        let (mut send, mut recv) = conn.open_bi().await?;
        let mut sent = 0u64;
        while sent < bytes {
            let take = (bytes - sent).min(chunk.len() as u64) as usize;
            send.write_chunk(chunk.slice(..take)).await?;
            sent += take as u64;
        }
        send.finish()?;
        let echo = recv.read_to_end(8).await?;
        let wall = t0.elapsed();
        let cpu = measure::cpu_time() - cpu0;
        let received = u64::from_be_bytes(echo[..].try_into().map_err(|_| "short answer")?);
        if received != bytes {
            return Err(format!("server received {received} of {bytes} bytes").into());
        }
        let lost = conn.stats().path.lost_packets;
        conn.close(0u32.into(), b"done");
        client.wait_idle().await;
        let _ = srv.await;
        Ok::<_, Box<dyn std::error::Error>>(measure::Outcome {
            bytes,
            wall,
            cpu,
            lost,
        })
    })?;
    println!("{}", outcome.line());
    Ok(())
}
