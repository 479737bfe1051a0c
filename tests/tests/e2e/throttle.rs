//! Failed-attempt throttling: after 10 wrong secrets for one key from one address in a minute,
//! that pair gets 429 without argon2; the warm owner, other addresses and other keys do not.

use std::sync::Arc;

use axum::http::StatusCode;
use iam_shared::store::Store;
use iam_tests::TestApp;
use serde_json::json;

const ATTACKER: &str = "198.51.100.7";
const ELSEWHERE: &str = "203.0.113.9";

fn wrong_secret(key: &str) -> String {
    // Same key id, another well-formed secret: only argon2 can tell it is wrong.
    let (id, _) = key.split_once('.').unwrap();
    let other = iam_shared::key::ApiKey::generate();
    let other = secrecy::ExposeSecret::expose_secret(&other.to_secret_string()).to_owned();
    let forged = format!("{id}.{}", other.split_once('.').unwrap().1);
    // The checksum covers the key id too, so recompute it to get past the format check.
    let body = &forged[forged.find('.').unwrap() + 1..forged.len() - 6];
    let sum = format!("{:0>6}", base62::encode(crc32fast::hash(format!("{id}.{body}").as_bytes())));
    format!("{id}.{body}{sum}")
}

async fn scenario(app: &TestApp) -> String {
    let admin = app.admin().await;
    let p = app.create_principal(&admin, "target").await;
    let (_, key) = app.issue(&admin, &p).await;
    let (_, other_key) = app.issue(&admin, &p).await;
    let guess = wrong_secret(&key);
    assert!(iam_shared::key::ApiKey::parse(&guess).is_ok(), "the guess is well-formed");

    // The owner is warm on this instance.
    assert_eq!(app.exchange_from(ATTACKER, json!({"apiKey": key})).await.status, StatusCode::OK);

    iam_tests::start_early_in_a_throttle_window().await;
    for _ in 0..10 {
        let r = app.exchange_from(ATTACKER, json!({"apiKey": guess})).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.raw);
    }
    let runs = app.state.hasher.argon2_runs();
    let r = app.exchange_from(ATTACKER, json!({"apiKey": guess})).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.raw);
    assert_eq!(r.str("error"), "slow_down");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry));
    assert_eq!(app.state.hasher.argon2_runs(), runs, "a throttled guess costs no argon2");

    assert_eq!(app.exchange_from(ATTACKER, json!({"apiKey": key})).await.status, StatusCode::OK, "the warm owner is not locked out");
    assert_eq!(
        app.exchange_from(ELSEWHERE, json!({"apiKey": guess})).await.status,
        StatusCode::UNAUTHORIZED,
        "other addresses count apart"
    );
    assert_eq!(app.exchange_from(ELSEWHERE, json!({"apiKey": key})).await.status, StatusCode::OK);
    assert_eq!(app.exchange_from(ATTACKER, json!({"apiKey": other_key})).await.status, StatusCode::OK, "other keys count apart");
    guess
}

#[tokio::test]
async fn throttling_on_the_embedded_store() {
    scenario(&TestApp::new().await).await;
}

#[tokio::test]
async fn throttling_on_dynamodb_survives_a_new_instance() {
    let store = iam_testkit::fresh_store().await;
    let app = TestApp::with_state(iam_tests::state_with(store.clone()).await).await;
    let guess = scenario(&app).await;
    // A second instance (fresh process state, same table) sees the same count.
    let second = iam_tests::state_with(store as Arc<dyn Store>).await;
    let second = TestApp {
        router: iam_local::app(second.clone()),
        state: second,
        acme_key: app.acme_key.clone(),
        globex_key: app.globex_key.clone(),
        transcript: Default::default(),
    };
    let r = second.exchange_from(ATTACKER, json!({"apiKey": guess})).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.raw);
    assert_eq!(second.state.hasher.argon2_runs(), 0, "refused before any argon2 on the new instance");
}

#[tokio::test]
async fn without_a_known_address_nothing_is_counted() {
    let app = TestApp::new().await;
    let guess = wrong_secret(&app.acme_key);
    for _ in 0..12 {
        assert_eq!(app.exchange_json(json!({"apiKey": guess})).await.status, StatusCode::UNAUTHORIZED);
    }
}
