//! Which store and which signing keys a process uses, chosen by `IAM_STORE`:
//! `dynamodb` (tables `IAM_PRINCIPALS_TABLE`, `IAM_CREDENTIALS_TABLE`; the public key set in the
//! Secrets Manager secret `IAM_SIGNING_PUBLIC_KEYS_SECRET_ID`, and for the processes that sign,
//! the private keys in `IAM_SIGNING_SECRET_ID`) or `embedded` (redb under a data directory,
//! signing key in a 0600 file beside it).

use std::path::Path;
use std::sync::Arc;

use iam_shared::signing_keys::{KeySource, PublishedKeys, SecretsManagerKeys, SigningSecrets, StaticKey};
use iam_shared::store::{DynamoStore, EmbeddedStore, Store};

use crate::config::ConfigError;
use crate::state::load_or_create_signing_key;

pub struct Backend {
    pub store: Arc<dyn Store>,
    pub keys: Arc<dyn KeySource>,
}

fn required(name: &str) -> Result<String, ConfigError> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| ConfigError(format!("{name} is required with IAM_STORE=dynamodb")))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamoSettings {
    pub principals_table: String,
    pub credentials_table: String,
    /// The public key set (`IAM_SIGNING_PUBLIC_KEYS_SECRET_ID`), which every function reads.
    pub public_keys_secret_id: String,
    /// The private keys (`IAM_SIGNING_SECRET_ID`): set only for the functions that sign.
    pub signing_secret_id: Option<String>,
}

impl DynamoSettings {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            principals_table: required("IAM_PRINCIPALS_TABLE")?,
            credentials_table: required("IAM_CREDENTIALS_TABLE")?,
            public_keys_secret_id: required("IAM_SIGNING_PUBLIC_KEYS_SECRET_ID")?,
            signing_secret_id: std::env::var("IAM_SIGNING_SECRET_ID").ok().filter(|v| !v.trim().is_empty()),
        })
    }

    /// Both secrets, for a process that signs or rotates.
    pub fn signing_secrets(&self) -> Result<SigningSecrets, ConfigError> {
        let private = self.signing_secret_id.clone().ok_or_else(|| {
            ConfigError("IAM_SIGNING_SECRET_ID is required where tokens are signed (the exchange, iam-local, iam-admin)".into())
        })?;
        Ok(SigningSecrets { private, public: self.public_keys_secret_id.clone() })
    }
}

/// Whether a process signs tokens or only verifies them. Only the exchange (and `iam-local`,
/// which serves it) signs; every other function is given the public key set alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUse {
    Sign,
    Verify,
}

/// The activation delay, with a warning when it cannot cover what the README's overlap rule
/// needs: it is allowed (a deployment whose verifiers cache less may want it), never silent.
pub fn checked_activation_delay() -> Result<std::time::Duration, ConfigError> {
    let delay = key_activation_delay()?;
    let needed = iam_shared::signing_keys::VERIFIER_JWKS_CACHE + crate::config::signing_key_ttl()?;
    if delay < needed {
        tracing::warn!(
            activation_delay_secs = delay.as_secs(),
            needed_secs = needed.as_secs(),
            "IAM_KEY_ACTIVATION_DELAY_SECS is shorter than a verifier's JWKS cache (2 h) plus the signer key cache: \
             after a rotation, verifiers that cache the JWKS that long may refuse new tokens"
        );
    }
    Ok(delay)
}

fn key_activation_delay() -> Result<std::time::Duration, ConfigError> {
    let default = iam_shared::signing_keys::DEFAULT_ACTIVATION_DELAY.as_secs();
    Ok(std::time::Duration::from_secs(crate::config::number("IAM_KEY_ACTIVATION_DELAY_SECS", default)?))
}

/// The rotation function's timing under this deployment's activation delay and signer key
/// cache. Tokens are assumed to live the longest lifetime allowed, as some may predate a
/// change of `IAM_TOKEN_LIFETIME_SECS`.
pub fn rotation_timing_from_env() -> Result<iam_shared::signing_keys::RotationTiming, ConfigError> {
    Ok(iam_shared::signing_keys::RotationTiming::new(
        checked_activation_delay()?,
        crate::config::signing_key_ttl()?,
        std::time::Duration::from_secs(iam_shared::token::MAX_LIFETIME_SECS),
    ))
}

/// `IAM_STORE`, or `default` when unset.
pub fn store_kind(default: &str) -> Result<String, ConfigError> {
    let kind = std::env::var("IAM_STORE").unwrap_or_else(|_| default.to_owned());
    match kind.as_str() {
        "dynamodb" | "embedded" => Ok(kind),
        other => Err(ConfigError(format!("IAM_STORE must be 'dynamodb' or 'embedded', got '{other}'"))),
    }
}

pub async fn dynamodb(settings: &DynamoSettings, key_use: KeyUse) -> Result<Backend, ConfigError> {
    let sdk = crate::aws::sdk_config().await;
    let store =
        DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), settings.principals_table.clone(), settings.credentials_table.clone());
    let secrets = aws_sdk_secretsmanager::Client::new(&sdk);
    let keys: Arc<dyn KeySource> = match key_use {
        KeyUse::Sign => Arc::new(SecretsManagerKeys::new(secrets, settings.signing_secrets()?)),
        KeyUse::Verify => Arc::new(PublishedKeys::new(secrets, settings.public_keys_secret_id.clone())),
    };
    Ok(Backend { store: Arc::new(store), keys })
}

/// The store and keys `IAM_STORE` names (`default_kind` when unset): DynamoDB and Secrets
/// Manager, or the embedded store under `embedded_dir` (in memory when `None`). The one place
/// both the Lambda bootstrap and `iam-local` choose.
pub async fn from_env(default_kind: &str, key_use: KeyUse, embedded_dir: Option<&Path>) -> Result<Backend, ConfigError> {
    match store_kind(default_kind)?.as_str() {
        "dynamodb" => dynamodb(&DynamoSettings::from_env()?, key_use).await,
        _ => embedded(embedded_dir),
    }
}

/// The embedded store under `dir` (created 0700), or in memory with a fresh key when `dir` is `None`.
pub fn embedded(dir: Option<&Path>) -> Result<Backend, ConfigError> {
    let Some(dir) = dir else {
        let store = EmbeddedStore::in_memory().map_err(|e| ConfigError(e.to_string()))?;
        let key = iam_shared::token::SigningKeyDocument::generate().map_err(|e| ConfigError(e.to_string()))?;
        return Ok(Backend { store: Arc::new(store), keys: Arc::new(StaticKey(key)) });
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
    Ok(Backend { store: Arc::new(store), keys: Arc::new(StaticKey(key)) })
}
