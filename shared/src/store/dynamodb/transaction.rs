//! TransactWriteItems with named items: each item is added under a [`Part`], and a cancellation
//! is read by part (`cancelled.failed(Part::Credential)`), never by position. Also the guard's
//! condition checks, the shared item builders and the mapping of SDK failures.

use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{ConditionCheck, Put, TransactWriteItem, Update};

use super::items::{ALLOWED_AUDIENCES, ALLOWED_PERMISSIONS, Item, assignment_sk, credential_key, n, org_key, principal_sk, s};
use super::{DynamoStore, audit};
use crate::audit::AuditEntry;
use crate::authority::{AdminWitness, Guard};
use crate::error::Conflict;
use crate::ids::{OrgId, PrincipalId};
use crate::roles::IAM_PERMISSIONS;
use crate::store::StoreError;

pub(super) fn unavailable<E, R>(e: SdkError<E, R>) -> StoreError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    StoreError::unavailable(DisplayErrorContext(&e).to_string())
}

pub(super) fn build_error(e: aws_sdk_dynamodb::error::BuildError) -> StoreError {
    StoreError::unavailable(format!("request could not be built: {e}"))
}

/// What an item of a transaction is there for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Part {
    /// The principal item: written, or its version (and credential sequence) conditioned.
    Principal,
    /// An organisation counter within its cap (principals, roles).
    Count,
    Idempotency,
    Credential,
    CredentialRef,
    /// The credential a rotation replaces.
    Rotated,
    Role,
    RoleName,
    Assignment,
    BootstrapMarker,
    /// The organisation's credential policy.
    Policy,
    /// A check that the guard's administrator witness is still usable.
    Witness,
    /// A check that a principal the decision read is still at the version read.
    DecidedOn,
    /// The audit record of the change.
    AuditRecord,
    /// The organisation's audit chain head, moved on to the record.
    AuditHead,
    /// A warning's once key, claimed with its record.
    Once,
    /// A webhook endpoint.
    Webhook,
    /// The organisation's trusted issuers.
    TrustedIssuers,
    /// Where a service account's id is found from the token endpoint, which knows no organisation.
    ServiceAccountIndex,
    /// Which user a person's identity at the organisation's identity provider is.
    UserIdentity,
}

pub(super) struct Transaction<'a> {
    store: &'a DynamoStore,
    items: Vec<(Part, TransactWriteItem)>,
    /// The audit record of the change, chained at commit.
    record: Option<AuditEntry>,
}

/// Commits that lost the organisation's chain head to another change re-read it and try
/// again this many times: every management write of one organisation passes through it.
const CHAIN_ATTEMPTS: u32 = 40;

impl<'a> Transaction<'a> {
    pub(super) fn new(store: &'a DynamoStore) -> Self {
        Self { store, items: Vec::new(), record: None }
    }

    /// The change's audit record, written with it (see [`Transaction::commit`]).
    pub(super) fn recording(mut self, entry: AuditEntry) -> Self {
        self.record = Some(entry);
        self
    }

    pub(super) fn with_items(mut self, items: Vec<(Part, TransactWriteItem)>) -> Self {
        self.items.extend(items);
        self
    }

    pub(super) fn with(mut self, part: Part, item: TransactWriteItem) -> Self {
        self.items.push((part, item));
        self
    }

    pub(super) fn with_put(self, part: Part, table: &str, item: Item, condition: Option<&str>) -> Result<Self, StoreError> {
        let put = Put::builder()
            .table_name(table)
            .set_item(Some(item))
            .set_condition_expression(condition.map(str::to_owned))
            .build()
            .map_err(build_error)?;
        Ok(self.with(part, TransactWriteItem::builder().put(put).build()))
    }

    pub(super) fn with_update(self, part: Part, update: Update) -> Self {
        self.with(part, TransactWriteItem::builder().update(update).build())
    }

