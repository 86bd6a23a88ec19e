//! Handshake confirmation with quinn (RFC 9001 §4.1.2): a gquic client whose HANDSHAKE_DONE
//! from quinn is lost takes quinn's acknowledgment of its 1-RTT packets as confirmation and
//! stops sending Handshake probes (which quinn, having discarded its Handshake keys, drops).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use super::*;

/// How long the proxy keeps dropping quinn's larger 1-RTT datagrams.
const WINDOW: Duration = Duration::from_millis(400);
/// quinn's datagrams of 1-RTT packets at least this long are dropped during [`WINDOW`]: the
/// first (HANDSHAKE_DONE, NEW_CONNECTION_ID frames, session tickets) and anything sent again
/// from it. An acknowledgment alone is far shorter.
const LARGE: usize = 100;

/// What the proxy saw, with times.
#[derive(Default)]
struct Seen {
    /// The client's datagrams that start with a Handshake packet.
    client_handshake: Vec<Instant>,
    /// quinn's first short 1-RTT datagram let through (an acknowledgment) during the window.
    first_small: Option<Instant>,
    /// quinn's 1-RTT datagrams dropped, with their sizes.
    dropped: Vec<usize>,
}

/// A proxy in front of `server` that drops quinn's large 1-RTT datagrams for [`WINDOW`] from
/// the first one, and records the client's Handshake datagrams.
async fn start_proxy(server: SocketAddr) -> (SocketAddr, Arc<Mutex<Seen>>) {
    let socket = Arc::new(UdpSocket::bind(localhost()).await.unwrap());
    let addr = socket.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let record = seen.clone();
    tokio::spawn(async move {
        let mut client: Option<SocketAddr> = None;
        let mut window_start: Option<Instant> = None;
        let mut buf = vec![0u8; 65536];
        loop {
            let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let now = Instant::now();
            let first = buf[0];
            if from == server {
                let Some(to) = client else { continue };
                // RFC 9000 §17.3: a short header has the high bit clear.
                if n > 0 && first & 0x80 == 0 {
                    let start = *window_start.get_or_insert(now);
                    if now.duration_since(start) < WINDOW {
                        let mut seen = record.lock().unwrap();
                        if n >= LARGE {
                            seen.dropped.push(n);
                            continue;
                        }
                        seen.first_small.get_or_insert(now);
                    }
                }
                let _ = socket.send_to(&buf[..n], to).await;
            } else {
                client = Some(from);
                // RFC 9000 §17.2: a v1 long header of type 2 is a Handshake packet.
                if n > 0 && first & 0x80 != 0 && (first & 0x30) >> 4 == 2 {
                    record.lock().unwrap().client_handshake.push(now);
                }
                let _ = socket.send_to(&buf[..n], server).await;
            }
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn gquic_client_confirms_on_quinns_ack_when_handshake_done_is_lost() {
    tokio::time::timeout(TIMEOUT, async {
        let certs = certs();
        let server = run_quinn_server(quinn_server(&certs, b"interop", Settings::default()));
        let (proxy, seen) = start_proxy(server.endpoint.local_addr().unwrap()).await;
        let client = Endpoint::client(localhost()).unwrap();
        let conn = gquic_connect(&client, &certs, proxy).await;
        // 1-RTT packets for quinn to acknowledge: a few full ones every 2 ms (two or more draw
        // an immediate ACK, RFC 9000 §13.2.2, well before quinn's probe timeout sends the lost
        // frames again with its ACKs), on a stream left open so that quinn sends nothing else.
        let mut send = conn.open_uni().await.unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let stop = done.clone();
        let writer = tokio::spawn(async move {
            let chunk = pattern(4000, 3);
            while !stop.load(Ordering::Relaxed) {
                send.write_all(&chunk).await.unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            send
        });
        tokio::time::sleep(WINDOW + Duration::from_millis(100)).await;
        done.store(true, Ordering::Relaxed);
        let mut send = writer.await.unwrap();
        send.finish().unwrap();
        // The connection is sound once the window is over: an echo goes through.
        let (mut tx, mut rx) = conn.open_bi().await.unwrap();
        let data = pattern(100_000, 4);
        tx.write_all(&data).await.unwrap();
        tx.finish().unwrap();
        let back = rx.read_to_end(1 << 20).await.unwrap();
        assert_eq!(Sha256::digest(&back), Sha256::digest(&data), "echo differs");

        let seen = seen.lock().unwrap();
        assert!(
            !seen.dropped.is_empty(),
            "the proxy dropped none of quinn's datagrams"
        );
        let first_small = seen
            .first_small
            .expect("no acknowledgment from quinn came through in the window");
        // Probes already on their way when the acknowledgment arrived are let off (and a
        // loaded machine's delays). Without this confirmation the client sends a pair of
        // Handshake probes every few milliseconds all through the window (each ACK of its
        // 1-RTT packets resets the PTO backoff) until HANDSHAKE_DONE gets through.
        let late: Vec<Duration> = seen
            .client_handshake
            .iter()
            .filter(|&&t| t > first_small + Duration::from_millis(50))
            .map(|&t| t.duration_since(first_small))
            .collect();
        assert!(
            late.is_empty(),
            "Handshake datagrams after quinn's ACK of 1-RTT packets (dropped {:?}): {late:?}",
            seen.dropped
        );
    })
    .await
    .unwrap();
}
