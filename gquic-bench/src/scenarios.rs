//! The `streams`, `handshakes` and `latency` scenarios, gquic side; the quinn side is the
//! example `quinn_scenarios` (quinn is a dev-dependency only). Both run through
//! [`measure::run_pair`] with the same settings from `measure.rs`, and the parent compares
//! them with [`compare`].

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gquic_transport::runtime::Endpoint;
use gquic_transport::{ClientConfig, ServerConfig, TransportConfig};

use crate::measure::{self, ClientRun, Flavour, Outcome, Spread};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn transport() -> Arc<TransportConfig> {
    let mut t = TransportConfig::default();
    t.max_concurrent_bidi_streams(measure::MAX_STREAMS)
        .max_idle_timeout(Duration::from_secs(30));
    Arc::new(t)
}

fn configs(dir: &Path, resume: bool) -> Result<(ServerConfig, ClientConfig), BoxError> {
    let (server_tls, client_tls) = measure::tls_configs_for(dir, resume);
    let mut sc = ServerConfig::new(Arc::new(server_tls))?;
    sc.transport(transport())?;
    let mut cc = ClientConfig::new(Arc::new(client_tls))?;
    cc.transport(transport())?;
    Ok((sc, cc))
}

/// `count` bidirectional streams of 100 B echoed, `measure::CONCURRENT_STREAMS` at a time, on
/// one connection.
pub(crate) fn child_streams(dir: &Path, count: u64, flavour: Flavour) -> Result<Outcome, BoxError> {
    let (sc, cc) = configs(dir, false)?;
    measure::run_pair(
        flavour,
        move |addr_tx| async move {
            let server = Endpoint::server(sc, "127.0.0.1:0".parse()?)?;
            addr_tx.send(server.local_addr())?;
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
            let client = Endpoint::client("127.0.0.1:0".parse()?)?;
            let conn = client.connect_with(cc, addr, "localhost")?.await?;
            let t0 = Instant::now();
            let left = Arc::new(std::sync::atomic::AtomicU64::new(count));
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
            let lost = conn.stats().counters.packets_lost;
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

/// `count` handshakes, `measure::CONCURRENT_HANDSHAKES` at a time, each connection closed once
/// established; with `resume`, TLS session resumption (one connection first to get tickets).
pub(crate) fn child_handshakes(
    dir: &Path,
    count: u64,
    resume: bool,
    flavour: Flavour,
) -> Result<Outcome, BoxError> {
    let (sc, cc) = configs(dir, resume)?;
    let (done_tx, mut done_rx) = tokio::sync::watch::channel(false);
    measure::run_pair(
        flavour,
        move |addr_tx| async move {
            let server = Endpoint::server(sc, "127.0.0.1:0".parse()?)?;
            addr_tx.send(server.local_addr())?;
            // Accept until the client is done: a count of accepted connections could be
            // reached early by a retransmitted Initial of a connection already forgotten.
            loop {
                tokio::select! {
                    connecting = server.accept() => {
                        let Some(connecting) = connecting else { break };
                        tokio::spawn(async move {
                            if let Ok(conn) = connecting.await {
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
            let client = Endpoint::client("127.0.0.1:0".parse()?)?;
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
            let left = Arc::new(std::sync::atomic::AtomicU64::new(count));
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

/// `count` round trips of one byte on one stream; the outcome carries the p50 and p99 round
/// trip.
pub(crate) fn child_latency(dir: &Path, count: u64, flavour: Flavour) -> Result<Outcome, BoxError> {
    let (sc, cc) = configs(dir, false)?;
    let outcome = measure::run_pair(
        flavour,
        move |addr_tx| async move {
            let server = Endpoint::server(sc, "127.0.0.1:0".parse()?)?;
            addr_tx.send(server.local_addr())?;
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
            let client = Endpoint::client("127.0.0.1:0".parse()?)?;
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

/// Runs a child (gquic: this executable with `args`; quinn: the example with `args`).
fn run_child(stack: &str, quinn: &Path, args: &[String]) -> Result<Outcome, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let cmd = if stack == "gquic" {
        let mut c = Command::new(exe);
        c.arg(format!("{}-child", args[0])).args(&args[1..]);
        c
    } else {
        let mut c = Command::new(quinn);
        c.args(args);
        c
    };
    crate::bulk::run_child(cmd, stack)
}

/// What a scenario reports per run.
pub(crate) enum Metric {
    /// Units per second and CPU-microseconds per unit.
    Rate(&'static str),
    /// Round-trip percentiles in microseconds.
    Latency,
}

/// Runs `args` for both stacks, interleaved (one warm-up of a tenth of the work and `runs`
/// counted runs each), and
/// prints the comparison. `args` are the child's arguments after the program name; the
/// first names the scenario.
pub(crate) fn compare(
    name: &str,
    args: &[String],
    runs: usize,
    metric: Metric,
) -> Result<Vec<Outcome>, String> {
    compare_with(name, args, runs, metric, || Ok(()))
}

/// [`compare`], calling `after_round` after each counted round (one run of each stack), so
/// a reference measurement can be interleaved with them.
pub(crate) fn compare_with(
    name: &str,
    args: &[String],
    runs: usize,
    metric: Metric,
    mut after_round: impl FnMut() -> Result<(), String>,
) -> Result<Vec<Outcome>, String> {
    let quinn = crate::bulk::build_example("quinn_scenarios")?;
    let mut results: [Vec<Outcome>; 2] = [Vec::new(), Vec::new()];
    // The warm-up runs do a tenth of the work (args[2] is the count).
    let mut warm_up = args.to_vec();
    if let Some(n) = warm_up.get(2).and_then(|n| n.parse::<u64>().ok()) {
        warm_up[2] = (n / 10).max(1).to_string();
    }
    for round in 0..=runs {
        for (i, stack) in ["gquic", "quinn"].into_iter().enumerate() {
            let o = run_child(stack, &quinn, if round == 0 { &warm_up } else { args })?;
            if round > 0 {
                results[i].push(o);
            }
        }
        if round > 0 {
            after_round()?;
        }
    }
    let mut medians = [0.0; 2];
    let mut cpus = [0.0; 2];
    for (i, stack) in ["gquic", "quinn"].into_iter().enumerate() {
        let r = &results[i];
        match metric {
            Metric::Rate(unit) => {
                let rate = Spread::of(r.iter().map(|o| o.bytes as f64 / o.wall.as_secs_f64()))
                    .ok_or("no runs")?;
                let cpu = Spread::of(r.iter().map(|o| o.cpu.as_secs_f64() * 1e6 / o.bytes as f64))
                    .ok_or("no runs")?;
                medians[i] = rate.median;
                cpus[i] = cpu.median;
                println!(
                    "{name:<18} {stack:<6} {:>30} {unit}/s {:>24} CPU-µs/{unit}",
                    rate.show(0),
                    cpu.show(2)
                );
            }
            Metric::Latency => {
                let p50 = Spread::of(r.iter().filter_map(|o| o.percentiles.map(|p| p.0)))
                    .ok_or("no percentiles")?;
                let p99 = Spread::of(r.iter().filter_map(|o| o.percentiles.map(|p| p.1)))
                    .ok_or("no percentiles")?;
                medians[i] = p99.median;
                println!(
                    "{name:<18} {stack:<6} p50 {:>24} µs   p99 {:>24} µs",
                    p50.show(1),
                    p99.show(1)
                );
            }
        }
    }
    match metric {
        Metric::Rate(_) => {
            println!(
                "{name:<18} ratio  rate {:.2}x, CPU per unit {:.2}x (gquic/quinn, medians)",
                medians[0] / medians[1],
                cpus[0] / cpus[1]
            );
            let rates = |r: &[Outcome]| -> Vec<f64> {
                r.iter()
                    .map(|o| o.bytes as f64 / o.wall.as_secs_f64())
                    .collect()
            };
            if let Some(p) = Spread::of_pairs(&rates(&results[0]), &rates(&results[1])) {
                println!(
                    "{name:<18} paired rate ratios: median {:.2}x ({:.2}x-{:.2}x; each round's \
                     gquic run against the quinn run that followed it)",
                    p.median, p.min, p.max
                );
            }
        }
        Metric::Latency => println!(
            "{name:<18} ratio  p99 {:.2}x (gquic/quinn, medians)",
            medians[0] / medians[1]
        ),
    }
    Ok(results.into_iter().flatten().collect())
}

/// The `idle` server child: holds connections until told to measure on stdin, then prints
/// the heap, malloc and RSS growth per connection ([`measure::idle_line`]).
pub(crate) fn child_idle_server(dir: &Path, count: u64, streams: u64) -> Result<(), BoxError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let (server_tls, _) = measure::tls_configs_for(dir, false);
        let mut t = TransportConfig::default();
        t.max_concurrent_bidi_streams(streams)
            .max_concurrent_uni_streams(streams)
            .max_idle_timeout(measure::IDLE_TIMEOUT);
        let mut sc = ServerConfig::new(Arc::new(server_tls))?;
        sc.transport(Arc::new(t))?;
        let server = Endpoint::server(sc, "127.0.0.1:0".parse()?)?;
        let baseline = measure::idle_baseline();
        measure::announce(server.local_addr());
        tokio::spawn(async move {
            while let Some(connecting) = server.accept().await {
                tokio::spawn(async move {
                    if let Ok(conn) = connecting.await {
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

/// Opens `count` connections to an `idle` server child (gquic's client for both servers),
/// has it measure, and returns its bytes per server connection.
fn idle_run(server: &mut std::process::Child, count: u64) -> Result<measure::IdleFigures, String> {
    use std::io::{BufRead, Write};
    let stdout = server.stdout.take().ok_or("no stdout")?;
    let mut lines = std::io::BufReader::new(stdout).lines();
    let addr: std::net::SocketAddr = loop {
        let line = lines
            .next()
            .ok_or("the server ended")?
            .map_err(|e| e.to_string())?;
        if let Some(a) = line.strip_prefix("ADDR ") {
            break a.parse().map_err(|e| format!("{e}"))?;
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let (client, conns) = rt
        .block_on(async move {
            let (_, client_tls) = measure::tls_configs_for(Path::new(&measure::cert_dir()), false);
            let mut t = TransportConfig::default();
            t.max_idle_timeout(measure::IDLE_TIMEOUT);
            let mut cc = ClientConfig::new(Arc::new(client_tls))?;
            cc.transport(Arc::new(t))?;
            let client = Endpoint::client("127.0.0.1:0".parse()?)?;
            let mut tasks = tokio::task::JoinSet::new();
            let left = Arc::new(std::sync::atomic::AtomicU64::new(count));
            for _ in 0..measure::CONCURRENT_HANDSHAKES {
                let client = client.clone();
                let cc = cc.clone();
                let left = left.clone();
                tasks.spawn(async move {
                    let mut held = Vec::new();
                    while measure::take_one(&left) {
                        held.push(client.connect_with(cc.clone(), addr, "localhost")?.await?);
                    }
                    Ok::<_, BoxError>(held)
                });
            }
            let mut conns = Vec::new();
            while let Some(r) = tasks.join_next().await {
                conns.extend(r??);
            }
            // Let the handshakes' last packets (HANDSHAKE_DONE, tickets, ACKs) settle, and
            // the connections go quiet (gquic compacts a connection after 1 s of quiet).
            tokio::time::sleep(Duration::from_millis(1500)).await;
            Ok::<_, BoxError>((client, conns))
        })
        .map_err(|e| e.to_string())?;
    let mut stdin = server.stdin.take().ok_or("no stdin")?;
    writeln!(stdin, "measure").map_err(|e| e.to_string())?;
    let result = loop {
        let line = lines
            .next()
            .ok_or("the server ended before measuring")?
            .map_err(|e| e.to_string())?;
        if let Some(r) = measure::parse_idle(&line) {
            break r;
        }
    };
    drop(conns);
    client.close(0u32.into(), b"");
    let _ = server.wait();
    Ok(result)
}

/// The `idle` scenario: heap, malloc and RSS per idle server connection with `count`
/// connections,
/// at 100 and 1000 stream limits, gquic and quinn servers.
/// With `gquic_only`, the gquic server alone at 100 streams (for counts quinn would take too
/// long to hold, such as 100,000).
pub(crate) fn idle(count: u64, gquic_only: bool) -> Result<(), String> {
    let quinn = crate::bulk::build_example("quinn_scenarios")?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = measure::cert_dir();
    println!(
        "\nidle: {count} connections held open by one client process, handshake done, no \
         streams; growth of the server process's Rust heap (counting allocator), of all \
         malloc'd memory (Rust and C: aws-lc's key contexts are C) and of RSS, per connection"
    );
    let mut heaps = Vec::new();
    let (limits, stacks): (&[u64], &[&str]) = if gquic_only {
        (&[100], &["gquic"])
    } else {
        (&[100, 1000], &["gquic", "quinn"])
    };
    for &streams in limits {
        for &stack in stacks {
            let mut cmd = if stack == "gquic" {
                let mut c = Command::new(&exe);
                c.arg("idle-server-child");
                c
            } else {
                let mut c = Command::new(&quinn);
                c.arg("idle-server");
                c
            };
            cmd.arg(&dir)
                .arg(count.to_string())
                .arg(streams.to_string())
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped());
            let mut child = cmd.spawn().map_err(|e| format!("{stack}: {e}"))?;
            let r = idle_run(&mut child, count);
            if r.is_err() {
                let _ = child.kill();
            }
            let f = r?;
            heaps.push(f);
            println!(
                "{:<18} {stack:<6} {:>10.0} B heap {:>10.0} B malloc {:>10.0} B RSS per connection",
                format!("idle-{streams}-streams"),
                f.heap,
                f.malloc,
                f.rss
            );
        }
        let n = heaps.len();
        if gquic_only {
            continue;
        }
        println!(
            "{:<18} ratio  heap {:.3}x  malloc {:.3}x (gquic/quinn)",
            format!("idle-{streams}-streams"),
            heaps[n - 2].heap / heaps[n - 1].heap,
            heaps[n - 2].malloc / heaps[n - 1].malloc
        );
    }
    Ok(())
}
