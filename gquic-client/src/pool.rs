//! The bottom of the stack: one multiplexed HTTP/3 connection per origin, dialed on demand
//! (concurrent dials coalesced), replaced when it dies, evicted when idle.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use gquic_hyper::client::SendRequest;
use gquic_transport::runtime::Endpoint;
use http::{Request, Response};
use http_body::Frame;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::body::Body;
use crate::error::{Error, Kind};
use crate::ResBody;

/// The peer address of the connection a response came on (a response extension).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RemoteAddr(pub(crate) SocketAddr);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Origin {
    host: String,
    port: u16,
}

#[derive(Clone)]
struct Conn {
    send: SendRequest<Body>,
    remote: SocketAddr,
    id: u64,
    in_flight: Arc<AtomicUsize>,
}

/// Why a dial failed, kept for the callers that waited on it.
#[derive(Clone, Debug)]
struct DialError {
    message: String,
    timeout: bool,
}

impl DialError {
    fn to_error(&self) -> Error {
        if self.timeout {
            Error::timeout_with(Kind::Connect, self.message.clone())
        } else {
            Error::connect(self.message.clone())
        }
    }
}

struct Slot {
    cell: OnceCell<Result<Conn, DialError>>,
    last_used: Mutex<Instant>,
}

impl Slot {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            cell: OnceCell::new(),
            last_used: Mutex::new(Instant::now()),
        })
    }

    fn touch(&self) {
        *self.last_used.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    /// Idle for longer than `timeout` with no request in flight.
    fn idle_for(&self, timeout: Duration, now: Instant) -> bool {
        let idle = now.duration_since(*self.last_used.lock().unwrap_or_else(|e| e.into_inner()));
        let busy = match self.cell.get() {
            Some(Ok(c)) => c.in_flight.load(Ordering::Acquire) > 0,
            Some(Err(_)) => false,
            None => true, // still dialing
        };
        !busy && idle > timeout
    }
}

pub(crate) struct PoolConfig {
    pub(crate) tls: Arc<rustls::ClientConfig>,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) max_idle_per_host: usize,
    pub(crate) connect_timeout: Option<Duration>,
    pub(crate) local_address: Option<IpAddr>,
}

pub(crate) struct Pool {
    config: PoolConfig,
    v4: OnceCell<Endpoint>,
    v6: OnceCell<Endpoint>,
    slots: Mutex<HashMap<Origin, Arc<Slot>>>,
}

