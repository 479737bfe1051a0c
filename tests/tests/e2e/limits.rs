//! Every documented limit, enforced with a clear 4xx (problem+json naming the limit) and
//! nothing written: page size, name and description lengths, permissions per role, roles per
//! principal, roles per organisation, credentials per principal, body size, headers.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use iam_api::state::{MAX_HEADER_BYTES, MAX_HEADERS};
use iam_shared::model::{
    CREDENTIAL_NAME_MAX, DISPLAY_NAME_MAX, MAX_ORG_ROLES, MAX_ROLES_PER_PRINCIPAL, ROLE_DESCRIPTION_MAX, ROLE_NAME_MAX,
    ROLE_PERMISSIONS_MAX,
};
use iam_tests::{Response, TestApp};
use serde_json::json;

fn refused(r: &Response, status: StatusCode, mentions: &str) {
    assert_eq!(r.status, status, "{}", r.raw);
    assert_eq!(r.header("content-type"), Some("application/problem+json"), "{}", r.raw);
    assert!(r.str("detail").contains(mentions), "the detail names the limit ({mentions}): {}", r.raw);
}

fn role(name: &str) -> serde_json::Value {
    json!({"name": name, "permissions": ["ci:deploy"], "principalTypes": ["ApiKey"]})
}

#[tokio::test]
async fn lengths_and_counts_in_bodies() {
    let app = TestApp::new().await;
    let admin = app.admin().await;
    let at = |n: usize| "x".repeat(n);

    let ok = app.call(Method::POST, "/iam/api-keys", Some(&admin), Some(json!({"displayName": at(DISPLAY_NAME_MAX)}))).await;
    assert_eq!(ok.status, StatusCode::CREATED, "{}", ok.raw);
    let long = app.call(Method::POST, "/iam/api-keys", Some(&admin), Some(json!({"displayName": at(DISPLAY_NAME_MAX + 1)}))).await;
    refused(&long, StatusCode::BAD_REQUEST, &DISPLAY_NAME_MAX.to_string());
    let p = ok.str("id").to_owned();
    let patch =
        app.call(Method::PATCH, &format!("/iam/api-keys/{p}"), Some(&admin), Some(json!({"displayName": at(DISPLAY_NAME_MAX + 1)}))).await;
    refused(&patch, StatusCode::BAD_REQUEST, &DISPLAY_NAME_MAX.to_string());

    let uri = format!("/iam/api-keys/{p}/credentials");
    let long = app.call(Method::POST, &uri, Some(&admin), Some(json!({"name": at(CREDENTIAL_NAME_MAX + 1)}))).await;
    refused(&long, StatusCode::BAD_REQUEST, &CREDENTIAL_NAME_MAX.to_string());

    let long = app.call(Method::POST, "/iam/roles", Some(&admin), Some(role(&at(ROLE_NAME_MAX + 1)))).await;
    refused(&long, StatusCode::BAD_REQUEST, &ROLE_NAME_MAX.to_string());
    let mut described = role("described");
    described["description"] = json!(at(ROLE_DESCRIPTION_MAX + 1));
    refused(
        &app.call(Method::POST, "/iam/roles", Some(&admin), Some(described)).await,
        StatusCode::BAD_REQUEST,
        &ROLE_DESCRIPTION_MAX.to_string(),
    );
    let mut many = role("many");
    many["permissions"] = json!((0..=ROLE_PERMISSIONS_MAX).map(|i| format!("ci:p{i}")).collect::<Vec<_>>());
    refused(
        &app.call(Method::POST, "/iam/roles", Some(&admin), Some(many)).await,
        StatusCode::BAD_REQUEST,
        &ROLE_PERMISSIONS_MAX.to_string(),
    );
    let roles = app.call(Method::GET, "/iam/roles", Some(&admin), None).await;
    assert!(roles.raw.find("\"many\"").is_none() && roles.raw.find("\"described\"").is_none(), "nothing written");
}

