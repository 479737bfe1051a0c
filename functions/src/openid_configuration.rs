//! `GET /iam/.well-known/openid-configuration`: discovery for verifiers and OAuth clients.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{MethodFilter, MethodRouter, on};
use iam_api::AppState;
use serde_json::json;

pub const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

pub fn endpoint(method: MethodFilter) -> MethodRouter<AppState> {
    on(method, discovery)
}

async fn discovery(State(iam): State<AppState>) -> impl IntoResponse {
    let issuer = iam.tokens.settings().issuer.trim_end_matches('/').to_owned();
    let mut scopes: Vec<String> = iam_shared::roles::builtins().iter().flat_map(|r| r.permissions.iter().map(|p| p.to_string())).collect();
    scopes.sort();
    scopes.dedup();
    let body = json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "token_endpoint": format!("{issuer}/auth/token"),
        "grant_types_supported": ["client_credentials", TOKEN_EXCHANGE_GRANT],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "scopes_supported": scopes,
        // Only the token endpoint exists: no authorization endpoint, so no response types.
        "response_types_supported": [],
        // Access tokens are RS256 JWTs. OIDC-discovery parsers insist on the ID-token field,
        // so it says the same, though no ID token is ever issued.
        "access_token_signing_alg_values_supported": ["RS256"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "subject_types_supported": ["public"],
    });
    ([(header::CACHE_CONTROL, "public, max-age=300")], Json(body))
}
