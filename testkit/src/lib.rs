//! Test support shared by the test crates: one moto server per test process (started on a free
//! loopback port and stopped when the process exits), AWS clients pointed at it, unique table
//! names, and a proxy that injects faults between the SDK and moto.

pub mod capacity;
pub mod faults;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use aws_config::{Region, SdkConfig};
use aws_sdk_dynamodb::config::Credentials;
use iam_shared::store::DynamoStore;

pub const REGION: &str = "eu-west-1";

/// A moto server this process started, or one the test command started for everyone
/// (`IAM_TEST_MOTO_ENDPOINT`). Either way it serves one request at a time, as real DynamoDB's
/// per-request atomicity requires of a stand-in.
pub struct Moto {
    pub endpoint: String,
    /// Held open for the life of the process: when it closes (the process exits, however it
    /// exits), the watchdog shell kills moto.
    _watchdog: Option<Mutex<(Child, ChildStdin)>>,
}

fn venv_python() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python")
}

/// moto serving one request at a time: see `scripts/moto_serial.py` for why.
fn moto_launcher() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/moto_serial.py")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free loopback port")
}

fn wait_for(addr: SocketAddr, within: Duration) {
    let deadline = Instant::now() + within;
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "moto did not start listening on {addr}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn start_moto() -> Moto {
    if let Ok(endpoint) = std::env::var("IAM_TEST_MOTO_ENDPOINT") {
        return Moto { endpoint, _watchdog: None };
    }
    let python = venv_python();
    assert!(python.exists(), "{} is missing: run ./scripts/test (or ./scripts/python-tools) to install moto", python.display());
    let port = free_port();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(r#""$0" "$1" 127.0.0.1 "$2" >/dev/null 2>&1 & pid=$!; read _ignored; kill $pid"#)
        .arg(&python)
        .arg(moto_launcher())
        .arg(port.to_string())
        .stdin(Stdio::piped())
        .spawn()
        .expect("start moto_server");
    let stdin = child.stdin.take().expect("watchdog stdin");
    wait_for(SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_secs(30));
    Moto { endpoint: format!("http://127.0.0.1:{port}"), _watchdog: Some(Mutex::new((child, stdin))) }
}

static MOTO: LazyLock<Moto> = LazyLock::new(start_moto);

pub fn moto() -> &'static Moto {
    &MOTO
}

/// AWS configuration pointing at `endpoint`, with this service's HTTP client, timeouts and retries.
pub async fn sdk_config_for(endpoint: &str, operation: Duration, attempt: Duration) -> SdkConfig {
    iam_api::aws::loader(operation, attempt)
        .endpoint_url(endpoint)
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "iam-testkit"))
        .load()
        .await
}

pub async fn sdk_config() -> SdkConfig {
    sdk_config_for(&moto().endpoint, iam_api::aws::OPERATION_TIMEOUT, iam_api::aws::ATTEMPT_TIMEOUT).await
}

/// A name no other test in this run uses.
pub fn unique(prefix: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{prefix}-{}-{n}-{nanos}", std::process::id())
}

#[derive(Clone, Debug)]
pub struct Tables {
    pub principals: String,
    pub credentials: String,
    pub audit: String,
}

impl Tables {
    pub fn unique() -> Self {
        Self { principals: unique("principals"), credentials: unique("credentials"), audit: unique("audit") }
    }

    pub fn all(&self) -> [&String; 3] {
        [&self.principals, &self.credentials, &self.audit]
    }

    /// A store on these tables through `client`.
    pub fn store(&self, client: aws_sdk_dynamodb::Client) -> DynamoStore {
        DynamoStore::new(client, self.principals.clone(), self.credentials.clone(), self.audit.clone())
    }
}

/// A DynamoDB store on fresh tables in moto.
pub async fn fresh_store() -> Arc<DynamoStore> {
    let (store, _) = fresh_store_with_tables().await;
    store
}

pub async fn fresh_store_with_tables() -> (Arc<DynamoStore>, Tables) {
    fresh_store_with_timeouts(iam_api::aws::OPERATION_TIMEOUT, iam_api::aws::ATTEMPT_TIMEOUT).await
}

/// [`fresh_store_with_tables`] with other SDK timeouts: for suites that queue many concurrent
/// requests on the one serial moto, where production timeouts would measure moto's queue.
pub async fn fresh_store_with_timeouts(operation: Duration, attempt: Duration) -> (Arc<DynamoStore>, Tables) {
    let sdk = sdk_config_for(&moto().endpoint, operation, attempt).await;
    let tables = Tables::unique();
    let store = tables.store(aws_sdk_dynamodb::Client::new(&sdk));
    store.create_tables().await.expect("create tables in moto");
    (Arc::new(store), tables)
}

/// Drops `tables` from moto. moto copies every table it holds on each TransactWriteItems (to
/// roll back), so a long test keeps its data small by dropping what it no longer needs.
pub async fn drop_tables(tables: &Tables) {
    let client = aws_sdk_dynamodb::Client::new(&sdk_config().await);
    for name in tables.all() {
        client.delete_table().table_name(name).send().await.expect("delete table in moto");
    }
}

/// A deployment's two secrets in moto: `doc` as the private AWSCURRENT version, and its public key set.
pub async fn create_signing_secret(doc: &iam_shared::token::SigningKeyDocument) -> iam_shared::signing_keys::SigningSecrets {
    let sdk = sdk_config().await;
    let client = aws_sdk_secretsmanager::Client::new(&sdk);
    let secrets = iam_shared::signing_keys::SigningSecrets { private: unique("signing-key"), public: unique("signing-public-keys") };
    client.create_secret().name(&secrets.private).secret_string(doc.to_json()).send().await.expect("create secret in moto");
    // Published as of its creation and active at once, as after `iam-admin publish-signing-keys`.
    iam_shared::signing_keys::publish_staged_keys(&client, &secrets, None, std::time::Duration::ZERO)
        .await
        .expect("publish the key in moto");
    secrets
}

/// A Secrets Manager `ClientRequestToken` (32-64 characters) no other test uses.
pub fn version_token() -> String {
    let raw = unique("version");
    format!("{raw:0<40}").chars().take(64).collect()
}
