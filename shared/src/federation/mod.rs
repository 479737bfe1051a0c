//! Keyless federation (issue 16), its domain core: what a workload's own OIDC token (a GitHub
//! Actions job's, a Kubernetes service account's, another cloud's) must be for a service
//! account's trust policy to admit it. The decisions do no I/O: [`IssuerKeys`] fetches the
//! issuer's discovery document and JWKS under the outbound rules and hands the keys in.
//!
//! - [`external_token`] verifies the token's signature and time claims against the issuer's
//!   keys, pinning the algorithm to the key (no `none`, no HMAC keyed with a public key);
//! - [`TrustPolicy`] decides whether its issuer, audience, subject and required claims admit
//!   the verified claims. Subject patterns never match across `:`, and a GitHub Actions policy
//!   must pin the immutable `repository_id` and `repository_owner_id` (names can be
//!   re-registered by someone else).
//!
//! The exchange is `exchange.rs` (RFC 8693 at the token route), the routes that manage
//! trusted issuers and trust policies `manage.rs`, people's console sign-in `sign_in.rs`.

pub mod exchange;
pub mod external_token;
pub mod issuer_keys;
pub mod manage;
pub mod sign_in;
pub mod trust;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use external_token::{ExternalExpectations, claimed_issuer, verify_external};
pub use issuer_keys::{IssuerEndpoints, IssuerKeys, issuer_outbound_rules};

/// GitHub Actions' OIDC issuer.
pub const GITHUB_ACTIONS_ISSUER: &str = "https://token.actions.githubusercontent.com";
/// The claims a GitHub Actions trust policy must pin: ids, which a deleted and re-created
/// repository or organisation of the same name does not get back.
pub const GITHUB_IMMUTABLE_CLAIMS: &[&str] = &["repository_id", "repository_owner_id"];
const PATTERN_MAX: usize = 256;
const MAX_REQUIRED_CLAIMS: usize = 16;
/// Bounds that keep ten policies, on the account's item and in every exchange's read, small.
const ISSUER_MAX: usize = 256;
const AUDIENCE_MAX: usize = 256;
const CLAIM_NAME_MAX: usize = 128;
const CLAIM_VALUE_MAX: usize = 256;

/// Why an external token was not admitted: a stable reason that names the rule, never the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FederationRefusal {
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the token's algorithm is not one its issuer's key allows (only RS256 and ES256, pinned to the key)")]
    Algorithm,
    #[error("the token's header asks for something that is not accepted (a key URL, an embedded key)")]
    Header,
    #[error("no key of the issuer has the token's kid")]
    UnknownKey,
    #[error("the token's signature does not verify")]
    Signature,
    #[error("the token's issuer is not the one trusted")]
    UntrustedIssuer,
    #[error("the token is not for this audience")]
    WrongAudience,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token says it was issued in the future")]
    IssuedInFuture,
    #[error("the token was issued too long ago")]
    TooOld,
    #[error("the token lacks a required claim ({0})")]
    MissingClaim(&'static str),
    #[error("the token's subject does not match the trust policy")]
    SubjectMismatch,
    #[error("the token's claim {0} does not match the trust policy")]
    ClaimMismatch(String),
    #[error("the issuer's keys could not be fetched ({0})")]
    IssuerUnreachable(String),
    #[error("the issuer's discovery document names another issuer")]
    IssuerMismatch,
    #[error("no trust policy of this service account names the token's issuer, or the organisation no longer trusts it")]
    NoPolicyForIssuer,
    #[error("the service account changed while the token was exchanged (a trust policy removed, a role changed); retry")]
    AccountChanged,
}

impl FederationRefusal {
    /// Whether the refusal is the organisation's business, and so recorded in its trail: a
    /// token its trusted issuer did sign (refused for its time or claims), or the issuer itself
    /// failing. A token that is malformed, unsigned or signed by anyone else says nothing about
    /// the organisation: anyone can send one, so it is only logged, as an anonymous refusal.
    pub fn concerns_the_organisation(&self) -> bool {
        !matches!(self, Self::Malformed | Self::TooLarge(_) | Self::Algorithm | Self::Header | Self::UnknownKey | Self::Signature)
    }

    /// A stable name for the audit trail, metrics and dashboards.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed => "external_token_malformed",
            Self::TooLarge(_) => "external_token_too_large",
            Self::Algorithm => "external_token_algorithm",
            Self::Header => "external_token_header",
            Self::UnknownKey => "external_token_unknown_key",
            Self::Signature => "external_token_signature",
            Self::UntrustedIssuer | Self::NoPolicyForIssuer => "untrusted_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::Expired => "external_token_expired",
            Self::NotYetValid => "external_token_not_yet_valid",
            Self::IssuedInFuture => "external_token_issued_in_future",
            Self::TooOld => "external_token_too_old",
            Self::MissingClaim(_) => "missing_claim",
            Self::SubjectMismatch => "subject_mismatch",
            Self::ClaimMismatch(_) => "claim_mismatch",
            Self::IssuerUnreachable(_) => "issuer_unreachable",
            Self::IssuerMismatch => "issuer_mismatch",
            Self::AccountChanged => "service_account_changed",
        }
    }
}

