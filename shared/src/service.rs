//! The operations of the product, over any `Store`. Each one checks the caller's permission,
//! lets the model decide, writes through the store, and emits one audit event. The exchange is
//! in `exchange.rs`.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::api_key::ApiKey;
use crate::audit::{AuditEntry, AuditPage, AuditQuery, refusals};
use crate::authority::{
    self, ActionPermissions, AdminWitness, AllowedActions, Authority, AuthorityRule, DecidedOn, Guard, LastAdministrator, Standing,
};
use crate::error::{Conflict, DomainError};
use crate::hashing::{self, SecretHasher};
use crate::idempotency::{IdempotencyClaim, IdempotencyKey, IdempotencyRecord, IdempotentOutcome, key_reused};
use crate::ids::{KeyId, OrgId, Permission, PrincipalId, RoleId};
use crate::model::{
    self, Actor, Credential, CredentialChange, CredentialStatus, MIN_SELF_ROTATION_GRACE_SECONDS, NewCredential, Principal,
    PrincipalChange, PrincipalStatus, PrincipalType, Refusal, Role, RoleAssignment, Rotation,
};
use crate::roles;
use crate::signing_keys::Keyring;
use crate::store::{Page, Store, StoreError};
use crate::token::{AccessClaims, TokenRejection, key_id_of};

pub use crate::exchange::{ExchangeError, ExchangeRequest, IssuedToken};

pub const PERM_API_KEYS_READ: &str = "iam:api-keys:read";
pub const PERM_API_KEYS_WRITE: &str = "iam:api-keys:write";
pub const PERM_CREDENTIALS_WRITE: &str = "iam:credentials:write";
pub const PERM_ROLES_WRITE: &str = "iam:roles:write";
pub const PERM_ROLE_ASSIGNMENTS_WRITE: &str = "iam:role-assignments:write";
pub const PERM_POLICY_WRITE: &str = "iam:policy:write";
pub const PERM_TOKENS_INTROSPECT: &str = "iam:tokens:introspect";
pub const PERM_AUDIT_READ: &str = "iam:audit:read";
pub const PERM_WEBHOOKS_MANAGE: &str = "iam:webhooks:manage";
pub const PERM_FEDERATION_WRITE: &str = "iam:federation:write";

/// An authenticated management caller: a verified access token whose credential and principal
/// were re-read and still authenticate.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal_id: PrincipalId,
    pub org_id: OrgId,
    /// The credential it authenticated with; `None` for a person signed in at the
    /// organisation's identity provider.
    pub key_id: Option<KeyId>,
    /// For a person: the trusted-issuer list's version it signed in under (see
    /// [`AdminWitness::sign_in_version`]).
    pub signed_in_under: Option<u64>,
    pub claims: AccessClaims,
    /// What the caller may do now: the token's scope, less anything its roles no longer grant.
    /// This is its authority (see [`Authority`]).
    pub permissions: BTreeSet<String>,
    /// The caller's principal and granting roles as read when it authenticated: what makes it
    /// a witness that the organisation keeps an administrator.
    pub principal: Principal,
    pub roles: Vec<Role>,
    /// Whether the credential it authenticated with is fit to administer (its restrictions
    /// keep administration), and so may stand as a witness.
    pub credential_administers: bool,
}

impl Caller {
    pub fn actor(&self) -> Actor {
        Actor::principal(&self.principal_id)
    }

    pub fn require(&self, permission: &str) -> Result<(), DomainError> {
        if self.permissions.contains(permission) { Ok(()) } else { Err(DomainError::Forbidden(permission.to_owned())) }
    }

    /// The audit record of something this caller does now, with the key it acts with.
    pub fn entry(&self, action: &str) -> AuditEntry {
        self.acting(AuditEntry::new(&self.org_id, &self.actor(), action, model::now()))
    }

    /// `entry`, naming the key the caller acts with, when it acts with one (a person has none).
    pub fn acting(&self, entry: AuditEntry) -> AuditEntry {
        match &self.key_id {
            Some(key) => entry.acting_with(key),
            None => entry,
        }
    }

    pub fn authority(&self) -> Authority<'_> {
        Authority::new(&self.permissions)
    }

    fn is(&self, id: &PrincipalId) -> bool {
        self.principal_id == *id
    }

    /// The caller as its authority was read (at authentication): a write it decides commits
    /// only while the caller is still at this version (see [`Guard`]).
    pub(crate) fn as_decided_on(&self) -> DecidedOn {
        decided_on(&self.principal)
    }

    /// What a write on `target` must find unchanged: the caller, and the target as read.
    pub(crate) fn guard_for_write_on(&self, target: &Principal) -> Guard {
        Guard::decided_on([self.as_decided_on(), decided_on(target)])
    }

    /// The caller as a usable administrator, if it is one: it authenticated just now with an
    /// Active credential, so its principal and that credential are usable.
    pub(crate) fn as_witness(&self) -> Option<AdminWitness> {
        if !self.credential_administers {
            return None;
        }
        let signs_in = if self.key_id.is_none() { self.signed_in_under } else { None };
        Standing { principal: self.principal.clone(), roles: self.roles.clone(), credentials: Vec::new(), signs_in }
            .usable_administrator_with(self.key_id.as_ref(), model::now())
    }
}

/// What a principal's change changed, in the API's names; a status change says what it was.
fn principal_change_detail(before: &Principal, after: &Principal) -> serde_json::Value {
    let mut detail = serde_json::Map::new();
    if before.display_name != after.display_name {
        detail.insert("displayName".into(), after.display_name.clone().into());
    }
    if before.status != after.status {
        detail.insert("status".into(), serde_json::json!(after.status));
        detail.insert("previousStatus".into(), serde_json::json!(before.status));
    }
    if before.expires_at != after.expires_at {
        detail.insert("expiresAt".into(), serde_json::json!(after.expires_at));
    }
    detail.into()
}

fn decided_on(p: &Principal) -> DecidedOn {
    DecidedOn { org_id: p.org_id.clone(), principal_id: p.id.clone(), version: p.version }
}

