//! Request parsing: every failure becomes a problem+json 4xx that says what is wrong.

use std::str::FromStr;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use iam_shared::idempotency::IdempotencyKey;
use iam_shared::ids::IdError;
use iam_shared::service::{AuthError, Caller};
use serde::de::DeserializeOwned;

use crate::problem::ApiError;
use crate::state::AppState;

/// Request bodies larger than this are refused with 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The caller of a management route, authenticated by `Authorization: Bearer <access token>`.
pub struct Authenticated(pub Caller);

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = bearer_token(parts).ok_or_else(ApiError::unauthorized)?;
        match state.authenticate_bearer(token).await {
            Ok(caller) => Ok(Self(caller)),
            Err(AuthError::Unavailable(e)) => {
                tracing::error!(error = %e, "store failure while authenticating");
                Err(ApiError::unavailable())
            }
            Err(reason) => {
                tracing::info!(%reason, "bearer token refused");
                Err(ApiError::unauthorized())
            }
        }
    }
}

fn bearer_token(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// The optional `Idempotency-Key` header of a creating request.
pub struct IdempotencyKeyHeader(pub Option<IdempotencyKey>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKeyHeader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let mut values = parts.headers.get_all(IDEMPOTENCY_KEY).iter();
        let Some(value) = values.next() else { return Ok(Self(None)) };
        if values.next().is_some() {
            return Err(ApiError::bad_request("send one Idempotency-Key header, not several"));
        }
        let raw = value.to_str().map_err(|_| ApiError::bad_request("Idempotency-Key must be visible ASCII"))?;
        Ok(Self(Some(IdempotencyKey::parse(raw)?)))
    }
}

pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Set on a response that repeats the answer to an earlier request with the same key.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// The strong ETag of an object at `version`.
pub fn etag(version: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).expect("digits and quotes are a valid header value")
}

/// The optional `If-Match` header: the version (from an earlier ETag) a change must apply to.
/// `*` asks only that the object exists, which every route checks anyway.
pub struct IfMatch(pub Option<u64>);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let mut values = parts.headers.get_all(header::IF_MATCH).iter();
        let Some(value) = values.next() else { return Ok(Self(None)) };
        let invalid = || ApiError::bad_request("If-Match must be one ETag from this API (for example \"3\") or *");
        if values.next().is_some() {
            return Err(invalid());
        }
        let raw = value.to_str().map_err(|_| invalid())?.trim();
        if raw == "*" {
            return Ok(Self(None));
        }
        // Weak tags never match under If-Match's strong comparison (RFC 9110 §13.1.1).
        if raw.starts_with("W/") {
            return Err(ApiError::new(StatusCode::PRECONDITION_FAILED, "Precondition Failed", "If-Match needs a strong ETag"));
        }
        let version = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')).and_then(|v| v.parse::<u64>().ok()).ok_or_else(invalid)?;
        Ok(Self(Some(version)))
    }
}

/// What a refusal of an oversized body says, on every route.
pub fn body_limit_detail() -> String {
    format!("the request body must be at most {MAX_BODY_BYTES} bytes")
}

/// Reads a body of at most [`MAX_BODY_BYTES`].
pub async fn read_body(request: Request) -> Result<(Parts, axum::body::Bytes), ApiError> {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "Content Too Large", body_limit_detail()))?;
    Ok((parts, bytes))
}

pub fn content_type(parts: &Parts) -> Option<String> {
    let raw = parts.headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(raw.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
}

/// A JSON object body, parsed strictly (unknown fields are refused by the target type).
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, _: &S) -> Result<Self, Self::Rejection> {
        let (parts, bytes) = read_body(request).await?;
        match content_type(&parts).as_deref() {
            Some("application/json") => {}
            _ => {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "Unsupported Media Type",
                    "the request body must be JSON with Content-Type: application/json",
                ));
            }
        }
        if bytes.is_empty() {
            return Err(ApiError::bad_request("a JSON request body is required"));
        }
        // Every body of this API is an object; serde would also read a struct from an array
        // of its fields in order, which the contract does not allow.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::bad_request("the request body must be a JSON object"));
        }
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))
    }
}

/// A JSON body that may be left out altogether (an empty body reads as `T::default()`); one
/// that is sent is parsed exactly as [`JsonBody`] parses it.
pub struct OptionalJsonBody<T>(pub T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (parts, bytes) = read_body(request).await?;
        if bytes.is_empty() {
            return Ok(Self(T::default()));
        }
        let request = Request::from_parts(parts, axum::body::Body::from(bytes));
        JsonBody::<T>::from_request(request, state).await.map(|JsonBody(v)| Self(v))
    }
}

/// Query parameters as pairs; repeated or unknown names are the route's to judge.
pub struct Query(pub Vec<(String, String)>);

impl Query {
    pub fn get(&self, name: &str) -> Result<Option<&str>, ApiError> {
        let mut found = self.0.iter().filter(|(k, _)| k == name);
        let first = found.next().map(|(_, v)| v.as_str());
        if found.next().is_some() {
            return Err(ApiError::bad_request(format!("query parameter '{name}' is repeated")));
        }
        Ok(first)
    }

    /// A parameter that is a time, in RFC 3339.
    pub fn time(&self, name: &str) -> Result<Option<chrono::DateTime<chrono::Utc>>, ApiError> {
        self.get(name)?
            .map(|raw| {
                chrono::DateTime::parse_from_rfc3339(raw)
                    .map(|t| t.to_utc())
                    .map_err(|_| ApiError::bad_request(format!("{name} must be an RFC 3339 time, such as 2026-11-30T12:00:00Z")))
            })
            .transpose()
    }

    pub fn only(&self, allowed: &[&str]) -> Result<(), ApiError> {
        match self.0.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
            Some((k, _)) => Err(ApiError::bad_request(format!("unknown query parameter '{k}'; allowed: {}", allowed.join(", ")))),
            None => Ok(()),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Query {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let raw = parts.uri.query().unwrap_or_default();
        Ok(Query(form_urlencoded::parse(raw.as_bytes()).into_owned().collect()))
    }
}

/// Parses an id from the path; a malformed one is a 400 naming what is wrong.
pub fn parse_path<T: FromStr<Err = IdError>>(raw: &str) -> Result<T, ApiError> {
    raw.parse().map_err(|e: IdError| ApiError::bad_request(e.0))
}

/// For PATCH fields where `null` means "clear" and absence means "leave alone".
pub fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

use serde::Deserialize;

/// Path parameters, with a malformed path (bad percent-encoding, say) answered as a problem.
pub struct PathParams<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for PathParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| PathParams(v))
            .map_err(|e| ApiError::bad_request(e.body_text()))
    }
}
