//! `iam-admin`: what an operator runs against a deployed stack (or a local DynamoDB-compatible
//! server), with AWS credentials from the usual places.
//!
//! - `iam-admin bootstrap --org ORG [--force]`: creates the organisation's first admin
//!   principal (role `iam-admin`) and one credential, and prints the key once. Refuses to run
//!   twice for one organisation unless `--force`.
//! - `iam-admin init-signing-key [--force]`: publishes a freshly generated RSA signing key in the
//!   public key set, then writes it into the private secret as its AWSCURRENT version (creating
//!   either secret if it does not exist); refuses if the secret already holds a valid key.
//!   `--force` replaces it outside the rotation rules: the old `AWSPREVIOUS` is unpublished at
//!   once and tokens it signed stop verifying (the old current key keeps signing until the new
//!   one is active). Rotate (`aws secretsmanager rotate-secret`) instead whenever that matters.
//! - `iam-admin publish-signing-keys`: rewrites the public key set from the private secret's
//!   staged keys; what a stack upgraded from a release without the set needs once.
//! - `iam-admin withdraw-signing-key --kid KID`: withdraws a compromised signing key in one
//!   step (it stops signing and leaves the public key set now; its tokens stop verifying). It
//!   writes the private secret, which on a stack only the rotation function may: there, invoke
//!   that function instead (README, "Withdraw a compromised signing key").
//! - `iam-admin create-tables`: creates the three tables (for local servers; the template
//!   creates the real ones).
//! - `iam-admin audit-export --org ORG`: prints the organisation's audit trail as JSON lines,
//!   oldest first (for a SIEM), and fails if its hash chain does not verify.
//! - `iam-admin replay-revocations --org ORG --since TIME`: after a point-in-time restore of
//!   the principals and credentials tables to TIME, applies again every revocation, principal
//!   status change and role unassignment the audit trail recorded after it (README, "Runbook:
//!   after a point-in-time restore").
//! - `iam-admin migrate`: upgrades data written by earlier releases (idempotent, resumable,
//!   safe while traffic runs); run it after every deploy that says so in its notes.
//!
//! Configuration: `IAM_PRINCIPALS_TABLE`, `IAM_CREDENTIALS_TABLE`, `IAM_AUDIT_TABLE`, `IAM_SIGNING_SECRET_ID`,
//! `IAM_SIGNING_PUBLIC_KEYS_SECRET_ID`, `IAM_KEY_ACTIVATION_DELAY_SECS`,
//! `AWS_REGION`/`AWS_PROFILE`/`AWS_ENDPOINT_URL`, and the `IAM_ARGON2_*` cost.

use std::process::ExitCode;

use iam_api::config::AdminConfig;
use iam_shared::hashing::SecretHasher;
use iam_shared::ids::OrgId;
use iam_shared::signing_keys::{AWSCURRENT, SecretsManagerKeys, publish_staged_keys, put_or_create_secret, withdraw};
use iam_shared::store::DynamoStore;
use iam_shared::token::{SigningKey, SigningKeyDocument};
use secrecy::ExposeSecret;

const USAGE: &str = "usage:
  iam-admin bootstrap --org ORG [--force]
  iam-admin init-signing-key [--force]   (--force unpublishes AWSPREVIOUS at once: tokens it
                                          signed stop verifying; prefer rotating the secret)
  iam-admin publish-signing-keys          (rewrites the public key set from the staged keys)
  iam-admin withdraw-signing-key --kid KID
                                          (a compromised key stops signing and is unpublished now;
                                          every token it signed stops verifying)
  iam-admin create-tables
  iam-admin migrate                       (upgrades data written by earlier releases; safe to re-run)
  iam-admin audit-export --org ORG        (the audit trail as JSON lines, oldest first; fails if
                                          its hash chain does not verify)
  iam-admin replay-revocations --org ORG --since RFC3339
                                          (after a point-in-time restore to that time: revocations,
                                          status changes and unassignments from the audit trail)

