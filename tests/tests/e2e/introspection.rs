//! Token introspection (RFC 7662), on every store: a downstream API holding
//! `iam:tokens:introspect` learns within one call that a token's key was revoked or its
//! principal suspended, long before the token expires; tokens it may not ask about, and
//! anything that is not a valid token, are the same `{"active": false}`.

use axum::http::{Method, StatusCode};
use iam_tests::{MANAGEMENT_AUDIENCE, OTHER_AUDIENCE, TestApp};
use serde_json::json;

#[tokio::test]
async fn introspection_reports_revocation_and_suspension_at_once() {
    for (store, app) in TestApp::on_every_store().await {
        let admin = app.admin().await;
        // The downstream API: a key with the token-introspector role.
        let api = app.create_principal(&admin, "orders API").await;
        app.assign(&admin, &api, "token-introspector").await;
        let (_, api_key) = app.issue(&admin, &api).await;
        let checker = app.token(&api_key).await;

        // An integration's downstream token.
        let integration = app.create_principal(&admin, "integration").await;
        app.assign(&admin, &integration, "device-provisioner").await;
        let (key_id, key) = app.issue(&admin, &integration).await;
        let token = app.downstream_token(&key).await;

        let r = app.introspect(Some(&checker), &token).await;
        assert_eq!(r.status, StatusCode::OK, "{store}: {}", r.raw);
        assert_eq!(r.header("cache-control"), Some("no-store"));
        assert_eq!(r.body["active"], true, "{store}: {}", r.raw);
        assert_eq!(r.body["sub"], integration.as_str());
        assert_eq!(r.body["scope"], "iot:devices:provision");
        assert_eq!(r.body["roles"], json!(["device-provisioner"]));
        assert_eq!(r.body["client_id"], format!("ik_{key_id}"));
        assert_eq!(r.body["token_type"], "Bearer");
        assert!(!r.raw.contains(&token), "the token is never echoed");

        // Suspended: inactive at once; active again once reinstated.
        let status = |s: &str| json!({"status": s});
        let path = format!("/iam/api-keys/{integration}");
        assert!(app.call(Method::PATCH, &path, Some(&admin), Some(status("Suspended"))).await.status.is_success());
        assert_eq!(app.introspect(Some(&checker), &token).await.body, json!({"active": false}), "{store}");
        assert!(app.call(Method::PATCH, &path, Some(&admin), Some(status("Active"))).await.status.is_success());
        assert_eq!(app.introspect(Some(&checker), &token).await.body["active"], true, "{store}");

        // A role removed narrows the scope at once.
        let unassigned = app.call(Method::DELETE, &format!("{path}/role-assignments/device-provisioner"), Some(&admin), None).await;
        assert!(unassigned.status.is_success(), "{}", unassigned.raw);
        let narrowed = app.introspect(Some(&checker), &token).await;
        assert_eq!((narrowed.body["scope"].clone(), narrowed.body["roles"].clone()), (json!(""), json!([])), "{store}: {}", narrowed.raw);

        // Its audience taken off the credential's list: inactive; put back: active.
        let credential = format!("{path}/credentials/{key_id}");
        let restrict = |audiences: serde_json::Value| json!({"restrictions": {"audiences": audiences}});
        let r = app.call(Method::PATCH, &credential, Some(&admin), Some(restrict(json!([OTHER_AUDIENCE])))).await;
        assert!(r.status.is_success(), "{}", r.raw);
        assert_eq!(app.introspect(Some(&checker), &token).await.body, json!({"active": false}), "{store}");
        let r = app.call(Method::PATCH, &credential, Some(&admin), Some(json!({"restrictions": {}}))).await;
        assert!(r.status.is_success(), "{}", r.raw);
        assert_eq!(app.introspect(Some(&checker), &token).await.body["active"], true, "{store}");

        // Revoked: inactive, though the token has not expired.
        let revoked = app.call(Method::POST, &format!("{path}/credentials/{key_id}/revoke"), Some(&admin), None).await;
        assert!(revoked.status.is_success(), "{}", revoked.raw);
        assert_eq!(app.introspect(Some(&checker), &token).await.body, json!({"active": false}), "{store}");

        // Garbage, a token of another organisation, a tampered one: all the same answer.
        let globex = app.token(&app.globex_key).await;
        let mut tampered = app.token(&api_key).await;
        tampered.push('x');
        for other in ["not a token", globex.as_str(), tampered.as_str()] {
            assert_eq!(app.introspect(Some(&checker), other).await.body, json!({"active": false}), "{store}: {other:.20}");
        }
        // A management-audience token of the caller's organisation is active too.
        let management = app.introspect(Some(&checker), &admin).await;
        assert_eq!((management.body["active"].clone(), management.body["aud"].clone()), (json!(true), json!(MANAGEMENT_AUDIENCE)));

        // Without the permission, or without a token: refused; a bad body is a 400.
        let viewer = app.create_principal(&admin, "viewer").await;
        app.assign(&admin, &viewer, "iam-viewer").await;
        let (_, viewer_key) = app.issue(&admin, &viewer).await;
        let viewer = app.token(&viewer_key).await;
        assert_eq!(app.introspect(Some(&viewer), &token).await.status, StatusCode::FORBIDDEN, "{store}");
        assert_eq!(app.introspect(None, &token).await.status, StatusCode::UNAUTHORIZED, "{store}");
        assert_eq!(app.introspect(Some(&checker), "").await.status, StatusCode::BAD_REQUEST, "{store}");
        let json_body = app.call(Method::POST, "/iam/auth/introspect", Some(&checker), Some(json!({"token": token}))).await;
        assert_eq!(json_body.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{store}: {}", json_body.raw);
    }
}
