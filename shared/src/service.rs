//! The operations of the product, over any `Store`. Each one checks the caller's permission,
//! lets the model decide, writes through the store, and emits one audit event.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use secrecy::SecretString;

use crate::error::DomainError;
use crate::hashing::{HashError, SecretHasher};
use crate::idempotency::{IdempotencyClaim, IdempotencyKey, IdempotentOutcome, key_reused};
use crate::ids::{KeyId, OrgId, Permission, PrincipalId, RoleId};
use crate::key::{ApiKey, KeyFormatError};
use crate::keys::Keyring;
use crate::model::{
    self, Actor, Credential, CredentialStatus, Principal, PrincipalChange, PrincipalStatus, PrincipalType, Refusal, Role, RoleAssignment,
};
use crate::roles;
use crate::store::{Page, Store, StoreError};
use crate::token::{AccessClaims, Grant, TokenRejection, key_id_of, parse_scope};

pub const PERM_API_KEYS_READ: &str = "iam:api-keys:read";
pub const PERM_API_KEYS_WRITE: &str = "iam:api-keys:write";
pub const PERM_CREDENTIALS_WRITE: &str = "iam:credentials:write";
pub const PERM_ROLES_WRITE: &str = "iam:roles:write";
pub const PERM_ROLE_ASSIGNMENTS_WRITE: &str = "iam:role-assignments:write";

/// An authenticated management caller: a verified access token whose credential and principal
/// were re-read and still authenticate.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal_id: PrincipalId,
    pub org_id: OrgId,
    pub key_id: KeyId,
    pub claims: AccessClaims,
    /// What the caller may do now: the token's scope, less anything its roles no longer grant.
    pub permissions: BTreeSet<String>,
}

impl Caller {
    pub fn actor(&self) -> Actor {
        Actor::principal(&self.principal_id)
    }

    pub fn require(&self, permission: &str) -> Result<(), DomainError> {
        if self.permissions.contains(permission) { Ok(()) } else { Err(DomainError::Forbidden(permission.to_owned())) }
    }

    /// Nobody grants management power they lack: a role carrying `iam:` permissions may be
    /// defined or assigned only by a caller who holds each of them. Permissions of other
    /// services (`iot:devices:provision`, say) are the organisation's to hand out.
    fn require_to_grant(&self, permissions: &[Permission]) -> Result<(), DomainError> {
        match permissions.iter().find(|p| p.as_str().starts_with("iam:") && !self.permissions.contains(p.as_str())) {
            Some(missing) => Err(DomainError::Forbidden(missing.to_string())),
            None => Ok(()),
        }
    }
}

