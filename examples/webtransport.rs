//! Run with: cargo run --release --example webtransport
//!
//! A WebTransport echo service at `/wt` and a test page at `/`, on `https://localhost:4433`
//! (HTTP/3 on UDP, and HTTP/1.1 + HTTP/2 on TCP with Alt-Svc for the page). For every
//! session the service:
//!
//! - echoes each bidirectional stream the client opens on the same stream, with FIN after the
//!   client's FIN;
//! - after a client unidirectional stream ends, opens a unidirectional stream of its own in
//!   that session with the same bytes, then FIN;
//! - echoes every datagram as a datagram.
//!
//! Sessions run concurrently, several on one connection and across connections, next to
//! ordinary requests. The page opens `new WebTransport('https://' + location.host + '/wt')`,
//! checks the three echoes and writes `webtransport: ok` (or `webtransport: error ...`) into
//! the element with `id="wt"`; it also posts the result to `/report`, which the server prints.
//!
//! Flags: `--listen ADDR` (default `127.0.0.1:4433`), `--cert cert.pem --key key.pem`,
//! `--quic-sockets N` (HTTP/3 over N `SO_REUSEPORT` sockets, default 1).
//! Without them it makes an ECDSA P-256 development certificate for `localhost` (valid 14
//! days) and prints its path and SPKI sha256 for Chrome:
//!
//! ```text
//! chromium --origin-to-force-quic-on=localhost:4433 \
//!          --ignore-certificate-errors-spki-list=<SPKI> https://localhost:4433/
//! ```

#![allow(clippy::disallowed_methods)] // A program reads the real clock.

mod common;

use axum::response::Html;
use axum::routing::{any, get, post};
use axum::Router;
use gquic_axum::{Session, WebTransportUpgrade};
use tracing::info;

use common::BoxError;

const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>GQUIC WebTransport</title></head>
<body>
<h1>WebTransport echo</h1>
<p id="wt">webtransport: running</p>
<script>
(async () => {
  const out = document.getElementById('wt');
  const report = (text) => {
    out.textContent = text;
    fetch('/report', { method: 'POST', body: text }).catch(() => {});
  };
  const deadline = setTimeout(() => report('webtransport: error timed out after 20 s'), 20000);
  try {
    const enc = new TextEncoder();
    const dec = new TextDecoder();
    const readAll = async (readable) => {
      const reader = readable.getReader();
      let text = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return text + dec.decode();
        text += dec.decode(value, { stream: true });
      }
    };
    const wt = new WebTransport('https://' + location.host + '/wt');
    await wt.ready;

    // (a) a bidirectional stream, echoed on the same stream.
    const bidi = await wt.createBidirectionalStream();
    const bw = bidi.writable.getWriter();
    await bw.write(enc.encode('ping-bidi'));
    await bw.close();
    const bidiEcho = await readAll(bidi.readable);
    if (bidiEcho !== 'ping-bidi') throw new Error('bidi echo was ' + JSON.stringify(bidiEcho));

    // (b) a unidirectional stream, sent back on the server's first unidirectional stream.
    const uni = await wt.createUnidirectionalStream();
    const uw = uni.getWriter();
    await uw.write(enc.encode('ping-uni'));
    await uw.close();
    const incoming = wt.incomingUnidirectionalStreams.getReader();
    const { value: back } = await incoming.read();
    const uniEcho = await readAll(back);
    if (uniEcho !== 'ping-uni') throw new Error('uni echo was ' + JSON.stringify(uniEcho));

    // (c) a datagram, resent every 300 ms until its echo arrives.
    const dw = wt.datagrams.writable.getWriter();
    const dr = wt.datagrams.readable.getReader();
    const send = () => dw.write(enc.encode('ping-dgram')).catch(() => {});
    send();
    const resend = setInterval(send, 300);
    const { value: dgram } = await dr.read();
    clearInterval(resend);
    const dgramEcho = dec.decode(dgram);
    if (dgramEcho !== 'ping-dgram') throw new Error('datagram echo was ' + JSON.stringify(dgramEcho));

    clearTimeout(deadline);
    report('webtransport: ok');
    wt.close({ closeCode: 0, reason: 'done' });
  } catch (e) {
    clearTimeout(deadline);
    report('webtransport: error ' + (e && e.message ? e.message : e));
  }
})();
</script>
</body></html>
"#;

/// The echo service of one session (see the module docs).
async fn echo(session: Session) {
    let id = session.id();
    info!(session = id, peer = %session.remote_address(), "WebTransport session");
    loop {
        tokio::select! {
            bi = session.accept_bi() => {
                let Ok((mut send, mut recv)) = bi else { break };
                tokio::spawn(async move {
                    while let Ok(Some(chunk)) = recv.read_chunk(usize::MAX).await {
                        if send.write_chunk(chunk).await.is_err() {
                            return;
                        }
                    }
                    let _ = send.finish();
                });
            }
            uni = session.accept_uni() => {
                let Ok(mut recv) = uni else { break };
                let session = session.clone();
                tokio::spawn(async move {
                    let Ok(data) = recv.read_to_end(16 << 20).await else { return };
                    if let Ok(mut send) = session.open_uni().await {
                        let _ = send.write_all(&data).await;
                        let _ = send.finish();
                    }
                });
            }
            datagram = session.read_datagram() => {
                let Ok(d) = datagram else { break };
                let _ = session.send_datagram(d);
            }
            // The server is shutting down (or the peer asked): end the session cleanly.
            () = session.draining() => {
                session.close(0, "server shutting down");
                break;
            }
        }
    }
    let reason = session.closed().await;
    info!(session = id, %reason, "WebTransport session ended");
}

fn app() -> Router {
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route(
            "/wt",
            any(|upgrade: WebTransportUpgrade| async move { upgrade.on_session(echo) }),
        )
        .route(
            "/report",
            post(|body: String| async move {
                println!("page reported: {body}");
            }),
        )
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    common::init_tracing();
    let args = common::args().map_err(|e| -> BoxError { format!("webtransport: {e}").into() })?;
    let tls = common::server_tls(&args, "gquic-webtransport")?;
    let server =
        gquic_axum::dual::DualServer::bind_sockets(args.listen, tls, args.quic_sockets).await?;
    let addr = server.local_addr();
    println!(
        "serving https://localhost:{} on {addr} (WebTransport at /wt over HTTP/3)",
        addr.port()
    );
    server
        .serve(app())
        .enable_webtransport(true)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
            println!("shutting down gracefully");
        })
        .await?;
    Ok(())
}
