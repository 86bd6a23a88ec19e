//! The [`WebTransportUpgrade`] extractor: WebTransport sessions in axum handlers, the way
//! `axum::extract::ws::WebSocketUpgrade` gives WebSockets.

use std::future::Future;

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use gquic_hyper::webtransport::OnSession;
pub use gquic_hyper::webtransport::{Session, SessionError};
use http::request::Parts;
use http::StatusCode;

/// Accepts a WebTransport session at a route (extended CONNECT with
/// `:protocol = webtransport`, draft-ietf-webtrans-http3 §"Creating a New Session").
///
/// Route it with `any` (or `on(MethodFilter::CONNECT, ..)`) and return
/// [`WebTransportUpgrade::on_session`]'s response; the callback gets the [`Session`] once the
/// 200 is sent. The server must have WebTransport enabled
/// ([`crate::Serve::enable_webtransport`]).
///
/// ```no_run
/// use axum::{routing::any, Router};
/// use gquic_axum::{Session, WebTransportUpgrade};
///
/// async fn wt(upgrade: WebTransportUpgrade) -> axum::response::Response {
///     upgrade.on_session(|session: Session| async move {
///         while let Ok((mut send, mut recv)) = session.accept_bi().await {
///             tokio::spawn(async move {
///                 let _ = tokio::io::copy(&mut recv, &mut send).await;
///                 let _ = send.finish();
///             });
///         }
///     })
/// }
///
/// # async fn demo(endpoint: gquic_transport::runtime::Endpoint) -> std::io::Result<()> {
/// let app = Router::new().route("/wt", any(wt));
/// gquic_axum::serve(endpoint, app).enable_webtransport(true).await
/// # }
/// ```
pub struct WebTransportUpgrade {
    on: OnSession,
    id: u64,
}

impl std::fmt::Debug for WebTransportUpgrade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebTransportUpgrade")
            .field("id", &self.id)
            .finish()
    }
}

impl WebTransportUpgrade {
    /// The ID the session will have (its CONNECT stream's ID).
    pub fn session_id(&self) -> u64 {
        self.id
    }

    /// Accepts the session: returns the 200 response for the handler to return, and runs
    /// `callback` with the [`Session`] on its own task once the response is sent. When the
    /// callback returns and the session is not held elsewhere, the session is closed.
    pub fn on_session<F, Fut>(self, callback: F) -> Response
    where
        F: FnOnce(Session) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let id = self.id;
        let on = self.on;
        tokio::spawn(async move {
            match on.await {
                Ok(session) => callback(session).await,
                Err(e) => {
                    tracing::debug!(session = id, error = %e, "WebTransport session not established")
                }
            }
        });
        // The server adds `sec-webtransport-http3-draft: draft02` for Chromium.
        StatusCode::OK.into_response()
    }
}

/// Why a request could not become a WebTransport session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebTransportUpgradeRejection {
    /// Not a CONNECT request.
    #[error("WebTransport sessions start with an extended CONNECT request")]
    MethodNotConnect,
    /// A CONNECT without `:protocol = webtransport`, over a transport without WebTransport
    /// (HTTP/1.1 or HTTP/2), or on a server without WebTransport enabled.
    #[error(
        "not a WebTransport CONNECT over HTTP/3 (`:protocol = webtransport`), or WebTransport is \
         not enabled on this server: call enable_webtransport(true) on gquic_axum::serve"
    )]
    NotWebTransport,
}

impl IntoResponse for WebTransportUpgradeRejection {
    fn into_response(self) -> Response {
        let status = match self {
            Self::MethodNotConnect => StatusCode::METHOD_NOT_ALLOWED,
            Self::NotWebTransport => StatusCode::BAD_REQUEST,
        };
        (status, self.to_string()).into_response()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for WebTransportUpgrade {
    type Rejection = WebTransportUpgradeRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if parts.method != http::Method::CONNECT {
            return Err(WebTransportUpgradeRejection::MethodNotConnect);
        }
        let id = parts
            .extensions
            .get::<gquic_hyper::webtransport::PendingSession>()
            .map(|p| p.id())
            .ok_or(WebTransportUpgradeRejection::NotWebTransport)?;
        let on = gquic_hyper::webtransport::on(&mut parts.extensions)
            .ok_or(WebTransportUpgradeRejection::NotWebTransport)?;
        Ok(Self { on, id })
    }
}
