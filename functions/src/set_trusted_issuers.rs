//! `PUT /iam/trusted-issuers`: replaces the organisation's trusted issuers whole (over the
//! version in If-Match, when given). Only these may be named in a trust policy; an issuer taken
//! off stops every policy naming it at once.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{MethodFilter, MethodRouter, on};
use iam_api::{ApiError, AppState, Authenticated, IfMatch, JsonBody, etag, nullable};
use iam_shared::federation::trust::{SignInProvider, TrustedIssuer};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SetTrustedIssuers {
    issuers: Vec<IssuerBody>,
    /// Left out: unchanged; `null`: no provider.
    #[serde(default, deserialize_with = "nullable")]
    sign_in: Option<Option<SignInBody>>,
}

/// The one of the issuers people sign in to the console with, and the console's client id there.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SignInBody {
    issuer: String,
    client_id: String,
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
    let sign_in = body.sign_in.map(|s| s.map(|s| SignInProvider { issuer: s.issuer, client_id: s.client_id }));
    let set = iam.set_trusted_issuers(&caller, issuers, sign_in, if_match).await?;
    Ok(([(header::ETAG, etag(set.version))], Json(set)))
}
