use iam_api::lambda::Error;
use iam_functions::publish_events::{EventBridgeSink, StreamEvent, publish};
use lambda_http::lambda_runtime::{self, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    let bus = std::env::var("IAM_EVENT_BUS").ok().filter(|b| !b.is_empty()).unwrap_or_else(|| "default".to_owned());
    let client = aws_sdk_eventbridge::Client::new(&iam_api::aws::sdk_config().await);
    let sink = EventBridgeSink { client, bus };
    let sink = &sink;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<StreamEvent>| async move { Ok::<_, Error>(publish(event.payload, sink).await) },
    ))
    .await
}
