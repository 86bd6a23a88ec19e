//! The `h3` scenario: HTTP/3 requests per second and CPU per request, gquic and h3-quinn with
//! the same `h3` crate and application, 1 and 10 connections, 100 concurrent GETs of 100 B;
//! and gquic serving the same answer from an axum `Router` through `gquic_axum::serve` (the
//! whole hyper/tower/axum stack), against the same h3 client.
//! Each stack runs in a child process of its own (client and server together), so getrusage
//! separates their CPU time; the quinn child is the example `quinn_h3` (quinn and h3-quinn are
//! dev-dependencies only).

use std::process::Command;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use gquic_transport::runtime::Endpoint;
use gquic_transport::{ClientConfig, ServerConfig};

use crate::measure::{self, Outcome};

/// Concurrent requests in flight, spread over the connections.
pub(crate) const CONCURRENCY: usize = 100;

/// The gquic child: `requests` GETs over `conns` connections; prints an [`Outcome`] whose
/// `bytes` field carries the request count.
pub(crate) fn child_gquic(
    dir: &std::path::Path,
    conns: usize,
    requests: u64,
    axum: bool,
    sharded: bool,
) -> Result<Outcome, Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let (mut server_tls, mut client_tls) = measure::tls_configs(dir);
        server_tls.alpn_protocols = vec![b"h3".to_vec()];
        client_tls.alpn_protocols = vec![b"h3".to_vec()];
        let client_provider = client_tls.crypto_provider().clone();
        let server_config = ServerConfig::new(Arc::new(server_tls))?;
        // Sharded: one SO_REUSEPORT socket per worker on the server, and a socket per
        // connection on the client, so the kernel spreads the connections over the shards.
        let server = if sharded {
            Endpoint::server_reuseport(server_config, "127.0.0.1:0".parse()?, 2)?
        } else {
            Endpoint::server(server_config, "127.0.0.1:0".parse()?)?
        };
        let addr = server.local_addr();
        if axum {
            let body = bytes::Bytes::from(vec![b'x'; 100]);
            let router = axum::Router::new().route(
                "/100",
                axum::routing::get(move || {
                    let body = body.clone();
                    async move { body }
                }),
            );
            tokio::spawn(std::future::IntoFuture::into_future(gquic_axum::serve(
                server, router,
            )));
        } else {
            tokio::spawn(async move {
                while let Some(connecting) = server.accept().await {
                    tokio::spawn(async move {
                        if let Ok(conn) = connecting.await {
                            h3_serve!(gquic_transport::h3::Connection::new(conn));
                        }
                    });
                }
            });
        }
        let client = if sharded {
            let sockets = (0..conns)
                .map(|_| std::net::UdpSocket::bind("127.0.0.1:0"))
                .collect::<Result<Vec<_>, _>>()?;
            let mut key = [0u8; 32];
            client_provider
                .secure_random
                .fill(&mut key)
                .map_err(|e| format!("{e:?}"))?;
            Endpoint::new_sharded(
                gquic_transport::endpoint::EndpointConfig::new(client_provider, key),
                None,
                sockets,
            )?
        } else {
            Endpoint::client("127.0.0.1:0".parse()?)?
        };
        let config = ClientConfig::new(Arc::new(client_tls))?;
        let mut quics = Vec::new();
        for _ in 0..conns {
            quics.push(
                client
                    .connect_with(config.clone(), addr, "localhost")?
                    .await?,
            );
        }
        let left = Arc::new(AtomicU64::new(requests));
        let cpu0 = measure::cpu_time();
        let t0 = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for q in quics {
            let left = left.clone();
            tasks.spawn(async move {
                h3_load!(
                    gquic_transport::h3::Connection::new(q),
                    CONCURRENCY / conns,
                    left
                )
            });
        }
        let mut done = 0;
        while let Some(r) = tasks.join_next().await {
            done += r?;
        }
        let wall = t0.elapsed();
        let cpu = measure::cpu_time() - cpu0;
        Ok(Outcome {
            bytes: done,
            wall,
            cpu,
            client_cpu: None,
            server_cpu: None,
            lost: 0,
            percentiles: None,
        })
    })
}