/// A verified token's holder as it stands now (see [`Iam::token_standing`]).
pub(crate) struct TokenStanding {
    pub key_id: KeyId,
    pub org_id: OrgId,
    pub principal_id: PrincipalId,
    pub credential: Credential,
    pub principal: Principal,
    pub roles: Vec<Role>,
    /// The token's scope, less what its roles or its credential's ceiling no longer allow.
    pub permissions: BTreeSet<String>,
}

/// Guarded writes retry this many times when their witness was removed concurrently, each time
/// with a fresh read, before answering that no usable administrator would remain.
pub(crate) const WITNESS_ATTEMPTS: usize = 3;

/// Why a bearer token was not accepted. Logged, never sent: the client sees one 401.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("token rejected: {0}")]
    Token(#[from] TokenRejection),
    #[error("token names a credential that does not exist")]
    UnknownCredential,
    #[error("token's principal may no longer authenticate: {0}")]
    Refused(Refusal),
    #[error("the token's credential may no longer be used for the token's audience")]
    AudienceWithdrawn,
    #[error("store unavailable")]
    Unavailable(#[from] StoreError),
}

#[derive(serde::Serialize)]
pub struct NewPrincipal {
    pub display_name: String,
    pub status: Option<PrincipalStatus>,
    pub expires_at: Option<DateTime<Utc>>,
    /// `ApiKey` when absent (and then left out of the request's fingerprint, so a retry across
    /// the upgrade still matches its first request).
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub principal_type: Option<PrincipalType>,
    /// A `User`'s subject at the organisation's identity provider (and that provider's issuer,
    /// which may be left out).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<(Option<String>, String)>,
}

#[derive(serde::Serialize)]
pub struct NewRole {
    pub name: String,
    pub description: Option<String>,
    pub permissions: Vec<Permission>,
    pub principal_types: Vec<PrincipalType>,
}

/// A principal as listed: with its number of active (unrevoked, unexpired) credentials.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PrincipalSummary {
    #[serde(flatten)]
    pub principal: Principal,
    pub active_credentials: usize,
}

/// A principal as read on its own: also what the reader may do to it.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PrincipalDetail {
    #[serde(flatten)]
    pub summary: PrincipalSummary,
    pub allowed_actions: AllowedActions,
}

fn live_count(credentials: &[Credential], now: DateTime<Utc>) -> usize {
    credentials.iter().filter(|c| c.is_live(now)).count()
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
pub(crate) fn audit(action: &str, actor: &str, org: &str, target: &str, outcome: Result<(), &dyn std::fmt::Display>) {
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

/// Records the outcome of a management operation, refusals included: a 403 or a 409 names its
/// rule in `reason`, so an escalation attempt leaves a trace.
pub(crate) fn audited<T>(action: &str, caller: &Caller, target: &str, result: Result<T, DomainError>) -> Result<T, DomainError> {
    let outcome = result.as_ref().map(|_| ()).map_err(|e| e as &dyn std::fmt::Display);
    audit(action, caller.actor().0.as_str(), caller.org_id.as_str(), target, outcome);
    result
}

impl Iam {
    /// [`audited`], and an authority refusal recorded in the trail (aggregated: see
    /// [`crate::audit::refusals`]). A refusal that cannot be recorded is still answered.
    pub(crate) async fn audited<T>(
        &self,
        action: &str,
        caller: &Caller,
        target: &str,
        result: Result<T, DomainError>,
    ) -> Result<T, DomainError> {
        let result = audited(action, caller, target, result);
        if let Err(e) = &result
            && let Some(reason) = refusals::management_reason(e)
        {
            let mut entry = caller.entry(action).refused(reason).detail(serde_json::json!({"target": target, "message": e.to_string()}));
            entry.principal_id = target.split('/').next().and_then(|t| PrincipalId::parse(t).ok());
            self.record_refusal(entry).await;
        }
        result
    }

    pub(crate) async fn record_refusal(&self, entry: AuditEntry) {
        let Some(repeats) = self.refusal_tally.due(&entry) else { return };
        if let Err(e) = self.store.record_refusal(&entry, repeats).await {
            tracing::warn!(error = %e, action = %entry.action, reason = ?entry.reason, "a refusal could not be recorded in the audit trail");
        }
    }
}

/// A create under an optional `Idempotency-Key` (principals, roles, credentials): the one
/// place that answers a repeated request from the record of the first, and writes that record
/// in the same atomic step as the object it records.
struct IdempotentCreate<'a, T> {
    store: &'a dyn Store,
    claim: Option<IdempotencyClaim>,
    /// This operation's answer to an earlier outcome of the same key: its replay, or a refusal
    /// (a credential's secret is never shown twice; another operation's outcome is a misuse).
    replay: fn(IdempotentOutcome) -> Result<T, DomainError>,
}

impl<'a, T> IdempotentCreate<'a, T> {
    fn new(
        store: &'a dyn Store,
        caller: &Caller,
        key: Option<&IdempotencyKey>,
        operation: &str,
        request: &impl serde::Serialize,
        replay: fn(IdempotentOutcome) -> Result<T, DomainError>,
    ) -> Self {
        let claim = key.map(|k| IdempotencyClaim::new(&caller.org_id, &caller.principal_id, k, operation, request));
        Self { store, claim, replay }
    }

    /// The answer to an earlier request with this key, if there was one (and it was this same
    /// request: otherwise 422). Asked before any work, so a replay costs no argon2.
    async fn earlier(&self) -> Result<Option<Result<T, DomainError>>, DomainError> {
        Ok(self.earlier_outcome().await?.map(self.replay))
    }

    async fn earlier_outcome(&self) -> Result<Option<IdempotentOutcome>, DomainError> {
        let Some(claim) = &self.claim else { return Ok(None) };
        match self.store.get_idempotency_record(&claim.org_id, &claim.slot).await? {
            Some(record) if record.is_live(model::now()) => claim.replay(record).map(Some),
            _ => Ok(None),
        }
    }

    /// Runs `write` with the record of `outcome` (when there is a key) to write atomically
    /// with the object, and answers `created`. A concurrent request that took the key first
    /// is answered with its outcome, as a replay.
    async fn write(
        &self,
        created: T,
        outcome: IdempotentOutcome,
        now: DateTime<Utc>,
        write: impl AsyncFnOnce(Option<&IdempotencyRecord>) -> Result<(), StoreError>,
    ) -> Result<T, DomainError> {
        let record = self.claim.as_ref().map(|c| c.record(outcome, now));
        match write(record.as_ref()).await {
            Ok(()) => Ok(created),
            Err(StoreError::Conflict(Conflict::IdempotencyKeyTaken)) => {
                let winner = self.earlier_outcome().await?;
                (self.replay)(
                    winner.ok_or_else(|| DomainError::conflict("a concurrent request with this Idempotency-Key did not finish; retry"))?,
                )
            }
            Err(e) => Err(e.into()),
        }
    }
}

fn replayed_principal(outcome: IdempotentOutcome) -> Result<Created<Principal>, DomainError> {
    match outcome {
        IdempotentOutcome::Principal { principal } => Ok(Created::replay(principal)),
        _ => Err(key_reused()),
    }
}

fn replayed_role(outcome: IdempotentOutcome) -> Result<Created<Role>, DomainError> {
    match outcome {
        IdempotentOutcome::Role { role } => Ok(Created::replay(role)),
        _ => Err(key_reused()),
    }
}

/// What a rotation answers: the successor and its key (shown once), and the old credential as
/// the rotation left it.
#[derive(Debug)]
pub struct RotatedCredential {
    pub successor: Credential,
    pub key: ApiKey,
    pub predecessor: Credential,
}

fn already_rotated(outcome: IdempotentOutcome) -> Result<RotatedCredential, DomainError> {
    match outcome {
        IdempotentOutcome::Credential { key_id } => Err(DomainError::AlreadyIssued(key_id)),
        _ => Err(key_reused()),
    }
}

/// The secret of an earlier issue cannot be shown again: name the credential, so it can be revoked.
fn already_issued(outcome: IdempotentOutcome) -> Result<(Credential, ApiKey), DomainError> {
    match outcome {
        IdempotentOutcome::Credential { key_id } => Err(DomainError::AlreadyIssued(key_id)),
        _ => Err(key_reused()),
    }
}

pub struct Iam {
    pub store: Arc<dyn Store>,
    pub hasher: SecretHasher,
    pub tokens: Keyring,
    pub limits: Limits,
    org_roles: OrgRoleCache,
    pub(crate) leak_reports: crate::leaks::LeakReportLimiter,
    pub(crate) github_scanning_keys: Option<crate::leaks::GithubKeySource>,
    pub(crate) policies: crate::credential_policy::setting::PolicyCache,
    pub(crate) refusal_tally: refusals::RefusalTally,
    pub(crate) webhooks: crate::webhooks::manage::WebhookSettings,
    /// Trusted issuers' keys, made on the first federated exchange (only the token function
    /// ever fetches them), or given by [`Iam::use_issuer_keys`].
    pub(crate) issuer_keys: std::sync::OnceLock<Arc<crate::federation::IssuerKeys>>,
    /// The client that redeems sign-in codes at identity providers, made on first use.
    pub(crate) sign_in_outbound: std::sync::OnceLock<Arc<crate::outbound::Outbound>>,
}

/// Organisation roles as read from the store. A role never changes once created (no route
/// updates or deletes one), so a copy read once stays true for the process's life, and a warm
/// exchange or management call reads no role item. Bounded: when full it starts again empty,
/// which costs one read per role in use. If roles ever become mutable, this cache must go.
#[derive(Default)]
struct OrgRoleCache(std::sync::Mutex<std::collections::HashMap<(OrgId, RoleId), Role>>);

const ORG_ROLE_CACHE_ENTRIES: usize = 4096;

impl OrgRoleCache {
    fn get(&self, org: &OrgId, id: &RoleId) -> Option<Role> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).get(&(org.clone(), id.clone())).cloned()
    }

    fn insert(&self, role: &Role, org: &OrgId) {
        let mut roles = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if roles.len() >= ORG_ROLE_CACHE_ENTRIES {
            roles.clear();
        }
        roles.insert((org.clone(), role.id.clone()), role.clone());
    }
}

