//! The storage contract. Every store (embedded here, DynamoDB in production) implements it with
//! the same atomicity, and runs the same contract suite (`contract`).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::audit::{AuditEntry, AuditPage, AuditQuery, ChainHead};
use crate::authority::{Guard, GuardBroken};
use crate::credential_policy::CredentialPolicy;
use crate::error::{Conflict, DomainError, Limit};
use crate::idempotency::IdempotencyRecord;
use crate::ids::{KeyId, OrgId, PrincipalId, RoleId};
use crate::model::{Actor, Credential, Principal, Role, RoleAssignment, UseOutcome};

#[cfg(any(test, feature = "contract-tests"))]
pub mod contract;
pub mod dynamodb;
pub mod embedded;

pub use dynamodb::{DynamoStore, MigrationReport};
pub use embedded::EmbeddedStore;

/// What a store reports. Refusals are typed ([`Conflict`], [`Limit`], `NotFound`) so the service
/// matches on meaning and the words live once, in the domain.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store refused for capacity (DynamoDB's throttling of a hot item or table): nothing
    /// was written, and a client retrying later will be served.
    #[error("store throttled: {0}")]
    Throttled(String),
    /// A condition failed: a duplicate, a stale version, or a state that forbids the write.
    #[error("{0}")]
    Conflict(#[from] Conflict),
    /// The object (or its parent) does not exist in this organisation.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A per-principal or per-organisation limit would be exceeded.
    #[error("{0}")]
    Limit(#[from] Limit),
    /// A guarded write's administrator witness was no longer usable when it would have
    /// committed (changed, revoked or unassigned concurrently); nothing was written.
    #[error("the administrator witness changed concurrently")]
    WitnessGone,
    /// The store could not be reached or failed; nothing was written.
    #[error("store unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A stored item could not be read back (corrupt or from an unknown schema).
    #[error("corrupt item: {0}")]
    Corrupt(String),
}

impl StoreError {
    pub fn unavailable(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        StoreError::Unavailable(cause.into())
    }
}

impl From<GuardBroken> for StoreError {
    fn from(_: GuardBroken) -> Self {
        StoreError::Conflict(Conflict::AuthorityChanged)
    }
}

impl From<StoreError> for DomainError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(conflict) => conflict.into(),
            StoreError::NotFound(what) => DomainError::NotFound(what),
            StoreError::Limit(limit) => limit.into(),
            // Only reached when retries ran out: every witness found was removed concurrently.
            StoreError::WitnessGone => DomainError::LastAdministrator(crate::authority::LastAdministrator),
            failure @ (StoreError::Unavailable(_) | StoreError::Corrupt(_) | StoreError::Throttled(_)) => {
                DomainError::Unavailable(Box::new(failure))
            }
        }
    }
}

