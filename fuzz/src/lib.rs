//! One in-process instance of the service for the fuzz targets: the real router over an
//! in-memory embedded store, an organisation with an admin key, a principal and a token.

use std::sync::{Arc, LazyLock};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use iam_api::config::Config;
use iam_shared::hashing::HashParams;
use iam_shared::ids::OrgId;
use iam_shared::signing_keys::StaticKey;
use iam_shared::store::EmbeddedStore;
use iam_shared::token::{SigningKeyDocument, TokenSettings};
use secrecy::ExposeSecret;
use tower::ServiceExt;

pub struct Instance {
    pub runtime: tokio::runtime::Runtime,
    pub router: Router,
    pub api_key: String,
    pub admin_token: String,
    pub principal: String,
}

pub static INSTANCE: LazyLock<Instance> = LazyLock::new(|| {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (router, api_key, admin_token, principal) = runtime.block_on(async {
        let config = Config {
            tokens: TokenSettings {
                issuer: "http://iam.fuzz/iam".into(),
                audiences: vec!["infuse-api".into()],
                management_audience: "http://iam.fuzz/iam/management".into(),
                lifetime_secs: 900,
            },
            limits: Default::default(),
            // Cheap argon2: the fuzzer is after parsers, not hashing cost.
            hash: HashParams { memory_kib: 64, iterations: 1, parallelism: 1 },
            signing_key_ttl: std::time::Duration::from_secs(3600),
            github_scanning_keys: None,
            github_scanning_keys_url: None,
            outbound_allow_loopback: false,
            webhook_key: Some(Arc::new(iam_shared::webhooks::manage::WebhookKeySource::Static(Arc::new(
                iam_shared::webhooks::WebhookKey::generate(),
            )))),
        };
        let store = Arc::new(EmbeddedStore::in_memory().unwrap());
        let keys = Arc::new(StaticKey(SigningKeyDocument::generate().unwrap()));
        let state = iam_api::state::build_state(&config, store, keys).await.unwrap();
        let key = state.bootstrap(&OrgId::parse("fuzz").unwrap()).await.unwrap().unwrap();
        let api_key = key.to_secret_string().expose_secret().to_owned();
        let router = iam_local::app(state);
        let body = serde_json::json!({ "apiKey": api_key, "audience": "http://iam.fuzz/iam/management" }).to_string();
        let request = Request::post("/iam/auth/token").header("content-type", "application/json").body(Body::from(body)).unwrap();
        let (_, token) = call(&router, request).await;
        let admin_token = serde_json::from_slice::<serde_json::Value>(&token).unwrap()["access_token"].as_str().unwrap().to_owned();
        let request = Request::post("/iam/api-keys")
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {admin_token}"))
            .body(Body::from(r#"{"displayName":"fuzzed"}"#))
            .unwrap();
        let (_, created) = call(&router, request).await;
        let principal = serde_json::from_slice::<serde_json::Value>(&created).unwrap()["id"].as_str().unwrap().to_owned();
        (router, api_key, admin_token, principal)
    });
    Instance { runtime, router, api_key, admin_token, principal }
});

pub async fn call(router: &Router, request: Request<Body>) -> (StatusCode, Vec<u8>) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes().to_vec();
    (status, body)
}

/// Sends `request` and fails the run on any 5xx, on a body that is not JSON, or on a body
/// that repeats the instance's API key secret.
pub fn check(request: Request<Body>) -> StatusCode {
    let instance = &*INSTANCE;
    let (status, body) = instance.runtime.block_on(call(&instance.router, request));
    assert!(!status.is_server_error(), "{status}: {}", String::from_utf8_lossy(&body));
    assert!(body.is_empty() || serde_json::from_slice::<serde_json::Value>(&body).is_ok(), "not JSON: {}", String::from_utf8_lossy(&body));
    let secret = instance.api_key.split_once('.').unwrap().1;
    assert!(!String::from_utf8_lossy(&body).contains(secret), "the key secret leaked");
    status
}
