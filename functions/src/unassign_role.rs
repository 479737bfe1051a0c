//! `DELETE /iam/api-keys/{principalId}/role-assignments/{roleId}`: remove a role assignment.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{MethodFilter, MethodRouter, on};
use iam_api::{ApiError, AppState, Authenticated, PathParams, parse_path};

pub fn endpoint(method: MethodFilter) -> MethodRouter<AppState> {
    on(method, unassign_role)
}

async fn unassign_role(
    State(iam): State<AppState>,
    Authenticated(caller): Authenticated,
    PathParams((principal_id, role_id)): PathParams<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let id = parse_path(&principal_id)?;
    let role_id = parse_path(&role_id)?;
    iam.unassign_role(&caller, &id, &role_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
