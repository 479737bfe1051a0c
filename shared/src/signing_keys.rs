//! Where signing keys come from, and the keyring that caches them per warm instance.
//!
//! Production keeps two Secrets Manager secrets. The private one (`{kid, alg, privateKeyPem}`,
//! readable only by the exchange and the rotation function) stages keys as `AWSCURRENT`,
//! `AWSPREVIOUS` and `AWSPENDING`; the public one holds the [`PublicKeySet`], which every other
//! function verifies from and the JWKS publishes. A signer signs with `AWSCURRENT` once the set
//! says it is active, with `AWSPREVIOUS` until then. Locally one key never changes.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_secretsmanager::error::{DisplayErrorContext, ProvideErrorMetadata};

use crate::public_key_set::{PublicKeySet, PublishedKey, StagedKey};
use crate::token::{KeyError, PublicJwk, SigningKey, SigningKeyDocument, TokenService, TokenSettings};

/// The keys to use now.
pub struct KeySet {
    /// The key to sign with: only where signing happens.
    pub signer: Option<SigningKey>,
    /// Every key to publish and accept (the signer's is added if missing).
    pub published: Vec<PublicJwk>,
}

#[async_trait]
pub trait KeySource: Send + Sync + 'static {
    async fn load(&self) -> Result<KeySet, KeyError>;
}

/// One key for the life of the process (the local server's, which signs and verifies).
pub struct StaticKey(pub SigningKeyDocument);

#[async_trait]
impl KeySource for StaticKey {
    async fn load(&self) -> Result<KeySet, KeyError> {
        Ok(KeySet { signer: Some(SigningKey::from_document(&self.0)?), published: Vec::new() })
    }
}

/// The two secrets of a deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningSecrets {
    /// The private keys, by staging label: for the exchange and the rotation function only.
    pub private: String,
    /// The [`PublicKeySet`]: for everyone.
    pub public: String,
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

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or_default()
}

fn delay_secs(delay: Duration) -> i64 {
    i64::try_from(delay.as_secs()).unwrap_or(i64::MAX)
}

/// Reads the public key set. `None` when the secret holds no set yet (the template's
/// placeholder, or no secret at all on a local server).
pub async fn read_public_set(client: &aws_sdk_secretsmanager::Client, secret_id: &str) -> Result<Option<PublicKeySet>, KeyError> {
    match client.get_secret_value().secret_id(secret_id).send().await {
        Ok(out) => Ok(PublicKeySet::from_json(out.secret_string().unwrap_or_default()).ok()),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => Ok(None),
        Err(e) => Err(sm_error("GetSecretValue (public key set)", e)),
    }
}

/// The public key set as a verifier needs it: present and not empty.
async fn required_public_set(client: &aws_sdk_secretsmanager::Client, secret_id: &str) -> Result<PublicKeySet, KeyError> {
    let set = read_public_set(client, secret_id).await?.unwrap_or_default();
    set.jwks()?;
    Ok(set)
}

/// The key source of every function that only verifies: the public key set, nothing private.
pub struct PublishedKeys {
    client: aws_sdk_secretsmanager::Client,
    public_set_id: String,
}

impl PublishedKeys {
    pub fn new(client: aws_sdk_secretsmanager::Client, public_set_id: impl Into<String>) -> Self {
        Self { client, public_set_id: public_set_id.into() }
    }
}

#[async_trait]
impl KeySource for PublishedKeys {
    async fn load(&self) -> Result<KeySet, KeyError> {
        let set = required_public_set(&self.client, &self.public_set_id).await?;
        Ok(KeySet { signer: None, published: set.jwks()? })
    }
}

/// The key source of the functions that sign: the private secret, read by staging label, and
/// the public key set, which says from when each key may sign.
pub struct SecretsManagerKeys {
    client: aws_sdk_secretsmanager::Client,
    secrets: SigningSecrets,
}

impl SecretsManagerKeys {
    pub fn new(client: aws_sdk_secretsmanager::Client, secrets: SigningSecrets) -> Self {
        Self { client, secrets }
    }

    /// The document at `stage`, or `None` when no version carries that label.
    pub async fn stage(&self, stage: &str) -> Result<Option<SigningKeyDocument>, KeyError> {
        Ok(self.stage_with_age(stage).await?.map(|(doc, _)| doc))
    }

