//! The authority rule: nobody acts on, or hands out, more than they hold, and the organisation
//! never loses its last usable administrator. Pure decisions over what the service read; the
//! service does the reading and the store makes the guarded write atomic.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use crate::audit::AuditEntry;
use crate::ids::{KeyId, OrgId, Permission, PrincipalId, RoleId};
use crate::model::{Credential, MAX_ACTIVE_CREDENTIALS, Principal, PrincipalStatus, PrincipalType, Role};
use crate::roles::IAM_PERMISSIONS;

/// Why an authenticated caller may not do what it asked, although it holds the route's
/// permission. Each names the rule, so a refused admin knows what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorityRule {
    #[error(
        "the principal holds '{0}', which is beyond your authority: you may act on a principal only if you hold every permission it holds"
    )]
    TargetBeyondAuthority(Permission),
    #[error("granting '{0}' is beyond your authority: you may grant only permissions you hold (an administrator may grant any)")]
    GrantBeyondAuthority(Permission),
    #[error("a principal never changes its own status or expiry")]
    OwnStatusOrExpiry,
    #[error("a principal never grants itself a role")]
    SelfGrant,
    #[error("a credential's own token may only narrow its restrictions and bring its expiry forward, never widen or extend them")]
    WidenOwnCredential,
    #[error(
        "without iam:credentials:write, a token may rotate only the credential it was minted by, and only if that credential was issued with selfRotation"
    )]
    NotSelfRotatable,
}

/// Whether `permissions` hold every `iam:` permission: an organisation administrator.
pub fn is_administrator<'a>(permissions: impl IntoIterator<Item = &'a str>) -> bool {
    let held: BTreeSet<&str> = permissions.into_iter().collect();
    IAM_PERMISSIONS.iter().all(|p| held.contains(p))
}

/// What a caller may act on and hand out: its effective permissions (its current roles'
/// permissions, narrowed by its token's scope). An administrator's authority covers every
/// permission available to the organisation; since a principal's permissions only ever come
/// from roles available to its organisation, that is every permission a target can hold.
#[derive(Debug, Clone)]
pub struct Authority<'a> {
    effective: &'a BTreeSet<String>,
}

impl<'a> Authority<'a> {
    pub fn new(effective: &'a BTreeSet<String>) -> Self {
        Self { effective }
    }

    pub fn is_administrator(&self) -> bool {
        is_administrator(self.effective.iter().map(String::as_str))
    }

    fn first_uncovered<'p>(&self, permissions: impl IntoIterator<Item = &'p Permission>) -> Option<&'p Permission> {
        if self.is_administrator() {
            return None;
        }
        permissions.into_iter().find(|p| !self.effective.contains(p.as_str()))
    }

    /// Acting on a principal: everything it holds must be within this authority.
    pub fn may_act_on<'p>(&self, target: impl IntoIterator<Item = &'p Permission>) -> Result<(), AuthorityRule> {
        match self.first_uncovered(target) {
            Some(p) => Err(AuthorityRule::TargetBeyondAuthority(p.clone())),
            None => Ok(()),
        }
    }

    /// Defining or assigning a role: everything it grants, downstream permissions included.
    pub fn may_grant<'p>(&self, granted: impl IntoIterator<Item = &'p Permission>) -> Result<(), AuthorityRule> {
        match self.first_uncovered(granted) {
            Some(p) => Err(AuthorityRule::GrantBeyondAuthority(p.clone())),
            None => Ok(()),
        }
    }
}

/// A usable administrator that a guarded write leaves in place, condition-checked in the
/// write's own atomic step: the write commits only if, at that moment, the witness principal is
/// still at `principal_version` (so still Active), `key_id` is still Active, and every one of
/// `roles` is still assigned to it. Two administrators removing each other therefore cannot
/// both succeed: each write checks what the other changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminWitness {
    pub org_id: OrgId,
    pub principal_id: PrincipalId,
    pub principal_version: u64,
    /// The credential it authenticates with; `None` for a person, who signs in as its mapped
    /// identity (which only a change of the principal, caught by its version, can take away).
    pub key_id: Option<KeyId>,
    /// For a person: the trusted-issuer list's version under which it signs in, which must not
    /// move before the write commits (a change of the identity provider may strand it).
    pub sign_in_version: Option<u64>,
    pub roles: Vec<RoleId>,
}

