//! Idempotency records, claimed inside the create's own write transaction.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use redb::{ReadableDatabase, ReadableTable};

use super::EmbeddedStore;
use super::records::{IDEMPOTENCY, decode, encode, key2};
use crate::error::Conflict;
use crate::idempotency::{IdempotencyRecord, IdempotentOutcome};
use crate::ids::OrgId;
use crate::store::StoreError;

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct IdempotencyItem {
    fingerprint: String,
    outcome: IdempotentOutcome,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

/// Writes `record` inside `txn` unless its slot holds one still live; part of the create's
/// transaction, so the record and the object exist together or not at all. An expired record
/// is overwritten here rather than swept.
pub(super) fn claim_idempotency_in(txn: &redb::WriteTransaction, record: Option<&IdempotencyRecord>) -> Result<(), StoreError> {
    let Some(r) = record else { return Ok(()) };
    let mut t = txn.open_table(IDEMPOTENCY)?;
    let k = key2(r.org_id.as_str(), &r.slot);
    let taken = match t.get(k.as_str())? {
        Some(v) => r.created_at < decode::<IdempotencyItem>("idempotency record", v.value())?.expires_at,
        None => false,
    };
    if taken {
        return Err(StoreError::Conflict(Conflict::IdempotencyKeyTaken));
    }
    let item = IdempotencyItem {
        fingerprint: r.fingerprint.clone(),
        outcome: r.outcome.clone(),
        created_at: r.created_at,
        expires_at: r.expires_at,
    };
    t.insert(k.as_str(), encode(&item)?.as_slice())?;
    Ok(())
}

pub(super) async fn get_record(store: &EmbeddedStore, org: &OrgId, slot: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
    let (org, slot) = (org.clone(), slot.to_owned());
    store
        .blocking(move |db| {
            let txn = db.begin_read()?;
            let t = txn.open_table(IDEMPOTENCY)?;
            let Some(v) = t.get(key2(org.as_str(), &slot).as_str())? else { return Ok(None) };
            let item: IdempotencyItem = decode("idempotency record", v.value())?;
            Ok(Some(IdempotencyRecord {
                org_id: org,
                slot,
                fingerprint: item.fingerprint,
                outcome: item.outcome,
                created_at: item.created_at,
                expires_at: item.expires_at,
            }))
        })
        .await
}
