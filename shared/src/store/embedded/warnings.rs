//! The sweeps behind warnings (every credential and principal, whatever the organisation), and
//! warnings recorded once: the once key claimed in the same write transaction as the record.

use redb::{ReadableDatabase, ReadableTable};

use super::EmbeddedStore;
use super::audit::append_in;
use super::records::{CREDENTIALS, ONCE, PRINCIPALS, decode, decode_credential, key2};
use crate::audit::AuditEntry;
use crate::model::{Credential, CredentialStatus, Principal, PrincipalStatus};
use crate::store::{StoreError, SweepPage};

/// Reads `table` from just past `after`, keeping what `keep` makes of each value, until `limit`
/// are kept; the cursor is the last key read.
async fn sweep<T: Send + 'static>(
    store: &EmbeddedStore,
    table: super::records::Table,
    after: Option<&str>,
    limit: usize,
    keep: fn(&[u8]) -> Result<Option<T>, StoreError>,
) -> Result<SweepPage<T>, StoreError> {
    let after = after.map(str::to_owned);
    store
        .blocking(move |db| {
            let txn = db.begin_read()?;
            let t = txn.open_table(table)?;
            let range = match &after {
                Some(after) => t.range::<&str>((std::ops::Bound::Excluded(after.as_str()), std::ops::Bound::Unbounded))?,
                None => t.range::<&str>(..)?,
            };
            let mut items = Vec::new();
            for entry in range {
                let (k, v) = entry?;
                if let Some(item) = keep(v.value())? {
                    items.push(item);
                }
                if items.len() == limit {
                    return Ok(SweepPage { items, next: Some(k.value().to_owned()) });
                }
            }
            Ok(SweepPage { items, next: None })
        })
        .await
}

pub(super) async fn sweep_credentials(
    store: &EmbeddedStore,
    after: Option<&str>,
    limit: usize,
) -> Result<SweepPage<Credential>, StoreError> {
    sweep(store, CREDENTIALS, after, limit, |v| Ok(Some(decode_credential(v)?).filter(|c| c.status == CredentialStatus::Active))).await
}

pub(super) async fn sweep_principals(store: &EmbeddedStore, after: Option<&str>, limit: usize) -> Result<SweepPage<Principal>, StoreError> {
    sweep(store, PRINCIPALS, after, limit, |v| {
        let p: Principal = decode("principal", v)?;
        Ok(Some(p).filter(|p| p.status == PrincipalStatus::Active && p.expires_at.is_some()))
    })
    .await
}

pub(super) async fn record_once(store: &EmbeddedStore, once: &str, entry: &AuditEntry) -> Result<bool, StoreError> {
    let (key, entry) = (key2(entry.org_id.as_str(), once), entry.clone());
    store
        .blocking(move |db| {
            let txn = db.begin_write()?;
            {
                let mut claimed = txn.open_table(ONCE)?;
                if claimed.get(key.as_str())?.is_some() {
                    return Ok(false);
                }
                claimed.insert(key.as_str(), [].as_slice())?;
            }
            append_in(&txn, entry, 1)?;
            txn.commit()?;
            Ok(true)
        })
        .await
}
