//! People signing in to the console through their organisation's identity provider: the
//! OpenID Connect authorization-code flow with PKCE, state and nonce, run by the service (the
//! console's strict CSP allows it no cross-origin call), then the console's own code
//! redeemed, with its own PKCE verifier, for a management token of the `User` principal mapped
//! to the ID token's issuer and subject. Nobody is provisioned by signing in: an administrator
//! maps each person first (a refused sign-in is recorded with the issuer and subject to map).
//!
//! 1. [`Iam::begin_sign_in`]: the console (which keeps a PKCE verifier of its own) is sent to
//!    the provider's authorization endpoint with a fresh state, nonce and PKCE challenge; the
//!    service keeps them, with the console's challenge, for ten minutes.
//! 2. [`Iam::complete_sign_in`]: the provider's redirect comes back with `state` and `code`;
//!    the state is taken (once), the code is redeemed server-side with the verifier, the ID
//!    token verified (signature, `iss`, `aud` = the client id, the nonce, times), and the user
//!    found. The console gets a one-time code of the service's own, good for a minute.
//! 3. [`Iam::redeem_sign_in`]: the token endpoint's `authorization_code` grant, with the
//!    console's verifier, answers the user's management token.

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::trust::UserIdentity;
use super::{ExternalExpectations, FederationRefusal};
use crate::audit::AuditEntry;
use crate::ids::{OrgId, PrincipalId, encode_u128};
use crate::model::{self, Actor};
use crate::service::{ExchangeError, Iam, IssuedToken};
use crate::token::UserGrant;

/// How long a sign-in may take at the provider.
pub const SIGN_IN_TTL_SECS: i64 = 10 * 60;
/// How long the console has to redeem its code.
pub const CODE_TTL_SECS: i64 = 60;
/// The console's `client_id` at the token endpoint, and in its tokens.
pub const CONSOLE_CLIENT_ID: &str = "console";
/// Whether an access token of the service's is a signed-in person's console token.
pub fn is_persons_token(claims: &crate::token::AccessClaims) -> bool {
    claims.principal_type == "User" && claims.client_id == CONSOLE_CLIENT_ID
}

/// The longest an ID token may have lived when it is redeemed.
const ID_TOKEN_MAX_AGE_SECS: u64 = 10 * 60;

/// What the service keeps between the steps, under a one-time key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum SignInRecord {
    /// Step 1 to 2: the provider's round trip.
    #[serde(rename_all = "camelCase")]
    Pending { nonce: String, verifier: String, console_challenge: String, expires_at: DateTime<Utc> },
    /// Step 2 to 3: the console's code.
    #[serde(rename_all = "camelCase")]
    Code {
        principal_id: PrincipalId,
        console_challenge: String,
        expires_at: DateTime<Utc>,
        /// The sign-in settings the person was proved under: a provider changed before the
        /// console redeems the code voids it.
        #[serde(default)]
        sign_in_version: u64,
    },
}

impl SignInRecord {
    pub fn expires_at(&self) -> DateTime<Utc> {
        match self {
            Self::Pending { expires_at, .. } | Self::Code { expires_at, .. } => *expires_at,
        }
    }
}

/// Why a sign-in did not go through. Said to the person signing in (on the console), so it
/// names what to do, never a token or a code.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    #[error("this organisation has no identity provider to sign in with; sign in with an API key")]
    NotConfigured,
    #[error("the sign-in request is malformed: {0}")]
    Malformed(&'static str),
    #[error("this sign-in expired or was already used; start again")]
    Expired,
    #[error("the identity provider refused: {0}")]
    ProviderRefused(String),
    #[error("the identity provider could not be reached; try again later")]
    ProviderUnreachable,
    #[error("the identity provider's answer was not accepted ({0})")]
    IdToken(FederationRefusal),
    #[error("no user of this organisation is mapped to you at this identity provider; ask an administrator to map you")]
    NotMapped,
    #[error("store unavailable")]
    Store(#[from] crate::store::StoreError),
}

/// Where each kind of record is kept: a state sent as a code (or the reverse) finds nothing.
fn pending_slot(state: &str) -> String {
    format!("pending/{state}")
}

fn code_slot(code: &str) -> String {
    format!("code/{code}")
}

/// A one-time key: the organisation (which the provider's redirect and the console's request
/// carry back) and 128 random bits.
fn one_time_key(org: &OrgId) -> String {
    format!("{org}.{}", encode_u128(u128::from_be_bytes(crate::random::bytes::<16>())))
}

fn org_of(key: &str) -> Option<OrgId> {
    let (org, rest) = key.split_once('.')?;
    (!rest.is_empty() && rest.len() <= 32 && rest.bytes().all(|b| b.is_ascii_alphanumeric())).then_some(())?;
    OrgId::parse(org).ok()
}

/// PKCE's S256: base64url(SHA-256(verifier)).
pub fn s256(verifier: &str) -> String {
    use base64::Engine;
    use sha2::Digest;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()))
}

