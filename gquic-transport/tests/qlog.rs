//! qlog traces of a real transfer (`qlog` feature, `QLOGDIR`): two runtime endpoints echo
//! 2 MiB through a UDP proxy that drops some 1-RTT datagrams each way. Every record of both
//! files must be a JSON-SEQ record (RS, one JSON object, LF) with the qlog fields the schema
//! requires, and the packets one side logged as sent must be the packets the other side
//! logged as received or dropped, plus exactly those the proxy dropped.
//!
//! This file holds one test: `QLOGDIR` is process-wide.

#![allow(clippy::disallowed_methods)] // The runtime reads the clock; so does this test.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gquic_transport::runtime::Endpoint;
use gquic_transport::{ClientConfig, ServerConfig, VarInt};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::Value;

fn configs() -> (ServerConfig, ClientConfig) {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert = CertificateDer::from(c.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(c.signing_key.serialize_der()));
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    server.alpn_protocols = vec![b"qlog-test".to_vec()];
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"qlog-test".to_vec()];
    (
        ServerConfig::new(Arc::new(server)).unwrap(),
        ClientConfig::new(Arc::new(client)).unwrap(),
    )
}

/// Forwards datagrams between one client and the server, dropping about 3% of the 1-RTT
/// (short header) datagrams in each direction while `dropping` is set. A short-header packet
/// runs to the end of its datagram (RFC 9000 §17.3), so each dropped datagram is exactly one
/// packet.
struct Proxy {
    addr: SocketAddr,
    dropping: Arc<AtomicBool>,
    /// Datagrams dropped towards the server and towards the client.
    to_server: Arc<AtomicU64>,
    to_client: Arc<AtomicU64>,
}

async fn proxy(server: SocketAddr) -> Proxy {
    let front = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let back = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let addr = front.local_addr().unwrap();
    let dropping = Arc::new(AtomicBool::new(true));
    let (to_server, to_client) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let client = Arc::new(std::sync::Mutex::new(None::<SocketAddr>));
    let drop_now = |rng: &mut u64, d: &[u8], dropping: &AtomicBool| {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        dropping.load(Ordering::Relaxed) && d[0] & 0x80 == 0 && *rng % 1000 < 30
    };
    {
        let (front, back, client, dropping, count) = (
            front.clone(),
            back.clone(),
            client.clone(),
            dropping.clone(),
            to_server.clone(),
        );
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            let mut rng = 0x5eed_0a11_u64;
            while let Ok((n, from)) = front.recv_from(&mut buf).await {
                *client.lock().unwrap() = Some(from);
                if n > 0 && drop_now(&mut rng, &buf[..n], &dropping) {
                    count.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let _ = back.send_to(&buf[..n], server).await;
            }
        });
    }
    {
        let (dropping, count) = (dropping.clone(), to_client.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            let mut rng = 0xc1a0_5eed_u64;
            while let Ok((n, _)) = back.recv_from(&mut buf).await {
                if n > 0 && drop_now(&mut rng, &buf[..n], &dropping) {
                    count.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let to = *client.lock().unwrap();
                if let Some(to) = to {
                    let _ = front.send_to(&buf[..n], to).await;
                }
            }
        });
    }
    Proxy {
        addr,
        dropping,
        to_server,
        to_client,
    }
}

/// The records of a JSON-SEQ file, each checked to be RS + JSON text + LF.
fn records(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        text.starts_with('\u{1e}'),
        "{} does not start with RS",
        path.display()
    );
    text.split('\u{1e}')
        .skip(1)
        .map(|r| {
            assert!(r.ends_with('\n'), "a record does not end with LF: {r:?}");
            serde_json::from_str::<Value>(r).unwrap_or_else(|e| panic!("not JSON ({e}): {r:?}"))
        })
        .collect()
}

/// The header (draft-ietf-quic-qlog-main-schema §5, §6.1) and every event's required fields
/// (§7: time, name, data); returns the events.
fn check(path: &Path, side: &str) -> Vec<Value> {
    let mut recs = records(path).into_iter();
    let header = recs.next().expect("no header");
    assert_eq!(
        header["file_schema"],
        "urn:ietf:params:qlog:file:sequential"
    );
    assert_eq!(header["serialization_format"], "application/qlog+json-seq");
    let trace = &header["trace"];
    assert_eq!(trace["vantage_point"]["type"], side);
    assert!(!trace["event_schemas"].as_array().unwrap().is_empty());
    assert!(trace["event_schemas"][0]
        .as_str()
        .unwrap()
        .starts_with("urn:ietf:params:qlog:events:quic"));
    assert_eq!(
        trace["common_fields"]["reference_time"]["clock_type"],
        "monotonic"
    );
    let events: Vec<Value> = recs.collect();
    let mut last = 0.0;
    for e in &events {
        let time = e["time"].as_f64().unwrap_or_else(|| panic!("no time: {e}"));
        assert!(time >= last, "time goes back: {e}");
        last = time;
        let name = e["name"].as_str().unwrap_or_else(|| panic!("no name: {e}"));
        assert!(name.starts_with("quic:"), "{e}");
        assert!(e["data"].is_object(), "no data: {e}");
        if name == "quic:packet_sent" || name == "quic:packet_received" {
            assert!(e["data"]["header"]["packet_type"].is_string(), "{e}");
            assert!(e["data"]["header"]["packet_number"].is_u64(), "{e}");
            for f in e["data"]["frames"].as_array().unwrap() {
                assert!(f["frame_type"].is_string(), "{e}");
            }
        }
    }
    events
}

