//! The store contract suite. Every store runs it through [`store_contract_tests!`]:
//! `store_contract_tests!(async { Arc::new(MyStore::new()) });` inside a test module.

use std::sync::Arc;

use chrono::Duration;

use super::{Store, StoreError};
use crate::audit::{AuditEntry, AuditOutcome, AuditQuery, AuditRecord, verify_chain};
use crate::authority::{AdminWitness, DecidedOn, Guard};
use crate::error::{Conflict, Limit};
use crate::idempotency::{IDEMPOTENCY_TTL, IdempotencyClaim, IdempotencyKey, IdempotencyRecord, IdempotentOutcome};
use crate::ids::{KeyId, OrgId, Permission, PrincipalId, RoleId};
use crate::model::CredentialChange;
use crate::model::{
    Actor, Credential, CredentialStatus, DailyUses, MAX_ACTIVE_CREDENTIALS, MAX_ROLES_PER_PRINCIPAL, Principal, PrincipalChange,
    PrincipalStatus, PrincipalType, Role, RoleAssignment, Rotation, UseOutcome, UseWindow, now,
};
use crate::restrictions::Restrictions;

/// Generates one `#[tokio::test]` per contract case for the store built by `$make` (an async
/// block answering `Arc<impl Store>`), each on a fresh store.
#[macro_export]
macro_rules! store_contract_tests {
    ($make:expr) => {
        $crate::store_contract_tests!(@cases $make;
            principal_round_trip, principal_listing_paginates_within_org, principal_update_is_versioned,
            credential_insert_and_read, credential_insert_checks_principal, credential_limit_is_enforced,
            credential_limit_holds_under_concurrency, revoke_is_idempotent_and_scoped, revoke_wins_over_concurrent_reads,
            record_use_keeps_status, record_use_counts_against_the_per_key_limit, record_use_counts_per_day_and_keeps_the_last_source, rotation_replaces_a_credential_once, credential_update_writes_only_what_changes, roles_are_scoped_and_unique, assignments_are_idempotent_and_scoped,
            assignment_limit_and_revoked_principal, bootstrap_happens_once, principal_cap_is_enforced_per_org,
            guarded_writes_commit_only_while_their_witness_is_usable, secret_check_is_stored_and_gained_on_first_use,
            writes_commit_only_while_the_principals_decided_on_are_unchanged,
            idempotency_records_are_written_with_the_object, idempotency_slot_is_taken_once_until_expiry,
            changes_and_their_records_commit_together, concurrent_changes_of_one_organisation_never_fork_its_chain,
            refusals_are_aggregated_per_actor_action_reason_and_minute, the_trail_filters_and_pages_newest_first,
            warnings_are_recorded_once_across_runs_and_clock_steps, webhooks_and_their_deliveries_are_scoped_versioned_and_recorded,
            service_accounts_are_found_by_id_and_carry_their_trust_policies, trust_policy_use_counts_only_while_the_account_is_unchanged,
            trusted_issuers_are_per_organisation_and_recorded, users_are_found_by_identity_once_mapped,
            sign_in_records_are_taken_once);
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
    store.update_principal(&revoked, p.version, &Guard::NONE).await.unwrap();
    revoked
}

pub async fn principal_round_trip<S: Store + ?Sized>(store: Arc<S>) {
    let p = principal("acme");
    store.create_principal(&p, MAX, None).await.unwrap();
    assert_eq!(store.get_principal(&p.org_id, &p.id).await.unwrap(), Some(p.clone()));
    // Writing the identical principal again is what a retried write looks like: success.
    store.create_principal(&p, MAX, None).await.unwrap();
    let other = Principal { display_name: "someone else".into(), ..p.clone() };
    assert!(matches!(store.create_principal(&other, MAX, None).await, Err(StoreError::Conflict(Conflict::PrincipalExists))));
    assert_eq!(store.get_principal(&p.org_id, &p.id).await.unwrap(), Some(p.clone()));
    assert_eq!(store.get_principal(&org("other"), &p.id).await.unwrap(), None, "tenancy is in the key");
    assert_eq!(store.get_principal(&p.org_id, &PrincipalId::generate()).await.unwrap(), None);
}

pub async fn principal_listing_paginates_within_org<S: Store + ?Sized>(store: Arc<S>) {
    let mut ids = Vec::new();
    for _ in 0..5 {
        let p = principal("acme");
        store.create_principal(&p, MAX, None).await.unwrap();
        ids.push(p.id);
    }
    store.create_principal(&principal("other"), MAX, None).await.unwrap();
    store.create_principal(&principal("acme-2"), MAX, None).await.unwrap();
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
    store.create_principal(&p, MAX, None).await.unwrap();
    let change = PrincipalChange { display_name: Some("renamed".into()), ..Default::default() };
    let next = p.apply(&change, now()).unwrap().unwrap();
    store.update_principal(&next, p.version, &Guard::NONE).await.unwrap();
    assert_eq!(store.get_principal(&p.org_id, &p.id).await.unwrap().unwrap().display_name, "renamed");
    assert!(
        matches!(store.update_principal(&next, p.version, &Guard::NONE).await, Err(StoreError::Conflict(Conflict::StaleVersion))),
        "stale version"
    );
    let ghost = principal("acme");
    assert!(matches!(store.update_principal(&ghost, 1, &Guard::NONE).await, Err(StoreError::NotFound(_))));
}

pub async fn credential_insert_and_read<S: Store + ?Sized>(store: Arc<S>) {
    let p = principal("acme");
    store.create_principal(&p, MAX, None).await.unwrap();
    let c = credential(&p);
    store.insert_credential(&c, now(), None, &Guard::NONE).await.unwrap();
    assert_eq!(store.get_credential(&c.key_id).await.unwrap(), Some(c.clone()));
    assert_eq!(store.list_credentials(&p.org_id, &p.id).await.unwrap(), vec![c.clone()], "read-your-writes");
    assert!(store.list_credentials(&org("other"), &p.id).await.unwrap().is_empty());
    assert!(
        matches!(store.insert_credential(&c, now(), None, &Guard::NONE).await, Err(StoreError::Conflict(Conflict::CredentialExists))),
        "duplicate key id"
    );
    assert_eq!(store.get_credential(&KeyId::generate()).await.unwrap(), None);
}

pub async fn credential_insert_checks_principal<S: Store + ?Sized>(store: Arc<S>) {
    let ghost = principal("acme");
    assert!(matches!(store.insert_credential(&credential(&ghost), now(), None, &Guard::NONE).await, Err(StoreError::NotFound(_))));
    let p = principal("acme");
    store.create_principal(&p, MAX, None).await.unwrap();
    let mut foreign = credential(&p);
    foreign.org_id = org("other");
    assert!(matches!(store.insert_credential(&foreign, now(), None, &Guard::NONE).await, Err(StoreError::NotFound(_))));
    let c = credential(&p);
    revoke_principal(&*store, &p).await;
    assert!(matches!(store.insert_credential(&c, now(), None, &Guard::NONE).await, Err(StoreError::Conflict(_))));
    assert_eq!(store.get_credential(&c.key_id).await.unwrap(), None, "nothing written");
}

pub async fn credential_limit_is_enforced<S: Store + ?Sized>(store: Arc<S>) {
    let p = principal("acme");
    store.create_principal(&p, MAX, None).await.unwrap();
    let mut issued = Vec::new();
    for _ in 0..MAX_ACTIVE_CREDENTIALS {
        let c = credential(&p);
        store.insert_credential(&c, now(), None, &Guard::NONE).await.unwrap();
        issued.push(c);
    }
    let extra = credential(&p);
    assert!(matches!(store.insert_credential(&extra, now(), None, &Guard::NONE).await, Err(StoreError::Limit(_))));
    store.revoke_credential(&p.org_id, &p.id, &issued[0].key_id, &actor(), now(), &Guard::NONE).await.unwrap();
    store.insert_credential(&extra, now(), None, &Guard::NONE).await.unwrap();
    // An expired credential no longer counts: look from a time after every expiry.
    let mut expiring = credential(&p);
    expiring.expires_at = Some(now() + Duration::seconds(60));
    assert!(matches!(store.insert_credential(&expiring, now(), None, &Guard::NONE).await, Err(StoreError::Limit(_))));
    let later = now() + Duration::days(1);
    store.revoke_credential(&p.org_id, &p.id, &issued[1].key_id, &actor(), now(), &Guard::NONE).await.unwrap();
    store.insert_credential(&expiring, now(), None, &Guard::NONE).await.unwrap();
    store.insert_credential(&credential(&p), later, None, &Guard::NONE).await.unwrap();
}

pub async fn credential_limit_holds_under_concurrency<S: Store + ?Sized>(store: Arc<S>) {
    let p = principal("acme");
    store.create_principal(&p, MAX, None).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..(MAX_ACTIVE_CREDENTIALS * 2) {
        let store = store.clone();
        let c = credential(&p);
        tasks.push(tokio::spawn(async move { store.insert_credential(&c, now(), None, &Guard::NONE).await }));
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
    store.create_principal(&p, MAX, None).await.unwrap();
    let c = credential(&p);
    let sibling = credential(&p);
    store.insert_credential(&c, now(), None, &Guard::NONE).await.unwrap();
    store.insert_credential(&sibling, now(), None, &Guard::NONE).await.unwrap();
    assert!(matches!(
        store.revoke_credential(&org("other"), &p.id, &c.key_id, &actor(), now(), &Guard::NONE).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.revoke_credential(&p.org_id, &PrincipalId::generate(), &c.key_id, &actor(), now(), &Guard::NONE).await,
        Err(StoreError::NotFound(_))
    ));
    let first = store.revoke_credential(&p.org_id, &p.id, &c.key_id, &actor(), now(), &Guard::NONE).await.unwrap();
    assert_eq!(first.status, CredentialStatus::Revoked);
    assert!(first.revoked_at.is_some());
    let again = store
        .revoke_credential(&p.org_id, &p.id, &c.key_id, &Actor::system("later"), now() + Duration::seconds(5), &Guard::NONE)
        .await
        .unwrap();
    assert_eq!(again, first, "the first revocation is kept");
    assert_eq!(store.get_credential(&c.key_id).await.unwrap().unwrap().status, CredentialStatus::Revoked);
    assert_eq!(store.get_credential(&sibling.key_id).await.unwrap().unwrap().status, CredentialStatus::Active, "siblings untouched");
    assert_eq!(store.get_principal(&p.org_id, &p.id).await.unwrap().unwrap().status, PrincipalStatus::Active, "principal untouched");

    // An exchange that committed first but read the clock after the revoke did: the record
    // still reads use, then revocation.
    let used = credential(&p);
    store.insert_credential(&used, now(), None, &Guard::NONE).await.unwrap();
    assert_eq!(store.record_credential_use(&used, now() + Duration::seconds(30), None, None, 100).await.unwrap(), UseOutcome::Recorded);
    let revoked = store.revoke_credential(&p.org_id, &p.id, &used.key_id, &actor(), now(), &Guard::NONE).await.unwrap();
    let (used_at, revoked_at) = (revoked.last_used_at.unwrap(), revoked.revoked_at.unwrap());
    assert!(revoked_at >= used_at, "revoked at {revoked_at}, last used at {used_at}");
    assert_eq!(store.get_credential(&used.key_id).await.unwrap().unwrap().revoked_at, Some(revoked_at));
}

pub async fn revoke_wins_over_concurrent_reads<S: Store + ?Sized>(store: Arc<S>) {
    let p = principal("acme");
    store.create_principal(&p, MAX, None).await.unwrap();
    for _ in 0..20 {
        let c = credential(&p);
        store.insert_credential(&c, now(), None, &Guard::NONE).await.unwrap();
        let reader = {
            let store = store.clone();
            let key = c.key_id.clone();
            tokio::spawn(async move { store.get_credential(&key).await })
        };
        store.revoke_credential(&p.org_id, &p.id, &c.key_id, &actor(), now(), &Guard::NONE).await.unwrap();
        // Once revoke has returned, every read sees it.
        assert_eq!(store.get_credential(&c.key_id).await.unwrap().unwrap().status, CredentialStatus::Revoked);
        reader.await.unwrap().unwrap();
    }
}

pub async fn record_use_keeps_status<S: Store + ?Sized>(store: Arc<S>) {
    let p = principal("acme");
    store.create_principal(&p, MAX, None).await.unwrap();
    let c = credential(&p);
    store.insert_credential(&c, now(), None, &Guard::NONE).await.unwrap();
    let at = now();
    assert_eq!(store.record_credential_use(&c, at, None, None, 100).await.unwrap(), UseOutcome::Recorded);
    assert_eq!(store.get_credential(&c.key_id).await.unwrap().unwrap().last_used_at, Some(at));
    store.revoke_credential(&p.org_id, &p.id, &c.key_id, &actor(), now(), &Guard::NONE).await.unwrap();
    assert_eq!(
        store.record_credential_use(&c, at, None, None, 100).await.unwrap(),
        UseOutcome::NoLongerActive,
        "a revoked credential is not used"
    );
    assert_eq!(store.get_credential(&c.key_id).await.unwrap().unwrap().status, CredentialStatus::Revoked);
    let c2 = credential(&p);
    store.insert_credential(&c2, now(), None, &Guard::NONE).await.unwrap();
    let suspended = p.apply(&PrincipalChange { status: Some(PrincipalStatus::Suspended), ..Default::default() }, now()).unwrap().unwrap();
    store.update_principal(&suspended, p.version, &Guard::NONE).await.unwrap();
    assert_eq!(
        store.record_credential_use(&c2, at, None, None, 100).await.unwrap(),
        UseOutcome::NoLongerActive,
        "nor one of a suspended principal"
    );
    assert_eq!(store.get_credential(&c2.key_id).await.unwrap().unwrap().last_used_at, None, "nothing written");
    assert_eq!(
        store.record_credential_use(&credential(&p), at, None, None, 100).await.unwrap(),
        UseOutcome::NoLongerActive,
        "nor a missing one"
    );
}

/// A rotation as the service makes one, at `at`.
fn rotation_of(p: &Principal, old: &Credential, grace_seconds: u32, at: chrono::DateTime<chrono::Utc>) -> (Credential, Credential) {
    let rotation = Rotation::new(Some(grace_seconds), None).unwrap();
    let successor =
        old.successor(p, KeyId::generate(), &rotation, "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA".into(), actor(), at).unwrap();
    (old.rotated_out(&successor.key_id, &rotation, at), successor)
}

pub async fn rotation_replaces_a_credential_once<S: Store + ?Sized>(store: Arc<S>) {
    let p = principal("acme");
    store.create_principal(&p, MAX, None).await.unwrap();
    let old = credential(&p);
    store.insert_credential(&old, now(), None, &Guard::NONE).await.unwrap();
    let at = now();
    assert_eq!(store.record_credential_use(&old, at, None, None, 100).await.unwrap(), UseOutcome::Recorded);

    // Rotated with an hour's grace: linked both ways, the old one's expiry shortened, its
    // record of use kept although the rotation was decided on an older read.
    let (predecessor, successor) = rotation_of(&p, &old, 3600, at);
    store.rotate_credential(&predecessor, &successor, at, None, &Guard::NONE).await.unwrap();
    let stored_old = store.get_credential(&old.key_id).await.unwrap().unwrap();
    assert_eq!(stored_old.rotated_to.as_ref(), Some(&successor.key_id));
    assert_eq!(stored_old.expires_at, Some(at + Duration::hours(1)));
    assert_eq!(stored_old.last_used_at, Some(at), "the use recorded before the rotation is kept");
    assert_eq!(store.get_credential(&successor.key_id).await.unwrap(), Some(successor.clone()));
    assert_eq!(successor.rotated_from.as_ref(), Some(&old.key_id));
    assert_eq!(
        store.record_credential_use(&old, at, None, None, 100).await.unwrap(),
        UseOutcome::Recorded,
        "both work in the grace period"
    );
    assert_eq!(store.record_credential_use(&successor, at, None, None, 100).await.unwrap(), UseOutcome::Recorded);

    // A credential rotates once: again, and nothing is written.
    let (again_old, again) = rotation_of(&p, &old, 3600, at);
    let refused = store.rotate_credential(&again_old, &again, at, None, &Guard::NONE).await;
    assert!(matches!(refused, Err(StoreError::Conflict(Conflict::NotRotatable))), "{refused:?}");
    assert_eq!(store.get_credential(&again.key_id).await.unwrap(), None, "nothing written");

    // Nor does a revoked one, or another principal's.
    let revoked = credential(&p);
    store.insert_credential(&revoked, now(), None, &Guard::NONE).await.unwrap();
    store.revoke_credential(&p.org_id, &p.id, &revoked.key_id, &actor(), now(), &Guard::NONE).await.unwrap();
    let (r_old, r_new) = rotation_of(&p, &revoked, 0, now());
    assert!(matches!(
        store.rotate_credential(&r_old, &r_new, now(), None, &Guard::NONE).await,
        Err(StoreError::Conflict(Conflict::NotRotatable))
    ));
    let q = principal("acme");
    store.create_principal(&q, MAX, None).await.unwrap();
    let (mut stolen, mut theirs) = rotation_of(&p, &successor, 0, now());
    stolen.principal_id = q.id.clone();
    theirs.principal_id = q.id.clone();
    assert!(matches!(store.rotate_credential(&stolen, &theirs, now(), None, &Guard::NONE).await, Err(StoreError::NotFound(_))));

    // At the limit, a grace period needs a place for the successor; none frees the old one's.
    while store.list_credentials(&p.org_id, &p.id).await.unwrap().iter().filter(|c| c.is_live(now())).count() < MAX_ACTIVE_CREDENTIALS {
        store.insert_credential(&credential(&p), now(), None, &Guard::NONE).await.unwrap();
    }
    let (full_old, full_new) = rotation_of(&p, &successor, 3600, now());
    assert!(matches!(store.rotate_credential(&full_old, &full_new, now(), None, &Guard::NONE).await, Err(StoreError::Limit(_))));
    let at = now();
    let (ended, replacement) = rotation_of(&p, &successor, 0, at);
    store.rotate_credential(&ended, &replacement, at, None, &Guard::NONE).await.unwrap();
    assert_eq!(
        store.record_credential_use(&successor, at, None, None, 100).await.unwrap(),
        UseOutcome::NoLongerActive,
        "no grace period ends the old key at once"
    );
    assert_eq!(store.record_credential_use(&replacement, at, None, None, 100).await.unwrap(), UseOutcome::Recorded);
}

pub async fn credential_update_writes_only_what_changes<S: Store + ?Sized>(store: Arc<S>) {
    let p = principal("acme");
    store.create_principal(&p, MAX, None).await.unwrap();
    let fenced = Restrictions { source_cidrs: Some(["10.0.0.0/8".parse().unwrap()].into()), ..Default::default() };
    let c = credential(&p).with_restrictions(fenced).unwrap().with_self_rotation(true);
    store.insert_credential(&c, now(), None, &Guard::NONE).await.unwrap();
    assert_eq!(store.get_credential(&c.key_id).await.unwrap(), Some(c.clone()), "restrictions and self-rotation round-trip");
    let used = now();
    assert_eq!(store.record_credential_use(&c, used, None, None, 100).await.unwrap(), UseOutcome::Recorded);

    // Decided on the credential as read before its use: the use is kept.
    let change = CredentialChange {
        name: Some("renamed".into()),
        expires_at: Some(Some(now() + Duration::days(1))),
        restrictions: Some(Restrictions::default()),
    };
    let next = c.changed(&change, now()).unwrap().unwrap();
    store.update_credential(&next, now(), &Guard::NONE).await.unwrap();
    let stored = store.get_credential(&c.key_id).await.unwrap().unwrap();
    assert_eq!((stored.name.as_str(), stored.expires_at, &stored.restrictions), ("renamed", next.expires_at, &Restrictions::default()));
    assert_eq!(stored.last_used_at, Some(used), "the record of use is not overwritten");
    assert!(stored.self_rotation);

    let mut elsewhere = next.clone();
    elsewhere.principal_id = principal("acme").id;
    assert!(matches!(store.update_credential(&elsewhere, now(), &Guard::NONE).await, Err(StoreError::NotFound(_))));
    store.revoke_credential(&p.org_id, &p.id, &c.key_id, &actor(), now(), &Guard::NONE).await.unwrap();
    let refused = store.update_credential(&next, now(), &Guard::NONE).await;
    assert!(matches!(refused, Err(StoreError::Conflict(Conflict::NotChangeable))), "{refused:?}");
    assert_eq!(store.get_credential(&c.key_id).await.unwrap().unwrap().status, CredentialStatus::Revoked);
}

pub async fn record_use_counts_against_the_per_key_limit<S: Store + ?Sized>(store: Arc<S>) {
    let p = principal("limits");
    store.create_principal(&p, MAX, None).await.unwrap();
    let c = credential(&p);
    store.insert_credential(&c, now(), None, &Guard::NONE).await.unwrap();
    let second = chrono::DateTime::from_timestamp(now().timestamp() + 10, 0).unwrap();
    // Each use is recorded from the credential as an exchange read it, however stale.
    for n in 1..=3 {
        let at = second + Duration::milliseconds(100 * n);
        assert_eq!(store.record_credential_use(&c, at, None, None, 3).await.unwrap(), UseOutcome::Recorded, "use {n}");
    }
    let stored = store.get_credential(&c.key_id).await.unwrap().unwrap();
    assert_eq!(stored.recent_uses, Some(UseWindow { second: second.timestamp(), count: 3 }));
    let at = second + Duration::milliseconds(900);
    assert_eq!(store.record_credential_use(&stored, at, None, None, 3).await.unwrap(), UseOutcome::OverLimit);
    assert_eq!(store.record_credential_use(&c, at, None, None, 3).await.unwrap(), UseOutcome::OverLimit, "a stale read is corrected");
    let unchanged = store.get_credential(&c.key_id).await.unwrap().unwrap();
    assert_eq!(unchanged.last_used_at, stored.last_used_at, "nothing written over the limit");
    assert_eq!(unchanged.recent_uses, stored.recent_uses);
    // The next second is a new window, and a raised limit applies at once.
    let next = second + Duration::seconds(1);
    assert_eq!(store.record_credential_use(&stored, next, None, None, 3).await.unwrap(), UseOutcome::Recorded);
    assert_eq!(store.get_credential(&c.key_id).await.unwrap().unwrap().recent_uses, Some(UseWindow { second: next.timestamp(), count: 1 }));
    assert_eq!(
        store.record_credential_use(&stored, at, None, None, 4).await.unwrap(),
        UseOutcome::Recorded,
        "a late clock counts in the newer window"
    );
    assert_eq!(store.get_credential(&c.key_id).await.unwrap().unwrap().recent_uses, Some(UseWindow { second: next.timestamp(), count: 2 }));

    // Concurrent uses of one key within one second: exactly the limit is recorded.
    let hot = credential(&p);
    store.insert_credential(&hot, now(), None, &Guard::NONE).await.unwrap();
    let uses = (0..12).map(|_| {
        let (store, hot) = (store.clone(), hot.clone());
        tokio::spawn(async move { store.record_credential_use(&hot, second, None, None, 5).await.unwrap() })
    });
    let outcomes = futures_util::future::join_all(uses).await.into_iter().map(Result::unwrap).collect::<Vec<_>>();
    assert_eq!(outcomes.iter().filter(|o| **o == UseOutcome::Recorded).count(), 5, "{outcomes:?}");
    assert_eq!(outcomes.iter().filter(|o| **o == UseOutcome::OverLimit).count(), 7, "{outcomes:?}");
}

pub async fn record_use_counts_per_day_and_keeps_the_last_source<S: Store + ?Sized>(store: Arc<S>) {
    let p = principal("usage");
    store.create_principal(&p, MAX, None).await.unwrap();
    let c = credential(&p);
    store.insert_credential(&c, now(), None, &Guard::NONE).await.unwrap();
    let day = |n: i64| chrono::DateTime::from_timestamp((DailyUses::day_of(now()) + n) * 86_400 + 3_600, 0).unwrap();
    for n in 0..3 {
        let at = day(1) + Duration::seconds(n);
        assert_eq!(store.record_credential_use(&c, at, Some("203.0.113.7"), None, 100).await.unwrap(), UseOutcome::Recorded);
    }
    let stored = store.get_credential(&c.key_id).await.unwrap().unwrap();
    assert_eq!(stored.daily_uses, Some(DailyUses { day: DailyUses::day_of(day(1)), counts: vec![3] }));
    assert_eq!(stored.last_used_from.as_deref(), Some("203.0.113.7"));
    // Two days on, from a read that saw no use at all: corrected, and the days shift.
    assert_eq!(store.record_credential_use(&c, day(3), Some("2001:db8::9"), None, 100).await.unwrap(), UseOutcome::Recorded);
    let stored = store.get_credential(&c.key_id).await.unwrap().unwrap();
    assert_eq!(stored.daily_uses, Some(DailyUses { day: DailyUses::day_of(day(3)), counts: vec![1, 0, 3] }));
    assert_eq!(stored.last_used_from.as_deref(), Some("2001:db8::9"));
    assert_eq!(store.record_credential_use(&stored, day(3) + Duration::seconds(5), None, None, 100).await.unwrap(), UseOutcome::Recorded);
    let stored = store.get_credential(&c.key_id).await.unwrap().unwrap();
    assert_eq!(stored.daily_uses.as_ref().map(|d| d.counts.clone()), Some(vec![2, 0, 3]));
    assert_eq!(stored.last_used_from, None, "an unknown source is not left as the old one");
    // The first uses of a new day, concurrently from one stale read: none is lost.
    let uses = (0..8).map(|_| {
        let (store, stale) = (store.clone(), stored.clone());
        tokio::spawn(async move { store.record_credential_use(&stale, day(4), Some("198.51.100.1"), None, 100).await.unwrap() })
    });
    let outcomes = futures_util::future::join_all(uses).await.into_iter().map(Result::unwrap).collect::<Vec<_>>();
    assert!(outcomes.iter().all(|o| *o == UseOutcome::Recorded), "{outcomes:?}");
    let stored = store.get_credential(&c.key_id).await.unwrap().unwrap();
    assert_eq!(stored.daily_uses, Some(DailyUses { day: DailyUses::day_of(day(4)), counts: vec![8, 2, 0, 3] }));
    let window = stored.daily_uses.unwrap().within_window(day(4));
    assert_eq!(window.iter().map(|(_, n)| *n).sum::<u32>(), 13);
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
    store.create_role(&r, None, &Guard::NONE).await.unwrap();
    assert_eq!(store.get_org_role(&org("acme"), &r.id).await.unwrap(), Some(r.clone()));
    assert_eq!(store.get_org_role(&org("other"), &r.id).await.unwrap(), None);
    assert!(matches!(
        store.create_role(&role("acme", "deployer"), None, &Guard::NONE).await,
        Err(StoreError::Conflict(Conflict::RoleNameTaken(_)))
    ));
    store.create_role(&role("other", "deployer"), None, &Guard::NONE).await.unwrap();
    assert_eq!(store.list_org_roles(&org("acme")).await.unwrap(), vec![r]);
}

pub async fn assignments_are_idempotent_and_scoped<S: Store + ?Sized>(store: Arc<S>) {
    let p = principal("acme");
    store.create_principal(&p, MAX, None).await.unwrap();
    let roles_of = async |org_id: &OrgId| store.get_principal_with_roles(org_id, &p.id).await.unwrap().map(|(_, roles)| roles);
    assert_eq!(roles_of(&p.org_id).await, Some(vec![]));
    let a = assignment(&p, "iam-viewer");
    let (stored, created) = store.assign_role(&a, &Guard::NONE).await.unwrap();
    assert!(created);
    let other = assignment(&p, "deployer");
    store.assign_role(&other, &Guard::NONE).await.unwrap();
    assert_eq!(roles_of(&p.org_id).await, Some(vec![other.role_id.clone(), a.role_id.clone()]), "every assigned role, sorted");
    let (read, _) = store.get_principal_with_roles(&p.org_id, &p.id).await.unwrap().unwrap();
    assert_eq!(read, store.get_principal(&p.org_id, &p.id).await.unwrap().unwrap(), "the principal as read alone");
    assert_eq!(roles_of(&org("other")).await, None);
    assert!(store.unassign_role(&p.org_id, &p.id, &other.role_id, &Guard::NONE).await.unwrap());
    assert_eq!(stored, a);
    let mut later = a.clone();
    later.assigned_at = now() + Duration::seconds(10);
    let (again, created) = store.assign_role(&later, &Guard::NONE).await.unwrap();
    assert!(!created);
    assert_eq!(again, a, "the first assignment is kept");
    assert_eq!(store.list_role_assignments(&p.org_id, &p.id).await.unwrap(), vec![a.clone()]);
    assert!(store.list_role_assignments(&org("other"), &p.id).await.unwrap().is_empty());
    assert!(!store.unassign_role(&org("other"), &p.id, &a.role_id, &Guard::NONE).await.unwrap());
    assert!(store.unassign_role(&p.org_id, &p.id, &a.role_id, &Guard::NONE).await.unwrap());
    assert!(!store.unassign_role(&p.org_id, &p.id, &a.role_id, &Guard::NONE).await.unwrap());
    assert!(store.list_role_assignments(&p.org_id, &p.id).await.unwrap().is_empty());
    assert_eq!(roles_of(&p.org_id).await, Some(vec![]), "an unassigned role is gone from the principal's roles");
    let ghost = principal("acme");
    assert!(matches!(store.assign_role(&assignment(&ghost, "iam-viewer"), &Guard::NONE).await, Err(StoreError::NotFound(_))));
}

pub async fn assignment_limit_and_revoked_principal<S: Store + ?Sized>(store: Arc<S>) {
    let p = principal("acme");
    store.create_principal(&p, MAX, None).await.unwrap();
    for i in 0..MAX_ROLES_PER_PRINCIPAL {
        store.assign_role(&assignment(&p, &format!("role-{i}")), &Guard::NONE).await.unwrap();
    }
    assert!(matches!(store.assign_role(&assignment(&p, "one-too-many"), &Guard::NONE).await, Err(StoreError::Limit(_))));
    let (_, created) = store.assign_role(&assignment(&p, "role-0"), &Guard::NONE).await.unwrap();
    assert!(!created, "re-assigning at the limit is still idempotent");
    let q = principal("acme");
    store.create_principal(&q, MAX, None).await.unwrap();
    revoke_principal(&*store, &q).await;
    assert!(matches!(store.assign_role(&assignment(&q, "iam-viewer"), &Guard::NONE).await, Err(StoreError::Conflict(_))));
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
    assert_eq!(store.get_principal_with_roles(&acme, &p.id).await.unwrap(), Some((p.clone(), vec![a.role_id.clone()])));
    assert_eq!(store.list_role_assignments(&acme, &p.id).await.unwrap(), vec![a]);
    assert_eq!(store.list_credentials(&acme, &p.id).await.unwrap(), vec![c]);
    let p2 = principal("acme");
    let c2 = credential(&p2);
    assert!(matches!(
        store.bootstrap_org(&p2, &assignment(&p2, "iam-admin"), &c2, false).await,
        Err(StoreError::Conflict(Conflict::AlreadyBootstrapped(_)))
    ));
    assert_eq!(store.get_principal(&acme, &p2.id).await.unwrap(), None, "nothing half-written");
    assert_eq!(store.get_credential(&c2.key_id).await.unwrap(), None);
    store.bootstrap_org(&p2, &assignment(&p2, "iam-admin"), &c2, true).await.unwrap();
    assert_eq!(store.get_credential(&c2.key_id).await.unwrap(), Some(c2), "forced: a second admin");
}

/// The principal cap the contract cases create under (the service passes its configured one).
const MAX: usize = 1_000;

pub async fn principal_cap_is_enforced_per_org<S: Store + ?Sized>(store: Arc<S>) {
    for _ in 0..3 {
        store.create_principal(&principal("capped"), 3, None).await.unwrap();
    }
    let refused = store.create_principal(&principal("capped"), 3, None).await;
    assert!(matches!(&refused, Err(StoreError::Limit(Limit::Principals(3)))), "{refused:?}");
    assert_eq!(store.list_principals(&org("capped"), 10, None).await.unwrap().items.len(), 3, "nothing written");
    store.create_principal(&principal("uncapped"), 3, None).await.unwrap();
}

/// An administrator: principal, `iam-admin` assignment and one credential, and its witness.
async fn admin<S: Store + ?Sized>(store: &S, org_name: &str) -> (Principal, Credential, AdminWitness) {
    let p = principal(org_name);
    let c = credential(&p);
    store.bootstrap_org(&p, &assignment(&p, "iam-admin"), &c, true).await.unwrap();
    let witness = AdminWitness {
        org_id: p.org_id.clone(),
        principal_id: p.id.clone(),
        principal_version: p.version,
        key_id: Some(c.key_id.clone()),
        sign_in_version: None,
        roles: vec![RoleId::parse("iam-admin").unwrap()],
    };
    (p, c, witness)
}

pub async fn guarded_writes_commit_only_while_their_witness_is_usable<S: Store + ?Sized>(store: Arc<S>) {
    let (a, a_key, a_witness) = admin(&*store, "guarded").await;
    let (b, b_key, b_witness) = admin(&*store, "guarded").await;
    let target = principal("guarded");
    store.create_principal(&target, MAX, None).await.unwrap();
    let t_key = credential(&target);
    store.insert_credential(&t_key, now(), None, &Guard::NONE).await.unwrap();
    store.assign_role(&assignment(&target, "iam-viewer"), &Guard::NONE).await.unwrap();

    // A usable witness lets each kind of guarded write through.
    store
        .revoke_credential(&target.org_id, &target.id, &t_key.key_id, &actor(), now(), &Guard::NONE.with_witness(Some(a_witness.clone())))
        .await
        .unwrap();
    assert!(
        store
            .unassign_role(
                &target.org_id,
                &target.id,
                &RoleId::parse("iam-viewer").unwrap(),
                &Guard::NONE.with_witness(Some(a_witness.clone()))
            )
            .await
            .unwrap()
    );
    // The role changes above advanced the target's version: read it again.
    let target = store.get_principal(&target.org_id, &target.id).await.unwrap().unwrap();
    let suspended =
        target.apply(&PrincipalChange { status: Some(PrincipalStatus::Suspended), ..Default::default() }, now()).unwrap().unwrap();
    store.update_principal(&suspended, target.version, &Guard::NONE.with_witness(Some(a_witness.clone()))).await.unwrap();

    // B revokes A's only key with B as witness; then A's revocation of B's key, witnessed by
    // A, must fail and write nothing.
    store
        .revoke_credential(&a.org_id, &a.id, &a_key.key_id, &actor(), now(), &Guard::NONE.with_witness(Some(b_witness.clone())))
        .await
        .unwrap();
    let refused =
        store.revoke_credential(&b.org_id, &b.id, &b_key.key_id, &actor(), now(), &Guard::NONE.with_witness(Some(a_witness.clone()))).await;
    assert!(matches!(refused, Err(StoreError::WitnessGone)), "{refused:?}");
    assert_eq!(store.get_credential(&b_key.key_id).await.unwrap().unwrap().status, CredentialStatus::Active, "nothing written");

    // A witness whose role was unassigned, or whose principal changed, no longer serves.
    let (c, _, c_witness) = admin(&*store, "guarded").await;
    assert!(
        store
            .unassign_role(&c.org_id, &c.id, &RoleId::parse("iam-admin").unwrap(), &Guard::NONE.with_witness(Some(b_witness.clone())))
            .await
            .unwrap()
    );
    let refused = store
        .unassign_role(&b.org_id, &b.id, &RoleId::parse("iam-admin").unwrap(), &Guard::NONE.with_witness(Some(c_witness.clone())))
        .await;
    assert!(matches!(refused, Err(StoreError::WitnessGone)), "{refused:?}");
    let (d, _, d_witness) = admin(&*store, "guarded").await;
    let renamed = d.apply(&PrincipalChange { display_name: Some("renamed".into()), ..Default::default() }, now()).unwrap().unwrap();
    store.update_principal(&renamed, d.version, &Guard::NONE).await.unwrap();
    let b_suspended = b.apply(&PrincipalChange { status: Some(PrincipalStatus::Suspended), ..Default::default() }, now()).unwrap().unwrap();
    let refused = store.update_principal(&b_suspended, b.version, &Guard::NONE.with_witness(Some(d_witness.clone()))).await;
    assert!(matches!(refused, Err(StoreError::WitnessGone)), "{refused:?}");
    assert_eq!(store.get_principal(&b.org_id, &b.id).await.unwrap().unwrap().status, PrincipalStatus::Active, "nothing written");

    // A witness whose key was fenced out of administration (an audience list, or a ceiling
    // without every iam: permission) no longer serves; one fenced only by network still does.
    for fencing in [
        Restrictions { audiences: Some(["http://iam.test/iam/management".to_owned()].into()), ..Default::default() },
        Restrictions { permissions: Some([Permission::parse("iam:api-keys:read").unwrap()].into()), ..Default::default() },
    ] {
        let (_, e_key, e_witness) = admin(&*store, "guarded").await;
        let fenced =
            e_key.changed(&CredentialChange { restrictions: Some(fencing.clone()), ..Default::default() }, now()).unwrap().unwrap();
        store.update_credential(&fenced, now(), &Guard::NONE).await.unwrap();
        let (f, f_key, _) = admin(&*store, "guarded").await;
        let refused =
            store.revoke_credential(&f.org_id, &f.id, &f_key.key_id, &actor(), now(), &Guard::NONE.with_witness(Some(e_witness))).await;
        assert!(matches!(refused, Err(StoreError::WitnessGone)), "{fencing:?}: {refused:?}");
        assert_eq!(store.get_credential(&f_key.key_id).await.unwrap().unwrap().status, CredentialStatus::Active, "nothing written");
    }
    let (_, g_key, g_witness) = admin(&*store, "guarded").await;
    let networked = Restrictions { source_cidrs: Some(["10.0.0.0/8".parse().unwrap()].into()), ..Default::default() };
    let fenced = g_key.changed(&CredentialChange { restrictions: Some(networked), ..Default::default() }, now()).unwrap().unwrap();
    store.update_credential(&fenced, now(), &Guard::NONE).await.unwrap();
    let (h, h_key, _) = admin(&*store, "guarded").await;
    store.revoke_credential(&h.org_id, &h.id, &h_key.key_id, &actor(), now(), &Guard::NONE.with_witness(Some(g_witness))).await.unwrap();
}

/// Authority is judged at the moment of the change: a write commits only while the caller and
/// the target are still at the versions its decision read, and a role change advances them.
pub async fn writes_commit_only_while_the_principals_decided_on_are_unchanged<S: Store + ?Sized>(store: Arc<S>) {
    let decided = |p: &Principal| DecidedOn { org_id: p.org_id.clone(), principal_id: p.id.clone(), version: p.version };
    let read = |p: &Principal| {
        let (store, org_id, id) = (store.clone(), p.org_id.clone(), p.id.clone());
        async move { store.get_principal(&org_id, &id).await.unwrap().unwrap() }
    };
    let (caller, _, _) = admin(&*store, "decided").await;
    let target = principal("decided");
    store.create_principal(&target, MAX, None).await.unwrap();
    let viewer = RoleId::parse("iam-viewer").unwrap();

    // Assigning a role advances the version; assigning it again changes nothing.
    let (_, created) = store.assign_role(&assignment(&target, "iam-viewer"), &Guard::NONE).await.unwrap();
    assert!(created);
    let assigned = read(&target).await;
    assert_eq!(assigned.version, target.version + 1, "a new role is a new version");
    store.assign_role(&assignment(&target, "iam-viewer"), &Guard::NONE).await.unwrap();
    assert_eq!(read(&target).await.version, assigned.version, "an assignment that exists changes nothing");

    // Every guarded write decided on the target as it was before: refused, nothing written.
    let stale = Guard::decided_on([decided(&caller), decided(&target)]);
    let current = Guard::decided_on([decided(&caller), decided(&assigned)]);
    let c = credential(&target);
    assert!(matches!(store.insert_credential(&c, now(), None, &stale).await, Err(StoreError::Conflict(Conflict::AuthorityChanged))));
    assert!(store.get_credential(&c.key_id).await.unwrap().is_none(), "nothing written");
    store.insert_credential(&c, now(), None, &current).await.unwrap();
    let refused = store.revoke_credential(&target.org_id, &target.id, &c.key_id, &actor(), now(), &stale).await;
    assert!(matches!(refused, Err(StoreError::Conflict(Conflict::AuthorityChanged))), "{refused:?}");
    assert_eq!(store.get_credential(&c.key_id).await.unwrap().unwrap().status, CredentialStatus::Active);
    let refused = store.assign_role(&assignment(&target, "role-x"), &stale).await;
    assert!(matches!(refused, Err(StoreError::Conflict(Conflict::AuthorityChanged))), "{refused:?}");
    let refused = store.unassign_role(&target.org_id, &target.id, &viewer, &stale).await;
    assert!(matches!(refused, Err(StoreError::Conflict(Conflict::AuthorityChanged))), "{refused:?}");
    let renamed = assigned.apply(&PrincipalChange { display_name: Some("renamed".into()), ..Default::default() }, now()).unwrap().unwrap();
    let refused = store.update_principal(&renamed, assigned.version, &stale).await;
    assert!(matches!(refused, Err(StoreError::Conflict(Conflict::AuthorityChanged))), "{refused:?}");
    let unchanged = read(&target).await;
    assert_eq!((unchanged.version, unchanged.display_name.as_str()), (assigned.version, target.display_name.as_str()), "nothing written");
    let roles: Vec<RoleId> =
        store.list_role_assignments(&target.org_id, &target.id).await.unwrap().into_iter().map(|a| a.role_id).collect();
    assert_eq!(roles, vec![viewer.clone()], "nothing assigned or unassigned");

    // A change to the target itself, under a guard that read it before, is a stale version (a
    // Conflict, 412 under If-Match), the same as without a guard.
    let first = assigned.apply(&PrincipalChange { display_name: Some("first".into()), ..Default::default() }, now()).unwrap().unwrap();
    store.update_principal(&first, assigned.version, &current).await.unwrap();
    let refused = store.update_principal(&renamed, assigned.version, &current).await;
    assert!(matches!(refused, Err(StoreError::Conflict(Conflict::StaleVersion))), "{refused:?}");
    let assigned = read(&target).await;
    let current = Guard::decided_on([decided(&caller), decided(&assigned)]);

    // Decided on the current versions, each commits; unassigning advances the version too.
    assert!(store.unassign_role(&target.org_id, &target.id, &viewer, &current).await.unwrap());
    assert_eq!(read(&target).await.version, assigned.version + 1, "a removed role is a new version");

    // The caller counts as much as the target: a caller whose roles changed decides nothing.
    let before = Guard::decided_on([decided(&caller)]);
    store.assign_role(&assignment(&caller, "role-y"), &Guard::NONE).await.unwrap();
    let r = role("decided", "deployer");
    assert!(matches!(store.create_role(&r, None, &before).await, Err(StoreError::Conflict(Conflict::AuthorityChanged))));
    assert!(store.list_org_roles(&r.org_id.clone().unwrap()).await.unwrap().is_empty(), "nothing written");
    // One principal named at two versions can never hold: refused without a write.
    let split = Guard::decided_on([decided(&caller), decided(&read(&caller).await)]);
    assert!(matches!(store.create_role(&r, None, &split).await, Err(StoreError::Conflict(Conflict::AuthorityChanged))));
    store.create_role(&r, None, &Guard::decided_on([decided(&read(&caller).await)])).await.unwrap();
}

pub async fn secret_check_is_stored_and_gained_on_first_use<S: Store + ?Sized>(store: Arc<S>) {
    let p = principal("checks");
    store.create_principal(&p, MAX, None).await.unwrap();
    let checked = credential(&p).with_secret_check("0a1b2c3d".into());
    store.insert_credential(&checked, now(), None, &Guard::NONE).await.unwrap();
    assert_eq!(store.get_credential(&checked.key_id).await.unwrap().unwrap().secret_check.as_deref(), Some("0a1b2c3d"));
    let legacy = credential(&p);
    store.insert_credential(&legacy, now(), None, &Guard::NONE).await.unwrap();
    assert_eq!(store.record_credential_use(&legacy, now(), None, Some("11223344"), 100).await.unwrap(), UseOutcome::Recorded);
    assert_eq!(store.get_credential(&legacy.key_id).await.unwrap().unwrap().secret_check.as_deref(), Some("11223344"));
    assert_eq!(store.record_credential_use(&legacy, now(), None, Some("55667788"), 100).await.unwrap(), UseOutcome::Recorded);
    assert_eq!(
        store.get_credential(&legacy.key_id).await.unwrap().unwrap().secret_check.as_deref(),
        Some("11223344"),
        "a stored check is never replaced"
    );
}

fn claim(org_name: &str, key: &str) -> IdempotencyClaim {
    IdempotencyClaim::new(&org(org_name), &PrincipalId::generate(), &IdempotencyKey::parse(key).unwrap(), "contract", &key)
}

pub async fn idempotency_records_are_written_with_the_object<S: Store + ?Sized>(store: Arc<S>) {
    let p = principal("acme");
    let c = claim("acme", "k-principal");
    let record = c.record(IdempotentOutcome::Principal { principal: p.clone() }, now());
    store.create_principal(&p, MAX, Some(&record)).await.unwrap();
    assert_eq!(store.get_idempotency_record(&org("acme"), &c.slot).await.unwrap(), Some(record.clone()));
    assert_eq!(store.get_idempotency_record(&org("other"), &c.slot).await.unwrap(), None, "slots are per organisation");

    let cred = credential(&p);
    let c2 = claim("acme", "k-credential");
    let record2 = c2.record(IdempotentOutcome::Credential { key_id: cred.key_id.clone() }, now());
    store.insert_credential(&cred, now(), Some(&record2), &Guard::NONE).await.unwrap();
    assert_eq!(store.get_idempotency_record(&org("acme"), &c2.slot).await.unwrap(), Some(record2));

    // A create that fails writes no record: the retry runs again.
    let dup = c.record(IdempotentOutcome::Principal { principal: p.clone() }, now());
    let c3 = claim("acme", "k-failed");
    let failed = IdempotencyRecord { slot: c3.slot.clone(), ..dup };
    for existing in [p.clone(), Principal { display_name: "someone else".into(), ..p.clone() }] {
        assert!(matches!(
            store.create_principal(&existing, MAX, Some(&failed)).await,
            Err(StoreError::Conflict(Conflict::PrincipalExists))
        ));
    }
    assert_eq!(store.get_idempotency_record(&org("acme"), &c3.slot).await.unwrap(), None);

    let r = role("acme", "deployer");
    let c4 = claim("acme", "k-role");
    let record4 = c4.record(IdempotentOutcome::Role { role: r.clone() }, now());
    store.create_role(&r, Some(&record4), &Guard::NONE).await.unwrap();
    assert_eq!(store.get_idempotency_record(&org("acme"), &c4.slot).await.unwrap(), Some(record4));
}

pub async fn idempotency_slot_is_taken_once_until_expiry<S: Store + ?Sized>(store: Arc<S>) {
    let c = claim("acme", "k");
    let first = principal("acme");
    store.create_principal(&first, MAX, Some(&c.record(IdempotentOutcome::Principal { principal: first.clone() }, now()))).await.unwrap();

    // Same slot, live record: nothing of the second create is written, whichever store.
    let second = principal("acme");
    let taken =
        store.create_principal(&second, MAX, Some(&c.record(IdempotentOutcome::Principal { principal: second.clone() }, now()))).await;
    assert!(matches!(taken, Err(StoreError::Conflict(Conflict::IdempotencyKeyTaken))), "{taken:?}");
    assert_eq!(store.get_principal(&org("acme"), &second.id).await.unwrap(), None);
    let cred = credential(&first);
    let taken = store
        .insert_credential(
            &cred,
            now(),
            Some(&c.record(IdempotentOutcome::Credential { key_id: cred.key_id.clone() }, now())),
            &Guard::NONE,
        )
        .await;
    assert!(matches!(taken, Err(StoreError::Conflict(Conflict::IdempotencyKeyTaken))), "{taken:?}");
    assert_eq!(store.get_credential(&cred.key_id).await.unwrap(), None);
    assert!(store.list_credentials(&org("acme"), &first.id).await.unwrap().is_empty());
    let r = role("acme", "deployer");
    let taken = store.create_role(&r, Some(&c.record(IdempotentOutcome::Role { role: r.clone() }, now())), &Guard::NONE).await;
    assert!(matches!(taken, Err(StoreError::Conflict(Conflict::IdempotencyKeyTaken))), "{taken:?}");
    assert!(store.list_org_roles(&org("acme")).await.unwrap().is_empty());

    // Once expired, the slot is free again.
    let later = now() + IDEMPOTENCY_TTL + Duration::seconds(1);
    let third = principal("acme");
    let record = c.record(IdempotentOutcome::Principal { principal: third.clone() }, later);
    store.create_principal(&third, MAX, Some(&record)).await.unwrap();
    assert_eq!(store.get_idempotency_record(&org("acme"), &c.slot).await.unwrap(), Some(record));
}

/// Every record of `org`, oldest first, read through the paginated query (three at a time, so
/// pagination is part of every check), and the chain verified against its head.
async fn whole_trail<S: Store + ?Sized>(store: &S, org_name: &str) -> Vec<AuditRecord> {
    let mut query = AuditQuery { oldest_first: true, ..AuditQuery::new(3) };
    let mut all = Vec::new();
    loop {
        let page = store.audit_events(&org(org_name), &query).await.unwrap();
        assert!(page.items.len() <= 3);
        all.extend(page.items);
        match page.next {
            Some(next) => query.after = Some(next),
            None => break,
        }
    }
    let head = store.audit_head(&org(org_name)).await.unwrap();
    assert_eq!(verify_chain(&all, head.as_ref(), None), Ok(()), "{all:#?}");
    all
}

fn entry_for(p: &Principal, action: &str) -> AuditEntry {
    AuditEntry::new(&p.org_id, &actor(), action, now()).principal(&p.id)
}

fn recording(action: &str, p: &Principal) -> Guard {
    Guard::NONE.recording(entry_for(p, action))
}

pub async fn changes_and_their_records_commit_together<S: Store + ?Sized>(store: Arc<S>) {
    let p = principal("acme");
    store.create_principal(&p, MAX, None).await.unwrap();
    let c = credential(&p);
    store.insert_credential(&c, now(), None, &recording("credential.issue", &p)).await.unwrap();
    let renamed = p.apply(&PrincipalChange { display_name: Some("renamed".into()), ..Default::default() }, now()).unwrap().unwrap();
    store.update_principal(&renamed, p.version, &recording("principal.update", &p)).await.unwrap();
    // Refused writes record nothing: a stale version, a revoked principal's new credential.
    let stale = store.update_principal(&renamed, p.version, &recording("principal.update", &p)).await;
    assert!(matches!(stale, Err(StoreError::Conflict(Conflict::StaleVersion))), "{stale:?}");
    let (created, _) = store.assign_role(&assignment(&p, "iam-viewer"), &recording("role_assignment.assign", &p)).await.unwrap();
    // Idempotent repeats change nothing, and record nothing.
    store.assign_role(&created, &recording("role_assignment.assign", &p)).await.unwrap();
    let role = RoleId::parse("iam-viewer").unwrap();
    assert!(store.unassign_role(&p.org_id, &p.id, &role, &recording("role_assignment.unassign", &p)).await.unwrap());
    assert!(!store.unassign_role(&p.org_id, &p.id, &role, &recording("role_assignment.unassign", &p)).await.unwrap());
    store.revoke_credential(&p.org_id, &p.id, &c.key_id, &actor(), now(), &recording("credential.revoke", &p)).await.unwrap();
    store.revoke_credential(&p.org_id, &p.id, &c.key_id, &actor(), now(), &recording("credential.revoke", &p)).await.unwrap();
    let refused = store.insert_credential(&credential(&p), now(), None, &recording("credential.issue", &p)).await;
    assert!(refused.is_ok(), "the principal is active: {refused:?}");
    let other = principal("other");
    store.create_principal(&other, MAX, None).await.unwrap();

    let actions: Vec<String> = whole_trail(store.as_ref(), "acme").await.into_iter().map(|r| r.entry.action).collect();
    assert_eq!(
        actions,
        [
            "principal.create",
            "credential.issue",
            "principal.update",
            "role_assignment.assign",
            "role_assignment.unassign",
            "credential.revoke",
            "credential.issue"
        ]
    );
    let theirs = whole_trail(store.as_ref(), "other").await;
    assert_eq!(theirs.len(), 1, "each organisation has its own chain");
    assert_eq!(theirs[0].seq, 1);
}

pub async fn concurrent_changes_of_one_organisation_never_fork_its_chain<S: Store + ?Sized>(store: Arc<S>) {
    let creates = (0..8).map(|_| {
        let store = store.clone();
        async move { store.create_principal(&principal("acme"), MAX, None).await }
    });
    for result in futures_util::future::join_all(creates).await {
        result.unwrap();
    }
    let trail = whole_trail(store.as_ref(), "acme").await;
    assert_eq!(trail.iter().map(|r| r.seq).collect::<Vec<_>>(), (1..=8).collect::<Vec<u64>>());
}

pub async fn refusals_are_aggregated_per_actor_action_reason_and_minute<S: Store + ?Sized>(store: Arc<S>) {
    let p = principal("acme");
    store.create_principal(&p, MAX, None).await.unwrap();
    let refusal = entry_for(&p, "role.create").refused("missing_permission");
    let flood = (0..20).map(|_| {
        let (store, refusal) = (store.clone(), refusal.clone());
        async move { store.record_refusal(&refusal, 2).await }
    });
    for result in futures_util::future::join_all(flood).await {
        result.unwrap();
    }
    store.record_refusal(&entry_for(&p, "role.create").refused("grant_beyond_authority"), 1).await.unwrap();
    let trail = whole_trail(store.as_ref(), "acme").await;
    assert_eq!(trail.len(), 3, "a creation and two refusal records: {trail:#?}");
    let repeats: Vec<u64> = trail.iter().filter(|r| r.entry.outcome == AuditOutcome::Refused).map(|r| r.repeats).collect();
    let mut sorted = repeats.clone();
    sorted.sort();
    assert_eq!(sorted, [1, 40]);
}

pub async fn the_trail_filters_and_pages_newest_first<S: Store + ?Sized>(store: Arc<S>) {
    let (a, b) = (principal("acme"), principal("acme"));
    store.create_principal(&a, MAX, None).await.unwrap();
    store.create_principal(&b, MAX, None).await.unwrap();
    for i in 0..5 {
        let target = if i % 2 == 0 { &a } else { &b };
        store.insert_credential(&credential(target), now(), None, &recording("credential.issue", target)).await.unwrap();
    }
    store.record_refusal(&entry_for(&a, "credential.issue").refused("target_beyond_authority"), 1).await.unwrap();

    let newest = store.audit_events(&org("acme"), &AuditQuery::new(50)).await.unwrap();
    assert_eq!(newest.items.len(), 8);
    assert!(newest.items.windows(2).all(|w| w[0].entry.at >= w[1].entry.at || w[1].entry.outcome == AuditOutcome::Refused));
    let by_principal = AuditQuery { principal_id: Some(a.id.clone()), ..AuditQuery::new(2) };
    let first = store.audit_events(&org("acme"), &by_principal).await.unwrap();
    assert_eq!(first.items.len(), 2);
    let rest = store.audit_events(&org("acme"), &AuditQuery { after: first.next.clone(), ..by_principal.clone() }).await.unwrap();
    let rest_more = match rest.next.clone() {
        Some(next) => store.audit_events(&org("acme"), &AuditQuery { after: Some(next), ..by_principal.clone() }).await.unwrap().items,
        None => Vec::new(),
    };
    let of_a: Vec<_> = first.items.iter().chain(&rest.items).chain(&rest_more).collect();
    assert_eq!(of_a.len(), 5, "a's creation, three issues and a refusal");
    assert!(of_a.iter().all(|r| r.entry.principal_id.as_ref() == Some(&a.id)));
    let refused = AuditQuery { outcome: Some(AuditOutcome::Refused), ..AuditQuery::new(50) };
    assert_eq!(store.audit_events(&org("acme"), &refused).await.unwrap().items.len(), 1);
    let issues = AuditQuery { action: Some("credential.issue".into()), outcome: Some(AuditOutcome::Success), ..AuditQuery::new(50) };
    assert_eq!(store.audit_events(&org("acme"), &issues).await.unwrap().items.len(), 5);
    let future = AuditQuery { from: Some(now() + Duration::hours(1)), ..AuditQuery::new(50) };
    assert!(store.audit_events(&org("acme"), &future).await.unwrap().items.is_empty());
    let past = AuditQuery { to: Some(now() - Duration::hours(1)), ..AuditQuery::new(50) };
    assert!(store.audit_events(&org("acme"), &past).await.unwrap().items.is_empty());
    assert!(store.audit_events(&org("other"), &AuditQuery::new(50)).await.unwrap().items.is_empty());
}

/// The warnings sweep with an injected clock: run repeatedly, concurrently, and with the clock
/// stepped forward past thresholds and back again, each warning is recorded exactly once, in
/// the organisation's chain, and only the nearest threshold crossed is sent.
pub async fn warnings_are_recorded_once_across_runs_and_clock_steps<S: Store + ?Sized>(store: Arc<S>) {
    use crate::warnings::{WarningSettings, sweep};
    let t0 = now();
    let days = |d: i64| Duration::days(d);
    let settings = WarningSettings::default();
    let p = Principal::new(org("acme"), "integration", None, Some(t0 + days(20)), actor(), t0).unwrap();
    store.create_principal(&p, MAX, None).await.unwrap();
    let hash = "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA".to_owned();
    let expiring = Credential::new(&p, KeyId::generate(), "expiring", Some(t0 + days(15)), hash.clone(), actor(), t0).unwrap();
    let idle = Credential::new(&p, KeyId::generate(), "idle", None, hash.clone(), actor(), t0 - days(40)).unwrap();
    let revoked = Credential::new(&p, KeyId::generate(), "revoked", Some(t0 + days(1)), hash, actor(), t0).unwrap();
    for c in [&expiring, &idle, &revoked] {
        store.insert_credential(c, t0, None, &Guard::NONE).await.unwrap();
    }
    assert_eq!(store.record_credential_use(&expiring, t0, None, None, 100).await.unwrap(), UseOutcome::Recorded);
    store.revoke_credential(&p.org_id, &p.id, &revoked.key_id, &actor(), t0, &Guard::NONE).await.unwrap();

    let run = |at| {
        let (store, settings) = (store.clone(), settings.clone());
        async move { sweep(store.as_ref(), &settings, at).await.unwrap() }
    };
    let first = run(t0).await;
    assert_eq!((first.sent, first.already_sent), (1, 0), "only the idle key: {first:?}");
    assert!(first.credentials_read >= 2 && first.principals_read >= 1, "{first:?}");
    assert_eq!((run(t0).await.sent, run(t0 + Duration::hours(1)).await.sent), (0, 0), "the same facts warn once");
    assert_eq!(run(t0 + days(1) + Duration::seconds(1)).await.sent, 1, "14 days before the key's expiry");
    let (a, b) = futures_util::future::join(run(t0 + days(8) + Duration::seconds(1)), run(t0 + days(8) + Duration::seconds(1))).await;
    assert_eq!(a.sent + b.sent, 2, "the key's 7 days and the principal's 14, once between two concurrent runs: {a:?} {b:?}");
    assert_eq!(run(t0 + days(14) + Duration::hours(12)).await.sent, 2, "the key's 1 day and the principal's 7");
    assert_eq!(run(t0 + days(9)).await.sent, 0, "a clock stepped back sends nothing again");
    assert_eq!(run(t0 + days(15) + Duration::hours(1)).await.sent, 1, "the key expired");
    assert_eq!(run(t0 + days(19) + Duration::hours(1)).await.sent, 1, "the principal's last day");

    let warnings: Vec<(String, Option<u64>)> = whole_trail(store.as_ref(), "acme")
        .await
        .into_iter()
        .filter(|r| r.entry.actor == Actor::system(crate::warnings::SWEEP_ACTOR))
        .map(|r| (r.entry.action.clone(), r.entry.detail.as_ref().and_then(|d| d.get("daysBefore")).and_then(|d| d.as_u64())))
        .collect();
    let expected: Vec<(String, Option<u64>)> = [
        ("credential.unused", None),
        ("credential.expiring", Some(14)),
        ("credential.expiring", Some(7)),
        ("principal.expiring", Some(14)),
        ("credential.expiring", Some(1)),
        ("principal.expiring", Some(7)),
        ("credential.expired", None),
        ("principal.expiring", Some(1)),
    ]
    .into_iter()
    .map(|(a, d)| (a.to_owned(), d))
    .collect();
    let mut sorted = warnings.clone();
    sorted.sort();
    let mut want = expected.clone();
    want.sort();
    assert_eq!(sorted, want, "{warnings:?}");
}

/// Webhook endpoints: created once, replaced only at the version read, deleted, each change
/// recorded with its write, scoped to their organisation; deliveries overwrite their own event
/// and list newest first.
pub async fn webhooks_and_their_deliveries_are_scoped_versioned_and_recorded<S: Store + ?Sized>(store: Arc<S>) {
    use crate::webhooks::delivery::{Delivery, DeliveryState};
    use crate::webhooks::{Webhook, WebhookChange};
    let p = principal("acme");
    store.create_principal(&p, MAX, None).await.unwrap();
    let change = WebhookChange { url: Some("https://hooks.example.com/iam".into()), ..Default::default() };
    let w = Webhook::new(&org("acme"), &change, false, actor(), now()).unwrap();
    store.put_webhook(&w, None, &recording("webhook.create", &p)).await.unwrap();
    let again = store.put_webhook(&w, None, &recording("webhook.create", &p)).await;
    assert!(matches!(again, Err(StoreError::Conflict(Conflict::WebhookExists))), "{again:?}");
    assert_eq!(store.get_webhook(&org("acme"), &w.id).await.unwrap(), Some(w.clone()));
    assert!(store.get_webhook(&org("other"), &w.id).await.unwrap().is_none());
    assert!(store.list_webhooks(&org("other")).await.unwrap().is_empty());

    let off = w.apply(&WebhookChange { enabled: Some(false), ..Default::default() }, false, now()).unwrap().unwrap();
    store.put_webhook(&off, Some(w.version), &recording("webhook.update", &p)).await.unwrap();
    let stale = store.put_webhook(&off, Some(w.version), &recording("webhook.update", &p)).await;
    assert!(matches!(stale, Err(StoreError::Conflict(Conflict::StaleVersion))), "{stale:?}");
    let ghost = Webhook::new(&org("acme"), &change, false, actor(), now()).unwrap();
    let missing = store.put_webhook(&ghost, Some(1), &recording("webhook.update", &p)).await;
    assert!(matches!(missing, Err(StoreError::NotFound(_))), "{missing:?}");
    assert_eq!(store.list_webhooks(&org("acme")).await.unwrap(), vec![off.clone()]);

    let t0 = now();
    let delivery = |event: &str, secs: i64, state| Delivery {
        org_id: org("acme"),
        webhook_id: w.id.clone(),
        event_id: event.to_owned(),
        event_type: "credential.issued".into(),
        created_at: t0 + Duration::seconds(secs),
        state,
        attempt_count: 1,
        attempts: Vec::new(),
        next_attempt_at: None,
    };
    store.put_delivery(&delivery("ae_a", 0, DeliveryState::Pending)).await.unwrap();
    store.put_delivery(&delivery("ae_b", 5, DeliveryState::Delivered)).await.unwrap();
    store.put_delivery(&delivery("ae_a", 0, DeliveryState::Delivered)).await.unwrap();
    let listed = store.list_deliveries(&org("acme"), &w.id, 10).await.unwrap();
    assert_eq!(
        listed.iter().map(|d| (d.event_id.as_str(), d.state)).collect::<Vec<_>>(),
        [("ae_b", DeliveryState::Delivered), ("ae_a", DeliveryState::Delivered)]
    );
    assert_eq!(store.list_deliveries(&org("acme"), &w.id, 1).await.unwrap().len(), 1);
    assert!(store.list_deliveries(&org("other"), &w.id, 10).await.unwrap().is_empty());

    assert!(store.delete_webhook(&org("acme"), &w.id, &recording("webhook.delete", &p)).await.unwrap());
    assert!(!store.delete_webhook(&org("acme"), &w.id, &recording("webhook.delete", &p)).await.unwrap());
    assert!(store.list_webhooks(&org("acme")).await.unwrap().is_empty());
    let actions: Vec<String> = whole_trail(store.as_ref(), "acme").await.into_iter().map(|r| r.entry.action).collect();
    assert_eq!(
        actions,
        ["principal.create", "webhook.create", "webhook.update", "webhook.delete"],
        "a record per change, none for a refusal"
    );
}

fn service_account(org_name: &str) -> Principal {
    principal(org_name).of_type(crate::model::PrincipalType::ServiceAccount).unwrap()
}

fn trust_entry(subject: &str) -> crate::federation::trust::TrustPolicyEntry {
    use std::collections::BTreeMap;
    let policy = crate::federation::TrustPolicy::new("https://issuer.example", "iam", subject, BTreeMap::new()).unwrap();
    crate::federation::trust::TrustPolicyEntry { id: crate::ids::TrustPolicyId::generate(), policy, created_at: now(), created_by: actor() }
}

pub async fn service_accounts_are_found_by_id_and_carry_their_trust_policies<S: Store + ?Sized>(store: Arc<S>) {
    let sa = service_account("acme");
    store.create_principal(&sa, MAX, None).await.unwrap();
    let key_principal = principal("acme");
    store.create_principal(&key_principal, MAX, None).await.unwrap();
    assert_eq!(store.find_service_account(&sa.id).await.unwrap(), Some(org("acme")));
    assert_eq!(store.find_service_account(&key_principal.id).await.unwrap(), None, "only service accounts are indexed");
    assert_eq!(store.find_service_account(&PrincipalId::generate()).await.unwrap(), None);

    let mut with_policies = sa.clone();
    with_policies.trust_policies = vec![trust_entry("repo:acme/api:*"), trust_entry("system:serviceaccount:payments:exporter")];
    with_policies.version += 1;
    store.update_principal(&with_policies, sa.version, &Guard::NONE).await.unwrap();
    assert_eq!(store.get_principal(&org("acme"), &sa.id).await.unwrap(), Some(with_policies.clone()));
    let (read, _) = store.get_principal_with_roles(&org("acme"), &sa.id).await.unwrap().unwrap();
    assert_eq!(read.trust_policies, with_policies.trust_policies, "the exchange's one read carries them");

    let mut fewer = with_policies.clone();
    fewer.trust_policies.truncate(1);
    fewer.version += 1;
    store.update_principal(&fewer, with_policies.version, &Guard::NONE).await.unwrap();
    let mut none = fewer.clone();
    none.trust_policies.clear();
    none.version += 1;
    store.update_principal(&none, fewer.version, &Guard::NONE).await.unwrap();
    assert_eq!(store.get_principal(&org("acme"), &sa.id).await.unwrap(), Some(none));
}

pub async fn trust_policy_use_counts_only_while_the_account_is_unchanged<S: Store + ?Sized>(store: Arc<S>) {
    let mut sa = service_account("acme");
    let entry = trust_entry("repo:acme/api:*");
    store.create_principal(&sa, MAX, None).await.unwrap();
    let mut next = sa.clone();
    next.trust_policies = vec![entry.clone()];
    next.version += 1;
    store.update_principal(&next, sa.version, &Guard::NONE).await.unwrap();
    sa = next;
    let t = now();
    assert!(store.record_trust_policy_use(&sa, &entry.id, t).await.unwrap());
    assert!(store.record_trust_policy_use(&sa, &entry.id, t + Duration::seconds(5)).await.unwrap());
    let uses = store.trust_policy_uses(&org("acme"), &sa.id).await.unwrap();
    assert_eq!(uses[&entry.id], crate::federation::trust::TrustPolicyUse { last_used_at: Some(t + Duration::seconds(5)), uses: 2 });
    assert_eq!(store.get_principal(&org("acme"), &sa.id).await.unwrap().unwrap().version, sa.version, "a use moves no version");

    let stale = Principal { version: sa.version - 1, ..sa.clone() };
    assert!(!store.record_trust_policy_use(&stale, &entry.id, t).await.unwrap(), "a change since the read wins");
    let mut suspended = sa.clone();
    suspended.status = crate::model::PrincipalStatus::Suspended;
    suspended.version += 1;
    store.update_principal(&suspended, sa.version, &Guard::NONE).await.unwrap();
    assert!(!store.record_trust_policy_use(&suspended, &entry.id, t).await.unwrap(), "only an Active account is used");
    assert_eq!(store.trust_policy_uses(&org("acme"), &sa.id).await.unwrap()[&entry.id].uses, 2);
    assert!(store.trust_policy_uses(&org("other"), &sa.id).await.unwrap().is_empty());
    let stored = store.get_principal(&org("acme"), &sa.id).await.unwrap().unwrap();
    assert_eq!(stored.trust_policies, sa.trust_policies, "a status change keeps the policies");

    // A removed policy's use goes with it, in the same write.
    let mut without = suspended.clone();
    without.trust_policies.clear();
    without.version += 1;
    store.update_principal(&without, suspended.version, &Guard::NONE).await.unwrap();
    assert!(store.trust_policy_uses(&org("acme"), &sa.id).await.unwrap().is_empty());
}

pub async fn trusted_issuers_are_per_organisation_and_recorded<S: Store + ?Sized>(store: Arc<S>) {
    use crate::federation::trust::{TrustedIssuer, TrustedIssuers};
    let p = principal("acme");
    store.create_principal(&p, MAX, None).await.unwrap();
    assert_eq!(store.get_trusted_issuers(&org("acme")).await.unwrap(), None);
    let github = || vec![TrustedIssuer { issuer: "https://token.actions.githubusercontent.com".into(), description: Some("CI".into()) }];
    let first = TrustedIssuers::new(github(), None, 1, false, actor(), now()).unwrap();
    store.put_trusted_issuers(&org("acme"), &first, &recording("trusted_issuers.update", &p)).await.unwrap();
    assert_eq!(store.get_trusted_issuers(&org("acme")).await.unwrap(), Some(first.clone()));
    assert_eq!(store.get_trusted_issuers(&org("other")).await.unwrap(), None);
    // Only over the list read: a second first list, or a change from a stale read, loses.
    let again = store.put_trusted_issuers(&org("acme"), &first, &recording("trusted_issuers.update", &p)).await;
    assert!(matches!(again, Err(StoreError::Conflict(Conflict::StaleVersion))), "{again:?}");
    let second = TrustedIssuers::new(Vec::new(), None, 2, false, actor(), now()).unwrap();
    store.put_trusted_issuers(&org("acme"), &second, &recording("trusted_issuers.update", &p)).await.unwrap();
    let stale = TrustedIssuers::new(github(), None, 2, false, actor(), now()).unwrap();
    let lost = store.put_trusted_issuers(&org("acme"), &stale, &recording("trusted_issuers.update", &p)).await;
    assert!(matches!(lost, Err(StoreError::Conflict(Conflict::StaleVersion))), "{lost:?}");
    assert_eq!(store.get_trusted_issuers(&org("acme")).await.unwrap(), Some(second));
    let actions: Vec<String> = whole_trail(store.as_ref(), "acme").await.into_iter().map(|r| r.entry.action).collect();
    assert_eq!(
        actions,
        ["principal.create", "trusted_issuers.update", "trusted_issuers.update"],
        "a record per change, none for a refusal"
    );
}

pub async fn users_are_found_by_identity_once_mapped<S: Store + ?Sized>(store: Arc<S>) {
    use crate::federation::trust::UserIdentity;
    let ada = UserIdentity::new("https://idp.example", "ada@example.com").unwrap();
    let user = principal("acme").as_user(ada.clone());
    store.create_principal(&user, MAX, None).await.unwrap();
    assert_eq!(store.get_principal(&org("acme"), &user.id).await.unwrap(), Some(user.clone()), "the identity is stored");
    assert_eq!(store.find_user(&org("acme"), &ada).await.unwrap(), Some(user.id.clone()));
    assert_eq!(store.find_user(&org("other"), &ada).await.unwrap(), None, "per organisation");
    let elsewhere = UserIdentity::new("https://other-idp.example", "ada@example.com").unwrap();
    assert_eq!(store.find_user(&org("acme"), &elsewhere).await.unwrap(), None, "per issuer");
    let twin = principal("acme").as_user(ada.clone());
    let taken = store.create_principal(&twin, MAX, None).await;
    assert!(matches!(taken, Err(StoreError::Conflict(Conflict::IdentityMapped))), "{taken:?}");
    assert_eq!(store.get_principal(&org("acme"), &twin.id).await.unwrap(), None, "nothing of the refused create is written");
    let in_other_org = principal("other").as_user(ada.clone());
    store.create_principal(&in_other_org, MAX, None).await.unwrap();
}

pub async fn sign_in_records_are_taken_once<S: Store + ?Sized>(store: Arc<S>) {
    use crate::federation::sign_in::SignInRecord;
    let record = SignInRecord::Code {
        principal_id: PrincipalId::generate(),
        console_challenge: "c".repeat(43),
        expires_at: now() + Duration::seconds(60),
        sign_in_version: 3,
    };
    store.put_sign_in(&org("acme"), "acme.key1", &record).await.unwrap();
    assert_eq!(store.take_sign_in(&org("other"), "acme.key1").await.unwrap(), None, "per organisation");
    assert_eq!(store.take_sign_in(&org("acme"), "acme.key1").await.unwrap(), Some(record.clone()));
    assert_eq!(store.take_sign_in(&org("acme"), "acme.key1").await.unwrap(), None, "once");
    // Two takes racing: exactly one finds it.
    store.put_sign_in(&org("acme"), "acme.key2", &record).await.unwrap();
    let acme = org("acme");
    let (a, b) = tokio::join!(store.take_sign_in(&acme, "acme.key2"), store.take_sign_in(&acme, "acme.key2"));
    assert_eq!([a.unwrap(), b.unwrap()].iter().filter(|r| r.is_some()).count(), 1);
}