/// Why a bearer token was not accepted. Logged, never sent: the client sees one 401.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("token rejected: {0}")]
    Token(#[from] TokenRejection),
    #[error("token names a credential that does not exist")]
    UnknownCredential,
    #[error("token's principal may no longer authenticate: {0}")]
    Refused(Refusal),
    #[error("store unavailable")]
    Unavailable(#[from] StoreError),
}

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
    /// Too many wrong secrets for this key from this source address in the current window.
    #[error("too many failed attempts")]
    Throttled { retry_after_secs: u64 },
    #[error("store unavailable")]
    Store(#[from] StoreError),
    #[error("hashing failed")]
    Hash(#[from] HashError),
    #[error("signing failed: {0}")]
    Sign(String),
}

pub struct ExchangeRequest {
    pub key: Result<ApiKey, KeyFormatError>,
    pub scope: Option<String>,
    pub audience: Option<String>,
    /// The caller's network address, when known: failed attempts are counted per key and address.
    pub source: Option<String>,
}

/// More wrong secrets than this for one key from one address within a window are refused
/// without running argon2 until the window ends.
pub const MAX_FAILED_ATTEMPTS: u32 = 10;
pub const FAILED_ATTEMPT_WINDOW_SECS: i64 = 60;

#[derive(Debug)]
pub struct IssuedToken {
    pub access_token: SecretString,
    pub expires_in: u64,
    pub scope: String,
    pub claims: AccessClaims,
}

#[derive(serde::Serialize)]
pub struct NewPrincipal {
    pub display_name: String,
    pub status: Option<PrincipalStatus>,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(serde::Serialize)]
pub struct NewRole {
    pub name: String,
    pub description: Option<String>,
    pub permissions: Vec<Permission>,
    pub principal_types: Vec<PrincipalType>,
}

/// What a creating operation answers: the object, and whether this is the replay of an earlier
/// request with the same `Idempotency-Key` (nothing was created this time).
#[derive(Debug, Clone)]
pub struct Created<T> {
    pub value: T,
    pub replayed: bool,
}

impl<T> Created<T> {
    fn new(value: T) -> Self {
        Self { value, replayed: false }
    }
    fn replay(value: T) -> Self {
        Self { value, replayed: true }
    }
}

/// One audit event per state change and per exchange. Never carries a secret: only ids.
fn audit(action: &str, actor: &str, org: &str, target: &str, outcome: Result<(), &dyn std::fmt::Display>) {
    match outcome {
        Ok(()) => {
            tracing::info!(target: "audit", action, actor, org, target_id = target, outcome = "success", "audit")
        }
        Err(reason) => {
            let reason = reason.to_string();
            tracing::info!(target: "audit", action, actor, org, target_id = target, outcome = "failure", reason, "audit")
        }
    }
}

fn audited<T>(action: &str, caller: &Caller, target: &str, result: Result<T, DomainError>) -> Result<T, DomainError> {
    let outcome = result.as_ref().map(|_| ()).map_err(|e| e as &dyn std::fmt::Display);
    audit(action, caller.actor().0.as_str(), caller.org_id.as_str(), target, outcome);
    result
}

/// Where failed attempts for one key from one address are counted: fixed windows.
struct AttemptCounter {
    key: String,
    window_start: i64,
}

impl AttemptCounter {
    fn new(key_id: &KeyId, source: &str) -> Self {
        let now = model::now().timestamp();
        // Addresses are short; a longer string is not an address we trust to be one.
        let source: String = source.chars().take(64).collect();
        Self { key: format!("{key_id}|{source}"), window_start: now - now.rem_euclid(FAILED_ATTEMPT_WINDOW_SECS) }
    }

    fn expires_at(&self) -> i64 {
        self.window_start + 2 * FAILED_ATTEMPT_WINDOW_SECS
    }

    fn retry_after_secs(&self) -> u64 {
        let end = self.window_start + FAILED_ATTEMPT_WINDOW_SECS;
        (end - model::now().timestamp()).clamp(1, FAILED_ATTEMPT_WINDOW_SECS) as u64
    }
}

pub struct Iam {
    pub store: Arc<dyn Store>,
    pub hasher: SecretHasher,
    pub tokens: Keyring,
}

impl std::fmt::Debug for Iam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Iam").field("tokens", &self.tokens).finish_non_exhaustive()
    }
}

impl Iam {
    pub fn new(store: Arc<dyn Store>, hasher: SecretHasher, tokens: Keyring) -> Self {
        Self { store, hasher, tokens }
    }

    /// Verifies a management bearer token and re-reads its credential and principal, so a
    /// revoked or suspended admin loses access at once rather than at token expiry.
    pub async fn authenticate_bearer(&self, token: &str) -> Result<Caller, AuthError> {
        let audience = &self.tokens.settings().audiences[0];
        let claims = self.tokens.current().await.verify(token, audience)?;
        let (Some(key_id), Ok(org_id), Ok(principal_id)) =
            (key_id_of(&claims), OrgId::parse(&claims.org_id), PrincipalId::parse(&claims.sub))
        else {
            return Err(AuthError::Token(TokenRejection::Invalid("claims do not name an API-key principal".into())));
        };
        let credential = self.store.get_credential(&key_id).await?.ok_or(AuthError::UnknownCredential)?;
        let principal = self.store.get_principal(&org_id, &principal_id).await?.ok_or(AuthError::UnknownCredential)?;
        model::may_authenticate(&credential, &principal, model::now()).map_err(AuthError::Refused)?;
        // An unassigned role stops granting at once, not when the token expires.
        let (_, held) = self.entitlements(&principal).await?;
        let permissions = claims.permissions().filter(|p| held.iter().any(|h| h.as_str() == *p)).map(str::to_owned).collect();
        Ok(Caller { principal_id, org_id, key_id, claims, permissions })
    }