fn verifier() -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(crate::random::bytes::<32>())
}

/// A PKCE challenge as RFC 7636 allows it for S256: 43 base64url characters.
fn is_challenge(raw: &str) -> bool {
    raw.len() == 43 && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `scheme://host[:port]` of a URL, lower-cased.
fn origin_of(url: &str) -> Option<String> {
    let uri: hyper::Uri = url.parse().ok()?;
    Some(format!("{}://{}", uri.scheme_str()?, uri.authority()?.as_str()).to_ascii_lowercase())
}

/// What OpenID Connect Core §3.1.3.7 asks of an ID token beyond its signature, issuer,
/// audience and times: the nonce of this sign-in, and, when it names several audiences or an
/// authorised party, that party is this client.
fn id_token_fits(claims: &serde_json::Map<String, serde_json::Value>, nonce: &str, client_id: &str) -> Result<(), FederationRefusal> {
    if claims.get("nonce").and_then(|n| n.as_str()) != Some(nonce) {
        return Err(FederationRefusal::ClaimMismatch("nonce".into()));
    }
    let several = claims.get("aud").and_then(|a| a.as_array()).is_some_and(|a| a.len() > 1);
    let azp = claims.get("azp").and_then(|a| a.as_str());
    if (several || claims.contains_key("azp")) && azp != Some(client_id) {
        return Err(FederationRefusal::ClaimMismatch("azp".into()));
    }
    Ok(())
}

#[derive(Deserialize)]
struct ProviderTokens {
    id_token: Option<String>,
    error: Option<String>,
}

impl Iam {
    /// The service's own callback, which the provider redirects people back to.
    pub fn sign_in_callback_url(&self) -> String {
        format!("{}/auth/sign-in/callback", self.tokens.settings().issuer.trim_end_matches('/'))
    }

    /// Step 1: where to send the person (the provider's authorization URL).
    pub async fn begin_sign_in(&self, org: &str, console_challenge: &str) -> Result<String, SignInError> {
        let org = OrgId::parse(org).map_err(|_| SignInError::Malformed("org is not an organisation id"))?;
        if !is_challenge(console_challenge) {
            return Err(SignInError::Malformed("code_challenge must be a PKCE S256 challenge (43 base64url characters)"));
        }
        let settings = self.store.get_trusted_issuers(&org).await?.unwrap_or_default();
        let provider = settings.sign_in.ok_or(SignInError::NotConfigured)?;
        let keys = self.issuer_keys().map_err(|_| SignInError::ProviderUnreachable)?;
        let endpoints = keys.endpoints(&provider.issuer).await.map_err(|e| {
            tracing::warn!(org = %org, error = %e, "an identity provider's discovery document could not be read");
            SignInError::ProviderUnreachable
        })?;
        let authorization = endpoints.authorization.ok_or(SignInError::ProviderUnreachable)?;
        // The person's browser goes there, the service never does: https (or loopback, under the
        // operator's switch), and on the issuer's own origin, so this route never sends a
        // browser anywhere the organisation's issuer is not.
        crate::outbound::check_webhook_url(&authorization, self.webhooks.allow_loopback).map_err(|_| SignInError::ProviderUnreachable)?;
        if origin_of(&authorization) != origin_of(&provider.issuer) || authorization.contains('#') {
            tracing::warn!(org = %org, "an identity provider's authorization endpoint is not on its issuer's origin");
            return Err(SignInError::ProviderUnreachable);
        }
        let state = one_time_key(&org);
        let nonce = encode_u128(u128::from_be_bytes(crate::random::bytes::<16>()));
        let verifier = verifier();
        let challenge = s256(&verifier);
        let expires_at = model::now() + chrono::Duration::seconds(SIGN_IN_TTL_SECS);
        let record = SignInRecord::Pending { nonce: nonce.clone(), verifier, console_challenge: console_challenge.to_owned(), expires_at };
        self.store.put_sign_in(&org, &pending_slot(&state), &record).await?;
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("response_type", "code")
            .append_pair("client_id", &provider.client_id)
            .append_pair("redirect_uri", &self.sign_in_callback_url())
            .append_pair("scope", "openid")
            .append_pair("state", &state)
            .append_pair("nonce", &nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256")
            .finish();
        let separator = if authorization.contains('?') { '&' } else { '?' };
        Ok(format!("{authorization}{separator}{query}"))
    }

    /// Step 2: the provider's redirect. Answers the console's one-time code.
    pub async fn complete_sign_in(&self, state: &str, code: &str) -> Result<String, SignInError> {
        let org = org_of(state).ok_or(SignInError::Expired)?;
        let Some(SignInRecord::Pending { nonce, verifier, console_challenge, expires_at }) =
            self.store.take_sign_in(&org, &pending_slot(state)).await?
        else {
            return Err(SignInError::Expired);
        };
        if expires_at <= model::now() {
            return Err(SignInError::Expired);
        }
        if code.is_empty() || code.len() > 2048 {
            return Err(SignInError::Malformed("code"));
        }
        let settings = self.store.get_trusted_issuers(&org).await?.unwrap_or_default();
        let provider = settings.sign_in.ok_or(SignInError::NotConfigured)?;
        let keys = self.issuer_keys().map_err(|_| SignInError::ProviderUnreachable)?;
        let token_endpoint = keys.endpoints(&provider.issuer).await.ok().and_then(|e| e.token).ok_or(SignInError::ProviderUnreachable)?;
        let callback = self.sign_in_callback_url();
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", callback.as_str()),
            ("client_id", provider.client_id.as_str()),
            ("code_verifier", verifier.as_str()),
        ];
        let (status, body) = self.outbound_for_sign_in()?.post_form(&token_endpoint, &form).await.map_err(|e| {
            tracing::warn!(org = %org, error = %e, "an identity provider's token endpoint could not be reached");
            SignInError::ProviderUnreachable
        })?;
        let answer: ProviderTokens = serde_json::from_slice(&body).map_err(|_| SignInError::ProviderRefused(format!("HTTP {status}")))?;
        let id_token = match (status, answer.id_token, answer.error) {
            (200, Some(id_token), _) => SecretString::from(id_token),
            (_, _, Some(error)) => return Err(SignInError::ProviderRefused(error.chars().take(64).collect())),
            _ => return Err(SignInError::ProviderRefused(format!("HTTP {status}, no ID token"))),
        };
        let now = u64::try_from(model::now().timestamp()).unwrap_or(0);
        let expect = ExternalExpectations {
            issuer: &provider.issuer,
            audience: Some(&provider.client_id),
            max_age_secs: ID_TOKEN_MAX_AGE_SECS,
            now,
        };
        let checked = match keys.verify(id_token.expose_secret(), &expect).await {
            Ok(claims) => id_token_fits(&claims, &nonce, &provider.client_id).map(|()| claims),
            Err(refusal) => Err(refusal),
        };
        let claims = match checked {
            Ok(claims) => claims,
            Err(refusal) => {
                self.sign_in_refused(&org, refusal.code(), serde_json::json!({"message": refusal.to_string()})).await;
                return Err(SignInError::IdToken(refusal));
            }
        };
        let subject = claims.get("sub").and_then(|s| s.as_str()).ok_or(SignInError::IdToken(FederationRefusal::MissingClaim("sub")))?;
        let identity = UserIdentity { issuer: provider.issuer.clone(), subject: subject.to_owned() };
        let Some(principal_id) = self.store.find_user(&org, &identity).await? else {
            // Who to map, for an administrator: the issuer and subject are not secrets.
            let detail = serde_json::json!({"issuer": identity.issuer, "subject": identity.subject});
            self.sign_in_refused(&org, "not_mapped", detail).await;
            return Err(SignInError::NotMapped);
        };
        let code = one_time_key(&org);
        let expires_at = model::now() + chrono::Duration::seconds(CODE_TTL_SECS);
        let record = SignInRecord::Code { principal_id, console_challenge, expires_at, sign_in_version: settings.sign_in_since };
        self.store.put_sign_in(&org, &code_slot(&code), &record).await?;
        Ok(code)
    }

    /// A refused sign-in, in the organisation's trail (aggregated per reason and minute).
    async fn sign_in_refused(&self, org: &OrgId, reason: &str, detail: serde_json::Value) {
        let entry = AuditEntry::new(org, &Actor::system("sign-in"), "user.sign_in", model::now()).refused(reason).detail(detail);
        self.record_refusal(entry).await;
    }

    fn outbound_for_sign_in(&self) -> Result<std::sync::Arc<crate::outbound::Outbound>, SignInError> {
        if let Some(outbound) = self.sign_in_outbound.get() {
            return Ok(outbound.clone());
        }
        let outbound = crate::outbound::Outbound::new(super::issuer_keys::issuer_outbound_rules(self.webhooks.allow_loopback))
            .map_err(|_| SignInError::ProviderUnreachable)?;
        Ok(self.sign_in_outbound.get_or_init(|| std::sync::Arc::new(outbound)).clone())
    }

    /// Step 3: the console's code and verifier, for the user's management token.
    pub async fn redeem_sign_in(&self, code: &str, code_verifier: &str) -> Result<IssuedToken, ExchangeError> {
        const REFUSED: ExchangeError =
            ExchangeError::InvalidGrant("the sign-in code is unknown, used, expired or not yours; sign in again");
        let org = org_of(code).ok_or(REFUSED)?;
        let Some(SignInRecord::Code { principal_id, console_challenge, expires_at, sign_in_version }) =
            self.store.take_sign_in(&org, &code_slot(code)).await?
        else {
            return Err(REFUSED);
        };
        if expires_at <= model::now() {
            return Err(REFUSED);
        }
        if s256(code_verifier) != console_challenge {
            // A code presented without the verifier of the console that asked for it: stolen,
            // or injected. The organisation's business.
            self.sign_in_refused(&org, "pkce_mismatch", serde_json::json!({"principalId": principal_id})).await;
            return Err(REFUSED);
        }
        let (principal, role_ids) = self.store.get_principal_with_roles(&org, &principal_id).await?.ok_or(REFUSED)?;
        let settings = self.store.get_trusted_issuers(&org).await?.unwrap_or_default();
        if !settings.maps(&principal) || settings.sign_in_since != sign_in_version {
            return Err(REFUSED);
        }
        let now = model::now();
        model::principal_may_authenticate(&principal, now).map_err(ExchangeError::Refused)?;
        let roles = self.granting_roles(&principal, &role_ids).await?;
        let scope: Vec<crate::ids::Permission> =
            roles.iter().flat_map(|r| r.permissions.iter().cloned()).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
        let role_ids: Vec<_> = roles.into_iter().map(|r| r.id).collect();
        let audience = self.tokens.settings().management_audience.clone();
        let grant =
            UserGrant { principal_id: &principal.id, org_id: &principal.org_id, roles: &role_ids, scope: &scope, audience: &audience };
        let (signed, claims) = self
            .tokens
            .current()
            .await
            .sign_for_user(&grant, settings.sign_in_since, now)
            .map_err(|e| ExchangeError::Sign(e.to_string()))?;
        // Proof that the mapping works: from now on it counts for the last-administrator rule.
        let provider = settings.sign_in.as_ref().map(|p| serde_json::json!({"issuer": p.issuer, "clientId": p.client_id}));
        let entry = AuditEntry::new(&org, &Actor::principal(&principal.id), "user.sign_in", now)
            .principal(&principal.id)
            .detail(serde_json::json!({"provider": provider}));
        self.store.record_sign_in(&principal, settings.version, &entry).await?;
        crate::service::audit("user.sign_in", principal.id.as_str(), org.as_str(), principal.id.as_str(), Ok(()));
        Ok(IssuedToken {
            access_token: SecretString::from(signed),
            expires_in: self.tokens.settings().lifetime_secs,
            scope: claims.scope.clone(),
            claims,
            verified_from_cache: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_time_keys_carry_their_organisation_and_nothing_else_parses() {
        let org = OrgId::parse("acme-1").unwrap();
        let key = one_time_key(&org);
        assert_eq!(org_of(&key), Some(org));
        for bad in ["", "acme", "acme.", "Acme.abc", "acme.ab/c", &format!("acme.{}", "a".repeat(33))] {
            assert_eq!(org_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn pkce_s256_is_rfc_7636s() {
        // RFC 7636, appendix B.
        assert_eq!(s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
        assert!(is_challenge(&s256(&verifier())));
        assert!(!is_challenge("short"));
    }
}
