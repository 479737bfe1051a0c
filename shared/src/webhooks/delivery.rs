//! Delivering an event to the endpoints that want it: signed, attempted, recorded, and retried
//! with backoff. Each attempt is recorded on the delivery (the last few are kept, with their
//! status or error), so an organisation sees why its endpoint is not receiving.
//!
//! Where retries wait is the caller's: in AWS an SQS queue with a delay (the delivery function
//! consumes it), in `iam-local` a task that sleeps. [`PendingDelivery`] is what they carry: the
//! delivery so far and the exact body to sign (no secret; the signature is made per attempt).

use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::signing::signature_header;
use super::{Webhook, WebhookKey, event_type};
use crate::events::LifecycleEvent;
use crate::ids::{OrgId, WebhookId};
use crate::outbound::{Outbound, OutboundError};
use crate::store::{Store, StoreError};

/// The waits before the 2nd, 3rd, ... attempt (Standard Webhooks' suggested schedule, in
/// seconds): 5 s, 5 min, 30 min, 2 h, 5 h, 10 h. After the last, the delivery has failed.
pub const RETRY_DELAYS: &[i64] = &[5, 300, 1800, 7200, 18000, 36000];
/// The attempts a delivery keeps a record of (its count says how many there were).
pub const ATTEMPTS_KEPT: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    Pending,
    Delivered,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    pub at: DateTime<Utc>,
    /// The endpoint's HTTP status, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why it failed without an answer (a refused address, a timeout, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub duration_ms: u64,
}

/// One event's delivery to one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub org_id: OrgId,
    pub webhook_id: WebhookId,
    /// The event's id: the `webhook-id` header, the same on every attempt.
    pub event_id: String,
    pub event_type: String,
    /// When the event happened.
    pub created_at: DateTime<Utc>,
    pub state: DeliveryState,
    pub attempt_count: u32,
    /// The latest attempts, oldest first.
    pub attempts: Vec<Attempt>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// A delivery waiting for its next attempt, as a retry queue carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingDelivery {
    pub delivery: Delivery,
    /// The body every attempt sends.
    pub body: String,
}

impl Delivery {
    /// Where its endpoint's deliveries start in the store's order.
    pub fn prefix(webhook: &WebhookId) -> String {
        format!("DLV#{webhook}#")
    }

    /// Its key among its organisation's deliveries: by endpoint, then by the event's time (so
    /// the latest are read first), then by event (a redelivered event overwrites its own).
    pub fn sort_key(&self) -> String {
        format!("{}{:012}#{}", Self::prefix(&self.webhook_id), self.created_at.timestamp().max(0), self.event_id)
    }
}

impl PendingDelivery {
    pub fn due(&self) -> DateTime<Utc> {
        self.delivery.next_attempt_at.unwrap_or(self.delivery.created_at)
    }
}

/// What an endpoint receives: the Standard Webhooks payload shape.
pub fn body_of(event: &LifecycleEvent) -> String {
    serde_json::json!({
        "type": event_type(event.detail_type),
        "timestamp": event.detail.time,
        "data": event.detail,
    })
    .to_string()
}

pub struct Deliverer<'a, S: Store + ?Sized> {
    pub store: &'a S,
    pub outbound: &'a Outbound,
    pub key: &'a WebhookKey,
}

