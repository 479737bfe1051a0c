//! The one mapping of domain errors to RFC 9457 problem+json. Internal causes are logged here
//! and never sent.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use iam_shared::DomainError;
use serde::Serialize;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub title: &'static str,
    pub detail: String,
    /// The credential an `Idempotency-Key` already issued (409 on a replayed issue).
    pub key_id: Option<String>,
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    title: &'a str,
    status: u16,
    detail: &'a str,
    #[serde(rename = "keyId", skip_serializing_if = "Option::is_none")]
    key_id: Option<&'a str>,
}

impl ApiError {
    pub fn new(status: StatusCode, title: &'static str, detail: impl Into<String>) -> Self {
        Self { status, title, detail: detail.into(), key_id: None }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "Bad Request", detail)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "a valid access token from POST /iam/auth/token is required (Authorization: Bearer <token>)",
        )
    }

    pub fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Service Unavailable",
            "the service is temporarily unavailable; nothing was changed, retry later",
        )
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::Invalid(msg) => Self::bad_request(msg),
            DomainError::Forbidden(perm) => {
                Self::new(StatusCode::FORBIDDEN, "Forbidden", format!("this operation needs the permission {perm}"))
            }
            DomainError::BeyondAuthority(rule) => Self::new(StatusCode::FORBIDDEN, "Forbidden", rule.to_string()),
            DomainError::LastAdministrator(rule) => Self::new(StatusCode::CONFLICT, "Conflict", rule.to_string()),
            DomainError::NotFound(what) => Self::new(StatusCode::NOT_FOUND, "Not Found", format!("{what} not found")),
            DomainError::Conflict(msg) => Self::new(StatusCode::CONFLICT, "Conflict", msg),
            DomainError::AlreadyIssued(key_id) => {
                let detail = DomainError::AlreadyIssued(key_id.clone()).to_string();
                Self { key_id: Some(key_id.to_string()), ..Self::new(StatusCode::CONFLICT, "Conflict", detail) }
            }
            DomainError::PreconditionFailed(msg) => Self::new(StatusCode::PRECONDITION_FAILED, "Precondition Failed", msg),
            DomainError::Unprocessable(msg) => Self::new(StatusCode::UNPROCESSABLE_ENTITY, "Unprocessable Content", msg),
            DomainError::BadSignature => Self::new(StatusCode::FORBIDDEN, "Forbidden", DomainError::BadSignature.to_string()),
            DomainError::TooManyRequests(msg) => Self::new(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests", msg),
            DomainError::Unavailable(cause) => {
                tracing::error!(error = %cause, "store failure");
                Self::unavailable()
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Problem {
            kind: "about:blank",
            title: self.title,
            status: self.status.as_u16(),
            detail: &self.detail,
            key_id: self.key_id.as_deref(),
        };
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        match self.status {
            StatusCode::UNAUTHORIZED => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(r#"Bearer realm="iam", error="invalid_token""#));
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(header::RETRY_AFTER, jittered_retry_after());
            }
            // Per-minute windows: the next one is at most a minute away.
            StatusCode::TOO_MANY_REQUESTS => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
            }
            _ => {}
        }
        response
    }
}

/// `Retry-After` for a 503: 1, 2 or 3 seconds at random, so that clients refused together (a
/// fleet sharing a key, a burst that met a store fault) come back spread out, not in step.
pub fn jittered_retry_after() -> HeaderValue {
    let [byte] = iam_shared::random::bytes::<1>();
    HeaderValue::from(1 + u64::from(byte % 3))
}