/// A principal whose standing an authority decision read, at the version read. A principal's
/// version advances with every change to it and to its role assignments, so "still at this
/// version" means "still holds what the decision saw".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecidedOn {
    pub org_id: OrgId,
    pub principal_id: PrincipalId,
    pub version: u64,
}

/// What a management write must find unchanged when it commits, checked in its own atomic
/// step: the principals its authority was decided on (the caller and the target), so that
/// authority is judged at the moment of the change, and, when it could take a usable
/// administrator out, a witness that one remains. It also carries the write's audit record,
/// which the store chains and writes in the same atomic step, only if the change is written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Guard {
    pub decided_on: Vec<DecidedOn>,
    pub witness: Option<AdminWitness>,
    pub record: Option<AuditEntry>,
}

impl Guard {
    /// Nothing to check and nothing to record: tests of the store alone.
    pub const NONE: Guard = Guard { decided_on: Vec::new(), witness: None, record: None };

    pub fn decided_on(principals: impl IntoIterator<Item = DecidedOn>) -> Self {
        Self { decided_on: principals.into_iter().collect(), witness: None, record: None }
    }

    pub fn with_witness(self, witness: Option<AdminWitness>) -> Self {
        Self { witness, ..self }
    }

    /// The audit record of the change this guard's write makes.
    pub fn recording(self, entry: AuditEntry) -> Self {
        Self { record: Some(entry), ..self }
    }

    /// The version `principal` must still be at, if the guard names it. `Err` when the guard
    /// names it at two versions (the caller's and the target's reads of one principal straddled
    /// a change): it cannot hold, so the write must not be tried.
    pub fn version_of(&self, principal: &PrincipalId) -> Result<Option<u64>, GuardBroken> {
        let witness = self.witness.iter().filter(|w| w.principal_id == *principal).map(|w| w.principal_version);
        let mut versions = self.decided_on.iter().filter(|d| d.principal_id == *principal).map(|d| d.version).chain(witness);
        let first = versions.next();
        match first {
            Some(v) if versions.any(|other| other != v) => Err(GuardBroken),
            _ => Ok(first),
        }
    }

    /// Each decided-on principal once, at its one version, except those in `skip` (whose
    /// condition the write carries itself); `Err` as for [`Guard::version_of`].
    pub fn principals_to_check(&self, skip: &[&PrincipalId]) -> Result<Vec<DecidedOn>, GuardBroken> {
        let mut out: Vec<DecidedOn> = Vec::new();
        for d in &self.decided_on {
            self.version_of(&d.principal_id)?;
            if skip.contains(&&d.principal_id) || out.iter().any(|o| o.principal_id == d.principal_id) {
                continue;
            }
            out.push(d.clone());
        }
        Ok(out)
    }
}

/// A guard that names one principal at two versions: it can never hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardBroken;

/// A principal as read for a decision: its record, its roles (those still available to its
/// organisation and supporting its type) and its credentials.
#[derive(Debug, Clone)]
pub struct Standing {
    pub principal: Principal,
    pub roles: Vec<Role>,
    pub credentials: Vec<Credential>,
    /// For a person that can sign in now (mapped under the organisation's current identity
    /// provider): the version of the trusted-issuer list that says so. `None` otherwise.
    pub signs_in: Option<u64>,
}

impl Standing {
    /// Everything the principal holds through its roles.
    pub fn permissions(&self) -> BTreeSet<Permission> {
        self.roles.iter().flat_map(|r| r.permissions.iter().cloned()).collect()
    }

    fn holds_every_iam_permission(&self) -> bool {
        is_administrator(self.roles.iter().flat_map(|r| r.permissions.iter().map(Permission::as_str)))
    }

    /// A usable administrator: Active, unexpired, holding every `iam:` permission through its
    /// roles, and able to authenticate now (an Active, unexpired credential, or, for a person,
    /// an identity mapped at the organisation's identity provider). Answers the witness that
    /// proves it, naming only the roles that carry `iam:` permissions.
    pub fn usable_administrator(&self, now: DateTime<Utc>) -> Option<AdminWitness> {
        self.usable_administrator_where(now, |_| true)
    }

