//! argon2id hashing of key secrets, run on the blocking pool behind a concurrency limit, with a
//! per-instance cache so a warm instance runs argon2 at most once per credential, and the fast
//! secret check that keeps argon2 for callers who know the secret.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::ids::{KeyId, OrgId};
use crate::random;

/// The fast check stored beside the argon2 hash: the first 32 bits of the secret's SHA-256, in
/// hex. Secrets carry at least 256 random bits, so the 224 it leaves unknown are still far
/// beyond any search, online or offline; what it buys is that a wrong or forged secret is
/// refused for one hash instead of an argon2 run (tens of milliseconds and 19 MiB).
pub fn secret_check(secret: &SecretString) -> String {
    use sha2::Digest;
    let digest = Sha256::digest(secret.expose_secret().as_bytes());
    digest[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `secret` passes a stored [`secret_check`], compared in constant time.
pub fn passes_secret_check(secret: &SecretString, stored: &str) -> bool {
    bool::from(secret_check(secret).as_bytes().ct_eq(stored.as_bytes()))
}

/// argon2id cost. The default is OWASP's first recommendation (m=19 MiB, t=2, p=1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for HashParams {
    fn default() -> Self {
        Self { memory_kib: 19_456, iterations: 2, parallelism: 1 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("invalid argon2 parameters: {0}")]
    Params(String),
    #[error("argon2 failed: {0}")]
    Argon2(String),
    #[error("hashing task failed: {0}")]
    Join(String),
}

/// Verified secrets remembered per instance, at most this many in all…
const CACHE_CAPACITY: usize = 10_000;
/// …and at most this many per organisation, so one tenant's flood evicts only its own.
const CACHE_CAPACITY_PER_ORG: usize = 1_000;
/// Longer than the longest token lifetime (an hour), and renewed on every hit: a client that
/// re-exchanges at expiry still finds its entry. Safe because every exchange re-reads the
/// credential and principal, and an entry is bound to the stored hash.
const CACHE_TTL: Duration = Duration::from_secs(65 * 60);

struct CacheEntry {
    digest: [u8; 32],
    expires: Instant,
}

/// The warm cache, bucketed by organisation. Eviction is fair: an organisation at its own cap
/// evicts its own oldest entry; when the whole cache is full, the largest organisation gives
/// one up. No wholesale clear, so a flood never pushes another tenant back onto argon2.
#[derive(Default)]
struct WarmCache {
    buckets: HashMap<OrgId, HashMap<KeyId, CacheEntry>>,
    len: usize,
}

impl WarmCache {
    /// Whether `digest` is the remembered one for this key; a hit slides the entry's expiry.
    fn hit(&mut self, org: &OrgId, key_id: &KeyId, digest: &[u8; 32]) -> bool {
        let now = Instant::now();
        match self.buckets.get_mut(org).and_then(|b| b.get_mut(key_id)) {
            Some(e) if e.expires > now && bool::from(e.digest.ct_eq(digest)) => {
                e.expires = now + CACHE_TTL;
                true
            }
            _ => false,
        }
    }

    fn insert(&mut self, org: OrgId, key_id: KeyId, digest: [u8; 32]) {
        let bucket_len = self.buckets.get(&org).map_or(0, HashMap::len);
        let replacing = self.buckets.get(&org).is_some_and(|b| b.contains_key(&key_id));
        if !replacing {
            if bucket_len >= CACHE_CAPACITY_PER_ORG {
                self.evict_oldest(&org);
            } else if self.len >= CACHE_CAPACITY
                && let Some(largest) = self.buckets.iter().max_by_key(|(_, b)| b.len()).map(|(o, _)| o.clone())
            {
                self.evict_oldest(&largest);
            }
        }
        let entry = CacheEntry { digest, expires: Instant::now() + CACHE_TTL };
        if self.buckets.entry(org).or_default().insert(key_id, entry).is_none() {
            self.len += 1;
        }
    }

    /// Drops the entry of `org` closest to expiry (the least recently used, as hits slide it).
    fn evict_oldest(&mut self, org: &OrgId) {
        let Some(bucket) = self.buckets.get_mut(org) else { return };
        if let Some(oldest) = bucket.iter().min_by_key(|(_, e)| e.expires).map(|(k, _)| k.clone()) {
            bucket.remove(&oldest);
            self.len -= 1;
        }
        if bucket.is_empty() {
            self.buckets.remove(org);
        }
    }
}

/// What a verification found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The secret matches; `from_cache` when the warm cache said so without argon2.
    Matched {
        from_cache: bool,
    },
    Mismatched,
}

/// Hashes and verifies key secrets. Build once per process: it holds the cache and its key.
pub struct SecretHasher {
    params: Params,
    /// Random per process: cache digests are useless outside this instance's memory.
    cache_key: [u8; 32],
    cache: Mutex<WarmCache>,
    /// argon2 runs at once, at most one per core: further callers wait here (a few hundred
    /// bytes each) instead of each holding 19 MiB on the blocking pool.
    argon2_slots: tokio::sync::Semaphore,
    /// One gate per digest being verified right now; empty when nothing is in flight.
    inflight: Mutex<HashMap<[u8; 32], Arc<tokio::sync::Mutex<()>>>>,
    /// argon2 verifications run by this instance: a metric, and the way tests
    /// prove a path skipped argon2.
    argon2_runs: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for SecretHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretHasher").field("params", &self.params).finish_non_exhaustive()
    }
}

