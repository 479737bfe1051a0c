//! The Secrets Manager rotation function for the token-signing key. Secrets Manager invokes it
//! once per step (`createSecret`, `setSecret`, `testSecret`, `finishSecret`) on the private
//! secret; the steps are in `iam_shared::signing_keys::rotate`, and they keep the public key set
//! (`IAM_SIGNING_PUBLIC_KEYS_SECRET_ID`) in step with it.

use iam_shared::signing_keys::{RotationStep, RotationTiming, SigningSecrets, rotate};
use serde::Deserialize;

/// The event Secrets Manager sends a rotation function.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RotationEvent {
    pub step: String,
    pub secret_id: String,
    pub client_request_token: String,
}

/// Runs one step under `timing` (see `iam_shared::signing_keys::RotationTiming`), publishing into the
/// public key set `public_set_id`.
pub async fn handle(
    client: &aws_sdk_secretsmanager::Client,
    event: RotationEvent,
    public_set_id: &str,
    timing: RotationTiming,
) -> Result<(), String> {
    let step = RotationStep::parse(&event.step).ok_or_else(|| format!("unknown rotation step '{}'", event.step))?;
    let secrets = SigningSecrets { private: event.secret_id.clone(), public: public_set_id.to_owned() };
    rotate(client, &secrets, &event.client_request_token, step, timing).await.map_err(|e| {
        tracing::error!(step = %event.step, error = %e, "rotation step failed");
        e.to_string()
    })
}
