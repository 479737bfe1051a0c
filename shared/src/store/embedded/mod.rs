//! The embedded store: redb, on disk or in memory. Every check-then-write runs inside one redb
//! write transaction, and redb admits one writer at a time, so those writes are atomic. One
//! module per aggregate: [`principals`], [`credentials`], [`roles`] (and assignments),
//! [`idempotency`], [`bootstrap`]; tables and encodings in [`records`].

mod audit;
mod bootstrap;
mod credentials;
mod federation;
mod idempotency;
mod policy;
mod principals;
mod records;
mod roles;
mod warnings;
mod webhooks;

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableTable};

use self::principals::get_principal_in;
use self::records::{
    ASSIGNMENTS, AUDIT, AUDIT_HEADS, BOOTSTRAP, CACHE_BYTES, CREDENTIALS, DELIVERIES, IDEMPOTENCY, ONCE, POLICIES, PRINCIPAL_CREDENTIALS,
    PRINCIPALS, ROLES, SERVICE_ACCOUNTS, SIGN_INS, TRUST_USES, TRUSTED_ISSUERS, USER_IDENTITIES, WEBHOOKS, decode_credential, key3,
};
use super::StoreError;
use crate::authority::Guard;
use crate::error::Conflict;
use crate::model::{CredentialStatus, PrincipalStatus};

#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    /// When the last record of use was committed durably (see [`EmbeddedStore::use_durability`]).
    last_durable_use: Arc<std::sync::Mutex<std::time::Instant>>,
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
        for table in [
            PRINCIPALS,
            CREDENTIALS,
            PRINCIPAL_CREDENTIALS,
            ROLES,
            ASSIGNMENTS,
            BOOTSTRAP,
            IDEMPOTENCY,
            POLICIES,
            AUDIT,
            AUDIT_HEADS,
            ONCE,
            WEBHOOKS,
            DELIVERIES,
            TRUSTED_ISSUERS,
            SERVICE_ACCOUNTS,
            TRUST_USES,
            USER_IDENTITIES,
            SIGN_INS,
        ] {
            txn.open_table(table)?;
        }
        txn.commit()?;
        Ok(Self { db: Arc::new(db), last_durable_use: Arc::new(std::sync::Mutex::new(std::time::Instant::now())) })
    }

    /// How an exchange's record of use is committed. Everything else (issue, revoke, every
    /// status and role change) commits durably, always. A record of use (`lastUsedAt` and the
    /// per-key count) is made durable at most once a second: in between it is committed without
    /// a sync, and the next durable commit of any kind persists it. A crash can lose up to a
    /// second of `lastUsedAt`, never a revocation, and an fsync per exchange would cost each
    /// one more than the rest of its work (BENCHMARKS.md, "On disk and in memory").
    fn use_durability(&self) -> redb::Durability {
        let mut last = self.last_durable_use.lock().unwrap_or_else(|p| p.into_inner());
        if last.elapsed() >= DURABLE_USE_INTERVAL {
            *last = std::time::Instant::now();
            redb::Durability::Immediate
        } else {
            redb::Durability::None
        }
    }

    /// redb blocks on disk I/O; keep it off the async executor.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || work(&db)).await.map_err(StoreError::unavailable)?
    }
}

