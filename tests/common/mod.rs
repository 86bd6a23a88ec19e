//! Helpers shared by the tests that drive the examples as programs.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// Kills the child when dropped.
pub struct Kill(Child);

impl Kill {
    /// Owns `child` until dropped.
    pub fn new(child: Child) -> Self {
        Self(child)
    }
}

impl Kill {
    /// The child's stdout, if it was piped and not taken yet.
    pub fn stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.0.stdout.take()
    }
}

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The path of a built example (`cargo test` builds them).
pub fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        bin.exists(),
        "{} is missing: `cargo test` builds it",
        bin.display()
    );
    bin
}

/// A serving example started with `--listen 127.0.0.1:0`: the process, its port, its SPKI.
pub struct Served {
    _child: Kill,
    pub port: u16,
    pub spki: String,
    /// Where it wrote its development certificate, if it made one.
    pub cert: Option<PathBuf>,
    /// The rest of what it prints, line by line.
    pub lines: std::sync::mpsc::Receiver<String>,
}

/// Starts `examples/NAME --listen 127.0.0.1:0 EXTRA...` and waits until it serves.
pub fn serve(name: &str, extra: &[&str]) -> Served {
    serve_with_env(name, extra, &[])
}

impl Served {
    /// Asks the server to shut down gracefully (SIGINT, as Ctrl-C) and waits until it exits.
    #[allow(clippy::disallowed_methods)] // A test's deadline on the real clock.
    pub fn interrupt_and_wait(mut self, timeout: std::time::Duration) -> bool {
        let pid = self._child.0.id().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self._child.0.try_wait() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        false
    }
}

/// [`serve`] with environment variables set for the child.
pub fn serve_with_env(name: &str, extra: &[&str], env: &[(&str, &std::path::Path)]) -> Served {
    let mut child = Kill(
        Command::new(example(name))
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .envs(env.iter().map(|(k, v)| (*k, *v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let mut spki = None;
    let mut cert = None;
    let port: u16 = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("{name} exited"))
            .unwrap();
        if let Some(p) = line.strip_prefix("development certificate: ") {
            cert = Some(PathBuf::from(p.trim()));
        }
        if let Some(s) = line.strip_prefix("SPKI sha256 (base64): ") {
            spki = Some(s.trim().to_string());
        }
        if let Some(rest) = line.strip_prefix("serving https://localhost:") {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    // Keep draining its output so it never blocks on a full pipe.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    Served {
        _child: child,
        port,
        spki: spki.unwrap_or_default(),
        cert,
        lines: rx,
    }
}
