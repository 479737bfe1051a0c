//! Verifies the access tokens of the IAM API-key service.
//!
//! The rules are fixed by the verifier, never by the token: RS256 only (RFC 8725 §3.1), a
//! `kid` that the issuer publishes, `typ: at+jwt` (RFC 9068), no `jku`/`x5u`/`jwk`/`x5c`
//! headers, tokens of at most 8 KiB, `iss`, `aud`, `exp`, `nbf` enforced with 30 s of clock
//! leeway, a lifetime (`exp` − `iat`) no longer than the issuer grants (1 h), and optionally one
//! organisation (`org_id`). [`verify`] applies them with keys in hand (the service itself does this);
//! [`RemoteVerifier`] fetches and caches the JWKS from the issuer's discovery document, over
//! https only (plain http to a loopback host), refetches when it meets an unknown `kid`, and
//! keeps using keys it cannot refresh for a bounded time only (downstream services do this).
//!
//! ```no_run
//! # async fn example(token: &str) -> Result<(), iam_verifier::Rejection> {
//! let verifier = iam_verifier::RemoteVerifier::discover("https://abc.execute-api.eu-west-1.amazonaws.com/iam", "infuse-api").await?;
//! let claims = verifier.verify(token).await?;
//! if claims.has_permission("iot:devices:provision") { /* … */ }
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

pub const TOKEN_TYPE: &str = "at+jwt";
/// Tokens larger than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Clock skew tolerated between the issuer and its verifiers.
pub const LEEWAY_SECS: u64 = 30;
/// The longest lifetime (`exp` − `iat`) of the tokens the service issues. A validly signed token
/// that claims to live longer was not minted by the service's rules (a bug or a misused signing
/// key), and would outlive every revocation and key-rotation window computed from this bound.
pub const MAX_TOKEN_LIFETIME_SECS: u64 = 60 * 60;
/// How long past its cache lifetime [`RemoteVerifier`] keeps using a JWKS that it cannot
/// refresh. An outage of the issuer should not take every verifier down with it, but a key is
/// withdrawn from the JWKS for a reason (rotation, or a leak): whoever can keep the verifier
/// from reaching the issuer must not keep a withdrawn key trusted indefinitely.
pub const MAX_STALE_SECS: u64 = 60 * 60;

/// The claims of an access token: RFC 9068 plus `org_id`, `principal_type` and `roles`, and,
/// in a service account's token, the trust policy that admitted its workload.
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
    /// A service account's token: which of its trust policies admitted the external token it
    /// was exchanged for (`principal_type` is `ServiceAccount`, `client_id` `sa_…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_policy: Option<String>,
    /// A signed-in person's token: the version of the organisation's trusted-issuer list at
    /// which its sign-in provider was last set, when the token was issued (`principal_type` is
    /// `User`, `client_id` `console`). Any change of the provider since ends the token, even
    /// one changed back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sign_in_version: Option<u64>,
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
    /// `exp` is further from `iat` (or `nbf`) than the longest lifetime the issuer grants.
    #[error("the token lives longer than the issuer's tokens do")]
    LifetimeTooLong,
    /// The cached JWKS is older than its lifetime plus the stale allowance and could not be
    /// refreshed.
    #[error("the issuer's keys are too old to use and could not be refreshed: {0}")]
    KeysUnavailable(String),
    /// The issuer, its discovery document or its JWKS would be fetched without TLS.
    #[error("the issuer's documents must be fetched over https, not from {0}")]
    InsecureUrl(String),
    /// The revocation feed ([`Revocations`]) says the token's key was revoked, or its principal
    /// is no longer Active.
    #[error("the token's key or principal was revoked or suspended")]
    Revoked,
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
    /// The longest lifetime (`exp` − `iat`) accepted, before [`LEEWAY_SECS`];
    /// [`MAX_TOKEN_LIFETIME_SECS`] unless the issuer is known to grant longer.
    pub max_lifetime_secs: u64,
}

