//! Run with: cargo run --release --example interop -- server|client ...
//!
//! The interop endpoint (the role quic-interop-runner endpoints play). Its command line is a
//! contract other test suites drive; keep it stable.
//!
//! ```text
//! interop server --listen 127.0.0.1:4433 --cert cert.pem --key key.pem --root DIR [--retry]
//! interop client --output DIR [--ca cert.pem] [--alpn h3|hq-interop] [-X POST --data-file F]
//!                [--resume] [--zero-rtt [--expect-0rtt-rejected]] [--key-update] [--chacha20]
//!                [--v2 | --v2-only]
//!                [--rebind-after BYTES] URL...
//! ```
//!
//! The server speaks two ALPNs on the same port:
//! - `h3` (HTTP/3 through gquic-hyper): `GET /path` serves `DIR/path` (streamed), `POST /echo`
//!   streams the request body back, anything else is 404;
//! - `hq-interop` (HTTP/0.9): the client sends `GET /path\r\n` on a bidirectional stream and
//!   finishes it; the server answers with the bytes of `DIR/path` and finishes, or resets the
//!   stream if there is no such file. Unreliable datagrams (RFC 9221) are echoed back.
//!
//! Both sides honour `SSLKEYLOGFILE` (TLS secrets in the NSS key log format, for Wireshark)
//! and `QLOGDIR` (a qlog trace per connection).
//!
//! With `--retry` every client without a valid token gets a Retry first (RFC 9000 §8.1.2);
//! clients get NEW_TOKEN tokens for their next connection.
//! Without `--cert`/`--key` it makes a development certificate for `localhost`. It resumes
//! sessions and accepts 0-RTT (single-use tickets), serving requests from the ClientHello on.
//!
//! The client (ALPN `h3` by default) fetches every URL over one connection, in parallel, writes
//! each body to `DIR/<last path segment>`, and exits non-zero if any download fails (for h3,
//! any status other than 2xx is a failure). With `-X POST --data-file F` it uploads `F` to
//! each URL and writes the response bodies. Without `--ca` it trusts the system's root
//! certificates.
//!
//! Transport features, as the interop runner's test cases use them:
//! - `--resume`: the first URL is fetched on a first connection, the others on a second one
//!   that resumes the TLS session (exit 1 if it does not);
//! - `--zero-rtt`: as `--resume`, and the second connection's requests go in 0-RTT (exit 1 if
//!   the server rejects it); with `--expect-0rtt-rejected`, exit 1 unless the server rejects
//!   it (the early requests are then sent again in 1-RTT and must still succeed). With
//!   `--resume` or `--zero-rtt` the URLs after the first may name another port of the same
//!   host: a server that does not know the ticket;
//! - `--key-update`: the client updates its 1-RTT keys as soon as the handshake is confirmed,
//!   before the downloads (RFC 9001 §6);
//! - `--chacha20`: TLS offers only TLS_CHACHA20_POLY1305_SHA256;
//! - `--v2`: the client starts in QUIC v1 and offers v2 first in its version information, so a
//!   server supporting v2 moves the connection to it (compatible version negotiation, RFC
//!   9368; exit 1 if the connection does not end in v2); `--v2-only` starts in v2 (RFC 9369)
//!   and offers nothing else. The server supports v1 and v2 and honours the client's
//!   preference;
//! - `--rebind-after BYTES`: once BYTES have been received, the client moves to a new UDP
//!   socket (a new local port) mid-transfer and the connection migrates (RFC 9000 §9); exit
//!   1 if the downloads ended before it could.
//!
//! It prints `version: v1|v2`, `original version: v1|v2`, `resumed: BOOL`, `0-RTT accepted:
//! BOOL`, `retried: BOOL`, `key updates: N` and `cipher suite: NAME` lines on stderr.

#![allow(clippy::disallowed_methods)] // A program reads the real clock.

use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use gquic::transport::runtime::{Connection, Endpoint, RecvStream, SendStream};
use gquic::transport::{ClientConfig, ServerConfig, VarInt, Version};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::AsyncWriteExt;

