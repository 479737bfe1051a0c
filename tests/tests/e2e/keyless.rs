//! The keyless exchange end to end, on every store, against a local OIDC issuer the test
//! starts (see `federation.rs`): an administrator trusts the issuer, a service account gets a
//! trust policy and a role, and a GitHub-Actions-shaped token buys a scoped access token with no
//! key involved. Then every refusal: each names its rule, none echoes the token, and each is in
//! the organisation's trail.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use axum::http::{Method, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use iam_shared::federation::IssuerKeys;
use iam_shared::outbound::{Outbound, OutboundRules, Resolve};
use iam_tests::{Response, TestApp};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::federation::{LocalIssuer, github_claims, now};

const AUDIENCE: &str = "https://iam.example";

/// An app whose outbound requests may reach loopback (the tests' own issuer), as the
/// operator's switch allows.
pub(crate) async fn app_with_loopback(store: Arc<dyn iam_shared::store::Store>) -> TestApp {
    let config = iam_api::config::Config { outbound_allow_loopback: true, ..iam_tests::config() };
    TestApp::with_state(iam_tests::state_with_config(store, &config).await).await
}

pub(crate) async fn apps() -> Vec<(&'static str, TestApp)> {
    vec![
        ("embedded", app_with_loopback(Arc::new(iam_shared::store::EmbeddedStore::in_memory().unwrap())).await),
        ("dynamodb", app_with_loopback(iam_testkit::fresh_store().await).await),
    ]
}

const ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";

async fn exchange(app: &TestApp, client_id: &str, token: &str, extra: &[(&str, &str)]) -> Response {
    exchange_as(app, client_id, token, ID_TOKEN, extra).await
}

async fn exchange_as(app: &TestApp, client_id: &str, token: &str, token_type: &str, extra: &[(&str, &str)]) -> Response {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange")
        .append_pair("subject_token_type", token_type)
        .append_pair("subject_token", token)
        .append_pair("client_id", client_id);
    for (k, v) in extra {
        form.append_pair(k, v);
    }
    app.exchange_form(&form.finish(), None).await
}

fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// An organisation set up for keyless: the issuer trusted, a service account holding
/// `device-provisioner` with one GitHub-shaped trust policy. Answers (admin token, account id,
/// client id, policy id).
async fn set_up(app: &TestApp, admin: &str, issuer: &str) -> (String, String, String) {
    let trusted = app.call(Method::PUT, "/iam/trusted-issuers", Some(admin), Some(json!({"issuers": [{"issuer": issuer}]}))).await;
    assert_eq!(trusted.status, StatusCode::OK, "{}", trusted.raw);
    let created = app
        .call(Method::POST, "/iam/api-keys", Some(admin), Some(json!({"displayName": "deploy from CI", "type": "ServiceAccount"})))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.raw);
    assert_eq!(created.body["type"], "ServiceAccount");
    let account = created.str("id").to_owned();
    app.assign(admin, &account, "device-provisioner").await;
    let policy = json!({"issuer": issuer, "audience": AUDIENCE, "subject": "repo:acme/api:environment:*",
        "requiredClaims": {"repository_id": "123456", "repository_owner_id": "654321", "environment": "production"}});
    let added = app.call(Method::POST, &format!("/iam/api-keys/{account}/trust-policies"), Some(admin), Some(policy)).await;
    assert_eq!(added.status, StatusCode::CREATED, "{}", added.raw);
    let listed = app.call(Method::GET, &format!("/iam/api-keys/{account}/trust-policies"), Some(admin), None).await;
    let client_id = listed.str("clientId").to_owned();
    (account, client_id, added.str("id").to_owned())
}

fn assert_refused(r: &Response, token: &str, reason: &str) {
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{reason}: {}", r.raw);
    assert_eq!(r.body["error"], "invalid_grant", "{reason}: {}", r.raw);
    let described = r.str("error_description");
    assert!(described.contains(reason), "{reason}: {described}");
    let payload = token.split('.').nth(1).filter(|p| p.len() > 16);
    assert!(!r.raw.contains(token) && !payload.is_some_and(|p| r.raw.contains(p)), "{reason}: the token is never echoed");
}

