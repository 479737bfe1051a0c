//! The operations table (`iam_functions::OPERATIONS`) against the contract and the deployment:
//! every row is an OpenAPI operation and a template function serving that route, every binary
//! is a row, and each row's `access` is what the service enforces.

use std::collections::BTreeSet;

use axum::http::{Method, StatusCode};
use iam_api::operation::{Access, Operation};
use iam_shared::roles::ADMIN_PERMISSIONS;
use iam_tests::TestApp;
use serde_json::{Value, json};
use serde_norway::Value as Yaml;

fn read(relative: &str) -> String {
    std::fs::read_to_string(format!("{}/../{relative}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn camel_case(name: &str) -> String {
    let mut words = name.split('-');
    let first = words.next().unwrap_or_default().to_owned();
    words.fold(first, |mut out, word| {
        let mut chars = word.chars();
        out.extend(chars.next().map(|c| c.to_ascii_uppercase()));
        out.push_str(chars.as_str());
        out
    })
}

#[test]
fn every_operation_is_an_openapi_operation_and_a_template_function() {
    let openapi: Yaml = serde_norway::from_str(&read("openapi.yaml")).unwrap();
    let template: Yaml = serde_norway::from_str(&read("template.yaml")).unwrap();
    let resources = template["Resources"].as_mapping().unwrap();

    let mut documented = BTreeSet::new();
    for (path, methods) in openapi["paths"].as_mapping().unwrap() {
        for (method, operation) in methods.as_mapping().unwrap() {
            let method = method.as_str().unwrap();
            if ["get", "post", "put", "patch", "delete"].contains(&method) {
                let key = format!("{} {}", method.to_uppercase(), path.as_str().unwrap());
                let public = operation.get("security").and_then(Yaml::as_sequence).is_some_and(Vec::is_empty);
                documented.insert((key, operation["operationId"].as_str().unwrap().to_owned(), public));
            }
        }
    }
    let table: BTreeSet<_> = iam_functions::OPERATIONS
        .iter()
        .map(|op| {
            // Public operations say so in OpenAPI (`security: []`); the others inherit bearerAuth.
            (op.route_key(), camel_case(op.name), op.access == Access::Public)
        })
        .collect();
    assert_eq!(table, documented, "the operations table and openapi.yaml disagree (route, operationId, security)");

    // Each row is served by the template function built from the row's binary.
    let function_of = |integration: &str| -> String {
        let uri = &resources[integration]["Properties"]["IntegrationUri"];
        let Yaml::Tagged(tagged) = uri else { panic!("{integration}: an integration this test cannot read") };
        tagged.value.as_str().unwrap().split('.').next().unwrap().to_owned()
    };
    let mut served = BTreeSet::new();
    for route in resources.values().filter(|r| r["Type"].as_str() == Some("AWS::ApiGatewayV2::Route")) {
        let Yaml::Tagged(target) = &route["Properties"]["Target"] else { panic!("a route target this test cannot read") };
        let integration = target.value.as_str().unwrap().trim_start_matches("integrations/${").trim_end_matches('}');
        let function = &resources[function_of(integration).as_str()];
        let binary = function["Metadata"]["BuildProperties"]["Binary"].as_str().unwrap().to_owned();
        served.insert((route["Properties"]["RouteKey"].as_str().unwrap().to_owned(), binary));
    }
    let rows: BTreeSet<_> = iam_functions::OPERATIONS.iter().map(|op| (op.route_key(), op.name.to_owned())).collect();
    assert_eq!(rows, served, "the operations table and template.yaml's routes disagree");

    // Every binary is a row of the operations table or of the background functions'.
    let bin_dir = format!("{}/../functions/src/bin", env!("CARGO_MANIFEST_DIR"));
    let binaries: BTreeSet<String> =
        std::fs::read_dir(bin_dir).unwrap().map(|e| e.unwrap().path().file_stem().unwrap().to_string_lossy().into_owned()).collect();
    let mut expected: BTreeSet<String> = iam_functions::OPERATIONS.iter().map(|op| op.name.to_owned()).collect();
    expected.extend(iam_functions::BACKGROUND.iter().map(|f| f.name.to_owned()));
    assert_eq!(binaries, expected);
}

/// A request each operation accepts from a caller allowed to make it. A new operation without one
/// fails [`every_operation_enforces_the_access_its_row_states`].
/// `key_ids`: the credential that revoke-credential revokes, and the one rotate-credential rotates.
/// `webhooks`: the endpoint delete-webhook deletes, and the one every other webhook route uses.
fn sample(
    op: &Operation,
    principal: &str,
    key_ids: (&str, &str),
    api_key: &str,
    webhooks: (&str, &str),
    service_account: (&str, &str),
) -> (Method, String, Option<Value>) {
    let key_id = if op.name == "rotate-credential" { key_ids.1 } else { key_ids.0 };
    let webhook = if op.name == "delete-webhook" { webhooks.0 } else { webhooks.1 };
    // Trust policies are a service account's: its routes act on one.
    let principal = if op.path.contains("trust-policies") { service_account.0 } else { principal };
    let path = op
        .path
        .replace("{principalId}", principal)
        .replace("{trustPolicyId}", service_account.1)
        .replace("{webhookId}", webhook)
        .replace("{keyId}", key_id)
        .replace("{roleId}", "iam-viewer")
        .replace("{asset}", "index.html");
    let body = match op.name {
        "create-principal" => Some(json!({"displayName": "operations test"})),
        "update-principal" => Some(json!({"displayName": "renamed by the operations test"})),
        "issue-credential" => Some(json!({"name": "operations test"})),
        "create-role" => Some(json!({"name": iam_testkit::unique("ops"), "permissions": ["ops:run"], "principalTypes": ["ApiKey"]})),
        "exchange-token" => Some(json!({"apiKey": api_key})),
        "rotate-credential" => Some(json!({"gracePeriodSeconds": 0})),
        "update-credential" => Some(json!({"name": "renamed by the operations test"})),
        "set-trusted-issuers" => Some(json!({"issuers": [{"issuer": "https://issuer.example"}]})),
        "add-trust-policy" => Some(json!({"issuer": "https://issuer.example", "audience": "iam", "subject": "repo:acme/api:*"})),
        "revoke-leaked-credentials" => Some(json!({"keys": ["ik_0000000000000000000000.not-a-real-secret"]})),
        "github-secret-scanning" => None,
        "set-credential-policy" => Some(json!({"maxIdleDays": 3650})),
        "introspect-token" => None,
        "create-webhook" => Some(json!({"url": "https://hooks.example.com/iam"})),
        "update-webhook" => Some(json!({"description": "changed by the operations test"})),
        "list-webhooks" | "delete-webhook" | "rotate-webhook-secret" | "list-webhook-deliveries" => None,
        "list-principals"
        | "get-principal"
        | "list-credentials"
        | "revoke-credential"
        | "list-roles"
        | "list-role-assignments"
        | "assign-role"
        | "unassign-role"
        | "jwks"
        | "openid-configuration"
        | "whoami"
        | "get-credential-policy"
        | "list-audit-events"
        | "list-revocations"
        | "get-trusted-issuers"
        | "list-trust-policies"
        | "remove-trust-policy"
        | "sign-in"
        | "sign-in-callback"
        | "console" => None,
        other => panic!("{other}: give the operations test a sample request for it"),
    };
    // The console's sign-in: an organisation and a PKCE challenge (acme has no identity
    // provider, so it is sent back to the console).
    let path = if op.name == "sign-in" { format!("{path}?org=acme&code_challenge={}", "A".repeat(43)) } else { path };
    (op.method.as_str().parse().unwrap(), path, body)
}

#[tokio::test]
async fn every_operation_enforces_the_access_its_row_states() {
    let app = TestApp::new().await;
    let admin = app.admin().await;
    let principal = app.create_principal(&admin, "subject").await;
    // One credential for revoke-credential to revoke, one for rotate-credential to rotate, and
    // another for exchange-token to use after them.
    let (key_id, _) = app.issue(&admin, &principal).await;
    let (rotated_key_id, _) = app.issue(&admin, &principal).await;
    let (_, api_key) = app.issue(&admin, &principal).await;
    let mut webhooks = Vec::new();
    for _ in 0..2 {
        let created = app.call(Method::POST, "/iam/webhooks", Some(&admin), Some(json!({"url": "https://hooks.example.com/"}))).await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.raw);
        webhooks.push(created.body["webhook"]["id"].as_str().unwrap().to_owned());
    }

    let trusted = json!({"issuers": [{"issuer": "https://issuer.example"}]});
    assert_eq!(app.call(Method::PUT, "/iam/trusted-issuers", Some(&admin), Some(trusted)).await.status, StatusCode::OK);
    let created = app.call(Method::POST, "/iam/api-keys", Some(&admin), Some(json!({"displayName": "sa", "type": "ServiceAccount"}))).await;
    let service_account = created.str("id").to_owned();
    let policy = json!({"issuer": "https://issuer.example", "audience": "iam", "subject": "repo:acme/api:*"});
    let added = app.call(Method::POST, &format!("/iam/api-keys/{service_account}/trust-policies"), Some(&admin), Some(policy)).await;
    assert_eq!(added.status, StatusCode::CREATED, "{}", added.raw);
    let policy_id = added.str("id").to_owned();

    for op in iam_functions::OPERATIONS {
        let (method, path, body) =
            sample(op, &principal, (&key_id, &rotated_key_id), &api_key, (&webhooks[0], &webhooks[1]), (&service_account, &policy_id));
        match op.access {
            Access::Permission(permission) => {
                // A caller holding every other IAM permission is refused for want of this one.
                let role = json!({
                    "name": iam_testkit::unique("all-but"),
                    "permissions": ADMIN_PERMISSIONS.iter().filter(|p| **p != permission).collect::<Vec<_>>(),
                    "principalTypes": ["ApiKey"],
                });
                let created = app.call(Method::POST, "/iam/roles", Some(&admin), Some(role)).await;
                assert_eq!(created.status, StatusCode::CREATED, "{}", created.raw);
                let lacking = app.create_principal(&admin, "lacking").await;
                app.assign(&admin, &lacking, created.str("id")).await;
                let (_, lacking_key) = app.issue(&admin, &lacking).await;
                let lacking_token = app.token(&lacking_key).await;
                // Introspection takes a form, not JSON: it asks about the administrator's token.
                let (refused, allowed) = match op.name {
                    "introspect-token" => (app.introspect(Some(&lacking_token), &admin).await, app.introspect(Some(&admin), &admin).await),
                    _ => (
                        app.call(method.clone(), &path, Some(&lacking_token), body.clone()).await,
                        app.call(method, &path, Some(&admin), body).await,
                    ),
                };
                assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}: without {permission}: {}", op.name, refused.raw);

                assert!(allowed.status.is_success(), "{}: the administrator: {} {}", op.name, allowed.status, allowed.raw);
            }
            Access::Authenticated => {
                let refused = app.call(method.clone(), &path, None, body.clone()).await;
                assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}: without a token", op.name);
                let allowed = app.call(method, &path, Some(&admin), body).await;
                assert!(allowed.status.is_success(), "{}: {} {}", op.name, allowed.status, allowed.raw);
            }
            Access::Public if op.name == "github-secret-scanning" => {
                // Authenticated by GitHub's signature instead: unsigned, it is refused as such.
                let answered = app.call(method, &path, None, body).await;
                assert_eq!(answered.status, StatusCode::BAD_REQUEST, "{}: unsigned: {}", op.name, answered.raw);
                assert!(
                    answered.str("detail").contains("github-public-key-signature")
                        || answered.str("detail").contains("github-public-key-identifier")
                );
            }
            Access::Public if op.path.starts_with("/iam/auth/sign-in") => {
                // A browser's route: it answers with a redirect (here back to the console, as
                // the sample asks nothing of an identity provider), never an error page.
                let answered = app.call(method, &path, None, body).await;
                assert_eq!(answered.status, StatusCode::FOUND, "{}: without a token: {}", op.name, answered.raw);
                assert!(answered.header("location").is_some_and(|l| l.starts_with("/console/index.html#sign-in-error=")), "{}", op.name);
            }
            Access::Public => {
                let answered = app.call(method, &path, None, body).await;
                assert!(answered.status.is_success(), "{}: without a token: {} {}", op.name, answered.status, answered.raw);
            }
        }
    }
}
