//! Authority is judged at the moment of the change: a change to the caller's or the target's
//! roles that lands between a request's decision and its write makes the write fail (409) and
//! write nothing. The interleaving is forced by a store wrapper that runs the concurrent change
//! just before the guarded write reaches the store (the stores' own checks are in the contract
//! suite, `writes_commit_only_while_the_principals_decided_on_are_unchanged`, on both stores).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::http::{Method, StatusCode};
use chrono::{DateTime, Utc};
use iam_shared::audit::{AuditEntry, AuditPage, AuditQuery, ChainHead};
use iam_shared::authority::Guard;
use iam_shared::credential_policy::CredentialPolicy;
use iam_shared::federation::sign_in::SignInRecord;
use iam_shared::federation::trust::{TrustPolicyUse, TrustedIssuers, UserIdentity};
use iam_shared::idempotency::IdempotencyRecord;
use iam_shared::ids::{KeyId, OrgId, PrincipalId, RoleId, TrustPolicyId, WebhookId};
use iam_shared::model::{Actor, Credential, Principal, Role, RoleAssignment, UseOutcome};
use iam_shared::store::{EmbeddedStore, Page, Store, StoreError, SweepPage};
use iam_shared::webhooks::Webhook;
use iam_shared::webhooks::delivery::Delivery;
use iam_tests::TestApp;

use crate::authority::holder_with_role;
use serde_json::json;

type Change = Box<dyn FnOnce(Arc<EmbeddedStore>) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// The embedded store, with one change to make "concurrently": just before the next guarded
/// credential write, after the service has decided it.
struct Interleaved {
    inner: Arc<EmbeddedStore>,
    next: Mutex<Option<Change>>,
}

impl Interleaved {
    async fn meanwhile(&self) {
        let change = self.next.lock().unwrap().take();
        if let Some(change) = change {
            change(self.inner.clone()).await;
        }
    }
}

