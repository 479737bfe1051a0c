//! `DELETE /iam/webhooks/{webhookId}`: remove an endpoint; nothing more is sent to it.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{MethodFilter, MethodRouter, on};
use iam_api::{ApiError, AppState, Authenticated, PathParams, parse_path};

pub fn endpoint(method: MethodFilter) -> MethodRouter<AppState> {
    on(method, delete_webhook)
}

async fn delete_webhook(
    State(iam): State<AppState>,
    Authenticated(caller): Authenticated,
    PathParams(id): PathParams<String>,
) -> Result<StatusCode, ApiError> {
    iam.delete_webhook(&caller, &parse_path(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}
