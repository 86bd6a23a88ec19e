//! The one error type, shaped like reqwest's.

use std::fmt;

use http::StatusCode;
use url::Url;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What went wrong, for [`Error`]'s predicates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The client or request was built wrong (bad URL, header, TLS setup).
    Builder,
    /// Sending the request failed after the connection was up.
    Request,
    /// Connecting failed (name resolution, handshake, connect timeout).
    Connect,
    /// Redirects: too many, a loop, or a bad `location`.
    Redirect,
    /// [`crate::Response::error_for_status`] on a 4xx/5xx.
    Status(StatusCode),
    /// Reading the response body failed.
    Body,
    /// Decoding the body (JSON, text, decompression) failed.
    Decode,
}

/// An error of the client: opaque, asked with `is_*`, with the URL and status when known,
/// the cause under [`std::error::Error::source`].
pub struct Error {
    kind: Kind,
    timeout: bool,
    url: Option<Url>,
    source: Option<BoxError>,
    /// For retries: the connection failed before the response head arrived.
    pub(crate) connection_failed: bool,
    /// For retries: the server said the request was not processed (H3_REQUEST_REJECTED).
    pub(crate) not_processed: bool,
}

impl Error {
    pub(crate) fn new(kind: Kind, source: Option<BoxError>) -> Self {
        Self {
            kind,
            timeout: false,
            url: None,
            source,
            connection_failed: false,
            not_processed: false,
        }
    }

    pub(crate) fn builder(e: impl Into<BoxError>) -> Self {
        Self::new(Kind::Builder, Some(e.into()))
    }

    pub(crate) fn connect(e: impl Into<BoxError>) -> Self {
        Self::new(Kind::Connect, Some(e.into()))
    }

    pub(crate) fn redirect(e: impl Into<BoxError>) -> Self {
        Self::new(Kind::Redirect, Some(e.into()))
    }

    pub(crate) fn decode(e: impl Into<BoxError>) -> Self {
        Self::new(Kind::Decode, Some(e.into()))
    }

    pub(crate) fn status_error(status: StatusCode, url: Url) -> Self {
        Self::new(Kind::Status(status), None).with_url(url)
    }

    pub(crate) fn timeout(kind: Kind) -> Self {
        Self::timeout_with(kind, "operation timed out".into())
    }

    pub(crate) fn timeout_with(kind: Kind, message: String) -> Self {
        let mut e = Self::new(kind, Some(message.into()));
        e.timeout = true;
        e
    }

    /// An HTTP/3 error from sending: connection-level failures before the response head are
    /// what retries are for.
    pub(crate) fn from_h3(e: gquic_hyper::Error, before_head: bool) -> Self {
        // RFC 9114 §8.1: H3_REQUEST_REJECTED says the request was not processed.
        let not_processed = e.code() == Some(0x10b) || e.is_goaway();
        let connection_failed = before_head && (e.is_closed() || e.is_timeout());
        let timeout = e.is_timeout();
        let kind = if e.is_connect() {
            Kind::Connect
        } else if before_head {
            Kind::Request
        } else {
            Kind::Body
        };
        let mut err = Self::new(kind, Some(Box::new(e)));
        err.timeout = timeout;
        err.connection_failed = connection_failed || not_processed;
        err.not_processed = not_processed;
        err
    }

    /// An HTTP/2 (fallback) error from sending.
    pub(crate) fn from_h2(e: hyper::Error) -> Self {
        let connection_failed = e.is_closed() || e.is_canceled();
        let timeout = e.is_timeout();
        let mut err = Self::new(Kind::Request, Some(Box::new(e)));
        err.timeout = timeout;
        err.connection_failed = connection_failed;
        err
    }

    pub(crate) fn with_url(mut self, url: Url) -> Self {
        self.url = Some(url);
        self
    }

    pub(crate) fn with_url_if_none(mut self, url: &Url) -> Self {
        if self.url.is_none() {
            self.url = Some(url.clone());
        }
        self
    }

    /// The URL of the request that failed, when known.
    pub fn url(&self) -> Option<&Url> {
        self.url.as_ref()
    }

    /// Strips the URL (it may hold secrets), as reqwest's `without_url`.
    pub fn without_url(mut self) -> Self {
        self.url = None;
        self
    }

    /// The status of a response turned into an error by `error_for_status`.
    pub fn status(&self) -> Option<StatusCode> {
        match self.kind {
            Kind::Status(s) => Some(s),
            _ => None,
        }
    }

    /// A timeout: the whole request, connecting, or a read took too long.
    pub fn is_timeout(&self) -> bool {
        self.timeout
    }

    /// Connecting failed.
    pub fn is_connect(&self) -> bool {
        self.kind == Kind::Connect
    }

    /// Redirects failed: too many, a loop, or an unusable `location`.
    pub fn is_redirect(&self) -> bool {
        self.kind == Kind::Redirect
    }

    /// From `error_for_status`.
    pub fn is_status(&self) -> bool {
        matches!(self.kind, Kind::Status(_))
    }

    /// Sending the request failed.
    pub fn is_request(&self) -> bool {
        self.kind == Kind::Request
    }

    /// Reading the body failed.
    pub fn is_body(&self) -> bool {
        self.kind == Kind::Body
    }

    /// Decoding the body failed.
    pub fn is_decode(&self) -> bool {
        self.kind == Kind::Decode
    }

    /// The client or request was built wrong.
    pub fn is_builder(&self) -> bool {
        self.kind == Kind::Builder
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("gquic_client::Error");
        d.field("kind", &self.kind);
        if self.timeout {
            d.field("timeout", &true);
        }
        if let Some(u) = &self.url {
            d.field("url", &u.as_str());
        }
        if let Some(s) = &self.source {
            d.field("source", s);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            Kind::Builder => f.write_str("builder error")?,
            Kind::Request => f.write_str("error sending request")?,
            Kind::Connect => f.write_str("error connecting")?,
            Kind::Redirect => f.write_str("error following redirect")?,
            Kind::Status(s) => {
                let side = if s.is_client_error() {
                    "client"
                } else {
                    "server"
                };
                write!(f, "HTTP status {side} error ({s})")?;
            }
            Kind::Body => f.write_str("error reading the response body")?,
            Kind::Decode => f.write_str("error decoding the response body")?,
        }
        if let Some(u) = &self.url {
            write!(f, " for url ({u})")?;
        }
        if let Some(s) = &self.source {
            write!(f, ": {s}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| &**e as _)
    }
}
