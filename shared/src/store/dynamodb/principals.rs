//! Principal items: create (with the organisation's principal count), read, list, and the
//! versioned update.

use std::collections::HashMap;

use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{ReturnValuesOnConditionCheckFailure, Update};

use super::items::{
    Item, PRINCIPAL_COUNT, Reader, TRUST_POLICIES, n, org_key, principal_from_item, principal_sk, principal_to_item, s, status_name, time,
    trust_policies_value,
};
use super::transaction::{GuardChecks, Part, Transaction, build_error, count_one, jittered_pause, unavailable};
use super::{DynamoStore, credentials};
use crate::authority::Guard;
use crate::error::{Conflict, Limit};
use crate::idempotency::IdempotencyRecord;
use crate::ids::{OrgId, PrincipalId, TrustPolicyId};
use crate::model::{Principal, PrincipalStatus};
use crate::store::{Page, StoreError};

pub(super) async fn create(
    store: &DynamoStore,
    principal: &Principal,
    max_principals: usize,
    idempotency: Option<&IdempotencyRecord>,
    record: &crate::audit::AuditEntry,
) -> Result<(), StoreError> {
    let mut transaction = Transaction::new(store);
    if principal.principal_type == crate::model::PrincipalType::ServiceAccount {
        let index = super::federation::service_account_index_item(principal);
        transaction = transaction.with_put(Part::ServiceAccountIndex, &store.principals, index, Some("attribute_not_exists(pk)"))?;
    }
    if let Some(identity) = &principal.identity {
        let index = super::federation::user_identity_item(principal, identity);
        transaction = transaction.with_put(Part::UserIdentity, &store.principals, index, Some("attribute_not_exists(pk)"))?;
    }
    let result = transaction
        .with_put(Part::Principal, &store.principals, principal_to_item(principal, 0, &[]), Some("attribute_not_exists(pk)"))?
        .with_update(Part::Count, count_one(&store.principals, &principal.org_id, PRINCIPAL_COUNT, Some(max_principals))?)
        .with_idempotency(&store.principals, idempotency)?
        .recording(record.clone())
        .commit()
        .await;
    match result {
        Ok(()) => Ok(()),
        Err(c) if c.failed(Part::Principal) || c.failed(Part::ServiceAccountIndex) => {
            // An SDK retry after an attempt timeout finds the item its first attempt wrote (ids
            // are 128 random bits, so an equal item is ours): that is success, unless the create
            // carried an idempotency record (never retried that way).
            match get(store, &principal.org_id, &principal.id).await? {
                Some(stored) if stored == *principal && idempotency.is_none() => Ok(()),
                _ => Err(StoreError::Conflict(Conflict::PrincipalExists)),
            }
        }
        Err(c) if c.failed(Part::UserIdentity) => Err(StoreError::Conflict(Conflict::IdentityMapped)),
        Err(c) if c.failed(Part::Count) => Err(StoreError::Limit(Limit::Principals(max_principals))),
        Err(c) if c.failed(Part::Idempotency) => Err(StoreError::Conflict(Conflict::IdempotencyKeyTaken)),
        Err(c) if c.raced() => Err(StoreError::Conflict(Conflict::Contended)),
        Err(c) => Err(c.unavailable()),
    }
}

pub(super) async fn read_item(store: &DynamoStore, org: &OrgId, id: &PrincipalId) -> Result<Option<Item>, StoreError> {
    let out = store
        .client
        .get_item()
        .table_name(&store.principals)
        .set_key(Some(org_key(org, principal_sk(id))))
        .consistent_read(true)
        .send()
        .await
        .map_err(unavailable)?;
    Ok(out.item)
}

/// The principal with the store's bookkeeping on its item: the credential sequence and the
/// role count (see `principal_to_item`).
pub(super) async fn get_item(store: &DynamoStore, org: &OrgId, id: &PrincipalId) -> Result<Option<(Principal, u64, u64)>, StoreError> {
    match read_item(store, org, id).await? {
        None => Ok(None),
        Some(item) => {
            let p = principal_from_item(&item)?;
            let r = Reader::new("principal", &item);
            Ok(Some((p, r.num("credSeq").unwrap_or(0), r.num("roleCount").unwrap_or(0))))
        }
    }
}

pub(super) async fn get(store: &DynamoStore, org: &OrgId, id: &PrincipalId) -> Result<Option<Principal>, StoreError> {
    Ok(get_item(store, org, id).await?.map(|(p, _, _)| p))
}

/// The principal for a write that needs it alive, with its bookkeeping counters.
pub(super) async fn live(store: &DynamoStore, org: &OrgId, id: &PrincipalId) -> Result<(Principal, u64, u64), StoreError> {
    let found = get_item(store, org, id).await?.ok_or(StoreError::NotFound("principal"))?;
    if found.0.status == PrincipalStatus::Revoked {
        return Err(StoreError::Conflict(Conflict::PrincipalRevoked));
    }
    Ok(found)
}

