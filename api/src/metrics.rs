//! The exchange's metrics in CloudWatch's embedded metric format (EMF): one JSON document per
//! exchange on stdout, which CloudWatch Logs turns into metrics (namespace [`NAMESPACE`]) with
//! no API call and no permission on the request path. `Exchanges` counts every exchange by
//! `Outcome` (and, for refusals, slow-downs and failures, by `Reason`); `VerificationCacheHits`
//! counts the issued ones whose secret this instance's warm cache proved without argon2.
//! Printed only in Lambda: locally the audit lines say the same.

use std::sync::OnceLock;

use iam_shared::federation::FederationRefusal;
use iam_shared::service::{ExchangeError, IssuedToken};
use serde_json::{Value, json};

pub const NAMESPACE: &str = "IamApiKeys";

/// What one exchange came to, as its metrics name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeMetric {
    pub outcome: &'static str,
    pub reason: Option<&'static str>,
    /// For an issued token: whether the warm cache proved the secret.
    pub cache_hit: Option<bool>,
}

impl ExchangeMetric {
    pub fn of(result: &Result<IssuedToken, ExchangeError>) -> Self {
        let (outcome, reason, cache_hit) = match result {
            Ok(issued) => ("issued", None, Some(issued.verified_from_cache)),
            Err(ExchangeError::InvalidClient(_)) => ("invalid_client", None, None),
            Err(ExchangeError::Refused(refusal)) => ("refused", Some(refusal.code()), None),
            Err(ExchangeError::InvalidScope(_)) => ("invalid_scope", None, None),
            Err(ExchangeError::InvalidGrant(_)) => ("invalid_grant", None, None),
            Err(ExchangeError::InvalidTarget(_)) => ("invalid_target", None, None),
            Err(ExchangeError::Restricted(refusal)) => ("restricted", Some(refusal.code()), None),
            Err(ExchangeError::OverKeyLimit(_)) => ("slow_down", Some("key_limit"), None),
            Err(ExchangeError::StoreThrottled) => ("slow_down", Some("store_throttled"), None),
            Err(ExchangeError::Store(_)) => ("unavailable", Some("store"), None),
            Err(ExchangeError::Hash(_)) => ("unavailable", Some("hashing"), None),
            Err(ExchangeError::Sign(_)) => ("unavailable", Some("signing"), None),
            Err(ExchangeError::Federation(refusal @ FederationRefusal::AccountChanged)) => ("unavailable", Some(refusal.code()), None),
            Err(ExchangeError::Federation(refusal)) => ("refused", Some(refusal.code()), None),
        };
        Self { outcome, reason, cache_hit }
    }

    /// The EMF document: every dimension and metric it declares is a member of its own.
    pub fn document(&self, timestamp_ms: i64) -> Value {
        let mut dimensions = vec![json!(["Outcome"])];
        let mut metrics = vec![json!({"Name": "Exchanges", "Unit": "Count"})];
        let mut document = json!({"Outcome": self.outcome, "Exchanges": 1});
        if let Some(reason) = self.reason {
            dimensions.push(json!(["Outcome", "Reason"]));
            document["Reason"] = json!(reason);
        }
        if let Some(hit) = self.cache_hit {
            metrics.push(json!({"Name": "VerificationCacheHits", "Unit": "Count"}));
            document["VerificationCacheHits"] = json!(u8::from(hit));
        }
        document["_aws"] = json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{"Namespace": NAMESPACE, "Dimensions": dimensions, "Metrics": metrics}],
        });
        document
    }

    /// Prints the document, in Lambda only (where stdout is the function's log stream).
    pub fn emit(&self) {
        static IN_LAMBDA: OnceLock<bool> = OnceLock::new();
        if *IN_LAMBDA.get_or_init(|| std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some()) {
            println!("{}", self.document(chrono::Utc::now().timestamp_millis()));
        }
    }
}
