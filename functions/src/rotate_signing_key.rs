//! The Secrets Manager rotation function for the token-signing key. Secrets Manager invokes it
//! once per step (`createSecret`, `setSecret`, `testSecret`, `finishSecret`) on the private
//! secret; the steps are in `iam_shared::signing_keys::rotate`, and they keep the public key set
//! (`IAM_SIGNING_PUBLIC_KEYS_SECRET_ID`) in step with it.
//!
//! An operator also invokes it to withdraw a compromised key in one step
//! (`{"WithdrawKid": "<kid>", "SecretId": "<private secret>"}`, see README's runbook): only
//! this function and the exchange may write the private secret, so the operator's own
//! credentials cannot.

use iam_shared::signing_keys::{RotationStep, RotationTiming, SigningSecrets, Withdrawal, rotate, withdraw};
use serde::Deserialize;

/// The event Secrets Manager sends a rotation function.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RotationEvent {
    pub step: String,
    pub secret_id: String,
    pub client_request_token: String,
}

/// An operator's request to withdraw one signing key.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct WithdrawEvent {
    pub withdraw_kid: String,
    pub secret_id: String,
}

/// Everything the function is invoked with.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum FunctionEvent {
    Withdraw(WithdrawEvent),
    Rotation(RotationEvent),
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

/// Withdraws the key the event names (see `iam_shared::signing_keys::withdraw`), and answers
/// what it did: the invoker sees the new signer and the keys still published.
pub async fn handle_withdrawal(
    client: &aws_sdk_secretsmanager::Client,
    event: WithdrawEvent,
    public_set_id: &str,
) -> Result<Withdrawal, String> {
    let secrets = SigningSecrets { private: event.secret_id, public: public_set_id.to_owned() };
    withdraw(client, &secrets, &event.withdraw_kid).await.map_err(|e| {
        tracing::error!(kid = %event.withdraw_kid, error = %e, "signing-key withdrawal failed");
        e.to_string()
    })
}
