//! An issuer's signing keys, found as OpenID Connect Discovery says (`{issuer}/.well-known/
//! openid-configuration`, then its `jwks_uri`), each fetched under the outbound rules: https,
//! a public address after DNS (no private, loopback, link-local or metadata address, whatever
//! the discovery document names), no redirects, bounded size and time. The keys are kept for
//! [`KEYS_TTL`]; a token naming a key not in hand fetches them again, at most once per
//! [`MIN_REFETCH`], so a flood of made-up `kid`s costs the issuer (and us) nothing more; a
//! failed fetch is answered for as long, and one fetch may take at most [`FETCH_BUDGET`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use serde::Deserialize;

use super::{ExternalExpectations, FederationRefusal, verify_external};
use crate::outbound::Outbound;

pub const KEYS_TTL: Duration = Duration::from_secs(15 * 60);
/// The least time between two fetches of one issuer's keys: after a fetch for an unknown
/// `kid`, and after a failed fetch (which is answered as it was meanwhile).
pub const MIN_REFETCH: Duration = Duration::from_secs(60);
/// The outbound rules of every request to an identity provider (discovery, JWKS, its token
/// endpoint): a discovery document or key set is a few KiB, so 64 KiB is generous; 5 s a request.
pub fn issuer_outbound_rules(allow_loopback: bool) -> crate::outbound::OutboundRules {
    crate::outbound::OutboundRules { allow_loopback, max_bytes: 64 * 1024, timeout: Duration::from_secs(5) }
}

/// The most one fetch (discovery document, then JWKS) may take: well within the token
/// function's own timeout, so a slow issuer costs its own exchanges this much, not the function.
pub const FETCH_BUDGET: Duration = Duration::from_secs(4);
/// A JWKS with more keys than this is refused (real issuers publish a handful).
pub const MAX_JWKS_KEYS: usize = 32;
/// Issuers kept at once; past it the cache starts again empty.
const MAX_CACHED_ISSUERS: usize = 256;

/// Where an issuer's people sign in and its codes are redeemed, as its discovery document says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IssuerEndpoints {
    pub authorization: Option<String>,
    pub token: Option<String>,
}

/// What one fetch found.
#[derive(Clone)]
struct Fetched {
    jwks: JwkSet,
    endpoints: IssuerEndpoints,
}

/// An issuer's keys, or why they could not be fetched, and when.
#[derive(Clone)]
struct Cached {
    fetched: Result<Fetched, FederationRefusal>,
    fetched_at: Instant,
}

/// Trusted issuers' keys for one process: fetched once per issuer at a time (concurrent
/// exchanges wait for the one fetch in flight), kept [`KEYS_TTL`], and a failure kept
/// [`MIN_REFETCH`], so an issuer that is down or slow is not asked again by every exchange.
pub struct IssuerKeys {
    outbound: Outbound,
    cache: Mutex<HashMap<String, Cached>>,
    in_flight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    min_refetch: Duration,
}

impl std::fmt::Debug for IssuerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuerKeys").field("outbound", &self.outbound).finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
    #[serde(default)]
    authorization_endpoint: Option<String>,
    #[serde(default)]
    token_endpoint: Option<String>,
}

fn unreachable(what: &str, e: impl std::fmt::Display) -> FederationRefusal {
    FederationRefusal::IssuerUnreachable(format!("{what}: {e}"))
}

impl IssuerKeys {
    pub fn new(outbound: Outbound) -> Self {
        Self { outbound, cache: Mutex::default(), in_flight: Mutex::default(), min_refetch: MIN_REFETCH }
    }

    /// For tests that rotate an issuer's keys without waiting a minute.
    pub fn with_min_refetch(self, min_refetch: Duration) -> Self {
        Self { min_refetch, ..self }
    }

    async fn fetch(&self, issuer: &str) -> Result<Fetched, FederationRefusal> {
        let discovery_url = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
        let raw = self.outbound.get(&discovery_url).await.map_err(|e| unreachable("its discovery document", e))?;
        let discovery: Discovery = serde_json::from_slice(&raw).map_err(|_| unreachable("its discovery document", "not valid JSON"))?;
        // OpenID Connect Discovery §4.3: the document must name the issuer it was asked for.
        if discovery.issuer != issuer {
            return Err(FederationRefusal::IssuerMismatch);
        }
        let raw = self.outbound.get(&discovery.jwks_uri).await.map_err(|e| unreachable("its jwks_uri", e))?;
        let jwks: JwkSet = serde_json::from_slice(&raw).map_err(|_| unreachable("its JWKS", "not a JWK set"))?;
        if jwks.keys.len() > MAX_JWKS_KEYS {
            return Err(unreachable("its JWKS", format!("more than {MAX_JWKS_KEYS} keys")));
        }
        let endpoints = IssuerEndpoints { authorization: discovery.authorization_endpoint, token: discovery.token_endpoint };
        Ok(Fetched { jwks, endpoints })
    }

    fn cached(&self, issuer: &str) -> Option<Cached> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(issuer).cloned()
    }

    /// The issuer's keys as fetched now, unless a fetch that finished within `min_refetch`
    /// (this one waited for it, say) already answered.
    async fn refetch(&self, issuer: &str) -> Result<Fetched, FederationRefusal> {
        let gate = self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).entry(issuer.to_owned()).or_default().clone();
        let _one_at_a_time = gate.lock().await;
        if let Some(c) = self.cached(issuer).filter(|c| c.fetched_at.elapsed() < self.min_refetch) {
            return c.fetched;
        }
        let fetched = match tokio::time::timeout(FETCH_BUDGET, self.fetch(issuer)).await {
            Ok(fetched) => fetched,
            Err(_) => Err(unreachable("its keys", format!("no answer within {} s", FETCH_BUDGET.as_secs()))),
        };
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_CACHED_ISSUERS {
            cache.clear();
            self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
        cache.insert(issuer.to_owned(), Cached { fetched: fetched.clone(), fetched_at: Instant::now() });
        fetched
    }

    /// The claims of `token` from `expect.issuer`, verified with the issuer's current keys.
    pub async fn verify(
        &self,
        token: &str,
        expect: &ExternalExpectations<'_>,
    ) -> Result<serde_json::Map<String, serde_json::Value>, FederationRefusal> {
        let (fetched, may_refetch) = self.current(expect.issuer).await?;
        match verify_external(token, &fetched.jwks, expect) {
            Err(FederationRefusal::UnknownKey) if may_refetch => verify_external(token, &self.refetch(expect.issuer).await?.jwks, expect),
            done => done,
        }
    }

    /// Where the issuer's people sign in and its codes are redeemed.
    pub async fn endpoints(&self, issuer: &str) -> Result<IssuerEndpoints, FederationRefusal> {
        Ok(self.current(issuer).await?.0.endpoints)
    }

    /// What is in hand for `issuer` (fetched if nothing fresh is), and whether it is old enough
    /// to be fetched again for a `kid` it lacks.
    async fn current(&self, issuer: &str) -> Result<(Fetched, bool), FederationRefusal> {
        match self.cached(issuer) {
            Some(Cached { fetched: Ok(fetched), fetched_at }) if fetched_at.elapsed() < KEYS_TTL => {
                Ok((fetched, fetched_at.elapsed() >= self.min_refetch))
            }
            Some(Cached { fetched: Err(refusal), fetched_at }) if fetched_at.elapsed() < self.min_refetch => Err(refusal),
            _ => Ok((self.refetch(issuer).await?, false)),
        }
    }
}
