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
) -> Result<Outcome, Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let (mut server_tls, mut client_tls) = measure::tls_configs(dir);
        server_tls.alpn_protocols = vec![b"h3".to_vec()];
        client_tls.alpn_protocols = vec![b"h3".to_vec()];
        let server = Endpoint::server(
            ServerConfig::new(Arc::new(server_tls))?,
            "127.0.0.1:0".parse()?,
        )?;
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
        let client = Endpoint::client("127.0.0.1:0".parse()?)?;
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

/// The parent: runs both stacks for 1 and 10 connections and prints the comparison.
pub(crate) fn run(requests: u64) -> Result<(), String> {
    let dir = crate::bulk::write_cert_dir("h3")?;
    let quinn = crate::bulk::build_example("quinn_h3");
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    println!(
        "gquic-bench h3: {requests} GETs of 100 B per run, {CONCURRENCY} in flight, same h3 \
         crate and application on both stacks, over 127.0.0.1\n"
    );
    println!(
        "{:<6} {:<7} {:>12} {:>16}",
        "conns", "stack", "requests/s", "CPU us/request"
    );
    let mut failed = None;
    for conns in [1usize, 10] {
        let child = |axum: bool| {
            let mut cmd = Command::new(&exe);
            cmd.arg("h3-child")
                .arg(&dir)
                .arg(conns.to_string())
                .arg(requests.to_string());
            if axum {
                cmd.arg("axum");
            }
            cmd
        };
        let g = run_child(child(false), "gquic");
        let a = run_child(child(true), "gquic-axum");
        let q = quinn.clone().and_then(|bin| {
            let mut cmd = Command::new(bin);
            cmd.arg(&dir)
                .arg(conns.to_string())
                .arg(requests.to_string());
            run_child(cmd, "h3-quinn")
        });
        let per = |o: &Outcome| {
            (
                o.bytes as f64 / o.wall.as_secs_f64(),
                o.cpu.as_secs_f64() * 1e6 / o.bytes as f64,
            )
        };
        for (name, o) in [("gquic", &g), ("axum", &a), ("quinn", &q)] {
            match o {
                Ok(o) => {
                    let (rps, cpu) = per(o);
                    println!("{conns:<6} {name:<7} {rps:>12.0} {cpu:>16.1}");
                }
                Err(e) => {
                    println!("{conns:<6} {name:<7} failed: {e}");
                    failed = Some(e.clone());
                }
            }
        }
        if let (Ok(g), Ok(q)) = (&g, &q) {
            let (gr, gc) = per(g);
            let (qr, qc) = per(q);
            println!(
                "{conns:<6} ratio   gquic/quinn: requests/s {:.2}x, CPU per request {:.2}x",
                gr / qr,
                gc / qc
            );
        }
        if let (Ok(a), Ok(q)) = (&a, &q) {
            let (ar, ac) = per(a);
            let (qr, qc) = per(q);
            println!(
                "{conns:<6} ratio   axum/quinn: requests/s {:.2}x, CPU per request {:.2}x \
                 (gquic-axum's Router against h3-quinn's bare h3 server)",
                ar / qr,
                ac / qc
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
