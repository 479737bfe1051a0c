//! The event publisher fed with the audit table's stream on the DynamoDB-compatible server:
//! changes made through the API are read back from the stream with `GetRecords` (Lambda's
//! trigger needs Docker there, so the handler is called as Lambda would call it), published on
//! an EventBridge bus whose rule routes to an SQS queue, and the queue says what was published.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::http::{Method, StatusCode};
use iam_functions::publish_events::{BatchResponse, EventBridgeSink, EventSink, ItemFailure, StreamEvent, publish};
use iam_shared::events::LifecycleEvent;
use iam_testkit::REGION;
use iam_tests::TestApp;
use serde_json::{Value, json};

/// One call of a JSON-protocol AWS API on moto (`target` as in `X-Amz-Target`).
pub(crate) async fn aws_json(service: &str, target: &str, body: Value) -> Value {
    let response = reqwest::Client::new()
        .post(&iam_testkit::moto().endpoint)
        .header("content-type", "application/x-amz-json-1.0")
        .header("x-amz-target", target)
        .header(
            "authorization",
            format!("AWS4-HMAC-SHA256 Credential=testing/20261130/{REGION}/{service}/aws4_request, SignedHeaders=host, Signature=0"),
        )
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert!(status.is_success(), "{target}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// Everything the table's stream holds, as the records of one Lambda event.
async fn stream_event(stream_arn: &str) -> StreamEvent {
    serde_json::from_value(json!({"Records": stream_records(stream_arn).await})).unwrap()
}

/// Everything the table's stream holds, as `GetRecords` answers it.
pub(crate) async fn stream_records(stream_arn: &str) -> Vec<Value> {
    let described = aws_json("dynamodb", "DynamoDBStreams_20120810.DescribeStream", json!({"StreamArn": stream_arn})).await;
    let mut records = Vec::new();
    for shard in described["StreamDescription"]["Shards"].as_array().unwrap() {
        let iterator = aws_json(
            "dynamodb",
            "DynamoDBStreams_20120810.GetShardIterator",
            json!({"StreamArn": stream_arn, "ShardId": shard["ShardId"], "ShardIteratorType": "TRIM_HORIZON"}),
        )
        .await;
        let got = aws_json("dynamodb", "DynamoDBStreams_20120810.GetRecords", json!({"ShardIterator": iterator["ShardIterator"]})).await;
        records.extend(got["Records"].as_array().unwrap().iter().cloned());
    }
    records
}

/// Every message the queue holds, as the events EventBridge delivered.
async fn drain(queue_url: &str) -> Vec<Value> {
    let mut events = Vec::new();
    loop {
        let got = aws_json(
            "sqs",
            "AmazonSQS.ReceiveMessage",
            json!({"QueueUrl": queue_url, "MaxNumberOfMessages": 10, "VisibilityTimeout": 300}),
        )
        .await;
        let messages = got["Messages"].as_array().cloned().unwrap_or_default();
        if messages.is_empty() {
            return events;
        }
        events.extend(messages.iter().map(|m| serde_json::from_str::<Value>(m["Body"].as_str().unwrap()).unwrap()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_read_from_the_stream_is_published_once_with_its_stable_id() {
    let (store, tables) = iam_testkit::fresh_store_with_tables().await;
    let sdk = iam_testkit::sdk_config().await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    let view = aws_sdk_dynamodb::types::StreamSpecification::builder()
        .stream_enabled(true)
        .stream_view_type(aws_sdk_dynamodb::types::StreamViewType::NewImage)
        .build()
        .unwrap();
    let updated = dynamodb.update_table().table_name(&tables.audit).stream_specification(view).send().await.unwrap();
    let stream_arn = updated.table_description().unwrap().latest_stream_arn().unwrap().to_owned();

    // The bus, a rule for this service's events, and a queue as its target.
    let queue_name = iam_testkit::unique("events");
    let queue = aws_json("sqs", "AmazonSQS.CreateQueue", json!({"QueueName": queue_name})).await;
    let queue_url = queue["QueueUrl"].as_str().unwrap().to_owned();
    let bus = iam_testkit::unique("bus");
    let events = aws_sdk_eventbridge::Client::new(&sdk);
    events.create_event_bus().name(&bus).send().await.unwrap();
    events.put_rule().name("iam").event_bus_name(&bus).event_pattern(r#"{"source": ["infuse.iam"]}"#).send().await.unwrap();
    let target = aws_sdk_eventbridge::types::Target::builder()
        .id("queue")
        .arn(format!("arn:aws:sqs:{REGION}:123456789012:{queue_name}"))
        .build()
        .unwrap();
    events.put_targets().rule("iam").event_bus_name(&bus).targets(target).send().await.unwrap();

    // Changes through the API, of every kind that announces one (and some that do not).
    let app = TestApp::with_state(iam_tests::state_with(store.clone()).await).await;
    let admin = app.admin().await;
    let p = app.create_principal(&admin, "billing sync").await;
    let (key_id, _) = app.issue(&admin, &p).await;
    let rotated = app.call(Method::POST, &format!("/iam/api-keys/{p}/credentials/{key_id}/rotate"), Some(&admin), Some(json!({}))).await;
    assert_eq!(rotated.status, StatusCode::CREATED, "{}", rotated.raw);
    let successor = rotated.body["credential"]["keyId"].as_str().unwrap().to_owned();
    app.call(Method::POST, &format!("/iam/api-keys/{p}/credentials/{successor}/revoke"), Some(&admin), None).await;
    let (_, leaked) = app.issue(&admin, &p).await;
    app.call(Method::POST, "/iam/credentials/revoke-leaked", None, Some(json!({"keys": [leaked]}))).await;
    app.assign(&admin, &p, "iam-viewer").await;
    app.call(Method::DELETE, &format!("/iam/api-keys/{p}/role-assignments/iam-viewer"), Some(&admin), None).await;
    app.call(Method::PATCH, &format!("/iam/api-keys/{p}"), Some(&admin), Some(json!({"displayName": "billing sync (EU)"}))).await;
    app.call(Method::PATCH, &format!("/iam/api-keys/{p}"), Some(&admin), Some(json!({"status": "Suspended"}))).await;
    let role = json!({"name": "deployer", "permissions": ["ci:deploy"], "principalTypes": ["ApiKey"]});
    app.call(Method::POST, "/iam/roles", Some(&admin), Some(role)).await;
    // A service account's trust policy, added and removed.
    let trusted = json!({"issuers": [{"issuer": "https://token.actions.githubusercontent.com"}]});
    app.call(Method::PUT, "/iam/trusted-issuers", Some(&admin), Some(trusted)).await;
    let sa = app.call(Method::POST, "/iam/api-keys", Some(&admin), Some(json!({"displayName": "ci", "type": "ServiceAccount"}))).await;
    let policies = format!("/iam/api-keys/{}/trust-policies", sa.str("id"));
    let policy = json!({"issuer": "https://token.actions.githubusercontent.com", "audience": "https://iam.example",
        "subject": "repo:acme/api:environment:production", "requiredClaims": {"repository_id": "1", "repository_owner_id": "2"}});
    let added = app.call(Method::POST, &policies, Some(&admin), Some(policy)).await;
    assert_eq!(added.status, StatusCode::CREATED, "{}", added.raw);
    app.call(Method::DELETE, &format!("{policies}/{}", added.str("id")), Some(&admin), None).await;
    // A refusal's tally grows by modification: announced by nothing.
    let (_, reader_token, _) =
        crate::authority::holder_with_role(&app, &admin, &iam_testkit::unique("reader"), &["iam:api-keys:read"]).await;
    for _ in 0..2 {
        app.call(Method::POST, "/iam/api-keys", Some(&reader_token), Some(json!({"displayName": "x"}))).await;
    }

    // Warnings, from the scheduled sweep's handler run with a clock ten days on, twice.
    let days_on = |days: i64| (iam_shared::model::now() + chrono::Duration::days(days)).to_rfc3339();
    let export = json!({"displayName": "nightly export", "expiresAt": days_on(12)});
    let export = app.call(Method::POST, "/iam/api-keys", Some(&admin), Some(export)).await;
    let export = export.body["id"].as_str().unwrap().to_owned();
    for (name, expires) in [("expiring", 11), ("expired", 5)] {
        let body = json!({"name": name, "expiresAt": days_on(expires)});
        let issued = app.call(Method::POST, &format!("/iam/api-keys/{export}/credentials"), Some(&admin), Some(body)).await;
        assert_eq!(issued.status, StatusCode::CREATED, "{}", issued.raw);
    }
    let settings = iam_shared::warnings::WarningSettings::new(&[14, 7, 1], Some(7)).unwrap();
    let later = iam_shared::model::now() + chrono::Duration::days(10);
    let swept = iam_functions::send_warnings::handle(store.as_ref(), &settings, later).await.unwrap();
    assert!(swept.sent >= 4, "{swept:?}");
    let again = iam_functions::send_warnings::handle(store.as_ref(), &settings, later + chrono::Duration::hours(1)).await.unwrap();
    assert_eq!((again.sent, again.already_sent), (0, swept.sent), "a repeated run sends nothing again");

    let sink = EventBridgeSink { client: events.clone(), bus: bus.clone() };
    let batch = stream_event(&stream_arn).await;
    assert!(batch.records.len() > 10, "the stream holds the trail: {}", batch.records.len());
    assert_eq!(publish(batch, &sink).await, BatchResponse::default(), "every event accepted");
    let delivered = drain(&queue_url).await;

    let trail = app.call(Method::GET, "/iam/audit-events?limit=200", Some(&admin), None).await;
    let records: BTreeMap<String, Value> =
        trail.body["items"].as_array().unwrap().iter().map(|r| (r["id"].as_str().unwrap().to_owned(), r.clone())).collect();
    let admin_org = records.values().next().unwrap()["orgId"].clone();
    let types: Vec<&str> = delivered.iter().map(|e| e["detail-type"].as_str().unwrap()).collect();
    let kinds: BTreeSet<&str> = types.iter().copied().collect();
    let expected = [
        "Credential Expired",
        "Credential Expiring",
        "Credential Issued",
        "Credential Leaked",
        "Credential Revoked",
        "Credential Rotated",
        "Credential Unused",
        "Principal Changed",
        "Principal Created",
        "Principal Expiring",
        "Principal Status Changed",
        "Role Assigned",
        "Role Unassigned",
        "Trust Policy Added",
        "Trust Policy Removed",
    ];
    assert_eq!(kinds, expected.into_iter().collect(), "{types:?}");
    for event in &delivered {
        assert_eq!(event["source"], "infuse.iam");
        let id = event["detail"]["eventId"].as_str().unwrap();
        if event["detail"]["orgId"] != admin_org {
            // The other bootstrapped organisation's warning of its idle bootstrap key.
            assert_eq!(event["detail-type"], "Credential Unused", "{event}");
            continue;
        }
        let record = records.get(id).unwrap_or_else(|| panic!("an event without its audit record: {event}"));
        assert_eq!(event["detail"]["sequence"], record["seq"], "{event}");
        assert_eq!(event["detail"]["actor"], record["actor"]);
    }
    let ids: BTreeSet<&str> = delivered.iter().map(|e| e["detail"]["eventId"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), delivered.len(), "one event per change");
    let text = serde_json::to_string(&delivered).unwrap();
    assert!(!text.contains(leaked.split_once('.').unwrap().1), "no secret in any event");

    // A redelivery (a retried batch) publishes the same events with the same ids.
    publish(stream_event(&stream_arn).await, &sink).await;
    let again: BTreeSet<String> = drain(&queue_url).await.iter().map(|e| e["detail"]["eventId"].as_str().unwrap().to_owned()).collect();
    assert_eq!(again, ids.iter().map(|s| (*s).to_owned()).collect(), "the same ids: consumers de-duplicate on them");

    // For the schema check (scripts/check_event_schemas.py).
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/published-events.jsonl");
    let lines: String = delivered.iter().map(|e| format!("{e}\n")).collect();
    std::fs::write(path, lines).unwrap();
}

/// Accepts every other event, or none at all.
struct Flaky {
    down: bool,
    calls: std::sync::Mutex<usize>,
}

impl EventSink for Flaky {
    async fn put(&self, events: &[LifecycleEvent]) -> Result<Vec<bool>, String> {
        *self.calls.lock().unwrap() += 1;
        if self.down {
            return Err("EventBridge unavailable".into());
        }
        Ok((0..events.len()).map(|i| i % 2 == 0).collect())
    }
}

#[tokio::test]
async fn records_whose_events_were_not_accepted_are_reported_for_a_retry() {
    let app = TestApp::new().await;
    let admin = app.admin().await;
    for i in 0..12 {
        app.create_principal(&admin, &format!("p{i}")).await;
    }
    let trail = app.call(Method::GET, "/iam/audit-events?limit=200&order=oldest", Some(&admin), None).await;
    let records = iam_tests::audit_stream_records(&trail.body);
    let mut with_noise = records.clone();
    with_noise.push(json!({"eventName": "MODIFY", "dynamodb": {"SequenceNumber": "999", "NewImage": {"kind": {"S": "audit"}}}}));
    with_noise.push(json!({"eventName": "INSERT", "dynamodb": {"SequenceNumber": "998", "NewImage": {"kind": {"S": "auditHead"}}}}));
    let event = |records: Vec<Value>| -> StreamEvent { serde_json::from_value(json!({"Records": records})).unwrap() };

    let flaky = Arc::new(Flaky { down: false, calls: Default::default() });
    let answer = publish(event(with_noise), flaky.as_ref()).await;
    // 13 records announce an event (the bootstrap does not): 12 creations, ten to a call.
    assert_eq!(*flaky.calls.lock().unwrap(), 2);
    let failed: Vec<&str> = answer.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
    assert_eq!(failed.len(), 6, "every other event of 12: {failed:?}");
    assert!(!failed.contains(&"999") && !failed.contains(&"998"), "modifications and other items announce nothing");

    let down = Flaky { down: true, calls: Default::default() };
    let answer = publish(event(records.clone()), &down).await;
    assert_eq!(answer.batch_item_failures.len(), 12, "nothing accepted: every announcing record is retried");

    let corrupt = event(vec![json!({"eventName": "INSERT", "dynamodb": {"SequenceNumber": "7", "NewImage": {
        "kind": {"S": "audit"}, "record": {"S": "{not json"}
    }}})]);
    assert_eq!(
        publish(corrupt, flaky.as_ref()).await.batch_item_failures,
        vec![ItemFailure { item_identifier: "7".into() }],
        "an unreadable record is retried and then sent to the failure destination, never dropped"
    );
}