impl Expectations {
    /// A trailing `/` on `issuer` is dropped: the issuer never carries one.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        let issuer = issuer.into().trim_end_matches('/').to_owned();
        Self { issuer, audience: audience.into(), organisation: None, max_lifetime_secs: MAX_TOKEN_LIFETIME_SECS }
    }

    pub fn for_organisation(mut self, organisation: impl Into<String>) -> Self {
        self.organisation = Some(organisation.into());
        self
    }

    /// Accepts tokens living up to `secs` (plus [`LEEWAY_SECS`]), for an issuer configured to
    /// grant longer lifetimes than this service's.
    pub fn with_max_lifetime_secs(mut self, secs: u64) -> Self {
        self.max_lifetime_secs = secs;
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
    // jsonwebtoken ignores "iat" here; a token without one is refused all the same, as
    // `AccessClaims::iat` is not optional and the claims do not deserialise.
    validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
    validation.validate_nbf = true;
    validation.leeway = LEEWAY_SECS;
    let claims =
        jsonwebtoken::decode::<AccessClaims>(token, key, &validation).map(|d| d.claims).map_err(|e| Rejection::Invalid(e.to_string()))?;
    check_lifetime(&claims, expect)?;
    match &expect.organisation {
        Some(organisation) if *organisation != claims.org_id => Err(Rejection::OtherOrganisation),
        _ => Ok(claims),
    }
}

/// `exp` alone is whatever the signer wrote: a token signed to live a year (a signer bug, or a
/// key used outside the service) would outlive revocations and the key-rotation overlap, which
/// are sized for the longest lifetime the service grants (RFC 8725 §3.10: the verifier sets
/// the rules). Measured from `nbf` too, so an `iat` written just before `exp` cannot hide a
/// token that is usable (from `nbf`) for longer.
fn check_lifetime(claims: &AccessClaims, expect: &Expectations) -> Result<(), Rejection> {
    let longest = i128::from(expect.max_lifetime_secs) + i128::from(LEEWAY_SECS);
    let start = claims.iat.min(claims.nbf);
    if i128::from(claims.exp) - i128::from(start) > longest {
        return Err(Rejection::LifetimeTooLong);
    }
    Ok(())
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

    /// A GET with `Authorization: Bearer {token}`, for the revocation feed. A fetcher that
    /// cannot send one keeps the default, and cannot follow the feed.
    fn get_with_bearer(&self, url: &str, token: &str) -> impl std::future::Future<Output = Result<Vec<u8>, String>> + Send {
        let _ = (url, token);
        async { Err("this fetcher cannot send a bearer token".to_owned()) }
    }

    /// Whether this fetcher crosses a network, where a document fetched without TLS could be
    /// replaced in transit. [`RemoteVerifier`] then gives it only https URLs, or http ones to a
    /// loopback host, and refuses others with [`Rejection::InsecureUrl`]. [`HttpFetch`] answers
    /// true; a fetcher that crosses a network must too. One that answers in-process (a test's
    /// router) may keep the default.
    fn requires_https(&self) -> bool {
        false
    }
}

/// Refuses a URL that a fetch over the network must not use. Whoever can alter a plain-http
/// JWKS or discovery document in transit can publish their own key and sign any token they
/// like, so only https is accepted (RFC 8414 §2 and OpenID Connect Discovery §3 require it of
/// the issuer), except to a loopback host, whose traffic never leaves the machine. The URL is
/// read by the parser the HTTP client connects with, so both see the same host.
fn check_transport(url: &str) -> Result<(), Rejection> {
    use hyper::http::uri::Scheme;
    let uri: hyper::Uri = url.parse().map_err(|e| Rejection::Fetch(format!("bad URL {url}: {e}")))?;
    let secure = uri.scheme() == Some(&Scheme::HTTPS);
    let loopback = uri.scheme() == Some(&Scheme::HTTP) && uri.host().is_some_and(is_loopback);
    if secure || loopback { Ok(()) } else { Err(Rejection::InsecureUrl(url.to_owned())) }
}

/// `localhost` (RFC 6761 §6.3), 127.0.0.0/8 and ::1, as the URI spells them. Nothing else:
/// not `*.localhost`, nor IPv4-mapped or shorthand forms, which resolvers treat unevenly.
fn is_loopback(host: &str) -> bool {
    let ipv6 = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
        || ipv6.and_then(|h| h.parse::<Ipv6Addr>().ok()).is_some_and(|ip| ip.is_loopback())
}

/// HTTPS with the platform's root certificates (plain HTTP only to loopback hosts, for local
/// issuers).
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
    fn requires_https(&self) -> bool {
        true
    }

    async fn get(&self, url: &str) -> Result<Vec<u8>, String> {
        self.fetch(url, None).await
    }

    async fn get_with_bearer(&self, url: &str, token: &str) -> Result<Vec<u8>, String> {
        self.fetch(url, Some(token)).await
    }
}

