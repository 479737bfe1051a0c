//! The store contract suite. Every store runs it through [`store_contract_tests!`]:
//! `store_contract_tests!(async { Arc::new(MyStore::new()) });` inside a test module.

use std::sync::Arc;

use chrono::Duration;

use super::{Store, StoreError};
use crate::idempotency::{IDEMPOTENCY_TTL, IdempotencyClaim, IdempotencyKey, IdempotencyRecord, IdempotentOutcome};
use crate::ids::{KeyId, OrgId, Permission, PrincipalId, RoleId};
use crate::model::{
    Actor, Credential, CredentialStatus, MAX_ACTIVE_CREDENTIALS, MAX_ROLES_PER_PRINCIPAL, Principal, PrincipalChange, PrincipalStatus,
    PrincipalType, Role, RoleAssignment, now,
};

/// Generates one `#[tokio::test]` per contract case for the store built by `$make` (an async
/// block answering `Arc<impl Store>`), each on a fresh store.
#[macro_export]
macro_rules! store_contract_tests {
    ($make:expr) => {
        $crate::store_contract_tests!(@cases $make;
            principal_round_trip, principal_listing_paginates_within_org, principal_update_is_versioned,
            credential_insert_and_read, credential_insert_checks_principal, credential_limit_is_enforced,
            credential_limit_holds_under_concurrency, revoke_is_idempotent_and_scoped, revoke_wins_over_concurrent_reads,
            record_use_keeps_status, roles_are_scoped_and_unique, assignments_are_idempotent_and_scoped,
            assignment_limit_and_revoked_principal, bootstrap_happens_once, failed_attempts_count_per_key_and_window,
            idempotency_records_are_written_with_the_object, idempotency_slot_is_taken_once_until_expiry);
    };
    (@cases $make:expr; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let store = $make.await;
                $crate::store::contract::$case(store).await;
            }
        )*
    };
}

fn org(name: &str) -> OrgId {
    OrgId::parse(name).unwrap()
}

fn actor() -> Actor {
    Actor::system("contract")
}

fn principal(org_name: &str) -> Principal {
    Principal::new(org(org_name), "integration", None, None, actor(), now()).unwrap()
}

fn credential(p: &Principal) -> Credential {
    Credential::new(p, KeyId::generate(), "ci", None, "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA".into(), actor(), now()).unwrap()
}

fn assignment(p: &Principal, role: &str) -> RoleAssignment {
    RoleAssignment {
        org_id: p.org_id.clone(),
        principal_id: p.id.clone(),
        role_id: RoleId::parse(role).unwrap(),
        assigned_at: now(),
        assigned_by: actor(),
    }
}

async fn revoke_principal<S: Store + ?Sized>(store: &S, p: &Principal) -> Principal {
    let change = PrincipalChange { status: Some(PrincipalStatus::Revoked), ..Default::default() };
    let revoked = p.apply(&change, now()).unwrap().unwrap();
    store.update_principal(&revoked, p.version).await.unwrap();
    revoked
}

pub async fn principal_round_trip<S: Store + ?Sized>(store: Arc<S>) {
    let p = principal("acme");
    store.create_principal(&p, None).await.unwrap();
    assert_eq!(store.get_principal(&p.org_id, &p.id).await.unwrap(), Some(p.clone()));
    // Writing the identical principal again is what a retried write looks like: success.
    store.create_principal(&p, None).await.unwrap();
    let other = Principal { display_name: "someone else".into(), ..p.clone() };
    assert!(matches!(store.create_principal(&other, None).await, Err(StoreError::Conflict(_))));
    assert_eq!(store.get_principal(&p.org_id, &p.id).await.unwrap(), Some(p.clone()));
    assert_eq!(store.get_principal(&org("other"), &p.id).await.unwrap(), None, "tenancy is in the key");
    assert_eq!(store.get_principal(&p.org_id, &PrincipalId::generate()).await.unwrap(), None);
}

