//! The Lambda bootstrap: config, AWS clients, store and signing keys once per cold start, then
//! the router under `lambda_http`. A function's `main.rs` is one call to [`run`].

use axum::Router;

use crate::backend::{self, KeyUse};
use crate::config::{Config, ConfigError};
use crate::state::{AppState, build_state, build_state_for_public_routes, finish_router};

pub use lambda_http::Error;

/// Lambdas run on DynamoDB and Secrets Manager; `IAM_STORE=embedded` (with `IAM_DATA_DIR`,
/// default `/tmp/iam`) exists for running a function binary by hand.
async fn state_from_env(warm_store: bool, key_use: KeyUse) -> Result<AppState, ConfigError> {
    let config = Config::from_env(None)?;
    let dir = std::env::var("IAM_DATA_DIR").unwrap_or_else(|_| "/tmp/iam".into());
    let backend = backend::from_env("dynamodb", key_use, Some(std::path::Path::new(&dir))).await?;
    if warm_store {
        build_state(&config, backend.store, backend.keys).await
    } else {
        build_state_for_public_routes(&config, backend.store, backend.keys).await
    }
}

/// Runs a function whose routes use the store and verify tokens from the public key set.
pub async fn run(routes: fn() -> Router<AppState>) -> Result<(), Error> {
    serve(routes, true, KeyUse::Verify).await
}

/// Runs the function that signs tokens: the only HTTP function given the private keys.
pub async fn run_signer(routes: fn() -> Router<AppState>) -> Result<(), Error> {
    serve(routes, true, KeyUse::Sign).await
}

/// Runs a function whose routes only publish key material or configuration: its cold start
/// reads no table, as its policy grants none.
pub async fn run_public(routes: fn() -> Router<AppState>) -> Result<(), Error> {
    serve(routes, false, KeyUse::Verify).await
}

async fn serve(routes: fn() -> Router<AppState>, warm_store: bool, key_use: KeyUse) -> Result<(), Error> {
    // The runtime's subscriber honours AWS_LAMBDA_LOG_FORMAT (JSON) and AWS_LAMBDA_LOG_LEVEL.
    lambda_http::tracing::init_default_subscriber();
    let state = state_from_env(warm_store, key_use).await?;
    lambda_http::run(finish_router(routes(), state)).await
}
