//! [`Client`] and [`ClientBuilder`].

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderMap, HeaderValue, USER_AGENT};
use http::Method;
use http_body_util::BodyExt;
use tower::util::BoxCloneSyncService;
use tower::ServiceExt;
use tower_layer::Layer;
use tower_service::Service;

use crate::body::Body;
use crate::cookie::{CookieStore, Jar};
use crate::error::{BoxError, Error, Kind};
use crate::layers::{self, FinalUrl};
use crate::pool::{Pool, PoolConfig, PoolService, RemoteAddr};
use crate::request::{Request, RequestBuilder};
use crate::tls::{Certificate, TlsOptions};
use crate::{redirect, retry, IntoUrl, Response, ResponseBody};

/// The stack's service type, what [`ClientBuilder::layer`] wraps: one HTTP/3 exchange per
/// call (each redirect hop and each retry is a call).
pub type HttpService =
    BoxCloneSyncService<http::Request<Body>, http::Response<ResponseBody>, Error>;

type LayerFn = Box<dyn FnOnce(HttpService) -> HttpService + Send>;

/// An HTTP/3 client with a connection pool, as `reqwest::Client`: cheap to clone (clones
/// share the pool, cookies and settings), built once, used everywhere.
///
/// ```no_run
/// # async fn demo() -> Result<(), gquic_client::Error> {
/// let client = gquic_client::Client::new();
/// let body = client
///     .get("https://www.example.com/")
///     .header("accept", "text/html")
///     .send()
///     .await?
///     .error_for_status()?
///     .text()
///     .await?;
/// println!("{body}");
///
/// let echoed: serde_json::Value = client
///     .post("https://httpbin.example/post")
///     .json(&serde_json::json!({ "hello": "world" }))
///     .send()
///     .await?
///     .json()
///     .await?;
/// # let _ = echoed;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientRef>,
}

struct ClientRef {
    svc: HttpService,
    headers: HeaderMap,
    timeout: Option<Duration>,
    read_timeout: Option<Duration>,
    pool: Arc<Pool>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("timeout", &self.inner.timeout)
            .field("read_timeout", &self.inner.read_timeout)
            .field("pooled_connections", &self.inner.pool.len())
            .finish_non_exhaustive()
    }
}

impl Default for Client {
    fn default() -> Self {
        Self::new()
    }
}

impl Client {
    /// A client with the defaults: webpki roots, up to 10 redirects, retries of idempotent
    /// requests on connection failures, gzip/br/zstd/deflate decompression, no cookies, no
    /// timeout. Can be called outside a runtime (sockets are opened on first use).
    ///
    /// # Panics
    /// If the default TLS configuration cannot be built (it always can with the bundled
    /// crypto provider); use [`Client::builder`] to handle the error instead.
    pub fn new() -> Self {
        ClientBuilder::new()
            .build()
            .expect("the default client configuration is valid")
    }

