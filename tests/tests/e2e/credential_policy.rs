//! The organisation's credential policy, on every store: each rule at issue, rotation, change
//! and exchange; the default changes nothing; setting it needs its own permission, refuses bad
//! values without writing, and never leaves the organisation without an administrator whose
//! key still works.

use axum::http::{Method, StatusCode};
use chrono::{DateTime, Duration, Utc};
use iam_shared::api_key::ApiKey;
use iam_shared::ids::{KeyId, OrgId, PrincipalId};
use iam_shared::model::{Actor, Credential, now};
use iam_tests::TestApp;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

async fn put_policy(app: &TestApp, token: &str, policy: Value) -> iam_tests::Response {
    app.call(Method::PUT, "/iam/policy", Some(token), Some(policy)).await
}

/// A key of principal `p` created `days_ago`, written straight to the store (as a key issued
/// before a policy existed would be).
async fn old_key(app: &TestApp, org: &str, p: &str, days_ago: i64) -> String {
    let principal = app.state.store.get_principal(&OrgId::parse(org).unwrap(), &PrincipalId::parse(p).unwrap()).await.unwrap().unwrap();
    let key = ApiKey::generate();
    let hash = app.state.hasher.hash(key.secret()).await.unwrap();
    let created = now() - Duration::days(days_ago);
    let credential = Credential::new(&principal, key.key_id().clone(), "old", None, hash, Actor::system("test"), created)
        .unwrap()
        .with_secret_check(iam_shared::hashing::secret_check(key.secret()));
    app.state.store.insert_credential(&credential, now(), None, &iam_shared::authority::Guard::NONE).await.unwrap();
    key.to_secret_string().expose_secret().to_owned()
}

fn expiry(r: &iam_tests::Response, path: &str) -> Option<DateTime<Utc>> {
    r.body.pointer(path).and_then(Value::as_str).map(|t| t.parse().unwrap())
}

#[tokio::test]
async fn the_default_policy_limits_nothing_and_setting_one_is_checked() {
    for (store, app) in TestApp::on_every_store().await {
        let admin = app.admin().await;
        let r = app.call(Method::GET, "/iam/policy", Some(&admin), None).await;
        assert_eq!(r.status, StatusCode::OK, "{store}: {}", r.raw);
        assert_eq!(
            r.body,
            json!({"maxLifetimeDays": null, "expiryRequired": false, "maxIdleDays": null, "allowCredentialCreation": true, "updatedAt": null, "updatedBy": null}),
            "{store}"
        );
        // A viewer reads it but may not set it.
        let viewer = app.create_principal(&admin, "viewer").await;
        app.assign(&admin, &viewer, "iam-viewer").await;
        let (_, viewer_key) = app.issue(&admin, &viewer).await;
        let viewer_token = app.token(&viewer_key).await;
        assert_eq!(app.call(Method::GET, "/iam/policy", Some(&viewer_token), None).await.status, StatusCode::OK, "{store}");
        assert_eq!(put_policy(&app, &viewer_token, json!({"maxIdleDays": 30})).await.status, StatusCode::FORBIDDEN, "{store}");
        for bad in [
            json!({"maxIdleDays": 0}),
            json!({"maxLifetimeDays": 3651}),
            json!({"maxIdleDays": "30"}),
            json!({"other": true}),
            json!([null]),
            json!([30]),
            json!({"expiryRequired": null}),
            json!({"allowCredentialCreation": null}),
        ] {
            let r = put_policy(&app, &admin, bad.clone()).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{store}: {bad}: {}", r.raw);
        }
        let r = app.call(Method::GET, "/iam/policy", Some(&admin), None).await;
        assert_eq!(r.body["updatedAt"], json!(null), "{store}: nothing was written");

        let r = put_policy(&app, &admin, json!({"maxIdleDays": 90, "expiryRequired": true})).await;
        assert_eq!(r.status, StatusCode::OK, "{store}: {}", r.raw);
        assert_eq!(r.body["maxIdleDays"], 90);
        assert_eq!(r.body["allowCredentialCreation"], true, "{store}: left out, the default");
        assert!(r.body["updatedBy"].as_str().unwrap().starts_with("akp_"), "{}", r.raw);
        let other_org = app.token(&app.globex_key).await;
        let r = app.call(Method::GET, "/iam/policy", Some(&other_org), None).await;
        assert_eq!(r.body["maxIdleDays"], json!(null), "{store}: another organisation's policy is its own");
    }
}

