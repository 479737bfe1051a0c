//! Credential items (in the credentials table, by key id) and their references in the
//! principal's partition: issue, read, list, revoke, and the exchange's record of use.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::operation::get_item::GetItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, KeysAndAttributes, ReturnValue, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};
use chrono::{DateTime, Utc};

use super::items::{
    ALLOWED_AUDIENCES, ALLOWED_PERMISSIONS, ALLOWED_SOURCES, Item, LAST_USED_FROM, PRINCIPAL_STATUS, ROTATED_TO, Reader, USE_COUNT,
    USE_DAY, USE_PAST, USE_SECOND, USE_TODAY, corrupt, credential_from_item, credential_key, credential_ref_item, credential_to_item, n,
    new_credential_item, org_key, past_counts, principal_sk, s, status_name, time,
};
use super::transaction::{Cancelled, GuardChecks, Part, Transaction, build_error, jittered_pause, unavailable};
use super::{DynamoStore, MAX_TRANSACTION_ATTEMPTS, principals, query_prefix};
use crate::authority::Guard;
use crate::error::{Conflict, Limit};
use crate::idempotency::IdempotencyRecord;
use crate::ids::{KeyId, OrgId, PrincipalId};
use crate::model::{Actor, Credential, CredentialStatus, DailyUses, MAX_ACTIVE_CREDENTIALS, PrincipalStatus, UseOutcome, UseWindow};
use crate::store::StoreError;

pub(super) async fn insert(
    store: &DynamoStore,
    credential: &Credential,
    now: DateTime<Utc>,
    idempotency: Option<&IdempotencyRecord>,
    guard: &Guard,
) -> Result<(), StoreError> {
    write_new(store, credential, None, now, idempotency, guard).await
}

pub(super) async fn rotate(
    store: &DynamoStore,
    predecessor: &Credential,
    successor: &Credential,
    now: DateTime<Utc>,
    idempotency: Option<&IdempotencyRecord>,
    guard: &Guard,
) -> Result<(), StoreError> {
    write_new(store, successor, Some(predecessor), now, idempotency, guard).await
}

/// The rotated credential's part of a rotation: its new expiry and its successor, on condition
/// that it is still that principal's, Active, unexpired and never rotated.
fn rotated_out(store: &DynamoStore, predecessor: &Credential, now: DateTime<Utc>) -> Result<Update, StoreError> {
    let expires = predecessor.expires_at.ok_or_else(|| StoreError::Corrupt("a rotated credential always expires".into()))?;
    let successor =
        predecessor.rotated_to.as_ref().ok_or_else(|| StoreError::Corrupt("a rotated credential names its successor".into()))?;
    Update::builder()
        .table_name(&store.credentials)
        .set_key(Some(credential_key(&predecessor.key_id)))
        .update_expression("SET expiresAt = :expires, #rotated_to = :successor")
        .condition_expression(
            "#status = :active AND orgId = :org AND principalId = :principal AND attribute_not_exists(#rotated_to) \
             AND (attribute_not_exists(expiresAt) OR expiresAt > :now)",
        )
        .expression_attribute_names("#status", "status")
        .expression_attribute_names("#rotated_to", ROTATED_TO)
        .expression_attribute_values(":expires", time(expires))
        .expression_attribute_values(":successor", s(successor.as_str()))
        .expression_attribute_values(":active", s("Active"))
        .expression_attribute_values(":org", s(predecessor.org_id.as_str()))
        .expression_attribute_values(":principal", s(predecessor.principal_id.as_str()))
        .expression_attribute_values(":now", time(now))
        .build()
        .map_err(build_error)
}

