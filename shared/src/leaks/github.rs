//! GitHub's secret-scanning partner alerts: GitHub finds a key in a public repository, signs the
//! alert with one of its published ECDSA P-256 keys, and posts it here. A verified alert is
//! acted on like a leak report; unlike one, its answer labels each token (GitHub is
//! authenticated by its signature, and uses the labels to cut false positives).

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::signature::{ECDSA_P256_SHA256_ASN1, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::MAX_KEYS_PER_REPORT;
use crate::api_key::ApiKey;
use crate::error::DomainError;
use crate::service::Iam;

/// The DER prefix of a P-256 public key in SubjectPublicKeyInfo form; what follows it is the
/// 65-byte uncompressed point that `ring` verifies with.
pub const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01,
    0x07, 0x03, 0x42, 0x00,
];

/// GitHub's secret-scanning public keys by identifier, as its key endpoint
/// (`GET https://api.github.com/meta/public_keys/secret_scanning`) publishes them.
#[derive(Clone, Default)]
pub struct GithubScanningKeys(HashMap<String, Vec<u8>>);

impl std::fmt::Debug for GithubScanningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("GithubScanningKeys").field(&self.0.keys().collect::<Vec<_>>()).finish()
    }
}

impl GithubScanningKeys {
    /// Parses the key endpoint's document: `{"public_keys": [{"key_identifier", "key" (PEM)}]}`.
    pub fn from_json(document: &str) -> Result<Self, String> {
        #[derive(Deserialize)]
        struct Document {
            public_keys: Vec<Key>,
        }
        #[derive(Deserialize)]
        struct Key {
            key_identifier: String,
            key: String,
        }
        let document: Document = serde_json::from_str(document).map_err(|e| format!("not GitHub's public key document: {e}"))?;
        let mut keys = HashMap::new();
        for key in document.public_keys {
            let body: String = key.key.lines().filter(|l| !l.starts_with("-----")).map(str::trim).collect();
            let der = STANDARD.decode(body).map_err(|_| format!("key {}: not PEM", key.key_identifier))?;
            let point = der
                .strip_prefix(P256_SPKI_PREFIX.as_slice())
                .filter(|p| p.len() == 65)
                .ok_or_else(|| format!("key {}: not an ECDSA P-256 public key", key.key_identifier))?;
            keys.insert(key.key_identifier, point.to_vec());
        }
        if keys.is_empty() {
            return Err("GitHub's public key document lists no key".into());
        }
        Ok(Self(keys))
    }

    fn knows(&self, identifier: &str) -> bool {
        self.0.contains_key(identifier.trim())
    }

    /// Whether `signature` (base64 DER ECDSA) over `payload` verifies with the key `identifier`.
    pub fn verify(&self, identifier: &str, signature: &str, payload: &[u8]) -> bool {
        let (Some(point), Ok(signature)) = (self.0.get(identifier.trim()), STANDARD.decode(signature.trim())) else { return false };
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, point).verify(payload, &signature).is_ok()
    }
}

/// How long keys fetched from GitHub's endpoint are used before they are fetched again (when
/// the next alert comes), and how often at most an unknown key identifier makes it refetch:
/// GitHub publishes a new key before signing with it, and alerts naming made-up identifiers
/// cannot make the service hammer GitHub.
const FETCHED_KEYS_TTL: std::time::Duration = std::time::Duration::from_secs(60 * 60);
const MIN_REFETCH: std::time::Duration = std::time::Duration::from_secs(60);

/// Where GitHub's keys come from: configured (`IAM_GITHUB_SECRET_SCANNING_KEYS`), fetched from
/// GitHub's key endpoint (`IAM_GITHUB_SECRET_SCANNING_KEYS_URL`), or both.
pub struct GithubKeySource {
    configured: Option<GithubScanningKeys>,
    endpoint: Option<GithubKeyEndpoint>,
}

impl std::fmt::Debug for GithubKeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url = self.endpoint.as_ref().map(|e| e.url.as_str());
        f.debug_struct("GithubKeySource").field("configured", &self.configured).field("endpoint", &url).finish()
    }
}

/// GitHub's key endpoint, fetched through the outbound rules, and what it last answered.
pub struct GithubKeyEndpoint {
    url: String,
    outbound: crate::outbound::Outbound,
    fetched: tokio::sync::Mutex<Fetched>,
    min_refetch: std::time::Duration,
}

#[derive(Default)]
struct Fetched {
    keys: Option<GithubScanningKeys>,
    fetched_at: Option<std::time::Instant>,
    tried_at: Option<std::time::Instant>,
}

impl GithubKeyEndpoint {
    /// Fails when the URL is not one the outbound rules allow.
    pub fn new(url: &str, outbound: crate::outbound::Outbound) -> Result<Self, crate::outbound::OutboundError> {
        outbound.check_url(url)?;
        Ok(Self { url: url.to_owned(), outbound, fetched: Default::default(), min_refetch: MIN_REFETCH })
    }

    /// How often at most an unknown key identifier makes it refetch (a minute by default;
    /// tests shorten it rather than wait).
    pub fn with_min_refetch(self, min_refetch: std::time::Duration) -> Self {
        Self { min_refetch, ..self }
    }

