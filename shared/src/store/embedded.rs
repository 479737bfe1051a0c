//! The embedded store: redb, on disk or in memory. Every check-then-write runs inside one redb
//! write transaction, and redb admits one writer at a time, so those writes are atomic.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{Page, Store, StoreError, principal_limit};
use crate::authority::Guard;
use crate::idempotency::{IdempotencyRecord, IdempotentOutcome};
use crate::ids::{KeyId, OrgId, PrincipalId, RoleId};
use crate::model::{
    Actor, Credential, CredentialStatus, MAX_ACTIVE_CREDENTIALS, MAX_ORG_ROLES, MAX_ROLES_PER_PRINCIPAL, Principal, PrincipalStatus, Role,
    RoleAssignment,
};

type Table = TableDefinition<'static, &'static str, &'static [u8]>;
/// `org \0 principalId` → principal.
const PRINCIPALS: Table = TableDefinition::new("principals");
/// `keyId` → credential.
const CREDENTIALS: Table = TableDefinition::new("credentials");
/// `org \0 principalId \0 keyId` → empty: lists a principal's credentials without a scan.
const PRINCIPAL_CREDENTIALS: Table = TableDefinition::new("principal_credentials");
/// `org \0 roleId` → role.
const ROLES: Table = TableDefinition::new("roles");
/// `org \0 principalId \0 roleId` → assignment.
const ASSIGNMENTS: Table = TableDefinition::new("role_assignments");
/// `org` → the bootstrap admin's principal id.
const BOOTSTRAP: Table = TableDefinition::new("bootstrap");
/// `key \0 window` → failed-attempt count (u32, big-endian).
/// org \0 slot -> IdempotencyItem
const IDEMPOTENCY: Table = TableDefinition::new("idempotency");

const SEP: char = '\0';

/// redb's default page cache may grow to 1 GiB; the local data set fits in far less, and a bound
/// keeps a long-running local server's memory predictable.
const CACHE_BYTES: usize = 16 * 1024 * 1024;

fn key2(a: &str, b: &str) -> String {
    format!("{a}{SEP}{b}")
}

fn key3(a: &str, b: &str, c: &str) -> String {
    format!("{a}{SEP}{b}{SEP}{c}")
}

/// The half-open key range of everything under `prefix`.
fn prefix_range(prefix: &str) -> (String, String) {
    (format!("{prefix}{SEP}"), format!("{prefix}\u{1}"))
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Every redb error means the same to a caller: the store could not do it, and the write
/// transaction it happened in is dropped, so nothing was written.
macro_rules! unavailable_from {
    ($($error:ty),* $(,)?) => {
        $(impl From<$error> for StoreError {
            fn from(e: $error) -> Self {
                unavailable(e)
            }
        })*
    };
}
unavailable_from!(redb::DatabaseError, redb::TransactionError, redb::TableError, redb::StorageError, redb::CommitError);

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn decode<T: for<'de> Deserialize<'de>>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    // serde_json messages can quote the item (a hash included); say only where it broke.
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Corrupt(format!("{what}: {:?} error at line {} column {}", e.classify(), e.line(), e.column())))
}

/// The stored form of a credential: explicit, so the hash is stored and never serialised anywhere else.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CredentialRecord {
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
        }
    }
}

fn decode_credential(bytes: &[u8]) -> Result<Credential, StoreError> {
    decode::<CredentialRecord>("credential", bytes).map(Credential::from)
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct IdempotencyItem {
    fingerprint: String,
    outcome: IdempotentOutcome,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

/// Writes `record` inside `txn` unless its slot holds one still live; part of the create's
/// transaction, so the record and the object exist together or not at all. An expired record
/// is overwritten here rather than swept.
fn claim_idempotency_in(txn: &redb::WriteTransaction, record: Option<&IdempotencyRecord>) -> Result<(), StoreError> {
    let Some(r) = record else { return Ok(()) };
    let mut t = txn.open_table(IDEMPOTENCY)?;
    let k = key2(r.org_id.as_str(), &r.slot);
    let taken = match t.get(k.as_str())? {
        Some(v) => r.created_at < decode::<IdempotencyItem>("idempotency record", v.value())?.expires_at,
        None => false,
    };
    if taken {
        return Err(StoreError::IdempotencyKeyTaken);
    }
    let item = IdempotencyItem {
        fingerprint: r.fingerprint.clone(),
        outcome: r.outcome.clone(),
        created_at: r.created_at,
        expires_at: r.expires_at,
    };
    t.insert(k.as_str(), encode(&item)?.as_slice())?;
    Ok(())
}

#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EmbeddedStore")
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the database file at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::builder().set_cache_size(CACHE_BYTES).create(path)?;
        Self::init(db)
    }

    pub fn in_memory() -> Result<Self, StoreError> {
        let db = Database::builder().set_cache_size(CACHE_BYTES).create_with_backend(redb::backends::InMemoryBackend::new())?;
        Self::init(db)
    }

    fn init(db: Database) -> Result<Self, StoreError> {
        let txn = db.begin_write()?;
        for table in [PRINCIPALS, CREDENTIALS, PRINCIPAL_CREDENTIALS, ROLES, ASSIGNMENTS, BOOTSTRAP, IDEMPOTENCY] {
            txn.open_table(table)?;
        }
        txn.commit()?;
        Ok(Self { db: Arc::new(db) })
    }

    /// redb blocks on disk I/O; keep it off the async executor.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || work(&db)).await.map_err(unavailable)?
    }
}

