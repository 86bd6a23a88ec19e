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
//!   quinn interleaved in the same run with the same certificate, crypto provider and windows,
//!   one warm-up and R (5) counted runs each; prints Gbit/s and CPU-seconds per GB as median
//!   (min-max) and the ratios of the medians.
//!
//! Run with: `cargo run --release -p gquic-bench -- bulk`
//! - `h3 [--requests N]`: HTTP/3 requests/s and CPU per request, gquic and h3-quinn with the
//!   same `h3` crate and application, 1 and 10 connections, 100 concurrent GETs of 100 B.
//!
//! Later scenarios (`h3`, ...) arrive with their issues; unknown scenarios are refused.

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
#[path = "../../gquic-transport/benches/support/fixtures.rs"]
mod fixtures;
mod h3bench;
mod measure;

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

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let budget = args
        .iter()
        .position(|a| a == "--seconds")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse::<f64>().ok())
        .map_or(Duration::from_millis(500), Duration::from_secs_f64);
    match args.first().map(String::as_str) {
        Some("wire") => {
            wire(budget);
            ExitCode::SUCCESS
        }
        Some("bulk") => {
            let bytes = args
                .iter()
                .position(|a| a == "--mib")
                .and_then(|i| args.get(i + 1))
                .and_then(|s| s.parse::<u64>().ok())
                .map_or(1 << 30, |m| m << 20);
            let runs = args
                .iter()
                .position(|a| a == "--runs")
                .and_then(|i| args.get(i + 1))
                .and_then(|s| s.parse::<usize>().ok())
                .unwrap_or(5)
                .max(1);
            match bulk::run(bytes, runs) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("gquic-bench bulk: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some("h3") => {
            let requests = args
                .iter()
                .position(|a| a == "--requests")
                .and_then(|i| args.get(i + 1))
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(50_000);
            match h3bench::run(requests) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("gquic-bench h3: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some("h3-child") => {
            let (Some(dir), Some(conns), Some(requests)) = (
                args.get(1),
                args.get(2).and_then(|b| b.parse::<usize>().ok()),
                args.get(3).and_then(|b| b.parse::<u64>().ok()),
            ) else {
                return ExitCode::from(2);
            };
            match h3bench::child_gquic(std::path::Path::new(dir), conns, requests) {
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
                args.get(1),
                args.get(2).and_then(|b| b.parse::<u64>().ok()),
                args.get(3).and_then(|f| measure::Flavour::parse(f)),
                args.get(4).and_then(|d| bulk::Direction::parse(d)),
            ) else {
                return ExitCode::from(2);
            };
            match bulk::child_gquic(std::path::Path::new(dir), bytes, flavour, direction) {
                Ok(o) => {
                    println!("{}", o.line());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("gquic child: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        _ => {
            eprintln!(
                "usage: gquic-bench wire [--seconds S]\n       gquic-bench bulk [--mib N] [--runs R]\n       gquic-bench h3 [--requests N]\n\n\
                 scenarios: wire (per-packet codec and packet protection costs), bulk (1 GiB \
                 on one stream over loopback, gquic and quinn side by side)"
            );
            ExitCode::from(2)
        }
    }
}
