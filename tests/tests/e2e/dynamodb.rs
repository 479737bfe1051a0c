//! The DynamoDB store and the Secrets Manager key source, over HTTP against moto.

use std::sync::Arc;

use iam_shared::keys::{AWSCURRENT, AWSPENDING, KeySource, Keyring, SecretsManagerKeys};
use iam_shared::token::{SigningKey, SigningKeyDocument, TokenService};

mod contract {
    iam_shared::store_contract_tests!(iam_testkit::fresh_store());
}

fn settings() -> iam_shared::token::TokenSettings {
    iam_tests::config().tokens
}

async fn secrets() -> aws_sdk_secretsmanager::Client {
    aws_sdk_secretsmanager::Client::new(&iam_testkit::sdk_config().await)
}

#[tokio::test]
async fn signing_keys_follow_the_staging_labels() {
    let first = SigningKeyDocument::generate().unwrap();
    let secret = iam_testkit::create_signing_secret(&first).await;
    let client = secrets().await;
    // Labels only here; the activation delay has its own test (rotation.rs).
    let source: Arc<dyn KeySource> =
        Arc::new(SecretsManagerKeys::new(client.clone(), secret.clone()).with_activation_delay(std::time::Duration::ZERO));

    let only = source.load().await.unwrap();
    assert_eq!(only.current.kid, first.kid);
    assert!(only.others.is_empty(), "no AWSPREVIOUS or AWSPENDING yet");

    // A token signed while `first` was current...
    let old_service = TokenService::new(settings(), SigningKey::from_document(&first).unwrap(), vec![]).unwrap();
    let (pid, org, kid) =
        (iam_shared::ids::PrincipalId::generate(), iam_shared::ids::OrgId::parse("acme").unwrap(), iam_shared::ids::KeyId::generate());
    let grant =
        iam_shared::token::Grant { principal_id: &pid, org_id: &org, key_id: &kid, roles: &[], scope: &[], audience: iam_tests::AUDIENCE };
    let (old_token, _) = old_service.sign(&grant, iam_shared::model::now()).unwrap();

    // ...a new version becomes AWSCURRENT and `first` becomes AWSPREVIOUS.
    let second = SigningKeyDocument::generate().unwrap();
    client.put_secret_value().secret_id(&secret).secret_string(second.to_json()).send().await.unwrap();
    let keyring = Keyring::new(settings(), source.clone(), std::time::Duration::from_secs(300)).await.unwrap();
    let service = keyring.current().await;
    let kids: Vec<String> = service.jwks().keys.into_iter().map(|k| k.kid).collect();
    assert_eq!(kids, vec![second.kid.clone(), first.kid.clone()], "current first, then previous");
    let (new_token, _) = service.sign(&grant, iam_shared::model::now()).unwrap();
    assert_eq!(jsonwebtoken::decode_header(&new_token).unwrap().kid.as_deref(), Some(second.kid.as_str()), "signs with AWSCURRENT");
    service.verify(&old_token, iam_tests::AUDIENCE).expect("a token signed with the previous key still verifies");

    // A pending version is published before it signs anything.
    let third = SigningKeyDocument::generate().unwrap();
    client.put_secret_value().secret_id(&secret).secret_string(third.to_json()).version_stages(AWSPENDING).send().await.unwrap();
    let keys = source.load().await.unwrap();
    assert_eq!(keys.current.kid, second.kid);
    let all: Vec<String> = keys.others.iter().map(|d| d.kid.clone()).collect();
    assert_eq!(all, vec![first.kid.clone(), third.kid.clone()]);
    let _ = AWSCURRENT;
}

#[tokio::test]
async fn a_missing_or_corrupt_secret_is_an_error_that_names_no_secret() {
    let client = secrets().await;
    let ttl = std::time::Duration::from_secs(1);
    let missing = Arc::new(SecretsManagerKeys::new(client.clone(), iam_testkit::unique("absent")));
    assert!(Keyring::new(settings(), missing, ttl).await.is_err());
    for body in [r#"{"kid":"k1","alg":"RS256","privateKeyPem":"MIIsecretmaterial"}"#, r#"{"kid":"k1","privateKeyPem":"MIIsecretmaterial"#] {
        let name = iam_testkit::unique("corrupt");
        client.create_secret().name(&name).secret_string(body).send().await.unwrap();
        let err = Keyring::new(settings(), Arc::new(SecretsManagerKeys::new(client.clone(), name)), ttl).await.unwrap_err().to_string();
        assert!(!err.contains("MIIsecretmaterial"), "{err}");
    }
}

#[tokio::test]
async fn the_keyring_reloads_after_its_ttl() {
    let first = SigningKeyDocument::generate().unwrap();
    let secret = iam_testkit::create_signing_secret(&first).await;
    let client = secrets().await;
    let source: Arc<dyn KeySource> =
        Arc::new(SecretsManagerKeys::new(client.clone(), secret.clone()).with_activation_delay(std::time::Duration::ZERO));
    let keyring = Keyring::new(settings(), source, std::time::Duration::from_millis(200)).await.unwrap();
    assert_eq!(keyring.current().await.jwks().keys.len(), 1);
    let second = SigningKeyDocument::generate().unwrap();
    client.put_secret_value().secret_id(&secret).secret_string(second.to_json()).send().await.unwrap();
    assert_eq!(keyring.current().await.jwks().keys.len(), 1, "cached until the TTL passes");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let kids: Vec<String> = keyring.current().await.jwks().keys.into_iter().map(|k| k.kid).collect();
    assert_eq!(kids, vec![second.kid, first.kid]);
}
