//! Every management route through the real router: happy paths and each failure.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use iam_tests::TestApp;
use serde_json::{Value, json};

#[tokio::test]
async fn principal_lifecycle() {
    let app = TestApp::new().await;
    let admin = app.admin().await;
    let r = app
        .call(
            Method::POST,
            "/iam/api-keys",
            Some(&admin),
            Some(json!({"displayName": " billing job ", "status": "Suspended", "expiresAt": "2099-01-01T00:00:00+02:00"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
    let id = r.str("id").to_owned();
    assert_eq!(r.header("location"), Some(format!("/iam/api-keys/{id}").as_str()));
    assert_eq!(r.str("displayName"), "billing job");
    assert_eq!(r.str("status"), "Suspended");
    assert_eq!(r.str("type"), "ApiKey");
    assert_eq!(r.str("orgId"), "acme");
    assert_eq!(r.str("expiresAt"), "2098-12-31T22:00:00Z", "normalised to UTC");
    assert_eq!(r.body["version"], 1);

    let got = app.call(Method::GET, &format!("/iam/api-keys/{id}"), Some(&admin), None).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.header("cache-control"), Some("no-store"), "one organisation's data, kept by no cache");
    let mut principal_only = got.body.clone();
    let extra = principal_only.as_object_mut().unwrap();
    assert_eq!(extra.remove("activeCredentials"), Some(json!(0)));
    let allowed = extra.remove("allowedActions").unwrap();
    assert_eq!(principal_only, r.body, "the principal as created, and what reading it adds");
    for action in ["rename", "changeStatus", "changeExpiry", "issueCredential", "revokeCredential", "assignRole", "unassignRole"] {
        assert_eq!(allowed[action], json!({"allowed": true}), "an administrator may {action}");
    }

    let patched = app
        .call(
            Method::PATCH,
            &format!("/iam/api-keys/{id}"),
            Some(&admin),
            Some(json!({"displayName": "billing", "status": "Active", "expiresAt": null})),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.raw);
    assert_eq!(patched.str("status"), "Active");
    assert_eq!(patched.body["version"], 2);
    assert!(patched.body.get("expiresAt").is_none(), "expiry cleared");

    let same = app.call(Method::PATCH, &format!("/iam/api-keys/{id}"), Some(&admin), Some(json!({}))).await;
    assert_eq!(same.body["version"], 2, "an empty patch changes nothing");

    let revoked = app.call(Method::PATCH, &format!("/iam/api-keys/{id}"), Some(&admin), Some(json!({"status": "Revoked"}))).await;
    assert_eq!(revoked.status, StatusCode::OK);
    let back = app.call(Method::PATCH, &format!("/iam/api-keys/{id}"), Some(&admin), Some(json!({"status": "Active"}))).await;
    assert_eq!(back.status, StatusCode::CONFLICT, "{}", back.raw);
    assert_eq!(back.header("content-type"), Some("application/problem+json"));
    assert!(back.str("detail").contains("terminal"));
    let rename = app.call(Method::PATCH, &format!("/iam/api-keys/{id}"), Some(&admin), Some(json!({"displayName": "x"}))).await;
    assert_eq!(rename.status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn bad_principal_input_is_a_clear_400_and_writes_nothing() {
    let app = TestApp::new().await;
    let admin = app.admin().await;
    let cases = [
        (json!({}), "displayName"),
        (json!({"displayName": ""}), "displayName"),
        (json!({"displayName": "x".repeat(129)}), "1-128"),
        (json!({"displayName": "a\u{0007}b"}), "control"),
        (json!({"displayName": 5}), "invalid type"),
        (json!({"displayName": "ok", "status": "Deleted"}), "unknown variant"),
        (json!({"displayName": "ok", "status": "Revoked"}), "Active or Suspended"),
        (json!({"displayName": "ok", "expiresAt": "tomorrow"}), "invalid"),
        (json!({"displayName": "ok", "expiresAt": "2001-01-01T00:00:00Z"}), "future"),
        (json!({"displayName": "ok", "owner": "me"}), "unknown field"),
        (json!([1, 2]), "must be a JSON object"),
        (json!(["ok"]), "must be a JSON object"),
    ];
    for (body, needle) in cases {
        let r = app.call(Method::POST, "/iam/api-keys", Some(&admin), Some(body.clone())).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.raw);
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
        assert!(r.str("detail").contains(needle), "{body}: {}", r.raw);
        assert_eq!(r.body["status"], 400);
    }
    let not_json = Request::post("/iam/api-keys")
        .header(header::AUTHORIZATION, format!("Bearer {admin}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{\"displayName\": "))
        .unwrap();
    assert_eq!(app.send(not_json).await.status, StatusCode::BAD_REQUEST);
    let wrong_type = Request::post("/iam/api-keys")
        .header(header::AUTHORIZATION, format!("Bearer {admin}"))
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from("displayName=x"))
        .unwrap();
    assert_eq!(app.send(wrong_type).await.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let huge = Request::post("/iam/api-keys")
        .header(header::AUTHORIZATION, format!("Bearer {admin}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(format!("{{\"displayName\": \"{}\"}}", "x".repeat(70 * 1024))))
        .unwrap();
    assert_eq!(app.send(huge).await.status, StatusCode::PAYLOAD_TOO_LARGE);
    let list = app.call(Method::GET, "/iam/api-keys", Some(&admin), None).await;
    assert_eq!(list.body["items"].as_array().unwrap().len(), 1, "only the bootstrap admin: {}", list.raw);

    let bad_id = app.call(Method::GET, "/iam/api-keys/not-an-id", Some(&admin), None).await;
    assert_eq!(bad_id.status, StatusCode::BAD_REQUEST);
    assert!(bad_id.str("detail").contains("principal id"));
}

#[tokio::test]
async fn authentication_and_permission_failures() {
    let app = TestApp::new().await;
    let none = app.call(Method::GET, "/iam/api-keys", None, None).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert!(none.header("www-authenticate").unwrap().starts_with("Bearer"));
    assert_eq!(none.header("content-type"), Some("application/problem+json"));
    for bad in ["garbage", "a.b.c", &"x".repeat(10_000)] {
        assert_eq!(app.call(Method::GET, "/iam/api-keys", Some(bad), None).await.status, StatusCode::UNAUTHORIZED);
    }
    let basic = Request::get("/iam/api-keys").header(header::AUTHORIZATION, "Basic Zm9vOmJhcg==").body(Body::empty()).unwrap();
    assert_eq!(app.send(basic).await.status, StatusCode::UNAUTHORIZED);

    // A token for another audience is not a management token.
    let narrowed = app.exchange_json(json!({"apiKey": app.acme_key, "audience": iam_tests::OTHER_AUDIENCE})).await;
    assert_eq!(narrowed.status, StatusCode::OK, "{}", narrowed.raw);
    let r = app.call(Method::GET, "/iam/api-keys", Some(narrowed.str("access_token")), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    let admin = app.admin().await;
    let viewer = app.create_principal(&admin, "viewer").await;
    app.assign(&admin, &viewer, "iam-viewer").await;
    let (_, viewer_key) = app.issue(&admin, &viewer).await;
    let viewer_token = app.token(&viewer_key).await;
    assert_eq!(app.call(Method::GET, "/iam/api-keys", Some(&viewer_token), None).await.status, StatusCode::OK);
    let forbidden = app.call(Method::POST, "/iam/api-keys", Some(&viewer_token), Some(json!({"displayName": "x"}))).await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN);
    assert!(forbidden.str("detail").contains("iam:api-keys:write"));

    // A scope narrowed at exchange time is what the token may do.
    let read_only =
        app.exchange_json(json!({"apiKey": app.acme_key, "scope": "iam:api-keys:read", "audience": iam_tests::MANAGEMENT_AUDIENCE})).await;
    let read_only = read_only.str("access_token").to_owned();
    assert_eq!(app.call(Method::GET, "/iam/api-keys", Some(&read_only), None).await.status, StatusCode::OK);
    assert_eq!(
        app.call(Method::POST, "/iam/api-keys", Some(&read_only), Some(json!({"displayName": "x"}))).await.status,
        StatusCode::FORBIDDEN
    );
}

/// Every management route: (method, path, the permission it needs, a valid body).
fn management_routes(p: &str, key_id: &str) -> Vec<(Method, String, &'static str, Option<Value>)> {
    let role = json!({"name": "x", "permissions": ["a:b"], "principalTypes": ["ApiKey"]});
    vec![
        (Method::POST, "/iam/api-keys".into(), "iam:api-keys:write", Some(json!({"displayName": "x"}))),
        (Method::GET, "/iam/api-keys".into(), "iam:api-keys:read", None),
        (Method::GET, format!("/iam/api-keys/{p}"), "iam:api-keys:read", None),
        (Method::PATCH, format!("/iam/api-keys/{p}"), "iam:api-keys:write", Some(json!({"displayName": "y"}))),
        (Method::POST, format!("/iam/api-keys/{p}/credentials"), "iam:credentials:write", Some(json!({"name": "x"}))),
        (Method::GET, format!("/iam/api-keys/{p}/credentials"), "iam:api-keys:read", None),
        (Method::POST, format!("/iam/api-keys/{p}/credentials/{key_id}/revoke"), "iam:credentials:write", None),
        (Method::GET, "/iam/roles".into(), "iam:api-keys:read", None),
        (Method::POST, "/iam/roles".into(), "iam:roles:write", Some(role)),
        (Method::GET, format!("/iam/api-keys/{p}/role-assignments"), "iam:api-keys:read", None),
        (Method::PUT, format!("/iam/api-keys/{p}/role-assignments/iam-viewer"), "iam:role-assignments:write", None),
        (Method::DELETE, format!("/iam/api-keys/{p}/role-assignments/iam-viewer"), "iam:role-assignments:write", None),
    ]
}

#[tokio::test]
async fn principal_without_roles_gets_a_token_and_403_everywhere() {
    let app = TestApp::new().await;
    let admin = app.admin().await;
    let p = app.create_principal(&admin, "bare").await;
    let (key_id, key) = app.issue(&admin, &p).await;
    let r = app.exchange_json(json!({"apiKey": key, "audience": iam_tests::MANAGEMENT_AUDIENCE})).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.str("scope"), "");
    let token = r.str("access_token").to_owned();
    let claims = jsonwebtoken::dangerous::insecure_decode::<Value>(&token).unwrap().claims;
    assert_eq!((claims["scope"].as_str(), claims["roles"].as_array().map(Vec::len)), (Some(""), Some(0)), "{claims}");
    for (method, uri, perm, body) in management_routes(&p, &key_id) {
        let r = app.call(method.clone(), &uri, Some(&token), body).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{method} {uri}: {}", r.raw);
        assert!(r.str("detail").contains(perm), "{method} {uri}: {}", r.raw);
    }
    // The token still says who it is.
    let whoami = app.call(Method::GET, "/iam/whoami", Some(&token), None).await;
    assert_eq!((whoami.status, whoami.str("sub")), (StatusCode::OK, p.as_str()), "{}", whoami.raw);
    let credentials = app.call(Method::GET, &format!("/iam/api-keys/{p}/credentials"), Some(&admin), None).await;
    assert_eq!(credentials.body["items"].as_array().unwrap().len(), 1, "the refused revoke changed nothing");
}

#[tokio::test]
async fn every_management_route_answers_401_without_a_valid_token() {
    let app = TestApp::new().await;
    let admin = app.admin().await;
    let p = app.create_principal(&admin, "target").await;
    let (key_id, _) = app.issue(&admin, &p).await;
    let mut routes = management_routes(&p, &key_id);
    routes.push((Method::GET, "/iam/whoami".into(), "", None));
    for (method, uri, _, body) in routes {
        for token in [None, Some("not-a-token")] {
            let r = app.call(method.clone(), &uri, token, body.clone()).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{method} {uri} with {token:?}: {}", r.raw);
            assert!(r.header("www-authenticate").is_some_and(|v| v.starts_with("Bearer")), "{method} {uri}");
            assert_eq!(r.header("content-type"), Some("application/problem+json"), "{method} {uri}");
        }
    }
    let list = app.call(Method::GET, "/iam/api-keys", Some(&admin), None).await;
    assert_eq!(list.body["items"].as_array().unwrap().len(), 2, "nothing was created: {}", list.raw);
}

#[tokio::test]
async fn revoking_or_suspending_an_admin_cuts_management_access_at_once() {
    let app = TestApp::new().await;
    let admin = app.admin().await;
    let second = app.create_principal(&admin, "second admin").await;
    app.assign(&admin, &second, "iam-admin").await;
    let (second_key_id, second_key) = app.issue(&admin, &second).await;
    let second_token = app.token(&second_key).await;
    assert_eq!(app.call(Method::GET, "/iam/api-keys", Some(&second_token), None).await.status, StatusCode::OK);

    let suspend = app.call(Method::PATCH, &format!("/iam/api-keys/{second}"), Some(&admin), Some(json!({"status": "Suspended"}))).await;
    assert_eq!(suspend.status, StatusCode::OK);
    assert_eq!(app.call(Method::GET, "/iam/api-keys", Some(&second_token), None).await.status, StatusCode::UNAUTHORIZED);
    app.call(Method::PATCH, &format!("/iam/api-keys/{second}"), Some(&admin), Some(json!({"status": "Active"}))).await;
    assert_eq!(app.call(Method::GET, "/iam/api-keys", Some(&second_token), None).await.status, StatusCode::OK);

    let revoke = format!("/iam/api-keys/{second}/credentials/{second_key_id}/revoke");
    assert_eq!(app.call(Method::POST, &revoke, Some(&admin), None).await.status, StatusCode::OK);
    assert_eq!(app.call(Method::GET, "/iam/api-keys", Some(&second_token), None).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn listing_paginates_and_validates() {
    let app = TestApp::new().await;
    let admin = app.admin().await;
    for i in 0..4 {
        app.create_principal(&admin, &format!("p{i}")).await;
    }
    let mut seen = Vec::new();
    let mut uri = "/iam/api-keys?limit=2".to_owned();
    loop {
        let r = app.call(Method::GET, &uri, Some(&admin), None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
        for item in r.body["items"].as_array().unwrap() {
            seen.push(item["id"].as_str().unwrap().to_owned());
        }
        match r.body["nextCursor"].as_str() {
            Some(c) => uri = format!("/iam/api-keys?limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5);
    seen.dedup();
    assert_eq!(seen.len(), 5);
    for bad in ["limit=0", "limit=101", "limit=abc", "cursor=nope", "limit=1&limit=2", "sort=name"] {
        let r = app.call(Method::GET, &format!("/iam/api-keys?{bad}"), Some(&admin), None).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.raw);
    }
}

#[tokio::test]
async fn objects_of_another_organisation_answer_404() {
    let app = TestApp::new().await;
    let acme = app.admin().await;
    let globex = app.token(&app.globex_key).await;
    let p = app.create_principal(&acme, "acme only").await;
    let (key_id, _) = app.issue(&acme, &p).await;
    let routes = [
        (Method::GET, format!("/iam/api-keys/{p}"), None),
        (Method::PATCH, format!("/iam/api-keys/{p}"), Some(json!({"status": "Suspended"}))),
        (Method::POST, format!("/iam/api-keys/{p}/credentials"), Some(json!({"name": "x"}))),
        (Method::GET, format!("/iam/api-keys/{p}/credentials"), None),
        (Method::POST, format!("/iam/api-keys/{p}/credentials/{key_id}/revoke"), None),
        (Method::GET, format!("/iam/api-keys/{p}/role-assignments"), None),
        (Method::PUT, format!("/iam/api-keys/{p}/role-assignments/iam-viewer"), None),
        (Method::DELETE, format!("/iam/api-keys/{p}/role-assignments/iam-viewer"), None),
    ];
    for (method, uri, body) in routes {
        let r = app.call(method.clone(), &uri, Some(&globex), body).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{method} {uri}: {}", r.raw);
    }
    let list = app.call(Method::GET, "/iam/api-keys", Some(&globex), None).await;
    assert!(!list.raw.contains(&p));
    let still = app.call(Method::GET, &format!("/iam/api-keys/{p}/credentials"), Some(&acme), None).await;
    assert_eq!(still.body["items"][0]["status"], "Active", "the other org's calls changed nothing");
}

#[tokio::test]
async fn credential_issue_list_revoke() {
    let app = TestApp::new().await;
    let admin = app.admin().await;
    let p = app.create_principal(&admin, "svc").await;
    let uri = format!("/iam/api-keys/{p}/credentials");
    let r = app.call(Method::POST, &uri, Some(&admin), Some(json!({"name": "deploy", "expiresAt": "2099-01-01T00:00:00Z"}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let key = r.str("apiKey").to_owned();
    let cred = r.body["credential"].clone();
    let key_id = cred["keyId"].as_str().unwrap().to_owned();
    assert!(key.starts_with(&format!("ik_{key_id}.")));
    assert_eq!(cred["clientId"], format!("ik_{key_id}"));
    assert_eq!(cred["status"], "Active");
    assert_eq!(cred["principalId"], p.as_str());
    assert!(cred.get("secretHash").is_none() && !r.raw.contains("argon2"));

    let second = app.issue(&admin, &p).await.0;
    let list = app.call(Method::GET, &uri, Some(&admin), None).await;
    assert_eq!(list.body["items"].as_array().unwrap().len(), 2);
    assert!(!list.raw.contains(&key), "the key is shown once");

    let revoke = format!("{uri}/{key_id}/revoke");
    let first = app.call(Method::POST, &revoke, Some(&admin), None).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.str("status"), "Revoked");
    assert!(first.body["revokedAt"].is_string());
    let again = app.call(Method::POST, &revoke, Some(&admin), None).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body, first.body, "idempotent");

    let active = app.call(Method::GET, &uri, Some(&admin), None).await;
    let ids: Vec<_> = active.body["items"].as_array().unwrap().iter().map(|c| c["keyId"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids, vec![second.clone()]);
    let all = app.call(Method::GET, &format!("{uri}?include=all"), Some(&admin), None).await;
    assert_eq!(all.body["items"].as_array().unwrap().len(), 2);
    assert_eq!(app.call(Method::GET, &format!("{uri}?include=everything"), Some(&admin), None).await.status, StatusCode::BAD_REQUEST);

    let missing = app.call(Method::POST, &format!("{uri}/0000000000000000000000/revoke"), Some(&admin), None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let bad = app.call(Method::POST, &format!("{uri}/nope/revoke"), Some(&admin), None).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);

    for (body, status) in [
        (json!({}), StatusCode::BAD_REQUEST),
        (json!({"name": "x".repeat(65)}), StatusCode::BAD_REQUEST),
        (json!({"name": "x", "expiresAt": "2000-01-01T00:00:00Z"}), StatusCode::BAD_REQUEST),
        (json!({"name": "x", "secret": "mine"}), StatusCode::BAD_REQUEST),
    ] {
        assert_eq!(app.call(Method::POST, &uri, Some(&admin), Some(body)).await.status, status);
    }
}

#[tokio::test]
async fn credential_limits_and_revoked_principals() {
    let app = TestApp::new().await;
    let admin = app.admin().await;
    let p = app.create_principal(&admin, "busy").await;
    for _ in 0..10 {
        app.issue(&admin, &p).await;
    }
    let uri = format!("/iam/api-keys/{p}/credentials");
    let r = app.call(Method::POST, &uri, Some(&admin), Some(json!({"name": "eleventh"}))).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.raw);
    assert!(r.str("detail").contains("10 active credentials"));

    let q = app.create_principal(&admin, "gone").await;
    app.call(Method::PATCH, &format!("/iam/api-keys/{q}"), Some(&admin), Some(json!({"status": "Revoked"}))).await;
    let r = app.call(Method::POST, &format!("/iam/api-keys/{q}/credentials"), Some(&admin), Some(json!({"name": "late"}))).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.raw);
    let r = app.call(Method::PUT, &format!("/iam/api-keys/{q}/role-assignments/iam-viewer"), Some(&admin), None).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.raw);
}

#[tokio::test]
async fn roles_list_and_define() {
    let app = TestApp::new().await;
    let admin = app.admin().await;
    let list = app.call(Method::GET, "/iam/roles", Some(&admin), None).await;
    assert_eq!(list.status, StatusCode::OK);
    let names: Vec<_> = list.body["items"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(names, ["iam-admin", "iam-viewer", "org-owner", "device-provisioner", "token-introspector"]);
    assert_eq!(list.body["items"][2]["principalTypes"], json!(["User"]));

    let body =
        json!({"name": "deployer", "description": "CI deploys", "permissions": ["ci:deploy", "ci:deploy"], "principalTypes": ["ApiKey"]});
    let r = app.call(Method::POST, "/iam/roles", Some(&admin), Some(body.clone())).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
    assert!(r.str("id").starts_with("role_"));
    assert_eq!(r.body["permissions"], json!(["ci:deploy"]));
    assert_eq!(r.body["builtIn"], false);
    assert_eq!(app.call(Method::POST, "/iam/roles", Some(&admin), Some(body)).await.status, StatusCode::CONFLICT);
    let listed = app.call(Method::GET, "/iam/roles", Some(&admin), None).await;
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 6);
    let globex = app.token(&app.globex_key).await;
    let theirs = app.call(Method::GET, "/iam/roles", Some(&globex), None).await;
    assert_eq!(theirs.body["items"].as_array().unwrap().len(), 5, "org roles stay in their org");

    for bad in [
        json!({"name": "x", "permissions": [], "principalTypes": ["ApiKey"]}),
        json!({"name": "x", "permissions": ["NOT A PERMISSION"], "principalTypes": ["ApiKey"]}),
        json!({"name": "x", "permissions": ["a:b"], "principalTypes": ["Robot"]}),
        json!({"name": "x", "permissions": ["a:b"], "principalTypes": []}),
        json!({"name": "", "permissions": ["a:b"], "principalTypes": ["ApiKey"]}),
        json!({"name": "x", "description": "d".repeat(513), "permissions": ["a:b"], "principalTypes": ["ApiKey"]}),
        json!({"permissions": ["a:b"], "principalTypes": ["ApiKey"]}),
    ] {
        let r = app.call(Method::POST, "/iam/roles", Some(&admin), Some(bad.clone())).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.raw);
    }
    let shadow = json!({"name": "iam-admin", "permissions": ["a:b"], "principalTypes": ["ApiKey"]});
    assert_eq!(app.call(Method::POST, "/iam/roles", Some(&admin), Some(shadow)).await.status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn role_assignment_rules() {
    let app = TestApp::new().await;
    let admin = app.admin().await;
    let globex = app.token(&app.globex_key).await;
    let p = app.create_principal(&admin, "svc").await;
    let base = format!("/iam/api-keys/{p}/role-assignments");

    let first = app.call(Method::PUT, &format!("{base}/device-provisioner"), Some(&admin), None).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.raw);
    assert_eq!(first.str("roleId"), "device-provisioner");
    let again = app.call(Method::PUT, &format!("{base}/device-provisioner"), Some(&admin), None).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body, first.body);

    let owner = app.call(Method::PUT, &format!("{base}/org-owner"), Some(&admin), None).await;
    assert_eq!(owner.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(owner.str("detail").contains("does not support ApiKey"));
    let unknown = app.call(Method::PUT, &format!("{base}/no-such-role"), Some(&admin), None).await;
    assert_eq!(unknown.status, StatusCode::UNPROCESSABLE_ENTITY);
    let bad = app.call(Method::PUT, &format!("{base}/Bad%20Role"), Some(&admin), None).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);

    let theirs = app
        .call(Method::POST, "/iam/roles", Some(&globex), Some(json!({"name": "g", "permissions": ["g:x"], "principalTypes": ["ApiKey"]})))
        .await;
    let their_role = theirs.str("id").to_owned();
    let cross = app.call(Method::PUT, &format!("{base}/{their_role}"), Some(&admin), None).await;
    assert_eq!(cross.status, StatusCode::UNPROCESSABLE_ENTITY, "another org's role is not available: {}", cross.raw);
    assert_eq!(cross.body["detail"], unknown.body["detail"].as_str().unwrap().replace("no-such-role", &their_role));

    let users_only = app
        .call(Method::POST, "/iam/roles", Some(&admin), Some(json!({"name": "humans", "permissions": ["h:x"], "principalTypes": ["User"]})))
        .await;
    let r = app.call(Method::PUT, &format!("{base}/{}", users_only.str("id")), Some(&admin), None).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);

    let list = app.call(Method::GET, &base, Some(&admin), None).await;
    assert_eq!(list.body["items"].as_array().unwrap().len(), 1);
    let del = app.call(Method::DELETE, &format!("{base}/device-provisioner"), Some(&admin), None).await;
    assert_eq!(del.status, StatusCode::NO_CONTENT);
    let del_again = app.call(Method::DELETE, &format!("{base}/device-provisioner"), Some(&admin), None).await;
    assert_eq!(del_again.status, StatusCode::NOT_FOUND);
    assert!(app.call(Method::GET, &base, Some(&admin), None).await.body["items"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let app = TestApp::new().await;
    let r = app.call(Method::GET, "/iam/nothing-here", None, None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    let r = app.call(Method::DELETE, "/iam/api-keys", None, None).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn malformed_paths_are_problems_too() {
    let app = TestApp::new().await;
    let admin = app.admin().await;
    let r = app.call(Method::GET, "/iam/api-keys/%FF%FE", Some(&admin), None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.raw);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
}

#[tokio::test]
async fn nobody_grants_management_power_they_lack() {
    let app = TestApp::new().await;
    let admin = app.admin().await;
    let assigner_role = app
        .call(
            Method::POST,
            "/iam/roles",
            Some(&admin),
            Some(
                json!({"name": "assigner", "permissions": ["iam:role-assignments:write", "iam:roles:write"], "principalTypes": ["ApiKey"]}),
            ),
        )
        .await;
    assert_eq!(assigner_role.status, StatusCode::CREATED, "{}", assigner_role.raw);
    let me = app.create_principal(&admin, "assigner").await;
    app.assign(&admin, &me, assigner_role.str("id")).await;
    let (_, key) = app.issue(&admin, &me).await;
    let token = app.token(&key).await;

    let escalate = app.call(Method::PUT, &format!("/iam/api-keys/{me}/role-assignments/iam-admin"), Some(&token), None).await;
    assert_eq!(escalate.status, StatusCode::FORBIDDEN, "{}", escalate.raw);
    assert!(escalate.str("detail").contains("never grants itself"), "{}", escalate.raw);
    let sneaky = app
        .call(
            Method::POST,
            "/iam/roles",
            Some(&token),
            Some(json!({"name": "sneaky", "permissions": ["iam:api-keys:write"], "principalTypes": ["ApiKey"]})),
        )
        .await;
    assert_eq!(sneaky.status, StatusCode::FORBIDDEN, "{}", sneaky.raw);
    let assignments = app.call(Method::GET, &format!("/iam/api-keys/{me}/role-assignments"), Some(&admin), None).await;
    assert_eq!(assignments.body["items"].as_array().unwrap().len(), 1, "nothing was granted");

    // Other services' permissions too: nobody grants itself a role, nor what it does not hold.
    let downstream = app.call(Method::PUT, &format!("/iam/api-keys/{me}/role-assignments/device-provisioner"), Some(&token), None).await;
    assert_eq!(downstream.status, StatusCode::FORBIDDEN, "{}", downstream.raw);
    let other = app.create_principal(&admin, "other").await;
    let downstream = app.call(Method::PUT, &format!("/iam/api-keys/{other}/role-assignments/device-provisioner"), Some(&token), None).await;
    assert_eq!(downstream.status, StatusCode::FORBIDDEN, "{}", downstream.raw);
    assert!(downstream.str("detail").contains("iot:devices:provision"), "{}", downstream.raw);
}

#[tokio::test]
async fn an_unassigned_role_stops_granting_before_the_token_expires() {
    let app = TestApp::new().await;
    let admin = app.admin().await;
    let second = app.create_principal(&admin, "second admin").await;
    app.assign(&admin, &second, "iam-admin").await;
    let (_, key) = app.issue(&admin, &second).await;
    let token = app.token(&key).await;
    assert_eq!(app.call(Method::GET, "/iam/api-keys", Some(&token), None).await.status, StatusCode::OK);
    let del = app.call(Method::DELETE, &format!("/iam/api-keys/{second}/role-assignments/iam-admin"), Some(&admin), None).await;
    assert_eq!(del.status, StatusCode::NO_CONTENT);
    let after = app.call(Method::GET, "/iam/api-keys", Some(&token), None).await;
    assert_eq!(after.status, StatusCode::FORBIDDEN, "{}", after.raw);
}

#[tokio::test]
async fn absurd_expiry_dates_are_refused() {
    let app = TestApp::new().await;
    let admin = app.admin().await;
    for when in ["+10000-01-01T00:00:00Z", "2500-01-01T00:00:00Z"] {
        let r = app.call(Method::POST, "/iam/api-keys", Some(&admin), Some(json!({"displayName": "x", "expiresAt": when}))).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{when}: {}", r.raw);
    }
}
