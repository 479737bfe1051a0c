//! Federation's items: the organisation's trusted issuers (`sk = ISSUERS` in its partition of
//! the principals table), the index from a service account's id to its organisation (an item
//! of its own partition, `pk = SA#<id>`: the token endpoint is told a service account, never an
//! organisation), and each trust policy's use, as two attributes of the service account's item
//! that no principal update writes (`tpAt:<policy>`, `tpUses:<policy>`).

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{ConditionCheck, Delete, Put, ReturnValue, TransactWriteItem, Update};

use super::DynamoStore;
use super::items::{Item, n, org_key, principal_sk, s, time};
use super::principals::read_item;
use super::transaction::{GuardChecks, Part, Transaction, build_error, unavailable};
use crate::authority::Guard;
use crate::error::Conflict;
use crate::federation::sign_in::SignInRecord;
use crate::federation::trust::{TrustPolicyUse, TrustedIssuers, UserIdentity};
use crate::ids::{OrgId, PrincipalId, TrustPolicyId};
use crate::model::Principal;
use crate::store::StoreError;

const ISSUERS_SK: &str = "ISSUERS";
const INDEX_SK: &str = "SA";
const USED_AT: &str = "tpAt:";
const USES: &str = "tpUses:";

fn index_key(id: &PrincipalId) -> Item {
    HashMap::from([("pk".to_owned(), s(format!("SA#{id}"))), ("sk".to_owned(), s(INDEX_SK))])
}

pub(super) fn service_account_index_item(principal: &Principal) -> Item {
    let mut item = index_key(&principal.id);
    item.insert("kind".into(), s("serviceAccountIndex"));
    item.insert("orgId".into(), s(principal.org_id.as_str()));
    item
}

/// The attributes that hold a trust policy's use on its account's item.
pub(super) fn use_attributes(policy: &TrustPolicyId) -> [String; 2] {
    [format!("{USED_AT}{policy}"), format!("{USES}{policy}")]
}

pub(super) async fn get_trusted_issuers(store: &DynamoStore, org: &OrgId) -> Result<Option<TrustedIssuers>, StoreError> {
    let out = store
        .client
        .get_item()
        .table_name(&store.principals)
        .set_key(Some(org_key(org, ISSUERS_SK.to_owned())))
        .consistent_read(true)
        .send()
        .await
        .map_err(unavailable)?;
    let Some(item) = out.item() else { return Ok(None) };
    let raw = item.get("issuers").and_then(|v| v.as_s().ok()).ok_or_else(|| StoreError::Corrupt("trusted issuers: issuers".into()))?;
    serde_json::from_str(raw).map(Some).map_err(|_| StoreError::Corrupt("trusted issuers: issuers".into()))
}

pub(super) async fn put_trusted_issuers(
    store: &DynamoStore,
    org: &OrgId,
    issuers: &TrustedIssuers,
    guard: &Guard,
) -> Result<(), StoreError> {
    let mut item = org_key(org, ISSUERS_SK.to_owned());
    item.insert("kind".into(), s("trustedIssuers"));
    item.insert("issuers".into(), s(serde_json::to_string(issuers).expect("trusted issuers always serialise")));
    item.insert("version".into(), n(issuers.version));
    let checks = GuardChecks::new(store, guard, None)?;
    // Over the list read: none (version 1 is the first), or the one before.
    let put = Put::builder()
        .table_name(&store.principals)
        .set_item(Some(item))
        .condition_expression("attribute_not_exists(pk) OR #version = :previous")
        .expression_attribute_names("#version", "version")
        .expression_attribute_values(":previous", n(issuers.version.saturating_sub(1)))
        .build()
        .map_err(build_error)?;
    let write = TransactWriteItem::builder().put(put).build();
    let result = Transaction::new(store).with_items(vec![(Part::TrustedIssuers, write)]).with_guard(&checks).commit().await;
    match result {
        Ok(()) => Ok(()),
        Err(c) if c.failed(Part::TrustedIssuers) => Err(StoreError::Conflict(Conflict::StaleVersion)),
        Err(c) if c.guard_broken() => Err(c.guard_error()),
        Err(c) if c.raced() => Err(StoreError::Conflict(Conflict::Contended)),
        Err(c) => Err(c.unavailable()),
    }
}

