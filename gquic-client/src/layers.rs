//! The middle of the stack, as tower services: redirects, cookies and retries (the pool is
//! below them, decompression above).

use std::sync::Arc;

use http::header::{self, HeaderName};
use http::{Method, Request, Response, StatusCode, Uri};
use tower::ServiceExt;
use url::Url;

use crate::body::Body;
use crate::client::HttpService;
use crate::cookie::CookieStore;
use crate::error::Error;
use crate::redirect::{self, ActionKind};
use crate::retry::{self, Budget};
use crate::ResBody;
use tower::util::BoxCloneSyncService;

/// The URL a response finally came from (after redirects): a response extension.
#[derive(Debug, Clone)]
pub(crate) struct FinalUrl(pub(crate) Url);

pub(crate) fn url_of(uri: &Uri) -> Result<Url, Error> {
    Url::parse(&uri.to_string()).map_err(|e| Error::builder(format!("bad URL {uri}: {e}")))
}

fn uri_of(url: &Url) -> Result<Uri, Error> {
    url.as_str()
        .parse()
        .map_err(|e| Error::redirect(format!("bad redirect target {url}: {e}")))
}

/// A copy of `req`'s head with `body`.
fn rebuild(req: &Request<()>, body: Body) -> Request<Body> {
    let mut r = Request::new(body);
    *r.method_mut() = req.method().clone();
    *r.uri_mut() = req.uri().clone();
    *r.version_mut() = req.version();
    *r.headers_mut() = req.headers().clone();
    *r.extensions_mut() = req.extensions().clone();
    r
}

/// Splits off the body, keeping a replayable copy when there is one.
fn split(req: Request<Body>) -> (Request<()>, Option<Body>, Option<Body>) {
    let (parts, body) = req.into_parts();
    let replay = body.try_clone();
    (Request::from_parts(parts, ()), Some(body), replay)
}

fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// Follows redirects by the policy (RFC 9110 §15.4).
pub(crate) fn follow_redirects(inner: HttpService, policy: Arc<redirect::Policy>) -> HttpService {
    BoxCloneSyncService::new(tower::service_fn(move |req| {
        follow_redirects_one(inner.clone(), policy.clone(), req)
    }))
}

