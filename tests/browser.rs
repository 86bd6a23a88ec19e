//! A real browser: headless Chromium (Debian's `chromium`, installed by `scripts/test.sh`).
//!
//! - It loads `examples/hello`'s page, which must have come over HTTP/3: the server says so
//!   in the HTML (`served over h3`), and the browser says so through the Navigation Timing
//!   API (`performance.getEntriesByType('navigation')[0].nextHopProtocol == 'h3'`), which
//!   the page's script writes into the DOM that `--dump-dom` prints.
//! - It loads `examples/webtransport`'s page, whose script must end with
//!   `webtransport: ok`.

#![allow(clippy::disallowed_methods)] // The test waits on the real clock.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

fn chromium() -> String {
    let bin = std::env::var("GQUIC_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let ok = Command::new(&bin)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "{bin} not found: run the tests with scripts/test.sh (it installs Debian's chromium), \
         or set GQUIC_CHROMIUM"
    );
    bin
}

/// Headless Chromium for `https://localhost:PORT/` with QUIC forced for the origin and the
/// server's certificate pinned by SPKI; `extra` adds flags.
fn browser(served: &common::Served, profile: &std::path::Path, extra: &[&str]) -> Command {
    let port = served.port;
    let mut browser = Command::new(chromium());
    browser
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-quic",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--origin-to-force-quic-on=localhost:{port}"))
        .arg(format!(
            "--ignore-certificate-errors-spki-list={}",
            served.spki
        ))
        .arg("--host-resolver-rules=MAP localhost 127.0.0.1")
        .args(extra)
        .arg(format!("https://localhost:{port}/"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    browser
}

fn profile(served: &common::Served) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!(
        "gquic-chromium-{}-{}",
        std::process::id(),
        served.port
    ));
    let _ = std::fs::remove_dir_all(&p);
    p
}

/// Loads the page and returns the DOM after its scripts ran (`--dump-dom`, on virtual time).
fn load(served: &common::Served) -> String {
    let profile = profile(served);
    let child = browser(
        served,
        &profile,
        &["--virtual-time-budget=30000", "--dump-dom"],
    )
    .spawn()
    .unwrap();
    let id = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(Duration::from_secs(90)) {
        Ok(o) => o.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").arg(id.to_string()).status();
            panic!("chromium did not finish in 90 s");
        }
    };
    let _ = std::fs::remove_dir_all(&profile);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn headless_chromium_loads_hello_over_http3() {
    let dom = load(&common::serve("hello", &[]));
    assert!(
        dom.contains("served over h3"),
        "the server did not see HTTP/3: {dom}"
    );
    assert!(
        dom.contains("navigation protocol: h3"),
        "the browser did not navigate over HTTP/3: {dom}"
    );
}

/// `examples/webtransport`'s page opens a WebTransport session to `/wt` and checks a
/// bidirectional echo, a unidirectional echo (on a server-opened stream) and a datagram echo,
/// then writes the result into `#wt` and posts the same text to `/report`, which the server
/// prints. The browser runs on real time here (virtual time would fire the page's 20 s
/// deadline while WebTransport traffic is still under way), so the result is read from the
/// server's output.
#[test]
fn headless_chromium_speaks_webtransport() {
    let served = common::serve("webtransport", &[]);
    let profile = profile(&served);
    let child = common::Kill::new(browser(&served, &profile, &[]).spawn().unwrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let reported = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match served.lines.recv_timeout(left) {
            Ok(line) => {
                if let Some(r) = line.strip_prefix("page reported: ") {
                    break r.to_owned();
                }
            }
            Err(_) => panic!("the page reported nothing in 60 s"),
        }
    };
    drop(child);
    let _ = std::fs::remove_dir_all(&profile);
    assert_eq!(reported, "webtransport: ok");
}