/// Inserts `credential`, and when it replaces one (a rotation), that one's new expiry and link
/// in the same transaction, counting the limit after both.
async fn write_new(
    store: &DynamoStore,
    credential: &Credential,
    replacing: Option<&Credential>,
    now: DateTime<Utc>,
    idempotency: Option<&IdempotencyRecord>,
    guard: &Guard,
) -> Result<(), StoreError> {
    let decided = guard.version_of(&credential.principal_id)?;
    let checks = GuardChecks::new(store, guard, Some(&credential.principal_id))?;
    for _ in 0..MAX_TRANSACTION_ATTEMPTS {
        let (current, cred_seq, _) = principals::live(store, &credential.org_id, &credential.principal_id).await?;
        if decided.is_some_and(|v| v != current.version) {
            return Err(StoreError::Conflict(Conflict::AuthorityChanged));
        }
        let existing = list(store, &credential.org_id, &credential.principal_id).await?;
        if let Some(r) = replacing {
            existing.iter().find(|c| c.key_id == r.key_id).ok_or(StoreError::NotFound("credential"))?.check_rotatable(now)?;
        }
        let live = existing
            .iter()
            .filter(|c| match replacing {
                Some(r) if r.key_id == c.key_id => r.is_live(now),
                _ => c.is_live(now),
            })
            .count();
        if live >= MAX_ACTIVE_CREDENTIALS {
            return Err(StoreError::Limit(Limit::ActiveCredentials(MAX_ACTIVE_CREDENTIALS)));
        }
        // The principal's credSeq moves with every issue: if another issue committed since we
        // counted, this transaction fails and we count again. Its status must still be the one
        // the new item copies (a status change conditions on credSeq, see `principals::update_status`).
        const SEQ_CONDITION: &str =
            "attribute_exists(pk) AND #status = :seen_status AND (credSeq = :seen OR (attribute_not_exists(credSeq) AND :seen = :zero))";
        let bump = Update::builder()
            .table_name(&store.principals)
            .set_key(Some(org_key(&credential.org_id, principal_sk(&credential.principal_id))))
            .update_expression("SET credSeq = :next")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":seen_status", s(status_name(current.status)))
            .expression_attribute_values(":seen", n(cred_seq))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":next", n(cred_seq + 1));
        let bump = match decided {
            Some(v) => bump
                .condition_expression(format!("{SEQ_CONDITION} AND #version = :decided"))
                .expression_attribute_names("#version", "version")
                .expression_attribute_values(":decided", n(v)),
            None => bump.condition_expression(SEQ_CONDITION),
        }
        .build()
        .map_err(build_error)?;
        let mut transaction = Transaction::new(store)
            .with_update(Part::Principal, bump)
            .with_put(Part::Credential, &store.credentials, new_credential_item(credential, &current), Some("attribute_not_exists(keyId)"))?
            .with_put(Part::CredentialRef, &store.principals, credential_ref_item(credential), None)?;
        if let Some(r) = replacing {
            transaction = transaction.with_update(Part::Rotated, rotated_out(store, r, now)?);
        }
        let result = transaction.with_idempotency(&store.principals, idempotency)?.with_guard(&checks).commit().await;
        match result {
            Ok(()) => return Ok(()),
            Err(c) if c.failed(Part::Credential) => return Err(StoreError::Conflict(Conflict::CredentialExists)),
            // Revoked, expired or rotated since the listing: the next read says which.
            Err(c) if c.failed(Part::Rotated) => continue,
            Err(c) if c.failed(Part::Idempotency) => return Err(StoreError::Conflict(Conflict::IdempotencyKeyTaken)),
            Err(c) if c.guard_broken() => return Err(c.guard_error()),
            // The loop's read tells a concurrent issue from a change to the principal.
            Err(c) if c.failed(Part::Principal) || c.raced() => continue,
            Err(c) => return Err(c.unavailable()),
        }
    }
    Err(StoreError::Conflict(Conflict::Contended))
}

