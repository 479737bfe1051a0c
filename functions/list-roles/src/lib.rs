//! `GET /iam/roles`: roles available to the organisation, built-in and its own.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use iam_api::views::ListResponse;
use iam_api::{ApiError, AppState, Authenticated};
use iam_shared::model::Role;

pub fn routes() -> Router<AppState> {
    Router::new().route("/iam/roles", get(list_roles))
}

async fn list_roles(State(iam): State<AppState>, Authenticated(caller): Authenticated) -> Result<Json<ListResponse<Role>>, ApiError> {
    Ok(Json(ListResponse { items: iam.list_roles(&caller).await?, next_cursor: None }))
}
