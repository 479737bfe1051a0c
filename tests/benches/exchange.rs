//! `cargo bench -p iam-tests --bench exchange`: the exchange's cold path (argon2 verify),
//! its warm path (verification cache hit), and RS256 signing alone, with production argon2
//! parameters on the in-memory embedded store. Prints figures; asserts nothing about time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use iam_api::config::Config;
use iam_api::state::build_state;
use iam_shared::hashing::HashParams;
use iam_shared::ids::{KeyId, OrgId, Permission, PrincipalId, RoleId};
use iam_shared::key::ApiKey;
use iam_shared::keys::{KeySource, StaticKey};
use iam_shared::model;
use iam_shared::service::ExchangeRequest;
use iam_shared::store::{EmbeddedStore, Store};
use iam_shared::token::Grant;
use secrecy::ExposeSecret;

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let n = samples.len();
    let mean = samples.iter().sum::<Duration>() / n as u32;
    let pct = |p: f64| samples[((n as f64 * p) as usize).min(n - 1)];
    println!(
        "{name:<34} n={n:<5} mean={:>9.3} ms  p50={:>9.3} ms  p95={:>9.3} ms  min={:>9.3} ms",
        mean.as_secs_f64() * 1e3,
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.95).as_secs_f64() * 1e3,
        samples[0].as_secs_f64() * 1e3
    );
}

fn config() -> Config {
    let mut config = iam_tests::config();
    config.hash = HashParams::default();
    config
}

fn request(key: &str) -> ExchangeRequest {
    ExchangeRequest { key: ApiKey::parse(key), scope: None, audience: None, source: None }
}

#[tokio::main]
async fn main() {
    let config = config();
    println!(
        "argon2id m={} KiB t={} p={}; RS256 2048-bit; embedded store in memory",
        config.hash.memory_kib, config.hash.iterations, config.hash.parallelism
    );
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory().unwrap());
    let keys: Arc<dyn KeySource> = Arc::new(StaticKey(iam_tests::signing_key()));
    let state = build_state(&config, store.clone(), keys.clone()).await.unwrap();
    let key = state.bootstrap(&OrgId::parse("bench").unwrap()).await.unwrap().unwrap();
    let key = key.to_secret_string().expose_secret().to_owned();

    // Cold: a fresh instance (empty verification cache) for every exchange, as after a cold start.
    let mut cold = Vec::new();
    for _ in 0..30 {
        let fresh = build_state(&config, store.clone(), keys.clone()).await.unwrap();
        let start = Instant::now();
        fresh.exchange(request(&key)).await.expect("exchange");
        cold.push(start.elapsed());
    }
    report("exchange, cold (argon2 verify)", cold);

    // Warm: one instance, the same key again and again.
    state.exchange(request(&key)).await.unwrap();
    let mut warm = Vec::new();
    for _ in 0..500 {
        let start = Instant::now();
        state.exchange(request(&key)).await.expect("exchange");
        warm.push(start.elapsed());
    }
    report("exchange, warm (cache hit)", warm);

    let tokens = state.tokens.current().await;
    let (pid, org, kid) = (PrincipalId::generate(), OrgId::parse("bench").unwrap(), KeyId::generate());
    let roles = [RoleId::parse("iam-admin").unwrap()];
    let scope: Vec<Permission> = iam_shared::roles::IAM_PERMISSIONS.iter().map(|p| Permission::parse(p).unwrap()).collect();
    let grant = Grant { principal_id: &pid, org_id: &org, key_id: &kid, roles: &roles, scope: &scope, audience: "infuse-api" };
    let mut sign = Vec::new();
    for _ in 0..500 {
        let start = Instant::now();
        tokens.sign(&grant, model::now()).unwrap();
        sign.push(start.elapsed());
    }
    report("RS256 sign alone", sign);

    let (token, _) = tokens.sign(&grant, model::now()).unwrap();
    let mut verify = Vec::new();
    for _ in 0..500 {
        let start = Instant::now();
        tokens.verify(&token, "infuse-api").unwrap();
        verify.push(start.elapsed());
    }
    report("RS256 verify alone", verify);

    let mut argon = Vec::new();
    let probe = secrecy::SecretString::from("a-secret-that-never-matches".to_owned());
    for _ in 0..30 {
        let start = Instant::now();
        state.hasher.verify_decoy(&probe).await.unwrap();
        argon.push(start.elapsed());
    }
    report("argon2id verify alone", argon);

    let mut bad = Vec::new();
    let unknown = ApiKey::generate().to_secret_string().expose_secret().to_owned();
    for _ in 0..30 {
        let start = Instant::now();
        let _ = state.exchange(request(&unknown)).await;
        bad.push(start.elapsed());
    }
    report("exchange, unknown key id (decoy)", bad);
}