async fn follow_redirects_one(
    inner: HttpService,
    policy: Arc<redirect::Policy>,
    req: Request<Body>,
) -> Result<Response<ResBody>, Error> {
    let mut url = url_of(req.uri())?;
    let (mut head, mut body, mut replay) = split(req);
    // A streamed body cannot be sent a second time.
    let mut streamed = replay.is_none();
    let mut visited: Vec<Url> = Vec::new();
    loop {
        let body_now = body
            .take()
            .or_else(|| replay.as_ref().and_then(Body::try_clone))
            .unwrap_or_else(Body::empty);
        let mut resp = inner
            .clone()
            .oneshot(rebuild(&head, body_now))
            .await
            .map_err(|e| e.with_url_if_none(&url))?;
        let status = resp.status();
        let location = resp
            .headers()
            .get(header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .map(str::to_owned);
        let (Some(location), true) = (location, status.is_redirection()) else {
            resp.extensions_mut().insert(FinalUrl(url));
            return Ok(resp);
        };
        let next = url.join(&location).map_err(|e| {
            Error::redirect(format!("bad location {location:?}: {e}")).with_url(url.clone())
        })?;
        match status {
            // RFC 9110 §15.4.2-4: 301/302 may and 303 must become GET (HEAD stays
            // HEAD for 301/302), without the body.
            StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND | StatusCode::SEE_OTHER => {
                let keep_head = head.method() == Method::HEAD && status != StatusCode::SEE_OTHER;
                if !keep_head {
                    *head.method_mut() = Method::GET;
                }
                body = None;
                replay = None;
                streamed = false;
                for h in [
                    header::CONTENT_TYPE,
                    header::CONTENT_LENGTH,
                    header::CONTENT_ENCODING,
                    header::TRANSFER_ENCODING,
                ] {
                    head.headers_mut().remove(h);
                }
            }
            // §15.4.8-9: same method, same body; a body that cannot be sent again
            // ends here with the 3xx.
            StatusCode::TEMPORARY_REDIRECT | StatusCode::PERMANENT_REDIRECT => {
                if streamed {
                    resp.extensions_mut().insert(FinalUrl(url));
                    return Ok(resp);
                }
            }
            _ => {
                resp.extensions_mut().insert(FinalUrl(url));
                return Ok(resp);
            }
        }
        visited.push(url.clone());
        if visited.contains(&next) {
            return Err(Error::redirect(format!("redirect loop back to {next}")).with_url(url));
        }
        match policy.check(status, &next, &visited) {
            ActionKind::Follow => {}
            ActionKind::Stop => {
                resp.extensions_mut().insert(FinalUrl(url));
                return Ok(resp);
            }
            ActionKind::Error(e) => return Err(Error::redirect(e).with_url(url)),
        }
        drop(resp);
        // Credentials do not follow a redirect to another origin.
        if !same_origin(&url, &next) {
            for h in [
                header::AUTHORIZATION,
                header::COOKIE,
                header::PROXY_AUTHORIZATION,
                HeaderName::from_static("cookie2"),
                header::WWW_AUTHENTICATE,
            ] {
                head.headers_mut().remove(h);
            }
        }
        *head.uri_mut() = uri_of(&next)?;
        tracing::debug!(%status, from = %url, to = %next, "following redirect");
        url = next;
    }
}

/// Sends the store's cookies and stores what responses set.
pub(crate) fn cookies(inner: HttpService, store: Arc<dyn CookieStore>) -> HttpService {
    BoxCloneSyncService::new(tower::service_fn(move |req| {
        cookies_one(inner.clone(), store.clone(), req)
    }))
}

async fn cookies_one(
    inner: HttpService,
    store: Arc<dyn CookieStore>,
    mut req: Request<Body>,
) -> Result<Response<ResBody>, Error> {
    let url = url_of(req.uri())?;
    if !req.headers().contains_key(header::COOKIE) {
        if let Some(v) = store.cookies(&url) {
            req.headers_mut().insert(header::COOKIE, v);
        }
    }
    let resp = inner.oneshot(req).await?;
    let mut set = resp.headers().get_all(header::SET_COOKIE).iter();
    store.set_cookies(&mut set, &url);
    Ok(resp)
}

/// Retries connection-level failures (see [`crate::retry`]).
pub(crate) fn retry(
    inner: HttpService,
    policy: Arc<retry::Policy>,
    budget: Arc<Budget>,
) -> HttpService {
    BoxCloneSyncService::new(tower::service_fn(move |req| {
        retry_one(inner.clone(), policy.clone(), budget.clone(), req)
    }))
}

async fn retry_one(
    inner: HttpService,
    policy: Arc<retry::Policy>,
    budget: Arc<Budget>,
    req: Request<Body>,
) -> Result<Response<ResBody>, Error> {
    let (head, mut body, replay) = split(req);
    let mut attempt = 0;
    loop {
        let body_now = match body.take() {
            Some(b) => b,
            None => replay
                .as_ref()
                .and_then(Body::try_clone)
                .expect("retried only with a replayable body"),
        };
        match inner.clone().oneshot(rebuild(&head, body_now)).await {
            Ok(r) => {
                budget.deposit();
                return Ok(r);
            }
            Err(e) => {
                let allowed = e.connection_failed
                    && (idempotent(head.method()) || e.not_processed)
                    && replay.is_some()
                    && attempt < policy.max_retries;
                if !allowed || !budget.withdraw() {
                    return Err(e);
                }
                tracing::debug!(error = %e, attempt, "retrying");
                tokio::time::sleep(policy.delay(attempt)).await;
                attempt += 1;
            }
        }
    }
}

/// Safe to send twice (RFC 9110 §9.2.2).
fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}