    /// As [`Standing::usable_administrator`], with a credential that also `fits` (one that a
    /// new credential policy would still let exchange, say).
    /// A person signs in without a credential, so `fits` does not apply to one.
    pub fn usable_administrator_where(&self, now: DateTime<Utc>, fits: impl Fn(&Credential) -> bool) -> Option<AdminWitness> {
        if self.signs_in.is_some() {
            return self.usable_administrator_with(None, now);
        }
        self.usable_administrator_by_key_where(now, fits)
    }

    /// As [`Standing::usable_administrator_where`], through a credential only (what is left
    /// when the organisation's identity provider is the thing changing).
    pub fn usable_administrator_by_key_where(&self, now: DateTime<Utc>, fits: impl Fn(&Credential) -> bool) -> Option<AdminWitness> {
        let credential = self.credentials.iter().find(|c| c.is_live(now) && c.restrictions.permits_administration() && fits(c))?;
        self.usable_administrator_with(Some(&credential.key_id), now)
    }

    /// As [`Standing::usable_administrator`], given a credential known to be usable now (the
    /// one a caller has just authenticated with), or none for a person.
    pub fn usable_administrator_with(&self, key_id: Option<&KeyId>, now: DateTime<Utc>) -> Option<AdminWitness> {
        let p = &self.principal;
        if p.status != PrincipalStatus::Active || p.is_expired(now) || !self.holds_every_iam_permission() {
            return None;
        }
        let mut roles: Vec<RoleId> =
            self.roles.iter().filter(|r| r.permissions.iter().any(|p| p.as_str().starts_with("iam:"))).map(|r| r.id.clone()).collect();
        roles.sort();
        Some(AdminWitness {
            org_id: p.org_id.clone(),
            principal_id: p.id.clone(),
            principal_version: p.version,
            key_id: key_id.cloned(),
            sign_in_version: if key_id.is_none() { self.signs_in } else { None },
            roles,
        })
    }

    /// This principal without one credential (its revocation).
    pub fn without_credential(&self, key_id: &KeyId) -> Self {
        Self { credentials: self.credentials.iter().filter(|c| c.key_id != *key_id).cloned().collect(), ..self.clone() }
    }

    /// This principal with one credential as a change leaves it.
    pub fn with_credential(&self, changed: Credential) -> Self {
        let credentials = self.credentials.iter().map(|c| if c.key_id == changed.key_id { changed.clone() } else { c.clone() }).collect();
        Self { credentials, ..self.clone() }
    }

    /// This principal without one role (its unassignment).
    pub fn without_role(&self, role: &RoleId) -> Self {
        Self { roles: self.roles.iter().filter(|r| r.id != *role).cloned().collect(), ..self.clone() }
    }

    /// This principal with another record (a status change, say).
    pub fn with_principal(&self, principal: Principal) -> Self {
        Self { principal, ..self.clone() }
    }
}

/// What a write that may remove a usable administrator needs: `Ok(None)` when the target was
/// not one (nothing to guard), `Ok(Some(witness))` when a usable administrator survives it, and
/// `Err(())` when none would. `after` is the target as the write leaves it; `others` are other
/// usable administrators found so far (the caller first), each already checked usable.
pub fn guard_for(
    before: &Standing,
    after: &Standing,
    others: impl IntoIterator<Item = AdminWitness>,
    now: DateTime<Utc>,
) -> Result<Option<AdminWitness>, LastAdministrator> {
    if before.usable_administrator(now).is_none() {
        return Ok(None);
    }
    if let Some(witness) = after.usable_administrator(now) {
        // The target stays usable through another credential or role: that state is the witness,
        // so two writes removing its last two means of use cannot both commit.
        return Ok(Some(witness));
    }
    others.into_iter().find(|w| w.principal_id != before.principal.id).map(Some).ok_or(LastAdministrator)
}

/// The write would leave the organisation without a usable administrator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "this change would leave the organisation without a usable administrator (Active, unexpired, holding every iam: permission, with an active credential); make another principal one first"
)]
pub struct LastAdministrator;

