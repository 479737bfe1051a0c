//! Every function's IAM policy in `template.yaml` against what its code asks of AWS. moto does
//! not enforce IAM, so without this a policy that denies a call the code makes would only show
//! up in a real deployment, as 503s.
//!
//! Every route runs (its successes and the refusals that take other store paths) against moto
//! behind a recording proxy. Each DynamoDB and Secrets Manager action observed, with the table or
//! secret it acted on, must be granted by the policy of the function that serves the route; and
//! each action a policy grants must have been observed for that function (least privilege: no
//! grant the code never uses). A cold start's own calls count for every function that makes them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::http::{Method, StatusCode};
use iam_api::operation::ColdStart;
use iam_api::state::{build_state, build_state_for_public_routes};
use iam_shared::signing_keys::{KeySource, PublishedKeys, RotationStep, RotationTiming, SecretsManagerKeys, SigningSecrets, rotate};
use iam_shared::webhooks::manage::WebhookKeySource;
use iam_testkit::faults::{FaultProxy, IamCall};
use iam_tests::{Response, TestApp};
use serde_json::{Value, json};
use serde_norway::Value as Yaml;

type Grants = BTreeSet<(String, String)>;

/// `(action, logical resource)` pairs each function's policy grants, by function (binary) name.
fn granted_by_template() -> (BTreeMap<String, Grants>, BTreeMap<String, String>) {
    let template = template();
    let resources = template["Resources"].as_mapping().unwrap();
    let logical_of = |value: &Yaml| -> String {
        match value {
            // The bus is named by a parameter, its ARN built with !Sub.
            Yaml::Tagged(tagged) if tagged.value.as_str().is_some_and(|v| v.contains(":event-bus/")) => "EventBus".to_owned(),
            Yaml::Tagged(tagged) => {
                let target = tagged.value.as_str().unwrap_or_else(|| panic!("a policy resource this test cannot read: {value:?}"));
                target.split('.').next().unwrap().to_owned()
            }
            other => panic!("a policy resource this test cannot read: {other:?}"),
        }
    };

    let grants_of = |logical: &str, statements: &Yaml| -> Grants {
        let mut grants = Grants::new();
        for statement in statements.as_sequence().unwrap() {
            assert_eq!(statement["Effect"].as_str(), Some("Allow"), "{logical}");
            for action in listed(&statement["Action"]) {
                for resource in listed(&statement["Resource"]) {
                    grants.insert((action.as_str().unwrap().to_owned(), logical_of(&resource)));
                }
            }
        }
        grants
    };
    // Roles declared apart from their functions (the ones a KMS key policy names) get their
    // grants from AWS::IAM::RolePolicy resources.
    let mut role_grants: BTreeMap<String, Grants> = BTreeMap::new();
    for (logical, resource) in resources.iter().filter(|(_, r)| r["Type"].as_str() == Some("AWS::IAM::RolePolicy")) {
        let role = logical_of(&resource["Properties"]["RoleName"]);
        let grants = grants_of(logical.as_str().unwrap(), &resource["Properties"]["PolicyDocument"]["Statement"]);
        role_grants.entry(role).or_default().extend(grants);
    }

    let mut policies = BTreeMap::new();
    let mut function_of_integration = BTreeMap::new();
    for (logical, resource) in resources {
        let logical = logical.as_str().unwrap();
        let properties = &resource["Properties"];
        match resource["Type"].as_str() {
            Some("AWS::Serverless::Function") => {
                assert_eq!(
                    properties["CodeUri"].as_str(),
                    Some("functions"),
                    "{logical}: every function is a binary of the functions crate"
                );
                let binary = resource["Metadata"]["BuildProperties"]["Binary"].as_str();
                let binary = binary.unwrap_or_else(|| panic!("{logical}: no Metadata.BuildProperties.Binary")).to_owned();
                let mut grants = Grants::new();
                if let Some(role) = properties.get("Role") {
                    assert!(properties.get("Policies").is_none(), "{logical}: SAM ignores Policies beside a Role");
                    grants.extend(role_grants.remove(&logical_of(role)).unwrap_or_default());
                }
                for policy in properties["Policies"].as_sequence().into_iter().flatten() {
                    assert!(policy.get("Statement").is_some(), "{logical}: only inline statements are checked, not {policy:?}");
                    grants.extend(grants_of(logical, &policy["Statement"]));
                }
                policies.insert(logical.to_owned(), (binary, grants));
            }
            Some("AWS::ApiGatewayV2::Integration") => {
                let uri = logical_of(&properties["IntegrationUri"]);
                function_of_integration.insert(logical.to_owned(), uri);
            }
            _ => {}
        }
    }
    let mut route_functions = BTreeMap::new();
    for resource in resources.values().filter(|r| r["Type"].as_str() == Some("AWS::ApiGatewayV2::Route")) {
        let properties = &resource["Properties"];
        let Yaml::Tagged(target) = &properties["Target"] else { panic!("a route target this test cannot read") };
        let integration = target.value.as_str().unwrap().trim_start_matches("integrations/${").trim_end_matches('}');
        let function = &function_of_integration[integration];
        route_functions.insert(properties["RouteKey"].as_str().unwrap().to_owned(), policies[function].0.clone());
    }
    assert!(role_grants.is_empty(), "role policies of no function: {role_grants:?}");
    (policies.into_values().collect(), route_functions)
}

/// What a function's cold start does (see `iam_api::lambda`), from the operations table.
fn cold_start_of(function: &str) -> ColdStart {
    iam_functions::operation(function).cold_start
}

struct Recorder {
    app: TestApp,
    proxy: FaultProxy,
    names: BTreeMap<String, &'static str>,
    observed: BTreeMap<String, Grants>,
}

impl Recorder {
    fn logical(&self, calls: Vec<IamCall>) -> Grants {
        calls
            .into_iter()
            .map(|c| {
                let logical = self.names.get(&c.resource).unwrap_or_else(|| panic!("a call on an unknown resource: {c:?}"));
                (c.action, (*logical).to_owned())
            })
            .collect()
    }

