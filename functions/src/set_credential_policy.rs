//! `PUT /iam/policy`: replaces the organisation's credential policy whole (a field left out
//! takes its default: no limit, expiry optional, creation allowed).

use axum::Json;
use axum::extract::State;
use axum::routing::{MethodFilter, MethodRouter, on};
use iam_api::{ApiError, AppState, Authenticated, JsonBody, nullable};
use iam_shared::credential_policy::CredentialPolicy;
use iam_shared::credential_policy::setting::PolicyRequest;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SetCredentialPolicy {
    #[serde(default, deserialize_with = "nullable")]
    max_lifetime_days: Option<Option<u32>>,
    /// Flags are booleans or left out (their default); `null` is refused, not read as absent.
    #[serde(default)]
    expiry_required: bool,
    #[serde(default, deserialize_with = "nullable")]
    max_idle_days: Option<Option<u32>>,
    #[serde(default = "creation_allowed")]
    allow_credential_creation: bool,
}

fn creation_allowed() -> bool {
    CredentialPolicy::default().allow_credential_creation
}

pub fn endpoint(method: MethodFilter) -> MethodRouter<AppState> {
    on(method, set_credential_policy)
}

async fn set_credential_policy(
    State(iam): State<AppState>,
    Authenticated(caller): Authenticated,
    JsonBody(body): JsonBody<SetCredentialPolicy>,
) -> Result<Json<CredentialPolicy>, ApiError> {
    let request = PolicyRequest {
        max_lifetime_days: body.max_lifetime_days.flatten(),
        expiry_required: Some(body.expiry_required),
        max_idle_days: body.max_idle_days.flatten(),
        allow_credential_creation: Some(body.allow_credential_creation),
    };
    Ok(Json(iam.set_credential_policy(&caller, request).await?))
}
