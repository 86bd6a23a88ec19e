//! [`Request`] and [`RequestBuilder`], as reqwest's.

use std::time::Duration;

use base64::Engine;
use http::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use http::Method;
use url::Url;

use crate::body::Body;
use crate::error::Error;
use crate::{Client, Response};

/// A request ready to be executed by [`Client::execute`].
#[derive(Debug)]
pub struct Request {
    pub(crate) method: Method,
    pub(crate) url: Url,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Option<Body>,
    pub(crate) timeout: Option<Duration>,
}

impl Request {
    /// A request for `method` and `url`, without headers or body.
    pub fn new(method: Method, url: Url) -> Self {
        Self {
            method,
            url,
            headers: HeaderMap::new(),
            body: None,
            timeout: None,
        }
    }

    /// The method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The method, mutably.
    pub fn method_mut(&mut self) -> &mut Method {
        &mut self.method
    }

    /// The URL.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The URL, mutably.
    pub fn url_mut(&mut self) -> &mut Url {
        &mut self.url
    }

    /// The headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The headers, mutably.
    pub fn headers_mut(&mut self) -> &mut HeaderMap {
        &mut self.headers
    }

    /// The body.
    pub fn body(&self) -> Option<&Body> {
        self.body.as_ref()
    }

    /// The body, mutably.
    pub fn body_mut(&mut self) -> &mut Option<Body> {
        &mut self.body
    }

    /// The timeout of this request, overriding the client's.
    pub fn timeout(&self) -> Option<&Duration> {
        self.timeout.as_ref()
    }

    /// A copy, if the body can be copied (bytes, not a stream).
    pub fn try_clone(&self) -> Option<Request> {
        let body = match &self.body {
            Some(b) => Some(b.try_clone()?),
            None => None,
        };
        Some(Self {
            method: self.method.clone(),
            url: self.url.clone(),
            headers: self.headers.clone(),
            body,
            timeout: self.timeout,
        })
    }
}

/// Builds a request: `client.get(url).header(..).query(..).json(..).send().await`.
#[must_use = "a request does nothing until sent"]
#[derive(Debug)]
pub struct RequestBuilder {
    client: Client,
    request: Result<Request, Error>,
}

impl RequestBuilder {
    pub(crate) fn new(client: Client, request: Result<Request, Error>) -> Self {
        Self { client, request }
    }

    fn map(mut self, f: impl FnOnce(&mut Request) -> Result<(), Error>) -> Self {
        if let Ok(req) = &mut self.request {
            if let Err(e) = f(req) {
                self.request = Err(e);
            }
        }
        self
    }

    /// Adds a header.
    pub fn header<K, V>(self, key: K, value: V) -> Self
    where
        HeaderName: TryFrom<K>,
        <HeaderName as TryFrom<K>>::Error: Into<http::Error>,
        HeaderValue: TryFrom<V>,
        <HeaderValue as TryFrom<V>>::Error: Into<http::Error>,
    {
        self.map(|req| {
            let name = HeaderName::try_from(key).map_err(|e| Error::builder(e.into()))?;
            let value = HeaderValue::try_from(value).map_err(|e| Error::builder(e.into()))?;
            req.headers.append(name, value);
            Ok(())
        })
    }

    /// Adds headers (replacing same-named ones).
    pub fn headers(self, headers: HeaderMap) -> Self {
        self.map(|req| {
            for (k, v) in headers.iter() {
                req.headers.insert(k.clone(), v.clone());
            }
            Ok(())
        })
    }

    /// `Authorization: Bearer <token>`.
    pub fn bearer_auth<T: std::fmt::Display>(self, token: T) -> Self {
        self.map(|req| {
            let mut v = HeaderValue::try_from(format!("Bearer {token}"))
                .map_err(|e| Error::builder(http::Error::from(e)))?;
            v.set_sensitive(true);
            req.headers.insert(AUTHORIZATION, v);
            Ok(())
        })
    }

    /// `Authorization: Basic <base64(user:password)>`.
    pub fn basic_auth<U: std::fmt::Display, P: std::fmt::Display>(
        self,
        username: U,
        password: Option<P>,
    ) -> Self {
        self.map(|req| {
            let creds = match password {
                Some(p) => format!("{username}:{p}"),
                None => format!("{username}:"),
            };
            let encoded = base64::engine::general_purpose::STANDARD.encode(creds);
            let mut v = HeaderValue::try_from(format!("Basic {encoded}"))
                .map_err(|e| Error::builder(http::Error::from(e)))?;
            v.set_sensitive(true);
            req.headers.insert(AUTHORIZATION, v);
            Ok(())
        })
    }

    /// Appends `query` (any `Serialize` that serializes to pairs) to the URL's query.
    pub fn query<T: serde::Serialize + ?Sized>(self, query: &T) -> Self {
        self.map(|req| {
            let encoded = serde_urlencoded::to_string(query).map_err(Error::builder)?;
            if !encoded.is_empty() {
                let q = match req.url.query() {
                    Some(existing) if !existing.is_empty() => format!("{existing}&{encoded}"),
                    _ => encoded,
                };
                req.url.set_query(Some(&q));
            }
            Ok(())
        })
    }

    /// A URL-encoded form body (`application/x-www-form-urlencoded`).
    pub fn form<T: serde::Serialize + ?Sized>(self, form: &T) -> Self {
        self.map(|req| {
            let body = serde_urlencoded::to_string(form).map_err(Error::builder)?;
            req.headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            );
            req.body = Some(body.into());
            Ok(())
        })
    }

    /// A JSON body (`application/json`).
    pub fn json<T: serde::Serialize + ?Sized>(self, json: &T) -> Self {
        self.map(|req| {
            let body = serde_json::to_vec(json).map_err(Error::builder)?;
            if !req.headers.contains_key(CONTENT_TYPE) {
                req.headers
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            }
            req.body = Some(body.into());
            Ok(())
        })
    }

    /// The body: bytes, a string, or [`Body::wrap_stream`] to stream it.
    pub fn body<B: Into<Body>>(self, body: B) -> Self {
        self.map(|req| {
            req.body = Some(body.into());
            Ok(())
        })
    }

    /// The time the whole request may take, body included, overriding the client's.
    pub fn timeout(self, timeout: Duration) -> Self {
        self.map(|req| {
            req.timeout = Some(timeout);
            Ok(())
        })
    }

    /// The request, without sending it.
    ///
    /// # Errors
    /// What building it failed on (a bad URL, header or body).
    pub fn build(self) -> Result<Request, Error> {
        self.request
    }

    /// A copy, if the body can be copied.
    pub fn try_clone(&self) -> Option<Self> {
        let request = match &self.request {
            Ok(r) => Ok(r.try_clone()?),
            Err(_) => return None,
        };
        Some(Self {
            client: self.client.clone(),
            request,
        })
    }

    /// Sends the request; resolves with the response head, the body streaming in.
    ///
    /// # Errors
    /// See [`Error`]'s predicates.
    pub async fn send(self) -> Result<Response, Error> {
        let req = self.request?;
        self.client.execute(req).await
    }
}
