//! DynamoDB's transaction conflicts, which moto never produces, emulated by the fault proxy:
//! first that the emulation follows the documented rules, one test per rule, then that
//! concurrent exchanges of one key and of one principal, with administrators changing that
//! principal in between, never answer 5xx.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::operation::transact_get_items::TransactGetItemsError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, Get, TransactGetItem, TransactWriteItem, Update};
use axum::http::{Method, StatusCode};
use iam_testkit::faults::{ConflictRule, FaultProxy};
use iam_tests::TestApp;
use serde_json::json;

const OPERATION: Duration = Duration::from_secs(5);
const ATTEMPT: Duration = Duration::from_secs(2);

async fn client_through(proxy: &FaultProxy) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(&iam_testkit::sdk_config_for(&proxy.endpoint, OPERATION, ATTEMPT).await)
}

/// An app on fresh tables whose store reaches moto through a fault proxy.
pub(crate) async fn app_through_proxy() -> (TestApp, FaultProxy) {
    let (_direct, tables) = iam_testkit::fresh_store_with_tables().await;
    let proxy = FaultProxy::start(&iam_testkit::moto().endpoint).await;
    let store = tables.store(client_through(&proxy).await);
    (TestApp::with_state(iam_tests::state_with(Arc::new(store)).await).await, proxy)
}

fn key(id: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([("keyId".to_owned(), AttributeValue::S(id.to_owned()))])
}

fn set_field(table: &str, id: &str, value: &str) -> Update {
    Update::builder()
        .table_name(table)
        .set_key(Some(key(id)))
        .update_expression("SET field = :v")
        .expression_attribute_values(":v", AttributeValue::S(value.to_owned()))
        .build()
        .unwrap()
}

