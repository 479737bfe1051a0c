//! Verifies the access tokens of the IAM API-key service.
//!
//! The rules are fixed by the verifier, never by the token: RS256 only (RFC 8725 §3.1), a
//! `kid` that the issuer publishes, `typ: at+jwt` (RFC 9068), no `jku`/`x5u`/`jwk`/`x5c`
//! headers, tokens of at most 8 KiB, `iss`, `aud`, `exp`, `nbf` enforced with 30 s of clock
//! leeway, and optionally one organisation (`org_id`). [`verify`] applies them with keys in hand (the service itself does this);
//! [`RemoteVerifier`] fetches and caches the JWKS from the issuer's discovery document and
//! refetches when it meets an unknown `kid` (downstream services do this).
//!
//! ```no_run
//! # async fn example(token: &str) -> Result<(), iam_verifier::Rejection> {
//! let verifier = iam_verifier::RemoteVerifier::discover("https://abc.execute-api.eu-west-1.amazonaws.com/iam", "infuse-api").await?;
//! let claims = verifier.verify(token).await?;
//! if claims.has_permission("iot:devices:provision") { /* … */ }
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

pub const TOKEN_TYPE: &str = "at+jwt";
/// Tokens larger than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Clock skew tolerated between the issuer and its verifiers.
pub const LEEWAY_SECS: u64 = 30;

/// The claims of an access token: RFC 9068 plus `org_id`, `principal_type` and `roles`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub client_id: String,
    pub org_id: String,
    pub principal_type: String,
    pub roles: Vec<String>,
    pub scope: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
}

impl AccessClaims {
    pub fn permissions(&self) -> impl Iterator<Item = &str> {
        self.scope.split(' ').filter(|s| !s.is_empty())
    }

    pub fn has_permission(&self, wanted: &str) -> bool {
        self.permissions().any(|p| p == wanted)
    }
}

/// Why a token was refused. More reasons may come: match with a wildcard arm.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    #[error("the token is too large")]
    TooLarge,
    #[error("the token is malformed")]
    Malformed,
    #[error("the token header is not acceptable")]
    Header,
    #[error("the token is signed with an unknown key")]
    UnknownKey,
    #[error("the token is invalid: {0}")]
    Invalid(String),
    #[error("the token belongs to another organisation")]
    OtherOrganisation,
    #[error("the issuer's keys could not be fetched: {0}")]
    Fetch(String),
}

/// Where a verifier finds the public key for a `kid`.
pub trait KeyLookup {
    fn key(&self, kid: &str) -> Option<&DecodingKey>;
}

impl KeyLookup for HashMap<String, DecodingKey> {
    fn key(&self, kid: &str) -> Option<&DecodingKey> {
        self.get(kid)
    }
}

/// What a token must say to be accepted. Build it with [`Expectations::new`]; more
/// expectations may come.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Expectations {
    pub issuer: String,
    pub audience: String,
    /// When set, only tokens of this organisation (`org_id`) are accepted. A service that holds
    /// one organisation's data sets it; one that serves many must instead scope every lookup
    /// by the token's `org_id`, as a token of any organisation verifies.
    pub organisation: Option<String>,
}

impl Expectations {
    /// A trailing `/` on `issuer` is dropped: the issuer never carries one.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        let issuer = issuer.into().trim_end_matches('/').to_owned();
        Self { issuer, audience: audience.into(), organisation: None }
    }

    pub fn for_organisation(mut self, organisation: impl Into<String>) -> Self {
        self.organisation = Some(organisation.into());
        self
    }
}

/// Verifies `token` against `keys` under the fixed rules above.
pub fn verify(token: &str, keys: &impl KeyLookup, expect: &Expectations) -> Result<AccessClaims, Rejection> {
    let kid = acceptable_kid(token)?;
    let key = keys.key(&kid).ok_or(Rejection::UnknownKey)?;
    check_signature_and_claims(token, key, expect)
}

