//! The DynamoDB store and the Secrets Manager key source, over HTTP against moto.

use std::sync::Arc;
use std::time::Duration;

use iam_shared::signing_keys::{AWSPENDING, KeySource, Keyring, PublishedKeys, SecretsManagerKeys, SigningSecrets, publish_staged_keys};
use iam_shared::token::{SigningKey, SigningKeyDocument, TokenService};

mod contract {
    iam_shared::store_contract_tests!(iam_testkit::fresh_store());
}

fn settings() -> iam_shared::token::TokenSettings {
    iam_tests::config().tokens
}

async fn secrets_client() -> aws_sdk_secretsmanager::Client {
    aws_sdk_secretsmanager::Client::new(&iam_testkit::sdk_config().await)
}

#[tokio::test]
async fn signing_keys_follow_the_staging_labels() {
    let first = SigningKeyDocument::generate().unwrap();
    let secrets = iam_testkit::create_signing_secret(&first).await;
    let client = secrets_client().await;
    let source: Arc<dyn KeySource> = Arc::new(SecretsManagerKeys::new(client.clone(), secrets.clone()));
    let verifying: Arc<dyn KeySource> = Arc::new(PublishedKeys::new(client.clone(), secrets.public.clone()));

    let only = source.load().await.unwrap();
    assert_eq!(only.signer.as_ref().map(|k| k.kid().to_owned()), Some(first.kid.clone()));
    assert_eq!(kids(&only.published), vec![first.kid.clone()], "no AWSPREVIOUS or AWSPENDING yet");
    assert!(verifying.load().await.unwrap().signer.is_none(), "a verifier is given no private key");

    // A token signed while `first` was current...
    let old_service = TokenService::new(settings(), Some(SigningKey::from_document(&first).unwrap()), vec![]).unwrap();
    let (pid, org, kid) =
        (iam_shared::ids::PrincipalId::generate(), iam_shared::ids::OrgId::parse("acme").unwrap(), iam_shared::ids::KeyId::generate());
    let grant =
        iam_shared::token::Grant { principal_id: &pid, org_id: &org, key_id: &kid, roles: &[], scope: &[], audience: iam_tests::AUDIENCE };
    let (old_token, _) = old_service.sign(&grant, iam_shared::model::now()).unwrap();

    // ...a new version becomes AWSCURRENT and `first` becomes AWSPREVIOUS. Until it is in the
    // public key set it never signs: verifiers could not check its tokens.
    let second = SigningKeyDocument::generate().unwrap();
    client.put_secret_value().secret_id(&secrets.private).secret_string(second.to_json()).send().await.unwrap();
    let unpublished = source.load().await.unwrap();
    assert_eq!(unpublished.signer.as_ref().map(|k| k.kid().to_owned()), Some(first.kid.clone()), "the published previous key signs");
    publish_staged_keys(&client, &secrets, None, Duration::ZERO).await.unwrap();
    let keyring = Keyring::new(settings(), source.clone(), Duration::from_secs(300)).await.unwrap();
    let service = keyring.current().await;
    let mut published = kids(&service.jwks().keys);
    assert_eq!(published.remove(0), second.kid, "the signing key first");
    assert_eq!(published, vec![first.kid.clone()]);
    let (new_token, _) = service.sign(&grant, iam_shared::model::now()).unwrap();
    assert_eq!(jsonwebtoken::decode_header(&new_token).unwrap().kid.as_deref(), Some(second.kid.as_str()), "signs with AWSCURRENT");
    service.verify(&old_token, iam_tests::AUDIENCE).expect("a token signed with the previous key still verifies");
    let verifier = Keyring::new(settings(), verifying.clone(), Duration::from_secs(300)).await.unwrap().current().await;
    verifier.verify(&new_token, iam_tests::AUDIENCE).expect("a verifier from the public key set accepts the new key");
    verifier.verify(&old_token, iam_tests::AUDIENCE).expect("... and the previous one");
    assert!(verifier.sign(&grant, iam_shared::model::now()).is_err(), "and cannot sign");

    // A pending version is published before it signs anything.
    let third = SigningKeyDocument::generate().unwrap();
    client.put_secret_value().secret_id(&secrets.private).secret_string(third.to_json()).version_stages(AWSPENDING).send().await.unwrap();
    publish_staged_keys(&client, &secrets, None, Duration::ZERO).await.unwrap();
    let keys = source.load().await.unwrap();
    assert_eq!(keys.signer.as_ref().map(|k| k.kid().to_owned()), Some(second.kid.clone()));
    assert_eq!(kids(&keys.published), vec![second.kid.clone(), first.kid.clone(), third.kid.clone()]);
    assert_eq!(kids(&verifying.load().await.unwrap().published), kids(&keys.published), "both read the one public set");
}

