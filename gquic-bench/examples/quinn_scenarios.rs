//! Run by `gquic-bench` (not by hand): the quinn side of the `streams`, `handshakes` and
//! `latency` scenarios, with the same certificate, crypto provider, limits and runtimes as the
//! gquic side (`src/scenarios.rs`).
//!
//! Usage: `quinn_scenarios streams DIR N FLAVOUR`, `quinn_scenarios handshakes DIR N
//! full|resume FLAVOUR`, `quinn_scenarios latency DIR N FLAVOUR` (FLAVOUR `ct`, `ctt` or `mt`:
//! `measure::Flavour`); prints the `RESULT` line of `measure::Outcome`; `quinn_scenarios
//! idle-server DIR N STREAMS` holds connections for the `idle` scenario.

#![allow(clippy::disallowed_methods)] // A measuring tool reads the clock.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "../src/measure.rs"]
#[allow(dead_code)]
mod measure;
#[path = "support/quinn_endpoint.rs"]
mod quinn_endpoint;

use measure::{ClientRun, Flavour, Outcome};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u64(measure::MAX_STREAMS).unwrap())
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(Duration::from_secs(30)).unwrap(),
        ));
    Arc::new(t)
}

fn configs(
    dir: &Path,
    resume: bool,
) -> Result<(quinn::ServerConfig, quinn::ClientConfig), BoxError> {
    let (server_tls, client_tls) = measure::tls_configs_for(dir, resume);
    let mut sc = quinn::ServerConfig::with_crypto(Arc::new(
        quinn::crypto::rustls::QuicServerConfig::try_from(server_tls)?,
    ));
    sc.transport_config(transport());
    let mut cc = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(client_tls)?,
    ));
    cc.transport_config(transport());
    Ok((sc, cc))
}

fn streams(dir: &Path, count: u64, flavour: Flavour) -> Result<Outcome, BoxError> {
    let (sc, cc) = configs(dir, false)?;
    measure::run_pair(
        flavour,
        move |addr_tx| async move {
            let server = quinn_endpoint::server(sc)?;
            addr_tx.send(server.local_addr()?)?;
            let conn = server.accept().await.ok_or("no connection")?.await?;
            while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                tokio::spawn(async move {
                    if let Ok(data) = recv.read_to_end(measure::SMALL).await {
                        let _ = send.write_all(&data).await;
                        let _ = send.finish();
                    }
                });
            }
            server.wait_idle().await;
            Ok(())
        },
        move |addr| async move {
            let client = quinn_endpoint::client()?;
            let conn = client.connect_with(cc, addr, "localhost")?.await?;
            let t0 = Instant::now();
            let left = Arc::new(AtomicU64::new(count));
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..measure::CONCURRENT_STREAMS {
                let conn = conn.clone();
                let left = left.clone();
                tasks.spawn(async move {
                    let payload = [0x42u8; measure::SMALL];
                    while measure::take_one(&left) {
                        let (mut send, mut recv) = conn.open_bi().await?;
                        send.write_all(&payload).await?;
                        send.finish()?;
                        let back = recv.read_to_end(measure::SMALL).await?;
                        if back.len() != measure::SMALL {
                            return Err::<(), BoxError>("short echo".into());
                        }
                    }
                    Ok(())
                });
            }
            while let Some(r) = tasks.join_next().await {
                r??;
            }
            let wall = t0.elapsed();
            let lost = conn.stats().path.lost_packets;
            conn.close(0u32.into(), b"done");
            client.wait_idle().await;
            Ok(ClientRun {
                units: count,
                wall,
                lost,
                round_trips: Vec::new(),
            })
        },
    )
}

fn handshakes(dir: &Path, count: u64, resume: bool, flavour: Flavour) -> Result<Outcome, BoxError> {
    let (sc, cc) = configs(dir, resume)?;
    let (done_tx, mut done_rx) = tokio::sync::watch::channel(false);
    measure::run_pair(
        flavour,
        move |addr_tx| async move {
            let server = quinn_endpoint::server(sc)?;
            addr_tx.send(server.local_addr()?)?;
            // Accept until the client is done: a count of accepted connections could be
            // reached early by a retransmitted Initial of a connection already forgotten.
            loop {
                tokio::select! {
                    incoming = server.accept() => {
                        let Some(incoming) = incoming else { break };
                        tokio::spawn(async move {
                            if let Ok(conn) = incoming.await {
                                if resume {
                                    // Sent after the session tickets, which rustls writes
                                    // when the client's Finished arrives: the client waits
                                    // for it before closing.
                                    if let Ok(mut s) = conn.open_uni().await {
                                        let _ = s.write_all(b"t").await;
                                        let _ = s.finish();
                                    }
                                }
                                let _ = conn.closed().await;
                            }
                        });
                    }
                    _ = done_rx.wait_for(|done| *done) => break,
                }
            }
            // A late duplicate of a client's Initial can start a connection after its
            // original is gone; nobody answers it, and it would idle for 30 s. The counted
            // work is over: close what is left.
            server.close(0u32.into(), b"done");
            server.wait_idle().await;
            Ok(())
        },
        move |addr| async move {
            let client = quinn_endpoint::client()?;
            if resume {
                // Tickets for the first concurrent handshakes: each of these connections takes
                // one and brings two (rustls' default).
                for _ in 0..measure::CONCURRENT_HANDSHAKES {
                    let conn = client.connect_with(cc.clone(), addr, "localhost")?.await?;
                    conn.accept_uni().await?.read_to_end(16).await?;
                    conn.close(0u32.into(), b"");
                }
                measure::reset_ticket_counts();
            }
            let t0 = Instant::now();
            let left = Arc::new(AtomicU64::new(count));
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..measure::CONCURRENT_HANDSHAKES {
                let client = client.clone();
                let cc = cc.clone();
                let left = left.clone();
                tasks.spawn(async move {
                    while measure::take_one(&left) {
                        let conn = client.connect_with(cc.clone(), addr, "localhost")?.await?;
                        if resume {
                            // The server's tickets came before this stream.
                            conn.accept_uni().await?.read_to_end(16).await?;
                        }
                        conn.close(0u32.into(), b"");
                    }
                    Ok::<(), BoxError>(())
                });
            }
            while let Some(r) = tasks.join_next().await {
                r??;
            }
            let wall = t0.elapsed();
            let _ = done_tx.send(true);
            if resume {
                measure::check_resumed(count)?;
            }
            client.wait_idle().await;
            Ok(ClientRun {
                units: count,
                wall,
                lost: 0,
                round_trips: Vec::new(),
            })
        },
    )
}

