//! Test support: an in-memory instance of the whole service behind the real router, and
//! helpers to call it.

use std::sync::{Arc, LazyLock};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use iam_api::AppState;
use iam_api::config::Config;
use iam_api::state::build_state;
use iam_shared::hashing::HashParams;
use iam_shared::ids::OrgId;
use iam_shared::signing_keys::{KeySource, StaticKey};
use iam_shared::store::{EmbeddedStore, Store};
use iam_shared::token::{SigningKeyDocument, TokenSettings};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use tower::ServiceExt;

pub const ISSUER: &str = "http://iam.test/iam";
pub const AUDIENCE: &str = "infuse-api";
pub const OTHER_AUDIENCE: &str = "iot-api";
pub const MANAGEMENT_AUDIENCE: &str = "http://iam.test/iam/management";

/// RSA key generation is slow: one key per test binary, serialised so each app parses its own.
static SIGNING_KEY_JSON: LazyLock<String> =
    LazyLock::new(|| serde_json::to_string(&SigningKeyDocument::generate().expect("generate signing key")).expect("serialise"));

pub fn signing_key() -> SigningKeyDocument {
    SigningKeyDocument::from_json(&SIGNING_KEY_JSON).expect("signing key")
}

pub fn config() -> Config {
    Config {
        tokens: TokenSettings {
            issuer: ISSUER.into(),
            audiences: vec![AUDIENCE.into(), OTHER_AUDIENCE.into()],
            management_audience: MANAGEMENT_AUDIENCE.into(),
            lifetime_secs: 900,
        },
        limits: Default::default(),
        // Cheaper than production so the suite stays fast; the format and code path are the same.
        hash: HashParams { memory_kib: 4096, iterations: 1, parallelism: 1 },
        signing_key_ttl: std::time::Duration::from_secs(300),
        github_scanning_keys: None,
        github_scanning_keys_url: None,
        outbound_allow_loopback: false,
        webhook_key: Some(std::sync::Arc::new(iam_shared::webhooks::manage::WebhookKeySource::Static(std::sync::Arc::new(
            iam_shared::webhooks::WebhookKey::generate(),
        )))),
    }
}

pub async fn state_with(store: Arc<dyn Store>) -> AppState {
    state_with_config(store, &config()).await
}

pub async fn state_with_config(store: Arc<dyn Store>, config: &Config) -> AppState {
    let keys: Arc<dyn KeySource> = Arc::new(StaticKey(signing_key()));
    build_state(config, store, keys).await.expect("state")
}

pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub raw: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn str(&self, field: &str) -> &str {
        self.body[field].as_str().unwrap_or_else(|| panic!("no string field {field} in {}", self.raw))
    }
}

/// One instance of the service, in memory, with `acme` and `globex` bootstrapped.
pub struct TestApp {
    pub state: AppState,
    pub router: Router,
    pub acme_key: String,
    pub globex_key: String,
    /// Every answer this app gave: (request path, status, body), for the secret-hygiene scan.
    pub transcript: Arc<std::sync::Mutex<Vec<(String, StatusCode, String)>>>,
}

impl TestApp {
    pub async fn new() -> Self {
        let state = state_with(Arc::new(EmbeddedStore::in_memory().expect("store"))).await;
        Self::with_state(state).await
    }

    /// The same, on the DynamoDB store against moto (fresh tables).
    pub async fn on_dynamodb() -> Self {
        Self::with_state(state_with(iam_testkit::fresh_store().await).await).await
    }

    /// One app per store, for suites that must hold on every store.
    pub async fn on_every_store() -> Vec<(&'static str, Self)> {
        vec![("embedded", Self::new().await), ("dynamodb", Self::on_dynamodb().await)]
    }

