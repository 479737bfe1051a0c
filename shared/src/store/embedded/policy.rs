//! An organisation's credential policy, one record per organisation.

use redb::ReadableDatabase;

use super::records::{POLICIES, decode, encode};
use super::{EmbeddedStore, check_guard_in};
use crate::authority::Guard;
use crate::credential_policy::CredentialPolicy;
use crate::ids::OrgId;
use crate::store::StoreError;

pub(super) async fn get(store: &EmbeddedStore, org: &OrgId) -> Result<Option<CredentialPolicy>, StoreError> {
    let org = org.clone();
    store
        .blocking(move |db| {
            let txn = db.begin_read()?;
            let t = txn.open_table(POLICIES)?;
            t.get(org.as_str())?.map(|v| decode("credential policy", v.value())).transpose()
        })
        .await
}

pub(super) async fn put(store: &EmbeddedStore, org: &OrgId, policy: &CredentialPolicy, guard: &Guard) -> Result<(), StoreError> {
    let (org, policy, guard) = (org.clone(), policy.clone(), guard.clone());
    store
        .blocking(move |db| {
            let txn = db.begin_write()?;
            check_guard_in(&txn, &guard)?;
            txn.open_table(POLICIES)?.insert(org.as_str(), encode(&policy)?.as_slice())?;
            super::audit::record_in(&txn, &guard)?;
            Ok(txn.commit()?)
        })
        .await
}
