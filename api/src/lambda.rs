//! The Lambda bootstrap: config, AWS clients, store and signing keys once per cold start, then
//! the operation's router under `lambda_http`. A function's binary is one call to [`serve`].

use crate::backend::{self, KeyUse};
use crate::config::{Config, ConfigError, StoreConfig};
use crate::operation::{ColdStart, Operation};
use crate::state::{AppState, build_state, build_state_for_public_routes, finish_router};

pub use lambda_http::Error;

async fn state_from_env(cold_start: ColdStart) -> Result<AppState, ConfigError> {
    let config = Config::from_env(None)?;
    let store = StoreConfig::for_lambda()?;
    // Only the signer is given the private keys (see template.yaml's SigningKeySecretPolicy).
    let key_use = if cold_start == ColdStart::Signer { KeyUse::Sign } else { KeyUse::Verify };
    let backend = backend::open(&store, key_use).await?;
    let config = Config { webhook_key: backend.webhook_key.clone(), ..config };
    match cold_start {
        ColdStart::Signer | ColdStart::Verifier => build_state(&config, backend.store, backend.keys).await,
        // Its policy grants no table: its cold start reads none.
        ColdStart::Public => build_state_for_public_routes(&config, backend.store, backend.keys).await,
    }
}

/// Serves `operation` as this function, loading what its [`ColdStart`] says.
pub async fn serve(operation: &Operation) -> Result<(), Error> {
    // The runtime's subscriber honours AWS_LAMBDA_LOG_FORMAT (JSON) and AWS_LAMBDA_LOG_LEVEL.
    lambda_http::tracing::init_default_subscriber();
    let state = state_from_env(operation.cold_start).await?;
    lambda_http::run(finish_router(operation.router(), state)).await
}