/// Whether one management action on a principal is open to a caller, and if not, the words the
/// server would refuse it with.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    pub allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Verdict {
    fn of(decision: Result<(), String>) -> Self {
        match decision {
            Ok(()) => Self { allowed: true, reason: None },
            Err(reason) => Self { allowed: false, reason: Some(reason) },
        }
    }
}

/// What a caller may do to one principal, decided by the same rules the writes apply, so that a
/// client can show what is allowed instead of discovering it. One rule is decided only at the
/// write: whether the change would leave the organisation without a usable administrator
/// depends on every other principal, and the write re-checks it atomically anyway.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AllowedActions {
    pub rename: Verdict,
    pub change_status: Verdict,
    pub change_expiry: Verdict,
    pub issue_credential: Verdict,
    pub revoke_credential: Verdict,
    pub assign_role: Verdict,
    pub unassign_role: Verdict,
    /// Adding and removing a service account's trust policies: decided as issuing is.
    pub manage_trust_policies: Verdict,
}

/// The permission each action needs; the same constants the service requires.
pub struct ActionPermissions<'a> {
    pub api_keys_write: &'a str,
    pub credentials_write: &'a str,
    pub role_assignments_write: &'a str,
}

/// Decides [`AllowedActions`] for a caller holding `held` (its authority), acting as
/// `caller`, on `target` at `now`.
pub fn allowed_actions(
    held: &BTreeSet<String>,
    caller: &PrincipalId,
    target: &Standing,
    needs: &ActionPermissions<'_>,
    now: DateTime<Utc>,
) -> AllowedActions {
    let authority = Authority::new(held);
    let permission = |p: &str| if held.contains(p) { Ok(()) } else { Err(format!("this operation needs the permission {p}")) };
    let acting = |p: &str| {
        permission(p)?;
        authority.may_act_on(&target.permissions()).map_err(|rule| rule.to_string())
    };
    let is_self = target.principal.id == *caller;
    let revoked = target.principal.status == PrincipalStatus::Revoked;
    let changeable = |p: &str| {
        acting(p)?;
        if revoked { Err("the principal is revoked and can no longer be changed".to_owned()) } else { Ok(()) }
    };
    let own_standing = |p: &str| {
        changeable(p)?;
        if is_self { Err(AuthorityRule::OwnStatusOrExpiry.to_string()) } else { Ok(()) }
    };
    let live = target.credentials.iter().filter(|c| c.is_live(now)).count();
    let service_account = target.principal.principal_type == crate::model::PrincipalType::ServiceAccount;
    AllowedActions {
        rename: Verdict::of(changeable(needs.api_keys_write)),
        change_status: Verdict::of(own_standing(needs.api_keys_write)),
        change_expiry: Verdict::of(own_standing(needs.api_keys_write)),
        issue_credential: Verdict::of(acting(needs.credentials_write).and_then(|()| {
            if service_account {
                Err("a service account has no credentials: its workloads exchange their own tokens under its trust policies".to_owned())
            } else if target.principal.principal_type == crate::model::PrincipalType::User {
                Err("a user has no API keys: people sign in through the organisation's identity provider".to_owned())
            } else if revoked {
                Err("the principal is revoked; no credential can be issued".to_owned())
            } else if live >= MAX_ACTIVE_CREDENTIALS {
                Err(crate::error::Limit::ActiveCredentials(MAX_ACTIVE_CREDENTIALS).to_string())
            } else {
                Ok(())
            }
        })),
        revoke_credential: Verdict::of(acting(needs.credentials_write)),
        assign_role: Verdict::of(
            changeable(needs.role_assignments_write).and_then(
                |()| {
                    if is_self { Err(AuthorityRule::SelfGrant.to_string()) } else { Ok(()) }
                },
            ),
        ),
        unassign_role: Verdict::of(acting(needs.role_assignments_write)),
        manage_trust_policies: Verdict::of(if service_account {
            changeable(needs.credentials_write)
        } else {
            Err("only a service account has trust policies".to_owned())
        }),
    }
}

