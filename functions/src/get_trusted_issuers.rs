//! `GET /iam/trusted-issuers`: the OIDC issuers the organisation trusts (none until an
//! administrator sets them), with their version as the ETag a change may name in If-Match.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{MethodFilter, MethodRouter, on};
use iam_api::{ApiError, AppState, Authenticated, etag};

pub fn endpoint(method: MethodFilter) -> MethodRouter<AppState> {
    on(method, get_trusted_issuers)
}

async fn get_trusted_issuers(State(iam): State<AppState>, Authenticated(caller): Authenticated) -> Result<impl IntoResponse, ApiError> {
    let issuers = iam.trusted_issuers(&caller).await?;
    Ok(([(header::ETAG, etag(issuers.version))], Json(issuers)))
}
