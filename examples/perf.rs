//! The QUIC performance protocol (draft-banks-quic-performance, ALPN `perf`), the one quinn's
//! and msquic's perf tools speak, as a server and a client.
//!
//! The protocol: on a bidirectional stream the client sends the number of bytes it wants back
//! (8 bytes, big-endian), then whatever it uploads, then FIN; the server reads the request,
//! reads the upload to its end, then sends the requested bytes and FIN on the same stream.
//! On a unidirectional stream the request is the same, and the server answers on a
//! unidirectional stream of its own.
//!
//! ```text
//! perf server [--listen 127.0.0.1:4433] [--cert cert.pem --key key.pem]
//! perf client ADDR --ca cert.pem [--server-name localhost] [--download BYTES] [--upload BYTES]
//!             [--requests N] [--concurrency N] [--uni]
//! ```
//!
//! The server prints its development certificate's path when run without `--cert`. The client
//! runs `--requests` requests (1 by default), `--concurrency` at a time, each downloading and
//! uploading the given sizes, checks every response's length, and prints the totals:
//! `perf: N requests, D bytes down, U bytes up in T s (X Gbit/s down, Y Gbit/s up)`. It exits
//! with status 1 if any request fails.

#![allow(clippy::disallowed_methods)] // A program reads the real clock.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use gquic::transport::runtime::{Connection, Endpoint, RecvStream, SendStream};
use gquic::transport::{ClientConfig, ServerConfig, TransportConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

mod common;

use common::BoxError;

/// The protocol's ALPN.
const ALPN: &[u8] = b"perf";
/// What responses and uploads are cut from.
static DATA: [u8; 64 * 1024] = [42; 64 * 1024];

fn transport() -> Arc<TransportConfig> {
    let mut t = TransportConfig::default();
    // Room for a busy client's requests, and windows for a fast path.
    t.max_concurrent_bidi_streams(1024)
        .max_concurrent_uni_streams(1024)
        .stream_receive_window(4 << 20, 16 << 20)
        .receive_window(16 << 20, 64 << 20);
    Arc::new(t)
}

/// Writes `n` bytes of [`DATA`] to `send` and finishes it.
async fn send_bytes(send: &mut SendStream, mut n: u64) -> Result<(), BoxError> {
    while n > 0 {
        let take = n.min(DATA.len() as u64) as usize;
        send.write_chunk(Bytes::from_static(&DATA[..take])).await?;
        n -= take as u64;
    }
    send.finish()?;
    Ok(())
}

/// Reads a stream to its end, up to 32 received chunks per call; returns how many bytes it
/// carried.
async fn drain(recv: &mut RecvStream) -> Result<u64, BoxError> {
    let mut slots: [Bytes; 32] = Default::default();
    let mut n = 0;
    while let Some(k) = recv.read_chunks(&mut slots).await? {
        n += slots[..k].iter().map(|c| c.len() as u64).sum::<u64>();
    }
    Ok(n)
}

/// The request at the front of a stream: the bytes wanted back. The upload after it is read
/// to its end.
async fn read_request(recv: &mut RecvStream) -> Result<u64, BoxError> {
    let mut head = Vec::with_capacity(8);
    while head.len() < 8 {
        match recv.read_chunk(8 - head.len()).await? {
            Some(chunk) => head.extend_from_slice(&chunk),
            None => return Err("the stream ended before its 8-byte request".into()),
        }
    }
    let wanted = u64::from_be_bytes(head[..8].try_into().expect("8 bytes"));
    drain(recv).await?;
    Ok(wanted)
}

async fn serve_connection(conn: Connection) {
    let uni = {
        let conn = conn.clone();
        async move {
            while let Ok(mut recv) = conn.accept_uni().await {
                let conn = conn.clone();
                tokio::spawn(async move {
                    let r: Result<(), BoxError> = async {
                        let wanted = read_request(&mut recv).await?;
                        let mut send = conn.open_uni().await?;
                        send_bytes(&mut send, wanted).await
                    }
                    .await;
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "uni request failed");
                    }
                });
            }
        }
    };
    let bi = async {
        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
            tokio::spawn(async move {
                let r: Result<(), BoxError> = async {
                    let wanted = read_request(&mut recv).await?;
                    send_bytes(&mut send, wanted).await
                }
                .await;
                if let Err(e) = r {
                    tracing::debug!(error = %e, "request failed");
                }
            });
        }
    };
    tokio::join!(uni, bi);
}

async fn server(args: Vec<String>) -> Result<(), BoxError> {
    let mut listen: SocketAddr = "127.0.0.1:4433".parse()?;
    let (mut cert, mut key) = (None, None);
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => listen = value()?.parse()?,
            "--cert" => cert = Some(PathBuf::from(value()?)),
            "--key" => key = Some(PathBuf::from(value()?)),
            other => return Err(format!("unknown server flag {other}").into()),
        }
    }
    let mut tls = common::server_tls(
        &common::Args {
            listen,
            cert,
            key,
            qlog: None,
            quic_sockets: 1,
        },
        "gquic-perf-example",
    )?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.max_early_data_size = 0;
    let mut config = ServerConfig::new(Arc::new(tls))?;
    config.transport(transport())?;
    let endpoint = Endpoint::server(config, listen)?;
    println!("perf server listening on {}", endpoint.local_addr());
    while let Some(connecting) = endpoint.accept().await {
        tokio::spawn(async move {
            match connecting.await {
                Ok(conn) => serve_connection(conn).await,
                Err(e) => tracing::debug!(error = %e, "handshake failed"),
            }
        });
    }
    Ok(())
}