    pub async fn with_state(state: AppState) -> Self {
        let acme_key = state.bootstrap(&OrgId::parse("acme").unwrap()).await.unwrap().expect("new org");
        let globex_key = state.bootstrap(&OrgId::parse("globex").unwrap()).await.unwrap().expect("new org");
        let router = iam_local::app(state.clone());
        Self {
            state,
            router,
            acme_key: acme_key.to_secret_string().expose_secret().to_owned(),
            globex_key: globex_key.to_secret_string().expose_secret().to_owned(),
            transcript: Arc::default(),
        }
    }

    pub async fn send(&self, request: Request<Body>) -> Response {
        let path = request.uri().path().to_owned();
        let response = self.router.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.expect("body").to_bytes();
        let raw = String::from_utf8_lossy(&bytes).into_owned();
        let body = if raw.is_empty() { Value::Null } else { serde_json::from_str(&raw).unwrap_or(Value::String(raw.clone())) };
        self.transcript.lock().unwrap().push((path, status, raw.clone()));
        Response { status, headers, body, raw }
    }

    /// A management call with an optional bearer token and JSON body.
    pub async fn call(&self, method: Method, uri: &str, token: Option<&str>, body: Option<Value>) -> Response {
        self.call_with(method, uri, token, body, &[]).await
    }

