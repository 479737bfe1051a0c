//! `GET /iam/api-keys/{principalId}/credentials`: active credentials, or all with `?include=all`.

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
    query.only(&["include"])?;
    let include_all = match query.get("include")? {
        None | Some("active") => false,
        Some("all") => true,
        Some(_) => return Err(ApiError::bad_request("include must be 'active' or 'all'")),
    };
    let id = parse_path(&principal_id)?;
    let now = model::now();
    let items = iam.list_credentials(&caller, &id, include_all).await?.iter().map(|c| CredentialView::new(c, now)).collect();
    Ok(Json(ListResponse { items, next_cursor: None }))
}