    async fn hit(&mut self, route: &str, uri: &str, token: Option<&str>, body: Option<Value>, headers: &[(&str, &str)]) -> Response {
        let method: Method = route.split(' ').next().unwrap().parse().unwrap();
        self.proxy.take_calls();
        let response = self.app.call_with(method, uri, token, body, headers).await;
        assert!(!response.status.is_server_error(), "{route} ({uri}) answered {}: {}", response.status, response.raw);
        let calls = self.logical(self.proxy.take_calls());
        self.observed.entry(route.to_owned()).or_default().extend(calls);
        response
    }

    async fn token_form(&mut self, form: &str, basic: Option<(&str, &str)>) -> Response {
        self.proxy.take_calls();
        let response = self.app.exchange_form(form, basic).await;
        self.token_calls(response)
    }

    /// A JSON exchange from a client address, as API Gateway reports one: failures are counted.
    async fn token_from(&mut self, address: &str, body: Value) -> Response {
        self.proxy.take_calls();
        let response = self.app.exchange_from(address, body).await;
        self.token_calls(response)
    }

    async fn introspect(&mut self, caller: &str, token: &str) -> Response {
        self.proxy.take_calls();
        let response = self.app.introspect(Some(caller), token).await;
        assert!(!response.status.is_server_error(), "introspection answered {}: {}", response.status, response.raw);
        let calls = self.logical(self.proxy.take_calls());
        self.observed.entry("POST /iam/auth/introspect".into()).or_default().extend(calls);
        response
    }

