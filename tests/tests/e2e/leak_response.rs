//! Leak response over HTTP, on every store: a reported key whose secret proves out is revoked
//! by `system:leak-report`, whoever holds it; every accepted report gets the same answer; the
//! route is bounded per request and per source, and never quotes a key back.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use iam_shared::api_key::ApiKey;
use iam_tests::TestApp;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

const ROUTE: &str = "/iam/credentials/revoke-leaked";

/// A key with this key id, a well-formed secret and a valid checksum, that is not the secret.
fn guessed(key: &str) -> String {
    let key_part = key.split_once('.').unwrap().0;
    let body = "1".repeat(44);
    let sum = format!("{:0>6}", base62::encode(crc32fast::hash(format!("{key_part}.{body}").as_bytes())));
    format!("{key_part}.{body}{sum}")
}

async fn report_from(app: &TestApp, source: &str, body: Value) -> iam_tests::Response {
    let peer = std::net::SocketAddr::new(source.parse().unwrap(), 40000);
    let request = Request::post(ROUTE)
        .header(header::CONTENT_TYPE, "application/json")
        .extension(axum::extract::ConnectInfo(peer))
        .body(Body::from(body.to_string()))
        .unwrap();
    app.send(request).await
}

#[tokio::test]
async fn a_key_that_proves_out_is_revoked_and_the_answer_never_says_which() {
    for (store, app) in TestApp::on_every_store().await {
        let admin = app.admin().await;
        let p = app.create_principal(&admin, "leaky").await;
        let (key_id, key) = app.issue(&admin, &p).await;
        let (other_id, other_key) = app.issue(&admin, &p).await;
        let unknown = ApiKey::generate().to_secret_string().expose_secret().to_owned();

        let mut answers = Vec::new();
        for report in [guessed(&key), unknown, "ik_not-a-key".to_owned(), key.clone()] {
            let r = app.call(Method::POST, ROUTE, None, Some(json!({"keys": [report]}))).await;
            assert_eq!(r.status, StatusCode::ACCEPTED, "{store}: {}", r.raw);
            assert_eq!(r.header("cache-control"), Some("no-store"));
            answers.push(r.raw);
        }
        assert!(answers.iter().all(|a| a == &answers[0]), "{store}: the same answer whatever the key: {answers:?}");
        assert_eq!(answers[0], r#"{"received":1}"#);

        let listed = app.call(Method::GET, &format!("/iam/api-keys/{p}/credentials?include=all"), Some(&admin), None).await;
        let find = |id: &str| listed.body["items"].as_array().unwrap().iter().find(|c| c["keyId"] == id).unwrap().clone();
        let leaked = find(&key_id);
        assert_eq!(
            (leaked["status"].as_str(), leaked["revocationReason"].as_str()),
            (Some("Revoked"), Some("leaked")),
            "{store}: {leaked}"
        );
        assert_eq!(leaked["revokedBy"], "system:leak-report");
        assert_eq!(find(&other_id)["status"], "Active", "{store}: only the reported key");
        let r = app.exchange_json(json!({"apiKey": key})).await;
        assert_eq!((r.status, r.str("error")), (StatusCode::BAD_REQUEST, "invalid_grant"), "{store}: {}", r.raw);

        // Repeats count once; the work is the same as for one.
        let r = app.call(Method::POST, ROUTE, None, Some(json!({"keys": [other_key, other_key, " x "]}))).await;
        assert_eq!((r.status, r.raw.as_str()), (StatusCode::ACCEPTED, r#"{"received":2}"#), "{store}");
        let r = app.call(Method::POST, &format!("/iam/api-keys/{p}/credentials/{other_id}/revoke"), Some(&admin), None).await;
        assert_eq!(r.body["revocationReason"], "leaked", "{store}: revoking it again keeps the first revocation");
    }
}

#[tokio::test]
async fn malformed_reports_are_refused_without_quoting_a_key() {
    let app = TestApp::new().await;
    let key = app.acme_key.clone();
    let too_many: Vec<String> = (0..101).map(|i| format!("ik_{i}")).collect();
    for body in [
        json!({}),
        json!({"keys": []}),
        json!({"keys": too_many}),
        json!({"keys": key}),
        json!({"keys": [key, 7]}),
        json!({"keys": [key], "more": 1}),
    ] {
        let r = app.call(Method::POST, ROUTE, None, Some(body.clone())).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.raw);
        assert!(!r.raw.contains(key.split_once('.').unwrap().1), "a refusal never quotes the key: {}", r.raw);
    }
    // None of those revoked the key they named.
    app.admin().await;
}

#[tokio::test]
async fn even_the_last_administrators_key_is_revoked() {
    for (store, app) in TestApp::on_every_store().await {
        let admin = app.admin().await;
        let r = app.call(Method::POST, ROUTE, None, Some(json!({"keys": [app.acme_key]}))).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{store}: {}", r.raw);
        let r = app.call(Method::GET, "/iam/whoami", Some(&admin), None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{store}: its token dies with it (recover with iam-admin bootstrap --force)");
    }
}

#[tokio::test]
async fn reports_are_limited_per_source() {
    let app = TestApp::new().await;
    let body = json!({"keys": ["ik_0000000000000000000000.x"]});
    let limit = iam_shared::leaks::REPORTS_PER_SOURCE_PER_MINUTE as usize;
    // Counted in one-minute windows: however the reports fall across a boundary, one source
    // is refused after at most twice the limit, and never before the limit.
    let mut accepted = 0;
    let r = loop {
        let r = report_from(&app, "198.51.100.1", body.clone()).await;
        if r.status != StatusCode::ACCEPTED || accepted > 2 * limit {
            break r;
        }
        accepted += 1;
    };
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.raw);
    assert!((limit..=2 * limit).contains(&accepted), "refused after {accepted} reports");
    assert_eq!(r.header("retry-after"), Some("60"));
    assert_eq!(report_from(&app, "2001:db8::9", body).await.status, StatusCode::ACCEPTED, "another source is not held back");
}