pub(super) async fn update(store: &DynamoStore, credential: &Credential, now: DateTime<Utc>, guard: &Guard) -> Result<(), StoreError> {
    let checks = GuardChecks::new(store, guard, None)?;
    // The changeable attributes as a full item would carry them: set those present, remove
    // those absent (an expiry lifted, a restriction dropped).
    let item = credential_to_item(credential);
    let mut names = HashMap::from([("#status".to_owned(), "status".to_owned())]);
    let mut values = HashMap::from([
        (":active".to_owned(), s("Active")),
        (":org".to_owned(), s(credential.org_id.as_str())),
        (":principal".to_owned(), s(credential.principal_id.as_str())),
        (":now".to_owned(), time(now)),
    ]);
    let (mut set, mut remove) = (Vec::new(), Vec::new());
    for (i, attribute) in ["name", "expiresAt", ALLOWED_PERMISSIONS, ALLOWED_SOURCES, ALLOWED_AUDIENCES].into_iter().enumerate() {
        names.insert(format!("#a{i}"), attribute.to_owned());
        match item.get(attribute) {
            Some(value) => {
                values.insert(format!(":a{i}"), value.clone());
                set.push(format!("#a{i} = :a{i}"));
            }
            None => remove.push(format!("#a{i}")),
        }
    }
    let update = match remove.is_empty() {
        true => format!("SET {}", set.join(", ")),
        false => format!("SET {} REMOVE {}", set.join(", "), remove.join(", ")),
    };
    let write = Update::builder()
        .table_name(&store.credentials)
        .set_key(Some(credential_key(&credential.key_id)))
        .update_expression(update)
        .condition_expression(
            "orgId = :org AND principalId = :principal AND #status = :active AND (attribute_not_exists(expiresAt) OR expiresAt > :now)",
        )
        .set_expression_attribute_names(Some(names))
        .set_expression_attribute_values(Some(values))
        .build()
        .map_err(build_error)?;
    match Transaction::new(store).with_update(Part::Credential, write).with_guard(&checks).commit().await {
        Ok(()) => Ok(()),
        Err(c) if c.guard_broken() => Err(c.guard_error()),
        Err(c) if c.failed(Part::Credential) => match get(store, &credential.key_id).await? {
            Some(stored) if stored.org_id == credential.org_id && stored.principal_id == credential.principal_id => {
                Err(StoreError::Conflict(Conflict::NotChangeable))
            }
            _ => Err(StoreError::NotFound("credential")),
        },
        Err(c) if c.raced() => Err(StoreError::Conflict(Conflict::Contended)),
        Err(c) => Err(c.unavailable()),
    }
}

pub(super) async fn get(store: &DynamoStore, key_id: &KeyId) -> Result<Option<Credential>, StoreError> {
    let out = store
        .client
        .get_item()
        .table_name(&store.credentials)
        .set_key(Some(credential_key(key_id)))
        .consistent_read(true)
        .send()
        .await
        .map_err(|e| match e.as_service_error() {
            // A key read more often than its partition serves (about 3,000 a second).
            Some(
                GetItemError::ProvisionedThroughputExceededException(_)
                | GetItemError::RequestLimitExceeded(_)
                | GetItemError::ThrottlingException(_),
            ) => StoreError::Throttled(DisplayErrorContext(&e).to_string()),
            _ => unavailable(e),
        })?;
    out.item().map(credential_from_item).transpose()
}

/// Credentials by key id, read consistently, in batches of 100.
async fn batch_get(store: &DynamoStore, key_ids: Vec<String>) -> Result<Vec<Credential>, StoreError> {
    let mut out = Vec::new();
    for chunk in key_ids.chunks(100) {
        let mut pending: Vec<Item> = chunk.iter().map(|k| HashMap::from([("keyId".to_owned(), s(k.as_str()))])).collect();
        for _ in 0..5 {
            if pending.is_empty() {
                break;
            }
            let request = KeysAndAttributes::builder()
                .set_keys(Some(std::mem::take(&mut pending)))
                .consistent_read(true)
                .build()
                .map_err(build_error)?;
            let result = store.client.batch_get_item().request_items(&store.credentials, request).send().await.map_err(unavailable)?;
            if let Some(items) = result.responses().and_then(|r| r.get(&store.credentials)) {
                for item in items {
                    out.push(credential_from_item(item)?);
                }
            }
            if let Some(rest) = result.unprocessed_keys().and_then(|u| u.get(&store.credentials)) {
                pending = rest.keys().to_vec();
            }
        }
        if !pending.is_empty() {
            return Err(StoreError::unavailable("credentials could not all be read"));
        }
    }
    Ok(out)
}

/// A principal's credentials, through its references, oldest first.
pub(super) async fn list(store: &DynamoStore, org: &OrgId, principal: &PrincipalId) -> Result<Vec<Credential>, StoreError> {
    let refs = query_prefix(store, org, &format!("C#{principal}#")).await?;
    let key_ids =
        refs.iter().map(|item| Reader::new("credential reference", item).str("keyId").map(str::to_owned)).collect::<Result<Vec<_>, _>>()?;
    let mut creds = batch_get(store, key_ids).await?;
    creds.retain(|c| c.org_id == *org && c.principal_id == *principal);
    creds.sort_by(|a, b| a.created_at.cmp(&b.created_at).then_with(|| a.key_id.cmp(&b.key_id)));
    Ok(creds)
}

