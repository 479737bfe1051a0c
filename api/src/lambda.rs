//! The Lambda bootstrap: config, clients and signing key once per cold start, then the router
//! under `lambda_http`. A function's `main.rs` is one call to [`run`].

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use iam_shared::store::EmbeddedStore;

use crate::config::{Config, ConfigError};
use crate::state::{AppState, build_state, finish_router, load_or_create_signing_key};

pub use lambda_http::Error;

/// Until the DynamoDB and Secrets Manager stores land, a function keeps its state in the
/// embedded store under `IAM_DATA_DIR` (default `/tmp/iam`).
fn state_from_env() -> Result<AppState, ConfigError> {
    let config = Config::from_env(None)?;
    match std::env::var("IAM_STORE").as_deref() {
        Ok("embedded") | Err(_) => {}
        Ok(other) => {
            return Err(ConfigError(format!(
                "IAM_STORE '{other}' is not supported; use 'embedded'"
            )));
        }
    }
    let dir = PathBuf::from(std::env::var("IAM_DATA_DIR").unwrap_or_else(|_| "/tmp/iam".into()));
    std::fs::create_dir_all(&dir).map_err(|e| ConfigError(format!("{}: {e}", dir.display())))?;
    let store =
        EmbeddedStore::open(&dir.join("iam.redb")).map_err(|e| ConfigError(e.to_string()))?;
    let signing = load_or_create_signing_key(&dir)?;
    build_state(&config, Arc::new(store), &signing)
}

pub async fn run(routes: fn() -> Router<AppState>) -> Result<(), Error> {
    // The runtime's subscriber honours AWS_LAMBDA_LOG_FORMAT (JSON) and AWS_LAMBDA_LOG_LEVEL.
    lambda_http::tracing::init_default_subscriber();
    let state = state_from_env()?;
    lambda_http::run(finish_router(routes(), state)).await
}
