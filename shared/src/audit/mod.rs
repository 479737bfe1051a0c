//! The audit trail: what happened to an organisation's principals, keys, roles and policy, as
//! records the store writes in the same atomic step as the change each describes (an outbox: a
//! record exists exactly when its change does).
//!
//! An organisation's records form a hash chain: each carries a sequence number and the digest
//! of the one before, and its own digest covers both and everything it says. A record edited,
//! removed or inserted out of turn breaks [`verify_chain`]. Refusals change nothing, so they are
//! recorded apart from any change, one record per actor, action, reason and minute, with a
//! count of repeats (the count is a tally outside the digest; the record itself is chained).
//! Successful exchanges are not recorded one by one: each credential's usage counts them.
//!
//! Records carry ids, names and rule names, never a secret: no key, hash or token.

pub mod query;
pub mod refusals;

use chrono::{DateTime, Timelike, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ids::{KeyId, OrgId, PrincipalId, RoleId};
use crate::model::{Actor, Credential, Principal};

pub use query::{AuditCursor, AuditPage, AuditQuery};

/// The digest the first record of an organisation names as the one before it.
pub const GENESIS_DIGEST: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditOutcome {
    Success,
    Refused,
}

impl AuditOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditOutcome::Success => "success",
            AuditOutcome::Refused => "refused",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "success" => Some(Self::Success),
            "refused" => Some(Self::Refused),
            _ => None,
        }
    }
}

/// What happened, as decided by the domain before the write that makes it so.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    pub org_id: OrgId,
    pub at: DateTime<Utc>,
    /// A principal id, or `system:<what>` (bootstrap, leak response).
    pub actor: Actor,
    /// The actor's credential it acted with, when it acted with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_key_id: Option<KeyId>,
    /// `principal.create`, `credential.revoke`, ... (the same names as the log's `action`).
    pub action: String,
    pub outcome: AuditOutcome,
    /// The principal acted on, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_id: Option<PrincipalId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<KeyId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_id: Option<RoleId>,
    /// Why it was refused: a stable rule name (see [`refusals::RefusalReason`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What changed, in the API's own field names (never a secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
}

impl AuditEntry {
    pub fn new(org_id: &OrgId, actor: &Actor, action: &str, at: DateTime<Utc>) -> Self {
        Self {
            org_id: org_id.clone(),
            at,
            actor: actor.clone(),
            actor_key_id: None,
            action: action.to_owned(),
            outcome: AuditOutcome::Success,
            principal_id: None,
            key_id: None,
            role_id: None,
            reason: None,
            detail: None,
        }
    }

    pub fn acting_with(mut self, key: &KeyId) -> Self {
        self.actor_key_id = Some(key.clone());
        self
    }

    pub fn principal(mut self, id: &PrincipalId) -> Self {
        self.principal_id = Some(id.clone());
        self
    }

    pub fn key(mut self, id: &KeyId) -> Self {
        self.key_id = Some(id.clone());
        self
    }

    pub fn role(mut self, id: &RoleId) -> Self {
        self.role_id = Some(id.clone());
        self
    }

    pub fn detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(detail);
        self
    }

    /// A refusal, timed at the start of the minute it is counted in (its record stands for
    /// every refusal of its bucket in that minute).
    pub fn refused(mut self, reason: &str) -> Self {
        self.outcome = AuditOutcome::Refused;
        self.reason = Some(reason.to_owned());
        self.at = self.minute();
        self
    }

    /// A principal's creation, as its own record says it happened.
    pub fn principal_created(p: &Principal) -> Self {
        Self::new(&p.org_id, &p.created_by, "principal.create", p.created_at).principal(&p.id).detail(serde_json::json!({
            "displayName": p.display_name,
            "status": p.status,
            "expiresAt": p.expires_at,
        }))
    }

    /// An organisation's first administrator (or, forced, another): its principal, role and key.
    pub fn bootstrapped(p: &Principal, assignment: &crate::model::RoleAssignment, c: &Credential) -> Self {
        Self::new(&p.org_id, &p.created_by, "org.bootstrap", p.created_at)
            .principal(&p.id)
            .key(&c.key_id)
            .role(&assignment.role_id)
            .detail(serde_json::json!({"displayName": p.display_name, "credential": Self::credential_detail(c)}))
    }

    /// What a credential says of itself that is safe to record: never its hash.
    pub fn credential_detail(c: &Credential) -> serde_json::Value {
        serde_json::json!({
            "name": c.name,
            "expiresAt": c.expires_at,
            "status": c.status,
            "restrictions": c.restrictions,
            "selfRotation": c.self_rotation,
        })
    }

    /// The minute a refusal is counted in.
    pub fn minute(&self) -> DateTime<Utc> {
        self.at.with_second(0).and_then(|t| t.with_nanosecond(0)).unwrap_or(self.at)
    }
}

/// Where an organisation's chain ends: the last record's sequence number and digest, and the
/// time of the latest change in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChainHead {
    pub seq: u64,
    pub digest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<DateTime<Utc>>,
}

