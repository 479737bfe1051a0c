//! `GET /iam/webhooks/{webhookId}/deliveries`: the endpoint's latest deliveries, newest first,
//! each with its state and its last attempts (status or error, and how long each took).

use axum::Json;
use axum::extract::State;
use axum::routing::{MethodFilter, MethodRouter, on};
use iam_api::views::ListResponse;
use iam_api::{ApiError, AppState, Authenticated, PathParams, Query, parse_path};
use iam_shared::webhooks::delivery::Delivery;
use iam_shared::webhooks::manage::MAX_DELIVERIES_LISTED;

pub fn endpoint(method: MethodFilter) -> MethodRouter<AppState> {
    on(method, list_webhook_deliveries)
}

async fn list_webhook_deliveries(
    State(iam): State<AppState>,
    Authenticated(caller): Authenticated,
    PathParams(id): PathParams<String>,
    query: Query,
) -> Result<Json<ListResponse<Delivery>>, ApiError> {
    query.only(&["limit"])?;
    let limit = match query.get("limit")? {
        None => 20,
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_DELIVERIES_LISTED).contains(n))
            .ok_or_else(|| ApiError::bad_request(format!("limit must be an integer from 1 to {MAX_DELIVERIES_LISTED}")))?,
    };
    Ok(Json(ListResponse { items: iam.list_deliveries(&caller, &parse_path(&id)?, limit).await?, next_cursor: None }))
}
