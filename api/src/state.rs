//! The state every handler shares, built once per process (cold start).

use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use iam_shared::hashing::SecretHasher;
use iam_shared::leaks::{GithubKeyEndpoint, GithubKeySource};
use iam_shared::outbound::{Outbound, OutboundRules};
use iam_shared::service::Iam;
use iam_shared::signing_keys::{KeySource, Keyring};
use iam_shared::store::Store;
use iam_shared::token::SigningKeyDocument;
use iam_shared::webhooks::manage::WebhookSettings;

use crate::config::{Config, ConfigError};
use crate::extract::MAX_BODY_BYTES;
use crate::oauth::{OAuthError, TOKEN_PATH};
use crate::problem::ApiError;

pub type AppState = Arc<Iam>;

/// The state of one process: the hasher (with its decoy hash) and the signing keys, built once,
/// and the store's connection warmed.
pub async fn build_state(config: &Config, store: Arc<dyn Store>, keys: Arc<dyn KeySource>) -> Result<AppState, ConfigError> {
    build(config, store, keys, true).await
}

/// [`build_state`] for routes that never touch the store (the JWKS and discovery): no warm-up
/// read, so their functions' policies need no table at all.
pub async fn build_state_for_public_routes(
    config: &Config,
    store: Arc<dyn Store>,
    keys: Arc<dyn KeySource>,
) -> Result<AppState, ConfigError> {
    build(config, store, keys, false).await
}

async fn build(config: &Config, store: Arc<dyn Store>, keys: Arc<dyn KeySource>, warm_store: bool) -> Result<AppState, ConfigError> {
    let hasher = SecretHasher::new(config.hash).map_err(|e| ConfigError(e.to_string()))?;
    let warm_up = async {
        if warm_store {
            store.warm_up().await;
        }
    };
    // Both reach the network on a cold start: side by side, init waits for the slower only.
    let (keyring, ()) = tokio::join!(Keyring::new(config.tokens.clone(), keys, config.signing_key_ttl), warm_up);
    let keyring = keyring.map_err(|e| ConfigError(e.to_string()))?;
    let github = github_keys(config)?;
    let webhooks = WebhookSettings { key: config.webhook_key.clone(), allow_loopback: config.outbound_allow_loopback };
    Ok(Arc::new(Iam::new(store, hasher, keyring).with_limits(config.limits).with_github_scanning_keys(github).with_webhooks(webhooks)))
}

/// GitHub's keys as configured, and its key endpoint when one is named (refused at start when
/// the outbound rules do not allow its URL).
fn github_keys(config: &Config) -> Result<Option<GithubKeySource>, ConfigError> {
    let endpoint = match &config.github_scanning_keys_url {
        None => None,
        Some(url) => {
            let rules = OutboundRules { allow_loopback: config.outbound_allow_loopback, ..OutboundRules::default() };
            let outbound = Outbound::new(rules).map_err(|e| ConfigError(format!("outbound client: {e}")))?;
            Some(GithubKeyEndpoint::new(url, outbound).map_err(|e| ConfigError(format!("IAM_GITHUB_SECRET_SCANNING_KEYS_URL: {e}")))?)
        }
    };
    Ok(GithubKeySource::new(config.github_scanning_keys.clone(), endpoint))
}

pub const SIGNING_KEY_FILE: &str = "signing-key.json";

