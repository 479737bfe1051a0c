//! Every operation of the service: one module per operation (its handler), the operations
//! table below, and one thin binary per Lambda function in `src/bin`.
//!
//! Functions that serve no route (rotation, events, warnings, webhooks) are rows of
//! [`BACKGROUND`].
//!
//! A new operation is its module, its row here (and its binary, three lines), its entries in
//! `template.yaml` and `openapi.yaml`, and its tests. The table feeds `iam-local`'s router,
//! each function's bootstrap ([`iam_api::lambda::serve`]), the IAM-policy test and the route
//! check; the operations test holds each row's `access` to what the domain enforces.

use iam_api::oauth::TOKEN_PATH;
use iam_api::operation::Access::{Authenticated, Permission, Public};
use iam_api::operation::ColdStart::{Signer, Verifier};
use iam_api::operation::HttpMethod::{Delete, Get, Patch, Post, Put};
use iam_api::operation::{ColdStart, Operation, Table};
use iam_shared::service::{
    PERM_API_KEYS_READ, PERM_API_KEYS_WRITE, PERM_AUDIT_READ, PERM_CREDENTIALS_WRITE, PERM_FEDERATION_WRITE, PERM_POLICY_WRITE,
    PERM_ROLE_ASSIGNMENTS_WRITE, PERM_ROLES_WRITE, PERM_TOKENS_INTROSPECT, PERM_WEBHOOKS_MANAGE,
};

pub mod add_trust_policy;
pub mod assign_role;
pub mod console;
pub mod create_principal;
pub mod create_role;
pub mod create_webhook;
pub mod delete_webhook;
pub mod deliver_webhooks;
pub mod exchange_token;
pub mod get_credential_policy;
pub mod get_principal;
pub mod get_trusted_issuers;
pub mod github_secret_scanning;
pub mod introspect_token;
pub mod issue_credential;
pub mod jwks;
pub mod list_audit_events;
pub mod list_credentials;
pub mod list_principals;
pub mod list_revocations;
pub mod list_role_assignments;
pub mod list_roles;
pub mod list_trust_policies;
pub mod list_webhook_deliveries;
pub mod list_webhooks;
pub mod openid_configuration;
pub mod publish_events;
pub mod remove_trust_policy;
pub mod revoke_credential;
pub mod revoke_leaked_credentials;
pub mod rotate_credential;
pub mod rotate_signing_key;
pub mod rotate_webhook_secret;
pub mod send_warnings;
pub mod set_credential_policy;
pub mod set_trusted_issuers;
pub mod sign_in;
pub mod sign_in_callback;
pub mod unassign_role;
pub mod update_credential;
pub mod update_principal;
pub mod update_webhook;
pub mod whoami;

/// Every function that serves a request reads the principals (the caller's status and roles)
/// and the credentials (the key or the token's credential).
const STORE: &[Table] = &[Table::Principals, Table::Credentials];
/// Functions that change something, or record a refusal, also write the audit trail.
const AUDITED: &[Table] = &[Table::Principals, Table::Credentials, Table::Audit];