pub(super) async fn list(
    store: &DynamoStore,
    org: &OrgId,
    limit: usize,
    after: Option<&PrincipalId>,
) -> Result<Page<Principal>, StoreError> {
    // One more than asked, so a full last page is known to be the last.
    let want = limit + 1;
    let mut items = Vec::new();
    let mut start = after.map(|id| org_key(org, principal_sk(id)));
    while items.len() < want {
        let out = store
            .client
            .query()
            .table_name(&store.principals)
            .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
            .expression_attribute_values(":pk", s(org.as_str()))
            .expression_attribute_values(":prefix", s("P#"))
            .consistent_read(true)
            .limit(i32::try_from(want - items.len()).unwrap_or(i32::MAX))
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(unavailable)?;
        for item in out.items() {
            items.push(principal_from_item(item)?);
        }
        match out.last_evaluated_key() {
            Some(key) if !key.is_empty() => start = Some(key.clone()),
            _ => break,
        }
    }
    let more = items.len() > limit;
    items.truncate(limit);
    let next = if more { items.last().map(|p| p.id.clone()) } else { None };
    Ok(Page { items, next })
}

/// The trust policies `next` no longer has: their use attributes are removed with them (the
/// version condition makes `current` the item the update replaces).
fn forgotten_policies(current: Option<&Principal>, next: &Principal) -> Vec<TrustPolicyId> {
    current
        .map(|c| c.trust_policies.iter().filter(|p| !next.trust_policies.iter().any(|n| n.id == p.id)).map(|p| p.id.clone()).collect())
        .unwrap_or_default()
}

const UPDATE_CONDITION: &str = "attribute_exists(pk) AND #version = :expected";

