//! `POST /iam/auth/token`: exchange an API key for an access token.
//!
//! Three request forms: JSON `{apiKey, scope?, audience?}`; OAuth 2.0 client credentials
//! (RFC 6749 §4.4) with HTTP Basic or form fields; OAuth 2.0 token exchange (RFC 8693) with the
//! key as `subject_token`, or (keyless) a workload's own OIDC token as `subject_token` of type
//! `id_token` or `jwt` for the service account named by `client_id`. Errors use the RFC 6749
//! §5.2 shape.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use iam_api::extract::{content_type, read_body};
use iam_api::metrics::ExchangeMetric;
use iam_api::oauth::OAuthError;
use iam_api::{AppState, SourceAddress};
use iam_shared::api_key::ApiKey;
use iam_shared::federation::exchange::FederatedRequest;
use iam_shared::federation::sign_in::CONSOLE_CLIENT_ID;
use iam_shared::service::ExchangeRequest;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

pub const CLIENT_CREDENTIALS: &str = "client_credentials";
pub const AUTHORIZATION_CODE: &str = "authorization_code";
pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const API_KEY_TOKEN_TYPE: &str = "urn:infuse:params:oauth:token-type:api-key";
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
pub const ID_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";
pub const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

pub fn endpoint(method: MethodFilter) -> MethodRouter<AppState> {
    on(method, token).fallback(only_post)
}

async fn only_post() -> Response {
    let mut response =
        OAuthError::new(StatusCode::METHOD_NOT_ALLOWED, "invalid_request", "the token endpoint accepts only POST").into_response();
    response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
    response
}

#[derive(Serialize)]
struct TokenResponse<'a> {
    access_token: &'a str,
    token_type: &'static str,
    expires_in: u64,
    scope: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    issued_token_type: Option<&'static str>,
}

/// The JSON request form. Unknown fields are ignored, as OAuth ignores unknown parameters.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonTokenRequest {
    api_key: Option<String>,
    scope: Option<String>,
    audience: Option<String>,
}

/// What a token request presents: an API key, a workload's token for a service account, or
/// the console's sign-in code with its PKCE verifier.
pub enum Presented {
    ApiKey(ExchangeRequest),
    Workload(FederatedRequest),
    SignIn { code: SecretString, verifier: SecretString },
}

/// A parsed token request: the exchange to run, and whether to answer `issued_token_type`.
pub struct ParsedRequest {
    pub exchange: Presented,
    pub token_exchange: bool,
}

async fn token(State(iam): State<AppState>, SourceAddress(source): SourceAddress, request: Request) -> Response {
    let parsed = match parse(request).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let result = match parsed.exchange {
        Presented::ApiKey(request) => iam.exchange(ExchangeRequest { source, ..request }).await,
        Presented::Workload(request) => iam.exchange_federated(FederatedRequest { source, ..request }).await,
        Presented::SignIn { code, verifier } => iam.redeem_sign_in(code.expose_secret(), verifier.expose_secret()).await,
    };
    ExchangeMetric::of(&result).emit();
    match result {
        Ok(issued) => {
            let body = TokenResponse {
                access_token: issued.access_token.expose_secret(),
                token_type: "Bearer",
                expires_in: issued.expires_in,
                scope: &issued.scope,
                issued_token_type: parsed.token_exchange.then_some(ACCESS_TOKEN_TYPE),
            };
            let mut response = Json(body).into_response();
            response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response.headers_mut().insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
            response
        }
        Err(e) => OAuthError::from(e).into_response(),
    }
}

pub async fn parse(request: Request) -> Result<ParsedRequest, OAuthError> {
    let (parts, body) = read_body(request)
        .await
        .map_err(|_| OAuthError::new(StatusCode::PAYLOAD_TOO_LARGE, "invalid_request", iam_api::extract::body_limit_detail()))?;
    match content_type(&parts).as_deref() {
        Some("application/json") => parse_json(&body),
        Some("application/x-www-form-urlencoded") => parse_form(&parts, &body),
        _ => Err(OAuthError::invalid_request("Content-Type must be application/x-www-form-urlencoded or application/json")),
    }
}

