//! Configuration from the environment, typed, and read once per process: [`Config`] and
//! [`StoreConfig`] for a process that serves (each Lambda's cold start, `iam-local`), [`AdminConfig`] for
//! `iam-admin`, [`RotationConfig`] for the rotation function. Nothing else reads `IAM_*`.

use std::path::PathBuf;
use std::time::Duration;

use iam_shared::hashing::HashParams;
use iam_shared::leaks::GithubScanningKeys;
use iam_shared::model::DEFAULT_MAX_PRINCIPALS_PER_ORG;
use iam_shared::service::{DEFAULT_EXCHANGES_PER_KEY_PER_SECOND, Limits};
use iam_shared::signing_keys::{DEFAULT_ACTIVATION_DELAY, RotationTiming, SigningSecrets, VERIFIER_JWKS_CACHE};
use iam_shared::token::{DEFAULT_LIFETIME_SECS, TokenSettings};
use iam_shared::warnings::WarningSettings;

#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

pub const DEFAULT_AUDIENCE: &str = "infuse-api";
pub const DEFAULT_SIGNING_KEY_TTL_SECS: u64 = 300;

#[derive(Debug, Clone)]
pub struct Config {
    pub tokens: TokenSettings,
    pub limits: Limits,
    pub hash: HashParams,
    /// How long a warm instance keeps its signing keys before reading them again.
    pub signing_key_ttl: Duration,
    /// GitHub's secret-scanning public keys (`IAM_GITHUB_SECRET_SCANNING_KEYS`, the document
    /// GitHub's key endpoint answers); without them the partner-alert route answers 404.
    pub github_scanning_keys: Option<GithubScanningKeys>,
    /// GitHub's key endpoint (`IAM_GITHUB_SECRET_SCANNING_KEYS_URL`), fetched under the
    /// outbound rules when an alert names a key not in hand; with the configured keys or alone.
    pub github_scanning_keys_url: Option<String>,
    /// `IAM_OUTBOUND_ALLOW_LOOPBACK`: outbound requests may reach loopback (and plain http to
    /// it). For tests and local use only; never set in the templates, and refused in Lambda.
    pub outbound_allow_loopback: bool,
    /// Where webhook secrets are derived from: not read from the environment, but given by the
    /// backend opened (Secrets Manager's `IAM_WEBHOOK_KEY_SECRET_ID`, or a key file beside the
    /// embedded store). Without one, webhook routes that show a secret answer 503.
    pub webhook_key: Option<std::sync::Arc<iam_shared::webhooks::manage::WebhookKeySource>>,
}

/// Where a process keeps its state (`IAM_STORE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    DynamoDb(DynamoSettings),
    /// redb under `dir`, with the signing key beside it; in memory when `None`.
    Embedded {
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    DynamoDb,
    Embedded,
}

fn audit_retention_days() -> Result<u64, ConfigError> {
    match var("IAM_AUDIT_RETENTION_DAYS") {
        None => Ok(iam_shared::store::dynamodb::DEFAULT_AUDIT_RETENTION_DAYS),
        Some(raw) => raw
            .parse::<u64>()
            .ok()
            .filter(|d| (1..=3650).contains(d))
            .ok_or_else(|| ConfigError(format!("IAM_AUDIT_RETENTION_DAYS must be a number of days from 1 to 3650, got '{raw}'"))),
    }
}