    /// `POST /iam/auth/introspect` for `token`, as `caller` (a management token).
    pub async fn introspect(&self, caller: Option<&str>, token: &str) -> Response {
        let form: String = form_urlencoded::Serializer::new(String::new()).append_pair("token", token).finish();
        let mut builder = Request::post("/iam/auth/introspect").header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(t) = caller {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        self.send(builder.body(Body::from(form)).unwrap()).await
    }

    /// [`Self::call`] with extra request headers.
    pub async fn call_with(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Response {
        let mut builder = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        if let Some(t) = token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let request = match body {
            Some(b) => builder.header(header::CONTENT_TYPE, "application/json").body(Body::from(b.to_string())),
            None => builder.body(Body::empty()),
        };
        self.send(request.unwrap()).await
    }

    pub async fn exchange_json(&self, body: Value) -> Response {
        let request =
            Request::post("/iam/auth/token").header(header::CONTENT_TYPE, "application/json").body(Body::from(body.to_string())).unwrap();
        self.send(request).await
    }

    /// A JSON exchange as if from `addr`, IPv4 or IPv6 (the TCP peer `iam-local` would see).
    pub async fn exchange_from(&self, addr: &str, body: Value) -> Response {
        let peer: std::net::SocketAddr = std::net::SocketAddr::new(addr.parse().expect("an IP address"), 40000);
        let request = Request::post("/iam/auth/token")
            .header(header::CONTENT_TYPE, "application/json")
            .extension(axum::extract::ConnectInfo(peer))
            .body(Body::from(body.to_string()))
            .unwrap();
        self.send(request).await
    }

    pub async fn exchange_form(&self, form: &str, basic: Option<(&str, &str)>) -> Response {
        let mut builder = Request::post("/iam/auth/token").header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some((id, secret)) = basic {
            use base64::Engine;
            let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
            builder = builder.header(header::AUTHORIZATION, format!("Basic {encoded}"));
        }
        self.send(builder.body(Body::from(form.to_owned())).unwrap()).await
    }

    /// A management access token for `key`, or a panic saying why not.
    pub async fn token(&self, key: &str) -> String {
        let r = self.exchange_json(json!({ "apiKey": key, "audience": MANAGEMENT_AUDIENCE })).await;
        assert_eq!(r.status, StatusCode::OK, "exchange failed: {}", r.raw);
        r.str("access_token").to_owned()
    }

    /// A token for the default (downstream) audience: what a downstream API receives.
    pub async fn downstream_token(&self, key: &str) -> String {
        let r = self.exchange_json(json!({ "apiKey": key })).await;
        assert_eq!(r.status, StatusCode::OK, "exchange failed: {}", r.raw);
        r.str("access_token").to_owned()
    }

    pub async fn admin(&self) -> String {
        self.token(&self.acme_key).await
    }

    /// Creates a principal in the admin token's org and answers its id.
    pub async fn create_principal(&self, admin: &str, name: &str) -> String {
        let r = self.call(Method::POST, "/iam/api-keys", Some(admin), Some(json!({ "displayName": name }))).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
        r.str("id").to_owned()
    }

    /// Issues a credential and answers `(keyId, apiKey)`.
    pub async fn issue(&self, admin: &str, principal: &str) -> (String, String) {
        let uri = format!("/iam/api-keys/{principal}/credentials");
        let r = self.call(Method::POST, &uri, Some(admin), Some(json!({ "name": "ci" }))).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
        (r.body["credential"]["keyId"].as_str().unwrap().to_owned(), r.str("apiKey").to_owned())
    }

    pub async fn assign(&self, admin: &str, principal: &str, role: &str) {
        let uri = format!("/iam/api-keys/{principal}/role-assignments/{role}");
        let r = self.call(Method::PUT, &uri, Some(admin), None).await;
        assert!(r.status.is_success(), "{}", r.raw);
    }
}

/// The stream records Lambda would deliver for these audit records (as `GET /iam/audit-events`
/// answers them): inserts of the audit table's items, numbered from 1.
pub fn audit_stream_records(trail: &Value) -> Vec<Value> {
    let items = trail["items"].as_array().cloned().unwrap_or_default();
    items
        .iter()
        .enumerate()
        .map(|(i, record)| {
            json!({"eventName": "INSERT", "dynamodb": {"SequenceNumber": format!("{:021}", i + 1), "NewImage": {
                "kind": {"S": "audit"}, "record": {"S": record.to_string()}
            }}})
        })
        .collect()
}

/// Fetches from the in-process router, so a `RemoteVerifier` can read this service's JWKS
/// without a socket. URLs are taken relative to [`ISSUER`]'s origin.
pub struct RouterFetch(pub Router);

impl iam_verifier::Fetch for RouterFetch {
    async fn get(&self, url: &str) -> Result<Vec<u8>, String> {
        self.fetch(url, None).await
    }

    async fn get_with_bearer(&self, url: &str, token: &str) -> Result<Vec<u8>, String> {
        self.fetch(url, Some(token)).await
    }
}

impl RouterFetch {
    async fn fetch(&self, url: &str, bearer: Option<&str>) -> Result<Vec<u8>, String> {
        let path = url.strip_prefix("http://iam.test").ok_or_else(|| format!("not this service: {url}"))?;
        let mut request = Request::get(path);
        if let Some(token) = bearer {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let response = self.0.clone().oneshot(request.body(Body::empty()).unwrap()).await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        Ok(response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes().to_vec())
    }
}

/// A key pair in GitHub's place for secret-scanning partner alerts: its key document (as
/// GitHub's key endpoint publishes it) and signatures as GitHub makes them.
pub struct FakeGithub {
    pair: ring::signature::EcdsaKeyPair,
    pub document: String,
}

impl FakeGithub {
    pub const KEY_IDENTIFIER: &str = "github-test-key";

    pub fn new() -> Self {
        use base64::Engine;
        use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).expect("a P-256 key");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).expect("a P-256 key");
        let der = [iam_shared::leaks::P256_SPKI_PREFIX.as_slice(), pair.public_key().as_ref()].concat();
        let pem =
            format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", base64::engine::general_purpose::STANDARD.encode(der));
        let document = json!({"public_keys": [{"key_identifier": Self::KEY_IDENTIFIER, "key": pem, "is_current": true}]}).to_string();
        Self { pair, document }
    }

    /// `Github-Public-Key-Signature` for `payload`: base64 DER ECDSA P-256 SHA-256.
    pub fn sign(&self, payload: &[u8]) -> String {
        use base64::Engine;
        let signature = self.pair.sign(&ring::rand::SystemRandom::new(), payload).expect("signed");
        base64::engine::general_purpose::STANDARD.encode(signature.as_ref())
    }
}

impl Default for FakeGithub {
    fn default() -> Self {
        Self::new()
    }
}
