//! The one error type of this crate.

use std::fmt;

/// What went wrong, for [`Error`]'s predicates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The connection or the HTTP/3 session failed or closed.
    Connection,
    /// The idle timeout fired.
    Timeout,
    /// The peer cancelled the request (H3_REQUEST_CANCELLED or another stream error).
    Canceled,
    /// A body failed (ours, or the peer's framing).
    Body,
    /// The user's service returned an error.
    Service,
    /// Connecting failed (name resolution, handshake).
    Connect,
}

/// An HTTP/3 error. Opaque; ask it with the `is_*` predicates and walk
/// [`std::error::Error::source`] for the cause.
pub struct Error {
    kind: Kind,
    /// The HTTP/3 error code, when the peer or we sent one.
    code: Option<u64>,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
    /// GOAWAY refused the request before it was sent.
    goaway: bool,
}

impl Error {
    pub(crate) fn new(
        kind: Kind,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            kind,
            code: None,
            source: Some(source.into()),
            goaway: false,
        }
    }

    /// From an h3 stream error: a stream the peer reset or stopped is "canceled", a connection
    /// failure is "closed".
    pub(crate) fn stream(e: h3::error::StreamError) -> Self {
        let code = stream_code(&e);
        let kind = match &e {
            h3::error::StreamError::RemoteTerminate { .. } => Kind::Canceled,
            h3::error::StreamError::ConnectionError { .. } if is_timeout(&e) => Kind::Timeout,
            _ if code.is_some() => Kind::Body,
            _ => Kind::Connection,
        };
        let goaway = matches!(e, h3::error::StreamError::RemoteClosing);
        let mut err = Self::new(kind, e);
        err.code = code;
        err.goaway = goaway;
        err
    }

    /// A stream error before the response head arrived. A GOAWAY, or a graceful close
    /// (H3_NO_ERROR, which a server sends only once it has answered every request it took,
    /// RFC 9114 §5.2), means this request was not processed.
    pub(crate) fn before_response(e: h3::error::StreamError) -> Self {
        let graceful = format!("{e:?}").contains("ApplicationClose(H3_NO_ERROR)");
        let mut err = Self::stream(e);
        err.goaway |= graceful;
        err
    }

    pub(crate) fn connection(e: h3::error::ConnectionError) -> Self {
        let kind = if is_timeout(&e) {
            Kind::Timeout
        } else {
            Kind::Connection
        };
        Self::new(kind, e)
    }

    /// `call` without a successful `poll_ready` first (a tower contract violation).
    pub fn not_ready() -> Self {
        Self::new(
            Kind::Connection,
            "call before poll_ready returned Ready(Ok(())): poll the service ready first",
        )
    }

    /// The connection closed or failed.
    pub fn is_closed(&self) -> bool {
        self.kind == Kind::Connection
    }

    /// The connection timed out (idle timeout).
    pub fn is_timeout(&self) -> bool {
        self.kind == Kind::Timeout
    }

    /// The peer cancelled or refused the request (see [`Error::code`]).
    pub fn is_canceled(&self) -> bool {
        self.kind == Kind::Canceled
    }

    /// A request or response body failed.
    pub fn is_body(&self) -> bool {
        self.kind == Kind::Body
    }

    /// The service returned an error.
    pub fn is_service(&self) -> bool {
        self.kind == Kind::Service
    }

    /// Connecting failed.
    pub fn is_connect(&self) -> bool {
        self.kind == Kind::Connect
    }

    /// The peer had sent GOAWAY or closed the connection gracefully (RFC 9114 §5.2) before
    /// this request got a response, so it was not processed: send it again on a new
    /// connection.
    pub fn is_goaway(&self) -> bool {
        self.goaway
    }

    /// The HTTP/3 error code the stream ended with, if any (RFC 9114 §8.1), e.g. `0x10c` for
    /// H3_REQUEST_CANCELLED.
    pub fn code(&self) -> Option<u64> {
        self.code
    }
}

/// Whether h3 reports an idle timeout. Its variants carrying the transport's error are
/// closed to matching outside h3 0.0.8, so this reads the `Debug` form (`Timeout` or
/// `Remote(Timeout)`, which is what our `h3` glue maps an idle timeout to).
fn is_timeout(e: &dyn std::fmt::Debug) -> bool {
    format!("{e:?}").contains("Timeout")
}

/// The code of a reset or stopped stream, or of a stream error we raised.
fn stream_code(e: &h3::error::StreamError) -> Option<u64> {
    use h3::error::StreamError;
    match e {
        StreamError::RemoteTerminate { code, .. } | StreamError::StreamError { code, .. } => {
            Some(code.value())
        }
        _ => None,
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("gquic_hyper::Error");
        d.field("kind", &self.kind);
        if let Some(c) = self.code {
            d.field("code", &format_args!("{c:#x}"));
        }
        if let Some(s) = &self.source {
            d.field("source", s);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            Kind::Connection => "connection error",
            Kind::Timeout => "connection timed out",
            Kind::Canceled => "request canceled by the peer",
            Kind::Body => "body error",
            Kind::Service => "service error",
            Kind::Connect => "connect error",
        };
        match &self.source {
            Some(s) => write!(f, "{what}: {s}"),
            None => f.write_str(what),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}
