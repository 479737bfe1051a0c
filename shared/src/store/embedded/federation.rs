//! Federation's records: the organisation's trusted issuers, the index from a service
//! account's id to its organisation, and each trust policy's use (apart from the principal, so
//! a use never moves its version).

use std::collections::BTreeMap;

use redb::{ReadableDatabase, ReadableTable};

use super::principals::get_principal_in;
use super::records::{PRINCIPALS, SERVICE_ACCOUNTS, TRUST_USES, TRUSTED_ISSUERS, decode, encode, key2, key3, prefix_range};
use super::{EmbeddedStore, check_guard_in};
use crate::authority::Guard;
use crate::federation::trust::{TrustPolicyUse, TrustedIssuers};
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
