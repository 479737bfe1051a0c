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

/// The longest a verifier may keep a JWKS that this service allows for (API Gateway JWT
/// authorizers: 2 h).
pub const VERIFIER_JWKS_CACHE: Duration = Duration::from_secs(2 * 3600);

/// How long a new key is published before it signs, by default: the JWKS function may serve
/// its cached keys for one signer key cache (5 min) after the key appears, a verifier may then
/// keep that JWKS for [`VERIFIER_JWKS_CACHE`], and 5 min more absorb clock skew and the
/// whole-second creation times Secrets Manager reports. Tokens signed with a key no verifier
/// can have seen yet would fail.
pub const DEFAULT_ACTIVATION_DELAY: Duration = Duration::from_secs(2 * 3600 + 5 * 60 + 5 * 60);

/// The tag a finished rotation leaves on the secret: when (Unix seconds) it promoted a key.
pub const PROMOTED_AT_TAG: &str = "iam:signing-key-promoted-at";

/// What the rotation function must wait for before it unpublishes a key.
///
/// A rotation unpublishes `AWSPREVIOUS`. That key signed until `AWSCURRENT` took over: the
/// activation delay after `AWSCURRENT` was created, or its promotion if that came later, and
/// every signer sees the change within its key cache. The last token it signed must then
/// expire, and every verifier's cached JWKS with it, before it may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationTiming {
    pub activation_delay: Duration,
    /// How long a key stays published after it last signed: signer key cache, the longest
    /// token lifetime and the verifier JWKS cache.
    pub retirement: Duration,
}

impl RotationTiming {
    /// No waiting: for tests, and for a key no token has been signed with.
    pub const IMMEDIATE: Self = Self { activation_delay: Duration::ZERO, retirement: Duration::ZERO };

    pub fn new(activation_delay: Duration, signer_key_cache: Duration, max_token_lifetime: Duration) -> Self {
        Self { activation_delay, retirement: signer_key_cache + max_token_lifetime + VERIFIER_JWKS_CACHE }
    }

    /// How much longer a rotation must wait, given how long ago `AWSCURRENT` was created and
    /// (when known) promoted; zero when it may run now.
    fn wait(&self, current_age: Duration, promoted_ago: Option<Duration>) -> Duration {
        let activated_ago = current_age.saturating_sub(self.activation_delay);
        let stopped_signing_ago = if current_age < self.activation_delay {
            None // AWSPREVIOUS still signs; it stops in activation_delay - current_age
        } else {
            // A promotion after the activation delay is when AWSPREVIOUS really stopped.
            Some(promoted_ago.filter(|p| *p <= current_age).map_or(activated_ago, |p| p.min(activated_ago)))
        };
        match stopped_signing_ago {
            Some(ago) => self.retirement.saturating_sub(ago),
            None => self.activation_delay - current_age + self.retirement,
        }
    }
}

/// A Secrets Manager secret holding a signing-key document, read by staging label.
///
/// `AWSCURRENT` signs once it has existed for the activation delay; until then (right after a
/// rotation) `AWSPREVIOUS` keeps signing, so every verifier has had the chance to fetch the new
/// key before a token needs it. All staged keys are published.
pub struct SecretsManagerKeys {
    client: aws_sdk_secretsmanager::Client,
    secret_id: String,
    activation_delay: Duration,
}

impl SecretsManagerKeys {
    pub fn new(client: aws_sdk_secretsmanager::Client, secret_id: impl Into<String>) -> Self {
        Self { client, secret_id: secret_id.into(), activation_delay: DEFAULT_ACTIVATION_DELAY }
    }

    pub fn with_activation_delay(mut self, delay: Duration) -> Self {
        self.activation_delay = delay;
        self
    }

    /// The document at `stage`, or `None` when no version carries that label.
    pub async fn stage(&self, stage: &str) -> Result<Option<SigningKeyDocument>, KeyError> {
        Ok(self.stage_with_age(stage).await?.map(|(doc, _)| doc))
    }