    async fn principal_of(&self, caller: &Caller, id: &PrincipalId) -> Result<Principal, DomainError> {
        self.store.get_principal(&caller.org_id, id).await?.ok_or(DomainError::NotFound("principal"))
    }

    /// The first outcome of a request with this claim's key, if there was one (and it was
    /// this same request: otherwise 422).
    async fn earlier_outcome(&self, claim: Option<&IdempotencyClaim>) -> Result<Option<IdempotentOutcome>, DomainError> {
        let Some(claim) = claim else { return Ok(None) };
        match self.store.get_idempotency_record(&claim.org_id, &claim.slot).await? {
            Some(record) if record.is_live(model::now()) => claim.replay(record).map(Some),
            _ => Ok(None),
        }
    }

    /// After losing the race for a key to a concurrent request: its outcome, now stored.
    async fn outcome_of_winner(&self, claim: Option<&IdempotencyClaim>) -> Result<IdempotentOutcome, DomainError> {
        self.earlier_outcome(claim)
            .await?
            .ok_or_else(|| DomainError::conflict("a concurrent request with this Idempotency-Key did not finish; retry"))
    }

    pub async fn create_principal(
        &self,
        caller: &Caller,
        input: NewPrincipal,
        idempotency: Option<&IdempotencyKey>,
    ) -> Result<Created<Principal>, DomainError> {
        caller.require(PERM_API_KEYS_WRITE)?;
        let claim = idempotency.map(|k| IdempotencyClaim::new(&caller.org_id, &caller.principal_id, k, "principal.create", &input));
        let replayed = |outcome| match outcome {
            IdempotentOutcome::Principal { principal } => Ok(Created::replay(principal)),
            _ => Err(key_reused()),
        };
        if let Some(outcome) = self.earlier_outcome(claim.as_ref()).await? {
            return replayed(outcome);
        }
        let result = async {
            let now = model::now();
            let p = Principal::new(caller.org_id.clone(), &input.display_name, input.status, input.expires_at, caller.actor(), now)?;
            let record = claim.as_ref().map(|c| c.record(IdempotentOutcome::Principal { principal: p.clone() }, now));
            match self.store.create_principal(&p, record.as_ref()).await {
                Ok(()) => Ok(Created::new(p)),
                Err(StoreError::IdempotencyKeyTaken) => replayed(self.outcome_of_winner(claim.as_ref()).await?),
                Err(e) => Err(e.into()),
            }
        }
        .await;
        if let Ok(created) = &result
            && created.replayed
        {
            return result;
        }
        let target = result.as_ref().map(|c| c.value.id.to_string()).unwrap_or_default();
        audited("principal.create", caller, &target, result)
    }

    pub async fn list_principals(
        &self,
        caller: &Caller,
        limit: usize,
        after: Option<&PrincipalId>,
    ) -> Result<Page<Principal>, DomainError> {
        caller.require(PERM_API_KEYS_READ)?;
        Ok(self.store.list_principals(&caller.org_id, limit, after).await?)
    }

    pub async fn get_principal(&self, caller: &Caller, id: &PrincipalId) -> Result<Principal, DomainError> {
        caller.require(PERM_API_KEYS_READ)?;
        self.principal_of(caller, id).await
    }

