//! `GET /iam/auth/sign-in?org=…&code_challenge=…&code_challenge_method=S256`: a person starts
//! signing in to the console through the organisation's identity provider, and is sent there.
//! The console keeps the PKCE verifier of `code_challenge`: only it can redeem the code it
//! gets back. A malformed request (not the console's) is a 400; a sign-in that cannot start
//! sends the browser back to the console with the reason.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use iam_api::{ApiError, AppState, Query};
use iam_shared::federation::sign_in::SignInError;

pub fn endpoint(method: MethodFilter) -> MethodRouter<AppState> {
    on(method, sign_in)
}

/// The console's page (the one route every deployment serves it at: `/console/{asset}`).
pub const CONSOLE_PAGE: &str = "/console/index.html";

/// A redirect the browser follows at once and never keeps.
pub fn redirect(location: &str) -> Response {
    let Ok(location) = HeaderValue::from_str(location) else {
        return back_to_console("the identity provider's address could not be used");
    };
    let mut response = StatusCode::FOUND.into_response();
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, location);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

/// Back to the console, with why the sign-in did not go through.
pub fn back_to_console(reason: &str) -> Response {
    let reason: String = form_urlencoded::byte_serialize(reason.as_bytes()).collect();
    redirect(&format!("{CONSOLE_PAGE}#sign-in-error={reason}"))
}

async fn sign_in(State(iam): State<AppState>, query: Query) -> Result<Response, ApiError> {
    query.only(&["org", "code_challenge", "code_challenge_method"])?;
    if query.get("code_challenge_method")?.is_some_and(|m| m != "S256") {
        return Err(ApiError::bad_request("code_challenge_method must be S256"));
    }
    let org = query.get("org")?.ok_or_else(|| ApiError::bad_request("org is required"))?.to_owned();
    let challenge = query.get("code_challenge")?.ok_or_else(|| ApiError::bad_request("code_challenge is required"))?.to_owned();
    Ok(match iam.begin_sign_in(&org, &challenge).await {
        Ok(authorization) => redirect(&authorization),
        Err(SignInError::Malformed(what)) => return Err(ApiError::bad_request(format!("the sign-in request is malformed: {what}"))),
        Err(e) => {
            tracing::info!(target: "audit", action = "user.sign_in", actor = "anonymous", org = %org, outcome = "failure", reason = %e, "audit");
            back_to_console(&e.to_string())
        }
    })
}
