//! Webhook endpoints, in their organisation's partition of the principals table (`sk = WH#<id>`),
//! and their deliveries, in the audit table (`sk = DLV#<webhook>#<time>#<event>`: outside the
//! records' time-ordered range, expiring with the trail's TTL after 30 days).

use aws_sdk_dynamodb::types::AttributeValue;

use super::DynamoStore;
use super::items::{Item, Reader, corrupt, n, org_key, s};
use super::transaction::{GuardChecks, Part, Transaction, unavailable};
use crate::authority::Guard;
use crate::error::Conflict;
use crate::ids::{OrgId, WebhookId};
use crate::store::StoreError;
use crate::webhooks::Webhook;
use crate::webhooks::delivery::Delivery;

/// How long a delivery's record is kept.
const DELIVERY_DAYS: i64 = 30;

fn webhook_sk(id: &WebhookId) -> String {
    format!("WH#{id}")
}

fn to_item(w: &Webhook) -> Result<Item, StoreError> {
    let mut item = org_key(&w.org_id, webhook_sk(&w.id));
    item.insert("kind".into(), s("webhook"));
    item.insert("webhook".into(), s(serde_json::to_string(w).map_err(|e| StoreError::Corrupt(e.to_string()))?));
    item.insert("version".into(), n(w.version));
    Ok(item)
}

fn from_item(item: &Item) -> Result<Webhook, StoreError> {
    serde_json::from_str(Reader::new("webhook", item).str("webhook")?).map_err(|_| corrupt("webhook", "webhook"))
}

pub(super) async fn put(store: &DynamoStore, webhook: &Webhook, expected_version: Option<u64>, guard: &Guard) -> Result<(), StoreError> {
    let checks = GuardChecks::new(store, guard, None)?;
    let put = aws_sdk_dynamodb::types::Put::builder().table_name(&store.principals).set_item(Some(to_item(webhook)?));
    let put = match expected_version {
        None => put.condition_expression("attribute_not_exists(sk)"),
        Some(v) => put.condition_expression("version = :expected").expression_attribute_values(":expected", n(v)),
    };
    let put = put.build().map_err(super::transaction::build_error)?;
    let result = Transaction::new(store)
        .with(Part::Webhook, aws_sdk_dynamodb::types::TransactWriteItem::builder().put(put).build())
        .with_guard(&checks)
        .commit()
        .await;
    match result {
        Ok(()) => Ok(()),
        Err(c) if c.guard_broken() => Err(c.guard_error()),
        Err(c) if c.failed(Part::Webhook) => match expected_version {
            None => Err(StoreError::Conflict(Conflict::WebhookExists)),
            Some(_) => match get(store, &webhook.org_id, &webhook.id).await? {
                Some(_) => Err(StoreError::Conflict(Conflict::StaleVersion)),
                None => Err(StoreError::NotFound("webhook")),
            },
        },
        Err(c) if c.raced() => Err(StoreError::Conflict(Conflict::Contended)),
        Err(c) => Err(c.unavailable()),
    }
}

pub(super) async fn get(store: &DynamoStore, org: &OrgId, id: &WebhookId) -> Result<Option<Webhook>, StoreError> {
    let out = store
        .client
        .get_item()
        .table_name(&store.principals)
        .set_key(Some(org_key(org, webhook_sk(id))))
        .consistent_read(true)
        .send()
        .await
        .map_err(unavailable)?;
    out.item().map(from_item).transpose()
}

pub(super) async fn list(store: &DynamoStore, org: &OrgId) -> Result<Vec<Webhook>, StoreError> {
    // At most MAX_WEBHOOKS_PER_ORG small items: one page.
    let out = store
        .client
        .query()
        .table_name(&store.principals)
        .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
        .expression_attribute_values(":pk", s(org.as_str()))
        .expression_attribute_values(":prefix", s("WH#"))
        .consistent_read(true)
        .send()
        .await
        .map_err(unavailable)?;
    out.items().iter().map(from_item).collect()
}

pub(super) async fn delete(store: &DynamoStore, org: &OrgId, id: &WebhookId, guard: &Guard) -> Result<bool, StoreError> {
    let checks = GuardChecks::new(store, guard, None)?;
    let delete = aws_sdk_dynamodb::types::Delete::builder()
        .table_name(&store.principals)
        .set_key(Some(org_key(org, webhook_sk(id))))
        .condition_expression("attribute_exists(sk)")
        .build()
        .map_err(super::transaction::build_error)?;
    let result = Transaction::new(store)
        .with(Part::Webhook, aws_sdk_dynamodb::types::TransactWriteItem::builder().delete(delete).build())
        .with_guard(&checks)
        .commit()
        .await;
    match result {
        Ok(()) => Ok(true),
        Err(c) if c.guard_broken() => Err(c.guard_error()),
        Err(c) if c.failed(Part::Webhook) => Ok(false),
        Err(c) if c.raced() => Err(StoreError::Conflict(Conflict::Contended)),
        Err(c) => Err(c.unavailable()),
    }
}

pub(super) async fn put_delivery(store: &DynamoStore, delivery: &Delivery) -> Result<(), StoreError> {
    let mut item = org_key(&delivery.org_id, delivery.sort_key());
    item.insert("kind".into(), s("delivery"));
    item.insert("delivery".into(), s(serde_json::to_string(delivery).map_err(|e| StoreError::Corrupt(e.to_string()))?));
    let expires = (delivery.created_at + chrono::Duration::days(DELIVERY_DAYS)).timestamp().max(0) as u64;
    item.insert("ttl".into(), AttributeValue::N(expires.to_string()));
    store.client.put_item().table_name(&store.audit).set_item(Some(item)).send().await.map_err(unavailable)?;
    Ok(())
}

pub(super) async fn list_deliveries(store: &DynamoStore, org: &OrgId, id: &WebhookId, limit: usize) -> Result<Vec<Delivery>, StoreError> {
    let out = store
        .client
        .query()
        .table_name(&store.audit)
        .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
        .expression_attribute_values(":pk", s(org.as_str()))
        .expression_attribute_values(":prefix", s(Delivery::prefix(id)))
        .scan_index_forward(false)
        .limit(i32::try_from(limit).unwrap_or(i32::MAX))
        .consistent_read(true)
        .send()
        .await
        .map_err(unavailable)?;
    out.items()
        .iter()
        .map(|item| serde_json::from_str(Reader::new("delivery", item).str("delivery")?).map_err(|_| corrupt("delivery", "delivery")))
        .collect()
}
