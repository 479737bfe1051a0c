//! `POST /iam/credentials/revoke-leaked`: unauthenticated leak reports. Holding a key is the
//! authority to destroy it; the answer never says which keys were real.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use iam_api::{ApiError, AppState, JsonBody, SourceAddress};
use serde::Serialize;
use serde_json::Value;

#[derive(Serialize)]
struct Received {
    received: usize,
}

pub fn endpoint(method: MethodFilter) -> MethodRouter<AppState> {
    on(method, revoke_leaked)
}

/// The body's shape is checked here, by hand, so that no refusal can quote a reported key back
/// (serde's type errors quote the value they met).
fn reported_keys(body: &Value) -> Result<Vec<String>, ApiError> {
    let shape = || ApiError::bad_request(r#"the body must be {"keys": ["ik_…", …]} with 1 to 100 keys"#);
    let object = body.as_object().ok_or_else(shape)?;
    if object.len() != 1 {
        return Err(shape());
    }
    let keys = object.get("keys").and_then(Value::as_array).ok_or_else(shape)?;
    keys.iter().map(|k| k.as_str().map(str::to_owned).ok_or_else(shape)).collect()
}

async fn revoke_leaked(
    State(iam): State<AppState>,
    SourceAddress(source): SourceAddress,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    let keys = reported_keys(&body)?;
    let receipt = iam.revoke_leaked(&keys, source.as_deref()).await?;
    let mut response = (StatusCode::ACCEPTED, Json(Received { received: receipt.received })).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
