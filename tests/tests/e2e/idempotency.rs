//! `Idempotency-Key` on the three creating routes and `If-Match` on PATCH, over HTTP, on the
//! embedded store and on DynamoDB (moto).

use axum::http::{Method, StatusCode};
use iam_tests::TestApp;
use serde_json::json;

fn key(k: &str) -> [(&'static str, &str); 1] {
    [("idempotency-key", k)]
}

async fn principal_count(app: &TestApp, admin: &str) -> usize {
    let r = app.call(Method::GET, "/iam/api-keys?limit=100", Some(admin), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    r.body["items"].as_array().unwrap().len()
}

#[tokio::test]
async fn a_retried_principal_create_returns_the_first_answer_and_creates_nothing() {
    for (store, app) in TestApp::on_every_store().await {
        let admin = app.admin().await;
        let before = principal_count(&app, &admin).await;
        let body = json!({"displayName": "billing", "status": "Suspended"});
        let first = app.call_with(Method::POST, "/iam/api-keys", Some(&admin), Some(body.clone()), &key("create-1")).await;
        assert_eq!(first.status, StatusCode::CREATED, "{store}: {}", first.raw);
        assert_eq!(first.header("idempotent-replayed"), None);
        let retry = app.call_with(Method::POST, "/iam/api-keys", Some(&admin), Some(body.clone()), &key("create-1")).await;
        assert_eq!(retry.status, StatusCode::CREATED, "{store}: {}", retry.raw);
        assert_eq!(retry.body, first.body, "{store}: the same answer");
        assert_eq!(retry.header("location"), first.header("location"));
        assert_eq!(retry.header("idempotent-replayed"), Some("true"));
        assert_eq!(principal_count(&app, &admin).await, before + 1, "{store}: one principal, not two");

        // Whitespace or field order do not make another request; another value does.
        let reordered = json!({"status": "Suspended", "displayName": "billing"});
        let again = app.call_with(Method::POST, "/iam/api-keys", Some(&admin), Some(reordered), &key("create-1")).await;
        assert_eq!(again.body["id"], first.body["id"], "{store}");
        let other =
            app.call_with(Method::POST, "/iam/api-keys", Some(&admin), Some(json!({"displayName": "payroll"})), &key("create-1")).await;
        assert_eq!(other.status, StatusCode::UNPROCESSABLE_ENTITY, "{store}: {}", other.raw);
        assert_eq!(principal_count(&app, &admin).await, before + 1, "{store}");

        // Another key is another request; so is no key.
        let fresh = app.call_with(Method::POST, "/iam/api-keys", Some(&admin), Some(body.clone()), &key("create-2")).await;
        assert_ne!(fresh.body["id"], first.body["id"], "{store}");
        app.call(Method::POST, "/iam/api-keys", Some(&admin), Some(body)).await;
        assert_eq!(principal_count(&app, &admin).await, before + 3, "{store}");
    }
}

#[tokio::test]
async fn a_retried_issue_names_the_credential_but_never_shows_its_secret_again() {
    for (store, app) in TestApp::on_every_store().await {
        let admin = app.admin().await;
        let p = app.create_principal(&admin, "svc").await;
        let uri = format!("/iam/api-keys/{p}/credentials");
        let body = json!({"name": "ci"});
        let first = app.call_with(Method::POST, &uri, Some(&admin), Some(body.clone()), &key("issue-1")).await;
        assert_eq!(first.status, StatusCode::CREATED, "{store}: {}", first.raw);
        let key_id = first.body["credential"]["keyId"].as_str().unwrap().to_owned();
        let secret = first.str("apiKey").to_owned();

        let retry = app.call_with(Method::POST, &uri, Some(&admin), Some(body), &key("issue-1")).await;
        assert_eq!(retry.status, StatusCode::CONFLICT, "{store}: {}", retry.raw);
        assert_eq!(retry.str("keyId"), key_id, "{store}: names the credential to revoke");
        assert!(!retry.raw.contains(&secret) && !retry.raw.contains("apiKey"), "{store}: no secret in {}", retry.raw);
        let listed = app.call(Method::GET, &uri, Some(&admin), None).await;
        assert_eq!(listed.body["items"].as_array().unwrap().len(), 1, "{store}: one credential: {}", listed.raw);

        let other = app.call_with(Method::POST, &uri, Some(&admin), Some(json!({"name": "other"})), &key("issue-1")).await;
        assert_eq!(other.status, StatusCode::UNPROCESSABLE_ENTITY, "{store}: {}", other.raw);
        // The same key on another route is another request too.
        let elsewhere =
            app.call_with(Method::POST, "/iam/api-keys", Some(&admin), Some(json!({"displayName": "x"})), &key("issue-1")).await;
        assert_eq!(elsewhere.status, StatusCode::UNPROCESSABLE_ENTITY, "{store}: {}", elsewhere.raw);
    }
}

#[tokio::test]
async fn a_retried_role_create_returns_the_first_role() {
    for (store, app) in TestApp::on_every_store().await {
        let admin = app.admin().await;
        let body = json!({"name": "deployer", "permissions": ["ci:deploy"], "principalTypes": ["ApiKey"]});
        let first = app.call_with(Method::POST, "/iam/roles", Some(&admin), Some(body.clone()), &key("role-1")).await;
        assert_eq!(first.status, StatusCode::CREATED, "{store}: {}", first.raw);
        let retry = app.call_with(Method::POST, "/iam/roles", Some(&admin), Some(body), &key("role-1")).await;
        assert_eq!((retry.status, &retry.body), (StatusCode::CREATED, &first.body), "{store}: {}", retry.raw);
        let changed = json!({"name": "deployer", "permissions": ["ci:read"], "principalTypes": ["ApiKey"]});
        let other = app.call_with(Method::POST, "/iam/roles", Some(&admin), Some(changed), &key("role-1")).await;
        assert_eq!(other.status, StatusCode::UNPROCESSABLE_ENTITY, "{store}: {}", other.raw);
    }
}

#[tokio::test]
async fn keys_are_per_caller_and_malformed_keys_are_refused() {
    let app = TestApp::new().await;
    let admin = app.admin().await;
    let globex = app.token(&app.globex_key).await;
    let body = json!({"displayName": "svc"});
    let a = app.call_with(Method::POST, "/iam/api-keys", Some(&admin), Some(body.clone()), &key("shared")).await;
    let b = app.call_with(Method::POST, "/iam/api-keys", Some(&globex), Some(body.clone()), &key("shared")).await;
    assert_eq!((a.status, b.status), (StatusCode::CREATED, StatusCode::CREATED));
    assert_ne!(a.body["id"], b.body["id"], "another caller's key is another slot");

    let long = "k".repeat(256);
    for bad in ["", "has space", long.as_str()] {
        let r = app.call_with(Method::POST, "/iam/api-keys", Some(&admin), Some(body.clone()), &key(bad)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad:?}: {}", r.raw);
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
    }
    let twice =
        app.call_with(Method::POST, "/iam/api-keys", Some(&admin), Some(body), &[("idempotency-key", "a"), ("idempotency-key", "b")]).await;
    assert_eq!(twice.status, StatusCode::BAD_REQUEST, "{}", twice.raw);
}

#[tokio::test]
async fn concurrent_retries_with_one_key_create_one_object() {
    for (store, app) in TestApp::on_every_store().await {
        let app = std::sync::Arc::new(app);
        let admin = app.admin().await;
        let before = principal_count(&app, &admin).await;
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (app, admin) = (app.clone(), admin.clone());
            tasks.push(tokio::spawn(async move {
                app.call_with(Method::POST, "/iam/api-keys", Some(&admin), Some(json!({"displayName": "race"})), &key("race-1")).await
            }));
        }
        let mut ids = std::collections::BTreeSet::new();
        for t in tasks {
            let r = t.await.unwrap();
            assert_eq!(r.status, StatusCode::CREATED, "{store}: {}", r.raw);
            ids.insert(r.str("id").to_owned());
        }
        assert_eq!(ids.len(), 1, "{store}: every retry answers the one principal");
        assert_eq!(principal_count(&app, &admin).await, before + 1, "{store}");
    }
}

#[tokio::test]
async fn patch_with_if_match_applies_only_to_the_version_read() {
    for (store, app) in TestApp::on_every_store().await {
        let admin = app.admin().await;
        let p = app.create_principal(&admin, "svc").await;
        let uri = format!("/iam/api-keys/{p}");
        let read = app.call(Method::GET, &uri, Some(&admin), None).await;
        let etag = read.header("etag").expect("an ETag").to_owned();
        assert_eq!(etag, format!("\"{}\"", read.body["version"]), "{store}");

        let ok = app.call_with(Method::PATCH, &uri, Some(&admin), Some(json!({"displayName": "one"})), &[("if-match", &etag)]).await;
        assert_eq!(ok.status, StatusCode::OK, "{store}: {}", ok.raw);
        assert_ne!(ok.header("etag"), Some(etag.as_str()), "{store}: a new version, a new ETag");

        let stale = app.call_with(Method::PATCH, &uri, Some(&admin), Some(json!({"displayName": "two"})), &[("if-match", &etag)]).await;
        assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED, "{store}: {}", stale.raw);
        let now = app.call(Method::GET, &uri, Some(&admin), None).await;
        assert_eq!(now.body["displayName"], "one", "{store}: the stale change wrote nothing");

        for (value, status) in
            [("W/\"1\"", StatusCode::PRECONDITION_FAILED), ("1", StatusCode::BAD_REQUEST), ("\"x\"", StatusCode::BAD_REQUEST)]
        {
            let r = app.call_with(Method::PATCH, &uri, Some(&admin), Some(json!({"displayName": "z"})), &[("if-match", value)]).await;
            assert_eq!(r.status, status, "{store}: If-Match {value}: {}", r.raw);
        }
        let star = app.call_with(Method::PATCH, &uri, Some(&admin), Some(json!({"displayName": "three"})), &[("if-match", "*")]).await;
        assert_eq!(star.status, StatusCode::OK, "{store}: {}", star.raw);
    }
}
