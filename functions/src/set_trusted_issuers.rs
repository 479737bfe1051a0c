//! `PUT /iam/trusted-issuers`: replaces the organisation's trusted issuers whole. Only these
//! may be named in a trust policy; an issuer taken off stops every policy naming it at once.

use axum::Json;
use axum::extract::State;
use axum::routing::{MethodFilter, MethodRouter, on};
use iam_api::{ApiError, AppState, Authenticated, JsonBody};
use iam_shared::federation::trust::{TrustedIssuer, TrustedIssuers};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SetTrustedIssuers {
    issuers: Vec<IssuerBody>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct IssuerBody {
    issuer: String,
    #[serde(default)]
    description: Option<String>,
}

pub fn endpoint(method: MethodFilter) -> MethodRouter<AppState> {
    on(method, set_trusted_issuers)
}

async fn set_trusted_issuers(
    State(iam): State<AppState>,
    Authenticated(caller): Authenticated,
    JsonBody(body): JsonBody<SetTrustedIssuers>,
) -> Result<Json<TrustedIssuers>, ApiError> {
    let issuers = body.issuers.into_iter().map(|i| TrustedIssuer { issuer: i.issuer, description: i.description }).collect();
    Ok(Json(iam.set_trusted_issuers(&caller, issuers).await?))
}
