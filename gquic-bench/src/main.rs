//! `gquic-bench`: GQUIC's measuring tool.
//!
//! Run with: `cargo run --release -p gquic-bench -- wire`
//!
//! Scenarios:
//! - `wire`: the cost per 1350-byte packet of frame decoding, ACK coding and packet protection
//!   (seal + open with AES-128-GCM and ChaCha20-Poly1305, aws-lc-rs and ring), in ns/packet and
//!   Gbit/s on this machine. The same inputs as the criterion benches of gquic-transport.
//!
//! - `bulk [--mib N] [--runs R]`: 1 GiB (or N MiB) on one stream over loopback, upload and
//!   download, with server and client on current-thread runtimes of their own threads (CPU
//!   time per side, getrusage per thread) and on one 2-worker multi-thread runtime; gquic and
//!   quinn interleaved in the same run with the same certificate, crypto provider, windows and
//!   UDP socket buffers (4 MiB, what gquic's runtime asks for; quinn's sockets get the same),
//!   the receiver reading up to 32 received chunks per call on both stacks (`read_chunks`),
//!   one warm-up and R (5) counted runs each; prints Gbit/s and CPU-seconds per GB as median
//!   (min-max) and the ratios of the medians, and each stack's CPU per GB above the floor that
//!   `ceilings` measures (the work any stack must do), measured first.
//!
//! Run with: `cargo run --release -p gquic-bench -- bulk`
//! - `h3 [--requests N] [--runs R]`: HTTP/3 requests/s and CPU per request, gquic and
//!   h3-quinn with the same `h3` crate and application, 1 and 10 connections, 100 concurrent
//!   GETs of 100 B; and gquic answering from an axum `Router` through `gquic_axum::serve`; one
//!   warm-up and R (5) runs per stack, interleaved.
//! - `streams`, `handshakes`, `latency`, `idle [--connections N] [--gquic-only]`: the small
//!   scenarios (see `scenarios`), gquic and quinn interleaved; `streams` and full
//!   `handshakes` also on multi-thread runtimes (`-mt` lines).
//! - `ceilings`: packet protection and raw UDP send rates on this host, and the floor under
//!   `bulk`'s CPU per GB (seal + GSO send, GRO receive + open, no QUIC).
//! - `all`: every scenario above in one run.
//!
//! Unknown scenarios are refused.

// A measuring tool reads the clock; the sans-IO rule does not apply here.
#![allow(clippy::disallowed_methods)]

use std::hint::black_box;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gquic_transport::wire::frame::{encode_ack, Frame, Iter};
use gquic_transport::wire::PacketType;

mod bulk;
#[macro_use]
mod h3app;
mod ceilings;
#[path = "../../gquic-transport/benches/support/fixtures.rs"]
mod fixtures;
mod h3bench;
mod measure;
mod scenarios;

/// Runs `f` repeatedly for about `budget` after a warm-up; returns the median of five runs in
/// nanoseconds per call.
fn measure(budget: Duration, mut f: impl FnMut()) -> f64 {
    // Warm up and size a batch so each timed run lasts about budget / 5.
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed() < budget / 10 {
        f();
        calls += 1;
    }
    let per_call = start.elapsed().as_secs_f64() / calls as f64;
    let batch = ((budget.as_secs_f64() / 5.0) / per_call).max(1.0) as u64;
    let mut runs: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..batch {
                f();
            }
            t.elapsed().as_nanos() as f64 / batch as f64
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[2]
}

fn row(name: &str, ns: f64, bytes: usize) {
    let gbps = bytes as f64 * 8.0 / ns;
    println!("{name:<44} {ns:>10.1} ns {gbps:>9.2} Gbit/s");
}