Environment: IAM_PRINCIPALS_TABLE, IAM_CREDENTIALS_TABLE, IAM_AUDIT_TABLE, IAM_SIGNING_SECRET_ID,
IAM_SIGNING_PUBLIC_KEYS_SECRET_ID, IAM_KEY_ACTIVATION_DELAY_SECS, AWS_* (region, credentials,
AWS_ENDPOINT_URL for a local server), IAM_ARGON2_MEMORY_KIB/ITERATIONS/PARALLELISM.";

#[derive(Debug, PartialEq, Eq)]
enum Command {
    Bootstrap { org: OrgId, force: bool },
    InitSigningKey { force: bool },
    PublishSigningKeys,
    WithdrawSigningKey { kid: String },
    CreateTables,
    Migrate,
    AuditExport { org: OrgId },
    ReplayRevocations { org: OrgId, since: chrono::DateTime<chrono::Utc> },
    Help,
}

fn parse(args: &[String]) -> Result<Command, String> {
    let force = args.iter().any(|a| a == "--force");
    match args.first().map(String::as_str) {
        Some("bootstrap") => {
            let mut org = None;
            let mut rest = args[1..].iter();
            while let Some(arg) = rest.next() {
                match arg.as_str() {
                    "--org" => org = Some(rest.next().ok_or("--org needs a value")?.clone()),
                    "--force" => {}
                    other => return Err(format!("unknown argument '{other}'")),
                }
            }
            let org = OrgId::parse(&org.ok_or("bootstrap needs --org ORG")?).map_err(|e| e.0)?;
            Ok(Command::Bootstrap { org, force })
        }
        Some("init-signing-key") if args[1..].iter().all(|a| a == "--force") => Ok(Command::InitSigningKey { force }),
        Some("publish-signing-keys") if args.len() == 1 => Ok(Command::PublishSigningKeys),
        Some("withdraw-signing-key") => match &args[1..] {
            [flag, kid] if flag == "--kid" && !kid.is_empty() && !kid.starts_with('-') => {
                Ok(Command::WithdrawSigningKey { kid: kid.clone() })
            }
            _ => Err("withdraw-signing-key needs --kid KID".into()),
        },
        Some("create-tables") if args.len() == 1 => Ok(Command::CreateTables),
        Some("migrate") if args.len() == 1 => Ok(Command::Migrate),
        Some("audit-export") => match &args[1..] {
            [flag, org] if flag == "--org" => Ok(Command::AuditExport { org: OrgId::parse(org).map_err(|e| e.0)? }),
            _ => Err("audit-export needs --org ORG".into()),
        },
        Some("replay-revocations") => match &args[1..] {
            [o, org, s, since] if o == "--org" && s == "--since" => Ok(Command::ReplayRevocations {
                org: OrgId::parse(org).map_err(|e| e.0)?,
                since: chrono::DateTime::parse_from_rfc3339(since)
                    .map_err(|_| format!("--since must be an RFC 3339 time, got '{since}'"))?
                    .with_timezone(&chrono::Utc),
            }),
            _ => Err("replay-revocations needs --org ORG --since RFC3339".into()),
        },
        Some("-h" | "--help" | "help") | None => Ok(Command::Help),
        Some(other) => Err(format!("unknown command or arguments: '{other}'")),
    }
}

