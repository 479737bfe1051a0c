//! Issue 10's reproductions, each refused, on every store: nobody acts on or hands out more
//! than they hold, nobody extends themselves, and the organisation keeps a usable administrator.

use axum::http::{Method, StatusCode};
use iam_tests::{MANAGEMENT_AUDIENCE, TestApp};
use serde_json::json;

/// A principal holding exactly `permissions` (through an organisation role the administrator
/// defines), with a management token.
async fn holder_of(app: &TestApp, admin: &str, name: &str, permissions: &[&str]) -> (String, String) {
    let (me, token, _) = holder_with_role(app, admin, name, permissions).await;
    (me, token)
}

/// As [`holder_of`], also answering the role's id.
pub(crate) async fn holder_with_role(app: &TestApp, admin: &str, name: &str, permissions: &[&str]) -> (String, String, String) {
    let role = app
        .call(
            Method::POST,
            "/iam/roles",
            Some(admin),
            Some(json!({"name": name, "permissions": permissions, "principalTypes": ["ApiKey"]})),
        )
        .await;
    assert_eq!(role.status, StatusCode::CREATED, "{}", role.raw);
    let me = app.create_principal(admin, name).await;
    app.assign(admin, &me, role.str("id")).await;
    let (_, key) = app.issue(admin, &me).await;
    (me, app.token(&key).await, role.str("id").to_owned())
}

async fn bootstrap_admin_id(app: &TestApp, admin: &str) -> String {
    let r = app.call(Method::GET, "/iam/api-keys", Some(admin), None).await;
    let items = r.body["items"].as_array().unwrap();
    items.iter().find(|p| p["createdBy"] == "system:bootstrap").expect("the bootstrap admin")["id"].as_str().unwrap().to_owned()
}

fn forbidden(r: &iam_tests::Response, rule: &str) {
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.raw);
    assert!(r.str("detail").contains(rule), "detail should name the rule '{rule}': {}", r.raw);
}

#[tokio::test]
async fn a_credentials_writer_cannot_take_over_an_administrator() {
    for (store, app) in TestApp::on_every_store().await {
        let admin = app.admin().await;
        let root = bootstrap_admin_id(&app, &admin).await;
        let (me, token) = holder_of(&app, &admin, "key-writer", &["iam:credentials:write", "iam:api-keys:read"]).await;
        // Its own keys are its own to manage…
        let own = app.call(Method::POST, &format!("/iam/api-keys/{me}/credentials"), Some(&token), Some(json!({"name": "second"}))).await;
        assert_eq!(own.status, StatusCode::CREATED, "{store}: {}", own.raw);
        // …but a key for the administrator would be the administrator's power.
        let takeover =
            app.call(Method::POST, &format!("/iam/api-keys/{root}/credentials"), Some(&token), Some(json!({"name": "mine now"}))).await;
        forbidden(&takeover, "beyond your authority");
        let admin_key = app.acme_key.split_once('.').unwrap().0.trim_start_matches("ik_").to_owned();
        let revoke = app.call(Method::POST, &format!("/iam/api-keys/{root}/credentials/{admin_key}/revoke"), Some(&token), None).await;
        forbidden(&revoke, "beyond your authority");
        // A rotation shows a new key: the same takeover.
        let rotate = app.call(Method::POST, &format!("/iam/api-keys/{root}/credentials/{admin_key}/rotate"), Some(&token), None).await;
        forbidden(&rotate, "beyond your authority");
        let listed = app.call(Method::GET, &format!("/iam/api-keys/{root}/credentials"), Some(&admin), None).await;
        assert_eq!(listed.body["items"].as_array().unwrap().len(), 1, "{store}: nothing was issued or revoked");
    }
}

