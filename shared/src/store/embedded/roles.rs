//! Organisation roles and role assignments (which advance the principal's version).

use redb::{ReadableDatabase, ReadableTable};

use super::idempotency::claim_idempotency_in;
use super::principals::{advance_version_in, get_principal_in, live_principal_in};
use super::records::{ASSIGNMENTS, PRINCIPALS, ROLES, decode, encode, key2, key3, prefix_range};
use super::{EmbeddedStore, check_guard_in};
use crate::authority::Guard;
use crate::error::{Conflict, Limit};
use crate::idempotency::IdempotencyRecord;
use crate::ids::{OrgId, PrincipalId, RoleId};
use crate::model::{MAX_ORG_ROLES, MAX_ROLES_PER_PRINCIPAL, Principal, Role, RoleAssignment};
use crate::store::StoreError;

pub(super) async fn create(
    store: &EmbeddedStore,
    role: &Role,
    idempotency: Option<&IdempotencyRecord>,
    guard: &Guard,
) -> Result<(), StoreError> {
    let role = role.clone();
    let idempotency = idempotency.cloned();
    let guard = guard.clone();
    let Some(org) = role.org_id.clone() else {
        return Err(StoreError::Conflict(Conflict::BuiltInRole));
    };
    store
        .blocking(move |db| {
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
                        return Err(StoreError::Conflict(Conflict::RoleNameTaken(role.name.clone())));
                    }
                    count += 1;
                }
                if count >= MAX_ORG_ROLES {
                    return Err(StoreError::Limit(Limit::OrgRoles(MAX_ORG_ROLES)));
                }
                let k = key2(org.as_str(), role.id.as_str());
                if t.get(k.as_str())?.is_some() {
                    return Err(StoreError::Conflict(Conflict::RoleExists));
                }
                t.insert(k.as_str(), encode(&role)?.as_slice())?;
            }
            super::audit::record_in(&txn, &guard)?;
            claim_idempotency_in(&txn, idempotency.as_ref())?;
            Ok(txn.commit()?)
        })
        .await
}

pub(super) async fn list(store: &EmbeddedStore, org: &OrgId) -> Result<Vec<Role>, StoreError> {
    let org = org.clone();
    store
        .blocking(move |db| {
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

pub(super) async fn get(store: &EmbeddedStore, org: &OrgId, id: &RoleId) -> Result<Option<Role>, StoreError> {
    let k = key2(org.as_str(), id.as_str());
    store
        .blocking(move |db| {
            let txn = db.begin_read()?;
            let t = txn.open_table(ROLES)?;
            match t.get(k.as_str())? {
                Some(v) => decode("role", v.value()).map(Some),
                None => Ok(None),
            }
        })
        .await
}

pub(super) async fn list_assignments(
    store: &EmbeddedStore,
    org: &OrgId,
    principal: &PrincipalId,
) -> Result<Vec<RoleAssignment>, StoreError> {
    let prefix = key2(org.as_str(), principal.as_str());
    store
        .blocking(move |db| {
            let txn = db.begin_read()?;
            let t = txn.open_table(ASSIGNMENTS)?;
            assignments_in(&t, &prefix)
        })
        .await
}

fn assignments_in(table: &impl ReadableTable<&'static str, &'static [u8]>, prefix: &str) -> Result<Vec<RoleAssignment>, StoreError> {
    let (start, end) = prefix_range(prefix);
    let mut out = Vec::new();
    for entry in table.range(start.as_str()..end.as_str())? {
        let (_, v) = entry?;
        out.push(decode("role assignment", v.value())?);
    }
    Ok(out)
}

/// The principal and its assigned role ids, from one read transaction.
pub(super) async fn principal_with_roles(
    store: &EmbeddedStore,
    org: &OrgId,
    id: &PrincipalId,
) -> Result<Option<(Principal, Vec<RoleId>)>, StoreError> {
    let (org, id) = (org.clone(), id.clone());
    store
        .blocking(move |db| {
            let txn = db.begin_read()?;
            let Some(principal) = get_principal_in(&txn.open_table(PRINCIPALS)?, org.as_str(), id.as_str())? else {
                return Ok(None);
            };
            let assignments = assignments_in(&txn.open_table(ASSIGNMENTS)?, &key2(org.as_str(), id.as_str()))?;
            let mut role_ids: Vec<RoleId> = assignments.into_iter().map(|a| a.role_id).collect();
            role_ids.sort();
            Ok(Some((principal, role_ids)))
        })
        .await
}

pub(super) async fn assign(
    store: &EmbeddedStore,
    assignment: &RoleAssignment,
    guard: &Guard,
) -> Result<(RoleAssignment, bool), StoreError> {
    let a = assignment.clone();
    let guard = guard.clone();
    store
        .blocking(move |db| {
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
                            return Err(StoreError::Limit(Limit::RolesPerPrincipal(MAX_ROLES_PER_PRINCIPAL)));
                        }
                        drop((t, principals));
                        check_guard_in(&txn, &guard)?;
                        txn.open_table(ASSIGNMENTS)?.insert(k.as_str(), encode(&a)?.as_slice())?;
                        advance_version_in(&txn, a.org_id.as_str(), a.principal_id.as_str())?;
                        super::audit::record_in(&txn, &guard)?;
                        (a, true)
                    }
                }
            };
            txn.commit()?;
            Ok(result)
        })
        .await
}

pub(super) async fn unassign(
    store: &EmbeddedStore,
    org: &OrgId,
    principal: &PrincipalId,
    role: &RoleId,
    guard: &Guard,
) -> Result<bool, StoreError> {
    let k = key3(org.as_str(), principal.as_str(), role.as_str());
    let (org, principal) = (org.clone(), principal.clone());
    let guard = guard.clone();
    store
        .blocking(move |db| {
            let txn = db.begin_write()?;
            check_guard_in(&txn, &guard)?;
            let removed = {
                let mut t = txn.open_table(ASSIGNMENTS)?;
                t.remove(k.as_str())?.is_some()
            };
            if removed {
                advance_version_in(&txn, org.as_str(), principal.as_str())?;
                super::audit::record_in(&txn, &guard)?;
            }
            txn.commit()?;
            Ok(removed)
        })
        .await
}
