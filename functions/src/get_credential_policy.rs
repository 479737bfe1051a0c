//! `GET /iam/policy`: the organisation's credential policy (the default when none was set).

use axum::Json;
use axum::extract::State;
use axum::routing::{MethodFilter, MethodRouter, on};
use iam_api::{ApiError, AppState, Authenticated};
use iam_shared::credential_policy::CredentialPolicy;

pub fn endpoint(method: MethodFilter) -> MethodRouter<AppState> {
    on(method, get_credential_policy)
}

async fn get_credential_policy(
    State(iam): State<AppState>,
    Authenticated(caller): Authenticated,
) -> Result<Json<CredentialPolicy>, ApiError> {
    Ok(Json(iam.credential_policy(&caller).await?))
}
