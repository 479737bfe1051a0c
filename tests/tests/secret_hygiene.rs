//! Secret hygiene, on both stores: a flow through every route (and its failures) runs with
//! every log line captured at TRACE, every response kept, and the stores read back whole (the
//! embedded store's database file byte for byte; every item of both DynamoDB tables). No API
//! key, key secret, access token or private key may appear in any of them, but for the one
//! response that issues each key; the audit events must all be there.

use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::http::{Method, StatusCode};
use iam_shared::store::EmbeddedStore;
use iam_tests::TestApp;
use secrecy::ExposeSecret;
use serde_json::json;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Runs the flow; answers what must never be seen again, as (what, text).
async fn full_flow(app: &TestApp) -> Vec<(String, String)> {
    let admin = app.admin().await;
    let p = app.create_principal(&admin, "billing").await;
    app.assign(&admin, &p, "iam-viewer").await;
    let (key_id, key) = app.issue(&admin, &p).await;
    let (id, secret) = key.split_once('.').unwrap();
    let token = app.token(&key).await;
    assert_eq!(app.call(Method::GET, "/iam/api-keys", Some(&token), None).await.status, StatusCode::OK);
    // A viewer tries six escalations; each is refused, and each refusal is audited.
    let escalations = [
        (
            Method::POST,
            "/iam/roles".to_owned(),
            Some(json!({"name": "mine", "permissions": ["iam:roles:write"], "principalTypes": ["ApiKey"]})),
        ),
        (Method::PUT, format!("/iam/api-keys/{p}/role-assignments/iam-admin"), None),
        (Method::DELETE, format!("/iam/api-keys/{p}/role-assignments/iam-viewer"), None),
        (Method::PATCH, format!("/iam/api-keys/{p}"), Some(json!({"expiresAt": null}))),
        (Method::POST, format!("/iam/api-keys/{p}/credentials"), Some(json!({"name": "more"}))),
        (Method::POST, format!("/iam/api-keys/{p}/credentials/{key_id}/revoke"), None),
    ];
    for (method, uri, body) in escalations {
        assert_eq!(app.call(method, &uri, Some(&token), body).await.status, StatusCode::FORBIDDEN, "{uri}");
    }
    for path in
        [format!("/iam/api-keys/{p}"), format!("/iam/api-keys/{p}/credentials?include=all"), format!("/iam/api-keys/{p}/role-assignments")]
    {
        assert_eq!(app.call(Method::GET, &path, Some(&admin), None).await.status, StatusCode::OK, "{path}");
    }
    app.call(Method::GET, "/iam/roles", Some(&admin), None).await;
    app.call(Method::GET, "/iam/whoami", Some(&token), None).await;
    app.call(Method::GET, "/iam/.well-known/jwks.json", None, None).await;
    app.call(Method::GET, "/iam/.well-known/openid-configuration", None, None).await;
    let role = json!({"name": "deployer", "permissions": ["ci:deploy"], "principalTypes": ["ApiKey"]});
    let role = app.call_with(Method::POST, "/iam/roles", Some(&admin), Some(role), &[("idempotency-key", "hygiene")]).await;
    let assignment = format!("/iam/api-keys/{p}/role-assignments/{}", role.str("id"));
    assert!(app.call(Method::PUT, &assignment, Some(&admin), None).await.status.is_success());
    assert!(app.call(Method::DELETE, &assignment, Some(&admin), None).await.status.is_success());
    app.call(Method::PATCH, &format!("/iam/api-keys/{p}"), Some(&admin), Some(json!({"displayName": "billing-2"}))).await;
    app.exchange_form(&format!("grant_type=client_credentials&client_id={id}&client_secret={secret}"), None).await;
    app.exchange_form("grant_type=client_credentials", Some((id, secret))).await;
    // Failures log their reasons; the reasons must not carry the inputs.
    app.exchange_json(json!({"apiKey": format!("{key}x")})).await;
    app.exchange_json(json!({"apiKey": format!("{id}.{}", &secret[1..])})).await;
    app.exchange_form(&format!("grant_type=client_credentials&client_id={id}&client_secret={secret}&client_secret={secret}"), None).await;
    app.exchange_json(json!({"apiKey": key, "scope": "not:held"})).await;
    app.call(Method::GET, "/iam/api-keys", Some(&format!("{token}x")), None).await;
    // A replayed issue answers 409 with the key id, never the secret.
    let uri = format!("/iam/api-keys/{p}/credentials");
    let (first, replay) = (
        app.call_with(Method::POST, &uri, Some(&admin), Some(json!({"name": "retried"})), &[("idempotency-key", "hygiene-issue")]).await,
        app.call_with(Method::POST, &uri, Some(&admin), Some(json!({"name": "retried"})), &[("idempotency-key", "hygiene-issue")]).await,
    );
    assert_eq!((first.status, replay.status), (StatusCode::CREATED, StatusCode::CONFLICT));
    let retried_key = first.str("apiKey").to_owned();
    app.call(Method::POST, &format!("/iam/api-keys/{p}/credentials/{key_id}/revoke"), Some(&admin), None).await;
    let refused = app.exchange_json(json!({"apiKey": key})).await;
    assert_eq!(refused.str("error"), "invalid_grant");
    // The audit trail holds every change above and the refusals: answered, scanned below.
    let trail = app.call(Method::GET, "/iam/audit-events?limit=200", Some(&admin), None).await;
    assert!(trail.body["items"].as_array().is_some_and(|items| items.len() > 10), "{}", trail.raw);
    app.call_with(Method::GET, "/iam/audit-events?limit=200", Some(&admin), None, &[("Accept", "application/x-ndjson")]).await;

    let mut forbidden: Vec<(String, String)> = vec![
        ("issued key".into(), key.clone()),
        ("key secret".into(), secret.to_owned()),
        ("secret prefix".into(), secret[..20].to_owned()),
        ("retried key's secret".into(), retried_key.split_once('.').unwrap().1.to_owned()),
        ("bootstrap key secret".into(), app.acme_key.split_once('.').unwrap().1.to_owned()),
        ("private key".into(), "PRIVATE KEY".into()),
    ];
    let pem = iam_tests::signing_key();
    for line in pem.private_key_pem.expose_secret().lines().filter(|l| !l.starts_with("-----")) {
        forbidden.push(("private key body".into(), line.to_owned()));
    }
    // Tokens are bearer credentials too: answered, never logged or stored.
    forbidden.push(("access token".into(), token));
    forbidden.push(("admin token".into(), admin));
    forbidden
}

