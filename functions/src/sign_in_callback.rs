//! `GET /iam/auth/sign-in/callback?state=…&code=…`: the identity provider sends the person
//! back here. The service redeems the provider's code itself, verifies the ID token, finds the
//! user mapped to it, and hands the console a one-time code of its own (in the URL fragment,
//! which never reaches a server) to redeem at the token endpoint with its PKCE verifier.

use axum::extract::State;
use axum::response::Response;
use axum::routing::{MethodFilter, MethodRouter, on};
use iam_api::{AppState, Query};

use crate::sign_in::{CONSOLE_PAGE, back_to_console, redirect};

pub fn endpoint(method: MethodFilter) -> MethodRouter<AppState> {
    on(method, sign_in_callback)
}

async fn sign_in_callback(State(iam): State<AppState>, query: Query) -> Response {
    let param = |name: &str| query.get(name).ok().flatten().map(str::to_owned);
    // The provider refused (the person cancelled, say): its `error` is a code from RFC 6749.
    if let Some(error) = param("error") {
        let error: String = error.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(64).collect();
        return back_to_console(&format!("the identity provider refused: {error}"));
    }
    let (Some(state), Some(code)) = (param("state"), param("code")) else {
        return back_to_console("the identity provider's answer is malformed: it needs state and code");
    };
    match iam.complete_sign_in(&state, &code).await {
        Ok(code) => redirect(&format!("{CONSOLE_PAGE}#sign-in={code}")),
        Err(e) => {
            tracing::info!(target: "audit", action = "user.sign_in", actor = "anonymous", outcome = "failure", reason = %e, "audit");
            back_to_console(&e.to_string())
        }
    }
}
