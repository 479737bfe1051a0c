//! The end-to-end suites, as modules of one test binary: each integration-test file would
//! otherwise be its own binary linking the whole AWS SDK, which costs minutes and gigabytes
//! on a clean CI machine. `secret_hygiene` stays separate because it owns the global subscriber,
//! and `races` because it loads moto for minutes.

mod attacks;
mod audit_trail;
mod authority;
mod authority_at_commit;
mod capacity;
mod compat;
mod credential_policy;
mod credential_restrictions;
mod credential_rotation;
mod credential_usage;
mod dynamodb;
mod dynamodb_conflicts;
mod dynamodb_faults;
mod edge_source;
mod event_publishing;
mod exchange;
mod fault_steps;
mod federation;
mod github_alerts;
mod iam_policies;
mod idempotency;
mod introspection;
mod keyless;
mod lambda;
mod leak_response;
mod limits;
mod management;
mod metrics;
mod operations;
mod revocation_feed;
mod rotation;
mod scanner_rules;
mod sign_in;
mod webhooks;
mod wrong_keys;
