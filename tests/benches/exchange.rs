//! `cargo bench -p iam-tests --bench exchange`: criterion measurements of the exchange's cold
//! path (argon2 verify on a fresh instance), its warm path (verification cache hit), RS256
//! signing and verification alone, argon2id verify alone, and an unknown key id (decoy), with
//! production argon2 parameters on the in-memory embedded store; and the warm path again on the
//! default on-disk embedded store (`warm_on_disk`, a redb file in a temporary directory). After
//! criterion's own report it prints the ratios BENCHMARKS.md tracks, from criterion's
//! `estimates.json`. Asserts nothing about time.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode};
use iam_api::config::Config;
use iam_api::state::{AppState, build_state};
use iam_shared::api_key::ApiKey;
use iam_shared::hashing::HashParams;
use iam_shared::ids::{KeyId, OrgId, Permission, PrincipalId, RoleId};
use iam_shared::model;
use iam_shared::service::ExchangeRequest;
use iam_shared::signing_keys::{KeySource, StaticKey};
use iam_shared::store::{EmbeddedStore, Store};
use iam_shared::token::Grant;
use secrecy::ExposeSecret;
use tokio::runtime::Runtime;

const GROUP: &str = "exchange";

fn config() -> Config {
    let mut config = iam_tests::config();
    config.hash = HashParams::default();
    config
}

fn request(key: &str) -> ExchangeRequest {
    ExchangeRequest { key: ApiKey::parse(key), scope: None, audience: None, source: None }
}

struct Fixture {
    config: Config,
    store: Arc<dyn Store>,
    keys: Arc<dyn KeySource>,
    state: AppState,
    key: String,
    /// The same service on a redb file, as `iam-local` runs by default.
    on_disk: AppState,
    on_disk_key: String,
    _dir: tempfile::TempDir,
}

fn fixture(rt: &Runtime) -> Fixture {
    rt.block_on(async {
        let mut config = config();
        // One key exchanged as fast as it goes: the per-key limit is not what is measured.
        config.limits.exchanges_per_key_per_second = u32::MAX;
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory().unwrap());
        let keys: Arc<dyn KeySource> = Arc::new(StaticKey(iam_tests::signing_key()));
        let state = build_state(&config, store.clone(), keys.clone()).await.unwrap();
        let key = state.bootstrap(&OrgId::parse("bench").unwrap()).await.unwrap().unwrap();
        let key = key.to_secret_string().expose_secret().to_owned();
        let dir = tempfile::tempdir().unwrap();
        let disk: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.path().join("iam.redb")).unwrap());
        let on_disk = build_state(&config, disk, keys.clone()).await.unwrap();
        let on_disk_key = on_disk.bootstrap(&OrgId::parse("bench").unwrap()).await.unwrap().unwrap();
        let on_disk_key = on_disk_key.to_secret_string().expose_secret().to_owned();
        Fixture { config, store, keys, state, key, on_disk, on_disk_key, _dir: dir }
    })
}

