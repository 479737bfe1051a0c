//! Webhooks: each organisation's own endpoints, told of its lifecycle events and warnings
//! (`crate::events`) by signed HTTP POSTs, as the Standard Webhooks specification says
//! (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256>`), so the
//! owners of an integration are the ones warned before its key stops working.
//!
//! An endpoint's signing secret is never stored: it is derived from the service's webhook key
//! (Secrets Manager in AWS, a 0600 file beside `iam-local`'s data), the endpoint and its secret
//! generation, and shown once, at creation and at each rotation. A rotation keeps the previous
//! secret signing beside the new one for a day, so a receiver can move without losing any.

pub mod delivery;
pub mod manage;
pub mod signing;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::error::DomainError;
use crate::events::DETAIL_TYPES;
use crate::ids::{OrgId, WebhookId};
use crate::model::Actor;
use crate::outbound::check_webhook_url;

pub use signing::{WebhookKey, WebhookSecret};

/// Endpoints an organisation may have.
pub const MAX_WEBHOOKS_PER_ORG: usize = 10;
/// How long a rotated-out secret keeps signing beside its successor.
pub const ROTATION_OVERLAP: Duration = Duration::hours(24);
const DESCRIPTION_MAX: usize = 200;
const URL_MAX: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    pub id: WebhookId,
    pub org_id: OrgId,
    pub url: String,
    pub description: String,
    /// The event types it is sent (`credential.expiring`, ...); empty: every type.
    pub event_types: Vec<String>,
    pub enabled: bool,
    /// Which secret signs: bumped by each rotation (the secret is derived from it).
    pub secret_generation: u32,
    /// Until when the previous generation signs too (a rotation's overlap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub created_by: Actor,
    pub updated_at: DateTime<Utc>,
    pub version: u64,
}

/// What a create or an update asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookChange {
    pub url: Option<String>,
    pub description: Option<String>,
    pub event_types: Option<Vec<String>>,
    pub enabled: Option<bool>,
}

/// A webhook's name for a detail type: `Credential Expiring` is `credential.expiring`,
/// `Principal Status Changed` is `principal.status_changed`, `Trust Policy Added` is
/// `trust_policy.added`.
pub fn event_type(detail_type: &str) -> String {
    let lower = detail_type.to_ascii_lowercase();
    // The one subject of two words.
    if let Some(rest) = lower.strip_prefix("trust policy ") {
        return format!("trust_policy.{}", rest.replace(' ', "_"));
    }
    match lower.split_once(' ') {
        Some((subject, rest)) => format!("{subject}.{}", rest.replace(' ', "_")),
        None => lower,
    }
}

/// Every event type a webhook can be sent, sorted.
pub fn event_types() -> Vec<String> {
    let mut types: Vec<String> = DETAIL_TYPES.iter().map(|(t, _)| event_type(t)).collect();
    types.sort();
    types.dedup();
    types
}

fn validate_url(url: &str, allow_loopback: bool) -> Result<String, DomainError> {
    let url = url.trim();
    if url.is_empty() || url.len() > URL_MAX {
        return Err(DomainError::invalid(format!("url must be 1 to {URL_MAX} characters")));
    }
    check_webhook_url(url, allow_loopback).map_err(|e| DomainError::invalid(format!("url: {e}")))?;
    Ok(url.to_owned())
}

fn validate_event_types(types: &[String]) -> Result<Vec<String>, DomainError> {
    let known = event_types();
    let mut out = Vec::new();
    for t in types {
        if !known.contains(t) {
            return Err(DomainError::invalid(format!("eventTypes: '{}' is not an event type (one of {})", truncate(t), known.join(", "))));
        }
        if !out.contains(t) {
            out.push(t.clone());
        }
    }
    out.sort();
    Ok(out)
}

fn truncate(s: &str) -> String {
    s.chars().take(60).collect()
}

fn validate_description(d: &str) -> Result<String, DomainError> {
    if d.chars().count() > DESCRIPTION_MAX || d.chars().any(char::is_control) {
        return Err(DomainError::invalid(format!("description must be at most {DESCRIPTION_MAX} characters, without control characters")));
    }
    Ok(d.trim().to_owned())
}

