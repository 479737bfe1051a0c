//! An issuer's signing keys, found as OpenID Connect Discovery says (`{issuer}/.well-known/
//! openid-configuration`, then its `jwks_uri`), each fetched under the outbound rules: https,
//! a public address after DNS (no private, loopback, link-local or metadata address, whatever
//! the discovery document names), no redirects, bounded size and time. The keys are kept for
//! [`KEYS_TTL`]; a token naming a key not in hand fetches them again, at most once per
//! [`MIN_REFETCH`], so a flood of made-up `kid`s costs the issuer (and us) nothing more.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use serde::Deserialize;

use super::{ExternalExpectations, FederationRefusal, verify_external};
use crate::outbound::Outbound;

pub const KEYS_TTL: Duration = Duration::from_secs(15 * 60);
pub const MIN_REFETCH: Duration = Duration::from_secs(60);
/// A JWKS with more keys than this is refused (real issuers publish a handful).
pub const MAX_JWKS_KEYS: usize = 32;
/// Issuers kept at once; past it the cache starts again empty.
const MAX_CACHED_ISSUERS: usize = 256;

#[derive(Clone)]
struct Cached {
    jwks: JwkSet,
    fetched_at: Instant,
}

pub struct IssuerKeys {
    outbound: Outbound,
    cache: Mutex<HashMap<String, Cached>>,
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
}

fn unreachable(what: &str, e: impl std::fmt::Display) -> FederationRefusal {
    FederationRefusal::IssuerUnreachable(format!("{what}: {e}"))
}

impl IssuerKeys {
    pub fn new(outbound: Outbound) -> Self {
        Self { outbound, cache: Mutex::new(HashMap::new()), min_refetch: MIN_REFETCH }
    }

    /// For tests that rotate an issuer's keys without waiting a minute.
    pub fn with_min_refetch(self, min_refetch: Duration) -> Self {
        Self { min_refetch, ..self }
    }

    async fn fetch(&self, issuer: &str) -> Result<JwkSet, FederationRefusal> {
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
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_CACHED_ISSUERS {
            cache.clear();
        }
        cache.insert(issuer.to_owned(), Cached { jwks: jwks.clone(), fetched_at: Instant::now() });
        Ok(jwks)
    }

    fn cached(&self, issuer: &str) -> Option<Cached> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(issuer).cloned()
    }

    /// The claims of `token` from `expect.issuer`, verified with the issuer's current keys.
    pub async fn verify(
        &self,
        token: &str,
        expect: &ExternalExpectations<'_>,
    ) -> Result<serde_json::Map<String, serde_json::Value>, FederationRefusal> {
        let (jwks, may_refetch) = match self.cached(expect.issuer) {
            Some(c) if c.fetched_at.elapsed() < KEYS_TTL => (c.jwks, c.fetched_at.elapsed() >= self.min_refetch),
            _ => (self.fetch(expect.issuer).await?, false),
        };
        match verify_external(token, &jwks, expect) {
            Err(FederationRefusal::UnknownKey) if may_refetch => verify_external(token, &self.fetch(expect.issuer).await?, expect),
            done => done,
        }
    }
}
