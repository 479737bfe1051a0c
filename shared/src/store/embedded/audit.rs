//! The audit trail on the embedded store: records under `org \0 sortKey`, and each
//! organisation's chain head, written inside the transaction of the change they record (redb
//! admits one writer at a time, so the chain never forks).

use redb::{ReadableDatabase, ReadableTable};

use super::EmbeddedStore;
use super::records::{AUDIT, AUDIT_HEADS, decode, encode, key2};
use crate::audit::{AuditCursor, AuditEntry, AuditPage, AuditQuery, AuditRecord, ChainHead, refusals};
use crate::authority::Guard;
use crate::ids::OrgId;
use crate::store::StoreError;

/// Writes the guard's record, if it carries one, chained after the organisation's head.
pub(super) fn record_in(txn: &redb::WriteTransaction, guard: &Guard) -> Result<(), StoreError> {
    match &guard.record {
        Some(entry) => append_in(txn, entry.clone(), 1),
        None => Ok(()),
    }
}

pub(super) fn append_in(txn: &redb::WriteTransaction, entry: AuditEntry, repeats: u64) -> Result<(), StoreError> {
    let org = entry.org_id.clone();
    let mut heads = txn.open_table(AUDIT_HEADS)?;
    let head: Option<ChainHead> = heads.get(org.as_str())?.map(|v| decode("audit head", v.value())).transpose()?;
    let record = AuditRecord { repeats, ..AuditRecord::chained(entry, head.as_ref()) };
    txn.open_table(AUDIT)?.insert(key2(org.as_str(), &record.sort_key()).as_str(), encode(&record)?.as_slice())?;
    heads.insert(org.as_str(), encode(&record.as_head(head.as_ref()))?.as_slice())?;
    Ok(())
}

pub(super) async fn record_refusal(store: &EmbeddedStore, entry: &AuditEntry, repeats: u64) -> Result<(), StoreError> {
    let entry = entry.clone();
    store
        .blocking(move |db| {
            let txn = db.begin_write()?;
            let key = key2(entry.org_id.as_str(), &refusals::bucket_key(&entry));
            let existing: Option<AuditRecord> = {
                let t = txn.open_table(AUDIT)?;
                t.get(key.as_str())?.map(|v| decode("audit record", v.value())).transpose()?
            };
            match existing {
                Some(mut record) => {
                    record.repeats += repeats;
                    txn.open_table(AUDIT)?.insert(key.as_str(), encode(&record)?.as_slice())?;
                }
                None => append_in(&txn, entry, repeats)?,
            }
            Ok(txn.commit()?)
        })
        .await
}

pub(super) async fn events(store: &EmbeddedStore, org: &OrgId, query: &AuditQuery) -> Result<AuditPage, StoreError> {
    let (org, query) = (org.clone(), query.clone());
    store
        .blocking(move |db| {
            let txn = db.begin_read()?;
            let t = txn.open_table(AUDIT)?;
            let (low, high) = query.key_range();
            let (mut low, mut high) = (key2(org.as_str(), &low), key2(org.as_str(), &high));
            // The cursor is the last key answered: the next page starts just past it.
            if let Some(AuditCursor(after)) = &query.after {
                let after = key2(org.as_str(), after);
                match query.oldest_first {
                    true => low = low.max(format!("{after}\u{0}")),
                    false => high = high.min(after),
                }
            }
            let mut items = Vec::new();
            let mut next = None;
            if low < high {
                let range = t.range(low.as_str()..high.as_str())?;
                let entries: Box<dyn Iterator<Item = _>> = if query.oldest_first { Box::new(range) } else { Box::new(range.rev()) };
                for entry in entries {
                    let (_, v) = entry?;
                    let record: AuditRecord = decode("audit record", v.value())?;
                    if query.matches(&record) {
                        if items.len() == query.limit {
                            next = items.last().map(|r: &AuditRecord| AuditCursor(r.sort_key()));
                            break;
                        }
                        items.push(record);
                    }
                }
            }
            Ok(AuditPage { items, next })
        })
        .await
}

pub(super) async fn head(store: &EmbeddedStore, org: &OrgId) -> Result<Option<ChainHead>, StoreError> {
    let org = org.clone();
    store
        .blocking(move |db| {
            let txn = db.begin_read()?;
            let t = txn.open_table(AUDIT_HEADS)?;
            t.get(org.as_str())?.map(|v| decode("audit head", v.value())).transpose()
        })
        .await
}
