#[tokio::main]
async fn main() -> Result<(), iam_api::lambda::Error> {
    iam_api::lambda::run_signer(exchange_token::routes).await
}