fn get_principal_in(table: &impl ReadableTable<&'static str, &'static [u8]>, org: &str, id: &str) -> Result<Option<Principal>, StoreError> {
    match table.get(key2(org, id).as_str())? {
        Some(v) => decode("principal", v.value()).map(Some),
        None => Ok(None),
    }
}

/// The principal for a write that needs it alive: exists in `org` and is not Revoked.
fn live_principal_in(table: &impl ReadableTable<&'static str, &'static [u8]>, org: &str, id: &str) -> Result<Principal, StoreError> {
    let p = get_principal_in(table, org, id)?.ok_or(StoreError::NotFound("principal"))?;
    if p.status == PrincipalStatus::Revoked {
        return Err(StoreError::Conflict("the principal is revoked".into()));
    }
    Ok(p)
}

/// Whether `guard` holds inside `txn`: each principal it was decided on still at the version
/// read, and the witness still a usable administrator (its principal unchanged since it was
/// judged usable, its credential Active, each of its roles still assigned). Part of the write's
/// own transaction, so nothing can change them in between.
fn check_guard_in(txn: &redb::WriteTransaction, guard: &Guard) -> Result<(), StoreError> {
    let principals = txn.open_table(PRINCIPALS)?;
    for d in guard.principals_to_check(&[])? {
        let current = get_principal_in(&principals, d.org_id.as_str(), d.principal_id.as_str())?;
        if current.is_none_or(|p| p.version != d.version) {
            return Err(StoreError::AuthorityChanged);
        }
    }
    let Some(w) = &guard.witness else { return Ok(()) };
    let (org, id) = (w.org_id.as_str(), w.principal_id.as_str());
    let principal_unchanged =
        get_principal_in(&principals, org, id)?.is_some_and(|p| p.version == w.principal_version && p.status == PrincipalStatus::Active);
    let credentials = txn.open_table(CREDENTIALS)?;
    let credential_active = match credentials.get(w.key_id.as_str())? {
        Some(v) => {
            let c = decode_credential(v.value())?;
            c.status == CredentialStatus::Active && c.principal_id == w.principal_id
        }
        None => false,
    };
    let assignments = txn.open_table(ASSIGNMENTS)?;
    let mut roles_assigned = true;
    for role in &w.roles {
        roles_assigned &= assignments.get(key3(org, id, role.as_str()).as_str())?.is_some();
    }
    if principal_unchanged && credential_active && roles_assigned { Ok(()) } else { Err(StoreError::WitnessGone) }
}

