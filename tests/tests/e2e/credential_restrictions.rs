//! Restrictions bound to a credential, on every store: its permission ceiling, source networks
//! and audiences hold at the exchange (each refusal its RFC 6749 error, and only once the secret
//! is proved), rotation keeps them, and a change after issue may narrow them, but never lets the
//! credential's own token widen them.

use axum::http::{Method, StatusCode};
use base64::Engine;
use iam_tests::{AUDIENCE, MANAGEMENT_AUDIENCE, OTHER_AUDIENCE, TestApp};
use serde_json::{Value, json};

fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// A principal holding `exports:read` and `exports:write`, with a key issued with `restrictions`.
async fn restricted_key(app: &TestApp, admin: &str, restrictions: Value) -> (String, String, String, iam_tests::Response) {
    let role =
        json!({"name": iam_testkit::unique("exporter"), "permissions": ["exports:read", "exports:write"], "principalTypes": ["ApiKey"]});
    let role = app.call(Method::POST, "/iam/roles", Some(admin), Some(role)).await;
    assert_eq!(role.status, StatusCode::CREATED, "{}", role.raw);
    let p = app.create_principal(admin, "exporter").await;
    app.assign(admin, &p, role.str("id")).await;
    let issued = app
        .call(
            Method::POST,
            &format!("/iam/api-keys/{p}/credentials"),
            Some(admin),
            Some(json!({"name": "restricted", "restrictions": restrictions})),
        )
        .await;
    assert_eq!(issued.status, StatusCode::CREATED, "{}", issued.raw);
    let key_id = issued.body["credential"]["keyId"].as_str().unwrap().to_owned();
    let key = issued.str("apiKey").to_owned();
    (p, key_id, key, issued)
}

#[tokio::test]
async fn an_exchange_is_held_to_the_credentials_restrictions() {
    for (store, app) in TestApp::on_every_store().await {
        let admin = app.admin().await;
        let restrictions = json!({
            "permissions": ["exports:read"],
            "sourceCidrs": ["203.0.113.77/24", "2001:db8::/32"],
            "audiences": [OTHER_AUDIENCE],
        });
        let (_, _, key, issued) = restricted_key(&app, &admin, restrictions).await;
        let answered = &issued.body["credential"]["restrictions"];
        assert_eq!(answered["sourceCidrs"], json!(["203.0.113.0/24", "2001:db8::/32"]), "{store}: canonical networks: {}", issued.raw);
        assert_eq!(answered["permissions"], json!(["exports:read"]));

        // A wrong secret learns nothing about the restrictions: the same 401 as ever.
        let wrong = format!("{}.{}", key.split_once('.').unwrap().0, "1".repeat(50));
        let r = app.exchange_from("198.51.100.1", json!({"apiKey": wrong})).await;
        assert_eq!((r.status, r.str("error")), (StatusCode::UNAUTHORIZED, "invalid_client"), "{store}");

        // Source: outside the networks, or unknown, is invalid_grant.
        for from in [Some("198.51.100.1"), Some("2001:db9::1"), None] {
            let r = match from {
                Some(addr) => app.exchange_from(addr, json!({"apiKey": key})).await,
                None => app.exchange_json(json!({"apiKey": key})).await,
            };
            assert_eq!((r.status, r.str("error")), (StatusCode::BAD_REQUEST, "invalid_grant"), "{store}: from {from:?}: {}", r.raw);
            assert!(r.str("error_description").contains("network address"), "{}", r.raw);
        }

        // Inside, in either family: the token's audience is the one allowed (asked for nothing),
        // its scope what the principal holds within the ceiling.
        for from in ["203.0.113.200", "::ffff:203.0.113.5", "2001:db8:42::1"] {
            let r = app.exchange_from(from, json!({"apiKey": key})).await;
            assert_eq!(r.status, StatusCode::OK, "{store}: from {from}: {}", r.raw);
            let c = claims(r.str("access_token"));
            assert_eq!(c["aud"], OTHER_AUDIENCE, "{store}");
            assert_eq!(c["scope"], "exports:read", "{store}: exports:write is above the ceiling");
        }

        // Audience and ceiling refusals, each its own error.
        let r = app.exchange_from("203.0.113.9", json!({"apiKey": key, "audience": AUDIENCE})).await;
        assert_eq!((r.status, r.str("error")), (StatusCode::BAD_REQUEST, "invalid_target"), "{store}: {}", r.raw);
        let r = app.exchange_from("203.0.113.9", json!({"apiKey": key, "audience": MANAGEMENT_AUDIENCE})).await;
        assert_eq!(r.str("error"), "invalid_target", "{store}: the management audience is an audience too");
        let r = app.exchange_from("203.0.113.9", json!({"apiKey": key, "scope": "exports:write"})).await;
        assert_eq!((r.status, r.str("error")), (StatusCode::BAD_REQUEST, "invalid_scope"), "{store}: {}", r.raw);
        assert!(r.str("error_description").contains("ceiling"), "{}", r.raw);
    }
}