/// HTTP/0.9 requests are one short line.
const MAX_REQUEST: usize = 8 * 1024;
/// Stream error code for a missing file (hq-interop has no status codes).
const NOT_FOUND: u32 = 0x10;
/// Stream error code for a malformed request.
const BAD_REQUEST: u32 = 0x11;
const ALPN_HQ: &[u8] = b"hq-interop";
const ALPN_H3: &[u8] = b"h3";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn usage() -> ExitCode {
    eprintln!(
        "usage:\n  interop server --listen ADDR [--cert cert.pem --key key.pem] --root DIR [--retry]\n  \
         interop client --output DIR [--ca cert.pem] [--alpn h3|hq-interop] [-X POST --data-file F] \
         [--resume] [--zero-rtt [--expect-0rtt-rejected]] [--key-update] [--chacha20] [--v2 | --v2-only] [--rebind-after BYTES] URL..."
    );
    ExitCode::from(2)
}

struct Args {
    flags: Vec<(String, Option<String>)>,
    positional: Vec<String>,
}

impl Args {
    /// Splits `--name value` pairs (and the valueless `switches`) from positional arguments.
    fn parse(args: impl Iterator<Item = String>, switches: &[&str]) -> Result<Self, String> {
        let mut flags = Vec::new();
        let mut positional = Vec::new();
        let mut args = args.peekable();
        while let Some(a) = args.next() {
            let a = if a == "-X" { "--method".to_string() } else { a };
            if let Some(name) = a.strip_prefix("--") {
                if switches.contains(&name) {
                    flags.push((name.to_string(), None));
                } else {
                    let v = args.next().ok_or(format!("--{name} needs a value"))?;
                    flags.push((name.to_string(), Some(v)));
                }
            } else {
                positional.push(a);
            }
        }
        Ok(Self { flags, positional })
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.flags
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
    }

    fn has(&self, name: &str) -> bool {
        self.flags.iter().any(|(n, _)| n == name)
    }

