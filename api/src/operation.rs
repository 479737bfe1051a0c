//! What the service knows about each of its HTTP operations, in one place: the row of the
//! operations table (`iam_functions::OPERATIONS`) that `iam-local`'s router, each Lambda's
//! bootstrap, the IAM-policy test and the route check all read.

use axum::Router;
use axum::routing::{MethodFilter, MethodRouter};

use crate::state::AppState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpMethod {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl HttpMethod {
    pub const fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Post => "POST",
            HttpMethod::Put => "PUT",
            HttpMethod::Patch => "PATCH",
            HttpMethod::Delete => "DELETE",
        }
    }

    pub const fn filter(self) -> MethodFilter {
        match self {
            HttpMethod::Get => MethodFilter::GET,
            HttpMethod::Post => MethodFilter::POST,
            HttpMethod::Put => MethodFilter::PUT,
            HttpMethod::Patch => MethodFilter::PATCH,
            HttpMethod::Delete => MethodFilter::DELETE,
        }
    }
}

/// Who may call an operation. The domain enforces it (`Caller::require`); this states it, and
/// the operations test holds the two together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: published key material and configuration, and the exchange, which proves a key
    /// instead of a token.
    Public,
    /// Any valid management token, whatever it holds.
    Authenticated,
    /// A management token whose principal holds this permission.
    Permission(&'static str),
}

/// What a function loads on its cold start, and so what its IAM policy must grant beyond its
/// requests' own calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColdStart {
    /// Warms the store and loads the private signing keys: the only kind granted them.
    Signer,
    /// Warms the store and loads the published public keys to verify management tokens.
    Verifier,
    /// Loads the published public keys only and reads no table.
    Public,
}

/// The DynamoDB tables an operation's requests may touch (each function's policy names them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Table {
    Principals,
    Credentials,
    /// The audit trail: written by every function that changes something or records a refusal.
    Audit,
}

impl Table {
    /// The logical id of the table in `template.yaml`.
    pub const fn logical_id(self) -> &'static str {
        match self {
            Table::Principals => "PrincipalsTable",
            Table::Credentials => "CredentialsTable",
            Table::Audit => "AuditTable",
        }
    }
}

/// One HTTP operation: one Lambda function (and binary) of that `name`, one route.
#[derive(Debug, Clone, Copy)]
pub struct Operation {
    /// The function's name: its binary, its `template.yaml` function's `Binary`, its log group.
    pub name: &'static str,
    pub method: HttpMethod,
    /// The path as `openapi.yaml` and API Gateway write it (`{principalId}`).
    pub path: &'static str,
    pub access: Access,
    pub cold_start: ColdStart,
    pub tables: &'static [Table],
    /// The handler for `method`; it may add a fallback for the route's other methods.
    pub endpoint: fn(MethodFilter) -> MethodRouter<AppState>,
}

impl Operation {
    /// `"POST /iam/api-keys"`, as API Gateway's route key and OpenAPI write it.
    pub fn route_key(&self) -> String {
        format!("{} {}", self.method.as_str(), self.path)
    }

    pub fn router(&self) -> Router<AppState> {
        Router::new().route(self.path, (self.endpoint)(self.method.filter()))
    }
}

/// One router serving every operation of `operations` (iam-local, the tests).
pub fn router(operations: &[Operation]) -> Router<AppState> {
    operations.iter().fold(Router::new(), |router, operation| router.merge(operation.router()))
}