fn required(name: &str) -> Result<String, ConfigError> {
    var(name).ok_or_else(|| ConfigError(format!("{name} is required with IAM_STORE=dynamodb")))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamoSettings {
    pub principals_table: String,
    pub credentials_table: String,
    /// The audit trail (`IAM_AUDIT_TABLE`).
    pub audit_table: String,
    /// How many days audit records are kept (`IAM_AUDIT_RETENTION_DAYS`).
    pub audit_retention_days: u64,
    /// The public key set (`IAM_SIGNING_PUBLIC_KEYS_SECRET_ID`), which every function reads.
    pub public_keys_secret_id: String,
    /// The private keys (`IAM_SIGNING_SECRET_ID`): set only for the functions that sign.
    pub signing_secret_id: Option<String>,
    /// The key webhook secrets are derived from (`IAM_WEBHOOK_KEY_SECRET_ID`): set only for the
    /// functions that show a secret or sign a delivery.
    pub webhook_key_secret_id: Option<String>,
}

impl DynamoSettings {
    /// `IAM_PRINCIPALS_TABLE`, `IAM_CREDENTIALS_TABLE`, `IAM_AUDIT_TABLE`,
    /// `IAM_SIGNING_PUBLIC_KEYS_SECRET_ID`, where tokens are signed `IAM_SIGNING_SECRET_ID`, and
    /// optionally `IAM_AUDIT_RETENTION_DAYS`.
    pub fn from_env() -> Result<Self, ConfigError> {
        let retention = audit_retention_days()?;
        Ok(Self {
            principals_table: required("IAM_PRINCIPALS_TABLE")?,
            credentials_table: required("IAM_CREDENTIALS_TABLE")?,
            audit_table: required("IAM_AUDIT_TABLE")?,
            audit_retention_days: retention,
            public_keys_secret_id: required("IAM_SIGNING_PUBLIC_KEYS_SECRET_ID")?,
            signing_secret_id: var("IAM_SIGNING_SECRET_ID"),
            webhook_key_secret_id: var("IAM_WEBHOOK_KEY_SECRET_ID"),
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

impl StoreConfig {
    /// `IAM_STORE` (`dynamodb` or `embedded`; `default` when unset).
    pub fn from_env(default: StoreKind, data_dir: Option<PathBuf>) -> Result<Self, ConfigError> {
        let kind = match var("IAM_STORE").as_deref() {
            None => default,
            Some("dynamodb") => StoreKind::DynamoDb,
            Some("embedded") => StoreKind::Embedded,
            Some(other) => return Err(ConfigError(format!("IAM_STORE must be 'dynamodb' or 'embedded', got '{other}'"))),
        };
        Ok(match kind {
            StoreKind::DynamoDb => StoreConfig::DynamoDb(DynamoSettings::from_env()?),
            StoreKind::Embedded => StoreConfig::Embedded { dir: data_dir },
        })
    }

    /// A Lambda runs on DynamoDB; `IAM_STORE=embedded` (with `IAM_DATA_DIR`, default
    /// `/tmp/iam`) exists for running a function binary by hand.
    pub fn for_lambda() -> Result<Self, ConfigError> {
        let dir = var("IAM_DATA_DIR").unwrap_or_else(|| "/tmp/iam".into());
        Self::from_env(StoreKind::DynamoDb, Some(PathBuf::from(dir)))
    }
}

/// What `iam-admin` needs: the DynamoDB deployment, the argon2 cost, the activation delay.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub dynamo: DynamoSettings,
    pub hash: HashParams,
    pub activation_delay: Duration,
}

impl AdminConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self { dynamo: DynamoSettings::from_env()?, hash: hash_params()?, activation_delay: checked_activation_delay()? })
    }
}

/// What the rotation function needs: where to publish public keys, and its timing under this
/// deployment's activation delay and signer key cache. Tokens are assumed to live the longest
/// lifetime allowed, as some may predate a change of `IAM_TOKEN_LIFETIME_SECS`.
#[derive(Debug, Clone)]
pub struct RotationConfig {
    pub public_keys_secret_id: String,
    pub timing: RotationTiming,
}

impl RotationConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let public_keys_secret_id =
            var("IAM_SIGNING_PUBLIC_KEYS_SECRET_ID").ok_or_else(|| ConfigError("IAM_SIGNING_PUBLIC_KEYS_SECRET_ID is required".into()))?;
        let timing =
            RotationTiming::new(checked_activation_delay()?, signing_key_ttl()?, Duration::from_secs(iam_shared::token::MAX_LIFETIME_SECS));
        Ok(Self { public_keys_secret_id, timing })
    }
}

