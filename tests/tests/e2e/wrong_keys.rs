//! Wrong and forged keys cost the server almost nothing and never keep the owner out: a
//! secret that fails the stored 32-bit check, or a key id nobody issued, is refused without
//! argon2, and no number of guesses from anyone makes the right secret answer anything but 200.

use std::sync::Arc;

use axum::http::StatusCode;
use iam_shared::api_key::ApiKey;
use iam_shared::authority::Guard;
use iam_shared::ids::{OrgId, PrincipalId};
use iam_shared::model::{Actor, Credential, now};
use iam_shared::store::Store;
use iam_tests::TestApp;
use serde_json::json;

const ATTACKER: &str = "198.51.100.7";

/// Another well-formed secret for the same key id (checksum recomputed): only the secret
/// check or argon2 can tell it is wrong.
pub fn wrong_secret(key: &str) -> String {
    let (id, _) = key.split_once('.').unwrap();
    let other = secrecy::ExposeSecret::expose_secret(&ApiKey::generate().to_secret_string()).to_owned();
    let other = other.split_once('.').unwrap().1;
    let body = &other[..other.len() - 6];
    let sum = format!("{:0>6}", base62::encode(crc32fast::hash(format!("{id}.{body}").as_bytes())));
    let guess = format!("{id}.{body}{sum}");
    assert!(ApiKey::parse(&guess).is_ok(), "the guess is well-formed");
    guess
}

/// A well-formed key for a key id nobody issued.
fn forged_key() -> String {
    secrecy::ExposeSecret::expose_secret(&ApiKey::generate().to_secret_string()).to_owned()
}

/// A second instance on the same store: fresh process state, a cold cache.
async fn cold_instance(app: &TestApp, store: Arc<dyn Store>) -> TestApp {
    let state = iam_tests::state_with(store).await;
    TestApp {
        router: iam_local::app(state.clone()),
        state,
        acme_key: app.acme_key.clone(),
        globex_key: app.globex_key.clone(),
        transcript: Default::default(),
    }
}

async fn scenario(app: &TestApp, store: Arc<dyn Store>) {
    let admin = app.admin().await;
    let p = app.create_principal(&admin, "target").await;
    let (_, key) = app.issue(&admin, &p).await;
    let runs = app.state.hasher.argon2_runs();
    for _ in 0..40 {
        let r = app.exchange_from(ATTACKER, json!({"apiKey": wrong_secret(&key)})).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.raw);
        let r = app.exchange_from(ATTACKER, json!({"apiKey": forged_key()})).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.raw);
        assert_eq!(r.str("error"), "invalid_client", "one answer for unknown and wrong");
    }
    assert_eq!(app.state.hasher.argon2_runs(), runs, "80 wrong and forged keys ran no argon2");

    // The owner, cold on a new instance, from the attacker's own address: never locked out.
    let cold = cold_instance(app, store).await;
    let r = cold.exchange_from(ATTACKER, json!({"apiKey": key})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert_eq!(cold.state.hasher.argon2_runs(), 1, "the right secret is verified with argon2");
}

#[tokio::test]
async fn wrong_and_forged_keys_cost_no_argon2_on_the_embedded_store() {
    let store: Arc<dyn Store> = Arc::new(iam_shared::store::EmbeddedStore::in_memory().unwrap());
    let app = TestApp::with_state(iam_tests::state_with(store.clone()).await).await;
    scenario(&app, store).await;
}

#[tokio::test]
async fn wrong_and_forged_keys_cost_no_argon2_on_dynamodb() {
    let store = iam_testkit::fresh_store().await;
    let app = TestApp::with_state(iam_tests::state_with(store.clone()).await).await;
    scenario(&app, store as Arc<dyn Store>).await;
}

#[tokio::test]
async fn a_credential_issued_before_the_secret_check_gains_it_on_its_next_use() {
    let app = TestApp::new().await;
    let admin = app.admin().await;
    let p = app.create_principal(&admin, "legacy").await;
    let principal = app.state.store.get_principal(&OrgId::parse("acme").unwrap(), &PrincipalId::parse(&p).unwrap()).await.unwrap().unwrap();
    // As a credential stored by the first release: no check beside the hash.
    let api_key = ApiKey::generate();
    let hash = app.state.hasher.hash(api_key.secret()).await.unwrap();
    let legacy =
        Credential::new(&principal, api_key.key_id().clone(), "legacy", None, hash, Actor::system("first-release"), now()).unwrap();
    assert!(legacy.secret_check.is_none());
    app.state.store.insert_credential(&legacy, now(), None, &Guard::NONE).await.unwrap();
    let key_id = legacy.key_id.clone();
    let key = secrecy::ExposeSecret::expose_secret(&api_key.to_secret_string()).to_owned();

    let runs = app.state.hasher.argon2_runs();
    assert_eq!(app.exchange_json(json!({"apiKey": wrong_secret(&key)})).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(app.state.hasher.argon2_runs(), runs + 1, "without a check, a wrong secret still costs argon2");
    assert_eq!(app.exchange_json(json!({"apiKey": key})).await.status, StatusCode::OK);
    let gained = app.state.store.get_credential(&key_id).await.unwrap().unwrap();
    assert!(gained.secret_check.is_some(), "the proved use stored the check");
    let runs = app.state.hasher.argon2_runs();
    assert_eq!(app.exchange_json(json!({"apiKey": wrong_secret(&key)})).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(app.state.hasher.argon2_runs(), runs, "and now a wrong secret costs none");
}
