use iam_api::lambda::Error;
use iam_functions::deliver_webhooks::{Delivery, DeliveryEvent, SqsDeliveryQueue};
use lambda_http::lambda_runtime::{self, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    let config = iam_api::config::WebhookDeliveryConfig::from_env()?;
    let sdk = iam_api::aws::sdk_config().await;
    let store = config.store(&sdk);
    let key = config.webhook_key(&sdk).await?;
    let outbound = iam_shared::outbound::Outbound::new(config.outbound)?;
    let queue = SqsDeliveryQueue { client: aws_sdk_sqs::Client::new(&sdk), url: config.queue_url.clone() };
    let delivery = Delivery { store: &store, outbound: &outbound, key: &key, queue: &queue };
    let delivery = &delivery;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<DeliveryEvent>| async move {
        Ok::<_, Error>(delivery.handle(event.payload, iam_shared::model::now()).await)
    }))
    .await
}