    fn token_calls(&mut self, response: Response) -> Response {
        assert!(!response.status.is_server_error(), "token route answered {}: {}", response.status, response.raw);
        let calls = self.logical(self.proxy.take_calls());
        self.observed.entry("POST /iam/auth/token".into()).or_default().extend(calls);
        response
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_policy_grants_exactly_what_its_function_calls() {
    let (granted, route_functions) = granted_by_template();
    let (_, tables) = iam_testkit::fresh_store_with_tables().await;
    let secret = iam_testkit::create_signing_secret(&iam_tests::signing_key()).await;
    let proxy = FaultProxy::start(&iam_testkit::moto().endpoint).await;
    let sdk = iam_testkit::sdk_config_for(&proxy.endpoint, iam_api::aws::OPERATION_TIMEOUT, iam_api::aws::ATTEMPT_TIMEOUT).await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    let secrets = aws_sdk_secretsmanager::Client::new(&sdk);
    let store = || Arc::new(tables.store(dynamodb.clone()));
    let signing_keys = || -> Arc<dyn KeySource> { Arc::new(SecretsManagerKeys::new(secrets.clone(), secret.clone())) };
    let public_keys = || -> Arc<dyn KeySource> { Arc::new(PublishedKeys::new(secrets.clone(), secret.public.clone())) };
    // The webhook key in Secrets Manager, as the functions that show or sign with it read it.
    let webhook_key_secret = iam_testkit::unique("webhook-key");
    secrets.create_secret().name(&webhook_key_secret).secret_string("0123456789abcdef0123456789abcdef").send().await.unwrap();
    let webhook_key = Arc::new(WebhookKeySource::secrets_manager(secrets.clone(), webhook_key_secret.clone()));
    proxy.take_calls();
    let names = BTreeMap::from([
        (tables.principals.clone(), "PrincipalsTable"),
        (tables.credentials.clone(), "CredentialsTable"),
        (tables.audit.clone(), "AuditTable"),
        (secret.private.clone(), "SigningKeySecret"),
        (secret.public.clone(), "SigningPublicKeysSecret"),
        (webhook_key_secret.clone(), "WebhookKeySecret"),
    ]);

    // Each kind of function's cold start, as `iam_api::lambda` builds it.
    let github = iam_tests::FakeGithub::new();
    let config = iam_api::config::Config {
        github_scanning_keys: Some(iam_shared::leaks::GithubScanningKeys::from_json(&github.document).unwrap()),
        webhook_key: Some(webhook_key.clone()),
        // The keyless exchange fetches a local issuer's keys.
        outbound_allow_loopback: true,
        ..iam_tests::config()
    };
    build_state_for_public_routes(&config, store(), public_keys()).await.unwrap();
    let public_cold_start = proxy.take_calls();
    build_state(&config, store(), public_keys()).await.unwrap();
    let verifier_cold_start = proxy.take_calls();
    let state = build_state(&config, store(), signing_keys()).await.unwrap();
    let signer_cold_start = proxy.take_calls();
    // One app serves every route: after a cold start, routes call only the tables.
    let app = TestApp::with_state(state).await; // bootstraps two organisations: not a route
    proxy.take_calls();
    let mut r = Recorder { app, proxy, names, observed: BTreeMap::new() };
    let cold_starts = BTreeMap::from([
        ("signer", r.logical(signer_cold_start)),
        ("verifier", r.logical(verifier_cold_start)),
        ("public", r.logical(public_cold_start)),
    ]);
    for kind in ["signer", "verifier"] {
        assert!(cold_starts[kind].iter().any(|(a, _)| a.starts_with("dynamodb:")), "the store is warmed: {cold_starts:?}");
    }
    assert!(cold_starts["public"].iter().all(|(a, _)| a.starts_with("secretsmanager:")), "{cold_starts:?}");
    for kind in ["verifier", "public"] {
        assert!(
            cold_starts[kind].iter().all(|(_, resource)| resource != "SigningKeySecret"),
            "a function that only verifies never reads the private keys: {cold_starts:?}"
        );
    }
    assert!(cold_starts["signer"].contains(&("secretsmanager:GetSecretValue".to_owned(), "SigningKeySecret".to_owned())));

    // Principals as earlier releases wrote them, without their role ids (there until
    // `iam-admin migrate` ran): what they hold is read with the assignments' query, which every
    // function that authenticates or exchanges must therefore still be allowed.
    let forget_carried_roles = async || {
        let scan = dynamodb.scan().table_name(&tables.principals).send().await.unwrap();
        for item in scan.items().iter().filter(|i| i.get("kind").and_then(|k| k.as_s().ok()).is_some_and(|k| k == "principal")) {
            dynamodb
                .update_item()
                .table_name(&tables.principals)
                .key("pk", item["pk"].clone())
                .key("sk", item["sk"].clone())
                .update_expression("REMOVE rolesCarried")
                .send()
                .await
                .unwrap();
        }
    };
    forget_carried_roles().await;

    // The token route: every request form, and the refusals.
    let acme_key = r.app.acme_key.clone();
    let admin = r
        .hit(
            "POST /iam/auth/token",
            "/iam/auth/token",
            None,
            Some(json!({"apiKey": acme_key, "audience": iam_tests::MANAGEMENT_AUDIENCE})),
            &[],
        )
        .await;
    let admin = admin.str("access_token").to_owned();
    let (admin_id, admin_secret) = acme_key.split_once('.').unwrap();
    r.token_form("grant_type=client_credentials", Some((admin_id, "wrong"))).await;
    // Wrong secrets and unknown key ids are refused after one read.
    let guess = |key_id: &str| {
        let body = "1".repeat(44);
        let sum = format!("{:0>6}", base62::encode(crc32fast::hash(format!("{key_id}.{body}").as_bytes())));
        json!({"apiKey": format!("{key_id}.{body}{sum}")})
    };
    assert_eq!(r.token_from("198.51.100.7", guess(admin_id)).await.status, StatusCode::UNAUTHORIZED);
    r.token_from("198.51.100.8", guess("ik_0000000000000000000000")).await;
    let exchanged = r
        .token_form(
            &format!(
                "grant_type=urn:ietf:params:oauth:grant-type:token-exchange&subject_token={acme_key}&subject_token_type=urn:infuse:params:oauth:token-type:api-key&scope=iam:api-keys:read&audience={}",
                iam_tests::MANAGEMENT_AUDIENCE.replace(':', "%3A").replace('/', "%2F")
            ),
            None,
        )
        .await;
    assert_eq!(exchanged.status, StatusCode::OK, "{}", exchanged.raw);
    r.token_form("grant_type=client_credentials", Some((admin_id, admin_secret))).await;

    // Principals.
    let created = r.hit("POST /iam/api-keys", "/iam/api-keys", Some(&admin), Some(json!({"displayName": "svc"})), &[]).await;
    let principal = created.str("id").to_owned();
    let idem = [("Idempotency-Key", "policy-check-principal")];
    for _ in 0..2 {
        r.hit("POST /iam/api-keys", "/iam/api-keys", Some(&admin), Some(json!({"displayName": "svc2"})), &idem).await;
    }
    let page = r.hit("GET /iam/api-keys", "/iam/api-keys?limit=1", Some(&admin), None, &[]).await;
    let cursor = page.str("nextCursor").to_owned();
    r.hit("GET /iam/api-keys", &format!("/iam/api-keys?limit=1&cursor={cursor}"), Some(&admin), None, &[]).await;
    let one = format!("/iam/api-keys/{principal}");
    let got = r.hit("GET /iam/api-keys/{principalId}", &one, Some(&admin), None, &[]).await;
    let etag = got.header("etag").unwrap().to_owned();
    r.hit("GET /iam/api-keys/{principalId}", "/iam/api-keys/akp_0000000000000000000000", Some(&admin), None, &[]).await;
    let patch = "PATCH /iam/api-keys/{principalId}";
    r.hit(patch, &one, Some(&admin), Some(json!({"displayName": "svc-renamed"})), &[("If-Match", etag.as_str())]).await;
    r.hit(patch, &one, Some(&admin), Some(json!({"displayName": "stale"})), &[("If-Match", etag.as_str())]).await;
    r.hit(patch, &one, Some(&admin), Some(json!({"status": "Suspended"})), &[]).await;
    r.hit(patch, &one, Some(&admin), Some(json!({"status": "Active"})), &[]).await;

    // Roles and assignments.
    let role_body = json!({"name": "deployer", "permissions": ["ci:deploy"], "principalTypes": ["ApiKey"]});
    let role_idem = [("Idempotency-Key", "policy-check-role")];
    let role = r.hit("POST /iam/roles", "/iam/roles", Some(&admin), Some(role_body.clone()), &role_idem).await.str("id").to_owned();
    r.hit("POST /iam/roles", "/iam/roles", Some(&admin), Some(role_body.clone()), &role_idem).await;
    r.hit("POST /iam/roles", "/iam/roles", Some(&admin), Some(role_body), &[]).await;
    r.hit("GET /iam/roles", "/iam/roles", Some(&admin), None, &[]).await;
    let assign = "PUT /iam/api-keys/{principalId}/role-assignments/{roleId}";
    let unassign = "DELETE /iam/api-keys/{principalId}/role-assignments/{roleId}";
    let assignment = format!("{one}/role-assignments/{role}");
    r.hit(assign, &assignment, Some(&admin), None, &[]).await;
    r.hit(assign, &assignment, Some(&admin), None, &[]).await;
    r.hit(assign, &format!("{one}/role-assignments/no-such-role"), Some(&admin), None, &[]).await;
    r.hit("GET /iam/api-keys/{principalId}/role-assignments", &format!("{one}/role-assignments"), Some(&admin), None, &[]).await;
    r.hit(unassign, &assignment, Some(&admin), None, &[]).await;
    r.hit(unassign, &assignment, Some(&admin), None, &[]).await;
    r.hit(assign, &format!("{one}/role-assignments/iam-viewer"), Some(&admin), None, &[]).await;

    // Credentials, and the principal's own token.
    let issue = "POST /iam/api-keys/{principalId}/credentials";
    let credentials = format!("{one}/credentials");
    let issued = r.hit(issue, &credentials, Some(&admin), Some(json!({"name": "prod"})), &[]).await;
    let key_id = issued.body["credential"]["keyId"].as_str().unwrap().to_owned();
    let api_key = issued.str("apiKey").to_owned();
    let issue_idem = [("Idempotency-Key", "policy-check-credential")];
    for _ in 0..2 {
        r.hit(issue, &credentials, Some(&admin), Some(json!({"name": "ci"})), &issue_idem).await;
    }
    let rotate_route = "POST /iam/api-keys/{principalId}/credentials/{keyId}/rotate";
    let to_rotate = r.hit(issue, &credentials, Some(&admin), Some(json!({"name": "rotated"})), &[]).await;
    let to_rotate = format!("{credentials}/{}/rotate", to_rotate.body["credential"]["keyId"].as_str().unwrap());
    let rotate_idem = [("Idempotency-Key", "policy-check-rotation")];
    for _ in 0..2 {
        r.hit(rotate_route, &to_rotate, Some(&admin), Some(json!({"gracePeriodSeconds": 0})), &rotate_idem).await;
    }
    r.hit(rotate_route, &to_rotate, Some(&admin), None, &[]).await;
    let update_route = "PATCH /iam/api-keys/{principalId}/credentials/{keyId}";
    let rotated_out = to_rotate.trim_end_matches("/rotate").to_owned();
    r.hit(update_route, &format!("{credentials}/{key_id}"), Some(&admin), Some(json!({"name": "renamed"})), &[]).await;
    r.hit(update_route, &rotated_out, Some(&admin), Some(json!({"name": "ended"})), &[]).await;
    r.hit("GET /iam/api-keys/{principalId}/credentials", &credentials, Some(&admin), None, &[]).await;
    r.hit("GET /iam/api-keys/{principalId}/credentials", &format!("{credentials}?include=all"), Some(&admin), None, &[]).await;
    // Now with a credential to count.
    r.hit("GET /iam/api-keys/{principalId}", &one, Some(&admin), None, &[]).await;
    let (id, key_secret) = api_key.split_once('.').unwrap();
    let management = iam_tests::MANAGEMENT_AUDIENCE.replace(':', "%3A").replace('/', "%2F");
    let token = r
        .token_form(&format!("grant_type=client_credentials&audience={management}"), Some((id, key_secret)))
        .await
        .str("access_token")
        .to_owned();
    r.hit("GET /iam/whoami", "/iam/whoami", Some(&token), None, &[]).await;
    r.introspect(&admin, &token).await;
    r.introspect(&admin, "not a token").await;
    let feed = r.hit("GET /iam/revocations", "/iam/revocations", Some(&admin), None, &[]).await;
    let cursor = feed.str("nextCursor").to_owned();
    r.hit("GET /iam/revocations", &format!("/iam/revocations?cursor={cursor}"), Some(&admin), None, &[]).await;
    forget_carried_roles().await;
    r.hit("GET /iam/whoami", "/iam/whoami", Some(&token), None, &[]).await;
    // A credential as earlier releases wrote it, without its principal's status (there until
    // `iam-admin migrate` ran): its exchange checks the principal item in a transaction.
    dynamodb
        .update_item()
        .table_name(&tables.credentials)
        .key("keyId", aws_sdk_dynamodb::types::AttributeValue::S(key_id.clone()))
        .update_expression("REMOVE principalStatus")
        .send()
        .await
        .unwrap();
    let legacy = r.token_form(&format!("grant_type=client_credentials&audience={management}"), Some((id, key_secret))).await;
    assert_eq!(legacy.status, axum::http::StatusCode::OK, "{}", legacy.raw);
    r.hit("GET /iam/.well-known/jwks.json", "/iam/.well-known/jwks.json", None, None, &[]).await;
    r.hit("GET /console/{asset}", "/console/config.json", None, None, &[]).await;
    r.hit("GET /iam/.well-known/openid-configuration", "/iam/.well-known/openid-configuration", None, None, &[]).await;

    // Leak reports and GitHub's alerts, for keys of a principal from before carried role ids.
    let leaky = r.hit("POST /iam/api-keys", "/iam/api-keys", Some(&admin), Some(json!({"displayName": "leaky"})), &[]).await;
    let leaky = format!("/iam/api-keys/{}/credentials", leaky.str("id"));
    let reported = r.hit(issue, &leaky, Some(&admin), Some(json!({"name": "reported"})), &[]).await.str("apiKey").to_owned();
    let alerted = r.hit(issue, &leaky, Some(&admin), Some(json!({"name": "alerted"})), &[]).await.str("apiKey").to_owned();
    forget_carried_roles().await;
    let leak_route = "POST /iam/credentials/revoke-leaked";
    r.hit(leak_route, "/iam/credentials/revoke-leaked", None, Some(json!({"keys": [reported, "ik_unknown"]})), &[]).await;
    let alert = json!([{"token": alerted, "type": "infuse_iam_api_key", "url": "https://github.com/o/r", "source": "content"}]);
    let signature = github.sign(alert.to_string().as_bytes());
    let github_headers =
        [("Github-Public-Key-Identifier", iam_tests::FakeGithub::KEY_IDENTIFIER), ("Github-Public-Key-Signature", signature.as_str())];
    let github_route = "POST /iam/credentials/github-secret-scanning";
    let answered = r.hit(github_route, "/iam/credentials/github-secret-scanning", None, Some(alert), &github_headers).await;
    assert_eq!(answered.status, axum::http::StatusCode::OK, "{}", answered.raw);

    // The credential policy: set by an administrator (its own key the witness), and by a
    // holder of iam:policy:write alone, whose write searches the organisation for one.
    r.hit("GET /iam/policy", "/iam/policy", Some(&admin), None, &[]).await;
    let trail = r.hit("GET /iam/audit-events", "/iam/audit-events?limit=2", Some(&admin), None, &[]).await;
    let cursor = trail.str("nextCursor").to_owned();
    r.hit("GET /iam/audit-events", &format!("/iam/audit-events?limit=2&cursor={cursor}"), Some(&admin), None, &[]).await;
    r.hit("PUT /iam/policy", "/iam/policy", Some(&admin), Some(json!({"maxIdleDays": 3650})), &[]).await;
    r.hit("PUT /iam/policy", "/iam/policy", Some(&admin), Some(json!({})), &[]).await;
    let officer_role = json!({"name": "policy officer", "permissions": ["iam:policy:write"], "principalTypes": ["ApiKey"]});
    let officer_role = r.hit("POST /iam/roles", "/iam/roles", Some(&admin), Some(officer_role), &[]).await.str("id").to_owned();
    let officer = r.hit("POST /iam/api-keys", "/iam/api-keys", Some(&admin), Some(json!({"displayName": "officer"})), &[]).await;
    let officer = format!("/iam/api-keys/{}", officer.str("id"));
    r.hit(assign, &format!("{officer}/role-assignments/{officer_role}"), Some(&admin), None, &[]).await;
    let officer_key = r.hit(issue, &format!("{officer}/credentials"), Some(&admin), Some(json!({"name": "k"})), &[]).await;
    let (officer_id, officer_secret) = officer_key.str("apiKey").split_once('.').map(|(a, b)| (a.to_owned(), b.to_owned())).unwrap();
    let officer_token = r
        .token_form(&format!("grant_type=client_credentials&audience={management}"), Some((&officer_id, &officer_secret)))
        .await
        .str("access_token")
        .to_owned();
    let set = r.hit("PUT /iam/policy", "/iam/policy", Some(&officer_token), Some(json!({"maxLifetimeDays": 3650})), &[]).await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.raw);
    r.hit("PUT /iam/policy", "/iam/policy", Some(&officer_token), Some(json!({})), &[]).await;

    // Webhooks. The endpoint's host never resolves: each delivery attempt fails at once.
    let hooks = "POST /iam/webhooks";
    let created = r.hit(hooks, "/iam/webhooks", Some(&admin), Some(json!({"url": "https://hooks.invalid/iam"})), &[]).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.raw);
    let hook = format!("/iam/webhooks/{}", created.body["webhook"]["id"].as_str().unwrap());
    r.hit(hooks, "/iam/webhooks", Some(&admin), Some(json!({"url": "https://169.254.169.254/latest"})), &[]).await;
    r.hit("GET /iam/webhooks", "/iam/webhooks", Some(&admin), None, &[]).await;
    r.hit("PATCH /iam/webhooks/{webhookId}", &hook, Some(&admin), Some(json!({"description": "ops"})), &[]).await;
    r.hit("PATCH /iam/webhooks/{webhookId}", "/iam/webhooks/wh_0000000000000000000000", Some(&admin), Some(json!({"enabled": false})), &[])
        .await;
    r.hit("POST /iam/webhooks/{webhookId}/rotate-secret", &format!("{hook}/rotate-secret"), Some(&admin), None, &[]).await;
    r.hit("GET /iam/webhooks/{webhookId}/deliveries", &format!("{hook}/deliveries"), Some(&admin), None, &[]).await;
    let doomed = r.hit(hooks, "/iam/webhooks", Some(&admin), Some(json!({"url": "https://hooks.invalid/old"})), &[]).await;
    let doomed = format!("/iam/webhooks/{}", doomed.body["webhook"]["id"].as_str().unwrap());
    r.hit("DELETE /iam/webhooks/{webhookId}", &doomed, Some(&admin), None, &[]).await;
    r.hit("DELETE /iam/webhooks/{webhookId}", &doomed, Some(&admin), None, &[]).await;
    // One process served both routes that read the webhook key, and reads it once: the read
    // it made is what each of them makes on its own cold start.
    let key_read = ("secretsmanager:GetSecretValue".to_owned(), "WebhookKeySecret".to_owned());
    assert!(r.observed["POST /iam/webhooks"].contains(&key_read), "{:?}", r.observed["POST /iam/webhooks"]);
    r.observed.get_mut("POST /iam/webhooks/{webhookId}/rotate-secret").unwrap().insert(key_read);

