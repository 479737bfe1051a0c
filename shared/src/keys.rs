//! Where signing keys come from, and the keyring that caches them per warm instance.
//!
//! Production reads a Secrets Manager secret (`{kid, alg, privateKeyPem}`): `AWSCURRENT` signs,
//! and `AWSPREVIOUS` and `AWSPENDING` (when present) are published in the JWKS and accepted,
//! so no verifier meets an unknown `kid` during a rotation. Locally one key never changes.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_secretsmanager::error::{DisplayErrorContext, ProvideErrorMetadata};

use crate::token::{KeyError, SigningKey, SigningKeyDocument, TokenService, TokenSettings};

/// The keys to use now: one to sign with, others only to publish and accept.
pub struct KeySet {
    pub current: SigningKeyDocument,
    pub others: Vec<SigningKeyDocument>,
}

#[async_trait]
pub trait KeySource: Send + Sync + 'static {
    async fn load(&self) -> Result<KeySet, KeyError>;
}

/// One key for the life of the process (the local server's).
pub struct StaticKey(pub SigningKeyDocument);

#[async_trait]
impl KeySource for StaticKey {
    async fn load(&self) -> Result<KeySet, KeyError> {
        Ok(KeySet { current: self.0.clone(), others: Vec::new() })
    }
}

pub const AWSCURRENT: &str = "AWSCURRENT";
pub const AWSPREVIOUS: &str = "AWSPREVIOUS";
pub const AWSPENDING: &str = "AWSPENDING";

/// A Secrets Manager secret holding a signing-key document, read by staging label.
pub struct SecretsManagerKeys {
    client: aws_sdk_secretsmanager::Client,
    secret_id: String,
}

impl SecretsManagerKeys {
    pub fn new(client: aws_sdk_secretsmanager::Client, secret_id: impl Into<String>) -> Self {
        Self { client, secret_id: secret_id.into() }
    }

    /// The document at `stage`, or `None` when no version carries that label.
    pub async fn stage(&self, stage: &str) -> Result<Option<SigningKeyDocument>, KeyError> {
        let result = self.client.get_secret_value().secret_id(&self.secret_id).version_stage(stage).send().await;
        match result {
            Ok(out) => {
                let raw = out.secret_string().ok_or_else(|| KeyError::Document(format!("{stage} has no SecretString")))?;
                SigningKeyDocument::from_json(raw).map(Some)
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) && stage != AWSCURRENT => Ok(None),
            Err(e) => {
                let code = e.code().unwrap_or("unknown").to_owned();
                // The SDK's error context carries no secret value, only codes and messages.
                Err(KeyError::Source(format!("GetSecretValue {stage} ({code}): {}", DisplayErrorContext(&e))))
            }
        }
    }
}

#[async_trait]
impl KeySource for SecretsManagerKeys {
    async fn load(&self) -> Result<KeySet, KeyError> {
        let current = self.stage(AWSCURRENT).await?.ok_or_else(|| KeyError::Source("the secret has no AWSCURRENT version".into()))?;
        let mut others = Vec::new();
        for stage in [AWSPREVIOUS, AWSPENDING] {
            match self.stage(stage).await {
                Ok(Some(doc)) => others.push(doc),
                Ok(None) => {}
                // Only published, never used to sign: a version that is not a key (the
                // template's placeholder, say) must not stop the service.
                Err(KeyError::Document(e)) => {
                    tracing::warn!(stage, error = %e, "ignoring a staged secret version that is not a signing key")
                }
                Err(e) => return Err(e),
            }
        }
        Ok(KeySet { current, others })
    }
}

struct Cached {
    service: Arc<TokenService>,
    loaded_at: Instant,
}

/// The token service built from the current key set, reloaded after `ttl`. A failed reload
/// keeps serving the keys it has and tries again a little later.
pub struct Keyring {
    settings: TokenSettings,
    source: Arc<dyn KeySource>,
    ttl: Duration,
    cached: RwLock<Cached>,
    reloading: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring").field("settings", &self.settings).field("ttl", &self.ttl).finish_non_exhaustive()
    }
}

const RETRY_AFTER_FAILED_RELOAD: Duration = Duration::from_secs(30);

fn build(settings: &TokenSettings, keys: KeySet) -> Result<TokenService, KeyError> {
    let current = SigningKey::from_document(&keys.current)?;
    let others = keys
        .others
        .iter()
        .filter_map(|doc| match SigningKey::from_document(doc) {
            Ok(key) => Some(key),
            Err(e) => {
                tracing::warn!(kid = %doc.kid, error = %e, "not publishing a staged key that does not parse");
                None
            }
        })
        .collect();
    TokenService::new(settings.clone(), current, others)
}

impl Keyring {
    /// Loads the keys once: at cold start.
    pub async fn new(settings: TokenSettings, source: Arc<dyn KeySource>, ttl: Duration) -> Result<Self, KeyError> {
        let service = Arc::new(build(&settings, source.load().await?)?);
        Ok(Self {
            settings,
            source,
            ttl,
            cached: RwLock::new(Cached { service, loaded_at: Instant::now() }),
            reloading: tokio::sync::Mutex::new(()),
        })
    }

    pub fn settings(&self) -> &TokenSettings {
        &self.settings
    }

    pub async fn current(&self) -> Arc<TokenService> {
        let (service, stale) = {
            let cached = self.cached.read().unwrap_or_else(|p| p.into_inner());
            (cached.service.clone(), cached.loaded_at.elapsed() >= self.ttl)
        };
        if !stale {
            return service;
        }
        // One reload at a time; everyone else keeps using the keys in hand.
        let Ok(_guard) = self.reloading.try_lock() else {
            return service;
        };
        match self.source.load().await.and_then(|keys| build(&self.settings, keys)) {
            Ok(fresh) => {
                let fresh = Arc::new(fresh);
                *self.cached.write().unwrap_or_else(|p| p.into_inner()) = Cached { service: fresh.clone(), loaded_at: Instant::now() };
                fresh
            }
            Err(e) => {
                tracing::warn!(error = %e, "signing keys could not be reloaded; keeping the current ones");
                let mut cached = self.cached.write().unwrap_or_else(|p| p.into_inner());
                cached.loaded_at = Instant::now() - self.ttl + RETRY_AFTER_FAILED_RELOAD.min(self.ttl);
                service
            }
        }
    }
}
