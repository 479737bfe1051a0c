//! The Secrets Manager rotation function for the token-signing key. Secrets Manager invokes it
//! once per step (`createSecret`, `setSecret`, `testSecret`, `finishSecret`); the steps are in
//! `iam_shared::keys::rotate`.

use iam_shared::keys::{RotationStep, RotationTiming, rotate};
use serde::Deserialize;

/// The event Secrets Manager sends a rotation function.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RotationEvent {
    pub step: String,
    pub secret_id: String,
    pub client_request_token: String,
}

/// Runs one step under `timing` (see `iam_shared::keys::RotationTiming`).
pub async fn handle(client: &aws_sdk_secretsmanager::Client, event: RotationEvent, timing: RotationTiming) -> Result<(), String> {
    let step = RotationStep::parse(&event.step).ok_or_else(|| format!("unknown rotation step '{}'", event.step))?;
    rotate(client, &event.secret_id, &event.client_request_token, step, timing).await.map_err(|e| {
        tracing::error!(step = %event.step, error = %e, "rotation step failed");
        e.to_string()
    })
}