#[tokio::test]
async fn partial_writers_cannot_lock_the_administrators_out() {
    for (store, app) in TestApp::on_every_store().await {
        let admin = app.admin().await;
        let root = bootstrap_admin_id(&app, &admin).await;
        let (_, assigner) = holder_of(&app, &admin, "assigner", &["iam:role-assignments:write"]).await;
        let r = app.call(Method::DELETE, &format!("/iam/api-keys/{root}/role-assignments/iam-admin"), Some(&assigner), None).await;
        forbidden(&r, "beyond your authority");
        let (_, writer) = holder_of(&app, &admin, "writer", &["iam:api-keys:write"]).await;
        for status in ["Suspended", "Revoked"] {
            let r = app.call(Method::PATCH, &format!("/iam/api-keys/{root}"), Some(&writer), Some(json!({"status": status}))).await;
            forbidden(&r, "beyond your authority");
        }
        let still = app.call(Method::GET, "/iam/api-keys", Some(&admin), None).await;
        assert_eq!(still.status, StatusCode::OK, "{store}: the administrator still manages");
    }
}

#[tokio::test]
async fn the_last_usable_administrator_cannot_be_removed() {
    for (store, app) in TestApp::on_every_store().await {
        let admin = app.admin().await;
        let root = bootstrap_admin_id(&app, &admin).await;
        let admin_key = app.acme_key.split_once('.').unwrap().0.trim_start_matches("ik_").to_owned();
        let rule = "without a usable administrator";
        let r = app.call(Method::POST, &format!("/iam/api-keys/{root}/credentials/{admin_key}/revoke"), Some(&admin), None).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{store}: {}", r.raw);
        assert!(r.str("detail").contains(rule), "{}", r.raw);
        let r = app.call(Method::DELETE, &format!("/iam/api-keys/{root}/role-assignments/iam-admin"), Some(&admin), None).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{store}: {}", r.raw);

        // A second administrator may remove the first; the second then cannot remove itself.
        let second = app.create_principal(&admin, "second admin").await;
        app.assign(&admin, &second, "iam-admin").await;
        let (second_key, key) = app.issue(&admin, &second).await;
        let second_token = app.token(&key).await;
        let r = app.call(Method::PATCH, &format!("/iam/api-keys/{root}"), Some(&second_token), Some(json!({"status": "Suspended"}))).await;
        assert_eq!(r.status, StatusCode::OK, "{store}: {}", r.raw);
        let r = app.call(Method::POST, &format!("/iam/api-keys/{second}/credentials/{second_key}/revoke"), Some(&second_token), None).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{store}: {}", r.raw);
        let r = app.call(Method::DELETE, &format!("/iam/api-keys/{second}/role-assignments/iam-admin"), Some(&second_token), None).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{store}: {}", r.raw);
        // With a second key of its own, it may revoke the first.
        let (_, spare) = app.issue(&second_token, &second).await;
        let r = app.call(Method::POST, &format!("/iam/api-keys/{second}/credentials/{second_key}/revoke"), Some(&second_token), None).await;
        assert_eq!(r.status, StatusCode::OK, "{store}: {}", r.raw);
        let spare_token = app.token(&spare).await;
        assert_eq!(app.call(Method::GET, "/iam/api-keys", Some(&spare_token), None).await.status, StatusCode::OK);
    }
}

