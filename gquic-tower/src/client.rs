//! [`Client`]: a `tower::Service<Request<B>>` over a pooled HTTP/3 connection to one origin.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use gquic_hyper::client::{Connector, SendRequest};
use gquic_hyper::{Error, Incoming};
use http::{Request, Response, Uri};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// HTTP/3 requests to one origin as a tower service. Clones share one connection (the
/// pool), which is dialed on first use and dialed again after it closes. `poll_ready` is
/// `Pending` while the peer's stream limit (MAX_STREAMS) leaves no room for another request,
/// so tower's buffering and load-shedding layers see the server's real capacity.
pub struct Client<B> {
    connector: Connector<B>,
    origin: Uri,
    shared: Arc<Mutex<Option<SendRequest<B>>>>,
    connecting: Option<BoxFuture<Result<SendRequest<B>, Error>>>,
    ready: Option<SendRequest<B>>,
}

impl<B> Clone for Client<B> {
    fn clone(&self) -> Self {
        Self {
            connector: self.connector.clone(),
            origin: self.origin.clone(),
            shared: self.shared.clone(),
            connecting: None,
            ready: None,
        }
    }
}

impl<B> std::fmt::Debug for Client<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("gquic_tower::Client")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl<B: 'static> Client<B> {
    /// A client for `origin` (`https://host[:port]`), dialing with `connector`.
    pub fn new(connector: Connector<B>, origin: Uri) -> Self {
        Self {
            connector,
            origin,
            shared: Arc::new(Mutex::new(None)),
            connecting: None,
            ready: None,
        }
    }

    fn pooled(&self) -> Option<SendRequest<B>> {
        let mut slot = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        match slot.as_ref() {
            Some(s) if !s.is_closed() => Some(s.clone()),
            Some(_) => {
                *slot = None;
                None
            }
            None => None,
        }
    }
}

impl<B> tower_service::Service<Request<B>> for Client<B>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<Incoming>;
    type Error = Error;
    type Future = BoxFuture<Result<Response<Incoming>, Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        loop {
            if let Some(send) = self.ready.as_mut() {
                match send.poll_ready(cx) {
                    Poll::Ready(Ok(())) => return Poll::Ready(Ok(())),
                    Poll::Pending => return Poll::Pending,
                    // The connection closed: dial again.
                    Poll::Ready(Err(_)) => self.ready = None,
                }
            }
            if let Some(send) = self.pooled() {
                self.ready = Some(send);
                continue;
            }
            let connecting = self.connecting.get_or_insert_with(|| {
                let connector = self.connector.clone();
                let origin = self.origin.clone();
                Box::pin(async move { connector.connect(origin).await })
            });
            match connecting.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => {
                    self.connecting = None;
                    return Poll::Ready(Err(e));
                }
                Poll::Ready(Ok(send)) => {
                    self.connecting = None;
                    let mut slot = self.shared.lock().unwrap_or_else(|e| e.into_inner());
                    // Another clone may have dialed at the same time: keep one connection.
                    let send = match slot.as_ref() {
                        Some(existing) if !existing.is_closed() => existing.clone(),
                        _ => {
                            *slot = Some(send.clone());
                            send
                        }
                    };
                    drop(slot);
                    self.ready = Some(send);
                }
            }
        }
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // tower's contract: `call` follows a successful `poll_ready`.
        let Some(mut send) = self.ready.take() else {
            return Box::pin(async { Err(Error::not_ready()) });
        };
        Box::pin(async move { send.send_request(req).await })
    }
}
