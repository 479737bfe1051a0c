//! `GET /iam/trusted-issuers`: the OIDC issuers the organisation trusts (none until an
//! administrator sets them).

use axum::Json;
use axum::extract::State;
use axum::routing::{MethodFilter, MethodRouter, on};
use iam_api::{ApiError, AppState, Authenticated};
use iam_shared::federation::trust::TrustedIssuers;

pub fn endpoint(method: MethodFilter) -> MethodRouter<AppState> {
    on(method, get_trusted_issuers)
}

async fn get_trusted_issuers(State(iam): State<AppState>, Authenticated(caller): Authenticated) -> Result<Json<TrustedIssuers>, ApiError> {
    Ok(Json(iam.trusted_issuers(&caller).await?))
}
