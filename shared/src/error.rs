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
    /// The object does not exist in the caller's organisation (404).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The request conflicts with the object's current state (409).
    #[error("{0}")]
    Conflict(String),
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
            other => DomainError::Unavailable(other),
        }
    }
}
