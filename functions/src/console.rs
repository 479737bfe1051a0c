//! `GET /console/{asset}`: the console, a client of the management API on the same origin.
//! Its files are compiled in (no JavaScript build step); `config.json` tells it this
//! deployment's token endpoint and management audience.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use iam_api::oauth::TOKEN_PATH;
use iam_api::{ApiError, AppState, PathParams};
use serde_json::json;

const INDEX_HTML: &str = include_str!("../console/index.html");
const CONSOLE_JS: &str = include_str!("../console/console.js");
const CONSOLE_CSS: &str = include_str!("../console/console.css");

/// Scripts, styles and requests from this origin only, no inline code, never framed: a key
/// typed into the sign-in form can reach nothing but this service.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; \
     form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

pub fn endpoint(method: MethodFilter) -> MethodRouter<AppState> {
    on(method, asset)
}

/// The console's page itself, for a server that also answers at the directory (`/console/`).
pub fn index_page() -> Response {
    with_console_headers(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX_HTML).into_response())
}

async fn asset(State(iam): State<AppState>, PathParams(name): PathParams<String>) -> Response {
    let (content_type, body) = match name.as_str() {
        "index.html" => return index_page(),
        "console.js" => ("text/javascript; charset=utf-8", CONSOLE_JS),
        "console.css" => ("text/css; charset=utf-8", CONSOLE_CSS),
        "config.json" => {
            let settings = iam.tokens.settings();
            let config = json!({
                "issuer": settings.issuer,
                "tokenEndpoint": TOKEN_PATH,
                "managementAudience": settings.management_audience,
            });
            return with_console_headers(Json(config).into_response());
        }
        _ => return ApiError::new(StatusCode::NOT_FOUND, "Not Found", "no such console file").into_response(),
    };
    with_console_headers(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

fn with_console_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Revalidated on every load, so a deployment's new console is picked up at once.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(HeaderName::from_static("cross-origin-opener-policy"), HeaderValue::from_static("same-origin"));
    response
}