    /// The document at `stage` and how long ago that version was created.
    async fn stage_with_age(&self, stage: &str) -> Result<Option<(SigningKeyDocument, Duration)>, KeyError> {
        let result = self.client.get_secret_value().secret_id(&self.secret_id).version_stage(stage).send().await;
        match result {
            Ok(out) => {
                let raw = out.secret_string().ok_or_else(|| KeyError::Document(format!("{stage} has no SecretString")))?;
                tracing::debug!(stage, created = ?out.created_date(), "read signing key version");
                // Unknown creation time: old enough. A time in the future (clock skew): brand new.
                let age = out
                    .created_date()
                    .and_then(|created| std::time::SystemTime::try_from(*created).ok())
                    .map(|created| created.elapsed().unwrap_or(Duration::ZERO))
                    .unwrap_or(Duration::MAX);
                SigningKeyDocument::from_json(raw).map(|doc| Some((doc, age)))
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
        let (current, age) =
            self.stage_with_age(AWSCURRENT).await?.ok_or_else(|| KeyError::Source("the secret has no AWSCURRENT version".into()))?;
        let mut previous = None;
        let mut pending = None;
        for stage in [AWSPREVIOUS, AWSPENDING] {
            let doc = match self.stage(stage).await {
                Ok(doc) => doc.filter(|d| SigningKey::from_document(d).is_ok()),
                // Only published, never required: a version that is not a key (the
                // template's placeholder, say) must not stop the service.
                Err(KeyError::Document(e)) => {
                    tracing::warn!(stage, error = %e, "ignoring a staged secret version that is not a signing key");
                    None
                }
                Err(e) => return Err(e),
            };
            if stage == AWSPREVIOUS {
                previous = doc;
            } else {
                pending = doc;
            }
        }
        let mut others = Vec::new();
        let signing = match previous {
            Some(previous) if age < self.activation_delay && previous.kid != current.kid => {
                others.push(current);
                previous
            }
            Some(previous) => {
                others.push(previous);
                current
            }
            None => current,
        };
        others.extend(pending);
        // A version can carry two labels (AWSPENDING lingers on the promoted version): publish each key once.
        let mut seen = vec![signing.kid.clone()];
        others.retain(|doc| {
            let fresh = !seen.contains(&doc.kid);
            seen.push(doc.kid.clone());
            fresh
        });
        Ok(KeySet { current: signing, others })
    }
}

/// One step of a Secrets Manager rotation of the signing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationStep {
    /// Generate a new RSA key with a new `kid` into `AWSPENDING` (published from then on).
    Create,
    /// Nothing to set: the key lives only in the secret.
    Set,
    /// Sign and verify with the pending key.
    Test,
    /// Move `AWSCURRENT` to the pending version (the old one becomes `AWSPREVIOUS`).
    Finish,
}

impl RotationStep {
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "createSecret" => Some(Self::Create),
            "setSecret" => Some(Self::Set),
            "testSecret" => Some(Self::Test),
            "finishSecret" => Some(Self::Finish),
            _ => None,
        }
    }
}

fn sm_error<E: std::error::Error + 'static, R: std::fmt::Debug>(what: &str, e: aws_sdk_secretsmanager::error::SdkError<E, R>) -> KeyError {
    KeyError::Source(format!("{what}: {}", DisplayErrorContext(&e)))
}

