//! What the bulk scenario's processes share: the settings both stacks use, the certificate
//! files, CPU time from getrusage, and the one-line report a child prints to its parent.

use std::path::Path;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Stream receive window both stacks use (fixed: no autotuning, so both run the same window).
pub(crate) const STREAM_WINDOW: u64 = 16 << 20;
/// Connection receive window both stacks use.
pub(crate) const CONN_WINDOW: u64 = 32 << 20;
/// Send buffer both stacks use.
pub(crate) const SEND_WINDOW: u64 = 32 << 20;
/// Size of the chunk the client writes repeatedly (one allocation, cloned as `Bytes`).
pub(crate) const CHUNK: usize = 1 << 20;

/// User plus system CPU time of this process so far (getrusage(RUSAGE_SELF)).
pub(crate) fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct we pass, which is plain old data and zeroed.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return Duration::ZERO;
        }
        usage
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// The certificate chain and key written by the parent process.
pub(crate) fn load_cert(dir: &Path) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let chain = CertificateDer::pem_file_iter(dir.join("cert.pem"))
        .expect("cert.pem")
        .collect::<Result<Vec<_>, _>>()
        .expect("cert.pem");
    let key = PrivateKeyDer::from_pem_file(dir.join("key.pem")).expect("key.pem");
    (chain, key)
}

/// The rustls configurations both stacks use: same provider (aws-lc-rs), TLS 1.3 only, same
/// certificate, ALPN "bench".
pub(crate) fn tls_configs(dir: &Path) -> (rustls::ServerConfig, rustls::ClientConfig) {
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let (chain, key) = load_cert(dir);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(chain[0].clone()).expect("root");
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("certificate");
    server.alpn_protocols = vec![b"bench".to_vec()];
    server.max_early_data_size = 0;
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"bench".to_vec()];
    (server, client)
}

/// One measured transfer, as a child prints it: `RESULT <bytes> <wall s> <cpu s> <lost>`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outcome {
    /// Bytes moved.
    pub(crate) bytes: u64,
    /// Wall-clock time from opening the stream to the server's acknowledgement.
    pub(crate) wall: Duration,
    /// CPU time of the whole process (client and server) over the same interval.
    pub(crate) cpu: Duration,
    /// Packets the sender declared lost.
    pub(crate) lost: u64,
}

impl Outcome {
    /// The line a child prints.
    pub(crate) fn line(&self) -> String {
        format!(
            "RESULT {} {:.6} {:.6} {}",
            self.bytes,
            self.wall.as_secs_f64(),
            self.cpu.as_secs_f64(),
            self.lost
        )
    }

    /// Parses [`Outcome::line`].
    pub(crate) fn parse(output: &str) -> Option<Self> {
        let line = output.lines().find(|l| l.starts_with("RESULT "))?;
        let mut f = line.split_whitespace().skip(1);
        Some(Self {
            bytes: f.next()?.parse().ok()?,
            wall: Duration::from_secs_f64(f.next()?.parse().ok()?),
            cpu: Duration::from_secs_f64(f.next()?.parse().ok()?),
            lost: f.next()?.parse().ok()?,
        })
    }

    /// Gigabits per second.
    pub(crate) fn gbps(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.wall.as_secs_f64() / 1e9
    }

    /// CPU-seconds per gigabyte (10^9 bytes), client and server together.
    pub(crate) fn cpu_per_gb(&self) -> f64 {
        self.cpu.as_secs_f64() / (self.bytes as f64 / 1e9)
    }
}
