#[tokio::main]
async fn main() -> Result<(), iam_api::lambda::Error> {
    const OPERATION: iam_api::operation::Operation = iam_functions::operation("sign-in-callback");
    iam_api::lambda::serve(&OPERATION).await
}
