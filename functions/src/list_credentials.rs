//! `GET /iam/api-keys/{principalId}/credentials`: active credentials, or all with `?include=all`;
//! `?unusedForDays=N` keeps those unused for N days.

use axum::Json;
use axum::extract::State;
use axum::routing::{MethodFilter, MethodRouter, on};
use iam_api::views::{CredentialView, ListResponse};
use iam_api::{ApiError, AppState, Authenticated, PathParams, Query, parse_path};
use iam_shared::model;

pub fn endpoint(method: MethodFilter) -> MethodRouter<AppState> {
    on(method, list_credentials)
}

async fn list_credentials(
    State(iam): State<AppState>,
    Authenticated(caller): Authenticated,
    PathParams(principal_id): PathParams<String>,
    query: Query,
) -> Result<Json<ListResponse<CredentialView>>, ApiError> {
    query.only(&["include", "unusedForDays"])?;
    let include_all = match query.get("include")? {
        None | Some("active") => false,
        Some("all") => true,
        Some(_) => return Err(ApiError::bad_request("include must be 'active' or 'all'")),
    };
    let unused_for = match query.get("unusedForDays")? {
        None => None,
        Some(raw) => match raw.parse::<i64>() {
            Ok(days @ 1..=3650) => Some(chrono::Duration::days(days)),
            _ => return Err(ApiError::bad_request("unusedForDays must be a whole number of days from 1 to 3650")),
        },
    };
    let id = parse_path(&principal_id)?;
    let now = model::now();
    let items = iam
        .list_credentials(&caller, &id, include_all)
        .await?
        .iter()
        .filter(|c| unused_for.is_none_or(|idle| c.last_used_at.unwrap_or(c.created_at) <= now - idle))
        .map(|c| CredentialView::new(c, now))
        .collect();
    Ok(Json(ListResponse { items, next_cursor: None }))
}