#[tokio::test]
async fn a_workload_token_buys_a_scoped_access_token_with_no_key() {
    let issuer = LocalIssuer::start().await;
    for (store, app) in apps().await {
        let admin = app.admin().await;
        let (account, client_id, policy_id) = set_up(&app, &admin, &issuer.url).await;
        assert_eq!(client_id, account.replace("akp_", "sa_"));
        let token = issuer.sign(&github_claims(&issuer.url));
        let r = exchange(&app, &client_id, &token, &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{store}: {}", r.raw);
        assert_eq!(r.body["issued_token_type"], "urn:ietf:params:oauth:token-type:access_token");
        let claims = claims_of(r.str("access_token"));
        assert_eq!(claims["sub"], account.as_str(), "{store}");
        assert_eq!(claims["client_id"], client_id.as_str());
        assert_eq!(claims["principal_type"], "ServiceAccount");
        assert_eq!(claims["trust_policy"], policy_id.as_str(), "the token records the policy that matched");
        assert_eq!(claims["aud"], iam_tests::AUDIENCE);
        assert!(claims["scope"].as_str().unwrap().split(' ').any(|p| p == "iot:devices:provision"), "{claims}");
        assert!(!claims["scope"].as_str().unwrap().contains("iam:"), "no management power");
        // Downstream verifiers accept it like any other token, and introspection sees it active.
        let introspected = app.introspect(Some(&admin), r.str("access_token")).await;
        assert_eq!(introspected.body["active"], true, "{store}: {}", introspected.raw);
        assert_eq!(introspected.body["trust_policy"], policy_id.as_str());
        // The principal id itself also names the account.
        assert_eq!(exchange(&app, &account, &token, &[]).await.status, StatusCode::OK);
        // A narrower scope, and the management audience refused.
        let narrow = exchange(&app, &client_id, &token, &[("scope", "iot:devices:provision")]).await;
        assert_eq!(narrow.body["scope"], "iot:devices:provision", "{}", narrow.raw);
        let management = exchange(&app, &client_id, &token, &[("audience", iam_tests::MANAGEMENT_AUDIENCE)]).await;
        assert_eq!(management.body["error"], "invalid_target", "{}", management.raw);

        let listed = app.call(Method::GET, &format!("/iam/api-keys/{account}/trust-policies"), Some(&admin), None).await;
        let used = &listed.body["items"][0];
        assert_eq!(used["uses"], 3, "{store}: {}", listed.raw);
        assert!(used["lastUsedAt"].is_string());
        assert_eq!(used["requiredClaims"]["repository_id"], "123456");

        // A service account has no credentials; a policy may only name a trusted issuer.
        let issue = app.call(Method::POST, &format!("/iam/api-keys/{account}/credentials"), Some(&admin), Some(json!({"name": "x"}))).await;
        assert_eq!(issue.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", issue.raw);
        let untrusted = json!({"issuer": "https://elsewhere.example", "audience": AUDIENCE, "subject": "x"});
        let r = app.call(Method::POST, &format!("/iam/api-keys/{account}/trust-policies"), Some(&admin), Some(untrusted)).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.raw);

        // Removing the policy stops its tokens: new ones are refused, issued ones introspect
        // inactive.
        let issued = exchange(&app, &client_id, &token, &[]).await.str("access_token").to_owned();
        let removed = app.call(Method::DELETE, &format!("/iam/api-keys/{account}/trust-policies/{policy_id}"), Some(&admin), None).await;
        assert_eq!(removed.status, StatusCode::NO_CONTENT, "{}", removed.raw);
        assert_refused(&exchange(&app, &client_id, &token, &[]).await, &token, "no trust policy");
        assert_eq!(app.introspect(Some(&admin), &issued).await.body["active"], false);

        let trail = app.call(Method::GET, "/iam/audit-events?limit=100", Some(&admin), None).await;
        let actions: Vec<&str> = trail.body["items"].as_array().unwrap().iter().filter_map(|e| e["action"].as_str()).collect();
        for action in ["trusted_issuers.update", "trust_policy.add", "trust_policy.remove"] {
            assert!(actions.contains(&action), "{store}: {action} in {actions:?}");
        }

        // A change from a stale read of the list is refused (If-Match), and changes nothing.
        let read = app.call(Method::GET, "/iam/trusted-issuers", Some(&admin), None).await;
        let etag = read.header("etag").unwrap().to_owned();
        let current = json!({"issuers": read.body["issuers"].clone()});
        let moved =
            app.call_with(Method::PUT, "/iam/trusted-issuers", Some(&admin), Some(current.clone()), &[("If-Match", etag.as_str())]).await;
        assert_eq!(moved.status, StatusCode::OK, "{}", moved.raw);
        let stale = app
            .call_with(Method::PUT, "/iam/trusted-issuers", Some(&admin), Some(json!({"issuers": []})), &[("If-Match", etag.as_str())])
            .await;
        assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED, "{}", stale.raw);
        assert_eq!(app.call(Method::GET, "/iam/trusted-issuers", Some(&admin), None).await.body["issuers"], current["issuers"]);

        // GitHub's own issuer: a policy must pin the immutable ids, not only names.
        let github = json!({"issuers": [{"issuer": iam_shared::federation::GITHUB_ACTIONS_ISSUER}]});
        assert_eq!(app.call(Method::PUT, "/iam/trusted-issuers", Some(&admin), Some(github)).await.status, StatusCode::OK);
        let names_only = json!({"issuer": iam_shared::federation::GITHUB_ACTIONS_ISSUER, "audience": AUDIENCE,
            "subject": "repo:acme/api:environment:production", "requiredClaims": {"repository": "acme/api"}});
        let r = app.call(Method::POST, &format!("/iam/api-keys/{account}/trust-policies"), Some(&admin), Some(names_only)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.raw);
        assert!(r.str("detail").contains("repository_id"), "{}", r.raw);
    }
}

