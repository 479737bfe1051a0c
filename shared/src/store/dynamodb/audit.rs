//! The audit trail on DynamoDB: a table of its own, partition key `pk` = organisation id, sort
//! key `sk` = the record's time-ordered key ([`AuditRecord::sort_key`]); the chain head is the
//! item `sk = HEAD`. A record is a Put in the transaction of the change it records, with an
//! Update of the head conditioned on the head read just before, so two changes of one
//! organisation can never both follow the same record: the loser re-reads the head and tries
//! again ([`super::transaction::Transaction::commit`]). Records expire through the table's TTL
//! (`ttl`, the retention the operator sets); the head never does.

use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};

use super::DynamoStore;
use super::items::{Item, Reader, corrupt, n, org_key, s, time};
use super::transaction::{Part, Transaction, build_error, jittered_pause, unavailable};
use crate::audit::{AuditCursor, AuditEntry, AuditPage, AuditQuery, AuditRecord, ChainHead, refusals};
use crate::ids::OrgId;
use crate::store::StoreError;

const HEAD_SK: &str = "HEAD";

/// How many pages of the table one query reads at most before answering with a cursor: a
/// selective filter over a long trail answers in bounded time, and the client continues.
const MAX_PAGES_READ: usize = 8;

pub(super) async fn read_head(store: &DynamoStore, org: &OrgId) -> Result<Option<ChainHead>, StoreError> {
    let out = store
        .client
        .get_item()
        .table_name(&store.audit)
        .set_key(Some(org_key(org, HEAD_SK.to_owned())))
        .consistent_read(true)
        .send()
        .await
        .map_err(unavailable)?;
    let Some(item) = out.item() else { return Ok(None) };
    let r = Reader::new("audit head", item);
    Ok(Some(ChainHead { seq: r.num("seq")?, digest: r.str("digest")?.to_owned(), at: r.opt_time("at")? }))
}

fn record_to_item(store: &DynamoStore, record: &AuditRecord) -> Result<Item, StoreError> {
    let e = &record.entry;
    let mut item = org_key(&e.org_id, record.sort_key());
    item.insert("kind".into(), s("audit"));
    item.insert("record".into(), s(serde_json::to_string(record).map_err(|e| StoreError::Corrupt(e.to_string()))?));
    item.insert("seq".into(), n(record.seq));
    item.insert("repeats".into(), n(record.repeats));
    item.insert("actor".into(), s(&e.actor.0));
    item.insert("action".into(), s(&e.action));
    item.insert("outcome".into(), s(e.outcome.as_str()));
    if let Some(p) = &e.principal_id {
        item.insert("principalId".into(), s(p.as_str()));
    }
    let expires = e.at.timestamp().max(0) as u64 + store.audit_retention_days * 86_400;
    item.insert("ttl".into(), n(expires));
    Ok(item)
}

fn record_from_item(item: &Item) -> Result<AuditRecord, StoreError> {
    let r = Reader::new("audit record", item);
    let mut record: AuditRecord = serde_json::from_str(r.str("record")?).map_err(|_| corrupt("audit record", "record"))?;
    record.repeats = r.num("repeats")?;
    Ok(record)
}

/// The items that chain `entry` after `head`: the record, and the head moved on to it on the
/// condition that it is still where it was read.
pub(super) fn chain_items(
    store: &DynamoStore,
    entry: &AuditEntry,
    head: Option<&ChainHead>,
    repeats: u64,
) -> Result<Vec<(Part, TransactWriteItem)>, StoreError> {
    let record = AuditRecord { repeats, ..AuditRecord::chained(entry.clone(), head) };
    let put = Put::builder()
        .table_name(&store.audit)
        .set_item(Some(record_to_item(store, &record)?))
        .condition_expression("attribute_not_exists(sk)")
        .build()
        .map_err(build_error)?;
    let moved = record.as_head(head);
    let update = Update::builder()
        .table_name(&store.audit)
        .set_key(Some(org_key(&entry.org_id, HEAD_SK.to_owned())))
        .update_expression(if moved.at.is_some() {
            "SET seq = :seq, digest = :digest, kind = :kind, #at = :at"
        } else {
            "SET seq = :seq, digest = :digest, kind = :kind"
        })
        .expression_attribute_values(":seq", n(moved.seq))
        .expression_attribute_values(":digest", s(&moved.digest))
        .expression_attribute_values(":kind", s("auditHead"));
    let update = match moved.at {
        Some(at) => update.expression_attribute_names("#at", "at").expression_attribute_values(":at", time(at)),
        None => update,
    };
    let update = match head {
        Some(h) => update.condition_expression("seq = :read").expression_attribute_values(":read", n(h.seq)),
        None => update.condition_expression("attribute_not_exists(seq)"),
    };
    Ok(vec![
        (Part::AuditRecord, TransactWriteItem::builder().put(put).build()),
        (Part::AuditHead, TransactWriteItem::builder().update(update.build().map_err(build_error)?).build()),
    ])
}

