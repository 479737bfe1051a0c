//! The end-to-end suites, as modules of one test binary: each integration-test file would
//! otherwise be its own binary linking the whole AWS SDK, which costs minutes and gigabytes
//! on a clean CI machine. `log_hygiene` stays separate because it owns the global subscriber.

mod attacks;
mod compat;
mod dynamodb;
mod dynamodb_faults;
mod exchange;
mod idempotency;
mod lambda;
mod management;
mod rotation;
mod throttle;