pub(super) async fn revoke(
    store: &DynamoStore,
    org: &OrgId,
    principal: &PrincipalId,
    key_id: &KeyId,
    actor: &Actor,
    now: DateTime<Utc>,
    guard: &Guard,
) -> Result<Credential, StoreError> {
    let checks = GuardChecks::new(store, guard, None)?;
    // A transaction answers no item, and a read after it commits could fail when the
    // revocation already stands: the answer is built from this read instead (the write's
    // conditions keep it true, `lastUsedAt` aside).
    let before = match checks.is_empty() {
        true => None,
        false => Some(get(store, key_id).await?.ok_or(StoreError::NotFound("credential"))?),
    };
    // `revokedAt` is never earlier than a `lastUsedAt` committed before it (see
    // `Credential::revoked`): the write also requires that, and when an exchange recorded a
    // later use, it is retried at that time. Times are fixed-width RFC 3339 strings, so
    // they compare as strings.
    let mut at = now;
    for attempt in 0..4 {
        // A key in constant use could move `lastUsedAt` ahead of every retry: the last
        // attempt revokes regardless, as revocation must win.
        let condition = if attempt < 3 {
            "orgId = :org AND principalId = :principal AND #status = :active AND (attribute_not_exists(lastUsedAt) OR lastUsedAt <= :at)"
        } else {
            "orgId = :org AND principalId = :principal AND #status = :active"
        };
        let values = HashMap::from([
            (":revoked".to_owned(), s("Revoked")),
            (":active".to_owned(), s("Active")),
            (":at".to_owned(), time(at)),
            (":by".to_owned(), s(&actor.0)),
            (":org".to_owned(), s(org.as_str())),
            (":principal".to_owned(), s(principal.as_str())),
        ]);
        const UPDATE: &str = "SET #status = :revoked, revokedAt = :at, revokedBy = :by";
        // `None`: the condition failed, and this is the credential as it stands.
        let refused: Option<Item> = match checks.is_empty() {
            true => {
                let result = store
                    .client
                    .update_item()
                    .table_name(&store.credentials)
                    .set_key(Some(credential_key(key_id)))
                    .update_expression(UPDATE)
                    .condition_expression(condition)
                    .expression_attribute_names("#status", "status")
                    .set_expression_attribute_values(Some(values))
                    .return_values(ReturnValue::AllNew)
                    .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                    .send()
                    .await;
                match result {
                    Ok(out) => return credential_from_item(out.attributes().ok_or_else(|| corrupt("credential", "attributes"))?),
                    Err(e) => match e.as_service_error() {
                        Some(UpdateItemError::ConditionalCheckFailedException(c)) => Some(c.item().cloned().unwrap_or_default()),
                        _ => return Err(unavailable(e)),
                    },
                }
            }
            false => {
                let write = Update::builder()
                    .table_name(&store.credentials)
                    .set_key(Some(credential_key(key_id)))
                    .update_expression(UPDATE)
                    .condition_expression(condition)
                    .expression_attribute_names("#status", "status")
                    .set_expression_attribute_values(Some(values))
                    .build()
                    .map_err(build_error)?;
                match Transaction::new(store).with_update(Part::Credential, write).with_guard(&checks).commit().await {
                    Ok(()) => match &before {
                        Some(before) => {
                            let mut revoked = before.revoked(actor.clone(), at);
                            revoked.revoked_at = Some(at);
                            return Ok(revoked);
                        }
                        None => return Err(StoreError::NotFound("credential")),
                    },
                    Err(c) if c.failed(Part::Credential) => {
                        Some(get(store, key_id).await?.map(|c| credential_to_item(&c)).unwrap_or_default())
                    }
                    Err(c) if c.guard_broken() => return Err(c.guard_error()),
                    Err(c) if c.raced() => continue,
                    Err(c) => return Err(c.unavailable()),
                }
            }
        };
        let Some(item) = refused.filter(|i| !i.is_empty()) else {
            return Err(StoreError::NotFound("credential"));
        };
        let current = credential_from_item(&item)?;
        if current.org_id != *org || current.principal_id != *principal {
            return Err(StoreError::NotFound("credential"));
        }
        match current.last_used_at {
            Some(used) if current.status == CredentialStatus::Active && used > at => at = used,
            // Already revoked: idempotent, the first revocation stands.
            _ => return Ok(current),
        }
    }
    // Not reached: the last attempt has no condition a use can fail.
    Err(StoreError::Conflict(Conflict::Contended))
}

