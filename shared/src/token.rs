//! RS256 access tokens (RFC 9068): the signing key, the JWKS, signing and verifying.

use std::collections::{HashMap, HashSet};
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use jsonwebtoken::DecodingKey;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use rsa::traits::PublicKeyParts;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::api_key::client_id;
use crate::ids::{KeyId, OrgId, Permission, PrincipalId, RoleId, encode_u128};
use crate::random;

pub const ALGORITHM: &str = "RS256";
pub const DEFAULT_LIFETIME_SECS: u64 = 15 * 60;
pub const MAX_LIFETIME_SECS: u64 = 60 * 60;
const RSA_BITS: usize = 2048;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("signing key document: {0}")]
    Document(String),
    #[error("signing key generation failed: {0}")]
    Generate(String),
    #[error("signing key source: {0}")]
    Source(String),
    #[error(
        "rotation refused: it would unpublish the previous signing key while tokens it signed may still be valid; retry in {retry_after_secs} s"
    )]
    RotationTooSoon { retry_after_secs: u64 },
}

/// The signing key as stored (a Secrets Manager secret, or a 0600 file locally).
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SigningKeyDocument {
    pub kid: String,
    pub alg: String,
    #[serde(serialize_with = "expose")]
    pub private_key_pem: SecretString,
}

fn expose<S: serde::Serializer>(secret: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(secret.expose_secret())
}

impl fmt::Debug for SigningKeyDocument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKeyDocument").field("kid", &self.kid).field("alg", &self.alg).finish_non_exhaustive()
    }
}

impl SigningKeyDocument {
    pub fn generate() -> Result<Self, KeyError> {
        let key = rsa::PrivateKey::new(&mut getrandom::SysRng, RSA_BITS).map_err(|e| KeyError::Generate(e.to_string()))?;
        let pem = key.to_pkcs8_pem(LineEnding::LF).map_err(|e| KeyError::Generate(e.to_string()))?;
        let kid = format!("k{}", encode_u128(u128::from_be_bytes(random::bytes::<16>())));
        Ok(Self { kid, alg: ALGORITHM.to_owned(), private_key_pem: SecretString::from(pem.as_str().to_owned()) })
    }

    /// The stored form. Holds the private key: only for the secret or the 0600 file.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a signing key document always serialises")
    }

    pub fn from_json(raw: &str) -> Result<Self, KeyError> {
        serde_json::from_str(raw).map_err(|e| KeyError::Document(format!("not a signing key document ({})", e.classify_name())))
    }
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    /// serde_json messages can quote input, and the input here is a private key.
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "io error",
            serde_json::error::Category::Syntax => "invalid JSON",
            serde_json::error::Category::Data => "missing or mistyped field",
            serde_json::error::Category::Eof => "truncated JSON",
        }
    }
}

/// One public key as the JWKS publishes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicJwk {
    pub kty: String,
    #[serde(rename = "use")]
    pub use_: String,
    pub alg: String,
    pub kid: String,
    pub n: String,
    pub e: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Jwks {
    pub keys: Vec<PublicJwk>,
}

/// A parsed key pair: parsed once at start, used for every signature. `jsonwebtoken`'s
/// pure-Rust backend re-parses the DER key on every signature, and the pure-Rust RSA private
/// operation itself costs ~1.55 ms here; `ring` (already linked for TLS) signs PKCS#1 v1.5
/// with a pre-parsed, blinded key in well under that. Verification stays with `jsonwebtoken`
/// (see `iam-verifier`); `rsa` only parses the PEM and derives the JWK.
pub struct SigningKey {
    kid: String,
    signer: ring::signature::RsaKeyPair,
    public: PublicJwk,
}

