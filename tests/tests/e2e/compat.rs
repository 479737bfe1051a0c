//! Off-the-shelf clients: the `oauth2` crate obtains a token with the client-credentials flow
//! over a real socket, and a plain JWT library verifies it from the discovery document and the
//! JWKS. The discovery document is checked against what the token endpoint really does.

use std::sync::Arc;

use iam_api::state::build_state;
use iam_shared::signing_keys::StaticKey;
use iam_shared::store::EmbeddedStore;
use iam_verifier::RemoteVerifier;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use oauth2::basic::BasicClient;
use oauth2::{AuthType, ClientId, ClientSecret, Scope, TokenResponse, TokenUrl};
use serde_json::Value;

/// Serves the whole service on a loopback port; the issuer names that port.
async fn serve() -> (String, TestKeys) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let mut config = iam_tests::config();
    config.tokens.issuer = format!("{base}/iam");
    let state =
        build_state(&config, Arc::new(EmbeddedStore::in_memory().unwrap()), Arc::new(StaticKey(iam_tests::signing_key()))).await.unwrap();
    let key = state.bootstrap(&iam_shared::ids::OrgId::parse("acme").unwrap()).await.unwrap().unwrap();
    let full = secrecy::ExposeSecret::expose_secret(&key.to_secret_string()).to_owned();
    tokio::spawn(async move { axum::serve(listener, iam_local::app(state)).await });
    (base, TestKeys { full })
}

struct TestKeys {
    full: String,
}

#[tokio::test]
async fn oauth2_crate_client_credentials_then_jsonwebtoken_from_discovery() {
    let (base, keys) = serve().await;
    let (client_id, client_secret) = keys.full.split_once('.').unwrap();
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();

    for auth in [AuthType::BasicAuth, AuthType::RequestBody] {
        let client = BasicClient::new(ClientId::new(client_id.into()))
            .set_client_secret(ClientSecret::new(client_secret.into()))
            .set_token_uri(TokenUrl::new(format!("{base}/iam/auth/token")).unwrap())
            .set_auth_type(auth);
        let token = client
            .exchange_client_credentials()
            .add_scope(Scope::new("iam:api-keys:read".into()))
            .add_extra_param("audience", iam_tests::MANAGEMENT_AUDIENCE)
            .request_async(&http)
            .await
            .expect("client-credentials grant");
        assert_eq!(token.token_type().as_ref(), "bearer");
        assert_eq!(token.scopes().unwrap()[0].as_str(), "iam:api-keys:read");
        let access = token.access_token().secret().clone();

        // Any JWT library: discovery → jwks_uri → the key named by kid.
        let discovery: Value = http.get(format!("{base}/iam/.well-known/openid-configuration")).send().await.unwrap().json().await.unwrap();
        let issuer = discovery["issuer"].as_str().unwrap();
        assert_eq!(issuer, format!("{base}/iam"));
        let jwks: jsonwebtoken::jwk::JwkSet = http.get(discovery["jwks_uri"].as_str().unwrap()).send().await.unwrap().json().await.unwrap();
        let kid = jsonwebtoken::decode_header(&access).unwrap().kid.unwrap();
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[iam_tests::MANAGEMENT_AUDIENCE]);
        let claims =
            jsonwebtoken::decode::<Value>(&access, &DecodingKey::from_jwk(jwks.find(&kid).unwrap()).unwrap(), &validation).unwrap().claims;
        assert_eq!(claims["scope"], "iam:api-keys:read");
        assert_eq!(claims["client_id"], client_id);

        // The verifier crate, over real HTTP, from the issuer alone.
        let verifier = RemoteVerifier::discover(issuer, iam_tests::MANAGEMENT_AUDIENCE).await.unwrap();
        assert!(verifier.verify(&access).await.unwrap().has_permission("iam:api-keys:read"));
    }

    let wrong = BasicClient::new(ClientId::new(client_id.into()))
        .set_client_secret(ClientSecret::new("not-the-secret".into()))
        .set_token_uri(TokenUrl::new(format!("{base}/iam/auth/token")).unwrap());
    let err = wrong.exchange_client_credentials().request_async(&http).await.unwrap_err();
    assert!(format!("{err:?}").contains("invalid_client"), "{err:?}");
}