/// When the warnings of `iam_shared::warnings` are due: `IAM_WARN_EXPIRING_DAYS` (days before
/// an expiry, `14,7,1` by default; empty for none) and `IAM_WARN_UNUSED_DAYS` (days without an
/// exchange, 30 by default; 0 for never).
pub fn warning_settings() -> Result<WarningSettings, ConfigError> {
    // Set but empty means no expiry warnings, not the default.
    let thresholds = std::env::var("IAM_WARN_EXPIRING_DAYS").ok();
    WarningSettings::parse(thresholds.as_deref(), var("IAM_WARN_UNUSED_DAYS").as_deref())
        .map_err(|e| ConfigError(format!("IAM_WARN_EXPIRING_DAYS / IAM_WARN_UNUSED_DAYS: {e}")))
}

/// The three tables, for the functions that need no signing key (the warnings sweep and the
/// webhook delivery function).
#[derive(Debug, Clone)]
pub struct TablesConfig {
    pub principals_table: String,
    pub credentials_table: String,
    pub audit_table: String,
    pub audit_retention_days: u64,
}

impl TablesConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let table = |name: &str| var(name).ok_or_else(|| ConfigError(format!("{name} is required")));
        Ok(Self {
            principals_table: table("IAM_PRINCIPALS_TABLE")?,
            credentials_table: table("IAM_CREDENTIALS_TABLE")?,
            audit_table: table("IAM_AUDIT_TABLE")?,
            audit_retention_days: audit_retention_days()?,
        })
    }

    pub fn store(&self, sdk: &aws_config::SdkConfig) -> iam_shared::store::DynamoStore {
        iam_shared::store::DynamoStore::new(
            aws_sdk_dynamodb::Client::new(sdk),
            self.principals_table.clone(),
            self.credentials_table.clone(),
            self.audit_table.clone(),
        )
        .with_audit_retention_days(self.audit_retention_days)
    }
}

/// What the warnings function needs: the tables (no signing key, public or private) and when
/// warnings are due.
#[derive(Debug, Clone)]
pub struct WarningsConfig {
    pub tables: TablesConfig,
    pub settings: WarningSettings,
}

impl WarningsConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self { tables: TablesConfig::from_env()?, settings: warning_settings()? })
    }
}

/// What the webhook delivery function needs: the tables, the webhook key
/// (`IAM_WEBHOOK_KEY_SECRET_ID`), the delivery queue (`IAM_WEBHOOK_QUEUE_URL`) and the
/// outbound rules (endpoints answer within 10 s).
#[derive(Debug, Clone)]
pub struct WebhookDeliveryConfig {
    pub tables: TablesConfig,
    pub webhook_key_secret_id: String,
    pub queue_url: String,
    pub outbound: iam_shared::outbound::OutboundRules,
}

pub fn webhook_outbound_rules(allow_loopback: bool) -> iam_shared::outbound::OutboundRules {
    iam_shared::outbound::OutboundRules { allow_loopback, max_bytes: 64 * 1024, timeout: Duration::from_secs(10) }
}

impl WebhookDeliveryConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let required = |name: &str| var(name).ok_or_else(|| ConfigError(format!("{name} is required")));
        Ok(Self {
            tables: TablesConfig::from_env()?,
            webhook_key_secret_id: required("IAM_WEBHOOK_KEY_SECRET_ID")?,
            queue_url: required("IAM_WEBHOOK_QUEUE_URL")?,
            outbound: webhook_outbound_rules(outbound_allow_loopback()?),
        })
    }

    pub fn store(&self, sdk: &aws_config::SdkConfig) -> iam_shared::store::DynamoStore {
        self.tables.store(sdk)
    }

    /// The webhook key, read once at the cold start.
    pub async fn webhook_key(&self, sdk: &aws_config::SdkConfig) -> Result<std::sync::Arc<iam_shared::webhooks::WebhookKey>, ConfigError> {
        iam_shared::webhooks::manage::WebhookKeySource::secrets_manager(
            aws_sdk_secretsmanager::Client::new(sdk),
            self.webhook_key_secret_id.clone(),
        )
        .key()
        .await
        .map_err(|e| ConfigError(format!("the webhook key: {e}")))
    }
}

