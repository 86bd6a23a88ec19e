//! The client side, shaped like `hyper::client::conn::http2`: [`handshake`] gives a
//! [`SendRequest`] (cloneable, multiplexing) and a [`Connection`] future that drives the
//! HTTP/3 connection; [`Connector`] is a `tower::Service<Uri>` that dials.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use h3::error::Code;
use http::{Request, Response, Uri};
use http_body::Body;

use crate::body::{content_length, Incoming};
use crate::error::Kind;
use crate::webtransport::{ConnectRecv, ConnectSend, Demux, Session};
use crate::Error;

type H3Send = h3::client::SendRequest<gquic_transport::h3::OpenStreams, Bytes>;

/// Sends requests on one HTTP/3 connection. Clone it to send from several tasks at once; the
/// requests are multiplexed on their own streams.
pub struct SendRequest<B> {
    inner: H3Send,
    conn: gquic_transport::runtime::Connection,
    demux: Option<Arc<Demux>>,
    _body: std::marker::PhantomData<fn(B)>,
}

impl<B> Clone for SendRequest<B> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            conn: self.conn.clone(),
            demux: self.demux.clone(),
            _body: std::marker::PhantomData,
        }
    }
}

impl<B> SendRequest<B> {
    /// `Ready(Ok(()))` when a request can start without waiting: the peer's stream limit
    /// (MAX_STREAMS, RFC 9000 §4.6) leaves room for one more request stream. `Pending` until
    /// it does.
    ///
    /// # Errors
    /// [`Error::is_closed`] if the connection ended.
    pub fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.conn
            .poll_stream_available(cx, gquic_transport::Dir::Bi)
            .map_err(|e| Error::new(Kind::Connection, e))
    }

    /// Whether the connection has ended (a new one is needed).
    pub fn is_closed(&self) -> bool {
        self.conn.close_reason().is_some()
    }

    /// Opens a WebTransport session at `uri` (an `https` URL whose path the server routes):
    /// an extended CONNECT with `:protocol = webtransport` (draft-ietf-webtrans-http3
    /// §"Creating a New Session"), resolved once the server answers 2xx. Several sessions can
    /// share the connection with ordinary requests.
    ///
    /// # Errors
    /// [`Error::is_connect`] if the server refused the session (the status is in the
    /// message) or WebTransport is not enabled on this connection
    /// ([`Builder::enable_webtransport`]); stream and connection errors as for requests.
    pub async fn webtransport(&mut self, uri: Uri) -> Result<Session, Error> {
        let demux = self.demux.clone().ok_or_else(|| {
            Error::new(
                Kind::Connect,
                "WebTransport is not enabled on this connection: use client::Builder::enable_webtransport(true)",
            )
        })?;
        let mut req = Request::builder()
            .method(http::Method::CONNECT)
            .uri(uri)
            .header("sec-webtransport-http3-draft02", "1")
            .body(())
            .map_err(|e| Error::new(Kind::Connect, e))?;
        req.extensions_mut()
            .insert(h3::ext::Protocol::WEB_TRANSPORT);
        let mut stream = self.inner.send_request(req).await.map_err(Error::stream)?;
        let id = stream.id().into_inner();
        // The server may open streams and send datagrams as soon as it has answered; they
        // wait for the session.
        demux.expect(id);
        let head = match stream.recv_response().await {
            Ok(h) => h,
            Err(e) => {
                demux.abandon(id);
                return Err(Error::stream(e));
            }
        };
        if !head.status().is_success() {
            demux.abandon(id);
            stream.stop_stream(Code::H3_REQUEST_CANCELLED);
            return Err(Error::new(
                Kind::Connect,
                format!(
                    "the server refused the WebTransport session: {}",
                    head.status()
                ),
            ));
        }
        let (send, recv) = stream.split();
        Ok(Session::start(
            id,
            demux,
            ConnectSend::Client(send),
            ConnectRecv::Client(recv),
            Some(Box::new(self.inner.clone())),
            None,
        ))
    }
}

impl<B> std::fmt::Debug for SendRequest<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("gquic_hyper::client::SendRequest")
    }
}

