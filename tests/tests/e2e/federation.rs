//! Keyless federation's core against a local OIDC issuer started by the test (generated RSA keys,
//! discovery and JWKS on loopback, behind the operator's loopback switch): GitHub-Actions- and
//! Kubernetes-shaped tokens verified through discovery and admitted by trust policies; a rotated
//! key fetched once; issuers whose documents point at forbidden addresses, redirect, name
//! another issuer or publish an oversized JWKS, refused.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use iam_shared::federation::{ExternalExpectations, FederationRefusal, IssuerKeys, TrustPolicy};
use iam_shared::outbound::{Outbound, OutboundRules};
use iam_shared::token::{SigningKey, SigningKeyDocument};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

pub(crate) struct LocalIssuer {
    pub(crate) url: String,
    keys: Arc<std::sync::Mutex<Vec<SigningKeyDocument>>>,
    /// Replaces the discovery document when set.
    pub(crate) discovery: Arc<std::sync::Mutex<Option<Value>>>,
    /// How many times `/jwks` was fetched.
    pub(crate) fetches: Arc<AtomicUsize>,
    /// Who `/authorize` signs in (as its `sub`), without asking anything: a person who has
    /// already logged in at the provider.
    pub(crate) person: Arc<std::sync::Mutex<String>>,
}

/// What `/authorize` handed out, for `/token` to check: (nonce, PKCE challenge, client id).
type Codes = Arc<std::sync::Mutex<std::collections::HashMap<String, (String, String, String)>>>;

fn query_pairs(raw: Option<&str>) -> std::collections::HashMap<String, String> {
    form_urlencoded::parse(raw.unwrap_or_default().as_bytes()).into_owned().collect()
}

impl LocalIssuer {
    pub(crate) async fn start() -> Self {
        let keys = Arc::new(std::sync::Mutex::new(vec![SigningKeyDocument::generate().unwrap()]));
        let discovery: Arc<std::sync::Mutex<Option<Value>>> = Arc::default();
        let fetches = Arc::new(AtomicUsize::new(0));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let person = Arc::new(std::sync::Mutex::new("ada@example.com".to_owned()));
        let codes: Codes = Arc::default();
        let (k, d, f, base) = (keys.clone(), discovery.clone(), fetches.clone(), url.clone());
        let (authorize_codes, token_codes, token_keys, token_base, signed_in) =
            (codes.clone(), codes, keys.clone(), url.clone(), person.clone());
        let router = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                axum::routing::get(move || {
                    let doc = d.lock().unwrap().clone().unwrap_or_else(|| {
                        json!({"issuer": base, "jwks_uri": format!("{base}/jwks"), "authorization_endpoint": format!("{base}/authorize"),
                            "token_endpoint": format!("{base}/token")})
                    });
                    async move { axum::Json(doc) }
                }),
            )
            .route(
                "/authorize",
                axum::routing::get(move |uri: axum::http::Uri| {
                    let q = query_pairs(uri.query());
                    let code = format!("code-{}", iam_testkit::unique("c"));
                    authorize_codes
                        .lock()
                        .unwrap()
                        .insert(code.clone(), (q["nonce"].clone(), q["code_challenge"].clone(), q["client_id"].clone()));
                    let back = format!("{}?code={code}&state={}", q["redirect_uri"], q["state"]);
                    async move { (StatusCode::FOUND, [(header::LOCATION, back)]).into_response() }
                }),
            )
            .route(
                "/token",
                axum::routing::post(move |body: String| {
                    let form = query_pairs(Some(&body));
                    let issued = token_codes.lock().unwrap().remove(&form["code"]);
                    let answer = match issued {
                        Some((nonce, challenge, client))
                            if iam_shared::federation::sign_in::s256(&form["code_verifier"]) == challenge
                                && form["client_id"] == client =>
                        {
                            let now = iam_shared::model::now().timestamp() as u64;
                            let claims = json!({"iss": token_base, "aud": client, "sub": *signed_in.lock().unwrap(), "nonce": nonce,
                                "iat": now, "exp": now + 300});
                            let doc = token_keys.lock().unwrap().last().unwrap().clone();
                            let mut header = Header::new(Algorithm::RS256);
                            header.kid = Some(doc.kid.clone());
                            let key = EncodingKey::from_rsa_pem(doc.private_key_pem.expose_secret().as_bytes()).unwrap();
                            (
                                StatusCode::OK,
                                axum::Json(
                                    json!({"id_token": jsonwebtoken::encode(&header, &claims, &key).unwrap(), "token_type": "Bearer"}),
                                ),
                            )
                        }
                        _ => (StatusCode::BAD_REQUEST, axum::Json(json!({"error": "invalid_grant"}))),
                    };
                    async move { answer.into_response() }
                }),
            )
            .route(
                "/jwks",
                axum::routing::get(move || {
                    f.fetch_add(1, SeqCst);
                    let jwks: Vec<Value> = k
                        .lock()
                        .unwrap()
                        .iter()
                        .map(|doc| serde_json::to_value(SigningKey::from_document(doc).unwrap().public_jwk()).unwrap())
                        .collect();
                    async move { axum::Json(json!({"keys": jwks})) }
                }),
            )
            .route(
                "/many-keys",
                axum::routing::get(|| async { axum::Json(json!({"keys": vec![json!({"kty": "oct", "k": "AAAA", "kid": "x"}); 40]})) }),
            )
            .route("/huge-jwks", axum::routing::get(|| async { axum::Json(json!({"keys": [], "padding": "x".repeat(100 * 1024)})) }))
            .route(
                "/moved/.well-known/openid-configuration",
                axum::routing::get(|| async {
                    (StatusCode::FOUND, [(header::LOCATION, "/.well-known/openid-configuration")]).into_response()
                }),
            );
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Self { url, keys, discovery, fetches, person }
    }

    pub(crate) fn sign(&self, claims: &Value) -> String {
        let doc = self.keys.lock().unwrap().last().unwrap().clone();
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(doc.kid.clone());
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_rsa_pem(doc.private_key_pem.expose_secret().as_bytes()).unwrap()).unwrap()
    }

    /// The signing key's id and its public JWK as JSON: what anyone can fetch.
    pub(crate) fn public_jwk(&self) -> (String, String) {
        let doc = self.keys.lock().unwrap().last().unwrap().clone();
        (doc.kid.clone(), serde_json::to_string(SigningKey::from_document(&doc).unwrap().public_jwk()).unwrap())
    }

    pub(crate) fn rotate(&self) {
        *self.keys.lock().unwrap() = vec![SigningKeyDocument::generate().unwrap()];
    }
}