    // Keyless: trusted issuers, a service account's trust policies, and the exchange of a
    // workload's token (admitted, then refused), against a local issuer.
    let issuer = crate::federation::LocalIssuer::start().await;
    let issuers = "PUT /iam/trusted-issuers";
    r.hit(issuers, "/iam/trusted-issuers", Some(&admin), Some(json!({"issuers": [{"issuer": issuer.url}]})), &[]).await;
    r.hit(issuers, "/iam/trusted-issuers", Some(&admin), Some(json!({"issuers": [{"issuer": "https://10.0.0.1"}]})), &[]).await;
    r.hit(issuers, "/iam/trusted-issuers", Some(&admin), Some(json!({"issuers": [{"issuer": issuer.url}]})), &[]).await;
    r.hit("GET /iam/trusted-issuers", "/iam/trusted-issuers", Some(&admin), None, &[]).await;
    let sa_body = json!({"displayName": "deployer", "type": "ServiceAccount"});
    let account = r.hit("POST /iam/api-keys", "/iam/api-keys", Some(&admin), Some(sa_body), &[]).await.str("id").to_owned();
    let policies = format!("/iam/api-keys/{account}/trust-policies");
    let add = "POST /iam/api-keys/{principalId}/trust-policies";
    let policy = json!({"issuer": issuer.url, "audience": "https://iam.example", "subject": "repo:acme/api:environment:*"});
    let added = r.hit(add, &policies, Some(&admin), Some(policy), &[]).await;
    assert_eq!(added.status, StatusCode::CREATED, "{}", added.raw);
    let untrusted = json!({"issuer": "https://elsewhere.example", "audience": "x", "subject": "x"});
    r.hit(add, &policies, Some(&admin), Some(untrusted), &[]).await;
    r.hit(
        add,
        "/iam/api-keys/akp_0000000000000000000000/trust-policies",
        Some(&admin),
        Some(json!({"issuer": issuer.url, "audience": "x", "subject": "x"})),
        &[],
    )
    .await;
    let listed = r.hit("GET /iam/api-keys/{principalId}/trust-policies", &policies, Some(&admin), None, &[]).await;
    let client_id = listed.str("clientId").to_owned();
    let federated = |token: &str, client: &str| {
        form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange")
            .append_pair("subject_token_type", "urn:ietf:params:oauth:token-type:id_token")
            .append_pair("subject_token", token)
            .append_pair("client_id", client)
            .finish()
    };
    let workload = issuer.sign(&crate::federation::github_claims(&issuer.url));
    let admitted = r.token_form(&federated(&workload, &client_id), None).await;
    assert_eq!(admitted.status, StatusCode::OK, "{}", admitted.raw);
    let mut wrong = crate::federation::github_claims(&issuer.url);
    wrong["aud"] = json!("https://other.example");
    r.token_form(&federated(&issuer.sign(&wrong), &client_id), None).await;
    r.token_form(&federated(&workload, "sa_0000000000000000000000"), None).await;
    let remove = "DELETE /iam/api-keys/{principalId}/trust-policies/{trustPolicyId}";
    let one_policy = format!("{policies}/{}", added.str("id"));
    r.hit(remove, &one_policy, Some(&admin), None, &[]).await;
    r.hit(remove, &one_policy, Some(&admin), None, &[]).await;

