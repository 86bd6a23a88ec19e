//! The `bulk` scenario: one stream, 1 GiB (by default) from client to server over loopback,
//! gquic and quinn each in a child process of its own so getrusage separates their CPU time.
//!
//! Both stacks use the same certificate, rustls with GQUIC's default provider (ring's
//! AES-128-GCM protecting packets), TLS 1.3, and the same fixed
//! stream, connection and send windows (see `measure.rs`). The quinn child is the example
//! `quinn_bulk` of this package: quinn is a dev-dependency only, so it never enters a gquic
//! crate's normal dependency tree.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use gquic_transport::runtime::Endpoint;
use gquic_transport::{ClientConfig, ServerConfig, TransportConfig};

use crate::measure::{self, ClientRun, Flavour, Outcome, Spread};

fn transport() -> Arc<TransportConfig> {
    let mut t = TransportConfig::default();
    t.stream_receive_window(measure::STREAM_WINDOW, measure::STREAM_WINDOW)
        .receive_window(measure::CONN_WINDOW, measure::CONN_WINDOW)
        .send_window(measure::SEND_WINDOW);
    Arc::new(t)
}

/// Which way the bytes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Client to server.
    Upload,
    /// Server to client.
    Download,
}

impl Direction {
    /// The name on the command line.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Direction::Upload => "up",
            Direction::Download => "down",
        }
    }

    /// Parses [`Direction::name`].
    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "up" => Some(Direction::Upload),
            "down" => Some(Direction::Download),
            _ => None,
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The gquic child: runs one transfer and returns its [`Outcome`].
///
/// Upload: the client writes `bytes` and finishes, the server answers with the count it read.
/// Download: the client asks for `bytes` (8 bytes, big-endian), the server writes them.
pub(crate) fn child_gquic(
    dir: &Path,
    bytes: u64,
    flavour: Flavour,
    direction: Direction,
) -> Result<Outcome, BoxError> {
    let (server_tls, client_tls) = measure::tls_configs(dir);
    let mut sc = ServerConfig::new(Arc::new(server_tls))?;
    sc.transport(transport())?;
    let mut cc = ClientConfig::new(Arc::new(client_tls))?;
    cc.transport(transport())?;
    let chunk = Bytes::from(vec![0xa5u8; measure::CHUNK]);
    let server_chunk = chunk.clone();
    let server_lost = Arc::new(AtomicU64::new(0));
    let lost_on_server = server_lost.clone();
    measure::run_pair(
        flavour,
        move |addr_tx| async move {
            let server = Endpoint::server(sc, "127.0.0.1:0".parse()?)?;
            addr_tx.send(server.local_addr())?;
            let conn = server.accept().await.ok_or("no connection")?.await?;
            let (mut send, mut recv) = conn.accept_bi().await?;
            match direction {
                Direction::Upload => {
                    let n = read_all(&mut recv).await?;
                    send.write_all(&n.to_be_bytes()).await?;
                }
                Direction::Download => {
                    let ask = recv.read_to_end(8).await?;
                    let want = u64::from_be_bytes(ask[..].try_into().map_err(|_| "short ask")?);
                    write_n(&mut send, &server_chunk, want).await?;
                }
            }
            send.finish()?;
            let _ = send.stopped().await;
            lost_on_server.store(conn.stats().counters.packets_lost, Ordering::Relaxed);
            let _ = conn.closed().await;
            server.wait_idle().await;
            Ok(())
        },
        move |addr| async move {
            let client = Endpoint::client("127.0.0.1:0".parse()?)?;
            let conn = client.connect_with(cc, addr, "localhost")?.await?;
            let t0 = Instant::now();
            let (mut send, mut recv) = conn.open_bi().await?;
            let moved = match direction {
                Direction::Upload => {
                    write_n(&mut send, &chunk, bytes).await?;
                    send.finish()?;
                    let echo = recv.read_to_end(8).await?;
                    u64::from_be_bytes(echo[..].try_into().map_err(|_| "short answer")?)
                }
                Direction::Download => {
                    send.write_all(&bytes.to_be_bytes()).await?;
                    send.finish()?;
                    read_all(&mut recv).await?
                }
            };
            let wall = t0.elapsed();
            if moved != bytes {
                return Err(format!("{moved} of {bytes} bytes arrived").into());
            }
            // The sender's losses.
            let lost = match direction {
                Direction::Upload => conn.stats().counters.packets_lost,
                Direction::Download => server_lost.load(Ordering::Relaxed),
            };
            conn.close(0u32.into(), b"done");
            client.wait_idle().await;
            Ok(ClientRun {
                units: bytes,
                wall,
                lost,
                round_trips: Vec::new(),
            })
        },
    )
}

