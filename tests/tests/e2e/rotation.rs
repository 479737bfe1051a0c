//! Signing-key rotation against moto: the four Secrets Manager steps run while exchanges and
//! verifications loop, and no verification fails.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use iam_api::state::build_state;
use iam_shared::signing_keys::{KeySource, RotationStep, RotationTiming, SecretsManagerKeys, SigningSecrets, read_public_set, rotate};
use iam_shared::store::EmbeddedStore;
use iam_shared::token::{KeyError, SigningKeyDocument};
use iam_tests::{AUDIENCE, ISSUER, RouterFetch, TestApp};
use iam_verifier::{Expectations, RemoteVerifier};
use serde_json::json;

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

/// A signing secret with an initial key and one finished rotation under `timing`: the
/// initial key is `AWSPREVIOUS`, a new one `AWSCURRENT`.
async fn secret_rotated_once(
    timing: RotationTiming,
) -> (SigningKeyDocument, iam_shared::signing_keys::SigningSecrets, aws_sdk_secretsmanager::Client) {
    let initial = SigningKeyDocument::generate().unwrap();
    let secret = iam_testkit::create_signing_secret(&initial).await;
    let client = aws_sdk_secretsmanager::Client::new(&iam_testkit::sdk_config().await);
    let token = iam_testkit::version_token();
    for step in [RotationStep::Create, RotationStep::Set, RotationStep::Test, RotationStep::Finish] {
        rotate(&client, &secret, &token, step, timing).await.unwrap();
    }
    (initial, secret, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotation_with_zero_failed_verifications() {
    let initial = SigningKeyDocument::generate().unwrap();
    let secret = iam_testkit::create_signing_secret(&initial).await;
    let client = aws_sdk_secretsmanager::Client::new(&iam_testkit::sdk_config().await);
    // No activation delay, and a 100 ms key cache: the whole rotation plays out in seconds.
    let source: Arc<dyn KeySource> = Arc::new(SecretsManagerKeys::new(client.clone(), secret.clone()));
    let mut config = iam_tests::config();
    config.signing_key_ttl = Duration::from_millis(100);
    // The loop below exchanges one key as fast as it can; the per-key limit is another test's.
    config.limits.exchanges_per_key_per_second = u32::MAX;
    let state = build_state(&config, Arc::new(EmbeddedStore::in_memory().unwrap()), source).await.unwrap();
    let app = Arc::new(TestApp::with_state(state).await);
    let verifier = Arc::new(
        RemoteVerifier::new(
            format!("{ISSUER}/.well-known/jwks.json"),
            Expectations::new(ISSUER, AUDIENCE),
            RouterFetch(app.router.clone()),
        )
        .with_cache_times(Duration::from_secs(3600), Duration::from_millis(20)),
    );
    let before = app.downstream_token(&app.acme_key).await;
    assert_eq!(kid_of(&before), initial.kid);

    let stop = Arc::new(AtomicBool::new(false));
    let (verified, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let signed_kids = Arc::new(std::sync::Mutex::new(Vec::new()));
    let looper = {
        let (app, verifier, stop, verified, failed, signed_kids, before) =
            (app.clone(), verifier.clone(), stop.clone(), verified.clone(), failed.clone(), signed_kids.clone(), before.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = app.exchange_json(json!({"apiKey": app.acme_key})).await;
                let token = r.str("access_token").to_owned();
                signed_kids.lock().unwrap().push(kid_of(&token));
                for t in [&token, &before] {
                    match verifier.verify(t).await {
                        Ok(_) => verified.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            eprintln!("verification failed: {e}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            }
        })
    };

    let token = iam_testkit::version_token();
    rotate(&client, &secret, &token, RotationStep::Create, RotationTiming::IMMEDIATE).await.unwrap();
    rotate(&client, &secret, &token, RotationStep::Create, RotationTiming::IMMEDIATE).await.unwrap(); // retried by Secrets Manager: idempotent
    let pending = SecretsManagerKeys::new(client.clone(), secret.clone()).stage("AWSPENDING").await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let jwks = app.call(axum::http::Method::GET, "/iam/.well-known/jwks.json", None, None).await;
    assert!(jwks.raw.contains(&pending.kid), "the pending key is published before it signs: {}", jwks.raw);
    let signed_before_finish = signed_kids.lock().unwrap().clone();
    assert!(!signed_before_finish.is_empty());
    assert!(signed_before_finish.iter().all(|k| *k == initial.kid), "nothing is signed with the pending key");

    rotate(&client, &secret, &token, RotationStep::Set, RotationTiming::IMMEDIATE).await.unwrap();
    rotate(&client, &secret, &token, RotationStep::Test, RotationTiming::IMMEDIATE).await.unwrap();
    rotate(&client, &secret, &token, RotationStep::Finish, RotationTiming::IMMEDIATE).await.unwrap();
    rotate(&client, &secret, &token, RotationStep::Finish, RotationTiming::IMMEDIATE).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    stop.store(true, Ordering::Relaxed);
    looper.await.unwrap();

    assert_eq!(failed.load(Ordering::Relaxed), 0, "zero failed verifications");
    assert!(verified.load(Ordering::Relaxed) > 10);
    let kids = signed_kids.lock().unwrap().clone();
    assert_eq!(kids.last(), Some(&pending.kid), "the promoted key signs after finishSecret");
    verifier.verify(&before).await.expect("a token signed before the rotation still verifies");
    let jwks = app.call(axum::http::Method::GET, "/iam/.well-known/jwks.json", None, None).await;
    assert!(jwks.raw.contains(&initial.kid) && jwks.raw.contains(&pending.kid), "current and previous published");
}

#[tokio::test]
async fn a_new_key_waits_out_the_activation_delay_before_signing() {
    let timing = RotationTiming { activation_delay: Duration::from_secs(3600), retirement: Duration::ZERO };
    let (initial, secret, client) = secret_rotated_once(timing).await;
    let keys = SecretsManagerKeys::new(client.clone(), secret.clone()).load().await.unwrap();
    assert_eq!(keys.signer.unwrap().kid(), initial.kid, "the previous key keeps signing for now");
    assert_eq!(keys.published.len(), 2, "the new key is published");
    let set = read_public_set(&client, &secret.public).await.unwrap().unwrap();
    let new = set.keys.iter().find(|k| k.kid() != initial.kid).unwrap();
    assert_eq!(new.activates_at - new.published_at, 3600, "active one activation delay after its publication");
    let initial_entry = set.get(&initial.kid).unwrap();
    assert!(initial_entry.activates_at <= new.published_at, "the initial key keeps its own entry");
}

#[tokio::test]
async fn the_first_rotation_replaces_a_placeholder() {
    let client = aws_sdk_secretsmanager::Client::new(&iam_testkit::sdk_config().await);
    let secret = SigningSecrets { private: iam_testkit::unique("placeholder"), public: iam_testkit::unique("public-placeholder") };
    client.create_secret().name(&secret.private).secret_string(r#"{"placeholder": true}"#).send().await.unwrap();
    client.create_secret().name(&secret.public).secret_string(r#"{"keys": []}"#).send().await.unwrap();
    let token = iam_testkit::version_token();
    // With the template's activation delay: the first key signs at once all the same, as no
    // verifier can hold tokens from any other.
    let timing = RotationTiming { activation_delay: iam_shared::signing_keys::DEFAULT_ACTIVATION_DELAY, retirement: Duration::ZERO };
    for step in [RotationStep::Create, RotationStep::Set, RotationStep::Test, RotationStep::Finish] {
        rotate(&client, &secret, &token, step, timing).await.unwrap();
    }
    let keys = SecretsManagerKeys::new(client.clone(), secret.clone()).load().await.unwrap();
    assert_eq!(keys.published.len(), 1, "the placeholder is not published");
    let current = SecretsManagerKeys::new(client, secret).stage("AWSCURRENT").await.unwrap().unwrap();
    assert_eq!(keys.signer.unwrap().kid(), current.kid);
    iam_shared::token::self_test(&current).unwrap();
}

#[tokio::test]
async fn the_rotation_function_handles_secrets_manager_events() {
    let client = aws_sdk_secretsmanager::Client::new(&iam_testkit::sdk_config().await);
    let secret = iam_testkit::unique("event");
    let public = iam_testkit::unique("event-public");
    client.create_secret().name(&secret).secret_string("{}").send().await.unwrap();
    let token = iam_testkit::version_token();
    for step in ["createSecret", "setSecret", "testSecret", "finishSecret"] {
        let event: iam_functions::rotate_signing_key::RotationEvent =
            serde_json::from_value(json!({"Step": step, "SecretId": secret, "ClientRequestToken": token})).unwrap();
        iam_functions::rotate_signing_key::handle(&client, event, &public, RotationTiming::IMMEDIATE).await.unwrap();
    }
    let set = read_public_set(&client, &public).await.unwrap().expect("the rotation published the key");
    assert_eq!(set.keys.len(), 1);
    let bad: iam_functions::rotate_signing_key::RotationEvent =
        serde_json::from_value(json!({"Step": "dropSecret", "SecretId": secret, "ClientRequestToken": token})).unwrap();
    assert!(iam_functions::rotate_signing_key::handle(&client, bad, &public, RotationTiming::IMMEDIATE).await.is_err());
}

#[tokio::test]
async fn a_second_rotation_waits_until_the_previous_keys_tokens_are_gone() {
    let initial = SigningKeyDocument::generate().unwrap();
    let secret = iam_testkit::create_signing_secret(&initial).await;
    let client = aws_sdk_secretsmanager::Client::new(&iam_testkit::sdk_config().await);
    let timing = RotationTiming { activation_delay: Duration::ZERO, retirement: Duration::from_secs(3600) };
    let steps = [RotationStep::Create, RotationStep::Set, RotationStep::Test, RotationStep::Finish];
    // With no previous key, a rotation unpublishes nothing: it may run at once.
    let first = iam_testkit::version_token();
    for step in steps {
        rotate(&client, &secret, &first, step, timing).await.unwrap();
    }
    let published = || async {
        let keys = SecretsManagerKeys::new(client.clone(), secret.clone()).load().await.unwrap();
        let mut kids: Vec<String> = keys.published.iter().map(|k| k.kid.clone()).collect();
        kids.sort();
        kids
    };
    let before = published().await;
    assert!(before.contains(&initial.kid), "{before:?}");

    // A second one now would unpublish the initial key, whose tokens may still be valid.
    let second = iam_testkit::version_token();
    let refused = rotate(&client, &secret, &second, RotationStep::Create, timing).await.unwrap_err();
    let KeyError::RotationTooSoon { retry_after_secs } = refused else { panic!("{refused}") };
    assert!((3500..=3600).contains(&retry_after_secs), "it says when a rotation may run: {retry_after_secs}");
    let versions = client.describe_secret().secret_id(&secret.private).send().await.unwrap();
    assert!(!versions.version_ids_to_stages().unwrap().contains_key(&second), "a refused rotation stages nothing");
    assert_eq!(published().await, before, "a refused rotation publishes and unpublishes nothing");

    // Once the previous key's tokens are gone (here: no wait), it runs.
    for step in steps {
        rotate(&client, &secret, &second, step, RotationTiming::IMMEDIATE).await.unwrap();
    }
    assert!(!published().await.contains(&initial.kid));
}

#[tokio::test]
async fn a_late_promotion_restarts_the_wait() {
    let initial = SigningKeyDocument::generate().unwrap();
    let secret = iam_testkit::create_signing_secret(&initial).await;
    let client = aws_sdk_secretsmanager::Client::new(&iam_testkit::sdk_config().await);
    let steps = [RotationStep::Create, RotationStep::Set, RotationStep::Test, RotationStep::Finish];
    let first = iam_testkit::version_token();
    for step in steps {
        rotate(&client, &secret, &first, step, RotationTiming::IMMEDIATE).await.unwrap();
    }
    // The second rotation's key is created, but promoted only after the wait has passed
    // (a rotation stuck in testSecret, retried later): the initial key signed until then.
    // The tag's allowance dates the promotion 10 s ahead; whole-second creation times may
    // age the key by up to 1 s. A 6 s retirement still tells "counted from the promotion"
    // (wait ≈ 16 s) from "counted from creation" (6.2 s old: no wait), with seconds of slack.
    let timing = RotationTiming { activation_delay: Duration::ZERO, retirement: Duration::from_secs(6) };
    let second = iam_testkit::version_token();
    for step in &steps[..3] {
        rotate(&client, &secret, &second, *step, RotationTiming::IMMEDIATE).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(6200)).await;
    rotate(&client, &secret, &second, RotationStep::Finish, timing).await.unwrap();
    let third = iam_testkit::version_token();
    let refused = rotate(&client, &secret, &third, RotationStep::Create, timing).await.unwrap_err();
    assert!(matches!(refused, KeyError::RotationTooSoon { .. }), "counted from the promotion, not the key's creation: {refused}");
}

/// One rotation watched by a verifier that behaves like API Gateway's JWT authorizer, scaled
/// down: it keeps a JWKS for `cache` and never refetches sooner, even for an unknown `kid`,
/// and it fetched its JWKS just before the rotation began. Returns the failed verifications
/// and whether the new key signed during the watch.
async fn watch_rotation_with_a_strict_verifier(activation_delay: Duration, cache: Duration, stop_at_first_failure: bool) -> (usize, bool) {
    let initial = SigningKeyDocument::generate().unwrap();
    let secret = iam_testkit::create_signing_secret(&initial).await;
    let client = aws_sdk_secretsmanager::Client::new(&iam_testkit::sdk_config().await);
    let source: Arc<dyn KeySource> = Arc::new(SecretsManagerKeys::new(client.clone(), secret.clone()));
    let mut config = iam_tests::config();
    config.signing_key_ttl = Duration::from_millis(100);
    let state = build_state(&config, Arc::new(EmbeddedStore::in_memory().unwrap()), source).await.unwrap();
    let app = TestApp::with_state(state).await;
    let verifier = RemoteVerifier::new(
        format!("{ISSUER}/.well-known/jwks.json"),
        Expectations::new(ISSUER, AUDIENCE),
        RouterFetch(app.router.clone()),
    )
    .with_cache_times(cache, cache);
    verifier.verify(&app.downstream_token(&app.acme_key).await).await.expect("the verifier's JWKS holds the initial key");

    let token = iam_testkit::version_token();
    let timing = RotationTiming { activation_delay, retirement: Duration::ZERO };
    for step in [RotationStep::Create, RotationStep::Set, RotationStep::Test, RotationStep::Finish] {
        rotate(&client, &secret, &token, step, timing).await.unwrap();
    }
    let watch_until = std::time::Instant::now() + activation_delay + cache + Duration::from_millis(500);
    let (mut failed, mut new_key_signed) = (0, false);
    while std::time::Instant::now() < watch_until {
        let signed = app.downstream_token(&app.acme_key).await;
        new_key_signed |= kid_of(&signed) != initial.kid;
        if verifier.verify(&signed).await.is_err() {
            failed += 1;
            if stop_at_first_failure {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (failed, new_key_signed)
}

#[tokio::test]
async fn a_verifier_that_caches_the_jwks_never_meets_an_unknown_kid() {
    // Verifier cache 2 s, signer cache 0.1 s, and almost 3 s more for moto's whole-second
    // creation times and a loaded machine: the scaled-down form of the 2 h + 5 min + 5 min
    // default.
    let (failed, new_key_signed) = watch_rotation_with_a_strict_verifier(Duration::from_secs(5), Duration::from_secs(2), false).await;
    assert!(new_key_signed, "the watch lasted until the new key signed");
    assert_eq!(failed, 0, "every token verified with the JWKS the verifier held");
    // The control: without the activation delay, the same kind of verifier (its cache long
    // enough to outlast the rotation steps on any machine) refuses the new key's first
    // tokens, so the delay is what the zero above rests on.
    let (failed, _) = watch_rotation_with_a_strict_verifier(Duration::ZERO, Duration::from_secs(10), true).await;
    assert!(failed > 0, "with no activation delay a caching verifier meets an unknown kid");
}

/// A compromised current key, withdrawn in one step through the rotation function: it stops
/// signing and leaves the JWKS at once, its tokens stop verifying, a new key signs, the older
/// previous key stays published, and the next scheduled rotation waits as after a promotion.
#[tokio::test]
async fn withdrawing_the_current_key_replaces_it_and_kills_its_tokens() {
    use iam_functions::rotate_signing_key::{FunctionEvent, handle_withdrawal};
    let (initial, secret, client) = secret_rotated_once(RotationTiming::IMMEDIATE).await;
    let source: Arc<dyn KeySource> = Arc::new(SecretsManagerKeys::new(client.clone(), secret.clone()));
    let mut config = iam_tests::config();
    config.signing_key_ttl = Duration::from_millis(100);
    let state = build_state(&config, Arc::new(EmbeddedStore::in_memory().unwrap()), source).await.unwrap();
    let app = TestApp::with_state(state).await;
    let management = json!({"apiKey": app.acme_key, "audience": iam_tests::MANAGEMENT_AUDIENCE});
    let stolen = app.exchange_json(management.clone()).await.str("access_token").to_owned();
    let compromised = kid_of(&stolen);
    assert_ne!(compromised, initial.kid, "the rotated-in key signs");
    assert_eq!(app.call(axum::http::Method::GET, "/iam/whoami", Some(&stolen), None).await.status, 200);

    let event: FunctionEvent = serde_json::from_value(json!({"WithdrawKid": compromised, "SecretId": secret.private})).unwrap();
    let FunctionEvent::Withdraw(event) = event else { panic!("a withdrawal event") };
    let done = handle_withdrawal(&client, event, &secret.public).await.unwrap();
    assert_eq!(done.withdrawn, compromised);
    assert!(done.signer != compromised && done.signer != initial.kid, "a new key signs: {done:?}");
    let mut published = done.published.clone();
    published.sort();
    let mut expected = vec![initial.kid.clone(), done.signer.clone()];
    expected.sort();
    assert_eq!(published, expected, "the older previous key stays published");
    let keys = SecretsManagerKeys::new(client.clone(), secret.clone());
    assert_eq!(keys.stage("AWSCURRENT").await.unwrap().unwrap().kid, done.signer);
    assert_eq!(keys.stage("AWSPREVIOUS").await.unwrap().unwrap().kid, initial.kid);

    tokio::time::sleep(Duration::from_millis(300)).await; // the app's key cache
    assert_eq!(app.call(axum::http::Method::GET, "/iam/whoami", Some(&stolen), None).await.status, 401, "its tokens die");
    let fresh = app.exchange_json(management).await.str("access_token").to_owned();
    assert_eq!(kid_of(&fresh), done.signer);
    assert_eq!(app.call(axum::http::Method::GET, "/iam/whoami", Some(&fresh), None).await.status, 200);
    let jwks = app.call(axum::http::Method::GET, "/iam/.well-known/jwks.json", None, None).await;
    assert!(!jwks.raw.contains(&compromised) && jwks.raw.contains(&done.signer), "{}", jwks.raw);

    // A rotation right after must wait: the replacement counts as just promoted.
    let waiting = RotationTiming { activation_delay: Duration::ZERO, retirement: Duration::from_secs(3600) };
    let refused = rotate(&client, &secret, &iam_testkit::version_token(), RotationStep::Create, waiting).await.unwrap_err();
    assert!(matches!(refused, KeyError::RotationTooSoon { .. }), "{refused}");
    // Withdrawing it again (or any unknown key) changes nothing.
    let before = read_public_set(&client, &secret.public).await.unwrap();
    assert!(iam_shared::signing_keys::withdraw(&client, &secret, &compromised).await.is_err());
    assert_eq!(read_public_set(&client, &secret.public).await.unwrap(), before);
}

/// Withdrawing the previous key while the current one is still in its activation delay: the
/// current key signs at once, and the previous one is gone from the set and the secret.
#[tokio::test]
async fn withdrawing_the_previous_key_makes_the_current_one_sign_now() {
    let timing = RotationTiming { activation_delay: Duration::from_secs(3600), retirement: Duration::ZERO };
    let (initial, secret, client) = secret_rotated_once(timing).await;
    let keys = SecretsManagerKeys::new(client.clone(), secret.clone());
    assert_eq!(keys.load().await.unwrap().signer.unwrap().kid(), initial.kid, "the previous key signs during the delay");
    let current = keys.stage("AWSCURRENT").await.unwrap().unwrap();

    let done = iam_shared::signing_keys::withdraw(&client, &secret, &initial.kid).await.unwrap();
    assert_eq!((done.signer.as_str(), done.published.clone()), (current.kid.as_str(), vec![current.kid.clone()]));
    let loaded = keys.load().await.unwrap();
    assert_eq!(loaded.signer.unwrap().kid(), current.kid, "the current key signs now");
    assert_eq!(loaded.published.iter().map(|k| k.kid.clone()).collect::<Vec<_>>(), vec![current.kid.clone()]);
    assert!(keys.stage("AWSPREVIOUS").await.unwrap().is_none(), "the withdrawn version keeps no label");
    let set = read_public_set(&client, &secret.public).await.unwrap().unwrap();
    let entry = set.get(&current.kid).unwrap();
    assert!(entry.activates_at <= std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64);
}