/// Caps an operator may set (`IAM_MAX_PRINCIPALS_PER_ORG`, `IAM_EXCHANGES_PER_KEY_PER_SECOND`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_principals_per_org: usize,
    /// Exchanges one key may make in one second before it is told to slow down: far above
    /// what a client that reuses its token needs, far below what one DynamoDB item serves
    /// (about 1,000 writes a second).
    pub exchanges_per_key_per_second: u32,
}

pub const DEFAULT_EXCHANGES_PER_KEY_PER_SECOND: u32 = 100;

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_principals_per_org: model::DEFAULT_MAX_PRINCIPALS_PER_ORG,
            exchanges_per_key_per_second: DEFAULT_EXCHANGES_PER_KEY_PER_SECOND,
        }
    }
}

impl std::fmt::Debug for Iam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Iam").field("tokens", &self.tokens).finish_non_exhaustive()
    }
}

impl Iam {
    pub fn new(store: Arc<dyn Store>, hasher: SecretHasher, tokens: Keyring) -> Self {
        Self {
            store,
            hasher,
            tokens,
            limits: Limits::default(),
            org_roles: OrgRoleCache::default(),
            leak_reports: Default::default(),
            github_scanning_keys: None,
            policies: Default::default(),
            refusal_tally: Default::default(),
            webhooks: Default::default(),
            issuer_keys: Default::default(),
            sign_in_outbound: Default::default(),
        }
    }

    pub fn with_limits(self, limits: Limits) -> Self {
        Self { limits, ..self }
    }

    /// GitHub's secret-scanning keys: with them, signed partner alerts are acted on.
    pub fn with_github_scanning_keys(self, keys: Option<crate::leaks::GithubKeySource>) -> Self {
        Self { github_scanning_keys: keys, ..self }
    }

    /// Verifies a management bearer token and re-reads its credential and principal, so a
    /// revoked or suspended admin loses access at once rather than at token expiry.
    pub async fn authenticate_bearer(&self, token: &str) -> Result<Caller, AuthError> {
        let claims = self.tokens.current().await.verify(token, &self.tokens.settings().management_audience)?;
        if crate::federation::sign_in::is_persons_token(&claims) {
            return self.person_signed_in(claims).await;
        }
        let standing = self.token_standing(&claims).await?;
        let credential_administers = standing.credential.restrictions.permits_administration();
        let TokenStanding { key_id, org_id, principal_id, principal, roles, permissions, .. } = standing;
        Ok(Caller {
            principal_id,
            org_id,
            key_id: Some(key_id),
            signed_in_under: None,
            claims,
            permissions,
            principal,
            roles,
            credential_administers,
        })
    }