#[rustfmt::skip]
pub const OPERATIONS: &[Operation] = &[
    op("create-principal",      Post,   "/iam/api-keys",                                              Permission(PERM_API_KEYS_WRITE),         Verifier, AUDITED, create_principal::endpoint),
    op("list-principals",       Get,    "/iam/api-keys",                                              Permission(PERM_API_KEYS_READ),          Verifier, STORE, list_principals::endpoint),
    op("get-principal",         Get,    "/iam/api-keys/{principalId}",                                Permission(PERM_API_KEYS_READ),          Verifier, STORE, get_principal::endpoint),
    op("update-principal",      Patch,  "/iam/api-keys/{principalId}",                                Permission(PERM_API_KEYS_WRITE),         Verifier, AUDITED, update_principal::endpoint),
    op("issue-credential",      Post,   "/iam/api-keys/{principalId}/credentials",                    Permission(PERM_CREDENTIALS_WRITE),      Verifier, AUDITED, issue_credential::endpoint),
    op("list-credentials",      Get,    "/iam/api-keys/{principalId}/credentials",                    Permission(PERM_API_KEYS_READ),          Verifier, STORE, list_credentials::endpoint),
    op("update-credential",     Patch,  "/iam/api-keys/{principalId}/credentials/{keyId}",            Permission(PERM_CREDENTIALS_WRITE),      Verifier, AUDITED, update_credential::endpoint),
    op("revoke-credential",     Post,   "/iam/api-keys/{principalId}/credentials/{keyId}/revoke",     Permission(PERM_CREDENTIALS_WRITE),      Verifier, AUDITED, revoke_credential::endpoint),
    op("rotate-credential",     Post,   "/iam/api-keys/{principalId}/credentials/{keyId}/rotate",     Permission(PERM_CREDENTIALS_WRITE),      Verifier, AUDITED, rotate_credential::endpoint),
    op("list-trust-policies",   Get,    "/iam/api-keys/{principalId}/trust-policies",                 Permission(PERM_API_KEYS_READ),          Verifier, STORE, list_trust_policies::endpoint),
    op("add-trust-policy",      Post,   "/iam/api-keys/{principalId}/trust-policies",                 Permission(PERM_CREDENTIALS_WRITE),      Verifier, AUDITED, add_trust_policy::endpoint),
    op("remove-trust-policy",   Delete, "/iam/api-keys/{principalId}/trust-policies/{trustPolicyId}", Permission(PERM_CREDENTIALS_WRITE),      Verifier, AUDITED, remove_trust_policy::endpoint),
    op("list-roles",            Get,    "/iam/roles",                                                 Permission(PERM_API_KEYS_READ),          Verifier, STORE, list_roles::endpoint),
    op("create-role",           Post,   "/iam/roles",                                                 Permission(PERM_ROLES_WRITE),            Verifier, AUDITED, create_role::endpoint),
    op("list-role-assignments", Get,    "/iam/api-keys/{principalId}/role-assignments",               Permission(PERM_API_KEYS_READ),          Verifier, STORE, list_role_assignments::endpoint),
    op("assign-role",           Put,    "/iam/api-keys/{principalId}/role-assignments/{roleId}",      Permission(PERM_ROLE_ASSIGNMENTS_WRITE), Verifier, AUDITED, assign_role::endpoint),
    op("unassign-role",         Delete, "/iam/api-keys/{principalId}/role-assignments/{roleId}",      Permission(PERM_ROLE_ASSIGNMENTS_WRITE), Verifier, AUDITED, unassign_role::endpoint),
    op("get-credential-policy", Get,    "/iam/policy",                                                Permission(PERM_API_KEYS_READ),          Verifier, STORE, get_credential_policy::endpoint),
    op("set-credential-policy", Put,    "/iam/policy",                                                Permission(PERM_POLICY_WRITE),           Verifier, AUDITED, set_credential_policy::endpoint),
    op("get-trusted-issuers",   Get,    "/iam/trusted-issuers",                                       Permission(PERM_API_KEYS_READ),          Verifier, STORE, get_trusted_issuers::endpoint),
    op("set-trusted-issuers",   Put,    "/iam/trusted-issuers",                                       Permission(PERM_FEDERATION_WRITE),       Verifier, AUDITED, set_trusted_issuers::endpoint),
    // Holding a key is the authority to destroy it: no token, and no authority rule applies.
    op("revoke-leaked-credentials", Post, "/iam/credentials/revoke-leaked",                           Public,                                  Verifier, AUDITED, revoke_leaked_credentials::endpoint),
    // Authenticated by GitHub's signature over the alert, not by a token.
    op("github-secret-scanning", Post,  "/iam/credentials/github-secret-scanning",                    Public,                                  Verifier, AUDITED, github_secret_scanning::endpoint),
    // A person's browser, before any token: the organisation's identity provider vouches.
    op("sign-in",               Get,    "/iam/auth/sign-in",                                          Public,                                  Verifier, STORE, sign_in::endpoint),
    op("sign-in-callback",      Get,    "/iam/auth/sign-in/callback",                                 Public,                                  Verifier, AUDITED, sign_in_callback::endpoint),
    op("exchange-token",        Post,   TOKEN_PATH,                                                   Public,                                  Signer,   AUDITED, exchange_token::endpoint),
    op("list-audit-events",     Get,    "/iam/audit-events",                                          Permission(PERM_AUDIT_READ),             Verifier, AUDITED, list_audit_events::endpoint),
    op("list-revocations",      Get,    "/iam/revocations",                                           Permission(PERM_TOKENS_INTROSPECT),      Verifier, AUDITED, list_revocations::endpoint),
    op("create-webhook",        Post,   "/iam/webhooks",                                              Permission(PERM_WEBHOOKS_MANAGE),        Verifier, AUDITED, create_webhook::endpoint),
    op("list-webhooks",         Get,    "/iam/webhooks",                                              Permission(PERM_WEBHOOKS_MANAGE),        Verifier, STORE, list_webhooks::endpoint),
    op("update-webhook",        Patch,  "/iam/webhooks/{webhookId}",                                  Permission(PERM_WEBHOOKS_MANAGE),        Verifier, AUDITED, update_webhook::endpoint),
    op("delete-webhook",        Delete, "/iam/webhooks/{webhookId}",                                  Permission(PERM_WEBHOOKS_MANAGE),        Verifier, AUDITED, delete_webhook::endpoint),
    op("rotate-webhook-secret", Post,   "/iam/webhooks/{webhookId}/rotate-secret",                    Permission(PERM_WEBHOOKS_MANAGE),        Verifier, AUDITED, rotate_webhook_secret::endpoint),
    op("list-webhook-deliveries", Get,  "/iam/webhooks/{webhookId}/deliveries",                       Permission(PERM_WEBHOOKS_MANAGE),        Verifier, AUDITED, list_webhook_deliveries::endpoint),
    op("introspect-token",      Post,   "/iam/auth/introspect",                                       Permission(PERM_TOKENS_INTROSPECT),      Verifier, STORE, introspect_token::endpoint),
    op("jwks",                  Get,    "/iam/.well-known/jwks.json",                                 Public,                                  ColdStart::Public, &[], jwks::endpoint),
    op("openid-configuration",  Get,    "/iam/.well-known/openid-configuration",                      Public,                                  ColdStart::Public, &[], openid_configuration::endpoint),
    op("whoami",                Get,    "/iam/whoami",                                                Authenticated,                           Verifier, STORE, whoami::endpoint),
    op("console",               Get,    "/console/{asset}",                                       Public,                                  ColdStart::Public, &[], console::endpoint),
];

