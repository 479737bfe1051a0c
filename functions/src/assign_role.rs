//! `PUT /iam/api-keys/{principalId}/role-assignments/{roleId}`: assign a role (idempotent).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{MethodFilter, MethodRouter, on};
use iam_api::{ApiError, AppState, Authenticated, PathParams, parse_path};

pub fn endpoint(method: MethodFilter) -> MethodRouter<AppState> {
    on(method, assign_role)
}

async fn assign_role(
    State(iam): State<AppState>,
    Authenticated(caller): Authenticated,
    PathParams((principal_id, role_id)): PathParams<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_path(&principal_id)?;
    let role_id = parse_path(&role_id)?;
    let (assignment, created) = iam.assign_role(&caller, &id, &role_id).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(assignment)))
}
