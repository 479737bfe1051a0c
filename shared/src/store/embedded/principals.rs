//! Principals: create (within the organisation's cap), read, list, and the versioned update.

use redb::{ReadableDatabase, ReadableTable};

use super::idempotency::claim_idempotency_in;
use super::records::{PRINCIPALS, SEP, decode, encode, key2, prefix_range};
use super::{EmbeddedStore, check_guard_in};
use crate::authority::Guard;
use crate::error::{Conflict, Limit};
use crate::idempotency::IdempotencyRecord;
use crate::ids::{OrgId, PrincipalId};
use crate::model::{Principal, PrincipalStatus};
use crate::store::{Page, StoreError};

pub(super) fn get_principal_in(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    org: &str,
    id: &str,
) -> Result<Option<Principal>, StoreError> {
    match table.get(key2(org, id).as_str())? {
        Some(v) => decode("principal", v.value()).map(Some),
        None => Ok(None),
    }
}

/// The principal for a write that needs it alive: exists in `org` and is not Revoked.
pub(super) fn live_principal_in(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    org: &str,
    id: &str,
) -> Result<Principal, StoreError> {
    let p = get_principal_in(table, org, id)?.ok_or(StoreError::NotFound("principal"))?;
    if p.status == PrincipalStatus::Revoked {
        return Err(StoreError::Conflict(Conflict::PrincipalRevoked));
    }
    Ok(p)
}

/// Advances a principal's version inside `txn`: its role assignments changed, and with them
/// what it holds.
pub(super) fn advance_version_in(txn: &redb::WriteTransaction, org: &str, id: &str) -> Result<(), StoreError> {
    let mut principals = txn.open_table(PRINCIPALS)?;
    let mut p = get_principal_in(&principals, org, id)?.ok_or(StoreError::NotFound("principal"))?;
    p.version += 1;
    principals.insert(key2(org, id).as_str(), encode(&p)?.as_slice())?;
    Ok(())
}

pub(super) async fn create(
    store: &EmbeddedStore,
    principal: &Principal,
    max_principals: usize,
    idempotency: Option<&IdempotencyRecord>,
    record: &crate::audit::AuditEntry,
) -> Result<(), StoreError> {
    let p = principal.clone();
    let idempotency = idempotency.cloned();
    let record = record.clone();
    store
        .blocking(move |db| {
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
                        Err(StoreError::Conflict(Conflict::PrincipalExists))
                    };
                }
                let (start, end) = prefix_range(p.org_id.as_str());
                if t.range(start.as_str()..end.as_str())?.count() >= max_principals {
                    return Err(StoreError::Limit(Limit::Principals(max_principals)));
                }
                t.insert(k.as_str(), encode(&p)?.as_slice())?;
            }
            if p.principal_type == crate::model::PrincipalType::ServiceAccount {
                txn.open_table(super::records::SERVICE_ACCOUNTS)?.insert(p.id.as_str(), p.org_id.as_str().as_bytes())?;
            }
            if let Some(identity) = &p.identity {
                let mut users = txn.open_table(super::records::USER_IDENTITIES)?;
                let key = key2(p.org_id.as_str(), &identity.key());
                if users.get(key.as_str())?.is_some() {
                    return Err(StoreError::Conflict(Conflict::IdentityMapped));
                }
                users.insert(key.as_str(), p.id.as_str().as_bytes())?;
            }
            super::audit::append_in(&txn, record, 1)?;
            claim_idempotency_in(&txn, idempotency.as_ref())?;
            Ok(txn.commit()?)
        })
        .await
}

pub(super) async fn get(store: &EmbeddedStore, org: &OrgId, id: &PrincipalId) -> Result<Option<Principal>, StoreError> {
    let (org, id) = (org.clone(), id.clone());
    store
        .blocking(move |db| {
            let txn = db.begin_read()?;
            let t = txn.open_table(PRINCIPALS)?;
            get_principal_in(&t, org.as_str(), id.as_str())
        })
        .await
}

pub(super) async fn list(
    store: &EmbeddedStore,
    org: &OrgId,
    limit: usize,
    after: Option<&PrincipalId>,
) -> Result<Page<Principal>, StoreError> {
    let org = org.clone();
    let after = after.cloned();
    store
        .blocking(move |db| {
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

pub(super) async fn update(store: &EmbeddedStore, principal: &Principal, expected_version: u64, guard: &Guard) -> Result<(), StoreError> {
    let p = principal.clone();
    let guard = guard.clone();
    store
        .blocking(move |db| {
            let txn = db.begin_write()?;
            // The version first: a concurrent change to the principal itself is a stale read
            // (412 under If-Match), whatever else the guard names.
            {
                let t = txn.open_table(PRINCIPALS)?;
                let current = get_principal_in(&t, p.org_id.as_str(), p.id.as_str())?.ok_or(StoreError::NotFound("principal"))?;
                if current.version != expected_version {
                    return Err(StoreError::Conflict(Conflict::StaleVersion));
                }
                // A removed trust policy's use goes with it.
                let mut uses = txn.open_table(super::records::TRUST_USES)?;
                for gone in current.trust_policies.iter().filter(|c| !p.trust_policies.iter().any(|n| n.id == c.id)) {
                    uses.remove(super::records::key3(p.org_id.as_str(), p.id.as_str(), gone.id.as_str()).as_str())?;
                }
                // A revoked person can be mapped again, to a new user.
                if let Some(identity) = current.identity.as_ref().filter(|_| p.status == PrincipalStatus::Revoked) {
                    let mut users = txn.open_table(super::records::USER_IDENTITIES)?;
                    let key = key2(p.org_id.as_str(), &identity.key());
                    let mapped_here = users.get(key.as_str())?.is_some_and(|id| id.value() == p.id.as_str().as_bytes());
                    if mapped_here {
                        users.remove(key.as_str())?;
                    }
                }
            }
            check_guard_in(&txn, &guard)?;
            {
                let mut t = txn.open_table(PRINCIPALS)?;
                t.insert(key2(p.org_id.as_str(), p.id.as_str()).as_str(), encode(&p)?.as_slice())?;
            }
            super::audit::record_in(&txn, &guard)?;
            Ok(txn.commit()?)
        })
        .await
}