    fn check_known(&self, known: &[&str]) -> Result<(), String> {
        match self
            .flags
            .iter()
            .find(|(n, _)| !known.contains(&n.as_str()))
        {
            Some((n, _)) => Err(format!("unknown option --{n}")),
            None => Ok(()),
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut argv = std::env::args().skip(1);
    let Some(role) = argv.next() else {
        return usage();
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = match role.as_str() {
        "server" => Args::parse(argv, &["retry"])
            .and_then(|a| {
                a.check_known(&["listen", "cert", "key", "root", "retry"])
                    .map(|()| a)
            })
            .map_err(BoxError::from)
            .map(|a| runtime.block_on(server(a))),
        "client" => Args::parse(
            argv,
            &[
                "resume",
                "zero-rtt",
                "expect-0rtt-rejected",
                "key-update",
                "chacha20",
                "v2",
                "v2-only",
            ],
        )
        .and_then(|a| {
            a.check_known(&[
                "output",
                "ca",
                "alpn",
                "method",
                "data-file",
                "resume",
                "zero-rtt",
                "expect-0rtt-rejected",
                "key-update",
                "chacha20",
                "v2",
                "v2-only",
                "rebind-after",
            ])
            .map(|()| a)
        })
        .map_err(BoxError::from)
        .map(|a| runtime.block_on(client(a))),
        _ => return usage(),
    };
    match result.and_then(|r| r) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("interop {role}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(gquic::transport::crypto::default_provider())
}

// ---- server ----

async fn server(args: Args) -> Result<(), BoxError> {
    let listen: SocketAddr = args
        .get("listen")
        .unwrap_or("127.0.0.1:4433")
        .parse()
        .map_err(|e| format!("--listen: {e}"))?;
    let root = PathBuf::from(args.get("root").ok_or("--root DIR is required")?);
    if !root.is_dir() {
        return Err(format!("--root {} is not a directory", root.display()).into());
    }
    let (chain, key) = match (args.get("cert"), args.get("key")) {
        (Some(c), Some(k)) => (
            CertificateDer::pem_file_iter(c)
                .map_err(|e| format!("--cert {c}: {e}"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("--cert {c}: {e}"))?,
            PrivateKeyDer::from_pem_file(k).map_err(|e| format!("--key {k}: {e}"))?,
        ),
        (None, None) => {
            let c = rcgen::generate_simple_self_signed(vec!["localhost".into()])?;
            eprintln!(
                "interop server: no --cert/--key; using a development certificate for localhost"
            );
            (
                vec![CertificateDer::from(c.cert.der().to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(c.signing_key.serialize_der())),
            )
        }
        _ => return Err("--cert and --key go together".into()),
    };
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    tls.alpn_protocols = vec![ALPN_H3.to_vec(), ALPN_HQ.to_vec()];
    // SSLKEYLOGFILE: NSS key log lines for Wireshark (nothing while the variable is unset).
    tls.key_log = Arc::new(rustls::KeyLogFile::new());
    let mut config = ServerConfig::new(Arc::new(tls))?;
    // Resumption and 0-RTT (single-use tickets): the files served are safe to fetch twice.
    config.enable_0rtt(true)?;
    if args.has("retry") {
        // RFC 9000 §8.1.2: every client without a valid token is validated by a Retry first.
        config.retry(gquic::transport::RetryPolicy::Always);
    }
    let endpoint = Endpoint::server(config, listen)?;
    eprintln!("interop server: listening on {}", endpoint.local_addr());
    let root = Arc::new(root);
    loop {
        tokio::select! {
            incoming = endpoint.accept() => {
                let Some(connecting) = incoming else { break };
                let root = root.clone();
                tokio::spawn(async move {
                    // Served from the ClientHello on: 0-RTT requests are answered at once.
                    let mut connecting = connecting;
                    let ready = match connecting.handshake_data().await {
                        Ok(()) => match connecting.into_0rtt() {
                            Ok((conn, _)) => Ok(conn),
                            Err(connecting) => connecting.await,
                        },
                        Err(e) => Err(e),
                    };
                    match ready {
                        Ok(conn) if conn.alpn().as_deref() == Some(ALPN_H3) => {
                            let service = hyper::service::service_fn(move |req| {
                                h3_request(req, root.clone())
                            });
                            if let Err(e) = gquic_hyper::serve_connection(conn, service).await {
                                tracing::debug!(error = %e, "h3 connection ended");
                            }
                        }
                        Ok(conn) => serve_hq(conn, root).await,
                        Err(e) => tracing::warn!(error = %e, "handshake failed"),
                    }
                });
            }
            _ = tokio::signal::ctrl_c() => {
                endpoint.close(VarInt::from_u32(0), b"server shutting down");
                endpoint.wait_idle().await;
                break;
            }
        }
    }
    Ok(())
}

async fn serve_hq(conn: Connection, root: Arc<PathBuf>) {
    // RFC 9221 datagrams come back as they came.
    let echo = conn.clone();
    tokio::spawn(async move {
        while let Ok(d) = echo.read_datagram().await {
            let _ = echo.send_datagram(d);
        }
    });
    while let Ok((send, recv)) = conn.accept_bi().await {
        let root = root.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_request(send, recv, &root).await {
                tracing::debug!(error = %e, "request failed");
            }
        });
    }
}

/// Maps `/a/b` onto `root/a/b`, refusing anything that leaves `root`.
fn resolve(root: &Path, path: &str) -> Option<PathBuf> {
    let rel = Path::new(path.trim_start_matches('/'));
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    Some(root.join(rel))
}

async fn serve_request(
    mut send: SendStream,
    mut recv: RecvStream,
    root: &Path,
) -> Result<(), BoxError> {
    let request = recv.read_to_end(MAX_REQUEST).await?;
    let line = std::str::from_utf8(&request).unwrap_or("");
    let path = line
        .trim_end()
        .strip_prefix("GET ")
        .map(|p| p.split_whitespace().next().unwrap_or(""));
    let Some(file) = path.and_then(|p| resolve(root, p)) else {
        send.reset(VarInt::from_u32(BAD_REQUEST))?;
        return Ok(());
    };
    let mut f = match tokio::fs::File::open(&file).await {
        Ok(f) if file.is_file() => f,
        _ => {
            send.reset(VarInt::from_u32(NOT_FOUND))?;
            return Ok(());
        }
    };
    use tokio::io::AsyncReadExt;
    loop {
        let mut buf = bytes::BytesMut::with_capacity(256 * 1024);
        let n = f.read_buf(&mut buf).await?;
        if n == 0 {
            break;
        }
        send.write_chunk(buf.freeze()).await?;
    }
    send.finish()?;
    send.stopped().await?;
    Ok(())
}

// ---- h3 server ----

type H3Body = http_body_util::combinators::BoxBody<Bytes, BoxError>;

fn status(code: u16, text: &'static str) -> http::Response<H3Body> {
    use http_body_util::BodyExt;
    let body = http_body_util::Full::new(Bytes::from_static(text.as_bytes()))
        .map_err(|e: std::convert::Infallible| match e {})
        .boxed();
    let mut r = http::Response::new(body);
    *r.status_mut() = http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::OK);
    r
}

/// A body streaming a file in 256 KiB chunks from a reader task (bounded: 4 chunks ahead).
struct ChannelBody(tokio::sync::mpsc::Receiver<Result<Bytes, BoxError>>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        self.0
            .poll_recv(cx)
            .map(|o| o.map(|r| r.map(http_body::Frame::data)))
    }
}

fn file_body(mut f: tokio::fs::File) -> ChannelBody {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        loop {
            let mut buf = bytes::BytesMut::with_capacity(256 * 1024);
            match f.read_buf(&mut buf).await {
                Ok(0) => return,
                Ok(_) => {
                    if tx.send(Ok(buf.freeze())).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e.into())).await;
                    return;
                }
            }
        }
    });
    ChannelBody(rx)
}

