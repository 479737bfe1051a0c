//! Configuration from the environment, read once per cold start.

use iam_shared::hashing::HashParams;
use iam_shared::model::DEFAULT_MAX_PRINCIPALS_PER_ORG;
use iam_shared::service::Limits;
use iam_shared::token::{DEFAULT_LIFETIME_SECS, TokenSettings};

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
    pub signing_key_ttl: std::time::Duration,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// `IAM_SIGNING_KEY_TTL_SECS`: how long a warm instance keeps its signing keys. The rotation
/// rules depend on it too (see `backend`).
pub(crate) fn signing_key_ttl() -> Result<std::time::Duration, ConfigError> {
    Ok(std::time::Duration::from_secs(number("IAM_SIGNING_KEY_TTL_SECS", DEFAULT_SIGNING_KEY_TTL_SECS)?))
}

pub(crate) fn number<T: std::str::FromStr>(name: &str, default: T) -> Result<T, ConfigError> {
    match var(name) {
        None => Ok(default),
        Some(raw) => raw.trim().parse().map_err(|_| ConfigError(format!("{name} must be a number, got '{raw}'"))),
    }
}

impl Config {
    /// `IAM_ISSUER` (else `default_issuer`), `IAM_AUDIENCES` (comma-separated downstream
    /// audiences; the first is an exchange's default), `IAM_MANAGEMENT_AUDIENCE` (default
    /// `<issuer>/management`), `IAM_TOKEN_LIFETIME_SECS`, `IAM_MAX_PRINCIPALS_PER_ORG` (default
    /// 1,000), and the argon2 cost
    /// `IAM_ARGON2_MEMORY_KIB`, `IAM_ARGON2_ITERATIONS`, `IAM_ARGON2_PARALLELISM`, and
    /// `IAM_SIGNING_KEY_TTL_SECS` (default 300).
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
        Ok(Self {
            tokens: TokenSettings {
                issuer,
                audiences,
                management_audience,
                lifetime_secs: number("IAM_TOKEN_LIFETIME_SECS", DEFAULT_LIFETIME_SECS)?,
            },
            limits: Limits { max_principals_per_org },
            hash: hash_params()?,
            signing_key_ttl: signing_key_ttl()?,
        })
    }
}

/// The argon2 cost (`IAM_ARGON2_*`): all `iam-admin` needs of the configuration.
pub fn hash_params() -> Result<HashParams, ConfigError> {
    let defaults = HashParams::default();
    Ok(HashParams {
        memory_kib: number("IAM_ARGON2_MEMORY_KIB", defaults.memory_kib)?,
        iterations: number("IAM_ARGON2_ITERATIONS", defaults.iterations)?,
        parallelism: number("IAM_ARGON2_PARALLELISM", defaults.parallelism)?,
    })
}