/// A record of the trail: an entry in its place in the organisation's chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    /// Stable and unique (derived from the digest): what events and webhooks carry for
    /// de-duplication.
    pub id: String,
    pub seq: u64,
    #[serde(flatten)]
    pub entry: AuditEntry,
    /// For a refusal, how many times it happened in its minute (1 for a change). Outside the
    /// digest: a tally that grows after the record is chained.
    pub repeats: u64,
    pub previous_digest: String,
    pub digest: String,
}

/// What the digest covers: every field but the tally, in a fixed order.
#[derive(Serialize)]
struct Digested<'a> {
    seq: u64,
    previous: &'a str,
    entry: &'a AuditEntry,
}

fn digest_of(seq: u64, previous: &str, entry: &AuditEntry) -> String {
    // serde_json writes struct fields in declaration order and maps (`detail`) sorted by key
    // (no `preserve_order`), so the same record always hashes the same.
    let bytes = serde_json::to_vec(&Digested { seq, previous, entry }).unwrap_or_default();
    Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect()
}

impl AuditRecord {
    /// `entry` as the record after `head` (the organisation's first when `None`). A change is
    /// timed no earlier than the change before it (a writer whose clock is behind by a few
    /// milliseconds is moved up to it), so the order of changes by time is their commit order:
    /// a reader that has seen every change up to a time has seen every change committed before
    /// it, which is what the revocation feed's cursor relies on.
    pub fn chained(mut entry: AuditEntry, head: Option<&ChainHead>) -> Self {
        if entry.outcome == AuditOutcome::Success
            && let Some(latest) = head.and_then(|h| h.at)
            && latest > entry.at
        {
            entry.at = latest;
        }
        let seq = head.map_or(1, |h| h.seq + 1);
        let previous_digest = head.map_or(GENESIS_DIGEST.to_owned(), |h| h.digest.clone());
        let digest = digest_of(seq, &previous_digest, &entry);
        Self { id: format!("ae_{}", &digest[..32]), seq, entry, repeats: 1, previous_digest, digest }
    }

    /// The head of the chain once this record follows `previous` in it.
    pub fn as_head(&self, previous: Option<&ChainHead>) -> ChainHead {
        let at = match self.entry.outcome {
            AuditOutcome::Success => Some(self.entry.at),
            // A refusal is timed at the start of its minute: it moves no change's time.
            AuditOutcome::Refused => previous.and_then(|h| h.at),
        };
        ChainHead { seq: self.seq, digest: self.digest.clone(), at }
    }

    /// Whether the record still says what it said when it was chained.
    pub fn is_intact(&self) -> bool {
        digest_of(self.seq, &self.previous_digest, &self.entry) == self.digest
            && self.digest.get(..32).is_some_and(|d| self.id == format!("ae_{d}"))
    }

    /// The store's sort key: time first, so a time range is a key range; the sequence number
    /// keeps records of one instant apart. A refusal's key is its bucket's, so its repeats land
    /// on the one record.
    pub fn sort_key(&self) -> String {
        if self.entry.outcome == AuditOutcome::Refused {
            refusals::bucket_key(&self.entry)
        } else {
            format!("{}#{:012}", time_key(self.entry.at), self.seq)
        }
    }
}

/// A time as the leading part of a sort key: microseconds since the epoch, fixed width.
pub fn time_key(at: DateTime<Utc>) -> String {
    format!("{:017}", at.timestamp_micros().max(0))
}

/// Why a chain does not verify: the first record (in sequence order) that breaks it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainBreak {
    #[error("record {seq} does not match its digest: it was edited")]
    Edited { seq: u64 },
    #[error("record {seq} is missing: the chain jumps from {before} to {after}")]
    Missing { seq: u64, before: u64, after: u64 },
    #[error("record {seq} does not name the digest of record {before}: a record was replaced or reordered")]
    Unlinked { seq: u64, before: u64 },
    #[error("the chain ends at record {last} but its head says {head}: later records were removed")]
    Truncated { last: u64, head: u64 },
}