    pub(super) fn with_guard(mut self, checks: &GuardChecks) -> Self {
        self.items.extend(checks.items.iter().cloned());
        if let Some(entry) = &checks.record {
            self.record = Some(entry.clone());
        }
        self
    }

    /// Commits the items, with the audit record when there is one: the organisation's chain
    /// head is read, and the record and the head's move are added to the same transaction. A
    /// commit cancelled only because the head moved (another change of the organisation
    /// committed in between) or by a concurrent transaction is sent again with the head
    /// re-read: every condition is evaluated again each time, so nothing decided on goes stale.
    pub(super) async fn commit(self) -> Result<(), Cancelled> {
        let Some(entry) = self.record.clone() else { return self.send().await };
        let mut attempt = 0;
        loop {
            let head = audit::read_head(self.store, &entry.org_id).await.map_err(Cancelled::before_sending)?;
            let chain = audit::chain_items(self.store, &entry, head.as_ref(), 1).map_err(Cancelled::before_sending)?;
            let mut items = self.items.clone();
            items.extend(chain);
            let attempt_result = Transaction { store: self.store, items, record: None }.send().await;
            match attempt_result {
                Err(c) if attempt + 1 < CHAIN_ATTEMPTS && c.only_chain_moved() => {
                    jittered_pause(attempt).await;
                    attempt += 1;
                }
                done => return done,
            }
        }
    }

    pub(super) async fn send(self) -> Result<(), Cancelled> {
        let parts = self.items.iter().map(|(part, _)| *part).collect();
        let request = self.items.into_iter().fold(self.store.client.transact_write_items(), |r, (_, item)| r.transact_items(item));
        match request.send().await {
            Ok(_) => Ok(()),
            Err(error) => Err(Cancelled { codes: cancellation_codes(&error), parts, failure: unavailable(error) }),
        }
    }
}

/// A transaction that did not commit: cancelled (with a reason per item) or failed outright.
pub(super) struct Cancelled {
    parts: Vec<Part>,
    /// Per item, in order; `None` when the request failed for another reason than a cancellation.
    codes: Option<Vec<String>>,
    failure: StoreError,
}

impl Cancelled {
    /// Whether an item of `part` failed its condition.
    pub(super) fn failed(&self, part: Part) -> bool {
        let Some(codes) = &self.codes else { return false };
        self.parts.iter().zip(codes).any(|(p, code)| *p == part && code == "ConditionalCheckFailed")
    }

    /// Whether any item failed its condition.
    pub(super) fn any_failed(&self) -> bool {
        self.codes.iter().flatten().any(|code| code == "ConditionalCheckFailed")
    }

    /// Another transaction on one of the items was in flight, or (after its own retries) the
    /// organisation's audit chain head kept moving: retrying may succeed, and a write that
    /// gives up answers `Contended` (409), not a store failure.
    pub(super) fn raced(&self) -> bool {
        self.codes.iter().flatten().any(|code| code == "TransactionConflict") || self.failed(Part::AuditHead)
    }

    /// Whether one of the guard's checks is what cancelled it.
    pub(super) fn guard_broken(&self) -> bool {
        self.failed(Part::Witness) || self.failed(Part::DecidedOn)
    }

    /// The guard's failure: the witness gone takes precedence (a retry may find another).
    pub(super) fn guard_error(&self) -> StoreError {
        if self.failed(Part::Witness) { StoreError::WitnessGone } else { StoreError::Conflict(Conflict::AuthorityChanged) }
    }

    pub(super) fn unavailable(self) -> StoreError {
        self.failure
    }

    /// A failure before the transaction was sent (reading the chain head): nothing was written.
    fn before_sending(failure: StoreError) -> Self {
        Self { parts: Vec::new(), codes: None, failure }
    }

