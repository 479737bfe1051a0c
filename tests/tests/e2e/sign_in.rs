//! People signing in to the console through their organisation's identity provider, on every
//! store, against the local OIDC issuer (`federation.rs`) acting as that provider: the
//! authorization-code flow with PKCE, state and nonce run by the service, the console's code
//! redeemed with its own verifier, and the user managing API keys with the roles mapped to it.
//! Then what must not work: an unmapped person, a replayed or stolen code, a suspended user, a
//! changed provider (even one changed back); and a mapped administrator counting as one for the
//! last-administrator rule.

use axum::http::{Method, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use iam_tests::{Response, TestApp};
use serde_json::{Value, json};

use crate::federation::LocalIssuer;
use crate::keyless::apps;

/// The console's PKCE pair.
fn pkce() -> (String, String) {
    let verifier = URL_SAFE_NO_PAD.encode(iam_testkit::unique("verifier").as_bytes().repeat(2));
    let challenge = iam_shared::federation::sign_in::s256(&verifier);
    (verifier, challenge)
}

/// The path and query of a redirect's target on the service's own origin.
fn on_service(location: &str) -> String {
    location.strip_prefix("http://iam.test").unwrap_or(location).to_owned()
}

/// The browser's round trip: the service's sign-in route, the provider's authorization
/// endpoint, back to the service's callback. Answers where the callback sends the console.
async fn round_trip(app: &TestApp, org: &str, challenge: &str) -> String {
    let start = app
        .call(Method::GET, &format!("/iam/auth/sign-in?org={org}&code_challenge={challenge}&code_challenge_method=S256"), None, None)
        .await;
    assert_eq!(start.status, StatusCode::FOUND, "{}", start.raw);
    let to_provider = start.header("location").unwrap().to_owned();
    assert_eq!(start.header("cache-control"), Some("no-store"));
    if to_provider.starts_with("/console/index.html") {
        return to_provider;
    }
    for needed in ["response_type=code", "code_challenge_method=S256", "nonce=", "state=", "scope=openid"] {
        assert!(to_provider.contains(needed), "{needed} in {to_provider}");
    }
    let browser = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let at_provider = browser.get(&to_provider).send().await.unwrap();
    assert_eq!(at_provider.status(), reqwest::StatusCode::FOUND);
    let back = at_provider.headers()["location"].to_str().unwrap().to_owned();
    let callback = app.call(Method::GET, &on_service(&back), None, None).await;
    assert_eq!(callback.status, StatusCode::FOUND, "{}", callback.raw);
    callback.header("location").unwrap().to_owned()
}

async fn redeem(app: &TestApp, code: &str, verifier: &str) -> Response {
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "authorization_code")
        .append_pair("client_id", "console")
        .append_pair("code", code)
        .append_pair("code_verifier", verifier)
        .finish();
    app.exchange_form(&form, None).await
}

fn claims_of(token: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').nth(1).unwrap()).unwrap()).unwrap()
}

/// The provider trusted and used for sign-in, and Ada mapped as an administrator.
async fn set_up(app: &TestApp, admin: &str, issuer: &LocalIssuer) -> String {
    let settings = json!({"issuers": [{"issuer": issuer.url}], "signIn": {"issuer": issuer.url, "clientId": "iam-console"}});
    let set = app.call(Method::PUT, "/iam/trusted-issuers", Some(admin), Some(settings)).await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.raw);
    let ada = json!({"displayName": "Ada", "type": "User", "identity": {"subject": "ada@example.com"}});
    let created = app.call(Method::POST, "/iam/api-keys", Some(admin), Some(ada)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.raw);
    assert_eq!(created.body["type"], "User");
    assert_eq!(created.body["identity"]["issuer"], issuer.url.as_str());
    let id = created.str("id").to_owned();
    app.assign(admin, &id, "iam-admin").await;
    id
}

