//! The exchange's embedded-metric documents: each outcome named as the dashboards expect, and
//! every document well formed by CloudWatch's EMF rules (every declared dimension and metric
//! is a member of the document, dimension values are strings, metric values numbers).

use axum::http::Method;
use iam_api::metrics::{ExchangeMetric, NAMESPACE};
use iam_shared::api_key::ApiKey;
use iam_shared::service::ExchangeRequest;
use iam_tests::TestApp;
use serde_json::Value;

fn request(key: &str) -> ExchangeRequest {
    ExchangeRequest { key: ApiKey::parse(key), scope: None, audience: None, source: None }
}

/// Checks `doc` against the EMF specification's structural rules.
fn assert_well_formed(doc: &Value) {
    let directive = &doc["_aws"];
    assert!(directive["Timestamp"].as_i64().is_some_and(|t| t > 0), "{doc}");
    let metrics = directive["CloudWatchMetrics"].as_array().expect("CloudWatchMetrics");
    assert_eq!(metrics.len(), 1, "{doc}");
    assert_eq!(metrics[0]["Namespace"], NAMESPACE);
    for set in metrics[0]["Dimensions"].as_array().unwrap() {
        let set = set.as_array().unwrap();
        assert!(!set.is_empty() && set.len() <= 30, "{doc}");
        for key in set {
            assert!(doc[key.as_str().unwrap()].is_string(), "dimension {key} is a string member: {doc}");
        }
    }
    for metric in metrics[0]["Metrics"].as_array().unwrap() {
        assert!(doc[metric["Name"].as_str().unwrap()].is_number(), "metric {metric} is a number member: {doc}");
        assert_eq!(metric["Unit"], "Count");
    }
}

#[tokio::test]
async fn each_exchange_outcome_is_named_and_well_formed() {
    let mut state = iam_tests::state_with(std::sync::Arc::new(iam_shared::store::EmbeddedStore::in_memory().unwrap())).await;
    std::sync::Arc::get_mut(&mut state).expect("one owner").limits.exchanges_per_key_per_second = 2;
    let app = TestApp::with_state(state).await;
    let admin = app.admin().await;
    let principal = app.create_principal(&admin, "metered").await;
    let (key_id, key) = app.issue(&admin, &principal).await;
    let metric = |result| ExchangeMetric::of(&result);

    let first = metric(app.state.exchange(request(&key)).await);
    assert_eq!((first.outcome, first.reason, first.cache_hit), ("issued", None, Some(false)), "argon2 on first use");
    let second = metric(app.state.exchange(request(&key)).await);
    assert_eq!(second.cache_hit, Some(true), "the warm cache on the next");
    // Another last character (a key ending in `x` would otherwise be its own "wrong" key).
    let other = if key.ends_with('x') { 'y' } else { 'x' };
    let wrong = format!("{}{other}", &key[..key.len() - 1]);
    assert_eq!(metric(app.state.exchange(request(&wrong)).await).outcome, "invalid_client");
    // Two within the limit's second at most: a burst of four, early in one second, meets it.
    // A loaded machine can stretch a burst across a second boundary (two and two): another
    // burst then, a few at most; a limit that never holds fails every one.
    let mut outcomes = Vec::new();
    for _ in 0..5 {
        let millis = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_millis();
        tokio::time::sleep(std::time::Duration::from_millis(u64::from(1_020 - millis))).await;
        outcomes.clear();
        for _ in 0..4 {
            outcomes.push(metric(app.state.exchange(request(&key)).await));
        }
        if outcomes.iter().any(|m| m.outcome == "slow_down") {
            break;
        }
    }
    let slowed = outcomes.iter().find(|m| m.outcome == "slow_down").expect("the limit is met");
    assert_eq!(slowed.reason, Some("key_limit"));

    let revoke = app.call(Method::POST, &format!("/iam/api-keys/{principal}/credentials/{key_id}/revoke"), Some(&admin), None).await;
    assert!(revoke.status.is_success(), "{}", revoke.raw);
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await; // past the limit's window
    let refused = metric(app.state.exchange(request(&key)).await);
    assert_eq!((refused.outcome, refused.reason), ("refused", Some("credential_revoked")));

    for m in [&first, &second, slowed, &refused] {
        let doc = m.document(1_800_000_000_000);
        assert_well_formed(&doc);
        assert_eq!(doc["Outcome"], m.outcome);
        assert_eq!(doc["Exchanges"], 1);
        assert_eq!(doc.get("Reason").and_then(Value::as_str), m.reason);
        assert_eq!(doc.get("VerificationCacheHits").and_then(Value::as_u64), m.cache_hit.map(u64::from));
    }
    // No document carries the key or anything of it.
    let all: String = [&first, &second, slowed, &refused].iter().map(|m| m.document(0).to_string()).collect();
    assert!(!all.contains(&key_id) && !all.contains(&key), "{all}");
}