/// The header checks, answering the `kid` to look up.
fn acceptable_kid(token: &str) -> Result<String, Rejection> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Rejection::TooLarge);
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| Rejection::Malformed)?;
    let typ_ok = header.typ.as_deref().is_some_and(|t| t.eq_ignore_ascii_case(TOKEN_TYPE) || t.eq_ignore_ascii_case("application/at+jwt"));
    if header.alg != Algorithm::RS256
        || !typ_ok
        || header.jku.is_some()
        || header.x5u.is_some()
        || header.jwk.is_some()
        || header.x5c.is_some()
        || header.cty.is_some()
    {
        return Err(Rejection::Header);
    }
    header.kid.ok_or(Rejection::UnknownKey)
}

fn check_signature_and_claims(token: &str, key: &DecodingKey, expect: &Expectations) -> Result<AccessClaims, Rejection> {
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_issuer(&[&expect.issuer]);
    validation.set_audience(&[&expect.audience]);
    validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
    validation.validate_nbf = true;
    validation.leeway = LEEWAY_SECS;
    let claims =
        jsonwebtoken::decode::<AccessClaims>(token, key, &validation).map(|d| d.claims).map_err(|e| Rejection::Invalid(e.to_string()))?;
    match &expect.organisation {
        Some(organisation) if *organisation != claims.org_id => Err(Rejection::OtherOrganisation),
        _ => Ok(claims),
    }
}

/// Parses a JWKS document into decoding keys, keeping only RSA signing keys for RS256.
pub fn keys_from_jwks(raw: &[u8]) -> Result<HashMap<String, DecodingKey>, Rejection> {
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_slice(raw).map_err(|e| Rejection::Fetch(format!("JWKS is not valid: {e}")))?;
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        let Some(kid) = jwk.common.key_id.clone() else { continue };
        if !matches!(jwk.algorithm, jsonwebtoken::jwk::AlgorithmParameters::RSA(_)) {
            continue;
        }
        if let Ok(key) = DecodingKey::from_jwk(jwk) {
            keys.insert(kid, key);
        }
    }
    Ok(keys)
}

/// Fetches a URL's body. The default is an HTTPS (and HTTP) client; tests may substitute.
pub trait Fetch: Send + Sync + 'static {
    fn get(&self, url: &str) -> impl std::future::Future<Output = Result<Vec<u8>, String>> + Send;
}

/// HTTPS with the platform's root certificates (plain HTTP allowed, for local issuers).
pub struct HttpFetch {
    client: hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        http_body_util::Empty<hyper::body::Bytes>,
    >,
}

impl HttpFetch {
    pub fn new() -> Result<Self, Rejection> {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(rustls::crypto::ring::default_provider())
            .map_err(|e| Rejection::Fetch(format!("no root certificates: {e}")))?
            .https_or_http()
            .enable_http1()
            .build();
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(https);
        Ok(Self { client })
    }
}

/// Responses larger than this are not a JWKS or discovery document.
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;

impl Fetch for HttpFetch {
    async fn get(&self, url: &str) -> Result<Vec<u8>, String> {
        use http_body_util::BodyExt;
        let uri: hyper::Uri = url.parse().map_err(|e| format!("bad URL {url}: {e}"))?;
        let response = tokio::time::timeout(Duration::from_secs(5), self.client.get(uri))
            .await
            .map_err(|_| format!("GET {url} timed out"))?
            .map_err(|e| format!("GET {url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("GET {url}: HTTP {}", response.status()));
        }
        let body = http_body_util::Limited::new(response.into_body(), MAX_DOCUMENT_BYTES);
        let bytes = body.collect().await.map_err(|e| format!("GET {url}: {e}"))?.to_bytes();
        Ok(bytes.to_vec())
    }
}

struct Cached {
    keys: HashMap<String, DecodingKey>,
    fetched_at: Instant,
}

/// Verifies tokens with keys fetched from the issuer's JWKS: cached for `ttl`, and refetched
/// when a token names an unknown `kid` once `min_refresh` (or `ttl`, if shorter) has passed
/// since the last fetch (so a newly published key is picked up soon, and garbage `kid`s
/// cannot make it hammer the issuer).
pub struct RemoteVerifier<F: Fetch = HttpFetch> {
    jwks_uri: String,
    expect: Expectations,
    fetch: F,
    ttl: Duration,
    min_refresh: Duration,
    cache: RwLock<Option<Cached>>,
    refreshing: tokio::sync::Mutex<()>,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

impl RemoteVerifier<HttpFetch> {
    /// Reads `{issuer}/.well-known/openid-configuration` and checks it names the same issuer.
    pub async fn discover(issuer: &str, audience: &str) -> Result<Self, Rejection> {
        Self::discover_with(issuer, audience, HttpFetch::new()?).await
    }
}

impl<F: Fetch> RemoteVerifier<F> {
    pub async fn discover_with(issuer: &str, audience: &str, fetch: F) -> Result<Self, Rejection> {
        let issuer = issuer.trim_end_matches('/');
        let raw = fetch.get(&format!("{issuer}/.well-known/openid-configuration")).await.map_err(Rejection::Fetch)?;
        let doc: Discovery = serde_json::from_slice(&raw).map_err(|e| Rejection::Fetch(format!("discovery document: {e}")))?;
        if doc.issuer != issuer {
            return Err(Rejection::Fetch(format!("discovery names issuer {}, expected {issuer}", doc.issuer)));
        }
        Ok(Self::new(doc.jwks_uri, Expectations::new(issuer, audience), fetch))
    }

