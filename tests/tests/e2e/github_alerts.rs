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

/// A loopback server in GitHub's key endpoint's place: its document can change (GitHub rotating
/// its keys), and it counts how often it was fetched.
struct KeyEndpoint {
    url: String,
    document: Arc<std::sync::Mutex<String>>,
    fetches: Arc<std::sync::atomic::AtomicUsize>,
}

async fn key_endpoint(document: &str) -> KeyEndpoint {
    use axum::response::IntoResponse;
    let shared = Arc::new(std::sync::Mutex::new(document.to_owned()));
    let fetches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (doc, count) = (shared.clone(), fetches.clone());
    let router = axum::Router::new()
        .route(
            "/meta/public_keys/secret_scanning",
            axum::routing::get(move || {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let body = doc.lock().unwrap().clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], body) }
            }),
        )
        .route(
            "/moved",
            axum::routing::get(|| async { (StatusCode::FOUND, [(header::LOCATION, "/meta/public_keys/secret_scanning")]).into_response() }),
        )
        .route("/huge", axum::routing::get(|| async { "x".repeat(300 * 1024) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    KeyEndpoint { url: format!("http://{addr}/meta/public_keys/secret_scanning"), document: shared, fetches }
}

fn loopback_rules() -> iam_shared::outbound::OutboundRules {
    iam_shared::outbound::OutboundRules { allow_loopback: true, ..Default::default() }
}

async fn post_as(app: &TestApp, identifier: &str, signature: &str, payload: &[u8]) -> iam_tests::Response {
    let request = Request::post(ROUTE)
        .header(header::CONTENT_TYPE, "application/json")
        .header("Github-Public-Key-Identifier", identifier)
        .header("Github-Public-Key-Signature", signature)
        .body(Body::from(payload.to_vec()))
        .unwrap();
    app.send(request).await
}

/// Keys fetched from GitHub's endpoint: fetched when an alert first needs them, kept, and
/// fetched again when an alert names a key GitHub has since published.
#[tokio::test]
async fn keys_are_fetched_from_githubs_endpoint_and_refetched_for_a_new_key() {
    use iam_shared::leaks::{GithubKeyEndpoint, GithubKeySource};
    use iam_shared::outbound::Outbound;
    use std::sync::atomic::Ordering::SeqCst;

    let github = FakeGithub::new();
    let endpoint = key_endpoint(&github.document).await;
    let source = GithubKeyEndpoint::new(&endpoint.url, Outbound::new(loopback_rules()).unwrap())
        .unwrap()
        .with_min_refetch(std::time::Duration::ZERO);
    let state = iam_tests::state_with(Arc::new(EmbeddedStore::in_memory().unwrap())).await;
    let state = Arc::try_unwrap(state).expect("one owner").with_github_scanning_keys(GithubKeySource::new(None, Some(source)));
    let app = TestApp::with_state(Arc::new(state)).await;
    assert_eq!(endpoint.fetches.load(SeqCst), 0, "nothing is fetched before an alert needs it");

    let payload = b"[]";
    let r = post_as(&app, FakeGithub::KEY_IDENTIFIER, &github.sign(payload), payload).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    let r = post_as(&app, FakeGithub::KEY_IDENTIFIER, &github.sign(payload), payload).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert_eq!(endpoint.fetches.load(SeqCst), 1, "the keys are kept");

    // GitHub publishes a new key and signs with it.
    let rotated = FakeGithub::new();
    *endpoint.document.lock().unwrap() = rotated.document.replace(FakeGithub::KEY_IDENTIFIER, "github-test-key-2");
    let r = post_as(&app, "github-test-key-2", &rotated.sign(payload), payload).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert_eq!(endpoint.fetches.load(SeqCst), 2, "an unknown identifier fetches again");
    let r = post_as(&app, "github-test-key-2", &github.sign(payload), payload).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "a signature by another key: {}", r.raw);
}

/// Configured through the environment's settings, the endpoint obeys the outbound rules: a
/// loopback URL is refused at start unless the operator's switch allows it; redirects and
/// oversized answers are not accepted.
#[tokio::test]
async fn the_key_endpoint_obeys_the_outbound_rules() {
    use iam_shared::outbound::{Outbound, OutboundError};

    let github = FakeGithub::new();
    let endpoint = key_endpoint(&github.document).await;
    let mut config = iam_tests::config();
    config.github_scanning_keys_url = Some(endpoint.url.clone());
    let store = || -> Arc<dyn iam_shared::store::Store> { Arc::new(EmbeddedStore::in_memory().unwrap()) };
    let keys =
        || -> Arc<dyn iam_shared::signing_keys::KeySource> { Arc::new(iam_shared::signing_keys::StaticKey(iam_tests::signing_key())) };
    let refused = iam_api::state::build_state(&config, store(), keys()).await.expect_err("loopback refused");
    assert!(refused.to_string().contains("not a public address"), "{refused}");
    config.github_scanning_keys_url = Some("http://api.github.com/meta/public_keys/secret_scanning".into());
    let refused = iam_api::state::build_state(&config, store(), keys()).await.expect_err("plain http refused");
    assert!(refused.to_string().contains("only https"), "{refused}");

    config.github_scanning_keys_url = Some(endpoint.url.clone());
    config.outbound_allow_loopback = true;
    let app = TestApp::with_state(iam_api::state::build_state(&config, store(), keys()).await.unwrap()).await;
    let payload = b"[]";
    let r = post_as(&app, FakeGithub::KEY_IDENTIFIER, &github.sign(payload), payload).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);

    let outbound = Outbound::new(loopback_rules()).unwrap();
    let base = endpoint.url.trim_end_matches("/meta/public_keys/secret_scanning");
    assert_eq!(outbound.get(&format!("{base}/moved")).await, Err(OutboundError::Redirect(302)));
    assert!(matches!(outbound.get(&format!("{base}/huge")).await, Err(OutboundError::TooLarge(_))));
    assert!(matches!(outbound.get(&format!("{base}/absent")).await, Err(OutboundError::Status(404))));
    let strict = Outbound::new(Default::default()).unwrap();
    let via_name = endpoint.url.replace("127.0.0.1", "localhost");
    assert!(matches!(strict.get(&via_name).await, Err(OutboundError::Url(_))), "plain http to a name");
    let https_name = format!("https://localhost:{}/", base.rsplit(':').next().unwrap());
    assert!(
        matches!(strict.get(&https_name).await, Err(OutboundError::ForbiddenAddress { .. })),
        "a name resolving to loopback is not connected to"
    );
}
