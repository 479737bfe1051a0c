//! The event publisher: the audit table's DynamoDB stream in, lifecycle events on EventBridge
//! out (see `iam_shared::events`). Lambda invokes it with batches of new audit records; every
//! record that announces an event is put on the bus, ten to a `PutEvents` call. Delivery is at
//! least once: a record whose event was not accepted is reported in `batchItemFailures`, and
//! Lambda retries the batch from it (then sends it to the failure destination); the event's
//! `eventId` (the audit record's id) lets consumers drop the duplicates a retry can make.

use std::collections::HashMap;

use iam_shared::audit::AuditRecord;
use iam_shared::events::{LifecycleEvent, SOURCE, lifecycle_event};
use serde::{Deserialize, Serialize};

/// A DynamoDB stream event, as Lambda delivers it (only what the publisher reads).
#[derive(Debug, Deserialize)]
pub struct StreamEvent {
    #[serde(rename = "Records", default)]
    pub records: Vec<StreamRecord>,
}

#[derive(Debug, Deserialize)]
pub struct StreamRecord {
    #[serde(rename = "eventName", default)]
    pub event_name: Option<String>,
    pub dynamodb: StreamData,
}

#[derive(Debug, Deserialize)]
pub struct StreamData {
    #[serde(rename = "SequenceNumber")]
    pub sequence_number: String,
    #[serde(rename = "NewImage", default)]
    pub new_image: Option<HashMap<String, serde_json::Value>>,
}

/// Lambda's partial-batch answer (`ReportBatchItemFailures`).
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct BatchResponse {
    #[serde(rename = "batchItemFailures")]
    pub batch_item_failures: Vec<ItemFailure>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct ItemFailure {
    #[serde(rename = "itemIdentifier")]
    pub item_identifier: String,
}

/// Where events go: EventBridge in AWS; tests may put a failing one in its place.
pub trait EventSink: Send + Sync {
    /// Puts at most ten events; answers, per event in order, whether it was accepted.
    fn put(&self, events: &[LifecycleEvent]) -> impl std::future::Future<Output = Result<Vec<bool>, String>> + Send;
}

pub struct EventBridgeSink {
    pub client: aws_sdk_eventbridge::Client,
    /// The bus's name or ARN (`default` unless the template says otherwise).
    pub bus: String,
}

impl EventSink for EventBridgeSink {
    async fn put(&self, events: &[LifecycleEvent]) -> Result<Vec<bool>, String> {
        use aws_sdk_eventbridge::types::PutEventsRequestEntry;
        let mut request = self.client.put_events();
        for event in events {
            let detail = serde_json::to_string(&event.detail).map_err(|e| e.to_string())?;
            let time = chrono::DateTime::parse_from_rfc3339(&event.detail.time)
                .map(|t| aws_sdk_eventbridge::primitives::DateTime::from_secs(t.timestamp()))
                .ok();
            let entry = PutEventsRequestEntry::builder()
                .event_bus_name(&self.bus)
                .source(SOURCE)
                .detail_type(event.detail_type)
                .detail(detail)
                .set_time(time)
                .build();
            request = request.entries(entry);
        }
        let out = request.send().await.map_err(|e| aws_sdk_eventbridge::error::DisplayErrorContext(&e).to_string())?;
        let mut accepted: Vec<bool> = out.entries().iter().map(|e| e.error_code().is_none() && e.event_id().is_some()).collect();
        accepted.resize(events.len(), false);
        Ok(accepted)
    }
}

/// PutEvents takes at most ten entries.
const PER_CALL: usize = 10;

/// The audit record a stream record carries, when it is a new one (a refusal's tally growing
/// and the chain head moving are modifications, and announce nothing).
pub(crate) fn new_audit_record(record: &StreamRecord) -> Result<Option<AuditRecord>, String> {
    if record.event_name.as_deref() != Some("INSERT") {
        return Ok(None);
    }
    let Some(image) = &record.dynamodb.new_image else { return Ok(None) };
    let string = |field: &str| image.get(field).and_then(|v| v.get("S")).and_then(|s| s.as_str());
    if string("kind") != Some("audit") {
        return Ok(None);
    }
    let raw = string("record").ok_or("an audit item without its record")?;
    serde_json::from_str(raw).map(Some).map_err(|e| format!("an audit record that does not parse: {e}"))
}

/// Publishes the batch's events; answers the records whose events were not all accepted.
pub async fn publish(event: StreamEvent, sink: &impl EventSink) -> BatchResponse {
    let mut failed: Vec<String> = Vec::new();
    let mut pending: Vec<(String, LifecycleEvent)> = Vec::new();
    for record in &event.records {
        match new_audit_record(record) {
            Ok(Some(audit)) => pending.extend(lifecycle_event(&audit).map(|e| (record.dynamodb.sequence_number.clone(), e))),
            Ok(None) => {}
            Err(reason) => {
                // Retried, then sent to the failure destination: never dropped in silence.
                tracing::error!(sequence = %record.dynamodb.sequence_number, reason, "a stream record could not be read");
                failed.push(record.dynamodb.sequence_number.clone());
            }
        }
    }
    for chunk in pending.chunks(PER_CALL) {
        let events: Vec<LifecycleEvent> = chunk.iter().map(|(_, e)| e.clone()).collect();
        let accepted = match sink.put(&events).await {
            Ok(accepted) => accepted,
            Err(reason) => {
                tracing::error!(reason, events = events.len(), "PutEvents failed");
                vec![false; events.len()]
            }
        };
        for ((sequence, event), ok) in chunk.iter().zip(accepted) {
            if ok {
                tracing::info!(event_id = %event.detail.event_id, detail_type = event.detail_type, "event published");
            } else {
                failed.push(sequence.clone());
            }
        }
    }
    failed.dedup();
    BatchResponse { batch_item_failures: failed.into_iter().map(|item_identifier| ItemFailure { item_identifier }).collect() }
}
