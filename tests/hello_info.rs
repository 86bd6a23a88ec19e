//! `examples/hello` as an operator sees it: `/api/info` over HTTP/3 shows the connection's
//! and the endpoint's stats, and `--qlog DIR` writes a qlog trace of the connection.

#![allow(clippy::disallowed_methods)] // Deadlines on the real clock.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A temporary directory with a certificate and key for `localhost`.
fn cert_dir(name: &str) -> (Dir, PathBuf, PathBuf) {
    let dir = Dir(std::env::temp_dir().join(format!("gquic-hello-{name}-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert, key) = (dir.0.join("cert.pem"), dir.0.join("key.pem"));
    std::fs::write(&cert, c.cert.pem()).unwrap();
    std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
    (dir, cert, key)
}

/// `get https://localhost:PORT/api/info --ca CERT`, parsed.
fn api_info(port: u16, cert: &std::path::Path) -> serde_json::Value {
    let o = Command::new(common::example("get"))
        .args([
            &format!("https://localhost:{port}/api/info"),
            "--ca",
            cert.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn api_info_has_stats_and_qlog_dir_gets_a_trace() {
    let (dir, cert, key) = cert_dir("info");
    let qlogs = dir.0.join("qlogs");
    let served = common::serve(
        "hello",
        &[
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--qlog",
            qlogs.to_str().unwrap(),
        ],
    );
    let info = api_info(served.port, &cert);
    assert_eq!(info["protocol"], "h3", "{info}");
    let conn = &info["connection"];
    assert!(conn["packets_received"].as_u64().unwrap() > 0, "{info}");
    assert!(conn["bytes_sent"].as_u64().unwrap() > 1000, "{info}");
    assert!(conn["rtt_ms"].as_f64().unwrap() > 0.0, "{info}");
    assert!(conn["handshake_ms"].as_f64().unwrap() > 0.0, "{info}");
    assert!(conn["path_mtu"].as_u64().unwrap() >= 1200, "{info}");
    assert!(conn["congestion_window"].as_u64().unwrap() > 0, "{info}");
    let ep = &info["endpoint"];
    assert_eq!(ep["accepted"], 1, "{info}");
    assert_eq!(ep["open_connections"], 1, "{info}");
    assert!(ep["datagrams_received"].as_u64().unwrap() >= 2, "{info}");
    assert!(ep["bytes_sent"].as_u64().unwrap() > 1000, "{info}");

    // A graceful shutdown closes the connection; the server's trace ends with it.
    assert!(
        served.interrupt_and_wait(Duration::from_secs(20)),
        "hello did not shut down on SIGINT"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let trace = loop {
        let text = std::fs::read_dir(&qlogs)
            .unwrap()
            .filter_map(|e| e.ok())
            .find(|e| e.file_name().to_string_lossy().ends_with("_server.sqlog"))
            .and_then(|e| std::fs::read_to_string(e.path()).ok())
            .unwrap_or_default();
        if text.contains("quic:connection_closed") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(trace.starts_with('\u{1e}'), "{trace:.200}");
    for name in [
        "quic:connection_started",
        "quic:packet_received",
        "quic:packet_sent",
        "quic:connection_closed",
    ] {
        assert!(trace.contains(name), "no {name} in the server's qlog");
    }
    for record in trace.split('\u{1e}').skip(1) {
        serde_json::from_str::<serde_json::Value>(record).unwrap();
    }
}

#[test]
fn quic_sockets_spread_connections_over_a_reuseport_group() {
    let (_dir, cert, key) = cert_dir("shards");
    let served = common::serve(
        "hello",
        &[
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--quic-sockets",
            "2",
        ],
    );
    // Each `get` is a new process, so a new source port and 4-tuple.
    let mut info = serde_json::Value::Null;
    for _ in 0..10 {
        info = api_info(served.port, &cert);
        assert_eq!(info["protocol"], "h3", "{info}");
    }
    let ep = &info["endpoint"];
    assert_eq!(ep["sockets"], 2, "{info}");
    assert_eq!(ep["accepted"], 10, "{info}");
    let per_socket: Vec<u64> = ep["accepted_per_socket"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(per_socket.iter().sum::<u64>(), 10, "{info}");
    // All ten on one socket: probability 2^-9 when the kernel spreads them.
    assert!(per_socket.iter().all(|&n| n > 0), "{info}");
    assert!(
        served.interrupt_and_wait(Duration::from_secs(20)),
        "hello did not shut down on SIGINT"
    );
}