    /// With `if_match` (the version the caller last read, from its ETag) the change applies only
    /// to that version; a concurrent change in between fails it with 412 rather than being
    /// silently overwritten.
    pub async fn update_principal(
        &self,
        caller: &Caller,
        id: &PrincipalId,
        change: PrincipalChange,
        if_match: Option<u64>,
    ) -> Result<Principal, DomainError> {
        caller.require(PERM_API_KEYS_WRITE)?;
        let stale = || DomainError::PreconditionFailed("the principal has changed since it was read (If-Match); read it again".into());
        let result = async {
            let current = self.principal_of(caller, id).await?;
            if if_match.is_some_and(|v| v != current.version) {
                return Err(stale());
            }
            match current.apply(&change, model::now())? {
                None => Ok(current),
                Some(next) => match self.store.update_principal(&next, current.version).await {
                    Ok(()) => Ok(next),
                    Err(StoreError::Conflict(_)) if if_match.is_some() => Err(stale()),
                    Err(e) => Err(e.into()),
                },
            }
        }
        .await;
        audited("principal.update", caller, id.as_str(), result)
    }

    pub async fn issue_credential(
        &self,
        caller: &Caller,
        id: &PrincipalId,
        name: &str,
        expires_at: Option<DateTime<Utc>>,
        idempotency: Option<&IdempotencyKey>,
    ) -> Result<(Credential, ApiKey), DomainError> {
        caller.require(PERM_CREDENTIALS_WRITE)?;
        let claim = idempotency
            .map(|k| IdempotencyClaim::new(&caller.org_id, &caller.principal_id, k, "credential.issue", &(id, name, expires_at)));
        // The secret of an earlier issue cannot be shown again: name it, so it can be revoked.
        let already_issued = |outcome| match outcome {
            IdempotentOutcome::Credential { key_id } => DomainError::AlreadyIssued(key_id),
            _ => key_reused(),
        };
        if let Some(outcome) = self.earlier_outcome(claim.as_ref()).await? {
            return Err(already_issued(outcome));
        }
        let result = async {
            let principal = self.principal_of(caller, id).await?;
            let now = model::now();
            // Validate before paying for argon2.
            Credential::new(&principal, KeyId::generate(), name, expires_at, String::new(), caller.actor(), now)?;
            let key = ApiKey::generate();
            let hash =
                self.hasher.hash(key.secret()).await.map_err(|e| DomainError::Unavailable(StoreError::Unavailable(e.to_string())))?;
            let credential = Credential::new(&principal, key.key_id().clone(), name, expires_at, hash, caller.actor(), now)?;
            let record = claim.as_ref().map(|c| c.record(IdempotentOutcome::Credential { key_id: credential.key_id.clone() }, now));
            match self.store.insert_credential(&credential, now, record.as_ref()).await {
                Ok(()) => Ok((credential, key)),
                Err(StoreError::IdempotencyKeyTaken) => Err(already_issued(self.outcome_of_winner(claim.as_ref()).await?)),
                Err(e) => Err(e.into()),
            }
        }
        .await;
        if let Err(DomainError::AlreadyIssued(_)) = &result {
            return result;
        }
        let target = result.as_ref().map(|(c, _)| c.key_id.to_string()).unwrap_or_else(|_| id.to_string());
        audited("credential.issue", caller, &target, result)
    }

    pub async fn list_credentials(&self, caller: &Caller, id: &PrincipalId, include_all: bool) -> Result<Vec<Credential>, DomainError> {
        caller.require(PERM_API_KEYS_READ)?;
        self.principal_of(caller, id).await?;
        let now = model::now();
        let mut all = self.store.list_credentials(&caller.org_id, id).await?;
        if !include_all {
            all.retain(|c| c.status_at(now) == CredentialStatus::Active);
        }
        Ok(all)
    }

    pub async fn revoke_credential(&self, caller: &Caller, id: &PrincipalId, key_id: &KeyId) -> Result<Credential, DomainError> {
        caller.require(PERM_CREDENTIALS_WRITE)?;
        let result = async { Ok(self.store.revoke_credential(&caller.org_id, id, key_id, &caller.actor(), model::now()).await?) }.await;
        audited("credential.revoke", caller, key_id.as_str(), result)
    }

