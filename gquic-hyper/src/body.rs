//! [`Incoming`]: a request body (server side) or response body (client side) arriving over
//! an HTTP/3 stream.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use h3::error::Code;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

use crate::Error;

type ServerRecv = h3::server::RequestStream<gquic_transport::h3::RecvStream, Bytes>;
type ClientRecv = h3::client::RequestStream<gquic_transport::h3::RecvStream, Bytes>;

enum Stream {
    Server(ServerRecv),
    Client(ClientRecv),
}

impl Stream {
    fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Bytes>, h3::error::StreamError>> {
        // h3 hands out the transport's `Bytes`; `copy_to_bytes` of all of it does not copy.
        match self {
            Stream::Server(s) => s
                .poll_recv_data(cx)
                .map_ok(|b| b.map(|mut b| b.copy_to_bytes(b.remaining()))),
            Stream::Client(s) => s
                .poll_recv_data(cx)
                .map_ok(|b| b.map(|mut b| b.copy_to_bytes(b.remaining()))),
        }
    }

    fn poll_trailers(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<HeaderMap>, h3::error::StreamError>> {
        match self {
            Stream::Server(s) => s.poll_recv_trailers(cx),
            Stream::Client(s) => s.poll_recv_trailers(cx),
        }
    }

    fn stop_sending(&mut self, code: Code) {
        match self {
            Stream::Server(s) => s.stop_sending(code),
            Stream::Client(s) => s.stop_sending(code),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Data,
    Trailers,
    Done,
}

/// A body arriving over HTTP/3: the request body a service receives, or the response body a
/// client receives. Data frames come as the `Bytes` the transport reassembled; trailers come
/// last. Reading is back-pressured by QUIC flow control: data the application does not read
/// is not acknowledged into the window.
///
/// Dropping it before the end tells the peer to stop sending: H3_NO_ERROR from a server that
/// does not need the rest of a request (RFC 9114 §4.1.2), H3_REQUEST_CANCELLED from a client
/// that abandons a response.
pub struct Incoming {
    stream: Option<Stream>,
    state: State,
    content_length: Option<u64>,
    received: u64,
    drop_code: Code,
    /// Client side: tells the request's upload to reset when the response is abandoned.
    cancel: Option<tokio::sync::oneshot::Sender<()>>,
    /// Keeps h3 from reading far ahead of this body's reader (see
    /// `gquic_transport::h3::ReadPace`).
    pace: Option<gquic_transport::h3::ReadPace>,
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field("state", &self.state)
            .field("content_length", &self.content_length)
            .field("received", &self.received)
            .finish()
    }
}

impl Incoming {
    pub(crate) fn server(
        stream: ServerRecv,
        content_length: Option<u64>,
        pace: gquic_transport::h3::ReadPace,
    ) -> Self {
        Self {
            stream: Some(Stream::Server(stream)),
            state: State::Data,
            content_length,
            received: 0,
            drop_code: Code::H3_NO_ERROR,
            cancel: None,
            pace: Some(pace),
        }
    }

    pub(crate) fn client(
        stream: ClientRecv,
        content_length: Option<u64>,
        cancel: tokio::sync::oneshot::Sender<()>,
        pace: gquic_transport::h3::ReadPace,
    ) -> Self {
        Self {
            stream: Some(Stream::Client(stream)),
            state: State::Data,
            content_length,
            received: 0,
            drop_code: Code::H3_REQUEST_CANCELLED,
            cancel: Some(cancel),
            pace: Some(pace),
        }
    }

    /// A body that is already complete (for responses that cannot have one, e.g. to HEAD).
    pub fn empty() -> Self {
        Self {
            stream: None,
            state: State::Done,
            content_length: Some(0),
            received: 0,
            drop_code: Code::H3_NO_ERROR,
            cancel: None,
            pace: None,
        }
    }
}

/// The `content-length` header, if present and valid.
pub(crate) fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

impl Body for Incoming {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        loop {
            let Some(stream) = this.stream.as_mut() else {
                return Poll::Ready(None);
            };
            // Registered with the connection at the first read only: a body nobody reads
            // (most GETs) costs no registration.
            if let Some(p) = &this.pace {
                p.arm();
            }
            match this.state {
                State::Done => return Poll::Ready(None),
                State::Data => match stream.poll_data(cx) {
                    Poll::Pending if this.pace.as_ref().is_some_and(|p| p.release()) => continue,
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(Some(data))) => {
                        this.received += data.len() as u64;
                        if let Some(p) = &this.pace {
                            p.consumed(data.len());
                        }
                        if data.is_empty() {
                            continue;
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    Poll::Ready(Ok(None)) => this.state = State::Trailers,
                    Poll::Ready(Err(e)) => {
                        this.state = State::Done;
                        return Poll::Ready(Some(Err(Error::stream(e))));
                    }
                },
                State::Trailers => {
                    let r = stream.poll_trailers(cx);
                    match r {
                        Poll::Pending if this.pace.as_ref().is_some_and(|p| p.release()) => {
                            continue
                        }
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(t)) => {
                            this.state = State::Done;
                            return Poll::Ready(t.map(|t| Ok(Frame::trailers(t))));
                        }
                        Poll::Ready(Err(e)) => {
                            this.state = State::Done;
                            return Poll::Ready(Some(Err(Error::stream(e))));
                        }
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.state == State::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.content_length {
            Some(n) => SizeHint::with_exact(n.saturating_sub(self.received)),
            None => SizeHint::default(),
        }
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if self.state != State::Done {
            if let Some(s) = self.stream.as_mut() {
                s.stop_sending(self.drop_code);
            }
            if let Some(cancel) = self.cancel.take() {
                let _ = cancel.send(());
            }
        }
    }
}
