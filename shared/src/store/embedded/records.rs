//! The embedded store's layout: its redb tables and keys, and how values are encoded (JSON;
//! credentials through an explicit record, so the hash is stored and never serialised anywhere
//! else). A value that does not decode is a `Corrupt` error that never quotes it.

use chrono::{DateTime, Utc};
use redb::TableDefinition;
use serde::{Deserialize, Serialize};

use crate::ids::{KeyId, OrgId, PrincipalId};
use crate::model::{Actor, Credential, CredentialStatus, DailyUses, UseWindow};
use crate::restrictions::Restrictions;
use crate::store::StoreError;

pub(super) type Table = TableDefinition<'static, &'static str, &'static [u8]>;
/// `org \0 principalId` → principal.
pub(super) const PRINCIPALS: Table = TableDefinition::new("principals");
/// `keyId` → credential.
pub(super) const CREDENTIALS: Table = TableDefinition::new("credentials");
/// `org \0 principalId \0 keyId` → empty: lists a principal's credentials without a scan.
pub(super) const PRINCIPAL_CREDENTIALS: Table = TableDefinition::new("principal_credentials");
/// `org \0 roleId` → role.
pub(super) const ROLES: Table = TableDefinition::new("roles");
/// `org \0 principalId \0 roleId` → assignment.
pub(super) const ASSIGNMENTS: Table = TableDefinition::new("role_assignments");
/// `org` → the bootstrap admin's principal id.
pub(super) const BOOTSTRAP: Table = TableDefinition::new("bootstrap");
/// `org \0 slot` → idempotency record.
pub(super) const IDEMPOTENCY: Table = TableDefinition::new("idempotency");
/// orgId → the organisation's credential policy (absent: the default).
pub(super) const POLICIES: Table = TableDefinition::new("credential_policies");
/// `org \0 sortKey` → audit record (see [`crate::audit::AuditRecord::sort_key`]).
pub(super) const AUDIT: Table = TableDefinition::new("audit_records");
/// orgId → where the organisation's audit chain ends.
pub(super) const AUDIT_HEADS: Table = TableDefinition::new("audit_heads");
/// `org \0 webhookId` → webhook endpoint.
pub(super) const WEBHOOKS: Table = TableDefinition::new("webhooks");
/// `org \0 deliveryKey` → delivery (see [`crate::webhooks::delivery::Delivery::sort_key`]).
pub(super) const DELIVERIES: Table = TableDefinition::new("webhook_deliveries");
/// `org \0 onceKey` → empty: a warning already recorded (see [`crate::warnings`]).
pub(super) const ONCE: Table = TableDefinition::new("once_records");
/// orgId → the organisation's trusted issuers.
pub(super) const TRUSTED_ISSUERS: Table = TableDefinition::new("trusted_issuers");
/// service account's principalId → its orgId: the token endpoint is named a service account,
/// never an organisation.
pub(super) const SERVICE_ACCOUNTS: Table = TableDefinition::new("service_accounts");
/// `org \0 principalId \0 trustPolicyId` → the policy's use (kept apart from the principal, so
/// a use never moves its version).
pub(super) const TRUST_USES: Table = TableDefinition::new("trust_policy_uses");
/// `org \0 identityKey` → the user's principal id (see `UserIdentity::key`).
pub(super) const USER_IDENTITIES: Table = TableDefinition::new("user_identities");
/// `org \0 key` → a sign-in's record (taken once; expired ones are refused by their reader).
pub(super) const SIGN_INS: Table = TableDefinition::new("sign_ins");

pub(super) const SEP: char = '\0';

/// redb's default page cache may grow to 1 GiB; the local data set fits in far less, and a bound
/// keeps a long-running local server's memory predictable.
pub(super) const CACHE_BYTES: usize = 16 * 1024 * 1024;

pub(super) fn key2(a: &str, b: &str) -> String {
    format!("{a}{SEP}{b}")
}

pub(super) fn key3(a: &str, b: &str, c: &str) -> String {
    format!("{a}{SEP}{b}{SEP}{c}")
}

/// The half-open key range of everything under `prefix`.
pub(super) fn prefix_range(prefix: &str) -> (String, String) {
    (format!("{prefix}{SEP}"), format!("{prefix}\u{1}"))
}

/// Every redb error means the same to a caller: the store could not do it, and the write
/// transaction it happened in is dropped, so nothing was written.
macro_rules! unavailable_from {
    ($($error:ty),* $(,)?) => {
        $(impl From<$error> for StoreError {
            fn from(e: $error) -> Self {
                StoreError::unavailable(e)
            }
        })*
    };
}
unavailable_from!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

pub(super) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(super) fn decode<T: for<'de> Deserialize<'de>>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    // serde_json messages can quote the item (a hash included); say only where it broke.
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Corrupt(format!("{what}: {:?} error at line {} column {}", e.classify(), e.line(), e.column())))
}

/// The stored form of a credential: explicit, so the hash is stored and never serialised anywhere else.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct CredentialRecord {
    key_id: KeyId,
    principal_id: PrincipalId,
    org_id: OrgId,
    name: String,
    expires_at: Option<DateTime<Utc>>,
    status: CredentialStatus,
    created_at: DateTime<Utc>,
    created_by: Actor,
    revoked_at: Option<DateTime<Utc>>,
    revoked_by: Option<Actor>,
    last_used_at: Option<DateTime<Utc>>,
    secret_hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret_check: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    recent_uses: Option<UseWindow>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    daily_uses: Option<DailyUses>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_used_from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rotated_from: Option<KeyId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rotated_to: Option<KeyId>,
    #[serde(default, skip_serializing_if = "Restrictions::is_empty")]
    restrictions: Restrictions,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    self_rotation: bool,
}

impl From<&Credential> for CredentialRecord {
    fn from(c: &Credential) -> Self {
        Self {
            key_id: c.key_id.clone(),
            principal_id: c.principal_id.clone(),
            org_id: c.org_id.clone(),
            name: c.name.clone(),
            expires_at: c.expires_at,
            status: c.status,
            created_at: c.created_at,
            created_by: c.created_by.clone(),
            revoked_at: c.revoked_at,
            revoked_by: c.revoked_by.clone(),
            last_used_at: c.last_used_at,
            secret_hash: c.secret_hash.clone(),
            secret_check: c.secret_check.clone(),
            recent_uses: c.recent_uses,
            daily_uses: c.daily_uses.clone(),
            last_used_from: c.last_used_from.clone(),
            rotated_from: c.rotated_from.clone(),
            rotated_to: c.rotated_to.clone(),
            restrictions: c.restrictions.clone(),
            self_rotation: c.self_rotation,
        }
    }
}

impl From<CredentialRecord> for Credential {
    fn from(r: CredentialRecord) -> Self {
        Self {
            key_id: r.key_id,
            principal_id: r.principal_id,
            org_id: r.org_id,
            name: r.name,
            expires_at: r.expires_at,
            status: r.status,
            created_at: r.created_at,
            created_by: r.created_by,
            revoked_at: r.revoked_at,
            revoked_by: r.revoked_by,
            last_used_at: r.last_used_at,
            secret_hash: r.secret_hash,
            secret_check: r.secret_check,
            recent_uses: r.recent_uses,
            daily_uses: r.daily_uses,
            last_used_from: r.last_used_from,
            rotated_from: r.rotated_from,
            rotated_to: r.rotated_to,
            restrictions: r.restrictions,
            self_rotation: r.self_rotation,
        }
    }
}

pub(super) fn decode_credential(bytes: &[u8]) -> Result<Credential, StoreError> {
    decode::<CredentialRecord>("credential", bytes).map(Credential::from)
}