fn argon2(params: &Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
}

impl SecretHasher {
    pub fn new(p: HashParams) -> Result<Self, HashError> {
        let params = Params::new(p.memory_kib, p.iterations, p.parallelism, None).map_err(|e| HashError::Params(e.to_string()))?;
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        Ok(Self {
            params,
            cache_key: random::bytes::<32>(),
            cache: Mutex::new(WarmCache::default()),
            argon2_slots: tokio::sync::Semaphore::new(cores),
            inflight: Mutex::new(HashMap::new()),
            argon2_runs: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The argon2id PHC string for `secret`, computed on the blocking pool.
    pub async fn hash(&self, secret: &SecretString) -> Result<String, HashError> {
        let _slot = self.argon2_slots.acquire().await.map_err(|e| HashError::Join(e.to_string()))?;
        let params = self.params.clone();
        let secret = secret.clone();
        tokio::task::spawn_blocking(move || hash_blocking(&params, secret.expose_secret().as_bytes()))
            .await
            .map_err(|e| HashError::Join(e.to_string()))?
    }

    /// Whether `secret` matches `stored_hash`. A hit in the warm cache skips argon2; the cache
    /// entry is bound to the stored hash, so a changed hash misses.
    pub async fn verify(&self, org: &OrgId, key_id: &KeyId, secret: &SecretString, stored_hash: &str) -> Result<bool, HashError> {
        Ok(self.verify_noting_cache(org, key_id, secret, stored_hash).await? != Verdict::Mismatched)
    }

    /// [`Self::verify`], saying whether a match came from the warm cache (for the exchange's
    /// metrics).
    pub async fn verify_noting_cache(
        &self,
        org: &OrgId,
        key_id: &KeyId,
        secret: &SecretString,
        stored_hash: &str,
    ) -> Result<Verdict, HashError> {
        let digest = self.digest(key_id, stored_hash, secret);
        if self.cached(org, key_id, &digest) {
            return Ok(Verdict::Matched { from_cache: true });
        }
        // Single flight per (key, hash, secret): concurrent first exchanges of one key wait for
        // one argon2 run instead of each taking 19 MiB and a core. Other secrets (guesses) have
        // other digests, so they never queue the owner behind them.
        let gate = self.inflight.lock().unwrap_or_else(|p| p.into_inner()).entry(digest).or_default().clone();
        let result = async {
            let _turn = gate.lock().await;
            if self.cached(org, key_id, &digest) {
                // Another exchange of this key ran argon2 while this one waited its turn.
                return Ok(Verdict::Matched { from_cache: true });
            }
            let _slot = self.argon2_slots.acquire().await.map_err(|e| HashError::Join(e.to_string()))?;
            self.argon2_runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let ok = verify_off_executor(secret.clone(), stored_hash.to_owned()).await?;
            // A wrong guess leaves the owner's entry alone: evicting it would let anyone who
            // knows a key id (it is public) push the owner back onto argon2.
            if !ok {
                return Ok(Verdict::Mismatched);
            }
            self.cache.lock().unwrap_or_else(|p| p.into_inner()).insert(org.clone(), key_id.clone(), digest);
            Ok(Verdict::Matched { from_cache: false })
        }
        .await;
        let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        // Ours and the map's: nobody else is waiting on this gate.
        if Arc::strong_count(&gate) == 2 {
            inflight.remove(&digest);
        }
        result
    }

    /// Whether `secret` is the one this instance already verified for this stored hash: a
    /// constant-time digest comparison, no argon2. The exchange asks `verify`, which consults
    /// the cache itself; this lets the tests look at the cache without changing it.
    #[cfg(test)]
    fn is_warm(&self, org: &OrgId, key_id: &KeyId, secret: &SecretString, stored_hash: &str) -> bool {
        self.cached(org, key_id, &self.digest(key_id, stored_hash, secret))
    }

    pub fn argon2_runs(&self) -> u64 {
        self.argon2_runs.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn digest(&self, key_id: &KeyId, stored_hash: &str, secret: &SecretString) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.cache_key).expect("HMAC takes any key length");
        for part in [key_id.as_str(), stored_hash, secret.expose_secret()] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        mac.finalize().into_bytes().into()
    }

    fn cached(&self, org: &OrgId, key_id: &KeyId, digest: &[u8; 32]) -> bool {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).hit(org, key_id, digest)
    }

    #[cfg(test)]
    fn cache_len(&self) -> usize {
        self.cache.lock().unwrap().len
    }
}

fn hash_blocking(params: &Params, secret: &[u8]) -> Result<String, HashError> {
    let salt = random::bytes::<16>();
    argon2(params).hash_password_with_salt(secret, &salt).map(|h| h.to_string()).map_err(|e| HashError::Argon2(e.to_string()))
}

async fn verify_off_executor(secret: SecretString, hash: String) -> Result<bool, HashError> {
    tokio::task::spawn_blocking(move || {
        // Parameters come from the PHC string, so hashes made with older settings still verify.
        Argon2::default().verify_password(secret.expose_secret().as_bytes(), hash.as_str()).is_ok()
    })
    .await
    .map_err(|e| HashError::Join(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn org() -> OrgId {
        OrgId::parse("acme").unwrap()
    }

    fn fast() -> SecretHasher {
        SecretHasher::new(HashParams { memory_kib: 1024, iterations: 1, parallelism: 1 }).unwrap()
    }

    #[tokio::test]
    async fn hash_is_argon2id_phc_and_verifies() {
        let hasher = fast();
        let secret = SecretString::from("s3cret-value");
        let hash = hasher.hash(&secret).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "{hash}");
        assert!(!hash.contains("s3cret-value"));
        let key = KeyId::generate();
        assert!(hasher.verify(&org(), &key, &secret, &hash).await.unwrap());
        assert!(!hasher.verify(&org(), &key, &SecretString::from("wrong"), &hash).await.unwrap());
    }

    #[tokio::test]
    async fn cache_is_bound_to_the_stored_hash() {
        let hasher = fast();
        let secret = SecretString::from("abc");
        let key = KeyId::generate();
        let hash = hasher.hash(&secret).await.unwrap();
        assert!(hasher.verify(&org(), &key, &secret, &hash).await.unwrap());
        assert_eq!(hasher.cache_len(), 1);
        assert!(hasher.cached(&org(), &key, &hasher.digest(&key, &hash, &secret)));
        let rehash = hasher.hash(&secret).await.unwrap();
        assert!(!hasher.cached(&org(), &key, &hasher.digest(&key, &rehash, &secret)));
        assert!(!hasher.cached(&org(), &key, &hasher.digest(&key, &hash, &SecretString::from("abd"))));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// A warm cache entry never vouches for another secret.
        #[test]
        fn the_cache_never_lets_a_wrong_secret_through(wrong in "[0-9A-Za-z]{1,60}") {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let hasher = cached_hasher();
                let (key, secret, hash) = &*CACHED;
                proptest::prop_assume!(wrong != *secret);
                assert!(hasher.verify(&org(), key, &SecretString::from(secret.clone()), hash).await.unwrap(), "warm");
                assert!(!hasher.is_warm(&org(), key, &SecretString::from(wrong.clone()), hash));
                assert!(!hasher.verify(&org(), key, &SecretString::from(wrong), hash).await.unwrap());
                assert!(hasher.is_warm(&org(), key, &SecretString::from(secret.clone()), hash), "a wrong guess does not evict the owner");
                Ok(())
            })?;
        }
    }