/// A subject exactly, or with `*` standing for any run of characters other than `:`: one
/// segment's worth, never more. `repo:acme/api:*` does not match
/// `repo:acme/api:ref:refs/heads/main`; `repo:acme/api:ref:*` does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SubjectPattern(String);

impl TryFrom<String> for SubjectPattern {
    type Error = String;
    fn try_from(raw: String) -> Result<Self, String> {
        if raw.is_empty() || raw.len() > PATTERN_MAX || raw.chars().any(char::is_control) {
            return Err(format!("a subject pattern is 1 to {PATTERN_MAX} characters, without control characters"));
        }
        if raw.chars().all(|c| c == '*' || c == ':') {
            return Err("a subject pattern must name something: it cannot be only wildcards".into());
        }
        Ok(Self(raw))
    }
}

impl From<SubjectPattern> for String {
    fn from(p: SubjectPattern) -> String {
        p.0
    }
}

impl SubjectPattern {
    pub fn parse(raw: &str) -> Result<Self, String> {
        Self::try_from(raw.to_owned())
    }

    pub fn matches(&self, subject: &str) -> bool {
        glob_within_segments(self.0.as_bytes(), subject.as_bytes())
    }
}

/// `*` matches any run of bytes that holds no `:`; everything else matches itself.
fn glob_within_segments(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => {
            let mut i = 0;
            loop {
                if glob_within_segments(rest, &text[i..]) {
                    return true;
                }
                if i == text.len() || text[i] == b':' {
                    return false;
                }
                i += 1;
            }
        }
        Some((c, rest)) => text.split_first().is_some_and(|(t, text_rest)| t == c && glob_within_segments(rest, text_rest)),
    }
}

/// Which external tokens a service account accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrustPolicy {
    /// One of the organisation's trusted issuers.
    pub issuer: String,
    /// What the issuer must have put in `aud`: one the organisation chose.
    pub audience: String,
    pub subject: SubjectPattern,
    /// Claims that must equal these strings (`repository_id`, `environment`, a Kubernetes
    /// namespace, ...).
    #[serde(default)]
    pub required_claims: BTreeMap<String, String>,
}

impl TrustPolicy {
    /// The policy, if it is one a serious deployment may hold.
    pub fn new(issuer: &str, audience: &str, subject: &str, required_claims: BTreeMap<String, String>) -> Result<Self, String> {
        let fits = |text: &str, max: usize| !text.is_empty() && text.chars().count() <= max && !text.chars().any(char::is_control);
        if !fits(issuer, ISSUER_MAX) {
            return Err(format!("issuer must be 1 to {ISSUER_MAX} characters, without control characters"));
        }
        if !fits(audience, AUDIENCE_MAX) {
            return Err(format!("audience must be 1 to {AUDIENCE_MAX} characters, without control characters"));
        }
        if required_claims.len() > MAX_REQUIRED_CLAIMS {
            return Err(format!("at most {MAX_REQUIRED_CLAIMS} required claims"));
        }
        if let Some((name, _)) = required_claims.iter().find(|(name, value)| !fits(name, CLAIM_NAME_MAX) || !fits(value, CLAIM_VALUE_MAX)) {
            return Err(format!(
                "required claim '{}': names are 1 to {CLAIM_NAME_MAX} characters and values 1 to {CLAIM_VALUE_MAX}, without control characters",
                crate::ids::truncate(name)
            ));
        }
        // GitHub Enterprise Cloud's issuers are GitHub's with the enterprise's slug after it.
        let github = issuer == GITHUB_ACTIONS_ISSUER || issuer.starts_with(&format!("{GITHUB_ACTIONS_ISSUER}/"));
        if github && let Some(missing) = GITHUB_IMMUTABLE_CLAIMS.iter().find(|c| !required_claims.contains_key(**c)) {
            return Err(format!("a GitHub Actions trust policy must pin {missing}: a repository's name can be taken by someone else"));
        }
        Ok(Self { issuer: issuer.to_owned(), audience: audience.to_owned(), subject: SubjectPattern::parse(subject)?, required_claims })
    }

