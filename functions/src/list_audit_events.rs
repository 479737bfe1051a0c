//! `GET /iam/audit-events`: the organisation's audit trail, newest first, filtered and paged;
//! as JSON lines (`Accept: application/x-ndjson`) for a SIEM, the next page in a `Link` header.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use iam_api::views::ListResponse;
use iam_api::{ApiError, AppState, Authenticated, Query};
use iam_shared::audit::query::{DEFAULT_PAGE, MAX_PAGE};
use iam_shared::audit::{AuditCursor, AuditOutcome, AuditQuery};
use iam_shared::ids::PrincipalId;
use iam_shared::model::Actor;

pub const JSON_LINES: &str = "application/x-ndjson";

pub fn endpoint(method: MethodFilter) -> MethodRouter<AppState> {
    on(method, list_audit_events)
}

async fn list_audit_events(
    State(iam): State<AppState>,
    Authenticated(caller): Authenticated,
    headers: HeaderMap,
    query: Query,
) -> Result<Response, ApiError> {
    query.only(&["limit", "cursor", "principalId", "actor", "action", "outcome", "from", "to", "order"])?;
    let limit = match query.get("limit")? {
        None => DEFAULT_PAGE,
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| ApiError::bad_request(format!("limit must be an integer from 1 to {MAX_PAGE}")))?,
    };
    let principal_id = query
        .get("principalId")?
        .map(|raw| PrincipalId::parse(raw).map_err(|_| ApiError::bad_request("principalId is not a principal id")))
        .transpose()?;
    let outcome = query
        .get("outcome")?
        .map(|raw| AuditOutcome::parse(raw).ok_or_else(|| ApiError::bad_request("outcome must be success or refused")))
        .transpose()?;
    let oldest_first = match query.get("order")? {
        None | Some("newest") => false,
        Some("oldest") => true,
        Some(_) => return Err(ApiError::bad_request("order must be newest or oldest")),
    };
    let after = match query.get("cursor")? {
        None | Some("") => None,
        Some(raw) => Some(AuditCursor::decode(raw)?),
    };
    let request = AuditQuery {
        principal_id,
        actor: query.get("actor")?.filter(|a| !a.is_empty()).map(|a| Actor(a.to_owned())),
        action: query.get("action")?.filter(|a| !a.is_empty()).map(str::to_owned),
        outcome,
        from: query.time("from")?,
        to: query.time("to")?,
        limit,
        after,
        oldest_first,
    };
    let page = iam.audit_events(&caller, &request).await?;
    let next_cursor = page.next.map(|c| c.encode());
    let wants_lines = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains(JSON_LINES));
    if !wants_lines {
        return Ok(Json(ListResponse { items: page.items, next_cursor }).into_response());
    }
    let mut body = String::new();
    for record in &page.items {
        let line = serde_json::to_string(record).map_err(|e| {
            tracing::error!(error = %e, "an audit record could not be written as JSON");
            ApiError::unavailable()
        })?;
        body.push_str(&line);
        body.push('\n');
    }
    let mut response = ([(header::CONTENT_TYPE, JSON_LINES)], body).into_response();
    if let Some(cursor) = next_cursor {
        // The same query, continued: every other parameter as the client sent it.
        let mut next = form_urlencoded::Serializer::new(String::new());
        for (name, value) in query.0.iter().filter(|(name, _)| name != "cursor") {
            next.append_pair(name, value);
        }
        next.append_pair("cursor", &cursor);
        let link = format!("</iam/audit-events?{}>; rel=\"next\"", next.finish());
        if let Ok(value) = HeaderValue::from_str(&link) {
            response.headers_mut().insert(header::LINK, value);
        }
    }
    Ok(response)
}
