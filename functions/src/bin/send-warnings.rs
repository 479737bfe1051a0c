use iam_api::lambda::Error;
use lambda_http::lambda_runtime::{self, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    let config = iam_api::config::WarningsConfig::from_env()?;
    let store = config.tables.store(&iam_api::aws::sdk_config().await);
    let (store, settings) = (&store, &config.settings);
    lambda_runtime::run(service_fn(move |_: LambdaEvent<serde_json::Value>| async move {
        let report = iam_functions::send_warnings::handle(store, settings, iam_shared::model::now()).await?;
        Ok::<_, Error>(report)
    }))
    .await
}
