//! Federation's records: the organisation's trusted issuers, the index from a service
//! account's id to its organisation, and each trust policy's use (apart from the principal, so
//! a use never moves its version).

use std::collections::BTreeMap;

use redb::{ReadableDatabase, ReadableTable};

use super::principals::get_principal_in;
use super::records::{
    PRINCIPALS, SERVICE_ACCOUNTS, SIGN_INS, TRUST_USES, TRUSTED_ISSUERS, USER_IDENTITIES, decode, encode, key2, key3, prefix_range,
};
use super::{EmbeddedStore, check_guard_in};
use crate::authority::Guard;
use crate::federation::sign_in::SignInRecord;
use crate::federation::trust::{TrustPolicyUse, TrustedIssuers, UserIdentity};
use crate::ids::{OrgId, PrincipalId, TrustPolicyId};
use crate::model::{Principal, PrincipalStatus};
use crate::store::StoreError;

pub(super) async fn get_trusted_issuers(store: &EmbeddedStore, org: &OrgId) -> Result<Option<TrustedIssuers>, StoreError> {
    let org = org.clone();
    store
        .blocking(move |db| {
            let txn = db.begin_read()?;
            let t = txn.open_table(TRUSTED_ISSUERS)?;
            t.get(org.as_str())?.map(|v| decode("trusted issuers", v.value())).transpose()
        })
        .await
}

pub(super) async fn put_trusted_issuers(
    store: &EmbeddedStore,
    org: &OrgId,
    issuers: &TrustedIssuers,
    guard: &Guard,
) -> Result<(), StoreError> {
    let (org, issuers, guard) = (org.clone(), issuers.clone(), guard.clone());
    store
        .blocking(move |db| {
            let txn = db.begin_write()?;
            check_guard_in(&txn, &guard)?;
            {
                let mut t = txn.open_table(TRUSTED_ISSUERS)?;
                let stored: Option<TrustedIssuers> = t.get(org.as_str())?.map(|v| decode("trusted issuers", v.value())).transpose()?;
                if stored.map_or(0, |s| s.version) + 1 != issuers.version {
                    return Err(StoreError::Conflict(crate::error::Conflict::StaleVersion));
                }
                t.insert(org.as_str(), encode(&issuers)?.as_slice())?;
            }
            super::audit::record_in(&txn, &guard)?;
            Ok(txn.commit()?)
        })
        .await
}

pub(super) async fn find_service_account(store: &EmbeddedStore, id: &PrincipalId) -> Result<Option<OrgId>, StoreError> {
    let id = id.clone();
    store
        .blocking(move |db| {
            let txn = db.begin_read()?;
            let t = txn.open_table(SERVICE_ACCOUNTS)?;
            let Some(raw) = t.get(id.as_str())? else { return Ok(None) };
            let org = std::str::from_utf8(raw.value()).ok().and_then(|o| OrgId::parse(o).ok());
            org.map(Some).ok_or_else(|| StoreError::Corrupt("service account index".into()))
        })
        .await
}