#[tokio::test]
async fn restrictions_are_validated_and_kept_by_rotation() {
    for (store, app) in TestApp::on_every_store().await {
        let admin = app.admin().await;
        let p = app.create_principal(&admin, "validated").await;
        let uri = format!("/iam/api-keys/{p}/credentials");
        for restrictions in [
            json!({"sourceCidrs": []}),
            json!({"sourceCidrs": ["10.0.0.0/33"]}),
            json!({"sourceCidrs": ["example.com"]}),
            json!({"permissions": ["not a permission"]}),
            json!({"audiences": ["bad\u{0007}"]}),
            json!({"sourceCidrs": (0..11).map(|i| format!("10.{i}.0.0/16")).collect::<Vec<_>>()}),
            json!({"regions": ["eu"]}),
        ] {
            let r = app.call(Method::POST, &uri, Some(&admin), Some(json!({"name": "x", "restrictions": restrictions}))).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{store}: {restrictions}: {}", r.raw);
        }
        let listed = app.call(Method::GET, &uri, Some(&admin), None).await;
        assert!(listed.body["items"].as_array().unwrap().is_empty(), "{store}: nothing issued");

        let (p, key_id, _, _) = restricted_key(&app, &admin, json!({"sourceCidrs": ["192.0.2.0/24"]})).await;
        let rotated = app.call(Method::POST, &format!("/iam/api-keys/{p}/credentials/{key_id}/rotate"), Some(&admin), None).await;
        assert_eq!(rotated.status, StatusCode::CREATED, "{store}: {}", rotated.raw);
        assert_eq!(rotated.body["credential"]["restrictions"]["sourceCidrs"], json!(["192.0.2.0/24"]), "{store}: the successor keeps them");
        let r = app.exchange_from("198.51.100.1", json!({"apiKey": rotated.str("apiKey")})).await;
        assert_eq!(r.str("error"), "invalid_grant", "{store}: and is held to them");
    }
}

