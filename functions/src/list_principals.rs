//! `GET /iam/api-keys`: the organisation's principals, paginated, each with its number of
//! active credentials.

use axum::Json;
use axum::extract::State;
use axum::routing::{MethodFilter, MethodRouter, on};
use iam_api::views::ListResponse;
use iam_api::{ApiError, AppState, Authenticated, Query};
use iam_shared::ids::PrincipalId;
use iam_shared::service::PrincipalSummary;

pub const DEFAULT_PAGE_SIZE: usize = 50;
pub const MAX_PAGE_SIZE: usize = 100;

pub fn endpoint(method: MethodFilter) -> MethodRouter<AppState> {
    on(method, list_principals)
}

async fn list_principals(
    State(iam): State<AppState>,
    Authenticated(caller): Authenticated,
    query: Query,
) -> Result<Json<ListResponse<PrincipalSummary>>, ApiError> {
    query.only(&["limit", "cursor"])?;
    let limit = match query.get("limit")? {
        None => DEFAULT_PAGE_SIZE,
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_PAGE_SIZE).contains(n))
            .ok_or_else(|| ApiError::bad_request(format!("limit must be an integer from 1 to {MAX_PAGE_SIZE}")))?,
    };
    let cursor = match query.get("cursor")? {
        None | Some("") => None,
        Some(raw) => Some(PrincipalId::parse(raw).map_err(|_| ApiError::bad_request("cursor is not one this service issued"))?),
    };
    let page = iam.list_principals(&caller, limit, cursor.as_ref()).await?;
    Ok(Json(ListResponse { items: page.items, next_cursor: page.next.map(|id| id.to_string()) }))
}