    static HASHER: std::sync::LazyLock<SecretHasher> = std::sync::LazyLock::new(fast);
    static CACHED: std::sync::LazyLock<(KeyId, String, String)> = std::sync::LazyLock::new(|| {
        let secret = "the-real-secret".to_owned();
        let hash = hash_blocking(&HASHER.params, secret.as_bytes()).unwrap();
        (KeyId::generate(), secret, hash)
    });

    fn cached_hasher() -> &'static SecretHasher {
        &HASHER
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_first_verifications_of_one_secret_run_argon2_once() {
        let hasher = Arc::new(fast());
        let secret = SecretString::from("shared-secret");
        let hash = hasher.hash(&secret).await.unwrap();
        let key = KeyId::generate();
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (hasher, secret, hash, key) = (hasher.clone(), secret.clone(), hash.clone(), key.clone());
            tasks.push(tokio::spawn(async move { hasher.verify(&org(), &key, &secret, &hash).await.unwrap() }));
        }
        for t in tasks {
            assert!(t.await.unwrap());
        }
        assert_eq!(hasher.argon2_runs(), 1);
        assert!(hasher.inflight.lock().unwrap().is_empty(), "no gate left behind");
        let wrong = SecretString::from("guess");
        assert!(!hasher.verify(&org(), &key, &wrong, &hash).await.unwrap());
        assert!(!hasher.verify(&org(), &key, &wrong, &hash).await.unwrap());
        assert_eq!(hasher.argon2_runs(), 3, "wrong secrets are never cached");
    }

    #[test]
    fn one_organisations_flood_never_evicts_another_organisations_warm_entry() {
        let mut cache = WarmCache::default();
        let (b, b_key) = (OrgId::parse("org-b").unwrap(), KeyId::generate());
        cache.insert(b.clone(), b_key.clone(), [7; 32]);
        let a = OrgId::parse("org-a").unwrap();
        for _ in 0..3 * CACHE_CAPACITY {
            cache.insert(a.clone(), KeyId::generate(), [1; 32]);
        }
        assert!(cache.hit(&b, &b_key, &[7; 32]), "org B's warm entry survives org A's flood");
        assert_eq!(cache.buckets[&a].len(), CACHE_CAPACITY_PER_ORG, "org A is held to its own share");
        assert!(cache.len <= CACHE_CAPACITY);
    }

    #[test]
    fn a_full_cache_gives_up_an_entry_of_its_largest_organisation() {
        let mut cache = WarmCache::default();
        let orgs: Vec<OrgId> = (0..CACHE_CAPACITY / CACHE_CAPACITY_PER_ORG).map(|i| OrgId::parse(&format!("org-{i}")).unwrap()).collect();
        for org in &orgs {
            for _ in 0..CACHE_CAPACITY_PER_ORG {
                cache.insert(org.clone(), KeyId::generate(), [1; 32]);
            }
        }
        let (late, late_key) = (OrgId::parse("late").unwrap(), KeyId::generate());
        cache.insert(late.clone(), late_key.clone(), [2; 32]);
        assert_eq!(cache.len, CACHE_CAPACITY, "bounded");
        assert!(cache.hit(&late, &late_key, &[2; 32]));
    }

    #[test]
    fn the_secret_check_tells_the_right_secret_from_a_wrong_one_and_reveals_32_bits() {
        let secret = SecretString::from("the-real-secret");
        let check = secret_check(&secret);
        assert_eq!(check.len(), 8, "32 bits in hex");
        assert!(passes_secret_check(&secret, &check));
        assert!(!passes_secret_check(&SecretString::from("the-real-secreT"), &check));
        assert!(!check.contains("real"));
    }

    #[test]
    fn default_params_are_the_documented_ones() {
        assert_eq!(HashParams::default(), HashParams { memory_kib: 19_456, iterations: 2, parallelism: 1 });
    }

    #[test]
    fn bad_params_are_an_error_not_a_panic() {
        assert!(SecretHasher::new(HashParams { memory_kib: 1, iterations: 0, parallelism: 0 }).is_err());
    }
}
