//! `Idempotency-Key` on the creating routes: a retry with the same key and the same request
//! answers what the first one did instead of creating a second object. Only successful creates
//! are remembered, written atomically with the object they created, so a retry after a failure
//! (or a crash mid-request) simply runs again.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::DomainError;
use crate::ids::{KeyId, OrgId, PrincipalId};
use crate::model::{Principal, Role};

/// How long a key is remembered; a reuse after that is a new request.
pub const IDEMPOTENCY_TTL: Duration = Duration::hours(24);
/// The header is a client-chosen token (typically a UUID); longer values are refused, not cut.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// A validated `Idempotency-Key` header value: 1–255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        if raw.is_empty() || raw.len() > MAX_IDEMPOTENCY_KEY_LEN || !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(DomainError::invalid(format!(
                "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters (a UUID is a good choice)"
            )));
        }
        Ok(Self(raw.to_owned()))
    }
}

/// What a remembered create produced. A credential's secret is never kept: a replay of an issue
/// can only name the key id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum IdempotentOutcome {
    Principal { principal: Principal },
    Credential { key_id: KeyId },
    Role { role: Role },
}

/// One remembered create: stored beside the object, in the same atomic write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub org_id: OrgId,
    /// Names the (caller, key) pair without storing the client's raw key.
    pub slot: String,
    /// Names the request (operation, target and body) the key was first used with.
    pub fingerprint: String,
    pub outcome: IdempotentOutcome,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl IdempotencyRecord {
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        now < self.expires_at
    }
}

/// A key in use by one request, before its outcome is known.
#[derive(Debug, Clone)]
pub struct IdempotencyClaim {
    pub org_id: OrgId,
    pub slot: String,
    pub fingerprint: String,
}

impl IdempotencyClaim {
    /// Keys are scoped to the calling principal: another caller's identical key is another slot.
    /// `request` must serialise every input that decides the outcome.
    pub fn new(org: &OrgId, caller: &PrincipalId, key: &IdempotencyKey, operation: &str, request: &impl Serialize) -> Self {
        let slot = hex(Sha256::new().chain_update(caller.as_str()).chain_update([0]).chain_update(&key.0).finalize().as_slice());
        let body = serde_json::to_vec(request).unwrap_or_default();
        let fingerprint = hex(Sha256::new().chain_update(operation).chain_update([0]).chain_update(&body).finalize().as_slice());
        Self { org_id: org.clone(), slot, fingerprint }
    }

    pub fn record(&self, outcome: IdempotentOutcome, now: DateTime<Utc>) -> IdempotencyRecord {
        IdempotencyRecord {
            org_id: self.org_id.clone(),
            slot: self.slot.clone(),
            fingerprint: self.fingerprint.clone(),
            outcome,
            created_at: now,
            expires_at: now + IDEMPOTENCY_TTL,
        }
    }

    /// The first outcome, if `record` (read back from the slot) was made by the same request.
    pub fn replay(&self, record: IdempotencyRecord) -> Result<IdempotentOutcome, DomainError> {
        if record.fingerprint != self.fingerprint {
            return Err(key_reused());
        }
        Ok(record.outcome)
    }
}

/// The answer (422) to a key reused for a different request, on this route or another.
pub fn key_reused() -> DomainError {
    DomainError::unprocessable("this Idempotency-Key was already used with a different request; use a new key for a new request")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(caller: &str, key: &str, body: serde_json::Value) -> IdempotencyClaim {
        let org = OrgId::parse("acme").unwrap();
        let caller = PrincipalId::parse(caller).unwrap();
        IdempotencyClaim::new(&org, &caller, &IdempotencyKey::parse(key).unwrap(), "principal.create", &body)
    }

    #[test]
    fn keys_are_visible_ascii_of_bounded_length() {
        assert!(IdempotencyKey::parse("3f1c2a9e-6b1d-4e0c-9a51-0f1e2d3c4b5a").is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(MAX_IDEMPOTENCY_KEY_LEN)).is_ok());
        for bad in ["", " ", "a b", "naïve", "tab\there", &"k".repeat(MAX_IDEMPOTENCY_KEY_LEN + 1)] {
            assert!(IdempotencyKey::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_slot_depends_on_caller_and_key_and_the_fingerprint_on_the_request() {
        let p1 = PrincipalId::generate().to_string();
        let p2 = PrincipalId::generate().to_string();
        let a = claim(&p1, "k1", serde_json::json!({"displayName": "a"}));
        assert_eq!(a.slot, claim(&p1, "k1", serde_json::json!({"displayName": "b"})).slot);
        assert_ne!(a.slot, claim(&p2, "k1", serde_json::json!({"displayName": "a"})).slot);
        assert_ne!(a.slot, claim(&p1, "k2", serde_json::json!({"displayName": "a"})).slot);
        assert_eq!(a.fingerprint, claim(&p2, "k9", serde_json::json!({"displayName": "a"})).fingerprint);
        assert_ne!(a.fingerprint, claim(&p1, "k1", serde_json::json!({"displayName": "b"})).fingerprint);
        assert!(!a.slot.contains("k1"), "the raw key is not stored");
    }

    #[test]
    fn a_replay_needs_the_same_request() {
        let p = PrincipalId::generate().to_string();
        let first = claim(&p, "k", serde_json::json!({"displayName": "a"}));
        let outcome = IdempotentOutcome::Credential { key_id: KeyId::generate() };
        let record = first.record(outcome.clone(), Utc::now());
        assert_eq!(first.replay(record.clone()).unwrap(), outcome);
        let other = claim(&p, "k", serde_json::json!({"displayName": "b"}));
        assert!(matches!(other.replay(record.clone()), Err(DomainError::Unprocessable(_))));
        assert!(record.is_live(record.created_at + Duration::hours(23)));
        assert!(!record.is_live(record.created_at + IDEMPOTENCY_TTL));
    }
}
