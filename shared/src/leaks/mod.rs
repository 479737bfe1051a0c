//! Leak response: anyone holding a key may destroy it. A report names up to
//! [`MAX_KEYS_PER_REPORT`] keys; each whose secret proves out is revoked by
//! `system:leak-report`, whatever authority rule or last-administrator guard would otherwise
//! stand in the way (a security action wins, issue #7). The reporter learns nothing about which
//! keys were real: the answer is the same for every report the route accepts.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use crate::api_key::ApiKey;
use crate::audit::AuditEntry;
use crate::authority::{self, Guard};
use crate::error::DomainError;
use crate::exchange::ExchangeError;
use crate::ids::{KeyId, Permission};
use crate::model::{self, Actor, Credential, CredentialStatus};
use crate::service::Iam;

mod github;

pub use self::github::{GithubAlertLabel, GithubKeyEndpoint, GithubKeySource, GithubScanningKeys, P256_SPKI_PREFIX};
use crate::store::StoreError;

pub const MAX_KEYS_PER_REPORT: usize = 100;
/// Reports one source may make in a minute, per process (the edge and API Gateway throttle
/// the route as a whole): enough for a scanner's batches, not for a search.
pub const REPORTS_PER_SOURCE_PER_MINUTE: u32 = 10;
/// Sources remembered at once; past it the window starts again for everyone.
const TRACKED_SOURCES: usize = 10_000;

/// Who revokes a reported key, and so why it was revoked.
pub const LEAK_REPORT_ACTOR: &str = "system:leak-report";

/// What a report answers: only what the reporter sent, never what was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeakReceipt {
    /// Distinct keys in the report.
    pub received: usize,
}

/// Per-source report counts in one-minute windows.
#[derive(Default)]
pub struct LeakReportLimiter(Mutex<HashMap<String, (i64, u32)>>);

impl LeakReportLimiter {
    /// Counts a report from `source` at `now`; `false` when the source is over its limit.
    pub fn admit(&self, source: Option<&str>, now: DateTime<Utc>) -> bool {
        let minute = now.timestamp() / 60;
        let mut windows = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if windows.len() >= TRACKED_SOURCES {
            windows.retain(|_, (m, _)| *m == minute);
            if windows.len() >= TRACKED_SOURCES {
                windows.clear();
            }
        }
        let window = windows.entry(source.unwrap_or("unknown").to_owned()).or_insert((minute, 0));
        if window.0 != minute {
            *window = (minute, 0);
        }
        window.1 += 1;
        window.1 <= REPORTS_PER_SOURCE_PER_MINUTE
    }
}

impl Iam {
    /// Revokes every reported key whose secret proves out. Keys repeated in the report count
    /// once; malformed, unknown, wrong and already revoked keys are passed over in silence.
    /// Fails only when the store does (503: a retry of the same report finishes the work, as
    /// each revocation is atomic and idempotent).
    pub async fn revoke_leaked(&self, reported: &[String], source: Option<&str>) -> Result<LeakReceipt, DomainError> {
        if reported.is_empty() || reported.len() > MAX_KEYS_PER_REPORT {
            return Err(DomainError::invalid(format!("a report names 1 to {MAX_KEYS_PER_REPORT} keys")));
        }
        if !self.leak_reports.admit(source, model::now()) {
            return Err(DomainError::TooManyRequests(format!(
                "at most {REPORTS_PER_SOURCE_PER_MINUTE} leak reports a minute from one address; retry later"
            )));
        }
        let distinct: BTreeSet<&str> = reported.iter().map(|k| k.trim()).collect();
        for raw in &distinct {
            let Ok(key) = ApiKey::parse(raw) else { continue };
            self.revoke_if_proved(&key).await.map_err(|e| DomainError::Unavailable(Box::new(e)))?;
        }
        tracing::info!(target: "audit", action = "credential.leak_report", actor = "anonymous", source = source.unwrap_or("unknown"), keys = distinct.len(), "audit");
        Ok(LeakReceipt { received: distinct.len() })
    }

