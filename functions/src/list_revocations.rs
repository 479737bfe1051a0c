//! `GET /iam/revocations`: the organisation's revocations and principal status changes in
//! commit order, for downstream services that refuse revoked keys' tokens within seconds.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use iam_api::{ApiError, AppState, Authenticated, Query};
use iam_shared::audit::AuditCursor;
use iam_shared::revocations::Revocation;

pub fn endpoint(method: MethodFilter) -> MethodRouter<AppState> {
    on(method, list_revocations)
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Feed {
    items: Vec<Revocation>,
    next_cursor: Option<String>,
    has_more: bool,
}

async fn list_revocations(State(iam): State<AppState>, Authenticated(caller): Authenticated, query: Query) -> Result<Response, ApiError> {
    query.only(&["cursor", "since"])?;
    let after = match query.get("cursor")? {
        None | Some("") => None,
        Some(raw) => Some(AuditCursor::decode(raw)?),
    };
    let since = query.time("since")?;
    let page = iam.revocations(&caller, after, since).await?;
    let feed = Feed { items: page.items, next_cursor: page.next.map(|c| c.encode()), has_more: page.has_more };
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(feed)).into_response())
}