#[tokio::test]
async fn nobody_grants_what_they_do_not_hold() {
    for (store, app) in TestApp::on_every_store().await {
        let admin = app.admin().await;
        let (me, token) = holder_of(&app, &admin, "role-maker", &["iam:roles:write", "iam:role-assignments:write"]).await;
        let r = app
            .call(
                Method::POST,
                "/iam/roles",
                Some(&token),
                Some(json!({"name": "billing", "permissions": ["billing:admin", "payments:refund:any"], "principalTypes": ["ApiKey"]})),
            )
            .await;
        forbidden(&r, "granting 'billing:admin'");
        let r = app.call(Method::PUT, &format!("/iam/api-keys/{me}/role-assignments/device-provisioner"), Some(&token), None).await;
        forbidden(&r, "never grants itself");
        // An administrator may name new downstream permissions.
        let r = app
            .call(
                Method::POST,
                "/iam/roles",
                Some(&admin),
                Some(json!({"name": "billing", "permissions": ["billing:admin"], "principalTypes": ["ApiKey"]})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{store}: {}", r.raw);
    }
}

#[tokio::test]
async fn nobody_extends_or_reactivates_themselves() {
    for (store, app) in TestApp::on_every_store().await {
        let admin = app.admin().await;
        let (me, token) = holder_of(&app, &admin, "self-writer", &["iam:api-keys:write"]).await;
        let r =
            app.call(Method::PATCH, &format!("/iam/api-keys/{me}"), Some(&admin), Some(json!({"expiresAt": "2090-01-01T00:00:00Z"}))).await;
        assert_eq!(r.status, StatusCode::OK, "{store}: {}", r.raw);
        let r = app.call(Method::PATCH, &format!("/iam/api-keys/{me}"), Some(&token), Some(json!({"expiresAt": null}))).await;
        forbidden(&r, "its own status or expiry");
        let r = app.call(Method::PATCH, &format!("/iam/api-keys/{me}"), Some(&token), Some(json!({"displayName": "renamed"}))).await;
        assert_eq!(r.status, StatusCode::OK, "{store}: renaming itself is harmless: {}", r.raw);
        // A suspended administrator is beyond a writer's authority to re-activate.
        let second = app.create_principal(&admin, "suspended admin").await;
        app.assign(&admin, &second, "iam-admin").await;
        let r = app.call(Method::PATCH, &format!("/iam/api-keys/{second}"), Some(&admin), Some(json!({"status": "Suspended"}))).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
        let r = app.call(Method::PATCH, &format!("/iam/api-keys/{second}"), Some(&token), Some(json!({"status": "Active"}))).await;
        forbidden(&r, "beyond your authority");
    }
}

#[tokio::test]
async fn management_accepts_only_management_tokens_and_only_they_carry_iam_permissions() {
    let app = TestApp::new().await;
    let downstream = app.exchange_json(json!({"apiKey": app.acme_key})).await;
    assert_eq!(downstream.status, StatusCode::OK, "{}", downstream.raw);
    assert_eq!(downstream.str("scope"), "", "the bootstrap admin's iam: permissions stay out of a downstream token");
    let replayed = app.call(Method::GET, "/iam/api-keys", Some(downstream.str("access_token")), None).await;
    assert_eq!(replayed.status, StatusCode::UNAUTHORIZED, "a downstream token is never a management token: {}", replayed.raw);
    let asked = app.exchange_json(json!({"apiKey": app.acme_key, "scope": "iam:api-keys:read"})).await;
    assert_eq!(asked.status, StatusCode::BAD_REQUEST, "{}", asked.raw);
    assert_eq!(asked.str("error"), "invalid_scope");
    let management = app.exchange_json(json!({"apiKey": app.acme_key, "audience": MANAGEMENT_AUDIENCE})).await;
    assert!(management.str("scope").contains("iam:api-keys:write"), "{}", management.raw);
    assert_eq!(app.call(Method::GET, "/iam/api-keys", Some(management.str("access_token")), None).await.status, StatusCode::OK);
}

#[tokio::test]
async fn the_principal_cap_names_its_limit() {
    let mut state = iam_tests::state_with(std::sync::Arc::new(iam_shared::store::EmbeddedStore::in_memory().unwrap())).await;
    let limited = iam_shared::service::Limits { max_principals_per_org: 3, ..Default::default() };
    let iam = std::sync::Arc::get_mut(&mut state).expect("one owner");
    iam.limits = limited;
    let app = TestApp::with_state(state).await;
    let admin = app.admin().await;
    app.create_principal(&admin, "two").await;
    app.create_principal(&admin, "three").await;
    let r = app.call(Method::POST, "/iam/api-keys", Some(&admin), Some(json!({"displayName": "four"}))).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.raw);
    assert!(r.str("detail").contains("at most 3 principals"), "{}", r.raw);
}

/// `allowedActions` on a principal says what its writes would answer, in the same words.
#[tokio::test]
async fn allowed_actions_say_what_the_writes_would_answer() {
    for (store, app) in TestApp::on_every_store().await {
        let admin = app.admin().await;
        let root = bootstrap_admin_id(&app, &admin).await;
        let (me, token) = holder_of(&app, &admin, "key-writer", &["iam:credentials:write", "iam:api-keys:read"]).await;
        let allowed = |body: &serde_json::Value, action: &str| body["allowedActions"][action].clone();

        let on_root = app.call(Method::GET, &format!("/iam/api-keys/{root}"), Some(&token), None).await;
        assert_eq!(on_root.status, StatusCode::OK, "{store}: {}", on_root.raw);
        assert_eq!(on_root.body["activeCredentials"], 1, "{store}");
        let issue = allowed(&on_root.body, "issueCredential");
        assert_eq!(issue["allowed"], false, "{store}: {issue}");
        let takeover =
            app.call(Method::POST, &format!("/iam/api-keys/{root}/credentials"), Some(&token), Some(json!({"name": "mine now"}))).await;
        assert_eq!(takeover.str("detail"), issue["reason"].as_str().unwrap(), "{store}: the refusal, in the write's words");
        let rename = allowed(&on_root.body, "rename");
        let write = app.call(Method::PATCH, &format!("/iam/api-keys/{root}"), Some(&token), Some(json!({"displayName": "x"}))).await;
        assert_eq!(write.status, StatusCode::FORBIDDEN, "{store}");
        assert_eq!(write.str("detail"), rename["reason"].as_str().unwrap(), "{store}: the missing permission, named");

        let on_self = app.call(Method::GET, &format!("/iam/api-keys/{me}"), Some(&token), None).await;
        assert_eq!(allowed(&on_self.body, "issueCredential"), json!({"allowed": true}), "{store}");
        assert_eq!(allowed(&on_self.body, "revokeCredential"), json!({"allowed": true}), "{store}");
        let own = app.call(Method::POST, &format!("/iam/api-keys/{me}/credentials"), Some(&token), Some(json!({"name": "second"}))).await;
        assert_eq!(own.status, StatusCode::CREATED, "{store}: allowed, and so it is: {}", own.raw);
        assert_eq!(allowed(&on_self.body, "assignRole")["allowed"], false, "{store}");

        // A writer of principals may rename itself but not change its own standing.
        let (writer, writer_token) = holder_of(&app, &admin, "self-writer", &["iam:api-keys:write", "iam:api-keys:read"]).await;
        let on_writer = app.call(Method::GET, &format!("/iam/api-keys/{writer}"), Some(&writer_token), None).await;
        assert_eq!(allowed(&on_writer.body, "rename"), json!({"allowed": true}), "{store}");
        let expiry = allowed(&on_writer.body, "changeExpiry");
        let r = app.call(Method::PATCH, &format!("/iam/api-keys/{writer}"), Some(&writer_token), Some(json!({"expiresAt": null}))).await;
        assert_eq!(r.str("detail"), expiry["reason"].as_str().unwrap(), "{store}");

        // Revoked is terminal: nothing more may change it.
        let gone = app.create_principal(&admin, "gone").await;
        let r = app.call(Method::PATCH, &format!("/iam/api-keys/{gone}"), Some(&admin), Some(json!({"status": "Revoked"}))).await;
        assert_eq!(r.status, StatusCode::OK, "{store}: {}", r.raw);
        let on_gone = app.call(Method::GET, &format!("/iam/api-keys/{gone}"), Some(&admin), None).await;
        for action in ["rename", "changeStatus", "issueCredential", "assignRole"] {
            assert_eq!(allowed(&on_gone.body, action)["allowed"], false, "{store}: {action} on a revoked principal");
        }
        let r = app.call(Method::POST, &format!("/iam/api-keys/{gone}/credentials"), Some(&admin), Some(json!({"name": "late"}))).await;
        assert_eq!(r.str("detail"), allowed(&on_gone.body, "issueCredential")["reason"].as_str().unwrap(), "{store}");
    }
}