/// The `Store` impl of a store split by aggregate: each method is its aggregate module's
/// function (`principals::create`, `credentials::revoke`, ...), which both stores name alike.
/// Items given in braces (a store's own `warm_up`) join the impl.
macro_rules! store_by_aggregate {
    ($store:ty { $($extra:item)* }) => {
        #[async_trait::async_trait]
        impl $crate::store::Store for $store {
            async fn create_principal_as(
                &self,
                principal: &$crate::model::Principal,
                max_principals: usize,
                idempotency: Option<&$crate::idempotency::IdempotencyRecord>,
                record: &$crate::audit::AuditEntry,
            ) -> Result<(), $crate::store::StoreError> {
                principals::create(self, principal, max_principals, idempotency, record).await
            }

            async fn get_principal(&self, org: &$crate::ids::OrgId, id: &$crate::ids::PrincipalId) -> Result<Option<$crate::model::Principal>, $crate::store::StoreError> {
                principals::get(self, org, id).await
            }

            async fn list_principals(&self, org: &$crate::ids::OrgId, limit: usize, after: Option<&$crate::ids::PrincipalId>) -> Result<$crate::store::Page<$crate::model::Principal>, $crate::store::StoreError> {
                principals::list(self, org, limit, after).await
            }

            async fn update_principal(&self, principal: &$crate::model::Principal, expected_version: u64, guard: &$crate::authority::Guard) -> Result<(), $crate::store::StoreError> {
                principals::update(self, principal, expected_version, guard).await
            }

            async fn insert_credential(
                &self,
                credential: &$crate::model::Credential,
                now: chrono::DateTime<chrono::Utc>,
                idempotency: Option<&$crate::idempotency::IdempotencyRecord>,
                guard: &$crate::authority::Guard,
            ) -> Result<(), $crate::store::StoreError> {
                credentials::insert(self, credential, now, idempotency, guard).await
            }

            async fn rotate_credential(
                &self,
                predecessor: &$crate::model::Credential,
                successor: &$crate::model::Credential,
                now: chrono::DateTime<chrono::Utc>,
                idempotency: Option<&$crate::idempotency::IdempotencyRecord>,
                guard: &$crate::authority::Guard,
            ) -> Result<(), $crate::store::StoreError> {
                credentials::rotate(self, predecessor, successor, now, idempotency, guard).await
            }

            async fn update_credential(
                &self,
                credential: &$crate::model::Credential,
                now: chrono::DateTime<chrono::Utc>,
                guard: &$crate::authority::Guard,
            ) -> Result<(), $crate::store::StoreError> {
                credentials::update(self, credential, now, guard).await
            }

            async fn get_credential(&self, key_id: &$crate::ids::KeyId) -> Result<Option<$crate::model::Credential>, $crate::store::StoreError> {
                credentials::get(self, key_id).await
            }

            async fn list_credentials(&self, org: &$crate::ids::OrgId, principal: &$crate::ids::PrincipalId) -> Result<Vec<$crate::model::Credential>, $crate::store::StoreError> {
                credentials::list(self, org, principal).await
            }

            async fn revoke_credential(
                &self,
                org: &$crate::ids::OrgId,
                principal: &$crate::ids::PrincipalId,
                key_id: &$crate::ids::KeyId,
                actor: &$crate::model::Actor,
                now: chrono::DateTime<chrono::Utc>,
                guard: &$crate::authority::Guard,
            ) -> Result<$crate::model::Credential, $crate::store::StoreError> {
                credentials::revoke(self, org, principal, key_id, actor, now, guard).await
            }

            async fn record_credential_use(
                &self,
                credential: &$crate::model::Credential,
                at: chrono::DateTime<chrono::Utc>,
                source: Option<&str>,
                secret_check: Option<&str>,
                per_second: u32,
            ) -> Result<$crate::model::UseOutcome, $crate::store::StoreError> {
                credentials::record_use(self, credential, at, source, secret_check, per_second).await
            }

            async fn create_role(&self, role: &$crate::model::Role, idempotency: Option<&$crate::idempotency::IdempotencyRecord>, guard: &$crate::authority::Guard) -> Result<(), $crate::store::StoreError> {
                roles::create(self, role, idempotency, guard).await
            }

            async fn list_org_roles(&self, org: &$crate::ids::OrgId) -> Result<Vec<$crate::model::Role>, $crate::store::StoreError> {
                roles::list(self, org).await
            }

            async fn get_org_role(&self, org: &$crate::ids::OrgId, id: &$crate::ids::RoleId) -> Result<Option<$crate::model::Role>, $crate::store::StoreError> {
                roles::get(self, org, id).await
            }

            async fn list_role_assignments(&self, org: &$crate::ids::OrgId, principal: &$crate::ids::PrincipalId) -> Result<Vec<$crate::model::RoleAssignment>, $crate::store::StoreError> {
                roles::list_assignments(self, org, principal).await
            }

            async fn get_principal_with_roles(&self, org: &$crate::ids::OrgId, id: &$crate::ids::PrincipalId) -> Result<Option<($crate::model::Principal, Vec<$crate::ids::RoleId>)>, $crate::store::StoreError> {
                roles::principal_with_roles(self, org, id).await
            }

            async fn assign_role(&self, assignment: &$crate::model::RoleAssignment, guard: &$crate::authority::Guard) -> Result<($crate::model::RoleAssignment, bool), $crate::store::StoreError> {
                roles::assign(self, assignment, guard).await
            }

            async fn unassign_role(&self, org: &$crate::ids::OrgId, principal: &$crate::ids::PrincipalId, role: &$crate::ids::RoleId, guard: &$crate::authority::Guard) -> Result<bool, $crate::store::StoreError> {
                roles::unassign(self, org, principal, role, guard).await
            }

            async fn bootstrap_org(
                &self,
                principal: &$crate::model::Principal,
                assignment: &$crate::model::RoleAssignment,
                credential: &$crate::model::Credential,
                force: bool,
            ) -> Result<(), $crate::store::StoreError> {
                bootstrap::write(self, principal, assignment, credential, force).await
            }

            async fn is_bootstrapped(&self, org: &$crate::ids::OrgId) -> Result<bool, $crate::store::StoreError> {
                bootstrap::is_bootstrapped(self, org).await
            }

            async fn get_credential_policy(&self, org: &$crate::ids::OrgId) -> Result<Option<$crate::credential_policy::CredentialPolicy>, $crate::store::StoreError> {
                policy::get(self, org).await
            }

            async fn put_credential_policy(&self, org: &$crate::ids::OrgId, policy: &$crate::credential_policy::CredentialPolicy, guard: &$crate::authority::Guard) -> Result<(), $crate::store::StoreError> {
                policy::put(self, org, policy, guard).await
            }

            async fn record_refusal(&self, entry: &$crate::audit::AuditEntry, repeats: u64) -> Result<(), $crate::store::StoreError> {
                audit::record_refusal(self, entry, repeats).await
            }

            async fn audit_events(&self, org: &$crate::ids::OrgId, query: &$crate::audit::AuditQuery) -> Result<$crate::audit::AuditPage, $crate::store::StoreError> {
                audit::events(self, org, query).await
            }

            async fn audit_head(&self, org: &$crate::ids::OrgId) -> Result<Option<$crate::audit::ChainHead>, $crate::store::StoreError> {
                audit::head(self, org).await
            }

            async fn sweep_credentials(&self, after: Option<&str>, limit: usize) -> Result<$crate::store::SweepPage<$crate::model::Credential>, $crate::store::StoreError> {
                warnings::sweep_credentials(self, after, limit).await
            }

            async fn sweep_principals(&self, after: Option<&str>, limit: usize) -> Result<$crate::store::SweepPage<$crate::model::Principal>, $crate::store::StoreError> {
                warnings::sweep_principals(self, after, limit).await
            }

            async fn record_once(&self, once: &str, entry: &$crate::audit::AuditEntry) -> Result<bool, $crate::store::StoreError> {
                warnings::record_once(self, once, entry).await
            }

            async fn put_webhook(&self, webhook: &$crate::webhooks::Webhook, expected_version: Option<u64>, guard: &$crate::authority::Guard) -> Result<(), $crate::store::StoreError> {
                webhooks::put(self, webhook, expected_version, guard).await
            }

            async fn get_webhook(&self, org: &$crate::ids::OrgId, id: &$crate::ids::WebhookId) -> Result<Option<$crate::webhooks::Webhook>, $crate::store::StoreError> {
                webhooks::get(self, org, id).await
            }

            async fn list_webhooks(&self, org: &$crate::ids::OrgId) -> Result<Vec<$crate::webhooks::Webhook>, $crate::store::StoreError> {
                webhooks::list(self, org).await
            }

            async fn delete_webhook(&self, org: &$crate::ids::OrgId, id: &$crate::ids::WebhookId, guard: &$crate::authority::Guard) -> Result<bool, $crate::store::StoreError> {
                webhooks::delete(self, org, id, guard).await
            }

            async fn put_delivery(&self, delivery: &$crate::webhooks::delivery::Delivery) -> Result<(), $crate::store::StoreError> {
                webhooks::put_delivery(self, delivery).await
            }

            async fn list_deliveries(&self, org: &$crate::ids::OrgId, id: &$crate::ids::WebhookId, limit: usize) -> Result<Vec<$crate::webhooks::delivery::Delivery>, $crate::store::StoreError> {
                webhooks::list_deliveries(self, org, id, limit).await
            }

            async fn get_trusted_issuers(&self, org: &$crate::ids::OrgId) -> Result<Option<$crate::federation::trust::TrustedIssuers>, $crate::store::StoreError> {
                federation::get_trusted_issuers(self, org).await
            }

            async fn put_trusted_issuers(&self, org: &$crate::ids::OrgId, issuers: &$crate::federation::trust::TrustedIssuers, guard: &$crate::authority::Guard) -> Result<(), $crate::store::StoreError> {
                federation::put_trusted_issuers(self, org, issuers, guard).await
            }

            async fn find_service_account(&self, id: &$crate::ids::PrincipalId) -> Result<Option<$crate::ids::OrgId>, $crate::store::StoreError> {
                federation::find_service_account(self, id).await
            }

            async fn record_trust_policy_use(&self, principal: &$crate::model::Principal, policy: &$crate::ids::TrustPolicyId, at: chrono::DateTime<chrono::Utc>) -> Result<bool, $crate::store::StoreError> {
                federation::record_trust_policy_use(self, principal, policy, at).await
            }

            async fn trust_policy_uses(&self, org: &$crate::ids::OrgId, id: &$crate::ids::PrincipalId) -> Result<std::collections::BTreeMap<$crate::ids::TrustPolicyId, $crate::federation::trust::TrustPolicyUse>, $crate::store::StoreError> {
                federation::trust_policy_uses(self, org, id).await
            }

            async fn record_sign_in(&self, principal: &$crate::model::Principal, under: u64, record: &$crate::audit::AuditEntry) -> Result<(), $crate::store::StoreError> {
                federation::record_sign_in(self, principal, under, record).await
            }

            async fn find_user(&self, org: &$crate::ids::OrgId, identity: &$crate::federation::trust::UserIdentity) -> Result<Option<$crate::ids::PrincipalId>, $crate::store::StoreError> {
                federation::find_user(self, org, identity).await
            }

            async fn put_sign_in(&self, org: &$crate::ids::OrgId, key: &str, record: &$crate::federation::sign_in::SignInRecord) -> Result<(), $crate::store::StoreError> {
                federation::put_sign_in(self, org, key, record).await
            }

            async fn take_sign_in(&self, org: &$crate::ids::OrgId, key: &str) -> Result<Option<$crate::federation::sign_in::SignInRecord>, $crate::store::StoreError> {
                federation::take_sign_in(self, org, key).await
            }

            async fn get_idempotency_record(&self, org: &$crate::ids::OrgId, slot: &str) -> Result<Option<$crate::idempotency::IdempotencyRecord>, $crate::store::StoreError> {
                idempotency::get_record(self, org, slot).await
            }

            $($extra)*
        }
    };
}
pub(crate) use store_by_aggregate;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<PrincipalId>,
}

