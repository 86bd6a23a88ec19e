//! [`AltSvcLayer`]: advertise HTTP/3 on responses served over TCP (RFC 7838, RFC 9114 §3.1.1).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderValue, Request, Response};

/// Adds `alt-svc: h3=":PORT"; ma=SECONDS` to responses of requests that did not arrive over
/// HTTP/3 (those carry a [`crate::ConnectionInfo`] in their extensions), telling clients the
/// same origin is reachable over HTTP/3 on UDP port `PORT`.
#[derive(Debug, Clone)]
pub struct AltSvcLayer {
    value: HeaderValue,
}

impl AltSvcLayer {
    /// Advertises HTTP/3 on UDP `port` for `max_age` (the `ma` parameter; 24 h is common).
    pub fn new(port: u16, max_age: Duration) -> Self {
        let value = format!("h3=\":{port}\"; ma={}", max_age.as_secs());
        Self {
            // Digits, quotes, colons and letters only: always a valid header value.
            value: HeaderValue::from_str(&value).expect("alt-svc value is ASCII"),
        }
    }

    /// The header value this layer adds.
    pub fn value(&self) -> &HeaderValue {
        &self.value
    }
}

impl<S> tower_layer::Layer<S> for AltSvcLayer {
    type Service = AltSvc<S>;

    fn layer(&self, inner: S) -> AltSvc<S> {
        AltSvc {
            inner,
            value: self.value.clone(),
        }
    }
}

/// The service [`AltSvcLayer`] produces.
#[derive(Debug, Clone)]
pub struct AltSvc<S> {
    inner: S,
    value: HeaderValue,
}

impl<S> AltSvc<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqB, ResB> tower_service::Service<Request<ReqB>> for AltSvc<S>
where
    S: tower_service::Service<Request<ReqB>, Response = Response<ResB>>,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let over_h3 = req.extensions().get::<crate::ConnectionInfo>().is_some();
        ResponseFuture {
            inner: self.inner.call(req),
            value: (!over_h3).then(|| self.value.clone()),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`AltSvc`].
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        value: Option<HeaderValue>,
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut resp = std::task::ready!(this.inner.poll(cx))?;
        if let Some(v) = this.value.take() {
            resp.headers_mut().insert(http::header::ALT_SVC, v);
        }
        Poll::Ready(Ok(resp))
    }
}