/// The exchange's last step: the use recorded only while the credential and its principal
/// are both still Active and the key is under its per-second limit. One conditional UpdateItem
/// of the credential, which carries its principal's status and its use window: no transaction
/// on the hot path, so concurrent exchanges of one key or of one principal never conflict with
/// each other, and a revocation or status change (which rewrites the credential's copy in its
/// own transaction) still beats any exchange in flight.
///
/// Which of two writes it is is guessed from the credential as the exchange read it: in the
/// same second, count one more while under the limit; otherwise, start a new window. The
/// condition holds the guess to what is stored, and a wrong guess (another exchange started
/// the window meanwhile) is corrected from the item the refusal returns, so a warm exchange
/// is one write, and a burst on one key at most two each. The day's count is guessed the same
/// way: one more on the same day; at the first use of a day, the earlier days shifted, on the
/// condition that the stored day and its count are still what was read (so none is lost).
pub(super) async fn record_use(
    store: &DynamoStore,
    credential: &Credential,
    at: DateTime<Utc>,
    source: Option<&str>,
    secret_check: Option<&str>,
    per_second: u32,
) -> Result<UseOutcome, StoreError> {
    let started = std::time::Instant::now();
    let mut window = credential.recent_uses;
    let mut daily = credential.daily_uses.clone();
    for attempt in 0.. {
        if UseWindow::is_full(window, at, per_second) {
            return Ok(UseOutcome::OverLimit);
        }
        let next = UseWindow::after_use(window, at);
        let mut sets = vec!["lastUsedAt = :at".to_owned(), "#second = :second".to_owned()];
        let mut removes = Vec::new();
        let mut conditions = vec![UNEXPIRED_ACTIVE.to_owned()];
        let mut touch = store
            .client
            .update_item()
            .table_name(&store.credentials)
            .set_key(Some(credential_key(&credential.key_id)))
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#principal_status", PRINCIPAL_STATUS)
            .expression_attribute_names("#second", USE_SECOND)
            .expression_attribute_names("#count", USE_COUNT)
            .expression_attribute_names("#day", USE_DAY)
            .expression_attribute_names("#today", USE_TODAY)
            .expression_attribute_names("#from", LAST_USED_FROM)
            .expression_attribute_values(":at", time(at))
            .expression_attribute_values(":active", s("Active"))
            .expression_attribute_values(":second", AttributeValue::N(next.second.to_string()))
            .expression_attribute_values(":one", n(1))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        if next.count > 1 {
            conditions.push("#second = :second AND #count < :limit".into());
            sets.push("#count = #count + :one".into());
            touch = touch.expression_attribute_values(":limit", n(per_second.into()));
        } else {
            conditions.push("(attribute_not_exists(#second) OR #second < :second)".into());
            sets.push("#count = :one".into());
        }
        let counted = DailyUses::after_use(daily.as_ref(), at);
        match &daily {
            Some(stored) if stored.day == counted.day => {
                conditions.push("#day = :day".into());
                sets.push("#today = #today + :one".into());
            }
            Some(stored) => {
                conditions.push("#day = :stored_day AND #today = :stored_today".into());
                touch = touch
                    .expression_attribute_values(":stored_day", AttributeValue::N(stored.day.to_string()))
                    .expression_attribute_values(":stored_today", n(stored.latest().into()));
                sets.extend(["#day = :day".into(), "#today = :one".into()]);
            }
            None => {
                conditions.push("attribute_not_exists(#day)".into());
                sets.extend(["#day = :day".into(), "#today = :one".into()]);
            }
        }
        touch = touch.expression_attribute_values(":day", AttributeValue::N(counted.day.to_string()));
        if daily.as_ref().is_none_or(|stored| stored.day != counted.day) {
            touch = touch.expression_attribute_names("#past", USE_PAST);
            match past_counts(&counted) {
                Some(past) => {
                    sets.push("#past = :past".into());
                    touch = touch.expression_attribute_values(":past", s(&past));
                }
                None => removes.push("#past"),
            }
        }
        match source {
            Some(from) => {
                sets.push("#from = :from".into());
                touch = touch.expression_attribute_values(":from", s(from));
            }
            None => removes.push("#from"),
        }
        if let Some(check) = secret_check {
            sets.push("secretCheck = if_not_exists(secretCheck, :check)".into());
            touch = touch.expression_attribute_values(":check", s(check));
        }
        let mut update = format!("SET {}", sets.join(", "));
        if !removes.is_empty() {
            update.push_str(&format!(" REMOVE {}", removes.join(", ")));
        }
        let touch = touch.update_expression(update).condition_expression(conditions.join(" AND "));
        let error = match touch.send().await {
            Ok(_) => return Ok(UseOutcome::Recorded),
            Err(e) => e,
        };
        match error.as_service_error() {
            Some(UpdateItemError::ConditionalCheckFailedException(refused)) => {
                let item = refused.item().cloned().unwrap_or_default();
                if item.is_empty() {
                    return Ok(UseOutcome::NoLongerActive);
                }
                if !item.contains_key(PRINCIPAL_STATUS) {
                    return record_legacy_use(store, credential, at, source, secret_check).await;
                }
                let stored = credential_from_item(&item)?;
                let principal_active = item.get(PRINCIPAL_STATUS).and_then(|v| v.as_s().ok()).is_some_and(|v| v == "Active");
                if stored.status_at(at) != CredentialStatus::Active || !principal_active {
                    return Ok(UseOutcome::NoLongerActive);
                }
                if attempt >= MAX_WINDOW_ATTEMPTS {
                    // Not reached by a stored window that is consistent; the limit answers.
                    return Ok(UseOutcome::OverLimit);
                }
                window = stored.recent_uses;
                daily = stored.daily_uses;
            }
            // A transaction on this credential (its revocation, its principal's status change)
            // is in flight: once it commits, the next attempt meets its outcome.
            Some(UpdateItemError::TransactionConflictException(_)) if started.elapsed() < USE_RETRY_BUDGET => jittered_pause(attempt).await,
            Some(
                UpdateItemError::ProvisionedThroughputExceededException(_)
                | UpdateItemError::RequestLimitExceeded(_)
                | UpdateItemError::ThrottlingException(_),
            ) => return Err(StoreError::Throttled(DisplayErrorContext(&error).to_string())),
            _ => return Err(unavailable(error)),
        }
    }
    Err(StoreError::unavailable("the credential stayed in concurrent transactions"))
}