/// A refusal: one more on its bucket's record when it exists (one conditional UpdateItem, all
/// a flood costs), else the bucket's record chained as a new one.
pub(super) async fn record_refusal(store: &DynamoStore, entry: &AuditEntry, repeats: u64) -> Result<(), StoreError> {
    for attempt in 0..super::MAX_TRANSACTION_ATTEMPTS as u32 {
        let added = store
            .client
            .update_item()
            .table_name(&store.audit)
            .set_key(Some(org_key(&entry.org_id, refusals::bucket_key(entry))))
            .update_expression("ADD repeats :n")
            .condition_expression("attribute_exists(sk)")
            .expression_attribute_values(":n", n(repeats))
            .send()
            .await;
        match added {
            Ok(_) => return Ok(()),
            Err(e) if matches!(e.as_service_error(), Some(UpdateItemError::ConditionalCheckFailedException(_))) => {}
            Err(e) => return Err(unavailable(e)),
        }
        let head = read_head(store, &entry.org_id).await?;
        match Transaction::new(store).with_items(chain_items(store, entry, head.as_ref(), repeats)?).send().await {
            Ok(()) => return Ok(()),
            // The bucket's record was written meanwhile (its tally takes this one), or the
            // head moved: either way, once more.
            Err(c) if c.failed(Part::AuditRecord) || c.failed(Part::AuditHead) || c.raced() => jittered_pause(attempt).await,
            Err(c) => return Err(c.unavailable()),
        }
    }
    Err(StoreError::Throttled("the audit chain head was contended past its retries".into()))
}

pub(super) async fn events(store: &DynamoStore, org: &OrgId, query: &AuditQuery) -> Result<AuditPage, StoreError> {
    let (low, high) = query.key_range();
    let mut start: Option<Item> = query.after.as_ref().map(|AuditCursor(sk)| org_key(org, sk.clone()));
    let mut items = Vec::new();
    for _ in 0..MAX_PAGES_READ {
        let out = store
            .client
            .query()
            .table_name(&store.audit)
            .key_condition_expression("pk = :pk AND sk BETWEEN :low AND :high")
            .expression_attribute_values(":pk", s(org.as_str()))
            .expression_attribute_values(":low", s(low.clone()))
            .expression_attribute_values(":high", s(high.clone()))
            .scan_index_forward(query.oldest_first)
            .consistent_read(true)
            .limit(query.limit as i32 + 1)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(unavailable)?;
        for item in out.items() {
            let record = record_from_item(item)?;
            if !query.matches(&record) {
                continue;
            }
            if items.len() == query.limit {
                let next = items.last().map(|r: &AuditRecord| AuditCursor(r.sort_key()));
                return Ok(AuditPage { items, next });
            }
            items.push(record);
        }
        match out.last_evaluated_key() {
            Some(key) if !key.is_empty() => start = Some(key.clone()),
            _ => return Ok(AuditPage { items, next: None }),
        }
    }
    // Read as much as one answer may: continue from the last key read, even with fewer items.
    let next = start.and_then(|key| match key.get("sk") {
        Some(AttributeValue::S(sk)) => Some(AuditCursor(sk.clone())),
        _ => None,
    });
    Ok(AuditPage { items, next })
}

pub(super) async fn head(store: &DynamoStore, org: &OrgId) -> Result<Option<ChainHead>, StoreError> {
    read_head(store, org).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Actor;

    #[test]
    fn a_record_item_round_trips_and_carries_its_filters() {
        let client = aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::Config::builder().behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest()).build(),
        );
        let store = DynamoStore::new(client, "p", "c", "a");
        let org = OrgId::parse("acme").unwrap();
        let entry = AuditEntry::new(&org, &Actor::system("t"), "role.create", crate::model::now());
        let record = AuditRecord::chained(entry, None);
        let item = record_to_item(&store, &record).unwrap();
        assert_eq!(item["action"], s("role.create"));
        assert_eq!(record_from_item(&item).unwrap(), record);
    }
}
