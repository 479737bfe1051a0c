//! `iam-admin` against moto: bootstrap once (twice only with --force), the signing key, tables.

use std::process::{Command, Output};

fn admin(args: &[&str], tables: &iam_testkit::Tables, secret: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_iam-admin"))
        .args(args)
        .env("IAM_PRINCIPALS_TABLE", &tables.principals)
        .env("IAM_CREDENTIALS_TABLE", &tables.credentials)
        .env("IAM_AUDIT_TABLE", &tables.audit)
        .env("IAM_SIGNING_SECRET_ID", secret)
        .env("IAM_SIGNING_PUBLIC_KEYS_SECRET_ID", public_set_of(secret))
        .env("AWS_ENDPOINT_URL", &iam_testkit::moto().endpoint)
        .env("AWS_REGION", iam_testkit::REGION)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("IAM_ARGON2_MEMORY_KIB", "4096")
        .env("IAM_ARGON2_ITERATIONS", "1")
        .output()
        .expect("run iam-admin")
}

fn public_set_of(secret: &str) -> String {
    format!("{secret}-public")
}

/// The kids the public key set publishes, and the kid a signer signs with now.
fn published_and_signing(runtime: &tokio::runtime::Runtime, secret: &str) -> (Vec<String>, String) {
    use iam_shared::signing_keys::{KeySource, SecretsManagerKeys, SigningSecrets, read_public_set};
    runtime.block_on(async {
        let client = aws_sdk_secretsmanager::Client::new(&iam_testkit::sdk_config().await);
        let set = read_public_set(&client, &public_set_of(secret)).await.unwrap().expect("a public key set");
        let secrets = SigningSecrets { private: secret.to_owned(), public: public_set_of(secret) };
        let signer = SecretsManagerKeys::new(client, secrets).load().await.unwrap().signer.unwrap();
        (set.keys.iter().map(|k| k.kid().to_owned()).collect(), signer.kid().to_owned())
    })
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn bootstrap_runs_once_unless_forced_and_the_signing_key_is_set_once() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let tables = iam_testkit::Tables::unique();
    let secret = iam_testkit::unique("signing");
    runtime.block_on(async {
        let sdk = iam_testkit::sdk_config().await;
        aws_sdk_secretsmanager::Client::new(&sdk).create_secret().name(&secret).secret_string("placeholder").send().await.unwrap();
    });

    let created = admin(&["create-tables"], &tables, &secret);
    assert!(created.status.success(), "{}", text(&created));

    let first = admin(&["bootstrap", "--org", "acme"], &tables, &secret);
    assert!(first.status.success(), "{}", text(&first));
    let line = String::from_utf8_lossy(&first.stdout).into_owned();
    assert!(line.starts_with("Bootstrap API key for acme: ik_"), "{line}");
    assert_eq!(line.lines().count(), 1, "the key is printed once, on its own line");

    let second = admin(&["bootstrap", "--org", "acme"], &tables, &secret);
    assert_eq!(second.status.code(), Some(1));
    assert!(text(&second).contains("--force"), "{}", text(&second));
    assert!(!text(&second).contains("ik_"));

    let forced = admin(&["bootstrap", "--org", "acme", "--force"], &tables, &secret);
    assert!(forced.status.success(), "{}", text(&forced));
    assert_ne!(String::from_utf8_lossy(&forced.stdout), line, "a second, different admin key");

    // Both bootstraps are in the trail, which exports as JSON lines and verifies; an edit made
    // to the table behind the service's back fails the export.
    let exported = admin(&["audit-export", "--org", "acme"], &tables, &secret);
    assert!(exported.status.success(), "{}", text(&exported));
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&exported.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.iter().map(|l| l["action"].as_str().unwrap()).collect::<Vec<_>>(), ["org.bootstrap", "org.bootstrap"]);
    assert!(!String::from_utf8_lossy(&exported.stdout).contains(line.trim().rsplit(' ').next().unwrap()), "no key in the trail");
    runtime.block_on(async {
        use aws_sdk_dynamodb::types::AttributeValue;
        let client = aws_sdk_dynamodb::Client::new(&iam_testkit::sdk_config().await);
        let scan = client.scan().table_name(&tables.audit).send().await.unwrap();
        let first = scan.items().iter().find(|i| i.get("seq") == Some(&AttributeValue::N("1".into()))).unwrap();
        let forged = first["record"].as_s().unwrap().replace("system:bootstrap", "system:someone-else");
        client
            .put_item()
            .table_name(&tables.audit)
            .set_item(Some(first.clone()))
            .item("record", AttributeValue::S(forged))
            .send()
            .await
            .unwrap();
    });
    let tampered = admin(&["audit-export", "--org", "acme"], &tables, &secret);
    assert_eq!(tampered.status.code(), Some(1), "{}", text(&tampered));
    assert!(text(&tampered).contains("edited"), "{}", text(&tampered));

    let key = admin(&["init-signing-key"], &tables, &secret);
    assert!(key.status.success(), "{}", text(&key));
    assert!(!text(&key).contains("PRIVATE KEY"));
    let (published, first) = published_and_signing(&runtime, &secret);
    assert_eq!(published, vec![first.clone()], "the placeholder is not published; the first key signs at once");
    let again = admin(&["init-signing-key"], &tables, &secret);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    let replaced = admin(&["init-signing-key", "--force"], &tables, &secret);
    assert!(replaced.status.success(), "{}", text(&replaced));
    let (published, signing) = published_and_signing(&runtime, &secret);
    assert_eq!(published.len(), 2, "the replacement and the key it replaced: {published:?}");
    assert!(published.contains(&first));
    assert_eq!(signing, first, "the replaced key signs until the replacement is active");
    let republished = admin(&["publish-signing-keys"], &tables, &secret);
    assert!(republished.status.success(), "{}", text(&republished));
    assert_eq!(published_and_signing(&runtime, &secret).0, published, "publishing again changes nothing");

    let fresh = iam_testkit::unique("created-by-admin");
    let created = admin(&["init-signing-key"], &tables, &fresh);
    assert!(created.status.success(), "creates a missing secret: {}", text(&created));

    let usage = admin(&["bootstrap"], &tables, &secret);
    assert_eq!(usage.status.code(), Some(2));
}
