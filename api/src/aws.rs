//! AWS clients, built once per cold start and shared by every request: one rustls (ring)
//! HTTPS stack, explicit timeouts (the Rust SDK has no default operation timeout) and the
//! standard retry mode. `AWS_ENDPOINT_URL` (and `AWS_ENDPOINT_URL_DYNAMODB`, …) is honoured by
//! the config loader, so everything can point at a local DynamoDB-compatible server.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};

/// Whole operation, retries included. An API Gateway HTTP API waits 30 s at most.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(5);
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(1500);
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
pub const MAX_ATTEMPTS: u32 = 3;
/// The SDK's standard mode waits up to 1 s before the first retry: far too long for a request
/// path. DynamoDB's own guidance is tens of milliseconds.
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(50);
pub const MAX_BACKOFF: Duration = Duration::from_secs(1);

pub async fn sdk_config() -> SdkConfig {
    loader(OPERATION_TIMEOUT, ATTEMPT_TIMEOUT).load().await
}

/// The configuration loader with this service's HTTP client, timeouts and retries; callers may
/// add an endpoint, region or credentials before loading.
pub fn loader(operation: Duration, attempt: Duration) -> aws_config::ConfigLoader {
    let http = aws_smithy_http_client::Builder::new().tls_provider(tls::Provider::Rustls(CryptoMode::Ring)).build_https();
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .operation_attempt_timeout(attempt)
                .operation_timeout(operation)
                .build(),
        )
        .retry_config(
            RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS).with_initial_backoff(INITIAL_BACKOFF).with_max_backoff(MAX_BACKOFF),
        )
}
