//! HTTP plumbing every function shares: configuration, state, the bearer-token extractor, body
//! parsing, the one mapping of domain errors to problem+json, response views, and the Lambda
//! bootstrap that keeps each function's `main.rs` to a few lines.

pub mod aws;
pub mod backend;
pub mod config;
pub mod extract;
pub mod lambda;
pub mod metrics;
pub mod oauth;
pub mod operation;
pub mod problem;
pub mod source_address;
pub mod state;
pub mod views;

pub use extract::{
    Authenticated, IdempotencyKeyHeader, IfMatch, JsonBody, OptionalJsonBody, PathParams, Query, etag, nullable, parse_path,
};
pub use problem::ApiError;
pub use source_address::SourceAddress;
pub use state::{AppState, finish_router};
