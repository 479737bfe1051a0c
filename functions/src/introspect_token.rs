//! `POST /iam/auth/introspect`: token introspection (RFC 7662). A form body `token=…` (and an
//! optional `token_type_hint`, which is ignored: only access tokens exist here); the answer is
//! `{"active": false}`, or `active: true` with the token's claims and its current scope.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use iam_api::extract::{content_type, read_body};
use iam_api::{ApiError, AppState, Authenticated};
use iam_shared::service::PERM_TOKENS_INTROSPECT;

pub fn endpoint(method: MethodFilter) -> MethodRouter<AppState> {
    on(method, introspect)
}

async fn introspect(State(iam): State<AppState>, Authenticated(caller): Authenticated, request: Request) -> Result<Response, ApiError> {
    // The route's permission before anything of the body is read.
    caller.require(PERM_TOKENS_INTROSPECT)?;
    let (parts, body) = read_body(request).await?;
    if content_type(&parts).as_deref() != Some("application/x-www-form-urlencoded") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported Media Type",
            "the request body must be a form (Content-Type: application/x-www-form-urlencoded), as RFC 7662 says",
        ));
    }
    let mut token = None;
    for (name, value) in form_urlencoded::parse(&body) {
        match name.as_ref() {
            // A repeated parameter is ambiguous (RFC 6749 §3.1 refuses them too).
            "token" if token.is_some() => return Err(ApiError::bad_request("the token parameter must appear once")),
            "token" => token = Some(value.into_owned()),
            _ => {}
        }
    }
    let token = token.filter(|t| !t.is_empty()).ok_or_else(|| ApiError::bad_request("the token parameter is required"))?;
    let answer = iam.introspect(&caller, &token).await?;
    let mut response = Json(answer).into_response();
    // The answer describes a credential's state now: nothing along the way may keep it.
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