#[async_trait]
impl Store for Interleaved {
    async fn create_principal_as(
        &self,
        p: &Principal,
        max: usize,
        idem: Option<&IdempotencyRecord>,
        record: &AuditEntry,
    ) -> Result<(), StoreError> {
        self.inner.create_principal_as(p, max, idem, record).await
    }
    async fn get_principal(&self, org: &OrgId, id: &PrincipalId) -> Result<Option<Principal>, StoreError> {
        self.inner.get_principal(org, id).await
    }
    async fn list_principals(&self, org: &OrgId, limit: usize, after: Option<&PrincipalId>) -> Result<Page<Principal>, StoreError> {
        self.inner.list_principals(org, limit, after).await
    }
    async fn update_principal(&self, p: &Principal, version: u64, guard: &Guard) -> Result<(), StoreError> {
        self.inner.update_principal(p, version, guard).await
    }
    async fn insert_credential(
        &self,
        c: &Credential,
        now: DateTime<Utc>,
        idem: Option<&IdempotencyRecord>,
        guard: &Guard,
    ) -> Result<(), StoreError> {
        self.meanwhile().await;
        self.inner.insert_credential(c, now, idem, guard).await
    }
    async fn rotate_credential(
        &self,
        predecessor: &Credential,
        successor: &Credential,
        now: DateTime<Utc>,
        idem: Option<&IdempotencyRecord>,
        guard: &Guard,
    ) -> Result<(), StoreError> {
        self.meanwhile().await;
        self.inner.rotate_credential(predecessor, successor, now, idem, guard).await
    }
    async fn update_credential(&self, c: &Credential, now: DateTime<Utc>, guard: &Guard) -> Result<(), StoreError> {
        self.meanwhile().await;
        self.inner.update_credential(c, now, guard).await
    }
    async fn get_credential(&self, key_id: &KeyId) -> Result<Option<Credential>, StoreError> {
        self.inner.get_credential(key_id).await
    }
    async fn list_credentials(&self, org: &OrgId, principal: &PrincipalId) -> Result<Vec<Credential>, StoreError> {
        self.inner.list_credentials(org, principal).await
    }
    async fn revoke_credential(
        &self,
        org: &OrgId,
        principal: &PrincipalId,
        key_id: &KeyId,
        actor: &Actor,
        now: DateTime<Utc>,
        guard: &Guard,
    ) -> Result<Credential, StoreError> {
        self.meanwhile().await;
        self.inner.revoke_credential(org, principal, key_id, actor, now, guard).await
    }
    async fn record_credential_use(
        &self,
        c: &Credential,
        at: DateTime<Utc>,
        source: Option<&str>,
        check: Option<&str>,
        per_second: u32,
    ) -> Result<UseOutcome, StoreError> {
        self.inner.record_credential_use(c, at, source, check, per_second).await
    }
    async fn create_role(&self, role: &Role, idem: Option<&IdempotencyRecord>, guard: &Guard) -> Result<(), StoreError> {
        self.inner.create_role(role, idem, guard).await
    }
    async fn list_org_roles(&self, org: &OrgId) -> Result<Vec<Role>, StoreError> {
        self.inner.list_org_roles(org).await
    }
    async fn get_org_role(&self, org: &OrgId, id: &RoleId) -> Result<Option<Role>, StoreError> {
        self.inner.get_org_role(org, id).await
    }
    async fn list_role_assignments(&self, org: &OrgId, principal: &PrincipalId) -> Result<Vec<RoleAssignment>, StoreError> {
        self.inner.list_role_assignments(org, principal).await
    }
    async fn get_principal_with_roles(&self, org: &OrgId, id: &PrincipalId) -> Result<Option<(Principal, Vec<RoleId>)>, StoreError> {
        self.inner.get_principal_with_roles(org, id).await
    }
    async fn assign_role(&self, a: &RoleAssignment, guard: &Guard) -> Result<(RoleAssignment, bool), StoreError> {
        self.inner.assign_role(a, guard).await
    }
    async fn unassign_role(&self, org: &OrgId, principal: &PrincipalId, role: &RoleId, guard: &Guard) -> Result<bool, StoreError> {
        self.inner.unassign_role(org, principal, role, guard).await
    }
    async fn bootstrap_org(&self, p: &Principal, a: &RoleAssignment, c: &Credential, force: bool) -> Result<(), StoreError> {
        self.inner.bootstrap_org(p, a, c, force).await
    }
    async fn is_bootstrapped(&self, org: &OrgId) -> Result<bool, StoreError> {
        self.inner.is_bootstrapped(org).await
    }
    async fn get_idempotency_record(&self, org: &OrgId, slot: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.inner.get_idempotency_record(org, slot).await
    }
    async fn sweep_credentials(&self, after: Option<&str>, limit: usize) -> Result<SweepPage<Credential>, StoreError> {
        self.inner.sweep_credentials(after, limit).await
    }
    async fn sweep_principals(&self, after: Option<&str>, limit: usize) -> Result<SweepPage<Principal>, StoreError> {
        self.inner.sweep_principals(after, limit).await
    }
    async fn put_webhook(&self, w: &Webhook, version: Option<u64>, guard: &Guard) -> Result<(), StoreError> {
        self.inner.put_webhook(w, version, guard).await
    }
    async fn record_sign_in(&self, p: &Principal, under: u64, record: &iam_shared::audit::AuditEntry) -> Result<(), StoreError> {
        self.inner.record_sign_in(p, under, record).await
    }
    async fn find_user(&self, org: &OrgId, identity: &UserIdentity) -> Result<Option<PrincipalId>, StoreError> {
        self.inner.find_user(org, identity).await
    }
    async fn put_sign_in(&self, org: &OrgId, key: &str, record: &SignInRecord) -> Result<(), StoreError> {
        self.inner.put_sign_in(org, key, record).await
    }
    async fn take_sign_in(&self, org: &OrgId, key: &str) -> Result<Option<SignInRecord>, StoreError> {
        self.inner.take_sign_in(org, key).await
    }
    async fn get_trusted_issuers(&self, org: &OrgId) -> Result<Option<TrustedIssuers>, StoreError> {
        self.inner.get_trusted_issuers(org).await
    }
    async fn put_trusted_issuers(&self, org: &OrgId, issuers: &TrustedIssuers, guard: &Guard) -> Result<(), StoreError> {
        self.inner.put_trusted_issuers(org, issuers, guard).await
    }
    async fn find_service_account(&self, id: &PrincipalId) -> Result<Option<OrgId>, StoreError> {
        self.inner.find_service_account(id).await
    }
    async fn record_trust_policy_use(&self, p: &Principal, policy: &TrustPolicyId, at: DateTime<Utc>) -> Result<bool, StoreError> {
        self.inner.record_trust_policy_use(p, policy, at).await
    }
    async fn trust_policy_uses(&self, org: &OrgId, id: &PrincipalId) -> Result<BTreeMap<TrustPolicyId, TrustPolicyUse>, StoreError> {
        self.inner.trust_policy_uses(org, id).await
    }
    async fn get_webhook(&self, org: &OrgId, id: &WebhookId) -> Result<Option<Webhook>, StoreError> {
        self.inner.get_webhook(org, id).await
    }
    async fn list_webhooks(&self, org: &OrgId) -> Result<Vec<Webhook>, StoreError> {
        self.inner.list_webhooks(org).await
    }
    async fn delete_webhook(&self, org: &OrgId, id: &WebhookId, guard: &Guard) -> Result<bool, StoreError> {
        self.inner.delete_webhook(org, id, guard).await
    }
    async fn put_delivery(&self, d: &Delivery) -> Result<(), StoreError> {
        self.inner.put_delivery(d).await
    }
    async fn list_deliveries(&self, org: &OrgId, id: &WebhookId, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        self.inner.list_deliveries(org, id, limit).await
    }
    async fn record_once(&self, once: &str, entry: &AuditEntry) -> Result<bool, StoreError> {
        self.inner.record_once(once, entry).await
    }
    async fn record_refusal(&self, entry: &AuditEntry, repeats: u64) -> Result<(), StoreError> {
        self.inner.record_refusal(entry, repeats).await
    }
    async fn audit_events(&self, org: &OrgId, query: &AuditQuery) -> Result<AuditPage, StoreError> {
        self.inner.audit_events(org, query).await
    }
    async fn audit_head(&self, org: &OrgId) -> Result<Option<ChainHead>, StoreError> {
        self.inner.audit_head(org).await
    }
    async fn get_credential_policy(&self, org: &OrgId) -> Result<Option<CredentialPolicy>, StoreError> {
        self.inner.get_credential_policy(org).await
    }
    async fn put_credential_policy(&self, org: &OrgId, policy: &CredentialPolicy, guard: &Guard) -> Result<(), StoreError> {
        self.meanwhile().await;
        self.inner.put_credential_policy(org, policy, guard).await
    }
}

