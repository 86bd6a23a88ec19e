//! Migration (RFC 9000 §9) with quinn: a client moving to a new port, NAT rebinding.

use super::*;

// ---------------------------------------------------------------------------------------
// Migration (RFC 9000 §9): a client moving to a new port, and NAT rebinding
// ---------------------------------------------------------------------------------------

/// Runs `echo` of `len` bytes while calling `rebind` once `bytes_sent()` passes 1 MiB.
macro_rules! echo_with_rebind {
    ($conn:expr, $len:expr, $seed:expr, $bytes_sent:expr, $rebind:expr) => {{
        let data = pattern($len, $seed);
        let rebinder = async {
            while $bytes_sent < 1 << 20 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            $rebind;
        };
        tokio::join!(async { echo!($conn, data) }, rebinder);
    }};
}

fn fresh_socket() -> std::net::UdpSocket {
    std::net::UdpSocket::bind(localhost()).unwrap()
}

/// A gquic server that hands out its connections.
pub(super) fn gquic_server_with_conns(
    certs: &Certs,
) -> (Endpoint, tokio::sync::mpsc::UnboundedReceiver<Connection>) {
    let ep = gquic_server(certs, b"interop", Settings::default());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let accept = ep.clone();
    tokio::spawn(async move {
        while let Some(connecting) = accept.accept().await {
            if let Ok(conn) = connecting.await {
                serve!(conn.clone());
                let _ = tx.send(conn);
            }
        }
    });
    (ep, rx)
}

/// A quinn server that hands out its connections.
fn quinn_server_with_conns(
    certs: &Certs,
) -> (
    quinn::Endpoint,
    tokio::sync::mpsc::UnboundedReceiver<quinn::Connection>,
) {
    let ep = quinn_server(certs, b"interop", Settings::default());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let accept = ep.clone();
    tokio::spawn(async move {
        while let Some(incoming) = accept.accept().await {
            if let Ok(conn) = incoming.await {
                serve!(conn.clone());
                let _ = tx.send(conn);
            }
        }
    });
    (ep, rx)
}

