//! `GET /iam/api-keys/{principalId}`: one principal, with the caller's allowed actions on it.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{MethodFilter, MethodRouter, on};
use iam_api::{ApiError, AppState, Authenticated, PathParams, etag, parse_path};

pub fn endpoint(method: MethodFilter) -> MethodRouter<AppState> {
    on(method, get_principal)
}

async fn get_principal(
    State(iam): State<AppState>,
    Authenticated(caller): Authenticated,
    PathParams(principal_id): PathParams<String>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_path(&principal_id)?;
    let detail = iam.get_principal(&caller, &id).await?;
    Ok(([(header::ETAG, etag(detail.summary.principal.version))], Json(detail)))
}
