//! Redirect policies, as reqwest's `redirect` module: [`Policy::limited`] (the default, 10),
//! [`Policy::none`], [`Policy::custom`].

use std::fmt;

use http::StatusCode;
use url::Url;

use crate::error::BoxError;

/// Which redirects the client follows.
pub struct Policy {
    inner: PolicyKind,
}

enum PolicyKind {
    Limit(usize),
    None,
    Custom(Box<dyn Fn(Attempt<'_>) -> Action + Send + Sync>),
}

impl Policy {
    /// Follow up to `max` redirects; one more is an error ([`crate::Error::is_redirect`]).
    pub fn limited(max: usize) -> Self {
        Self {
            inner: PolicyKind::Limit(max),
        }
    }

    /// Follow none: a 3xx response is returned as it is.
    pub fn none() -> Self {
        Self {
            inner: PolicyKind::None,
        }
    }

    /// Decide each redirect with `f`.
    ///
    /// ```
    /// use gquic_client::redirect::Policy;
    /// // Stay on one host, at most 5 hops.
    /// let policy = Policy::custom(|attempt| {
    ///     if attempt.previous().len() >= 5 {
    ///         attempt.error("too many redirects")
    ///     } else if attempt.url().host_str() == Some("example.com") {
    ///         attempt.follow()
    ///     } else {
    ///         attempt.stop()
    ///     }
    /// });
    /// # let _ = policy;
    /// ```
    pub fn custom<F>(f: F) -> Self
    where
        F: Fn(Attempt<'_>) -> Action + Send + Sync + 'static,
    {
        Self {
            inner: PolicyKind::Custom(Box::new(f)),
        }
    }

    pub(crate) fn check(&self, status: StatusCode, next: &Url, previous: &[Url]) -> ActionKind {
        let attempt = Attempt {
            status,
            next,
            previous,
        };
        match &self.inner {
            PolicyKind::None => ActionKind::Stop,
            PolicyKind::Limit(max) => {
                if previous.len() > *max {
                    ActionKind::Error(format!("too many redirects (limit {max})").into())
                } else {
                    ActionKind::Follow
                }
            }
            PolicyKind::Custom(f) => f(attempt).inner,
        }
    }
}

impl Default for Policy {
    /// Up to 10 redirects.
    fn default() -> Self {
        Self::limited(10)
    }
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            PolicyKind::Limit(n) => write!(f, "Policy::limited({n})"),
            PolicyKind::None => f.write_str("Policy::none()"),
            PolicyKind::Custom(_) => f.write_str("Policy::custom(..)"),
        }
    }
}

/// One redirect to decide on.
#[derive(Debug)]
pub struct Attempt<'a> {
    status: StatusCode,
    next: &'a Url,
    previous: &'a [Url],
}

impl<'a> Attempt<'a> {
    /// The redirect's status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// Where it points.
    pub fn url(&self) -> &Url {
        self.next
    }

    /// The URLs requested so far, the first request's first.
    pub fn previous(&self) -> &[Url] {
        self.previous
    }

    /// Follow it.
    pub fn follow(self) -> Action {
        Action {
            inner: ActionKind::Follow,
        }
    }

    /// Return the 3xx response as it is.
    pub fn stop(self) -> Action {
        Action {
            inner: ActionKind::Stop,
        }
    }

    /// Fail the request with `error` ([`crate::Error::is_redirect`]).
    pub fn error<E: Into<BoxError>>(self, error: E) -> Action {
        Action {
            inner: ActionKind::Error(error.into()),
        }
    }
}

/// What a custom policy decided.
pub struct Action {
    inner: ActionKind,
}

impl fmt::Debug for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            ActionKind::Follow => f.write_str("Follow"),
            ActionKind::Stop => f.write_str("Stop"),
            ActionKind::Error(e) => write!(f, "Error({e})"),
        }
    }
}

pub(crate) enum ActionKind {
    Follow,
    Stop,
    Error(BoxError),
}