    /// What a verified token's holder may do now: its credential and principal re-read (a revoke
    /// or suspension bites at once, not at `exp`), and its scope narrowed to what its roles still
    /// grant and its credential's ceiling still allows.
    pub(crate) async fn token_standing(&self, claims: &AccessClaims) -> Result<TokenStanding, AuthError> {
        let (Some(key_id), Ok(org_id), Ok(principal_id)) =
            (key_id_of(claims), OrgId::parse(&claims.org_id), PrincipalId::parse(&claims.sub))
        else {
            return Err(AuthError::Token(TokenRejection::Invalid("claims do not name an API-key principal".into())));
        };
        let credential = self.store.get_credential(&key_id).await?.ok_or(AuthError::UnknownCredential)?;
        let (principal, role_ids) =
            self.store.get_principal_with_roles(&org_id, &principal_id).await?.ok_or(AuthError::UnknownCredential)?;
        model::may_authenticate(&credential, &principal, model::now()).map_err(AuthError::Refused)?;
        // An audience taken off the credential's list stops its tokens for it at once, as a
        // narrowed ceiling does.
        if !credential.restrictions.allows_audience(&claims.aud) {
            return Err(AuthError::AudienceWithdrawn);
        }
        // An unassigned role stops granting at once, not when the token expires.
        let roles = self.granting_roles(&principal, &role_ids).await?;
        let held: BTreeSet<&str> = roles.iter().flat_map(|r| r.permissions.iter().map(Permission::as_str)).collect();
        // A ceiling narrowed since the token was issued applies at once, as a role removed does.
        let permissions =
            claims.permissions().filter(|p| held.contains(p) && credential.restrictions.within_ceiling(p)).map(str::to_owned).collect();
        Ok(TokenStanding { key_id, org_id, principal_id, credential, principal, roles, permissions })
    }

    /// A signed-in person's token, re-read as a key's is: the user still Active and unexpired,
    /// still mapped under the organisation's identity provider, which has not changed since
    /// (any change ends every session at once, even one changed back), and its scope narrowed
    /// to what its roles still grant.
    pub(crate) async fn person_signed_in(&self, claims: AccessClaims) -> Result<Caller, AuthError> {
        let (Ok(org_id), Ok(principal_id)) = (OrgId::parse(&claims.org_id), PrincipalId::parse(&claims.sub)) else {
            return Err(AuthError::Token(TokenRejection::Invalid("claims do not name a user".into())));
        };
        let (principal, role_ids) =
            self.store.get_principal_with_roles(&org_id, &principal_id).await?.ok_or(AuthError::UnknownCredential)?;
        let provider = self.store.get_trusted_issuers(&org_id).await?.unwrap_or_default();
        if !provider.maps(&principal) || claims.sign_in_version != Some(provider.sign_in_since) {
            return Err(AuthError::UnknownCredential);
        }
        model::principal_may_authenticate(&principal, model::now()).map_err(AuthError::Refused)?;
        let roles = self.granting_roles(&principal, &role_ids).await?;
        let held: BTreeSet<&str> = roles.iter().flat_map(|r| r.permissions.iter().map(Permission::as_str)).collect();
        let permissions = claims.permissions().filter(|p| held.contains(p)).map(str::to_owned).collect();
        let signed_in_under = provider.signs_in(&principal).then_some(provider.version);
        Ok(Caller {
            principal_id,
            org_id,
            key_id: None,
            signed_in_under,
            claims,
            permissions,
            principal,
            roles,
            credential_administers: true,
        })
    }

    async fn principal_of(&self, caller: &Caller, id: &PrincipalId) -> Result<Principal, DomainError> {
        self.store.get_principal(&caller.org_id, id).await?.ok_or(DomainError::NotFound("principal"))
    }

    pub async fn create_principal(
        &self,
        caller: &Caller,
        input: NewPrincipal,
        idempotency: Option<&IdempotencyKey>,
    ) -> Result<Created<Principal>, DomainError> {
        if let Err(e) = caller.require(PERM_API_KEYS_WRITE) {
            return self.audited("principal.create", caller, "", Err(e)).await;
        }
        let once = IdempotentCreate::new(self.store.as_ref(), caller, idempotency, "principal.create", &input, replayed_principal);
        if let Some(answer) = once.earlier().await? {
            return answer;
        }
        let result = async {
            let now = model::now();
            let p = Principal::new(caller.org_id.clone(), &input.display_name, input.status, input.expires_at, caller.actor(), now)?;
            let p = match (input.principal_type.unwrap_or(PrincipalType::ApiKey), &input.identity) {
                (PrincipalType::User, Some((issuer, subject))) => {
                    p.as_user(self.identity_to_map(caller, issuer.as_deref(), subject).await?)
                }
                (PrincipalType::User, None) => {
                    return Err(DomainError::invalid("a User is mapped to an identity: identity.subject is required"));
                }
                (_, Some(_)) => return Err(DomainError::invalid("only a User has an identity")),
                (other, None) => p.of_type(other)?,
            };
            let outcome = IdempotentOutcome::Principal { principal: p.clone() };
            let max = self.limits.max_principals_per_org;
            let entry = caller.acting(AuditEntry::principal_created(&p));
            let write = async |record: Option<&IdempotencyRecord>| self.store.create_principal_as(&p, max, record, &entry).await;
            once.write(Created::new(p.clone()), outcome, now, write).await
        }
        .await;
        if let Ok(created) = &result
            && created.replayed
        {
            return result;
        }
        let target = result.as_ref().map(|c| c.value.id.to_string()).unwrap_or_default();
        self.audited("principal.create", caller, &target, result).await
    }