/// The JOSE header of every access token. Field order is fixed by the struct.
#[derive(Serialize)]
struct JoseHeader<'a> {
    alg: &'static str,
    typ: &'static str,
    kid: &'a str,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl SigningKey {
    pub fn from_document(doc: &SigningKeyDocument) -> Result<Self, KeyError> {
        if doc.alg != ALGORITHM {
            return Err(KeyError::Document(format!("unsupported alg '{}', expected RS256", doc.alg)));
        }
        if doc.kid.is_empty() || doc.kid.len() > 128 || !doc.kid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(KeyError::Document("kid must be 1-128 characters of A-Z, a-z, 0-9, - and _".into()));
        }
        let pem = doc.private_key_pem.expose_secret();
        let private = rsa::PrivateKey::from_pkcs8_pem(pem)
            .or_else(|_| rsa::PrivateKey::from_pkcs1_pem(pem))
            .map_err(|_| KeyError::Document("privateKeyPem is not an RSA private key in PKCS#8 or PKCS#1 PEM".into()))?;
        let pkcs8 = rsa::pkcs8::EncodePrivateKey::to_pkcs8_der(&private)
            .map_err(|_| KeyError::Document("privateKeyPem could not be re-encoded as PKCS#8".into()))?;
        let signer = ring::signature::RsaKeyPair::from_pkcs8(pkcs8.as_bytes())
            .map_err(|e| KeyError::Document(format!("privateKeyPem is not a usable RS256 key ({e}); 2048-4096 bits are")))?;
        let public = private.to_public_key();
        let public = PublicJwk {
            kty: "RSA".into(),
            use_: "sig".into(),
            alg: ALGORITHM.into(),
            kid: doc.kid.clone(),
            n: URL_SAFE_NO_PAD.encode(public.n().as_ref().to_be_bytes_trimmed_vartime()),
            e: URL_SAFE_NO_PAD.encode(public.e().to_be_bytes_trimmed_vartime()),
        };
        Ok(Self { kid: doc.kid.clone(), signer, public })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public half, as the JWKS and the public key set publish it.
    pub fn public_jwk(&self) -> &PublicJwk {
        &self.public
    }
}

pub use iam_verifier::{AccessClaims, MAX_TOKEN_BYTES, Rejection as TokenRejection, TOKEN_TYPE};

/// The credential a token was minted from (its `client_id`).
pub fn key_id_of(claims: &AccessClaims) -> Option<KeyId> {
    claims.client_id.strip_prefix(crate::api_key::KEY_PREFIX).and_then(|k| KeyId::parse(k).ok())
}

/// Whose token it is and what it carries, whatever it was minted from.
#[derive(Clone, Copy)]
pub struct Holder<'a> {
    pub principal_id: &'a PrincipalId,
    pub org_id: &'a OrgId,
    pub roles: &'a [RoleId],
    pub scope: &'a [Permission],
    pub audience: &'a str,
}

/// What a signed-in person's management token is minted for.
pub type UserGrant<'a> = Holder<'a>;

/// Everything a token's claims are made from.
struct Minted<'a> {
    holder: Holder<'a>,
    client_id: String,
    principal_type: &'static str,
    trust_policy: Option<String>,
    sign_in_version: Option<u64>,
}

/// What a service account's token is minted for.
pub struct ServiceAccountGrant<'a> {
    pub holder: Holder<'a>,
    pub trust_policy: &'a crate::ids::TrustPolicyId,
}

/// What a token is minted for.
pub struct Grant<'a> {
    pub principal_id: &'a PrincipalId,
    pub org_id: &'a OrgId,
    pub key_id: &'a KeyId,
    pub roles: &'a [RoleId],
    pub scope: &'a [Permission],
    pub audience: &'a str,
}

#[derive(Debug, Clone)]
pub struct TokenSettings {
    pub issuer: String,
    /// The downstream APIs' audiences; the first is an exchange's default.
    pub audiences: Vec<String>,
    /// The management API's own audience, never a downstream one: a token a downstream service
    /// received (or logged) cannot be replayed against IAM, and `iam:` permissions appear only
    /// in tokens for this audience.
    pub management_audience: String,
    pub lifetime_secs: u64,
}

impl TokenSettings {
    /// The management audience when none is configured: derived from the issuer, so it is
    /// unique per deployment and stable as long as the issuer is.
    pub fn default_management_audience(issuer: &str) -> String {
        format!("{}/management", issuer.trim_end_matches('/'))
    }

    pub fn is_management(&self, audience: &str) -> bool {
        self.management_audience == audience
    }
}

/// Signs with its signing key, when it holds one; verifies against every published key.
pub struct TokenService {
    settings: TokenSettings,
    /// Only in the processes that sign (the exchange, the rotation's self-test, `iam-local`):
    /// every other function verifies from the public key set and never holds a private key.
    signer: Option<SigningKey>,
    /// In JWKS order: the signing key first.
    published: Vec<PublicJwk>,
    decoding: HashMap<String, DecodingKey>,
}