/// What the exchange's write requires of the credential item: Active, its principal Active, and
/// not expired (a rotation with no grace period ends the old key at once, in-flight exchanges
/// included). Times are stored as RFC 3339 UTC seconds, which compare as strings.
const UNEXPIRED_ACTIVE: &str = "#status = :active AND #principal_status = :active AND (attribute_not_exists(expiresAt) OR expiresAt > :at)";

/// Corrections of a stale window guess: one is enough (a window, once started, only counts
/// up until the next second); the rest cover a second boundary passing meanwhile.
const MAX_WINDOW_ATTEMPTS: u32 = 4;

/// How long an exchange keeps retrying its write while transactions on its credential (its
/// revocation, its principal's status changes, each pending for tens of milliseconds) are in
/// flight: a slower token rather than a 503 its whole fleet would retry in step.
const USE_RETRY_BUDGET: std::time::Duration = std::time::Duration::from_secs(1);

/// A credential written before it carried its principal's status: the use is recorded in a
/// transaction that checks the principal item, and adds the status it checked, so that the
/// next use takes the one-write path (what `migrate` does for every such credential at once).
async fn record_legacy_use(
    store: &DynamoStore,
    credential: &Credential,
    at: DateTime<Utc>,
    source: Option<&str>,
    secret_check: Option<&str>,
) -> Result<UseOutcome, StoreError> {
    // Such an item has never been counted either: its first window and first day start here.
    let touch = Update::builder()
        .table_name(&store.credentials)
        .set_key(Some(credential_key(&credential.key_id)))
        .condition_expression("#status = :active AND (attribute_not_exists(expiresAt) OR expiresAt > :at)")
        .expression_attribute_names("#status", "status")
        .expression_attribute_names("#principal_status", PRINCIPAL_STATUS)
        .expression_attribute_names("#second", USE_SECOND)
        .expression_attribute_names("#count", USE_COUNT)
        .expression_attribute_values(":at", time(at))
        .expression_attribute_values(":active", s("Active"))
        .expression_attribute_values(":second", AttributeValue::N(at.timestamp().to_string()))
        .expression_attribute_names("#day", USE_DAY)
        .expression_attribute_names("#today", USE_TODAY)
        .expression_attribute_values(":day", AttributeValue::N(DailyUses::day_of(at).to_string()))
        .expression_attribute_values(":one", n(1));
    let mut counted =
        "SET lastUsedAt = :at, #principal_status = :active, #second = :second, #count = :one, #day = :day, #today = :one".to_owned();
    let mut touch = touch;
    if let Some(from) = source {
        counted.push_str(", lastUsedFrom = :from");
        touch = touch.expression_attribute_values(":from", s(from));
    }
    let touch = match secret_check {
        Some(check) => touch
            .update_expression(format!("{counted}, secretCheck = if_not_exists(secretCheck, :check)"))
            .expression_attribute_values(":check", s(check)),
        None => touch.update_expression(counted),
    }
    .build()
    .map_err(build_error)?;
    match update_while_principal_is(store, credential, touch, PrincipalStatus::Active).await? {
        Ok(()) => Ok(UseOutcome::Recorded),
        Err(c) if c.failed(Part::Credential) || c.failed(Part::Principal) => Ok(UseOutcome::NoLongerActive),
        Err(c) => Err(c.unavailable()),
    }
}