async fn run(command: Command) -> Result<(), String> {
    let config = AdminConfig::from_env().map_err(|e| e.to_string())?;
    let settings = &config.dynamo;
    let sdk = iam_api::aws::sdk_config().await;
    let store = iam_api::backend::dynamo_store(settings, &sdk);
    match command {
        Command::Bootstrap { org, force } => {
            let hasher = SecretHasher::new(config.hash).map_err(|e| e.to_string())?;
            match iam_shared::service::bootstrap_admin(&store, &hasher, &org, force).await.map_err(|e| e.to_string())? {
                Some(key) => {
                    println!("Bootstrap API key for {org}: {}", key.to_secret_string().expose_secret());
                    Ok(())
                }
                None => Err(format!("organisation '{org}' already has a bootstrap admin; use --force to add another")),
            }
        }
        Command::InitSigningKey { force } => {
            let secrets = settings.signing_secrets().map_err(|e| e.to_string())?;
            let delay = config.activation_delay;
            let client = aws_sdk_secretsmanager::Client::new(&sdk);
            let current = SecretsManagerKeys::new(client.clone(), secrets.clone()).stage(AWSCURRENT).await;
            let valid = matches!(&current, Ok(Some(doc)) if SigningKey::from_document(doc).is_ok());
            if valid && !force {
                return Err("the secret already holds a valid signing key; use --force to replace it".into());
            }
            let doc = SigningKeyDocument::generate().map_err(|e| e.to_string())?;
            let key = SigningKey::from_document(&doc).map_err(|e| e.to_string())?;
            // Public first: from the moment the private key exists, verifiers can find it.
            publish_staged_keys(&client, &secrets, Some(&key), delay).await.map_err(|e| e.to_string())?;
            put_or_create_secret(&client, &secrets.private, &doc.to_json()).await.map_err(|e| e.to_string())?;
            // The key that lost AWSPREVIOUS is no longer staged: unpublish it.
            publish_staged_keys(&client, &secrets, None, delay).await.map_err(|e| e.to_string())?;
            println!("Signing key {} is now AWSCURRENT in {} and published in {}", doc.kid, secrets.private, secrets.public);
            Ok(())
        }
        Command::PublishSigningKeys => {
            let secrets = settings.signing_secrets().map_err(|e| e.to_string())?;
            let delay = config.activation_delay;
            let client = aws_sdk_secretsmanager::Client::new(&sdk);
            let set = publish_staged_keys(&client, &secrets, None, delay).await.map_err(|e| e.to_string())?;
            let kids: Vec<&str> = set.keys.iter().map(|k| k.kid()).collect();
            println!("Published {} key(s) in {}: {}", kids.len(), secrets.public, kids.join(", "));
            Ok(())
        }
        Command::WithdrawSigningKey { kid } => {
            let secrets = settings.signing_secrets().map_err(|e| e.to_string())?;
            let client = aws_sdk_secretsmanager::Client::new(&sdk);
            let done = withdraw(&client, &secrets, &kid).await.map_err(|e| e.to_string())?;
            println!(
                "Withdrew signing key {}: {} signs from now on; published: {}",
                done.withdrawn,
                done.signer,
                done.published.join(", ")
            );
            Ok(())
        }
        Command::CreateTables => {
            store.create_tables().await.map_err(|e| e.to_string())?;
            println!("Created tables {}, {} and {}", settings.principals_table, settings.credentials_table, settings.audit_table);
            Ok(())
        }
        Command::Migrate => {
            let report = store.migrate().await.map_err(|e| e.to_string())?;
            println!(
                "Migrated {} item(s) (credentials, principals) of {} examined ({} needed nothing by the time they were written)",
                report.migrated, report.examined, report.skipped
            );
            Ok(())
        }
        Command::AuditExport { org } => export_audit_trail(&store, &org, settings.audit_retention_days).await,
        Command::ReplayRevocations { org, since } => {
            let report = iam_shared::revocations::replay_onto_restored_tables(&store, &org, since).await.map_err(|e| e.to_string())?;
            println!(
                "Examined {} change(s) of '{org}' since {since}: applied {} again, {} already in the tables",
                report.examined, report.applied, report.already
            );
            Ok(())
        }
        Command::Help => unreachable!("handled before"),
    }
}