impl fmt::Debug for TokenService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kid = self.signer.as_ref().map(|s| s.kid.as_str());
        f.debug_struct("TokenService").field("settings", &self.settings).field("signing_kid", &kid).finish()
    }
}

impl TokenService {
    /// `signer` (when given) signs and is published first; `published` (previous, pending or,
    /// without a signer, every key) are only published and accepted.
    pub fn new(settings: TokenSettings, signer: Option<SigningKey>, published: Vec<PublicJwk>) -> Result<Self, KeyError> {
        if settings.audiences.is_empty() {
            return Err(KeyError::Document("at least one audience must be configured".into()));
        }
        if settings.management_audience.is_empty() || settings.audiences.contains(&settings.management_audience) {
            return Err(KeyError::Document("the management audience must be set and differ from every downstream audience".into()));
        }
        if settings.lifetime_secs == 0 || settings.lifetime_secs > MAX_LIFETIME_SECS {
            return Err(KeyError::Document(format!("token lifetime must be 1-{MAX_LIFETIME_SECS} seconds")));
        }
        let mut in_order = Vec::new();
        let mut decoding = HashMap::new();
        for jwk in signer.iter().map(|s| &s.public).chain(published.iter()) {
            if decoding.contains_key(&jwk.kid) {
                continue;
            }
            if jwk.kty != "RSA" || jwk.alg != ALGORITHM {
                return Err(KeyError::Document(format!("published key '{}' is not an RS256 RSA key", jwk.kid)));
            }
            let decoder = DecodingKey::from_rsa_components(&jwk.n, &jwk.e).map_err(|e| KeyError::Document(format!("public key: {e}")))?;
            decoding.insert(jwk.kid.clone(), decoder);
            in_order.push(jwk.clone());
        }
        Ok(Self { settings, signer, published: in_order, decoding })
    }

    pub fn settings(&self) -> &TokenSettings {
        &self.settings
    }

    pub fn jwks(&self) -> Jwks {
        Jwks { keys: self.published.clone() }
    }

    pub fn sign(&self, grant: &Grant<'_>, now: DateTime<Utc>) -> Result<(String, AccessClaims), SignError> {
        let holder = Holder {
            principal_id: grant.principal_id,
            org_id: grant.org_id,
            roles: grant.roles,
            scope: grant.scope,
            audience: grant.audience,
        };
        self.sign_claims(self.claims(
            Minted { holder, client_id: client_id(grant.key_id), principal_type: "ApiKey", trust_policy: None, sign_in_version: None },
            now,
        ))
    }

    /// A service account's token: `client_id` is the account's `sa_…` id, and `trust_policy`
    /// names the policy that admitted the workload's own token.
    pub fn sign_for_service_account(
        &self,
        grant: &ServiceAccountGrant<'_>,
        now: DateTime<Utc>,
    ) -> Result<(String, AccessClaims), SignError> {
        let minted = Minted {
            holder: grant.holder,
            client_id: crate::federation::trust::client_id_of(grant.holder.principal_id),
            principal_type: "ServiceAccount",
            trust_policy: Some(grant.trust_policy.to_string()),
            sign_in_version: None,
        };
        self.sign_claims(self.claims(minted, now))
    }

    /// A signed-in person's token: `principal_type` `User`, `client_id` the console, and the
    /// version of the sign-in settings it was issued under.
    pub fn sign_for_user(
        &self,
        grant: &UserGrant<'_>,
        sign_in_version: u64,
        now: DateTime<Utc>,
    ) -> Result<(String, AccessClaims), SignError> {
        let client_id = crate::federation::sign_in::CONSOLE_CLIENT_ID.to_owned();
        let minted =
            Minted { holder: *grant, client_id, principal_type: "User", trust_policy: None, sign_in_version: Some(sign_in_version) };
        self.sign_claims(self.claims(minted, now))
    }