pub async fn principal_listing_paginates_within_org<S: Store + ?Sized>(store: Arc<S>) {
    let mut ids = Vec::new();
    for _ in 0..5 {
        let p = principal("acme");
        store.create_principal(&p, None).await.unwrap();
        ids.push(p.id);
    }
    store.create_principal(&principal("other"), None).await.unwrap();
    store.create_principal(&principal("acme-2"), None).await.unwrap();
    let mut seen = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = store.list_principals(&org("acme"), 2, cursor.as_ref()).await.unwrap();
        assert!(page.items.len() <= 2);
        seen.extend(page.items.into_iter().map(|p| p.id));
        pages += 1;
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
        assert!(pages < 10, "pagination does not terminate");
    }
    assert_eq!(pages, 3);
    ids.sort();
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(sorted, ids, "every principal of the org exactly once, no other org's");
    let empty = store.list_principals(&org("nobody"), 10, None).await.unwrap();
    assert!(empty.items.is_empty() && empty.next.is_none());
    let exact = store.list_principals(&org("acme"), 5, None).await.unwrap();
    assert_eq!((exact.items.len(), exact.next), (5, None), "a full last page has no cursor");
}

pub async fn principal_update_is_versioned<S: Store + ?Sized>(store: Arc<S>) {
    let p = principal("acme");
    store.create_principal(&p, None).await.unwrap();
    let change = PrincipalChange { display_name: Some("renamed".into()), ..Default::default() };
    let next = p.apply(&change, now()).unwrap().unwrap();
    store.update_principal(&next, p.version).await.unwrap();
    assert_eq!(store.get_principal(&p.org_id, &p.id).await.unwrap().unwrap().display_name, "renamed");
    assert!(matches!(store.update_principal(&next, p.version).await, Err(StoreError::Conflict(_))), "stale version");
    let ghost = principal("acme");
    assert!(matches!(store.update_principal(&ghost, 1).await, Err(StoreError::NotFound(_))));
}

pub async fn credential_insert_and_read<S: Store + ?Sized>(store: Arc<S>) {
    let p = principal("acme");
    store.create_principal(&p, None).await.unwrap();
    let c = credential(&p);
    store.insert_credential(&c, now(), None).await.unwrap();
    assert_eq!(store.get_credential(&c.key_id).await.unwrap(), Some(c.clone()));
    assert_eq!(store.list_credentials(&p.org_id, &p.id).await.unwrap(), vec![c.clone()], "read-your-writes");
    assert!(store.list_credentials(&org("other"), &p.id).await.unwrap().is_empty());
    assert!(matches!(store.insert_credential(&c, now(), None).await, Err(StoreError::Conflict(_))), "duplicate key id");
    assert_eq!(store.get_credential(&KeyId::generate()).await.unwrap(), None);
}

pub async fn credential_insert_checks_principal<S: Store + ?Sized>(store: Arc<S>) {
    let ghost = principal("acme");
    assert!(matches!(store.insert_credential(&credential(&ghost), now(), None).await, Err(StoreError::NotFound(_))));
    let p = principal("acme");
    store.create_principal(&p, None).await.unwrap();
    let mut foreign = credential(&p);
    foreign.org_id = org("other");
    assert!(matches!(store.insert_credential(&foreign, now(), None).await, Err(StoreError::NotFound(_))));
    let c = credential(&p);
    revoke_principal(&*store, &p).await;
    assert!(matches!(store.insert_credential(&c, now(), None).await, Err(StoreError::Conflict(_))));
    assert_eq!(store.get_credential(&c.key_id).await.unwrap(), None, "nothing written");
}

pub async fn credential_limit_is_enforced<S: Store + ?Sized>(store: Arc<S>) {
    let p = principal("acme");
    store.create_principal(&p, None).await.unwrap();
    let mut issued = Vec::new();
    for _ in 0..MAX_ACTIVE_CREDENTIALS {
        let c = credential(&p);
        store.insert_credential(&c, now(), None).await.unwrap();
        issued.push(c);
    }
    let extra = credential(&p);
    assert!(matches!(store.insert_credential(&extra, now(), None).await, Err(StoreError::Limit(_))));
    store.revoke_credential(&p.org_id, &p.id, &issued[0].key_id, &actor(), now()).await.unwrap();
    store.insert_credential(&extra, now(), None).await.unwrap();
    // An expired credential no longer counts: look from a time after every expiry.
    let mut expiring = credential(&p);
    expiring.expires_at = Some(now() + Duration::seconds(60));
    assert!(matches!(store.insert_credential(&expiring, now(), None).await, Err(StoreError::Limit(_))));
    let later = now() + Duration::days(1);
    store.revoke_credential(&p.org_id, &p.id, &issued[1].key_id, &actor(), now()).await.unwrap();
    store.insert_credential(&expiring, now(), None).await.unwrap();
    store.insert_credential(&credential(&p), later, None).await.unwrap();
}

