//! `POST /iam/api-keys`: create an API-key principal, or (`type: ServiceAccount`) a service
//! account, which has trust policies instead of credentials, or (`type: User` with an
//! `identity`) a person who signs in through the organisation's identity provider.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use chrono::{DateTime, Utc};
use iam_api::extract::IDEMPOTENT_REPLAYED;
use iam_api::{ApiError, AppState, Authenticated, IdempotencyKeyHeader, JsonBody, etag};
use iam_shared::model::{PrincipalStatus, PrincipalType};
use iam_shared::service::NewPrincipal;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreatePrincipal {
    display_name: String,
    #[serde(default)]
    status: Option<PrincipalStatus>,
    #[serde(default)]
    expires_at: Option<DateTime<Utc>>,
    #[serde(default, rename = "type")]
    principal_type: Option<PrincipalType>,
    #[serde(default)]
    identity: Option<IdentityBody>,
}

/// A person's identity at the organisation's identity provider.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct IdentityBody {
    #[serde(default)]
    issuer: Option<String>,
    subject: String,
}

pub fn endpoint(method: MethodFilter) -> MethodRouter<AppState> {
    on(method, create_principal)
}

async fn create_principal(
    State(iam): State<AppState>,
    Authenticated(caller): Authenticated,
    IdempotencyKeyHeader(idempotency): IdempotencyKeyHeader,
    JsonBody(body): JsonBody<CreatePrincipal>,
) -> Result<Response, ApiError> {
    let input = NewPrincipal {
        display_name: body.display_name,
        status: body.status,
        expires_at: body.expires_at,
        principal_type: body.principal_type,
        identity: body.identity.map(|i| (i.issuer, i.subject)),
    };
    let created = iam.create_principal(&caller, input, idempotency.as_ref()).await?;
    let principal = created.value;
    let location = HeaderValue::from_str(&format!("/iam/api-keys/{}", principal.id)).expect("ids are header-safe");
    let mut response = (StatusCode::CREATED, Json(&principal)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, location);
    headers.insert(header::ETAG, etag(principal.version));
    if created.replayed {
        headers.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    Ok(response)
}
