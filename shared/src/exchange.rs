//! The exchange of an API key for an access token, in four named phases: look the key up,
//! prove its secret, decide what the token grants, then sign it and record the use. The order
//! is the security: nothing about the key's principal is revealed, and no argon2 is paid,
//! before the secret is proved; nothing leaves before the use is recorded against a still
//! Active credential and principal.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use secrecy::SecretString;

use crate::api_key::{ApiKey, KeyFormatError};
use crate::audit::AuditEntry;
use crate::hashing::{self, HashError, Verdict};
use crate::ids::{KeyId, OrgId, Permission, PrincipalId, RoleId};
use crate::model::{self, Actor, Credential, Principal, Refusal, UseOutcome, UseWindow};
use crate::restrictions::RestrictionRefusal;
use crate::service::{Iam, audit};
use crate::store::StoreError;
use crate::token::{AccessClaims, Grant, parse_scope};

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// Unknown key id, wrong secret, bad checksum or malformed key: one answer for all.
    #[error("invalid client: {0}")]
    InvalidClient(&'static str),
    /// The secret was proved, but the credential or principal may not authenticate.
    #[error("{0}")]
    Refused(Refusal),
    #[error("{0}")]
    InvalidScope(String),
    #[error("{0}")]
    InvalidTarget(String),
    /// The secret was proved, but the credential's own restrictions refuse this request.
    #[error("{0}")]
    Restricted(RestrictionRefusal),
    /// The key was already exchanged as often as its per-second limit allows.
    #[error("the API key was exchanged {0} times within one second, its limit")]
    OverKeyLimit(u32),
    /// The store refused for capacity (a key hotter than its item serves): like the limit,
    /// the client should reuse its token or retry later.
    #[error("the store throttled the exchange")]
    StoreThrottled,
    #[error("store unavailable")]
    Store(StoreError),
    #[error("hashing failed")]
    Hash(#[from] HashError),
    #[error("signing failed: {0}")]
    Sign(String),
    /// A grant that is not (or no longer) good: a sign-in code unknown, used, expired or
    /// presented with the wrong verifier.
    #[error("{0}")]
    InvalidGrant(&'static str),
    /// A workload's token was not admitted by the service account's trust policies.
    #[error("{0}")]
    Federation(crate::federation::FederationRefusal),
}

pub struct ExchangeRequest {
    pub key: Result<ApiKey, KeyFormatError>,
    pub scope: Option<String>,
    pub audience: Option<String>,
    /// The caller's network address, when known: recorded in the audit line of a refusal.
    pub source: Option<String>,
}

#[derive(Debug)]
pub struct IssuedToken {
    pub access_token: SecretString,
    pub expires_in: u64,
    pub scope: String,
    pub claims: AccessClaims,
    /// Whether the secret was proved by this instance's warm cache rather than argon2.
    pub verified_from_cache: bool,
}

/// A proved secret: the fast check to store when the credential predates checks, and whether
/// the warm cache proved it.
pub(crate) struct ProvedSecret {
    check_to_store: Option<String>,
    from_cache: bool,
}

impl From<StoreError> for ExchangeError {
    fn from(e: StoreError) -> Self {
        match e {
            // DynamoDB's throttling of a hot key is the limit's business, not a failure.
            StoreError::Throttled(_) => ExchangeError::StoreThrottled,
            other => ExchangeError::Store(other),
        }
    }
}

/// What the request asked for, and where it came from.
struct Asked<'a> {
    scope: Option<&'a str>,
    audience: Option<&'a str>,
    source: Option<&'a str>,
}

const WRONG_KEY: ExchangeError = ExchangeError::InvalidClient("unknown key id or wrong secret");

/// What a proved key may have: the token's audience, roles and scope, decided at `now`.
struct Decision {
    principal: Principal,
    audience: String,
    roles: Vec<RoleId>,
    scope: Vec<Permission>,
    now: DateTime<Utc>,
    /// Where the request came from, recorded as where the credential was last used from.
    source: Option<String>,
}

impl Iam {
    /// Exchanges an API key for an access token, and audits the outcome.
    pub async fn exchange(&self, request: ExchangeRequest) -> Result<IssuedToken, ExchangeError> {
        let key_id = request.key.as_ref().map(|k| k.key_id().to_string()).unwrap_or_default();
        let source = request.source.clone();
        // Who is asking is known only once the secret is proved; until then the caller is anonymous.
        let mut proved = None;
        let result = self.run_exchange(request, &mut proved).await;
        match (&result, proved) {
            (Ok(t), _) => audit("token.exchange", &t.claims.sub, &t.claims.org_id, &key_id, Ok(())),
            (Err(e), Some((principal, org))) => {
                audit("token.exchange", principal.as_str(), org.as_str(), &key_id, Err(e));
                // Proved the secret, then refused: who it was is known, so the trail keeps it.
                if let Some(reason) = crate::audit::refusals::exchange_reason(e)
                    && let Ok(key) = KeyId::parse(&key_id)
                {
                    let entry = AuditEntry::new(&org, &Actor::principal(&principal), "token.exchange", model::now())
                        .acting_with(&key)
                        .principal(&principal)
                        .key(&key)
                        .refused(&reason)
                        .detail(serde_json::json!({"message": e.to_string()}));
                    self.record_refusal(entry).await;
                }
            }
            (Err(e), None) => {
                let source = source.as_deref().unwrap_or("unknown");
                tracing::info!(target: "audit", action = "token.exchange", actor = "anonymous", org = "", target_id = key_id, source, outcome = "failure", reason = %e, "audit")
            }
        }
        result
    }

    async fn run_exchange(
        &self,
        request: ExchangeRequest,
        proved: &mut Option<(PrincipalId, OrgId)>,
    ) -> Result<IssuedToken, ExchangeError> {
        let (key, credential) = self.look_up(request.key).await?;
        let proved_secret = self.prove_secret(&key, &credential).await?;
        *proved = Some((credential.principal_id.clone(), credential.org_id.clone()));
        // A key already over its limit costs no principal read and no write: a fleet hammering
        // one key meets the limit, never the store's own throttling.
        let per_second = self.limits.exchanges_per_key_per_second;
        if UseWindow::is_full(credential.recent_uses, model::now(), per_second) {
            return Err(ExchangeError::OverKeyLimit(per_second));
        }
        let asked = Asked { scope: request.scope.as_deref(), audience: request.audience.as_deref(), source: request.source.as_deref() };
        let decision = self.decide(&credential, asked).await?;
        self.sign_and_record(&credential, decision, proved_secret).await
    }

    /// Phase 1: the key's format and checksum, and its credential by key id (unknown: refused,
    /// with no argon2, so no decoy is needed either).
    async fn look_up(&self, key: Result<ApiKey, KeyFormatError>) -> Result<(ApiKey, Credential), ExchangeError> {
        let key = key.map_err(|_| ExchangeError::InvalidClient("malformed key"))?;
        let credential = self.store.get_credential(key.key_id()).await?.ok_or(WRONG_KEY)?;
        Ok((key, credential))
    }

    /// Phase 2: the secret. A wrong or forged one costs one SHA-256 against the stored check;
    /// only a caller who knows the secret (or the 32 bits the check keeps, and then only for
    /// one key id at a time) reaches argon2, which is bounded by the hasher's slots. Answers
    /// the check to store when the credential predates checks (it gains one on this use).
    pub(crate) async fn prove_secret(&self, key: &ApiKey, credential: &Credential) -> Result<ProvedSecret, ExchangeError> {
        if credential.secret_check.as_deref().is_some_and(|check| !hashing::passes_secret_check(key.secret(), check)) {
            return Err(WRONG_KEY);
        }
        let verdict = self.hasher.verify_noting_cache(&credential.org_id, key.key_id(), key.secret(), &credential.secret_hash).await?;
        let Verdict::Matched { from_cache } = verdict else {
            return Err(WRONG_KEY);
        };
        Ok(ProvedSecret { check_to_store: credential.secret_check.is_none().then(|| hashing::secret_check(key.secret())), from_cache })
    }

    /// Phase 3: with the secret proved, whether the key may authenticate (the caller may now
    /// learn why not), and what its token grants: the audience asked for (or the first
    /// downstream one), and the scope asked for within what its roles hold and the credential's
    /// own ceiling allows. `iam:` power travels only to the management API. The credential's
    /// own restrictions (source, audiences, ceiling) refuse with their reason.
    async fn decide(&self, credential: &Credential, asked: Asked<'_>) -> Result<Decision, ExchangeError> {
        let (principal, role_ids) = self
            .store
            .get_principal_with_roles(&credential.org_id, &credential.principal_id)
            .await?
            .ok_or(ExchangeError::Refused(Refusal::PrincipalRevoked))?;
        let now = model::now();
        model::may_authenticate(credential, &principal, now).map_err(ExchangeError::Refused)?;
        self.policy_for_exchange(&credential.org_id).await?.admits_use(credential, now).map_err(ExchangeError::Refused)?;
        let restrictions = &credential.restrictions;
        restrictions.check_source(asked.source).map_err(ExchangeError::Restricted)?;

        let settings = self.tokens.settings();
        let audience = match asked.audience {
            // The first downstream audience the credential may use: a credential restricted to
            // others gets one of its own rather than a refusal for asking nothing.
            None => settings
                .audiences
                .iter()
                .find(|a| restrictions.allows_audience(a))
                .map(String::as_str)
                .ok_or_else(|| ExchangeError::Restricted(RestrictionRefusal::Audience(settings.audiences[0].clone())))?,
            Some(a) if settings.is_management(a) => settings.management_audience.as_str(),
            Some(a) => settings
                .audiences
                .iter()
                .find(|allowed| *allowed == a)
                .map(String::as_str)
                .ok_or_else(|| ExchangeError::InvalidTarget("the requested audience is not allowed".into()))?,
        };
        if !restrictions.allows_audience(audience) {
            return Err(ExchangeError::Restricted(RestrictionRefusal::Audience(audience.to_owned())));
        }
        let roles = self.granting_roles(&principal, &role_ids).await?;
        let mut held: BTreeSet<Permission> = roles.iter().flat_map(|r| r.permissions.iter().cloned()).collect();
        let management = settings.is_management(audience);
        if !management {
            held.retain(|p| !p.as_str().starts_with("iam:"));
        }
        held.retain(|p| restrictions.within_ceiling(p.as_str()));
        let scope: Vec<Permission> = match asked.scope {
            None => held.into_iter().collect(),
            Some(raw) => {
                let wanted = parse_scope(raw).map_err(ExchangeError::InvalidScope)?;
                if let Some(iam) = wanted.iter().find(|p| !management && p.as_str().starts_with("iam:")) {
                    return Err(ExchangeError::InvalidScope(format!(
                        "'{iam}' is granted only in tokens for the management audience '{}'",
                        settings.management_audience
                    )));
                }
                if let Some(beyond) = wanted.iter().find(|p| !restrictions.within_ceiling(p.as_str())) {
                    return Err(ExchangeError::Restricted(RestrictionRefusal::Permission(beyond.clone())));
                }
                if let Some(missing) = wanted.iter().find(|p| !held.contains(*p)) {
                    return Err(ExchangeError::InvalidScope(format!("the principal does not hold '{missing}'")));
                }
                wanted
            }
        };
        let roles = roles.into_iter().map(|r| r.id).collect();
        Ok(Decision { principal, audience: audience.to_owned(), roles, scope, now, source: asked.source.map(str::to_owned) })
    }

    /// Phase 4: sign, then record the use. Recording succeeds only while the credential and its
    /// principal are still Active and the key is under its per-second limit, so a revoke or
    /// suspension that returned while this exchange was in flight (during argon2, say) still
    /// wins, and the signed token is dropped.
    async fn sign_and_record(
        &self,
        credential: &Credential,
        decision: Decision,
        proved_secret: ProvedSecret,
    ) -> Result<IssuedToken, ExchangeError> {
        let Decision { principal, audience, roles, scope, now, source } = decision;
        let grant = Grant {
            principal_id: &principal.id,
            org_id: &principal.org_id,
            key_id: &credential.key_id,
            roles: &roles,
            scope: &scope,
            audience: &audience,
        };
        let (token, claims) = self.tokens.current().await.sign(&grant, now).map_err(|e| ExchangeError::Sign(e.to_string()))?;
        let per_second = self.limits.exchanges_per_key_per_second;
        let outcome = self
            .store
            .record_credential_use(credential, now, source.as_deref(), proved_secret.check_to_store.as_deref(), per_second)
            .await?;
        if outcome == UseOutcome::OverLimit {
            return Err(ExchangeError::OverKeyLimit(per_second));
        }
        if outcome == UseOutcome::NoLongerActive {
            let fresh_credential = self.store.get_credential(&credential.key_id).await?;
            let fresh_principal = self.store.get_principal(&principal.org_id, &principal.id).await?;
            let reason = match (fresh_credential, fresh_principal) {
                (Some(c), Some(p)) => model::may_authenticate(&c, &p, model::now()).err(),
                _ => None,
            };
            return Err(ExchangeError::Refused(reason.unwrap_or(Refusal::CredentialRevoked)));
        }
        Ok(IssuedToken {
            access_token: SecretString::from(token),
            expires_in: self.tokens.settings().lifetime_secs,
            scope: claims.scope.clone(),
            claims,
            verified_from_cache: proved_secret.from_cache,
        })
    }
}
