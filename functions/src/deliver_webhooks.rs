//! The webhook delivery function (EventBridge API destinations cannot sign as Standard Webhooks
//! asks, so a function does). Two event sources invoke it: the audit table's stream (new audit
//! records: each event's delivery to every endpoint of its organisation that wants it is put on
//! the queue, due at once) and the queue (each delivery's attempt; a failed one goes back with
//! its backoff as delay). SQS delays a message at most 15 minutes, so a longer wait is made of
//! hops: a message that arrives before its delivery is due goes back with the time that remains.
//!
//! A store failure reports the record in `batchItemFailures` (Lambda retries it); an endpoint's
//! failure never does: it is the delivery's own retry, so one dead endpoint never holds up the
//! stream for every other organisation.

use std::future::Future;

use chrono::{DateTime, Utc};
use iam_shared::events::lifecycle_event;
use iam_shared::outbound::Outbound;
use iam_shared::store::Store;
use iam_shared::webhooks::WebhookKey;
use iam_shared::webhooks::delivery::{Deliverer, PendingDelivery};
use serde::Deserialize;

use crate::publish_events::{BatchResponse, ItemFailure, StreamRecord, new_audit_record};

/// SQS's longest message delay.
const MAX_QUEUE_DELAY_SECS: i64 = 900;

/// One record of either source, told apart by `eventSource`.
#[derive(Debug, Deserialize)]
#[serde(tag = "eventSource")]
pub enum SourceRecord {
    #[serde(rename = "aws:dynamodb")]
    Stream(StreamRecord),
    #[serde(rename = "aws:sqs")]
    Queue(QueueRecord),
}

#[derive(Debug, Deserialize)]
pub struct QueueRecord {
    #[serde(rename = "messageId")]
    pub message_id: String,
    pub body: String,
}

#[derive(Debug, Deserialize)]
pub struct DeliveryEvent {
    #[serde(rename = "Records", default)]
    pub records: Vec<SourceRecord>,
}

/// Where a delivery waits for its next attempt.
pub trait DeliveryQueue: Send + Sync {
    fn send_later(&self, pending: &PendingDelivery, delay_secs: i64) -> impl Future<Output = Result<(), String>> + Send;
}

pub struct SqsDeliveryQueue {
    pub client: aws_sdk_sqs::Client,
    pub url: String,
}

impl DeliveryQueue for SqsDeliveryQueue {
    async fn send_later(&self, pending: &PendingDelivery, delay_secs: i64) -> Result<(), String> {
        let body = serde_json::to_string(pending).map_err(|e| e.to_string())?;
        let delay = i32::try_from(delay_secs.clamp(0, MAX_QUEUE_DELAY_SECS)).unwrap_or(0);
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .delay_seconds(delay)
            .send()
            .await
            .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(&e).to_string())?;
        Ok(())
    }
}

pub struct Delivery<'a, S: Store + ?Sized, Q: DeliveryQueue> {
    pub store: &'a S,
    pub outbound: &'a Outbound,
    pub key: &'a WebhookKey,
    pub queue: &'a Q,
}

impl<S: Store + ?Sized, Q: DeliveryQueue> Delivery<'_, S, Q> {
    /// Handles one invocation at `now`; answers the records to retry.
    pub async fn handle(&self, event: DeliveryEvent, now: DateTime<Utc>) -> BatchResponse {
        let deliverer = Deliverer { store: self.store, outbound: self.outbound, key: self.key };
        let mut failed = Vec::new();
        for record in event.records {
            let (id, outcome) = match record {
                SourceRecord::Stream(r) => {
                    let id = r.dynamodb.sequence_number.clone();
                    (id, self.queue_deliveries(&deliverer, &r, now).await)
                }
                SourceRecord::Queue(q) => (q.message_id.clone(), self.next_attempt(&deliverer, &q.body, now).await),
            };
            if let Err(reason) = outcome {
                tracing::error!(record = %id, reason, "a webhook delivery record will be retried");
                failed.push(ItemFailure { item_identifier: id });
            }
        }
        BatchResponse { batch_item_failures: failed }
    }

    /// A stream record's deliveries are queued, not attempted here: an endpoint that answers
    /// slowly then holds up only its own messages, never the shard every organisation's
    /// events pass through.
    async fn queue_deliveries(&self, deliverer: &Deliverer<'_, S>, record: &StreamRecord, now: DateTime<Utc>) -> Result<(), String> {
        let Some(audit) = new_audit_record(record)? else { return Ok(()) };
        let Some(event) = lifecycle_event(&audit) else { return Ok(()) };
        for pending in deliverer.deliveries_of(&event, now).await.map_err(|e| e.to_string())? {
            self.later(&pending, now).await?;
        }
        Ok(())
    }

    async fn next_attempt(&self, deliverer: &Deliverer<'_, S>, body: &str, now: DateTime<Utc>) -> Result<(), String> {
        let pending: PendingDelivery = match serde_json::from_str(body) {
            Ok(p) => p,
            Err(e) => {
                // Not ours to retry: retrying would never parse it either.
                tracing::error!(error = %e, "a delivery message that does not parse was dropped");
                return Ok(());
            }
        };
        if pending.due() > now + chrono::Duration::seconds(1) {
            return self.later(&pending, now).await;
        }
        if let Some(next) = deliverer.retry(pending, now).await.map_err(|e| e.to_string())? {
            self.later(&next, now).await?;
        }
        Ok(())
    }

    async fn later(&self, pending: &PendingDelivery, now: DateTime<Utc>) -> Result<(), String> {
        self.queue.send_later(pending, (pending.due() - now).num_seconds()).await
    }
}
