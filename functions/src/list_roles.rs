//! `GET /iam/roles`: roles available to the organisation, built-in and its own.

use axum::Json;
use axum::extract::State;
use axum::routing::{MethodFilter, MethodRouter, on};
use iam_api::views::ListResponse;
use iam_api::{ApiError, AppState, Authenticated};
use iam_shared::model::Role;

pub fn endpoint(method: MethodFilter) -> MethodRouter<AppState> {
    on(method, list_roles)
}

async fn list_roles(State(iam): State<AppState>, Authenticated(caller): Authenticated) -> Result<Json<ListResponse<Role>>, ApiError> {
    Ok(Json(ListResponse { items: iam.list_roles(&caller).await?, next_cursor: None }))
}
