//! Run by `gquic-bench bulk` (not by hand): the quinn side of the bulk scenario, with the
//! same certificate, crypto provider and windows as the gquic side.
//!
//! Usage: `quinn_bulk DIR BYTES ct|ctt|mt up|down`; prints the `RESULT` line of `measure::Outcome`.

#![allow(clippy::disallowed_methods)] // A measuring tool reads the clock.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

#[path = "../src/measure.rs"]
#[allow(dead_code)]
mod measure;
#[path = "support/quinn_endpoint.rs"]
mod quinn_endpoint;

fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.stream_receive_window(quinn::VarInt::from_u64(measure::STREAM_WINDOW).unwrap())
        .receive_window(quinn::VarInt::from_u64(measure::CONN_WINDOW).unwrap())
        .send_window(measure::SEND_WINDOW);
    Arc::new(t)
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Reads `recv` to its end, `measure::READ_SLOTS` chunks per call (as the gquic side does);
/// returns the number of bytes.
async fn read_all(recv: &mut quinn::RecvStream) -> Result<u64, BoxError> {
    let mut slots: [Bytes; measure::READ_SLOTS] = Default::default();
    let mut n = 0u64;
    while let Some(k) = recv.read_chunks(&mut slots).await? {
        n += slots[..k].iter().map(|c| c.len() as u64).sum::<u64>();
    }
    Ok(n)
}

/// Writes `n` bytes of `chunk` (repeated) to `send`.
async fn write_n(send: &mut quinn::SendStream, chunk: &Bytes, n: u64) -> Result<(), BoxError> {
    let mut sent = 0u64;
    while sent < n {
        let take = (n - sent).min(chunk.len() as u64) as usize;
        send.write_chunk(chunk.slice(..take)).await?;
        sent += take as u64;
    }
    Ok(())
}

fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().ok_or("DIR")?);
    let bytes: u64 = args.next().ok_or("BYTES")?.parse()?;
    let flavour = measure::Flavour::parse(&args.next().ok_or("FLAVOUR")?).ok_or("ct, ctt or mt")?;
    let upload = match args.next().ok_or("DIRECTION")?.as_str() {
        "up" => true,
        "down" => false,
        _ => return Err("up or down".into()),
    };
    let (server_tls, client_tls) = measure::tls_configs(&dir);
    let mut sc = quinn::ServerConfig::with_crypto(Arc::new(
        quinn::crypto::rustls::QuicServerConfig::try_from(server_tls)?,
    ));
    sc.transport_config(transport());
    let mut cc = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(client_tls)?,
    ));
    cc.transport_config(transport());
    let chunk = Bytes::from(vec![0xa5u8; measure::CHUNK]);
    let server_chunk = chunk.clone();
    let server_lost = Arc::new(AtomicU64::new(0));
    let lost_on_server = server_lost.clone();
    let outcome = measure::run_pair(
        flavour,
        move |addr_tx| async move {
            let server = quinn_endpoint::server(sc)?;
            addr_tx.send(server.local_addr()?)?;
            let conn = server.accept().await.ok_or("no connection")?.await?;
            let (mut send, mut recv) = conn.accept_bi().await?;
            if upload {
                let n = read_all(&mut recv).await?;
                send.write_all(&n.to_be_bytes()).await?;
            } else {
                let ask = recv.read_to_end(8).await?;
                let want = u64::from_be_bytes(ask[..].try_into().map_err(|_| "short ask")?);
                write_n(&mut send, &server_chunk, want).await?;
            }
            send.finish()?;
            let _ = send.stopped().await;
            lost_on_server.store(conn.stats().path.lost_packets, Ordering::Relaxed);
            let _ = conn.closed().await;
            server.wait_idle().await;
            Ok(())
        },
        move |addr| async move {
            let client = quinn_endpoint::client()?;
            let conn = client.connect_with(cc, addr, "localhost")?.await?;
            let t0 = Instant::now();
            let (mut send, mut recv) = conn.open_bi().await?;
            let moved = if upload {
                write_n(&mut send, &chunk, bytes).await?;
                send.finish()?;
                let echo = recv.read_to_end(8).await?;
                u64::from_be_bytes(echo[..].try_into().map_err(|_| "short answer")?)
            } else {
                send.write_all(&bytes.to_be_bytes()).await?;
                send.finish()?;
                read_all(&mut recv).await?
            };
            let wall = t0.elapsed();
            if moved != bytes {
                return Err(format!("{moved} of {bytes} bytes arrived").into());
            }
            let lost = if upload {
                conn.stats().path.lost_packets
            } else {
                server_lost.load(Ordering::Relaxed)
            };
            conn.close(0u32.into(), b"done");
            client.wait_idle().await;
            Ok(measure::ClientRun {
                units: bytes,
                wall,
                lost,
                round_trips: Vec::new(),
            })
        },
    )?;
    println!("{}", outcome.line());
    Ok(())
}