/// The whole trail, page by page, each line written as it is read; the chain is verified over
/// everything read, against the head read first (records written meanwhile come after it).
async fn export_audit_trail(store: &DynamoStore, org: &OrgId, retention_days: u64) -> Result<(), String> {
    use iam_shared::audit::{AuditQuery, verify_chain};
    use iam_shared::store::Store;
    use std::io::Write;
    let head = store.audit_head(org).await.map_err(|e| e.to_string())?;
    let mut query = AuditQuery { oldest_first: true, ..AuditQuery::new(iam_shared::audit::query::MAX_PAGE) };
    let mut records = Vec::new();
    let mut out = std::io::stdout().lock();
    loop {
        let page = store.audit_events(org, &query).await.map_err(|e| e.to_string())?;
        for record in page.items {
            if head.as_ref().is_some_and(|h| record.seq > h.seq) {
                continue;
            }
            let line = serde_json::to_string(&record).map_err(|e| e.to_string())?;
            writeln!(out, "{line}").map_err(|e| e.to_string())?;
            records.push(record);
        }
        match page.next {
            Some(next) => query.after = Some(next),
            None => break,
        }
    }
    // Records past retention may be gone (DynamoDB's TTL removes them in no particular order).
    let expired_before = chrono::Utc::now() - chrono::Duration::days(retention_days as i64);
    verify_chain(&records, head.as_ref(), Some(expired_before)).map_err(|e| format!("the audit trail of '{org}' does not verify: {e}"))?;
    eprintln!("{} record(s) of '{org}' exported; the hash chain verifies", records.len());
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match parse(&args) {
        Ok(Command::Help) => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Ok(command) => match run(command).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("iam-admin: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("iam-admin: {e}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(raw: &[&str]) -> Vec<String> {
        raw.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_commands() {
        let acme = OrgId::parse("acme").unwrap();
        assert_eq!(parse(&args(&["bootstrap", "--org", "acme"])), Ok(Command::Bootstrap { org: acme.clone(), force: false }));
        assert_eq!(parse(&args(&["bootstrap", "--force", "--org", "acme"])), Ok(Command::Bootstrap { org: acme, force: true }));
        assert_eq!(parse(&args(&["init-signing-key"])), Ok(Command::InitSigningKey { force: false }));
        assert_eq!(parse(&args(&["create-tables"])), Ok(Command::CreateTables));
        assert_eq!(parse(&args(&["migrate"])), Ok(Command::Migrate));
        assert!(parse(&args(&["migrate", "--now"])).is_err());
        assert_eq!(parse(&args(&["audit-export", "--org", "acme"])), Ok(Command::AuditExport { org: OrgId::parse("acme").unwrap() }));
        assert!(parse(&args(&["audit-export"])).is_err());
        assert!(matches!(
            parse(&args(&["replay-revocations", "--org", "acme", "--since", "2026-11-30T12:00:00Z"])),
            Ok(Command::ReplayRevocations { .. })
        ));
        assert!(parse(&args(&["replay-revocations", "--org", "acme", "--since", "yesterday"])).is_err());
        assert!(parse(&args(&["replay-revocations", "--org", "acme"])).is_err());
        assert!(parse(&args(&["audit-export", "--org", "Bad Org"])).is_err());
        assert_eq!(parse(&args(&["publish-signing-keys"])), Ok(Command::PublishSigningKeys));
        assert!(parse(&args(&["publish-signing-keys", "--force"])).is_err());
        assert_eq!(parse(&args(&["withdraw-signing-key", "--kid", "k1"])), Ok(Command::WithdrawSigningKey { kid: "k1".into() }));
        assert!(parse(&args(&["withdraw-signing-key"])).is_err());
        assert!(parse(&args(&["withdraw-signing-key", "--kid"])).is_err());
        assert!(parse(&args(&["withdraw-signing-key", "--kid", "--force"])).is_err());
        assert!(parse(&args(&["withdraw-signing-key", "k1"])).is_err());
        assert_eq!(parse(&args(&[])), Ok(Command::Help));
        assert!(parse(&args(&["bootstrap"])).is_err());
        assert!(parse(&args(&["bootstrap", "--org", "Bad Org"])).is_err());
        assert!(parse(&args(&["bootstrap", "--org"])).is_err());
        assert!(parse(&args(&["create-tables", "x"])).is_err());
        assert!(parse(&args(&["drop-everything"])).is_err());
    }
}
