//! An organisation's first administrator, written in one transaction with its marker.

use redb::{ReadableDatabase, ReadableTable};

use super::EmbeddedStore;
use super::records::{ASSIGNMENTS, BOOTSTRAP, CREDENTIALS, CredentialRecord, PRINCIPAL_CREDENTIALS, PRINCIPALS, encode, key2, key3};
use crate::audit::AuditEntry;
use crate::error::Conflict;
use crate::ids::OrgId;
use crate::model::{Credential, Principal, RoleAssignment};
use crate::store::StoreError;

pub(super) async fn write(
    store: &EmbeddedStore,
    principal: &Principal,
    assignment: &RoleAssignment,
    credential: &Credential,
    force: bool,
) -> Result<(), StoreError> {
    let (p, a, c) = (principal.clone(), assignment.clone(), credential.clone());
    store
        .blocking(move |db| {
            let txn = db.begin_write()?;
            {
                let mut marker = txn.open_table(BOOTSTRAP)?;
                if !force && marker.get(p.org_id.as_str())?.is_some() {
                    return Err(StoreError::Conflict(Conflict::AlreadyBootstrapped(p.org_id.clone())));
                }
                marker.insert(p.org_id.as_str(), p.id.as_str().as_bytes())?;
                txn.open_table(PRINCIPALS)?.insert(key2(p.org_id.as_str(), p.id.as_str()).as_str(), encode(&p)?.as_slice())?;
                txn.open_table(ASSIGNMENTS)?
                    .insert(key3(a.org_id.as_str(), a.principal_id.as_str(), a.role_id.as_str()).as_str(), encode(&a)?.as_slice())?;
                txn.open_table(CREDENTIALS)?.insert(c.key_id.as_str(), encode(&CredentialRecord::from(&c))?.as_slice())?;
                txn.open_table(PRINCIPAL_CREDENTIALS)?
                    .insert(key3(c.org_id.as_str(), c.principal_id.as_str(), c.key_id.as_str()).as_str(), [].as_slice())?;
            }
            super::audit::append_in(&txn, AuditEntry::bootstrapped(&p, &a, &c), 1)?;
            Ok(txn.commit()?)
        })
        .await
}

pub(super) async fn is_bootstrapped(store: &EmbeddedStore, org: &OrgId) -> Result<bool, StoreError> {
    let org = org.clone();
    store
        .blocking(move |db| {
            let txn = db.begin_read()?;
            let t = txn.open_table(BOOTSTRAP)?;
            Ok(t.get(org.as_str())?.is_some())
        })
        .await
}
