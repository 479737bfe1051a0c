//! Faults and races against the DynamoDB store on moto: throttling is retried, persistent
//! failures and timeouts answer 503 and write nothing, and revocation wins its races.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use iam_shared::api_key::ApiKey;
use iam_shared::service::ExchangeRequest;
use iam_shared::store::{DynamoStore, Store};
use iam_testkit::faults::{Fault, FaultProxy};
use iam_tests::TestApp;
use serde_json::json;

const OPERATION: Duration = Duration::from_secs(4);
const ATTEMPT: Duration = Duration::from_secs(1);

/// An app whose store talks to moto through a fault proxy, and a direct store on the same
/// tables to read back what really happened.
async fn faulty_app() -> (TestApp, FaultProxy, Arc<DynamoStore>) {
    let (direct, tables) = iam_testkit::fresh_store_with_tables().await;
    let proxy = FaultProxy::start(&iam_testkit::moto().endpoint).await;
    let sdk = iam_testkit::sdk_config_for(&proxy.endpoint, OPERATION, ATTEMPT).await;
    let store = tables.store(aws_sdk_dynamodb::Client::new(&sdk));
    let app = TestApp::with_state(iam_tests::state_with(Arc::new(store)).await).await;
    (app, proxy, direct)
}

async fn dynamo_app() -> TestApp {
    TestApp::with_state(iam_tests::state_with(iam_testkit::fresh_store().await).await).await
}

fn org() -> iam_shared::ids::OrgId {
    iam_shared::ids::OrgId::parse("acme").unwrap()
}

#[tokio::test]
async fn building_the_state_opens_the_dynamodb_connection_before_any_request() {
    let (_direct, tables) = iam_testkit::fresh_store_with_tables().await;
    let proxy = FaultProxy::start(&iam_testkit::moto().endpoint).await;
    let sdk = iam_testkit::sdk_config_for(&proxy.endpoint, OPERATION, ATTEMPT).await;
    let store = tables.store(aws_sdk_dynamodb::Client::new(&sdk));
    let _state = iam_tests::state_with(Arc::new(store)).await;
    assert_eq!(proxy.seen(), vec!["GetItem".to_owned()], "one warm-up read during init, before any request");
}

