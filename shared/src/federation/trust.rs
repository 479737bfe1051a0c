//! What an organisation trusts, as stored: the issuers an administrator trusts (only those may
//! be named in a trust policy, and taking one off stops every policy naming it at once), and a
//! service account's trust policies, each with its id, who added it and its use.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::TrustPolicy;
use crate::error::DomainError;
use crate::ids::{PrincipalId, TrustPolicyId};
use crate::model::Actor;
use crate::outbound::check_webhook_url;

/// Trusted issuers per organisation.
pub const MAX_TRUSTED_ISSUERS: usize = 20;
/// Trust policies per service account: as many as credentials per API-key principal.
pub const MAX_TRUST_POLICIES: usize = 10;
const ISSUER_MAX: usize = 256;
const DESCRIPTION_MAX: usize = 256;
const CLIENT_ID_MAX: usize = 256;
const SUBJECT_MAX: usize = 256;
/// What a service account's `client_id` starts with at the token endpoint.
pub const SERVICE_ACCOUNT_CLIENT_PREFIX: &str = "sa_";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrustedIssuer {
    /// The issuer exactly as its tokens' `iss` says; its discovery document is found under it.
    pub issuer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// The organisation's trusted issuers, replaced whole by an administrator.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrustedIssuers {
    pub issuers: Vec<TrustedIssuer>,
    /// 0 until first set; every change advances it (the list's ETag), so a change made from a
    /// stale read cannot put back an issuer someone has just taken off.
    #[serde(default)]
    pub version: u64,
    /// The one of them the organisation's people sign in to the console with, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sign_in: Option<SignInProvider>,
    /// The version at which `sign_in` last changed: a person counts as able to sign in (for the
    /// last-administrator rule) only once it has signed in since.
    #[serde(default)]
    pub sign_in_since: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_by: Option<Actor>,
}

impl TrustedIssuers {
    /// The list, if every issuer is a URL the outbound rules would fetch from (https, no
    /// credentials, no forbidden literal address), named once, and within the limits.
    /// The list replacing one at `version - 1`.
    pub fn new(
        issuers: Vec<TrustedIssuer>,
        sign_in: Option<SignInProvider>,
        version: u64,
        allow_loopback: bool,
        by: Actor,
        at: DateTime<Utc>,
    ) -> Result<Self, DomainError> {
        if issuers.len() > MAX_TRUSTED_ISSUERS {
            return Err(DomainError::invalid(format!("an organisation can trust at most {MAX_TRUSTED_ISSUERS} issuers")));
        }
        for (i, t) in issuers.iter().enumerate() {
            if t.issuer.is_empty() || t.issuer.len() > ISSUER_MAX {
                return Err(DomainError::invalid(format!("issuers[{i}].issuer must be 1 to {ISSUER_MAX} characters")));
            }
            check_webhook_url(&t.issuer, allow_loopback).map_err(|e| DomainError::invalid(format!("issuers[{i}].issuer: {e}")))?;
            if t.issuer.contains(['?', '#']) {
                return Err(DomainError::invalid(format!("issuers[{i}].issuer must not have a query or fragment")));
            }
            if t.description.as_ref().is_some_and(|d| d.chars().count() > DESCRIPTION_MAX || d.chars().any(char::is_control)) {
                return Err(DomainError::invalid(format!(
                    "issuers[{i}].description must be at most {DESCRIPTION_MAX} characters, without control characters"
                )));
            }
            if issuers[..i].iter().any(|earlier| earlier.issuer == t.issuer) {
                return Err(DomainError::invalid(format!("issuers[{i}].issuer is named twice")));
            }
        }
        if let Some(provider) = &sign_in {
            if !issuers.iter().any(|t| t.issuer == provider.issuer) {
                return Err(DomainError::invalid("signIn.issuer must be one of the trusted issuers"));
            }
            let visible = |c: char| c.is_ascii_graphic();
            if provider.client_id.is_empty() || provider.client_id.len() > CLIENT_ID_MAX || !provider.client_id.chars().all(visible) {
                return Err(DomainError::invalid(format!("signIn.clientId must be 1 to {CLIENT_ID_MAX} visible ASCII characters")));
            }
        }
        Ok(Self { issuers, version, sign_in, sign_in_since: 0, updated_at: Some(at), updated_by: Some(by) })
    }

    pub fn trusts(&self, issuer: &str) -> bool {
        self.issuers.iter().any(|t| t.issuer == issuer)
    }

    /// The list after `self`, keeping when its sign-in provider last changed.
    pub fn following(mut self, before: &TrustedIssuers) -> Self {
        self.sign_in_since = if self.sign_in == before.sign_in { before.sign_in_since } else { self.version };
        self
    }

    /// Whether `principal`, a person, can sign in now: mapped under the current provider, and
    /// signed in through it since it was set (a mapping with a mistyped subject proves nothing
    /// until someone signs in with it).
    pub fn signs_in(&self, principal: &crate::model::Principal) -> bool {
        self.maps(principal) && principal.signed_in_under.is_some_and(|v| v >= self.sign_in_since)
    }

    /// Whether `principal` is a person mapped to an identity at the current sign-in provider.
    pub fn maps(&self, principal: &crate::model::Principal) -> bool {
        principal.principal_type == crate::model::PrincipalType::User
            && principal.identity.as_ref().is_some_and(|i| self.sign_in_issuer() == Some(i.issuer.as_str()))
    }

    /// The issuer people sign in with now, if any.
    pub fn sign_in_issuer(&self) -> Option<&str> {
        self.sign_in.as_ref().map(|p| p.issuer.as_str())
    }
}