    /// The identity a new user is mapped to: under the organisation's identity provider, the
    /// only one its people sign in with.
    async fn identity_to_map(
        &self,
        caller: &Caller,
        issuer: Option<&str>,
        subject: &str,
    ) -> Result<crate::federation::trust::UserIdentity, DomainError> {
        let settings = self.store.get_trusted_issuers(&caller.org_id).await?.unwrap_or_default();
        let Some(provider) = settings.sign_in_issuer() else {
            return Err(DomainError::unprocessable(
                "the organisation has no identity provider to sign in with: set trusted issuers' signIn first",
            ));
        };
        if issuer.is_some_and(|i| i != provider) {
            return Err(DomainError::unprocessable("identity.issuer must be the organisation's sign-in issuer"));
        }
        crate::federation::trust::UserIdentity::new(provider, subject)
    }

    /// A page of principals, each with its number of active credentials (read concurrently: a
    /// principal has at most a few, in one partition).
    pub async fn list_principals(
        &self,
        caller: &Caller,
        limit: usize,
        after: Option<&PrincipalId>,
    ) -> Result<Page<PrincipalSummary>, DomainError> {
        caller.require(PERM_API_KEYS_READ)?;
        let page = self.store.list_principals(&caller.org_id, limit, after).await?;
        let now = model::now();
        let counts = futures_util::future::try_join_all(page.items.iter().map(|p| self.store.list_credentials(&p.org_id, &p.id))).await?;
        let items = page
            .items
            .into_iter()
            .zip(counts)
            .map(|(principal, credentials)| PrincipalSummary { principal, active_credentials: live_count(&credentials, now) })
            .collect();
        Ok(Page { items, next: page.next })
    }

    /// One principal, with what the caller may do to it: the same rules its writes apply.
    pub async fn get_principal(&self, caller: &Caller, id: &PrincipalId) -> Result<PrincipalDetail, DomainError> {
        caller.require(PERM_API_KEYS_READ)?;
        let standing = self.standing_of(caller, id).await?;
        let now = model::now();
        let needs = ActionPermissions {
            api_keys_write: PERM_API_KEYS_WRITE,
            credentials_write: PERM_CREDENTIALS_WRITE,
            role_assignments_write: PERM_ROLE_ASSIGNMENTS_WRITE,
        };
        let allowed_actions = authority::allowed_actions(&caller.permissions, &caller.principal_id, &standing, &needs, now);
        let active_credentials = live_count(&standing.credentials, now);
        Ok(PrincipalDetail { summary: PrincipalSummary { principal: standing.principal, active_credentials }, allowed_actions })
    }

    /// A principal of the caller's organisation with its roles and credentials, read for an
    /// authority decision.
    pub(crate) async fn standing_of(&self, caller: &Caller, id: &PrincipalId) -> Result<Standing, DomainError> {
        let (principal, role_ids) =
            self.store.get_principal_with_roles(&caller.org_id, id).await?.ok_or(DomainError::NotFound("principal"))?;
        Ok(self.standing(principal, &role_ids).await?)
    }

    async fn standing(&self, principal: Principal, role_ids: &[RoleId]) -> Result<Standing, StoreError> {
        let roles = self.granting_roles(&principal, role_ids).await?;
        let credentials = self.store.list_credentials(&principal.org_id, &principal.id).await?;
        // Only a person reads the organisation's identity provider: whether it signs in now.
        let signs_in = match principal.principal_type {
            PrincipalType::User => {
                self.store.get_trusted_issuers(&principal.org_id).await?.filter(|t| t.signs_in(&principal)).map(|t| t.version)
            }
            _ => None,
        };
        Ok(Standing { principal, roles, credentials, signs_in })
    }

    /// What a write that may leave the organisation without a usable administrator must
    /// condition on (see [`authority::guard_for`]): the target's own remaining means, else the
    /// caller, else any other usable administrator of the organisation. The search reads the
    /// organisation's principals only when the caller cannot serve: in practice when an
    /// administrator removes its own last means of use.
    async fn witness_for(&self, caller: &Caller, before: &Standing, after: &Standing) -> Result<Option<AdminWitness>, DomainError> {
        let now = model::now();
        let caller_witness = caller.as_witness().filter(|_| !caller.is(&before.principal.id));
        match authority::guard_for(before, after, caller_witness, now) {
            Err(LastAdministrator) => {}
            decided => return Ok(decided?),
        }
        let skip = [&before.principal.id, &caller.principal_id];
        match self.other_administrator(&caller.org_id, &skip, |_| true).await? {
            Some(witness) => Ok(Some(witness)),
            None => Err(LastAdministrator.into()),
        }
    }

    /// Any usable administrator of `org` other than those in `skip`, with a credential that
    /// `fits`: a search of the organisation's principals, for the rare write that cannot be
    /// witnessed by the caller or its target.
    pub(crate) async fn other_administrator(
        &self,
        org: &OrgId,
        skip: &[&PrincipalId],
        fits: impl Fn(&Credential) -> bool,
    ) -> Result<Option<AdminWitness>, DomainError> {
        self.other_administrator_where(org, skip, |standing, now| standing.usable_administrator_where(now, &fits)).await
    }

    /// An administrator other than `skip` that `usable` accepts (by key only, say).
    pub(crate) async fn other_administrator_where(
        &self,
        org: &OrgId,
        skip: &[&PrincipalId],
        usable: impl Fn(&Standing, chrono::DateTime<chrono::Utc>) -> Option<AdminWitness>,
    ) -> Result<Option<AdminWitness>, DomainError> {
        let now = model::now();
        let mut after_id = None;
        loop {
            let page = self.store.list_principals(org, 100, after_id.as_ref()).await?;
            for p in page.items {
                if skip.contains(&&p.id) || p.status != PrincipalStatus::Active {
                    continue;
                }
                let role_ids: Vec<RoleId> =
                    self.store.list_role_assignments(&p.org_id, &p.id).await?.into_iter().map(|a| a.role_id).collect();
                if let Some(w) = usable(&self.standing(p, &role_ids).await?, now) {
                    return Ok(Some(w));
                }
            }
            match page.next {
                Some(next) => after_id = Some(next),
                None => return Ok(None),
            }
        }
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
        let stale = || DomainError::PreconditionFailed("the principal has changed since it was read (If-Match); read it again".into());
        let result = async {
            caller.require(PERM_API_KEYS_WRITE)?;
            if caller.is(id) && (change.status.is_some() || change.expires_at.is_some()) {
                return Err(AuthorityRule::OwnStatusOrExpiry.into());
            }
            for attempt in 1..=WITNESS_ATTEMPTS {
                let before = self.standing_of(caller, id).await?;
                caller.authority().may_act_on(&before.permissions())?;
                let current = &before.principal;
                if if_match.is_some_and(|v| v != current.version) {
                    return Err(stale());
                }
                let Some(next) = current.apply(&change, model::now())? else { return Ok(current.clone()) };
                // Only a status change can take a usable administrator out now; an expiry is in
                // the future, and takes effect when it comes, as a security measure should.
                let witness = match next.status == current.status {
                    true => None,
                    false => self.witness_for(caller, &before, &before.with_principal(next.clone())).await?,
                };
                let record = caller.entry("principal.update").principal(id).detail(principal_change_detail(current, &next));
                let guard = caller.guard_for_write_on(current).with_witness(witness).recording(record);
                match self.store.update_principal(&next, current.version, &guard).await {
                    Ok(()) => return Ok(next),
                    Err(StoreError::WitnessGone) if attempt < WITNESS_ATTEMPTS => continue,
                    Err(StoreError::Conflict(Conflict::StaleVersion)) if if_match.is_some() => return Err(stale()),
                    Err(e) => return Err(e.into()),
                }
            }
            Err(LastAdministrator.into())
        }
        .await;
        self.audited("principal.update", caller, id.as_str(), result).await
    }

