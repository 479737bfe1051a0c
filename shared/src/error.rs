//! The domain's one error type, and the words for every refusal a store reports. The HTTP
//! layer maps it once, to problem+json. The store contract speaks in [`Conflict`] and [`Limit`],
//! defined here, so the domain depends on no store.

use crate::ids::OrgId;

/// A write refused by the state it met. Written once, here, for every store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Conflict {
    #[error("a principal with this id exists")]
    PrincipalExists,
    #[error("the principal is revoked")]
    PrincipalRevoked,
    /// The principal's version is no longer the one the write expected.
    #[error("the principal was changed concurrently; read it again and retry")]
    StaleVersion,
    #[error("a credential with this key id exists")]
    CredentialExists,
    /// Only an Active credential rotates, and only once.
    #[error("only an active credential that was not rotated before can be rotated; this one is revoked, expired or already rotated")]
    NotRotatable,
    #[error("only an active credential can be changed; this one is revoked or expired")]
    NotChangeable,
    #[error("a role with this id exists")]
    RoleExists,
    #[error("a webhook with this id exists")]
    WebhookExists,
    #[error("another user is already mapped to this identity")]
    IdentityMapped,
    #[error("a role named '{0}' already exists")]
    RoleNameTaken(String),
    #[error("built-in roles are not stored")]
    BuiltInRole,
    #[error("organisation '{0}' is already bootstrapped")]
    AlreadyBootstrapped(OrgId),
    /// Concurrent writes to one principal kept the write from committing within its retries.
    #[error("too many concurrent changes to this principal; retry")]
    Contended,
    /// The create carried an idempotency record whose slot already holds a live one (another
    /// request with the same key won); nothing was written.
    #[error("a concurrent request with this Idempotency-Key is in progress; retry")]
    IdempotencyKeyTaken,
    /// A principal the write's authority was decided on (the caller or the target) changed
    /// (its status, expiry, name or roles) before the write could commit; nothing was written.
    #[error("the roles or status of the caller or the target changed while this change was decided; read again and retry")]
    AuthorityChanged,
}

/// A per-principal or per-organisation limit the write would exceed, with the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Limit {
    #[error(
        "an organisation can have at most {0} principals; revoked principals count too (the operator sets the limit with IAM_MAX_PRINCIPALS_PER_ORG)"
    )]
    Principals(usize),
    #[error("the principal already has {0} active credentials; revoke one first")]
    ActiveCredentials(usize),
    #[error("an organisation can define at most {0} roles")]
    OrgRoles(usize),
    #[error("a principal can hold at most {0} roles")]
    RolesPerPrincipal(usize),
    #[error("an organisation can have at most {0} webhook endpoints")]
    Webhooks(usize),
    #[error("a service account can have at most {0} trust policies; remove one first")]
    TrustPolicies(usize),
}

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
    /// A signed request's signature did not verify with any configured key (403).
    #[error("the request's signature does not verify with a configured key")]
    BadSignature,
    /// The caller is over a rate the operation allows (429).
    #[error("{0}")]
    TooManyRequests(String),
    /// The store (or the hasher) failed; nothing was changed (503). The cause is logged, never sent.
    #[error("store unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
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

impl From<Conflict> for DomainError {
    fn from(conflict: Conflict) -> Self {
        DomainError::Conflict(conflict.to_string())
    }
}

impl From<Limit> for DomainError {
    fn from(limit: Limit) -> Self {
        DomainError::Conflict(limit.to_string())
    }
}