    /// Whether the claims of a token already verified against this policy's issuer (see
    /// [`verify_external`]) are admitted.
    pub fn admits(&self, claims: &serde_json::Map<String, serde_json::Value>) -> Result<(), FederationRefusal> {
        if claims.get("iss").and_then(|v| v.as_str()) != Some(self.issuer.as_str()) {
            return Err(FederationRefusal::UntrustedIssuer);
        }
        let audience_ok = match claims.get("aud") {
            Some(serde_json::Value::String(a)) => *a == self.audience,
            Some(serde_json::Value::Array(all)) => all.iter().any(|a| a.as_str() == Some(self.audience.as_str())),
            _ => false,
        };
        if !audience_ok {
            return Err(FederationRefusal::WrongAudience);
        }
        let subject = claims.get("sub").and_then(|v| v.as_str()).ok_or(FederationRefusal::MissingClaim("sub"))?;
        if !self.subject.matches(subject) {
            return Err(FederationRefusal::SubjectMismatch);
        }
        for (name, expected) in &self.required_claims {
            // Numbers (GitHub's ids are strings, others may not be) compare by their text.
            let actual = match claims.get(name) {
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(serde_json::Value::Number(n)) => Some(n.to_string()),
                Some(serde_json::Value::Bool(b)) => Some(b.to_string()),
                _ => None,
            };
            if actual.as_deref() != Some(expected.as_str()) {
                return Err(FederationRefusal::ClaimMismatch(name.clone()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn wildcards_never_cross_a_colon() {
        let p = SubjectPattern::parse("repo:acme/api:ref:refs/heads/*").unwrap();
        assert!(p.matches("repo:acme/api:ref:refs/heads/main"));
        assert!(p.matches("repo:acme/api:ref:refs/heads/release/1.2"), "a slash is not a colon");
        assert!(!p.matches("repo:acme/api:ref:refs/heads/main:extra"));
        let env = SubjectPattern::parse("repo:acme/*:environment:production").unwrap();
        assert!(env.matches("repo:acme/api:environment:production"));
        assert!(!env.matches("repo:acme/api:x:environment:production"), "* does not swallow a segment");
        assert!(!env.matches("repo:acme-evil/api:environment:production"), "the literal part still has to match");
        let exact = SubjectPattern::parse("system:serviceaccount:payments:exporter").unwrap();
        assert!(exact.matches("system:serviceaccount:payments:exporter"));
        assert!(!exact.matches("system:serviceaccount:payments:exporter2"));
        for bad in ["", "*", "*:*", "a\nb"] {
            assert!(SubjectPattern::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_github_policy_pins_immutable_ids() {
        let sub = "repo:acme/api:environment:production";
        let names = BTreeMap::from([("repository".to_owned(), "acme/api".to_owned())]);
        assert!(TrustPolicy::new(GITHUB_ACTIONS_ISSUER, "https://iam.example", sub, names.clone()).is_err());
        let enterprise = format!("{GITHUB_ACTIONS_ISSUER}/acme-corp");
        assert!(TrustPolicy::new(&enterprise, "https://iam.example", sub, names.clone()).is_err(), "an enterprise's issuer too");
        let long = BTreeMap::from([("repository_id".to_owned(), "1".repeat(300)), ("repository_owner_id".to_owned(), "2".to_owned())]);
        assert!(TrustPolicy::new(GITHUB_ACTIONS_ISSUER, "https://iam.example", sub, long).is_err(), "claim values are bounded");
        assert!(TrustPolicy::new("https://k8s.example", &"a".repeat(257), sub, BTreeMap::new()).is_err(), "audiences are bounded");
        let mut pinned = names;
        pinned.insert("repository_id".into(), "123456".into());
        pinned.insert("repository_owner_id".into(), "654321".into());
        let policy = TrustPolicy::new(GITHUB_ACTIONS_ISSUER, "https://iam.example", sub, pinned).unwrap();
        let good = json!({"iss": GITHUB_ACTIONS_ISSUER, "aud": "https://iam.example", "sub": sub,
            "repository": "acme/api", "repository_id": "123456", "repository_owner_id": "654321"});
        assert_eq!(policy.admits(&claims(good.clone())), Ok(()));
        let mut renamed = good.clone();
        renamed["repository_id"] = json!("999");
        assert_eq!(policy.admits(&claims(renamed)), Err(FederationRefusal::ClaimMismatch("repository_id".into())));
        let mut other_aud = good.clone();
        other_aud["aud"] = json!(["sts.amazonaws.com"]);
        assert_eq!(policy.admits(&claims(other_aud)), Err(FederationRefusal::WrongAudience));
        let mut other_sub = good.clone();
        other_sub["sub"] = json!("repo:acme/api:environment:staging");
        assert_eq!(policy.admits(&claims(other_sub)), Err(FederationRefusal::SubjectMismatch));
        let mut other_iss = good;
        other_iss["iss"] = json!("https://issuer.example");
        assert_eq!(policy.admits(&claims(other_iss)), Err(FederationRefusal::UntrustedIssuer));
    }

    #[test]
    fn kubernetes_claims_compare_as_text() {
        let claims_required = BTreeMap::from([("kubernetes.io/namespace".to_owned(), "payments".to_owned())]);
        let policy = TrustPolicy::new("https://k8s.example", "iam", "system:serviceaccount:payments:*", claims_required).unwrap();
        let token = json!({"iss": "https://k8s.example", "aud": ["iam", "other"], "sub": "system:serviceaccount:payments:exporter",
            "kubernetes.io/namespace": "payments"});
        assert_eq!(policy.admits(&claims(token)), Ok(()));
    }
}
