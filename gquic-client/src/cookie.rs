//! Cookies: the [`CookieStore`] trait (as reqwest's) and [`Jar`], the default store, which
//! keeps domain, path, `Secure`, expiry (`Expires`/`Max-Age`) and `SameSite` (RFC 6265).

use std::sync::RwLock;

use http::HeaderValue;
use url::Url;

/// Where the client keeps cookies: given the `set-cookie` headers of each response, asked
/// for the `cookie` header of each request. Shared by every request and connection of a
/// client.
pub trait CookieStore: Send + Sync {
    /// Stores the cookies a response for `url` set.
    fn set_cookies(&self, cookie_headers: &mut dyn Iterator<Item = &HeaderValue>, url: &Url);
    /// The `cookie` header to send to `url`, if any cookie matches.
    fn cookies(&self, url: &Url) -> Option<HeaderValue>;
}

/// The default cookie store, on the `cookie_store` crate (RFC 6265 domain and path
/// matching, `Secure`, `HttpOnly`, expiry; `SameSite` is stored with the cookie).
#[derive(Debug, Default)]
pub struct Jar(RwLock<cookie_store::CookieStore>);

impl Jar {
    /// Adds a cookie (`"name=value; Path=/"`) as if `url` had set it.
    pub fn add_cookie_str(&self, cookie: &str, url: &Url) {
        let cookies = cookie::Cookie::parse(cookie.to_owned())
            .ok()
            .map(|c| c.into_owned());
        let mut store = self.0.write().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cookies {
            let _ = store.insert_raw(&c, url);
        }
    }

    /// The stored cookie `name` that would be sent to `url`, as `(value, same_site)`.
    pub fn get(&self, url: &Url, name: &str) -> Option<(String, Option<String>)> {
        let store = self.0.read().unwrap_or_else(|e| e.into_inner());
        store
            .matches(url)
            .into_iter()
            .find(|c| c.name() == name)
            .map(|c| (c.value().to_owned(), c.same_site().map(|s| s.to_string())))
    }
}

impl CookieStore for Jar {
    fn set_cookies(&self, cookie_headers: &mut dyn Iterator<Item = &HeaderValue>, url: &Url) {
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        let cookies = cookie_headers.filter_map(|v| {
            let s = std::str::from_utf8(v.as_bytes()).ok()?;
            let c = cookie::Cookie::parse(s.to_owned()).ok()?.into_owned();
            // RFC 6265 §5.3 step 5: no cookies for a whole top-level domain. Without the
            // public suffix list, a single-label Domain other than the host itself is
            // refused.
            if let Some(d) = c.domain() {
                let d = d.trim_start_matches('.').to_ascii_lowercase();
                if !d.contains('.') && d != host {
                    return None;
                }
            }
            Some(c)
        });
        let mut store = self.0.write().unwrap_or_else(|e| e.into_inner());
        store.store_response_cookies(cookies, url);
    }

    fn cookies(&self, url: &Url) -> Option<HeaderValue> {
        let store = self.0.read().unwrap_or_else(|e| e.into_inner());
        let s = store
            .get_request_values(url)
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("; ");
        if s.is_empty() {
            return None;
        }
        HeaderValue::from_str(&s).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(jar: &Jar, url: &str, cookie: &'static str) {
        let v = HeaderValue::from_static(cookie);
        jar.set_cookies(&mut std::iter::once(&v), &url.parse().unwrap());
    }

    fn sent(jar: &Jar, url: &str) -> String {
        jar.cookies(&url.parse().unwrap())
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    }

    #[test]
    fn path_domain_secure_and_expiry_rules() {
        let jar = Jar::default();
        set(&jar, "https://a.example/", "root=1; Path=/");
        set(&jar, "https://a.example/", "sub=2; Path=/sub");
        set(&jar, "https://a.example/", "sec=3; Secure");
        set(&jar, "https://a.example/", "dom=4; Domain=example");
        set(&jar, "https://a.example/", "other=5; Domain=other.example");
        set(&jar, "https://a.example/", "gone=6; Max-Age=0");
        set(&jar, "https://a.example/", "lax=7; SameSite=Lax");
        let root = sent(&jar, "https://a.example/");
        assert!(root.contains("root=1") && root.contains("sec=3") && root.contains("lax=7"));
        assert!(!root.contains("sub=2"), "path rule: {root}");
        assert!(!root.contains("dom=4"), "top-level domain cookie: {root}");
        assert!(!root.contains("other=5"), "foreign domain stored: {root}");
        assert!(!root.contains("gone=6"), "expired cookie sent: {root}");
        assert!(sent(&jar, "https://a.example/sub/x").contains("sub=2"));
        assert!(
            !sent(&jar, "http://a.example/").contains("sec=3"),
            "secure over http"
        );
        assert_eq!(sent(&jar, "https://b.example/"), "");
        assert_eq!(
            jar.get(&"https://a.example/".parse().unwrap(), "lax"),
            Some(("7".into(), Some("Lax".into())))
        );
    }
}