    pub fn new(jwks_uri: String, expect: Expectations, fetch: F) -> Self {
        Self {
            jwks_uri,
            expect,
            fetch,
            ttl: Duration::from_secs(3600),
            min_refresh: Duration::from_secs(30),
            cache: RwLock::new(None),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    /// Accepts only tokens of `organisation` (see [`Expectations::organisation`]).
    pub fn for_organisation(mut self, organisation: impl Into<String>) -> Self {
        self.expect = self.expect.for_organisation(organisation);
        self
    }

    pub fn with_cache_times(mut self, ttl: Duration, min_refresh: Duration) -> Self {
        self.ttl = ttl;
        self.min_refresh = min_refresh;
        self
    }

    pub async fn verify(&self, token: &str) -> Result<AccessClaims, Rejection> {
        let kid = acceptable_kid(token)?;
        if let Some(result) = self.try_cached(token, &kid) {
            return result;
        }
        if let Err(e) = self.refresh().await {
            // The issuer is unreachable: keys we already hold still prove what they proved.
            tracing::warn!(error = %e, "JWKS refresh failed; using the keys in hand");
            return self.try_stale(token, &kid).unwrap_or(Err(e));
        }
        match self.try_cached(token, &kid) {
            Some(result) => result,
            None => Err(Rejection::UnknownKey),
        }
    }

    fn try_stale(&self, token: &str, kid: &str) -> Option<Result<AccessClaims, Rejection>> {
        let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
        let key = cache.as_ref()?.keys.get(kid)?;
        Some(check_signature_and_claims(token, key, &self.expect))
    }

    /// Verifies with the cached keys; `None` when the cache is cold, stale, or lacks `kid`
    /// and may be refreshed.
    fn try_cached(&self, token: &str, kid: &str) -> Option<Result<AccessClaims, Rejection>> {
        let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
        let cached = cache.as_ref()?;
        let age = cached.fetched_at.elapsed();
        match cached.keys.get(kid) {
            Some(key) if age < self.ttl => Some(check_signature_and_claims(token, key, &self.expect)),
            None if !self.may_refetch(age) => Some(Err(Rejection::UnknownKey)),
            _ => None,
        }
    }

    /// A JWKS fetched `age` ago may be fetched again once it is stale, or once `min_refresh`
    /// has passed (for a `kid` it lacks), whichever comes first.
    fn may_refetch(&self, age: Duration) -> bool {
        age >= self.min_refresh.min(self.ttl)
    }

    async fn refresh(&self) -> Result<(), Rejection> {
        let _guard = self.refreshing.lock().await;
        {
            // Someone else may have refreshed while we waited.
            let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
            if cache.as_ref().is_some_and(|c| !self.may_refetch(c.fetched_at.elapsed())) {
                return Ok(());
            }
        }
        let raw = self.fetch.get(&self.jwks_uri).await.map_err(Rejection::Fetch)?;
        let keys = keys_from_jwks(&raw)?;
        *self.cache.write().unwrap_or_else(|p| p.into_inner()) = Some(Cached { keys, fetched_at: Instant::now() });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Serves a JWKS that the test can swap, counting fetches.
    #[derive(Clone, Default)]
    struct FakeIssuer {
        jwks: Arc<std::sync::Mutex<Vec<u8>>>,
        fetches: Arc<AtomicUsize>,
        down: Arc<std::sync::atomic::AtomicBool>,
    }

    impl Fetch for FakeIssuer {
        async fn get(&self, _url: &str) -> Result<Vec<u8>, String> {
            self.fetches.fetch_add(1, Ordering::SeqCst);
            if self.down.load(Ordering::SeqCst) {
                return Err("issuer down".into());
            }
            Ok(self.jwks.lock().unwrap().clone())
        }
    }

    #[test]
    fn garbage_never_panics() {
        let keys: HashMap<String, DecodingKey> = HashMap::new();
        let expect = Expectations::new("i", "a");
        for token in ["", ".", "..", "a.b.c", "eyJhbGciOiJub25lIn0..", &"x".repeat(MAX_TOKEN_BYTES + 1)] {
            assert!(verify(token, &keys, &expect).is_err());
        }
        assert!(keys_from_jwks(b"not json").is_err());
        assert!(keys_from_jwks(br#"{"keys":[{"kty":"oct","k":"AA","kid":"x"}]}"#).unwrap().is_empty(), "only RSA keys are kept");
    }

    #[tokio::test]
    async fn unknown_kid_refreshes_at_most_once_per_interval() {
        let issuer = FakeIssuer::default();
        *issuer.jwks.lock().unwrap() = br#"{"keys":[]}"#.to_vec();
        let verifier = RemoteVerifier::new("http://issuer/jwks".into(), Expectations::new("i", "a"), issuer.clone())
            .with_cache_times(Duration::from_secs(3600), Duration::from_secs(3600));
        // A well-formed header naming an unknown kid.
        let header = r#"{"alg":"RS256","typ":"at+jwt","kid":"k-unknown"}"#;
        let token = format!("{}.e30.c2ln", base64_url(header));
        for _ in 0..20 {
            assert_eq!(verifier.verify(&token).await.unwrap_err(), Rejection::UnknownKey);
        }
        assert_eq!(issuer.fetches.load(Ordering::SeqCst), 1, "garbage kids cannot make it hammer the issuer");
    }

    #[tokio::test]
    async fn a_stale_jwks_is_refetched_even_when_the_refresh_interval_is_longer() {
        let issuer = FakeIssuer::default();
        *issuer.jwks.lock().unwrap() = br#"{"keys":[]}"#.to_vec();
        let verifier = RemoteVerifier::new("http://issuer/jwks".into(), Expectations::new("i", "a"), issuer.clone())
            .with_cache_times(Duration::from_millis(50), Duration::from_secs(3600));
        let token = format!("{}.e30.c2ln", base64_url(r#"{"alg":"RS256","typ":"at+jwt","kid":"k-new"}"#));
        assert_eq!(verifier.verify(&token).await.unwrap_err(), Rejection::UnknownKey);
        assert_eq!(verifier.verify(&token).await.unwrap_err(), Rejection::UnknownKey);
        assert_eq!(issuer.fetches.load(Ordering::SeqCst), 1, "a fresh cache is not refetched for an unknown kid");
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(verifier.verify(&token).await.unwrap_err(), Rejection::UnknownKey);
        assert_eq!(issuer.fetches.load(Ordering::SeqCst), 2, "once stale, the JWKS is fetched again");
    }

    #[tokio::test]
    async fn an_unreachable_issuer_is_a_fetch_error() {
        let issuer = FakeIssuer::default();
        issuer.down.store(true, Ordering::SeqCst);
        let verifier = RemoteVerifier::new("http://issuer/jwks".into(), Expectations::new("i", "a"), issuer);
        let token = format!("{}.e30.c2ln", base64_url(r#"{"alg":"RS256","typ":"at+jwt","kid":"k"}"#));
        assert!(matches!(verifier.verify(&token).await, Err(Rejection::Fetch(_))));
    }

    fn base64_url(raw: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    }
}
