//! `POST /iam/api-keys/{principalId}/credentials/{keyId}/revoke`: revoke one credential (idempotent).

use axum::Json;
use axum::extract::State;
use axum::routing::{MethodFilter, MethodRouter, on};
use iam_api::views::CredentialView;
use iam_api::{ApiError, AppState, Authenticated, PathParams, parse_path};
use iam_shared::model;

pub fn endpoint(method: MethodFilter) -> MethodRouter<AppState> {
    on(method, revoke_credential)
}

async fn revoke_credential(
    State(iam): State<AppState>,
    Authenticated(caller): Authenticated,
    PathParams((principal_id, key_id)): PathParams<(String, String)>,
) -> Result<Json<CredentialView>, ApiError> {
    let id = parse_path(&principal_id)?;
    let key_id = parse_path(&key_id)?;
    let credential = iam.revoke_credential(&caller, &id, &key_id).await?;
    Ok(Json(CredentialView::new(&credential, model::now())))
}
