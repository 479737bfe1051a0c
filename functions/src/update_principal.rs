//! `PATCH /iam/api-keys/{principalId}`: change display name, status or expiry.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{MethodFilter, MethodRouter, on};
use chrono::{DateTime, Utc};
use iam_api::{ApiError, AppState, Authenticated, IfMatch, JsonBody, PathParams, etag, nullable, parse_path};
use iam_shared::model::{PrincipalChange, PrincipalStatus};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UpdatePrincipal {
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    status: Option<PrincipalStatus>,
    /// `null` clears the expiry.
    #[serde(default, deserialize_with = "nullable")]
    expires_at: Option<Option<DateTime<Utc>>>,
}

pub fn endpoint(method: MethodFilter) -> MethodRouter<AppState> {
    on(method, update_principal)
}

async fn update_principal(
    State(iam): State<AppState>,
    Authenticated(caller): Authenticated,
    PathParams(principal_id): PathParams<String>,
    IfMatch(if_match): IfMatch,
    JsonBody(body): JsonBody<UpdatePrincipal>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_path(&principal_id)?;
    let change = PrincipalChange { display_name: body.display_name, status: body.status, expires_at: body.expires_at };
    let principal = iam.update_principal(&caller, &id, change, if_match).await?;
    Ok(([(header::ETAG, etag(principal.version))], Json(principal)))
}
