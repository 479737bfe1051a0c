//! The warnings function: EventBridge Scheduler invokes it (hourly by default, see
//! `template.yaml`), and it records each warning due (`iam_shared::warnings`) in the audit
//! trail, from where the event publisher puts it on the bus. The schedule's payload is ignored:
//! what is due depends only on the store and the clock, so a late, repeated or concurrent
//! invocation sends nothing twice. `iam-local` runs the same sweep in-process.

use chrono::{DateTime, Utc};
use iam_shared::store::{Store, StoreError};
use iam_shared::warnings::{SweepReport, WarningSettings, sweep};

/// One run at `now`. A store failure fails the invocation (the scheduler's retry policy runs it
/// again); the warnings already recorded stay recorded and are not sent again.
pub async fn handle(store: &dyn Store, settings: &WarningSettings, now: DateTime<Utc>) -> Result<SweepReport, StoreError> {
    match sweep(store, settings, now).await {
        Ok(report) => {
            tracing::info!(
                credentials = report.credentials_read,
                principals = report.principals_read,
                sent = report.sent,
                already_sent = report.already_sent,
                "warnings sweep done"
            );
            Ok(report)
        }
        Err(e) => {
            tracing::error!(error = %e, "warnings sweep failed");
            Err(e)
        }
    }
}