    // A person's sign-in through the same issuer as identity provider: mapped, then not.
    let provider = json!({"issuers": [{"issuer": issuer.url}], "signIn": {"issuer": issuer.url, "clientId": "iam-console"}});
    r.hit(issuers, "/iam/trusted-issuers", Some(&admin), Some(provider), &[]).await;
    let ada = json!({"displayName": "Ada", "type": "User", "identity": {"subject": "ada@example.com"}});
    r.hit("POST /iam/api-keys", "/iam/api-keys", Some(&admin), Some(ada), &[]).await;
    let browser = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    for person in ["ada@example.com", "eve@example.com"] {
        *issuer.person.lock().unwrap() = person.to_owned();
        let verifier = "v".repeat(43);
        let challenge = iam_shared::federation::sign_in::s256(&verifier);
        let start =
            r.hit("GET /iam/auth/sign-in", &format!("/iam/auth/sign-in?org=acme&code_challenge={challenge}"), None, None, &[]).await;
        let back = browser.get(start.header("location").unwrap()).send().await.unwrap().headers()["location"].to_str().unwrap().to_owned();
        let callback = back.strip_prefix("http://iam.test").unwrap().to_owned();
        let console = r.hit("GET /iam/auth/sign-in/callback", &callback, None, None, &[]).await;
        if let Some(code) = console.header("location").unwrap().strip_prefix("/console/index.html#sign-in=") {
            let form = format!("grant_type=authorization_code&client_id=console&code={code}&code_verifier={verifier}");
            assert_eq!(r.token_form(&form, None).await.status, StatusCode::OK);
        }
    }

