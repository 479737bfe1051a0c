//! An organisation's first administrator, written in one transaction with the `BOOTSTRAP`
//! marker that says it was.

use super::DynamoStore;
use super::items::{
    BOOTSTRAP_SK, PRINCIPAL_COUNT, assignment_to_item, credential_ref_item, new_credential_item, org_key, principal_to_item, s,
};
use super::transaction::{Part, Transaction, count_one, unavailable};
use crate::error::Conflict;
use crate::ids::OrgId;
use crate::model::{Credential, Principal, RoleAssignment};
use crate::store::StoreError;

/// With `force`, writes another admin even if the organisation was bootstrapped before (the
/// operator's escape hatch when every admin key is lost).
pub(super) async fn write(
    store: &DynamoStore,
    principal: &Principal,
    assignment: &RoleAssignment,
    credential: &Credential,
    force: bool,
) -> Result<(), StoreError> {
    let mut marker = org_key(&principal.org_id, BOOTSTRAP_SK.to_owned());
    marker.insert("kind".into(), s("bootstrap"));
    marker.insert("principalId".into(), s(principal.id.as_str()));
    let marker_condition = (!force).then_some("attribute_not_exists(sk)");
    let result = Transaction::new(store)
        .with_put(Part::BootstrapMarker, &store.principals, marker, marker_condition)?
        .with_put(
            Part::Principal,
            &store.principals,
            principal_to_item(principal, 1, std::slice::from_ref(&assignment.role_id)),
            Some("attribute_not_exists(sk)"),
        )?
        // The bootstrap admin counts toward the principal cap, but is never refused by it.
        .with_update(Part::Count, count_one(&store.principals, &principal.org_id, PRINCIPAL_COUNT, None)?)
        .with_put(Part::Assignment, &store.principals, assignment_to_item(assignment), None)?
        .with_put(Part::Credential, &store.credentials, new_credential_item(credential, principal), Some("attribute_not_exists(keyId)"))?
        .with_put(Part::CredentialRef, &store.principals, credential_ref_item(credential), None)?
        .recording(crate::audit::AuditEntry::bootstrapped(principal, assignment, credential))
        .commit()
        .await;
    match result {
        Ok(()) => Ok(()),
        Err(c) if c.failed(Part::BootstrapMarker) => Err(StoreError::Conflict(Conflict::AlreadyBootstrapped(principal.org_id.clone()))),
        // Another bootstrap committed in between.
        Err(c) if c.any_failed() || c.raced() => Err(StoreError::Conflict(Conflict::Contended)),
        Err(c) => Err(c.unavailable()),
    }
}

pub(super) async fn is_bootstrapped(store: &DynamoStore, org: &OrgId) -> Result<bool, StoreError> {
    let out = store
        .client
        .get_item()
        .table_name(&store.principals)
        .set_key(Some(org_key(org, BOOTSTRAP_SK.to_owned())))
        .consistent_read(true)
        .send()
        .await
        .map_err(unavailable)?;
    Ok(out.item().is_some())
}