#[tokio::test]
async fn every_refusal_names_its_rule_and_is_recorded() {
    let issuer = LocalIssuer::start().await;
    let stranger = LocalIssuer::start().await;
    for (store, app) in apps().await {
        let admin = app.admin().await;
        let (account, client_id, _) = set_up(&app, &admin, &issuer.url).await;
        let with = |change: &dyn Fn(&mut Value)| {
            let mut claims = github_claims(&issuer.url);
            change(&mut claims);
            issuer.sign(&claims)
        };
        let cases: Vec<(String, &str)> = vec![
            (with(&|c| c["aud"] = json!("https://other.example")), "not for this audience"),
            (with(&|c| c["sub"] = json!("repo:acme/api:ref:refs/heads/main")), "subject does not match"),
            (with(&|c| c["repository_id"] = json!("999")), "repository_id does not match"),
            (with(&|c| c["environment"] = json!("staging")), "environment does not match"),
            (with(&|c| c["exp"] = json!(now() - 600)), "expired"),
            (with(&|c| c["iat"] = json!(now() + 600)), "issued in the future"),
            (with(&|c| c["nbf"] = json!(now() + 600)), "not valid yet"),
            (with(&|c| c["iat"] = json!(now() - 2 * 3600)), "too long ago"),
            (stranger.sign(&github_claims(&stranger.url)), "no trust policy"),
            (stranger.sign(&github_claims(&issuer.url)), "no key of the issuer"),
            (unsigned(&github_claims(&issuer.url)), "algorithm"),
            (hmac_with_public_key(&issuer, &github_claims(&issuer.url)), "algorithm"),
            ("not.a.jwt".to_owned(), "not a well-formed JWT"),
        ];
        for (token, reason) in &cases {
            assert_refused(&exchange(&app, &client_id, token, &[]).await, token, reason);
        }

        // Another organisation's service account, named with a token its policies never admitted.
        let globex = app.token(&app.globex_key).await;
        let theirs =
            app.call(Method::POST, "/iam/api-keys", Some(&globex), Some(json!({"displayName": "theirs", "type": "ServiceAccount"}))).await;
        let good = issuer.sign(&github_claims(&issuer.url));
        let other_org = exchange(&app, &theirs.str("id").replace("akp_", "sa_"), &good, &[]).await;
        assert_refused(&other_org, &good, "no trust policy");
        // Unknown accounts, and API-key principals, are no service account at all.
        let key_principal = app.create_principal(&admin, "keyed").await;
        for unknown in ["sa_0000000000000000000000", key_principal.as_str(), "ik_whatever"] {
            let r = exchange(&app, unknown, &good, &[]).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{unknown}: {}", r.raw);
            assert_eq!(r.body["error"], "invalid_client");
        }
        // A secret alongside a workload token is a confused client.
        let r = exchange(&app, &client_id, &good, &[("client_secret", "x")]).await;
        assert_eq!(r.body["error"], "invalid_request", "{}", r.raw);

        // A suspended account, then an issuer the organisation stopped trusting.
        let suspend =
            app.call(Method::PATCH, &format!("/iam/api-keys/{account}"), Some(&admin), Some(json!({"status": "Suspended"}))).await;
        assert_eq!(suspend.status, StatusCode::OK, "{}", suspend.raw);
        assert_refused(&exchange(&app, &client_id, &good, &[]).await, &good, "suspended");
        let resume = app.call(Method::PATCH, &format!("/iam/api-keys/{account}"), Some(&admin), Some(json!({"status": "Active"}))).await;
        assert_eq!(resume.status, StatusCode::OK);
        let resumed = exchange(&app, &client_id, &good, &[]).await;
        assert_eq!(resumed.status, StatusCode::OK);
        let cleared = app.call(Method::PUT, "/iam/trusted-issuers", Some(&admin), Some(json!({"issuers": []}))).await;
        assert_eq!(cleared.status, StatusCode::OK);
        assert_refused(&exchange(&app, &client_id, &good, &[]).await, &good, "no trust policy");
        // A token the issuer vouched for stops with the trust: it introspects inactive.
        assert_eq!(app.introspect(Some(&admin), resumed.str("access_token")).await.body["active"], false, "{store}");

        let trail = app.call(Method::GET, "/iam/audit-events?outcome=refused&limit=100", Some(&admin), None).await;
        assert_eq!(trail.status, StatusCode::OK, "{}", trail.raw);
        let reasons: Vec<&str> = trail.body["items"].as_array().unwrap().iter().filter_map(|e| e["reason"].as_str()).collect();
        // What the trusted issuer signed is the organisation's business; what anyone could have
        // sent (forgeries, garbage, other issuers' tokens) is only logged.
        for reason in [
            "wrong_audience",
            "subject_mismatch",
            "claim_mismatch",
            "external_token_expired",
            "external_token_too_old",
            "principal_suspended",
        ] {
            assert!(reasons.contains(&reason), "{store}: {reason} in {reasons:?}");
        }
        for reason in ["external_token_unknown_key", "external_token_algorithm", "external_token_malformed", "untrusted_issuer"] {
            assert!(!reasons.contains(&reason), "{store}: {reason} is nobody's business: {reasons:?}");
        }
        for (token, _) in &cases {
            assert!(!trail.raw.contains(token.as_str()), "{store}: the trail never holds a token");
        }
    }
}

