//! `POST /iam/api-keys/{principalId}/trust-policies`: let a service account be assumed by the
//! workloads an external issuer vouches for (an issuer the organisation trusts, the audience,
//! the subject or a pattern, and the claims that must hold).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{MethodFilter, MethodRouter, on};
use iam_api::{ApiError, AppState, Authenticated, JsonBody, PathParams, parse_path};
use iam_shared::federation::manage::NewTrustPolicy;
use iam_shared::federation::trust::TrustPolicyEntry;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AddTrustPolicy {
    issuer: String,
    audience: String,
    subject: String,
    #[serde(default)]
    required_claims: BTreeMap<String, String>,
}

pub fn endpoint(method: MethodFilter) -> MethodRouter<AppState> {
    on(method, add_trust_policy)
}

async fn add_trust_policy(
    State(iam): State<AppState>,
    Authenticated(caller): Authenticated,
    PathParams(principal_id): PathParams<String>,
    JsonBody(body): JsonBody<AddTrustPolicy>,
) -> Result<(StatusCode, Json<TrustPolicyEntry>), ApiError> {
    let asked =
        NewTrustPolicy { issuer: body.issuer, audience: body.audience, subject: body.subject, required_claims: body.required_claims };
    let entry = iam.add_trust_policy(&caller, &parse_path(&principal_id)?, asked).await?;
    Ok((StatusCode::CREATED, Json(entry)))
}
