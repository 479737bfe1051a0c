//! `POST /iam/api-keys/{principalId}/credentials/{keyId}/rotate`: replace a credential with a
//! successor whose key is shown once, the old one working on for a grace period.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use iam_api::views::CredentialView;
use iam_api::{ApiError, AppState, Authenticated, IdempotencyKeyHeader, OptionalJsonBody, PathParams, parse_path};
use iam_shared::model::{self, Rotation};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RotateCredential {
    #[serde(default)]
    grace_period_seconds: Option<u32>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Rotated<'a> {
    credential: CredentialView,
    api_key: &'a str,
    rotated: CredentialView,
}

pub fn endpoint(method: MethodFilter) -> MethodRouter<AppState> {
    on(method, rotate_credential)
}

async fn rotate_credential(
    State(iam): State<AppState>,
    Authenticated(caller): Authenticated,
    PathParams((principal_id, key_id)): PathParams<(String, String)>,
    IdempotencyKeyHeader(idempotency): IdempotencyKeyHeader,
    OptionalJsonBody(body): OptionalJsonBody<RotateCredential>,
) -> Result<Response, ApiError> {
    let id = parse_path(&principal_id)?;
    let key_id = parse_path(&key_id)?;
    let rotation = Rotation::new(body.grace_period_seconds, body.name)?;
    let rotated = iam.rotate_credential(&caller, &id, &key_id, rotation, idempotency.as_ref()).await?;
    let now = model::now();
    let full_key = rotated.key.to_secret_string();
    let body = Rotated {
        credential: CredentialView::new(&rotated.successor, now),
        api_key: full_key.expose_secret(),
        rotated: CredentialView::new(&rotated.predecessor, now),
    };
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    // The key is shown once: no cache anywhere may keep it.
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response.headers_mut().insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(response)
}
