//! Request bodies: bytes (replayable, for redirects and retries) or a stream.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt;

use crate::error::BoxError;

/// A request body: bytes, which can be sent again (redirects, retries), or a stream of
/// chunks (optionally with trailers), which can be sent once.
pub struct Body {
    inner: Inner,
}

enum Inner {
    Bytes(Bytes),
    Stream(BoxBody<Bytes, BoxError>),
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            Inner::Bytes(b) => f.debug_struct("Body").field("len", &b.len()).finish(),
            Inner::Stream(_) => f.write_str("Body(stream)"),
        }
    }
}

impl Body {
    /// An empty body.
    pub fn empty() -> Self {
        Bytes::new().into()
    }

    /// A body from a stream of chunks, sent as it is produced. Not replayable: a redirect
    /// that needs the body again (307/308) fails, and retries are off for it.
    pub fn wrap_stream<S, B, E>(stream: S) -> Self
    where
        S: futures_core::Stream<Item = Result<B, E>> + Send + Sync + 'static,
        B: Into<Bytes>,
        E: Into<BoxError>,
    {
        let body = http_body_util::StreamBody::new(StreamFrames(Box::pin(stream)));
        Self {
            inner: Inner::Stream(BoxBody::new(body)),
        }
    }

    /// Any `http_body::Body` (e.g. one with trailers), sent as it is produced. Not
    /// replayable.
    pub fn wrap<B>(body: B) -> Self
    where
        B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<BoxError>,
    {
        Self {
            inner: Inner::Stream(body.map_err(Into::into).boxed()),
        }
    }

    /// The bytes, if this body is made of bytes.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match &self.inner {
            Inner::Bytes(b) => Some(b),
            Inner::Stream(_) => None,
        }
    }

    /// A copy to send again, if the body is bytes.
    pub fn try_clone(&self) -> Option<Body> {
        match &self.inner {
            Inner::Bytes(b) => Some(b.clone().into()),
            Inner::Stream(_) => None,
        }
    }
}

/// A stream of chunks as body frames (the stream is boxed, so this is `Unpin`).
struct StreamFrames<S>(Pin<Box<S>>);

impl<S, B, E> futures_core::Stream for StreamFrames<S>
where
    S: futures_core::Stream<Item = Result<B, E>>,
    B: Into<Bytes>,
    E: Into<BoxError>,
{
    type Item = Result<Frame<Bytes>, BoxError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut()
            .0
            .as_mut()
            .poll_next(cx)
            .map(|o| o.map(|r| r.map(|b| Frame::data(b.into())).map_err(Into::into)))
    }
}

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Self {
        Self {
            inner: Inner::Bytes(b),
        }
    }
}

impl From<Vec<u8>> for Body {
    fn from(v: Vec<u8>) -> Self {
        Bytes::from(v).into()
    }
}

impl From<String> for Body {
    fn from(s: String) -> Self {
        Bytes::from(s).into()
    }
}

impl From<&'static str> for Body {
    fn from(s: &'static str) -> Self {
        Bytes::from_static(s.as_bytes()).into()
    }
}

impl From<&'static [u8]> for Body {
    fn from(s: &'static [u8]) -> Self {
        Bytes::from_static(s).into()
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.inner {
            Inner::Bytes(b) => {
                if b.is_empty() {
                    Poll::Ready(None)
                } else {
                    Poll::Ready(Some(Ok(Frame::data(std::mem::take(b)))))
                }
            }
            Inner::Stream(s) => Pin::new(s).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Bytes(b) => b.is_empty(),
            Inner::Stream(s) => s.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Bytes(b) => SizeHint::with_exact(b.len() as u64),
            Inner::Stream(s) => s.size_hint(),
        }
    }
}
