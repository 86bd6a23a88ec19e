//! What the serving examples share: the `--listen`/`--cert`/`--key` flags and the development
//! certificate.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The command line of a serving example.
pub struct Args {
    pub listen: SocketAddr,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// `--qlog DIR`: a qlog trace per connection in DIR (as `QLOGDIR=DIR`).
    pub qlog: Option<PathBuf>,
    /// `--quic-sockets N`: UDP sockets in a `SO_REUSEPORT` group for HTTP/3 (default 1).
    pub quic_sockets: usize,
}

/// Parses `--listen ADDR` (default `127.0.0.1:4433`), `--cert FILE`, `--key FILE`,
/// `--qlog DIR` and `--quic-sockets N`.
pub fn args() -> Result<Args, String> {
    let mut a = Args {
        listen: "127.0.0.1:4433".parse().expect("valid address"),
        cert: None,
        key: None,
        qlog: None,
        quic_sockets: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => a.listen = value()?.parse().map_err(|e| format!("--listen: {e}"))?,
            "--cert" => a.cert = Some(value()?.into()),
            "--key" => a.key = Some(value()?.into()),
            "--qlog" => a.qlog = Some(value()?.into()),
            "--quic-sockets" => {
                a.quic_sockets = value()?
                    .parse()
                    .ok()
                    .filter(|n| (1..=32).contains(n))
                    .ok_or("--quic-sockets takes a number from 1 to 32")?
            }
            other => {
                return Err(format!(
                    "unknown flag {other}; use --listen, --cert, --key, --qlog, --quic-sockets"
                ))
            }
        }
    }
    if a.cert.is_some() != a.key.is_some() {
        return Err("--cert and --key go together".into());
    }
    Ok(a)
}

/// A 14-day ECDSA P-256 certificate for localhost, written to `<temp>/<dir>`; returns the
/// chain, the key, where it was written, and the base64 SPKI sha256 Chrome's
/// `--ignore-certificate-errors-spki-list` wants.
fn dev_certificate(
    dir: &str,
) -> Result<
    (
        Vec<CertificateDer<'static>>,
        PrivateKeyDer<'static>,
        PathBuf,
        String,
    ),
    BoxError,
> {
    use base64::Engine;
    use rcgen::PublicKeyData;
    use sha2::Digest;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
    let now = std::time::SystemTime::now();
    params.not_before = now.into();
    params.not_after = (now + Duration::from_secs(14 * 24 * 3600)).into();
    let cert = params.self_signed(&key)?;
    let dir = std::env::temp_dir().join(dir);
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("cert.pem");
    std::fs::write(&path, cert.pem())?;
    std::fs::write(dir.join("key.pem"), key.serialize_pem())?;
    let spki = base64::engine::general_purpose::STANDARD
        .encode(sha2::Sha256::digest(key.subject_public_key_info()));
    Ok((
        vec![cert.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        path,
        spki,
    ))
}

/// The TLS 1.3 server config from `--cert`/`--key`, or from a fresh development certificate
/// (whose path and SPKI sha256 are printed).
pub fn server_tls(args: &Args, dev_dir: &str) -> Result<rustls::ServerConfig, BoxError> {
    let (chain, key) = match (&args.cert, &args.key) {
        (Some(c), Some(k)) => (
            CertificateDer::pem_file_iter(c)?.collect::<Result<Vec<_>, _>>()?,
            PrivateKeyDer::from_pem_file(k)?,
        ),
        _ => {
            let (chain, key, path, spki) = dev_certificate(dev_dir)?;
            println!("development certificate: {}", path.display());
            println!("SPKI sha256 (base64): {spki}");
            (chain, key)
        }
    };
    let provider = std::sync::Arc::new(gquic::transport::crypto::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    tls.key_log = key_log();
    Ok(tls)
}

/// TLS secrets in the NSS key log format to the file `SSLKEYLOGFILE` names, so Wireshark
/// can decrypt a capture (nothing is written while the variable is unset).
pub fn key_log() -> std::sync::Arc<dyn rustls::KeyLog> {
    std::sync::Arc::new(rustls::KeyLogFile::new())
}

/// `--qlog DIR`: every QUIC endpoint made from now on writes a qlog trace per connection into
/// DIR (created if need be), through the `QLOGDIR` variable the endpoints read. Call it before
/// any thread is started (it sets an environment variable).
pub fn qlog_dir(args: &Args) -> Result<(), BoxError> {
    if let Some(dir) = &args.qlog {
        std::fs::create_dir_all(dir).map_err(|e| format!("--qlog {}: {e}", dir.display()))?;
        std::env::set_var("QLOGDIR", dir);
    }
    Ok(())
}

/// Logs at `info` unless `RUST_LOG` says otherwise.
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
}