impl Pool {
    pub(crate) fn new(config: PoolConfig) -> Self {
        Self {
            config,
            v4: OnceCell::new(),
            v6: OnceCell::new(),
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// The client endpoint for `family` (created on first use, so a client can be built
    /// outside a runtime).
    async fn endpoint(&self, v6: bool) -> Result<&Endpoint, Error> {
        let cell = if v6 { &self.v6 } else { &self.v4 };
        cell.get_or_try_init(|| async {
            let ip = match (self.config.local_address, v6) {
                (Some(ip), _) => ip,
                (None, false) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                (None, true) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            };
            Endpoint::client(SocketAddr::new(ip, 0)).map_err(Error::connect)
        })
        .await
    }

    async fn dial(&self, origin: &Origin) -> Result<Conn, DialError> {
        let fail = |e: &dyn std::fmt::Display| DialError {
            message: format!("{}:{}: {e}", origin.host, origin.port),
            timeout: false,
        };
        let host = origin.host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, origin.port))
            .await
            .map_err(|e| fail(&e))?
            .collect();
        // Prefer the family of the local address, if one was given.
        let addr = addrs
            .iter()
            .find(|a| {
                self.config
                    .local_address
                    .is_none_or(|l| l.is_ipv6() == a.is_ipv6())
            })
            .or(addrs.first())
            .copied()
            .ok_or_else(|| fail(&"no address"))?;
        let endpoint = self.endpoint(addr.is_ipv6()).await.map_err(|e| fail(&e))?;
        let config =
            gquic_transport::ClientConfig::new(self.config.tls.clone()).map_err(|e| fail(&e))?;
        let connecting = endpoint
            .connect_with(config, addr, host)
            .map_err(|e| fail(&e))?;
        let conn = match self.config.connect_timeout {
            Some(t) => tokio::time::timeout(t, connecting)
                .await
                .map_err(|_| DialError {
                    message: format!("{}:{}: no handshake within {t:?}", origin.host, origin.port),
                    timeout: true,
                })?,
            None => connecting.await,
        }
        .map_err(|e| fail(&e))?;
        let id = conn.stable_id();
        let (send, driver) = gquic_hyper::client::handshake::<Body>(conn)
            .await
            .map_err(|e| fail(&e))?;
        tokio::spawn(async move {
            if let Err(e) = driver.await {
                tracing::debug!(error = %e, "HTTP/3 connection ended");
            }
        });
        tracing::debug!(%addr, host, "connected");
        Ok(Conn {
            send,
            remote: addr,
            id,
            in_flight: Arc::new(AtomicUsize::new(0)),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Origin, Arc<Slot>>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A live connection to `origin`: the pooled one, or a new one (one dial however many
    /// callers wait for it).
    async fn checkout(&self, origin: &Origin) -> Result<Conn, Error> {
        if self.config.max_idle_per_host == 0 {
            return self.dial(origin).await.map_err(|e| e.to_error());
        }
        loop {
            let slot = {
                let mut slots = self.lock();
                if let Some(timeout) = self.config.idle_timeout {
                    let now = Instant::now();
                    slots.retain(|_, s| !s.idle_for(timeout, now));
                }
                slots
                    .entry(origin.clone())
                    .or_insert_with(Slot::new)
                    .clone()
            };
            let result = slot.cell.get_or_init(|| self.dial(origin)).await;
            match result {
                Ok(c) if !c.send.is_closed() => {
                    slot.touch();
                    return Ok(c.clone());
                }
                Ok(_) => self.remove(origin, &slot),
                Err(e) => {
                    self.remove(origin, &slot);
                    // The dial failed (ours, or the one we waited for): report it.
                    return Err(e.to_error());
                }
            }
        }
    }

    fn remove(&self, origin: &Origin, slot: &Arc<Slot>) {
        let mut slots = self.lock();
        if slots.get(origin).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            slots.remove(origin);
        }
    }

    /// Drops the pooled connection to `origin` if it is connection `id` (it failed).
    fn evict(&self, origin: &Origin, id: u64) {
        let mut slots = self.lock();
        let dead = slots
            .get(origin)
            .and_then(|s| s.cell.get())
            .is_some_and(|r| r.as_ref().is_ok_and(|c| c.id == id));
        if dead {
            slots.remove(origin);
        }
    }

    /// Connections currently pooled (for tests and stats).
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

/// The pool as a tower service: sends each request on its origin's connection.
#[derive(Clone)]
pub(crate) struct PoolService {
    pub(crate) pool: Arc<Pool>,
}

impl tower_service::Service<Request<Body>> for PoolService {
    type Response = Response<ResBody>;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ResBody>, Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let pool = self.pool.clone();
        Box::pin(async move {
            let uri = req.uri();
            if uri.scheme_str() != Some("https") {
                return Err(Error::builder(format!(
                    "HTTP/3 needs an https URL, not {uri}"
                )));
            }
            let origin = Origin {
                host: uri
                    .host()
                    .ok_or_else(|| Error::builder(format!("URL {uri} has no host")))?
                    .to_owned(),
                port: uri.port_u16().unwrap_or(443),
            };
            let mut conn = pool.checkout(&origin).await?;
            // Wait for room under the peer's stream limit (RFC 9000 §4.6).
            if let Err(e) = std::future::poll_fn(|cx| conn.send.poll_ready(cx)).await {
                pool.evict(&origin, conn.id);
                return Err(Error::from_h3(e, true));
            }
            conn.in_flight.fetch_add(1, Ordering::AcqRel);
            let guard = InFlight(conn.in_flight.clone());
            let resp = match conn.send.send_request(req).await {
                Ok(r) => r,
                Err(e) => {
                    let err = Error::from_h3(e, true);
                    if err.connection_failed {
                        pool.evict(&origin, conn.id);
                    }
                    return Err(err);
                }
            };
            let remote = conn.remote;
            let mut resp = resp.map(|body| {
                ResBody::new(Tracked {
                    inner: body,
                    _guard: guard,
                })
            });
            resp.extensions_mut().insert(RemoteAddr(remote));
            Ok(resp)
        })
    }
}

/// Counts a request in flight on its connection until its response body is dropped.
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

struct Tracked {
    inner: gquic_hyper::Incoming,
    _guard: InFlight,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = crate::error::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner)
            .poll_frame(cx)
            .map(|o| o.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