pub(crate) fn now() -> u64 {
    iam_shared::model::now().timestamp() as u64
}

fn expect(issuer: &str) -> ExternalExpectations<'_> {
    ExternalExpectations { issuer, audience: Some("https://iam.example"), max_age_secs: 600, now: now() }
}

pub(crate) fn github_claims(issuer: &str) -> Value {
    json!({"iss": issuer, "aud": "https://iam.example", "sub": "repo:acme/api:environment:production", "iat": now(), "nbf": now(),
        "exp": now() + 300, "repository": "acme/api", "repository_id": "123456", "repository_owner_id": "654321",
        "ref": "refs/heads/main", "environment": "production"})
}

fn loopback() -> Outbound {
    Outbound::new(OutboundRules { allow_loopback: true, ..OutboundRules::default() }).unwrap()
}

#[tokio::test]
async fn github_and_kubernetes_shaped_tokens_verify_through_discovery_and_trust_policies() {
    let issuer = LocalIssuer::start().await;
    let keys = IssuerKeys::new(loopback());
    let pins = BTreeMap::from([
        ("repository_id".to_owned(), "123456".to_owned()),
        ("repository_owner_id".to_owned(), "654321".to_owned()),
        ("environment".to_owned(), "production".to_owned()),
    ]);
    let policy = TrustPolicy::new(&issuer.url, "https://iam.example", "repo:acme/api:environment:*", pins).unwrap();
    let claims = keys.verify(&issuer.sign(&github_claims(&issuer.url)), &expect(&issuer.url)).await.unwrap();
    assert_eq!(policy.admits(&claims), Ok(()));
    let mut forked = github_claims(&issuer.url);
    forked["repository_id"] = json!("999");
    let claims = keys.verify(&issuer.sign(&forked), &expect(&issuer.url)).await.unwrap();
    assert_eq!(policy.admits(&claims), Err(FederationRefusal::ClaimMismatch("repository_id".into())), "a re-registered name is not enough");

    let k8s = TrustPolicy::new(
        &issuer.url,
        "https://iam.example",
        "system:serviceaccount:payments:exporter",
        BTreeMap::from([("kubernetes.io/namespace".to_owned(), "payments".to_owned())]),
    )
    .unwrap();
    let pod = json!({"iss": issuer.url, "aud": ["https://iam.example"], "sub": "system:serviceaccount:payments:exporter", "iat": now(),
        "exp": now() + 300, "kubernetes.io/namespace": "payments"});
    let claims = keys.verify(&issuer.sign(&pod), &expect(&issuer.url)).await.unwrap();
    assert_eq!(k8s.admits(&claims), Ok(()));
    assert_eq!(issuer.fetches.load(SeqCst), 1, "the keys are kept");
}

