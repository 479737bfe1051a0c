//! GitHub secret-scanning partner alerts over HTTP, with a generated key pair in GitHub's place:
//! a signed alert revokes the keys that prove out and labels every match; a tampered or
//! unsigned one changes nothing; without configured keys the route does not exist.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use iam_shared::leaks::GithubScanningKeys;
use iam_shared::store::EmbeddedStore;
use iam_tests::{FakeGithub, TestApp};
use serde_json::json;
use sha2::{Digest, Sha256};

const ROUTE: &str = "/iam/credentials/github-secret-scanning";

async fn app_trusting(github: &FakeGithub) -> TestApp {
    let mut config = iam_tests::config();
    config.github_scanning_keys = Some(GithubScanningKeys::from_json(&github.document).unwrap());
    TestApp::with_state(iam_tests::state_with_config(Arc::new(EmbeddedStore::in_memory().unwrap()), &config).await).await
}

async fn post(app: &TestApp, payload: &[u8], signature: Option<&str>) -> iam_tests::Response {
    let mut request = Request::post(ROUTE).header(header::CONTENT_TYPE, "application/json");
    if let Some(signature) = signature {
        request =
            request.header("Github-Public-Key-Identifier", FakeGithub::KEY_IDENTIFIER).header("Github-Public-Key-Signature", signature);
    }
    app.send(request.body(Body::from(payload.to_vec())).unwrap()).await
}

fn sha256_hex(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn a_signed_alert_revokes_what_proves_out_and_labels_every_match() {
    let github = FakeGithub::new();
    let app = app_trusting(&github).await;
    let admin = app.admin().await;
    let p = app.create_principal(&admin, "published by mistake").await;
    let (key_id, key) = app.issue(&admin, &p).await;
    let (kept_id, _) = app.issue(&admin, &p).await;
    let lookalike = format!("{}.{}", key.split_once('.').unwrap().0, "A".repeat(50));
    let payload = json!([
        {"token": key, "type": "infuse_iam_api_key", "url": "https://github.com/octo/repo/blob/abc/.env", "source": "content"},
        {"token": lookalike, "type": "infuse_iam_api_key", "url": "https://github.com/octo/repo/blob/abc/README.md", "source": "content"},
    ])
    .to_string();

    // Tampered (signed, then changed) and unsigned alerts change nothing.
    let signature = github.sign(payload.as_bytes());
    let tampered = payload.replacen("README", "READNE", 1);
    let r = post(&app, tampered.as_bytes(), Some(&signature)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.raw);
    let r = post(&app, payload.as_bytes(), None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.raw);
    app.downstream_token(&key).await;

    let r = post(&app, payload.as_bytes(), Some(&signature)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert_eq!(
        r.body,
        json!([
            {"token_hash": sha256_hex(&key), "token_type": "infuse_iam_api_key", "label": "true_positive"},
            {"token_hash": sha256_hex(&lookalike), "token_type": "infuse_iam_api_key", "label": "false_positive"},
        ])
    );
    assert!(!r.raw.contains(key.split_once('.').unwrap().1), "the answer never carries a token");
    let listed = app.call(Method::GET, &format!("/iam/api-keys/{p}/credentials?include=all"), Some(&admin), None).await;
    let items = listed.body["items"].as_array().unwrap();
    let status = |id: &str| items.iter().find(|c| c["keyId"] == id).map(|c| (c["status"].clone(), c["revocationReason"].clone())).unwrap();
    assert_eq!(status(&key_id), (json!("Revoked"), json!("leaked")));
    assert_eq!(status(&kept_id), (json!("Active"), json!(null)));

    // GitHub may send the same alert again: the label stays, nothing else changes.
    let again = post(&app, payload.as_bytes(), Some(&signature)).await;
    assert_eq!((again.status, again.body.clone()), (StatusCode::OK, r.body));
}

#[tokio::test]
async fn without_configured_keys_there_is_no_such_endpoint() {
    let github = FakeGithub::new();
    let app = TestApp::new().await;
    let payload = b"[]";
    let r = post(&app, payload, Some(&github.sign(payload))).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.raw);
}