pub(super) async fn record_trust_policy_use(
    store: &EmbeddedStore,
    principal: &Principal,
    policy: &TrustPolicyId,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<bool, StoreError> {
    let (principal, policy) = (principal.clone(), policy.clone());
    store
        .blocking(move |db| {
            let txn = db.begin_write()?;
            {
                let principals = txn.open_table(PRINCIPALS)?;
                let current = get_principal_in(&principals, principal.org_id.as_str(), principal.id.as_str())?;
                if !current.is_some_and(|c| c.status == PrincipalStatus::Active && c.version == principal.version) {
                    return Ok(false);
                }
            }
            {
                let mut uses = txn.open_table(TRUST_USES)?;
                let key = key3(principal.org_id.as_str(), principal.id.as_str(), policy.as_str());
                let mut use_: TrustPolicyUse =
                    uses.get(key.as_str())?.map(|v| decode("trust policy use", v.value())).transpose()?.unwrap_or_default();
                use_.last_used_at = Some(at);
                use_.uses += 1;
                uses.insert(key.as_str(), encode(&use_)?.as_slice())?;
            }
            txn.commit()?;
            Ok(true)
        })
        .await
}

pub(super) async fn trust_policy_uses(
    store: &EmbeddedStore,
    org: &OrgId,
    id: &PrincipalId,
) -> Result<BTreeMap<TrustPolicyId, TrustPolicyUse>, StoreError> {
    let prefix = key2(org.as_str(), id.as_str());
    store
        .blocking(move |db| {
            let txn = db.begin_read()?;
            let t = txn.open_table(TRUST_USES)?;
            let (start, end) = prefix_range(&prefix);
            let mut uses = BTreeMap::new();
            for row in t.range(start.as_str()..end.as_str())? {
                let (k, v) = row?;
                let Some(policy) = k.value().rsplit(super::records::SEP).next().and_then(|p| TrustPolicyId::parse(p).ok()) else {
                    continue;
                };
                uses.insert(policy, decode("trust policy use", v.value())?);
            }
            Ok(uses)
        })
        .await
}

pub(super) async fn find_user(store: &EmbeddedStore, org: &OrgId, identity: &UserIdentity) -> Result<Option<PrincipalId>, StoreError> {
    let key = key2(org.as_str(), &identity.key());
    store
        .blocking(move |db| {
            let txn = db.begin_read()?;
            let t = txn.open_table(USER_IDENTITIES)?;
            let Some(raw) = t.get(key.as_str())? else { return Ok(None) };
            let id = std::str::from_utf8(raw.value()).ok().and_then(|id| PrincipalId::parse(id).ok());
            id.map(Some).ok_or_else(|| StoreError::Corrupt("user identity".into()))
        })
        .await
}

pub(super) async fn put_sign_in(store: &EmbeddedStore, org: &OrgId, key: &str, record: &SignInRecord) -> Result<(), StoreError> {
    let (key, record) = (key2(org.as_str(), key), record.clone());
    store
        .blocking(move |db| {
            let txn = db.begin_write()?;
            {
                let mut t = txn.open_table(SIGN_INS)?;
                // Expired records go as new ones come: the table stays as small as what is live.
                let now = crate::model::now();
                let expired: Vec<String> = t
                    .iter()?
                    .filter_map(Result::ok)
                    .filter(|(_, v)| decode::<SignInRecord>("sign-in", v.value()).map_or(true, |r| r.expires_at() <= now))
                    .map(|(k, _)| k.value().to_owned())
                    .collect();
                for gone in expired {
                    t.remove(gone.as_str())?;
                }
                t.insert(key.as_str(), encode(&record)?.as_slice())?;
            }
            Ok(txn.commit()?)
        })
        .await
}

pub(super) async fn take_sign_in(store: &EmbeddedStore, org: &OrgId, key: &str) -> Result<Option<SignInRecord>, StoreError> {
    let key = key2(org.as_str(), key);
    store
        .blocking(move |db| {
            let txn = db.begin_write()?;
            let taken = txn.open_table(SIGN_INS)?.remove(key.as_str())?.map(|v| decode("sign-in", v.value())).transpose()?;
            txn.commit()?;
            Ok(taken)
        })
        .await
}

pub(super) async fn record_sign_in(
    store: &EmbeddedStore,
    principal: &Principal,
    under: u64,
    record: &crate::audit::AuditEntry,
) -> Result<(), StoreError> {
    let key = key2(principal.org_id.as_str(), principal.id.as_str());
    let record = record.clone();
    store
        .blocking(move |db| {
            let txn = db.begin_write()?;
            {
                let mut t = txn.open_table(PRINCIPALS)?;
                let mut stored: Principal =
                    t.get(key.as_str())?.map(|v| decode("principal", v.value())).transpose()?.ok_or(StoreError::NotFound("principal"))?;
                stored.signed_in_under = Some(under);
                t.insert(key.as_str(), encode(&stored)?.as_slice())?;
            }
            super::audit::append_in(&txn, record, 1)?;
            Ok(txn.commit()?)
        })
        .await
}