    fn claims(&self, minted: Minted<'_>, now: DateTime<Utc>) -> AccessClaims {
        let iat = now.timestamp();
        let Holder { principal_id, org_id, roles, scope, audience } = minted.holder;
        AccessClaims {
            iss: self.settings.issuer.clone(),
            sub: principal_id.to_string(),
            aud: audience.to_owned(),
            client_id: minted.client_id,
            org_id: org_id.to_string(),
            principal_type: minted.principal_type.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            scope: scope.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(" "),
            iat,
            nbf: iat,
            exp: iat + self.settings.lifetime_secs as i64,
            jti: encode_u128(u128::from_be_bytes(random::bytes::<16>())),
            trust_policy: minted.trust_policy,
            sign_in_version: minted.sign_in_version,
        }
    }

    fn sign_claims(&self, claims: AccessClaims) -> Result<(String, AccessClaims), SignError> {
        let Some(signer) = &self.signer else { return Err(SignError::NoSigningKey) };
        let header = JoseHeader { alg: ALGORITHM, typ: TOKEN_TYPE, kid: &signer.kid };
        let mut token = format!("{}.{}", b64_json(&header), b64_json(&claims));
        let mut signature = vec![0; signer.signer.public().modulus_len()];
        signer
            .signer
            .sign(&ring::signature::RSA_PKCS1_SHA256, &ring::rand::SystemRandom::new(), token.as_bytes(), &mut signature)
            .map_err(|e| SignError::Failed(e.to_string()))?;
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(&signature));
        Ok((token, claims))
    }

    /// Verifies a token for `audience` under the verifier crate's rules (the same ones every
    /// downstream service applies), against every published key.
    pub fn verify(&self, token: &str, audience: &str) -> Result<AccessClaims, TokenRejection> {
        let expect = iam_verifier::Expectations::new(self.settings.issuer.clone(), audience);
        iam_verifier::verify(token, &self.decoding, &expect)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("signing failed: {0}")]
    Failed(String),
    /// A deployment mistake: a function that only verifies was asked to sign.
    #[error("this process holds no signing key (only the exchange and the rotation function do)")]
    NoSigningKey,
}

/// A JWT segment: base64url of the JSON of a plain struct (which cannot fail to serialise).
fn b64_json<T: Serialize>(value: &T) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).expect("plain structs serialise"))
}

/// Signs a probe token with `doc` and verifies it: a key that passes can serve.
pub fn self_test(doc: &SigningKeyDocument) -> Result<(), KeyError> {
    let settings = TokenSettings {
        issuer: "urn:iam:self-test".into(),
        audiences: vec!["urn:iam:self-test".into()],
        management_audience: "urn:iam:management".into(),
        lifetime_secs: 60,
    };
    let service = TokenService::new(settings, Some(SigningKey::from_document(doc)?), vec![])?;
    let (pid, org, kid) = (PrincipalId::generate(), OrgId::parse("self-test").expect("valid org id"), KeyId::generate());
    let grant = Grant { principal_id: &pid, org_id: &org, key_id: &kid, roles: &[], scope: &[], audience: "urn:iam:self-test" };
    let (token, _) = service.sign(&grant, crate::model::now()).map_err(|e| KeyError::Document(format!("cannot sign: {e}")))?;
    service.verify(&token, "urn:iam:self-test").map(|_| ()).map_err(|e| KeyError::Document(format!("cannot verify its own token: {e}")))
}