fn latency(dir: &Path, count: u64, flavour: Flavour) -> Result<Outcome, BoxError> {
    let (sc, cc) = configs(dir, false)?;
    let outcome = measure::run_pair(
        flavour,
        move |addr_tx| async move {
            let server = quinn_endpoint::server(sc)?;
            addr_tx.send(server.local_addr()?)?;
            let conn = server.accept().await.ok_or("no connection")?.await?;
            let (mut send, mut recv) = conn.accept_bi().await?;
            let mut byte = [0u8; 1];
            // Until the client finishes (or closes the connection right after).
            while let Ok(Some(n)) = recv.read(&mut byte).await {
                if n == 1 && send.write_all(&byte).await.is_err() {
                    break;
                }
            }
            let _ = send.finish();
            let _ = conn.closed().await;
            server.wait_idle().await;
            Ok(())
        },
        move |addr| async move {
            let client = quinn_endpoint::client()?;
            let conn = client.connect_with(cc, addr, "localhost")?.await?;
            let (mut send, mut recv) = conn.open_bi().await?;
            let mut byte = [7u8; 1];
            let mut round_trips = Vec::with_capacity(count as usize);
            let t0 = Instant::now();
            for i in 0..count + measure::LATENCY_WARM_UP {
                let t = Instant::now();
                send.write_all(&byte).await?;
                match recv.read(&mut byte).await? {
                    Some(1) => {}
                    _ => return Err("the echo ended".into()),
                }
                if i >= measure::LATENCY_WARM_UP {
                    round_trips.push(t.elapsed());
                }
            }
            let wall = t0.elapsed();
            send.finish()?;
            conn.close(0u32.into(), b"done");
            client.wait_idle().await;
            Ok(ClientRun {
                units: count,
                wall,
                lost: 0,
                round_trips,
            })
        },
    )?;
    Ok(outcome)
}

/// Holds connections until told to measure on stdin; prints the heap and RSS growth per
/// connection.
fn idle_server(dir: &Path, count: u64, streams: u64) -> Result<(), BoxError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let (server_tls, _) = measure::tls_configs_for(dir, false);
        let mut t = quinn::TransportConfig::default();
        t.max_concurrent_bidi_streams(quinn::VarInt::from_u64(streams)?)
            .max_concurrent_uni_streams(quinn::VarInt::from_u64(streams)?)
            .max_idle_timeout(Some(quinn::IdleTimeout::try_from(measure::IDLE_TIMEOUT)?));
        let mut sc = quinn::ServerConfig::with_crypto(Arc::new(
            quinn::crypto::rustls::QuicServerConfig::try_from(server_tls)?,
        ));
        sc.transport_config(Arc::new(t));
        let server = quinn_endpoint::server(sc)?;
        let baseline = measure::idle_baseline();
        measure::announce(server.local_addr()?);
        tokio::spawn(async move {
            while let Some(incoming) = server.accept().await {
                tokio::spawn(async move {
                    if let Ok(conn) = incoming.await {
                        let _ = conn.closed().await;
                    }
                });
            }
        });
        measure::wait_for_parent().await;
        println!("{}", measure::idle_line(count, baseline));
        Ok(())
    })
}

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).ok_or("missing argument");
    let dir = PathBuf::from(arg(1)?);
    let n: u64 = arg(2)?.parse()?;
    let outcome = match arg(0)?.as_str() {
        "streams" => streams(&dir, n, Flavour::parse(arg(3)?).ok_or("ct, ctt or mt")?)?,
        "handshakes" => handshakes(
            &dir,
            n,
            arg(3)? == "resume",
            Flavour::parse(arg(4)?).ok_or("ct, ctt or mt")?,
        )?,
        "latency" => latency(&dir, n, Flavour::parse(arg(3)?).ok_or("ct, ctt or mt")?)?,
        "idle-server" => return idle_server(&dir, n, arg(3)?.parse()?),
        other => return Err(format!("unknown scenario {other}").into()),
    };
    println!("{}", outcome.line());
    Ok(())
}