#[tokio::test]
async fn page_size_is_capped() {
    let app = TestApp::new().await;
    let admin = app.admin().await;
    assert_eq!(app.call(Method::GET, "/iam/api-keys?limit=100", Some(&admin), None).await.status, StatusCode::OK);
    for bad in ["101", "0", "-1", "99999999999999999999"] {
        let r = app.call(Method::GET, &format!("/iam/api-keys?limit={bad}"), Some(&admin), None).await;
        refused(&r, StatusCode::BAD_REQUEST, "100");
    }
}

#[tokio::test]
async fn roles_per_principal_and_per_organisation() {
    let app = TestApp::new().await;
    let admin = app.admin().await;
    let mut ids = Vec::new();
    for i in 0..MAX_ORG_ROLES {
        let r = app.call(Method::POST, "/iam/roles", Some(&admin), Some(role(&format!("r{i}")))).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
        ids.push(r.str("id").to_owned());
    }
    let over = app.call(Method::POST, "/iam/roles", Some(&admin), Some(role("one-too-many"))).await;
    refused(&over, StatusCode::CONFLICT, &MAX_ORG_ROLES.to_string());

    let p = app.create_principal(&admin, "busy").await;
    for id in &ids[..MAX_ROLES_PER_PRINCIPAL] {
        app.assign(&admin, &p, id).await;
    }
    let over =
        app.call(Method::PUT, &format!("/iam/api-keys/{p}/role-assignments/{}", ids[MAX_ROLES_PER_PRINCIPAL]), Some(&admin), None).await;
    refused(&over, StatusCode::CONFLICT, &MAX_ROLES_PER_PRINCIPAL.to_string());
    let held = app.call(Method::GET, &format!("/iam/api-keys/{p}/role-assignments"), Some(&admin), None).await;
    assert_eq!(held.body["items"].as_array().unwrap().len(), MAX_ROLES_PER_PRINCIPAL);
}