    pub async fn issue_credential(
        &self,
        caller: &Caller,
        id: &PrincipalId,
        request: NewCredential,
        idempotency: Option<&IdempotencyKey>,
    ) -> Result<(Credential, ApiKey), DomainError> {
        let NewCredential { name, expires_at, restrictions, self_rotation } = request;
        let name = name.as_str();
        if let Err(e) = caller.require(PERM_CREDENTIALS_WRITE) {
            return self.audited("credential.issue", caller, id.as_str(), Err(e)).await;
        }
        // Fingerprinted as before restrictions and self-rotation existed when neither is asked
        // for, so a retry across the upgrade still matches its first request.
        let once = match restrictions.is_empty() && !self_rotation {
            true => {
                IdempotentCreate::new(self.store.as_ref(), caller, idempotency, "credential.issue", &(id, name, expires_at), already_issued)
            }
            false => {
                let request = (id, name, expires_at, &restrictions, self_rotation);
                IdempotentCreate::new(self.store.as_ref(), caller, idempotency, "credential.issue", &request, already_issued)
            }
        };
        if let Some(answer) = once.earlier().await? {
            return answer;
        }
        let result = async {
            let target = self.standing_of(caller, id).await?;
            // A key for a principal is that principal's power: issuing one is acting on it.
            caller.authority().may_act_on(&target.permissions())?;
            let principal = target.principal;
            if principal.principal_type == PrincipalType::ServiceAccount {
                return Err(DomainError::unprocessable(
                    "a service account has no credentials: its workload exchanges its own token under a trust policy",
                ));
            }
            // A person signs in through the organisation's identity provider: a key would
            // outlive its removal there, and a change of provider.
            if principal.principal_type == PrincipalType::User {
                return Err(DomainError::unprocessable(
                    "a user has no API keys: people sign in through the organisation's identity provider",
                ));
            }
            let now = model::now();
            let expires_at = self.current_policy(&caller.org_id).await?.expiry_at_issue(expires_at, now)?;
            // Validate before paying for argon2.
            Credential::new(&principal, KeyId::generate(), name, expires_at, String::new(), caller.actor(), now)?
                .with_restrictions(restrictions.clone())?;
            let key = ApiKey::generate();
            let hash = self.hasher.hash(key.secret()).await.map_err(|e| DomainError::Unavailable(e.into()))?;
            let credential = Credential::new(&principal, key.key_id().clone(), name, expires_at, hash, caller.actor(), now)?
                .with_restrictions(restrictions)?
                .with_self_rotation(self_rotation)
                .with_secret_check(hashing::secret_check(key.secret()));
            let outcome = IdempotentOutcome::Credential { key_id: credential.key_id.clone() };
            let entry = caller.entry("credential.issue").principal(id).key(&credential.key_id);
            let guard = caller.guard_for_write_on(&principal).recording(entry.detail(AuditEntry::credential_detail(&credential)));
            let write = async |record: Option<&IdempotencyRecord>| self.store.insert_credential(&credential, now, record, &guard).await;
            once.write((credential.clone(), key), outcome, now, write).await
        }
        .await;
        if let Err(DomainError::AlreadyIssued(_)) = &result {
            return result;
        }
        let target = result.as_ref().map(|(c, _)| c.key_id.to_string()).unwrap_or_else(|_| id.to_string());
        self.audited("credential.issue", caller, &target, result).await
    }

