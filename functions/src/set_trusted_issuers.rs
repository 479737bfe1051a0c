//! `PUT /iam/trusted-issuers`: replaces the organisation's trusted issuers whole (over the
//! version in If-Match, when given). Only these may be named in a trust policy; an issuer taken
//! off stops every policy naming it at once.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{MethodFilter, MethodRouter, on};
use iam_api::{ApiError, AppState, Authenticated, IfMatch, JsonBody, etag};
use iam_shared::federation::trust::TrustedIssuer;
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
    IfMatch(if_match): IfMatch,
    JsonBody(body): JsonBody<SetTrustedIssuers>,
) -> Result<impl IntoResponse, ApiError> {
    let issuers = body.issuers.into_iter().map(|i| TrustedIssuer { issuer: i.issuer, description: i.description }).collect();
    let set = iam.set_trusted_issuers(&caller, issuers, if_match).await?;
    Ok(([(header::ETAG, etag(set.version))], Json(set)))
}