#[tokio::test]
async fn kubernetes_tokens_rotated_keys_and_oversized_key_sets_on_every_store() {
    let issuer = LocalIssuer::start().await;
    let stranger = LocalIssuer::start().await;
    for (store, app) in apps().await {
        // The production rules, but an unknown kid fetches the keys again at once here (in
        // production, at most once a minute).
        let outbound = Outbound::new(iam_shared::federation::issuer_outbound_rules(true)).unwrap();
        assert!(app.state.use_issuer_keys(Arc::new(IssuerKeys::new(outbound).with_min_refetch(std::time::Duration::ZERO))));
        let admin = app.admin().await;
        let trusted = app.call(Method::PUT, "/iam/trusted-issuers", Some(&admin), Some(json!({"issuers": [{"issuer": issuer.url}]}))).await;
        assert_eq!(trusted.status, StatusCode::OK, "{}", trusted.raw);
        let created = app
            .call(Method::POST, "/iam/api-keys", Some(&admin), Some(json!({"displayName": "exporter pod", "type": "ServiceAccount"})))
            .await;
        let account = created.str("id").to_owned();
        app.assign(&admin, &account, "device-provisioner").await;
        let policy = json!({"issuer": issuer.url, "audience": AUDIENCE, "subject": "system:serviceaccount:payments:exporter",
            "requiredClaims": {"kubernetes.io/namespace": "payments"}});
        let added = app.call(Method::POST, &format!("/iam/api-keys/{account}/trust-policies"), Some(&admin), Some(policy)).await;
        assert_eq!(added.status, StatusCode::CREATED, "{}", added.raw);
        let client_id = account.replace("akp_", "sa_");
        // A projected service-account token: audience as a list, the namespace as its own claim.
        let pod = |namespace: &str, subject: &str, signer: &LocalIssuer| {
            signer.sign(&json!({"iss": issuer.url, "aud": [AUDIENCE], "sub": subject, "iat": now(), "exp": now() + 300,
                "kubernetes.io/namespace": namespace}))
        };
        let exporter = "system:serviceaccount:payments:exporter";

        let token = pod("payments", exporter, &issuer);
        let r = exchange_as(&app, &client_id, &token, JWT, &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{store}: {}", r.raw);
        let claims = claims_of(r.str("access_token"));
        assert_eq!((claims["sub"].as_str(), claims["trust_policy"].as_str()), (Some(account.as_str()), Some(added.str("id"))));
        let elsewhere = pod("default", exporter, &issuer);
        assert_refused(&exchange_as(&app, &client_id, &elsewhere, JWT, &[]).await, &elsewhere, "kubernetes.io/namespace does not match");
        let other = pod("payments", "system:serviceaccount:payments:other", &issuer);
        assert_refused(&exchange_as(&app, &client_id, &other, JWT, &[]).await, &other, "subject does not match");

        // The issuer rotates its key: the new kid fetches the keys once more and is admitted; a
        // kid it never published is refused after a refresh of its own.
        let before = issuer.fetches.load(SeqCst);
        issuer.rotate();
        let rotated = pod("payments", exporter, &issuer);
        assert_eq!(exchange_as(&app, &client_id, &rotated, JWT, &[]).await.status, StatusCode::OK, "{store}");
        assert_eq!(issuer.fetches.load(SeqCst), before + 1, "{store}: one refresh for the new kid");
        let forged = pod("payments", exporter, &stranger);
        assert_refused(&exchange_as(&app, &client_id, &forged, JWT, &[]).await, &forged, "no key of the issuer");
        assert_eq!(issuer.fetches.load(SeqCst), before + 2, "{store}: the unknown kid was looked for in fresh keys");

        // A key set larger than the bound is refused when it is next fetched, and the
        // administrator reads why.
        *issuer.discovery.lock().unwrap() = Some(json!({"issuer": issuer.url, "jwks_uri": format!("{}/huge-jwks", issuer.url)}));
        issuer.rotate();
        let token = pod("payments", exporter, &issuer);
        assert_refused(&exchange_as(&app, &client_id, &token, JWT, &[]).await, &token, "could not be fetched");
        *issuer.discovery.lock().unwrap() = None;
        let trail = app.call(Method::GET, "/iam/audit-events?outcome=refused&limit=20", Some(&admin), None).await;
        assert!(trail.raw.contains("larger than"), "{store}: {}", trail.raw);
        let listed = app.call(Method::GET, &format!("/iam/api-keys/{account}/trust-policies"), Some(&admin), None).await;
        assert_eq!(listed.body["items"][0]["uses"], 2, "{store}: {}", listed.raw);
    }
}

fn unsigned(claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT", "kid": "k"}).to_string());
    format!("{header}.{}.", URL_SAFE_NO_PAD.encode(claims.to_string()))
}

/// The classic confusion: HS256 keyed with the issuer's public key, which anyone can fetch.
fn hmac_with_public_key(issuer: &LocalIssuer, claims: &Value) -> String {
    let (kid, public) = issuer.public_jwk();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid);
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(public.as_bytes()).unwrap()).unwrap()
}

