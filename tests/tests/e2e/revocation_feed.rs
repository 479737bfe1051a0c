//! The revocation feed, on every store, and a downstream verifier following it: a revoked key's
//! tokens, and a suspended principal's, are refused at the next poll instead of at `exp`.

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use iam_tests::{AUDIENCE, ISSUER, RouterFetch, TestApp};
use iam_verifier::{Expectations, Rejection, RemoteVerifier, Revocations};
use serde_json::json;

use crate::authority::holder_with_role;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verifier_following_the_feed_refuses_revoked_tokens_at_its_next_poll() {
    for (store, app) in TestApp::on_every_store().await {
        let admin = app.admin().await;
        // The downstream service's own identity: a key holding iam:tokens:introspect only.
        let (_, watcher, _) = holder_with_role(&app, &admin, &iam_testkit::unique("watcher"), &["iam:tokens:introspect"]).await;
        let p = app.create_principal(&admin, "device fleet").await;
        app.assign(&admin, &p, "device-provisioner").await;
        let (key_id, key) = app.issue(&admin, &p).await;
        let (_, other_key) = app.issue(&admin, &p).await;
        let q = app.create_principal(&admin, "other fleet").await;
        app.assign(&admin, &q, "device-provisioner").await;
        let (_, q_key) = app.issue(&admin, &q).await;

        let feed = format!("{ISSUER}/revocations");
        let fetch = RouterFetch(app.router.clone());
        let revocations = Arc::new(Revocations::default());
        let verifier = RemoteVerifier::new(
            format!("{ISSUER}/.well-known/jwks.json"),
            Expectations::new(ISSUER, AUDIENCE),
            RouterFetch(app.router.clone()),
        )
        .with_revocations(revocations.clone());
        revocations.poll(&fetch, &feed, &watcher).await.unwrap();

        let token = app.downstream_token(&key).await;
        let other = app.downstream_token(&other_key).await;
        let q_token = app.downstream_token(&q_key).await;
        assert!(verifier.verify(&token).await.is_ok(), "{store}");

        // Revoked: still valid by signature and exp, refused once the feed is polled.
        let r = app.call(Method::POST, &format!("/iam/api-keys/{p}/credentials/{key_id}/revoke"), Some(&admin), None).await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(verifier.verify(&token).await.is_ok(), "{store}: not yet polled");
        assert_eq!(revocations.poll(&fetch, &feed, &watcher).await.unwrap(), 1, "{store}");
        assert_eq!(verifier.verify(&token).await.unwrap_err(), Rejection::Revoked, "{store}");
        assert!(verifier.verify(&other).await.is_ok(), "{store}: the principal's other key is untouched");

        // A suspension kills every token of the principal; reinstating brings them back.
        let q_uri = format!("/iam/api-keys/{q}");
        let suspend = |status: &'static str| app.call(Method::PATCH, &q_uri, Some(&admin), Some(json!({"status": status})));
        assert_eq!(suspend("Suspended").await.status, StatusCode::OK);
        revocations.poll(&fetch, &feed, &watcher).await.unwrap();
        assert_eq!(verifier.verify(&q_token).await.unwrap_err(), Rejection::Revoked, "{store}");
        assert_eq!(suspend("Active").await.status, StatusCode::OK);
        revocations.poll(&fetch, &feed, &watcher).await.unwrap();
        assert!(verifier.verify(&q_token).await.is_ok(), "{store}: reinstated");
        assert_eq!(revocations.poll(&fetch, &feed, &watcher).await.unwrap(), 0, "{store}: nothing read twice");

        // A leak report is a revocation too.
        let r = app.call(Method::POST, "/iam/credentials/revoke-leaked", None, Some(json!({"keys": [other_key]}))).await;
        assert_eq!(r.status, StatusCode::ACCEPTED);
        revocations.poll(&fetch, &feed, &watcher).await.unwrap();
        assert_eq!(verifier.verify(&other).await.unwrap_err(), Rejection::Revoked, "{store}");

        // The feed itself: its permission, its input, another organisation's view.
        let (_, reader, _) = holder_with_role(&app, &admin, &iam_testkit::unique("reader"), &["iam:api-keys:read"]).await;
        assert_eq!(app.call(Method::GET, "/iam/revocations", Some(&reader), None).await.status, StatusCode::FORBIDDEN, "{store}");
        for bad in ["cursor=%%%", "since=yesterday", "limit=5"] {
            let r = app.call(Method::GET, &format!("/iam/revocations?{bad}"), Some(&admin), None).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{store}: {bad}: {}", r.raw);
        }
        let all = app.call(Method::GET, "/iam/revocations", Some(&admin), None).await;
        assert_eq!(all.header("cache-control"), Some("no-store"));
        let kinds: Vec<&str> = all.body["items"].as_array().unwrap().iter().map(|i| i["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["credentialRevoked", "principalStatusChanged", "principalStatusChanged", "credentialRevoked"], "{store}");
        let later = (chrono::Utc::now() + chrono::Duration::minutes(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let none = app.call(Method::GET, &format!("/iam/revocations?since={later}"), Some(&admin), None).await;
        assert_eq!(none.body["items"], json!([]), "{store}");
        let globex = app.token(&app.globex_key).await;
        let theirs = app.call(Method::GET, "/iam/revocations", Some(&globex), None).await;
        assert_eq!(theirs.body["items"], json!([]), "{store}: another organisation sees none of acme's");
    }
}

/// Every item of `table`, for a stand-in point-in-time restore.
async fn scan(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Vec<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
    client.scan().table_name(table).consistent_read(true).send().await.unwrap().items().to_vec()
}

/// Puts `table` back to `snapshot`, as a restore to that point would (moto has no PITR).
async fn restore(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    keys: &[&str],
    snapshot: &[std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>],
) {
    for item in scan(client, table).await {
        let key = keys.iter().map(|k| ((*k).to_owned(), item[*k].clone())).collect();
        client.delete_item().table_name(table).set_key(Some(key)).send().await.unwrap();
    }
    for item in snapshot {
        client.put_item().table_name(table).set_item(Some(item.clone())).send().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_replay_applies_again_what_the_trail_recorded_after_the_restore_point() {
    let (store, tables) = iam_testkit::fresh_store_with_tables().await;
    let app = TestApp::with_state(iam_tests::state_with(store.clone()).await).await;
    let admin = app.admin().await;
    let p = app.create_principal(&admin, "integration").await;
    app.assign(&admin, &p, "iam-viewer").await;
    let (key_id, key) = app.issue(&admin, &p).await;
    let q = app.create_principal(&admin, "batch").await;
    let (_, q_key) = app.issue(&admin, &q).await;

    let client = aws_sdk_dynamodb::Client::new(&iam_testkit::sdk_config().await);
    let principals = scan(&client, &tables.principals).await;
    let credentials = scan(&client, &tables.credentials).await;
    let restore_point = chrono::Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;

    assert_eq!(
        app.call(Method::POST, &format!("/iam/api-keys/{p}/credentials/{key_id}/revoke"), Some(&admin), None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.call(Method::PATCH, &format!("/iam/api-keys/{q}"), Some(&admin), Some(json!({"status": "Suspended"}))).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.call(Method::DELETE, &format!("/iam/api-keys/{p}/role-assignments/iam-viewer"), Some(&admin), None).await.status,
        StatusCode::NO_CONTENT
    );

    // The restore brings all three back to life; the audit table is not restored with them.
    restore(&client, &tables.principals, &["pk", "sk"], &principals).await;
    restore(&client, &tables.credentials, &["keyId"], &credentials).await;
    assert_eq!(app.exchange_json(json!({"apiKey": key})).await.status, StatusCode::OK, "the restore revived the revoked key");
    assert_eq!(app.exchange_json(json!({"apiKey": q_key})).await.status, StatusCode::OK, "and the suspended principal");

    let acme = iam_shared::ids::OrgId::parse("acme").unwrap();
    let report = iam_shared::revocations::replay_onto_restored_tables(store.as_ref(), &acme, restore_point).await.unwrap();
    assert_eq!(report.applied, 3, "{report:?}");
    assert_eq!(app.exchange_json(json!({"apiKey": key})).await.status, StatusCode::BAD_REQUEST, "revoked again");
    assert_eq!(app.exchange_json(json!({"apiKey": q_key})).await.status, StatusCode::BAD_REQUEST, "suspended again");
    let roles = app.call(Method::GET, &format!("/iam/api-keys/{p}/role-assignments"), Some(&admin), None).await;
    assert_eq!(roles.body["items"], json!([]), "unassigned again");

    let again = iam_shared::revocations::replay_onto_restored_tables(store.as_ref(), &acme, restore_point).await.unwrap();
    assert_eq!(again.applied, 0, "idempotent: {again:?}");
    let replayed = app.call(Method::GET, "/iam/audit-events?actor=system:restore-replay", Some(&admin), None).await;
    assert_eq!(replayed.body["items"].as_array().unwrap().len(), 3, "each replayed change is in the trail: {}", replayed.raw);
}
