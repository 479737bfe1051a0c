//! Webhook endpoints (`org \0 webhookId`) and their deliveries (`org \0 deliveryKey`).

use redb::{ReadableDatabase, ReadableTable};

use super::records::{DELIVERIES, WEBHOOKS, decode, encode, key2, prefix_range};
use super::{EmbeddedStore, check_guard_in};
use crate::authority::Guard;
use crate::error::Conflict;
use crate::ids::{OrgId, WebhookId};
use crate::store::StoreError;
use crate::webhooks::Webhook;
use crate::webhooks::delivery::Delivery;

pub(super) async fn put(store: &EmbeddedStore, webhook: &Webhook, expected_version: Option<u64>, guard: &Guard) -> Result<(), StoreError> {
    let (webhook, guard) = (webhook.clone(), guard.clone());
    store
        .blocking(move |db| {
            let txn = db.begin_write()?;
            check_guard_in(&txn, &guard)?;
            {
                let mut t = txn.open_table(WEBHOOKS)?;
                let key = key2(webhook.org_id.as_str(), webhook.id.as_str());
                let stored: Option<Webhook> = t.get(key.as_str())?.map(|v| decode("webhook", v.value())).transpose()?;
                match (stored, expected_version) {
                    (Some(_), None) => return Err(StoreError::Conflict(Conflict::WebhookExists)),
                    (None, Some(_)) => return Err(StoreError::NotFound("webhook")),
                    (Some(s), Some(v)) if s.version != v => return Err(StoreError::Conflict(Conflict::StaleVersion)),
                    _ => {}
                }
                t.insert(key.as_str(), encode(&webhook)?.as_slice())?;
            }
            super::audit::record_in(&txn, &guard)?;
            Ok(txn.commit()?)
        })
        .await
}

pub(super) async fn get(store: &EmbeddedStore, org: &OrgId, id: &WebhookId) -> Result<Option<Webhook>, StoreError> {
    let key = key2(org.as_str(), id.as_str());
    store
        .blocking(move |db| {
            let txn = db.begin_read()?;
            let t = txn.open_table(WEBHOOKS)?;
            t.get(key.as_str())?.map(|v| decode("webhook", v.value())).transpose()
        })
        .await
}

pub(super) async fn list(store: &EmbeddedStore, org: &OrgId) -> Result<Vec<Webhook>, StoreError> {
    let (low, high) = prefix_range(org.as_str());
    store
        .blocking(move |db| {
            let txn = db.begin_read()?;
            let t = txn.open_table(WEBHOOKS)?;
            t.range(low.as_str()..high.as_str())?.map(|e| decode("webhook", e?.1.value())).collect()
        })
        .await
}

pub(super) async fn delete(store: &EmbeddedStore, org: &OrgId, id: &WebhookId, guard: &Guard) -> Result<bool, StoreError> {
    let (key, guard) = (key2(org.as_str(), id.as_str()), guard.clone());
    store
        .blocking(move |db| {
            let txn = db.begin_write()?;
            check_guard_in(&txn, &guard)?;
            let removed = txn.open_table(WEBHOOKS)?.remove(key.as_str())?.is_some();
            if removed {
                super::audit::record_in(&txn, &guard)?;
            }
            txn.commit()?;
            Ok(removed)
        })
        .await
}

pub(super) async fn put_delivery(store: &EmbeddedStore, delivery: &Delivery) -> Result<(), StoreError> {
    let delivery = delivery.clone();
    store
        .blocking(move |db| {
            let txn = db.begin_write()?;
            let key = key2(delivery.org_id.as_str(), &delivery.sort_key());
            txn.open_table(DELIVERIES)?.insert(key.as_str(), encode(&delivery)?.as_slice())?;
            Ok(txn.commit()?)
        })
        .await
}

pub(super) async fn list_deliveries(store: &EmbeddedStore, org: &OrgId, id: &WebhookId, limit: usize) -> Result<Vec<Delivery>, StoreError> {
    let prefix = key2(org.as_str(), &Delivery::prefix(id));
    // `#` then the next character up: every key with the prefix.
    let (low, high) = (prefix.clone(), format!("{}$", prefix.trim_end_matches('#')));
    store
        .blocking(move |db| {
            let txn = db.begin_read()?;
            let t = txn.open_table(DELIVERIES)?;
            t.range(low.as_str()..high.as_str())?.rev().take(limit).map(|e| decode("delivery", e?.1.value())).collect()
        })
        .await
}