fn parse_json(body: &[u8]) -> Result<ParsedRequest, OAuthError> {
    // serde_json's messages may quote the input, and the input holds a key: never echo them.
    let request: JsonTokenRequest =
        serde_json::from_slice(body).map_err(|_| OAuthError::invalid_request("the body must be a JSON object with a string apiKey"))?;
    let api_key = request.api_key.ok_or_else(|| OAuthError::invalid_request("apiKey is required"))?;
    Ok(ParsedRequest {
        exchange: Presented::ApiKey(ExchangeRequest {
            key: ApiKey::parse(&api_key),
            scope: request.scope,
            audience: request.audience,
            source: None,
        }),
        token_exchange: false,
    })
}

/// Every form parameter this endpoint reads.
const RECOGNISED_PARAMETERS: [&str; 13] = [
    "grant_type",
    "client_id",
    "client_secret",
    "scope",
    "audience",
    "resource",
    "subject_token",
    "subject_token_type",
    "requested_token_type",
    "actor_token",
    "actor_token_type",
    "code",
    "code_verifier",
];

struct Form(Vec<(String, String)>);

impl Form {
    fn parse(body: &[u8]) -> Result<Self, OAuthError> {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
        // RFC 6749 §3.2: a parameter must not repeat, and unrecognised ones are ignored, so
        // only the recognised ones are counted (linear in the body, however many pairs).
        for name in RECOGNISED_PARAMETERS {
            if pairs.iter().filter(|(n, _)| n == name).nth(1).is_some() {
                return Err(OAuthError::invalid_request(format!("parameter '{name}' is repeated")));
            }
        }
        Ok(Self(pairs))
    }

    /// A parameter; an empty value counts as absent (RFC 6749 §3.1).
    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, v)| n == name && !v.is_empty()).map(|(_, v)| v.as_str())
    }

    fn require(&self, name: &str) -> Result<&str, OAuthError> {
        self.get(name).ok_or_else(|| OAuthError::invalid_request(format!("{name} is required")))
    }
}

/// The audience asked for, by `audience` or `resource` (RFC 8693 §2.1, RFC 8707): both may be
/// given, but must then name the same target.
fn target(form: &Form) -> Result<Option<String>, OAuthError> {
    match (form.get("audience"), form.get("resource")) {
        (Some(a), Some(r)) if a != r => {
            Err(OAuthError::new(StatusCode::BAD_REQUEST, "invalid_target", "audience and resource name different targets"))
        }
        (a, r) => Ok(a.or(r).map(str::to_owned)),
    }
}