/// A page of a sweep across every organisation; `next` is opaque, and `None` on the last page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepPage<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Fails with `Conflict` if the id exists, `Limit` if the organisation already has
    /// `max_principals` principals.
    ///
    /// Every create takes an optional idempotency record, written in the same atomic step;
    /// `IdempotencyKeyTaken` (and nothing written) if its slot holds a record still live at the
    /// record's `created_at`.
    async fn create_principal(
        &self,
        principal: &Principal,
        max_principals: usize,
        idempotency: Option<&IdempotencyRecord>,
    ) -> Result<(), StoreError> {
        self.create_principal_as(principal, max_principals, idempotency, &AuditEntry::principal_created(principal)).await
    }
    /// [`Store::create_principal`], recorded in the audit trail as `record` says (the caller
    /// and the key it acted with) rather than as the principal's own fields say.
    async fn create_principal_as(
        &self,
        principal: &Principal,
        max_principals: usize,
        idempotency: Option<&IdempotencyRecord>,
        record: &AuditEntry,
    ) -> Result<(), StoreError>;
    async fn get_principal(&self, org: &OrgId, id: &PrincipalId) -> Result<Option<Principal>, StoreError>;
    /// Principals of `org` ordered by id, starting after `after`.
    async fn list_principals(&self, org: &OrgId, limit: usize, after: Option<&PrincipalId>) -> Result<Page<Principal>, StoreError>;
    /// Replaces the principal only if the stored version is still `expected_version`, and the
    /// guard holds, in one atomic step.
    ///
    /// Every write a management request decides on takes a [`Guard`], checked in the write's
    /// own atomic step: each principal it was decided on still at the version read
    /// (`AuthorityChanged` otherwise) and the witness, when given, still a usable administrator
    /// (`WitnessGone` otherwise). Nothing is written when either fails.
    async fn update_principal(&self, principal: &Principal, expected_version: u64, guard: &Guard) -> Result<(), StoreError>;

    /// Atomically: the principal exists in the credential's organisation and is not Revoked, it has
    /// fewer than `MAX_ACTIVE_CREDENTIALS` live credentials at `now`, and the key id is new.
    async fn insert_credential(
        &self,
        credential: &Credential,
        now: DateTime<Utc>,
        idempotency: Option<&IdempotencyRecord>,
        guard: &Guard,
    ) -> Result<(), StoreError>;
    /// A rotation, atomically: `successor` is inserted as by `insert_credential` and
    /// `predecessor` (as the rotation rewrites it: its new `expires_at` and `rotated_to`; its
    /// other fields are not written) replaces the stored credential, which must still be Active
    /// at `now`, of the same principal, and not rotated before (`Conflict::NotRotatable`;
    /// `NotFound` if it is not that principal's). The limit of live credentials is counted with
    /// the predecessor's new expiry, so a rotation with no grace period never needs room.
    async fn rotate_credential(
        &self,
        predecessor: &Credential,
        successor: &Credential,
        now: DateTime<Utc>,
        idempotency: Option<&IdempotencyRecord>,
        guard: &Guard,
    ) -> Result<(), StoreError>;
    /// Writes `credential`'s name, expiry and restrictions (nothing else) over the stored ones,
    /// only while the stored credential is still that principal's (`NotFound`), Active and
    /// unexpired at `now` (`Conflict::NotChangeable`), and the guard holds.
    async fn update_credential(&self, credential: &Credential, now: DateTime<Utc>, guard: &Guard) -> Result<(), StoreError>;
    /// A strongly consistent read by key id.
    async fn get_credential(&self, key_id: &KeyId) -> Result<Option<Credential>, StoreError>;
    async fn list_credentials(&self, org: &OrgId, principal: &PrincipalId) -> Result<Vec<Credential>, StoreError>;
    /// Marks the credential Revoked unless it already is; answers the stored credential. Once this
    /// returns, no read sees the credential Active. The revocation commits only while the guard
    /// holds; one already revoked is answered as stored.
    async fn revoke_credential(
        &self,
        org: &OrgId,
        principal: &PrincipalId,
        key_id: &KeyId,
        actor: &Actor,
        now: DateTime<Utc>,
        guard: &Guard,
    ) -> Result<Credential, StoreError>;
    /// Records that `credential` authenticated at `at`, atomically with the check that it and its
    /// principal are still Active (the credential unexpired at `at`) (an exchange's last step: a revoke that returned before this
    /// wins) and with the per-key limit: at most `per_second` uses counted in one
    /// [`UseWindow`](crate::model::UseWindow). Writes nothing unless it answers `Recorded`.
    /// The same write counts the use in the credential's [`DailyUses`](crate::model::DailyUses)
    /// and stores `source` as where it was last used from (cleared when unknown).
    /// `secret_check`, when given, is stored as the credential's fast secret check
    /// (credentials issued before it existed gain it on their first proved use).
    async fn record_credential_use(
        &self,
        credential: &Credential,
        at: DateTime<Utc>,
        source: Option<&str>,
        secret_check: Option<&str>,
        per_second: u32,
    ) -> Result<UseOutcome, StoreError>;

    /// Fails with `Conflict` on a duplicate name in the organisation, `Limit` past `MAX_ORG_ROLES`.
    async fn create_role(&self, role: &Role, idempotency: Option<&IdempotencyRecord>, guard: &Guard) -> Result<(), StoreError>;
    async fn list_org_roles(&self, org: &OrgId) -> Result<Vec<Role>, StoreError>;
    async fn get_org_role(&self, org: &OrgId, id: &RoleId) -> Result<Option<Role>, StoreError>;

    async fn list_role_assignments(&self, org: &OrgId, principal: &PrincipalId) -> Result<Vec<RoleAssignment>, StoreError>;
    /// The principal and the ids of its assigned roles (sorted), as one snapshot: what every
    /// authority decision and every exchange reads, so one read where the store can (DynamoDB
    /// carries the ids on the principal's item, written with each assignment).
    async fn get_principal_with_roles(&self, org: &OrgId, id: &PrincipalId) -> Result<Option<(Principal, Vec<RoleId>)>, StoreError>;
    /// Atomically: the principal exists and is not Revoked, and is under `MAX_ROLES_PER_PRINCIPAL`,
    /// and the guard holds. Idempotent: answers the stored assignment and whether this call
    /// created it. A new assignment advances the principal's version.
    async fn assign_role(&self, assignment: &RoleAssignment, guard: &Guard) -> Result<(RoleAssignment, bool), StoreError>;
    /// Whether an assignment was removed (which advances the principal's version). Commits only
    /// while the guard holds.
    async fn unassign_role(&self, org: &OrgId, principal: &PrincipalId, role: &RoleId, guard: &Guard) -> Result<bool, StoreError>;

    /// Atomically writes an organisation's first admin (principal, role assignment, credential)
    /// and marks the organisation bootstrapped; `Conflict` if it already was, unless `force`.
    async fn bootstrap_org(
        &self,
        principal: &Principal,
        assignment: &RoleAssignment,
        credential: &Credential,
        force: bool,
    ) -> Result<(), StoreError>;
    async fn is_bootstrapped(&self, org: &OrgId) -> Result<bool, StoreError>;

    /// The organisation's credential policy, if one was ever set (strongly consistent).
    async fn get_credential_policy(&self, org: &OrgId) -> Result<Option<CredentialPolicy>, StoreError>;
    /// Replaces the organisation's credential policy, only while the guard holds.
    async fn put_credential_policy(&self, org: &OrgId, policy: &CredentialPolicy, guard: &Guard) -> Result<(), StoreError>;

    /// Records a refusal (an entry whose outcome is `Refused`), `repeats` times: the first of
    /// its bucket (actor, action, reason, minute; see [`crate::audit::refusals`]) is chained as
    /// a new record, later ones add to that record's tally.
    async fn record_refusal(&self, entry: &AuditEntry, repeats: u64) -> Result<(), StoreError>;
    /// A page of the organisation's audit trail (strongly consistent).
    async fn audit_events(&self, org: &OrgId, query: &AuditQuery) -> Result<AuditPage, StoreError>;
    /// Where the organisation's chain ends, if it has a record.
    async fn audit_head(&self, org: &OrgId) -> Result<Option<ChainHead>, StoreError>;

    /// Every Active credential of every organisation, a page at a time (for the warnings
    /// sweep: read in the background, not to decide a request, so eventually consistent).
    async fn sweep_credentials(&self, after: Option<&str>, limit: usize) -> Result<SweepPage<Credential>, StoreError>;
    /// Every Active principal that has an expiry, of every organisation, a page at a time.
    async fn sweep_principals(&self, after: Option<&str>, limit: usize) -> Result<SweepPage<Principal>, StoreError>;
    /// Records `entry` in its organisation's trail unless `once` (a key within the
    /// organisation) was claimed before; the claim and the record commit together. Whether
    /// this call recorded it.
    async fn record_once(&self, once: &str, entry: &AuditEntry) -> Result<bool, StoreError>;

    /// Writes a webhook endpoint: a new one (`expected_version` `None`; `Conflict::WebhookExists`
    /// if its id is taken) or a replacement of the one stored at `expected_version`
    /// (`StaleVersion`, or `NotFound`), only while the guard holds, with the guard's record.
    async fn put_webhook(&self, webhook: &crate::webhooks::Webhook, expected_version: Option<u64>, guard: &Guard)
    -> Result<(), StoreError>;
    async fn get_webhook(&self, org: &OrgId, id: &crate::ids::WebhookId) -> Result<Option<crate::webhooks::Webhook>, StoreError>;
    /// The organisation's endpoints (strongly consistent).
    async fn list_webhooks(&self, org: &OrgId) -> Result<Vec<crate::webhooks::Webhook>, StoreError>;
    /// Whether an endpoint was removed (with the guard's record; nothing recorded when absent).
    async fn delete_webhook(&self, org: &OrgId, id: &crate::ids::WebhookId, guard: &Guard) -> Result<bool, StoreError>;
    /// Writes a delivery's record over any earlier one of the same event and endpoint.
    async fn put_delivery(&self, delivery: &crate::webhooks::delivery::Delivery) -> Result<(), StoreError>;
    /// An endpoint's latest deliveries, newest event first.
    async fn list_deliveries(
        &self,
        org: &OrgId,
        id: &crate::ids::WebhookId,
        limit: usize,
    ) -> Result<Vec<crate::webhooks::delivery::Delivery>, StoreError>;

    /// The organisation's trusted issuers, if an administrator ever set them.
    async fn get_trusted_issuers(&self, org: &OrgId) -> Result<Option<crate::federation::trust::TrustedIssuers>, StoreError>;
    /// Replaces the organisation's trusted issuers with `issuers` (at its `version`), only over
    /// the list at `version - 1` (`StaleVersion` otherwise; none stored counts as 0) and while
    /// the guard holds, with its record.
    async fn put_trusted_issuers(
        &self,
        org: &OrgId,
        issuers: &crate::federation::trust::TrustedIssuers,
        guard: &Guard,
    ) -> Result<(), StoreError>;
    /// The organisation of a service account, from its id alone (written with the account;
    /// `None` for any other id).
    async fn find_service_account(&self, id: &PrincipalId) -> Result<Option<OrgId>, StoreError>;
    /// Counts a use of one of `principal`'s trust policies at `at`, only while the principal
    /// is Active and still at `principal.version` (so a policy removed or an account suspended
    /// since it was read wins); whether it was counted. Never moves the version.
    async fn record_trust_policy_use(
        &self,
        principal: &Principal,
        policy: &crate::ids::TrustPolicyId,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// Each trust policy's use, for a service account's policies.
    async fn trust_policy_uses(
        &self,
        org: &OrgId,
        id: &PrincipalId,
    ) -> Result<std::collections::BTreeMap<crate::ids::TrustPolicyId, crate::federation::trust::TrustPolicyUse>, StoreError>;

    /// The `User` principal mapped to `identity` in `org` (the mapping is written with the
    /// principal; `Conflict::IdentityMapped` if another has it).
    async fn find_user(&self, org: &OrgId, identity: &crate::federation::trust::UserIdentity) -> Result<Option<PrincipalId>, StoreError>;
    /// Notes that `principal`, a user, signed in under the trusted-issuer list's version `under`
    /// (without changing its version), with `record` in the organisation's trail in the same
    /// write: from then on the person counts for the last-administrator rule.
    async fn record_sign_in(&self, principal: &Principal, under: u64, record: &crate::audit::AuditEntry) -> Result<(), StoreError>;
    /// Keeps a sign-in's record under a one-time key until its expiry.
    async fn put_sign_in(&self, org: &OrgId, key: &str, record: &crate::federation::sign_in::SignInRecord) -> Result<(), StoreError>;
    /// Takes (reads and deletes, in one step) a sign-in's record: a second take finds nothing.
    /// An expired one may still be answered (the store sweeps lazily); the caller checks.
    async fn take_sign_in(&self, org: &OrgId, key: &str) -> Result<Option<crate::federation::sign_in::SignInRecord>, StoreError>;

    /// The record in an idempotency slot, live or not (expired ones may linger until swept).
    async fn get_idempotency_record(&self, org: &OrgId, slot: &str) -> Result<Option<IdempotencyRecord>, StoreError>;

    /// Opens what the first request would otherwise open (a network store's connection and TLS
    /// session), during a cold start rather than on a client's clock. Best effort: a failure
    /// here is logged and the first request simply pays as before.
    async fn warm_up(&self) {}
}
