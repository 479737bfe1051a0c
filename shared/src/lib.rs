//! The domain crate: model and rules, key format, hashing, tokens, and the `Store` contract with
//! its embedded store. The model and rules do no I/O and know nothing of HTTP.

pub mod api_key;
pub mod audit;
pub mod authority;
pub mod credential_policy;
pub mod error;
pub mod events;
pub mod exchange;
pub mod federation;
pub mod hashing;
pub mod idempotency;
pub mod ids;
pub mod introspection;
pub mod leaks;
pub mod model;
pub mod names;
pub mod outbound;
pub mod public_key_set;
pub mod random;
pub mod restrictions;
pub mod revocations;
pub mod roles;
pub mod service;
pub mod signing_keys;
pub mod store;
pub mod token;
pub mod warnings;
pub mod webhooks;

pub use error::DomainError;