#[tokio::test]
async fn oversized_bodies_and_headers() {
    let app = TestApp::new().await;
    let admin = app.admin().await;
    let big = json!({"displayName": "x".repeat(65 * 1024)});
    refused(&app.call(Method::POST, "/iam/api-keys", Some(&admin), Some(big)).await, StatusCode::PAYLOAD_TOO_LARGE, "65536");

    // Routes that never read a body refuse a declared oversized one too, and change nothing.
    let p = app.create_principal(&admin, "bystander").await;
    let padded = |method: Method, uri: String| {
        Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {admin}"))
            .header("content-length", (65 * 1024).to_string())
            .body(Body::from(vec![b'x'; 65 * 1024]))
            .unwrap()
    };
    for (method, uri) in [
        (Method::GET, "/iam/api-keys".to_owned()),
        (Method::PUT, format!("/iam/api-keys/{p}/role-assignments/iam-viewer")),
        (Method::DELETE, format!("/iam/api-keys/{p}/role-assignments/iam-viewer")),
    ] {
        refused(&app.send(padded(method, uri)).await, StatusCode::PAYLOAD_TOO_LARGE, "65536");
    }
    let held = app.call(Method::GET, &format!("/iam/api-keys/{p}/role-assignments"), Some(&admin), None).await;
    assert_eq!(held.body["items"].as_array().unwrap().len(), 0, "{}", held.raw);

    let huge = "h".repeat(MAX_HEADER_BYTES);
    let r = app
        .send(
            Request::get("/iam/api-keys")
                .header("authorization", format!("Bearer {admin}"))
                .header("x-padding", huge.as_str())
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    refused(&r, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, &MAX_HEADER_BYTES.to_string());
    // The token route refuses in its own (RFC 6749) shape.
    let oauth_refused = |r: &Response, status: StatusCode, mentions: &str| {
        assert_eq!(r.status, status, "{}", r.raw);
        assert_eq!(r.header("content-type"), Some("application/json"), "{}", r.raw);
        assert_eq!(r.header("cache-control"), Some("no-store"), "{}", r.raw);
        assert_eq!(r.str("error"), "invalid_request", "{}", r.raw);
        assert!(r.str("error_description").contains(mentions), "{}", r.raw);
    };
    let token = |request: axum::http::request::Builder, body: Vec<u8>| request.uri("/iam/auth/token").body(Body::from(body)).unwrap();
    let r = app.send(token(Request::post("/").header("x-padding", huge.as_str()), Vec::new())).await;
    oauth_refused(&r, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, &MAX_HEADER_BYTES.to_string());
    // Refused by the router on its declared length, and by the route when it reads the body.
    let form = || Request::post("/").header("content-type", "application/x-www-form-urlencoded");
    let declared = form().header("content-length", (65 * 1024).to_string());
    for request in [declared, form()] {
        let r = app.send(token(request, vec![b'a'; 65 * 1024])).await;
        oauth_refused(&r, StatusCode::PAYLOAD_TOO_LARGE, "65536");
    }
    let r = app.send(token(Request::get("/"), Vec::new())).await;
    oauth_refused(&r, StatusCode::METHOD_NOT_ALLOWED, "POST");
    assert_eq!(r.header("allow"), Some("POST"));
    let mut many = Request::get("/iam/api-keys").header("authorization", format!("Bearer {admin}"));
    for i in 0..MAX_HEADERS {
        many = many.header(format!("x-h{i}"), "v");
    }
    refused(&app.send(many.body(Body::empty()).unwrap()).await, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, &MAX_HEADERS.to_string());
    // Ordinary requests are nowhere near either limit.
    assert_eq!(app.call(Method::GET, "/iam/api-keys", Some(&admin), None).await.status, StatusCode::OK);
}

/// Waits until just after a second starts, so that a few quick calls fall in one window of the
/// per-key limit (which counts per Unix second).
async fn at_the_start_of_a_second() {
    let millis = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_millis();
    tokio::time::sleep(std::time::Duration::from_millis(u64::from(1_020 - millis))).await;
}

/// A key exchanged more often than its per-second limit meets 429 `slow_down` with
/// `Retry-After`, on every store, writing nothing; the next second serves it again, and other
/// keys are never affected.
#[tokio::test]
async fn a_hot_key_is_told_to_slow_down() {
    let stores: Vec<(&str, std::sync::Arc<dyn iam_shared::store::Store>)> = vec![
        ("embedded", std::sync::Arc::new(iam_shared::store::EmbeddedStore::in_memory().unwrap())),
        ("dynamodb", iam_testkit::fresh_store().await),
    ];
    for (name, store) in stores {
        let mut state = iam_tests::state_with(store).await;
        std::sync::Arc::get_mut(&mut state).expect("one owner").limits.exchanges_per_key_per_second = 2;
        let app = TestApp::with_state(state).await;
        let key = json!({"apiKey": app.acme_key});
        // A first exchange warms the instance (argon2 once); the window under test is the next.
        assert_eq!(app.exchange_json(key.clone()).await.status, StatusCode::OK, "{name}");
        at_the_start_of_a_second().await;
        for n in 1..=2 {
            let ok = app.exchange_json(key.clone()).await;
            assert_eq!(ok.status, StatusCode::OK, "{name}: exchange {n} of 2: {}", ok.raw);
        }
        let key_id = iam_shared::api_key::ApiKey::parse(&app.acme_key).unwrap().key_id().clone();
        let before = app.state.store.get_credential(&key_id).await.unwrap().unwrap();
        let hot = app.exchange_json(key.clone()).await;
        assert_eq!(hot.status, StatusCode::TOO_MANY_REQUESTS, "{name}: {}", hot.raw);
        assert_eq!(hot.str("error"), "slow_down", "{name}");
        assert!(hot.str("error_description").contains("reuse its access token"), "{name}: {}", hot.raw);
        let retry_after: u64 = hot.header("retry-after").expect("Retry-After").parse().unwrap();
        assert!((1..=3).contains(&retry_after), "{name}: Retry-After {retry_after}");
        assert_eq!(hot.header("cache-control"), Some("no-store"), "{name}");
        let after = app.state.store.get_credential(&key_id).await.unwrap().unwrap();
        assert_eq!(after, before, "{name}: a refused exchange writes nothing");
        // Another organisation's key, in the same second, is served.
        assert_eq!(app.exchange_json(json!({"apiKey": app.globex_key})).await.status, StatusCode::OK, "{name}");
        at_the_start_of_a_second().await;
        assert_eq!(app.exchange_json(key).await.status, StatusCode::OK, "{name}: the next second serves it again");
    }
}