fn named<'a>(events: &'a [Value], name: &str) -> impl Iterator<Item = &'a Value> {
    let name = format!("quic:{name}");
    events.iter().filter(move |e| e["name"] == name.as_str())
}

/// (packet type, packet number) of the packets an event kind names.
fn packets(events: &[Value], name: &str) -> BTreeMap<(String, u64), usize> {
    let mut out = BTreeMap::new();
    for e in named(events, name) {
        let h = &e["data"]["header"];
        if let (Some(t), Some(pn)) = (h["packet_type"].as_str(), h["packet_number"].as_u64()) {
            *out.entry((t.to_owned(), pn)).or_default() += 1;
        }
    }
    out
}

/// Packets `from` sent that `to` did not log at all must be exactly the ones the proxy
/// dropped plus the ones `to` logged as dropped before it could read their numbers.
fn match_direction(from: &[Value], to: &[Value], proxy_dropped: u64, what: &str) {
    let sent = packets(from, "packet_sent");
    let received = packets(to, "packet_received");
    let dropped_with_pn = packets(to, "packet_dropped");
    for (p, n) in &received {
        assert!(
            sent.contains_key(p),
            "{what}: {p:?} received but never sent"
        );
        assert_eq!(*n, 1, "{what}: {p:?} received {n} times");
    }
    for p in dropped_with_pn.keys() {
        assert!(sent.contains_key(p), "{what}: {p:?} dropped but never sent");
    }
    let seen: BTreeSet<_> = received.keys().chain(dropped_with_pn.keys()).collect();
    let missing: Vec<_> = sent.keys().filter(|p| !seen.contains(p)).collect();
    let dropped_without_pn = named(to, "packet_dropped")
        .filter(|e| e["data"]["header"]["packet_number"].is_null())
        .count() as u64;
    eprintln!(
        "{what}: {} sent, {} received, {} dropped with a number, {dropped_without_pn} without, \
         {proxy_dropped} by the proxy",
        sent.len(),
        received.len(),
        dropped_with_pn.len()
    );
    // The proxy drops only 1-RTT datagrams. A long-header packet can still go missing one
    // way: it arrived after the receiver discarded that space's keys (RFC 9001 §4.9), as a
    // client's Handshake probes do when the 1-RTT packet with HANDSHAKE_DONE was dropped and
    // the client's Handshake PTO fired before anything else confirmed the handshake (an ACK
    // of a 1-RTT packet, §4.1.2; the server discarded its Handshake keys on confirming,
    // §4.9.2). The receiver logs each as dropped for want of keys, with its type.
    let mut keyless: BTreeMap<String, usize> = BTreeMap::new();
    for e in named(to, "packet_dropped") {
        let h = &e["data"]["header"];
        if h["packet_number"].is_null() && e["data"]["trigger"] == "key_unavailable" {
            if let Some(t) = h["packet_type"].as_str() {
                *keyless.entry(t.to_owned()).or_default() += 1;
            }
        }
    }
    let mut long_missing: BTreeMap<&str, usize> = BTreeMap::new();
    for (t, _) in missing.iter().filter(|(t, _)| t != "1RTT") {
        *long_missing.entry(t.as_str()).or_default() += 1;
    }
    for (t, n) in long_missing {
        let k = keyless.get(t).copied().unwrap_or(0);
        assert!(
            n <= k,
            "{what}: {n} {t} packets went missing, the receiver dropped {k} for want of keys \
             (the proxy drops only 1-RTT): {missing:?}"
        );
    }
    assert_eq!(
        missing.len() as u64,
        proxy_dropped + dropped_without_pn,
        "{what}: {} sent, {} received, {} dropped with a number and {dropped_without_pn} \
         without by the receiver, {proxy_dropped} by the proxy; missing {missing:?}",
        sent.len(),
        received.len(),
        dropped_with_pn.len(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qlog_files_are_valid_json_seq_and_packets_match_across_the_proxy() {
    let dir: PathBuf = std::env::temp_dir().join(format!("gquic-qlog-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // SAFETY: the only test in this binary; set before any endpoint reads it.
    unsafe { std::env::set_var("QLOGDIR", &dir) };

    let (server_config, client_config) = configs();
    let server = Endpoint::server(server_config, "127.0.0.1:0".parse().unwrap()).unwrap();
    let proxy = proxy(server.local_addr()).await;
    let client = Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();

    let echo = tokio::spawn({
        let server = server.clone();
        async move {
            let conn = server.accept().await.unwrap().await.unwrap();
            let (mut send, mut recv) = conn.accept_bi().await.unwrap();
            let data = recv.read_to_end(4 << 20).await.unwrap();
            send.write_all(&data).await.unwrap();
            send.finish().unwrap();
            conn.closed().await
        }
    });
    let conn = client
        .connect_with(client_config, proxy.addr, "localhost")
        .unwrap()
        .await
        .unwrap();
    let data: Vec<u8> = (0..2u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&data).await.unwrap();
    send.finish().unwrap();
    let back = tokio::time::timeout(Duration::from_secs(60), recv.read_to_end(4 << 20))
        .await
        .unwrap()
        .unwrap();
    assert!(back == data, "the echo differs");
    // Let the last acknowledgments settle, then close without losses so both ends see it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.dropping.store(false, Ordering::Relaxed);
    conn.close(VarInt::from_u32(0), b"done");
    let closed = tokio::time::timeout(Duration::from_secs(10), echo)
        .await
        .unwrap()
        .unwrap();
    assert!(
        closed.to_string().contains("done"),
        "the server saw {closed}"
    );
    drop(conn);
    tokio::time::timeout(Duration::from_secs(10), client.wait_idle())
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), server.wait_idle())
        .await
        .unwrap();

    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 2, "{files:?}");
    let find = |suffix: &str| {
        files
            .iter()
            .find(|f| f.to_string_lossy().ends_with(suffix))
            .unwrap_or_else(|| panic!("no *{suffix} in {files:?}"))
            .clone()
    };
    let (client_file, server_file) = (find("_client.sqlog"), find("_server.sqlog"));
    // The same ODCID names both files (draft-ietf-quic-qlog-main-schema §10.1).
    assert_eq!(
        client_file
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace("_client", ""),
        server_file
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace("_server", "")
    );
    let c = check(&client_file, "client");
    let s = check(&server_file, "server");

    for (events, side) in [(&c, "client"), (&s, "server")] {
        for name in [
            "connection_started",
            "connection_closed",
            "packet_sent",
            "packet_received",
            "key_updated",
            "recovery_metrics_updated",
            "congestion_state_updated",
        ] {
            assert!(
                named(events, name).next().is_some(),
                "the {side} logged no {name}"
            );
        }
        let keys: BTreeSet<_> = named(events, "key_updated")
            .map(|e| e["data"]["key_type"].as_str().unwrap().to_owned())
            .collect();
        for k in ["client_handshake_secret", "server_1rtt_secret"] {
            assert!(keys.contains(k), "the {side} logged no {k}: {keys:?}");
        }
    }
    // The connection's states (quic-events §5.6), each once and in order: the client closed,
    // the server drained.
    let states = |events: &[Value]| -> Vec<(String, String)> {
        named(events, "connection_state_updated")
            .map(|e| {
                let d = &e["data"];
                (
                    d["old"].as_str().unwrap_or("").to_owned(),
                    d["new"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let expect = |end: &str| -> Vec<(String, String)> {
        let seq = [
            "",
            "attempted",
            "handshake_started",
            "handshake_complete",
            "handshake_confirmed",
            end,
            "closed",
        ];
        seq.windows(2)
            .map(|w| (w[0].to_owned(), w[1].to_owned()))
            .collect()
    };
    assert_eq!(states(&c), expect("closing"), "the client's states");
    assert_eq!(states(&s), expect("draining"), "the server's states");
    // Each state where it happens in the trace: `attempted` right before the first Initial
    // packet, `handshake_started` right before the first Handshake packet, the handshake
    // complete after both.
    for (events, side) in [(&c, "client"), (&s, "server")] {
        let state_at = |state: &str| {
            events
                .iter()
                .position(|e| {
                    e["name"] == "quic:connection_state_updated" && e["data"]["new"] == state
                })
                .unwrap()
        };
        let first_packet = |ty: &str| {
            events
                .iter()
                .position(|e| {
                    (e["name"] == "quic:packet_sent" || e["name"] == "quic:packet_received")
                        && e["data"]["header"]["packet_type"] == ty
                })
                .unwrap()
        };
        assert_eq!(state_at("attempted") + 1, first_packet("initial"), "{side}");
        assert_eq!(
            state_at("handshake_started") + 1,
            first_packet("handshake"),
            "{side}"
        );
        assert!(
            state_at("handshake_complete") > first_packet("handshake"),
            "{side}"
        );
    }
    let (to_server, to_client) = (
        proxy.to_server.load(Ordering::Relaxed),
        proxy.to_client.load(Ordering::Relaxed),
    );
    assert!(to_server > 0 && to_client > 0, "the proxy dropped nothing");
    // The senders noticed: losses are logged.
    assert!(named(&c, "packet_lost").next().is_some() || named(&s, "packet_lost").next().is_some());
    let frames: BTreeSet<_> = named(&c, "packet_sent")
        .flat_map(|e| e["data"]["frames"].as_array().unwrap().iter())
        .map(|f| f["frame_type"].as_str().unwrap().to_owned())
        .collect();
    for f in ["crypto", "stream", "ack", "connection_close"] {
        assert!(
            frames.contains(f),
            "the client sent no {f} frame: {frames:?}"
        );
    }
    match_direction(&c, &s, to_server, "client -> server");
    match_direction(&s, &c, to_client, "server -> client");
    let _ = std::fs::remove_dir_all(&dir);
}