/// Refuses to start a rotation that would unpublish a key whose tokens may still be valid (see
/// [`RotationTiming`]). With no previous key, or a placeholder, nothing is unpublished.
async fn refuse_early_rotation(
    client: &aws_sdk_secretsmanager::Client,
    secret_id: &str,
    described: &aws_sdk_secretsmanager::operation::describe_secret::DescribeSecretOutput,
    timing: RotationTiming,
) -> Result<(), KeyError> {
    let keys = SecretsManagerKeys::new(client.clone(), secret_id);
    let current = match keys.stage_with_age(AWSCURRENT).await {
        Ok(current) => current,
        Err(KeyError::Document(_)) => return Ok(()),
        Err(e) => return Err(e),
    };
    let previous = match keys.stage(AWSPREVIOUS).await {
        Ok(previous) => previous,
        Err(KeyError::Document(_)) => None,
        Err(e) => return Err(e),
    };
    let (Some((current, current_age)), Some(previous)) = (current, previous) else { return Ok(()) };
    if previous.kid == current.kid {
        return Ok(());
    }
    let promoted_at = described.tags().iter().find(|t| t.key() == Some(PROMOTED_AT_TAG)).map(|t| t.value().unwrap_or_default());
    let promoted_ago = match promoted_at {
        None => None,
        Some(raw) => Some(promoted_ago(raw, std::time::SystemTime::now())?),
    };
    let wait = timing.wait(current_age, promoted_ago);
    if wait.is_zero() {
        Ok(())
    } else {
        Err(KeyError::RotationTooSoon { retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0) })
    }
}

/// How long ago the promotion tag's time was. A tag that does not parse, or lies in the future
/// beyond the clock skew allowed, is refused rather than ignored: without it a late promotion
/// would be under-counted, and a far-future one would block every rotation until then.
fn promoted_ago(raw: &str, now: std::time::SystemTime) -> Result<Duration, KeyError> {
    let bad =
        || KeyError::Source(format!("the secret's {PROMOTED_AT_TAG} tag is not a plausible Unix time ('{raw}'); correct or delete it"));
    let at =
        raw.trim().parse::<u64>().ok().and_then(|secs| std::time::UNIX_EPOCH.checked_add(Duration::from_secs(secs))).ok_or_else(bad)?;
    match now.duration_since(at) {
        Ok(ago) => Ok(ago),
        Err(ahead) if ahead.duration() <= PROMOTION_ALLOWANCE + CLOCK_SKEW => Ok(Duration::ZERO),
        Err(_) => Err(bad()),
    }
}

