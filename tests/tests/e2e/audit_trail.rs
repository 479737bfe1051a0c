//! The audit trail through the API, on every store: who did what to a key and when, the
//! refusals, the permission, the filters and pages, JSON lines, the hash chain, and no secret.

use axum::http::{Method, StatusCode};
use iam_shared::audit::{AuditRecord, verify_chain};
use iam_shared::ids::OrgId;
use iam_tests::TestApp;
use serde_json::{Value, json};

use crate::authority::holder_with_role;

/// Every record the caller may read, oldest first, through pages of `limit`.
async fn whole_trail(app: &TestApp, token: &str, filter: &str, limit: usize) -> Vec<Value> {
    let mut all = Vec::new();
    let mut cursor = String::new();
    loop {
        let uri = format!("/iam/audit-events?order=oldest&limit={limit}{filter}&cursor={cursor}");
        let r = app.call(Method::GET, &uri, Some(token), None).await;
        assert_eq!(r.status, StatusCode::OK, "{uri}: {}", r.raw);
        all.extend(r.body["items"].as_array().unwrap().iter().cloned());
        match r.body["nextCursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => return all,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_did_what_to_a_key_and_when_is_answered_from_the_trail() {
    for (store, app) in TestApp::on_every_store().await {
        let admin = app.admin().await;
        let admin_id = app.call(Method::GET, "/iam/whoami", Some(&admin), None).await.str("sub").to_owned();
        let p = app.create_principal(&admin, "billing sync").await;
        let (key_id, api_key) = app.issue(&admin, &p).await;
        app.assign(&admin, &p, "iam-viewer").await;
        let credentials = format!("/iam/api-keys/{p}/credentials/{key_id}");
        let r = app.call(Method::PATCH, &credentials, Some(&admin), Some(json!({"name": "billing"}))).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
        let r = app.call(Method::POST, &format!("{credentials}/revoke"), Some(&admin), None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
        // Revoking again changes nothing, so it records nothing.
        app.call(Method::POST, &format!("{credentials}/revoke"), Some(&admin), None).await;
        let r = app.call(Method::PATCH, &format!("/iam/api-keys/{p}"), Some(&admin), Some(json!({"status": "Suspended"}))).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.raw);

        let of_p = whole_trail(&app, &admin, &format!("&principalId={p}"), 2).await;
        let actions: Vec<&str> = of_p.iter().map(|r| r["action"].as_str().unwrap()).collect();
        assert_eq!(
            actions,
            [
                "principal.create",
                "credential.issue",
                "role_assignment.assign",
                "credential.update",
                "credential.revoke",
                "principal.update"
            ],
            "{store}"
        );
        let admin_key = app.acme_key.split('.').next().unwrap().trim_start_matches("ik_");
        for record in &of_p {
            assert_eq!(record["actor"], admin_id.as_str(), "{store}: {record}");
            assert_eq!(record["actorKeyId"], admin_key, "{store}: who acted, and with which key");
            assert_eq!(record["outcome"], "success");
        }
        let revoke = &of_p[4];
        assert_eq!(revoke["keyId"], key_id.as_str());
        assert_eq!(of_p[5]["detail"], json!({"status": "Suspended", "previousStatus": "Active"}), "{store}");
        assert_eq!(of_p[1]["detail"]["name"], "ci");

        // The whole organisation's trail is one intact chain, from its bootstrap on.
        let all = whole_trail(&app, &admin, "", 50).await;
        assert_eq!(all[0]["action"], "org.bootstrap", "{store}");
        let records: Vec<AuditRecord> = all.iter().map(|r| serde_json::from_value(r.clone()).unwrap()).collect();
        let head = app.state.store.audit_head(&OrgId::parse("acme").unwrap()).await.unwrap();
        assert_eq!(verify_chain(&records, head.as_ref(), None), Ok(()), "{store}");
        let mut edited = records.clone();
        edited[2].entry.actor = iam_shared::model::Actor::system("someone else");
        assert!(verify_chain(&edited, head.as_ref(), None).is_err(), "{store}: an edit breaks the chain");

        // Another organisation sees only its own.
        let globex = app.token(&app.globex_key).await;
        let theirs = whole_trail(&app, &globex, "", 50).await;
        assert_eq!(theirs.len(), 1, "{store}: {theirs:?}");
        let none = whole_trail(&app, &globex, &format!("&principalId={p}"), 50).await;
        assert!(none.is_empty());

        // No secret anywhere in the trail, in either format.
        let lines =
            app.call_with(Method::GET, "/iam/audit-events?limit=200", Some(&admin), None, &[("Accept", "application/x-ndjson")]).await;
        assert_eq!(lines.header("content-type"), Some("application/x-ndjson"), "{store}");
        assert_eq!(lines.raw.lines().count(), all.len(), "{store}");
        let secret = api_key.split_once('.').unwrap().1;
        let admin_secret = app.acme_key.split_once('.').unwrap().1;
        for text in [lines.raw.as_str(), &serde_json::to_string(&all).unwrap()] {
            assert!(!text.contains(secret) && !text.contains(admin_secret), "{store}: a secret in the trail");
            assert!(!text.contains("argon2") && !text.contains("secretHash"), "{store}: a hash in the trail");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_recorded_once_per_minute_with_their_count() {
    for (store, app) in TestApp::on_every_store().await {
        let admin = app.admin().await;
        let (reader, reader_token, _) = holder_with_role(&app, &admin, &iam_testkit::unique("reader"), &["iam:api-keys:read"]).await;
        // A flood of refused attempts from an authenticated caller: one record, counted.
        for _ in 0..25 {
            let r = app.call(Method::POST, "/iam/api-keys", Some(&reader_token), Some(json!({"displayName": "x"}))).await;
            assert_eq!(r.status, StatusCode::FORBIDDEN);
        }
        let refused = whole_trail(&app, &admin, "&outcome=refused", 50).await;
        let of_reader: Vec<&Value> = refused.iter().filter(|r| r["actor"] == reader.as_str()).collect();
        assert_eq!(of_reader.len(), 1, "{store}: {refused:?}");
        assert_eq!(of_reader[0]["repeats"], 25, "{store}");
        assert_eq!(of_reader[0]["reason"], "missing_permission");
        assert_eq!(of_reader[0]["action"], "principal.create");
        // ... and the reader itself may not read the trail.
        let r = app.call(Method::GET, "/iam/audit-events", Some(&reader_token), None).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{store}: {}", r.raw);

        // An exchange refused after its secret was proved is recorded; a wrong secret is not.
        let p = app.create_principal(&admin, "suspended").await;
        let (_, key) = app.issue(&admin, &p).await;
        app.call(Method::PATCH, &format!("/iam/api-keys/{p}"), Some(&admin), Some(json!({"status": "Suspended"}))).await;
        for _ in 0..3 {
            assert_eq!(app.exchange_json(json!({"apiKey": key})).await.status, StatusCode::BAD_REQUEST);
        }
        let wrong = format!("{}.{}", key.split('.').next().unwrap(), "A".repeat(50));
        app.exchange_json(json!({"apiKey": wrong})).await;
        let exchanges = whole_trail(&app, &admin, "&action=token.exchange", 50).await;
        assert_eq!(exchanges.len(), 1, "{store}: {exchanges:?}");
        assert_eq!(exchanges[0]["reason"], "principal_suspended");
        assert_eq!(exchanges[0]["repeats"], 3);
        assert_eq!(exchanges[0]["actor"], p.as_str());

        // iam-viewer reads the trail; the filters and bad input.
        let viewer = app.create_principal(&admin, "auditor").await;
        app.assign(&admin, &viewer, "iam-viewer").await;
        let (_, viewer_key) = app.issue(&admin, &viewer).await;
        let viewer_token = app.token(&viewer_key).await;
        let r = app.call(Method::GET, &format!("/iam/audit-events?actor={reader}"), Some(&viewer_token), None).await;
        assert_eq!(r.status, StatusCode::OK, "{store}: {}", r.raw);
        assert_eq!(r.body["items"].as_array().unwrap().len(), 1);
        let later = (chrono::Utc::now() + chrono::Duration::minutes(5)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let r = app.call(Method::GET, &format!("/iam/audit-events?from={later}"), Some(&viewer_token), None).await;
        assert_eq!(r.body["items"], json!([]), "{store}");
        for bad in
            ["limit=0", "limit=201", "outcome=maybe", "from=yesterday", "order=sideways", "cursor=%%%", "principalId=x", "colour=red"]
        {
            let r = app.call(Method::GET, &format!("/iam/audit-events?{bad}"), Some(&viewer_token), None).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{store}: {bad}: {}", r.raw);
        }
        let r = app.call(Method::GET, &format!("/iam/audit-events?from={later}&to=2020-01-01T00:00:00Z"), Some(&viewer_token), None).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{store}: {}", r.raw);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaked_key_is_recorded_as_leaked_by_the_system() {
    for (store, app) in TestApp::on_every_store().await {
        let admin = app.admin().await;
        let p = app.create_principal(&admin, "leaky").await;
        let (key_id, key) = app.issue(&admin, &p).await;
        let r = app.call(Method::POST, "/iam/credentials/revoke-leaked", None, Some(json!({"keys": [key]}))).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{store}: {}", r.raw);
        let leaked = whole_trail(&app, &admin, "&action=credential.leaked", 50).await;
        assert_eq!(leaked.len(), 1, "{store}: {leaked:?}");
        assert_eq!(leaked[0]["keyId"], key_id.as_str());
        assert_eq!(leaked[0]["principalId"], p.as_str());
        assert!(leaked[0]["actor"].as_str().unwrap().starts_with("system:"), "{store}: {}", leaked[0]);
    }
}

/// JSON lines page through the `Link` header, continuing the same query.
#[tokio::test]
async fn json_lines_pages_follow_the_link_header() {
    let app = TestApp::new().await;
    let admin = app.admin().await;
    for i in 0..5 {
        app.create_principal(&admin, &format!("p{i}")).await;
    }
    let mut uri = "/iam/audit-events?limit=2&order=oldest&action=principal.create".to_owned();
    let mut lines = Vec::new();
    loop {
        let r = app.call_with(Method::GET, &uri, Some(&admin), None, &[("Accept", "application/x-ndjson")]).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
        lines.extend(r.raw.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()));
        match r.header("link") {
            Some(link) => uri = link.trim_start_matches('<').split('>').next().unwrap().to_owned(),
            None => break,
        }
    }
    assert_eq!(lines.len(), 5, "{lines:?}");
    assert!(lines.iter().all(|l| l["action"] == "principal.create"));
}
