//! The store failing at each step of every writing operation, on DynamoDB (moto behind a fault
//! proxy): for each operation the clean run's request sequence is recorded, then the operation
//! runs again on a fresh fixture with an outage starting at step 1, 2, … n. Every time the
//! client must see 503, and both tables must read back exactly as before the request.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use iam_testkit::Tables;
use iam_testkit::faults::FaultProxy;
use iam_tests::{Response, TestApp};
use serde_json::json;

const OPERATION: Duration = Duration::from_secs(4);
const ATTEMPT: Duration = Duration::from_secs(1);

struct Fixture {
    app: TestApp,
    proxy: FaultProxy,
    tables: Tables,
    admin: String,
    principal: String,
    key_id: String,
    api_key: String,
    role: String,
}

async fn fixture() -> Fixture {
    let (_, tables) = iam_testkit::fresh_store_with_tables().await;
    let proxy = FaultProxy::start(&iam_testkit::moto().endpoint).await;
    let sdk = iam_testkit::sdk_config_for(&proxy.endpoint, OPERATION, ATTEMPT).await;
    let store = tables.store(aws_sdk_dynamodb::Client::new(&sdk));
    let app = TestApp::with_state(iam_tests::state_with(Arc::new(store)).await).await;
    let admin = app.admin().await;
    let principal = app.create_principal(&admin, "svc").await;
    let (key_id, api_key) = app.issue(&admin, &principal).await;
    let body = json!({"name": "deployer", "permissions": ["ci:deploy"], "principalTypes": ["ApiKey"]});
    let role = app.call(Method::POST, "/iam/roles", Some(&admin), Some(body)).await.str("id").to_owned();
    app.assign(&admin, &principal, &role).await;
    Fixture { app, proxy, tables, admin, principal, key_id, api_key, role }
}

/// Every item of both tables, as text, in order.
async fn snapshot(tables: &Tables) -> Vec<String> {
    let client = aws_sdk_dynamodb::Client::new(&iam_testkit::sdk_config().await);
    let mut all = Vec::new();
    for table in tables.all() {
        let out = client.scan().table_name(table).send().await.expect("scan");
        for item in out.items() {
            let sorted: BTreeMap<_, _> = item.iter().map(|(k, v)| (k.clone(), format!("{v:?}"))).collect();
            all.push(format!("{sorted:?}"));
        }
    }
    all.sort();
    all
}

const OPERATIONS: [&str; 11] = [
    "create principal",
    "issue credential",
    "rotate credential",
    "update credential",
    "revoke credential",
    "update principal",
    "create role",
    "assign role",
    "unassign role",
    "exchange",
    "authenticated read",
];

async fn perform(op: &str, f: &Fixture) -> Response {
    let (app, admin, p) = (&f.app, Some(f.admin.as_str()), &f.principal);
    let key = [("idempotency-key", "fault-step")];
    match op {
        "create principal" => app.call_with(Method::POST, "/iam/api-keys", admin, Some(json!({"displayName": "new"})), &key).await,
        "issue credential" => {
            app.call_with(Method::POST, &format!("/iam/api-keys/{p}/credentials"), admin, Some(json!({"name": "second"})), &key).await
        }
        "rotate credential" => {
            let uri = format!("/iam/api-keys/{p}/credentials/{}/rotate", f.key_id);
            app.call_with(Method::POST, &uri, admin, Some(json!({"gracePeriodSeconds": 60})), &key).await
        }
        "update credential" => {
            let body = json!({"name": "renamed", "restrictions": {"sourceCidrs": ["10.0.0.0/8"]}});
            app.call(Method::PATCH, &format!("/iam/api-keys/{p}/credentials/{}", f.key_id), admin, Some(body)).await
        }
        "revoke credential" => app.call(Method::POST, &format!("/iam/api-keys/{p}/credentials/{}/revoke", f.key_id), admin, None).await,
        "update principal" => app.call(Method::PATCH, &format!("/iam/api-keys/{p}"), admin, Some(json!({"status": "Suspended"}))).await,
        "create role" => {
            let body = json!({"name": "reader", "permissions": ["ci:read"], "principalTypes": ["ApiKey"]});
            app.call_with(Method::POST, "/iam/roles", admin, Some(body), &key).await
        }
        "assign role" => app.call(Method::PUT, &format!("/iam/api-keys/{p}/role-assignments/iam-viewer"), admin, None).await,
        "unassign role" => app.call(Method::DELETE, &format!("/iam/api-keys/{p}/role-assignments/{}", f.role), admin, None).await,
        "exchange" => app.exchange_json(json!({"apiKey": f.api_key})).await,
        "authenticated read" => app.call(Method::GET, &format!("/iam/api-keys/{p}"), admin, None).await,
        other => unreachable!("{other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_at_any_step_of_any_operation_is_a_503_and_changes_nothing() {
    let (mut injected, mut partial) = (0, Vec::new());
    for op in OPERATIONS {
        // The clean run: how many store requests the operation makes, and that it succeeds.
        let clean = fixture().await;
        let acme = iam_shared::ids::OrgId::parse("acme").unwrap();
        let seq = async || clean.app.state.store.audit_head(&acme).await.unwrap().map_or(0, |h| h.seq);
        let records_before = seq().await;
        clean.proxy.reset_seen();
        let r = perform(op, &clean).await;
        assert!(r.status.is_success(), "{op}: {}", r.raw);
        let steps = clean.proxy.seen();
        // A change writes its one audit record with it (so every partial state checked below
        // includes the trail); reads and exchanges write none.
        let recorded = seq().await - records_before;
        let changes = !matches!(op, "exchange" | "authenticated read");
        assert_eq!(recorded, u64::from(changes), "{op}: records written");
        iam_testkit::drop_tables(&clean.tables).await;

        for (step, operation) in steps.iter().enumerate() {
            let f = fixture().await;
            let before = snapshot(&f.tables).await;
            f.proxy.outage_after(step);
            let r = perform(op, &f).await;
            f.proxy.clear();
            injected += 1;
            assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{op}, outage from step {} ({operation}): {}", step + 1, r.raw);
            assert!(r.header("retry-after").is_some(), "{op}: 503 without Retry-After");
            if snapshot(&f.tables).await != before {
                partial.push(format!("{op} at step {} ({operation})", step + 1));
            }
            iam_testkit::drop_tables(&f.tables).await;
        }
        println!("{op}: {} store requests: {steps:?}", steps.len());
    }
    println!("{injected} outages injected, {} partial states: {partial:?}", partial.len());
    assert!(partial.is_empty(), "partial state after: {partial:?}");
}