    /// Replaces a credential with a successor in one atomic step (see [`Store::rotate_credential`]):
    /// the successor's key is shown once, and the old credential keeps working for the grace
    /// period (or less, if it expires sooner). Needs what issuing needs, except for the one
    /// self-service act: a credential issued with `selfRotation` may be rotated by a token it
    /// minted itself, with a grace period of at least an hour and a successor that expires no
    /// later than it, and the rotation is announced.
    pub async fn rotate_credential(
        &self,
        caller: &Caller,
        id: &PrincipalId,
        key_id: &KeyId,
        rotation: Rotation,
        idempotency: Option<&IdempotencyKey>,
    ) -> Result<RotatedCredential, DomainError> {
        let by_itself = caller.require(PERM_CREDENTIALS_WRITE).is_err();
        if by_itself && !(caller.key_id.as_ref() == Some(key_id) && caller.is(id)) {
            return self.audited("credential.rotate", caller, key_id.as_str(), Err(AuthorityRule::NotSelfRotatable.into())).await;
        }
        let request = (id, key_id, &rotation);
        let once = IdempotentCreate::new(self.store.as_ref(), caller, idempotency, "credential.rotate", &request, already_rotated);
        if let Some(answer) = once.earlier().await? {
            return answer;
        }
        let result = async {
            let target = self.standing_of(caller, id).await?;
            if !by_itself {
                caller.authority().may_act_on(&target.permissions())?;
            }
            let now = model::now();
            let old = target.credentials.iter().find(|c| &c.key_id == key_id).ok_or(DomainError::NotFound("credential"))?;
            if by_itself {
                if !old.self_rotation {
                    return Err(AuthorityRule::NotSelfRotatable.into());
                }
                if rotation.grace_period_seconds < MIN_SELF_ROTATION_GRACE_SECONDS {
                    return Err(DomainError::invalid(format!(
                        "a credential rotating itself keeps its old key working for at least {MIN_SELF_ROTATION_GRACE_SECONDS} seconds"
                    )));
                }
            }
            old.check_rotatable(now)?;
            let policy = self.current_policy(&caller.org_id).await?;
            let successor_of = |key_id: KeyId, hash: String| -> Result<Credential, DomainError> {
                let mut next = old.successor(&target.principal, key_id, &rotation, hash, caller.actor(), now)?;
                if by_itself {
                    // Never outliving what it replaces: a stolen key cannot buy itself time.
                    next.expires_at = old.expires_at;
                }
                next.expires_at = policy.successor_expiry(next.expires_at, now)?;
                Ok(next)
            };
            // Validate before paying for argon2.
            successor_of(KeyId::generate(), String::new())?;
            let key = ApiKey::generate();
            let hash = self.hasher.hash(key.secret()).await.map_err(|e| DomainError::Unavailable(e.into()))?;
            let successor = successor_of(key.key_id().clone(), hash)?.with_secret_check(hashing::secret_check(key.secret()));
            let predecessor = old.rotated_out(&successor.key_id, &rotation, now);
            let outcome = IdempotentOutcome::Credential { key_id: successor.key_id.clone() };
            let entry = caller.entry(if by_itself { "credential.self_rotate" } else { "credential.rotate" }).principal(id).key(key_id);
            let entry = entry.detail(serde_json::json!({
                "successorKeyId": successor.key_id,
                "gracePeriodSeconds": rotation.grace_period_seconds,
                "successor": AuditEntry::credential_detail(&successor),
            }));
            let guard = caller.guard_for_write_on(&target.principal).recording(entry);
            let write = async |record: Option<&IdempotencyRecord>| {
                self.store.rotate_credential(&predecessor, &successor, now, record, &guard).await
            };
            let rotated = RotatedCredential { successor: successor.clone(), key, predecessor: predecessor.clone() };
            once.write(rotated, outcome, now, write).await
        }
        .await;
        if let Err(DomainError::AlreadyIssued(_)) = &result {
            return result;
        }
        if by_itself && let Ok(rotated) = &result {
            // Announced: a key that rotates itself is what a thief holding it would do too.
            tracing::warn!(target: "audit", action = "credential.self_rotate", actor = %caller.actor().0, org = %caller.org_id, target_id = %key_id, successor = %rotated.successor.key_id, outcome = "success", "audit: a credential rotated itself");
        }
        self.audited(if by_itself { "credential.self_rotate" } else { "credential.rotate" }, caller, key_id.as_str(), result).await
    }

