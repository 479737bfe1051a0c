//! `POST /iam/roles`: define a role for the organisation.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use iam_api::extract::IDEMPOTENT_REPLAYED;
use iam_api::{ApiError, AppState, Authenticated, IdempotencyKeyHeader, JsonBody};
use iam_shared::ids::Permission;
use iam_shared::model::PrincipalType;
use iam_shared::service::NewRole;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateRole {
    name: String,
    #[serde(default)]
    description: Option<String>,
    permissions: Vec<Permission>,
    principal_types: Vec<PrincipalType>,
}

pub fn endpoint(method: MethodFilter) -> MethodRouter<AppState> {
    on(method, create_role)
}

async fn create_role(
    State(iam): State<AppState>,
    Authenticated(caller): Authenticated,
    IdempotencyKeyHeader(idempotency): IdempotencyKeyHeader,
    JsonBody(body): JsonBody<CreateRole>,
) -> Result<Response, ApiError> {
    let input =
        NewRole { name: body.name, description: body.description, permissions: body.permissions, principal_types: body.principal_types };
    let created = iam.create_role(&caller, input, idempotency.as_ref()).await?;
    let mut response = (StatusCode::CREATED, Json(created.value)).into_response();
    if created.replayed {
        response.headers_mut().insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    Ok(response)
}
