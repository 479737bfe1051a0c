//! `iam-local`'s stand-in for the audit stream, the event publisher and the webhook delivery
//! function: a task reads each served organisation's new audit records every second, appends
//! the event each announces to `events.jsonl` in the data directory (as EventBridge would
//! carry it), and delivers it to the organisation's webhooks with the same code as the delivery
//! function, retrying on the same schedule from a task that sleeps in place of the queue.
//! Events of changes made while the server was stopped are not sent.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use iam_shared::audit::{AuditCursor, AuditQuery};
use iam_shared::events::{SOURCE, lifecycle_event};
use iam_shared::ids::OrgId;
use iam_shared::outbound::Outbound;
use iam_shared::store::Store;
use iam_shared::webhooks::WebhookKey;
use iam_shared::webhooks::delivery::{Deliverer, PendingDelivery};

pub struct Relay {
    pub store: Arc<dyn Store>,
    pub key: Arc<WebhookKey>,
    pub outbound: Arc<Outbound>,
    pub orgs: Vec<OrgId>,
    /// `events.jsonl` in the data directory; none when the server runs in memory.
    pub events_file: Option<PathBuf>,
    /// Records from this time on are relayed: taken before anything the server itself records
    /// at start (the first warnings sweep).
    pub since: chrono::DateTime<chrono::Utc>,
}

impl Relay {
    pub async fn run(self) {
        let relay = Arc::new(self);
        let started = relay.since;
        let mut cursors: HashMap<OrgId, Option<AuditCursor>> = relay.orgs.iter().map(|o| (o.clone(), None)).collect();
        let mut every_second = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            every_second.tick().await;
            for org in &relay.orgs {
                let cursor = cursors.entry(org.clone()).or_default();
                if let Err(e) = relay.pass(org, started, cursor).await {
                    tracing::warn!(%org, error = %e, "the event relay could not read the trail; trying again");
                }
            }
        }
    }

    /// Relays `org`'s records after `cursor` (from `started` at first), moving it on.
    async fn pass(
        self: &Arc<Self>,
        org: &OrgId,
        started: chrono::DateTime<chrono::Utc>,
        cursor: &mut Option<AuditCursor>,
    ) -> Result<(), String> {
        loop {
            let query = AuditQuery { from: Some(started), oldest_first: true, after: cursor.clone(), ..AuditQuery::new(100) };
            let page = self.store.audit_events(org, &query).await.map_err(|e| e.to_string())?;
            for record in &page.items {
                if let Some(event) = lifecycle_event(record) {
                    let deliverer = Deliverer { store: self.store.as_ref(), outbound: &self.outbound, key: &self.key };
                    // Each delivery in a task of its own, so a slow endpoint holds up nothing else.
                    for pending in deliverer.deliveries_of(&event, iam_shared::model::now()).await.map_err(|e| e.to_string())? {
                        tokio::spawn(self.clone().retry(pending));
                    }
                    self.append(&event);
                }
                // Moved on only once the record's deliveries are under way: a failure above
                // reads it again on the next pass.
                *cursor = Some(AuditCursor(record.sort_key()));
            }
            if page.next.is_none() {
                return Ok(());
            }
        }
    }

    /// The retry queue's part: waits until each attempt (the first included) is due, then makes it.
    async fn retry(self: Arc<Self>, mut pending: PendingDelivery) {
        loop {
            let wait = (pending.due() - iam_shared::model::now()).to_std().unwrap_or_default();
            tokio::time::sleep(wait).await;
            let deliverer = Deliverer { store: self.store.as_ref(), outbound: &self.outbound, key: &self.key };
            match deliverer.retry(pending, iam_shared::model::now()).await {
                Ok(Some(next)) => pending = next,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "a webhook retry could not be recorded; it is dropped");
                    return;
                }
            }
        }
    }

    fn append(&self, event: &iam_shared::events::LifecycleEvent) {
        let Some(path) = &self.events_file else { return };
        let line =
            serde_json::json!({"source": SOURCE, "detail-type": event.detail_type, "time": event.detail.time, "detail": event.detail});
        let written = std::fs::OpenOptions::new().create(true).append(true).open(path).and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), error = %e, "an event could not be appended to the events file");
        }
    }
}