/// The longest a record of use stays committed without a sync.
const DURABLE_USE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether `guard` holds inside `txn`: each principal it was decided on still at the version
/// read, and the witness still a usable administrator (its principal unchanged since it was
/// judged usable, its credential Active, each of its roles still assigned). Part of the write's
/// own transaction, so nothing can change them in between.
fn check_guard_in(txn: &redb::WriteTransaction, guard: &Guard) -> Result<(), StoreError> {
    let principals = txn.open_table(PRINCIPALS)?;
    for d in guard.principals_to_check(&[])? {
        let current = get_principal_in(&principals, d.org_id.as_str(), d.principal_id.as_str())?;
        if current.is_none_or(|p| p.version != d.version) {
            return Err(StoreError::Conflict(Conflict::AuthorityChanged));
        }
    }
    let Some(w) = &guard.witness else { return Ok(()) };
    if w.key_id.is_none() && w.sign_in_version.is_none() {
        // A witness must authenticate somehow: one that neither holds a key nor signs in proves nothing.
        return Err(StoreError::WitnessGone);
    }
    let (org, id) = (w.org_id.as_str(), w.principal_id.as_str());
    let principal_unchanged =
        get_principal_in(&principals, org, id)?.is_some_and(|p| p.version == w.principal_version && p.status == PrincipalStatus::Active);
    let credentials = txn.open_table(CREDENTIALS)?;
    // A person's witness has no credential: its mapped identity goes only with a change of its
    // principal (the version check) or of the organisation's identity provider (this one).
    if let Some(version) = w.sign_in_version {
        let issuers = txn.open_table(TRUSTED_ISSUERS)?;
        let stored: Option<crate::federation::trust::TrustedIssuers> =
            issuers.get(org)?.map(|v| self::records::decode("trusted issuers", v.value())).transpose()?;
        if stored.map(|t| t.version) != Some(version) {
            return Err(StoreError::WitnessGone);
        }
    }
    let credential_active = match &w.key_id {
        None => true,
        Some(key_id) => match credentials.get(key_id.as_str())? {
            Some(v) => {
                let c = decode_credential(v.value())?;
                c.status == CredentialStatus::Active && c.principal_id == w.principal_id && c.restrictions.permits_administration()
            }
            None => false,
        },
    };
    let assignments = txn.open_table(ASSIGNMENTS)?;
    let mut roles_assigned = true;
    for role in &w.roles {
        roles_assigned &= assignments.get(key3(org, id, role.as_str()).as_str())?.is_some();
    }
    if principal_unchanged && credential_active && roles_assigned { Ok(()) } else { Err(StoreError::WitnessGone) }
}

super::store_by_aggregate!(EmbeddedStore {});

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Principal;
    use crate::store::embedded::records::{decode, decode_credential};

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

    /// A record of use may be committed without a sync, but whatever follows it durably (a
    /// revocation here) persists it too: reopened, the file shows both, in order.
    #[tokio::test]
    async fn a_revocation_after_unsynced_uses_persists_both() {
        use crate::authority::Guard;
        use crate::ids::KeyId;
        use crate::model::{Actor, Credential, CredentialStatus, UseOutcome, now};
        use crate::store::Store;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("iam.redb");
        let org = crate::ids::OrgId::parse("acme").unwrap();
        let p = Principal::new(org.clone(), "p", None, None, Actor::system("t"), now()).unwrap();
        let c = Credential::new(&p, KeyId::generate(), "c", None, "hash".into(), Actor::system("t"), now()).unwrap();
        {
            let store = EmbeddedStore::open(&path).unwrap();
            store.create_principal(&p, 10, None).await.unwrap();
            store.insert_credential(&c, now(), None, &Guard::NONE).await.unwrap();
            // Right after opening: within the interval, so these commit without a sync.
            assert!(matches!(store.use_durability(), redb::Durability::None));
            for _ in 0..3 {
                assert_eq!(store.record_credential_use(&c, now(), None, None, 100).await.unwrap(), UseOutcome::Recorded);
            }
            store.revoke_credential(&org, &p.id, &c.key_id, &Actor::system("r"), now(), &Guard::NONE).await.unwrap();
        }
        let reopened = EmbeddedStore::open(&path).unwrap();
        let stored = reopened.get_credential(&c.key_id).await.unwrap().unwrap();
        assert_eq!(stored.status, CredentialStatus::Revoked);
        let used = stored.last_used_at.expect("the uses were persisted by the revocation's commit");
        assert!(stored.revoked_at.unwrap() >= used);
        assert_eq!(stored.recent_uses.map(|w| w.count), Some(3));
    }

    mod on_disk {
        crate::store_contract_tests!(async {
            // The open database keeps its file (on Unix) after the directory is removed, so
            // nothing is left behind once the test ends.
            let dir = tempfile::tempdir().unwrap();
            std::sync::Arc::new(super::EmbeddedStore::open(&dir.path().join("iam.redb")).unwrap())
        });
    }
}
