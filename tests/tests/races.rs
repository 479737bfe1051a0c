//! Races on every store (embedded, and DynamoDB on moto): revoke against exchange, issue
//! against principal revoke, assign against unassign, and concurrent PATCHes under If-Match.
//! Each prints what it ran and found, and fails on any violation.
//!
//! Its own test binary (cargo runs test binaries one after another): the thousand races keep
//! the one serial moto busy, and tests sharing it at the same time would meet its queue.

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use chrono::{DateTime, Utc};
use iam_shared::model::MAX_ROLES_PER_PRINCIPAL;
use iam_tests::TestApp;
use serde_json::json;

/// Revoke/exchange races per store: a fixed budget. On DynamoDB every issue and revoke of one
/// organisation now also moves its audit chain's head, so ten racing writers retry each other
/// on moto's one thread; 200 races there keep the suite within its time.
const REVOKE_EXCHANGE_RACES: [(&str, usize); 2] = [("embedded", 1000), ("dynamodb", 200)];

/// The tests of this binary take turns: each loads the one serial moto to its limit, and two at
/// once would queue requests past the SDK's production timeouts (503s that test nothing).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A DynamoDB store on moto whose SDK waits out moto's queue: these races are about the order
/// of commits, and thirty concurrent requests on the one serial moto can queue past the
/// production attempt timeout (1.5 s), which would answer 503 and test nothing.
async fn patient_store() -> (Arc<iam_shared::store::DynamoStore>, iam_testkit::Tables) {
    iam_testkit::fresh_store_with_timeouts(std::time::Duration::from_secs(60), std::time::Duration::from_secs(30)).await
}

/// Every store, the DynamoDB one with [`patient_store`].
async fn every_store() -> Vec<(&'static str, TestApp)> {
    let (dynamo, _) = patient_store().await;
    vec![("embedded", TestApp::new().await), ("dynamodb", TestApp::with_state(iam_tests::state_with(dynamo).await).await)]
}

/// Takes this binary's turn on moto. The first turn empties moto: cargo runs test binaries one
/// after another, and moto copies every table it holds on each TransactWriteItems, so the
/// tables the suites before this one left behind would slow every race to the SDK's timeouts.
async fn turn() -> tokio::sync::MutexGuard<'static, ()> {
    static EMPTIED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    let guard = ONE_AT_A_TIME.lock().await;
    EMPTIED
        .get_or_init(|| async {
            let reset = format!("{}/moto-api/reset", iam_testkit::moto().endpoint);
            reqwest::Client::new().post(reset).send().await.expect("moto reset").error_for_status().expect("moto reset");
        })
        .await;
    guard
}
/// Races run this many at a time, so the store sees concurrent transactions from several.
const PARALLEL: usize = 10;

fn time(value: &serde_json::Value) -> Option<DateTime<Utc>> {
    value.as_str().map(|s| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc))
}