/// Reads `recv` to its end, [`measure::READ_SLOTS`] chunks per call, without copying; returns the
/// number of bytes.
async fn read_all(recv: &mut gquic_transport::runtime::RecvStream) -> Result<u64, BoxError> {
    let mut slots: [Bytes; measure::READ_SLOTS] = Default::default();
    let mut n = 0u64;
    while let Some(k) = recv.read_chunks(&mut slots).await? {
        n += slots[..k].iter().map(|c| c.len() as u64).sum::<u64>();
    }
    Ok(n)
}

/// Writes `n` bytes of `chunk` (repeated) to `send`.
async fn write_n(
    send: &mut gquic_transport::runtime::SendStream,
    chunk: &Bytes,
    n: u64,
) -> Result<(), BoxError> {
    let mut sent = 0u64;
    while sent < n {
        let take = (n - sent).min(chunk.len() as u64) as usize;
        send.write_chunk(chunk.slice(..take)).await?;
        sent += take as u64;
    }
    Ok(())
}

/// Runs a child and parses its `RESULT` line.
pub(crate) fn run_child(mut cmd: Command, name: &str) -> Result<Outcome, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("{name}: cannot start: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "{name} failed: {}{}",
            stdout,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Outcome::parse(&stdout).ok_or(format!("{name}: no RESULT line in {stdout:?}"))
}

/// Writes a fresh `localhost` certificate and key into a temporary directory.
pub(crate) fn write_cert_dir(tag: &str) -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("gquic-bench-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into()]).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem())
        .map_err(|e| e.to_string())?;
    Ok(dir)
}

/// Finds (building it if needed) the quinn child next to this executable's profile.
fn quinn_child() -> Result<PathBuf, String> {
    build_example("quinn_bulk")
}