/// The update expression, names and values that replace a principal's mutable fields, for a
/// plain UpdateItem and for the same update inside a transaction.
fn principal_update(p: &Principal, expected_version: u64, forgotten: &[TrustPolicyId]) -> (String, HashMap<String, String>, Item) {
    let names = HashMap::from(
        [("#version", "version"), ("#status", "status"), ("#name", "displayName"), ("#updated", "updatedAt"), ("#expires", "expiresAt")]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let mut values = HashMap::from([
        (":expected".to_owned(), n(expected_version)),
        (":version".to_owned(), n(p.version)),
        (":status".to_owned(), s(status_name(p.status))),
        (":name".to_owned(), s(&p.display_name)),
        (":updated".to_owned(), time(p.updated_at)),
    ]);
    let set = "SET #version = :version, #status = :status, #name = :name, #updated = :updated";
    let mut names = names;
    names.insert("#trust".to_owned(), TRUST_POLICIES.to_owned());
    let mut sets = vec![set.to_owned()];
    let mut removes = Vec::new();
    match p.expires_at {
        Some(t) => {
            values.insert(":expires".to_owned(), time(t));
            sets.push("#expires = :expires".to_owned());
        }
        None => removes.push("#expires"),
    }
    match trust_policies_value(p) {
        Some(policies) => {
            values.insert(":trust".to_owned(), policies);
            sets.push("#trust = :trust".to_owned());
        }
        None => removes.push("#trust"),
    }
    // A removed trust policy's use goes with it.
    let mut forgotten_names = Vec::new();
    for (i, policy) in forgotten.iter().enumerate() {
        for (j, attribute) in super::federation::use_attributes(policy).into_iter().enumerate() {
            let name = format!("#forget{i}_{j}");
            names.insert(name.clone(), attribute);
            forgotten_names.push(name);
        }
    }
    removes.extend(forgotten_names.iter().map(String::as_str));
    let mut update = sets.join(", ");
    if !removes.is_empty() {
        update = format!("{update} REMOVE {}", removes.join(", "));
    }
    (update, names, values)
}

pub(super) async fn update(store: &DynamoStore, principal: &Principal, expected_version: u64, guard: &Guard) -> Result<(), StoreError> {
    // The update's own condition is the target's version: the guard's must be the same.
    if guard.version_of(&principal.id)?.is_some_and(|v| v != expected_version) {
        return Err(StoreError::Conflict(Conflict::AuthorityChanged));
    }
    let checks = GuardChecks::new(store, guard, Some(&principal.id))?;
    let current = get_item(store, &principal.org_id, &principal.id).await?;
    let forgotten = forgotten_policies(current.as_ref().map(|c| &c.0), principal);
    if let Some(read) = current
        && read.0.version == expected_version
        && read.0.status != principal.status
    {
        return update_status(store, principal, expected_version, &checks, read).await;
    }
    if !checks.is_empty() {
        return update_guarded(store, principal, expected_version, &checks, &forgotten).await;
    }
    let (update, names, values) = principal_update(principal, expected_version, &forgotten);
    let request = store
        .client
        .update_item()
        .table_name(&store.principals)
        .set_key(Some(org_key(&principal.org_id, principal_sk(&principal.id))))
        .condition_expression(UPDATE_CONDITION)
        .update_expression(update)
        .set_expression_attribute_names(Some(names))
        .set_expression_attribute_values(Some(values))
        .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
    match request.send().await {
        Ok(_) => Ok(()),
        Err(e) => match e.as_service_error() {
            Some(UpdateItemError::ConditionalCheckFailedException(c)) => {
                if c.item().is_none_or(|i| i.is_empty()) {
                    Err(StoreError::NotFound("principal"))
                } else {
                    Err(StoreError::Conflict(Conflict::StaleVersion))
                }
            }
            _ => Err(unavailable(e)),
        },
    }
}

async fn update_guarded(
    store: &DynamoStore,
    principal: &Principal,
    expected_version: u64,
    checks: &GuardChecks,
    forgotten: &[TrustPolicyId],
) -> Result<(), StoreError> {
    let (update, names, values) = principal_update(principal, expected_version, forgotten);
    let write = Update::builder()
        .table_name(&store.principals)
        .set_key(Some(org_key(&principal.org_id, principal_sk(&principal.id))))
        .condition_expression(UPDATE_CONDITION)
        .update_expression(update)
        .set_expression_attribute_names(Some(names))
        .set_expression_attribute_values(Some(values))
        .build()
        .map_err(build_error)?;
    match Transaction::new(store).with_update(Part::Principal, write).with_guard(checks).commit().await {
        Ok(()) => Ok(()),
        Err(c) if c.failed(Part::Principal) => match get(store, &principal.org_id, &principal.id).await? {
            None => Err(StoreError::NotFound("principal")),
            Some(_) => Err(StoreError::Conflict(Conflict::StaleVersion)),
        },
        Err(c) if c.guard_broken() => Err(c.guard_error()),
        Err(c) if c.raced() => Err(StoreError::Conflict(Conflict::Contended)),
        Err(c) => Err(c.unavailable()),
    }
}

/// A status change: the principal and, in the same transaction, its Active credentials' copy of
/// its status, which the exchange's one write checks. The principal's `credSeq` must not move
/// meanwhile (an issue moves it), so no credential issued after the listing keeps the old status.
/// `read` is the principal's item as the caller just read it: the first attempt uses it, each
/// retry reads again.
async fn update_status(
    store: &DynamoStore,
    principal: &Principal,
    expected_version: u64,
    checks: &GuardChecks,
    read: (Principal, u64, u64),
) -> Result<(), StoreError> {
    let mut read = Some(read);
    for attempt in 0..MAX_STATUS_ATTEMPTS {
        let fresh = match read.take() {
            Some(first) => Some(first),
            None => get_item(store, &principal.org_id, &principal.id).await?,
        };
        let Some((current, cred_seq, _)) = fresh else {
            return Err(StoreError::NotFound("principal"));
        };
        if current.version != expected_version {
            return Err(StoreError::Conflict(Conflict::StaleVersion));
        }
        let carrying = credentials::carrying_status(store, &principal.org_id, &principal.id, crate::model::now()).await?;
        let forgotten = forgotten_policies(Some(&current), principal);
        let (update, names, mut values) = principal_update(principal, expected_version, &forgotten);
        values.insert(":seq".to_owned(), n(cred_seq));
        values.insert(":zero".to_owned(), n(0));
        let write = Update::builder()
            .table_name(&store.principals)
            .set_key(Some(org_key(&principal.org_id, principal_sk(&principal.id))))
            .condition_expression(format!("{UPDATE_CONDITION} AND (credSeq = :seq OR (attribute_not_exists(credSeq) AND :seq = :zero))"))
            .update_expression(update)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .build()
            .map_err(build_error)?;
        let mut transaction = Transaction::new(store).with_update(Part::Principal, write);
        if let Some(identity) = current.identity.as_ref().filter(|_| principal.status == PrincipalStatus::Revoked) {
            transaction =
                transaction.with_items(vec![(Part::UserIdentity, super::federation::user_identity_release(store, principal, identity)?)]);
        }
        for key_id in &carrying {
            transaction = transaction.with_update(Part::Credential, credentials::status_copy(store, key_id, principal.status)?);
        }
        match transaction.with_guard(checks).commit().await {
            Ok(()) => return Ok(()),
            Err(c) if c.guard_broken() => return Err(c.guard_error()),
            // The version, or an issue moved credSeq: the next read tells which.
            Err(c) if c.failed(Part::Principal) || c.failed(Part::Credential) || c.raced() => jittered_pause(attempt).await,
            Err(c) => return Err(c.unavailable()),
        }
    }
    Err(StoreError::Conflict(Conflict::Contended))
}

/// Attempts of a status change that met concurrent issues or transactions on its items.
const MAX_STATUS_ATTEMPTS: u32 = 8;