async fn h3_request(
    req: http::Request<gquic_hyper::Incoming>,
    root: Arc<PathBuf>,
) -> Result<http::Response<H3Body>, std::convert::Infallible> {
    use http_body_util::BodyExt;
    let path = req.uri().path().to_string();
    match *req.method() {
        http::Method::POST if path == "/echo" => {
            let body = req.into_body().map_err(|e| Box::new(e) as BoxError).boxed();
            Ok(http::Response::new(body))
        }
        http::Method::GET | http::Method::HEAD => {
            let Some(file) = resolve(&root, &path) else {
                return Ok(status(404, "not found\n"));
            };
            match tokio::fs::File::open(&file).await {
                Ok(f) if file.is_file() => {
                    let len = f.metadata().await.map(|m| m.len()).ok();
                    let mut resp = http::Response::new(file_body(f).boxed());
                    if let Some(len) = len {
                        resp.headers_mut()
                            .insert(http::header::CONTENT_LENGTH, len.into());
                    }
                    Ok(resp)
                }
                _ => Ok(status(404, "not found\n")),
            }
        }
        _ => Ok(status(404, "not found\n")),
    }
}

// ---- client ----

struct Target {
    host: String,
    port: u16,
    path: String,
}

fn parse_url(url: &str) -> Result<Target, String> {
    let rest = url
        .strip_prefix("https://")
        .ok_or(format!("{url}: only https:// URLs"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, p) = v6.split_once(']').ok_or(format!("{url}: bad IPv6 host"))?;
        (h.to_string(), p.strip_prefix(':').unwrap_or("443"))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p),
            None => (authority.to_string(), "443"),
        }
    };
    let port = port.parse().map_err(|_| format!("{url}: bad port"))?;
    Ok(Target {
        host,
        port,
        path: path.to_string(),
    })
}