/// Permissions named in a space-separated scope string, deduplicated.
pub fn parse_scope(raw: &str) -> Result<Vec<Permission>, String> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for part in raw.split(' ').filter(|p| !p.is_empty()) {
        // Never echo the value: a client that pastes its key into `scope` must not see it logged.
        let p =
            Permission::parse(part).map_err(|_| "scope contains a value that is not a permission (e.g. iam:api-keys:read)".to_owned())?;
        if seen.insert(p.clone()) {
            out.push(p);
        }
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::LazyLock;

    /// RSA key generation is slow; every test in this binary shares one key.
    pub static TEST_KEY: LazyLock<SigningKeyDocument> = LazyLock::new(|| SigningKeyDocument::generate().unwrap());

    fn doc_clone() -> SigningKeyDocument {
        SigningKeyDocument::from_json(&serde_json::to_string(&*TEST_KEY).unwrap()).unwrap()
    }

    fn service() -> TokenService {
        let settings = TokenSettings {
            issuer: "https://iam.test/iam".into(),
            audiences: vec!["api".into()],
            management_audience: "urn:iam:management".into(),
            lifetime_secs: 900,
        };
        TokenService::new(settings, Some(SigningKey::from_document(&doc_clone()).unwrap()), vec![]).unwrap()
    }

    #[test]
    fn sign_then_verify_round_trips() {
        let svc = service();
        let (pid, org, kid) = (PrincipalId::generate(), OrgId::parse("acme").unwrap(), KeyId::generate());
        let roles = [RoleId::parse("iam-admin").unwrap()];
        let scope = [Permission::parse("iam:api-keys:read").unwrap()];
        let grant = Grant { principal_id: &pid, org_id: &org, key_id: &kid, roles: &roles, scope: &scope, audience: "api" };
        let (token, claims) = svc.sign(&grant, crate::model::now()).unwrap();
        let verified = svc.verify(&token, "api").unwrap();
        assert_eq!(verified, claims);
        assert_eq!(verified.exp - verified.iat, 900);
        assert!(verified.has_permission("iam:api-keys:read"));
        assert_eq!(key_id_of(&verified), Some(kid));
        assert!(matches!(svc.verify(&token, "other"), Err(TokenRejection::Invalid(_))));
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    }

    #[test]
    fn rejects_oversized_and_garbage_tokens() {
        let svc = service();
        assert_eq!(svc.verify(&"a".repeat(9000), "api"), Err(TokenRejection::TooLarge));
        assert_eq!(svc.verify("not.a.jwt", "api"), Err(TokenRejection::Malformed));
        assert_eq!(svc.verify("", "api"), Err(TokenRejection::Malformed));
    }

    #[test]
    fn document_debug_and_errors_hide_the_private_key() {
        let doc = doc_clone();
        assert!(!format!("{doc:?}").contains("PRIVATE"));
        let broken = r#"{"kid":"k1","alg":"RS256","privateKeyPem":"-----BEGIN PRIVATE KEY-----\nMIIsecret"#;
        let err = SigningKeyDocument::from_json(broken).unwrap_err().to_string();
        assert!(!err.contains("MIIsecret"), "{err}");
        let bad = SigningKeyDocument { kid: "k1".into(), alg: "RS256".into(), private_key_pem: SecretString::from("MIIsecret") };
        let err = SigningKey::from_document(&bad).unwrap_err().to_string();
        assert!(!err.contains("MIIsecret"), "{err}");
    }

    #[test]
    fn jwks_lists_current_then_others_once() {
        let current = SigningKey::from_document(&doc_clone()).unwrap();
        let again = SigningKey::from_document(&doc_clone()).unwrap();
        let settings = TokenSettings {
            issuer: "i".into(),
            audiences: vec!["a".into()],
            management_audience: "urn:iam:management".into(),
            lifetime_secs: 60,
        };
        let svc = TokenService::new(settings.clone(), Some(current), vec![again.public_jwk().clone()]).unwrap();
        assert_eq!(svc.jwks().keys.len(), 1);
        let verifying = TokenService::new(settings, None, vec![again.public_jwk().clone()]).unwrap();
        assert_eq!(verifying.jwks().keys.len(), 1);
        let (pid, org, kid) = (PrincipalId::generate(), OrgId::parse("acme").unwrap(), KeyId::generate());
        let grant = Grant { principal_id: &pid, org_id: &org, key_id: &kid, roles: &[], scope: &[], audience: "a" };
        let (token, _) = svc.sign(&grant, crate::model::now()).unwrap();
        verifying.verify(&token, "a").expect("a verifier from the public key set accepts the signer's tokens");
        assert!(matches!(verifying.sign(&grant, crate::model::now()), Err(SignError::NoSigningKey)));
    }

    #[test]
    fn lifetime_is_capped_at_one_hour() {
        let settings = TokenSettings {
            issuer: "i".into(),
            audiences: vec!["a".into()],
            management_audience: "urn:iam:management".into(),
            lifetime_secs: 3601,
        };
        assert!(TokenService::new(settings, Some(SigningKey::from_document(&doc_clone()).unwrap()), vec![]).is_err());
    }

    #[test]
    fn scope_parsing() {
        assert_eq!(parse_scope("a:b  a:b c:d").unwrap().len(), 2);
        assert!(parse_scope("nope").is_err());
        assert!(parse_scope("").unwrap().is_empty());
    }
}