    /// Renames a credential, moves its expiry, or replaces its restrictions. Needs what issuing
    /// needs; a credential's own token may only narrow it (a leaked key cannot lift its limits).
    pub async fn update_credential(
        &self,
        caller: &Caller,
        id: &PrincipalId,
        key_id: &KeyId,
        change: &CredentialChange,
    ) -> Result<Credential, DomainError> {
        let result = async {
            caller.require(PERM_CREDENTIALS_WRITE)?;
            for attempt in 1..=WITNESS_ATTEMPTS {
                let before = self.standing_of(caller, id).await?;
                caller.authority().may_act_on(&before.permissions())?;
                let current = before.credentials.iter().find(|c| &c.key_id == key_id).ok_or(DomainError::NotFound("credential"))?;
                let now = model::now();
                let Some(next) = current.changed(change, now)? else { return Ok(current.clone()) };
                if caller.key_id.as_ref() == Some(key_id) && !current.is_narrowed_to(&next) {
                    return Err(AuthorityRule::WidenOwnCredential.into());
                }
                // Only a change of expiry answers to the policy: renaming a key issued before
                // the policy is not refused for what it did not change.
                if change.expires_at.is_some() {
                    self.current_policy(&caller.org_id).await?.check_change(&next)?;
                }
                // Restrictions can take a key out of administration as a revocation does: the
                // organisation's last usable administrator keeps a key that can administer.
                // A key still fit to administer takes nothing away (and must not witness itself).
                let witness = match next.restrictions.permits_administration() {
                    true => None,
                    false => self.witness_for(caller, &before, &before.with_credential(next.clone())).await?,
                };
                let record = caller.entry("credential.update").principal(id).key(key_id).detail(AuditEntry::credential_detail(&next));
                let guard = caller.guard_for_write_on(&before.principal).with_witness(witness).recording(record);
                match self.store.update_credential(&next, now, &guard).await {
                    Ok(()) => return Ok(next),
                    Err(StoreError::WitnessGone) if attempt < WITNESS_ATTEMPTS => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            Err(LastAdministrator.into())
        }
        .await;
        self.audited("credential.update", caller, key_id.as_str(), result).await
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
        let result = async {
            caller.require(PERM_CREDENTIALS_WRITE)?;
            for attempt in 1..=WITNESS_ATTEMPTS {
                let before = self.standing_of(caller, id).await?;
                caller.authority().may_act_on(&before.permissions())?;
                let witness = self.witness_for(caller, &before, &before.without_credential(key_id)).await?;
                let record = caller.entry("credential.revoke").principal(id).key(key_id);
                let guard = caller.guard_for_write_on(&before.principal).with_witness(witness).recording(record);
                match self.store.revoke_credential(&caller.org_id, id, key_id, &caller.actor(), model::now(), &guard).await {
                    Err(StoreError::WitnessGone) if attempt < WITNESS_ATTEMPTS => continue,
                    done => return Ok(done?),
                }
            }
            Err(LastAdministrator.into())
        }
        .await;
        self.audited("credential.revoke", caller, key_id.as_str(), result).await
    }

    /// A page of the organisation's audit trail.
    pub async fn audit_events(&self, caller: &Caller, query: &AuditQuery) -> Result<AuditPage, DomainError> {
        caller.require(PERM_AUDIT_READ)?;
        query.validate()?;
        Ok(self.store.audit_events(&caller.org_id, query).await?)
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
        // A role is a grant waiting to happen: defining one needs the authority to grant all
        // of it, so nobody mints a role they could not hand out themselves.
        let allowed = caller.require(PERM_ROLES_WRITE).and_then(|()| Ok(caller.authority().may_grant(&input.permissions)?));
        if let Err(e) = allowed {
            return self.audited("role.create", caller, "", Err(e)).await;
        }
        let once = IdempotentCreate::new(self.store.as_ref(), caller, idempotency, "role.create", &input, replayed_role);
        if let Some(answer) = once.earlier().await? {
            return answer;
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
            let outcome = IdempotentOutcome::Role { role: role.clone() };
            let record = caller.entry("role.create").role(&role.id).detail(serde_json::json!({
                "name": role.name,
                "permissions": role.permissions,
                "principalTypes": role.principal_types,
            }));
            let guard = Guard::decided_on([caller.as_decided_on()]).recording(record);
            once.write(Created::new(role.clone()), outcome, now, async |record| self.store.create_role(&role, record, &guard).await).await
        }
        .await;
        if let Ok(created) = &result
            && created.replayed
        {
            return result;
        }
        let target = result.as_ref().map(|c| c.value.id.to_string()).unwrap_or_default();
        self.audited("role.create", caller, &target, result).await
    }

    /// A role as this organisation sees it: built-in, or its own. Another organisation's role
    /// looks exactly like a missing one.
    async fn role_for(&self, org: &OrgId, id: &RoleId) -> Result<Option<Role>, StoreError> {
        if let Some(r) = roles::builtin(id.as_str()) {
            return Ok(Some(r.clone()));
        }
        if let Some(cached) = self.org_roles.get(org, id) {
            return Ok(Some(cached));
        }
        let read = self.store.get_org_role(org, id).await?;
        if let Some(role) = &read {
            self.org_roles.insert(role, org);
        }
        Ok(read)
    }

    pub async fn list_role_assignments(&self, caller: &Caller, id: &PrincipalId) -> Result<Vec<RoleAssignment>, DomainError> {
        caller.require(PERM_API_KEYS_READ)?;
        self.principal_of(caller, id).await?;
        Ok(self.store.list_role_assignments(&caller.org_id, id).await?)
    }

    pub async fn assign_role(&self, caller: &Caller, id: &PrincipalId, role_id: &RoleId) -> Result<(RoleAssignment, bool), DomainError> {
        let result = async {
            caller.require(PERM_ROLE_ASSIGNMENTS_WRITE)?;
            if caller.is(id) {
                return Err(AuthorityRule::SelfGrant.into());
            }
            let target = self.standing_of(caller, id).await?;
            let role = self.role_for(&caller.org_id, role_id).await?.ok_or_else(|| {
                DomainError::unprocessable(format!("role '{role_id}' does not exist or is not available to this organisation"))
            })?;
            role.check_assignable(&caller.org_id)?;
            caller.authority().may_act_on(&target.permissions())?;
            caller.authority().may_grant(&role.permissions)?;
            let assignment = RoleAssignment {
                org_id: caller.org_id.clone(),
                principal_id: id.clone(),
                role_id: role_id.clone(),
                assigned_at: model::now(),
                assigned_by: caller.actor(),
            };
            let record = caller.entry("role_assignment.assign").principal(id).role(role_id);
            Ok(self.store.assign_role(&assignment, &caller.guard_for_write_on(&target.principal).recording(record)).await?)
        }
        .await;
        self.audited("role_assignment.assign", caller, &format!("{id}/{role_id}"), result).await
    }

    pub async fn unassign_role(&self, caller: &Caller, id: &PrincipalId, role_id: &RoleId) -> Result<(), DomainError> {
        let result = async {
            caller.require(PERM_ROLE_ASSIGNMENTS_WRITE)?;
            for attempt in 1..=WITNESS_ATTEMPTS {
                let before = self.standing_of(caller, id).await?;
                caller.authority().may_act_on(&before.permissions())?;
                let witness = self.witness_for(caller, &before, &before.without_role(role_id)).await?;
                let record = caller.entry("role_assignment.unassign").principal(id).role(role_id);
                let guard = caller.guard_for_write_on(&before.principal).with_witness(witness).recording(record);
                match self.store.unassign_role(&caller.org_id, id, role_id, &guard).await {
                    Ok(true) => return Ok(()),
                    Ok(false) => return Err(DomainError::NotFound("role assignment")),
                    Err(StoreError::WitnessGone) if attempt < WITNESS_ATTEMPTS => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            Err(LastAdministrator.into())
        }
        .await;
        self.audited("role_assignment.unassign", caller, &format!("{id}/{role_id}"), result).await
    }

    /// The roles that grant a principal something now. Roles that no longer exist or no longer
    /// support its type grant nothing.
    pub(crate) async fn granting_roles(&self, principal: &Principal, role_ids: &[RoleId]) -> Result<Vec<Role>, StoreError> {
        let mut granting = Vec::new();
        for role_id in role_ids {
            if let Some(role) = self.role_for(&principal.org_id, role_id).await?
                && authority::granting(&role, &principal.org_id, principal.principal_type)
            {
                granting.push(role);
            }
        }
        granting.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(granting)
    }

    /// The roles and permissions a principal holds now.
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
    let hash = hasher.hash(key.secret()).await.map_err(|e| DomainError::Unavailable(e.into()))?;
    let credential = Credential::new(&principal, key.key_id().clone(), "bootstrap", None, hash, actor.clone(), now)?
        .with_secret_check(hashing::secret_check(key.secret()));
    let result = store.bootstrap_org(&principal, &assignment, &credential, force).await;
    let outcome = result.as_ref().map(|_| ()).map_err(|e| e as &dyn std::fmt::Display);
    audit("org.bootstrap", &actor.0, org.as_str(), principal.id.as_str(), outcome);
    match result {
        Ok(()) => Ok(Some(key)),
        // Another process bootstrapped it first: that is the desired end state.
        // Already bootstrapped, or another bootstrap committed in between.
        Err(StoreError::Conflict(Conflict::AlreadyBootstrapped(_) | Conflict::Contended)) if !force => Ok(None),
        Err(e) => Err(e.into()),
    }
}