async fn client(args: Args) -> Result<(), BoxError> {
    let output = PathBuf::from(args.get("output").ok_or("--output DIR is required")?);
    tokio::fs::create_dir_all(&output).await?;
    let alpn = args.get("alpn").unwrap_or("h3");
    if alpn.as_bytes() != ALPN_HQ && alpn.as_bytes() != ALPN_H3 {
        return Err(format!("--alpn {alpn}: use h3 or hq-interop").into());
    }
    let method = args.get("method").unwrap_or("GET").to_ascii_uppercase();
    let data_file = args.get("data-file").map(PathBuf::from);
    match (method.as_str(), &data_file, alpn.as_bytes()) {
        ("GET", None, _) => {}
        ("POST", Some(_), ALPN_H3) => {}
        ("POST", None, _) => return Err("-X POST needs --data-file F".into()),
        ("POST", Some(_), _) => return Err("-X POST needs --alpn h3".into()),
        (m, _, _) => return Err(format!("-X {m}: only GET and POST").into()),
    }
    if args.positional.is_empty() {
        return Err("no URL given".into());
    }
    let targets = args
        .positional
        .iter()
        .map(|u| parse_url(u))
        .collect::<Result<Vec<_>, _>>()?;
    let zero_rtt = args.has("zero-rtt");
    let resume = zero_rtt || args.has("resume");
    let expect_rejected = args.has("expect-0rtt-rejected");
    if expect_rejected && !zero_rtt {
        return Err("--expect-0rtt-rejected goes with --zero-rtt".into());
    }
    let (host, port) = (targets[0].host.clone(), targets[0].port);
    // One connection; with --resume or --zero-rtt the second connection (the URLs after the
    // first) may go to another port of the same host.
    let second_port = targets.get(1).filter(|_| resume).map_or(port, |t| t.port);
    let same_server = targets.iter().all(|t| t.host == host)
        && targets
            .iter()
            .skip(1)
            .all(|t| t.port == if resume { second_port } else { port });
    if !same_server {
        return Err(
            "all URLs must name the same server (one connection; with --resume or --zero-rtt \
             the URLs after the first may name another port of the same host)"
                .into(),
        );
    }
    let mut roots = rustls::RootCertStore::empty();
    match args.get("ca") {
        Some(ca) => {
            for cert in CertificateDer::pem_file_iter(ca).map_err(|e| format!("--ca {ca}: {e}"))? {
                roots.add(cert.map_err(|e| format!("--ca {ca}: {e}"))?)?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
        }
    }
    let mut provider = (*provider()).clone();
    if args.has("chacha20") {
        // Offer only ChaCha20-Poly1305 in TLS (Initial packets keep AES-128-GCM, RFC 9001
        // §5.2).
        provider
            .cipher_suites
            .retain(|s| s.suite() == rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256);
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.as_bytes().to_vec()];
    tls.key_log = Arc::new(rustls::KeyLogFile::new());
    let mut config = ClientConfig::new(Arc::new(tls))?;
    config.enable_0rtt(zero_rtt);
    let want_v2 = args.has("v2") || args.has("v2-only");
    if args.has("v2") && args.has("v2-only") {
        return Err("--v2 and --v2-only exclude each other".into());
    }
    if args.has("v2") {
        // RFC 9368 §2.3: start in v1, prefer v2; the server may switch during the handshake.
        config
            .version(Version::V1)
            .available_versions(&[Version::V2, Version::V1])?;
    } else if args.has("v2-only") {
        // RFC 9369: a first flight in v2.
        config
            .version(Version::V2)
            .available_versions(&[Version::V2])?;
    }

    let addr = tokio::net::lookup_host((host.as_str(), port))
        .await?
        .next()
        .ok_or(format!("{host}: no address"))?;
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let endpoint = Endpoint::client(bind)?;
    let started = Instant::now();
    let mut targets = targets;
    let mut failed = 0;
    let mut total = 0u64;
    let conn = if resume {
        if targets.len() < 2 {
            return Err("--resume and --zero-rtt need two URLs or more".into());
        }
        // The first URL on a first connection, which brings the session ticket.
        let rest = targets.split_off(1);
        let first = endpoint.connect_with(config.clone(), addr, &host)?.await?;
        let (n, f) = download(&first, alpn, &host, port, targets, &data_file, &output).await;
        total += n;
        failed += f;
        // The ticket comes after the handshake; give it a moment before closing.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        first.close(VarInt::from_u32(0), b"done");
        targets = rest;
        let addr = if second_port == port {
            addr
        } else {
            SocketAddr::new(addr.ip(), second_port)
        };
        let connecting = endpoint.connect_with(config, addr, &host)?;
        if zero_rtt {
            let (conn, accepted) = connecting
                .into_0rtt()
                .map_err(|_| "no session ticket allowing 0-RTT from the first connection")?;
            let (n, f) = download(
                &conn,
                alpn,
                &host,
                second_port,
                targets,
                &data_file,
                &output,
            )
            .await;
            total += n;
            failed += f;
            let accepted = accepted.await;
            eprintln!("interop client: 0-RTT accepted: {accepted}");
            // A rejection resends the early data in 1-RTT (RFC 9001 §4.6.2): the downloads
            // above must have succeeded either way.
            if accepted == expect_rejected {
                failed += 1;
            }
            targets = Vec::new();
            conn
        } else {
            connecting.await?
        }
    } else {
        endpoint.connect_with(config, addr, &host)?.await?
    };
    if args.has("key-update") {
        // RFC 9001 §6.1: only once the handshake is confirmed (HANDSHAKE_DONE for a client).
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match conn.force_key_update() {
                Ok(()) => break,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                Err(e) => return Err(format!("--key-update: {e}").into()),
            }
        }
    }
    let rebind = match args.get("rebind-after") {
        Some(v) => {
            let after: u64 = v.parse().map_err(|e| format!("--rebind-after {v}: {e}"))?;
            let (conn, endpoint) = (conn.clone(), endpoint.clone());
            Some(tokio::spawn(async move {
                // RFC 9000 §9: a new local port mid-transfer; the connection follows.
                while conn.stats().counters.bytes_received < after {
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
                let socket = std::net::UdpSocket::bind(bind)?;
                let local = socket.local_addr()?;
                endpoint.rebind(socket)?;
                eprintln!("interop client: rebound to {local}");
                Ok::<_, BoxError>(())
            }))
        }
        None => None,
    };
    if !targets.is_empty() {
        let (n, f) = download(
            &conn,
            alpn,
            &host,
            second_port,
            targets,
            &data_file,
            &output,
        )
        .await;
        total += n;
        failed += f;
    }
    if let Some(task) = rebind {
        if !task.is_finished() {
            task.abort();
            eprintln!("interop client: --rebind-after: the downloads ended first");
            failed += 1;
        } else if let Ok(Err(e)) = task.await {
            return Err(format!("--rebind-after: {e}").into());
        }
        eprintln!(
            "interop client: migrations: {}",
            conn.stats().counters.migrations
        );
    }
    let elapsed = started.elapsed();
    if resume {
        eprintln!(
            "interop client: resumed: {}",
            conn.is_resumed().unwrap_or(false)
        );
        if conn.is_resumed() != Some(true) && !expect_rejected {
            failed += 1;
        }
    }
    eprintln!(
        "interop client: key updates: {}",
        conn.stats().counters.key_updates
    );
    eprintln!("interop client: retried: {}", conn.retried());
    let (version, original) = (conn.version(), conn.original_version());
    if let (Some(v), Some(o)) = (version, original) {
        eprintln!("interop client: version: {v}");
        eprintln!("interop client: original version: {o}");
    }
    if want_v2 && version != Some(Version::V2) {
        eprintln!("interop client: the connection did not end in QUIC v2");
        failed += 1;
    }
    if let Some(suite) = conn.cipher_suite() {
        eprintln!("interop client: cipher suite: {suite:?}");
    }
    conn.close(VarInt::from_u32(0), b"done");
    endpoint.wait_idle().await;
    eprintln!(
        "interop client: {total} bytes in {:.3} s ({failed} failed)",
        elapsed.as_secs_f64()
    );
    if failed > 0 {
        return Err(format!("{failed} download(s) failed").into());
    }
    Ok(())
}

/// Fetches `targets` over `conn` in parallel; returns the bytes written and the failures.
async fn download(
    conn: &Connection,
    alpn: &str,
    host: &str,
    port: u16,
    targets: Vec<Target>,
    data_file: &Option<PathBuf>,
    output: &Path,
) -> (u64, usize) {
    let mut tasks = tokio::task::JoinSet::new();
    if alpn.as_bytes() == ALPN_H3 {
        let (send, driver) = match gquic_hyper::client::handshake::<H3Body>(conn.clone()).await {
            Ok(x) => x,
            Err(e) => {
                eprintln!("interop client: HTTP/3 setup: {e}");
                return (0, targets.len().max(1));
            }
        };
        tokio::spawn(async move {
            if let Err(e) = driver.await {
                tracing::debug!(error = %e, "h3 connection ended");
            }
        });
        for t in targets {
            let send = send.clone();
            let output = output.to_path_buf();
            let data_file = data_file.clone();
            let authority = format!("{host}:{port}");
            tasks.spawn(async move {
                let r = fetch_h3(send, &authority, &t.path, data_file.as_deref(), &output).await;
                (t.path, r)
            });
        }
    } else {
        for t in targets {
            let conn = conn.clone();
            let output = output.to_path_buf();
            tasks.spawn(async move {
                let r = fetch(&conn, &t.path, &output).await;
                (t.path, r)
            });
        }
    }
    let mut failed = 0;
    let mut total = 0u64;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((_, Ok(n))) => total += n,
            Ok((path, Err(e))) => {
                eprintln!("interop client: {path}: {e}");
                failed += 1;
            }
            Err(e) => {
                eprintln!("interop client: task failed: {e}");
                failed += 1;
            }
        }
    }
    (total, failed)
}

