#[tokio::main]
async fn main() -> Result<(), iam_api::lambda::Error> {
    iam_api::lambda::run(list_role_assignments::routes).await
}