pub async fn credential_limit_holds_under_concurrency<S: Store + ?Sized>(store: Arc<S>) {
    let p = principal("acme");
    store.create_principal(&p, None).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..(MAX_ACTIVE_CREDENTIALS * 2) {
        let store = store.clone();
        let c = credential(&p);
        tasks.push(tokio::spawn(async move { store.insert_credential(&c, now(), None).await }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => ok += 1,
            Err(StoreError::Limit(_)) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(ok, MAX_ACTIVE_CREDENTIALS);
    assert_eq!(store.list_credentials(&p.org_id, &p.id).await.unwrap().len(), MAX_ACTIVE_CREDENTIALS);
}

pub async fn revoke_is_idempotent_and_scoped<S: Store + ?Sized>(store: Arc<S>) {
    let p = principal("acme");
    store.create_principal(&p, None).await.unwrap();
    let c = credential(&p);
    let sibling = credential(&p);
    store.insert_credential(&c, now(), None).await.unwrap();
    store.insert_credential(&sibling, now(), None).await.unwrap();
    assert!(matches!(store.revoke_credential(&org("other"), &p.id, &c.key_id, &actor(), now()).await, Err(StoreError::NotFound(_))));
    assert!(matches!(
        store.revoke_credential(&p.org_id, &PrincipalId::generate(), &c.key_id, &actor(), now()).await,
        Err(StoreError::NotFound(_))
    ));
    let first = store.revoke_credential(&p.org_id, &p.id, &c.key_id, &actor(), now()).await.unwrap();
    assert_eq!(first.status, CredentialStatus::Revoked);
    assert!(first.revoked_at.is_some());
    let again = store.revoke_credential(&p.org_id, &p.id, &c.key_id, &Actor::system("later"), now() + Duration::seconds(5)).await.unwrap();
    assert_eq!(again, first, "the first revocation is kept");
    assert_eq!(store.get_credential(&c.key_id).await.unwrap().unwrap().status, CredentialStatus::Revoked);
    assert_eq!(store.get_credential(&sibling.key_id).await.unwrap().unwrap().status, CredentialStatus::Active, "siblings untouched");
    assert_eq!(store.get_principal(&p.org_id, &p.id).await.unwrap().unwrap().status, PrincipalStatus::Active, "principal untouched");

    // An exchange that committed first but read the clock after the revoke did: the record
    // still reads use, then revocation.
    let used = credential(&p);
    store.insert_credential(&used, now(), None).await.unwrap();
    assert!(store.record_credential_use(&used, now() + Duration::seconds(30)).await.unwrap());
    let revoked = store.revoke_credential(&p.org_id, &p.id, &used.key_id, &actor(), now()).await.unwrap();
    let (used_at, revoked_at) = (revoked.last_used_at.unwrap(), revoked.revoked_at.unwrap());
    assert!(revoked_at >= used_at, "revoked at {revoked_at}, last used at {used_at}");
    assert_eq!(store.get_credential(&used.key_id).await.unwrap().unwrap().revoked_at, Some(revoked_at));
}

pub async fn revoke_wins_over_concurrent_reads<S: Store + ?Sized>(store: Arc<S>) {
    let p = principal("acme");
    store.create_principal(&p, None).await.unwrap();
    for _ in 0..20 {
        let c = credential(&p);
        store.insert_credential(&c, now(), None).await.unwrap();
        let reader = {
            let store = store.clone();
            let key = c.key_id.clone();
            tokio::spawn(async move { store.get_credential(&key).await })
        };
        store.revoke_credential(&p.org_id, &p.id, &c.key_id, &actor(), now()).await.unwrap();
        // Once revoke has returned, every read sees it.
        assert_eq!(store.get_credential(&c.key_id).await.unwrap().unwrap().status, CredentialStatus::Revoked);
        reader.await.unwrap().unwrap();
    }
}

pub async fn record_use_keeps_status<S: Store + ?Sized>(store: Arc<S>) {
    let p = principal("acme");
    store.create_principal(&p, None).await.unwrap();
    let c = credential(&p);
    store.insert_credential(&c, now(), None).await.unwrap();
    let at = now();
    assert!(store.record_credential_use(&c, at).await.unwrap());
    assert_eq!(store.get_credential(&c.key_id).await.unwrap().unwrap().last_used_at, Some(at));
    store.revoke_credential(&p.org_id, &p.id, &c.key_id, &actor(), now()).await.unwrap();
    assert!(!store.record_credential_use(&c, at).await.unwrap(), "a revoked credential is not used");
    assert_eq!(store.get_credential(&c.key_id).await.unwrap().unwrap().status, CredentialStatus::Revoked);
    let c2 = credential(&p);
    store.insert_credential(&c2, now(), None).await.unwrap();
    let suspended = p.apply(&PrincipalChange { status: Some(PrincipalStatus::Suspended), ..Default::default() }, now()).unwrap().unwrap();
    store.update_principal(&suspended, p.version).await.unwrap();
    assert!(!store.record_credential_use(&c2, at).await.unwrap(), "nor one of a suspended principal");
    assert_eq!(store.get_credential(&c2.key_id).await.unwrap().unwrap().last_used_at, None, "nothing written");
    assert!(!store.record_credential_use(&credential(&p), at).await.unwrap(), "nor a missing one");
}

fn role(org_name: &str, name: &str) -> Role {
    Role::new_org_role(
        org(org_name),
        name,
        Some("deploys"),
        vec![Permission::parse("ci:deploy").unwrap()],
        vec![PrincipalType::ApiKey],
        actor(),
        now(),
    )
    .unwrap()
}

pub async fn roles_are_scoped_and_unique<S: Store + ?Sized>(store: Arc<S>) {
    let r = role("acme", "deployer");
    store.create_role(&r, None).await.unwrap();
    assert_eq!(store.get_org_role(&org("acme"), &r.id).await.unwrap(), Some(r.clone()));
    assert_eq!(store.get_org_role(&org("other"), &r.id).await.unwrap(), None);
    assert!(matches!(store.create_role(&role("acme", "deployer"), None).await, Err(StoreError::Conflict(_))));
    store.create_role(&role("other", "deployer"), None).await.unwrap();
    assert_eq!(store.list_org_roles(&org("acme")).await.unwrap(), vec![r]);
}

pub async fn assignments_are_idempotent_and_scoped<S: Store + ?Sized>(store: Arc<S>) {
    let p = principal("acme");
    store.create_principal(&p, None).await.unwrap();
    let a = assignment(&p, "iam-viewer");
    let (stored, created) = store.assign_role(&a).await.unwrap();
    assert!(created);
    assert_eq!(stored, a);
    let mut later = a.clone();
    later.assigned_at = now() + Duration::seconds(10);
    let (again, created) = store.assign_role(&later).await.unwrap();
    assert!(!created);
    assert_eq!(again, a, "the first assignment is kept");
    assert_eq!(store.list_role_assignments(&p.org_id, &p.id).await.unwrap(), vec![a.clone()]);
    assert!(store.list_role_assignments(&org("other"), &p.id).await.unwrap().is_empty());
    assert!(!store.unassign_role(&org("other"), &p.id, &a.role_id).await.unwrap());
    assert!(store.unassign_role(&p.org_id, &p.id, &a.role_id).await.unwrap());
    assert!(!store.unassign_role(&p.org_id, &p.id, &a.role_id).await.unwrap());
    assert!(store.list_role_assignments(&p.org_id, &p.id).await.unwrap().is_empty());
    let ghost = principal("acme");
    assert!(matches!(store.assign_role(&assignment(&ghost, "iam-viewer")).await, Err(StoreError::NotFound(_))));
}

pub async fn assignment_limit_and_revoked_principal<S: Store + ?Sized>(store: Arc<S>) {
    let p = principal("acme");
    store.create_principal(&p, None).await.unwrap();
    for i in 0..MAX_ROLES_PER_PRINCIPAL {
        store.assign_role(&assignment(&p, &format!("role-{i}"))).await.unwrap();
    }
    assert!(matches!(store.assign_role(&assignment(&p, "one-too-many")).await, Err(StoreError::Limit(_))));
    let (_, created) = store.assign_role(&assignment(&p, "role-0")).await.unwrap();
    assert!(!created, "re-assigning at the limit is still idempotent");
    let q = principal("acme");
    store.create_principal(&q, None).await.unwrap();
    revoke_principal(&*store, &q).await;
    assert!(matches!(store.assign_role(&assignment(&q, "iam-viewer")).await, Err(StoreError::Conflict(_))));
}

pub async fn bootstrap_happens_once<S: Store + ?Sized>(store: Arc<S>) {
    let acme = org("acme");
    assert!(!store.is_bootstrapped(&acme).await.unwrap());
    let p = principal("acme");
    let a = assignment(&p, "iam-admin");
    let c = credential(&p);
    store.bootstrap_org(&p, &a, &c, false).await.unwrap();
    assert!(store.is_bootstrapped(&acme).await.unwrap());
    assert_eq!(store.get_principal(&acme, &p.id).await.unwrap(), Some(p.clone()));
    assert_eq!(store.get_credential(&c.key_id).await.unwrap(), Some(c.clone()));
    assert_eq!(store.list_role_assignments(&acme, &p.id).await.unwrap(), vec![a]);
    assert_eq!(store.list_credentials(&acme, &p.id).await.unwrap(), vec![c]);
    let p2 = principal("acme");
    let c2 = credential(&p2);
    assert!(matches!(store.bootstrap_org(&p2, &assignment(&p2, "iam-admin"), &c2, false).await, Err(StoreError::Conflict(_))));
    assert_eq!(store.get_principal(&acme, &p2.id).await.unwrap(), None, "nothing half-written");
    assert_eq!(store.get_credential(&c2.key_id).await.unwrap(), None);
    store.bootstrap_org(&p2, &assignment(&p2, "iam-admin"), &c2, true).await.unwrap();
    assert_eq!(store.get_credential(&c2.key_id).await.unwrap(), Some(c2), "forced: a second admin");
}

pub async fn failed_attempts_count_per_key_and_window<S: Store + ?Sized>(store: Arc<S>) {
    let (key, other) = (format!("{}|192.0.2.1", KeyId::generate()), format!("{}|192.0.2.1", KeyId::generate()));
    let window = now().timestamp() / 60 * 60;
    assert_eq!(store.failed_attempts(&key, window).await.unwrap(), 0);
    for expected in 1..=3 {
        assert_eq!(store.record_failed_attempt(&key, window, window + 120).await.unwrap(), expected);
    }
    assert_eq!(store.failed_attempts(&key, window).await.unwrap(), 3);
    assert_eq!(store.failed_attempts(&other, window).await.unwrap(), 0, "counts are per key");
    assert_eq!(store.failed_attempts(&key, window + 60).await.unwrap(), 0, "and per window");
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (store, key) = (store.clone(), key.clone());
        tasks.push(tokio::spawn(async move { store.record_failed_attempt(&key, window, window + 120).await.unwrap() }));
    }
    let mut seen: Vec<u32> = Vec::new();
    for t in tasks {
        seen.push(t.await.unwrap());
    }
    seen.sort();
    assert_eq!(seen, (4..=13).collect::<Vec<_>>(), "increments are atomic");
    assert_eq!(store.record_failed_attempt(&key, window + 60, window + 180).await.unwrap(), 1, "a new window starts at one");
}

fn claim(org_name: &str, key: &str) -> IdempotencyClaim {
    IdempotencyClaim::new(&org(org_name), &PrincipalId::generate(), &IdempotencyKey::parse(key).unwrap(), "contract", &key)
}

pub async fn idempotency_records_are_written_with_the_object<S: Store + ?Sized>(store: Arc<S>) {
    let p = principal("acme");
    let c = claim("acme", "k-principal");
    let record = c.record(IdempotentOutcome::Principal { principal: p.clone() }, now());
    store.create_principal(&p, Some(&record)).await.unwrap();
    assert_eq!(store.get_idempotency_record(&org("acme"), &c.slot).await.unwrap(), Some(record.clone()));
    assert_eq!(store.get_idempotency_record(&org("other"), &c.slot).await.unwrap(), None, "slots are per organisation");

    let cred = credential(&p);
    let c2 = claim("acme", "k-credential");
    let record2 = c2.record(IdempotentOutcome::Credential { key_id: cred.key_id.clone() }, now());
    store.insert_credential(&cred, now(), Some(&record2)).await.unwrap();
    assert_eq!(store.get_idempotency_record(&org("acme"), &c2.slot).await.unwrap(), Some(record2));

    // A create that fails writes no record: the retry runs again.
    let dup = c.record(IdempotentOutcome::Principal { principal: p.clone() }, now());
    let c3 = claim("acme", "k-failed");
    let failed = IdempotencyRecord { slot: c3.slot.clone(), ..dup };
    for existing in [p.clone(), Principal { display_name: "someone else".into(), ..p.clone() }] {
        assert!(matches!(store.create_principal(&existing, Some(&failed)).await, Err(StoreError::Conflict(_))));
    }
    assert_eq!(store.get_idempotency_record(&org("acme"), &c3.slot).await.unwrap(), None);

    let r = role("acme", "deployer");
    let c4 = claim("acme", "k-role");
    let record4 = c4.record(IdempotentOutcome::Role { role: r.clone() }, now());
    store.create_role(&r, Some(&record4)).await.unwrap();
    assert_eq!(store.get_idempotency_record(&org("acme"), &c4.slot).await.unwrap(), Some(record4));
}

pub async fn idempotency_slot_is_taken_once_until_expiry<S: Store + ?Sized>(store: Arc<S>) {
    let c = claim("acme", "k");
    let first = principal("acme");
    store.create_principal(&first, Some(&c.record(IdempotentOutcome::Principal { principal: first.clone() }, now()))).await.unwrap();

    // Same slot, live record: nothing of the second create is written, whichever store.
    let second = principal("acme");
    let taken = store.create_principal(&second, Some(&c.record(IdempotentOutcome::Principal { principal: second.clone() }, now()))).await;
    assert!(matches!(taken, Err(StoreError::IdempotencyKeyTaken)), "{taken:?}");
    assert_eq!(store.get_principal(&org("acme"), &second.id).await.unwrap(), None);
    let cred = credential(&first);
    let taken =
        store.insert_credential(&cred, now(), Some(&c.record(IdempotentOutcome::Credential { key_id: cred.key_id.clone() }, now()))).await;
    assert!(matches!(taken, Err(StoreError::IdempotencyKeyTaken)), "{taken:?}");
    assert_eq!(store.get_credential(&cred.key_id).await.unwrap(), None);
    assert!(store.list_credentials(&org("acme"), &first.id).await.unwrap().is_empty());
    let r = role("acme", "deployer");
    let taken = store.create_role(&r, Some(&c.record(IdempotentOutcome::Role { role: r.clone() }, now()))).await;
    assert!(matches!(taken, Err(StoreError::IdempotencyKeyTaken)), "{taken:?}");
    assert!(store.list_org_roles(&org("acme")).await.unwrap().is_empty());

    // Once expired, the slot is free again.
    let later = now() + IDEMPOTENCY_TTL + Duration::seconds(1);
    let third = principal("acme");
    let record = c.record(IdempotentOutcome::Principal { principal: third.clone() }, later);
    store.create_principal(&third, Some(&record)).await.unwrap();
    assert_eq!(store.get_idempotency_record(&org("acme"), &c.slot).await.unwrap(), Some(record));
}
