//! `iam-local`: every operation on one port, on the embedded store. The same handlers as the
//! Lambdas, routed from the same operations table.

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::Router;
use axum::response::Redirect;
use axum::routing::get;
use iam_api::AppState;
use iam_api::backend::{self, KeyUse};
use iam_api::config::{Config, StoreConfig, StoreKind};
use iam_api::state::{build_state, finish_router};
use iam_shared::ids::OrgId;
use secrecy::ExposeSecret;

pub mod events;

/// Every route of the contract, from the operations table.
pub fn routes() -> Router<AppState> {
    iam_api::operation::router(iam_functions::OPERATIONS)
}

/// The contract's routes, and the console at its directory, where `/` leads.
pub fn app(state: AppState) -> Router {
    let console = routes()
        .route("/", get(|| async { Redirect::to(CONSOLE_PATH) }))
        .route("/console", get(|| async { Redirect::to(CONSOLE_PATH) }))
        .route(CONSOLE_PATH, get(|| async { iam_functions::console::index_page() }));
    finish_router(console, state)
}

pub const CONSOLE_PATH: &str = "/console/";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub listen: String,
    pub data_dir: PathBuf,
    pub in_memory: bool,
    pub orgs: Vec<OrgId>,
    /// Break-glass: add an administrator to this organisation of the data directory, print
    /// its key, and exit, instead of serving.
    pub recover_admin: Option<OrgId>,
}

pub const USAGE: &str = "usage: iam-local [--listen ADDR] [--data-dir DIR] [--in-memory] [--org ORG]...

  --listen ADDR    address to serve on (default 127.0.0.1:8080)
  --data-dir DIR   where the embedded store and signing key live (default ./.iam-local)
  --in-memory      keep everything in memory; nothing survives a restart
  --org ORG        organisation to bootstrap an admin key for (repeatable, default dev)
  --recover-admin ORG
                   break-glass: add a new administrator (iam-admin and one key) to ORG in the
                   data directory, print its key once, and exit; for when every administrator
                   key of ORG is lost. Stop the server first (the store is locked while it runs)

Environment: IAM_STORE=dynamodb (with IAM_PRINCIPALS_TABLE, IAM_CREDENTIALS_TABLE,
IAM_SIGNING_SECRET_ID, IAM_SIGNING_PUBLIC_KEYS_SECRET_ID and the usual AWS_* variables,
AWS_ENDPOINT_URL included) serves from DynamoDB and Secrets Manager instead of the embedded store.
IAM_ISSUER (default http://ADDR/iam), IAM_AUDIENCES, IAM_MANAGEMENT_AUDIENCE (default
ISSUER/management), IAM_MAX_PRINCIPALS_PER_ORG, IAM_TOKEN_LIFETIME_SECS,
IAM_ARGON2_MEMORY_KIB, IAM_ARGON2_ITERATIONS, IAM_ARGON2_PARALLELISM, IAM_LOG_FORMAT=json, RUST_LOG.";

impl Options {
    /// `Ok(None)` means `--help` was asked for.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Option<Self>, String> {
        let mut opts = Options {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./.iam-local"),
            in_memory: false,
            orgs: Vec::new(),
            recover_admin: None,
        };
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
                _ => (arg.clone(), None),
            };
            let mut value = |name: &str| inline.clone().or_else(|| args.next()).ok_or_else(|| format!("{name} needs a value"));
            match flag.as_str() {
                "--listen" => opts.listen = value("--listen")?,
                "--data-dir" => opts.data_dir = PathBuf::from(value("--data-dir")?),
                "--in-memory" => opts.in_memory = true,
                "--org" => {
                    let raw = value("--org")?;
                    let org = OrgId::parse(&raw).map_err(|e| e.0)?;
                    if !opts.orgs.contains(&org) {
                        opts.orgs.push(org);
                    }
                }
                "--recover-admin" => opts.recover_admin = Some(OrgId::parse(&value("--recover-admin")?).map_err(|e| e.0)?),
                "-h" | "--help" => return Ok(None),
                other => return Err(format!("unknown argument '{other}'")),
            }
        }
        if opts.recover_admin.is_some() && opts.in_memory {
            return Err("--recover-admin works on a data directory, not --in-memory".into());
        }
        if opts.orgs.is_empty() {
            opts.orgs.push(OrgId::parse("dev").expect("valid org id"));
        }
        Ok(Some(opts))
    }
}