    /// Built-in roles first, then the organisation's own.
    pub async fn list_roles(&self, caller: &Caller) -> Result<Vec<Role>, DomainError> {
        caller.require(PERM_API_KEYS_READ)?;
        let mut all: Vec<Role> = roles::builtins().to_vec();
        let mut own = self.store.list_org_roles(&caller.org_id).await?;
        own.sort_by(|a, b| a.name.cmp(&b.name));
        all.extend(own);
        Ok(all)
    }

    pub async fn create_role(
        &self,
        caller: &Caller,
        input: NewRole,
        idempotency: Option<&IdempotencyKey>,
    ) -> Result<Created<Role>, DomainError> {
        caller.require(PERM_ROLES_WRITE)?;
        caller.require_to_grant(&input.permissions)?;
        let claim = idempotency.map(|k| IdempotencyClaim::new(&caller.org_id, &caller.principal_id, k, "role.create", &input));
        let replayed = |outcome| match outcome {
            IdempotentOutcome::Role { role } => Ok(Created::replay(role)),
            _ => Err(key_reused()),
        };
        if let Some(outcome) = self.earlier_outcome(claim.as_ref()).await? {
            return replayed(outcome);
        }
        let result = async {
            let now = model::now();
            let role = Role::new_org_role(
                caller.org_id.clone(),
                &input.name,
                input.description.as_deref(),
                input.permissions,
                input.principal_types,
                caller.actor(),
                now,
            )?;
            let record = claim.as_ref().map(|c| c.record(IdempotentOutcome::Role { role: role.clone() }, now));
            match self.store.create_role(&role, record.as_ref()).await {
                Ok(()) => Ok(Created::new(role)),
                Err(StoreError::IdempotencyKeyTaken) => replayed(self.outcome_of_winner(claim.as_ref()).await?),
                Err(e) => Err(e.into()),
            }
        }
        .await;
        if let Ok(created) = &result
            && created.replayed
        {
            return result;
        }
        let target = result.as_ref().map(|c| c.value.id.to_string()).unwrap_or_default();
        audited("role.create", caller, &target, result)
    }

    /// A role as this organisation sees it: built-in, or its own. Another organisation's role
    /// looks exactly like a missing one.
    async fn role_for(&self, org: &OrgId, id: &RoleId) -> Result<Option<Role>, StoreError> {
        match roles::builtin(id.as_str()) {
            Some(r) => Ok(Some(r.clone())),
            None => self.store.get_org_role(org, id).await,
        }
    }

    pub async fn list_role_assignments(&self, caller: &Caller, id: &PrincipalId) -> Result<Vec<RoleAssignment>, DomainError> {
        caller.require(PERM_API_KEYS_READ)?;
        self.principal_of(caller, id).await?;
        Ok(self.store.list_role_assignments(&caller.org_id, id).await?)
    }

    pub async fn assign_role(&self, caller: &Caller, id: &PrincipalId, role_id: &RoleId) -> Result<(RoleAssignment, bool), DomainError> {
        caller.require(PERM_ROLE_ASSIGNMENTS_WRITE)?;
        let result = async {
            self.principal_of(caller, id).await?;
            let role = self.role_for(&caller.org_id, role_id).await?.ok_or_else(|| {
                DomainError::unprocessable(format!("role '{role_id}' does not exist or is not available to this organisation"))
            })?;
            role.check_assignable(&caller.org_id)?;
            caller.require_to_grant(&role.permissions)?;
            let assignment = RoleAssignment {
                org_id: caller.org_id.clone(),
                principal_id: id.clone(),
                role_id: role_id.clone(),
                assigned_at: model::now(),
                assigned_by: caller.actor(),
            };
            Ok(self.store.assign_role(&assignment).await?)
        }
        .await;
        audited("role_assignment.assign", caller, &format!("{id}/{role_id}"), result)
    }

