//! Idempotency records: they sit beside the organisation's principals (a create's transaction
//! writes both, and every creating function may already write this table) and expire through
//! `ttl`.

use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};

use super::DynamoStore;
use super::items::{Item, Reader, corrupt, org_key, s, time};
use super::transaction::{Part, Transaction, build_error, unavailable};
use crate::idempotency::IdempotencyRecord;
use crate::ids::OrgId;
use crate::store::StoreError;

fn idempotency_sk(slot: &str) -> String {
    format!("IDEM#{slot}")
}

impl<'a> Transaction<'a> {
    /// Claims the record's slot in the same transaction as the create it records.
    pub(super) fn with_idempotency(self, table: &str, record: Option<&IdempotencyRecord>) -> Result<Self, StoreError> {
        let Some(r) = record else { return Ok(self) };
        let outcome = serde_json::to_string(&r.outcome).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut item = org_key(&r.org_id, idempotency_sk(&r.slot));
        item.insert("kind".into(), s("idempotency"));
        item.insert("fingerprint".into(), s(r.fingerprint.clone()));
        item.insert("outcome".into(), s(outcome));
        item.insert("createdAt".into(), time(r.created_at));
        item.insert("expiresAt".into(), time(r.expires_at));
        item.insert("ttl".into(), AttributeValue::N(r.expires_at.timestamp().to_string()));
        let put = Put::builder()
            .table_name(table)
            .set_item(Some(item))
            // A record past its expiry may linger until TTL sweeps it (up to days): it frees the slot.
            .condition_expression("attribute_not_exists(sk) OR #ttl <= :now")
            .expression_attribute_names("#ttl", "ttl")
            .expression_attribute_values(":now", AttributeValue::N(r.created_at.timestamp().to_string()))
            .build()
            .map_err(build_error)?;
        Ok(self.with(Part::Idempotency, TransactWriteItem::builder().put(put).build()))
    }
}

fn idempotency_from_item(org: &OrgId, slot: &str, item: &Item) -> Result<IdempotencyRecord, StoreError> {
    let r = Reader::new("idempotency record", item);
    let outcome = serde_json::from_str(r.str("outcome")?).map_err(|_| corrupt("idempotency record", "outcome"))?;
    Ok(IdempotencyRecord {
        org_id: org.clone(),
        slot: slot.to_owned(),
        fingerprint: r.str("fingerprint")?.to_owned(),
        outcome,
        created_at: r.time("createdAt")?,
        expires_at: r.time("expiresAt")?,
    })
}

pub(super) async fn get_record(store: &DynamoStore, org: &OrgId, slot: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
    let out = store
        .client
        .get_item()
        .table_name(&store.principals)
        .set_key(Some(org_key(org, idempotency_sk(slot))))
        .consistent_read(true)
        .send()
        .await
        .map_err(unavailable)?;
    out.item().map(|item| idempotency_from_item(org, slot, item)).transpose()
}
