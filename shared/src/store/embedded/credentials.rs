//! Credentials (by key id) and the index that lists a principal's: issue, read, list, revoke,
//! and the exchange's record of use.

use chrono::{DateTime, Utc};

use redb::{ReadableDatabase, ReadableTable};

use super::idempotency::claim_idempotency_in;
use super::principals::{get_principal_in, live_principal_in};
use super::records::{
    CREDENTIALS, CredentialRecord, PRINCIPAL_CREDENTIALS, PRINCIPALS, SEP, decode_credential, encode, key2, key3, prefix_range,
};
use super::{EmbeddedStore, check_guard_in};
use crate::authority::Guard;
use crate::error::{Conflict, Limit};
use crate::idempotency::IdempotencyRecord;
use crate::ids::{KeyId, OrgId, PrincipalId};
use crate::model::{Actor, Credential, CredentialStatus, DailyUses, MAX_ACTIVE_CREDENTIALS, PrincipalStatus, UseOutcome, UseWindow};
use crate::store::StoreError;

pub(super) async fn insert(
    store: &EmbeddedStore,
    credential: &Credential,
    now: DateTime<Utc>,
    idempotency: Option<&IdempotencyRecord>,
    guard: &Guard,
) -> Result<(), StoreError> {
    write_new(store, credential, None, now, idempotency, guard).await
}

pub(super) async fn rotate(
    store: &EmbeddedStore,
    predecessor: &Credential,
    successor: &Credential,
    now: DateTime<Utc>,
    idempotency: Option<&IdempotencyRecord>,
    guard: &Guard,
) -> Result<(), StoreError> {
    write_new(store, successor, Some(predecessor), now, idempotency, guard).await
}

/// Inserts `credential`, and when it replaces one (a rotation), that one's new expiry and link
/// in the same transaction, counting the limit after both.
async fn write_new(
    store: &EmbeddedStore,
    credential: &Credential,
    replacing: Option<&Credential>,
    now: DateTime<Utc>,
    idempotency: Option<&IdempotencyRecord>,
    guard: &Guard,
) -> Result<(), StoreError> {
    let c = credential.clone();
    let replacing = replacing.cloned();
    let idempotency = idempotency.cloned();
    let guard = guard.clone();
    store
        .blocking(move |db| {
            let txn = db.begin_write()?;
            check_guard_in(&txn, &guard)?;
            {
                let principals = txn.open_table(PRINCIPALS)?;
                live_principal_in(&principals, c.org_id.as_str(), c.principal_id.as_str())?;
                let mut creds = txn.open_table(CREDENTIALS)?;
                let mut index = txn.open_table(PRINCIPAL_CREDENTIALS)?;
                let replaced = match &replacing {
                    None => None,
                    Some(p) => {
                        let stored = match creds.get(p.key_id.as_str())? {
                            Some(v) => decode_credential(v.value())?,
                            None => return Err(StoreError::NotFound("credential")),
                        };
                        if stored.org_id != c.org_id || stored.principal_id != c.principal_id {
                            return Err(StoreError::NotFound("credential"));
                        }
                        stored.check_rotatable(now)?;
                        // Only what a rotation changes: its use record may have moved since it was read.
                        Some(Credential { expires_at: p.expires_at, rotated_to: p.rotated_to.clone(), ..stored })
                    }
                };
                let (start, end) = prefix_range(&key2(c.org_id.as_str(), c.principal_id.as_str()));
                let mut live = 0;
                for entry in index.range(start.as_str()..end.as_str())? {
                    let (k, _) = entry?;
                    let key_id = k.value().rsplit(SEP).next().unwrap_or_default().to_owned();
                    let is_live = match &replaced {
                        Some(r) if r.key_id.as_str() == key_id => r.is_live(now),
                        _ => match creds.get(key_id.as_str())? {
                            Some(v) => decode_credential(v.value())?.is_live(now),
                            None => false,
                        },
                    };
                    if is_live {
                        live += 1;
                    }
                }
                if live >= MAX_ACTIVE_CREDENTIALS {
                    return Err(StoreError::Limit(Limit::ActiveCredentials(MAX_ACTIVE_CREDENTIALS)));
                }
                if creds.get(c.key_id.as_str())?.is_some() {
                    return Err(StoreError::Conflict(Conflict::CredentialExists));
                }
                if let Some(r) = &replaced {
                    creds.insert(r.key_id.as_str(), encode(&CredentialRecord::from(r))?.as_slice())?;
                }
                creds.insert(c.key_id.as_str(), encode(&CredentialRecord::from(&c))?.as_slice())?;
                index.insert(key3(c.org_id.as_str(), c.principal_id.as_str(), c.key_id.as_str()).as_str(), [].as_slice())?;
            }
            super::audit::record_in(&txn, &guard)?;
            claim_idempotency_in(&txn, idempotency.as_ref())?;
            Ok(txn.commit()?)
        })
        .await
}