/// A function that serves no route: what invokes it, and the tables it touches (held by the
/// IAM-policy test to its template policy, as each operation's row is). Its binary is in
/// `src/bin` like an operation's, with its own small `main`.
#[derive(Debug, Clone, Copy)]
pub struct Background {
    pub name: &'static str,
    pub invoked_by: &'static str,
    pub tables: &'static [Table],
}

#[rustfmt::skip]
pub const BACKGROUND: &[Background] = &[
    Background { name: "rotate-signing-key", invoked_by: "Secrets Manager's rotation, and an operator's key withdrawal", tables: &[] },
    Background { name: "publish-events",     invoked_by: "the audit table's stream",                                       tables: &[] },
    Background { name: "send-warnings",      invoked_by: "EventBridge Scheduler",                                          tables: AUDITED },
    Background { name: "deliver-webhooks",   invoked_by: "the audit table's stream, and its own delivery queue",              tables: &[Table::Principals, Table::Audit] },
];

const fn op(
    name: &'static str,
    method: iam_api::operation::HttpMethod,
    path: &'static str,
    access: iam_api::operation::Access,
    cold_start: ColdStart,
    tables: &'static [Table],
    endpoint: fn(axum::routing::MethodFilter) -> axum::routing::MethodRouter<iam_api::AppState>,
) -> Operation {
    Operation { name, method, path, access, cold_start, tables, endpoint }
}

/// The row named `name`, found at compile time: a binary's `const` names its operation, a
/// wrong name fails the build, and only that row's handler is linked into the binary.
pub const fn operation(name: &str) -> Operation {
    let mut i = 0;
    while i < OPERATIONS.len() {
        if same(OPERATIONS[i].name, name) {
            return OPERATIONS[i];
        }
        i += 1;
    }
    panic!("no operation of that name in OPERATIONS")
}

const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}
