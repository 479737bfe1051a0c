//! Upgrades of data written by earlier releases, run by `iam-admin migrate`. Each step is
//! idempotent (it writes only items that still lack what it adds), resumable (a re-run scans
//! again and finds only what is left) and safe while traffic runs (every write is conditioned
//! on what it read).

use aws_sdk_dynamodb::types::Update;

use super::DynamoStore;
use super::items::{PRINCIPAL_STATUS, credential_from_item, credential_key, s, status_name};
use super::transaction::{Part, build_error, jittered_pause, unavailable};
use super::{credentials, principals};
use crate::model::Credential;
use crate::store::StoreError;

/// What a migration did: items it examined, wrote, and found already done or no longer
/// needing it (revoked, or migrated by their own first use meanwhile).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MigrationReport {
    pub examined: usize,
    pub migrated: usize,
    pub skipped: usize,
}

impl DynamoStore {
    /// Gives every Active credential its principal's status (`principalStatus`), which the
    /// exchange's single conditional write checks. Until then such a credential's first use
    /// takes the older transactional path and adds it itself.
    pub async fn migrate(&self) -> Result<MigrationReport, StoreError> {
        let mut report = MigrationReport::default();
        let mut start = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.credentials)
                // Credentials only (not failed-attempt counters), Active, not yet carrying it.
                .filter_expression("attribute_exists(principalId) AND attribute_not_exists(#principal_status) AND #status = :active")
                .expression_attribute_names("#principal_status", PRINCIPAL_STATUS)
                .expression_attribute_names("#status", "status")
                .expression_attribute_values(":active", s("Active"))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(unavailable)?;
            for item in page.items() {
                report.examined += 1;
                let credential = credential_from_item(item)?;
                match self.copy_principal_status(&credential).await? {
                    true => report.migrated += 1,
                    false => report.skipped += 1,
                }
            }
            match page.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => return Ok(report),
            }
        }
    }

    /// Copies the principal's status onto one credential, conditioned on the principal still
    /// having it: a status change committed in between makes it read again. `false` when the
    /// credential no longer needs it.
    async fn copy_principal_status(&self, credential: &Credential) -> Result<bool, StoreError> {
        for attempt in 0..8 {
            let Some(principal) = principals::get(self, &credential.org_id, &credential.principal_id).await? else {
                return Ok(false);
            };
            let copy = Update::builder()
                .table_name(&self.credentials)
                .set_key(Some(credential_key(&credential.key_id)))
                .update_expression("SET #principal_status = :status")
                .condition_expression("attribute_not_exists(#principal_status) AND #status = :active")
                .expression_attribute_names("#principal_status", PRINCIPAL_STATUS)
                .expression_attribute_names("#status", "status")
                .expression_attribute_values(":status", s(status_name(principal.status)))
                .expression_attribute_values(":active", s("Active"))
                .build()
                .map_err(build_error)?;
            let result = credentials::update_while_principal_is(self, credential, copy, principal.status).await?;
            match result {
                Ok(()) => return Ok(true),
                Err(c) if c.failed(Part::Credential) => return Ok(false),
                Err(c) if c.failed(Part::Principal) || c.raced() => jittered_pause(attempt).await,
                Err(c) => return Err(c.unavailable()),
            }
        }
        Err(StoreError::Conflict(crate::error::Conflict::Contended))
    }
}