    /// Whether the only reason it did not commit is the chain head (moved by another change) or
    /// a concurrent transaction: sending it again with the head re-read may succeed. The
    /// record's own key can be taken too, by a record of the same instant chained after the
    /// same head.
    fn only_chain_moved(&self) -> bool {
        let Some(codes) = &self.codes else { return false };
        let chain = [Part::AuditHead, Part::AuditRecord];
        let failed_elsewhere = self.parts.iter().zip(codes).any(|(part, code)| code == "ConditionalCheckFailed" && !chain.contains(part));
        !failed_elsewhere && (self.failed(Part::AuditHead) || self.raced())
    }
}

/// A pause before retrying a write that met a concurrent transaction: exponential from 2 ms,
/// capped at 64 ms, with full jitter, so that writers that collided do not collide again in step.
pub(super) async fn jittered_pause(attempt: u32) {
    let ceiling_ms = 2u64 << attempt.min(5);
    let mut byte = [0u8; 2];
    // Jitter needs no secrecy; without randomness the ceiling is still a pause.
    let random = getrandom::fill(&mut byte).map(|()| u64::from(u16::from_le_bytes(byte))).unwrap_or(u64::from(u16::MAX));
    let pause_us = ceiling_ms * 1000 * random / u64::from(u16::MAX);
    tokio::time::sleep(std::time::Duration::from_micros(pause_us)).await;
}

/// Why a transaction was cancelled, per item: `Some(code)` for each item in order.
fn cancellation_codes<R>(e: &SdkError<TransactWriteItemsError, R>) -> Option<Vec<String>> {
    match e.as_service_error()? {
        TransactWriteItemsError::TransactionCanceledException(c) => {
            Some(c.cancellation_reasons().iter().map(|r| r.code().unwrap_or("None").to_owned()).collect())
        }
        TransactWriteItemsError::TransactionInProgressException(_) => Some(vec!["TransactionConflict".into()]),
        _ => None,
    }
}

/// Adds one to an organisation's counter item (`ROLE_COUNT`, `PRINCIPAL_COUNT`), on condition
/// that it stays within `max` when one is given: a transaction item, so the count moves with
/// the object it counts.
pub(super) fn count_one(table: &str, org: &OrgId, (sk, kind): (&str, &str), max: Option<usize>) -> Result<Update, StoreError> {
    let update = Update::builder()
        .table_name(table)
        .set_key(Some(org_key(org, sk.to_owned())))
        .update_expression("SET #count = if_not_exists(#count, :zero) + :one, kind = :kind")
        .expression_attribute_names("#count", "count")
        .expression_attribute_values(":zero", n(0))
        .expression_attribute_values(":one", n(1))
        .expression_attribute_values(":kind", s(kind));
    let update = match max {
        Some(max) => {
            update.condition_expression("attribute_not_exists(#count) OR #count < :max").expression_attribute_values(":max", n(max as u64))
        }
        None => update,
    };
    update.build().map_err(build_error)
}

fn condition_check(check: ConditionCheck) -> TransactWriteItem {
    TransactWriteItem::builder().condition_check(check).build()
}