impl<S: Store + ?Sized> Deliverer<'_, S> {
    /// One delivery of `event` per endpoint of its organisation that wants it, due now, not yet
    /// attempted. A redelivered event is sent again (delivery is at least once: receivers
    /// de-duplicate on `webhook-id`), and its record is the same record.
    pub async fn deliveries_of(&self, event: &LifecycleEvent, now: DateTime<Utc>) -> Result<Vec<PendingDelivery>, StoreError> {
        let org = OrgId::parse(&event.detail.org_id).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let created_at = chrono::DateTime::parse_from_rfc3339(&event.detail.time).map_or(now, |t| t.with_timezone(&Utc));
        let webhooks = self.store.list_webhooks(&org).await?;
        Ok(webhooks
            .into_iter()
            .filter(|w| w.wants(event.detail_type))
            .map(|webhook| PendingDelivery {
                delivery: Delivery {
                    org_id: org.clone(),
                    webhook_id: webhook.id,
                    event_id: event.detail.event_id.clone(),
                    event_type: event_type(event.detail_type),
                    created_at,
                    state: DeliveryState::Pending,
                    attempt_count: 0,
                    attempts: Vec::new(),
                    next_attempt_at: Some(now),
                },
                body: body_of(event),
            })
            .collect())
    }

    /// [`Deliverer::deliveries_of`] and each one's first attempt, one after another; answers the
    /// deliveries to retry later.
    pub async fn deliver(&self, event: &LifecycleEvent, now: DateTime<Utc>) -> Result<Vec<PendingDelivery>, StoreError> {
        let mut retries = Vec::new();
        for pending in self.deliveries_of(event, now).await? {
            retries.extend(self.retry(pending, now).await?);
        }
        Ok(retries)
    }

    /// The next attempt of a pending delivery (its first, or a retry); the one after it if this
    /// fails and attempts remain. An endpoint deleted, turned off or no longer wanting the event
    /// meanwhile ends the delivery as failed.
    pub async fn retry(&self, pending: PendingDelivery, now: DateTime<Utc>) -> Result<Option<PendingDelivery>, StoreError> {
        let d = &pending.delivery;
        match self.store.get_webhook(&d.org_id, &d.webhook_id).await? {
            Some(webhook) if webhook.wants_event_type(&d.event_type) => self.attempt(&webhook, pending, now).await,
            _ => {
                let mut delivery = pending.delivery;
                delivery.state = DeliveryState::Failed;
                delivery.next_attempt_at = None;
                self.store.put_delivery(&delivery).await?;
                Ok(None)
            }
        }
    }

    async fn attempt(
        &self,
        webhook: &Webhook,
        mut pending: PendingDelivery,
        now: DateTime<Utc>,
    ) -> Result<Option<PendingDelivery>, StoreError> {
        let timestamp = now.timestamp();
        let body = pending.body.as_bytes();
        let id = pending.delivery.event_id.clone();
        let signature = signature_header(self.key, webhook, &id, timestamp, body);
        let headers = [
            ("webhook-id", id.clone()),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", signature),
            ("content-type", "application/json".to_owned()),
        ];
        let started = Instant::now();
        let answer = self.outbound.post(&webhook.url, &headers, body.to_vec()).await;
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (status, error) = match &answer {
            Ok(status) => (Some(*status), None),
            Err(e) => (None, Some(describe(e))),
        };
        let delivered = status.is_some_and(|s| (200..300).contains(&s));
        let d = &mut pending.delivery;
        d.attempt_count += 1;
        d.attempts.push(Attempt { at: now, status, error, duration_ms });
        if d.attempts.len() > ATTEMPTS_KEPT {
            d.attempts.remove(0);
        }
        let wait = RETRY_DELAYS.get(d.attempt_count as usize - 1).filter(|_| !delivered);
        d.state = match (delivered, wait) {
            (true, _) => DeliveryState::Delivered,
            (false, Some(_)) => DeliveryState::Pending,
            (false, None) => DeliveryState::Failed,
        };
        d.next_attempt_at = wait.map(|secs| now + Duration::seconds(*secs));
        tracing::info!(org = %d.org_id, webhook = %d.webhook_id, event_id = %d.event_id, attempt = d.attempt_count,
            status = ?status, state = ?d.state, "webhook attempt");
        self.store.put_delivery(d).await?;
        Ok((d.state == DeliveryState::Pending).then_some(pending))
    }
}

/// An attempt's failure as the organisation may read it: what happened, never a header, a body
/// or what the service's resolver answered (the detail is logged for the operator).
fn describe(e: &OutboundError) -> String {
    tracing::info!(error = %e, "a webhook attempt failed");
    match e {
        OutboundError::Transport(_) => "the connection failed".to_owned(),
        OutboundError::ForbiddenAddress { host, .. } => format!("{host} resolves to an address that is not a public address"),
        OutboundError::Resolve(_) => "the endpoint's host name could not be resolved".to_owned(),
        other => other.to_string(),
    }
}
