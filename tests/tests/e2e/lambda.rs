//! Each function's router answers real API Gateway HTTP API (payload v2) events through
//! `lambda_http`'s adapter: the Lambda path and `iam-local` share the same handlers.

use iam_api::AppState;
use iam_api::state::finish_router;
use iam_tests::TestApp;
use lambda_http::request::LambdaRequest;
use lambda_http::{Adapter, Context, LambdaEvent, Service};
use serde_json::{Value, json};

const FIXTURE: &str = include_str!("../../fixtures/apigw-http-v2.json");

/// The route keys of `template.yaml` (the route check keeps it, `openapi.yaml` and the
/// workspace in agreement).
const ROUTES: [&str; 16] = [
    "POST /iam/api-keys",
    "GET /iam/api-keys",
    "GET /iam/api-keys/{principalId}",
    "PATCH /iam/api-keys/{principalId}",
    "POST /iam/api-keys/{principalId}/credentials",
    "GET /iam/api-keys/{principalId}/credentials",
    "POST /iam/api-keys/{principalId}/credentials/{keyId}/revoke",
    "GET /iam/roles",
    "POST /iam/roles",
    "GET /iam/api-keys/{principalId}/role-assignments",
    "PUT /iam/api-keys/{principalId}/role-assignments/{roleId}",
    "DELETE /iam/api-keys/{principalId}/role-assignments/{roleId}",
    "POST /iam/auth/token",
    "GET /iam/.well-known/jwks.json",
    "GET /iam/.well-known/openid-configuration",
    "GET /iam/whoami",
];

struct Event {
    method: &'static str,
    path: String,
    query: &'static str,
    token: Option<String>,
    content_type: Option<&'static str>,
    body: Option<String>,
}

impl Event {
    fn new(method: &'static str, path: impl Into<String>) -> Self {
        Self { method, path: path.into(), query: "", token: None, content_type: None, body: None }
    }
    fn token(mut self, t: &str) -> Self {
        self.token = Some(t.to_owned());
        self
    }
    fn json(mut self, body: Value) -> Self {
        self.content_type = Some("application/json");
        self.body = Some(body.to_string());
        self
    }
    fn form(mut self, body: String) -> Self {
        self.content_type = Some("application/x-www-form-urlencoded");
        self.body = Some(body);
        self
    }
    fn query(mut self, q: &'static str) -> Self {
        self.query = q;
        self
    }

    /// The route this service's API declares for the request, and the path parameters API
    /// Gateway fills in from it (it sends both; the handlers route by path regardless).
    fn route(&self) -> (String, Value) {
        let segments: Vec<&str> = self.path.split('/').collect();
        for template in ROUTES {
            let (method, pattern) = template.split_once(' ').unwrap();
            let parts: Vec<&str> = pattern.split('/').collect();
            if method != self.method || parts.len() != segments.len() {
                continue;
            }
            let mut parameters = serde_json::Map::new();
            let matched = parts.iter().zip(&segments).all(|(part, segment)| match part.strip_prefix('{') {
                Some(name) => {
                    parameters.insert(name.trim_end_matches('}').to_owned(), json!(segment));
                    !segment.is_empty()
                }
                None => part == segment,
            });
            if matched {
                return (template.to_string(), if parameters.is_empty() { Value::Null } else { Value::Object(parameters) });
            }
        }
        ("$default".into(), Value::Null)
    }

    fn to_json(&self) -> Value {
        let mut event: Value = serde_json::from_str(FIXTURE).unwrap();
        let (route_key, path_parameters) = self.route();
        event["routeKey"] = json!(route_key);
        event["requestContext"]["routeKey"] = json!(route_key);
        event["pathParameters"] = path_parameters;
        if !self.query.is_empty() {
            let pairs: serde_json::Map<String, Value> =
                self.query.split('&').filter_map(|pair| pair.split_once('=')).map(|(k, v)| (k.to_owned(), json!(v))).collect();
            event["queryStringParameters"] = Value::Object(pairs);
        }
        event["rawPath"] = json!(self.path);
        event["rawQueryString"] = json!(self.query);
        event["requestContext"]["http"]["method"] = json!(self.method);
        event["requestContext"]["http"]["path"] = json!(self.path);
        if let Some(t) = &self.token {
            event["headers"]["authorization"] = json!(format!("Bearer {t}"));
        }
        if let Some(ct) = self.content_type {
            event["headers"]["content-type"] = json!(ct);
        }
        if let Some(b) = &self.body {
            event["headers"]["content-length"] = json!(b.len().to_string());
            event["body"] = json!(b);
        }
        event
    }
}