/// `update` of `credential`'s item, in a transaction that commits only while its principal's
/// status is `status` (the item as `Part::Credential`, the check as `Part::Principal`).
pub(super) async fn update_while_principal_is(
    store: &DynamoStore,
    credential: &Credential,
    update: Update,
    status: PrincipalStatus,
) -> Result<Result<(), Cancelled>, StoreError> {
    let check = ConditionCheck::builder()
        .table_name(&store.principals)
        .set_key(Some(org_key(&credential.org_id, principal_sk(&credential.principal_id))))
        .condition_expression("#status = :status")
        .expression_attribute_names("#status", "status")
        .expression_attribute_values(":status", s(status_name(status)))
        .build()
        .map_err(build_error)?;
    Ok(Transaction::new(store)
        .with_update(Part::Credential, update)
        .with(Part::Principal, TransactWriteItem::builder().condition_check(check).build())
        .commit()
        .await)
}

/// The Active credentials of a principal, which carry its status (see `PRINCIPAL_STATUS`):
/// a status change rewrites each in its transaction. At most `MAX_ACTIVE_CREDENTIALS` are
/// unexpired; expired ones can never be used again and are left as they are.
pub(super) async fn carrying_status(
    store: &DynamoStore,
    org: &OrgId,
    principal: &PrincipalId,
    now: DateTime<Utc>,
) -> Result<Vec<KeyId>, StoreError> {
    Ok(list(store, org, principal).await?.into_iter().filter(|c| c.is_live(now)).map(|c| c.key_id).collect())
}

/// The transaction item that rewrites one credential's copy of its principal's status.
pub(super) fn status_copy(store: &DynamoStore, key_id: &KeyId, status: PrincipalStatus) -> Result<Update, StoreError> {
    Update::builder()
        .table_name(&store.credentials)
        .set_key(Some(credential_key(key_id)))
        .update_expression("SET #principal_status = :status")
        .condition_expression("attribute_exists(keyId)")
        .expression_attribute_names("#principal_status", PRINCIPAL_STATUS)
        .expression_attribute_values(":status", s(status_name(status)))
        .build()
        .map_err(build_error)
}
