//! `POST /iam/api-keys`: create an API-key principal.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use iam_api::{ApiError, AppState, Authenticated, JsonBody};
use iam_shared::model::PrincipalStatus;
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
}

pub fn routes() -> Router<AppState> {
    Router::new().route("/iam/api-keys", post(create_principal))
}

async fn create_principal(
    State(iam): State<AppState>,
    Authenticated(caller): Authenticated,
    JsonBody(body): JsonBody<CreatePrincipal>,
) -> Result<impl IntoResponse, ApiError> {
    let input = NewPrincipal { display_name: body.display_name, status: body.status, expires_at: body.expires_at };
    let principal = iam.create_principal(&caller, input).await?;
    let location = format!("/iam/api-keys/{}", principal.id);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(principal)))
}
