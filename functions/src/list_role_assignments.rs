//! `GET /iam/api-keys/{principalId}/role-assignments`: the principal's role assignments.

use axum::Json;
use axum::extract::State;
use axum::routing::{MethodFilter, MethodRouter, on};
use iam_api::views::ListResponse;
use iam_api::{ApiError, AppState, Authenticated, PathParams, parse_path};
use iam_shared::model::RoleAssignment;

pub fn endpoint(method: MethodFilter) -> MethodRouter<AppState> {
    on(method, list_role_assignments)
}

async fn list_role_assignments(
    State(iam): State<AppState>,
    Authenticated(caller): Authenticated,
    PathParams(principal_id): PathParams<String>,
) -> Result<Json<ListResponse<RoleAssignment>>, ApiError> {
    let id = parse_path(&principal_id)?;
    Ok(Json(ListResponse { items: iam.list_role_assignments(&caller, &id).await?, next_cursor: None }))
}