#[tokio::test]
async fn discovery_and_jwks_describe_what_the_token_endpoint_does() {
    let (base, keys) = serve().await;
    let http = reqwest::Client::new();
    let discovery: Value = http.get(format!("{base}/iam/.well-known/openid-configuration")).send().await.unwrap().json().await.unwrap();
    let token_endpoint = discovery["token_endpoint"].as_str().unwrap();
    let (id, secret) = keys.full.split_once('.').unwrap();

    // Every advertised grant type works; an unadvertised one is refused.
    for grant in discovery["grant_types_supported"].as_array().unwrap() {
        let grant = grant.as_str().unwrap();
        let form: Vec<(&str, &str)> = match grant {
            "client_credentials" => vec![("grant_type", grant), ("client_id", id), ("client_secret", secret)],
            _ => vec![
                ("grant_type", grant),
                ("subject_token", &keys.full),
                ("subject_token_type", "urn:infuse:params:oauth:token-type:api-key"),
            ],
        };
        let r = http.post(token_endpoint).form(&form).send().await.unwrap();
        assert_eq!(r.status(), 200, "advertised grant {grant} works");
    }
    let r = http.post(token_endpoint).form(&[("grant_type", "password")]).send().await.unwrap();
    assert_eq!(r.status(), 400);

    // Both advertised client authentication methods work.
    let methods: Vec<&str> =
        discovery["token_endpoint_auth_methods_supported"].as_array().unwrap().iter().map(|m| m.as_str().unwrap()).collect();
    assert_eq!(methods, ["client_secret_basic", "client_secret_post"]);
    let basic = http.post(token_endpoint).basic_auth(id, Some(secret)).form(&[("grant_type", "client_credentials")]).send().await.unwrap();
    assert_eq!(basic.status(), 200);
    let token: Value = basic.json().await.unwrap();

    // Every advertised scope can be requested by a holder of it (the admin holds all iam: ones).
    for scope in discovery["scopes_supported"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).filter(|s| s.starts_with("iam:")) {
        let r = http
            .post(token_endpoint)
            .basic_auth(id, Some(secret))
            .form(&[("grant_type", "client_credentials"), ("scope", scope), ("audience", iam_tests::MANAGEMENT_AUDIENCE)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{scope}");
    }

    // The JWKS holds the key that signed, with the advertised algorithm, and only public parts.
    let jwks_response = http.get(discovery["jwks_uri"].as_str().unwrap()).send().await.unwrap();
    let cache = jwks_response.headers().get("cache-control").unwrap().to_str().unwrap().to_owned();
    assert!(cache.contains("max-age="), "{cache}");
    let max_age: u64 = cache.split("max-age=").nth(1).unwrap().split(',').next().unwrap().parse().unwrap();
    assert!(max_age <= 7200, "no verifier caches longer than the key overlap allows");
    let jwks: Value = jwks_response.json().await.unwrap();
    let kid = jsonwebtoken::decode_header(token["access_token"].as_str().unwrap()).unwrap().kid.unwrap();
    let key = jwks["keys"].as_array().unwrap().iter().find(|k| k["kid"] == kid.as_str()).unwrap();
    assert_eq!(key["alg"], "RS256");
    assert_eq!(key["use"], "sig");
    assert_eq!(key["kty"], "RSA");
    for private in ["d", "p", "q", "dp", "dq", "qi"] {
        assert!(key.get(private).is_none());
    }
    let header = jsonwebtoken::decode_header(token["access_token"].as_str().unwrap()).unwrap();
    assert_eq!(discovery["access_token_signing_alg_values_supported"], serde_json::json!(["RS256"]));
    assert_eq!(format!("{:?}", header.alg), "RS256", "tokens use the advertised algorithm");
}