pub(super) async fn find_service_account(store: &DynamoStore, id: &PrincipalId) -> Result<Option<OrgId>, StoreError> {
    let out = store
        .client
        .get_item()
        .table_name(&store.principals)
        .set_key(Some(index_key(id)))
        .consistent_read(true)
        .send()
        .await
        .map_err(unavailable)?;
    let Some(item) = out.item() else { return Ok(None) };
    let raw = item.get("orgId").and_then(|v| v.as_s().ok()).ok_or_else(|| StoreError::Corrupt("service account index: orgId".into()))?;
    OrgId::parse(raw).map(Some).map_err(|_| StoreError::Corrupt("service account index: orgId".into()))
}

/// One UpdateItem: the use is counted only while the service account is Active and still at
/// the version its policy was read at (so a policy removed, or the account suspended, since
/// then wins), and it leaves the version alone.
pub(super) async fn record_trust_policy_use(
    store: &DynamoStore,
    principal: &Principal,
    policy: &TrustPolicyId,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<bool, StoreError> {
    let request = store
        .client
        .update_item()
        .table_name(&store.principals)
        .set_key(Some(org_key(&principal.org_id, principal_sk(&principal.id))))
        .condition_expression("#status = :active AND #version = :version")
        .update_expression("SET #at = :at ADD #uses :one")
        .expression_attribute_names("#status", "status")
        .expression_attribute_names("#version", "version")
        .expression_attribute_names("#at", format!("{USED_AT}{policy}"))
        .expression_attribute_names("#uses", format!("{USES}{policy}"))
        .expression_attribute_values(":active", s("Active"))
        .expression_attribute_values(":version", n(principal.version))
        .expression_attribute_values(":at", time(at))
        .expression_attribute_values(":one", n(1));
    match request.send().await {
        Ok(_) => Ok(true),
        Err(e) => match e.as_service_error() {
            Some(UpdateItemError::ConditionalCheckFailedException(_)) => Ok(false),
            _ => Err(unavailable(e)),
        },
    }
}

pub(super) async fn trust_policy_uses(
    store: &DynamoStore,
    org: &OrgId,
    id: &PrincipalId,
) -> Result<BTreeMap<TrustPolicyId, TrustPolicyUse>, StoreError> {
    let Some(item) = read_item(store, org, id).await? else { return Ok(BTreeMap::new()) };
    let mut uses: BTreeMap<TrustPolicyId, TrustPolicyUse> = BTreeMap::new();
    for (name, value) in &item {
        if let Some(policy) = name.strip_prefix(USED_AT).and_then(|p| TrustPolicyId::parse(p).ok()) {
            let at = value.as_s().ok().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()).map(|t| t.to_utc());
            uses.entry(policy).or_default().last_used_at = at;
        } else if let Some(policy) = name.strip_prefix(USES).and_then(|p| TrustPolicyId::parse(p).ok()) {
            uses.entry(policy).or_default().uses = value.as_n().ok().and_then(|v| v.parse().ok()).unwrap_or(0);
        }
    }
    Ok(uses)
}

fn identity_sk(identity: &UserIdentity) -> String {
    format!("UID#{}", identity.key())
}

/// The index item of a user's identity, put in its principal's create transaction.
pub(super) fn user_identity_item(principal: &Principal, identity: &UserIdentity) -> Item {
    let mut item = org_key(&principal.org_id, identity_sk(identity));
    item.insert("kind".into(), s("userIdentity"));
    item.insert("principalId".into(), s(principal.id.as_str()));
    item
}

/// The release of a user's identity, in its revocation's transaction: a revoked person can be
/// mapped again, to a new user. Only the revoked user's own mapping goes.
pub(super) fn user_identity_release(
    store: &DynamoStore,
    principal: &Principal,
    identity: &UserIdentity,
) -> Result<TransactWriteItem, StoreError> {
    let delete = Delete::builder()
        .table_name(&store.principals)
        .set_key(Some(org_key(&principal.org_id, identity_sk(identity))))
        .condition_expression("attribute_not_exists(pk) OR principalId = :mappedTo")
        .expression_attribute_values(":mappedTo", s(principal.id.as_str()))
        .build()
        .map_err(build_error)?;
    Ok(TransactWriteItem::builder().delete(delete).build())
}