    // Revocation, and what it refuses afterwards.
    let revoke = "POST /iam/api-keys/{principalId}/credentials/{keyId}/revoke";
    r.hit(revoke, &format!("{credentials}/{key_id}/revoke"), Some(&admin), None, &[]).await;
    r.hit(revoke, &format!("{credentials}/{key_id}/revoke"), Some(&admin), None, &[]).await;
    r.token_form("grant_type=client_credentials", Some((id, key_secret))).await;
    r.hit(patch, &one, Some(&admin), Some(json!({"status": "Revoked"})), &[]).await;
    r.hit(issue, &credentials, Some(&admin), Some(json!({"name": "late"})), &[]).await;

    // Changes to another administrator: each is guarded by the caller as witness, checked in
    // the write's own transaction. And the last administrator's own removal, refused after a
    // search of the organisation for another.
    let second = r.hit("POST /iam/api-keys", "/iam/api-keys", Some(&admin), Some(json!({"displayName": "second admin"})), &[]).await;
    let second = format!("/iam/api-keys/{}", second.str("id"));
    r.hit(assign, &format!("{second}/role-assignments/iam-admin"), Some(&admin), None, &[]).await;
    let second_key = r.hit(issue, &format!("{second}/credentials"), Some(&admin), Some(json!({"name": "k"})), &[]).await;
    let second_key = second_key.body["credential"]["keyId"].as_str().unwrap().to_owned();
    r.hit(revoke, &format!("{second}/credentials/{second_key}/revoke"), Some(&admin), None, &[]).await;
    r.hit(issue, &format!("{second}/credentials"), Some(&admin), Some(json!({"name": "k2"})), &[]).await;
    r.hit(unassign, &format!("{second}/role-assignments/iam-admin"), Some(&admin), None, &[]).await;
    r.hit(assign, &format!("{second}/role-assignments/iam-admin"), Some(&admin), None, &[]).await;
    r.hit(patch, &second, Some(&admin), Some(json!({"status": "Suspended"})), &[]).await;
    let (admin_key_id, _) = acme_key.split_once('.').unwrap();
    let root = r.hit("GET /iam/api-keys", "/iam/api-keys", Some(&admin), None, &[]).await;
    let root = root.body["items"].as_array().unwrap().iter().find(|p| p["createdBy"] == "system:bootstrap").unwrap()["id"].clone();
    let root = format!("/iam/api-keys/{}", root.as_str().unwrap());
    let refused =
        r.hit(revoke, &format!("{root}/credentials/{}/revoke", admin_key_id.trim_start_matches("ik_")), Some(&admin), None, &[]).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.raw);

    let mut failures = Vec::new();
    let mut observed_by_function: BTreeMap<String, Grants> = BTreeMap::new();
    for (route, calls) in &r.observed {
        let function = route_functions.get(route).unwrap_or_else(|| panic!("{route} is not a route of template.yaml"));
        let init = match cold_start_of(function) {
            ColdStart::Signer => &cold_starts["signer"],
            ColdStart::Verifier => &cold_starts["verifier"],
            ColdStart::Public => &cold_starts["public"],
        };
        let needed: Grants = calls.iter().chain(init).cloned().collect();
        for call in needed.difference(&granted[function]) {
            failures.push(format!("{function} ({route}) calls {} on {} but its policy does not allow it", call.0, call.1));
        }
        observed_by_function.entry(function.clone()).or_default().extend(needed);
    }
    for route in route_functions.keys() {
        assert!(r.observed.contains_key(route), "{route} was not exercised");
    }
    // The operations table says which tables each function touches, and which route it serves.
    for operation in iam_functions::OPERATIONS {
        assert_eq!(route_functions.get(&operation.route_key()), Some(&operation.name.to_owned()), "{}: route", operation.name);
        let touched: BTreeSet<&str> =
            observed_by_function[operation.name].iter().map(|(_, resource)| resource.as_str()).filter(|r| r.ends_with("Table")).collect();
        let declared: BTreeSet<&str> = operation.tables.iter().map(|t| t.logical_id()).collect();
        assert_eq!(touched, declared, "{}: the tables it touches are not the tables the operations table names", operation.name);
    }

    // The rotation function: all four steps, as Secrets Manager drives them.
    let rotated = SigningSecrets { private: iam_testkit::unique("rotated"), public: iam_testkit::unique("rotated-public") };
    secrets.create_secret().name(&rotated.private).secret_string(r#"{"placeholder": true}"#).send().await.unwrap();
    secrets.create_secret().name(&rotated.public).secret_string(r#"{"keys": []}"#).send().await.unwrap();
    r.names.insert(rotated.private.clone(), "SigningKeySecret");
    r.names.insert(rotated.public.clone(), "SigningPublicKeysSecret");
    r.proxy.take_calls();
    // Two rotations: the second also unpublishes a key.
    for _ in 0..2 {
        let version = iam_testkit::version_token();
        for step in [RotationStep::Create, RotationStep::Set, RotationStep::Test, RotationStep::Finish] {
            rotate(&secrets, &rotated, &version, step, RotationTiming::IMMEDIATE).await.unwrap();
        }
    }
    let calls = r.logical(r.proxy.take_calls());
    for call in calls.difference(&granted["rotate-signing-key"]) {
        failures.push(format!("rotate-signing-key calls {} on {} but its policy does not allow it", call.0, call.1));
    }
    observed_by_function.insert("rotate-signing-key".into(), calls);

    // The event publisher: the trail's records as the audit stream delivers them, published on
    // the default bus through the proxy.
    let trail = r.app.call(axum::http::Method::GET, "/iam/audit-events?limit=50", Some(&admin), None).await;
    let records = iam_tests::audit_stream_records(&trail.body);
    let batch: iam_functions::publish_events::StreamEvent = serde_json::from_value(json!({"Records": records})).unwrap();
    r.names.insert("default".into(), "EventBus");
    r.proxy.take_calls();
    let sink = iam_functions::publish_events::EventBridgeSink { client: aws_sdk_eventbridge::Client::new(&sdk), bus: "default".into() };
    let published = iam_functions::publish_events::publish(batch, &sink).await;
    assert!(published.batch_item_failures.is_empty(), "{published:?}");
    let calls = r.logical(r.proxy.take_calls());
    for call in calls.difference(&granted["publish-events"]) {
        failures.push(format!("publish-events calls {} on {} but its policy does not allow it", call.0, call.1));
    }
    observed_by_function.insert("publish-events".into(), calls);

    // The webhook delivery function: an event from the stream (its delivery is queued), then
    // that delivery's attempt from the queue (it fails, and is queued again with its backoff).
    let queue_name = iam_testkit::unique("webhook-retries");
    // The queue is made and read around the proxy; only the function's own calls go through it.
    let sqs = aws_sdk_sqs::Client::new(&iam_testkit::sdk_config().await);
    let queue_url = sqs.create_queue().queue_name(&queue_name).send().await.unwrap().queue_url().unwrap().to_owned();
    r.names.insert(queue_name.clone(), "WebhookDeliveryQueue");
    let trail = r.app.call(axum::http::Method::GET, "/iam/audit-events?limit=5", Some(&admin), None).await;
    let mut records = iam_tests::audit_stream_records(&trail.body);
    records.retain(|rec| rec["dynamodb"]["NewImage"]["record"]["S"].as_str().is_some_and(|r| r.contains("credential.revoke")));
    assert!(!records.is_empty(), "a revocation to announce");
    records.truncate(1);
    for rec in &mut records {
        rec["eventSource"] = json!("aws:dynamodb");
    }
    r.proxy.take_calls();
    let delivery_key = WebhookKeySource::secrets_manager(secrets.clone(), webhook_key_secret.clone()).key().await.unwrap();
    let outbound = iam_shared::outbound::Outbound::new(iam_api::config::webhook_outbound_rules(false)).unwrap();
    let queue = iam_functions::deliver_webhooks::SqsDeliveryQueue { client: aws_sdk_sqs::Client::new(&sdk), url: queue_url.clone() };
    let delivery_store = tables.store(dynamodb.clone());
    let delivery =
        iam_functions::deliver_webhooks::Delivery { store: &delivery_store, outbound: &outbound, key: &delivery_key, queue: &queue };
    let batch = serde_json::from_value(json!({"Records": records})).unwrap();
    let answered = delivery.handle(batch, iam_shared::model::now()).await;
    assert!(answered.batch_item_failures.is_empty(), "{answered:?}");
    let mut message = None;
    for _ in 0..20 {
        let queued = sqs.receive_message().queue_url(&queue_url).send().await.unwrap();
        if let Some(m) = queued.messages().first() {
            message = m.body().map(str::to_owned);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let message = message.expect("the delivery queued");
    let retry = json!({"Records": [{"eventSource": "aws:sqs", "messageId": "m1", "body": message}]});
    let later = iam_shared::model::now() + chrono::Duration::seconds(10);
    let answered = delivery.handle(serde_json::from_value(retry).unwrap(), later).await;
    assert!(answered.batch_item_failures.is_empty(), "{answered:?}");
    let calls = r.logical(r.proxy.take_calls());
    for call in calls.difference(&granted["deliver-webhooks"]) {
        failures.push(format!("deliver-webhooks calls {} on {} but its policy does not allow it", call.0, call.1));
    }
    observed_by_function.insert("deliver-webhooks".into(), calls);

    // The warnings sweep, at a time when every key is idle: it scans and records.
    r.proxy.take_calls();
    let swept = iam_functions::send_warnings::handle(
        &tables.store(dynamodb.clone()),
        &iam_shared::warnings::WarningSettings::default(),
        iam_shared::model::now() + chrono::Duration::days(45),
    )
    .await
    .unwrap();
    assert!(swept.sent > 0, "{swept:?}");
    let calls = r.logical(r.proxy.take_calls());
    for call in calls.difference(&granted["send-warnings"]) {
        failures.push(format!("send-warnings calls {} on {} but its policy does not allow it", call.0, call.1));
    }
    observed_by_function.insert("send-warnings".into(), calls);

    // The background functions' rows say which tables each touches, as the operations' do.
    for function in iam_functions::BACKGROUND {
        let touched: BTreeSet<&str> = observed_by_function
            .get(function.name)
            .unwrap_or_else(|| panic!("{} was not exercised", function.name))
            .iter()
            .map(|(_, resource)| resource.as_str())
            .filter(|r| r.ends_with("Table"))
            .collect();
        let declared: BTreeSet<&str> = function.tables.iter().map(|t| t.logical_id()).collect();
        assert_eq!(touched, declared, "{}: the tables it touches are not the tables its BACKGROUND row names", function.name);
    }

    for (function, grants) in &granted {
        let observed = observed_by_function.get(function).cloned().unwrap_or_default();
        for grant in grants.difference(&observed) {
            failures.push(format!("{function}'s policy allows {} on {}, which it never calls", grant.0, grant.1));
        }
    }
    assert!(failures.is_empty(), "template.yaml policies disagree with the code:\n{}", failures.join("\n"));
}

fn template() -> Yaml {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml");
    serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// `!GetAtt X.Arn`, `!Ref X` or a plain string, as text to compare.
fn reference(value: &Yaml) -> String {
    match value {
        Yaml::Tagged(tagged) => format!("{} {}", tagged.tag, tagged.value.as_str().unwrap_or_default()),
        Yaml::String(s) => s.clone(),
        other => format!("{other:?}"),
    }
}

fn listed(value: &Yaml) -> Vec<Yaml> {
    value.as_sequence().cloned().unwrap_or_else(|| vec![value.clone()])
}

/// Whether an IAM action pattern (`kms:*`, `kms:Decrypt*`) covers `action`.
fn covers(pattern: &str, action: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => action.to_ascii_lowercase().starts_with(&prefix.to_ascii_lowercase()),
        None => pattern.eq_ignore_ascii_case(action),
    }
}

/// The KMS side of "the private key only where it signs", which no test can run (Secrets
/// Manager, not our code, calls KMS; moto enforces neither key nor resource policies): read
/// from template.yaml. The Secrets Manager side is `every_policy_grants_exactly_what_its_function_calls`.
#[test]
fn only_the_signing_functions_can_read_the_private_keys() {
    let template = template();
    let resources = &template["Resources"];
    let (granted, _) = granted_by_template();
    let mut readers: Vec<&str> =
        granted.iter().filter(|(_, grants)| grants.iter().any(|(_, r)| r == "SigningKeySecret")).map(|(f, _)| f.as_str()).collect();
    readers.sort();
    assert_eq!(readers, ["exchange-token", "rotate-signing-key"], "only these are granted anything on the private keys");
    assert_eq!(cold_start_of("exchange-token"), ColdStart::Signer);

    // The roles of exactly those two functions.
    let role_of = |function: &str| reference(&resources[function]["Properties"]["Role"]);
    let signers = BTreeSet::from([role_of("ExchangeTokenFunction"), role_of("RotateSigningKeyFunction")]);
    assert_eq!(signers, BTreeSet::from(["!GetAtt ExchangeTokenRole.Arn".to_owned(), "!GetAtt RotateSigningKeyRole.Arn".to_owned()]));
    assert!(template["Globals"]["Function"]["Environment"]["Variables"].get("IAM_SIGNING_SECRET_ID").is_none());
    for (logical, resource) in resources.as_mapping().unwrap() {
        let names_private = resource["Properties"]["Environment"]["Variables"].get("IAM_SIGNING_SECRET_ID").is_some();
        let signer = ["ExchangeTokenFunction", "RotateSigningKeyFunction"].contains(&logical.as_str().unwrap());
        assert_eq!(names_private, signer, "{logical:?}: only the signers are told where the private keys are");
    }

    // The secret is encrypted under our key, and its resource policy refuses every other reader.
    let secret = &resources["SigningKeySecret"]["Properties"];
    assert_eq!(reference(&secret["KmsKeyId"]), "!Ref SigningKeyEncryptionKey");
    let policy = &resources["SigningKeySecretPolicy"]["Properties"];
    assert_eq!(reference(&policy["SecretId"]), "!Ref SigningKeySecret");
    assert_eq!(policy["BlockPublicPolicy"].as_bool(), Some(true));
    let deny = policy["ResourcePolicy"]["Statement"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|s| s["Effect"].as_str() == Some("Deny"))
        .expect("a Deny statement");
    assert_eq!(deny["Principal"].as_str(), Some("*"));
    assert!(listed(&deny["Action"]).iter().any(|a| covers(a.as_str().unwrap(), "secretsmanager:GetSecretValue")));
    let allowed: BTreeSet<String> = listed(&deny["Condition"]["StringNotEquals"]["aws:PrincipalArn"]).iter().map(reference).collect();
    assert_eq!(allowed, signers, "everyone but the two signers is refused");

    // The key's policy: every statement that lets anyone use the key names only the signers,
    // through Secrets Manager; one statement keeps the key manageable without using it.
    let key = &resources["SigningKeyEncryptionKey"]["Properties"];
    let uses = [
        "kms:Decrypt",
        "kms:Encrypt",
        "kms:GenerateDataKey",
        "kms:GenerateDataKeyWithoutPlaintext",
        "kms:ReEncryptFrom",
        "kms:ReEncryptTo",
    ];
    let mut decrypters = BTreeSet::new();
    let mut administered = false;
    for statement in key["KeyPolicy"]["Statement"].as_sequence().unwrap() {
        assert_eq!(statement["Effect"].as_str(), Some("Allow"));
        let actions: Vec<String> = listed(&statement["Action"]).iter().map(|a| a.as_str().unwrap().to_owned()).collect();
        let principals: BTreeSet<String> = listed(&statement["Principal"]["AWS"]).iter().map(reference).collect();
        let grants_use = uses.iter().any(|u| actions.iter().any(|a| covers(a, u)));
        if grants_use {
            assert!(principals.is_subset(&signers), "a key use granted to {principals:?}: {actions:?}");
            let via = reference(&statement["Condition"]["StringEquals"]["kms:ViaService"]);
            assert!(via.contains("secretsmanager."), "only through Secrets Manager: {via}");
            if actions.iter().any(|a| covers(a, "kms:Decrypt")) {
                decrypters.extend(principals);
            }
        } else if actions.iter().any(|a| covers(a, "kms:PutKeyPolicy")) {
            administered = true;
        }
    }
    assert_eq!(decrypters, signers, "both signers, and nobody else, may decrypt");
    assert!(administered, "a key-administrator statement keeps the key manageable");
}
