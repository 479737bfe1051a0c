//! `POST /iam/webhooks/{webhookId}/rotate-secret`: a new signing secret, shown this once; the
//! previous one keeps signing beside it for a day, so the receiver can switch without a gap.

use axum::Json;
use axum::extract::State;
use axum::routing::{MethodFilter, MethodRouter, on};
use iam_api::{ApiError, AppState, Authenticated, PathParams, parse_path};

use crate::create_webhook::WithSecret;

pub fn endpoint(method: MethodFilter) -> MethodRouter<AppState> {
    on(method, rotate_webhook_secret)
}

async fn rotate_webhook_secret(
    State(iam): State<AppState>,
    Authenticated(caller): Authenticated,
    PathParams(id): PathParams<String>,
) -> Result<Json<WithSecret>, ApiError> {
    Ok(Json(iam.rotate_webhook_secret(&caller, &parse_path(&id)?).await?.into()))
}
