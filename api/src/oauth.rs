//! The error answers of the token route, in the RFC 6749 §5.2 shape: `{error,
//! error_description}`, never cached, `WWW-Authenticate` on 401 and `Retry-After` on 429/503.
//! The route's handler and the router's own refusals on that route (headers too large, body
//! too large, wrong method) all answer with it.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use iam_shared::federation::FederationRefusal;
use iam_shared::restrictions::RestrictionRefusal;
use iam_shared::service::ExchangeError;
use serde::Serialize;

/// The token endpoint's path.
pub const TOKEN_PATH: &str = "/iam/auth/token";

/// An RFC 6749 §5.2 error.
#[derive(Debug)]
pub struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
    retry_after: Option<u64>,
}

#[derive(Serialize)]
struct OAuthErrorBody<'a> {
    error: &'a str,
    error_description: &'a str,
}

impl OAuthError {
    pub fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        Self { status, error, description: description.into(), retry_after: None }
    }

    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    /// The one answer for an unknown, wrong, mistyped or malformed key.
    pub fn invalid_client() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_client", "the API key is not valid")
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = OAuthErrorBody { error: self.error, error_description: &self.description };
        let mut response = (self.status, Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        match self.status {
            StatusCode::UNAUTHORIZED => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(r#"Basic realm="iam""#));
            }
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => {
                let retry_after = self.retry_after.map(HeaderValue::from).unwrap_or_else(crate::problem::jittered_retry_after);
                headers.insert(header::RETRY_AFTER, retry_after);
            }
            _ => {}
        }
        response
    }
}

impl From<ExchangeError> for OAuthError {
    fn from(e: ExchangeError) -> Self {
        match e {
            ExchangeError::InvalidClient(_) => Self::invalid_client(),
            ExchangeError::Refused(reason) => Self::new(StatusCode::BAD_REQUEST, "invalid_grant", reason.to_string()),
            ExchangeError::InvalidScope(msg) => Self::new(StatusCode::BAD_REQUEST, "invalid_scope", msg),
            ExchangeError::InvalidGrant(msg) => Self::new(StatusCode::BAD_REQUEST, "invalid_grant", msg),
            ExchangeError::InvalidTarget(msg) => Self::new(StatusCode::BAD_REQUEST, "invalid_target", msg),
            ExchangeError::Restricted(refusal) => {
                let error = match refusal {
                    RestrictionRefusal::Source => "invalid_grant",
                    RestrictionRefusal::Audience(_) => "invalid_target",
                    RestrictionRefusal::Permission(_) => "invalid_scope",
                };
                Self::new(StatusCode::BAD_REQUEST, error, refusal.to_string())
            }
            // RFC 8628's `slow_down`: the key is fine, its callers are asking too often.
            ExchangeError::OverKeyLimit(_) | ExchangeError::StoreThrottled => Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "slow_down",
                "this API key is being exchanged too often; reuse its access token until it expires, then retry",
            ),
            // The grant cannot be verified: the organisation's issuer could not be asked (the
            // administrator reads why in the trail; the caller is not told what the service's
            // resolver found). A 400, not a 503: a tenant's issuer being down or misconfigured
            // is not this service failing, and must not page its operators or roll back a deploy.
            ExchangeError::Federation(FederationRefusal::IssuerUnreachable(_)) => Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "the issuer's keys could not be fetched; retry later (the organisation's audit trail says why)",
            ),
            // The account changed under the exchange (a rare race): worth a retry.
            ExchangeError::Federation(refusal @ FederationRefusal::AccountChanged) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", refusal.to_string())
            }
            ExchangeError::Federation(refusal) => Self::new(StatusCode::BAD_REQUEST, "invalid_grant", refusal.to_string()),
            ExchangeError::Store(_) | ExchangeError::Hash(_) | ExchangeError::Sign(_) => {
                tracing::error!(error = %e, "token exchange failed");
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", "the service is temporarily unavailable; retry later")
            }
        }
    }
}
