//! `GET /iam/.well-known/jwks.json`: the public signing keys.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{MethodFilter, MethodRouter, on};
use iam_api::AppState;

/// Verifiers may cache for five minutes; a new key is published before it signs (see README).
pub const CACHE_CONTROL: &str = "public, max-age=300";

pub fn endpoint(method: MethodFilter) -> MethodRouter<AppState> {
    on(method, jwks)
}

async fn jwks(State(iam): State<AppState>) -> impl IntoResponse {
    ([(header::CACHE_CONTROL, CACHE_CONTROL)], Json(iam.tokens.current().await.jwks()))
}