pub(super) async fn find_user(store: &DynamoStore, org: &OrgId, identity: &UserIdentity) -> Result<Option<PrincipalId>, StoreError> {
    let out = store
        .client
        .get_item()
        .table_name(&store.principals)
        .set_key(Some(org_key(org, identity_sk(identity))))
        .consistent_read(true)
        .send()
        .await
        .map_err(unavailable)?;
    let Some(item) = out.item() else { return Ok(None) };
    let raw =
        item.get("principalId").and_then(|v| v.as_s().ok()).ok_or_else(|| StoreError::Corrupt("user identity: principalId".into()))?;
    PrincipalId::parse(raw).map(Some).map_err(|_| StoreError::Corrupt("user identity: principalId".into()))
}

fn sign_in_key(org: &OrgId, key: &str) -> Item {
    org_key(org, format!("SIGNIN#{key}"))
}

/// A sign-in's record, expiring with the table's TTL (which deletes lazily: the reader checks).
pub(super) async fn put_sign_in(store: &DynamoStore, org: &OrgId, key: &str, record: &SignInRecord) -> Result<(), StoreError> {
    let mut item = sign_in_key(org, key);
    item.insert("kind".into(), s("signIn"));
    item.insert("record".into(), s(serde_json::to_string(record).expect("sign-in records always serialise")));
    item.insert("ttl".into(), n(u64::try_from(record.expires_at().timestamp()).unwrap_or(0)));
    store
        .client
        .put_item()
        .table_name(&store.principals)
        .set_item(Some(item))
        .condition_expression("attribute_not_exists(pk)")
        .send()
        .await
        .map_err(unavailable)?;
    Ok(())
}

/// One DeleteItem that answers what it deleted: two takes of one key never both find it.
pub(super) async fn take_sign_in(store: &DynamoStore, org: &OrgId, key: &str) -> Result<Option<SignInRecord>, StoreError> {
    let out = store
        .client
        .delete_item()
        .table_name(&store.principals)
        .set_key(Some(sign_in_key(org, key)))
        .return_values(ReturnValue::AllOld)
        .send()
        .await
        .map_err(unavailable)?;
    let Some(item) = out.attributes() else { return Ok(None) };
    let raw = item.get("record").and_then(|v| v.as_s().ok()).ok_or_else(|| StoreError::Corrupt("sign-in: record".into()))?;
    serde_json::from_str(raw).map(Some).map_err(|_| StoreError::Corrupt("sign-in: record".into()))
}

/// A check that the organisation's trusted-issuer list (and so its identity provider) is still
/// at `version`: a person's standing as an administrator's witness.
pub(super) fn sign_in_unchanged(store: &DynamoStore, org: &OrgId, version: u64) -> Result<ConditionCheck, StoreError> {
    ConditionCheck::builder()
        .table_name(&store.principals)
        .set_key(Some(org_key(org, ISSUERS_SK.to_owned())))
        .condition_expression("#version = :version")
        .expression_attribute_names("#version", "version")
        .expression_attribute_values(":version", n(version))
        .build()
        .map_err(build_error)
}

pub(super) async fn record_sign_in(
    store: &DynamoStore,
    principal: &Principal,
    under: u64,
    record: &crate::audit::AuditEntry,
) -> Result<(), StoreError> {
    let update = Update::builder()
        .table_name(&store.principals)
        .set_key(Some(org_key(&principal.org_id, principal_sk(&principal.id))))
        .condition_expression("attribute_exists(pk)")
        .update_expression("SET #under = :under")
        .expression_attribute_names("#under", super::items::SIGNED_IN_UNDER)
        .expression_attribute_values(":under", n(under))
        .build()
        .map_err(build_error)?;
    match Transaction::new(store).with_update(Part::Principal, update).recording(record.clone()).commit().await {
        Ok(()) => Ok(()),
        Err(c) if c.failed(Part::Principal) => Err(StoreError::NotFound("principal")),
        Err(c) if c.raced() => Err(StoreError::Conflict(Conflict::Contended)),
        Err(c) => Err(c.unavailable()),
    }
}
