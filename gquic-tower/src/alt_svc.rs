//! [`AltSvcLayer`]: advertise HTTP/3 on responses served over TCP (RFC 7838, RFC 9114 §3.1.1);
//! [`parse_alt_svc`]: read such advertisements on the client side.

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

/// One alternative service of an `alt-svc` header (RFC 7838 §3).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Alternative {
    /// The ALPN protocol ID, percent-decoded (`h3`).
    pub protocol: String,
    /// The alternative host; `None` means the origin's own host.
    pub host: Option<String>,
    /// The alternative port.
    pub port: u16,
    /// How long the advertisement holds (`ma`, default 24 hours; RFC 7838 §3.1).
    pub max_age: Duration,
    /// `persist=1`: keep it across network changes.
    pub persist: bool,
}

/// A parsed `alt-svc` header value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AltSvcValue {
    /// `clear`: forget every alternative of this origin.
    Clear,
    /// The alternatives that parsed, in the server's order of preference.
    Alternatives(Vec<Alternative>),
}

/// Splits `s` on `sep` outside double quotes (RFC 9110 §5.6.4 quoted strings).
fn split_unquoted(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                parts.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn unquote(s: &str) -> Option<String> {
    let s = s.trim();
    if let Some(inner) = s.strip_prefix('"') {
        let inner = inner.strip_suffix('"')?;
        let mut out = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            out.push(if c == '\\' { chars.next()? } else { c });
        }
        Some(out)
    } else {
        Some(s.to_owned())
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn parse_alternative(s: &str) -> Option<Alternative> {
    let mut params = split_unquoted(s, ';').into_iter();
    let (protocol, authority) = params.next()?.trim().split_once('=')?;
    let protocol = percent_decode(protocol.trim())?;
    let authority = unquote(authority)?;
    let (host, port) = authority.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = (!host.is_empty()).then(|| host.to_owned());
    let mut max_age = Duration::from_secs(86_400);
    let mut persist = false;
    for p in params {
        let Some((k, v)) = p.trim().split_once('=') else {
            continue;
        };
        let v = unquote(v)?;
        match k.trim().to_ascii_lowercase().as_str() {
            "ma" => max_age = Duration::from_secs(v.parse().ok()?),
            "persist" => persist = v == "1",
            // RFC 7838 §3: unknown parameters are ignored.
            _ => {}
        }
    }
    (!protocol.is_empty()).then_some(Alternative {
        protocol,
        host,
        port,
        max_age,
        persist,
    })
}

/// Parses an `alt-svc` header value (RFC 7838 §3): `clear`, or alternatives such as
/// `h3=":443"; ma=3600, h3-29=":8443"`. Alternatives that do not parse are skipped (§3:
/// a client ignores what it does not understand); `None` if nothing parses.
pub fn parse_alt_svc(value: &str) -> Option<AltSvcValue> {
    if value.trim().eq_ignore_ascii_case("clear") {
        return Some(AltSvcValue::Clear);
    }
    let alternatives: Vec<Alternative> = split_unquoted(value, ',')
        .into_iter()
        .filter_map(parse_alternative)
        .collect();
    (!alternatives.is_empty()).then_some(AltSvcValue::Alternatives(alternatives))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_what_servers_send() {
        assert_eq!(parse_alt_svc("clear"), Some(AltSvcValue::Clear));
        let v = parse_alt_svc(r#"h3=":443"; ma=3600, h3-29="alt.example:8443"; persist=1, x"#);
        let Some(AltSvcValue::Alternatives(a)) = v else {
            panic!("{v:?}")
        };
        assert_eq!(a.len(), 2);
        assert_eq!(
            (a[0].protocol.as_str(), a[0].host.as_deref(), a[0].port),
            ("h3", None, 443)
        );
        assert_eq!(a[0].max_age, Duration::from_secs(3600));
        assert_eq!(a[1].host.as_deref(), Some("alt.example"));
        assert_eq!(a[1].max_age, Duration::from_secs(86_400));
        assert!(a[1].persist);
        // What our own layer sends parses back.
        let ours = AltSvcLayer::new(4433, Duration::from_secs(60));
        let Some(AltSvcValue::Alternatives(a)) = parse_alt_svc(ours.value().to_str().unwrap())
        else {
            panic!()
        };
        assert_eq!((a[0].port, a[0].max_age), (4433, Duration::from_secs(60)));
        assert_eq!(parse_alt_svc("h3=443"), None);
        assert_eq!(parse_alt_svc(""), None);
    }

    proptest! {
        #[test]
        fn round_trips(
            alts in proptest::collection::vec(
                ("[a-z][a-z0-9-]{0,8}", proptest::option::of("[a-z]{1,10}(\\.[a-z]{1,5})?"), any::<u16>(), 0u64..10_000_000, any::<bool>()),
                1..4,
            )
        ) {
            let text = alts
                .iter()
                .map(|(p, h, port, ma, persist)| {
                    format!(
                        "{p}=\"{}:{port}\"; ma={ma}{}",
                        h.clone().unwrap_or_default(),
                        if *persist { "; persist=1" } else { "" }
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            let Some(AltSvcValue::Alternatives(parsed)) = parse_alt_svc(&text) else {
                panic!("{text}")
            };
            prop_assert_eq!(parsed.len(), alts.len());
            for (a, (p, h, port, ma, persist)) in parsed.iter().zip(&alts) {
                prop_assert_eq!(&a.protocol, p);
                prop_assert_eq!(&a.host, h);
                prop_assert_eq!(a.port, *port);
                prop_assert_eq!(a.max_age, Duration::from_secs(*ma));
                prop_assert_eq!(a.persist, *persist);
            }
        }

        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,200}") {
            let _ = parse_alt_svc(&s);
        }
    }
}