#[tokio::test]
async fn gquic_client_rebinds_mid_transfer_and_quinn_server_follows() {
    tokio::time::timeout(TIMEOUT, async {
        let certs = certs();
        let (server, mut conns) = quinn_server_with_conns(&certs);
        let client = Endpoint::client(localhost()).unwrap();
        let conn = gquic_connect(&client, &certs, server.local_addr().unwrap()).await;
        let server_conn = conns.recv().await.unwrap();
        let before = client.local_addr();
        let socket = fresh_socket();
        let after = socket.local_addr().unwrap();
        echo_with_rebind!(
            conn,
            4 << 20,
            200,
            conn.stats().counters.bytes_sent,
            client.rebind(socket).unwrap()
        );
        assert_ne!(before, after);
        assert_eq!(client.local_addr(), after);
        assert_eq!(
            server_conn.remote_address(),
            after,
            "quinn follows the client"
        );
        assert_eq!(conn.stats().counters.migrations, 1);
        // More traffic on the new path.
        uni!(conn, pattern(100_000, 201));
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn quinn_client_rebinds_mid_transfer_and_gquic_server_follows() {
    tokio::time::timeout(TIMEOUT, async {
        let certs = certs();
        let (server, mut conns) = gquic_server_with_conns(&certs);
        let client = quinn::Endpoint::client(localhost()).unwrap();
        let conn = client
            .connect_with(
                quinn_client_config(&certs, b"interop", Settings::default()),
                server.local_addr(),
                "localhost",
            )
            .unwrap()
            .await
            .unwrap();
        let server_conn = conns.recv().await.unwrap();
        let socket = fresh_socket();
        let after = socket.local_addr().unwrap();
        echo_with_rebind!(
            conn,
            4 << 20,
            210,
            conn.stats().udp_tx.bytes,
            client.rebind(socket).unwrap()
        );
        assert_eq!(
            server_conn.remote_address(),
            after,
            "gquic follows the client"
        );
        let stats = server_conn.stats().counters;
        assert_eq!(
            (stats.migrations, stats.paths_validated),
            (1, 1),
            "{stats:?}"
        );
        uni!(conn, pattern(100_000, 211));
    })
    .await
    .unwrap();
}

/// A NAT in front of the client: after `rebind_after` datagrams from the client it maps the
/// client to a new source port (a new upstream socket). Datagrams the server sends to the old
/// port still come through (the old mapping has not expired).
struct NatProxy {
    addr: SocketAddr,
    upstream_ports: tokio::sync::watch::Receiver<Vec<SocketAddr>>,
}

impl NatProxy {
    async fn start(server: SocketAddr, rebind_after: u64) -> Self {
        let front = Arc::new(UdpSocket::bind(localhost()).await.unwrap());
        let addr = front.local_addr().unwrap();
        let client = Arc::new(std::sync::Mutex::new(None::<SocketAddr>));
        let (ports_tx, upstream_ports) = tokio::sync::watch::channel(Vec::new());
        let upstream = |front: Arc<UdpSocket>,
                        client: Arc<std::sync::Mutex<Option<SocketAddr>>>| async move {
            let up = Arc::new(UdpSocket::bind(localhost()).await.unwrap());
            let reader = up.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                while let Ok((n, _)) = reader.recv_from(&mut buf).await {
                    let to = *client.lock().unwrap();
                    if let Some(to) = to {
                        let _ = front.send_to(&buf[..n], to).await;
                    }
                }
            });
            up
        };
        let mut up = upstream(front.clone(), client.clone()).await;
        ports_tx.send_modify(|p| p.push(up.local_addr().unwrap()));
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            let mut count = 0u64;
            while let Ok((n, from)) = front.recv_from(&mut buf).await {
                *client.lock().unwrap() = Some(from);
                count += 1;
                if count == rebind_after {
                    up = upstream(front.clone(), client.clone()).await;
                    ports_tx.send_modify(|p| p.push(up.local_addr().unwrap()));
                }
                let _ = up.send_to(&buf[..n], server).await;
            }
        });
        Self {
            addr,
            upstream_ports,
        }
    }

    fn ports(&self) -> Vec<SocketAddr> {
        self.upstream_ports.borrow().clone()
    }
}

#[tokio::test]
async fn nat_rebinding_quinn_client_to_gquic_server() {
    tokio::time::timeout(TIMEOUT, async {
        let certs = certs();
        let (server, mut conns) = gquic_server_with_conns(&certs);
        let nat = NatProxy::start(server.local_addr(), 400).await;
        let client = quinn::Endpoint::client(localhost()).unwrap();
        let conn = client
            .connect_with(
                quinn_client_config(&certs, b"interop", Settings::default()),
                nat.addr,
                "localhost",
            )
            .unwrap()
            .await
            .unwrap();
        let server_conn = conns.recv().await.unwrap();
        echo!(conn, pattern(4 << 20, 220));
        let ports = nat.ports();
        assert_eq!(ports.len(), 2, "the NAT rebound once");
        assert_eq!(server_conn.remote_address(), ports[1]);
        let stats = server_conn.stats().counters;
        assert_eq!(
            (stats.migrations, stats.paths_validated),
            (1, 1),
            "{stats:?}"
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn nat_rebinding_gquic_client_to_quinn_server() {
    tokio::time::timeout(TIMEOUT, async {
        let certs = certs();
        let (server, mut conns) = quinn_server_with_conns(&certs);
        let nat = NatProxy::start(server.local_addr().unwrap(), 400).await;
        let client = Endpoint::client(localhost()).unwrap();
        let conn = gquic_connect(&client, &certs, nat.addr).await;
        let server_conn = conns.recv().await.unwrap();
        echo!(conn, pattern(4 << 20, 230));
        let ports = nat.ports();
        assert_eq!(ports.len(), 2, "the NAT rebound once");
        // quinn validated our new path (we answered its PATH_CHALLENGE) and moved there.
        assert_eq!(server_conn.remote_address(), ports[1]);
        uni!(conn, pattern(100_000, 231));
    })
    .await
    .unwrap();
}