/// The identity provider the organisation's people sign in to the console with: the service
/// runs the authorization-code flow with PKCE against it as this (public) client, so no client
/// secret is ever held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignInProvider {
    pub issuer: String,
    pub client_id: String,
}

/// Who a `User` principal is at its organisation's identity provider: the `iss` and `sub` of
/// the ID tokens that sign it in. Set when the user is mapped, never changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserIdentity {
    pub issuer: String,
    pub subject: String,
}

impl UserIdentity {
    pub fn new(issuer: &str, subject: &str) -> Result<Self, DomainError> {
        let fits = |text: &str| !text.is_empty() && text.chars().count() <= SUBJECT_MAX && !text.chars().any(char::is_control);
        if !fits(issuer) || !fits(subject) {
            return Err(DomainError::invalid(format!(
                "identity.issuer and identity.subject are 1 to {SUBJECT_MAX} characters, without control characters"
            )));
        }
        Ok(Self { issuer: issuer.to_owned(), subject: subject.to_owned() })
    }

    /// The identity as one opaque key (for the store's index: issuers and subjects may hold
    /// any character, a hash holds none that a key could trip on).
    pub fn key(&self) -> String {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(format!("{}\n{}", self.issuer, self.subject));
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A trust policy as a service account holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrustPolicyEntry {
    pub id: TrustPolicyId,
    #[serde(flatten)]
    pub policy: TrustPolicy,
    pub created_at: DateTime<Utc>,
    pub created_by: Actor,
}

/// How a trust policy has been used: kept beside the policy, written by each exchange it
/// admits without changing the service account's version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrustPolicyUse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<DateTime<Utc>>,
    pub uses: u64,
}

/// The `client_id` a workload names at the token endpoint: the service account's id with
/// `sa_` in place of `akp_`.
pub fn client_id_of(principal: &PrincipalId) -> String {
    format!("{SERVICE_ACCOUNT_CLIENT_PREFIX}{}", principal.as_str().trim_start_matches("akp_"))
}

/// The service account a `client_id` names: `sa_…`, or its principal id itself.
pub fn service_account_of(client_id: &str) -> Option<PrincipalId> {
    match client_id.strip_prefix(SERVICE_ACCOUNT_CLIENT_PREFIX) {
        Some(rest) => PrincipalId::parse(&format!("akp_{rest}")).ok(),
        None => PrincipalId::parse(client_id).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer(url: &str) -> TrustedIssuer {
        TrustedIssuer { issuer: url.into(), description: None }
    }

    #[test]
    fn issuers_follow_the_outbound_rules() {
        let at = crate::model::now();
        let by = Actor::system("test");
        assert!(TrustedIssuers::new(vec![issuer("https://token.actions.githubusercontent.com")], None, 1, false, by.clone(), at).is_ok());
        for bad in [
            "http://issuer.example",
            "https://169.254.169.254",
            "https://user:pw@issuer.example",
            "https://[fd00:ec2::254]",
            "https://a.example/?x=1",
            "",
        ] {
            assert!(TrustedIssuers::new(vec![issuer(bad)], None, 1, false, by.clone(), at).is_err(), "{bad}");
        }
        assert!(TrustedIssuers::new(vec![issuer("http://127.0.0.1:8080")], None, 1, false, by.clone(), at).is_err());
        assert!(TrustedIssuers::new(vec![issuer("http://127.0.0.1:8080")], None, 1, true, by.clone(), at).is_ok());
        let twice = vec![issuer("https://a.example"), issuer("https://a.example")];
        assert!(TrustedIssuers::new(twice, None, 1, false, by.clone(), at).is_err());
        let many = (0..=MAX_TRUSTED_ISSUERS).map(|i| issuer(&format!("https://i{i}.example"))).collect();
        assert!(TrustedIssuers::new(many, None, 1, false, by, at).is_err());
    }

    #[test]
    fn the_sign_in_provider_is_one_of_the_trusted_issuers() {
        let at = crate::model::now();
        let by = Actor::system("test");
        let provider = |issuer: &str, client: &str| Some(SignInProvider { issuer: issuer.into(), client_id: client.into() });
        let list = || vec![issuer("https://idp.example")];
        assert!(TrustedIssuers::new(list(), provider("https://idp.example", "console"), 1, false, by.clone(), at).is_ok());
        assert!(TrustedIssuers::new(list(), provider("https://other.example", "console"), 1, false, by.clone(), at).is_err());
        assert!(TrustedIssuers::new(list(), provider("https://idp.example", ""), 1, false, by.clone(), at).is_err());
        assert!(TrustedIssuers::new(list(), provider("https://idp.example", "has space"), 1, false, by, at).is_err());
        assert!(UserIdentity::new("https://idp.example", "").is_err());
        let ada = UserIdentity::new("https://idp.example", "ada").unwrap();
        assert_ne!(ada.key(), UserIdentity::new("https://idp.example/", "ada").unwrap().key(), "the issuer is part of who one is");
    }

    #[test]
    fn client_ids_name_one_service_account() {
        let id = PrincipalId::generate();
        let client = client_id_of(&id);
        assert!(client.starts_with("sa_"));
        assert_eq!(service_account_of(&client), Some(id.clone()));
        assert_eq!(service_account_of(id.as_str()), Some(id));
        for bad in ["sa_", "sa_short", "ik_abc", "", "sa_akp_x"] {
            assert_eq!(service_account_of(bad), None, "{bad}");
        }
    }
}