    pub async fn unassign_role(&self, caller: &Caller, id: &PrincipalId, role_id: &RoleId) -> Result<(), DomainError> {
        caller.require(PERM_ROLE_ASSIGNMENTS_WRITE)?;
        let result = async {
            self.principal_of(caller, id).await?;
            if self.store.unassign_role(&caller.org_id, id, role_id).await? {
                Ok(())
            } else {
                Err(DomainError::NotFound("role assignment"))
            }
        }
        .await;
        audited("role_assignment.unassign", caller, &format!("{id}/{role_id}"), result)
    }

    /// The roles and permissions a principal holds now. Roles that no longer exist or no longer
    /// support API keys grant nothing.
    async fn entitlements(&self, principal: &Principal) -> Result<(Vec<RoleId>, BTreeSet<Permission>), StoreError> {
        let mut roles = Vec::new();
        let mut permissions = BTreeSet::new();
        for a in self.store.list_role_assignments(&principal.org_id, &principal.id).await? {
            if let Some(role) = self.role_for(&principal.org_id, &a.role_id).await?
                && role.is_available_to(&principal.org_id)
                && role.supports(PrincipalType::ApiKey)
            {
                permissions.extend(role.permissions.iter().cloned());
                roles.push(a.role_id);
            }
        }
        roles.sort();
        Ok((roles, permissions))
    }

    /// Exchanges an API key for an access token.
    pub async fn exchange(&self, request: ExchangeRequest) -> Result<IssuedToken, ExchangeError> {
        let key_id = request.key.as_ref().map(|k| k.key_id().to_string()).unwrap_or_default();
        // Who is asking is known only once the secret is proved; until then the caller is anonymous.
        let mut proved = None;
        let result = self.exchange_inner(request, &mut proved).await;
        match (&result, proved) {
            (Ok(t), _) => audit("token.exchange", &t.claims.sub, &t.claims.org_id, &key_id, Ok(())),
            (Err(e), Some((principal, org))) => audit("token.exchange", principal.as_str(), org.as_str(), &key_id, Err(e)),
            (Err(e), None) => audit("token.exchange", "anonymous", "", &key_id, Err(e)),
        }
        result
    }