#[tokio::test]
async fn a_person_signs_in_through_the_identity_provider_and_manages_keys() {
    let issuer = LocalIssuer::start().await;
    for (store, app) in apps().await {
        let admin = app.admin().await;
        let ada = set_up(&app, &admin, &issuer).await;
        *issuer.person.lock().unwrap() = "ada@example.com".into();
        let (verifier, challenge) = pkce();
        let console = round_trip(&app, "acme", &challenge).await;
        let code = console.strip_prefix("/console/index.html#sign-in=").unwrap_or_else(|| panic!("{store}: {console}"));
        let token = redeem(&app, code, &verifier).await;
        assert_eq!(token.status, StatusCode::OK, "{store}: {}", token.raw);
        let access = token.str("access_token").to_owned();
        let claims = claims_of(&access);
        assert_eq!(claims["sub"], ada.as_str());
        assert_eq!(claims["principal_type"], "User");
        assert_eq!(claims["client_id"], "console");
        assert_eq!(claims["aud"], iam_tests::MANAGEMENT_AUDIENCE);
        // The sign-in is in the trail (it makes Ada count as an administrator who can sign in).
        let signed_in = app.call(Method::GET, "/iam/audit-events?outcome=success&action=user.sign_in", Some(&admin), None).await;
        let records = signed_in.body["items"].as_array().unwrap();
        assert!(
            records.iter().any(|e| e["actor"] == ada.as_str()
                && e["principalId"] == ada.as_str()
                && e["detail"]["provider"]["issuer"] == issuer.url.as_str()),
            "{store}: {}",
            signed_in.raw
        );

        // Ada manages API keys with the roles mapped to her.
        let me = app.call(Method::GET, "/iam/whoami", Some(&access), None).await;
        assert_eq!(me.status, StatusCode::OK, "{}", me.raw);
        let integration = app.create_principal(&access, "made by Ada").await;
        let (_, key) = app.issue(&access, &integration).await;
        let trail = app.call(Method::GET, &format!("/iam/audit-events?principalId={integration}"), Some(&admin), None).await;
        assert!(trail.body["items"].as_array().unwrap().iter().all(|e| e["actor"] == ada.as_str()), "{}", trail.raw);
        assert_eq!(app.exchange_json(json!({"apiKey": key})).await.status, StatusCode::OK);

        // A code works once, and only with the verifier of the console that asked for it.
        let replay = redeem(&app, code, &verifier).await;
        assert_eq!((replay.status, replay.body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")), "{}", replay.raw);
        let (verifier, challenge) = pkce();
        let stolen = round_trip(&app, "acme", &challenge).await;
        let stolen = stolen.strip_prefix("/console/index.html#sign-in=").unwrap();
        let (other_verifier, _) = pkce();
        assert_eq!(redeem(&app, stolen, &other_verifier).await.body["error"], "invalid_grant", "a code without its verifier");
        assert_eq!(redeem(&app, stolen, &verifier).await.body["error"], "invalid_grant", "and it was spent by the attempt");
        // Neither is a state good twice.
        let start = app.call(Method::GET, &format!("/iam/auth/sign-in?org=acme&code_challenge={challenge}"), None, None).await;
        let browser = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let back = browser.get(start.header("location").unwrap()).send().await.unwrap().headers()["location"].to_str().unwrap().to_owned();
        assert!(
            app.call(Method::GET, &on_service(&back), None, None)
                .await
                .header("location")
                .unwrap()
                .starts_with("/console/index.html#sign-in=")
        );
        let again = app.call(Method::GET, &on_service(&back), None, None).await;
        assert!(again.header("location").unwrap().contains("sign-in-error"), "{store}: a state is taken once");

        // Introspection sees her token as the management routes do.
        let seen = app.introspect(Some(&admin), &access).await;
        assert_eq!((seen.body["active"].as_bool(), seen.body["principal_type"].as_str()), (Some(true), Some("User")), "{}", seen.raw);
        assert_eq!(seen.body["sub"], ada.as_str());

        // Any change of the provider ends her session and voids a code not yet redeemed, even
        // a change made back: her token was issued under settings that are gone.
        let (pending_verifier, challenge) = pkce();
        let pending = round_trip(&app, "acme", &challenge).await;
        let pending = pending.strip_prefix("/console/index.html#sign-in=").unwrap().to_owned();
        let read = app.call(Method::GET, "/iam/trusted-issuers", Some(&admin), None).await;
        for client in ["another", "iam-console"] {
            let settings = json!({"issuers": read.body["issuers"].clone(), "signIn": {"issuer": issuer.url, "clientId": client}});
            let changed = app.call(Method::PUT, "/iam/trusted-issuers", Some(&admin), Some(settings)).await;
            assert_eq!(changed.status, StatusCode::OK, "{store}: {}", changed.raw);
        }
        assert_eq!(app.call(Method::GET, "/iam/api-keys", Some(&access), None).await.status, StatusCode::UNAUTHORIZED, "{store}");
        assert_eq!(app.introspect(Some(&admin), &access).await.body["active"], false, "{store}");
        assert_eq!(redeem(&app, &pending, &pending_verifier).await.body["error"], "invalid_grant", "{store}");
        let (verifier, challenge) = pkce();
        let console = round_trip(&app, "acme", &challenge).await;
        let access =
            redeem(&app, console.strip_prefix("/console/index.html#sign-in=").unwrap(), &verifier).await.str("access_token").to_owned();
        assert_eq!(app.call(Method::GET, "/iam/api-keys", Some(&access), None).await.status, StatusCode::OK, "{store}: signed in again");

        // Suspended, Ada's token stops at once and she cannot sign in.
        let suspend = app.call(Method::PATCH, &format!("/iam/api-keys/{ada}"), Some(&admin), Some(json!({"status": "Suspended"}))).await;
        assert_eq!(suspend.status, StatusCode::OK, "{}", suspend.raw);
        assert_eq!(app.call(Method::GET, "/iam/api-keys", Some(&access), None).await.status, StatusCode::UNAUTHORIZED);
        let (verifier, challenge) = pkce();
        let console = round_trip(&app, "acme", &challenge).await;
        let refused = redeem(&app, console.strip_prefix("/console/index.html#sign-in=").unwrap(), &verifier).await;
        assert_eq!(refused.body["error"], "invalid_grant", "{}", refused.raw);
        assert!(refused.str("error_description").contains("suspended"));

        // Revoked, Ada's identity is free again: she can be mapped to a new user, and signs in
        // as that one.
        let revoke = app.call(Method::PATCH, &format!("/iam/api-keys/{ada}"), Some(&admin), Some(json!({"status": "Revoked"}))).await;
        assert_eq!(revoke.status, StatusCode::OK, "{}", revoke.raw);
        let again = json!({"displayName": "Ada, back", "type": "User", "identity": {"subject": "ada@example.com"}});
        let remapped = app.call(Method::POST, "/iam/api-keys", Some(&admin), Some(again)).await;
        assert_eq!(remapped.status, StatusCode::CREATED, "{store}: {}", remapped.raw);
        let (verifier, challenge) = pkce();
        let console = round_trip(&app, "acme", &challenge).await;
        let back = redeem(&app, console.strip_prefix("/console/index.html#sign-in=").unwrap(), &verifier).await;
        assert_eq!(back.status, StatusCode::OK, "{store}: {}", back.raw);
        assert_eq!(claims_of(back.str("access_token"))["sub"], remapped.str("id"));
    }
}

#[tokio::test]
async fn nobody_is_provisioned_by_signing_in_and_the_last_administrator_rule_counts_people() {
    let issuer = LocalIssuer::start().await;
    for (store, app) in apps().await {
        let admin = app.admin().await;
        // Without an identity provider, nobody signs in this way.
        let (_, challenge) = pkce();
        let none = round_trip(&app, "acme", &challenge).await;
        assert!(none.starts_with("/console/index.html#sign-in-error=") && none.contains("no+identity+provider"), "{store}: {none}");
        let ada = set_up(&app, &admin, &issuer).await;

        // An unmapped person is refused, and the trail says whom to map.
        *issuer.person.lock().unwrap() = "eve@example.com".into();
        let (_, challenge) = pkce();
        let eve = round_trip(&app, "acme", &challenge).await;
        assert!(eve.starts_with("/console/index.html#sign-in-error=") && eve.contains("map"), "{store}: {eve}");
        let trail = app.call(Method::GET, "/iam/audit-events?outcome=refused&action=user.sign_in", Some(&admin), None).await;
        assert!(trail.raw.contains("eve@example.com"), "{store}: {}", trail.raw);
        // A second user cannot take Ada's identity.
        let twin = json!({"displayName": "Ada again", "type": "User", "identity": {"subject": "ada@example.com"}});
        assert_eq!(app.call(Method::POST, "/iam/api-keys", Some(&admin), Some(twin)).await.status, StatusCode::CONFLICT);
        let no_identity = json!({"displayName": "Nobody", "type": "User"});
        assert_eq!(app.call(Method::POST, "/iam/api-keys", Some(&admin), Some(no_identity)).await.status, StatusCode::BAD_REQUEST);

        // Mapped but never signed in, Ada proves nothing yet (her subject may be mistyped): the
        // bootstrap key, the last key of an administrator, cannot go.
        let (root_key_id, _) = app.acme_key.split_once('.').unwrap();
        let root_key_id = root_key_id.trim_start_matches("ik_").to_owned();
        let me = app.call(Method::GET, "/iam/whoami", Some(&admin), None).await;
        let root_id = me.str("sub").to_owned();
        let early = app.call(Method::POST, &format!("/iam/api-keys/{root_id}/credentials/{root_key_id}/revoke"), Some(&admin), None).await;
        assert_eq!(early.status, StatusCode::CONFLICT, "{store}: {}", early.raw);
        // Signed in, Ada is a usable administrator: the bootstrap key may now be revoked...
        *issuer.person.lock().unwrap() = "ada@example.com".into();
        let (verifier, challenge) = pkce();
        let console = round_trip(&app, "acme", &challenge).await;
        let access =
            redeem(&app, console.strip_prefix("/console/index.html#sign-in=").unwrap(), &verifier).await.str("access_token").to_owned();
        let revoked =
            app.call(Method::POST, &format!("/iam/api-keys/{root_id}/credentials/{root_key_id}/revoke"), Some(&access), None).await;
        assert_eq!(revoked.status, StatusCode::OK, "{store}: {}", revoked.raw);
        // ...and then the provider cannot be taken away from her, the last administrator.
        let read = app.call(Method::GET, "/iam/trusted-issuers", Some(&access), None).await;
        let without = json!({"issuers": read.body["issuers"].clone(), "signIn": null});
        let refused = app.call(Method::PUT, "/iam/trusted-issuers", Some(&access), Some(without)).await;
        assert_eq!(refused.status, StatusCode::CONFLICT, "{store}: {}", refused.raw);
        let other_client = json!({"issuers": read.body["issuers"].clone(), "signIn": {"issuer": issuer.url, "clientId": "another"}});
        let refused = app.call(Method::PUT, "/iam/trusted-issuers", Some(&access), Some(other_client)).await;
        assert_eq!(refused.status, StatusCode::CONFLICT, "{store}: a new client id may lock people out too: {}", refused.raw);
        // A client that only manages the list leaves the provider alone.
        let list_only = json!({"issuers": read.body["issuers"].clone()});
        let kept = app.call(Method::PUT, "/iam/trusted-issuers", Some(&access), Some(list_only)).await;
        assert_eq!(kept.status, StatusCode::OK, "{store}: {}", kept.raw);
        assert_eq!(kept.body["signIn"]["issuer"], issuer.url.as_str());
        // Nor can she remove her own administration.
        let own = app.call(Method::DELETE, &format!("/iam/api-keys/{ada}/role-assignments/iam-admin"), Some(&access), None).await;
        assert_eq!(own.status.as_u16() / 100, 4, "{store}: {}", own.raw);
        assert_eq!(app.call(Method::GET, "/iam/whoami", Some(&access), None).await.status, StatusCode::OK);
    }
}
