//! Token introspection (RFC 7662): a downstream API that must refuse a revoked key at once, not
//! when the token expires, asks here whether a token is still active. Active means: signed by a
//! published key, for one of this service's audiences, unexpired, of the caller's organisation,
//! and its credential and principal would still authenticate now (still Active, the audience
//! still on the credential's list, and the organisation's policy still admitting the key).
//! Anything else is the same
//! `{"active": false}`, so the answer tells nothing more about a token that is not.

use serde::Serialize;

use crate::error::DomainError;
use crate::service::{Caller, Iam, PERM_TOKENS_INTROSPECT};
use crate::token::AccessClaims;

/// RFC 7662 §2.2's answer. Only `active` for an inactive token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Introspection {
    pub active: bool,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub token: Option<ActiveToken>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActiveToken {
    /// What the token may do now: its scope, less what its roles or its credential's ceiling
    /// no longer allow.
    pub scope: String,
    pub client_id: String,
    pub token_type: &'static str,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub sub: String,
    pub aud: String,
    pub iss: String,
    pub jti: String,
    pub org_id: String,
    pub principal_type: String,
    /// The roles its principal holds now (those still granting), as `scope` is current.
    pub roles: Vec<String>,
}

impl Introspection {
    const INACTIVE: Self = Self { active: false, token: None };
}

impl Iam {
    /// Whether `token` is active, for a caller holding `iam:tokens:introspect`, which learns
    /// only about tokens of its own organisation.
    pub async fn introspect(&self, caller: &Caller, token: &str) -> Result<Introspection, DomainError> {
        caller.require(PERM_TOKENS_INTROSPECT)?;
        let Some(claims) = self.verify_for_any_audience(token).await else {
            return Ok(Introspection::INACTIVE);
        };
        if claims.org_id != caller.org_id.as_str() {
            return Ok(Introspection::INACTIVE);
        }
        let standing = match self.token_standing(&claims).await {
            Ok(standing) => standing,
            Err(crate::service::AuthError::Unavailable(e)) => return Err(e.into()),
            Err(_) => return Ok(Introspection::INACTIVE),
        };
        // What the exchange would refuse now, the token is refused for: a key the policy has
        // since made idle or too old.
        if self.policy_for_exchange(&standing.org_id).await?.admits_use(&standing.credential, crate::model::now()).is_err() {
            return Ok(Introspection::INACTIVE);
        }
        let scope = standing.permissions.into_iter().collect::<Vec<_>>().join(" ");
        let roles = standing.roles.iter().map(|r| r.id.to_string()).collect();
        let AccessClaims { iss, sub, aud, client_id, org_id, principal_type, iat, nbf, exp, jti, .. } = claims;
        let token =
            ActiveToken { scope, client_id, token_type: "Bearer", exp, iat, nbf, sub, aud, iss, jti, org_id, principal_type, roles };
        Ok(Introspection { active: true, token: Some(token) })
    }

    /// The token's claims if it verifies for one of this service's audiences.
    async fn verify_for_any_audience(&self, token: &str) -> Option<AccessClaims> {
        let service = self.tokens.current().await;
        let settings = self.tokens.settings();
        std::iter::once(&settings.management_audience)
            .chain(settings.audiences.iter())
            .find_map(|audience| service.verify(token, audience).ok())
    }
}