/// Advances a principal's version inside `txn`: its role assignments changed, and with them
/// what it holds.
fn advance_version_in(txn: &redb::WriteTransaction, org: &str, id: &str) -> Result<(), StoreError> {
    let mut principals = txn.open_table(PRINCIPALS)?;
    let mut p = get_principal_in(&principals, org, id)?.ok_or(StoreError::NotFound("principal"))?;
    p.version += 1;
    principals.insert(key2(org, id).as_str(), encode(&p)?.as_slice())?;
    Ok(())
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn create_principal(
        &self,
        principal: &Principal,
        max_principals: usize,
        idempotency: Option<&IdempotencyRecord>,
    ) -> Result<(), StoreError> {
        let p = principal.clone();
        let idempotency = idempotency.cloned();
        self.blocking(move |db| {
            let txn = db.begin_write()?;
            {
                let mut t = txn.open_table(PRINCIPALS)?;
                let k = key2(p.org_id.as_str(), p.id.as_str());
                // The identical principal again is a retried plain write (as the DynamoDB store
                // sees it); a create carrying an idempotency record is never retried that way.
                if let Some(stored) = get_principal_in(&t, p.org_id.as_str(), p.id.as_str())? {
                    return if stored == p && idempotency.is_none() {
                        Ok(())
                    } else {
                        Err(StoreError::Conflict("a principal with this id exists".into()))
                    };
                }
                let (start, end) = prefix_range(p.org_id.as_str());
                if t.range(start.as_str()..end.as_str())?.count() >= max_principals {
                    return Err(StoreError::Limit(principal_limit(max_principals)));
                }
                t.insert(k.as_str(), encode(&p)?.as_slice())?;
            }
            claim_idempotency_in(&txn, idempotency.as_ref())?;
            Ok(txn.commit()?)
        })
        .await
    }

    async fn get_principal(&self, org: &OrgId, id: &PrincipalId) -> Result<Option<Principal>, StoreError> {
        let (org, id) = (org.clone(), id.clone());
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let t = txn.open_table(PRINCIPALS)?;
            get_principal_in(&t, org.as_str(), id.as_str())
        })
        .await
    }

    async fn list_principals(&self, org: &OrgId, limit: usize, after: Option<&PrincipalId>) -> Result<Page<Principal>, StoreError> {
        let org = org.clone();
        let after = after.cloned();
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let t = txn.open_table(PRINCIPALS)?;
            let (start, end) = prefix_range(org.as_str());
            // Start strictly after the cursor: append a byte that sorts after every id character.
            let start = match &after {
                Some(id) => format!("{}{SEP}{}\u{1}", org, id),
                None => start,
            };
            let mut items = Vec::new();
            let mut more = false;
            for entry in t.range(start.as_str()..end.as_str())? {
                let (_, v) = entry?;
                if items.len() == limit {
                    more = true;
                    break;
                }
                items.push(decode::<Principal>("principal", v.value())?);
            }
            let next = if more { items.last().map(|p| p.id.clone()) } else { None };
            Ok(Page { items, next })
        })
        .await
    }

    async fn update_principal(&self, principal: &Principal, expected_version: u64, guard: &Guard) -> Result<(), StoreError> {
        let p = principal.clone();
        let guard = guard.clone();
        self.blocking(move |db| {
            let txn = db.begin_write()?;
            // The version first: a concurrent change to the principal itself is a stale read
            // (412 under If-Match), whatever else the guard names.
            {
                let t = txn.open_table(PRINCIPALS)?;
                let current = get_principal_in(&t, p.org_id.as_str(), p.id.as_str())?.ok_or(StoreError::NotFound("principal"))?;
                if current.version != expected_version {
                    return Err(StoreError::Conflict("the principal was changed concurrently; read it again and retry".into()));
                }
            }
            check_guard_in(&txn, &guard)?;
            {
                let mut t = txn.open_table(PRINCIPALS)?;
                t.insert(key2(p.org_id.as_str(), p.id.as_str()).as_str(), encode(&p)?.as_slice())?;
            }
            Ok(txn.commit()?)
        })
        .await
    }

    async fn insert_credential(
        &self,
        credential: &Credential,
        now: DateTime<Utc>,
        idempotency: Option<&IdempotencyRecord>,
        guard: &Guard,
    ) -> Result<(), StoreError> {
        let c = credential.clone();
        let idempotency = idempotency.cloned();
        let guard = guard.clone();
        self.blocking(move |db| {
            let txn = db.begin_write()?;
            check_guard_in(&txn, &guard)?;
            {
                let principals = txn.open_table(PRINCIPALS)?;
                live_principal_in(&principals, c.org_id.as_str(), c.principal_id.as_str())?;
                let mut creds = txn.open_table(CREDENTIALS)?;
                let mut index = txn.open_table(PRINCIPAL_CREDENTIALS)?;
                let (start, end) = prefix_range(&key2(c.org_id.as_str(), c.principal_id.as_str()));
                let mut live = 0;
                for entry in index.range(start.as_str()..end.as_str())? {
                    let (k, _) = entry?;
                    let key_id = k.value().rsplit(SEP).next().unwrap_or_default().to_owned();
                    if let Some(v) = creds.get(key_id.as_str())?
                        && decode_credential(v.value())?.is_live(now)
                    {
                        live += 1;
                    }
                }
                if live >= MAX_ACTIVE_CREDENTIALS {
                    return Err(StoreError::Limit(format!(
                        "the principal already has {MAX_ACTIVE_CREDENTIALS} active credentials; revoke one first"
                    )));
                }
                if creds.get(c.key_id.as_str())?.is_some() {
                    return Err(StoreError::Conflict("a credential with this key id exists".into()));
                }
                creds.insert(c.key_id.as_str(), encode(&CredentialRecord::from(&c))?.as_slice())?;
                index.insert(key3(c.org_id.as_str(), c.principal_id.as_str(), c.key_id.as_str()).as_str(), [].as_slice())?;
            }
            claim_idempotency_in(&txn, idempotency.as_ref())?;
            Ok(txn.commit()?)
        })
        .await
    }

    async fn get_credential(&self, key_id: &KeyId) -> Result<Option<Credential>, StoreError> {
        let key_id = key_id.clone();
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let t = txn.open_table(CREDENTIALS)?;
            match t.get(key_id.as_str())? {
                Some(v) => decode_credential(v.value()).map(Some),
                None => Ok(None),
            }
        })
        .await
    }

    async fn list_credentials(&self, org: &OrgId, principal: &PrincipalId) -> Result<Vec<Credential>, StoreError> {
        let prefix = key2(org.as_str(), principal.as_str());
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let index = txn.open_table(PRINCIPAL_CREDENTIALS)?;
            let creds = txn.open_table(CREDENTIALS)?;
            let (start, end) = prefix_range(&prefix);
            let mut out = Vec::new();
            for entry in index.range(start.as_str()..end.as_str())? {
                let (k, _) = entry?;
                let key_id = k.value().rsplit(SEP).next().unwrap_or_default().to_owned();
                if let Some(v) = creds.get(key_id.as_str())? {
                    out.push(decode_credential(v.value())?);
                }
            }
            out.sort_by(|a: &Credential, b: &Credential| a.created_at.cmp(&b.created_at).then_with(|| a.key_id.cmp(&b.key_id)));
            Ok(out)
        })
        .await
    }

    async fn revoke_credential(
        &self,
        org: &OrgId,
        principal: &PrincipalId,
        key_id: &KeyId,
        actor: &Actor,
        now: DateTime<Utc>,
        guard: &Guard,
    ) -> Result<Credential, StoreError> {
        let (org, principal, key_id, actor) = (org.clone(), principal.clone(), key_id.clone(), actor.clone());
        let guard = guard.clone();
        self.blocking(move |db| {
            let txn = db.begin_write()?;
            let revoked = {
                let t = txn.open_table(CREDENTIALS)?;
                let current = match t.get(key_id.as_str())? {
                    Some(v) => decode_credential(v.value())?,
                    None => return Err(StoreError::NotFound("credential")),
                };
                if current.org_id != org || current.principal_id != principal {
                    return Err(StoreError::NotFound("credential"));
                }
                let revoked = current.revoked(actor, now);
                if revoked != current {
                    drop(t);
                    check_guard_in(&txn, &guard)?;
                    let mut t = txn.open_table(CREDENTIALS)?;
                    t.insert(key_id.as_str(), encode(&CredentialRecord::from(&revoked))?.as_slice())?;
                }
                revoked
            };
            txn.commit()?;
            Ok(revoked)
        })
        .await
    }

    async fn record_credential_use(
        &self,
        credential: &Credential,
        at: DateTime<Utc>,
        secret_check: Option<&str>,
    ) -> Result<bool, StoreError> {
        let c = credential.clone();
        let secret_check = secret_check.map(str::to_owned);
        self.blocking(move |db| {
            let txn = db.begin_write()?;
            {
                let principals = txn.open_table(PRINCIPALS)?;
                let principal_active = get_principal_in(&principals, c.org_id.as_str(), c.principal_id.as_str())?
                    .is_some_and(|p| p.status == PrincipalStatus::Active);
                let mut t = txn.open_table(CREDENTIALS)?;
                let current = match t.get(c.key_id.as_str())? {
                    Some(v) => decode_credential(v.value())?,
                    None => return Ok(false),
                };
                if !principal_active || current.status != CredentialStatus::Active {
                    return Ok(false);
                }
                let mut next = current;
                next.last_used_at = Some(at);
                if next.secret_check.is_none() {
                    next.secret_check = secret_check;
                }
                t.insert(c.key_id.as_str(), encode(&CredentialRecord::from(&next))?.as_slice())?;
            }
            txn.commit()?;
            Ok(true)
        })
        .await
    }

    async fn create_role(&self, role: &Role, idempotency: Option<&IdempotencyRecord>, guard: &Guard) -> Result<(), StoreError> {
        let role = role.clone();
        let idempotency = idempotency.cloned();
        let guard = guard.clone();
        let Some(org) = role.org_id.clone() else {
            return Err(StoreError::Conflict("built-in roles are not stored".into()));
        };
        self.blocking(move |db| {
            let txn = db.begin_write()?;
            check_guard_in(&txn, &guard)?;
            {
                let mut t = txn.open_table(ROLES)?;
                let (start, end) = prefix_range(org.as_str());
                let mut count = 0;
                for entry in t.range(start.as_str()..end.as_str())? {
                    let (_, v) = entry?;
                    let existing: Role = decode("role", v.value())?;
                    if existing.name == role.name {
                        return Err(StoreError::Conflict(format!("a role named '{}' already exists", role.name)));
                    }
                    count += 1;
                }
                if count >= MAX_ORG_ROLES {
                    return Err(StoreError::Limit(format!("an organisation can define at most {MAX_ORG_ROLES} roles")));
                }
                let k = key2(org.as_str(), role.id.as_str());
                if t.get(k.as_str())?.is_some() {
                    return Err(StoreError::Conflict("a role with this id exists".into()));
                }
                t.insert(k.as_str(), encode(&role)?.as_slice())?;
            }
            claim_idempotency_in(&txn, idempotency.as_ref())?;
            Ok(txn.commit()?)
        })
        .await
    }

    async fn list_org_roles(&self, org: &OrgId) -> Result<Vec<Role>, StoreError> {
        let org = org.clone();
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let t = txn.open_table(ROLES)?;
            let (start, end) = prefix_range(org.as_str());
            let mut out = Vec::new();
            for entry in t.range(start.as_str()..end.as_str())? {
                let (_, v) = entry?;
                out.push(decode("role", v.value())?);
            }
            Ok(out)
        })
        .await
    }

    async fn get_org_role(&self, org: &OrgId, id: &RoleId) -> Result<Option<Role>, StoreError> {
        let k = key2(org.as_str(), id.as_str());
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let t = txn.open_table(ROLES)?;
            match t.get(k.as_str())? {
                Some(v) => decode("role", v.value()).map(Some),
                None => Ok(None),
            }
        })
        .await
    }

    async fn list_role_assignments(&self, org: &OrgId, principal: &PrincipalId) -> Result<Vec<RoleAssignment>, StoreError> {
        let prefix = key2(org.as_str(), principal.as_str());
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let t = txn.open_table(ASSIGNMENTS)?;
            let (start, end) = prefix_range(&prefix);
            let mut out = Vec::new();
            for entry in t.range(start.as_str()..end.as_str())? {
                let (_, v) = entry?;
                out.push(decode("role assignment", v.value())?);
            }
            Ok(out)
        })
        .await
    }

    async fn assign_role(&self, assignment: &RoleAssignment, guard: &Guard) -> Result<(RoleAssignment, bool), StoreError> {
        let a = assignment.clone();
        let guard = guard.clone();
        self.blocking(move |db| {
            let txn = db.begin_write()?;
            let result = {
                let principals = txn.open_table(PRINCIPALS)?;
                live_principal_in(&principals, a.org_id.as_str(), a.principal_id.as_str())?;
                let t = txn.open_table(ASSIGNMENTS)?;
                let k = key3(a.org_id.as_str(), a.principal_id.as_str(), a.role_id.as_str());
                let existing = t.get(k.as_str())?.map(|v| decode::<RoleAssignment>("role assignment", v.value())).transpose()?;
                match existing {
                    Some(existing) => (existing, false),
                    None => {
                        let (start, end) = prefix_range(&key2(a.org_id.as_str(), a.principal_id.as_str()));
                        if t.range(start.as_str()..end.as_str())?.count() >= MAX_ROLES_PER_PRINCIPAL {
                            return Err(StoreError::Limit(format!("a principal can hold at most {MAX_ROLES_PER_PRINCIPAL} roles")));
                        }
                        drop((t, principals));
                        check_guard_in(&txn, &guard)?;
                        txn.open_table(ASSIGNMENTS)?.insert(k.as_str(), encode(&a)?.as_slice())?;
                        advance_version_in(&txn, a.org_id.as_str(), a.principal_id.as_str())?;
                        (a, true)
                    }
                }
            };
            txn.commit()?;
            Ok(result)
        })
        .await
    }

    async fn unassign_role(&self, org: &OrgId, principal: &PrincipalId, role: &RoleId, guard: &Guard) -> Result<bool, StoreError> {
        let k = key3(org.as_str(), principal.as_str(), role.as_str());
        let (org, principal) = (org.clone(), principal.clone());
        let guard = guard.clone();
        self.blocking(move |db| {
            let txn = db.begin_write()?;
            check_guard_in(&txn, &guard)?;
            let removed = {
                let mut t = txn.open_table(ASSIGNMENTS)?;
                t.remove(k.as_str())?.is_some()
            };
            if removed {
                advance_version_in(&txn, org.as_str(), principal.as_str())?;
            }
            txn.commit()?;
            Ok(removed)
        })
        .await
    }

    async fn bootstrap_org(
        &self,
        principal: &Principal,
        assignment: &RoleAssignment,
        credential: &Credential,
        force: bool,
    ) -> Result<(), StoreError> {
        let (p, a, c) = (principal.clone(), assignment.clone(), credential.clone());
        self.blocking(move |db| {
            let txn = db.begin_write()?;
            {
                let mut marker = txn.open_table(BOOTSTRAP)?;
                if !force && marker.get(p.org_id.as_str())?.is_some() {
                    return Err(StoreError::Conflict(format!("organisation '{}' is already bootstrapped", p.org_id)));
                }
                marker.insert(p.org_id.as_str(), p.id.as_str().as_bytes())?;
                txn.open_table(PRINCIPALS)?.insert(key2(p.org_id.as_str(), p.id.as_str()).as_str(), encode(&p)?.as_slice())?;
                txn.open_table(ASSIGNMENTS)?
                    .insert(key3(a.org_id.as_str(), a.principal_id.as_str(), a.role_id.as_str()).as_str(), encode(&a)?.as_slice())?;
                txn.open_table(CREDENTIALS)?.insert(c.key_id.as_str(), encode(&CredentialRecord::from(&c))?.as_slice())?;
                txn.open_table(PRINCIPAL_CREDENTIALS)?
                    .insert(key3(c.org_id.as_str(), c.principal_id.as_str(), c.key_id.as_str()).as_str(), [].as_slice())?;
            }
            Ok(txn.commit()?)
        })
        .await
    }

    async fn get_idempotency_record(&self, org: &OrgId, slot: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        let (org, slot) = (org.clone(), slot.to_owned());
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let t = txn.open_table(IDEMPOTENCY)?;
            let Some(v) = t.get(key2(org.as_str(), &slot).as_str())? else { return Ok(None) };
            let item: IdempotencyItem = decode("idempotency record", v.value())?;
            Ok(Some(IdempotencyRecord {
                org_id: org,
                slot,
                fingerprint: item.fingerprint,
                outcome: item.outcome,
                created_at: item.created_at,
                expires_at: item.expires_at,
            }))
        })
        .await
    }

    async fn is_bootstrapped(&self, org: &OrgId) -> Result<bool, StoreError> {
        let org = org.clone();
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let t = txn.open_table(BOOTSTRAP)?;
            Ok(t.get(org.as_str())?.is_some())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupt_items_are_errors_not_panics() {
        assert!(matches!(decode_credential(b"not json"), Err(StoreError::Corrupt(_))));
        assert!(matches!(decode_credential(br#"{"keyId":"x"}"#), Err(StoreError::Corrupt(_))));
        assert!(matches!(decode::<Principal>("principal", b"{}"), Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn corrupt_errors_do_not_echo_the_hash() {
        let err = decode_credential(br#"{"secretHash":"$argon2id$v=19$SECRETHASH","bogus":1}"#).unwrap_err().to_string();
        assert!(!err.contains("SECRETHASH"), "{err}");
    }

    crate::store_contract_tests!(async { std::sync::Arc::new(EmbeddedStore::in_memory().unwrap()) });

    mod on_disk {
        crate::store_contract_tests!(async {
            // The open database keeps its file (on Unix) after the directory is removed, so
            // nothing is left behind once the test ends.
            let dir = tempfile::tempdir().unwrap();
            std::sync::Arc::new(super::EmbeddedStore::open(&dir.path().join("iam.redb")).unwrap())
        });
    }
}