impl Webhook {
    pub fn new(
        org_id: &OrgId,
        change: &WebhookChange,
        allow_loopback: bool,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<Self, DomainError> {
        let url = validate_url(change.url.as_deref().ok_or_else(|| DomainError::invalid("url is required"))?, allow_loopback)?;
        Ok(Self {
            id: WebhookId::generate(),
            org_id: org_id.clone(),
            url,
            description: validate_description(change.description.as_deref().unwrap_or_default())?,
            event_types: validate_event_types(change.event_types.as_deref().unwrap_or_default())?,
            enabled: change.enabled.unwrap_or(true),
            secret_generation: 1,
            previous_secret_until: None,
            created_at: now,
            created_by: actor,
            updated_at: now,
            version: 1,
        })
    }

    /// The endpoint as `change` leaves it, or `None` when it changes nothing.
    pub fn apply(&self, change: &WebhookChange, allow_loopback: bool, now: DateTime<Utc>) -> Result<Option<Self>, DomainError> {
        let mut next = self.clone();
        if let Some(url) = &change.url {
            next.url = validate_url(url, allow_loopback)?;
        }
        if let Some(d) = &change.description {
            next.description = validate_description(d)?;
        }
        if let Some(types) = &change.event_types {
            next.event_types = validate_event_types(types)?;
        }
        if let Some(enabled) = change.enabled {
            next.enabled = enabled;
        }
        if next == *self {
            return Ok(None);
        }
        next.updated_at = now;
        next.version += 1;
        Ok(Some(next))
    }

    /// The endpoint with a new secret; the old one signs beside it for [`ROTATION_OVERLAP`].
    pub fn rotated(&self, now: DateTime<Utc>) -> Self {
        Self {
            secret_generation: self.secret_generation + 1,
            previous_secret_until: Some(now + ROTATION_OVERLAP),
            updated_at: now,
            version: self.version + 1,
            ..self.clone()
        }
    }

    /// Whether it is sent events of `detail_type`.
    pub fn wants(&self, detail_type: &str) -> bool {
        self.wants_event_type(&event_type(detail_type))
    }

    /// [`Webhook::wants`], by the webhook form of the type (`credential.expiring`).
    pub fn wants_event_type(&self, event_type: &str) -> bool {
        self.enabled && (self.event_types.is_empty() || self.event_types.iter().any(|t| t == event_type))
    }

    /// The secret generations that sign at `now`: the current, and the previous during an overlap.
    pub fn signing_generations(&self, now: DateTime<Utc>) -> Vec<u32> {
        let mut generations = vec![self.secret_generation];
        if self.previous_secret_until.is_some_and(|until| now < until) && self.secret_generation > 1 {
            generations.push(self.secret_generation - 1);
        }
        generations
    }

    /// What an audit record says of it (never a secret: there is none to say).
    pub fn audit_detail(&self) -> serde_json::Value {
        serde_json::json!({"url": self.url, "description": self.description, "eventTypes": self.event_types, "enabled": self.enabled,
            "secretGeneration": self.secret_generation})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(url: &str) -> WebhookChange {
        WebhookChange { url: Some(url.into()), ..Default::default() }
    }

    #[test]
    fn event_types_are_the_detail_types_in_webhook_form() {
        assert_eq!(event_type("Credential Expiring"), "credential.expiring");
        assert_eq!(event_type("Principal Status Changed"), "principal.status_changed");
        assert_eq!(event_type("Trust Policy Added"), "trust_policy.added");
        assert!(event_types().contains(&"role.unassigned".to_owned()));
    }

    #[test]
    fn urls_obey_the_outbound_rules() {
        let org = OrgId::parse("acme").unwrap();
        let make = |url: &str, loopback| Webhook::new(&org, &change(url), loopback, Actor::system("t"), crate::model::now());
        assert!(make("https://hooks.example.com/iam", false).is_ok());
        for refused in [
            "http://hooks.example.com/iam",
            "https://10.0.0.1/x",
            "https://169.254.169.254/latest",
            "https://[::ffff:169.254.169.254]/",
            "https://127.0.0.1/x",
            "http://127.0.0.1:9000/x",
            "ftp://example.com",
            "not a url",
            "https://user:pw@hooks.example.com/",
        ] {
            assert!(make(refused, false).is_err(), "{refused}");
        }
        assert!(make("http://127.0.0.1:9000/x", true).is_ok(), "the operator's switch for local testing");
    }

    #[test]
    fn subscriptions_rotation_and_changes() {
        let org = OrgId::parse("acme").unwrap();
        let now = crate::model::now();
        let mut c = change("https://hooks.example.com/");
        c.event_types = Some(vec!["credential.expiring".into(), "credential.expiring".into()]);
        let w = Webhook::new(&org, &c, false, Actor::system("t"), now).unwrap();
        assert_eq!(w.event_types, ["credential.expiring"]);
        assert!(w.wants("Credential Expiring") && !w.wants("Credential Issued"));
        c.event_types = Some(vec!["credential.exploded".into()]);
        assert!(Webhook::new(&org, &c, false, Actor::system("t"), now).is_err());
        assert_eq!(w.apply(&WebhookChange::default(), false, now).unwrap(), None);
        let off = w.apply(&WebhookChange { enabled: Some(false), ..Default::default() }, false, now).unwrap().unwrap();
        assert!(!off.wants("Credential Expiring") && off.version == 2);
        let rotated = w.rotated(now);
        assert_eq!(rotated.signing_generations(now), [2, 1]);
        assert_eq!(rotated.signing_generations(now + ROTATION_OVERLAP), [2]);
    }
}