/// The embedded store's break-glass recovery (DynamoDB's is `iam-admin bootstrap --force`):
/// writes a new administrator to `org` in the data directory, as the first bootstrap does,
/// and answers its key, to be shown once. The server must be stopped: redb locks its file.
pub async fn recover_admin(opts: &Options, org: &OrgId) -> Result<String, Box<dyn std::error::Error>> {
    let backend = backend::embedded(Some(opts.data_dir.as_path()))?;
    let hasher = iam_shared::hashing::SecretHasher::new(iam_shared::hashing::HashParams::default())?;
    let key =
        iam_shared::service::bootstrap_admin(backend.store.as_ref(), &hasher, org, true).await?.ok_or("the recovery wrote nothing")?;
    Ok(key.to_secret_string().expose_secret().to_owned())
}

/// Binds, bootstraps each organisation that has no admin yet (printing its key once), and
/// serves until `shutdown` resolves.
pub async fn serve(
    opts: Options,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind(&opts.listen).await.map_err(|e| format!("cannot listen on {}: {e}", opts.listen))?;
    let addr: SocketAddr = listener.local_addr()?;
    let config = Config::from_env(Some(&format!("http://{addr}/iam")))?;
    let store = StoreConfig::from_env(StoreKind::Embedded, (!opts.in_memory).then(|| opts.data_dir.clone()))?;
    // iam-local serves the exchange too: it signs.
    let backend = backend::open(&store, KeyUse::Sign).await?;
    let warnings = iam_api::config::warning_settings()?;
    // The relay below sends what is recorded from here on, the first sweep's warnings included.
    let started = iam_shared::model::now();
    tokio::spawn(send_warnings_hourly(backend.store.clone(), warnings));
    let config = iam_api::config::Config { webhook_key: backend.webhook_key.clone(), ..config };
    if let Some(source) = &backend.webhook_key {
        let relay = events::Relay {
            store: backend.store.clone(),
            key: source.key().await?,
            outbound: std::sync::Arc::new(iam_shared::outbound::Outbound::new(iam_api::config::webhook_outbound_rules(
                config.outbound_allow_loopback,
            ))?),
            orgs: opts.orgs.clone(),
            events_file: (!opts.in_memory).then(|| opts.data_dir.join("events.jsonl")),
            since: started,
        };
        tokio::spawn(relay.run());
    }
    let state = build_state(&config, backend.store, backend.keys).await?;
    for org in &opts.orgs {
        if let Some(key) = state.bootstrap(org).await? {
            // Printed once, on its own line, by design: this is the only way to get the first key.
            println!("Bootstrap API key for {org}: {}", key.to_secret_string().expose_secret());
        }
    }
    println!("iam-local listening on http://{addr} (issuer {})", config.tokens.issuer);
    println!("Console: http://{addr}{CONSOLE_PATH} (sign in with an API key)");
    tracing::info!(%addr, "iam-local started");
    // The peer address feeds the failed-attempt throttle on the token route.
    axum::serve(listener, app(state).into_make_service_with_connect_info::<SocketAddr>()).with_graceful_shutdown(shutdown).await?;
    Ok(())
}

/// What the warnings function does in AWS on its schedule: a sweep at start, then hourly.
async fn send_warnings_hourly(store: std::sync::Arc<dyn iam_shared::store::Store>, settings: iam_shared::warnings::WarningSettings) {
    let mut hourly = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        hourly.tick().await;
        // Logged by the handler; the next hour tries again.
        let _ = iam_functions::send_warnings::handle(store.as_ref(), &settings, iam_shared::model::now()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<Options>, String> {
        Options::parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn defaults() {
        let o = parse(&[]).unwrap().unwrap();
        assert_eq!(o.listen, "127.0.0.1:8080");
        assert_eq!(o.data_dir, PathBuf::from("./.iam-local"));
        assert!(!o.in_memory);
        assert_eq!(o.orgs, vec![OrgId::parse("dev").unwrap()]);
    }

    #[test]
    fn flags() {
        let o =
            parse(&["--listen", "0.0.0.0:9", "--data-dir=/x", "--in-memory", "--org", "a", "--org", "b", "--org", "a"]).unwrap().unwrap();
        assert_eq!(o.listen, "0.0.0.0:9");
        assert_eq!(o.data_dir, PathBuf::from("/x"));
        assert!(o.in_memory);
        assert_eq!(o.orgs.len(), 2);
        assert_eq!(parse(&["--help"]).unwrap(), None);
        assert!(parse(&["--org", "Bad Org"]).is_err());
        assert!(parse(&["--listen"]).is_err());
        assert!(parse(&["--bogus"]).is_err());
    }
}