    async fn verify(&self, identifier: &str, signature: &str, payload: &[u8]) -> bool {
        let mut fetched = self.fetched.lock().await;
        let stale = fetched.fetched_at.is_none_or(|at| at.elapsed() > FETCHED_KEYS_TTL);
        let unknown = fetched.keys.as_ref().is_none_or(|keys| !keys.knows(identifier));
        let may_try = fetched.tried_at.is_none_or(|at| at.elapsed() >= self.min_refetch);
        if (stale || unknown) && may_try {
            fetched.tried_at = Some(std::time::Instant::now());
            let answer = self.outbound.get(&self.url).await.map_err(|e| e.to_string());
            match answer.and_then(|body| GithubScanningKeys::from_json(&String::from_utf8_lossy(&body))) {
                Ok(keys) => {
                    fetched.keys = Some(keys);
                    fetched.fetched_at = fetched.tried_at;
                }
                // The keys in hand (if any) keep serving: GitHub rotates rarely.
                Err(error) => tracing::warn!(url = %self.url, %error, "GitHub's secret-scanning keys could not be fetched"),
            }
        }
        fetched.keys.as_ref().is_some_and(|keys| keys.verify(identifier, signature, payload))
    }
}

impl GithubKeySource {
    /// `None` when neither is given: the partner route then answers 404.
    pub fn new(configured: Option<GithubScanningKeys>, endpoint: Option<GithubKeyEndpoint>) -> Option<Self> {
        (configured.is_some() || endpoint.is_some()).then_some(Self { configured, endpoint })
    }

    /// Whether `signature` over `payload` verifies with GitHub's key `identifier`, from the
    /// configured keys or, failing them, the fetched ones.
    pub async fn verify(&self, identifier: &str, signature: &str, payload: &[u8]) -> bool {
        if self.configured.as_ref().is_some_and(|keys| keys.verify(identifier, signature, payload)) {
            return true;
        }
        match &self.endpoint {
            Some(endpoint) => endpoint.verify(identifier, signature, payload).await,
            None => false,
        }
    }
}

/// One match in an alert, as GitHub sends it.
#[derive(Deserialize)]
struct GithubMatch {
    token: String,
    #[serde(rename = "type")]
    token_type: String,
}

/// GitHub's feedback format: the token by its SHA-256 (never sent back raw), and whether it
/// was one of ours.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GithubAlertLabel {
    pub token_hash: String,
    pub token_type: String,
    pub label: &'static str,
}

impl Iam {
    /// Acts on a GitHub secret-scanning alert whose signature verified: revokes each key that
    /// proves out (as a leak report does) and labels every match.
    pub async fn handle_github_alert(
        &self,
        identifier: &str,
        signature: &str,
        payload: &[u8],
    ) -> Result<Vec<GithubAlertLabel>, DomainError> {
        let keys = self.github_scanning_keys.as_ref().ok_or(DomainError::NotFound("GitHub secret-scanning endpoint"))?;
        if !keys.verify(identifier, signature, payload).await {
            tracing::warn!(target: "audit", action = "credential.github_alert", actor = "anonymous", outcome = "failure", reason = "signature", "audit");
            return Err(DomainError::BadSignature);
        }
        // Refusals never quote the payload: it carries the tokens.
        let matches: Vec<GithubMatch> = serde_json::from_slice(payload)
            .map_err(|_| DomainError::invalid("the alert must be a JSON array of {token, type, url, source}"))?;
        if matches.len() > MAX_KEYS_PER_REPORT {
            return Err(DomainError::invalid(format!("an alert names at most {MAX_KEYS_PER_REPORT} tokens")));
        }
        let mut labels = Vec::with_capacity(matches.len());
        for m in matches {
            let ours = match ApiKey::parse(m.token.trim()) {
                Ok(key) => self.revoke_if_proved(&key).await.map_err(|e| DomainError::Unavailable(Box::new(e)))?,
                Err(_) => false,
            };
            let token_hash = hex(Sha256::digest(m.token.as_bytes()).as_slice());
            labels.push(GithubAlertLabel {
                token_hash,
                token_type: m.token_type,
                label: if ours { "true_positive" } else { "false_positive" },
            });
        }
        let found = labels.iter().filter(|l| l.label == "true_positive").count();
        tracing::info!(target: "audit", action = "credential.github_alert", actor = "github", tokens = labels.len(), found, outcome = "success", "audit");
        Ok(labels)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};

    use super::*;

    /// A key pair in GitHub's place, and its key document.
    pub(crate) fn github_key() -> (EcdsaKeyPair, String) {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).unwrap();
        let der = [P256_SPKI_PREFIX.as_slice(), pair.public_key().as_ref()].concat();
        let pem = format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", STANDARD.encode(der));
        let document = serde_json::json!({"public_keys": [{"key_identifier": "test-key", "key": pem, "is_current": true}]});
        (pair, document.to_string())
    }

    #[test]
    fn a_signed_payload_verifies_and_a_tampered_one_does_not() {
        let (pair, document) = github_key();
        let keys = GithubScanningKeys::from_json(&document).unwrap();
        let payload = br#"[{"token":"ik_x","type":"infuse_api_key","url":"https://github.com/o/r","source":"content"}]"#;
        let signature = STANDARD.encode(pair.sign(&SystemRandom::new(), payload).unwrap().as_ref());
        assert!(keys.verify("test-key", &signature, payload));
        let mut tampered = payload.to_vec();
        tampered[12] ^= 1;
        assert!(!keys.verify("test-key", &signature, &tampered), "a changed payload");
        assert!(!keys.verify("other-key", &signature, payload), "an unknown key identifier");
        assert!(!keys.verify("test-key", "not base64!", payload));
    }

    #[test]
    fn documents_that_are_not_githubs_are_refused() {
        assert!(GithubScanningKeys::from_json("{}").is_err());
        assert!(GithubScanningKeys::from_json(r#"{"public_keys": []}"#).is_err());
        let rsa = r#"{"public_keys": [{"key_identifier": "k", "key": "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA\n-----END PUBLIC KEY-----"}]}"#;
        assert!(GithubScanningKeys::from_json(rsa).is_err(), "not P-256");
    }
}
