//! An organisation's credential policy: one item in its partition of the principals table
//! (`sk = POLICY`), beside its principals, roles and counters.

use aws_sdk_dynamodb::types::AttributeValue;

use super::DynamoStore;
use super::items::{Item, Reader, corrupt, n, org_key, s, time};
use super::transaction::{GuardChecks, Part, Transaction, unavailable};
use crate::authority::Guard;
use crate::credential_policy::CredentialPolicy;
use crate::error::Conflict;
use crate::ids::OrgId;
use crate::model::Actor;
use crate::store::StoreError;

const POLICY_SK: &str = "POLICY";

fn policy_to_item(org: &OrgId, p: &CredentialPolicy) -> Item {
    let mut item = org_key(org, POLICY_SK.to_owned());
    item.insert("kind".into(), s("credentialPolicy"));
    if let Some(days) = p.max_lifetime_days {
        item.insert("maxLifetimeDays".into(), n(days.into()));
    }
    item.insert("expiryRequired".into(), AttributeValue::Bool(p.expiry_required));
    if let Some(days) = p.max_idle_days {
        item.insert("maxIdleDays".into(), n(days.into()));
    }
    item.insert("allowCredentialCreation".into(), AttributeValue::Bool(p.allow_credential_creation));
    if let Some(at) = p.updated_at {
        item.insert("updatedAt".into(), time(at));
    }
    if let Some(by) = &p.updated_by {
        item.insert("updatedBy".into(), s(&by.0));
    }
    item
}

fn policy_from_item(item: &Item) -> Result<CredentialPolicy, StoreError> {
    let r = Reader::new("credential policy", item);
    let flag = |field: &str| match item.get(field) {
        Some(AttributeValue::Bool(b)) => Ok(*b),
        _ => Err(corrupt("credential policy", field)),
    };
    Ok(CredentialPolicy {
        max_lifetime_days: r.opt_num("maxLifetimeDays")?,
        expiry_required: flag("expiryRequired")?,
        max_idle_days: r.opt_num("maxIdleDays")?,
        allow_credential_creation: flag("allowCredentialCreation")?,
        updated_at: r.opt_time("updatedAt")?,
        updated_by: r.opt_str("updatedBy")?.map(|a| Actor(a.to_owned())),
    })
}

pub(super) async fn get(store: &DynamoStore, org: &OrgId) -> Result<Option<CredentialPolicy>, StoreError> {
    let out = store
        .client
        .get_item()
        .table_name(&store.principals)
        .set_key(Some(org_key(org, POLICY_SK.to_owned())))
        .consistent_read(true)
        .send()
        .await
        .map_err(unavailable)?;
    out.item().map(policy_from_item).transpose()
}

pub(super) async fn put(store: &DynamoStore, org: &OrgId, policy: &CredentialPolicy, guard: &Guard) -> Result<(), StoreError> {
    let checks = GuardChecks::new(store, guard, None)?;
    let result = Transaction::new(store)
        .with_put(Part::Policy, &store.principals, policy_to_item(org, policy), None)?
        .with_guard(&checks)
        .commit()
        .await;
    match result {
        Ok(()) => Ok(()),
        Err(c) if c.guard_broken() => Err(c.guard_error()),
        Err(c) if c.raced() => Err(StoreError::Conflict(Conflict::Contended)),
        Err(c) => Err(c.unavailable()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_items_round_trip() {
        let org = OrgId::parse("acme").unwrap();
        for policy in [
            CredentialPolicy::default(),
            CredentialPolicy::new(Some(90), true, Some(30), false).unwrap().set_by(Actor::system("t"), crate::model::now()),
        ] {
            assert_eq!(policy_from_item(&policy_to_item(&org, &policy)).unwrap(), policy);
        }
    }
}
