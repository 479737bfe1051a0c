//! Rotating a credential over HTTP, on every store: the successor's key shown once, both keys
//! working for the grace period, none at all ending the old key at once, a replay under the
//! same Idempotency-Key, and what cannot be rotated.

use axum::http::{Method, StatusCode};
use chrono::{DateTime, SubsecRound, Utc};
use iam_tests::TestApp;
use serde_json::json;

fn time(v: &serde_json::Value) -> DateTime<Utc> {
    v.as_str().unwrap_or_else(|| panic!("a time: {v}")).parse().unwrap()
}

#[tokio::test]
async fn both_keys_work_during_the_grace_period() {
    for (store, app) in TestApp::on_every_store().await {
        let admin = app.admin().await;
        let p = app.create_principal(&admin, "rotated").await;
        let (old_id, old_key) = app.issue(&admin, &p).await;
        let before = chrono::Utc::now();
        let r = app
            .call(
                Method::POST,
                &format!("/iam/api-keys/{p}/credentials/{old_id}/rotate"),
                Some(&admin),
                Some(json!({"gracePeriodSeconds": 3600})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{store}: {}", r.raw);
        assert_eq!(r.header("cache-control"), Some("no-store"), "{store}: the key is shown once");
        let new_key = r.str("apiKey").to_owned();
        let new_id = r.body["credential"]["keyId"].as_str().unwrap().to_owned();
        assert_ne!(new_id, old_id);
        assert_eq!(r.body["credential"]["name"], "ci", "{store}: the old name unless given");
        assert_eq!(r.body["credential"]["rotatedFrom"], old_id.as_str());
        assert_eq!(r.body["rotated"]["rotatedTo"], new_id.as_str());
        let grace_end = time(&r.body["rotated"]["expiresAt"]);
        assert!(grace_end >= before + chrono::Duration::seconds(3599) && grace_end <= Utc::now() + chrono::Duration::seconds(3600));
        assert_eq!(r.body["rotated"]["status"], "Active", "{store}: the old key works on");
        assert!(!r.raw.contains(old_key.split_once('.').unwrap().1), "{store}: the old secret is never answered");

        app.downstream_token(&old_key).await;
        app.downstream_token(&new_key).await;
        let listed = app.call(Method::GET, &format!("/iam/api-keys/{p}/credentials"), Some(&admin), None).await;
        let items = listed.body["items"].as_array().unwrap();
        assert_eq!(items.len(), 2, "{store}: {}", listed.raw);
        let old = items.iter().find(|c| c["keyId"] == old_id.as_str()).unwrap();
        assert_eq!(old["rotatedTo"], new_id.as_str(), "{store}: the link is stored");
        assert!(!old["lastUsedAt"].is_null(), "{store}: its use during the grace period is recorded");

        // A credential rotates once: its successor is the one to rotate next.
        let again = app.call(Method::POST, &format!("/iam/api-keys/{p}/credentials/{old_id}/rotate"), Some(&admin), None).await;
        assert_eq!(again.status, StatusCode::CONFLICT, "{store}: {}", again.raw);
        assert!(again.str("detail").contains("already rotated"), "{}", again.raw);
        let next = app.call(Method::POST, &format!("/iam/api-keys/{p}/credentials/{new_id}/rotate"), Some(&admin), None).await;
        assert_eq!(next.status, StatusCode::CREATED, "{store}: no body means the default grace: {}", next.raw);
        let default_end = time(&next.body["rotated"]["expiresAt"]);
        assert!(default_end > Utc::now() + chrono::Duration::hours(23), "{store}: a day by default");
    }
}

#[tokio::test]
async fn no_grace_period_ends_the_old_key_at_once() {
    for (store, app) in TestApp::on_every_store().await {
        let admin = app.admin().await;
        let p = app.create_principal(&admin, "rotated now").await;
        let (old_id, old_key) = app.issue(&admin, &p).await;
        app.downstream_token(&old_key).await;
        let r = app
            .call(
                Method::POST,
                &format!("/iam/api-keys/{p}/credentials/{old_id}/rotate"),
                Some(&admin),
                Some(json!({"gracePeriodSeconds": 0, "name": "renamed"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{store}: {}", r.raw);
        assert_eq!(r.body["credential"]["name"], "renamed");
        assert_eq!(r.body["rotated"]["status"], "Expired", "{store}: {}", r.raw);
        let refused = app.exchange_json(json!({"apiKey": old_key})).await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{store}: {}", refused.raw);
        assert_eq!(refused.str("error"), "invalid_grant");
        app.downstream_token(r.str("apiKey")).await;
    }
}

#[tokio::test]
async fn a_replay_rotates_nothing_and_names_the_successor() {
    for (store, app) in TestApp::on_every_store().await {
        let admin = app.admin().await;
        let p = app.create_principal(&admin, "replayed").await;
        let (old_id, _) = app.issue(&admin, &p).await;
        let uri = format!("/iam/api-keys/{p}/credentials/{old_id}/rotate");
        let idem = [("Idempotency-Key", "rotate-once")];
        let body = json!({"gracePeriodSeconds": 60});
        let first = app.call_with(Method::POST, &uri, Some(&admin), Some(body.clone()), &idem).await;
        assert_eq!(first.status, StatusCode::CREATED, "{store}: {}", first.raw);
        let successor = first.body["credential"]["keyId"].as_str().unwrap().to_owned();
        let replay = app.call_with(Method::POST, &uri, Some(&admin), Some(body), &idem).await;
        assert_eq!(replay.status, StatusCode::CONFLICT, "{store}: {}", replay.raw);
        assert!(replay.raw.contains(&successor), "{store}: names the successor: {}", replay.raw);
        assert!(replay.body.get("apiKey").is_none(), "{store}: the key is never shown twice");
        let other = app.call_with(Method::POST, &uri, Some(&admin), Some(json!({"gracePeriodSeconds": 61})), &idem).await;
        assert_eq!(other.status, StatusCode::UNPROCESSABLE_ENTITY, "{store}: the same key with another body: {}", other.raw);
        let listed = app.call(Method::GET, &format!("/iam/api-keys/{p}/credentials"), Some(&admin), None).await;
        assert_eq!(listed.body["items"].as_array().unwrap().len(), 2, "{store}: one rotation: {}", listed.raw);
    }
}

#[tokio::test]
async fn what_cannot_be_rotated_is_refused_and_changes_nothing() {
    for (store, app) in TestApp::on_every_store().await {
        let admin = app.admin().await;
        let p = app.create_principal(&admin, "refusals").await;
        let (key_id, _) = app.issue(&admin, &p).await;
        let uri = format!("/iam/api-keys/{p}/credentials/{key_id}/rotate");
        for (body, status) in [
            (json!({"gracePeriodSeconds": 604_801}), StatusCode::BAD_REQUEST),
            (json!({"gracePeriodSeconds": -1}), StatusCode::BAD_REQUEST),
            (json!({"grace": 10}), StatusCode::BAD_REQUEST),
            (json!({"name": "  "}), StatusCode::BAD_REQUEST),
        ] {
            let r = app.call(Method::POST, &uri, Some(&admin), Some(body.clone())).await;
            assert_eq!(r.status, status, "{store}: {body}: {}", r.raw);
            assert_eq!(r.header("content-type"), Some("application/problem+json"), "{store}: {}", r.raw);
        }
        let other = app.create_principal(&admin, "not its owner").await;
        let r = app.call(Method::POST, &format!("/iam/api-keys/{other}/credentials/{key_id}/rotate"), Some(&admin), None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{store}: another principal's key: {}", r.raw);
        let globex = app.token(&app.globex_key).await;
        let r = app.call(Method::POST, &uri, Some(&globex), None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{store}: another organisation: {}", r.raw);
        let listed = app.call(Method::GET, &format!("/iam/api-keys/{p}/credentials"), Some(&admin), None).await;
        assert_eq!(listed.body["items"].as_array().unwrap().len(), 1, "{store}: nothing rotated: {}", listed.raw);
        assert!(listed.body["items"][0]["rotatedTo"].is_null());

        let revoked = app.call(Method::POST, &format!("/iam/api-keys/{p}/credentials/{key_id}/revoke"), Some(&admin), None).await;
        assert_eq!(revoked.status, StatusCode::OK);
        let r = app.call(Method::POST, &uri, Some(&admin), None).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{store}: a revoked key: {}", r.raw);
    }
}

#[tokio::test]
async fn at_the_limit_only_a_rotation_without_grace_fits() {
    for (store, app) in TestApp::on_every_store().await {
        let admin = app.admin().await;
        let p = app.create_principal(&admin, "full").await;
        let mut ids = Vec::new();
        for _ in 0..iam_shared::model::MAX_ACTIVE_CREDENTIALS {
            ids.push(app.issue(&admin, &p).await.0);
        }
        let uri = format!("/iam/api-keys/{p}/credentials/{}/rotate", ids[0]);
        let r = app.call(Method::POST, &uri, Some(&admin), Some(json!({"gracePeriodSeconds": 60}))).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{store}: {}", r.raw);
        assert!(r.str("detail").contains("10 active credentials"), "{store}: {}", r.raw);
        let r = app.call(Method::POST, &uri, Some(&admin), Some(json!({"gracePeriodSeconds": 0}))).await;
        assert_eq!(r.status, StatusCode::CREATED, "{store}: the old key's place is freed in the same step: {}", r.raw);
    }
}

/// A rotation racing a revocation of the same credential: whichever commits first, nothing is
/// half-done. Either the rotation lost (409, no successor) or it won and the revocation then
/// revoked the old key; the successor, when there is one, works.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rotation_racing_a_revoke_is_all_or_nothing() {
    for (store, app) in TestApp::on_every_store().await {
        let admin = app.admin().await;
        let p = app.create_principal(&admin, "raced").await;
        for _ in 0..6 {
            let (key_id, _) = app.issue(&admin, &p).await;
            let rotate_uri = format!("/iam/api-keys/{p}/credentials/{key_id}/rotate");
            let revoke_uri = format!("/iam/api-keys/{p}/credentials/{key_id}/revoke");
            let (rotated, revoked) = tokio::join!(
                app.call(Method::POST, &rotate_uri, Some(&admin), Some(json!({"gracePeriodSeconds": 600}))),
                app.call(Method::POST, &revoke_uri, Some(&admin), None),
            );
            assert_eq!(revoked.status, StatusCode::OK, "{store}: {}", revoked.raw);
            let listed = app.call(Method::GET, &format!("/iam/api-keys/{p}/credentials?include=all"), Some(&admin), None).await;
            let items = listed.body["items"].as_array().unwrap();
            let old = items.iter().find(|c| c["keyId"] == key_id.as_str()).unwrap();
            assert_eq!(old["status"], "Revoked", "{store}: the revocation always holds");
            match rotated.status {
                StatusCode::CREATED => {
                    let successor = rotated.body["credential"]["keyId"].as_str().unwrap();
                    assert_eq!(old["rotatedTo"], successor, "{store}: a rotation that answered is stored");
                    app.downstream_token(rotated.str("apiKey")).await;
                    let r = app.call(Method::POST, &format!("/iam/api-keys/{p}/credentials/{successor}/revoke"), Some(&admin), None).await;
                    assert_eq!(r.status, StatusCode::OK);
                }
                StatusCode::CONFLICT => {
                    assert!(old["rotatedTo"].is_null(), "{store}: a refused rotation wrote nothing: {}", listed.raw);
                    assert!(items.iter().all(|c| c["rotatedFrom"] != key_id.as_str()), "{store}: no orphaned successor");
                }
                other => panic!("{store}: a rotation answered {other}: {}", rotated.raw),
            }
        }
    }
}

/// Self-rotation: a credential issued for it may be rotated by its own token, with at least an
/// hour's grace and no later expiry; nothing else becomes self-service; and reporting the old
/// key as leaked also revokes the successor it made for itself.
#[tokio::test]
async fn a_key_issued_for_it_rotates_itself_and_nothing_more() {
    for (store, app) in TestApp::on_every_store().await {
        let admin = app.admin().await;
        let p = app.create_principal(&admin, "nightly job").await;
        let expires = (Utc::now() + chrono::Duration::days(30)).trunc_subsecs(0);
        let uri = format!("/iam/api-keys/{p}/credentials");
        let issued = app
            .call(Method::POST, &uri, Some(&admin), Some(json!({"name": "job", "selfRotation": true, "expiresAt": expires.to_rfc3339()})))
            .await;
        assert_eq!(issued.status, StatusCode::CREATED, "{store}: {}", issued.raw);
        assert_eq!(issued.body["credential"]["selfRotation"], true);
        let key_id = issued.body["credential"]["keyId"].as_str().unwrap().to_owned();
        let key = issued.str("apiKey").to_owned();
        let (plain_id, plain_key) = app.issue(&admin, &p).await;
        let own = app.token(&key).await;

        let rotate = |id: &str| format!("{uri}/{id}/rotate");
        let r = app.call(Method::POST, &rotate(&key_id), Some(&own), Some(json!({"gracePeriodSeconds": 600}))).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{store}: under an hour's grace: {}", r.raw);
        let r = app.call(Method::POST, &rotate(&plain_id), Some(&own), None).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{store}: another credential: {}", r.raw);
        let plain_own = app.token(&plain_key).await;
        let r = app.call(Method::POST, &rotate(&plain_id), Some(&plain_own), None).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{store}: a credential not issued for it: {}", r.raw);
        let r = app.call(Method::POST, &uri, Some(&own), Some(json!({"name": "more"}))).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{store}: nothing else is self-service: {}", r.raw);

        let r = app.call(Method::POST, &rotate(&key_id), Some(&own), Some(json!({"gracePeriodSeconds": 3600}))).await;
        assert_eq!(r.status, StatusCode::CREATED, "{store}: {}", r.raw);
        assert_eq!(time(&r.body["credential"]["expiresAt"]), expires, "{store}: the successor expires no later");
        assert_eq!(r.body["credential"]["selfRotation"], true, "{store}: and may rotate itself in turn");
        let successor_id = r.body["credential"]["keyId"].as_str().unwrap().to_owned();
        let successor_key = r.str("apiKey").to_owned();
        app.downstream_token(&successor_key).await;
        app.downstream_token(&key).await;

        // The owner finds the old key in a public repository and reports it: the successor its
        // holder made goes with it, while the administrator-issued key stays.
        let r = app.call(Method::POST, "/iam/credentials/revoke-leaked", None, Some(json!({"keys": [key]}))).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{store}: {}", r.raw);
        let listed = app.call(Method::GET, &format!("{uri}?include=all"), Some(&admin), None).await;
        let status = |id: &str| {
            let c = listed.body["items"].as_array().unwrap().iter().find(|c| c["keyId"] == id).unwrap().clone();
            (c["status"].as_str().unwrap().to_owned(), c["revocationReason"].as_str().map(str::to_owned))
        };
        assert_eq!(status(&key_id), ("Revoked".to_owned(), Some("leaked".to_owned())), "{store}");
        assert_eq!(status(&successor_id), ("Revoked".to_owned(), Some("leaked".to_owned())), "{store}: the self-made successor too");
        assert_eq!(status(&plain_id), ("Active".to_owned(), None), "{store}");
        let r = app.exchange_json(json!({"apiKey": successor_key})).await;
        assert_eq!(r.str("error"), "invalid_grant", "{store}: {}", r.raw);
    }
}
