//! The revocation feed: the revocations and principal status changes of an organisation, in
//! the order they committed, read from its audit trail. A downstream service that follows it
//! (the verifier crate's `Revocations`) refuses a revoked key's tokens seconds after the
//! revocation instead of at their `exp`.
//!
//! The feed's cursor is the sort key of the last change read. Changes are timed in commit
//! order ([`crate::audit::AuditRecord::chained`]), so a reader that continues from its cursor
//! never misses a change committed after its last read.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::audit::{AuditCursor, AuditOutcome, AuditQuery, AuditRecord};
use crate::error::DomainError;
use crate::ids::{KeyId, PrincipalId};
use crate::model::PrincipalStatus;
use crate::service::{Caller, Iam, PERM_TOKENS_INTROSPECT};

/// One answer reads at most this many pages of the trail (of [`PAGE`] changes each); a
/// reader behind by more continues from the cursor at once (`hasMore`).
const PAGES_PER_ANSWER: usize = 5;
const PAGE: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum RevocationKind {
    /// The key was revoked (by an administrator, or as leaked): its tokens are dead.
    CredentialRevoked,
    /// The principal's status changed: its tokens are dead unless `status` is `Active`.
    PrincipalStatusChanged,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Revocation {
    /// The audit record's id.
    pub id: String,
    pub at: DateTime<Utc>,
    pub kind: RevocationKind,
    pub principal_id: Option<PrincipalId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<KeyId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<PrincipalStatus>,
}

#[derive(Debug, Clone)]
pub struct RevocationPage {
    pub items: Vec<Revocation>,
    /// Where to continue: the last change read (the cursor given when none was).
    pub next: Option<AuditCursor>,
    /// Whether more changes wait past `next` (ask again at once).
    pub has_more: bool,
}

/// What a change of the trail revokes, if anything.
pub fn revocation_of(record: &AuditRecord) -> Option<Revocation> {
    let e = &record.entry;
    let (kind, status) = match e.action.as_str() {
        "credential.revoke" | "credential.leaked" => (RevocationKind::CredentialRevoked, None),
        "principal.update" => {
            let status = e.detail.as_ref()?.get("status")?.clone();
            (RevocationKind::PrincipalStatusChanged, Some(serde_json::from_value::<PrincipalStatus>(status).ok()?))
        }
        _ => return None,
    };
    Some(Revocation {
        id: record.id.clone(),
        at: e.at,
        kind,
        principal_id: e.principal_id.clone(),
        key_id: if status.is_none() { e.key_id.clone() } else { None },
        status,
    })
}

impl Iam {
    /// The organisation's revocations after `after` (or since `since` when no cursor is given;
    /// from the start of the trail when neither is). Needs `iam:tokens:introspect`, as
    /// introspection does: it is for the services that verify this organisation's tokens.
    pub async fn revocations(
        &self,
        caller: &Caller,
        after: Option<AuditCursor>,
        since: Option<DateTime<Utc>>,
    ) -> Result<RevocationPage, DomainError> {
        caller.require(PERM_TOKENS_INTROSPECT)?;
        let mut query = AuditQuery {
            outcome: Some(AuditOutcome::Success),
            oldest_first: true,
            from: if after.is_none() { since } else { None },
            after: after.clone(),
            ..AuditQuery::new(PAGE)
        };
        let mut page = RevocationPage { items: Vec::new(), next: after, has_more: false };
        for _ in 0..PAGES_PER_ANSWER {
            let read = self.store.audit_events(&caller.org_id, &query).await?;
            for record in &read.items {
                page.next = Some(AuditCursor(record.sort_key()));
                page.items.extend(revocation_of(record));
            }
            // A read may end past records its filter skipped (a long run of refusals) with none
            // to show: its cursor is still progress, or a reader would ask the same forever.
            if read.next.is_some() {
                page.next = read.next.clone();
            }
            page.has_more = read.next.is_some();
            match read.next {
                Some(next) => query.after = Some(next),
                None => break,
            }
        }
        Ok(page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditEntry;
    use crate::ids::OrgId;
    use crate::model::Actor;

    #[test]
    fn revocations_and_status_changes_are_read_from_the_trail_and_nothing_else() {
        let org = OrgId::parse("acme").unwrap();
        let p = PrincipalId::generate();
        let key = KeyId::generate();
        let entry = |action: &str| AuditEntry::new(&org, &Actor::system("t"), action, crate::model::now()).principal(&p).key(&key);
        let revoke = AuditRecord::chained(entry("credential.revoke"), None);
        let revoked = revocation_of(&revoke).unwrap();
        assert_eq!((revoked.kind, revoked.key_id), (RevocationKind::CredentialRevoked, Some(key.clone())));
        let suspended = AuditRecord::chained(entry("principal.update").detail(serde_json::json!({"status": "Suspended"})), None);
        assert_eq!(revocation_of(&suspended).unwrap().status, Some(PrincipalStatus::Suspended));
        let renamed = AuditRecord::chained(entry("principal.update").detail(serde_json::json!({"displayName": "x"})), None);
        assert_eq!(revocation_of(&renamed), None);
        assert_eq!(revocation_of(&AuditRecord::chained(entry("credential.issue"), None)), None);
    }
}

/// What [`replay_onto_restored_tables`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Changes of the trail examined (after `since`).
    pub examined: usize,
    /// Revocations, status changes and unassignments applied again.
    pub applied: usize,
    /// Those the restored tables already reflected.
    pub already: usize,
}

/// After a point-in-time restore of the principals and credentials tables, the restored data
/// can bring back keys revoked, principals suspended and roles removed after the restore point.
/// This applies again, from the audit trail (which is not restored with them), every
/// revocation, principal status change and role unassignment of `org` recorded after `since`
/// (the restore point), in commit order, each recorded in the trail as done by
/// `system:restore-replay`. Idempotent: what the tables already reflect is left as it is.
pub async fn replay_onto_restored_tables(
    store: &dyn crate::store::Store,
    org: &crate::ids::OrgId,
    since: DateTime<Utc>,
) -> Result<ReplayReport, crate::store::StoreError> {
    use crate::audit::AuditEntry;
    use crate::authority::Guard;
    use crate::model::{Actor, PrincipalChange};

    let actor = Actor::system("restore-replay");
    let mut report = ReplayReport::default();
    // Records are timed to the second: the whole second of the restore point is replayed (what
    // the tables already reflect is left alone).
    let from = chrono::SubsecRound::trunc_subsecs(since, 0);
    let mut query = AuditQuery { outcome: Some(AuditOutcome::Success), oldest_first: true, from: Some(from), ..AuditQuery::new(PAGE) };
    loop {
        let page = store.audit_events(org, &query).await?;
        for record in &page.items {
            report.examined += 1;
            let e = &record.entry;
            let Some(principal) = &e.principal_id else { continue };
            let replayed = |action: &str| {
                let entry = AuditEntry::new(org, &actor, action, crate::model::now()).principal(principal);
                let entry = match &e.key_id {
                    Some(k) => entry.key(k),
                    None => entry,
                };
                let entry = match &e.role_id {
                    Some(r) => entry.role(r),
                    None => entry,
                };
                Guard::default().recording(entry.detail(serde_json::json!({"replayOf": record.id})))
            };
            let applied = match (revocation_of(record), e.action.as_str()) {
                (Some(Revocation { kind: RevocationKind::CredentialRevoked, key_id: Some(key), .. }), _) => {
                    match store.get_credential(&key).await? {
                        Some(c) if c.status != crate::model::CredentialStatus::Revoked => {
                            store
                                .revoke_credential(org, principal, &key, &actor, crate::model::now(), &replayed("credential.revoke"))
                                .await?;
                            true
                        }
                        _ => false,
                    }
                }
                (Some(Revocation { kind: RevocationKind::PrincipalStatusChanged, status: Some(status), .. }), _) => {
                    match store.get_principal(org, principal).await? {
                        Some(current) if current.status != status => {
                            let change = PrincipalChange { status: Some(status), ..Default::default() };
                            match current.apply(&change, crate::model::now()) {
                                Ok(Some(next)) => {
                                    store.update_principal(&next, current.version, &replayed("principal.update")).await?;
                                    true
                                }
                                // A revoked principal stays revoked: nothing to bring back.
                                _ => false,
                            }
                        }
                        _ => false,
                    }
                }
                (None, "role_assignment.unassign") => match &e.role_id {
                    Some(role) => store.unassign_role(org, principal, role, &replayed("role_assignment.unassign")).await?,
                    None => false,
                },
                _ => continue,
            };
            if applied {
                report.applied += 1;
            } else {
                report.already += 1;
            }
        }
        match page.next {
            Some(next) => query.after = Some(next),
            None => return Ok(report),
        }
    }
}