/// Roles that grant a principal of `kind` in `org` anything: available to the organisation and
/// supporting the principal type. Others (a role since made unavailable) grant nothing.
pub fn granting(role: &Role, org: &OrgId, kind: PrincipalType) -> bool {
    role.is_available_to(org) && role.supports(kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Actor, now};
    use crate::roles;

    fn org() -> OrgId {
        OrgId::parse("acme").unwrap()
    }

    fn standing(role_ids: &[&str], credentials: usize) -> Standing {
        let principal = Principal::new(org(), "p", None, None, Actor::system("t"), now()).unwrap();
        let credentials = (0..credentials)
            .map(|_| Credential::new(&principal, KeyId::generate(), "k", None, "hash".into(), Actor::system("t"), now()).unwrap())
            .collect();
        let roles = role_ids.iter().map(|id| roles::builtin(id).unwrap().clone()).collect();
        Standing { principal, roles, credentials, signs_in: None }
    }

    fn perms(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_non_administrator_may_not_act_on_a_principal_holding_more() {
        let held = perms(&["iam:credentials:write"]);
        let admin = standing(&["iam-admin"], 1);
        let refused = Authority::new(&held).may_act_on(&admin.permissions());
        assert!(matches!(refused, Err(AuthorityRule::TargetBeyondAuthority(_))));
        assert!(Authority::new(&held).may_act_on(&standing(&[], 1).permissions()).is_ok());
    }

    #[test]
    fn granting_a_downstream_permission_needs_holding_it_unless_administrator() {
        let provision = Permission::parse("iot:devices:provision").unwrap();
        let writer = perms(&["iam:role-assignments:write"]);
        assert!(matches!(Authority::new(&writer).may_grant([&provision]), Err(AuthorityRule::GrantBeyondAuthority(_))));
        let admin = perms(roles::IAM_PERMISSIONS);
        assert!(Authority::new(&admin).may_grant([&provision]).is_ok());
    }

    #[test]
    fn a_usable_administrator_needs_status_roles_and_a_live_credential() {
        let t = now();
        assert!(standing(&["iam-admin"], 1).usable_administrator(t).is_some());
        assert!(standing(&["iam-admin"], 0).usable_administrator(t).is_none(), "no credential");
        assert!(standing(&["iam-viewer"], 1).usable_administrator(t).is_none(), "not every iam: permission");
        let mut suspended = standing(&["iam-admin"], 1);
        suspended.principal.status = PrincipalStatus::Suspended;
        assert!(suspended.usable_administrator(t).is_none());
    }

    #[test]
    fn removing_the_last_administrators_last_credential_is_refused_without_another() {
        let t = now();
        let admin = standing(&["iam-admin"], 1);
        let key = admin.credentials[0].key_id.clone();
        assert_eq!(guard_for(&admin, &admin.without_credential(&key), [], t), Err(LastAdministrator));
        let other = standing(&["iam-admin"], 1).usable_administrator(t).unwrap();
        assert_eq!(guard_for(&admin, &admin.without_credential(&key), [other.clone()], t), Ok(Some(other)));
    }

    #[test]
    fn an_administrator_keeping_another_credential_is_its_own_witness() {
        let t = now();
        let admin = standing(&["iam-admin"], 2);
        let first = admin.credentials[0].key_id.clone();
        let witness = guard_for(&admin, &admin.without_credential(&first), [], t).unwrap().unwrap();
        assert_eq!(witness.principal_id, admin.principal.id);
        assert_ne!(witness.key_id, Some(first));
    }

    #[test]
    fn changes_to_non_administrators_need_no_guard() {
        let t = now();
        let viewer = standing(&["iam-viewer"], 1);
        let key = viewer.credentials[0].key_id.clone();
        assert_eq!(guard_for(&viewer, &viewer.without_credential(&key), [], t), Ok(None));
    }

    #[test]
    fn the_target_is_never_its_own_outside_witness() {
        let t = now();
        let admin = standing(&["iam-admin"], 1);
        let own = admin.usable_administrator(t).unwrap();
        let role = RoleId::parse("iam-admin").unwrap();
        assert_eq!(guard_for(&admin, &admin.without_role(&role), [own], t), Err(LastAdministrator));
    }
}
