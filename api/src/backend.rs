//! Opens the store and signing keys a [`StoreConfig`] names: DynamoDB (the public key set in
//! Secrets Manager, and for the processes that sign, the private keys) or the embedded store
//! (redb under a data directory, signing key in a 0600 file beside it).

use std::path::Path;
use std::sync::Arc;

use iam_shared::signing_keys::{KeySource, PublishedKeys, SecretsManagerKeys, StaticKey};
use iam_shared::store::{DynamoStore, EmbeddedStore, Store};

use crate::config::{ConfigError, DynamoSettings, StoreConfig};
use crate::state::{load_or_create_signing_key, load_or_create_webhook_key};
use iam_shared::webhooks::WebhookKey;
use iam_shared::webhooks::manage::WebhookKeySource;

pub struct Backend {
    pub store: Arc<dyn Store>,
    pub keys: Arc<dyn KeySource>,
    pub webhook_key: Option<Arc<WebhookKeySource>>,
}

/// Whether a process signs tokens or only verifies them. Only the exchange (and `iam-local`,
/// which serves it) signs; every other function is given the public key set alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUse {
    Sign,
    Verify,
}

/// The DynamoDB store on the settings' tables, with their audit retention.
pub fn dynamo_store(settings: &DynamoSettings, sdk: &aws_config::SdkConfig) -> DynamoStore {
    DynamoStore::new(
        aws_sdk_dynamodb::Client::new(sdk),
        settings.principals_table.clone(),
        settings.credentials_table.clone(),
        settings.audit_table.clone(),
    )
    .with_audit_retention_days(settings.audit_retention_days)
}

pub async fn dynamodb(settings: &DynamoSettings, key_use: KeyUse) -> Result<Backend, ConfigError> {
    let sdk = crate::aws::sdk_config().await;
    let store = dynamo_store(settings, &sdk);
    let secrets = aws_sdk_secretsmanager::Client::new(&sdk);
    let keys: Arc<dyn KeySource> = match key_use {
        KeyUse::Sign => Arc::new(SecretsManagerKeys::new(secrets.clone(), settings.signing_secrets()?)),
        KeyUse::Verify => Arc::new(PublishedKeys::new(secrets.clone(), settings.public_keys_secret_id.clone())),
    };
    let webhook_key = settings.webhook_key_secret_id.clone().map(|id| Arc::new(WebhookKeySource::secrets_manager(secrets.clone(), id)));
    Ok(Backend { store: Arc::new(store), keys, webhook_key })
}

/// The store and keys the configuration names: DynamoDB and Secrets Manager, or the embedded
/// store. The one place both the Lambda bootstrap and `iam-local` open them.
pub async fn open(store: &StoreConfig, key_use: KeyUse) -> Result<Backend, ConfigError> {
    match store {
        StoreConfig::DynamoDb(settings) => dynamodb(settings, key_use).await,
        StoreConfig::Embedded { dir } => embedded(dir.as_deref()),
    }
}

/// The embedded store under `dir` (created 0700), or in memory with a fresh key when `dir` is `None`.
pub fn embedded(dir: Option<&Path>) -> Result<Backend, ConfigError> {
    let Some(dir) = dir else {
        let store = EmbeddedStore::in_memory().map_err(|e| ConfigError(e.to_string()))?;
        let key = iam_shared::token::SigningKeyDocument::generate().map_err(|e| ConfigError(e.to_string()))?;
        let webhook_key = Some(Arc::new(WebhookKeySource::Static(Arc::new(WebhookKey::generate()))));
        return Ok(Backend { store: Arc::new(store), keys: Arc::new(StaticKey(key)), webhook_key });
    };
    std::fs::create_dir_all(dir).map_err(|e| ConfigError(format!("{}: {e}", dir.display())))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // The directory holds the signing key and credential hashes.
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    let store = EmbeddedStore::open(&dir.join("iam.redb")).map_err(|e| ConfigError(e.to_string()))?;
    let key = load_or_create_signing_key(dir)?;
    let webhook_key = Some(Arc::new(WebhookKeySource::Static(Arc::new(load_or_create_webhook_key(dir)?))));
    Ok(Backend { store: Arc::new(store), keys: Arc::new(StaticKey(key)), webhook_key })
}
