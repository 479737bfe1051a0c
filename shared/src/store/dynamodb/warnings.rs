//! The sweeps behind warnings, as Scans (a scheduled, background read of every credential and
//! principal: eventually consistent, paged), and warnings recorded once: the once key is an item
//! of the audit table (`sk = ONCE#<key>`, outside the records' time-ordered range, expiring
//! with the trail's retention) put on condition that it is new, in the record's transaction.

use std::collections::HashMap;

use aws_sdk_dynamodb::operation::scan::builders::ScanFluentBuilder;
use aws_sdk_dynamodb::types::AttributeValue;

use super::DynamoStore;
use super::items::{Item, credential_from_item, n, org_key, principal_from_item, s};
use super::transaction::{Part, Transaction, unavailable};
use crate::audit::AuditEntry;
use crate::model::{Credential, Principal};
use crate::store::{StoreError, SweepPage};

/// A Scan's position as an opaque cursor: its key's string attributes, as JSON.
fn cursor_of(key: &Item) -> Option<String> {
    let strings: HashMap<&str, &str> =
        key.iter().filter_map(|(name, value)| value.as_s().ok().map(|v| (name.as_str(), v.as_str()))).collect();
    serde_json::to_string(&strings).ok()
}

fn key_of(cursor: &str) -> Result<Item, StoreError> {
    let strings: HashMap<String, String> =
        serde_json::from_str(cursor).map_err(|_| StoreError::Corrupt("a sweep cursor that is not this store's".into()))?;
    Ok(strings.into_iter().map(|(name, value)| (name, AttributeValue::S(value))).collect())
}

async fn sweep<T>(
    scan: ScanFluentBuilder,
    after: Option<&str>,
    limit: usize,
    parse: fn(&Item) -> Result<T, StoreError>,
) -> Result<SweepPage<T>, StoreError> {
    let mut start = after.map(key_of).transpose()?;
    let mut items = Vec::new();
    loop {
        let out = scan
            .clone()
            .limit(i32::try_from(limit - items.len()).unwrap_or(i32::MAX))
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(unavailable)?;
        for item in out.items() {
            items.push(parse(item)?);
        }
        match out.last_evaluated_key() {
            Some(key) if !key.is_empty() && items.len() >= limit => return Ok(SweepPage { items, next: cursor_of(key) }),
            Some(key) if !key.is_empty() => start = Some(key.clone()),
            _ => return Ok(SweepPage { items, next: None }),
        }
    }
}

pub(super) async fn sweep_credentials(store: &DynamoStore, after: Option<&str>, limit: usize) -> Result<SweepPage<Credential>, StoreError> {
    let scan = store
        .client
        .scan()
        .table_name(&store.credentials)
        // Credentials only (not failed-attempt counters), and only Active ones.
        .filter_expression("attribute_exists(principalId) AND #status = :active")
        .expression_attribute_names("#status", "status")
        .expression_attribute_values(":active", s("Active"));
    sweep(scan, after, limit, credential_from_item).await
}

pub(super) async fn sweep_principals(store: &DynamoStore, after: Option<&str>, limit: usize) -> Result<SweepPage<Principal>, StoreError> {
    let scan = store
        .client
        .scan()
        .table_name(&store.principals)
        .filter_expression("#kind = :principal AND #status = :active AND attribute_exists(expiresAt)")
        .expression_attribute_names("#kind", "kind")
        .expression_attribute_names("#status", "status")
        .expression_attribute_values(":principal", s("principal"))
        .expression_attribute_values(":active", s("Active"));
    sweep(scan, after, limit, principal_from_item).await
}

pub(super) async fn record_once(store: &DynamoStore, once: &str, entry: &AuditEntry) -> Result<bool, StoreError> {
    let key = org_key(&entry.org_id, format!("ONCE#{once}"));
    // A warning sent before (every hour, for as long as it stays due) costs one read, not a
    // transaction through the organisation's chain head.
    let claimed = store.client.get_item().table_name(&store.audit).set_key(Some(key.clone())).consistent_read(true).send().await;
    if claimed.map_err(unavailable)?.item().is_some() {
        return Ok(false);
    }
    let mut claim = key;
    claim.insert("kind".into(), s("once"));
    claim.insert("ttl".into(), n(entry.at.timestamp().max(0) as u64 + store.audit_retention_days * 86_400));
    let written = Transaction::new(store)
        .with_put(Part::Once, &store.audit, claim, Some("attribute_not_exists(sk)"))?
        .recording(entry.clone())
        .commit()
        .await;
    match written {
        Ok(()) => Ok(true),
        Err(c) if c.failed(Part::Once) => Ok(false),
        Err(c) => Err(c.unavailable()),
    }
}