#[tokio::test]
async fn a_credential_is_changed_after_issue_but_never_widened_by_its_own_token() {
    for (store, app) in TestApp::on_every_store().await {
        let admin = app.admin().await;
        // A principal that may manage its own keys: everything it holds is within its own key's
        // authority while that key has no ceiling.
        let (p, key_id, key, _) = restricted_key(&app, &admin, json!({})).await;
        app.assign(&admin, &p, "iam-viewer").await;
        let writer =
            json!({"name": iam_testkit::unique("key-writer"), "permissions": ["iam:credentials:write"], "principalTypes": ["ApiKey"]});
        let writer = app.call(Method::POST, "/iam/roles", Some(&admin), Some(writer)).await;
        app.assign(&admin, &p, writer.str("id")).await;
        let own = app.token(&key).await;
        let uri = format!("/iam/api-keys/{p}/credentials/{key_id}");
        let everything = json!(["exports:read", "exports:write", "iam:api-keys:read", "iam:audit:read", "iam:credentials:write"]);

        // Its own token may rename it, bring its expiry forward, and narrow it.
        let soon = (chrono::Utc::now() + chrono::Duration::days(30)).to_rfc3339();
        let r = app.call(Method::PATCH, &uri, Some(&own), Some(json!({"name": "renamed", "expiresAt": soon}))).await;
        assert_eq!(r.status, StatusCode::OK, "{store}: {}", r.raw);
        assert_eq!(r.body["name"], "renamed");
        let narrower = json!({"restrictions": {"permissions": everything, "sourceCidrs": ["10.0.0.0/8"]}});
        let r = app.call(Method::PATCH, &uri, Some(&own), Some(narrower)).await;
        assert_eq!(r.status, StatusCode::OK, "{store}: {}", r.raw);

        // But never widen or extend it.
        for widening in [
            json!({"restrictions": {"sourceCidrs": ["10.0.0.0/8"]}}),
            json!({"restrictions": {"permissions": everything}}),
            json!({"restrictions": {"permissions": everything, "sourceCidrs": ["0.0.0.0/0"]}}),
            json!({"restrictions": {"permissions": everything, "sourceCidrs": ["10.0.0.0/8"], "audiences": [AUDIENCE]}, "expiresAt": null}),
            json!({"expiresAt": (chrono::Utc::now() + chrono::Duration::days(60)).to_rfc3339()}),
        ] {
            let r = app.call(Method::PATCH, &uri, Some(&own), Some(widening.clone())).await;
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{store}: {widening}: {}", r.raw);
            assert!(r.str("detail").contains("only narrow"), "{}", r.raw);
        }
        let listed = app.call(Method::GET, &format!("/iam/api-keys/{p}/credentials"), Some(&admin), None).await;
        assert_eq!(listed.body["items"][0]["restrictions"]["sourceCidrs"], json!(["10.0.0.0/8"]), "{store}: nothing widened");

        // An administrator, with the authority to issue, may widen it again.
        let r = app.call(Method::PATCH, &uri, Some(&admin), Some(json!({"restrictions": {}, "expiresAt": null}))).await;
        assert_eq!(r.status, StatusCode::OK, "{store}: {}", r.raw);
        assert_eq!(r.body["restrictions"], json!({"permissions": null, "sourceCidrs": null, "audiences": null}));
        assert!(r.body["expiresAt"].is_null());

        // A narrowed ceiling holds at once for tokens already issued: without iam:api-keys:read
        // the key's token can no longer read.
        let r = app.call(Method::PATCH, &uri, Some(&admin), Some(json!({"restrictions": {"permissions": ["exports:read"]}}))).await;
        assert_eq!(r.status, StatusCode::OK, "{store}: {}", r.raw);
        let r = app.call(Method::GET, &format!("/iam/api-keys/{p}"), Some(&own), None).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{store}: the old token lost what the ceiling dropped: {}", r.raw);
        let fresh = app.token(&key).await;
        let r = app.call(Method::GET, &format!("/iam/api-keys/{p}"), Some(&fresh), None).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{store}: and a new one never had it: {}", r.raw);

        // Bad input, another principal's credential, a revoked one.
        for body in [
            json!({"expiresAt": "2001-01-01T00:00:00Z"}),
            json!({"name": ""}),
            json!({"keyId": "x"}),
            json!({"restrictions": {"sourceCidrs": ["nowhere"]}}),
        ] {
            let r = app.call(Method::PATCH, &uri, Some(&admin), Some(body.clone())).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{store}: {body}: {}", r.raw);
        }
        let other = app.create_principal(&admin, "someone else").await;
        let r =
            app.call(Method::PATCH, &format!("/iam/api-keys/{other}/credentials/{key_id}"), Some(&admin), Some(json!({"name": "n"}))).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{store}: {}", r.raw);
        app.call(Method::POST, &format!("{uri}/revoke"), Some(&admin), None).await;
        let r = app.call(Method::PATCH, &uri, Some(&admin), Some(json!({"name": "too late"}))).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{store}: {}", r.raw);
    }
}

