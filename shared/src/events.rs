//! Lifecycle events: what integrations are told, on Amazon EventBridge, about changes to an
//! organisation's principals, keys, trust policies and role assignments. Each is made from one
//! audit record (the outbox), so an event exists exactly when its change committed, carries the record's id
//! as its stable `eventId` (delivery is at least once: consumers de-duplicate on it), and never
//! carries a secret. Schemas and examples of every detail type are in `events/`.

use serde::Serialize;

use crate::audit::{AuditOutcome, AuditRecord};

/// The `source` of every event.
pub const SOURCE: &str = "infuse.iam";

/// Every detail type, with the audit action it comes from.
pub const DETAIL_TYPES: &[(&str, &str)] = &[
    ("Principal Created", "principal.create"),
    ("Principal Changed", "principal.update"),
    ("Principal Status Changed", "principal.update"),
    ("Credential Issued", "credential.issue"),
    ("Credential Rotated", "credential.rotate"),
    ("Credential Rotated", "credential.self_rotate"),
    ("Credential Revoked", "credential.revoke"),
    ("Credential Leaked", "credential.leaked"),
    ("Role Assigned", "role_assignment.assign"),
    ("Role Unassigned", "role_assignment.unassign"),
    ("Credential Expiring", "credential.expiring"),
    ("Credential Expired", "credential.expired"),
    ("Credential Unused", "credential.unused"),
    ("Principal Expiring", "principal.expiring"),
    ("Trust Policy Added", "trust_policy.add"),
    ("Trust Policy Removed", "trust_policy.remove"),
];

/// One event's `detail`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventDetail {
    /// The audit record's id: stable across redeliveries, unique across organisations.
    pub event_id: String,
    pub org_id: String,
    /// When the change happened (RFC 3339).
    pub time: String,
    /// A principal id, or `system:<what>`.
    pub actor: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor_key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role_id: Option<String>,
    /// What changed, as the audit record says it.
    pub changes: serde_json::Value,
    /// The record's place in the organisation's audit chain.
    pub sequence: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LifecycleEvent {
    pub detail_type: &'static str,
    pub detail: EventDetail,
}

/// The event a record announces, if it announces one: changes of principals, credentials and
/// role assignments, and the warnings of [`crate::warnings`] (not refusals, roles'
/// definitions, the policy or bootstraps).
pub fn lifecycle_event(record: &AuditRecord) -> Option<LifecycleEvent> {
    let e = &record.entry;
    if e.outcome != AuditOutcome::Success {
        return None;
    }
    let changes = e.detail.clone().unwrap_or_else(|| serde_json::json!({}));
    let detail_type = match e.action.as_str() {
        "principal.update" if changes.get("status").is_some() => "Principal Status Changed",
        action => DETAIL_TYPES.iter().find(|(_, a)| *a == action).map(|(t, _)| *t)?,
    };
    Some(LifecycleEvent {
        detail_type,
        detail: EventDetail {
            event_id: record.id.clone(),
            org_id: e.org_id.to_string(),
            time: e.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            actor: e.actor.0.clone(),
            actor_key_id: e.actor_key_id.as_ref().map(ToString::to_string),
            principal_id: e.principal_id.as_ref().map(ToString::to_string),
            key_id: e.key_id.as_ref().map(ToString::to_string),
            role_id: e.role_id.as_ref().map(ToString::to_string),
            changes,
            sequence: record.seq,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditEntry;
    use crate::ids::{KeyId, OrgId, PrincipalId};
    use crate::model::Actor;

    #[test]
    fn each_change_announces_its_detail_type_and_nothing_else_does() {
        let org = OrgId::parse("acme").unwrap();
        let p = PrincipalId::generate();
        let entry = |action: &str| AuditEntry::new(&org, &Actor::principal(&p), action, crate::model::now()).principal(&p);
        let event = |e: AuditEntry| lifecycle_event(&AuditRecord::chained(e, None)).map(|e| e.detail_type);
        assert_eq!(event(entry("principal.create")), Some("Principal Created"));
        assert_eq!(event(entry("principal.update").detail(serde_json::json!({"displayName": "x"}))), Some("Principal Changed"));
        assert_eq!(event(entry("principal.update").detail(serde_json::json!({"status": "Suspended"}))), Some("Principal Status Changed"));
        assert_eq!(event(entry("credential.leaked").key(&KeyId::generate())), Some("Credential Leaked"));
        assert_eq!(event(entry("credential.self_rotate")), Some("Credential Rotated"));
        for silent in ["role.create", "policy.update", "org.bootstrap", "credential.update"] {
            assert_eq!(event(entry(silent)), None, "{silent}");
        }
        assert_eq!(event(entry("credential.issue").refused("missing_permission")), None, "refusals are not events");
    }
}