    /// A builder to configure a client.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::new()
    }

    /// `GET url`.
    pub fn get<U: IntoUrl>(&self, url: U) -> RequestBuilder {
        self.request(Method::GET, url)
    }

    /// `POST url`.
    pub fn post<U: IntoUrl>(&self, url: U) -> RequestBuilder {
        self.request(Method::POST, url)
    }

    /// `PUT url`.
    pub fn put<U: IntoUrl>(&self, url: U) -> RequestBuilder {
        self.request(Method::PUT, url)
    }

    /// `PATCH url`.
    pub fn patch<U: IntoUrl>(&self, url: U) -> RequestBuilder {
        self.request(Method::PATCH, url)
    }

    /// `DELETE url`.
    pub fn delete<U: IntoUrl>(&self, url: U) -> RequestBuilder {
        self.request(Method::DELETE, url)
    }

    /// `HEAD url`.
    pub fn head<U: IntoUrl>(&self, url: U) -> RequestBuilder {
        self.request(Method::HEAD, url)
    }

    /// A request with any method.
    pub fn request<U: IntoUrl>(&self, method: Method, url: U) -> RequestBuilder {
        let req = url.into_url().map(|url| Request::new(method, url));
        RequestBuilder::new(self.clone(), req)
    }

    /// Closes the client's HTTP/3 connections cleanly (CONNECTION_CLOSE with H3_NO_ERROR)
    /// and waits, at most a second, until the closes are sent. Call it before the process
    /// exits: a QUIC server otherwise learns that the client is gone only at its idle timeout
    /// (unlike TCP, no kernel closes the connection for us). Clones of this client share the
    /// pool; HTTP/3 requests made afterwards fail with a connect error.
    pub async fn close(&self) {
        self.inner.pool.close(Duration::from_secs(1)).await;
    }

    /// Sends a built request.
    ///
    /// # Errors
    /// See [`Error`]'s predicates.
    pub async fn execute(&self, request: Request) -> Result<Response, Error> {
        let Request {
            method,
            url,
            mut headers,
            body,
            timeout,
        } = request;
        for (name, value) in self.inner.headers.iter() {
            if !headers.contains_key(name) {
                headers.insert(name.clone(), value.clone());
            }
        }
        // W3C Trace Context: the request carries the current span as its remote parent.
        #[cfg(feature = "otel")]
        if !headers.contains_key(gquic_tower::otel::TRACEPARENT) {
            gquic_tower::otel::inject(&opentelemetry::Context::current(), &mut headers);
        }
        let uri: http::Uri = url
            .as_str()
            .parse()
            .map_err(|e| Error::builder(format!("bad URL {url}: {e}")))?;
        let mut req = http::Request::new(body.unwrap_or_else(Body::empty));
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        *req.headers_mut() = headers;
        let now = tokio::time::Instant::now();
        let deadline = timeout.or(self.inner.timeout).map(|t| now + t);
        // Waiting for the head is a read too.
        let head_deadline = match (deadline, self.inner.read_timeout) {
            (Some(d), Some(r)) => Some(d.min(now + r)),
            (d, r) => d.or(r.map(|r| now + r)),
        };
        let fut = self.inner.svc.clone().oneshot(req);
        let resp = match head_deadline {
            Some(d) => tokio::time::timeout_at(d, fut)
                .await
                .map_err(|_| Error::timeout(Kind::Request).with_url(url.clone()))?,
            None => fut.await,
        }
        .map_err(|e| e.with_url_if_none(&url))?;
        let final_url = resp
            .extensions()
            .get::<FinalUrl>()
            .map(|u| u.0.clone())
            .unwrap_or(url);
        let remote = resp.extensions().get::<RemoteAddr>().map(|r| r.0);
        Ok(Response::new(
            resp,
            final_url,
            remote,
            deadline,
            self.inner.read_timeout,
        ))
    }
}

/// Configures a [`Client`], as `reqwest::ClientBuilder`.
#[must_use]
pub struct ClientBuilder {
    timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
    read_timeout: Option<Duration>,
    pool_idle_timeout: Option<Duration>,
    pool_max_idle_per_host: usize,
    redirect: redirect::Policy,
    cookies: Option<Arc<dyn CookieStore>>,
    retry: retry::Policy,
    headers: HeaderMap,
    tls: TlsOptions,
    local_address: Option<IpAddr>,
    http2_fallback: bool,
    zero_rtt: bool,
    layers: Vec<LayerFn>,
    gzip: bool,
    brotli: bool,
    zstd: bool,
    deflate: bool,
    error: Option<Error>,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("read_timeout", &self.read_timeout)
            .field("redirect", &self.redirect)
            .field("retry", &self.retry)
            .field("layers", &self.layers.len())
            .finish_non_exhaustive()
    }
}