/// The local signing key: read from `dir`, or generated and written there readable by the owner only.
/// The embedded store's webhook key: 32 random bytes, hex, in a 0600 file beside the store,
/// written whole (to a temporary file, then renamed) so a crash never leaves a short key.
pub fn load_or_create_webhook_key(dir: &Path) -> Result<iam_shared::webhooks::WebhookKey, ConfigError> {
    let path = dir.join(WEBHOOK_KEY_FILE);
    let material = match fs::read(&path) {
        Ok(material) => material,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let material: String = iam_shared::random::bytes::<32>().iter().map(|b| format!("{b:02x}")).collect();
            let partial = dir.join(format!("{WEBHOOK_KEY_FILE}.partial"));
            let mut options = fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(&partial).map_err(|e| ConfigError(format!("{}: {e}", partial.display())))?;
            file.write_all(material.as_bytes())
                .and_then(|_| file.sync_all())
                .and_then(|_| fs::rename(&partial, &path))
                .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
            material.into_bytes()
        }
        Err(e) => return Err(ConfigError(format!("{}: {e}", path.display()))),
    };
    iam_shared::webhooks::WebhookKey::from_material(&material).map_err(|e| ConfigError(format!("{}: {e}", path.display())))
}

const WEBHOOK_KEY_FILE: &str = "webhook.key";

pub fn load_or_create_signing_key(dir: &Path) -> Result<SigningKeyDocument, ConfigError> {
    let path = dir.join(SIGNING_KEY_FILE);
    match fs::read_to_string(&path) {
        Ok(raw) => SigningKeyDocument::from_json(&raw).map_err(|e| ConfigError(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let doc = SigningKeyDocument::generate().map_err(|e| ConfigError(e.to_string()))?;
            let json = serde_json::to_vec(&doc).map_err(|e| ConfigError(e.to_string()))?;
            let mut options = fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(&path).map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
            file.write_all(&json).and_then(|_| file.sync_all()).map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
            Ok(doc)
        }
        Err(e) => Err(ConfigError(format!("{}: {e}", path.display()))),
    }
}

/// What every deployment of a router adds: problem+json for unknown routes and methods, and the state.
/// Request headers past either limit are refused with 431 before any route runs. API Gateway
/// refuses more than 10 KiB of request line and headers itself; this holds the same line, a
/// little wider, wherever the router runs (`iam-local` included).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
pub const MAX_HEADERS: usize = 64;

/// A refusal the router makes before any route runs, in the error shape of the route asked
/// for: RFC 6749 on the token route, problem+json elsewhere.
fn refusal(path: &str, status: StatusCode, title: &'static str, detail: String) -> axum::response::Response {
    use axum::response::IntoResponse;
    if path == TOKEN_PATH {
        OAuthError::new(status, "invalid_request", detail).into_response()
    } else {
        ApiError::new(status, title, detail).into_response()
    }
}

/// Refuses headers past either limit (431), and a declared body past [`MAX_BODY_BYTES`] (413)
/// on every route, including those that never read a body.
async fn limit_request(request: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    let headers = request.headers();
    let path = request.uri().path();
    let bytes: usize = headers.iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum();
    if headers.len() > MAX_HEADERS || bytes > MAX_HEADER_BYTES {
        let detail = format!("request headers are limited to {MAX_HEADERS} fields and {MAX_HEADER_BYTES} bytes in all");
        return refusal(path, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "Request Header Fields Too Large", detail);
    }
    let declared = headers.get(axum::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
        return refusal(path, StatusCode::PAYLOAD_TOO_LARGE, "Content Too Large", crate::extract::body_limit_detail());
    }
    let authenticated = request.headers().contains_key(axum::http::header::AUTHORIZATION);
    let mut response = next.run(request).await;
    // What an authenticated request reads is one organisation's data, for one caller: no
    // browser or shared cache keeps it. A route that chose its own caching (the public JWKS
    // and discovery, whoever asks) keeps its choice.
    if authenticated && !response.headers().contains_key(axum::http::header::CACHE_CONTROL) {
        response.headers_mut().insert(axum::http::header::CACHE_CONTROL, axum::http::HeaderValue::from_static("no-store"));
    }
    response
}

pub fn finish_router(routes: Router<AppState>, state: AppState) -> Router {
    routes
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "Not Found", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed", "this route does not accept that method")
        })
        .layer(axum::middleware::from_fn(limit_request))
        .with_state(state)
}