/// `IAM_KEY_ACTIVATION_DELAY_SECS`, with a warning when it cannot cover what the README's
/// overlap rule needs: it is allowed (a deployment whose verifiers cache less may want it),
/// never silent.
fn checked_activation_delay() -> Result<Duration, ConfigError> {
    let delay = Duration::from_secs(number("IAM_KEY_ACTIVATION_DELAY_SECS", DEFAULT_ACTIVATION_DELAY.as_secs())?);
    let needed = VERIFIER_JWKS_CACHE + signing_key_ttl()?;
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

/// `IAM_EDGE_ORIGIN_SECRET`: the secret the CloudFront edge sends with every request it
/// forwards (see `source_address`). Unset when the service has no edge.
pub fn edge_origin_secret() -> Option<secrecy::SecretString> {
    var("IAM_EDGE_ORIGIN_SECRET").map(|v| secrecy::SecretString::from(v.trim().to_owned()))
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// `IAM_SIGNING_KEY_TTL_SECS`: how long a warm instance keeps its signing keys. The rotation
/// rules depend on it too.
fn signing_key_ttl() -> Result<Duration, ConfigError> {
    Ok(Duration::from_secs(number("IAM_SIGNING_KEY_TTL_SECS", DEFAULT_SIGNING_KEY_TTL_SECS)?))
}

/// `true` or `false` (absent: false).
fn flag(name: &str) -> Result<bool, ConfigError> {
    match var(name).as_deref().map(str::trim) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(ConfigError(format!("{name} must be true or false, got '{other}'"))),
    }
}

/// `IAM_OUTBOUND_ALLOW_LOOPBACK`, refused in Lambda (`AWS_LAMBDA_RUNTIME_API` set): loopback
/// there is the runtime's own API, which no issuer, provider or webhook may be pointed at.
fn outbound_allow_loopback() -> Result<bool, ConfigError> {
    loopback_where(flag("IAM_OUTBOUND_ALLOW_LOOPBACK")?, var("AWS_LAMBDA_RUNTIME_API").is_some())
}

fn loopback_where(asked: bool, in_lambda: bool) -> Result<bool, ConfigError> {
    if asked && in_lambda {
        return Err(ConfigError("IAM_OUTBOUND_ALLOW_LOOPBACK cannot be true in Lambda, where loopback is the runtime's own API".into()));
    }
    Ok(asked)
}

fn number<T: std::str::FromStr>(name: &str, default: T) -> Result<T, ConfigError> {
    match var(name) {
        None => Ok(default),
        Some(raw) => raw.trim().parse().map_err(|_| ConfigError(format!("{name} must be a number, got '{raw}'"))),
    }
}

impl Config {
    /// `IAM_ISSUER` (else `default_issuer`), `IAM_AUDIENCES` (comma-separated downstream
    /// audiences; the first is an exchange's default), `IAM_MANAGEMENT_AUDIENCE` (default
    /// `<issuer>/management`), `IAM_TOKEN_LIFETIME_SECS`, `IAM_MAX_PRINCIPALS_PER_ORG` (default
    /// 1,000), `IAM_EXCHANGES_PER_KEY_PER_SECOND` (default 100), and the argon2 cost
    /// `IAM_ARGON2_MEMORY_KIB`, `IAM_ARGON2_ITERATIONS`, `IAM_ARGON2_PARALLELISM`, and
    /// `IAM_SIGNING_KEY_TTL_SECS` (default 300). `iam-local` derives a default issuer from its
    /// address; a Lambda requires `IAM_ISSUER`.
    pub fn from_env(default_issuer: Option<&str>) -> Result<Self, ConfigError> {
        let issuer =
            var("IAM_ISSUER").or_else(|| default_issuer.map(str::to_owned)).ok_or_else(|| ConfigError("IAM_ISSUER is required".into()))?;
        // Tokens, discovery and verifiers must spell the issuer identically; a trailing '/' would
        // otherwise appear in some of them only.
        let issuer = issuer.trim().trim_end_matches('/').to_owned();
        if issuer.is_empty() {
            return Err(ConfigError("IAM_ISSUER must not be empty".into()));
        }
        let audiences: Vec<String> = var("IAM_AUDIENCES")
            .unwrap_or_else(|| DEFAULT_AUDIENCE.to_owned())
            .split(',')
            .map(|a| a.trim().to_owned())
            .filter(|a| !a.is_empty())
            .collect();
        if audiences.is_empty() {
            return Err(ConfigError("IAM_AUDIENCES must name at least one audience".into()));
        }
        let management_audience = var("IAM_MANAGEMENT_AUDIENCE")
            .map(|a| a.trim().to_owned())
            .unwrap_or_else(|| TokenSettings::default_management_audience(&issuer));
        if audiences.contains(&management_audience) {
            return Err(ConfigError(format!(
                "IAM_MANAGEMENT_AUDIENCE '{management_audience}' must not also be a downstream audience in IAM_AUDIENCES"
            )));
        }
        let max_principals_per_org = number("IAM_MAX_PRINCIPALS_PER_ORG", DEFAULT_MAX_PRINCIPALS_PER_ORG)?;
        if max_principals_per_org == 0 {
            return Err(ConfigError("IAM_MAX_PRINCIPALS_PER_ORG must be at least 1".into()));
        }
        let exchanges_per_key_per_second = number("IAM_EXCHANGES_PER_KEY_PER_SECOND", DEFAULT_EXCHANGES_PER_KEY_PER_SECOND)?;
        if exchanges_per_key_per_second == 0 {
            return Err(ConfigError("IAM_EXCHANGES_PER_KEY_PER_SECOND must be at least 1".into()));
        }
        Ok(Self {
            tokens: TokenSettings {
                issuer,
                audiences,
                management_audience,
                lifetime_secs: number("IAM_TOKEN_LIFETIME_SECS", DEFAULT_LIFETIME_SECS)?,
            },
            limits: Limits { max_principals_per_org, exchanges_per_key_per_second },
            hash: hash_params()?,
            signing_key_ttl: signing_key_ttl()?,
            github_scanning_keys: var("IAM_GITHUB_SECRET_SCANNING_KEYS")
                .map(|doc| GithubScanningKeys::from_json(&doc))
                .transpose()
                .map_err(|e| ConfigError(format!("IAM_GITHUB_SECRET_SCANNING_KEYS: {e}")))?,
            github_scanning_keys_url: var("IAM_GITHUB_SECRET_SCANNING_KEYS_URL"),
            outbound_allow_loopback: outbound_allow_loopback()?,
            webhook_key: None,
        })
    }
}

/// The argon2 cost (`IAM_ARGON2_*`).
fn hash_params() -> Result<HashParams, ConfigError> {
    let defaults = HashParams::default();
    Ok(HashParams {
        memory_kib: number("IAM_ARGON2_MEMORY_KIB", defaults.memory_kib)?,
        iterations: number("IAM_ARGON2_ITERATIONS", defaults.iterations)?,
        parallelism: number("IAM_ARGON2_PARALLELISM", defaults.parallelism)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_never_allowed_in_lambda() {
        assert!(loopback_where(true, true).is_err());
        assert!(loopback_where(true, false).unwrap());
        assert!(!loopback_where(false, true).unwrap());
    }
}