/// Drives the HTTP/3 connection (control streams, QPACK, GOAWAY); resolves when it closes.
/// Spawn it, as with hyper's `conn::http2::Connection`.
#[must_use = "futures do nothing unless polled"]
pub struct Connection {
    driver: h3::client::Connection<gquic_transport::h3::Connection, Bytes>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("gquic_hyper::client::Connection")
    }
}

impl Future for Connection {
    type Output = Result<(), Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.driver.poll_close(cx).map(|e| {
            if e.is_h3_no_error() {
                Ok(())
            } else {
                Err(Error::connection(e))
            }
        })
    }
}

/// Starts HTTP/3 on an established connection (ALPN `h3`) with the default settings.
///
/// # Errors
/// If the HTTP/3 control streams cannot be opened.
pub async fn handshake<B>(
    conn: gquic_transport::runtime::Connection,
) -> Result<(SendRequest<B>, Connection), Error> {
    Builder::new().handshake(conn).await
}

/// Settings for client connections.
#[derive(Debug, Clone, Default)]
pub struct Builder {
    webtransport: bool,
}

impl Builder {
    /// The defaults: plain HTTP/3.
    pub fn new() -> Self {
        Self::default()
    }

    /// Allow WebTransport sessions ([`SendRequest::webtransport`]): SETTINGS announce
    /// extended CONNECT and HTTP datagrams, and the connection's streams and datagrams go
    /// through a demultiplexer that hands WebTransport ones to their sessions.
    pub fn enable_webtransport(mut self, enable: bool) -> Self {
        self.webtransport = enable;
        self
    }

    /// Starts HTTP/3 on an established connection (ALPN `h3`).
    ///
    /// # Errors
    /// If the HTTP/3 control streams cannot be opened.
    pub async fn handshake<B>(
        &self,
        conn: gquic_transport::runtime::Connection,
    ) -> Result<(SendRequest<B>, Connection), Error> {
        let mut builder = h3::client::builder();
        let demux = self.webtransport.then(|| Demux::start(conn.clone(), true));
        let quic = match &demux {
            Some(d) => {
                builder.enable_extended_connect(true).enable_datagram(true);
                gquic_transport::h3::Connection::with_source(conn.clone(), d.clone())
            }
            None => gquic_transport::h3::Connection::new(conn.clone()),
        };
        let (driver, inner) = builder.build(quic).await.map_err(Error::connection)?;
        Ok((
            SendRequest {
                inner,
                conn,
                demux,
                _body: std::marker::PhantomData,
            },
            Connection { driver },
        ))
    }
}

impl<B> SendRequest<B>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// Sends a request; resolves with the response head once it arrives, the body streaming
    /// in as [`Incoming`]. The request body streams out concurrently (a server may answer
    /// while still reading it), trailers included. The response's extensions hold the
    /// request's [`gquic_transport::StreamId`].
    ///
    /// # Errors
    /// If the connection failed, or the server refused or reset the request (see
    /// [`Error::is_canceled`] and [`Error::code`]).
    ///
    /// # Cancel safety
    /// Dropping the future cancels the request (H3_REQUEST_CANCELLED).
    pub async fn send_request(&mut self, req: Request<B>) -> Result<Response<Incoming>, Error> {
        let (parts, body) = req.into_parts();
        let stream = self
            .inner
            .send_request(Request::from_parts(parts, ()))
            .await
            .map_err(Error::before_response)?;
        let stream_id = gquic_transport::StreamId(stream.id().into_inner());
        let (mut send, mut recv) = stream.split();
        let (cancel, cancelled) = tokio::sync::oneshot::channel::<()>();
        // The upload runs on its own task so the response can arrive (and be read) while the
        // body is still going out; it ends when the body does, when the server stops reading,
        // or when the response is dropped unread (RFC 9114 §4.1.1: the request is cancelled).
        let upload = tokio::spawn(async move {
            let sent = {
                let upload = async {
                    let mut body = std::pin::pin!(body);
                    loop {
                        match std::future::poll_fn(|cx| body.as_mut().poll_frame(cx))
                            .await
                            .map(|r| {
                                r.map_err(Into::<Box<dyn std::error::Error + Send + Sync>>::into)
                            }) {
                            None => break,
                            Some(Ok(frame)) => match frame.into_data() {
                                Ok(mut data) => {
                                    let bytes = data.copy_to_bytes(data.remaining());
                                    if !bytes.is_empty() {
                                        send.send_data(bytes).await.map_err(Error::stream)?;
                                    }
                                }
                                Err(frame) => {
                                    if let Ok(t) = frame.into_trailers() {
                                        send.send_trailers(t).await.map_err(Error::stream)?;
                                        break;
                                    }
                                }
                            },
                            Some(Err(e)) => return Err(Error::new(Kind::Body, e)),
                        }
                    }
                    send.finish().await.map_err(Error::stream)
                };
                tokio::select! {
                    r = upload => Some(r),
                    Ok(()) = cancelled => None,
                }
            };
            match sent {
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "request body not sent in full");
                    send.stop_stream(Code::H3_REQUEST_CANCELLED);
                }
                None => send.stop_stream(Code::H3_REQUEST_CANCELLED),
            }
        });
        // If this future is dropped before the response arrives, the request is cancelled.
        let mut guard = CancelOnDrop(Some(cancel));
        let head = recv.recv_response().await;
        let head = match head {
            Ok(h) => h,
            Err(e) => {
                upload.abort();
                return Err(Error::before_response(e));
            }
        };
        let cancel = guard.0.take().expect("taken only here");
        let (mut parts, ()) = head.into_parts();
        // The QUIC stream the request went on (to ask the transport about it, e.g. whether it
        // went in 0-RTT).
        parts.extensions.insert(stream_id);
        let len = content_length(&parts.headers);
        Ok(Response::from_parts(
            parts,
            Incoming::client(
                recv,
                len,
                cancel,
                gquic_transport::h3::pace_reads(&self.conn, stream_id),
            ),
        ))
    }
}