fn wire(budget: Duration) {
    println!(
        "gquic-bench wire: {} byte packets, median of 5 runs\n",
        fixtures::PACKET_SIZE
    );
    let payload = fixtures::stream_payload();
    let ns = measure(budget, || {
        for frame in Iter::new(black_box(payload.clone()), PacketType::OneRtt) {
            black_box(&frame);
        }
    });
    row("frame decode (STREAM frames, 1350 B)", ns, payload.len());

    for n in [16u64, 256] {
        let ranges = fixtures::ack_ranges(n);
        let mut buf = Vec::with_capacity(4096);
        let ns = measure(budget, || {
            buf.clear();
            encode_ack(black_box(&ranges), 100, None, &mut buf);
        });
        println!("{:<44} {ns:>10.1} ns", format!("ACK encode, {n} ranges"));
        let encoded = Bytes::from(buf.clone());
        let ns = measure(budget, || {
            if let Ok(Frame::Ack(ack)) = Frame::decode(&mut black_box(encoded.clone())) {
                black_box(ack.iter().count());
            }
        });
        println!(
            "{:<44} {ns:>10.1} ns",
            format!("ACK decode + walk, {n} ranges")
        );
    }

    for (provider_name, provider, cipher, cipher_name) in fixtures::providers() {
        let (packet_key, header_key) = fixtures::keys(&provider, cipher);
        let (mut buf, header_len, pn_offset) = fixtures::one_rtt_packet();
        let ns = measure(budget, || {
            fixtures::seal_open(
                &mut buf,
                header_len,
                pn_offset,
                packet_key.as_ref(),
                header_key.as_ref(),
            )
        });
        row(
            &format!("seal+open {cipher_name} ({provider_name})"),
            ns,
            fixtures::PACKET_SIZE,
        );
    }
}

/// The value after `--name` on the command line.
fn flag<T: std::str::FromStr>(args: &[String], name: &str) -> Option<T> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
}

