//! `POST /iam/credentials/github-secret-scanning`: GitHub's secret-scanning partner alerts,
//! signed with GitHub's published keys. Each of our keys it found is revoked; the answer labels
//! every match in the format GitHub reads back.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::routing::{MethodFilter, MethodRouter, on};
use iam_api::extract::read_body;
use iam_api::{ApiError, AppState};
use iam_shared::leaks::GithubAlertLabel;

const KEY_IDENTIFIER: &str = "github-public-key-identifier";
const SIGNATURE: &str = "github-public-key-signature";

pub fn endpoint(method: MethodFilter) -> MethodRouter<AppState> {
    on(method, github_alert)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, ApiError> {
    headers.get(name).and_then(|v| v.to_str().ok()).ok_or_else(|| ApiError::bad_request(format!("the {name} header is required")))
}

async fn github_alert(State(iam): State<AppState>, request: Request) -> Result<Json<Vec<GithubAlertLabel>>, ApiError> {
    // The signature covers the body's exact bytes, so it is read raw and parsed only once verified.
    let (parts, body) = read_body(request).await?;
    let (identifier, signature) = (header(&parts.headers, KEY_IDENTIFIER)?, header(&parts.headers, SIGNATURE)?);
    Ok(Json(iam.handle_github_alert(identifier, signature, &body).await?))
}
