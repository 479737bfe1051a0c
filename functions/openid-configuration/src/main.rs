#[tokio::main]
async fn main() -> Result<(), iam_api::lambda::Error> {
    iam_api::lambda::run(openid_configuration::routes).await
}