/// Answers loopback for the issuer's name the first `honest` times, then a private address: as
/// a name whose DNS answer changes between a check and a connection would.
struct Rebinding {
    honest: usize,
    asked: AtomicUsize,
}

impl Resolve for Rebinding {
    fn lookup(&self, _host: &str) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send + '_>> {
        let n = self.asked.fetch_add(1, SeqCst);
        let answer: IpAddr = if n < self.honest { "127.0.0.1".parse().unwrap() } else { "10.0.0.7".parse().unwrap() };
        Box::pin(async move { Ok(vec![answer]) })
    }
}

#[tokio::test]
async fn issuers_at_forbidden_addresses_are_refused_whatever_dns_answered_before() {
    let issuer = LocalIssuer::start().await;
    let port = issuer.url.rsplit(':').next().unwrap().to_owned();
    let by_name = format!("http://localhost:{port}");
    for (store, app) in apps().await {
        // Whatever the issuer's name answered when something checked it earlier, the
        // connection is made to the address the connector resolves and checks itself.
        let resolver = Arc::new(Rebinding { honest: 1, asked: AtomicUsize::new(0) });
        let earlier = resolver.lookup("localhost").await.unwrap();
        assert!(earlier[0].is_loopback(), "the answer a check would have seen");
        let outbound =
            Outbound::with_resolver(OutboundRules { allow_loopback: true, ..OutboundRules::default() }, resolver.clone()).unwrap();
        // Failures are not kept, so each case below is fetched afresh.
        assert!(app.state.use_issuer_keys(Arc::new(IssuerKeys::new(outbound).with_min_refetch(std::time::Duration::ZERO))));
        *issuer.discovery.lock().unwrap() = Some(json!({"issuer": by_name, "jwks_uri": format!("{by_name}/jwks")}));
        let admin = app.admin().await;
        let (_, client_id, _) = set_up(&app, &admin, &by_name).await;
        let token = issuer.sign(&github_claims(&by_name));
        let r = exchange(&app, &client_id, &token, &[]).await;
        assert_refused(&r, &token, "could not be fetched");
        assert!(!r.raw.contains("10.0.0.7"), "the caller is not told what the resolver found");
        assert!(resolver.asked.load(SeqCst) >= 2, "{store}: the connection resolved the name itself, after the earlier check");
        let trail = app.call(Method::GET, "/iam/audit-events?outcome=refused&limit=10", Some(&admin), None).await;
        assert!(trail.raw.contains("issuer_unreachable"), "{store}: {}", trail.raw);
        assert!(trail.raw.contains("not a public address"), "{store}: the administrator reads why: {}", trail.raw);

        // A discovery document naming the metadata service as its keys' home is refused too.
        *issuer.discovery.lock().unwrap() =
            Some(json!({"issuer": issuer.url, "jwks_uri": "https://169.254.169.254/latest/meta-data/jwks"}));
        let (_, client_id, _) = set_up(&app, &admin, &issuer.url).await;
        let token = issuer.sign(&github_claims(&issuer.url));
        assert_refused(&exchange(&app, &client_id, &token, &[]).await, &token, "could not be fetched");

        // A JWKS of more keys than any issuer needs, and a discovery document behind a redirect.
        *issuer.discovery.lock().unwrap() = Some(json!({"issuer": issuer.url, "jwks_uri": format!("{}/many-keys", issuer.url)}));
        assert_refused(&exchange(&app, &client_id, &token, &[]).await, &token, "could not be fetched");
        *issuer.discovery.lock().unwrap() = None;
        let moved = format!("{}/moved", issuer.url);
        let (_, moved_client, _) = set_up(&app, &admin, &moved).await;
        let moved_token = issuer.sign(&github_claims(&moved));
        assert_refused(&exchange(&app, &moved_client, &moved_token, &[]).await, &moved_token, "could not be fetched");
        let trail = app.call(Method::GET, "/iam/audit-events?outcome=refused&limit=20", Some(&admin), None).await;
        // (Refusals of one reason within a minute share a record: the oversized JWKS is counted
        // on the metadata address's.)
        assert!(trail.raw.contains("\"repeats\":2"), "{store}: {}", trail.raw);
        for why in ["169.254.169.254", "redirect"] {
            assert!(trail.raw.contains(why), "{store}: the trail says why ({why}): {}", trail.raw);
        }
    }
}
