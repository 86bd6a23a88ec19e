//! [`Response`]: status, headers, the final URL, and a body read as a whole or in chunks,
//! with trailers.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, StatusCode, Version};
use http_body::Body as _;
use tokio::time::Sleep;
use url::Url;

use crate::error::{BoxError, Error, Kind};
use crate::ResBody;

/// A response: the head is here, the body streams in as it is read.
pub struct Response {
    head: http::response::Parts,
    body: ResBody,
    url: Url,
    remote_addr: Option<SocketAddr>,
    trailers: Option<HeaderMap>,
    done: bool,
    /// The whole request's deadline (`timeout`), if any.
    deadline: Option<Pin<Box<Sleep>>>,
    /// Each read's limit (`read_timeout`), armed while waiting for data.
    read_timeout: Option<Duration>,
    read_timer: Option<Pin<Box<Sleep>>>,
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Response")
            .field("url", &self.url.as_str())
            .field("status", &self.head.status)
            .field("version", &self.head.version)
            .field("headers", &self.head.headers)
            .finish()
    }
}

impl Response {
    pub(crate) fn new(
        resp: http::Response<ResBody>,
        url: Url,
        remote_addr: Option<SocketAddr>,
        deadline: Option<tokio::time::Instant>,
        read_timeout: Option<Duration>,
    ) -> Self {
        let (head, body) = resp.into_parts();
        Self {
            head,
            body,
            url,
            remote_addr,
            trailers: None,
            done: false,
            deadline: deadline.map(|d| Box::pin(tokio::time::sleep_until(d))),
            read_timeout,
            read_timer: None,
        }
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.head.status
    }

    /// The HTTP version (`HTTP/3.0`).
    pub fn version(&self) -> Version {
        self.head.version
    }

    /// The headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.head.headers
    }

    /// The headers, mutably.
    pub fn headers_mut(&mut self) -> &mut HeaderMap {
        &mut self.head.headers
    }

    /// The response's extensions.
    pub fn extensions(&self) -> &http::Extensions {
        &self.head.extensions
    }

    /// The URL the response came from, after redirects.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The server's address.
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.remote_addr
    }

    /// Whether the request went in 0-RTT data and the server accepted it (see
    /// [`ClientBuilder::zero_rtt`](crate::ClientBuilder::zero_rtt)); `false` for a request
    /// sent after the handshake or replayed in 1-RTT after a rejection. Also in the
    /// response's extensions as [`ZeroRtt`](crate::ZeroRtt).
    pub fn zero_rtt(&self) -> bool {
        self.head
            .extensions
            .get::<crate::ZeroRtt>()
            .is_some_and(|z| z.0)
    }

    /// The body's length, if the server announced it (and the body is not being
    /// decompressed).
    pub fn content_length(&self) -> Option<u64> {
        self.body.size_hint().exact()
    }

    fn body_error(&self, e: BoxError) -> Error {
        let err = match e.downcast::<gquic_hyper::Error>() {
            Ok(h3) => Error::from_h3(*h3, false),
            // Anything else failed while decompressing.
            Err(other) => Error::decode(other),
        };
        err.with_url_if_none(&self.url)
    }

    /// Polls for the next chunk of the body; `None` at its end (trailers, if any, are kept
    /// for [`Response::trailers`]).
    pub fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, Error>> {
        loop {
            if self.done {
                return Poll::Ready(Ok(None));
            }
            if let Some(d) = self.deadline.as_mut() {
                if d.as_mut().poll(cx).is_ready() {
                    self.done = true;
                    return Poll::Ready(Err(Error::timeout(Kind::Body).with_url(self.url.clone())));
                }
            }
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    self.read_timer = None;
                    match frame.into_data() {
                        Ok(data) if data.is_empty() => continue,
                        Ok(data) => return Poll::Ready(Ok(Some(data))),
                        Err(frame) => {
                            if let Ok(t) = frame.into_trailers() {
                                self.trailers = Some(t);
                            }
                        }
                    }
                }
                Poll::Ready(None) => {
                    self.done = true;
                    self.read_timer = None;
                    return Poll::Ready(Ok(None));
                }
                Poll::Ready(Some(Err(e))) => {
                    self.done = true;
                    return Poll::Ready(Err(self.body_error(e)));
                }
                Poll::Pending => {
                    if let Some(limit) = self.read_timeout {
                        let timer = self
                            .read_timer
                            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                        if timer.as_mut().poll(cx).is_ready() {
                            self.done = true;
                            return Poll::Ready(Err(
                                Error::timeout(Kind::Body).with_url(self.url.clone())
                            ));
                        }
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// The next chunk of the body, `None` at its end.
    ///
    /// # Errors
    /// If the body fails, a timeout fires, or decompression fails.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, Error> {
        std::future::poll_fn(|cx| self.poll_chunk(cx)).await
    }

    /// The whole body.
    ///
    /// # Errors
    /// As [`Response::chunk`].
    pub async fn bytes(mut self) -> Result<Bytes, Error> {
        let Some(first) = self.chunk().await? else {
            return Ok(Bytes::new());
        };
        // A body in one chunk is returned without a copy.
        let Some(second) = self.chunk().await? else {
            return Ok(first);
        };
        let mut all = BytesMut::with_capacity(first.len() + second.len());
        all.extend_from_slice(&first);
        all.extend_from_slice(&second);
        while let Some(c) = self.chunk().await? {
            all.extend_from_slice(&c);
        }
        Ok(all.freeze())
    }

    /// The whole body as text (UTF-8, invalid sequences replaced).
    ///
    /// # Errors
    /// As [`Response::chunk`].
    pub async fn text(self) -> Result<String, Error> {
        let b = self.bytes().await?;
        Ok(String::from_utf8_lossy(&b).into_owned())
    }

    /// The whole body as JSON.
    ///
    /// # Errors
    /// As [`Response::chunk`], or [`Error::is_decode`] if it is not `T`.
    pub async fn json<T: serde::de::DeserializeOwned>(self) -> Result<T, Error> {
        let url = self.url.clone();
        let b = self.bytes().await?;
        serde_json::from_slice(&b).map_err(|e| Error::decode(e).with_url(url))
    }

    /// The body as a `Stream` of chunks.
    pub fn bytes_stream(self) -> BytesStream {
        BytesStream(self)
    }

    /// The trailers, once the body is read; reads (and drops) what is left of the body
    /// first. `None` if the server sent none.
    ///
    /// # Errors
    /// As [`Response::chunk`].
    pub async fn trailers(&mut self) -> Result<Option<HeaderMap>, Error> {
        while self.chunk().await?.is_some() {}
        Ok(self.trailers.take())
    }

    /// `Err` ([`Error::is_status`]) for a 4xx or 5xx status.
    ///
    /// # Errors
    /// See above.
    pub fn error_for_status(self) -> Result<Self, Error> {
        let s = self.status();
        if s.is_client_error() || s.is_server_error() {
            Err(Error::status_error(s, self.url.clone()))
        } else {
            Ok(self)
        }
    }

    /// As [`Response::error_for_status`], by reference.
    ///
    /// # Errors
    /// See above.
    pub fn error_for_status_ref(&self) -> Result<&Self, Error> {
        let s = self.status();
        if s.is_client_error() || s.is_server_error() {
            Err(Error::status_error(s, self.url.clone()))
        } else {
            Ok(self)
        }
    }
}

/// The body of a [`Response`] as a `futures_core::Stream` of chunks.
#[derive(Debug)]
pub struct BytesStream(Response);

impl futures_core::Stream for BytesStream {
    type Item = Result<Bytes, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_chunk(cx).map(Result::transpose)
    }
}