/// One race: two exchanges start with the revoke; one more starts after it returned.
/// Answers (tokens issued by the racing exchanges, violations).
async fn revoke_against_exchange(app: &TestApp, admin: &str, principal: &str) -> (usize, usize) {
    let (key_id, key) = app.issue(admin, principal).await;
    let exchange = || async { app.exchange_json(json!({ "apiKey": key })).await.status == StatusCode::OK };
    let revoke = async {
        let uri = format!("/iam/api-keys/{principal}/credentials/{key_id}/revoke");
        let r = app.call(Method::POST, &uri, Some(admin), None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    };
    let (a, b, ()) = tokio::join!(exchange(), exchange(), revoke);
    let mut violations = 0;
    // Once revoke has returned, nothing may authenticate with the key.
    if exchange().await {
        eprintln!("violation: an exchange that started after the revoke returned got a token ({key_id})");
        violations += 1;
    }
    // Every token a racing exchange got was committed (its conditional lastUsedAt write) before
    // the revocation, never after.
    let key_id = iam_shared::ids::KeyId::parse(&key_id).unwrap();
    let credential = app.state.store.get_credential(&key_id).await.unwrap().expect("the credential");
    let revoked_at = credential.revoked_at.expect("revoked");
    if let Some(used) = credential.last_used_at.filter(|used| *used > revoked_at) {
        eprintln!("violation: {key_id} was last used at {used}, after its revocation at {revoked_at}");
        violations += 1;
    }
    (usize::from(a) + usize::from(b), violations)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_token_is_issued_after_a_revoke_returns() {
    let _turn = turn().await;
    /// Races per app: on DynamoDB each chunk gets fresh tables, dropped afterwards (see
    /// `drop_tables`), so moto's cost per request stays what it was for the first race.
    const CHUNK: usize = 100;
    for (store, races) in REVOKE_EXCHANGE_RACES {
        let started = std::time::Instant::now();
        let (mut tokens, mut violations) = (0, 0);
        for _ in 0..races / CHUNK {
            let (app, tables) = match store {
                "embedded" => (TestApp::new().await, None),
                _ => {
                    let (dynamo, tables) = patient_store().await;
                    (TestApp::with_state(iam_tests::state_with(dynamo).await).await, Some(tables))
                }
            };
            let app = Arc::new(app);
            let admin = app.admin().await;
            for _ in 0..CHUNK / PARALLEL {
                // A principal per batch keeps each issue's count of live credentials small.
                let principal = app.create_principal(&admin, "racer").await;
                let mut batch = Vec::new();
                for _ in 0..PARALLEL {
                    let (app, admin, principal) = (app.clone(), admin.clone(), principal.clone());
                    batch.push(tokio::spawn(async move { revoke_against_exchange(&app, &admin, &principal).await }));
                }
                for race in batch {
                    let (t, v) = race.await.unwrap();
                    tokens += t;
                    violations += v;
                }
            }
            if let Some(tables) = tables {
                iam_testkit::drop_tables(&tables).await;
            }
        }
        println!(
            "{store}: {races} revoke/exchange races in {:.1} s: {tokens} tokens won before the revoke, {violations} violations",
            started.elapsed().as_secs_f64()
        );
        assert_eq!(violations, 0, "{store}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_credential_is_issued_to_a_principal_once_its_revoke_returns() {
    let _turn = turn().await;
    const ROUNDS: usize = 30;
    for (store, app) in every_store().await {
        let app = Arc::new(app);
        let admin = app.admin().await;
        let (mut issued, mut violations) = (0, 0);
        for _ in 0..ROUNDS {
            let principal = app.create_principal(&admin, "doomed").await;
            let issue = |app: Arc<TestApp>, admin: String, principal: String| async move {
                let uri = format!("/iam/api-keys/{principal}/credentials");
                let r = app.call(Method::POST, &uri, Some(&admin), Some(json!({"name": "late"}))).await;
                assert!(matches!(r.status, StatusCode::CREATED | StatusCode::CONFLICT), "{}", r.raw);
                (r.status == StatusCode::CREATED).then(|| r.str("apiKey").to_owned())
            };
            let racers: Vec<_> = (0..3).map(|_| tokio::spawn(issue(app.clone(), admin.clone(), principal.clone()))).collect();
            let revoked =
                app.call(Method::PATCH, &format!("/iam/api-keys/{principal}"), Some(&admin), Some(json!({"status": "Revoked"}))).await;
            assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.raw);
            let revoked_at = time(&revoked.body["updatedAt"]).expect("updatedAt");
            if issue(app.clone(), admin.clone(), principal.clone()).await.is_some() {
                violations += 1;
            }
            let mut keys = Vec::new();
            for r in racers {
                keys.extend(r.await.unwrap());
            }
            issued += keys.len();
            // Whatever won the race cannot authenticate: its principal is revoked.
            for key in keys {
                if app.exchange_json(json!({ "apiKey": key })).await.status == StatusCode::OK {
                    violations += 1;
                }
            }
            let listed = app.call(Method::GET, &format!("/iam/api-keys/{principal}/credentials?include=all"), Some(&admin), None).await;
            for c in listed.body["items"].as_array().unwrap() {
                if time(&c["createdAt"]).unwrap() > revoked_at {
                    violations += 1;
                }
            }
        }
        println!(
            "{store}: {ROUNDS} issue/principal-revoke rounds (3 issues each): {issued} issued before the revoke, {violations} violations"
        );
        assert_eq!(violations, 0, "{store}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn assign_and_unassign_races_leave_the_role_limit_exact() {
    let _turn = turn().await;
    const ROUNDS: usize = 40;
    for (store, app) in every_store().await {
        let app = Arc::new(app);
        let admin = app.admin().await;
        let mut roles = Vec::new();
        for i in 0..=MAX_ROLES_PER_PRINCIPAL {
            let body = json!({"name": format!("r{i}"), "permissions": ["ci:deploy"], "principalTypes": ["ApiKey"]});
            let r = app.call(Method::POST, "/iam/roles", Some(&admin), Some(body)).await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
            roles.push(r.str("id").to_owned());
        }
        let principal = app.create_principal(&admin, "contested").await;
        let uri = |role: &str| format!("/iam/api-keys/{principal}/role-assignments/{role}");
        let mut violations = 0;
        for round in 0..ROUNDS {
            let role = &roles[round % 3];
            let target = uri(role);
            let (a, b, c, d) = tokio::join!(
                app.call(Method::PUT, &target, Some(&admin), None),
                app.call(Method::DELETE, &target, Some(&admin), None),
                app.call(Method::PUT, &target, Some(&admin), None),
                app.call(Method::DELETE, &target, Some(&admin), None),
            );
            for r in [a, b, c, d] {
                assert!(r.status.is_success() || r.status == StatusCode::NOT_FOUND || r.status == StatusCode::CONFLICT, "{}", r.raw);
            }
            let listed = app.call(Method::GET, &format!("/iam/api-keys/{principal}/role-assignments"), Some(&admin), None).await;
            let held = listed.body["items"].as_array().unwrap().iter().filter(|a| a["roleId"] == role.as_str()).count();
            if held > 1 {
                violations += 1;
            }
        }
        // Clear whatever the races left, then the limit must be exactly 20: a drifted count
        // would refuse earlier or admit a 21st.
        for role in &roles {
            app.call(Method::DELETE, &uri(role), Some(&admin), None).await;
        }
        for role in &roles[..MAX_ROLES_PER_PRINCIPAL] {
            let r = app.call(Method::PUT, &uri(role), Some(&admin), None).await;
            if !r.status.is_success() {
                violations += 1;
            }
        }
        let over = app.call(Method::PUT, &uri(&roles[MAX_ROLES_PER_PRINCIPAL]), Some(&admin), None).await;
        if over.status.is_success() {
            violations += 1;
        }
        println!(
            "{store}: {ROUNDS} assign/unassign rounds (2 assigns + 2 unassigns each), then the 20-role limit: {violations} violations"
        );
        assert_eq!(violations, 0, "{store}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_concurrent_patches_under_one_etag_exactly_one_wins() {
    let _turn = turn().await;
    const ROUNDS: usize = 25;
    const WRITERS: usize = 4;
    for (store, app) in every_store().await {
        let app = Arc::new(app);
        let admin = app.admin().await;
        let principal = app.create_principal(&admin, "contested").await;
        let uri = format!("/iam/api-keys/{principal}");
        let mut violations = 0;
        for round in 0..ROUNDS {
            let etag = app.call(Method::GET, &uri, Some(&admin), None).await.header("etag").unwrap().to_owned();
            let writers: Vec<_> = (0..WRITERS)
                .map(|w| {
                    let (app, admin, uri, etag) = (app.clone(), admin.clone(), uri.clone(), etag.clone());
                    tokio::spawn(async move {
                        let body = json!({"displayName": format!("round {round} writer {w}")});
                        app.call_with(Method::PATCH, &uri, Some(&admin), Some(body), &[("if-match", &etag)]).await
                    })
                })
                .collect();
            let mut won = Vec::new();
            for w in writers {
                let r = w.await.unwrap();
                match r.status {
                    StatusCode::OK => won.push(r.body["displayName"].clone()),
                    StatusCode::PRECONDITION_FAILED => {}
                    other => panic!("{store}: {other}: {}", r.raw),
                }
            }
            let now = app.call(Method::GET, &uri, Some(&admin), None).await;
            if won.len() != 1 || now.body["displayName"] != won[0] {
                violations += 1;
            }
        }
        println!("{store}: {ROUNDS} rounds of {WRITERS} PATCHes under one If-Match: {violations} violations");
        assert_eq!(violations, 0, "{store}");
    }
}

/// Two administrators, each with one key, revoke each other's key at the same moment: exactly
/// one wins, the other is refused (409, the last-administrator rule), and the organisation
/// keeps a usable administrator. Answers the violations (0 or 1).
async fn administrators_revoking_each_other(app: &TestApp, round: usize) -> usize {
    let org = iam_shared::ids::OrgId::parse(&format!("duel-{round}")).unwrap();
    let a_key = app.state.bootstrap(&org).await.unwrap().expect("a new organisation");
    let a_key = secrecy::ExposeSecret::expose_secret(&a_key.to_secret_string()).to_owned();
    let a_token = app.token(&a_key).await;
    let a_key_id = a_key.split_once('.').unwrap().0.trim_start_matches("ik_").to_owned();
    let a = app.state.store.list_principals(&org, 1, None).await.unwrap().items[0].id.to_string();
    let b = app.create_principal(&a_token, "second admin").await;
    app.assign(&a_token, &b, "iam-admin").await;
    let (b_key_id, b_key) = app.issue(&a_token, &b).await;
    let b_token = app.token(&b_key).await;
    let revoke = |token: String, principal: String, key_id: String| async move {
        app.call(Method::POST, &format!("/iam/api-keys/{principal}/credentials/{key_id}/revoke"), Some(&token), None).await
    };
    let (by_a, by_b) = tokio::join!(revoke(a_token.clone(), b.clone(), b_key_id.clone()), revoke(b_token, a.clone(), a_key_id.clone()));
    // The loser is refused by the last-administrator rule (409), or, when the winner committed
    // before the loser authenticated, by having no key left (401). Either way its revoke wrote
    // nothing: exactly one of the two keys is revoked.
    let mut statuses = [by_a.status, by_b.status];
    statuses.sort();
    let one_refused = matches!(statuses, [StatusCode::OK, StatusCode::UNAUTHORIZED | StatusCode::CONFLICT]);
    let mut revoked = 0;
    for key_id in [&a_key_id, &b_key_id] {
        let key_id = iam_shared::ids::KeyId::parse(key_id).unwrap();
        let credential = app.state.store.get_credential(&key_id).await.unwrap().expect("the credential");
        revoked += usize::from(credential.status == iam_shared::model::CredentialStatus::Revoked);
    }
    if !one_refused || revoked != 1 {
        eprintln!(
            "violation in round {round}: {revoked} keys revoked; A's revoke answered {} ({}), B's {} ({})",
            by_a.status, by_a.raw, by_b.status, by_b.raw
        );
        return 1;
    }
    0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_administrators_revoking_each_other_leave_exactly_one() {
    let _turn = turn().await;
    const ROUNDS: usize = 100;
    // Four duels at a time: each loser searches its organisation for another administrator,
    // and more would queue the one serial moto past the SDK's production timeouts (a 503,
    // which says nothing about who won).
    const DUELS: usize = 4;
    for (store, app) in every_store().await {
        let started = std::time::Instant::now();
        let app = Arc::new(app);
        let mut violations = 0;
        for chunk in 0..ROUNDS / DUELS {
            let mut batch = Vec::new();
            for i in 0..DUELS {
                let app = app.clone();
                batch.push(tokio::spawn(async move { administrators_revoking_each_other(&app, chunk * DUELS + i).await }));
            }
            for round in batch {
                violations += round.await.unwrap();
            }
        }
        println!("{store}: {ROUNDS} rounds of two administrators revoking each other, {violations} violations, {:?}", started.elapsed());
        assert_eq!(violations, 0, "{store}: each round must have exactly one winner");
    }
}