/// A transaction held pending for `hold` on item `x`; while it is, each rule is tried once.
#[tokio::test]
async fn the_emulation_follows_dynamodbs_conflict_rules() {
    let (_direct, tables) = iam_testkit::fresh_store_with_tables().await;
    let proxy = FaultProxy::start(&iam_testkit::moto().endpoint).await;
    let client = client_through(&proxy).await;
    let table = tables.credentials.clone();
    client.put_item().table_name(&table).set_item(Some(key("x"))).send().await.unwrap();
    proxy.emulate_conflicts(Duration::from_millis(400));

    let pending = {
        let (client, table) = (client.clone(), table.clone());
        tokio::spawn(async move {
            client
                .transact_write_items()
                .transact_items(TransactWriteItem::builder().update(set_field(&table, "x", "first")).build())
                .send()
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;

    // A transaction meeting it is cancelled, naming the conflicting item.
    let other = client
        .transact_write_items()
        .transact_items(TransactWriteItem::builder().update(set_field(&table, "y", "other")).build())
        .transact_items(TransactWriteItem::builder().update(set_field(&table, "x", "second")).build())
        .send()
        .await;
    match other.map_err(|e| e.into_service_error()) {
        Err(TransactWriteItemsError::TransactionCanceledException(c)) => {
            let codes: Vec<_> = c.cancellation_reasons().iter().map(|r| r.code().unwrap_or_default().to_owned()).collect();
            assert_eq!(codes, ["None", "TransactionConflict"]);
        }
        other => panic!("expected a cancellation for conflict, got {other:?}"),
    }
    // A plain write of its item is refused.
    let write = client
        .update_item()
        .table_name(&table)
        .set_key(Some(key("x")))
        .update_expression("SET field = :v")
        .expression_attribute_values(":v", AttributeValue::S("plain".into()))
        .send()
        .await;
    assert!(matches!(write.map_err(|e| e.into_service_error()), Err(UpdateItemError::TransactionConflictException(_))));
    // A plain read is not: it reads the last committed state.
    let read = client.get_item().table_name(&table).set_key(Some(key("x"))).consistent_read(true).send().await.unwrap();
    assert!(read.item().unwrap().get("field").is_none(), "the pending transaction is not visible yet");
    // A transactional read is cancelled.
    let get = Get::builder().table_name(&table).set_key(Some(key("x"))).build().unwrap();
    let read = client.transact_get_items().transact_items(TransactGetItem::builder().get(get).build()).send().await;
    assert!(matches!(read.map_err(|e| e.into_service_error()), Err(TransactGetItemsError::TransactionCanceledException(_))));

    pending.await.unwrap().expect("the pending transaction itself commits");
    let read = client.get_item().table_name(&table).set_key(Some(key("x"))).consistent_read(true).send().await.unwrap();
    assert_eq!(read.item().unwrap()["field"], AttributeValue::S("first".into()));
    assert_eq!(
        proxy.conflicts(),
        [ConflictRule::TransactionMeetsPending, ConflictRule::WriteMeetsTransaction, ConflictRule::TransactionalReadMeetsTransaction]
    );
    // Once it committed, its item is free again.
    client
        .update_item()
        .table_name(&table)
        .set_key(Some(key("x")))
        .update_expression("SET field = :v")
        .expression_attribute_values(":v", AttributeValue::S("after".into()))
        .send()
        .await
        .unwrap();
}

/// At least 64 exchanges, eight at a time, half of them of one key and all of keys of one
/// principal, while an administrator suspends and reactivates that principal and issues and
/// revokes its keys: every answer is a success or a refusal, never a 5xx.
#[tokio::test]
async fn concurrent_exchanges_and_admin_writes_never_answer_5xx_under_conflicts() {
    let (app, proxy) = app_through_proxy().await;
    let admin = app.admin().await;
    let fleet = app.create_principal(&admin, "fleet").await;
    app.assign(&admin, &fleet, "iam-viewer").await;
    let mut keys = Vec::new();
    for _ in 0..4 {
        keys.push(app.issue(&admin, &fleet).await.1);
    }
    // Each key once, so that the burst below is warm exchanges (one write each).
    for key in &keys {
        assert_eq!(app.exchange_json(json!({"apiKey": key})).await.status, StatusCode::OK);
    }
    proxy.emulate_conflicts(Duration::from_millis(30));

    // Eight workers exchange without pause until the administrator is done (at least 64
    // exchanges in all), so every one of its transactions meets exchanges in flight.
    let done = std::sync::atomic::AtomicBool::new(false);
    let exchanges = futures_util::future::join_all((0..8usize).map(|worker| {
        let key = if worker % 2 == 0 { &keys[0] } else { &keys[worker % 4] };
        let (app, done) = (&app, &done);
        async move {
            let mut answers = Vec::new();
            while answers.len() < 8 || !done.load(std::sync::atomic::Ordering::Relaxed) {
                answers.push(app.exchange_json(json!({"apiKey": key})).await);
            }
            answers
        }
    }));
    let admin_writes = async {
        let mut answers = Vec::new();
        for status in ["Suspended", "Active", "Suspended", "Active"] {
            answers.push(app.call(Method::PATCH, &format!("/iam/api-keys/{fleet}"), Some(&admin), Some(json!({"status": status}))).await);
        }
        let (spare, _) = app.issue(&admin, &fleet).await;
        answers.push(app.call(Method::POST, &format!("/iam/api-keys/{fleet}/credentials/{spare}/revoke"), Some(&admin), None).await);
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        answers
    };
    let (results, admin_answers) = tokio::join!(exchanges, admin_writes);
    let results: Vec<_> = results.into_iter().flatten().collect();
    assert!(results.len() >= 64, "{} exchanges", results.len());
    for r in admin_answers.iter().chain(&results) {
        assert!(!r.status.is_server_error(), "a 5xx under conflicts: {}", r.raw);
    }
    for r in admin_answers {
        assert!(r.status.is_success() || r.status == StatusCode::CONFLICT, "{}", r.raw);
    }
    let ok = results.iter().filter(|r| r.status == StatusCode::OK).count();
    assert!(ok > 0, "some exchanges succeed while the principal is Active");
    for r in results.iter().filter(|r| r.status != StatusCode::OK) {
        // For the suspension, or (four workers on one key) for the per-key limit.
        assert!(["invalid_grant", "slow_down"].contains(&r.str("error")), "a refusal: {}", r.raw);
    }
    let statuses: Vec<u16> = results.iter().map(|r| r.status.as_u16()).collect();
    assert!(!proxy.conflicts().is_empty(), "the emulation produced conflicts for the code to meet: {statuses:?}");
    // Afterwards the principal is Active again and every key works.
    for key in &keys {
        assert_eq!(app.exchange_json(json!({"apiKey": key})).await.status, StatusCode::OK);
    }
}

/// A warm exchange's calls to DynamoDB: one write, a conditional UpdateItem of the credential,
/// and no transaction (the figures in BENCHMARKS.md).
#[tokio::test]
async fn a_warm_exchange_writes_once_without_a_transaction() {
    let (app, proxy) = app_through_proxy().await;
    let admin = app.admin().await;
    let principal = app.create_principal(&admin, "warm").await;
    app.assign(&admin, &principal, "iam-viewer").await;
    let (_, key) = app.issue(&admin, &principal).await;
    assert_eq!(app.exchange_json(json!({"apiKey": key})).await.status, StatusCode::OK, "cold");
    proxy.reset_seen();
    assert_eq!(app.exchange_json(json!({"apiKey": key})).await.status, StatusCode::OK, "warm");
    let seen = proxy.seen();
    let writes: Vec<_> = seen.iter().filter(|op| !matches!(op.as_str(), "GetItem" | "Query" | "BatchGetItem")).collect();
    assert_eq!(writes, ["UpdateItem"], "one conditional write of the credential: {seen:?}");
    println!("warm exchange calls: {seen:?}");
}