impl Default for ClientBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ClientBuilder {
    /// The defaults of [`Client::new`].
    pub fn new() -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("gquic-client/", env!("CARGO_PKG_VERSION"))),
        );
        Self {
            timeout: None,
            connect_timeout: None,
            read_timeout: None,
            pool_idle_timeout: Some(Duration::from_secs(90)),
            pool_max_idle_per_host: usize::MAX,
            redirect: redirect::Policy::default(),
            cookies: None,
            retry: retry::Policy::default(),
            headers,
            tls: TlsOptions::default(),
            local_address: None,
            http2_fallback: false,
            zero_rtt: false,
            layers: Vec::new(),
            gzip: true,
            brotli: true,
            zstd: true,
            deflate: true,
            error: None,
        }
    }

    /// The time a whole request may take, from sending to the end of the body.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The time a connection (QUIC and TLS handshake) may take.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// The time each read may wait: for the response head, then for each chunk.
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = Some(timeout);
        self
    }

    /// How long an unused connection stays in the pool (default 90 s; `None`: forever).
    pub fn pool_idle_timeout<D: Into<Option<Duration>>>(mut self, timeout: D) -> Self {
        self.pool_idle_timeout = timeout.into();
        self
    }

    /// Connections kept per host. HTTP/3 multiplexes every request on one connection per
    /// origin, so the useful values are `0` (no pooling: a connection per request) and
    /// anything above (pooling, the default).
    pub fn pool_max_idle_per_host(mut self, max: usize) -> Self {
        self.pool_max_idle_per_host = max;
        self
    }

    /// The redirect policy (default: [`redirect::Policy::limited`] with 10).
    pub fn redirect(mut self, policy: redirect::Policy) -> Self {
        self.redirect = policy;
        self
    }

    /// Keep cookies in a [`Jar`] (`true`), or none (`false`, the default).
    pub fn cookie_store(mut self, enable: bool) -> Self {
        self.cookies = enable.then(|| Arc::new(Jar::default()) as Arc<dyn CookieStore>);
        self
    }

    /// Keep cookies in `store` (e.g. an `Arc<Jar>` you also read).
    pub fn cookie_provider<C: CookieStore + 'static>(mut self, store: Arc<C>) -> Self {
        self.cookies = Some(store);
        self
    }

    /// The retry policy (default: [`retry::Policy::default`]).
    pub fn retry(mut self, policy: retry::Policy) -> Self {
        self.retry = policy;
        self
    }

    /// Headers sent with every request (a request's own headers win).
    pub fn default_headers(mut self, headers: HeaderMap) -> Self {
        for (k, v) in headers.iter() {
            self.headers.insert(k.clone(), v.clone());
        }
        self
    }

    /// The `user-agent` header (default `gquic-client/VERSION`).
    pub fn user_agent<V>(mut self, value: V) -> Self
    where
        HeaderValue: TryFrom<V>,
        <HeaderValue as TryFrom<V>>::Error: Into<http::Error>,
    {
        match HeaderValue::try_from(value) {
            Ok(v) => {
                self.headers.insert(USER_AGENT, v);
            }
            Err(e) => self.error = Some(Error::builder(e.into())),
        }
        self
    }

    /// Trust `cert` as a root, in addition to the built-in roots.
    pub fn add_root_certificate(mut self, cert: Certificate) -> Self {
        self.tls.roots.push(cert);
        self
    }

    /// Whether to trust the webpki roots (default `true`).
    pub fn tls_built_in_root_certs(mut self, enable: bool) -> Self {
        self.tls.built_in_roots = enable;
        self
    }

    /// Accept any server certificate. Dangerous: anyone on the path can impersonate the
    /// server. For tests and development only.
    pub fn danger_accept_invalid_certs(mut self, accept: bool) -> Self {
        self.tls.accept_invalid = accept;
        self
    }

    /// Use this rustls configuration (TLS 1.3 is required; ALPN is set to `h3`). Overrides
    /// the other TLS settings.
    pub fn tls_config(mut self, config: rustls::ClientConfig) -> Self {
        self.tls.config = Some(config);
        self
    }

    /// Write the TLS secrets of every connection to the file the `SSLKEYLOGFILE` environment
    /// variable names, in the NSS key log format Wireshark reads to decrypt captured QUIC
    /// (default `false`; nothing is written while the variable is unset). Applies to a
    /// configuration given with [`tls_config`](Self::tls_config) too. Anyone who can read
    /// the file can decrypt the traffic: for debugging only.
    pub fn tls_sslkeylogfile(mut self, enable: bool) -> Self {
        self.tls.key_log = enable;
        self
    }

    /// The local address to send from (its family decides which servers it can reach).
    pub fn local_address<T: Into<Option<IpAddr>>>(mut self, addr: T) -> Self {
        self.local_address = addr.into();
        self
    }

    /// 0-RTT (RFC 9001 §4.6, default `false`): the client keeps TLS session tickets per
    /// origin, and a new connection to an origin it has a ticket for sends idempotent
    /// requests (GET, HEAD, PUT, DELETE, OPTIONS, TRACE) at once, in 0-RTT, saving a round
    /// trip; other requests wait for the handshake. If the server rejects 0-RTT, the
    /// requests go again in 1-RTT packets without the caller noticing.
    /// [`Response::zero_rtt`](crate::Response::zero_rtt) says whether a request went in
    /// accepted 0-RTT.
    ///
    /// 0-RTT data can be replayed by an attacker who captured it (RFC 8470): enable this only
    /// for servers whose idempotent requests are safe to repeat.
    pub fn zero_rtt(mut self, enable: bool) -> Self {
        self.zero_rtt = enable;
        self
    }

    /// When QUIC does not get through (UDP blocked, no HTTP/3 on the port), fall back to
    /// HTTP/2 over TLS over TCP (default `false`): HTTP/3 is tried first; if no QUIC
    /// handshake completes within 300 ms, an HTTP/2 connection races it and the first to
    /// finish wins. The winner is remembered per origin; an `alt-svc: h3=...` header on an
    /// HTTP/2 response sends the next connection to HTTP/3 again (RFC 7838).
    pub fn http2_fallback(mut self, enable: bool) -> Self {
        self.http2_fallback = enable;
        self
    }

    /// Decompress gzip responses (default `true`; also sent in `accept-encoding`).
    pub fn gzip(mut self, enable: bool) -> Self {
        self.gzip = enable;
        self
    }

    /// Decompress brotli responses (default `true`).
    pub fn brotli(mut self, enable: bool) -> Self {
        self.brotli = enable;
        self
    }

    /// Decompress zstd responses (default `true`).
    pub fn zstd(mut self, enable: bool) -> Self {
        self.zstd = enable;
        self
    }

    /// Decompress deflate responses (default `true`).
    pub fn deflate(mut self, enable: bool) -> Self {
        self.deflate = enable;
        self
    }

    /// Adds tower middleware around each HTTP/3 exchange (below retries and redirects, so
    /// it sees every attempt and every hop). Layers added first sit closest to the network.
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<HttpService> + Send + 'static,
        L::Service: Service<http::Request<Body>, Response = http::Response<ResponseBody>, Error = Error>
            + Clone
            + Send
            + Sync
            + 'static,
        <L::Service as Service<http::Request<Body>>>::Future: Send + 'static,
    {
        self.layers.push(Box::new(move |svc| {
            BoxCloneSyncService::new(layer.layer(svc))
        }));
        self
    }

    /// Builds the client.
    ///
    /// # Errors
    /// A bad setting (header value, root certificate, TLS configuration).
    pub fn build(self) -> Result<Client, Error> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let tls = Arc::new(self.tls.build()?);
        let pool = Arc::new(Pool::new(PoolConfig {
            tls,
            idle_timeout: self.pool_idle_timeout,
            max_idle_per_host: self.pool_max_idle_per_host,
            connect_timeout: self.connect_timeout,
            local_address: self.local_address,
            http2_fallback: self.http2_fallback,
            zero_rtt: self.zero_rtt,
        }));
        // The stack, from the network up: pool, user layers, retry, cookies, redirects,
        // decompression.
        let mut svc: HttpService = BoxCloneSyncService::new(PoolService { pool: pool.clone() });
        for layer in self.layers {
            svc = layer(svc);
        }
        svc = layers::retry(svc, Arc::new(self.retry), Arc::default());
        if let Some(store) = self.cookies {
            svc = layers::cookies(svc, store);
        }
        svc = layers::follow_redirects(svc, Arc::new(self.redirect));
        let decompress = tower_http::decompression::DecompressionLayer::new()
            .gzip(self.gzip)
            .br(self.brotli)
            .zstd(self.zstd)
            .deflate(self.deflate)
            .layer(svc)
            .map_response(|resp: http::Response<_>| {
                resp.map(
                    |b: tower_http::decompression::DecompressionBody<ResponseBody>| {
                        ResponseBody::new(b.map_err(|e| -> BoxError { e }))
                    },
                )
            });
        Ok(Client {
            inner: Arc::new(ClientRef {
                svc: BoxCloneSyncService::new(decompress),
                headers: self.headers,
                timeout: self.timeout,
                read_timeout: self.read_timeout,
                pool,
            }),
        })
    }
}
