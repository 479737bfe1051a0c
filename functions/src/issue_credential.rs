//! `POST /iam/api-keys/{principalId}/credentials`: issue an API key, shown once.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use chrono::{DateTime, Utc};
use iam_api::views::CredentialView;
use iam_api::{ApiError, AppState, Authenticated, IdempotencyKeyHeader, JsonBody, PathParams, parse_path};
use iam_shared::model::{self, NewCredential};
use iam_shared::restrictions::Restrictions;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct IssueCredential {
    name: String,
    #[serde(default)]
    expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    restrictions: Restrictions,
    /// Whether a token minted by this credential may rotate it without iam:credentials:write.
    #[serde(default)]
    self_rotation: bool,
}

impl From<IssueCredential> for NewCredential {
    fn from(body: IssueCredential) -> Self {
        NewCredential { name: body.name, expires_at: body.expires_at, restrictions: body.restrictions, self_rotation: body.self_rotation }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Issued<'a> {
    credential: CredentialView,
    api_key: &'a str,
}

pub fn endpoint(method: MethodFilter) -> MethodRouter<AppState> {
    on(method, issue_credential)
}

async fn issue_credential(
    State(iam): State<AppState>,
    Authenticated(caller): Authenticated,
    PathParams(principal_id): PathParams<String>,
    IdempotencyKeyHeader(idempotency): IdempotencyKeyHeader,
    JsonBody(body): JsonBody<IssueCredential>,
) -> Result<Response, ApiError> {
    let id = parse_path(&principal_id)?;
    let (credential, key) = iam.issue_credential(&caller, &id, body.into(), idempotency.as_ref()).await?;
    let full_key = key.to_secret_string();
    let body = Issued { credential: CredentialView::new(&credential, model::now()), api_key: full_key.expose_secret() };
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    // The key is shown once: no cache anywhere may keep it.
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response.headers_mut().insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(response)
}