/// Checks an organisation's records (any order) against each other and against the head.
/// Retention removes records timed before `expired_before` (DynamoDB's TTL, in no particular
/// order): a gap is accepted only before a record that old itself, since every record before
/// it in the chain is at most a minute younger (a refusal is timed at its minute's start).
/// Every other gap is a removal. `None`: nothing has expired, every gap is one.
pub fn verify_chain(records: &[AuditRecord], head: Option<&ChainHead>, expired_before: Option<DateTime<Utc>>) -> Result<(), ChainBreak> {
    let mut sorted: Vec<&AuditRecord> = records.iter().collect();
    sorted.sort_by_key(|r| r.seq);
    let retired = |r: &AuditRecord| expired_before.is_some_and(|t| r.entry.at + chrono::Duration::minutes(1) <= t);
    for pair in sorted.windows(2) {
        let (before, record) = (pair[0], pair[1]);
        if record.seq != before.seq + 1 && !retired(record) {
            return Err(ChainBreak::Missing { seq: before.seq + 1, before: before.seq, after: record.seq });
        }
    }
    for (i, record) in sorted.iter().enumerate() {
        if !record.is_intact() {
            return Err(ChainBreak::Edited { seq: record.seq });
        }
        let expected_previous = match i {
            0 if record.seq == 1 => GENESIS_DIGEST,
            0 => continue,
            // After a gap retention made: its predecessor is gone.
            _ if sorted[i - 1].seq + 1 != record.seq => continue,
            _ => sorted[i - 1].digest.as_str(),
        };
        if record.previous_digest != expected_previous {
            return Err(ChainBreak::Unlinked { seq: record.seq, before: record.seq - 1 });
        }
    }
    if let Some(head) = head {
        let last = sorted.last().map_or(0, |r| r.seq);
        if last != head.seq || sorted.last().is_some_and(|r| r.digest != head.digest) {
            return Err(ChainBreak::Truncated { last, head: head.seq });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: usize) -> (Vec<AuditRecord>, ChainHead) {
        let org = OrgId::parse("acme").unwrap();
        let mut head = None;
        let mut out = Vec::new();
        for i in 0..n {
            let entry = AuditEntry::new(&org, &Actor::system("t"), "principal.update", crate::model::now())
                .detail(serde_json::json!({"displayName": format!("p{i}")}));
            let record = AuditRecord::chained(entry, head.as_ref());
            head = Some(record.as_head(head.as_ref()));
            out.push(record);
        }
        (out, head.unwrap())
    }

    #[test]
    fn an_untouched_chain_verifies_in_any_order() {
        let (mut records, head) = chain(5);
        records.reverse();
        assert_eq!(verify_chain(&records, Some(&head), None), Ok(()));
    }

    #[test]
    fn an_edit_a_removal_a_replacement_and_a_truncation_are_each_detected() {
        let (records, head) = chain(5);
        let mut edited = records.clone();
        edited[2].entry.actor = Actor::system("someone else");
        assert_eq!(verify_chain(&edited, Some(&head), None), Err(ChainBreak::Edited { seq: 3 }));

        let mut removed = records.clone();
        removed.remove(2);
        assert_eq!(verify_chain(&removed, Some(&head), None), Err(ChainBreak::Missing { seq: 3, before: 2, after: 4 }));

        // A record rewritten with a fresh digest of its own still does not link.
        let mut replaced = records.clone();
        let mut forged = replaced[2].entry.clone();
        forged.action = "principal.create".into();
        replaced[2] = AuditRecord::chained(forged, Some(&ChainHead { seq: 2, digest: "f".repeat(64), at: None }));
        assert_eq!(verify_chain(&replaced, Some(&head), None), Err(ChainBreak::Unlinked { seq: 3, before: 2 }));

        let truncated = records[..4].to_vec();
        assert_eq!(verify_chain(&truncated, Some(&head), None), Err(ChainBreak::Truncated { last: 4, head: 5 }));
    }

    #[test]
    fn gaps_are_accepted_only_where_retention_has_expired_records() {
        let (records, head) = chain(5);
        let mut expired = records.clone();
        expired.remove(1);
        assert!(verify_chain(&expired, Some(&head), None).is_err(), "without retention every gap is a removal");
        let long_after = crate::model::now() + chrono::Duration::days(1);
        assert_eq!(verify_chain(&expired, Some(&head), Some(long_after)), Ok(()), "TTL deletes in no order");
        let just_now = crate::model::now() - chrono::Duration::days(1);
        assert!(verify_chain(&expired, Some(&head), Some(just_now)).is_err(), "a young record's gap is a removal");
        let mut edited = expired;
        edited[2].entry.action = "credential.revoke".into();
        assert!(verify_chain(&edited, Some(&head), Some(long_after)).is_err(), "an edit is detected past a gap too");
    }

    #[test]
    fn a_change_is_never_timed_before_the_change_it_follows() {
        let org = OrgId::parse("acme").unwrap();
        let now = crate::model::now();
        let first = AuditRecord::chained(AuditEntry::new(&org, &Actor::system("t"), "a", now), None);
        let head = first.as_head(None);
        let behind = AuditEntry::new(&org, &Actor::system("t"), "b", now - chrono::Duration::milliseconds(5));
        let second = AuditRecord::chained(behind, Some(&head));
        assert_eq!(second.entry.at, now, "a clock behind is moved up to the change before");
        let refusal = AuditEntry::new(&org, &Actor::system("t"), "c", now).refused("missing_permission");
        let third = AuditRecord::chained(refusal, Some(&second.as_head(Some(&head))));
        assert_eq!(third.as_head(Some(&second.as_head(Some(&head)))).at, Some(now), "a refusal moves no change's time");
        assert!(third.entry.at <= now);
    }

    #[test]
    fn the_tally_of_repeats_is_outside_the_digest_and_the_oldest_may_be_retired() {
        let (mut records, head) = chain(4);
        records[1].repeats = 40;
        assert_eq!(verify_chain(&records, Some(&head), None), Ok(()));
        assert_eq!(verify_chain(&records[1..], Some(&head), None), Ok(()), "retention removes the oldest records");
    }
}
