//! Organisation roles (with their name markers and the organisation's role count) and role
//! assignments, which move the principal's version and role count with them.

use aws_sdk_dynamodb::types::{Delete, TransactWriteItem, Update};

use super::items::{
    ROLE_COUNT, ROLE_IDS, assignment_from_item, assignment_sk, assignment_to_item, carried_role_ids, n, org_key, principal_from_item,
    principal_sk, role_from_item, role_id_set, role_name_sk, role_sk, role_to_item, s,
};
use super::transaction::{GuardChecks, Part, Transaction, build_error, count_one, unavailable};
use super::{DynamoStore, MAX_TRANSACTION_ATTEMPTS, principals, query_prefix};
use crate::authority::Guard;
use crate::error::{Conflict, Limit};
use crate::idempotency::IdempotencyRecord;
use crate::ids::{OrgId, PrincipalId, RoleId};
use crate::model::{MAX_ORG_ROLES, MAX_ROLES_PER_PRINCIPAL, Principal, Role, RoleAssignment};
use crate::store::StoreError;

pub(super) async fn create(
    store: &DynamoStore,
    role: &Role,
    idempotency: Option<&IdempotencyRecord>,
    guard: &Guard,
) -> Result<(), StoreError> {
    let Some(org) = role.org_id.as_ref() else {
        return Err(StoreError::Conflict(Conflict::BuiltInRole));
    };
    let checks = GuardChecks::new(store, guard, None)?;
    let mut name_marker = org_key(org, role_name_sk(&role.name));
    name_marker.insert("kind".into(), s("roleName"));
    name_marker.insert("roleId".into(), s(role.id.as_str()));
    let result = Transaction::new(store)
        .with_put(Part::Role, &store.principals, role_to_item(role, org), Some("attribute_not_exists(sk)"))?
        .with_put(Part::RoleName, &store.principals, name_marker, Some("attribute_not_exists(sk)"))?
        .with_update(Part::Count, count_one(&store.principals, org, ROLE_COUNT, Some(MAX_ORG_ROLES))?)
        .with_idempotency(&store.principals, idempotency)?
        .with_guard(&checks)
        .commit()
        .await;
    match result {
        Ok(()) => Ok(()),
        // A refused authority is answered before any duplicate it might also meet.
        Err(c) if c.guard_broken() => Err(c.guard_error()),
        Err(c) if c.failed(Part::Role) => Err(StoreError::Conflict(Conflict::RoleExists)),
        Err(c) if c.failed(Part::RoleName) => Err(StoreError::Conflict(Conflict::RoleNameTaken(role.name.clone()))),
        Err(c) if c.failed(Part::Count) => Err(StoreError::Limit(Limit::OrgRoles(MAX_ORG_ROLES))),
        Err(c) if c.failed(Part::Idempotency) => Err(StoreError::Conflict(Conflict::IdempotencyKeyTaken)),
        Err(c) if c.raced() => Err(StoreError::Conflict(Conflict::Contended)),
        Err(c) => Err(c.unavailable()),
    }
}

pub(super) async fn list(store: &DynamoStore, org: &OrgId) -> Result<Vec<Role>, StoreError> {
    query_prefix(store, org, "R#").await?.iter().map(role_from_item).collect()
}

pub(super) async fn get(store: &DynamoStore, org: &OrgId, id: &RoleId) -> Result<Option<Role>, StoreError> {
    let out = store
        .client
        .get_item()
        .table_name(&store.principals)
        .set_key(Some(org_key(org, role_sk(id))))
        .consistent_read(true)
        .send()
        .await
        .map_err(unavailable)?;
    out.item().map(role_from_item).transpose()
}

pub(super) async fn list_assignments(store: &DynamoStore, org: &OrgId, principal: &PrincipalId) -> Result<Vec<RoleAssignment>, StoreError> {
    query_prefix(store, org, &format!("A#{principal}#")).await?.iter().map(assignment_from_item).collect()
}

/// The principal and its assigned role ids: one read when its item carries them, else (an item
/// from before `iam-admin migrate`) that read and the assignments' query.
pub(super) async fn principal_with_roles(
    store: &DynamoStore,
    org: &OrgId,
    id: &PrincipalId,
) -> Result<Option<(Principal, Vec<RoleId>)>, StoreError> {
    let Some(item) = principals::read_item(store, org, id).await? else { return Ok(None) };
    let principal = principal_from_item(&item)?;
    let role_ids = match carried_role_ids(&item)? {
        Some(ids) => ids,
        None => list_assignments(store, org, id).await?.into_iter().map(|a| a.role_id).collect(),
    };
    Ok(Some((principal, role_ids)))
}

async fn get_assignment(
    store: &DynamoStore,
    org: &OrgId,
    principal: &PrincipalId,
    role: &RoleId,
) -> Result<Option<RoleAssignment>, StoreError> {
    let out = store
        .client
        .get_item()
        .table_name(&store.principals)
        .set_key(Some(org_key(org, assignment_sk(principal, role))))
        .consistent_read(true)
        .send()
        .await
        .map_err(unavailable)?;
    out.item().map(assignment_from_item).transpose()
}

