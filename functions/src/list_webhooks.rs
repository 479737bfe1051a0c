//! `GET /iam/webhooks`: the organisation's webhook endpoints (never their secrets).

use axum::Json;
use axum::extract::State;
use axum::routing::{MethodFilter, MethodRouter, on};
use iam_api::views::ListResponse;
use iam_api::{ApiError, AppState, Authenticated};
use iam_shared::webhooks::Webhook;

pub fn endpoint(method: MethodFilter) -> MethodRouter<AppState> {
    on(method, list_webhooks)
}

async fn list_webhooks(State(iam): State<AppState>, Authenticated(caller): Authenticated) -> Result<Json<ListResponse<Webhook>>, ApiError> {
    Ok(Json(ListResponse { items: iam.list_webhooks(&caller).await?, next_cursor: None }))
}