/// How much later than the moment it is written the promotion tag says: the promotion that
/// follows it may take this long (the AWS call's own retries), and erring late only makes the
/// next rotation wait a little longer.
const PROMOTION_ALLOWANCE: Duration = Duration::from_secs(10);
/// Clock skew tolerated between the rotation function's clock and the next reader's.
const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// Runs one rotation step for version `token` of `secret_id`. Each step is idempotent, as
/// Secrets Manager may retry it. `createSecret` refuses while `timing` says the previous key
/// may still have valid tokens; `finishSecret` records when it promoted (a tag).
pub async fn rotate(
    client: &aws_sdk_secretsmanager::Client,
    secret_id: &str,
    token: &str,
    step: RotationStep,
    timing: RotationTiming,
) -> Result<(), KeyError> {
    let described = client.describe_secret().secret_id(secret_id).send().await.map_err(|e| sm_error("DescribeSecret", e))?;
    let stages = described.version_ids_to_stages().cloned().unwrap_or_default();
    let token_stages = stages.get(token).cloned().unwrap_or_default();
    match step {
        RotationStep::Create => {
            let exists = client.get_secret_value().secret_id(secret_id).version_id(token).version_stage(AWSPENDING).send().await.is_ok();
            if exists {
                return Ok(());
            }
            if let Err(refused) = refuse_early_rotation(client, secret_id, &described, timing).await {
                tracing::warn!(target: "audit", action = "signing_key.create", outcome = "refused", reason = %refused, "audit");
                return Err(refused);
            }
            let doc = SigningKeyDocument::generate()?;
            client
                .put_secret_value()
                .secret_id(secret_id)
                .client_request_token(token)
                .secret_string(doc.to_json())
                .version_stages(AWSPENDING)
                .send()
                .await
                .map_err(|e| sm_error("PutSecretValue", e))?;
            tracing::info!(target: "audit", action = "signing_key.create", kid = %doc.kid, outcome = "success", "audit");
            Ok(())
        }
        RotationStep::Set => Ok(()),
        RotationStep::Test => {
            let out = client
                .get_secret_value()
                .secret_id(secret_id)
                .version_id(token)
                .version_stage(AWSPENDING)
                .send()
                .await
                .map_err(|e| sm_error("GetSecretValue", e))?;
            let doc = SigningKeyDocument::from_json(out.secret_string().unwrap_or_default())?;
            crate::token::self_test(&doc)
        }
        RotationStep::Finish => {
            if token_stages.is_empty() {
                return Err(KeyError::Source(format!("version {token} is not a version of the secret")));
            }
            if token_stages.iter().any(|s| s == AWSCURRENT) {
                return Ok(());
            }
            // A late promotion is when the previous key stopped signing (see RotationTiming).
            // Recorded before the move, so no promotion goes unrecorded, and dated
            // PROMOTION_ALLOWANCE ahead, so the record never precedes the move it stands for.
            let at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default() + PROMOTION_ALLOWANCE;
            let tag = aws_sdk_secretsmanager::types::Tag::builder().key(PROMOTED_AT_TAG).value(at.as_secs().to_string()).build();
            client.tag_resource().secret_id(secret_id).tags(tag).send().await.map_err(|e| sm_error("TagResource", e))?;
            let current = stages.iter().find(|(_, s)| s.iter().any(|s| s == AWSCURRENT)).map(|(v, _)| v.clone());
            let mut request = client.update_secret_version_stage().secret_id(secret_id).version_stage(AWSCURRENT).move_to_version_id(token);
            if let Some(current) = current {
                request = request.remove_from_version_id(current);
            }
            request.send().await.map_err(|e| sm_error("UpdateSecretVersionStage", e))?;
            tracing::info!(target: "audit", action = "signing_key.promote", version = token, outcome = "success", "audit");
            Ok(())
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn timing() -> RotationTiming {
        RotationTiming { activation_delay: 10 * MIN, retirement: 60 * MIN }
    }

    #[test]
    fn a_rotation_waits_for_the_previous_key_to_stop_signing_and_its_tokens_to_go() {
        let t = timing();
        // (current key's age, promoted how long ago, expected wait)
        let cases = [
            (Duration::ZERO, None, 70 * MIN),           // just created: 10 min of signing left, then 60
            (5 * MIN, None, 65 * MIN),                  // still in its activation delay
            (10 * MIN, None, 60 * MIN),                 // the previous key just stopped signing
            (40 * MIN, None, 30 * MIN),                 // counted from activation
            (70 * MIN, None, Duration::ZERO),           // its tokens are gone
            (70 * MIN, Some(65 * MIN), Duration::ZERO), // promoted within the delay: activation counts
            (70 * MIN, Some(50 * MIN), 10 * MIN),       // promoted after it: the promotion counts
            (70 * MIN, Some(20 * MIN), 40 * MIN),       // promoted late: counted from the promotion
            (70 * MIN, Some(Duration::ZERO), 60 * MIN), // promoted just now
            (70 * MIN, Some(80 * MIN), Duration::ZERO), // a tag older than the key is another key's
            (Duration::MAX, None, Duration::ZERO),      // unknown creation time: old enough
            (Duration::MAX, Some(5 * MIN), 55 * MIN),   // ... but a recorded promotion still counts
        ];
        for (age, promoted, expected) in cases {
            assert_eq!(t.wait(age, promoted), expected, "age {age:?}, promoted {promoted:?} ago");
        }
        assert_eq!(RotationTiming::IMMEDIATE.wait(Duration::ZERO, Some(Duration::ZERO)), Duration::ZERO);
    }

    #[test]
    fn the_promotion_tag_is_read_strictly() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(promoted_ago("1799999400", now).unwrap(), 10 * MIN);
        assert_eq!(promoted_ago("1800000010", now).unwrap(), Duration::ZERO, "the allowance ahead of the move");
        for bad in ["", "soon", "-5", "18446744073709551615", "1800003600"] {
            assert!(promoted_ago(bad, now).is_err(), "{bad:?} is refused, not ignored");
        }
    }
}