fn run_child(mut cmd: Command, name: &str) -> Result<Outcome, String> {
    let out = cmd.output().map_err(|e| format!("{name}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "{name} failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Outcome::parse(&stdout).ok_or(format!("{name}: no RESULT line"))
}

/// The parent: for 1 and 10 connections, runs the three stacks interleaved (one warm-up at a
/// tenth of the requests, then `runs` counted runs each) and prints median (min-max) of
/// requests/s and CPU per request, and the ratios of the medians to h3-quinn.
pub(crate) fn run(requests: u64, runs: usize) -> Result<(), String> {
    let dir = crate::bulk::write_cert_dir("h3")?;
    let quinn = crate::bulk::build_example("quinn_h3")?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    println!(
        "gquic-bench h3: {requests} GETs of 100 B per run, {CONCURRENCY} in flight, same h3 \
         crate and client on every stack, over 127.0.0.1; 1 warm-up + {runs} runs per stack, \
         interleaved; median (min-max)\n"
    );
    println!(
        "{:<6} {:<7} {:>28} {:>24}",
        "conns", "stack", "requests/s", "CPU us/request"
    );
    for conns in [1usize, 10] {
        // With several connections, also gquic over a SO_REUSEPORT group of 2 server sockets
        // (one shard per worker) with one client socket per connection: quinn's endpoint has
        // no such mode, so its run is the same as in the other lines.
        let stacks: &[&str] = if conns > 1 {
            &["gquic", "axum", "sharded", "quinn"]
        } else {
            &["gquic", "axum", "quinn"]
        };
        let q = stacks.len() - 1;
        let command = |stack: &str, n: u64| {
            let mut cmd = if stack == "quinn" {
                Command::new(&quinn)
            } else {
                let mut c = Command::new(&exe);
                c.arg("h3-child");
                c
            };
            cmd.arg(&dir).arg(conns.to_string()).arg(n.to_string());
            if stack == "axum" || stack == "sharded" {
                cmd.arg(stack);
            }
            cmd
        };
        let mut rates: Vec<Vec<f64>> = vec![Vec::new(); stacks.len()];
        let mut cpus: Vec<Vec<f64>> = vec![Vec::new(); stacks.len()];
        for round in 0..=runs {
            let n = if round == 0 {
                (requests / 10).max(1)
            } else {
                requests
            };
            for (i, stack) in stacks.iter().enumerate() {
                let o = run_child(command(stack, n), stack)?;
                if round > 0 {
                    rates[i].push(o.bytes as f64 / o.wall.as_secs_f64());
                    cpus[i].push(o.cpu.as_secs_f64() * 1e6 / o.bytes as f64);
                }
            }
        }
        let spreads: Vec<(measure::Spread, measure::Spread)> = (0..stacks.len())
            .map(|i| {
                Ok((
                    measure::Spread::of(rates[i].iter().copied()).ok_or("no runs")?,
                    measure::Spread::of(cpus[i].iter().copied()).ok_or("no runs")?,
                ))
            })
            .collect::<Result<_, String>>()?;
        for (stack, (rate, cpu)) in stacks.iter().zip(&spreads) {
            println!(
                "{conns:<6} {stack:<7} {:>28} {:>24}",
                rate.show(0),
                cpu.show(1)
            );
        }
        let (qr, qc) = (&spreads[q].0, &spreads[q].1);
        for (name, (r, c)) in stacks[..q].iter().zip(&spreads) {
            println!(
                "{conns:<6} ratio   {name}/quinn: requests/s {:.2}x, CPU per request {:.2}x{}",
                r.median / qr.median,
                c.median / qc.median,
                match *name {
                    "axum" => " (gquic-axum's Router against h3-quinn's bare h3 server)",
                    "sharded" => " (2 server sockets, a client socket per connection)",
                    _ => "",
                }
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