/// The condition checks that keep a guarded write's administrator witness usable until it
/// commits (see `AdminWitness`): its principal unchanged and Active, its credential Active,
/// each of its roles assigned. Its principal item is left out when the write itself updates
/// that item: the write's own condition then carries the version (an item may appear only once
/// in a transaction), and an unchanged version means an unchanged, Active principal.
fn witness_checks(store: &DynamoStore, w: &AdminWitness, principal_written: bool) -> Result<Vec<(Part, TransactWriteItem)>, StoreError> {
    if w.key_id.is_none() && w.sign_in_version.is_none() {
        // A witness must authenticate somehow: one that neither holds a key nor signs in proves nothing.
        return Err(StoreError::WitnessGone);
    }
    let mut checks = Vec::new();
    if !principal_written {
        let check = ConditionCheck::builder()
            .table_name(&store.principals)
            .set_key(Some(org_key(&w.org_id, principal_sk(&w.principal_id))))
            .condition_expression("#version = :version AND #status = :active")
            .expression_attribute_names("#version", "version")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":version", n(w.principal_version))
            .expression_attribute_values(":active", s("Active"))
            .build()
            .map_err(build_error)?;
        checks.push((Part::Witness, condition_check(check)));
    }
    // A person's witness has no credential: its mapped identity goes only with a change of its
    // principal (the version check) or of the organisation's identity provider (this one).
    if let Some(version) = w.sign_in_version {
        checks.push((Part::Witness, condition_check(super::federation::sign_in_unchanged(store, &w.org_id, version)?)));
    }
    if let Some(key_id) = &w.key_id {
        // Still fit to administer (see `Restrictions::permits_administration`): no audience list,
        // and any ceiling keeping every `iam:` permission.
        let ceiling_keeps_iam: Vec<String> = (0..IAM_PERMISSIONS.len()).map(|i| format!("contains(#ceiling, :iam{i})")).collect();
        let mut credential = ConditionCheck::builder()
            .table_name(&store.credentials)
            .set_key(Some(credential_key(key_id)))
            .condition_expression(format!(
                "#status = :active AND principalId = :principal AND attribute_not_exists(#audiences) \
                 AND (attribute_not_exists(#ceiling) OR ({}))",
                ceiling_keeps_iam.join(" AND ")
            ))
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#audiences", ALLOWED_AUDIENCES)
            .expression_attribute_names("#ceiling", ALLOWED_PERMISSIONS)
            .expression_attribute_values(":active", s("Active"))
            .expression_attribute_values(":principal", s(w.principal_id.as_str()));
        for (i, permission) in IAM_PERMISSIONS.iter().enumerate() {
            credential = credential.expression_attribute_values(format!(":iam{i}"), s(*permission));
        }
        let credential = credential.build().map_err(build_error)?;
        checks.push((Part::Witness, condition_check(credential)));
    }
    for role in &w.roles {
        let assigned = ConditionCheck::builder()
            .table_name(&store.principals)
            .set_key(Some(org_key(&w.org_id, assignment_sk(&w.principal_id, role))))
            .condition_expression("attribute_exists(sk)")
            .build()
            .map_err(build_error)?;
        checks.push((Part::Witness, condition_check(assigned)));
    }
    Ok(checks)
}

/// A guard's condition checks, appended to a transaction after the write's own items, and its
/// audit record.
pub(super) struct GuardChecks {
    items: Vec<(Part, TransactWriteItem)>,
    record: Option<AuditEntry>,
}

impl GuardChecks {
    /// `written`: the principal whose item the write itself updates, conditioned on
    /// `guard.version_of(written)` by the caller.
    pub(super) fn new(store: &DynamoStore, guard: &Guard, written: Option<&PrincipalId>) -> Result<Self, StoreError> {
        let mut items = match &guard.witness {
            Some(w) => witness_checks(store, w, written == Some(&w.principal_id))?,
            None => Vec::new(),
        };
        let mut skip: Vec<&PrincipalId> = written.into_iter().collect();
        skip.extend(guard.witness.iter().map(|w| &w.principal_id));
        for d in guard.principals_to_check(&skip)? {
            let check = ConditionCheck::builder()
                .table_name(&store.principals)
                .set_key(Some(org_key(&d.org_id, principal_sk(&d.principal_id))))
                .condition_expression("#version = :version")
                .expression_attribute_names("#version", "version")
                .expression_attribute_values(":version", n(d.version))
                .build()
                .map_err(build_error)?;
            items.push((Part::DecidedOn, condition_check(check)));
        }
        Ok(Self { items, record: guard.record.clone() })
    }

    /// Nothing to check and nothing to record: a plain conditional write will do.
    pub(super) fn is_empty(&self) -> bool {
        self.items.is_empty() && self.record.is_none()
    }
}
