//! Upgrades of data written by earlier releases, run by `iam-admin migrate`. Each step is
//! idempotent (it writes only items that still lack what it adds), resumable (a re-run scans
//! again and finds only what is left) and safe while traffic runs (every write is conditioned
//! on what it read).

use aws_sdk_dynamodb::operation::scan::builders::ScanFluentBuilder;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, Update};

use super::DynamoStore;
use super::items::{
    Item, PRINCIPAL_STATUS, ROLE_IDS, ROLES_CARRIED, carried_role_ids, credential_from_item, credential_key, n, org_key,
    principal_from_item, principal_sk, role_id_set, s, status_name,
};
use super::transaction::{Part, build_error, jittered_pause, unavailable};
use super::{credentials, principals, roles};
use crate::ids::{OrgId, PrincipalId, RoleId};
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
    /// Runs every step; the report adds them up.
    pub async fn migrate(&self) -> Result<MigrationReport, StoreError> {
        let statuses = self.copy_principal_statuses().await?;
        let roles = self.carry_role_ids().await?;
        Ok(MigrationReport {
            examined: statuses.examined + roles.examined,
            migrated: statuses.migrated + roles.migrated,
            skipped: statuses.skipped + roles.skipped,
        })
    }

    /// Gives every Active credential its principal's status (`principalStatus`), which the
    /// exchange's single conditional write checks. Until then such a credential's first use
    /// takes the older transactional path and adds it itself.
    async fn copy_principal_statuses(&self) -> Result<MigrationReport, StoreError> {
        let scan = self
            .client
            .scan()
            .table_name(&self.credentials)
            // Credentials only (not failed-attempt counters), Active, not yet carrying it.
            .filter_expression("attribute_exists(principalId) AND attribute_not_exists(#principal_status) AND #status = :active")
            .expression_attribute_names("#principal_status", PRINCIPAL_STATUS)
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":active", s("Active"));
        migrate_each(scan, async |item| self.copy_principal_status(&credential_from_item(item)?).await).await
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

    /// Gives every principal item the ids of its assigned roles (`roleIds`, marked by
    /// `rolesCarried`), so what it holds is one read. Until then it is read with the
    /// assignments' query, as before.
    async fn carry_role_ids(&self) -> Result<MigrationReport, StoreError> {
        let scan = self
            .client
            .scan()
            .table_name(&self.principals)
            .filter_expression("#kind = :principal AND attribute_not_exists(#carried)")
            .expression_attribute_names("#kind", "kind")
            .expression_attribute_names("#carried", ROLES_CARRIED)
            .expression_attribute_values(":principal", s("principal"));
        migrate_each(scan, async |item| {
            let principal = principal_from_item(item)?;
            self.carry_role_ids_of(&principal.org_id, &principal.id).await
        })
        .await
    }

    /// Writes one principal's role ids, conditioned on its version: every assignment and
    /// unassignment advances it, so ids queried after reading version `v` are still exact if the
    /// version is still `v` when they are written. `false` when it no longer needs them.
    async fn carry_role_ids_of(&self, org: &OrgId, id: &PrincipalId) -> Result<bool, StoreError> {
        for attempt in 0..8 {
            let Some(item) = principals::read_item(self, org, id).await? else { return Ok(false) };
            if carried_role_ids(&item)?.is_some() {
                return Ok(false);
            }
            let version = principal_from_item(&item)?.version;
            let role_ids: Vec<RoleId> = roles::list_assignments(self, org, id).await?.into_iter().map(|a| a.role_id).collect();
            let mut write = self
                .client
                .update_item()
                .table_name(&self.principals)
                .set_key(Some(org_key(org, principal_sk(id))))
                .condition_expression("#version = :seen AND attribute_not_exists(#carried)")
                .expression_attribute_names("#version", "version")
                .expression_attribute_names("#carried", ROLES_CARRIED)
                .expression_attribute_names("#role_ids", ROLE_IDS)
                .expression_attribute_values(":seen", n(version))
                .expression_attribute_values(":carried", AttributeValue::Bool(true))
                .expression_attribute_values(":count", n(role_ids.len() as u64));
            write = if role_ids.is_empty() {
                write.update_expression("SET #carried = :carried, roleCount = :count REMOVE #role_ids")
            } else {
                write
                    .update_expression("SET #carried = :carried, roleCount = :count, #role_ids = :ids")
                    .expression_attribute_values(":ids", role_id_set(&role_ids))
            };
            match write.send().await {
                Ok(_) => return Ok(true),
                // Changed since the read (an assignment, or another migration): read again.
                Err(e) if matches!(e.as_service_error(), Some(UpdateItemError::ConditionalCheckFailedException(_))) => {
                    jittered_pause(attempt).await
                }
                Err(e) => return Err(unavailable(e)),
            }
        }
        Err(StoreError::Conflict(crate::error::Conflict::Contended))
    }
}

/// Runs `migrate` on every item `scan` finds (read consistently, page by page), which answers
/// whether it wrote the item (`false`: it no longer needed it).
async fn migrate_each(
    scan: ScanFluentBuilder,
    mut migrate: impl AsyncFnMut(&Item) -> Result<bool, StoreError>,
) -> Result<MigrationReport, StoreError> {
    let mut report = MigrationReport::default();
    let mut start = None;
    loop {
        let page = scan.clone().consistent_read(true).set_exclusive_start_key(start.take()).send().await.map_err(unavailable)?;
        for item in page.items() {
            report.examined += 1;
            match migrate(item).await? {
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