fn file_name(path: &str) -> Result<&str, BoxError> {
    Ok(path
        .split(['?', '#'])
        .next()
        .unwrap_or("")
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty() && *n != "." && *n != "..")
        .ok_or(format!("{path}: no file name in the path"))?)
}

async fn fetch_h3(
    mut send: gquic_hyper::client::SendRequest<H3Body>,
    authority: &str,
    path: &str,
    data_file: Option<&Path>,
    output: &Path,
) -> Result<u64, BoxError> {
    use http_body_util::BodyExt;
    let name = file_name(path)?;
    let uri = format!("https://{authority}{path}");
    let req = match data_file {
        Some(f) => {
            let file = tokio::fs::File::open(f)
                .await
                .map_err(|e| format!("--data-file {}: {e}", f.display()))?;
            http::Request::post(uri).body(file_body(file).boxed())?
        }
        None => http::Request::get(uri).body(
            http_body_util::Empty::new()
                .map_err(|e: std::convert::Infallible| match e {})
                .boxed(),
        )?,
    };
    let resp = send.send_request(req).await?;
    if !resp.status().is_success() {
        return Err(format!("status {}", resp.status()).into());
    }
    let mut body = resp.into_body();
    let mut file = tokio::fs::File::create(output.join(name)).await?;
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            n += data.len() as u64;
            file.write_all(&data).await?;
        }
    }
    file.flush().await?;
    Ok(n)
}

async fn fetch(conn: &Connection, path: &str, output: &Path) -> Result<u64, BoxError> {
    let name = file_name(path)?;
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_chunk(Bytes::from(format!("GET {path}\r\n")))
        .await?;
    send.finish()?;
    let mut file = tokio::fs::File::create(output.join(name)).await?;
    let mut n = 0u64;
    while let Some(chunk) = recv.read_chunk(usize::MAX).await? {
        n += chunk.len() as u64;
        file.write_all(&chunk).await?;
    }
    file.flush().await?;
    Ok(n)
}