/// Finding keys nobody uses: `unusedForDays` keeps credentials idle that long (never used:
/// counted from their creation).
#[tokio::test]
async fn credentials_unused_for_days_are_listed_on_their_own() {
    use iam_shared::ids::{KeyId, OrgId, PrincipalId};
    use iam_shared::model::{Actor, Credential, now};

    for (store, app) in TestApp::on_every_store().await {
        let admin = app.admin().await;
        let p = app.create_principal(&admin, "idle keys").await;
        let (fresh_id, fresh_key) = app.issue(&admin, &p).await;
        app.downstream_token(&fresh_key).await;
        let principal =
            app.state.store.get_principal(&OrgId::parse("acme").unwrap(), &PrincipalId::parse(&p).unwrap()).await.unwrap().unwrap();
        let forgotten = Credential::new(
            &principal,
            KeyId::generate(),
            "forgotten",
            None,
            "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA".into(),
            Actor::system("test"),
            now() - chrono::Duration::days(40),
        )
        .unwrap();
        app.state.store.insert_credential(&forgotten, now(), None, &iam_shared::authority::Guard::NONE).await.unwrap();

        let listed = |query: &'static str| {
            let uri = format!("/iam/api-keys/{p}/credentials{query}");
            let app = &app;
            let admin = admin.clone();
            async move { app.call(Method::GET, &uri, Some(&admin), None).await }
        };
        let ids = |r: &iam_tests::Response| {
            r.body["items"].as_array().unwrap().iter().map(|c| c["keyId"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
        };
        assert_eq!(ids(&listed("?unusedForDays=30").await), vec![forgotten.key_id.to_string()], "{store}");
        assert_eq!(ids(&listed("?unusedForDays=41").await), Vec::<String>::new(), "{store}");
        assert_eq!(ids(&listed("").await).len(), 2, "{store}: {fresh_id} and the forgotten one");
        for bad in ["?unusedForDays=0", "?unusedForDays=x", "?unusedForDays=3651", "?unusedForDays=1&unusedForDays=2"] {
            assert_eq!(listed(bad).await.status, StatusCode::BAD_REQUEST, "{store}: {bad}");
        }
    }
}

/// A restricted key may not be an organisation's last means of administration: a ceiling
/// without every `iam:` permission, or an audience list, takes the last administrator's only
/// key out of administration as a revocation would, and is refused the same way (409). A
/// source restriction leaves it usable, and is allowed.
#[tokio::test]
async fn the_last_administrators_only_key_keeps_what_administration_needs() {
    for (store, app) in TestApp::on_every_store().await {
        let admin = app.admin().await;
        let whoami = app.call(Method::GET, "/iam/whoami", Some(&admin), None).await;
        let root = whoami.str("sub").to_owned();
        let key_id = app.acme_key.split_once('.').unwrap().0.trim_start_matches("ik_").to_owned();
        let uri = format!("/iam/api-keys/{root}/credentials/{key_id}");
        for fencing in
            [json!({"restrictions": {"permissions": ["iam:api-keys:read"]}}), json!({"restrictions": {"audiences": [MANAGEMENT_AUDIENCE]}})]
        {
            let r = app.call(Method::PATCH, &uri, Some(&admin), Some(fencing.clone())).await;
            assert_eq!(r.status, StatusCode::CONFLICT, "{store}: {fencing}: {}", r.raw);
            assert!(r.str("detail").contains("administrator"), "{}", r.raw);
        }
        let listed = app.call(Method::GET, &format!("/iam/api-keys/{root}/credentials"), Some(&admin), None).await;
        assert_eq!(
            listed.body["items"][0]["restrictions"],
            json!({"permissions": null, "sourceCidrs": null, "audiences": null}),
            "{store}"
        );

        // With a second administrator, the first may fence its own key.
        let second = app.create_principal(&admin, "second admin").await;
        app.assign(&admin, &second, "iam-admin").await;
        app.issue(&admin, &second).await;
        let r = app.call(Method::PATCH, &uri, Some(&admin), Some(json!({"restrictions": {"audiences": [MANAGEMENT_AUDIENCE]}}))).await;
        assert_eq!(r.status, StatusCode::OK, "{store}: {}", r.raw);
    }
}