fn assert_clean(place: &str, text: &str, forbidden: &[(String, String)], allow_tokens: bool) {
    for (what, needle) in forbidden {
        if allow_tokens && what.ends_with("token") {
            continue;
        }
        assert!(!text.contains(needle.as_str()), "{place} contains the {what}");
    }
}

/// Every response but the issue responses (the one place each key is shown) and the token
/// responses (whose whole point is the token).
fn scan_responses(store: &str, app: &TestApp, forbidden: &[(String, String)]) -> usize {
    let transcript = app.transcript.lock().unwrap();
    let mut scanned = 0;
    for (path, status, body) in transcript.iter() {
        let issue = path.ends_with("/credentials") && *status == StatusCode::CREATED;
        if issue {
            continue;
        }
        assert_clean(&format!("{store}: the {status} response to {path}"), body, forbidden, true);
        scanned += 1;
    }
    scanned
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_a_log_a_response_or_a_stored_item() {
    let capture = Capture::default();
    tracing_subscriber::fmt().json().with_max_level(tracing::Level::TRACE).with_writer(capture.clone()).init();

    // Embedded, on disk: the database file is read back byte for byte.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("iam.redb");
    let embedded = TestApp::with_state(iam_tests::state_with(Arc::new(EmbeddedStore::open(&db).unwrap())).await).await;
    let mut forbidden = full_flow(&embedded).await;
    let responses = scan_responses("embedded", &embedded, &forbidden);
    drop(embedded);
    let bytes = std::fs::read(&db).unwrap();
    assert!(bytes.windows(10).any(|w| w == b"$argon2id$"), "the scan reads the stored hashes");
    let stored = String::from_utf8_lossy(&bytes);
    assert_clean("the embedded database file", &stored, &forbidden, false);

    // DynamoDB on moto: every item of both tables.
    let (store, tables) = iam_testkit::fresh_store_with_tables().await;
    let dynamo = TestApp::with_state(iam_tests::state_with(store).await).await;
    let more = full_flow(&dynamo).await;
    let dynamo_responses = scan_responses("dynamodb", &dynamo, &more);
    let client = aws_sdk_dynamodb::Client::new(&iam_testkit::sdk_config().await);
    let mut items = 0;
    for table in tables.all() {
        for item in client.scan().table_name(table).send().await.unwrap().items() {
            assert_clean(&format!("an item of {table}"), &format!("{item:?}"), &more, false);
            items += 1;
        }
    }
    forbidden.extend(more);

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    for action in [
        "org.bootstrap",
        "principal.create",
        "principal.update",
        "role.create",
        "role_assignment.assign",
        "role_assignment.unassign",
        "credential.issue",
        "token.exchange",
        "credential.revoke",
    ] {
        assert!(logs.contains(&format!("\"action\":\"{action}\"")), "missing audit event {action}");
    }
    assert!(logs.contains("\"outcome\":\"failure\"") && logs.contains("\"actor\":\"akp_"));
    for action in
        ["role.create", "role_assignment.assign", "role_assignment.unassign", "principal.update", "credential.issue", "credential.revoke"]
    {
        assert!(
            logs.lines().any(|l| l.contains(&format!("\"action\":\"{action}\""))
                && l.contains("\"outcome\":\"failure\"")
                && l.contains("needs the permission")),
            "the refused {action} is audited with its reason"
        );
    }
    // A refusal after the secret was proved names who was refused; a bad key names no one.
    let exchanges: Vec<&str> = logs.lines().filter(|l| l.contains("\"action\":\"token.exchange\"")).collect();
    assert!(
        exchanges.iter().any(|l| l.contains("revoked") && l.contains("\"actor\":\"akp_") && l.contains("\"org\":\"acme\"")),
        "the refused exchange of a revoked key is audited with its principal and organisation"
    );
    assert!(exchanges.iter().any(|l| l.contains("invalid client") && l.contains("\"actor\":\"anonymous\"")));
    assert_clean("the logs", &logs, &forbidden, false);
    assert!(logs.len() > 1000, "the capture saw the flow");
    println!(
        "scanned {} bytes of logs, {responses} + {dynamo_responses} responses, {} bytes of redb file, {items} DynamoDB items: clean",
        logs.len(),
        bytes.len()
    );
}