async fn interleaved_app() -> (TestApp, Arc<Interleaved>) {
    let store = Arc::new(Interleaved { inner: Arc::new(EmbeddedStore::in_memory().unwrap()), next: Mutex::new(None) });
    (TestApp::with_state(iam_tests::state_with(store.clone()).await).await, store)
}

fn assign_meanwhile(store: &Interleaved, org: &str, principal: &str, role: &str) {
    let assignment = RoleAssignment {
        org_id: OrgId::parse(org).unwrap(),
        principal_id: PrincipalId::parse(principal).unwrap(),
        role_id: RoleId::parse(role).unwrap(),
        assigned_at: iam_shared::model::now(),
        assigned_by: Actor("system:test".into()),
    };
    *store.next.lock().unwrap() = Some(Box::new(move |inner| {
        Box::pin(async move {
            inner.assign_role(&assignment, &Guard::NONE).await.unwrap();
        })
    }));
}

fn unassign_meanwhile(store: &Interleaved, org: &str, principal: &str, role: &str) {
    let (org, principal, role) = (OrgId::parse(org).unwrap(), PrincipalId::parse(principal).unwrap(), RoleId::parse(role).unwrap());
    *store.next.lock().unwrap() = Some(Box::new(move |inner| {
        Box::pin(async move {
            assert!(inner.unassign_role(&org, &principal, &role, &Guard::NONE).await.unwrap());
        })
    }));
}

/// A key writer decides to issue a key for a plain principal; meanwhile an administrator makes
/// that principal an administrator. Without the check at commit, the key writer would hold a
/// key to an administrator.
#[tokio::test]
async fn a_target_that_gained_authority_meanwhile_is_not_acted_on() {
    let (app, store) = interleaved_app().await;
    let admin = app.admin().await;
    let (_, token, _) = holder_with_role(&app, &admin, "key-writer", &["iam:credentials:write", "iam:api-keys:read"]).await;
    let target = app.create_principal(&admin, "plain").await;

    assign_meanwhile(&store, "acme", &target, "iam-admin");
    let issued = app.call(Method::POST, &format!("/iam/api-keys/{target}/credentials"), Some(&token), Some(json!({"name": "k"}))).await;
    assert_eq!(issued.status, StatusCode::CONFLICT, "{}", issued.raw);
    assert!(issued.str("detail").contains("changed while this change was decided"), "{}", issued.raw);
    let listed = app.call(Method::GET, &format!("/iam/api-keys/{target}/credentials"), Some(&admin), None).await;
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 0, "nothing was issued: {}", listed.raw);

    // Decided again on what it now is, the same request is refused by the authority rule.
    let again = app.call(Method::POST, &format!("/iam/api-keys/{target}/credentials"), Some(&token), Some(json!({"name": "k"}))).await;
    assert_eq!(again.status, StatusCode::FORBIDDEN, "{}", again.raw);
}

/// A caller that loses its role between its decision and its write does not get to make it.
#[tokio::test]
async fn a_caller_that_lost_authority_meanwhile_changes_nothing() {
    let (app, store) = interleaved_app().await;
    let admin = app.admin().await;
    let (revoker, token, role) = holder_with_role(&app, &admin, "revoker", &["iam:credentials:write", "iam:api-keys:read"]).await;
    let target = app.create_principal(&admin, "plain").await;
    let (key_id, _) = app.issue(&admin, &target).await;

    unassign_meanwhile(&store, "acme", &revoker, &role);
    let revoked = app.call(Method::POST, &format!("/iam/api-keys/{target}/credentials/{key_id}/revoke"), Some(&token), None).await;
    assert_eq!(revoked.status, StatusCode::CONFLICT, "{}", revoked.raw);
    let listed = app.call(Method::GET, &format!("/iam/api-keys/{target}/credentials"), Some(&admin), None).await;
    assert_eq!(listed.body["items"][0]["status"], "Active", "nothing was revoked: {}", listed.raw);
}