fn kids(keys: &[iam_shared::token::PublicJwk]) -> Vec<String> {
    keys.iter().map(|k| k.kid.clone()).collect()
}

#[tokio::test]
async fn a_missing_or_corrupt_secret_is_an_error_that_names_no_secret() {
    let client = secrets_client().await;
    let ttl = Duration::from_secs(1);
    let absent = SigningSecrets { private: iam_testkit::unique("absent"), public: iam_testkit::unique("absent") };
    assert!(Keyring::new(settings(), Arc::new(SecretsManagerKeys::new(client.clone(), absent.clone())), ttl).await.is_err());
    assert!(Keyring::new(settings(), Arc::new(PublishedKeys::new(client.clone(), absent.public)), ttl).await.is_err());
    let published = iam_testkit::create_signing_secret(&SigningKeyDocument::generate().unwrap()).await.public;
    for body in [r#"{"kid":"k1","alg":"RS256","privateKeyPem":"MIIsecretmaterial"}"#, r#"{"kid":"k1","privateKeyPem":"MIIsecretmaterial"#] {
        let name = iam_testkit::unique("corrupt");
        client.create_secret().name(&name).secret_string(body).send().await.unwrap();
        let secrets = SigningSecrets { private: name, public: published.clone() };
        let err = Keyring::new(settings(), Arc::new(SecretsManagerKeys::new(client.clone(), secrets)), ttl).await.unwrap_err().to_string();
        assert!(!err.contains("MIIsecretmaterial"), "{err}");
    }
}