    /// The document at `stage` and how long ago that version was created.
    async fn stage_with_age(&self, stage: &str) -> Result<Option<(SigningKeyDocument, Duration)>, KeyError> {
        let result = self.client.get_secret_value().secret_id(&self.secrets.private).version_stage(stage).send().await;
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

    /// The staged key at `stage` when it is a usable signing key, with its version's creation
    /// time. Anything else (the template's placeholder, say) is skipped: it must not stop the
    /// service or the rotation.
    async fn staged_key(&self, stage: &str) -> Result<Option<(SigningKey, i64)>, KeyError> {
        let parsed = self
            .stage_with_age(stage)
            .await
            .and_then(|found| found.map(|(doc, age)| SigningKey::from_document(&doc).map(|key| (key, age))).transpose());
        match parsed {
            Ok(Some((key, age))) => {
                let created_at = if age == Duration::MAX { 0 } else { unix_now() - delay_secs(age) };
                Ok(Some((key, created_at)))
            }
            Ok(None) => Ok(None),
            Err(KeyError::Document(e)) => {
                tracing::warn!(stage, error = %e, "ignoring a staged secret version that is not a signing key");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

#[async_trait]
impl KeySource for SecretsManagerKeys {
    async fn load(&self) -> Result<KeySet, KeyError> {
        // Three independent reads, side by side: a reload waits for the slowest, not the sum.
        let (set, current, previous) = tokio::try_join!(
            required_public_set(&self.client, &self.secrets.public),
            self.staged_key(AWSCURRENT),
            self.staged_key(AWSPREVIOUS)
        )?;
        let (current, _) = current.ok_or_else(|| KeyError::Source("AWSCURRENT is not a signing key".into()))?;
        let previous = previous.map(|(key, _)| key);
        let chosen = set.signer_at(&current, previous.as_ref(), unix_now())?.kid().to_owned();
        let signer = match previous {
            Some(previous) if previous.kid() == chosen => previous,
            _ => current,
        };
        Ok(KeySet { signer: Some(signer), published: set.jwks()? })
    }
}

/// Writes `value` as the new AWSCURRENT version of `secret_id`, creating the secret when it
/// does not exist (a local server; in AWS the template creates both secrets). The error never
/// carries the value.
pub async fn put_or_create_secret(client: &aws_sdk_secretsmanager::Client, secret_id: &str, value: &str) -> Result<(), KeyError> {
    match client.put_secret_value().secret_id(secret_id).secret_string(value).send().await {
        Ok(_) => Ok(()),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => {
            client.create_secret().name(secret_id).secret_string(value).send().await.map_err(|e| sm_error("CreateSecret", e))?;
            Ok(())
        }
        Err(e) => Err(sm_error("PutSecretValue", e)),
    }
}

/// Rewrites the public key set to publish exactly the private secret's staged keys (current,
/// previous, pending) and `new`, which becomes active `activation_delay` from now. Writes only
/// when something changed, so a retried step adds no version. Returns the set as written.
pub async fn publish_staged_keys(
    client: &aws_sdk_secretsmanager::Client,
    secrets: &SigningSecrets,
    new: Option<&SigningKey>,
    activation_delay: Duration,
) -> Result<PublicKeySet, KeyError> {
    let keys = SecretsManagerKeys::new(client.clone(), secrets.clone());
    let mut staged = Vec::new();
    for stage in [AWSCURRENT, AWSPREVIOUS, AWSPENDING] {
        let found = match keys.staged_key(stage).await {
            Ok(found) => found,
            // A secret with no AWSCURRENT yet (a first init on a local server): nothing staged.
            Err(KeyError::Source(_)) if stage == AWSCURRENT => None,
            Err(e) => return Err(e),
        };
        if let Some((key, created_at)) = found {
            staged.push(StagedKey { jwk: key.public_jwk().clone(), created_at });
        }
    }
    let existing = read_public_set(client, &secrets.public).await?;
    let now = unix_now();
    let delay = delay_secs(activation_delay);
    let new = new.map(|key| PublishedKey { jwk: key.public_jwk().clone(), published_at: now, activates_at: now.saturating_add(delay) });
    let rebuilt = existing.clone().unwrap_or_default().rebuilt(&staged, new, delay);
    if existing.as_ref() == Some(&rebuilt) {
        return Ok(rebuilt);
    }
    put_or_create_secret(client, &secrets.public, &rebuilt.to_json()).await?;
    let kids: Vec<&str> = rebuilt.keys.iter().map(|k| k.kid()).collect();
    tracing::info!(target: "audit", action = "signing_key.publish", kids = ?kids, outcome = "success", "audit");
    Ok(rebuilt)
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
    secrets: &SigningSecrets,
    described: &aws_sdk_secretsmanager::operation::describe_secret::DescribeSecretOutput,
    timing: RotationTiming,
) -> Result<(), KeyError> {
    let keys = SecretsManagerKeys::new(client.clone(), secrets.clone());
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
    let (Some((current, version_age)), Some(previous)) = (current, previous) else { return Ok(()) };
    if previous.kid == current.kid {
        return Ok(());
    }
    // The activation delay counts from publication; a key the set does not know yet (staged
    // before the set existed) was published by the JWKS when its version was created.
    let published = read_public_set(client, &secrets.public).await?.and_then(|set| set.get(&current.kid).map(|k| k.published_at));
    let current_age = match published {
        Some(at) => Duration::from_secs(u64::try_from(unix_now().saturating_sub(at)).unwrap_or(0)),
        None => version_age,
    };
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

/// Runs one rotation step for version `token` of the private secret. Each step is idempotent,
/// as Secrets Manager may retry it. `createSecret` refuses while `timing` says the previous key
/// may still have valid tokens, and publishes the new key in the public set before it stages
/// the private key; `finishSecret` records when it promoted (a tag) and then unpublishes the
/// key that is no longer staged.
pub async fn rotate(
    client: &aws_sdk_secretsmanager::Client,
    secrets: &SigningSecrets,
    token: &str,
    step: RotationStep,
    timing: RotationTiming,
) -> Result<(), KeyError> {
    let secret_id = secrets.private.as_str();
    let described = client.describe_secret().secret_id(secret_id).send().await.map_err(|e| sm_error("DescribeSecret", e))?;
    let stages = described.version_ids_to_stages().cloned().unwrap_or_default();
    let token_stages = stages.get(token).cloned().unwrap_or_default();
    match step {
        RotationStep::Create => {
            let exists = client.get_secret_value().secret_id(secret_id).version_id(token).version_stage(AWSPENDING).send().await.is_ok();
            if exists {
                return Ok(());
            }
            if let Err(refused) = refuse_early_rotation(client, secrets, &described, timing).await {
                tracing::warn!(target: "audit", action = "signing_key.create", outcome = "refused", reason = %refused, "audit");
                return Err(refused);
            }
            let doc = SigningKeyDocument::generate()?;
            // Public first: from the moment the private key exists, verifiers can find it.
            publish_staged_keys(client, secrets, Some(&SigningKey::from_document(&doc)?), timing.activation_delay).await?;
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
            crate::token::self_test(&doc)?;
            let published = read_public_set(client, &secrets.public).await?.unwrap_or_default();
            let key = SigningKey::from_document(&doc)?;
            match published.get(&doc.kid) {
                Some(entry) if entry.jwk == *key.public_jwk() => Ok(()),
                _ => Err(KeyError::Source(format!("the pending key '{}' is not in the public key set", doc.kid))),
            }
        }
        RotationStep::Finish => {
            if token_stages.is_empty() {
                return Err(KeyError::Source(format!("version {token} is not a version of the secret")));
            }
            if !token_stages.iter().any(|s| s == AWSCURRENT) {
                // A late promotion is when the previous key stopped signing (see RotationTiming).
                // Recorded before the move, so no promotion goes unrecorded, and dated
                // PROMOTION_ALLOWANCE ahead, so the record never precedes the move it stands for.
                let at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default() + PROMOTION_ALLOWANCE;
                let tag = aws_sdk_secretsmanager::types::Tag::builder().key(PROMOTED_AT_TAG).value(at.as_secs().to_string()).build();
                client.tag_resource().secret_id(secret_id).tags(tag).send().await.map_err(|e| sm_error("TagResource", e))?;
                let current = stages.iter().find(|(_, s)| s.iter().any(|s| s == AWSCURRENT)).map(|(v, _)| v.clone());
                let mut request =
                    client.update_secret_version_stage().secret_id(secret_id).version_stage(AWSCURRENT).move_to_version_id(token);
                if let Some(current) = current {
                    request = request.remove_from_version_id(current);
                }
                request.send().await.map_err(|e| sm_error("UpdateSecretVersionStage", e))?;
                tracing::info!(target: "audit", action = "signing_key.promote", version = token, outcome = "success", "audit");
            }
            // The key that lost AWSPREVIOUS is unpublished only now, after the move: until then
            // it was still staged. Also on a retried step, in case this part did not run.
            publish_staged_keys(client, secrets, None, timing.activation_delay).await?;
            Ok(())
        }
    }
}

/// The label a withdrawal's replacement key carries for the moment between its write and its
/// promotion to `AWSCURRENT`.
const WITHDRAWAL_STAGE: &str = "IAMWITHDRAWAL";

/// What a withdrawal did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Withdrawal {
    /// The key withdrawn: no longer staged, no longer published.
    pub withdrawn: String,
    /// The key that signs from now on (a new one when the withdrawn key was the current one).
    pub signer: String,
    /// Every key still published.
    pub published: Vec<String>,
}

/// Withdraws the signing key `kid` in one step, for a key that is compromised: it stops
/// signing and leaves the public key set now, and every token it signed stops verifying as
/// soon as verifiers drop their cached key set (our functions within their key cache; other
/// verifiers within theirs). That is the price: unlike a rotation, nothing waits for its
/// tokens to expire.
///
/// - The current key: a new key is generated and published active at once, written as the new
///   `AWSCURRENT`, and the withdrawn version loses every label. An older `AWSPREVIOUS` keeps
///   its label and its place in the set; a pending rotation is left to finish or fail.
/// - The previous or pending key: its version loses its label, and the current key signs from
///   now on, even if its activation delay has not passed (its verifiers may not all know it
///   yet: the same price).
/// - A key only in the public set (not staged): it is dropped from the set.
///
/// The promotion tag is set to now, so the next scheduled rotation waits as if the signer had
/// just been promoted. Idempotent: withdrawing a key that is already gone fails with
/// [`KeyError::Source`] naming it, and changes nothing.
pub async fn withdraw(client: &aws_sdk_secretsmanager::Client, secrets: &SigningSecrets, kid: &str) -> Result<Withdrawal, KeyError> {
    let secret_id = secrets.private.as_str();
    let keys = SecretsManagerKeys::new(client.clone(), secrets.clone());
    let described = client.describe_secret().secret_id(secret_id).send().await.map_err(|e| sm_error("DescribeSecret", e))?;
    let stages = described.version_ids_to_stages().cloned().unwrap_or_default();
    let version_at = |stage: &str| stages.iter().find(|(_, s)| s.iter().any(|s| s == stage)).map(|(v, _)| v.clone());
    let mut staged_as = None;
    for stage in [AWSCURRENT, AWSPREVIOUS, AWSPENDING] {
        if keys.staged_key(stage).await?.is_some_and(|(key, _)| key.kid() == kid) {
            staged_as = Some(stage);
            break;
        }
    }
    let set = read_public_set(client, &secrets.public).await?.unwrap_or_default();
    if staged_as.is_none() && set.get(kid).is_none() {
        return Err(KeyError::Source(format!("no signing key '{kid}' is staged or published; nothing was withdrawn")));
    }
    let tag = aws_sdk_secretsmanager::types::Tag::builder().key(PROMOTED_AT_TAG).value(unix_now().to_string()).build();
    client.tag_resource().secret_id(secret_id).tags(tag).send().await.map_err(|e| sm_error("TagResource", e))?;
    let relabel = |stage: String, from: Option<String>, to: Option<String>| async move {
        let request = client.update_secret_version_stage().secret_id(secret_id).version_stage(&stage);
        request
            .set_remove_from_version_id(from)
            .set_move_to_version_id(to)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| sm_error("UpdateSecretVersionStage", e))
    };
    let mut activate_now = None;
    match staged_as {
        Some(AWSCURRENT) => {
            let compromised = version_at(AWSCURRENT);
            let older = version_at(AWSPREVIOUS);
            let doc = SigningKeyDocument::generate()?;
            let replacement = SigningKey::from_document(&doc)?;
            // Public first, active at once: from the moment it is current, it signs.
            publish_staged_keys(client, secrets, Some(&replacement), Duration::ZERO).await?;
            // Staged under a label of its own, then promoted as a rotation's finish promotes.
            let written = client
                .put_secret_value()
                .secret_id(secret_id)
                .secret_string(doc.to_json())
                .version_stages(WITHDRAWAL_STAGE)
                .send()
                .await
                .map_err(|e| sm_error("PutSecretValue", e))?;
            let new_version = written.version_id().map(str::to_owned);
            relabel(AWSCURRENT.into(), compromised.clone(), new_version.clone()).await?;
            relabel(WITHDRAWAL_STAGE.into(), new_version.clone(), None).await?;
            // AWS moves AWSPREVIOUS onto the version AWSCURRENT left: wherever it now is, it goes
            // back to the older key, or away.
            let after = client.describe_secret().secret_id(secret_id).send().await.map_err(|e| sm_error("DescribeSecret", e))?;
            let previous_now = after
                .version_ids_to_stages()
                .and_then(|stages| stages.iter().find(|(_, s)| s.iter().any(|s| s == AWSPREVIOUS)).map(|(v, _)| v.clone()));
            let older = older.filter(|older| Some(older) != compromised.as_ref() && Some(older) != new_version.as_ref());
            if previous_now != older {
                relabel(AWSPREVIOUS.into(), previous_now, older).await?;
            }
        }
        Some(stage) => {
            relabel(stage.into(), version_at(stage), None).await?;
            activate_now = keys.staged_key(AWSCURRENT).await?.map(|(key, _)| key.kid().to_owned());
        }
        None => {}
    }
    // A version keeps AWSPENDING after its rotation finished: every label the withdrawn version
    // still has goes, or a later rotation would publish it again.
    if let Some(withdrawn_version) = staged_as.and_then(version_at) {
        let now = client.describe_secret().secret_id(secret_id).send().await.map_err(|e| sm_error("DescribeSecret", e))?;
        let left = now.version_ids_to_stages().and_then(|stages| stages.get(&withdrawn_version)).cloned().unwrap_or_default();
        for label in left {
            relabel(label, Some(withdrawn_version.clone()), None).await?;
        }
    }
    // The set now follows the labels, which no longer name the withdrawn key.
    let published_set = publish_staged_keys(client, secrets, None, Duration::ZERO).await?;
    let mut rebuilt = published_set.clone();
    rebuilt.keys.retain(|k| k.kid() != kid);
    if let Some(current) = activate_now {
        let now = unix_now();
        for key in rebuilt.keys.iter_mut().filter(|k| k.kid() == current && k.activates_at > now) {
            key.activates_at = now;
        }
    }
    if rebuilt != published_set {
        put_or_create_secret(client, &secrets.public, &rebuilt.to_json()).await?;
    }
    let signer = match keys.load().await?.signer {
        Some(signer) => signer.kid().to_owned(),
        None => return Err(KeyError::Source("no key signs after the withdrawal".into())),
    };
    let published: Vec<String> = rebuilt.keys.iter().map(|k| k.kid().to_owned()).collect();
    tracing::warn!(target: "audit", action = "signing_key.withdraw", kid, signer = %signer, published = ?published, outcome = "success", "audit");
    Ok(Withdrawal { withdrawn: kid.to_owned(), signer, published })
}

struct Cached {
    service: Arc<TokenService>,
    loaded_at: Instant,
}

/// The token service built from the current key set, reloaded after `ttl`: in the background
/// while the keys in hand are less than two TTLs old (the request that noticed is not kept
/// waiting on three secret reads), on the request path after that (an instance thawed after a
/// long freeze must not sign with a key rotated out meanwhile). A failed reload keeps serving
/// the keys it has and tries again a little later.
pub struct Keyring {
    inner: Arc<KeyringInner>,
}

struct KeyringInner {
    settings: TokenSettings,
    source: Arc<dyn KeySource>,
    ttl: Duration,
    cached: RwLock<Cached>,
    reloading: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring").field("settings", &self.inner.settings).field("ttl", &self.inner.ttl).finish_non_exhaustive()
    }
}

const RETRY_AFTER_FAILED_RELOAD: Duration = Duration::from_secs(30);

fn build(settings: &TokenSettings, keys: KeySet) -> Result<TokenService, KeyError> {
    TokenService::new(settings.clone(), keys.signer, keys.published)
}

impl Keyring {
    /// Loads the keys once: at cold start.
    pub async fn new(settings: TokenSettings, source: Arc<dyn KeySource>, ttl: Duration) -> Result<Self, KeyError> {
        let service = Arc::new(build(&settings, source.load().await?)?);
        let inner = KeyringInner {
            settings,
            source,
            ttl,
            cached: RwLock::new(Cached { service, loaded_at: Instant::now() }),
            reloading: Arc::new(tokio::sync::Mutex::new(())),
        };
        Ok(Self { inner: Arc::new(inner) })
    }

    pub fn settings(&self) -> &TokenSettings {
        &self.inner.settings
    }

    pub async fn current(&self) -> Arc<TokenService> {
        let (service, age) = {
            let cached = self.inner.cached.read().unwrap_or_else(|p| p.into_inner());
            (cached.service.clone(), cached.loaded_at.elapsed())
        };
        if age < self.inner.ttl {
            return service;
        }
        // One reload at a time; everyone else keeps using the keys in hand.
        let Ok(guard) = self.inner.reloading.clone().try_lock_owned() else {
            return service;
        };
        if age < self.inner.ttl * 2 {
            let inner = self.inner.clone();
            tokio::spawn(async move {
                inner.reload().await;
                drop(guard);
            });
            return service;
        }
        let fresh = self.inner.reload().await;
        drop(guard);
        fresh.unwrap_or(service)
    }
}

impl KeyringInner {
    /// Reads the keys and puts them in place; `None` (and a retry scheduled a little later)
    /// when they could not be read. The caller holds `reloading`.
    async fn reload(&self) -> Option<Arc<TokenService>> {
        match self.source.load().await.and_then(|keys| build(&self.settings, keys)) {
            Ok(fresh) => {
                let fresh = Arc::new(fresh);
                *self.cached.write().unwrap_or_else(|p| p.into_inner()) = Cached { service: fresh.clone(), loaded_at: Instant::now() };
                Some(fresh)
            }
            Err(e) => {
                tracing::warn!(error = %e, "signing keys could not be reloaded; keeping the current ones");
                let mut cached = self.cached.write().unwrap_or_else(|p| p.into_inner());
                cached.loaded_at = Instant::now() - self.ttl + RETRY_AFTER_FAILED_RELOAD.min(self.ttl);
                None
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

    /// A key source whose loads wait for the test's word, and that answers the latest key.
    struct GatedSource {
        docs: std::sync::Mutex<Vec<SigningKeyDocument>>,
        gate: tokio::sync::Semaphore,
    }

    #[async_trait]
    impl KeySource for GatedSource {
        async fn load(&self) -> Result<KeySet, KeyError> {
            self.gate.acquire().await.expect("open").forget();
            let doc = self.docs.lock().unwrap().last().cloned().expect("a key");
            Ok(KeySet { signer: Some(SigningKey::from_document(&doc)?), published: Vec::new() })
        }
    }

    fn settings() -> TokenSettings {
        TokenSettings { issuer: "http://t".into(), audiences: vec!["a".into()], management_audience: "m".into(), lifetime_secs: 60 }
    }

    fn kid_of(service: &TokenService) -> String {
        service.jwks().keys[0].kid.clone()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stale_keyring_reloads_in_the_background_and_a_very_stale_one_in_line() {
        let (first, second, third) =
            (SigningKeyDocument::generate().unwrap(), SigningKeyDocument::generate().unwrap(), SigningKeyDocument::generate().unwrap());
        let source = Arc::new(GatedSource { docs: std::sync::Mutex::new(vec![first.clone()]), gate: tokio::sync::Semaphore::new(1) });
        let ttl = Duration::from_millis(300);
        let keyring = Keyring::new(settings(), source.clone(), ttl).await.unwrap();
        source.docs.lock().unwrap().push(second.clone());
        tokio::time::sleep(ttl + Duration::from_millis(50)).await;
        // Stale, and the source is held shut: the keys in hand answer at once (a reload in line
        // would wait on the gate, and the timeout would say so).
        let served = tokio::time::timeout(Duration::from_secs(5), keyring.current()).await.expect("not kept waiting");
        assert_eq!(kid_of(&served), first.kid);
        source.gate.add_permits(1);
        let mut kid = first.kid.clone();
        for _ in 0..100 {
            kid = kid_of(&*keyring.current().await);
            if kid == second.kid {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(kid, second.kid, "the background reload put the new key in place");
        // Older than two TTLs (a long freeze): the request waits for the fresh keys.
        source.docs.lock().unwrap().push(third.clone());
        tokio::time::sleep(ttl * 2 + Duration::from_millis(50)).await;
        source.gate.add_permits(1);
        assert_eq!(kid_of(&*keyring.current().await), third.kid);
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