#[tokio::test]
async fn each_rule_holds_at_issue_rotation_and_change() {
    for (store, app) in TestApp::on_every_store().await {
        let admin = app.admin().await;
        let p = app.create_principal(&admin, "governed").await;
        let (forever_id, _) = app.issue(&admin, &p).await;
        let issue = |body: Value| {
            let (app, admin, uri) = (&app, admin.clone(), format!("/iam/api-keys/{p}/credentials"));
            async move { app.call(Method::POST, &uri, Some(&admin), Some(body)).await }
        };

        // Maximum lifetime: the maximum when none is asked, refused beyond it.
        assert_eq!(put_policy(&app, &admin, json!({"maxLifetimeDays": 30})).await.status, StatusCode::OK);
        let r = issue(json!({"name": "capped"})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{store}: {}", r.raw);
        let given = expiry(&r, "/credential/expiresAt").expect("an expiry was given");
        assert!((given - (now() + Duration::days(30))).num_seconds().abs() < 60, "{store}: {given}");
        let capped_id = r.body["credential"]["keyId"].as_str().unwrap().to_owned();
        let r = issue(json!({"name": "too long", "expiresAt": (now() + Duration::days(31)).to_rfc3339()})).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{store}: {}", r.raw);
        assert!(r.raw.contains("maximum credential lifetime of 30 days"), "{}", r.raw);
        // A change may not lift or extend beyond creation + maximum; renaming an older key is fine.
        let patch = |key_id: &str, body: Value| {
            let (app, admin, uri) = (&app, admin.clone(), format!("/iam/api-keys/{p}/credentials/{key_id}"));
            async move { app.call(Method::PATCH, &uri, Some(&admin), Some(body)).await }
        };
        assert_eq!(patch(&capped_id, json!({"expiresAt": null})).await.status, StatusCode::BAD_REQUEST, "{store}");
        let beyond = (now() + Duration::days(40)).to_rfc3339();
        assert_eq!(patch(&capped_id, json!({"expiresAt": beyond})).await.status, StatusCode::BAD_REQUEST, "{store}");
        assert_eq!(patch(&forever_id, json!({"name": "renamed"})).await.status, StatusCode::OK, "{store}");
        // Rotation: the successor is capped to the maximum.
        let r = app.call(Method::POST, &format!("/iam/api-keys/{p}/credentials/{forever_id}/rotate"), Some(&admin), Some(json!({}))).await;
        assert_eq!(r.status, StatusCode::CREATED, "{store}: {}", r.raw);
        let successor = expiry(&r, "/credential/expiresAt").expect("the successor has an expiry");
        assert!(successor <= now() + Duration::days(30), "{store}: {successor}");

        // Expiry required, with no maximum to give one.
        assert_eq!(put_policy(&app, &admin, json!({"expiryRequired": true})).await.status, StatusCode::OK);
        let r = issue(json!({"name": "no expiry"})).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{store}: {}", r.raw);
        assert!(r.raw.contains("requires expiresAt"), "{}", r.raw);
        assert_eq!(
            issue(json!({"name": "dated", "expiresAt": (now() + Duration::days(400)).to_rfc3339()})).await.status,
            StatusCode::CREATED
        );
        let (legacy_id, _) = {
            put_policy(&app, &admin, json!({})).await;
            let ids = app.issue(&admin, &p).await;
            put_policy(&app, &admin, json!({"expiryRequired": true})).await;
            ids
        };
        let r = app.call(Method::POST, &format!("/iam/api-keys/{p}/credentials/{legacy_id}/rotate"), Some(&admin), Some(json!({}))).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{store}: a key without an expiry cannot rotate into one: {}", r.raw);

        // Creation off: neither issue nor rotation; revocation still works.
        assert_eq!(put_policy(&app, &admin, json!({"allowCredentialCreation": false})).await.status, StatusCode::OK);
        let r = issue(json!({"name": "refused"})).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{store}: {}", r.raw);
        assert!(r.raw.contains("does not allow creating credentials"), "{}", r.raw);
        let r = app.call(Method::POST, &format!("/iam/api-keys/{p}/credentials/{capped_id}/rotate"), Some(&admin), Some(json!({}))).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{store}: {}", r.raw);
        let r = app.call(Method::POST, &format!("/iam/api-keys/{p}/credentials/{capped_id}/revoke"), Some(&admin), None).await;
        assert_eq!(r.status, StatusCode::OK, "{store}: {}", r.raw);
        assert_eq!(put_policy(&app, &admin, json!({})).await.status, StatusCode::OK);
        assert_eq!(issue(json!({"name": "allowed again"})).await.status, StatusCode::CREATED, "{store}");
    }
}

#[tokio::test]
async fn idle_and_old_keys_refuse_exchange_with_invalid_grant() {
    for (store, app) in TestApp::on_every_store().await {
        let admin = app.admin().await;
        let p = app.create_principal(&admin, "sleeper").await;
        let old = old_key(&app, "acme", &p, 40).await;
        let (_, fresh) = app.issue(&admin, &p).await;
        let exchange = |key: &str| {
            let (app, key) = (&app, key.to_owned());
            async move { app.exchange_json(json!({"apiKey": key})).await }
        };
        assert_eq!(exchange(&old).await.status, StatusCode::OK, "{store}: no policy, no limit");

        // Idle: the old key was just used, so only a never-used old key is idle.
        let never_used = old_key(&app, "acme", &p, 40).await;
        assert_eq!(put_policy(&app, &admin, json!({"maxIdleDays": 30})).await.status, StatusCode::OK);
        let r = exchange(&never_used).await;
        assert_eq!((r.status, r.str("error")), (StatusCode::BAD_REQUEST, "invalid_grant"), "{store}: {}", r.raw);
        assert!(r.str("error_description").contains("not been used for more than 30 days"), "{}", r.raw);
        assert_eq!(exchange(&old).await.status, StatusCode::OK, "{store}: used just now");
        let wrong = format!("{}.{}", never_used.split_once('.').unwrap().0, "1".repeat(50));
        assert_eq!(exchange(&wrong).await.status, StatusCode::UNAUTHORIZED, "{store}: the policy speaks only after the secret");

        // Too old: keys issued before the policy included, and the tokens they already got.
        let earlier = exchange(&old).await.str("access_token").to_owned();
        assert_eq!(app.introspect(Some(&admin), &earlier).await.body["active"], true, "{store}");
        assert_eq!(put_policy(&app, &admin, json!({"maxLifetimeDays": 35})).await.status, StatusCode::OK);
        assert_eq!(app.introspect(Some(&admin), &earlier).await.body, json!({"active": false}), "{store}: its token too");
        let r = exchange(&old).await;
        assert_eq!((r.status, r.str("error")), (StatusCode::BAD_REQUEST, "invalid_grant"), "{store}: {}", r.raw);
        assert!(r.str("error_description").contains("older than 35 days"), "{}", r.raw);
        assert_eq!(exchange(&fresh).await.status, StatusCode::OK, "{store}");
        assert_eq!(put_policy(&app, &admin, json!({})).await.status, StatusCode::OK);
        assert_eq!(exchange(&old).await.status, StatusCode::OK, "{store}: lifted at once in this process");
    }
}

/// A policy that would leave no administrator able to exchange its key is refused, as any
/// change that would lose the last administrator.
#[tokio::test]
async fn a_policy_never_locks_out_the_last_administrator() {
    for (store, app) in TestApp::on_every_store().await {
        let bootstrap_admin = app.token(&app.globex_key).await;
        let p = app.create_principal(&bootstrap_admin, "second admin").await;
        app.assign(&bootstrap_admin, &p, "iam-admin").await;
        let old = old_key(&app, "globex", &p, 40).await;
        let second = app.token(&old).await;
        // Revoke the bootstrap admin's only key: the second admin, with its 40-day-old key, is the last.
        let who = app.call(Method::GET, "/iam/whoami", Some(&bootstrap_admin), None).await;
        let (first, first_key) = (who.str("sub").to_owned(), KeyId::parse(who.str("client_id").trim_start_matches("ik_")).unwrap());
        let r = app.call(Method::POST, &format!("/iam/api-keys/{first}/credentials/{first_key}/revoke"), Some(&second), None).await;
        assert_eq!(r.status, StatusCode::OK, "{store}: {}", r.raw);

        let r = put_policy(&app, &second, json!({"maxLifetimeDays": 30})).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{store}: {}", r.raw);
        let r = app.call(Method::GET, "/iam/policy", Some(&second), None).await;
        assert_eq!(r.body["maxLifetimeDays"], json!(null), "{store}: nothing written");
        let r = put_policy(&app, &second, json!({"maxLifetimeDays": 60, "maxIdleDays": 1})).await;
        assert_eq!(r.status, StatusCode::OK, "{store}: the key was used just now and is 40 days old: {}", r.raw);
    }
}