impl HttpFetch {
    async fn fetch(&self, url: &str, bearer: Option<&str>) -> Result<Vec<u8>, String> {
        use http_body_util::BodyExt;
        // RemoteVerifier checks first; this guards anyone calling HttpFetch directly.
        check_transport(url).map_err(|e| e.to_string())?;
        let uri: hyper::Uri = url.parse().map_err(|e| format!("bad URL {url}: {e}"))?;
        let mut request = hyper::Request::get(uri);
        if let Some(token) = bearer {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request.body(http_body_util::Empty::new()).map_err(|e| format!("GET {url}: {e}"))?;
        let response = tokio::time::timeout(Duration::from_secs(5), self.client.request(request))
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
/// cannot make it hammer the issuer). While the JWKS cannot be refetched, the keys in hand
/// keep serving until `max_stale` past `ttl` ([`MAX_STALE_SECS`] by default), and then every
/// token is refused with [`Rejection::KeysUnavailable`].
pub struct RemoteVerifier<F: Fetch = HttpFetch> {
    revocations: Option<std::sync::Arc<Revocations>>,
    jwks_uri: String,
    expect: Expectations,
    fetch: F,
    ttl: Duration,
    min_refresh: Duration,
    max_stale: Duration,
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
    /// The issuer and the `jwks_uri` it names must be https (or http to a loopback host).
    pub async fn discover(issuer: &str, audience: &str) -> Result<Self, Rejection> {
        Self::discover_with(issuer, audience, HttpFetch::new()?).await
    }
}

impl<F: Fetch> RemoteVerifier<F> {
    pub async fn discover_with(issuer: &str, audience: &str, fetch: F) -> Result<Self, Rejection> {
        let issuer = issuer.trim_end_matches('/');
        let discovery = format!("{issuer}/.well-known/openid-configuration");
        if fetch.requires_https() {
            check_transport(issuer)?;
            check_transport(&discovery)?;
        }
        let raw = fetch.get(&discovery).await.map_err(Rejection::Fetch)?;
        let doc: Discovery = serde_json::from_slice(&raw).map_err(|e| Rejection::Fetch(format!("discovery document: {e}")))?;
        if doc.issuer != issuer {
            return Err(Rejection::Fetch(format!("discovery names issuer {}, expected {issuer}", doc.issuer)));
        }
        // Refused here rather than at the first token, so a misconfigured issuer is seen at start-up.
        if fetch.requires_https() {
            check_transport(&doc.jwks_uri)?;
        }
        Ok(Self::new(doc.jwks_uri, Expectations::new(issuer, audience), fetch))
    }

    /// `jwks_uri` must be https (or http to a loopback host) when `fetch` crosses a network
    /// ([`Fetch::requires_https`]); otherwise every token is refused with
    /// [`Rejection::InsecureUrl`].
    pub fn new(jwks_uri: String, expect: Expectations, fetch: F) -> Self {
        Self {
            revocations: None,
            jwks_uri,
            expect,
            fetch,
            ttl: Duration::from_secs(3600),
            min_refresh: Duration::from_secs(30),
            max_stale: Duration::from_secs(MAX_STALE_SECS),
            cache: RwLock::new(None),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    /// Accepts only tokens of `organisation` (see [`Expectations::organisation`]).
    pub fn for_organisation(mut self, organisation: impl Into<String>) -> Self {
        self.expect = self.expect.for_organisation(organisation);
        self
    }

    /// Accepts tokens living up to `secs` (see [`Expectations::with_max_lifetime_secs`]).
    pub fn with_max_lifetime_secs(mut self, secs: u64) -> Self {
        self.expect = self.expect.with_max_lifetime_secs(secs);
        self
    }

    pub fn with_cache_times(mut self, ttl: Duration, min_refresh: Duration) -> Self {
        self.ttl = ttl;
        self.min_refresh = min_refresh;
        self
    }

    /// How long past `ttl` the keys in hand keep serving while the JWKS cannot be refetched.
    pub fn with_max_stale(mut self, max_stale: Duration) -> Self {
        self.max_stale = max_stale;
        self
    }

    /// Refuses, after every other check, the tokens `revocations` says were revoked (see
    /// [`Revocations`], which the service follows separately).
    pub fn with_revocations(mut self, revocations: std::sync::Arc<Revocations>) -> Self {
        self.revocations = Some(revocations);
        self
    }

    pub async fn verify(&self, token: &str) -> Result<AccessClaims, Rejection> {
        let claims = self.verify_signed(token).await?;
        match &self.revocations {
            Some(revoked) if revoked.refuses(&claims) => Err(Rejection::Revoked),
            _ => Ok(claims),
        }
    }

    async fn verify_signed(&self, token: &str) -> Result<AccessClaims, Rejection> {
        let kid = acceptable_kid(token)?;
        if let Some(result) = self.try_cached(token, &kid) {
            return result;
        }
        if let Err(e) = self.refresh().await {
            tracing::warn!(error = %e, "JWKS refresh failed; using the keys in hand while they are not too stale");
            return self.try_stale(token, &kid, e);
        }
        match self.try_cached(token, &kid) {
            Some(result) => result,
            None => Err(Rejection::UnknownKey),
        }
    }

    /// After a failed refresh: the issuer is unreachable, and keys we already hold still prove
    /// what they proved, but only until `max_stale` past `ttl` (see [`MAX_STALE_SECS`]).
    fn try_stale(&self, token: &str, kid: &str, error: Rejection) -> Result<AccessClaims, Rejection> {
        let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
        let Some(cached) = cache.as_ref() else { return Err(error) };
        if cached.fetched_at.elapsed() >= self.ttl.saturating_add(self.max_stale) {
            let reason = match error {
                Rejection::Fetch(reason) => reason,
                other => other.to_string(),
            };
            return Err(Rejection::KeysUnavailable(reason));
        }
        match cached.keys.get(kid) {
            Some(key) => check_signature_and_claims(token, key, &self.expect),
            None => Err(error),
        }
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
        if self.fetch.requires_https() {
            check_transport(&self.jwks_uri)?;
        }
        let raw = self.fetch.get(&self.jwks_uri).await.map_err(Rejection::Fetch)?;
        let keys = keys_from_jwks(&raw)?;
        *self.cache.write().unwrap_or_else(|p| p.into_inner()) = Some(Cached { keys, fetched_at: Instant::now() });
        Ok(())
    }
}

/// What the issuer's revocation feed (`GET /iam/revocations`) has said so far: the keys
/// revoked and the principals no longer Active. A service follows it by calling
/// [`Revocations::poll`] every few seconds with a management token holding
/// `iam:tokens:introspect`, and gives it to [`RemoteVerifier::with_revocations`]: a revoked
/// key's tokens are then refused within one poll interval instead of at their `exp`. Between
/// polls, and before the first, nothing is refused: the window left is the poll interval (and
/// the token lifetime while the feed cannot be reached).
#[derive(Default)]
pub struct Revocations {
    state: RwLock<RevocationState>,
}

#[derive(Default)]
struct RevocationState {
    cursor: Option<String>,
    keys: std::collections::HashSet<String>,
    /// Principals whose latest status in the feed is not Active.
    principals: std::collections::HashSet<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FeedPage {
    items: Vec<FeedItem>,
    next_cursor: Option<String>,
    has_more: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FeedItem {
    kind: String,
    principal_id: Option<String>,
    key_id: Option<String>,
    status: Option<String>,
}

/// One poll reads at most this many pages; the next poll goes on from there.
const MAX_FEED_PAGES: usize = 20;

impl Revocations {
    /// Reads the feed at `feed_url` (`{issuer}/revocations`) from where the last poll ended,
    /// with `token`; answers how many revocations and status changes it applied.
    pub async fn poll<F: Fetch>(&self, fetch: &F, feed_url: &str, token: &str) -> Result<usize, Rejection> {
        if fetch.requires_https() {
            check_transport(feed_url)?;
        }
        let mut applied = 0;
        for _ in 0..MAX_FEED_PAGES {
            let cursor = self.state.read().unwrap_or_else(|p| p.into_inner()).cursor.clone();
            let url = match &cursor {
                Some(c) => format!("{feed_url}?cursor={c}"),
                None => feed_url.to_owned(),
            };
            let raw = fetch.get_with_bearer(&url, token).await.map_err(Rejection::Fetch)?;
            let (count, more) = self.apply(&raw)?;
            applied += count;
            if !more {
                break;
            }
        }
        Ok(applied)
    }

    /// Applies one answer of the feed; answers how many entries it held and whether more wait.
    pub fn apply(&self, raw: &[u8]) -> Result<(usize, bool), Rejection> {
        let page: FeedPage = serde_json::from_slice(raw).map_err(|e| Rejection::Fetch(format!("not a revocation feed: {e}")))?;
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        for item in &page.items {
            match (item.kind.as_str(), &item.key_id, &item.principal_id) {
                ("credentialRevoked", Some(key), _) => {
                    state.keys.insert(key.clone());
                }
                ("principalStatusChanged", _, Some(principal)) if item.status.as_deref() == Some("Active") => {
                    state.principals.remove(principal);
                }
                ("principalStatusChanged", _, Some(principal)) => {
                    state.principals.insert(principal.clone());
                }
                // Kinds of later releases: ignored, not fatal.
                _ => {}
            }
        }
        if page.next_cursor.is_some() {
            state.cursor = page.next_cursor;
        }
        Ok((page.items.len(), page.has_more))
    }

    /// Whether the feed has said the token's key was revoked or its principal is not Active.
    pub fn refuses(&self, claims: &AccessClaims) -> bool {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        let key_id = claims.client_id.strip_prefix("ik_").unwrap_or(&claims.client_id);
        state.keys.contains(key_id) || state.principals.contains(&claims.sub)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Serves a JWKS (and, when set, a discovery document) that the test can swap, counting
    /// fetches. With `network`, it stands for a fetcher that crosses a network.
    #[derive(Clone, Default)]
    struct FakeIssuer {
        jwks: Arc<std::sync::Mutex<Vec<u8>>>,
        discovery: Arc<std::sync::Mutex<Option<Vec<u8>>>>,
        fetches: Arc<AtomicUsize>,
        down: Arc<std::sync::atomic::AtomicBool>,
        network: bool,
    }

    impl FakeIssuer {
        /// Crosses a network, serving the test key's JWKS and a discovery document for `issuer`
        /// naming `jwks_uri`.
        fn on_network(issuer: &str, jwks_uri: &str) -> Self {
            let fake = Self { network: true, ..Self::default() };
            *fake.jwks.lock().unwrap() = TEST_JWKS.as_bytes().to_vec();
            let discovery = serde_json::json!({ "issuer": issuer, "jwks_uri": jwks_uri });
            *fake.discovery.lock().unwrap() = Some(discovery.to_string().into_bytes());
            fake
        }
    }

    impl Fetch for FakeIssuer {
        fn requires_https(&self) -> bool {
            self.network
        }

        async fn get(&self, url: &str) -> Result<Vec<u8>, String> {
            self.fetches.fetch_add(1, Ordering::SeqCst);
            if self.down.load(Ordering::SeqCst) {
                return Err("issuer down".into());
            }
            if url.ends_with("/.well-known/openid-configuration") {
                return self.discovery.lock().unwrap().clone().ok_or_else(|| "no discovery document".to_owned());
            }
            Ok(self.jwks.lock().unwrap().clone())
        }
    }

    /// A key generated for these tests alone; it signs nothing anywhere else.
    const TEST_KEY_PEM: &str = "\
-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQCUwoZ8OWy8I9zL
dDimiAXx4dQOVgAutTFOn8oTdeKYYm304KkrxV9BxXpL8o0S4vN1X60g2Pw4YXVD
MrDH271leZKbwn09dfL7J4bfEmL6ZuZEfWZ2OfMJoFv+2Gk0CawB6qjWj5kj9yZy
eYIGdcVeXx8DuLOmO5fyG1TtB/6QfDqIq0+TVAZRoSb7mD7oEmLSgK+H4eCvFsKU
9N8oHsOd5eSU5JMmQtuPJyHc361V2pUl93X2brO6zmsm5NnqqyBO6+QrYHl+9/LW
2Bprd/k32H/lFILKr+Ci64pbfEWrSjkh9Cry+7DjpQbiatPvcWEhMQdaCLw7wadA
IHMe61hdAgMBAAECggEAArJ1FGvzcr3NfedIbP5OW4JWOiRQJBbgBqZ2kQbezYlg
qBibje5/R9v/LTKqmeeBQ9bbkykb+ZG3OeQBnIUkEUZCyDieuK5TciK64inWESAs
CYCGUfCmJIT7kK4vyh0TqtmsUfzlaTzbBO4XfhYMGkKWzLKyJkGkH9YOlFknpYPX
kgO8z8JGI7f+lMBY158yypg6s8HPyBHI7Oh6DM94gSEh6yxnCvYGsCE2DFgVVsPA
ctVJrU3UxhuFZBrCoNEs3+RfqT8Qzio5sXEF3OU4HSZlUCEbEOhm+60bllUYoHsD
3gCBzjJeKlV1bKd1BsYNKazjBk7TiKyIRlJAqt+eAQKBgQDEqybXn3f8p15HcTFR
R1zGvNmmhQp46xrJzfe7lWHqlcI3M2MpsZxlX0qSts3tuVSLPCJixtqB+ChGILwC
dt5kh1VjNtlRAcfWKC3UrCZEathR0lN5inIVKLHYFm/9c41zspcHTI3MsyA0mN8Y
wG/m4nTqBTSv2OptNF75qgs6wQKBgQDBo1ocVACvj8GWdnoF6IRBQg3iL376xkew
3CLBb0Shv3Gu2Nej6Eh1Vuc+z4bUNRztD53PdKDRNHxP6DQgXWM6/8Qt38i9K5MO
oVg3i54wMmQMTWjHtDgSs7TaFKPxOFdXDNjxj/w/lGyNRZLWhQxoQRHzkHe6JRCS
JdS/WqxQnQKBgFhBfiLRO2U0Lojc8QbKgYXmBb5GgdaVmuXo+j1B4jkFj6x58Qwq
2kZbpvmD85G0043QJJYzKqecl2YxFm38rfxrBxSI7qj9pZIjYb3IqzuUvxKo0jD+
wgdgxb51Azi3/EhpYoEyB4hO8iroV2WiJhV0lobWYzhunXT4RY7Akl2BAoGADur/
0TjjiKMBng7onbXpIoHtQeS42qcV9Nkw0Eg7OF7gakEIc/c8RdX5IMyqLYUeAmF2
nfn1PcjWXu2bvnaTY4M64PHhrDlELhdeDYFzIXFwZcY88U3AGCjCIR7/9mCJ0goK
WKnoHBnaNxQKGP7NEucYc/RIVQ3v9eJ2PnvE1L0CgYEApRLUiLYzPFKBwm9Qp0TO
14+8dWywgtaF+XtjyfZ/Q9/NuxTv1iBY6kf+rAzCPCqyBgRIlaUZKPacnaPkF4DY
m6l8quPoQydIutJfDObRS9e2iUPfs/yNJ2HKTdVzU5scdH+wvnjnheWkWwoc0yQR
LaR2XaJI6f2evptVl9CpZrE=
-----END PRIVATE KEY-----
";
    const TEST_JWKS: &str = r#"{"keys":[{"kty":"RSA","kid":"k-test","alg":"RS256","use":"sig","e":"AQAB","n":"lMKGfDlsvCPcy3Q4pogF8eHUDlYALrUxTp_KE3XimGJt9OCpK8VfQcV6S_KNEuLzdV-tINj8OGF1QzKwx9u9ZXmSm8J9PXXy-yeG3xJi-mbmRH1mdjnzCaBb_thpNAmsAeqo1o-ZI_cmcnmCBnXFXl8fA7izpjuX8htU7Qf-kHw6iKtPk1QGUaEm-5g-6BJi0oCvh-HgrxbClPTfKB7DneXklOSTJkLbjych3N-tVdqVJfd19m6zus5rJuTZ6qsgTuvkK2B5fvfy1tgaa3f5N9h_5RSCyq_gouuKW3xFq0o5IfQq8vuw46UG4mrT73FhITEHWgi8O8GnQCBzHutYXQ"}]}"#;
    const ISSUER: &str = "https://issuer.example/iam";
    const AUDIENCE: &str = "api";
    const YEAR: i64 = 365 * 24 * 60 * 60;

    fn now() -> i64 {
        jsonwebtoken::get_current_timestamp() as i64
    }

    fn claims(iss: &str, iat: i64, nbf: i64, exp: i64) -> serde_json::Value {
        serde_json::json!({
            "iss": iss, "sub": "p-1", "aud": AUDIENCE, "client_id": "ik_1", "org_id": "acme",
            "principal_type": "ApiKey", "roles": [], "scope": "", "iat": iat, "nbf": nbf, "exp": exp, "jti": "j-1",
        })
    }

    /// Signs `claims` as the issuer does, with the test key.
    fn sign(claims: &serde_json::Value) -> String {
        let mut header = jsonwebtoken::Header::new(Algorithm::RS256);
        header.typ = Some(TOKEN_TYPE.into());
        header.kid = Some("k-test".into());
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(TEST_KEY_PEM.as_bytes()).unwrap();
        jsonwebtoken::encode(&header, claims, &key).unwrap()
    }

    fn lived(iat: i64, nbf: i64, exp: i64) -> String {
        sign(&claims(ISSUER, iat, nbf, exp))
    }

    fn test_keys() -> HashMap<String, DecodingKey> {
        keys_from_jwks(TEST_JWKS.as_bytes()).unwrap()
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

    #[test]
    fn a_token_living_longer_than_the_longest_lifetime_is_refused() {
        let (keys, expect, now) = (test_keys(), Expectations::new(ISSUER, AUDIENCE), now());
        let longest = (MAX_TOKEN_LIFETIME_SECS + LEEWAY_SECS) as i64;
        // The control: the longest lifetime the issuer grants, to the edge of the leeway, passes.
        assert!(verify(&lived(now, now, now + longest), &keys, &expect).is_ok());
        for (name, token) in [
            ("one second too long", lived(now, now, now + longest + 1)),
            ("a year", lived(now, now, now + YEAR)),
            ("issued a year ago, expiring soon", lived(now - YEAR, now, now + 60)),
        ] {
            assert_eq!(verify(&token, &keys, &expect).unwrap_err(), Rejection::LifetimeTooLong, "{name}");
        }
    }

    #[test]
    fn a_late_iat_cannot_hide_a_long_lifetime() {
        // Usable from `nbf` (now) for a year, though `exp` − `iat` is only an hour.
        let token = lived(now() + YEAR - 3600, now(), now() + YEAR);
        assert_eq!(verify(&token, &test_keys(), &Expectations::new(ISSUER, AUDIENCE)).unwrap_err(), Rejection::LifetimeTooLong);
    }

    #[test]
    fn a_longer_lifetime_can_be_allowed_through_the_expectations() {
        let (keys, now, day) = (test_keys(), now(), 24 * 60 * 60);
        let lenient = Expectations::new(ISSUER, AUDIENCE).with_max_lifetime_secs(day as u64);
        let a_day = lived(now, now, now + day);
        assert_eq!(verify(&a_day, &keys, &Expectations::new(ISSUER, AUDIENCE)).unwrap_err(), Rejection::LifetimeTooLong);
        assert!(verify(&a_day, &keys, &lenient).is_ok());
        let too_long = lived(now, now, now + day + LEEWAY_SECS as i64 + 1);
        assert_eq!(verify(&too_long, &keys, &lenient).unwrap_err(), Rejection::LifetimeTooLong);
    }

    #[test]
    fn a_token_without_iat_is_refused() {
        let mut claims = claims(ISSUER, now(), now(), now() + 60);
        claims.as_object_mut().unwrap().remove("iat");
        let refused = verify(&sign(&claims), &test_keys(), &Expectations::new(ISSUER, AUDIENCE)).unwrap_err();
        assert!(matches!(&refused, Rejection::Invalid(why) if why.contains("iat")), "{refused:?}");
    }

    #[tokio::test]
    async fn keys_that_cannot_be_refreshed_are_used_only_for_a_bounded_time() {
        let issuer = FakeIssuer::on_network(ISSUER, "https://issuer.example/iam/jwks");
        let verifier = |max_stale| {
            RemoteVerifier::new("https://issuer.example/iam/jwks".into(), Expectations::new(ISSUER, AUDIENCE), issuer.clone())
                .with_cache_times(Duration::from_millis(10), Duration::from_millis(10))
                .with_max_stale(max_stale)
        };
        assert_eq!(verifier(Duration::ZERO).max_stale, Duration::ZERO);
        let default = RemoteVerifier::new("https://issuer.example/iam/jwks".into(), Expectations::new(ISSUER, AUDIENCE), issuer.clone());
        assert_eq!(default.max_stale, Duration::from_secs(MAX_STALE_SECS));
        let (tolerant, strict) = (verifier(Duration::from_secs(3600)), verifier(Duration::from_millis(10)));
        let token = lived(now(), now(), now() + 600);
        assert!(tolerant.verify(&token).await.is_ok());
        assert!(strict.verify(&token).await.is_ok());

        issuer.down.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(tolerant.verify(&token).await.is_ok(), "within the allowance, the keys in hand still serve");
        let refused = strict.verify(&token).await.unwrap_err();
        assert_eq!(refused, Rejection::KeysUnavailable("issuer down".into()));

        issuer.down.store(false, Ordering::SeqCst);
        assert!(strict.verify(&token).await.is_ok(), "once the issuer answers again, fresh keys serve");
    }

    #[tokio::test]
    async fn an_http_issuer_is_refused_before_anything_is_fetched() {
        let issuer = FakeIssuer::on_network("http://issuer.example/iam", "http://issuer.example/iam/jwks");
        let refused = RemoteVerifier::discover_with("http://issuer.example/iam", AUDIENCE, issuer.clone()).await.err().unwrap();
        assert_eq!(refused, Rejection::InsecureUrl("http://issuer.example/iam".into()));
        assert_eq!(issuer.fetches.load(Ordering::SeqCst), 0);
        // The real client is held to the same rule, without touching the network.
        assert!(HttpFetch::new().unwrap().requires_https());
        let refused = RemoteVerifier::discover("http://issuer.example/iam", AUDIENCE).await.err().unwrap();
        assert_eq!(refused, Rejection::InsecureUrl("http://issuer.example/iam".into()));
        let direct = HttpFetch::new().unwrap().get("http://issuer.example/iam/jwks").await.unwrap_err();
        assert!(direct.contains("https"), "{direct}");
    }

    #[tokio::test]
    async fn a_discovery_document_naming_an_http_jwks_uri_is_refused() {
        let issuer = FakeIssuer::on_network(ISSUER, "http://issuer.example/iam/jwks");
        let refused = RemoteVerifier::discover_with(ISSUER, AUDIENCE, issuer.clone()).await.err().unwrap();
        assert_eq!(refused, Rejection::InsecureUrl("http://issuer.example/iam/jwks".into()));
        assert_eq!(issuer.fetches.load(Ordering::SeqCst), 1, "only the discovery document was fetched");
    }

    #[tokio::test]
    async fn a_jwks_uri_given_directly_must_be_https_too() {
        let issuer = FakeIssuer::on_network(ISSUER, "unused");
        let verifier = RemoteVerifier::new("http://issuer.example/iam/jwks".into(), Expectations::new(ISSUER, AUDIENCE), issuer.clone());
        let refused = verifier.verify(&lived(now(), now(), now() + 600)).await.unwrap_err();
        assert_eq!(refused, Rejection::InsecureUrl("http://issuer.example/iam/jwks".into()));
        assert_eq!(issuer.fetches.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn only_loopback_hosts_may_be_reached_over_plain_http() {
        for url in [
            "https://issuer.example/iam",
            "HTTPS://issuer.example/iam",
            "http://127.0.0.1:8080/iam",
            "http://127.3.4.5/iam",
            "http://[::1]:8080/iam",
            "http://localhost:3000/iam",
            "http://LocalHost/iam",
            "http://user@127.0.0.1/iam",
        ] {
            assert_eq!(check_transport(url), Ok(()), "{url}");
        }
        for url in [
            "http://issuer.example/iam",
            "http://10.0.0.1/iam",
            "http://0.0.0.0/iam",
            "http://[::ffff:127.0.0.1]/iam",
            "http://[::]/iam",
            "http://localhost.evil.example/iam",
            "http://127.0.0.1.evil.example/iam",
            "http://127.0.0.1@evil.example/iam",
            "http://127.1/iam",
            "ftp://127.0.0.1/iam",
            "//127.0.0.1/iam",
            "/iam",
            "",
        ] {
            assert!(check_transport(url).is_err(), "{url}");
        }
        // And end to end: a local issuer over plain http is discovered and verifies.
        let local = "http://127.0.0.1:8080/iam";
        let issuer = FakeIssuer::on_network(local, "http://127.0.0.1:8080/iam/.well-known/jwks.json");
        let verifier = RemoteVerifier::discover_with(local, AUDIENCE, issuer).await.unwrap();
        assert!(verifier.verify(&sign(&claims(local, now(), now(), now() + 600))).await.is_ok());
    }
}