pub(super) async fn update(store: &EmbeddedStore, credential: &Credential, now: DateTime<Utc>, guard: &Guard) -> Result<(), StoreError> {
    let c = credential.clone();
    let guard = guard.clone();
    store
        .blocking(move |db| {
            let txn = db.begin_write()?;
            check_guard_in(&txn, &guard)?;
            {
                let mut creds = txn.open_table(CREDENTIALS)?;
                let stored = match creds.get(c.key_id.as_str())? {
                    Some(v) => decode_credential(v.value())?,
                    None => return Err(StoreError::NotFound("credential")),
                };
                if stored.org_id != c.org_id || stored.principal_id != c.principal_id {
                    return Err(StoreError::NotFound("credential"));
                }
                if !stored.is_live(now) {
                    return Err(StoreError::Conflict(Conflict::NotChangeable));
                }
                let next = Credential { name: c.name, expires_at: c.expires_at, restrictions: c.restrictions, ..stored };
                creds.insert(next.key_id.as_str(), encode(&CredentialRecord::from(&next))?.as_slice())?;
            }
            super::audit::record_in(&txn, &guard)?;
            Ok(txn.commit()?)
        })
        .await
}

pub(super) async fn get(store: &EmbeddedStore, key_id: &KeyId) -> Result<Option<Credential>, StoreError> {
    let key_id = key_id.clone();
    store
        .blocking(move |db| {
            let txn = db.begin_read()?;
            let t = txn.open_table(CREDENTIALS)?;
            match t.get(key_id.as_str())? {
                Some(v) => decode_credential(v.value()).map(Some),
                None => Ok(None),
            }
        })
        .await
}

pub(super) async fn list(store: &EmbeddedStore, org: &OrgId, principal: &PrincipalId) -> Result<Vec<Credential>, StoreError> {
    let prefix = key2(org.as_str(), principal.as_str());
    store
        .blocking(move |db| {
            let txn = db.begin_read()?;
            let index = txn.open_table(PRINCIPAL_CREDENTIALS)?;
            let creds = txn.open_table(CREDENTIALS)?;
            let (start, end) = prefix_range(&prefix);
            let mut out = Vec::new();
            for entry in index.range(start.as_str()..end.as_str())? {
                let (k, _) = entry?;
                let key_id = k.value().rsplit(SEP).next().unwrap_or_default().to_owned();
                if let Some(v) = creds.get(key_id.as_str())? {
                    out.push(decode_credential(v.value())?);
                }
            }
            out.sort_by(|a: &Credential, b: &Credential| a.created_at.cmp(&b.created_at).then_with(|| a.key_id.cmp(&b.key_id)));
            Ok(out)
        })
        .await
}

pub(super) async fn revoke(
    store: &EmbeddedStore,
    org: &OrgId,
    principal: &PrincipalId,
    key_id: &KeyId,
    actor: &Actor,
    now: DateTime<Utc>,
    guard: &Guard,
) -> Result<Credential, StoreError> {
    let (org, principal, key_id, actor) = (org.clone(), principal.clone(), key_id.clone(), actor.clone());
    let guard = guard.clone();
    store
        .blocking(move |db| {
            let txn = db.begin_write()?;
            let revoked = {
                let t = txn.open_table(CREDENTIALS)?;
                let current = match t.get(key_id.as_str())? {
                    Some(v) => decode_credential(v.value())?,
                    None => return Err(StoreError::NotFound("credential")),
                };
                if current.org_id != org || current.principal_id != principal {
                    return Err(StoreError::NotFound("credential"));
                }
                let revoked = current.revoked(actor, now);
                if revoked != current {
                    drop(t);
                    check_guard_in(&txn, &guard)?;
                    let mut t = txn.open_table(CREDENTIALS)?;
                    t.insert(key_id.as_str(), encode(&CredentialRecord::from(&revoked))?.as_slice())?;
                    drop(t);
                    super::audit::record_in(&txn, &guard)?;
                }
                revoked
            };
            txn.commit()?;
            Ok(revoked)
        })
        .await
}

pub(super) async fn record_use(
    store: &EmbeddedStore,
    credential: &Credential,
    at: DateTime<Utc>,
    source: Option<&str>,
    secret_check: Option<&str>,
    per_second: u32,
) -> Result<UseOutcome, StoreError> {
    let c = credential.clone();
    let source = source.map(str::to_owned);
    let secret_check = secret_check.map(str::to_owned);
    let durability = store.use_durability();
    store
        .blocking(move |db| {
            let mut txn = db.begin_write()?;
            txn.set_durability(durability)?;
            {
                let principals = txn.open_table(PRINCIPALS)?;
                let principal_active = get_principal_in(&principals, c.org_id.as_str(), c.principal_id.as_str())?
                    .is_some_and(|p| p.status == PrincipalStatus::Active);
                let mut t = txn.open_table(CREDENTIALS)?;
                let current = match t.get(c.key_id.as_str())? {
                    Some(v) => decode_credential(v.value())?,
                    None => return Ok(UseOutcome::NoLongerActive),
                };
                // Expired too: a rotation with no grace ends its old key at once, exchanges in flight included.
                if !principal_active || current.status_at(at) != CredentialStatus::Active {
                    return Ok(UseOutcome::NoLongerActive);
                }
                if UseWindow::is_full(current.recent_uses, at, per_second) {
                    return Ok(UseOutcome::OverLimit);
                }
                let mut next = current;
                next.last_used_at = Some(at);
                next.recent_uses = Some(UseWindow::after_use(next.recent_uses, at));
                next.daily_uses = Some(DailyUses::after_use(next.daily_uses.as_ref(), at));
                next.last_used_from = source;
                if next.secret_check.is_none() {
                    next.secret_check = secret_check;
                }
                t.insert(c.key_id.as_str(), encode(&CredentialRecord::from(&next))?.as_slice())?;
            }
            txn.commit()?;
            Ok(UseOutcome::Recorded)
        })
        .await
}
