//! Interoperability with the Python `aioquic` package over hq-interop (HTTP/0.9), driving the
//! `examples/interop` endpoint through its command line:
//!
//! - an aioquic client (`scripts/aioquic_hq.py client`) downloads a 5 MiB file from
//!   `interop server`;
//! - `interop client` downloads from an aioquic server (`scripts/aioquic_hq.py server`).
//!
//! The interpreter comes from `GQUIC_PYTHON` (set by `scripts/test.sh`, which installs
//! aioquic), else `python3`; without aioquic these tests fail and say how to fix it.

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sha2::{Digest, Sha256};

fn python() -> String {
    let py = std::env::var("GQUIC_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&py)
        .args(["-c", "import aioquic"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{py} cannot import aioquic: run the tests with scripts/test.sh, or set GQUIC_PYTHON \
         to a Python with `pip install aioquic`"
    );
    py
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `cargo test` builds the examples next to the test binaries: target/<profile>/examples.
fn interop_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir
        .join("examples")
        .join(format!("interop{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: run `cargo test` (it builds examples) or `cargo build --example interop`",
        bin.display()
    );
    bin
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("gquic-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A CA and a `localhost` certificate it signed, as PEM files; returns (ca, cert, key).
fn write_certs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "gquic test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    let cert = params.signed_by(&key, &issuer).unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, ca_cert.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `cmd`, failing the test after `secs` seconds.
fn run_with_timeout(mut cmd: Command, secs: u64) -> std::process::Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let id = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").arg(id.to_string()).status();
            panic!("command did not finish in {secs} s");
        }
    }
}

#[test]
fn aioquic_client_downloads_from_gquic_server() {
    let py = python();
    let dir = TempDir::new("aioquic-client");
    let (ca, cert, key) = write_certs(&dir.0);
    let www = dir.0.join("www");
    std::fs::create_dir_all(&www).unwrap();
    let body = pattern(5 << 20, 7);
    std::fs::write(www.join("5mib.bin"), &body).unwrap();
    std::fs::write(www.join("small.txt"), b"hello from gquic\n").unwrap();

    let (_server, port) = start_interop_server(&www, &cert, &key);

    let out_dir = dir.0.join("out");
    let mut cmd = Command::new(&py);
    cmd.arg(repo().join("scripts/aioquic_hq.py"))
        .args(["client", "--output"])
        .arg(&out_dir)
        .arg("--ca")
        .arg(&ca)
        .arg(format!("https://localhost:{port}/5mib.bin"))
        .arg(format!("https://localhost:{port}/small.txt"));
    let out = run_with_timeout(cmd, 120);
    assert!(
        out.status.success(),
        "aioquic client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = std::fs::read(out_dir.join("5mib.bin")).unwrap();
    assert_eq!(got.len(), body.len());
    assert_eq!(Sha256::digest(&got), Sha256::digest(&body));
    assert_eq!(
        std::fs::read(out_dir.join("small.txt")).unwrap(),
        b"hello from gquic\n"
    );

    // A missing file is a reset stream, which the aioquic client reports as a failure.
    let mut cmd = Command::new(&py);
    cmd.arg(repo().join("scripts/aioquic_hq.py"))
        .args(["client", "--output"])
        .arg(&out_dir)
        .arg("--ca")
        .arg(&ca)
        .arg(format!("https://localhost:{port}/missing.bin"));
    let out = run_with_timeout(cmd, 60);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("reset"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn gquic_client_downloads_from_aioquic_server() {
    let py = python();
    let dir = TempDir::new("aioquic-server");
    let (ca, cert, key) = write_certs(&dir.0);
    let www = dir.0.join("www");
    std::fs::create_dir_all(&www).unwrap();
    let body = pattern(5 << 20, 11);
    std::fs::write(www.join("5mib.bin"), &body).unwrap();
    let small: Vec<Vec<u8>> = (0..10).map(|i| pattern(1000 + i * 999, i as u64)).collect();
    for (i, b) in small.iter().enumerate() {
        std::fs::write(www.join(format!("f{i}.bin")), b).unwrap();
    }

    let (_server, port) = start_aioquic_server(&py, "aioquic_hq", &www, &cert, &key);

    let out_dir = dir.0.join("out");
    let mut cmd = Command::new(interop_bin());
    cmd.args(["client", "--alpn", "hq-interop", "--output"])
        .arg(&out_dir)
        .arg("--ca")
        .arg(&ca)
        .arg(format!("https://localhost:{port}/5mib.bin"));
    for i in 0..small.len() {
        cmd.arg(format!("https://localhost:{port}/f{i}.bin"));
    }
    let out = run_with_timeout(cmd, 120);
    assert!(
        out.status.success(),
        "interop client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = std::fs::read(out_dir.join("5mib.bin")).unwrap();
    assert_eq!(Sha256::digest(&got), Sha256::digest(&body));
    for (i, b) in small.iter().enumerate() {
        assert_eq!(
            &std::fs::read(out_dir.join(format!("f{i}.bin"))).unwrap(),
            b
        );
    }

    // The client exits non-zero when a download fails (aioquic resets the stream).
    let mut cmd = Command::new(interop_bin());
    cmd.args(["client", "--alpn", "hq-interop", "--output"])
        .arg(&out_dir)
        .arg("--ca")
        .arg(&ca)
        .arg(format!("https://localhost:{port}/f0.bin"))
        .arg(format!("https://localhost:{port}/nope.bin"));
    let out = run_with_timeout(cmd, 60);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nope.bin") && err.contains("reset"), "{err}");
}

/// One hq-interop case for a transport feature: certificates, a served directory holding
/// `first.txt` and `file` (`len` bytes), and both clients as commands.
struct Case {
    py: String,
    _dir: TempDir,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    www: PathBuf,
    out: PathBuf,
    file: &'static str,
    body: Vec<u8>,
}

impl Case {
    fn new(tag: &str, file: &'static str, len: usize, seed: u64) -> Self {
        let dir = TempDir::new(tag);
        let (ca, cert, key) = write_certs(&dir.0);
        let www = dir.0.join("www");
        std::fs::create_dir_all(&www).unwrap();
        let body = pattern(len, seed);
        std::fs::write(www.join(file), &body).unwrap();
        std::fs::write(www.join("first.txt"), b"first\n").unwrap();
        Self {
            py: python(),
            out: dir.0.join("out"),
            _dir: dir,
            ca,
            cert,
            key,
            www,
            file,
            body,
        }
    }

    fn urls(&self, port: u16, with_first: bool) -> Vec<String> {
        let mut urls = Vec::new();
        if with_first {
            urls.push(format!("https://localhost:{port}/first.txt"));
        }
        urls.push(format!("https://localhost:{port}/{}", self.file));
        urls
    }

    /// `aioquic_hq.py client FLAGS` against `port`.
    fn aioquic(&self, port: u16, flags: &[&str], with_first: bool) -> std::process::Output {
        self.aioquic_urls(flags, &self.urls(port, with_first))
    }

    /// `aioquic_hq.py client FLAGS URLS`.
    fn aioquic_urls(&self, flags: &[&str], urls: &[String]) -> std::process::Output {
        let mut cmd = Command::new(&self.py);
        cmd.arg(repo().join("scripts/aioquic_hq.py"))
            .arg("client")
            .args(flags)
            .arg("--output")
            .arg(&self.out)
            .arg("--ca")
            .arg(&self.ca)
            .args(urls);
        run_with_timeout(cmd, 120)
    }

    /// `interop client --alpn hq-interop FLAGS` against `port`.
    fn gquic(&self, port: u16, flags: &[&str], with_first: bool) -> std::process::Output {
        self.gquic_urls(flags, &self.urls(port, with_first))
    }

    /// `interop client --alpn hq-interop FLAGS URLS`.
    fn gquic_urls(&self, flags: &[&str], urls: &[String]) -> std::process::Output {
        let mut cmd = Command::new(interop_bin());
        cmd.args(["client", "--alpn", "hq-interop"])
            .args(flags)
            .arg("--output")
            .arg(&self.out)
            .arg("--ca")
            .arg(&self.ca)
            .args(urls);
        run_with_timeout(cmd, 120)
    }

    /// `first.txt` from the server at `first`, then `file` from the server at `second`: with
    /// `--zero-rtt`, a ticket from one server offered to another.
    fn two_servers(&self, first: u16, second: u16) -> Vec<String> {
        vec![
            format!("https://localhost:{first}/first.txt"),
            format!("https://localhost:{second}/{}", self.file),
        ]
    }

    /// Checks that `who` succeeded and `file` arrived intact (then removes it); returns its
    /// stderr.
    fn check(&self, out: &std::process::Output, who: &str) -> String {
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{who} failed: {err}");
        let path = self.out.join(self.file);
        let got = std::fs::read(&path).unwrap();
        assert_eq!(
            Sha256::digest(&got),
            Sha256::digest(&self.body),
            "{who}: {} intact",
            self.file
        );
        std::fs::remove_file(path).unwrap();
        err
    }

    fn gquic_server(&self, extra: &[&str]) -> (Kill, u16) {
        start_interop_server_with(&self.www, &self.cert, &self.key, extra)
    }

    fn aioquic_server(&self, extra: &[&str]) -> (Kill, u16) {
        start_aioquic_server_with(
            &self.py,
            "aioquic_hq",
            &self.www,
            &self.cert,
            &self.key,
            extra,
        )
    }
}

/// 0-RTT and key update (RFC 9001 §4.6, §6) over hq-interop, in both directions.
#[test]
fn resumption_0rtt_and_key_update_with_aioquic_both_ways() {
    let case = Case::new("aioquic-0rtt", "3mib.bin", 3 << 20, 21);
    // aioquic client -> gquic server: a resumed connection whose requests go in 0-RTT.
    let (_server, port) = case.gquic_server(&[]);
    let err = case.check(
        &case.aioquic(port, &["--zero-rtt"], true),
        "aioquic --zero-rtt",
    );
    assert!(err.contains("resumed: True"), "{err}");
    assert!(err.contains("0-RTT accepted: True"), "{err}");
    // aioquic updates its keys; the gquic server follows (the key phase bit flipped).
    let err = case.check(
        &case.aioquic(port, &["--key-update"], true),
        "aioquic --key-update",
    );
    assert!(err.contains("key phase: 1"), "{err}");

    // gquic client -> aioquic server.
    let (_server, port) = case.aioquic_server(&[]);
    let err = case.check(
        &case.gquic(port, &["--zero-rtt"], true),
        "interop client --zero-rtt",
    );
    assert!(err.contains("resumed: true"), "{err}");
    assert!(err.contains("0-RTT accepted: true"), "{err}");
    let err = case.check(
        &case.gquic(port, &["--key-update"], true),
        "interop client --key-update",
    );
    assert!(
        err.contains("key updates: ") && !err.contains("key updates: 0"),
        "{err}"
    );
}

/// 0-RTT rejected (RFC 9001 §4.6.2) over hq-interop, in both directions: the resumed
/// connection goes to a second server that does not know the ticket, which rejects the early
/// data; the client sends it again in 1-RTT and the file arrives intact.
#[test]
fn zero_rtt_rejected_with_aioquic_both_ways() {
    let case = Case::new("aioquic-0rtt-rejected", "1mib.bin", 1 << 20, 23);
    // aioquic client: a ticket from one gquic server, 0-RTT to another.
    let (_a, a) = case.gquic_server(&[]);
    let (_b, b) = case.gquic_server(&[]);
    let err = case.check(
        &case.aioquic_urls(
            &["--zero-rtt", "--expect-0rtt-rejected"],
            &case.two_servers(a, b),
        ),
        "aioquic --zero-rtt to another server",
    );
    assert!(err.contains("0-RTT accepted: False"), "{err}");

    // gquic client: a ticket from one aioquic server, 0-RTT to another.
    let (_a, a) = case.aioquic_server(&[]);
    let (_b, b) = case.aioquic_server(&[]);
    let err = case.check(
        &case.gquic_urls(
            &["--zero-rtt", "--expect-0rtt-rejected"],
            &case.two_servers(a, b),
        ),
        "interop client --zero-rtt to another server",
    );
    assert!(err.contains("0-RTT accepted: false"), "{err}");
    assert!(err.contains("resumed: false"), "{err}");
}

/// TLS with only ChaCha20-Poly1305 offered, over hq-interop, in both directions.
#[test]
fn chacha20_only_with_aioquic_both_ways() {
    let case = Case::new("aioquic-chacha", "1mib.bin", 1 << 20, 61);
    let (_server, port) = case.gquic_server(&[]);
    let err = case.check(
        &case.aioquic(port, &["--chacha20"], false),
        "aioquic client",
    );
    assert!(
        err.contains("cipher suite: CHACHA20_POLY1305_SHA256"),
        "{err}"
    );

    let (_server, port) = case.aioquic_server(&[]);
    let err = case.check(&case.gquic(port, &["--chacha20"], false), "interop client");
    assert!(
        err.contains("cipher suite: TLS13_CHACHA20_POLY1305_SHA256"),
        "{err}"
    );
}

/// QUIC v2 (RFC 9369) reached by compatible version negotiation (RFC 9368) over hq-interop,
/// in both directions: a v1 first flight that prefers v2 is moved to v2 by the server. Also
/// our client starting in v2 against aioquic's server.
#[test]
fn v2_by_compatible_negotiation_with_aioquic_both_ways() {
    let case = Case::new("aioquic-v2", "2mib.bin", 2 << 20, 71);
    // aioquic client (v1 first, v2 preferred) -> gquic server, which switches.
    let (_server, port) = case.gquic_server(&[]);
    let err = case.check(&case.aioquic(port, &["--v2"], false), "aioquic --v2");
    assert!(err.contains("version: 0x6b3343cf"), "{err}");
    // Without the preference aioquic stays in v1 (the server honours the client's order).
    let err = case.check(&case.aioquic(port, &[], false), "aioquic client");
    assert!(err.contains("version: 0x00000001"), "{err}");

    // gquic client (v1 first, v2 preferred) -> aioquic server, which switches; our client
    // follows with keys derived for v2.
    let (_server, port) = case.aioquic_server(&[]);
    let err = case.check(
        &case.gquic(port, &["--v2", "--key-update"], false),
        "interop client --v2",
    );
    assert!(err.contains("version: v2"), "{err}");
    assert!(err.contains("original version: v1"), "{err}");
    assert!(!err.contains("key updates: 0"), "{err}");
    // A first flight in v2.
    let err = case.check(
        &case.gquic(port, &["--v2-only"], false),
        "interop client --v2-only",
    );
    assert!(err.contains("version: v2"), "{err}");
    assert!(err.contains("original version: v2"), "{err}");
    // The default offer (v1 preferred) stays in v1.
    let err = case.check(&case.gquic(port, &[], false), "interop client");
    assert!(err.contains("version: v1"), "{err}");
}

/// Connection migration (RFC 9000 §9) over hq-interop, in both directions: the client moves
/// to a new UDP port after 1 MiB of a 4 MiB download, and the server follows.
#[test]
fn client_port_rebinding_mid_transfer_with_aioquic_both_ways() {
    let case = Case::new("aioquic-rebind", "4mib.bin", 4 << 20, 71);
    // aioquic client (new socket, new connection ID) -> gquic server.
    let (_server, port) = case.gquic_server(&[]);
    let err = case.check(
        &case.aioquic(port, &["--rebind-after", "1048576"], false),
        "aioquic --rebind-after",
    );
    assert!(err.contains("rebound to "), "{err}");

    // `interop client --rebind-after` -> aioquic server.
    let (_server, port) = case.aioquic_server(&[]);
    let err = case.check(
        &case.gquic(port, &["--rebind-after", "1048576"], false),
        "interop client --rebind-after",
    );
    assert!(err.contains("rebound to "), "{err}");
    assert!(err.contains("migrations: 1"), "{err}");
}

/// A NAT in front of a client, on a thread: after `rebind_after` datagrams from the client it
/// maps the client to a new source port (a new upstream socket), and the old mapping expires
/// at once: what the server sends to the old port is lost. The transfer only goes on if the
/// server follows the client to its new address (RFC 9000 §9.3).
struct Nat {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    rebound: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Nat {
    fn start(server: u16, rebind_after: u64) -> Self {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use std::sync::{Arc, Mutex};
        let server: std::net::SocketAddr = ([127, 0, 0, 1], server).into();
        let front = UdpSocket::bind("127.0.0.1:0").unwrap();
        front
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let port = front.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let rebound = Arc::new(AtomicBool::new(false));
        let client = Arc::new(Mutex::new(None));
        let generation = Arc::new(AtomicU64::new(0));
        let upstream = {
            let (front, client, generation, stop) = (
                front.try_clone().unwrap(),
                client.clone(),
                generation.clone(),
                stop.clone(),
            );
            move |gen: u64| {
                let up = UdpSocket::bind("127.0.0.1:0").unwrap();
                up.set_read_timeout(Some(Duration::from_millis(50)))
                    .unwrap();
                let reader = up.try_clone().unwrap();
                let (front, client, generation, stop) = (
                    front.try_clone().unwrap(),
                    client.clone(),
                    generation.clone(),
                    stop.clone(),
                );
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 65536];
                    while !stop.load(Ordering::Relaxed) && generation.load(Ordering::Relaxed) == gen
                    {
                        if let Ok((n, _)) = reader.recv_from(&mut buf) {
                            let to: Option<std::net::SocketAddr> = *client.lock().unwrap();
                            if let (Some(to), true) =
                                (to, generation.load(Ordering::Relaxed) == gen)
                            {
                                let _ = front.send_to(&buf[..n], to);
                            }
                        }
                    }
                });
                up
            }
        };
        let (stop2, rebound2) = (stop.clone(), rebound.clone());
        std::thread::spawn(move || {
            let mut up = upstream(0);
            let mut buf = vec![0u8; 65536];
            let mut count = 0u64;
            while !stop2.load(Ordering::Relaxed) {
                let Ok((n, from)) = front.recv_from(&mut buf) else {
                    continue;
                };
                *client.lock().unwrap() = Some(from);
                count += 1;
                if count == rebind_after {
                    generation.store(1, Ordering::Relaxed);
                    up = upstream(1);
                    rebound2.store(true, Ordering::Relaxed);
                }
                let _ = up.send_to(&buf[..n], server);
            }
        });
        Self {
            port,
            stop,
            rebound,
        }
    }

    fn rebound(&self) -> bool {
        self.rebound.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for Nat {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// NAT rebinding (RFC 9000 §9.3) under a 4 MiB download, in both directions: the client's
/// source port changes after 100 datagrams from the client (its ACKs: a client that acknowledges
/// in batches may send only a few hundred for the whole file) and the old one stops working.
#[test]
fn nat_rebinding_mid_transfer_with_aioquic_both_ways() {
    let case = Case::new("aioquic-nat", "4mib.bin", 4 << 20, 81);
    // aioquic client -> NAT -> gquic server.
    let (_server, port) = case.gquic_server(&[]);
    let nat = Nat::start(port, 100);
    case.check(
        &case.aioquic(nat.port, &[], false),
        "aioquic client behind a NAT",
    );
    assert!(nat.rebound(), "the NAT changed the client's port");

    // `interop client` -> NAT -> aioquic server.
    let (_server, port) = case.aioquic_server(&[]);
    let nat = Nat::start(port, 100);
    case.check(
        &case.gquic(nat.port, &[], false),
        "interop client behind a NAT",
    );
    assert!(nat.rebound(), "the NAT changed the client's port");
}

/// Unreliable datagrams (RFC 9221) both ways: aioquic's client gets its datagrams echoed by
/// `interop server`, and a gquic client gets its echoed by aioquic's server.
#[test]
fn datagrams_with_aioquic_both_ways() {
    let case = Case::new("aioquic-datagrams", "small.bin", 1000, 91);
    let (_server, port) = case.gquic_server(&[]);
    let err = case.check(
        &case.aioquic(port, &["--datagrams", "20"], false),
        "aioquic --datagrams",
    );
    assert!(err.contains("datagrams echoed: 20/20"), "{err}");

    let (_server, port) = case.aioquic_server(&[]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        use gquic::transport::runtime::Endpoint;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_file_iter(&case.ca).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let mut tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            gquic::transport::crypto::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        tls.alpn_protocols = vec![b"hq-interop".to_vec()];
        let config = gquic::transport::ClientConfig::new(std::sync::Arc::new(tls)).unwrap();
        let endpoint = Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = format!("127.0.0.1:{port}").parse().unwrap();
        let conn = endpoint
            .connect_with(config, addr, "localhost")
            .unwrap()
            .await
            .unwrap();
        let max = conn.max_datagram_size().expect("aioquic accepts datagrams");
        assert!(max >= 1000, "{max}");
        let mut seen = [false; 20];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !seen.iter().all(|s| *s) && tokio::time::Instant::now() < deadline {
            for (i, _) in seen.iter().enumerate().filter(|(_, s)| !**s) {
                conn.send_datagram(bytes::Bytes::from(vec![i as u8; 1000]))
                    .unwrap();
            }
            let wait = tokio::time::sleep(Duration::from_millis(200));
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    d = conn.read_datagram() => {
                        let d = d.unwrap();
                        assert_eq!(d.len(), 1000);
                        assert!(d.iter().all(|&b| b == d[0]), "echo intact");
                        seen[d[0] as usize] = true;
                    }
                    _ = &mut wait => break,
                }
            }
        }
        assert!(seen.iter().all(|s| *s), "echoes: {seen:?}");
        conn.close(gquic::transport::VarInt::from_u32(0), b"done");
    });
}

/// Retry (RFC 9000 §8.1.2) over hq-interop, in both directions.
#[test]
fn retry_with_aioquic_both_ways() {
    let case = Case::new("aioquic-retry", "1mib.bin", 1 << 20, 41);
    // aioquic client -> `interop server --retry`.
    let (_server, port) = case.gquic_server(&["--retry"]);
    let err = case.check(&case.aioquic(port, &[], false), "aioquic client");
    assert!(
        err.contains("retried: True"),
        "aioquic followed our Retry: {err}"
    );

    // `interop client` -> aioquic server with retry=True.
    let (_server, port) = case.aioquic_server(&["--retry"]);
    let err = case.check(&case.gquic(port, &[], false), "interop client");
    assert!(
        err.contains("retried: true"),
        "we followed aioquic's Retry: {err}"
    );
}

// ---------------------------------------------------------------------------------------
// HTTP/3 (ALPN h3): aioquic's H3Connection against `examples/interop` and back.
// ---------------------------------------------------------------------------------------

/// Starts `interop server` on a free port; returns the process and the port.
fn start_interop_server(www: &Path, cert: &Path, key: &Path) -> (Kill, u16) {
    start_interop_server_with(www, cert, key, &[])
}

/// [`start_interop_server`] with extra flags.
fn start_interop_server_with(www: &Path, cert: &Path, key: &Path, extra: &[&str]) -> (Kill, u16) {
    let port = free_udp_port();
    let listen = format!("127.0.0.1:{port}");
    let mut server = Kill(
        Command::new(interop_bin())
            .args(["server", "--listen", &listen, "--root"])
            .arg(www)
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key)
            .args(extra)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = server.0.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    loop {
        let line = lines.next().expect("server exited").unwrap();
        if line.contains("listening on") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    (server, port)
}

/// Starts `scripts/SCRIPT.py server` (an aioquic peer); returns the process and its port,
/// which it prints as "listening HOST PORT" once ready.
fn start_aioquic_server(
    py: &str,
    script: &str,
    www: &Path,
    cert: &Path,
    key: &Path,
) -> (Kill, u16) {
    start_aioquic_server_with(py, script, www, cert, key, &[])
}

/// [`start_aioquic_server`] with extra flags.
fn start_aioquic_server_with(
    py: &str,
    script: &str,
    www: &Path,
    cert: &Path,
    key: &Path,
    extra: &[&str],
) -> (Kill, u16) {
    let mut server = Kill(
        Command::new(py)
            .arg(repo().join(format!("scripts/{script}.py")))
            .args(["server", "--listen", "127.0.0.1:0", "--root"])
            .arg(www)
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key)
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(server.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .split_whitespace()
        .nth(2)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{script} server did not start: {line:?}"));
    (server, port)
}

/// Writes the files the HTTP/3 cases fetch: empty, 1 KiB, 10 MiB, 100 small ones.
fn h3_files(www: &Path) -> Vec<(String, Vec<u8>)> {
    std::fs::create_dir_all(www).unwrap();
    let mut files = vec![
        ("empty.bin".to_string(), Vec::new()),
        ("1k.bin".to_string(), pattern(1024, 1)),
        ("10m.bin".to_string(), pattern(10 << 20, 2)),
    ];
    for i in 0..100 {
        files.push((format!("c{i}.bin"), pattern(100 + i * 31, 10 + i as u64)));
    }
    for (name, data) in &files {
        std::fs::write(www.join(name), data).unwrap();
    }
    files
}

fn check_files(out: &Path, files: &[(String, Vec<u8>)]) {
    for (name, data) in files {
        let got = std::fs::read(out.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got.len(), data.len(), "{name}");
        assert_eq!(Sha256::digest(&got), Sha256::digest(data), "{name}");
    }
}

#[test]
fn aioquic_h3_client_against_gquic_server() {
    let py = python();
    let dir = TempDir::new("aioquic-h3-client");
    let (ca, cert, key) = write_certs(&dir.0);
    let www = dir.0.join("www");
    let files = h3_files(&www);
    let (_server, port) = start_interop_server(&www, &cert, &key);
    let out = dir.0.join("out");

    // GET 0 B, 1 KiB, 10 MiB and 100 more, all concurrently on one connection.
    let mut cmd = Command::new(&py);
    cmd.arg(repo().join("scripts/aioquic_h3.py"))
        .args(["client", "--output"])
        .arg(&out)
        .arg("--ca")
        .arg(&ca);
    for (name, _) in &files {
        cmd.arg(format!("https://localhost:{port}/{name}"));
    }
    let o = run_with_timeout(cmd, 180);
    assert!(
        o.status.success(),
        "aioquic h3 client failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    check_files(&out, &files);

    // POST 5 MiB to /echo: the body comes back byte for byte.
    let upload = dir.0.join("upload.bin");
    let data = pattern(5 << 20, 77);
    std::fs::write(&upload, &data).unwrap();
    let mut cmd = Command::new(&py);
    cmd.arg(repo().join("scripts/aioquic_h3.py"))
        .args(["client", "--output"])
        .arg(&out)
        .arg("--ca")
        .arg(&ca)
        .arg("--post")
        .arg(&upload)
        .arg(format!("https://localhost:{port}/echo"));
    let o = run_with_timeout(cmd, 120);
    assert!(
        o.status.success(),
        "aioquic POST failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        Sha256::digest(std::fs::read(out.join("echo")).unwrap()),
        Sha256::digest(&data)
    );

    // 1000 requests one after another on one connection: the server must keep raising the
    // client's stream limit (MAX_STREAMS, RFC 9000 §4.6).
    let mut cmd = Command::new(&py);
    cmd.arg(repo().join("scripts/aioquic_h3.py"))
        .args(["client", "--output"])
        .arg(&out)
        .arg("--ca")
        .arg(&ca)
        .args(["--sequential", "1000"])
        .arg(format!("https://localhost:{port}/1k.bin"));
    let o = run_with_timeout(cmd, 180);
    assert!(
        o.status.success(),
        "sequential requests failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("sequential 1000 done"));

    // A missing file is a 404, which the client reports as a failure.
    let mut cmd = Command::new(&py);
    cmd.arg(repo().join("scripts/aioquic_h3.py"))
        .args(["client", "--output"])
        .arg(&out)
        .arg("--ca")
        .arg(&ca)
        .arg(format!("https://localhost:{port}/missing.bin"));
    let o = run_with_timeout(cmd, 60);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("404"));
}

#[test]
fn gquic_h3_client_against_aioquic_server() {
    let py = python();
    let dir = TempDir::new("aioquic-h3-server");
    let (ca, cert, key) = write_certs(&dir.0);
    let www = dir.0.join("www");
    let files = h3_files(&www);
    let (_server, port) = start_aioquic_server(&py, "aioquic_h3", &www, &cert, &key);
    let out = dir.0.join("out");

    // `interop client` speaks h3 by default: everything in parallel on one connection.
    let mut cmd = Command::new(interop_bin());
    cmd.args(["client", "--output"])
        .arg(&out)
        .arg("--ca")
        .arg(&ca);
    for (name, _) in &files {
        cmd.arg(format!("https://localhost:{port}/{name}"));
    }
    let o = run_with_timeout(cmd, 180);
    assert!(
        o.status.success(),
        "interop h3 client failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    check_files(&out, &files);

    // POST 5 MiB to /echo.
    let upload = dir.0.join("upload.bin");
    let data = pattern(5 << 20, 78);
    std::fs::write(&upload, &data).unwrap();
    let mut cmd = Command::new(interop_bin());
    cmd.args(["client", "--output"])
        .arg(&out)
        .arg("--ca")
        .arg(&ca)
        .args(["-X", "POST", "--data-file"])
        .arg(&upload)
        .arg(format!("https://localhost:{port}/echo"));
    let o = run_with_timeout(cmd, 120);
    assert!(
        o.status.success(),
        "interop POST failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        Sha256::digest(std::fs::read(out.join("echo")).unwrap()),
        Sha256::digest(&data)
    );

    // A 404 makes the client exit non-zero, naming the URL.
    let mut cmd = Command::new(interop_bin());
    cmd.args(["client", "--output"])
        .arg(&out)
        .arg("--ca")
        .arg(&ca)
        .arg(format!("https://localhost:{port}/nope.bin"));
    let o = run_with_timeout(cmd, 60);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("nope.bin") && err.contains("404"), "{err}");
}

// ---------------------------------------------------------------------------------------
// HTTP/3 cases that need our side in-process: cancellation codes, trailers, graceful
// shutdown, 1000 sequential requests from our client.
// ---------------------------------------------------------------------------------------

mod in_process {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;
    use http_body_util::combinators::BoxBody;
    use http_body_util::{BodyExt, Full};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    type BoxError = Box<dyn std::error::Error + Send + Sync>;
    type Body = BoxBody<Bytes, BoxError>;

    fn full(b: impl Into<Bytes>) -> Body {
        Full::new(b.into()).map_err(|e| match e {}).boxed()
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::aws_lc_rs::default_provider())
    }

    #[derive(Default)]
    struct Seen {
        body_errors: Mutex<Vec<Option<u64>>>,
        waiting: AtomicUsize,
    }

    async fn app(
        req: http::Request<gquic_hyper::Incoming>,
        seen: Arc<Seen>,
    ) -> Result<http::Response<Body>, std::convert::Infallible> {
        let path = req.uri().path().to_string();
        Ok(match path.as_str() {
            // The request body (and its trailers) stream straight back.
            "/echo" => {
                http::Response::new(req.into_body().map_err(|e| Box::new(e) as BoxError).boxed())
            }
            "/drain" => {
                let mut body = req.into_body();
                while let Some(f) = body.frame().await {
                    if let Err(e) = f {
                        seen.body_errors.lock().unwrap().push(e.code());
                        break;
                    }
                }
                http::Response::new(full("drained"))
            }
            "/wait" => {
                seen.waiting.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(300)).await;
                http::Response::new(full("waited"))
            }
            _ => http::Response::new(full("hello")),
        })
    }

    fn aioquic_client(py: &str, out: &Path, ca: &Path) -> Command {
        let mut cmd = Command::new(py);
        cmd.arg(repo().join("scripts/aioquic_h3.py"))
            .args(["client", "--output"])
            .arg(out)
            .arg("--ca")
            .arg(ca);
        cmd
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn aioquic_client_trailers_cancel_and_graceful_shutdown() {
        let py = python();
        let dir = TempDir::new("aioquic-h3-inproc");
        let (ca, cert, key) = write_certs(&dir.0);
        let mut tls = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                CertificateDer::pem_file_iter(&cert)
                    .unwrap()
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_file(&key).unwrap(),
            )
            .unwrap();
        tls.alpn_protocols = vec![b"h3".to_vec()];
        let endpoint = gquic::transport::runtime::Endpoint::server(
            gquic::transport::ServerConfig::new(Arc::new(tls)).unwrap(),
            "127.0.0.1:0".parse().unwrap(),
        )
        .unwrap();
        let port = endpoint.local_addr().port();
        let seen = Arc::new(Seen::default());
        let (conns_tx, mut conns) = tokio::sync::mpsc::unbounded_channel();
        let seen2 = seen.clone();
        tokio::spawn(async move {
            while let Some(connecting) = endpoint.accept().await {
                let Ok(conn) = connecting.await else { continue };
                let seen = seen2.clone();
                let served = gquic_hyper::serve_connection(
                    conn,
                    hyper::service::service_fn(move |req| app(req, seen.clone())),
                );
                let _ = conns_tx.send((served.shutdown_handle(), tokio::spawn(served)));
            }
        });
        let out = dir.0.join("out");
        let run = |cmd: Command| tokio::task::spawn_blocking(move || run_with_timeout(cmd, 120));

        // Request trailers go out and come back as response trailers.
        let upload = dir.0.join("upload.bin");
        let data = pattern(300_000, 5);
        std::fs::write(&upload, &data).unwrap();
        let mut cmd = aioquic_client(&py, &out, &ca);
        cmd.arg("--post")
            .arg(&upload)
            .arg("--trailers")
            .arg(format!("https://localhost:{port}/echo"));
        let o = run(cmd).await.unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("trailers x-request-trailer: from-aioquic")
        );
        assert_eq!(std::fs::read(out.join("echo")).unwrap(), data);

        // aioquic abandons an upload: we see H3_REQUEST_CANCELLED, then serve it again.
        let mut cmd = aioquic_client(&py, &out, &ca);
        cmd.args(["--cancel", "/drain"])
            .arg(format!("https://localhost:{port}/after-cancel"));
        let o = run(cmd).await.unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(std::fs::read(out.join("after-cancel")).unwrap(), b"hello");
        assert_eq!(
            seen.body_errors.lock().unwrap().first().copied(),
            Some(Some(0x10c))
        );

        // Graceful shutdown while 50 of aioquic's requests are in flight: all 50 succeed.
        let mut cmd = aioquic_client(&py, &out, &ca);
        for _ in 0..50 {
            cmd.arg(format!("https://localhost:{port}/wait"));
        }
        let client = run(cmd);
        while seen.waiting.load(Ordering::SeqCst) < 50 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The last connection is aioquic's 50-request one.
        let mut last = None;
        while let Ok(c) = conns.try_recv() {
            last = Some(c);
        }
        let (handle, served) = last.unwrap();
        handle.graceful_shutdown();
        let o = client.await.unwrap();
        assert!(
            o.status.success(),
            "requests lost in the shutdown: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(std::fs::read(out.join("wait")).unwrap(), b"waited");
        tokio::time::timeout(Duration::from_secs(10), served)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn gquic_client_sequential_trailers_and_cancel_against_aioquic() {
        let py = python();
        let dir = TempDir::new("aioquic-h3-server-inproc");
        let (ca, cert, key) = write_certs(&dir.0);
        let www = dir.0.join("www");
        std::fs::create_dir_all(&www).unwrap();
        std::fs::write(www.join("1k.bin"), pattern(1024, 1)).unwrap();
        let (_server, port) = start_aioquic_server(&py, "aioquic_h3", &www, &cert, &key);

        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(&ca).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let mut tls = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"h3".to_vec()];
        let client =
            gquic::transport::runtime::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        let conn = client
            .connect_with(
                gquic::transport::ClientConfig::new(Arc::new(tls)).unwrap(),
                format!("127.0.0.1:{port}").parse().unwrap(),
                "localhost",
            )
            .unwrap()
            .await
            .unwrap();
        let (mut send, driver) = gquic_hyper::client::handshake::<Body>(conn).await.unwrap();
        tokio::spawn(driver);
        let get = |path: &str| {
            http::Request::get(format!("https://localhost:{port}{path}"))
                .body(full(Bytes::new()))
                .unwrap()
        };

        // 1000 requests in sequence on one connection.
        let expected = pattern(1024, 1);
        for _ in 0..1000 {
            let resp = send.send_request(get("/1k.bin")).await.unwrap();
            assert_eq!(resp.status(), 200);
            assert_eq!(
                resp.into_body().collect().await.unwrap().to_bytes(),
                expected
            );
        }

        // Trailers: the server's, and ours echoed back.
        let resp = send.send_request(get("/trailers")).await.unwrap();
        let c = resp.into_body().collect().await.unwrap();
        assert_eq!(c.trailers().unwrap()["x-checksum"], "abc");
        let mut t = http::HeaderMap::new();
        t.insert("x-request-trailer", "from-gquic".parse().unwrap());
        let frames = vec![
            Ok::<_, BoxError>(http_body::Frame::data(Bytes::from_static(b"payload"))),
            Ok(http_body::Frame::trailers(t)),
        ];
        let body = http_body_util::StreamBody::new(IterStream(frames.into_iter())).boxed();
        let req = http::Request::post(format!("https://localhost:{port}/echo"))
            .body(body)
            .unwrap();
        let c = send
            .send_request(req)
            .await
            .unwrap()
            .into_body()
            .collect()
            .await
            .unwrap();
        assert_eq!(c.trailers().unwrap()["x-request-trailer"], "from-gquic");
        assert_eq!(&c.to_bytes()[..], b"payload");

        // We abandon an upload; aioquic sees H3_REQUEST_CANCELLED on the stream.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, BoxError>>(1);
        tx.send(Ok(http_body::Frame::data(Bytes::from(vec![b'x'; 5000]))))
            .await
            .unwrap();
        let req = http::Request::post(format!("https://localhost:{port}/drain"))
            .body(http_body_util::StreamBody::new(ChannelStream(rx)).boxed())
            .unwrap();
        let mut s2 = send.clone();
        let pending = tokio::spawn(async move { s2.send_request(req).await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        pending.abort();
        let _ = pending.await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let resets = send.send_request(get("/resets")).await.unwrap();
        let body = resets.into_body().collect().await.unwrap().to_bytes();
        assert!(
            String::from_utf8_lossy(&body).contains("0x10c"),
            "aioquic saw resets {body:?}"
        );
        drop(tx);

        // aioquic sends GOAWAY (RFC 9114 §5.2) while 50 of our requests are in flight: all 50
        // complete, and our client opens no new request on that connection.
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let mut send = send.clone();
            let req = get("/wait");
            set.spawn(async move {
                let resp = send.send_request(req).await?;
                Ok::<_, gquic_hyper::Error>(resp.into_body().collect().await?.to_bytes())
            });
        }
        loop {
            let r = send.send_request(get("/waiting")).await.unwrap();
            let text = r.into_body().collect().await.unwrap().to_bytes();
            let n: usize = String::from_utf8_lossy(&text).parse().unwrap();
            if n >= 50 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let r = send.send_request(get("/goaway")).await.unwrap();
        assert_eq!(
            r.into_body().collect().await.unwrap().to_bytes(),
            "goaway sent"
        );
        let mut done = 0;
        while let Some(r) = set.join_next().await {
            assert_eq!(r.unwrap().unwrap(), "waited");
            done += 1;
        }
        assert_eq!(done, 50);
        let err = send.send_request(get("/1k.bin")).await.unwrap_err();
        assert!(err.is_closed(), "a request went out after GOAWAY: {err:?}");
    }

    struct IterStream<I>(I);

    impl<I: Iterator + Unpin> futures_core::Stream for IterStream<I> {
        type Item = I::Item;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<I::Item>> {
            std::task::Poll::Ready(self.0.next())
        }
    }

    struct ChannelStream<T>(tokio::sync::mpsc::Receiver<T>);

    impl<T> futures_core::Stream for ChannelStream<T> {
        type Item = T;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<T>> {
            self.0.poll_recv(cx)
        }
    }
}

/// `gquic-client` (the reqwest-like client) against aioquic's HTTP/3 server: GET of 0 B,
/// 1 KiB and 10 MiB (sha256), a 1 MiB POST echoed, 100 requests in parallel on the pooled
/// connection, and a 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gquic_client_crate_against_aioquic_server() {
    let py = python();
    let dir = TempDir::new("aioquic-gquic-client");
    let (ca, cert, key) = write_certs(&dir.0);
    let www = dir.0.join("www");
    let files = h3_files(&www);
    let (_server, port) = start_aioquic_server(&py, "aioquic_h3", &www, &cert, &key);
    let client = gquic_client::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(
            gquic_client::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap(),
        )
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let url = |p: &str| format!("https://localhost:{port}/{p}");
    for (name, data) in &files[..3] {
        let resp = client.get(url(name)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{name}");
        assert_eq!(resp.version(), http::Version::HTTP_3);
        let got = resp.bytes().await.unwrap();
        assert_eq!(Sha256::digest(&got), Sha256::digest(data), "{name}");
    }
    let payload = pattern(1 << 20, 99);
    let echoed = client
        .post(url("echo"))
        .body(payload.clone())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(Sha256::digest(&echoed), Sha256::digest(&payload));
    let mut tasks = Vec::new();
    for (name, data) in files[3..].iter().cloned() {
        let (client, u) = (client.clone(), url(&name));
        tasks.push(tokio::spawn(async move {
            let got = client.get(u).send().await.unwrap().bytes().await.unwrap();
            assert_eq!(&got[..], &data[..], "{name}");
        }));
    }
    assert_eq!(tasks.len(), 100);
    for t in tasks {
        t.await.unwrap();
    }
    let missing = client.get(url("missing.bin")).send().await.unwrap();
    assert_eq!(missing.status(), 404);

    // 0-RTT: a client with a connection per request resumes its session on the second one
    // and sends the GET in 0-RTT; aioquic accepts it.
    let client = gquic_client::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(
            gquic_client::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap(),
        )
        .zero_rtt(true)
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let first = client.get(url("early")).send().await.unwrap();
    assert!(!first.zero_rtt());
    assert_eq!(first.text().await.unwrap(), "early=False");
    // aioquic sends its session ticket after the handshake.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // On loopback the handshake can finish before the request leaves; then it goes in 1-RTT
    // (aioquic still reports the connection's early data). Try a few resumed connections.
    let mut early_seen = false;
    for _ in 0..4 {
        let resp = client.get(url("early")).send().await.unwrap();
        let zero_rtt = resp.zero_rtt();
        let text = resp.text().await.unwrap();
        assert_eq!(
            text, "early=True",
            "aioquic accepted the resumed connection's 0-RTT"
        );
        if zero_rtt {
            early_seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(early_seen, "a GET went in 0-RTT and aioquic accepted it");
}
