use iam_api::lambda::Error;
use iam_functions::rotate_signing_key::{FunctionEvent, handle, handle_withdrawal};
use lambda_http::lambda_runtime::{self, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    let config = iam_api::config::RotationConfig::from_env()?;
    let (public_set, timing) = (config.public_keys_secret_id, config.timing);
    let client = aws_sdk_secretsmanager::Client::new(&iam_api::aws::sdk_config().await);
    lambda_runtime::run(service_fn(|event: LambdaEvent<FunctionEvent>| {
        let (client, public_set) = (client.clone(), public_set.clone());
        async move {
            match event.payload {
                FunctionEvent::Rotation(rotation) => {
                    handle(&client, rotation, &public_set, timing).await.map_err(Error::from)?;
                    Ok::<_, Error>(serde_json::Value::Null)
                }
                FunctionEvent::Withdraw(withdrawal) => {
                    let done = handle_withdrawal(&client, withdrawal, &public_set).await.map_err(Error::from)?;
                    Ok(serde_json::json!({"withdrawn": done.withdrawn, "signer": done.signer, "published": done.published}))
                }
            }
        }
    }))
    .await
}