    /// Whether `key`'s secret proved out; revokes it (and its self-made successors) if it was
    /// not revoked yet.
    async fn revoke_if_proved(&self, key: &ApiKey) -> Result<bool, StoreError> {
        let Some(credential) = self.store.get_credential(key.key_id()).await? else { return Ok(false) };
        match self.prove_secret(key, &credential).await {
            Ok(_) => {}
            Err(ExchangeError::InvalidClient(_)) => return Ok(false),
            Err(ExchangeError::Store(e)) => return Err(e),
            // The hasher failed: the report must be retried, not answered as if it were done.
            Err(other) => return Err(StoreError::unavailable(other.to_string())),
        }
        if credential.status == CredentialStatus::Revoked {
            return Ok(true);
        }
        // An administrator's key found in the wild is an incident, not a routine revocation.
        // Read before the revocation, so that a store failure leaves this key untouched.
        let administrator = match self.store.get_principal_with_roles(&credential.org_id, &credential.principal_id).await? {
            Some((principal, role_ids)) => {
                let roles = self.granting_roles(&principal, &role_ids).await?;
                authority::is_administrator(roles.iter().flat_map(|r| r.permissions.iter().map(Permission::as_str)))
            }
            None => false,
        };
        let actor = Actor(LEAK_REPORT_ACTOR.to_owned());
        let now = model::now();
        let guard = Guard::default().recording(leaked_entry(&credential, &actor, now, administrator, None));
        let revoked =
            self.store.revoke_credential(&credential.org_id, &credential.principal_id, &credential.key_id, &actor, now, &guard).await?;
        let successors = self.revoke_self_made_successors(&revoked, &actor).await?;
        let (org, principal, key_id) = (revoked.org_id.as_str(), revoked.principal_id.as_str(), revoked.key_id.as_str());
        let successors = successors.join(",");
        if administrator {
            tracing::error!(target: "audit", action = "credential.revoke_leaked", actor = LEAK_REPORT_ACTOR, org, principal, target_id = key_id, severity = "critical", administrator, successors, outcome = "success", "audit: an administrator's key was reported leaked and is revoked");
        } else {
            tracing::warn!(target: "audit", action = "credential.revoke_leaked", actor = LEAK_REPORT_ACTOR, org, principal, target_id = key_id, severity = "high", administrator, successors, outcome = "success", "audit");
        }
        Ok(true)
    }
}

impl Iam {
    /// Revokes the credentials a leaked one was rotated into by its own principal (a thief
    /// holding the key can rotate it if it was issued with self-rotation): the chain of
    /// `rotatedTo` links, for as long as each successor was created by the principal itself
    /// rather than by an administrator. Answers their key ids.
    async fn revoke_self_made_successors(&self, leaked: &Credential, actor: &Actor) -> Result<Vec<String>, StoreError> {
        let own = Actor::principal(&leaked.principal_id);
        let mut revoked = Vec::new();
        let mut previous = leaked.clone();
        // A chain is as long as the rotations made; this bounds a report's work all the same.
        for _ in 0..MAX_SUCCESSORS_FOLLOWED {
            let Some(next_id) = previous.rotated_to.clone() else { break };
            let Some(next) = self.store.get_credential(&next_id).await? else { break };
            if next.created_by != own || next.rotated_from.as_ref() != Some(&previous.key_id) || next.principal_id != leaked.principal_id {
                break;
            }
            let now = model::now();
            let guard = Guard::default().recording(leaked_entry(&next, actor, now, false, Some(&previous.key_id)));
            let next = self.store.revoke_credential(&next.org_id, &next.principal_id, &next.key_id, actor, now, &guard).await?;
            revoked.push(next.key_id.to_string());
            previous = next;
        }
        Ok(revoked)
    }
}

const MAX_SUCCESSORS_FOLLOWED: usize = 32;

/// The record of a revocation for a leak: the key reported, or a successor it made itself.
fn leaked_entry(c: &Credential, actor: &Actor, at: DateTime<Utc>, administrator: bool, successor_of: Option<&KeyId>) -> AuditEntry {
    AuditEntry::new(&c.org_id, actor, "credential.leaked", at).principal(&c.principal_id).key(&c.key_id).detail(serde_json::json!({
        "administrator": administrator,
        "successorOf": successor_of,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_source_gets_its_own_window_per_minute() {
        let limiter = LeakReportLimiter::default();
        let now = model::now();
        for _ in 0..REPORTS_PER_SOURCE_PER_MINUTE {
            assert!(limiter.admit(Some("198.51.100.1"), now));
        }
        assert!(!limiter.admit(Some("198.51.100.1"), now), "one over the limit");
        assert!(limiter.admit(Some("198.51.100.2"), now), "another source is not held back");
        assert!(limiter.admit(Some("198.51.100.1"), now + chrono::Duration::seconds(60)), "the next minute starts again");
    }
}
