//! The DynamoDB store. Two tables:
//!
//! - **principals**, partition key `pk` = organisation id, sort key `sk`. Everything that
//!   belongs to an organisation lives in its partition, so tenancy is in the key and listing
//!   is a Query: principals `P#<principalId>`, role assignments `A#<principalId>#<roleId>`,
//!   credential references `C#<principalId>#<keyId>` (so a principal's credentials list with a
//!   consistent Query, never a GSI), organisation roles `R#<roleId>` with name markers
//!   `RN#<name>` and a `ROLECOUNT` counter, a `PRINCIPALCOUNT` counter (for the principal
//!   cap), idempotency records `IDEM#<slot>`, and the `BOOTSTRAP` marker.
//! - **credentials**, partition key `keyId`, so an exchange is one strongly consistent read.
//!
//! Every read the contract calls consistent uses `ConsistentRead`; every write that can race
//! is a condition expression or a TransactWriteItems whose items are named ([`transaction`]).
//! One module per aggregate: [`principals`], [`credentials`], [`roles`] (and assignments),
//! [`idempotency`], [`bootstrap`]; item layouts in [`items`]; upgrades of earlier releases'
//! data in [`migrate`].

mod audit;
mod bootstrap;
mod credentials;
mod federation;
mod idempotency;
mod items;
mod migrate;
mod policy;
mod principals;
mod roles;
mod transaction;
mod warnings;
mod webhooks;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::{AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType};

pub use aws_sdk_dynamodb::types::AttributeValue;
pub use migrate::MigrationReport;

use self::items::{Item, s};
use self::transaction::{build_error, unavailable};
use super::StoreError;
use crate::ids::OrgId;

/// Optimistic retries of a transaction that lost a race, before answering Conflict.
const MAX_TRANSACTION_ATTEMPTS: usize = 25;

/// How long an audit record is kept unless the operator says otherwise (`IAM_AUDIT_RETENTION_DAYS`).
pub const DEFAULT_AUDIT_RETENTION_DAYS: u64 = 400;

#[derive(Clone, Debug)]
pub struct DynamoStore {
    client: Client,
    principals: String,
    credentials: String,
    audit: String,
    audit_retention_days: u64,
}

impl DynamoStore {
    pub fn new(
        client: Client,
        principals_table: impl Into<String>,
        credentials_table: impl Into<String>,
        audit_table: impl Into<String>,
    ) -> Self {
        Self {
            client,
            principals: principals_table.into(),
            credentials: credentials_table.into(),
            audit: audit_table.into(),
            audit_retention_days: DEFAULT_AUDIT_RETENTION_DAYS,
        }
    }

    /// Records expire (DynamoDB's TTL) this many days after they happened.
    pub fn with_audit_retention_days(self, days: u64) -> Self {
        Self { audit_retention_days: days, ..self }
    }

    /// Creates the three tables (on-demand). For local DynamoDB-compatible servers and tests; in AWS
    /// the template creates them, with point-in-time recovery and deletion protection.
    pub async fn create_tables(&self) -> Result<(), StoreError> {
        self.create_table(&self.principals, "pk", Some("sk")).await?;
        self.create_table(&self.credentials, "keyId", None).await?;
        self.create_table(&self.audit, "pk", Some("sk")).await
    }

    async fn create_table(&self, name: &str, hash: &str, range: Option<&str>) -> Result<(), StoreError> {
        let attr = |name: &str| {
            AttributeDefinition::builder().attribute_name(name).attribute_type(ScalarAttributeType::S).build().map_err(build_error)
        };
        let key = |name: &str, kind: KeyType| KeySchemaElement::builder().attribute_name(name).key_type(kind).build().map_err(build_error);
        let mut request = self
            .client
            .create_table()
            .table_name(name)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attr(hash)?)
            .key_schema(key(hash, KeyType::Hash)?);
        if let Some(range) = range {
            request = request.attribute_definitions(attr(range)?).key_schema(key(range, KeyType::Range)?);
        }
        request.send().await.map_err(unavailable)?;
        Ok(())
    }
}

/// Every item of `org` whose sort key starts with `prefix`, read consistently.
async fn query_prefix(store: &DynamoStore, org: &OrgId, prefix: &str) -> Result<Vec<Item>, StoreError> {
    let mut items = Vec::new();
    let mut start: Option<Item> = None;
    loop {
        let out = store
            .client
            .query()
            .table_name(&store.principals)
            .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
            .expression_attribute_values(":pk", s(org.as_str()))
            .expression_attribute_values(":prefix", s(prefix))
            .consistent_read(true)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(unavailable)?;
        items.extend(out.items().iter().cloned());
        match out.last_evaluated_key() {
            Some(key) if !key.is_empty() => start = Some(key.clone()),
            _ => return Ok(items),
        }
    }
}

super::store_by_aggregate!(DynamoStore {
    async fn warm_up(&self) {
        // A read the policy of every function that uses the store allows (each authenticates a
        // credential), for a key that cannot exist: `keyId`s are base62, never containing '-'.
        let started = std::time::Instant::now();
        let outcome =
            self.client.get_item().table_name(&self.credentials).key("keyId", AttributeValue::S("warm-up".to_owned())).send().await;
        match outcome {
            Ok(_) => tracing::debug!(elapsed_ms = started.elapsed().as_millis() as u64, "dynamodb connection warmed"),
            Err(e) => tracing::warn!(error = %DisplayErrorContext(&e), "dynamodb warm-up failed; the first request will connect"),
        }
    }
});
