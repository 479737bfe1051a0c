//! Token introspection (RFC 7662): a downstream API that must refuse a revoked key at once, not
//! when the token expires, asks here whether a token is still active. Active means: signed by a
//! published key, for one of this service's audiences, unexpired, of the caller's organisation,
//! and its credential and principal would still authenticate now (still Active, the audience
//! still on the credential's list, and the organisation's policy still admitting the key; for a
//! signed-in person, still mapped under an identity provider unchanged since).
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
    /// A service account's token: the trust policy that admitted it, still on the account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trust_policy: Option<String>,
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
        if claims.trust_policy.is_some() {
            return self.introspect_service_account(claims).await;
        }
        if crate::federation::sign_in::is_persons_token(&claims) {
            return self.introspect_person(claims).await;
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
        Ok(Introspection { active: true, token: Some(active_token(claims, scope, roles)) })
    }

    /// A service account's token is active while the account would still be admitted: Active
    /// and unexpired, the trust policy that admitted it still on the account and its issuer
    /// still trusted, and (as for a key's token) its scope narrowed to what the roles still grant.
    async fn introspect_service_account(&self, claims: AccessClaims) -> Result<Introspection, DomainError> {
        let (Ok(org), Ok(id)) = (crate::ids::OrgId::parse(&claims.org_id), crate::ids::PrincipalId::parse(&claims.sub)) else {
            return Ok(Introspection::INACTIVE);
        };
        let Some((principal, role_ids)) = self.store.get_principal_with_roles(&org, &id).await? else {
            return Ok(Introspection::INACTIVE);
        };
        let now = crate::model::now();
        let policy = principal.trust_policies.iter().find(|p| Some(p.id.as_str()) == claims.trust_policy.as_deref());
        let Some(policy) = policy.filter(|_| principal.status == crate::model::PrincipalStatus::Active && !principal.is_expired(now))
        else {
            return Ok(Introspection::INACTIVE);
        };
        // An issuer the organisation stopped trusting vouches for nothing any more.
        if !self.store.get_trusted_issuers(&org).await?.unwrap_or_default().trusts(&policy.policy.issuer) {
            return Ok(Introspection::INACTIVE);
        }
        let roles = self.granting_roles(&principal, &role_ids).await?;
        let held: std::collections::BTreeSet<&str> = roles.iter().flat_map(|r| r.permissions.iter().map(|p| p.as_str())).collect();
        let scope = claims.permissions().filter(|p| held.contains(p)).collect::<Vec<_>>().join(" ");
        let roles = roles.iter().map(|r| r.id.to_string()).collect();
        Ok(Introspection { active: true, token: Some(active_token(claims, scope, roles)) })
    }

    /// A signed-in person's token is active while the management routes would honour it.
    async fn introspect_person(&self, claims: AccessClaims) -> Result<Introspection, DomainError> {
        let person = match self.person_signed_in(claims).await {
            Ok(person) => person,
            Err(crate::service::AuthError::Unavailable(e)) => return Err(e.into()),
            Err(_) => return Ok(Introspection::INACTIVE),
        };
        let scope = person.permissions.into_iter().collect::<Vec<_>>().join(" ");
        let roles = person.roles.iter().map(|r| r.id.to_string()).collect();
        Ok(Introspection { active: true, token: Some(active_token(person.claims, scope, roles)) })
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

fn active_token(claims: AccessClaims, scope: String, roles: Vec<String>) -> ActiveToken {
    let AccessClaims { iss, sub, aud, client_id, org_id, principal_type, iat, nbf, exp, jti, trust_policy, .. } = claims;
    ActiveToken { scope, client_id, token_type: "Bearer", exp, iat, nbf, sub, aud, iss, jti, org_id, principal_type, roles, trust_policy }
}