#[tokio::test]
async fn the_keyring_reloads_after_its_ttl() {
    let first = SigningKeyDocument::generate().unwrap();
    let secrets = iam_testkit::create_signing_secret(&first).await;
    let client = secrets_client().await;
    let source: Arc<dyn KeySource> = Arc::new(SecretsManagerKeys::new(client.clone(), secrets.clone()));
    // Long enough for the writes below to finish well inside it on a loaded machine.
    let keyring = Keyring::new(settings(), source, Duration::from_secs(2)).await.unwrap();
    assert_eq!(keyring.current().await.jwks().keys.len(), 1);
    let second = SigningKeyDocument::generate().unwrap();
    client.put_secret_value().secret_id(&secrets.private).secret_string(second.to_json()).send().await.unwrap();
    publish_staged_keys(&client, &secrets, None, Duration::ZERO).await.unwrap();
    assert_eq!(keyring.current().await.jwks().keys.len(), 1, "cached until the TTL passes");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    // Past the TTL the keys in hand still answer while the reload runs in the background.
    assert_eq!(keyring.current().await.jwks().keys.len(), 1, "served while reloading");
    let mut kids = Vec::new();
    for _ in 0..100 {
        kids = keyring.current().await.jwks().keys.into_iter().map(|k| k.kid).collect::<Vec<String>>();
        if kids.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(kids, vec![second.kid, first.kid]);
}

/// Credentials written before they carried their principal's status (this release's first change
/// to the stored shape): their first use adds it through the older transactional path,
/// `migrate` adds it to the rest (idempotently), and a status change reaches every form.
#[tokio::test]
async fn credentials_from_before_principal_status_migrate() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use iam_shared::authority::Guard;
    use iam_shared::ids::{KeyId, OrgId};
    use iam_shared::model::{Actor, Credential, Principal, PrincipalChange, PrincipalStatus, UseOutcome, now};
    use iam_shared::store::{MigrationReport, Store};

    let (store, tables) = iam_testkit::fresh_store_with_tables().await;
    let raw = aws_sdk_dynamodb::Client::new(&iam_testkit::sdk_config().await);
    let org = OrgId::parse("acme").unwrap();
    let actor = Actor::system("test");
    let key = |k: &KeyId| std::collections::HashMap::from([("keyId".to_owned(), AttributeValue::S(k.to_string()))]);
    let copied_status = async |k: &KeyId| -> Option<String> {
        let item = raw.get_item().table_name(&tables.credentials).set_key(Some(key(k))).consistent_read(true).send().await.unwrap();
        item.item().unwrap().get("principalStatus").map(|v| v.as_s().unwrap().clone())
    };
    // As the previous release wrote them: without `principalStatus`.
    let legacy_credentials = async |p: &Principal, n: usize| -> Vec<Credential> {
        let mut out = Vec::new();
        for _ in 0..n {
            let c = Credential::new(
                p,
                KeyId::generate(),
                "ci",
                None,
                "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA".into(),
                actor.clone(),
                now(),
            )
            .unwrap();
            store.insert_credential(&c, now(), None, &Guard::NONE).await.unwrap();
            raw.update_item()
                .table_name(&tables.credentials)
                .set_key(Some(key(&c.key_id)))
                .update_expression("REMOVE principalStatus")
                .send()
                .await
                .unwrap();
            out.push(c);
        }
        out
    };

    let active = Principal::new(org.clone(), "active", None, None, actor.clone(), now()).unwrap();
    store.create_principal(&active, 100, None).await.unwrap();
    let old = legacy_credentials(&active, 3).await;
    assert_eq!(copied_status(&old[0].key_id).await, None);

    // The first use of an old credential works, and adds the status it checked.
    assert_eq!(store.record_credential_use(&old[0], now(), None, None, 100).await.unwrap(), UseOutcome::Recorded);
    assert_eq!(copied_status(&old[0].key_id).await.as_deref(), Some("Active"));

    // A principal suspended while its credentials were old: migrate copies Suspended.
    let suspended = Principal::new(org.clone(), "suspended", None, None, actor.clone(), now()).unwrap();
    store.create_principal(&suspended, 100, None).await.unwrap();
    let suspended_old = legacy_credentials(&suspended, 1).await;
    raw.update_item()
        .table_name(&tables.principals)
        .set_key(Some(std::collections::HashMap::from([
            ("pk".to_owned(), AttributeValue::S(org.to_string())),
            ("sk".to_owned(), AttributeValue::S(format!("P#{}", suspended.id))),
        ])))
        .update_expression("SET #status = :suspended")
        .expression_attribute_names("#status", "status")
        .expression_attribute_values(":suspended", AttributeValue::S("Suspended".into()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        store.record_credential_use(&suspended_old[0], now(), None, None, 100).await.unwrap(),
        UseOutcome::NoLongerActive,
        "an old credential of a suspended principal"
    );

    let report = store.migrate().await.unwrap();
    assert_eq!(report, MigrationReport { examined: 3, migrated: 3, skipped: 0 }, "two of the active principal's, one of the suspended's");
    assert_eq!(copied_status(&old[1].key_id).await.as_deref(), Some("Active"));
    assert_eq!(copied_status(&suspended_old[0].key_id).await.as_deref(), Some("Suspended"));
    assert_eq!(store.record_credential_use(&suspended_old[0], now(), None, None, 100).await.unwrap(), UseOutcome::NoLongerActive);
    assert_eq!(store.migrate().await.unwrap(), MigrationReport::default(), "a re-run finds nothing left");

    // After migration, a status change reaches every credential in its own transaction.
    let change = PrincipalChange { status: Some(PrincipalStatus::Suspended), ..Default::default() };
    let next = active.apply(&change, now()).unwrap().unwrap();
    store.update_principal(&next, active.version, &Guard::NONE).await.unwrap();
    for c in &old {
        assert_eq!(copied_status(&c.key_id).await.as_deref(), Some("Suspended"), "{}", c.key_id);
        assert_eq!(
            store.record_credential_use(c, now(), None, None, 100).await.unwrap(),
            UseOutcome::NoLongerActive,
            "a suspended principal's credential is not used"
        );
    }
}

/// Principals written before their items carried their role ids (the second change to the
/// stored shape): they are read with the assignments' query until `migrate` writes the ids,
/// an assignment in between keeps both forms right, and a re-run finds nothing left.
#[tokio::test]
async fn principals_from_before_carried_role_ids_migrate() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use iam_shared::authority::Guard;
    use iam_shared::ids::{OrgId, RoleId};
    use iam_shared::model::{Actor, Principal, RoleAssignment, now};
    use iam_shared::store::{MigrationReport, Store};

    let (store, tables) = iam_testkit::fresh_store_with_tables().await;
    let raw = aws_sdk_dynamodb::Client::new(&iam_testkit::sdk_config().await);
    let org = OrgId::parse("acme").unwrap();
    let actor = Actor::system("test");
    let role = |name: &str| RoleId::parse(name).unwrap();
    let item_key = |p: &Principal| {
        std::collections::HashMap::from([
            ("pk".to_owned(), AttributeValue::S(org.to_string())),
            ("sk".to_owned(), AttributeValue::S(format!("P#{}", p.id))),
        ])
    };
    let assign = async |p: &Principal, r: &str| {
        let a = RoleAssignment {
            org_id: org.clone(),
            principal_id: p.id.clone(),
            role_id: role(r),
            assigned_at: now(),
            assigned_by: actor.clone(),
        };
        store.assign_role(&a, &Guard::NONE).await.unwrap();
    };
    // As the previous release wrote them: no `rolesCarried`, no `roleIds`.
    let make_legacy = async |p: &Principal| {
        raw.update_item()
            .table_name(&tables.principals)
            .set_key(Some(item_key(p)))
            .update_expression("REMOVE rolesCarried, roleIds")
            .send()
            .await
            .unwrap();
    };
    let carried = async |p: &Principal| -> (Option<bool>, Vec<String>) {
        let out = raw.get_item().table_name(&tables.principals).set_key(Some(item_key(p))).consistent_read(true).send().await.unwrap();
        let item = out.item().unwrap();
        let mut ids = item.get("roleIds").map(|v| v.as_ss().unwrap().clone()).unwrap_or_default();
        ids.sort();
        (item.get("rolesCarried").map(|v| *v.as_bool().unwrap()), ids)
    };

    let holder = Principal::new(org.clone(), "holder", None, None, actor.clone(), now()).unwrap();
    store.create_principal(&holder, 100, None).await.unwrap();
    assign(&holder, "iam-viewer").await;
    assert_eq!(carried(&holder).await, (Some(true), vec!["iam-viewer".to_owned()]), "a new principal carries its roles");
    make_legacy(&holder).await;
    let bare = Principal::new(org.clone(), "bare", None, None, actor.clone(), now()).unwrap();
    store.create_principal(&bare, 100, None).await.unwrap();
    make_legacy(&bare).await;

    let roles_of = async |p: &Principal| store.get_principal_with_roles(&org, &p.id).await.unwrap().unwrap().1;
    assert_eq!(roles_of(&holder).await, vec![role("iam-viewer")], "an old item is read with the query");
    // An assignment to an old item adds to a partial set, which is not trusted until migrated.
    assign(&holder, "deployer").await;
    assert_eq!(carried(&holder).await, (None, vec!["deployer".to_owned()]));
    assert_eq!(roles_of(&holder).await, vec![role("deployer"), role("iam-viewer")]);

    assert_eq!(store.migrate().await.unwrap(), MigrationReport { examined: 2, migrated: 2, skipped: 0 });
    assert_eq!(carried(&holder).await, (Some(true), vec!["deployer".to_owned(), "iam-viewer".to_owned()]));
    assert_eq!(carried(&bare).await, (Some(true), vec![]));
    assert_eq!(roles_of(&holder).await, vec![role("deployer"), role("iam-viewer")]);
    assert_eq!(roles_of(&bare).await, Vec::<RoleId>::new());
    assert_eq!(store.migrate().await.unwrap(), MigrationReport::default(), "a re-run finds nothing left");

    // Migrated items follow later changes.
    assert!(store.unassign_role(&org, &holder.id, &role("iam-viewer"), &Guard::NONE).await.unwrap());
    assign(&bare, "iam-admin").await;
    assert_eq!(roles_of(&holder).await, vec![role("deployer")]);
    assert_eq!(roles_of(&bare).await, vec![role("iam-admin")]);
}
