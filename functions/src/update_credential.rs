//! `PATCH /iam/api-keys/{principalId}/credentials/{keyId}`: rename a credential, move its
//! expiry, or replace its restrictions.

use axum::Json;
use axum::extract::State;
use axum::routing::{MethodFilter, MethodRouter, on};
use chrono::{DateTime, Utc};
use iam_api::views::CredentialView;
use iam_api::{ApiError, AppState, Authenticated, JsonBody, PathParams, nullable, parse_path};
use iam_shared::model::{self, CredentialChange};
use iam_shared::restrictions::Restrictions;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UpdateCredential {
    #[serde(default)]
    name: Option<String>,
    /// `null` lifts the expiry.
    #[serde(default, deserialize_with = "nullable")]
    expires_at: Option<Option<DateTime<Utc>>>,
    /// Replaces the restrictions whole; `{}` lifts them all.
    #[serde(default)]
    restrictions: Option<Restrictions>,
}

pub fn endpoint(method: MethodFilter) -> MethodRouter<AppState> {
    on(method, update_credential)
}

async fn update_credential(
    State(iam): State<AppState>,
    Authenticated(caller): Authenticated,
    PathParams((principal_id, key_id)): PathParams<(String, String)>,
    JsonBody(body): JsonBody<UpdateCredential>,
) -> Result<Json<CredentialView>, ApiError> {
    let id = parse_path(&principal_id)?;
    let key_id = parse_path(&key_id)?;
    let change = CredentialChange { name: body.name, expires_at: body.expires_at, restrictions: body.restrictions };
    let credential = iam.update_credential(&caller, &id, &key_id, &change).await?;
    Ok(Json(CredentialView::new(&credential, model::now())))
}