    async fn exchange_inner(
        &self,
        request: ExchangeRequest,
        proved: &mut Option<(PrincipalId, OrgId)>,
    ) -> Result<IssuedToken, ExchangeError> {
        let key = request.key.map_err(|_| ExchangeError::InvalidClient("malformed key"))?;
        let credential = self.store.get_credential(key.key_id()).await?;
        // A secret this instance already verified is never throttled: guessers sharing the
        // owner's address cannot lock a warm owner out.
        let warm = credential.as_ref().is_some_and(|c| self.hasher.is_warm(key.key_id(), key.secret(), &c.secret_hash));
        let attempts = request.source.as_deref().map(|source| AttemptCounter::new(key.key_id(), source));
        if !warm && let Some(counter) = &attempts {
            let count = self.store.failed_attempts(&counter.key, counter.window_start).await?;
            if count >= MAX_FAILED_ATTEMPTS {
                return Err(ExchangeError::Throttled { retry_after_secs: counter.retry_after_secs() });
            }
        }
        let verified = match &credential {
            Some(c) => self.hasher.verify(key.key_id(), key.secret(), &c.secret_hash).await?,
            None => {
                self.hasher.verify_decoy(key.secret()).await?;
                false
            }
        };
        let Some(credential) = credential.filter(|_| verified) else {
            if let Some(counter) = &attempts
                && let Err(e) = self.store.record_failed_attempt(&counter.key, counter.window_start, counter.expires_at()).await
            {
                tracing::warn!(error = %e, "could not count a failed attempt");
            }
            return Err(ExchangeError::InvalidClient("unknown key id or wrong secret"));
        };
        *proved = Some((credential.principal_id.clone(), credential.org_id.clone()));
        // Only now, with the secret proved, may the caller learn why the key is refused.
        let principal = self
            .store
            .get_principal(&credential.org_id, &credential.principal_id)
            .await?
            .ok_or(ExchangeError::Refused(Refusal::PrincipalRevoked))?;
        let now = model::now();
        model::may_authenticate(&credential, &principal, now).map_err(ExchangeError::Refused)?;

        let audiences = &self.tokens.settings().audiences;
        let audience = match request.audience.as_deref() {
            None => audiences[0].as_str(),
            Some(a) => audiences
                .iter()
                .find(|allowed| *allowed == a)
                .map(String::as_str)
                .ok_or_else(|| ExchangeError::InvalidTarget("the requested audience is not allowed".into()))?,
        };
        let (roles, held) = self.entitlements(&principal).await?;
        let scope: Vec<Permission> = match request.scope.as_deref() {
            None => held.into_iter().collect(),
            Some(raw) => {
                let wanted = parse_scope(raw).map_err(ExchangeError::InvalidScope)?;
                if let Some(missing) = wanted.iter().find(|p| !held.contains(*p)) {
                    return Err(ExchangeError::InvalidScope(format!("the principal does not hold '{missing}'")));
                }
                wanted
            }
        };
        let grant = Grant {
            principal_id: &principal.id,
            org_id: &principal.org_id,
            key_id: &credential.key_id,
            roles: &roles,
            scope: &scope,
            audience,
        };
        let (token, claims) = self.tokens.current().await.sign(&grant, now).map_err(|e| ExchangeError::Sign(e.to_string()))?;
        // The last word before the token leaves: recording the use succeeds only while the
        // credential and its principal are still Active, so a revoke or suspension that returned
        // while this exchange was in flight (during argon2, say) still wins.
        if !self.store.record_credential_use(&credential, now).await? {
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
        })
    }

    /// Creates an organisation's first admin unless it has one; see [`bootstrap_admin`].
    pub async fn bootstrap(&self, org: &OrgId) -> Result<Option<ApiKey>, DomainError> {
        bootstrap_admin(self.store.as_ref(), &self.hasher, org, false).await
    }
}

/// Creates an organisation's first admin: an API-key principal with `iam-admin` and one
/// credential, written atomically. Answers the key, to be shown once, or `None` when the
/// organisation already had one (unless `force`, which adds another admin: the way back in
/// when every admin key is lost).
pub async fn bootstrap_admin(store: &dyn Store, hasher: &SecretHasher, org: &OrgId, force: bool) -> Result<Option<ApiKey>, DomainError> {
    if !force && store.is_bootstrapped(org).await? {
        return Ok(None);
    }
    let actor = Actor::system("bootstrap");
    let now = model::now();
    let principal = Principal::new(org.clone(), "Bootstrap admin", None, None, actor.clone(), now)?;
    let assignment = RoleAssignment {
        org_id: org.clone(),
        principal_id: principal.id.clone(),
        role_id: RoleId::parse(roles::ADMIN_ROLE).expect("built-in role id"),
        assigned_at: now,
        assigned_by: actor.clone(),
    };
    let key = ApiKey::generate();
    let hash = hasher.hash(key.secret()).await.map_err(|e| DomainError::Unavailable(StoreError::Unavailable(e.to_string())))?;
    let credential = Credential::new(&principal, key.key_id().clone(), "bootstrap", None, hash, actor.clone(), now)?;
    let result = store.bootstrap_org(&principal, &assignment, &credential, force).await;
    let outcome = result.as_ref().map(|_| ()).map_err(|e| e as &dyn std::fmt::Display);
    audit("org.bootstrap", &actor.0, org.as_str(), principal.id.as_str(), outcome);
    match result {
        Ok(()) => Ok(Some(key)),
        // Another process bootstrapped it first: that is the desired end state.
        Err(StoreError::Conflict(_)) if !force => Ok(None),
        Err(e) => Err(e.into()),
    }
}
