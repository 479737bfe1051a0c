//! `DELETE /iam/api-keys/{principalId}/trust-policies/{trustPolicyId}`: the policy's workloads
//! can no longer assume the service account (tokens already issued live out their minutes).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{MethodFilter, MethodRouter, on};
use iam_api::{ApiError, AppState, Authenticated, PathParams, parse_path};

pub fn endpoint(method: MethodFilter) -> MethodRouter<AppState> {
    on(method, remove_trust_policy)
}

async fn remove_trust_policy(
    State(iam): State<AppState>,
    Authenticated(caller): Authenticated,
    PathParams((principal_id, policy_id)): PathParams<(String, String)>,
) -> Result<StatusCode, ApiError> {
    iam.remove_trust_policy(&caller, &parse_path(&principal_id)?, &parse_path(&policy_id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}
