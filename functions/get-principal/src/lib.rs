//! `GET /iam/api-keys/{principalId}`: one principal.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use iam_api::{ApiError, AppState, Authenticated, PathParams, parse_path};
use iam_shared::model::Principal;

pub fn routes() -> Router<AppState> {
    Router::new().route("/iam/api-keys/{principal_id}", get(get_principal))
}

async fn get_principal(
    State(iam): State<AppState>,
    Authenticated(caller): Authenticated,
    PathParams(principal_id): PathParams<String>,
) -> Result<Json<Principal>, ApiError> {
    let id = parse_path(&principal_id)?;
    Ok(Json(iam.get_principal(&caller, &id).await?))
}