/// Builds an example of this package (a quinn child) with this executable's profile.
pub(crate) fn build_example(name: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let profile_dir = exe.parent().ok_or("no executable directory")?;
    let bin = profile_dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    let release = profile_dir.ends_with("release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("building the quinn side (example {name}, quinn is a dev-dependency)...");
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-q", "-p", "gquic-bench", "--example", name]);
    if release {
        cmd.arg("--release");
    }
    let status = cmd.status().map_err(|e| format!("cargo: {e}"))?;
    if !status.success() || !bin.exists() {
        return Err(format!("could not build {}", bin.display()));
    }
    Ok(bin)
}

/// One child run of `stack` ("gquic" or "quinn").
fn one_run(
    stack: &str,
    exe: &Path,
    quinn: &Path,
    dir: &Path,
    bytes: u64,
    flavour: Flavour,
    direction: Direction,
) -> Result<Outcome, String> {
    let mut cmd = if stack == "gquic" {
        let mut c = Command::new(exe);
        c.arg("bulk-child");
        c
    } else {
        Command::new(quinn)
    };
    cmd.arg(dir)
        .arg(bytes.to_string())
        .arg(flavour.name())
        .arg(direction.name());
    run_child(cmd, stack)
}

/// The parent: writes the certificate, runs both stacks interleaved (one warm-up each, then
/// `runs` counted runs each) in every flavour and direction, prints the comparison.
pub(crate) fn run(bytes: u64, runs: usize) -> Result<(), String> {
    let dir = write_cert_dir("bulk")?;
    let quinn = quinn_child()?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    println!(
        "gquic-bench bulk: {} MiB on one stream over 127.0.0.1, AES-128-GCM with ring (the \
         default provider's suites), windows stream {} MiB / connection {} MiB / send {} MiB, UDP socket buffers {} MiB \
         on both stacks, the receiver taking up to {} chunks per read (`read_chunks`); 1 warm-up + {runs} runs per stack, interleaved; median (min-max)\n\
         ct: server and client on current-thread runtimes of their own threads (CPU per side); \
         mt: one 2-worker multi-thread runtime (CPU of the process)\n",
        bytes >> 20,
        measure::STREAM_WINDOW >> 20,
        measure::CONN_WINDOW >> 20,
        measure::SEND_WINDOW >> 20,
        measure::SOCKET_BUFFER >> 20,
        measure::READ_SLOTS,
    );
    // The work every stack must do (see `ceilings::floor`): what a stack spends above it is
    // its own.
    let floor = match crate::ceilings::floor(crate::ceilings::SPAN) {
        Ok((send, recv)) => {
            println!(
                "floor (no QUIC: copy + seal + GSO send | GRO receive + open, see `ceilings`): \
                 {:.3} CPU-s/GB ({send:.3} + {recv:.3})\n",
                send + recv
            );
            Some(send + recv)
        }
        Err(e) => {
            println!("floor: not measured ({e})\n");
            None
        }
    };
    println!(
        "{:<10} {:<6} {:>24} {:>22} {:>10} {:>10} {:>8}",
        "scenario", "stack", "Gbit/s", "CPU-s/GB", "client", "server", "lost"
    );
    let mut failed = false;
    for flavour in [Flavour::CurrentThread, Flavour::MultiThread] {
        for direction in [Direction::Upload, Direction::Download] {
            let name = format!("{}-{}", direction.name(), flavour.name());
            let mut results: [Vec<Outcome>; 2] = [Vec::new(), Vec::new()];
            let mut errors: [Option<String>; 2] = [None, None];
            for round in 0..=runs {
                for (i, stack) in ["gquic", "quinn"].into_iter().enumerate() {
                    if errors[i].is_some() {
                        continue;
                    }
                    // The warm-up moves a quarter of the bytes.
                    let n = if round == 0 { bytes / 4 } else { bytes };
                    match one_run(stack, &exe, &quinn, &dir, n, flavour, direction) {
                        Ok(o) if round > 0 => results[i].push(o),
                        Ok(_) => {}
                        Err(e) => errors[i] = Some(e),
                    }
                }
            }
            let mut gbps = [0.0; 2];
            let mut cpu = [0.0; 2];
            for (i, stack) in ["gquic", "quinn"].into_iter().enumerate() {
                if let Some(e) = &errors[i] {
                    println!("{name:<10} {stack:<6} failed: {e}");
                    failed = true;
                    continue;
                }
                let r = &results[i];
                let g = Spread::of(r.iter().map(Outcome::gbps)).ok_or("no runs")?;
                let c = Spread::of(r.iter().map(Outcome::cpu_per_gb)).ok_or("no runs")?;
                let side = |f: fn(&Outcome) -> Option<std::time::Duration>| {
                    Spread::of(
                        r.iter()
                            .filter_map(|o| f(o).map(|d| d.as_secs_f64() / (o.bytes as f64 / 1e9))),
                    )
                    .map_or("-".to_owned(), |s| format!("{:.3}", s.median))
                };
                let lost = Spread::of(r.iter().map(|o| o.lost as f64)).ok_or("no runs")?;
                gbps[i] = g.median;
                cpu[i] = c.median;
                println!(
                    "{name:<10} {stack:<6} {:>24} {:>22} {:>10} {:>10} {:>8.0}",
                    g.show(3),
                    c.show(3),
                    side(|o| o.client_cpu),
                    side(|o| o.server_cpu),
                    lost.median
                );
            }
            if errors.iter().all(Option::is_none) {
                println!(
                    "{name:<10} ratio  throughput {:.2}x, CPU per GB {:.2}x (gquic/quinn, medians)",
                    gbps[0] / gbps[1],
                    cpu[0] / cpu[1]
                );
                let of = |f: fn(&Outcome) -> f64, i: usize| -> Vec<f64> {
                    results[i].iter().map(f).collect()
                };
                if let (Some(t), Some(c)) = (
                    Spread::of_pairs(&of(Outcome::gbps, 0), &of(Outcome::gbps, 1)),
                    Spread::of_pairs(&of(Outcome::cpu_per_gb, 0), &of(Outcome::cpu_per_gb, 1)),
                ) {
                    println!(
                        "{name:<10} paired ratios (each round's gquic run against the quinn run \
                         that followed it): throughput median {:.2}x ({:.2}x-{:.2}x), CPU per GB \
                         median {:.2}x ({:.2}x-{:.2}x)",
                        t.median, t.min, t.max, c.median, c.min, c.max
                    );
                }
                if let Some(f) = floor {
                    println!(
                        "{name:<10} above the floor ({f:.3}): gquic {:.3}, quinn {:.3} CPU-s/GB, \
                         ratio {:.2}x (each stack's own work)",
                        cpu[0] - f,
                        cpu[1] - f,
                        (cpu[0] - f) / (cpu[1] - f)
                    );
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    if failed {
        return Err("a run failed".into());
    }
    Ok(())
}