/// Cancels the request's upload unless disarmed.
struct CancelOnDrop(Option<tokio::sync::oneshot::Sender<()>>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            let _ = c.send(());
        }
    }
}

/// Dials HTTP/3 servers: a `tower::Service<Uri>` that resolves the host, connects with ALPN
/// `h3` and returns a ready [`SendRequest`] (its connection driven on a tokio task).
///
/// `B` is the request body type of the [`SendRequest`] it returns.
pub struct Connector<B> {
    endpoint: gquic_transport::runtime::Endpoint,
    config: gquic_transport::ClientConfig,
    _body: std::marker::PhantomData<fn(B)>,
}

impl<B> Clone for Connector<B> {
    fn clone(&self) -> Self {
        Self {
            endpoint: self.endpoint.clone(),
            config: self.config.clone(),
            _body: std::marker::PhantomData,
        }
    }
}

impl<B> std::fmt::Debug for Connector<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("local", &self.endpoint.local_addr())
            .finish()
    }
}

impl<B> Connector<B> {
    /// Connects through `endpoint` with `config`, whose rustls configuration must offer
    /// ALPN `h3`.
    pub fn new(
        endpoint: gquic_transport::runtime::Endpoint,
        config: gquic_transport::ClientConfig,
    ) -> Self {
        Self {
            endpoint,
            config,
            _body: std::marker::PhantomData,
        }
    }

    /// Connects to `uri`'s host and port (443 by default).
    ///
    /// # Errors
    /// [`Error::is_connect`] for a URI without host, name resolution or handshake failures.
    pub async fn connect(&self, uri: Uri) -> Result<SendRequest<B>, Error> {
        let host = uri
            .host()
            .ok_or_else(|| Error::new(Kind::Connect, format!("URI {uri} has no host")))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(443);
        let addr: SocketAddr = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| Error::new(Kind::Connect, e))?
            .next()
            .ok_or_else(|| Error::new(Kind::Connect, format!("{host}: no address")))?;
        let conn = self
            .endpoint
            .connect_with(self.config.clone(), addr, &host)
            .map_err(|e| Error::new(Kind::Connect, e))?
            .await
            .map_err(|e| Error::new(Kind::Connect, e))?;
        let (send, driver) = handshake(conn).await?;
        tokio::spawn(async move {
            if let Err(e) = driver.await {
                tracing::debug!(error = %e, "HTTP/3 connection ended");
            }
        });
        Ok(send)
    }
}

impl<B: 'static> tower_service::Service<Uri> for Connector<B> {
    type Response = SendRequest<B>;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.connect(uri).await })
    }
}