pub(super) async fn assign(store: &DynamoStore, assignment: &RoleAssignment, guard: &Guard) -> Result<(RoleAssignment, bool), StoreError> {
    let (org, id) = (&assignment.org_id, &assignment.principal_id);
    let decided = guard.version_of(id)?;
    let checks = GuardChecks::new(store, guard, Some(id))?;
    for _ in 0..MAX_TRANSACTION_ATTEMPTS {
        let (current, _, role_count) = principals::live(store, org, id).await?;
        if let Some(existing) = get_assignment(store, org, id, &assignment.role_id).await? {
            return Ok((existing, false));
        }
        if decided.is_some_and(|v| v != current.version) {
            return Err(StoreError::Conflict(Conflict::AuthorityChanged));
        }
        if role_count >= MAX_ROLES_PER_PRINCIPAL as u64 {
            return Err(StoreError::Limit(Limit::RolesPerPrincipal(MAX_ROLES_PER_PRINCIPAL)));
        }
        // Conditioned on the version just read, and advancing it: what the principal holds
        // changes, and every decision made on the old version must fail (see Guard).
        let count = Update::builder()
            .table_name(&store.principals)
            .set_key(Some(org_key(org, principal_sk(id))))
            .update_expression("SET roleCount = if_not_exists(roleCount, :zero) + :one, #version = #version + :one ADD #role_ids :role")
            .condition_expression(
                "attribute_exists(pk) AND #status <> :revoked AND #version = :seen AND (attribute_not_exists(roleCount) OR roleCount < :max)",
            )
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#version", "version")
            .expression_attribute_values(":revoked", s("Revoked"))
            .expression_attribute_values(":seen", n(current.version))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":max", n(MAX_ROLES_PER_PRINCIPAL as u64))
            .expression_attribute_names("#role_ids", ROLE_IDS)
            .expression_attribute_values(":role", role_id_set(std::slice::from_ref(&assignment.role_id)))
            .build()
            .map_err(build_error)?;
        let result = Transaction::new(store)
            .with_update(Part::Principal, count)
            .with_put(Part::Assignment, &store.principals, assignment_to_item(assignment), Some("attribute_not_exists(sk)"))?
            .with_guard(&checks)
            .commit()
            .await;
        match result {
            Ok(()) => return Ok((assignment.clone(), true)),
            Err(c) if c.guard_broken() => return Err(c.guard_error()),
            // Assigned, or the principal changed, concurrently: the loop reads again.
            Err(c) if c.failed(Part::Principal) || c.failed(Part::Assignment) || c.raced() => continue,
            Err(c) => return Err(c.unavailable()),
        }
    }
    Err(StoreError::Conflict(Conflict::Contended))
}

pub(super) async fn unassign(
    store: &DynamoStore,
    org: &OrgId,
    principal: &PrincipalId,
    role: &RoleId,
    guard: &Guard,
) -> Result<bool, StoreError> {
    let decided = guard.version_of(principal)?;
    let checks = GuardChecks::new(store, guard, Some(principal))?;
    for _ in 0..MAX_TRANSACTION_ATTEMPTS {
        let Some((current, _, _)) = principals::get_item(store, org, principal).await? else { return Ok(false) };
        if decided.is_some_and(|v| v != current.version) {
            return Err(StoreError::Conflict(Conflict::AuthorityChanged));
        }
        let delete = Delete::builder()
            .table_name(&store.principals)
            .set_key(Some(org_key(org, assignment_sk(principal, role))))
            .condition_expression("attribute_exists(sk)")
            .build()
            .map_err(build_error)?;
        let count = Update::builder()
            .table_name(&store.principals)
            .set_key(Some(org_key(org, principal_sk(principal))))
            .update_expression("SET roleCount = roleCount - :one, #version = #version + :one DELETE #role_ids :role")
            .condition_expression("attribute_exists(pk) AND roleCount > :zero AND #version = :seen")
            .expression_attribute_names("#version", "version")
            .expression_attribute_values(":seen", n(current.version))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_names("#role_ids", ROLE_IDS)
            .expression_attribute_values(":role", role_id_set(std::slice::from_ref(role)))
            .build()
            .map_err(build_error)?;
        let result = Transaction::new(store)
            .with(Part::Assignment, TransactWriteItem::builder().delete(delete).build())
            .with_update(Part::Principal, count)
            .with_guard(&checks)
            .commit()
            .await;
        match result {
            Ok(()) => return Ok(true),
            Err(c) if c.failed(Part::Assignment) => return Ok(false),
            Err(c) if c.guard_broken() => return Err(c.guard_error()),
            // The principal changed since the read (its version): the loop reads again.
            Err(c) if c.failed(Part::Principal) || c.raced() => continue,
            Err(c) => return Err(c.unavailable()),
        }
    }
    Err(StoreError::Conflict(Conflict::Contended))
}
