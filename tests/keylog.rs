//! `SSLKEYLOGFILE` on both sides: `examples/hello` (the server) and `examples/get` (the
//! client, through gquic-client's `tls_sslkeylogfile`) write the TLS secrets of an HTTP/3
//! exchange in the NSS key log format Wireshark reads, and the two files agree.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The labels TLS 1.3 logs (NSS key log format); a QUIC handshake without 0-RTT writes the
/// first five.
const LABELS: [&str; 6] = [
    "CLIENT_HANDSHAKE_TRAFFIC_SECRET",
    "SERVER_HANDSHAKE_TRAFFIC_SECRET",
    "CLIENT_TRAFFIC_SECRET_0",
    "SERVER_TRAFFIC_SECRET_0",
    "EXPORTER_SECRET",
    "CLIENT_EARLY_TRAFFIC_SECRET",
];

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.len() % 2 == 0 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Every line of the file: `LABEL <64 hex: client random> <hex: secret>`; returns
/// (label, client random) -> secret.
fn parse(path: &Path) -> BTreeMap<(String, String), String> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{} was not written: {e}", path.display()));
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let parts: Vec<&str> = line.split(' ').collect();
        assert_eq!(parts.len(), 3, "not `LABEL random secret`: {line:?}");
        assert!(LABELS.contains(&parts[0]), "unknown label: {line:?}");
        assert!(
            parts[1].len() == 64 && is_hex(parts[1]),
            "client random is not 32 bytes of hex: {line:?}"
        );
        // SHA-256 or SHA-384 suites: 32- or 48-byte secrets.
        assert!(
            (parts[2].len() == 64 || parts[2].len() == 96) && is_hex(parts[2]),
            "secret is not 32 or 48 bytes of hex: {line:?}"
        );
        out.insert(
            (parts[0].to_owned(), parts[1].to_owned()),
            parts[2].to_owned(),
        );
    }
    out
}

#[test]
fn sslkeylogfile_is_written_in_nss_format_by_both_sides() {
    let dir = Dir(std::env::temp_dir().join(format!("gquic-keylog-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert, key) = (dir.0.join("cert.pem"), dir.0.join("key.pem"));
    std::fs::write(&cert, c.cert.pem()).unwrap();
    std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
    let (server_log, client_log) = (dir.0.join("server.keys"), dir.0.join("client.keys"));
    let served = common::serve_with_env(
        "hello",
        &[
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
        &[("SSLKEYLOGFILE", &server_log)],
    );
    let o = Command::new(common::example("get"))
        .args([
            &format!("https://localhost:{}/api/info", served.port),
            "--ca",
            cert.to_str().unwrap(),
        ])
        .env("SSLKEYLOGFILE", &client_log)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("\"protocol\":\"h3\""));
    drop(served);

    let client = parse(&client_log);
    let server = parse(&server_log);
    for label in &LABELS[..5] {
        assert!(
            client.keys().any(|(l, _)| l == label),
            "the client logged no {label}: {client:?}"
        );
    }
    // One connection, one client random, and the server logged the same secrets for it.
    let randoms: std::collections::BTreeSet<_> = client.keys().map(|(_, r)| r).collect();
    assert_eq!(randoms.len(), 1, "{client:?}");
    for ((label, random), secret) in &client {
        assert_eq!(
            server.get(&(label.clone(), random.clone())),
            Some(secret),
            "the server's {label} for {random} differs"
        );
    }
}