#[tokio::test]
async fn a_failed_warm_up_does_not_stop_the_cold_start() {
    let (_direct, tables) = iam_testkit::fresh_store_with_tables().await;
    let proxy = FaultProxy::start(&iam_testkit::moto().endpoint).await;
    proxy.inject("*", Fault::Fail, Some(3));
    let sdk = iam_testkit::sdk_config_for(&proxy.endpoint, OPERATION, ATTEMPT).await;
    let store = tables.store(aws_sdk_dynamodb::Client::new(&sdk));
    let app = TestApp::with_state(iam_tests::state_with(Arc::new(store)).await).await;
    let admin = app.admin().await;
    let r = app.call(Method::GET, "/iam/api-keys", Some(&admin), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
}

#[tokio::test]
async fn throttling_is_retried_and_succeeds() {
    let (app, proxy, direct) = faulty_app().await;
    let admin = app.admin().await;
    proxy.reset_seen();
    proxy.inject("TransactWriteItems", Fault::Throttle, Some(2));
    let r = app.call(Method::POST, "/iam/api-keys", Some(&admin), Some(json!({"displayName": "throttled"}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
    assert_eq!(proxy.seen().iter().filter(|op| *op == "TransactWriteItems").count(), 3, "two throttled attempts, then success");
    let id = iam_shared::ids::PrincipalId::parse(r.str("id")).unwrap();
    assert!(direct.get_principal(&org(), &id).await.unwrap().is_some());
}

#[tokio::test]
async fn a_persistent_fault_is_a_503_within_the_operation_timeout_and_writes_nothing() {
    let (app, proxy, direct) = faulty_app().await;
    let admin = app.admin().await;
    let p = app.create_principal(&admin, "svc").await;
    let pid = iam_shared::ids::PrincipalId::parse(&p).unwrap();
    let (key_id, _) = app.issue(&admin, &p).await;

    proxy.inject("TransactWriteItems", Fault::Fail, None);
    let r = app.call(Method::POST, &format!("/iam/api-keys/{p}/credentials"), Some(&admin), Some(json!({"name": "second"}))).await;
    // From the failing operation's first attempt to the answer: retries included, never past
    // the operation timeout.
    let elapsed = proxy.first_fault_at().expect("the fault was met").elapsed();
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.raw);
    assert!(matches!(r.header("retry-after"), Some("1" | "2" | "3")), "a jittered Retry-After: {:?}", r.header("retry-after"));
    assert!(!r.raw.contains("InternalServerError"), "internal causes are not sent: {}", r.raw);
    assert!(elapsed < OPERATION, "bounded by the operation timeout, took {elapsed:?}");
    assert_eq!(direct.list_credentials(&org(), &pid).await.unwrap().len(), 1, "no credential half-written");

    proxy.inject("PutItem", Fault::Fail, None);
    let r = app.call(Method::POST, "/iam/api-keys", Some(&admin), Some(json!({"displayName": "never"}))).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(direct.list_principals(&org(), 10, None).await.unwrap().items.len(), 2, "the bootstrap admin and svc only");

    proxy.inject("UpdateItem", Fault::Fail, None);
    let r = app.call(Method::POST, &format!("/iam/api-keys/{p}/credentials/{key_id}/revoke"), Some(&admin), None).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    let key = iam_shared::ids::KeyId::parse(&key_id).unwrap();
    assert_eq!(direct.get_credential(&key).await.unwrap().unwrap().status, iam_shared::model::CredentialStatus::Active);

    proxy.clear();
    let r = app.call(Method::POST, &format!("/iam/api-keys/{p}/credentials/{key_id}/revoke"), Some(&admin), None).await;
    assert_eq!(r.status, StatusCode::OK, "recovers once the fault clears");
}

#[tokio::test]
async fn a_timeout_mid_exchange_issues_no_token() {
    let (app, proxy, _) = faulty_app().await;
    app.admin().await;
    // The credential read passes; the principal's never answers.
    proxy.inject("GetItem", Fault::Pass, Some(1));
    proxy.inject("GetItem", Fault::Stall, None);
    let r = app.exchange_json(json!({"apiKey": app.acme_key})).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.raw);
    assert_eq!(r.str("error"), "temporarily_unavailable");
    assert!(r.body.get("access_token").is_none());
    let elapsed = proxy.first_fault_at().expect("the stall was met").elapsed();
    assert!(elapsed < OPERATION + Duration::from_millis(500), "the stalled read gives up at the operation timeout, took {elapsed:?}");
    assert!(proxy.seen().contains(&"GetItem".to_owned()));

    proxy.clear();
    proxy.inject("GetItem", Fault::Stall, None);
    let r = app.exchange_json(json!({"apiKey": app.acme_key})).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_exchange_that_starts_after_a_revoke_returns_gets_a_token() {
    let app = dynamo_app().await;
    let admin = app.admin().await;
    let p = app.create_principal(&admin, "racer").await;
    let (key_id, key) = app.issue(&admin, &p).await;
    app.token(&key).await;

    let mut tasks = Vec::new();
    // Spread over 3 s: the revoke reads the target and its witness first, behind the
    // exchanges' requests on the one serial moto.
    for i in 0..100u64 {
        let state = app.state.clone();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(i * 30)).await;
            let started = Instant::now();
            let result = state.exchange(ExchangeRequest { key: ApiKey::parse(&key), scope: None, audience: None, source: None }).await;
            (started, result.is_ok())
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = app.call(Method::POST, &format!("/iam/api-keys/{p}/credentials/{key_id}/revoke"), Some(&admin), None).await;
    let revoked = Instant::now();
    assert_eq!(r.status, StatusCode::OK);
    // On a loaded machine the revoke can outlast the spread above: a few more exchanges start
    // now, so that the side after it is never empty.
    for _ in 0..10 {
        let state = app.state.clone();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let result = state.exchange(ExchangeRequest { key: ApiKey::parse(&key), scope: None, audience: None, source: None }).await;
            (started, result.is_ok())
        }));
    }
    let (mut before, mut after) = (0, 0);
    for t in tasks {
        let (started, ok) = t.await.unwrap();
        if started > revoked {
            after += 1;
            assert!(!ok, "an exchange that started after the revoke returned got a token");
        } else {
            before += 1;
        }
    }
    assert!(after > 0 && before > 0, "the race had both sides: {before} before, {after} after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_issues_never_exceed_ten_active_credentials() {
    let app = Arc::new(dynamo_app().await);
    let admin = app.admin().await;
    let p = app.create_principal(&admin, "busy").await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let app = app.clone();
        let (admin, p) = (admin.clone(), p.clone());
        tasks.push(tokio::spawn(async move {
            app.call(Method::POST, &format!("/iam/api-keys/{p}/credentials"), Some(&admin), Some(json!({ "name": format!("k{i}") })))
                .await
                .status
        }));
    }
    let mut created = 0;
    for t in tasks {
        let status = t.await.unwrap();
        assert!(status == StatusCode::CREATED || status == StatusCode::CONFLICT, "{status}");
        if status == StatusCode::CREATED {
            created += 1;
        }
    }
    let list = app.call(Method::GET, &format!("/iam/api-keys/{p}/credentials"), Some(&admin), None).await;
    let active = list.body["items"].as_array().unwrap().len();
    assert_eq!(active, created);
    assert!(created <= 10, "{created} active credentials");
    assert!(created > 0);
}

#[tokio::test]
async fn the_management_flow_works_on_dynamodb() {
    let app = dynamo_app().await;
    let admin = app.admin().await;
    let p = app.create_principal(&admin, "billing").await;
    app.assign(&admin, &p, "iam-viewer").await;
    let (key_id, key) = app.issue(&admin, &p).await;
    let token = app.token(&key).await;
    let got = app.call(Method::GET, &format!("/iam/api-keys/{p}"), Some(&token), None).await;
    assert_eq!(got.status, StatusCode::OK);
    let page = app.call(Method::GET, "/iam/api-keys?limit=1", Some(&admin), None).await;
    assert!(page.body["nextCursor"].is_string());
    app.call(Method::POST, &format!("/iam/api-keys/{p}/credentials/{key_id}/revoke"), Some(&admin), None).await;
    let r = app.exchange_json(json!({"apiKey": key})).await;
    assert_eq!(r.str("error_description"), "the credential has been revoked");
    assert_eq!(app.call(Method::GET, &format!("/iam/api-keys/{p}"), Some(&token), None).await.status, StatusCode::UNAUTHORIZED);
    let globex = app.token(&app.globex_key).await;
    assert_eq!(app.call(Method::GET, &format!("/iam/api-keys/{p}"), Some(&globex), None).await.status, StatusCode::NOT_FOUND);
}
