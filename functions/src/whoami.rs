//! `GET /iam/whoami`: the caller's verified claims. An example of a protected route: in AWS an
//! API Gateway JWT authorizer (issuer = this service) guards it before the function runs, and
//! the function still verifies the token itself under the same rules.

use axum::Json;
use axum::routing::{MethodFilter, MethodRouter, on};
use iam_api::{AppState, Authenticated};
use iam_shared::token::AccessClaims;

pub fn endpoint(method: MethodFilter) -> MethodRouter<AppState> {
    on(method, whoami)
}

async fn whoami(Authenticated(caller): Authenticated) -> Json<AccessClaims> {
    Json(caller.claims)
}