#[tokio::test]
async fn a_rotated_key_is_fetched_once_and_made_up_kids_cost_nothing() {
    let issuer = LocalIssuer::start().await;
    let keys = IssuerKeys::new(loopback()).with_min_refetch(Duration::ZERO);
    keys.verify(&issuer.sign(&github_claims(&issuer.url)), &expect(&issuer.url)).await.unwrap();
    issuer.rotate();
    keys.verify(&issuer.sign(&github_claims(&issuer.url)), &expect(&issuer.url)).await.unwrap();
    assert_eq!(issuer.fetches.load(SeqCst), 2, "an unknown kid fetches the keys again");

    // With the production interval, a flood of unknown kids fetches nothing more.
    let guarded = IssuerKeys::new(loopback());
    guarded.verify(&issuer.sign(&github_claims(&issuer.url)), &expect(&issuer.url)).await.unwrap();
    let stranger = LocalIssuer::start().await;
    let forged = stranger.sign(&github_claims(&issuer.url));
    let before = issuer.fetches.load(SeqCst);
    for _ in 0..20 {
        assert_eq!(guarded.verify(&forged, &expect(&issuer.url)).await, Err(FederationRefusal::UnknownKey));
    }
    assert_eq!(issuer.fetches.load(SeqCst), before);
}

#[tokio::test]
async fn issuers_that_point_elsewhere_or_overflow_are_refused() {
    let issuer = LocalIssuer::start().await;
    let token = issuer.sign(&github_claims(&issuer.url));
    let refused = |r: Result<_, FederationRefusal>| match r {
        Err(e) => e,
        Ok(_) => panic!("verified"),
    };
    for jwks_uri in ["https://169.254.169.254/latest/meta-data/jwks", "https://[fd00:ec2::254]/jwks", "https://10.0.0.1/jwks"] {
        *issuer.discovery.lock().unwrap() = Some(json!({"issuer": issuer.url, "jwks_uri": jwks_uri}));
        let e = refused(IssuerKeys::new(loopback()).verify(&token, &expect(&issuer.url)).await);
        assert!(matches!(&e, FederationRefusal::IssuerUnreachable(why) if why.contains("not a public address")), "{jwks_uri}: {e}");
    }
    *issuer.discovery.lock().unwrap() =
        Some(json!({"issuer": "https://token.actions.githubusercontent.com", "jwks_uri": format!("{}/jwks", issuer.url)}));
    assert_eq!(refused(IssuerKeys::new(loopback()).verify(&token, &expect(&issuer.url)).await), FederationRefusal::IssuerMismatch);
    *issuer.discovery.lock().unwrap() = Some(json!({"issuer": issuer.url, "jwks_uri": format!("{}/many-keys", issuer.url)}));
    let e = refused(IssuerKeys::new(loopback()).verify(&token, &expect(&issuer.url)).await);
    assert!(matches!(&e, FederationRefusal::IssuerUnreachable(why) if why.contains("more than")), "{e}");
    *issuer.discovery.lock().unwrap() = None;

    let moved = format!("{}/moved", issuer.url);
    let e = refused(IssuerKeys::new(loopback()).verify(&issuer.sign(&github_claims(&moved)), &expect(&moved)).await);
    assert!(matches!(&e, FederationRefusal::IssuerUnreachable(why) if why.contains("redirect")), "{e}");

    // Without the operator's switch, an issuer on loopback is refused, by name or by address.
    let strict = || IssuerKeys::new(Outbound::new(OutboundRules::default()).unwrap());
    let by_name = issuer.url.replace("http://127.0.0.1", "https://localhost");
    let e = refused(strict().verify(&issuer.sign(&github_claims(&by_name)), &expect(&by_name)).await);
    assert!(matches!(&e, FederationRefusal::IssuerUnreachable(why) if why.contains("not a public address")), "{e}");
    let e = refused(strict().verify(&token, &expect(&issuer.url)).await);
    assert!(matches!(&e, FederationRefusal::IssuerUnreachable(why) if why.contains("not a public address")), "{e}");
}
