//! `PATCH /iam/webhooks/{webhookId}`: change an endpoint's URL, description, event types, or
//! turn it off and on.

use axum::Json;
use axum::extract::State;
use axum::routing::{MethodFilter, MethodRouter, on};
use iam_api::{ApiError, AppState, Authenticated, JsonBody, PathParams, parse_path};
use iam_shared::webhooks::Webhook;

use crate::create_webhook::WebhookBody;

pub fn endpoint(method: MethodFilter) -> MethodRouter<AppState> {
    on(method, update_webhook)
}

async fn update_webhook(
    State(iam): State<AppState>,
    Authenticated(caller): Authenticated,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody<WebhookBody>,
) -> Result<Json<Webhook>, ApiError> {
    Ok(Json(iam.update_webhook(&caller, &parse_path(&id)?, body.into()).await?))
}
