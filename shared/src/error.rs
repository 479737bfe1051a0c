//! The domain's one error type. The HTTP layer maps it once, to problem+json.

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    /// The request is malformed or a value is out of range (400).
    #[error("{0}")]
    Invalid(String),
    /// The caller's token lacks the permission the operation needs (403).
    #[error("this operation needs the permission {0}")]
    Forbidden(String),
    /// The caller holds the route's permission, but the authority rule refuses this use of it (403).
    #[error("{0}")]
    BeyondAuthority(#[from] crate::authority::AuthorityRule),
    /// The write would leave the organisation without a usable administrator (409).
    #[error("{0}")]
    LastAdministrator(#[from] crate::authority::LastAdministrator),
    /// The object does not exist in the caller's organisation (404).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The request conflicts with the object's current state (409).
    #[error("{0}")]
    Conflict(String),
    /// An `Idempotency-Key` already issued this credential; its secret cannot be shown again (409).
    #[error(
        "this Idempotency-Key already issued credential {0}; its secret is shown only once: revoke it if the secret was lost, and retry with a new key"
    )]
    AlreadyIssued(crate::ids::KeyId),
    /// The `If-Match` precondition does not hold: the object changed since it was read (412).
    #[error("{0}")]
    PreconditionFailed(String),
    /// Well-formed but refused by a rule (422).
    #[error("{0}")]
    Unprocessable(String),
    /// The store failed; nothing was changed (503).
    #[error("store unavailable")]
    Unavailable(#[source] StoreError),
}

impl DomainError {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::Invalid(msg.into())
    }
    pub fn conflict(msg: impl Into<String>) -> Self {
        Self::Conflict(msg.into())
    }
    pub fn unprocessable(msg: impl Into<String>) -> Self {
        Self::Unprocessable(msg.into())
    }
}

impl From<StoreError> for DomainError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(msg) => DomainError::Conflict(msg),
            StoreError::NotFound(what) => DomainError::NotFound(what),
            StoreError::Limit(msg) => DomainError::Conflict(msg),
            // Only reached when retries ran out: every witness found was removed concurrently.
            StoreError::WitnessGone => DomainError::LastAdministrator(crate::authority::LastAdministrator),
            // A principal the decision read (the caller or the target) changed before the write.
            StoreError::AuthorityChanged => DomainError::conflict(
                "the roles or status of the caller or the target changed while this change was decided; read again and retry",
            ),
            StoreError::IdempotencyKeyTaken => {
                DomainError::conflict("a concurrent request with this Idempotency-Key is in progress; retry")
            }
            other => DomainError::Unavailable(other),
        }
    }
}
