//! Captures every log line of a full flow (at TRACE) and finds no key, secret, token, hash or
//! private key in it, while the audit events are all there.

use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::http::{Method, StatusCode};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_flow_logs_no_secret() {
    let capture = Capture::default();
    tracing_subscriber::fmt().json().with_max_level(tracing::Level::TRACE).with_writer(capture.clone()).init();

    let app = TestApp::new().await;
    let admin = app.admin().await;
    let p = app.create_principal(&admin, "billing").await;
    app.assign(&admin, &p, "iam-viewer").await;
    let (key_id, key) = app.issue(&admin, &p).await;
    let (id, secret) = key.split_once('.').unwrap();
    let token = app.token(&key).await;
    assert_eq!(app.call(Method::GET, "/iam/api-keys", Some(&token), None).await.status, StatusCode::OK);
    app.exchange_form(&format!("grant_type=client_credentials&client_id={id}&client_secret={secret}"), None).await;
    app.exchange_form("grant_type=client_credentials", Some((id, secret))).await;
    // Failures log their reasons; the reasons must not carry the inputs.
    app.exchange_json(json!({"apiKey": format!("{key}x")})).await;
    app.exchange_json(json!({"apiKey": format!("{id}.{}", &secret[1..])})).await;
    app.exchange_form(&format!("grant_type=client_credentials&client_id={id}&client_secret={secret}&client_secret={secret}"), None).await;
    app.call(Method::GET, "/iam/api-keys", Some(&format!("{token}x")), None).await;
    app.call(Method::POST, &format!("/iam/api-keys/{p}/credentials/{key_id}/revoke"), Some(&admin), None).await;
    let refused = app.exchange_json(json!({"apiKey": key})).await;
    assert_eq!(refused.str("error"), "invalid_grant");

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    for action in ["org.bootstrap", "principal.create", "role_assignment.assign", "credential.issue", "token.exchange", "credential.revoke"]
    {
        assert!(logs.contains(&format!("\"action\":\"{action}\"")), "missing audit event {action}");
    }
    assert!(logs.contains("\"outcome\":\"failure\"") && logs.contains("\"actor\":\"akp_"));

    let mut forbidden: Vec<(String, String)> = vec![
        ("issued key".into(), key.clone()),
        ("key secret".into(), secret.to_owned()),
        ("secret prefix".into(), secret[..20].to_owned()),
        ("bootstrap key".into(), app.acme_key.clone()),
        ("access token".into(), token.clone()),
        ("admin token".into(), admin.clone()),
        ("argon2 hash".into(), "$argon2id$".into()),
        ("private key".into(), "PRIVATE KEY".into()),
    ];
    let pem = iam_tests::signing_key();
    for line in pem.private_key_pem.expose_secret().lines().filter(|l| !l.starts_with("-----")) {
        forbidden.push(("private key body".into(), line.to_owned()));
    }
    for (what, needle) in forbidden {
        assert!(!logs.contains(&needle), "the logs contain the {what}");
    }
    assert!(logs.len() > 1000, "the capture saw the flow");
}
