//! The `bulk` scenario: one stream, 1 GiB (by default) from client to server over loopback,
//! gquic and quinn each in a child process of its own so getrusage separates their CPU time.
//!
//! Both stacks use the same certificate, rustls with aws-lc-rs, TLS 1.3, and the same fixed
//! stream, connection and send windows (see `measure.rs`). The quinn child is the example
//! `quinn_bulk` of this package: quinn is a dev-dependency only, so it never enters a gquic
//! crate's normal dependency tree.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use gquic_transport::runtime::Endpoint;
use gquic_transport::{ClientConfig, ServerConfig, TransportConfig};

use crate::measure::{self, Outcome};

fn transport() -> Arc<TransportConfig> {
    let mut t = TransportConfig::default();
    t.stream_receive_window(measure::STREAM_WINDOW, measure::STREAM_WINDOW)
        .receive_window(measure::CONN_WINDOW, measure::CONN_WINDOW)
        .send_window(measure::SEND_WINDOW);
    Arc::new(t)
}

/// The gquic child: runs one transfer and prints its [`Outcome`].
pub(crate) fn child_gquic(dir: &Path, bytes: u64) -> Result<Outcome, Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let (server_tls, client_tls) = measure::tls_configs(dir);
        let mut sc = ServerConfig::new(Arc::new(server_tls))?;
        sc.transport(transport())?;
        let mut cc = ClientConfig::new(Arc::new(client_tls))?;
        cc.transport(transport())?;
        let server = Endpoint::server(sc, "127.0.0.1:0".parse()?)?;
        let addr = server.local_addr();
        let srv = tokio::spawn(async move {
            let conn = server.accept().await.ok_or("no connection")?.await?;
            let (mut send, mut recv) = conn.accept_bi().await?;
            let mut n = 0u64;
            while let Some(chunk) = recv.read_chunk(usize::MAX).await? {
                n += chunk.len() as u64;
            }
            send.write_all(&n.to_be_bytes()).await?;
            send.finish()?;
            let _ = send.stopped().await;
            let _ = conn.closed().await;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        });
        let client = Endpoint::client("127.0.0.1:0".parse()?)?;
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
        let lost = conn.stats().counters.packets_lost;
        conn.close(0u32.into(), b"done");
        client.wait_idle().await;
        let _ = srv.await;
        Ok(Outcome {
            bytes,
            wall,
            cpu,
            lost,
        })
    })
}

fn run_child(mut cmd: Command, name: &str) -> Result<Outcome, String> {
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

/// The parent: writes the certificate, runs both children, prints the comparison.
pub(crate) fn run(bytes: u64) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("gquic-bench-bulk-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into()]).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem())
        .map_err(|e| e.to_string())?;
    let quinn = quinn_child();
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    println!(
        "gquic-bench bulk: {} MiB on one stream, client -> server over 127.0.0.1, \
         AES-GCM with aws-lc-rs, windows stream {} MiB / connection {} MiB / send {} MiB\n",
        bytes >> 20,
        measure::STREAM_WINDOW >> 20,
        measure::CONN_WINDOW >> 20,
        measure::SEND_WINDOW >> 20
    );
    let mut cmd = Command::new(&exe);
    cmd.arg("bulk-child").arg(&dir).arg(bytes.to_string());
    let gquic = run_child(cmd, "gquic");
    let quinn = quinn.and_then(|bin| {
        let mut cmd = Command::new(bin);
        cmd.arg(&dir).arg(bytes.to_string());
        run_child(cmd, "quinn")
    });
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "{:<8} {:>10} {:>10} {:>16} {:>10}",
        "stack", "Gbit/s", "wall s", "CPU-s per GB", "lost pkts"
    );
    for (name, o) in [("gquic", &gquic), ("quinn", &quinn)] {
        match o {
            Ok(o) => println!(
                "{name:<8} {:>10.3} {:>10.3} {:>16.3} {:>10}",
                o.gbps(),
                o.wall.as_secs_f64(),
                o.cpu_per_gb(),
                o.lost
            ),
            Err(e) => println!("{name:<8} failed: {e}"),
        }
    }
    let (g, q) = (gquic?, quinn?);
    println!(
        "\nratio gquic/quinn: throughput {:.2}x, CPU per GB {:.2}x (CPU counts client and server, \
         both in one process per stack)",
        g.gbps() / q.gbps(),
        g.cpu_per_gb() / q.cpu_per_gb()
    );
    Ok(())
}