/// Prints a child's outcome (or its error) and returns the exit code.
fn child(
    what: &str,
    r: Result<measure::Outcome, Box<dyn std::error::Error + Send + Sync>>,
) -> ExitCode {
    match r {
        Ok(o) => {
            println!("{}", o.line());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gquic {what} child: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A scenario's result as an exit code.
fn done(what: &str, r: Result<(), String>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gquic-bench {what}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `streams`, `handshakes` (full and resumed) and `latency` (with the raw UDP reference).
fn small_scenarios(which: &str, args: &[String], runs: usize) -> Result<(), String> {
    let dir = bulk::write_cert_dir(which)?;
    let d = dir.display().to_string();
    let ct = measure::Flavour::CurrentThread.name().to_owned();
    let mt = measure::Flavour::MultiThread.name().to_owned();
    // The multi-thread variants: each side on a 2-worker runtime (labels end in `-mt`).
    let label = |name: &str, flavour: &str| {
        if flavour == "mt" {
            format!("{name}-mt")
        } else {
            name.to_owned()
        }
    };
    let result = (|| {
        if which == "streams" || which == "all" {
            let n: u64 = flag(args, "--count").unwrap_or(100_000);
            println!(
                "\nstreams: {n} bidirectional streams of {} B echoed, {} at a time, one \
                 connection, ct and mt; 1 warm-up + {runs} runs per stack, interleaved; median \
                 (min-max)",
                measure::SMALL,
                measure::CONCURRENT_STREAMS
            );
            for f in [&ct, &mt] {
                let a = ["streams".into(), d.clone(), n.to_string(), f.clone()];
                scenarios::compare(
                    &label("streams", f),
                    &a,
                    runs,
                    scenarios::Metric::Rate("stream"),
                )?;
            }
        }
        if which == "handshakes" || which == "all" {
            let n: u64 = flag(args, "--count").unwrap_or(5_000);
            println!(
                "\nhandshakes: {n} connections (full; resumed: up to 2000), {} at a time, each \
                 closed once established (ECDSA P-256, X25519MLKEM768 offered), ct (full also \
                 mt); resumed: each connection also waits for a 1-byte server stream sent after \
                 its session tickets, and the run fails unless 90% of handshakes present one; \
                 1 warm-up + {runs} runs per stack",
                measure::CONCURRENT_HANDSHAKES
            );
            for (mode, f) in [("full", &ct), ("resume", &ct), ("full", &mt)] {
                // The resumed variant runs 2,000 (it only needs to show the difference).
                let n = if mode == "resume" { n.min(2_000) } else { n };
                let a = [
                    "handshakes".into(),
                    d.clone(),
                    n.to_string(),
                    mode.to_owned(),
                    f.clone(),
                ];
                scenarios::compare(
                    &label(&format!("handshakes-{mode}"), f),
                    &a,
                    runs,
                    scenarios::Metric::Rate("handshake"),
                )?;
            }
        }
        if which == "latency" || which == "all" {
            let n: u64 = flag(args, "--count").unwrap_or(10_000);
            println!(
                "\nlatency: {n} one-byte round trips on one stream (after {} unmeasured), ct; \
                 1 warm-up + {runs} runs per stack; `latency`: each side's work is its runtime's \
                 `block_on` future, `latency-tasks`: a task spawned on it (ctt)",
                measure::LATENCY_WARM_UP
            );
            let ctt = measure::Flavour::CurrentThreadTasks.name().to_owned();
            for (name, f) in [("latency", &ct), ("latency-tasks", &ctt)] {
                let a = ["latency".into(), d.clone(), n.to_string(), f.clone()];
                // Raw UDP runs interleaved with the QUIC ones: the machine's wake-up latency
                // drifts by tens of microseconds between minutes.
                let mut udp = Vec::new();
                let outcomes =
                    scenarios::compare_with(name, &a, runs, scenarios::Metric::Latency, || {
                        udp.push(
                            measure::udp_pingpong(n, measure::Flavour::CurrentThread)
                                .map_err(|e| e.to_string())?,
                        );
                        Ok(())
                    })?;
                let p = |o: &measure::Outcome| o.percentiles.unwrap_or_default();
                let udp50 = measure::Spread::of(udp.iter().map(|o| p(o).0)).ok_or("no runs")?;
                let udp99 = measure::Spread::of(udp.iter().map(|o| p(o).1)).ok_or("no runs")?;
                println!(
                    "{:<18} {:<6} p50 {:>24} µs   p99 {:>24} µs",
                    name,
                    "udp",
                    udp50.show(1),
                    udp99.show(1)
                );
                let p99 = |stack: usize| {
                    measure::Spread::of(
                        outcomes[stack * runs..(stack + 1) * runs]
                            .iter()
                            .map(|o| p(o).1),
                    )
                    .ok_or("no runs")
                };
                println!(
                    "{:<18} gquic p99 - raw UDP p99 = {:.1} µs, quinn's {:.1} µs (medians)",
                    name,
                    p99(0)?.median - udp99.median,
                    p99(1)?.median - udp99.median
                );
            }
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let budget =
        flag::<f64>(&args, "--seconds").map_or(Duration::from_millis(500), Duration::from_secs_f64);
    let runs = flag::<usize>(&args, "--runs").unwrap_or(5).max(1);
    let path = |i: usize| args.get(i).map(std::path::PathBuf::from);
    let num = |i: usize| args.get(i).and_then(|b| b.parse::<u64>().ok());
    let flavour = |i: usize| args.get(i).and_then(|f| measure::Flavour::parse(f));
    match args.first().map(String::as_str) {
        Some("wire") => {
            wire(budget);
            ExitCode::SUCCESS
        }
        Some("ceilings") => {
            wire(budget);
            done("ceilings", ceilings::run())
        }
        Some("bulk") => {
            let bytes = flag::<u64>(&args, "--mib").map_or(1 << 30, |m| m << 20);
            done("bulk", bulk::run(bytes, runs))
        }
        Some("h3") => {
            let requests = flag(&args, "--requests").unwrap_or(50_000);
            done("h3", h3bench::run(requests, runs))
        }
        Some(which @ ("streams" | "handshakes" | "latency")) => {
            done(which, small_scenarios(which, &args, runs))
        }
        Some("all") => {
            let t0 = Instant::now();
            wire(budget);
            let mut ok = done("ceilings", ceilings::run()) == ExitCode::SUCCESS;
            println!();
            ok &= done("bulk", bulk::run(1 << 30, runs)) == ExitCode::SUCCESS;
            ok &= done("small", small_scenarios("all", &args, runs)) == ExitCode::SUCCESS;
            println!();
            ok &= done("h3", h3bench::run(50_000, runs)) == ExitCode::SUCCESS;
            ok &= done("idle", scenarios::idle(10_000, false)) == ExitCode::SUCCESS;
            println!("\ngquic-bench all: {:.0} s", t0.elapsed().as_secs_f64());
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Some("h3-child") => {
            let (Some(dir), Some(conns), Some(requests)) = (path(1), num(2), num(3)) else {
                return ExitCode::from(2);
            };
            let mode = args.get(4).map(String::as_str).unwrap_or("");
            let axum = mode.starts_with("axum");
            let sharded = mode.ends_with("sharded");
            match h3bench::child_gquic(&dir, conns as usize, requests, axum, sharded) {
                Ok(o) => {
                    println!("{}", o.line());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("gquic h3 child: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some("bulk-child") => {
            let (Some(dir), Some(bytes), Some(flavour), Some(direction)) = (
                path(1),
                num(2),
                flavour(3),
                args.get(4).and_then(|d| bulk::Direction::parse(d)),
            ) else {
                return ExitCode::from(2);
            };
            child("bulk", bulk::child_gquic(&dir, bytes, flavour, direction))
        }
        Some("streams-child") => {
            let (Some(dir), Some(n), Some(flavour)) = (path(1), num(2), flavour(3)) else {
                return ExitCode::from(2);
            };
            child("streams", scenarios::child_streams(&dir, n, flavour))
        }
        Some("handshakes-child") => {
            let (Some(dir), Some(n), Some(mode), Some(flavour)) =
                (path(1), num(2), args.get(3), flavour(4))
            else {
                return ExitCode::from(2);
            };
            let resume = mode == "resume";
            child(
                "handshakes",
                scenarios::child_handshakes(&dir, n, resume, flavour),
            )
        }
        Some("idle") => {
            let n = flag(&args, "--connections").unwrap_or(10_000);
            let gquic_only = args.iter().any(|a| a == "--gquic-only");
            done("idle", scenarios::idle(n, gquic_only))
        }
        Some("idle-server-child") => {
            let (Some(dir), Some(n), Some(streams)) = (path(1), num(2), num(3)) else {
                return ExitCode::from(2);
            };
            match scenarios::child_idle_server(&dir, n, streams) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("gquic idle child: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some("latency-child") => {
            let (Some(dir), Some(n), Some(flavour)) = (path(1), num(2), flavour(3)) else {
                return ExitCode::from(2);
            };
            child("latency", scenarios::child_latency(&dir, n, flavour))
        }
        _ => {
            eprintln!(
                "usage: gquic-bench SCENARIO [--runs R]\n\
                 \n  wire [--seconds S]      per-packet codec and packet protection costs\
                 \n  ceilings                wire, raw UDP send with and without GSO, bulk CPU floor\
                 \n  bulk [--mib N]          1 GiB on one stream, up and down, ct and mt\
                 \n  streams [--count N]     100k small bidi streams, 100 at a time\
                 \n  handshakes [--count N]  5k handshakes, 64 at a time, full and resumed\
                 \n  latency [--count N]     1-byte ping-pong p50/p99 (app as block_on future and as task), raw UDP's\
                 \n  h3 [--requests N]       HTTP/3 GETs, 1 and 10 connections\
                 \n  idle [--connections N] [--gquic-only]  heap and RSS per idle server connection\
                 \n  all                     every scenario (gquic and quinn side by side)"
            );
            ExitCode::from(2)
        }
    }
}