/// One request on a new stream: `download` bytes asked for, `upload` sent; returns the bytes
/// that came back.
async fn request(
    conn: &Connection,
    download: u64,
    upload: u64,
    uni: bool,
) -> Result<u64, BoxError> {
    let mut send = if uni {
        conn.open_uni().await?
    } else {
        let (send, recv) = conn.open_bi().await?;
        return bi_request(send, recv, download, upload).await;
    };
    send.write_all(&download.to_be_bytes()).await?;
    send_bytes(&mut send, upload).await?;
    // The answer comes on a stream the server opens; with several uni requests in flight
    // the answers may come in any order, so only their total is checked by the caller.
    let mut recv = conn.accept_uni().await?;
    drain(&mut recv).await
}

async fn bi_request(
    mut send: SendStream,
    mut recv: RecvStream,
    download: u64,
    upload: u64,
) -> Result<u64, BoxError> {
    send.write_all(&download.to_be_bytes()).await?;
    let (sent, got) = tokio::join!(send_bytes(&mut send, upload), drain(&mut recv));
    sent?;
    got
}

async fn client(args: Vec<String>) -> Result<(), BoxError> {
    let mut it = args.into_iter();
    let addr: SocketAddr = it
        .next()
        .ok_or("client needs the server's address")?
        .parse()?;
    let (mut ca, mut name) = (None, "localhost".to_owned());
    let (mut download, mut upload, mut requests, mut concurrency, mut uni) =
        (1u64 << 20, 0u64, 1u64, 1usize, false);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--ca" => ca = Some(PathBuf::from(value()?)),
            "--server-name" => name = value()?,
            "--download" => download = value()?.parse()?,
            "--upload" => upload = value()?.parse()?,
            "--requests" => requests = value()?.parse()?,
            "--concurrency" => concurrency = value()?.parse()?,
            "--uni" => uni = true,
            other => return Err(format!("unknown client flag {other}").into()),
        }
    }
    let ca = ca.ok_or("client needs --ca (the server's certificate)")?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&ca)? {
        roots.add(cert?)?;
    }
    let provider = Arc::new(gquic::transport::crypto::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.key_log = common::key_log();
    let mut config = ClientConfig::new(Arc::new(tls))?;
    config.transport(transport())?;
    let bind: SocketAddr = if addr.is_ipv6() {
        "[::]:0".parse()?
    } else {
        "0.0.0.0:0".parse()?
    };
    let endpoint = Endpoint::client(bind)?;
    let conn = endpoint.connect_with(config, addr, &name)?.await?;
    let left = Arc::new(AtomicU64::new(requests));
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let conn = conn.clone();
        let left = left.clone();
        tasks.spawn(async move {
            let mut got = 0u64;
            while left
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .is_ok()
            {
                let n = request(&conn, download, upload, uni).await?;
                if !uni && n != download {
                    return Err(format!("asked for {download} bytes, got {n}").into());
                }
                got += n;
            }
            Ok::<u64, BoxError>(got)
        });
    }
    let mut down = 0u64;
    while let Some(r) = tasks.join_next().await {
        down += r??;
    }
    let secs = t0.elapsed().as_secs_f64();
    if down != download * requests {
        return Err(format!("{down} bytes came back, {} asked for", download * requests).into());
    }
    let up = upload * requests;
    println!(
        "perf: {requests} requests, {down} bytes down, {up} bytes up in {secs:.3} s \
         ({:.3} Gbit/s down, {:.3} Gbit/s up)",
        down as f64 * 8.0 / secs / 1e9,
        up as f64 * 8.0 / secs / 1e9
    );
    conn.close(0u32.into(), b"done");
    // Out once the close is handed to the socket: no closing period to sit through
    // (RFC 9000 §10.2).
    endpoint.wait_closes_sent().await;
    Ok(())
}

#[tokio::main]
async fn main() {
    common::init_tracing();
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mode = if args.is_empty() {
        String::new()
    } else {
        args.remove(0)
    };
    let r = match mode.as_str() {
        "server" => server(args).await,
        "client" => client(args).await,
        _ => Err(
            "usage: perf server [--listen ADDR] [--cert FILE --key FILE]\n       \
                  perf client ADDR --ca FILE [--server-name NAME] [--download BYTES] \
                  [--upload BYTES] [--requests N] [--concurrency N] [--uni]"
                .into(),
        ),
    };
    if let Err(e) = r {
        eprintln!("perf: {e}");
        std::process::exit(1);
    }
}
