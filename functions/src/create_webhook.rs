//! `POST /iam/webhooks`: add an endpoint the organisation's events are sent to. The answer
//! carries its signing secret, shown this once (`POST .../rotate-secret` makes another).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{MethodFilter, MethodRouter, on};
use iam_api::{ApiError, AppState, Authenticated, JsonBody};
use iam_shared::webhooks::WebhookChange;
use iam_shared::webhooks::manage::WebhookWithSecret;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

/// The fields of an endpoint a request may set (all optional on a change).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookBody {
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub event_types: Option<Vec<String>>,
    #[serde(default)]
    pub enabled: Option<bool>,
}

impl From<WebhookBody> for WebhookChange {
    fn from(b: WebhookBody) -> Self {
        WebhookChange { url: b.url, description: b.description, event_types: b.event_types, enabled: b.enabled }
    }
}

/// An endpoint with its secret: the one answer that shows it.
#[derive(Serialize)]
pub struct WithSecret {
    webhook: iam_shared::webhooks::Webhook,
    secret: String,
}

impl From<WebhookWithSecret> for WithSecret {
    fn from(w: WebhookWithSecret) -> Self {
        WithSecret { secret: w.secret.expose_secret().to_owned(), webhook: w.webhook }
    }
}

pub fn endpoint(method: MethodFilter) -> MethodRouter<AppState> {
    on(method, create_webhook)
}

async fn create_webhook(
    State(iam): State<AppState>,
    Authenticated(caller): Authenticated,
    JsonBody(body): JsonBody<WebhookBody>,
) -> Result<(StatusCode, Json<WithSecret>), ApiError> {
    let created = iam.create_webhook(&caller, body.into()).await?;
    Ok((StatusCode::CREATED, Json(created.into())))
}
