//! `GET /iam/api-keys/{principalId}/trust-policies`: a service account's trust policies, each
//! with its use, and the `client_id` its workloads name at the token endpoint.

use axum::Json;
use axum::extract::State;
use axum::routing::{MethodFilter, MethodRouter, on};
use iam_api::{ApiError, AppState, Authenticated, PathParams, parse_path};
use iam_shared::federation::manage::TrustPolicies;

pub fn endpoint(method: MethodFilter) -> MethodRouter<AppState> {
    on(method, list_trust_policies)
}

async fn list_trust_policies(
    State(iam): State<AppState>,
    Authenticated(caller): Authenticated,
    PathParams(principal_id): PathParams<String>,
) -> Result<Json<TrustPolicies>, ApiError> {
    Ok(Json(iam.trust_policies(&caller, &parse_path(&principal_id)?).await?))
}