fn parse_form(parts: &Parts, body: &[u8]) -> Result<ParsedRequest, OAuthError> {
    let form = Form::parse(body)?;
    let scope = form.get("scope").map(str::to_owned);
    match form.require("grant_type")? {
        CLIENT_CREDENTIALS => {
            let key = client_credentials(parts, &form)?;
            let audience = target(&form)?;
            Ok(ParsedRequest { exchange: Presented::ApiKey(ExchangeRequest { key, scope, audience, source: None }), token_exchange: false })
        }
        TOKEN_EXCHANGE => {
            let subject = form.require("subject_token")?;
            let subject_type = form.require("subject_token_type")?;
            if subject_type != API_KEY_TOKEN_TYPE && subject_type != ID_TOKEN_TYPE && subject_type != JWT_TOKEN_TYPE {
                return Err(OAuthError::invalid_request(format!(
                    "subject_token_type must be {API_KEY_TOKEN_TYPE}, or {ID_TOKEN_TYPE} or {JWT_TOKEN_TYPE} with client_id naming a service account"
                )));
            }
            if form.get("requested_token_type").is_some_and(|t| t != ACCESS_TOKEN_TYPE) {
                return Err(OAuthError::invalid_request(format!("requested_token_type must be {ACCESS_TOKEN_TYPE}")));
            }
            if form.get("actor_token").is_some() {
                return Err(OAuthError::invalid_request("actor_token is not supported"));
            }
            let audience = target(&form)?;
            if subject_type == API_KEY_TOKEN_TYPE {
                let exchange = Presented::ApiKey(ExchangeRequest { key: ApiKey::parse(subject), scope, audience, source: None });
                return Ok(ParsedRequest { exchange, token_exchange: true });
            }
            // Keyless: the workload holds no secret, so none may be sent, and the service
            // account is named, never searched for.
            if form.get("client_secret").is_some() || parts.headers.contains_key(header::AUTHORIZATION) {
                return Err(OAuthError::invalid_request("a workload's token is presented without a client secret"));
            }
            let client_id =
                form.get("client_id").ok_or_else(|| OAuthError::invalid_request("client_id (the service account, sa_…) is required"))?;
            let exchange = Presented::Workload(FederatedRequest {
                client_id: client_id.to_owned(),
                subject_token: SecretString::from(subject.to_owned()),
                scope,
                audience,
                source: None,
            });
            Ok(ParsedRequest { exchange, token_exchange: true })
        }
        // The console redeeming its sign-in code (RFC 6749 §4.1.3 with PKCE, RFC 7636).
        AUTHORIZATION_CODE => {
            if form.require("client_id")? != CONSOLE_CLIENT_ID {
                return Err(OAuthError::invalid_client());
            }
            if form.get("client_secret").is_some() || parts.headers.contains_key(header::AUTHORIZATION) {
                return Err(OAuthError::invalid_request("the console is a public client: no client secret"));
            }
            let code = SecretString::from(form.require("code")?.to_owned());
            let verifier = SecretString::from(form.require("code_verifier")?.to_owned());
            Ok(ParsedRequest { exchange: Presented::SignIn { code, verifier }, token_exchange: false })
        }
        other => Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            format!(
                "grant_type '{}' is not supported; use {CLIENT_CREDENTIALS}, {TOKEN_EXCHANGE} or {AUTHORIZATION_CODE}",
                other.chars().take(100).collect::<String>()
            ),
        )),
    }
}

/// Client authentication: HTTP Basic (RFC 6749 §2.3.1, each part form-encoded) or the
/// `client_id`/`client_secret` form fields, but not both.
fn client_credentials(parts: &Parts, form: &Form) -> Result<Result<ApiKey, iam_shared::api_key::KeyFormatError>, OAuthError> {
    let basic = parts.headers.get(header::AUTHORIZATION).map(|h| h.to_str().unwrap_or_default());
    let in_form = form.get("client_secret").is_some();
    match basic {
        Some(value) => {
            if in_form {
                return Err(OAuthError::invalid_request("use one client authentication method, not both"));
            }
            let (scheme, encoded) = value.split_once(' ').ok_or_else(OAuthError::invalid_client)?;
            if !scheme.eq_ignore_ascii_case("basic") {
                return Err(OAuthError::invalid_client());
            }
            let decoded = STANDARD.decode(encoded.trim()).map_err(|_| OAuthError::invalid_client())?;
            let decoded = String::from_utf8(decoded).map_err(|_| OAuthError::invalid_client())?;
            let (id, secret) = decoded.split_once(':').ok_or_else(OAuthError::invalid_client)?;
            let id: String = form_urlencoded::parse(format!("x={id}").as_bytes()).map(|(_, v)| v.into_owned()).next().unwrap_or_default();
            let secret: String =
                form_urlencoded::parse(format!("x={secret}").as_bytes()).map(|(_, v)| v.into_owned()).next().unwrap_or_default();
            Ok(ApiKey::from_client_credentials(&id, &secret))
        }
        None => {
            let id = form.get("client_id").ok_or_else(OAuthError::invalid_client)?;
            let secret = form.get("client_secret").ok_or_else(OAuthError::invalid_client)?;
            Ok(ApiKey::from_client_credentials(id, secret))
        }
    }
}
