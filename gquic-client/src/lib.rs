//! # gquic-client
//!
//! A reqwest-like HTTP/3 client on GQUIC. If you know reqwest you know this crate:
//! [`Client::new`], [`Client::builder`], `client.get(url).send().await?.text().await?`,
//! [`redirect::Policy`], a cookie [`cookie::Jar`], [`Error`] with the same predicates.
//!
//! What it adds over reqwest's experimental HTTP/3: request and response bodies stream
//! (with trailers: [`Response::trailers`]), retries of requests that failed with their
//! connection ([`retry`]), and no transport types in the API.
//!
//! Inside, it is a tower stack, like reqwest's: decompression -> redirects -> cookies ->
//! retry -> your layers ([`ClientBuilder::layer`]) -> a pool with one multiplexed HTTP/3
//! connection per origin (concurrent dials coalesced, dead connections replaced, idle ones
//! evicted, the peer's stream limit respected).
//!
//! With [`ClientBuilder::http2_fallback`], HTTP/2 over TCP takes over where QUIC does not get
//! through, and `alt-svc` brings the origin back to HTTP/3. With [`ClientBuilder::zero_rtt`],
//! TLS session tickets are kept per origin and a new connection to a known origin sends its
//! idempotent requests in 0-RTT, a round trip earlier ([`Response::zero_rtt`]); if the server
//! rejects 0-RTT they go again in 1-RTT.
//!
//! ```no_run
//! # async fn demo() -> Result<(), gquic_client::Error> {
//! let client = gquic_client::Client::builder()
//!     .timeout(std::time::Duration::from_secs(10))
//!     .cookie_store(true)
//!     .build()?;
//! let resp = client.get("https://localhost:4433/api/info").send().await?;
//! println!("{} over {:?}", resp.status(), resp.version());
//! println!("{}", resp.text().await?);
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod body;
mod client;
pub mod cookie;
mod error;
mod layers;
mod pool;
pub mod redirect;
mod request;
mod response;
pub mod retry;
mod tls;

pub use body::Body;
pub use client::{Client, ClientBuilder, HttpService};
pub use error::Error;
pub use http::{header, Method, StatusCode, Version};
pub use pool::ZeroRtt;
pub use request::{Request, RequestBuilder};
pub use response::{BytesStream, Response};
pub use tls::Certificate;
pub use url::Url;

/// A `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The body type inside the stack (what [`HttpService`] returns).
pub type ResponseBody = http_body_util::combinators::UnsyncBoxBody<
    bytes::Bytes,
    Box<dyn std::error::Error + Send + Sync>,
>;

pub(crate) type ResBody = ResponseBody;

/// Anything that can be a request URL: `&str`, `String`, [`Url`].
pub trait IntoUrl: private::Sealed {
    /// The URL, or a builder error.
    ///
    /// # Errors
    /// If it does not parse, or is not `https`.
    fn into_url(self) -> Result<Url>;
}

mod private {
    pub trait Sealed {}
}

fn check(url: Url) -> Result<Url> {
    if url.scheme() != "https" {
        return Err(Error::builder(format!("{url}: HTTP/3 needs an https URL")).with_url(url));
    }
    if url.host_str().is_none() {
        return Err(Error::builder(format!("{url}: no host")).with_url(url));
    }
    Ok(url)
}

impl private::Sealed for Url {}
impl IntoUrl for Url {
    fn into_url(self) -> Result<Url> {
        check(self)
    }
}

impl private::Sealed for &str {}
impl IntoUrl for &str {
    fn into_url(self) -> Result<Url> {
        check(Url::parse(self).map_err(|e| Error::builder(format!("{self}: {e}")))?)
    }
}

impl private::Sealed for String {}
impl IntoUrl for String {
    fn into_url(self) -> Result<Url> {
        self.as_str().into_url()
    }
}

impl private::Sealed for &String {}
impl IntoUrl for &String {
    fn into_url(self) -> Result<Url> {
        self.as_str().into_url()
    }
}
