//! `PATCH /iam/api-keys/{principalId}`: change display name, status or expiry.

use axum::extract::State;
use axum::routing::patch;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use iam_api::{ApiError, AppState, Authenticated, JsonBody, PathParams, nullable, parse_path};
use iam_shared::model::{Principal, PrincipalChange, PrincipalStatus};
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

pub fn routes() -> Router<AppState> {
    Router::new().route("/iam/api-keys/{principal_id}", patch(update_principal))
}

async fn update_principal(
    State(iam): State<AppState>,
    Authenticated(caller): Authenticated,
    PathParams(principal_id): PathParams<String>,
    JsonBody(body): JsonBody<UpdatePrincipal>,
) -> Result<Json<Principal>, ApiError> {
    let id = parse_path(&principal_id)?;
    let change = PrincipalChange { display_name: body.display_name, status: body.status, expires_at: body.expires_at };
    Ok(Json(iam.update_principal(&caller, &id, change).await?))
}