/// Runs one event through exactly one function's router, as its Lambda would.
async fn invoke(function: &str, state: &AppState, event: Event) -> (u16, Value) {
    let request: LambdaRequest = serde_json::from_value(event.to_json()).expect("payload v2 event");
    let mut adapter = Adapter::from(finish_router(iam_functions::operation(function).router(), state.clone()));
    let response = adapter.call(LambdaEvent::new(request, Context::default())).await.expect("infallible");
    let response = serde_json::to_value(&response).unwrap();
    let status = response["statusCode"].as_u64().unwrap() as u16;
    let body = match response["body"].as_str() {
        Some(raw) if !raw.is_empty() => serde_json::from_str(raw).unwrap_or(json!(raw)),
        _ => Value::Null,
    };
    assert_eq!(response["isBase64Encoded"], false, "JSON answers are text: {response}");
    (status, body)
}

#[tokio::test]
async fn every_function_answers_an_api_gateway_v2_event() {
    let app = TestApp::new().await;
    let s = &app.state;
    let (status, body) = invoke(
        "exchange-token",
        s,
        Event::new("POST", "/iam/auth/token").json(json!({"apiKey": app.acme_key, "audience": iam_tests::MANAGEMENT_AUDIENCE})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let admin = body["access_token"].as_str().unwrap().to_owned();
    let (id, secret) = app.acme_key.split_once('.').unwrap();
    let form = format!("grant_type=client_credentials&client_id={id}&client_secret={secret}");
    let (status, _) = invoke("exchange-token", s, Event::new("POST", "/iam/auth/token").form(form)).await;
    assert_eq!(status, 200);

    let (status, p) =
        invoke("create-principal", s, Event::new("POST", "/iam/api-keys").token(&admin).json(json!({"displayName": "lambda"}))).await;
    assert_eq!(status, 201, "{p}");
    let pid = p["id"].as_str().unwrap().to_owned();
    let (status, list) = invoke("list-principals", s, Event::new("GET", "/iam/api-keys").query("limit=10").token(&admin)).await;
    assert_eq!(status, 200);
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    let (status, got) = invoke("get-principal", s, Event::new("GET", format!("/iam/api-keys/{pid}")).token(&admin)).await;
    assert_eq!((status, got["id"].as_str()), (200, Some(pid.as_str())));
    let (status, _) = invoke(
        "update-principal",
        s,
        Event::new("PATCH", format!("/iam/api-keys/{pid}")).token(&admin).json(json!({"displayName": "renamed"})),
    )
    .await;
    assert_eq!(status, 200);

    let creds = format!("/iam/api-keys/{pid}/credentials");
    let (status, issued) = invoke("issue-credential", s, Event::new("POST", creds.clone()).token(&admin).json(json!({"name": "k"}))).await;
    assert_eq!(status, 201, "{issued}");
    let key_id = issued["credential"]["keyId"].as_str().unwrap().to_owned();
    let (status, listed) = invoke("list-credentials", s, Event::new("GET", creds.clone()).query("include=all").token(&admin)).await;
    assert_eq!((status, listed["items"].as_array().unwrap().len()), (200, 1));
    let rotate = Event::new("POST", format!("{creds}/{key_id}/rotate")).json(json!({"gracePeriodSeconds": 60})).token(&admin);
    let (status, rotated) = invoke("rotate-credential", s, rotate).await;
    assert_eq!((status, rotated["rotated"]["rotatedTo"].as_str()), (201, rotated["credential"]["keyId"].as_str()), "{rotated}");
    let (status, revoked) = invoke("revoke-credential", s, Event::new("POST", format!("{creds}/{key_id}/revoke")).token(&admin)).await;
    assert_eq!((status, revoked["status"].as_str()), (200, Some("Revoked")));

    let (status, roles) = invoke("list-roles", s, Event::new("GET", "/iam/roles").token(&admin)).await;
    assert_eq!((status, roles["items"].as_array().unwrap().len()), (200, 5));
    let role = json!({"name": "ops", "permissions": ["ops:run"], "principalTypes": ["ApiKey"]});
    let (status, _) = invoke("create-role", s, Event::new("POST", "/iam/roles").token(&admin).json(role)).await;
    assert_eq!(status, 201);

    let assignments = format!("/iam/api-keys/{pid}/role-assignments");
    let (status, _) = invoke("assign-role", s, Event::new("PUT", format!("{assignments}/iam-viewer")).token(&admin)).await;
    assert_eq!(status, 201);
    let (status, listed) = invoke("list-role-assignments", s, Event::new("GET", assignments.clone()).token(&admin)).await;
    assert_eq!((status, listed["items"].as_array().unwrap().len()), (200, 1));
    let (status, _) = invoke("unassign-role", s, Event::new("DELETE", format!("{assignments}/iam-viewer")).token(&admin)).await;
    assert_eq!(status, 204);

    let (status, policy) =
        invoke("set-credential-policy", s, Event::new("PUT", "/iam/policy").token(&admin).json(json!({"maxIdleDays": 90}))).await;
    assert_eq!((status, policy["maxIdleDays"].as_u64()), (200, Some(90)), "{policy}");
    let (status, policy) = invoke("get-credential-policy", s, Event::new("GET", "/iam/policy").token(&admin)).await;
    assert_eq!((status, policy["maxIdleDays"].as_u64()), (200, Some(90)), "{policy}");
    let form = form_urlencoded::Serializer::new(String::new()).append_pair("token", &admin).finish();
    let (status, introspected) = invoke("introspect-token", s, Event::new("POST", "/iam/auth/introspect").token(&admin).form(form)).await;
    assert_eq!((status, introspected["active"].as_bool()), (200, Some(true)), "{introspected}");

    let (status, me) = invoke("whoami", s, Event::new("GET", "/iam/whoami").token(&admin)).await;
    assert_eq!((status, me["org_id"].as_str()), (200, Some("acme")));
    let (status, jwks) = invoke("jwks", s, Event::new("GET", "/iam/.well-known/jwks.json")).await;
    assert_eq!((status, jwks["keys"][0]["kty"].as_str()), (200, Some("RSA")));
    let (status, discovery) = invoke("openid-configuration", s, Event::new("GET", "/iam/.well-known/openid-configuration")).await;
    assert_eq!((status, discovery["issuer"].as_str()), (200, Some(iam_tests::ISSUER)));
}

#[tokio::test]
async fn lambda_errors_are_the_same_problems() {
    let app = TestApp::new().await;
    let (status, body) = invoke("list-principals", &app.state, Event::new("GET", "/iam/api-keys")).await;
    assert_eq!((status, body["status"].as_u64()), (401, Some(401)));
    let (status, body) =
        invoke("exchange-token", &app.state, Event::new("POST", "/iam/auth/token").json(json!({"apiKey": "ik_nope.nope"}))).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")));
    // A function only serves its own route.
    let (status, _) = invoke("jwks", &app.state, Event::new("GET", "/iam/api-keys")).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn guesses_through_the_lambda_path_never_lock_the_owner_out() {
    let app = TestApp::new().await;
    let (id, secret) = app.acme_key.split_once('.').unwrap();
    // A well-formed guess for the same key id (checksum recomputed), from the fixture's sourceIp.
    let body = format!("{}{}", &secret[..10], "1".repeat(34));
    let sum = format!("{:0>6}", base62::encode(crc32fast::hash(format!("{id}.{body}").as_bytes())));
    let guess = format!("{id}.{body}{sum}");
    assert!(iam_shared::api_key::ApiKey::parse(&guess).is_ok(), "the guess is well-formed");
    for _ in 0..15 {
        let (status, _) = invoke("exchange-token", &app.state, Event::new("POST", "/iam/auth/token").json(json!({"apiKey": guess}))).await;
        assert_eq!(status, 401);
    }
    let (status, body) =
        invoke("exchange-token", &app.state, Event::new("POST", "/iam/auth/token").json(json!({"apiKey": app.acme_key}))).await;
    assert_eq!(status, 200, "the owner, from the guesser's address, is never refused: {body}");
    assert_eq!(app.state.hasher.argon2_runs(), 1, "only the right secret ran argon2");
}