fn benches(c: &mut Criterion, rt: &Runtime, f: &Fixture) {
    println!(
        "argon2id m={} KiB t={} p={}; RS256 2048-bit; embedded store in memory",
        f.config.hash.memory_kib, f.config.hash.iterations, f.config.hash.parallelism
    );
    let mut group = c.benchmark_group(GROUP);

    // Slow paths (~20 ms): flat sampling keeps the run to seconds.
    group.sampling_mode(SamplingMode::Flat).sample_size(20).measurement_time(Duration::from_secs(8));
    group.bench_function("cold", |b| {
        // A fresh instance (empty verification cache) for every exchange, as after a cold start;
        // building it is outside the measured time.
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let fresh = build_state(&f.config, f.store.clone(), f.keys.clone()).await.unwrap();
                    let start = Instant::now();
                    fresh.exchange(request(&f.key)).await.expect("exchange");
                    total += start.elapsed();
                }
                total
            })
        })
    });
    let probe = secrecy::SecretString::from("a-secret-that-never-matches".to_owned());
    group.bench_function("argon2_hash", |b| b.to_async(rt).iter(|| f.state.hasher.hash(&probe)));
    // A forged key: well-formed, for a key id nobody issued. Refused after one read, no argon2.
    let unknown = ApiKey::generate().to_secret_string().expose_secret().to_owned();
    group.bench_function("forged_key", |b| b.to_async(rt).iter(|| async { f.state.exchange(request(&unknown)).await.unwrap_err() }));

    group.sampling_mode(SamplingMode::Auto).sample_size(50).measurement_time(Duration::from_secs(5));
    rt.block_on(f.state.exchange(request(&f.key))).unwrap();
    group.bench_function("warm", |b| b.to_async(rt).iter(|| async { f.state.exchange(request(&f.key)).await.expect("exchange") }));
    rt.block_on(f.on_disk.exchange(request(&f.on_disk_key))).unwrap();
    group.bench_function("warm_on_disk", |b| {
        b.to_async(rt).iter(|| async { f.on_disk.exchange(request(&f.on_disk_key)).await.expect("exchange") })
    });

    let tokens = rt.block_on(f.state.tokens.current());
    let (pid, org, kid) = (PrincipalId::generate(), OrgId::parse("bench").unwrap(), KeyId::generate());
    let roles = [RoleId::parse("iam-admin").unwrap()];
    let scope: Vec<Permission> = iam_shared::roles::IAM_PERMISSIONS.iter().map(|p| Permission::parse(p).unwrap()).collect();
    let grant = Grant { principal_id: &pid, org_id: &org, key_id: &kid, roles: &roles, scope: &scope, audience: "infuse-api" };
    group.bench_function("rs256_sign", |b| b.iter(|| tokens.sign(&grant, model::now()).unwrap()));
    let (token, _) = tokens.sign(&grant, model::now()).unwrap();
    group.bench_function("rs256_verify", |b| b.iter(|| tokens.verify(&token, "infuse-api").unwrap()));
    group.finish();
}

/// Criterion's mean estimate for one benchmark of this run, in seconds.
fn mean_seconds(bench: &str) -> Option<f64> {
    let home = std::env::var_os("CRITERION_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).parent().expect("target dir").join("criterion"));
    let raw = std::fs::read_to_string(home.join(GROUP).join(bench).join("new/estimates.json")).ok()?;
    let estimates: serde_json::Value = serde_json::from_str(&raw).ok()?;
    estimates["mean"]["point_estimate"].as_f64().map(|ns| ns / 1e9)
}

fn main() {
    let rt = Runtime::new().unwrap();
    let fixture = fixture(&rt);
    let mut criterion = Criterion::default().configure_from_args();
    benches(&mut criterion, &rt, &fixture);
    criterion.final_summary();

    if let (Some(memory), Some(disk)) = (mean_seconds("warm"), mean_seconds("warm_on_disk")) {
        println!(
            "\nwarm exchange in memory {:.1} µs, on disk {:.1} µs: on disk {:+.1} %",
            memory * 1e6,
            disk * 1e6,
            (disk / memory - 1.0) * 100.0
        );
    }
    let (Some(warm), Some(sign), Some(cold), Some(argon)) =
        (mean_seconds("warm"), mean_seconds("rs256_sign"), mean_seconds("cold"), mean_seconds("argon2_verify"))
    else {
        // A filtered run (`cargo bench -- warm`) measures only some of them.
        return;
    };
    println!("\nwarm exchange: {:.0}/s = {:.2} x the RS256-sign limit ({:.0}/s)", 1.0 / warm, sign / warm, 1.0 / sign);
    println!("cold exchange: {:.1}/s = {:.2} x the argon2 limit ({:.1}/s)", 1.0 / cold, argon / cold, 1.0 / argon);
}
