//! Principals, credentials, roles and role assignments, and the rules between them.

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};

use crate::error::DomainError;
use crate::ids::{KeyId, OrgId, Permission, PrincipalId, RoleId};
use crate::restrictions::Restrictions;

/// Times are kept to the second: that is what RFC 3339 answers and JWT claims carry.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(0)
}

pub const DISPLAY_NAME_MAX: usize = 128;
pub const CREDENTIAL_NAME_MAX: usize = 64;
pub const ROLE_NAME_MAX: usize = 64;
pub const ROLE_DESCRIPTION_MAX: usize = 512;
pub const ROLE_PERMISSIONS_MAX: usize = 50;
/// Principals per organisation unless configured otherwise (`IAM_MAX_PRINCIPALS_PER_ORG`).
pub const DEFAULT_MAX_PRINCIPALS_PER_ORG: usize = 1_000;
/// Credentials that are neither revoked nor expired, per principal.
pub const MAX_ACTIVE_CREDENTIALS: usize = 10;
pub const MAX_ROLES_PER_PRINCIPAL: usize = 20;
pub const MAX_ORG_ROLES: usize = 100;

/// Who did something: the principal behind the access token, or the local bootstrap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Actor(pub String);

impl Actor {
    pub fn principal(id: &PrincipalId) -> Self {
        Self(id.to_string())
    }
    pub fn system(what: &str) -> Self {
        Self(format!("system:{what}"))
    }
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Moved to [`crate::names`], with the rest of the rules for names; re-exported for callers.
pub use crate::names::validate_name;

/// Expiry dates further out than this are a typo, and beyond year 9999 they would not survive
/// an RFC 3339 round trip.
pub const MAX_EXPIRY_YEARS: i64 = 100;

pub fn validate_future(field: &str, at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Result<(), DomainError> {
    match at {
        Some(t) if t <= now => Err(DomainError::invalid(format!("{field} must be in the future"))),
        Some(t) if t > now + chrono::Duration::days(365 * MAX_EXPIRY_YEARS) => {
            Err(DomainError::invalid(format!("{field} must be within {MAX_EXPIRY_YEARS} years")))
        }
        _ => Ok(()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PrincipalStatus {
    Active,
    Suspended,
    Revoked,
}

impl PrincipalStatus {
    /// Active ⇄ Suspended; either → Revoked, which is terminal. Staying put is allowed.
    pub fn can_become(self, next: PrincipalStatus) -> bool {
        use PrincipalStatus::*;
        matches!((self, next), (Active | Suspended, _) | (Revoked, Revoked))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Principal {
    pub id: PrincipalId,
    pub org_id: OrgId,
    #[serde(rename = "type")]
    pub principal_type: PrincipalType,
    pub display_name: String,
    pub status: PrincipalStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub created_by: Actor,
    pub updated_at: DateTime<Utc>,
    pub version: u64,
    /// A service account's trust policies (issue 16): what stands in for its credentials.
    /// Changing them advances the version, as any change to what a principal can do does.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trust_policies: Vec<crate::federation::trust::TrustPolicyEntry>,
    /// A user's identity at the organisation's identity provider: how it signs in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<crate::federation::trust::UserIdentity>,
    /// The trusted-issuer list's version at a user's latest sign-in (written by the sign-in,
    /// never by a change of the principal, and so outside its version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_in_under: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PrincipalType {
    User,
    ApiKey,
    ServiceAccount,
}

/// A change asked of a principal. `expires_at: Some(None)` clears the expiry.
#[derive(Debug, Default, Clone)]
pub struct PrincipalChange {
    pub display_name: Option<String>,
    pub status: Option<PrincipalStatus>,
    pub expires_at: Option<Option<DateTime<Utc>>>,
}

impl Principal {
    pub fn new(
        org_id: OrgId,
        display_name: &str,
        status: Option<PrincipalStatus>,
        expires_at: Option<DateTime<Utc>>,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<Self, DomainError> {
        let display_name = validate_name("displayName", display_name, DISPLAY_NAME_MAX)?;
        let status = status.unwrap_or(PrincipalStatus::Active);
        if status == PrincipalStatus::Revoked {
            return Err(DomainError::invalid("a new principal starts Active or Suspended"));
        }
        validate_future("expiresAt", expires_at, now)?;
        Ok(Self {
            id: PrincipalId::generate(),
            org_id,
            principal_type: PrincipalType::ApiKey,
            display_name,
            status,
            expires_at,
            created_at: now,
            created_by: actor,
            updated_at: now,
            version: 1,
            trust_policies: Vec::new(),
            identity: None,
            signed_in_under: None,
        })
    }

    /// The principal as a person, signing in as `identity` (see [`crate::federation::sign_in`]).
    pub fn as_user(self, identity: crate::federation::trust::UserIdentity) -> Self {
        Self { principal_type: PrincipalType::User, identity: Some(identity), ..self }
    }

    /// The principal as a `type` other than `ApiKey`. `User` principals are not made this way:
    /// a person is mapped to an identity ([`Principal::as_user`]).
    pub fn of_type(self, principal_type: PrincipalType) -> Result<Self, DomainError> {
        if principal_type == PrincipalType::User {
            return Err(DomainError::invalid("a User is mapped to an identity (identity.subject)"));
        }
        Ok(Self { principal_type, ..self })
    }

    /// The principal after `change`, or why it cannot happen. Returns `None` when nothing changes.
    pub fn apply(&self, change: &PrincipalChange, now: DateTime<Utc>) -> Result<Option<Self>, DomainError> {
        let mut next = self.clone();
        if let Some(name) = &change.display_name {
            next.display_name = validate_name("displayName", name, DISPLAY_NAME_MAX)?;
        }
        if let Some(status) = change.status {
            if !self.status.can_become(status) {
                return Err(DomainError::conflict(format!(
                    "a {:?} principal cannot become {:?}; Revoked is terminal",
                    self.status, status
                )));
            }
            next.status = status;
        }
        if let Some(expires_at) = change.expires_at {
            validate_future("expiresAt", expires_at, now)?;
            next.expires_at = expires_at;
        }
        if next == *self {
            return Ok(None);
        }
        if self.status == PrincipalStatus::Revoked {
            return Err(DomainError::conflict("the principal is revoked and can no longer be changed"));
        }
        next.updated_at = now;
        next.version = self.version + 1;
        Ok(Some(next))
    }

    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CredentialStatus {
    Active,
    Revoked,
    /// Never stored: an Active credential past its `expiresAt` reads Expired.
    Expired,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub key_id: KeyId,
    pub principal_id: PrincipalId,
    pub org_id: OrgId,
    pub name: String,
    pub expires_at: Option<DateTime<Utc>>,
    /// Active or Revoked; see [`Credential::status_at`] for what a reader sees.
    pub status: CredentialStatus,
    pub created_at: DateTime<Utc>,
    pub created_by: Actor,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_by: Option<Actor>,
    pub last_used_at: Option<DateTime<Utc>>,
    /// argon2id PHC string of the key secret. Never the secret.
    pub secret_hash: String,
    /// The first 32 bits of the secret's SHA-256, hex ([`crate::hashing::secret_check`]): lets
    /// an exchange refuse a wrong or forged secret without running argon2. The 224 bits it
    /// leaves unknown of a 256-bit secret are far beyond any search. `None` on credentials
    /// issued before it existed, until their next proved use.
    pub secret_check: Option<String>,
    /// Its exchanges in the latest one-second window, for the per-key limit: carried on the
    /// credential so that the exchange's one write keeps the count too.
    pub recent_uses: Option<UseWindow>,
    /// Its exchanges per UTC day over the last [`USAGE_DAYS`] days, counted by the same write.
    pub daily_uses: Option<DailyUses>,
    /// The network address of its last recorded exchange, when the request had one.
    pub last_used_from: Option<String>,
    /// The credential this one was rotated from, and the one it was rotated to: a rotation
    /// links both in the step that issues the successor. A credential rotates once.
    pub rotated_from: Option<KeyId>,
    pub rotated_to: Option<KeyId>,
    /// Its own limits beyond its principal's (see [`Restrictions`]); empty: none.
    pub restrictions: Restrictions,
    /// Opted in at issue: a token minted by this very credential may rotate it (and only
    /// that) without `iam:credentials:write`, so an integration can rotate its own key.
    pub self_rotation: bool,
}

/// What an issue asks for: the credential's name, expiry, restrictions, and whether it may
/// rotate itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewCredential {
    pub name: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub restrictions: Restrictions,
    pub self_rotation: bool,
}

/// A change to a credential after issue: its name, its expiry (`Some(None)`: never), its
/// restrictions (replaced whole). Absent fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CredentialChange {
    pub name: Option<String>,
    pub expires_at: Option<Option<DateTime<Utc>>>,
    pub restrictions: Option<Restrictions>,
}

/// How long a rotated credential keeps working when the rotation does not say: a day, time
/// for a deployment to pick up the new key everywhere, short enough that a key being rotated
/// because it may have leaked does not linger for long.
pub const DEFAULT_ROTATION_GRACE_SECONDS: u32 = 24 * 60 * 60;
/// At most a week, as Stripe's rotation allows.
pub const MAX_ROTATION_GRACE_SECONDS: u32 = 7 * 24 * 60 * 60;
/// A key rotating itself keeps the old key working at least this long: a stolen key that
/// rotates itself does not lock its owner's deployments out at once, and the owner has time
/// to notice the announcement and report the leak.
pub const MIN_SELF_ROTATION_GRACE_SECONDS: u32 = 60 * 60;

/// What a rotation asks for: how long the old credential keeps working, and the successor's
/// name (the old one's unless given).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rotation {
    pub grace_period_seconds: u32,
    pub name: Option<String>,
}

impl Rotation {
    pub fn new(grace_period_seconds: Option<u32>, name: Option<String>) -> Result<Self, DomainError> {
        let grace_period_seconds = grace_period_seconds.unwrap_or(DEFAULT_ROTATION_GRACE_SECONDS);
        if grace_period_seconds > MAX_ROTATION_GRACE_SECONDS {
            return Err(DomainError::invalid(format!("gracePeriodSeconds must be between 0 and {MAX_ROTATION_GRACE_SECONDS} (7 days)")));
        }
        Ok(Self { grace_period_seconds, name })
    }
}

/// How many times a credential was exchanged within one second (`second`, Unix time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UseWindow {
    pub second: i64,
    pub count: u32,
}

impl UseWindow {
    /// Whether a use at `at` would be one more than `per_second` allows. A window stamped
    /// later than `at` (another instance's clock ahead of this one) counts as the current one.
    pub fn is_full(window: Option<Self>, at: DateTime<Utc>, per_second: u32) -> bool {
        window.is_some_and(|w| w.second >= at.timestamp() && w.count >= per_second)
    }

    /// The window once a use at `at` is counted.
    pub fn after_use(window: Option<Self>, at: DateTime<Utc>) -> Self {
        match window {
            Some(w) if w.second >= at.timestamp() => Self { second: w.second, count: w.count.saturating_add(1) },
            _ => Self { second: at.timestamp(), count: 1 },
        }
    }
}

/// How many days of exchange counts a credential keeps: a month, enough to tell an idle key
/// from a weekly job, small enough (29 numbers beside today's) to ride on the exchange's write.
pub const USAGE_DAYS: usize = 30;

/// A credential's exchanges per UTC day: `counts[i]` is the count of day `day - i` (days since
/// the Unix epoch), at most [`USAGE_DAYS`] of them, trailing zeros trimmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DailyUses {
    pub day: i64,
    pub counts: Vec<u32>,
}

impl DailyUses {
    /// The day number (days since the Unix epoch, UTC) of `at`.
    pub fn day_of(at: DateTime<Utc>) -> i64 {
        at.timestamp().div_euclid(86_400)
    }

    /// The counts once a use at `at` is counted. Like [`UseWindow`], a record stamped later
    /// than `at` (another instance's clock past midnight before this one's) is the current day.
    pub fn after_use(uses: Option<&Self>, at: DateTime<Utc>) -> Self {
        let day = Self::day_of(at);
        match uses {
            Some(u) if u.day >= day => {
                let mut counts = u.counts.clone();
                match counts.first_mut() {
                    Some(today) => *today = today.saturating_add(1),
                    None => counts.push(1),
                }
                Self { day: u.day, counts }
            }
            Some(u) => {
                let gap = usize::try_from(day - u.day).unwrap_or(USAGE_DAYS).min(USAGE_DAYS);
                let mut counts = vec![1];
                counts.extend(std::iter::repeat_n(0, gap - 1));
                counts.extend(u.counts.iter().copied());
                counts.truncate(USAGE_DAYS);
                Self::trimmed(day, counts)
            }
            None => Self { day, counts: vec![1] },
        }
    }

    fn trimmed(day: i64, mut counts: Vec<u32>) -> Self {
        while counts.len() > 1 && counts.last() == Some(&0) {
            counts.pop();
        }
        Self { day, counts }
    }

    /// Today's count, as recorded (the first of `counts`).
    pub fn latest(&self) -> u32 {
        self.counts.first().copied().unwrap_or(0)
    }

    /// The counts of the days before the latest (`counts[1..]`).
    pub fn earlier(&self) -> &[u32] {
        self.counts.get(1..).unwrap_or_default()
    }

    /// Rebuilt from the latest day's count and the earlier ones, as a store keeps them.
    pub fn from_parts(day: i64, latest: u32, earlier: &[u32]) -> Self {
        let mut counts = Vec::with_capacity(earlier.len() + 1);
        counts.push(latest);
        counts.extend(earlier.iter().take(USAGE_DAYS - 1).copied());
        Self::trimmed(day, counts)
    }

    /// The days with exchanges among the [`USAGE_DAYS`] days ending at `now`'s, newest first.
    pub fn within_window(&self, now: DateTime<Utc>) -> Vec<(chrono::NaiveDate, u32)> {
        let today = Self::day_of(now);
        self.counts
            .iter()
            .enumerate()
            .filter(|&(_, &count)| count > 0)
            .map(|(i, &count)| (self.day - i as i64, count))
            .filter(|&(day, _)| day <= today && today - day < USAGE_DAYS as i64)
            .filter_map(|(day, count)| DateTime::from_timestamp(day * 86_400, 0).map(|t| (t.date_naive(), count)))
            .collect()
    }
}

/// What recording an exchange's use came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UseOutcome {
    Recorded,
    /// The credential or its principal is no longer Active: nothing was written.
    NoLongerActive,
    /// The credential was already used as often as allowed this second: nothing was written.
    OverLimit,
}

impl Credential {
    pub fn new(
        principal: &Principal,
        key_id: KeyId,
        name: &str,
        expires_at: Option<DateTime<Utc>>,
        secret_hash: String,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<Self, DomainError> {
        let name = validate_name("name", name, CREDENTIAL_NAME_MAX)?;
        validate_future("expiresAt", expires_at, now)?;
        if principal.status == PrincipalStatus::Revoked {
            return Err(DomainError::conflict("the principal is revoked; no credential can be issued"));
        }
        Ok(Self {
            key_id,
            principal_id: principal.id.clone(),
            org_id: principal.org_id.clone(),
            name,
            expires_at,
            status: CredentialStatus::Active,
            created_at: now,
            created_by: actor,
            revoked_at: None,
            revoked_by: None,
            last_used_at: None,
            secret_hash,
            secret_check: None,
            recent_uses: None,
            daily_uses: None,
            last_used_from: None,
            rotated_from: None,
            rotated_to: None,
            restrictions: Restrictions::default(),
            self_rotation: false,
        })
    }

    pub fn with_self_rotation(self, self_rotation: bool) -> Self {
        Self { self_rotation, ..self }
    }

    pub fn with_restrictions(self, restrictions: Restrictions) -> Result<Self, DomainError> {
        restrictions.validate()?;
        Ok(Self { restrictions, ..self })
    }

    /// This credential once `change` applies at `now`, or `None` when it changes nothing. Only
    /// an Active credential changes; an expiry must be in the future.
    pub fn changed(&self, change: &CredentialChange, now: DateTime<Utc>) -> Result<Option<Self>, DomainError> {
        if self.status_at(now) != CredentialStatus::Active {
            return Err(crate::error::Conflict::NotChangeable.into());
        }
        let mut next = self.clone();
        if let Some(name) = &change.name {
            next.name = validate_name("name", name, CREDENTIAL_NAME_MAX)?;
        }
        if let Some(expires_at) = change.expires_at {
            validate_future("expiresAt", expires_at, now)?;
            next.expires_at = expires_at;
        }
        if let Some(restrictions) = &change.restrictions {
            restrictions.validate()?;
            next.restrictions = restrictions.clone();
        }
        Ok((next != *self).then_some(next))
    }

    /// Whether `next` allows nothing this credential did not: restrictions at least as narrow,
    /// an expiry no later (what a credential's own token may do to it).
    pub fn is_narrowed_to(&self, next: &Credential) -> bool {
        let expiry_no_later = match (self.expires_at, next.expires_at) {
            (_, None) => self.expires_at.is_none(),
            (None, Some(_)) => true,
            (Some(before), Some(after)) => after <= before,
        };
        expiry_no_later && next.restrictions.narrows(&self.restrictions)
    }

    /// Whether `rotation` may replace this credential at `now`: only an Active credential, and
    /// only once (its successor is the one to rotate next).
    pub fn check_rotatable(&self, now: DateTime<Utc>) -> Result<(), crate::error::Conflict> {
        match (self.status_at(now), &self.rotated_to) {
            (CredentialStatus::Active, None) => Ok(()),
            _ => Err(crate::error::Conflict::NotRotatable),
        }
    }

    /// The successor a rotation issues: the name asked for or this one's, and the same
    /// lifetime from now as this credential had from its issue (none if it had none), so a key
    /// rotated before it expires gets a fresh term rather than this one's remainder.
    pub fn successor(
        &self,
        principal: &Principal,
        key_id: KeyId,
        rotation: &Rotation,
        secret_hash: String,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<Self, DomainError> {
        let name = rotation.name.as_deref().unwrap_or(&self.name);
        let expires_at = self.expires_at.map(|t| now + (t - self.created_at).max(chrono::Duration::seconds(1)));
        let mut next = Self::new(principal, key_id, name, expires_at, secret_hash, actor, now)?;
        next.rotated_from = Some(self.key_id.clone());
        next.restrictions = self.restrictions.clone();
        next.self_rotation = self.self_rotation;
        Ok(next)
    }

    /// This credential once `successor` replaces it: it expires at the end of the grace period
    /// (or sooner, if it already would), and names its successor.
    pub fn rotated_out(&self, successor: &KeyId, rotation: &Rotation, now: DateTime<Utc>) -> Self {
        let grace_end = now + chrono::Duration::seconds(rotation.grace_period_seconds.into());
        Self {
            expires_at: Some(self.expires_at.map_or(grace_end, |t| t.min(grace_end))),
            rotated_to: Some(successor.clone()),
            ..self.clone()
        }
    }

    pub fn with_secret_check(self, check: String) -> Self {
        Self { secret_check: Some(check), ..self }
    }

    pub fn status_at(&self, now: DateTime<Utc>) -> CredentialStatus {
        match self.status {
            CredentialStatus::Active if self.expires_at.is_some_and(|t| t <= now) => CredentialStatus::Expired,
            other => other,
        }
    }

    /// Counts against [`MAX_ACTIVE_CREDENTIALS`].
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.status_at(now) == CredentialStatus::Active
    }

    /// Revoked by `actor` at `now`, or at its last use if that is recorded later: an exchange
    /// that committed just before the revocation may have read the clock just after the
    /// revoke did, and the record must still read use-then-revoke, the order they committed in.
    pub fn revoked(&self, actor: Actor, now: DateTime<Utc>) -> Self {
        let mut next = self.clone();
        if next.status != CredentialStatus::Revoked {
            next.status = CredentialStatus::Revoked;
            next.revoked_at = Some(self.last_used_at.map_or(now, |used| used.max(now)));
            next.revoked_by = Some(actor);
        }
        next
    }
}

/// Why a credential whose secret was proved still may not authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the credential has been revoked")]
    CredentialRevoked,
    #[error("the credential has expired")]
    CredentialExpired,
    #[error("the principal is suspended")]
    PrincipalSuspended,
    #[error("the principal has been revoked")]
    PrincipalRevoked,
    #[error("the principal has expired")]
    PrincipalExpired,
    /// The organisation's credential policy: unused for more than this many days.
    #[error("the credential has not been used for more than {0} days, the organisation's limit: rotate it or issue another")]
    CredentialIdle(u32),
    /// The organisation's credential policy: created more than this many days ago.
    #[error("the credential is older than {0} days, the organisation's maximum credential lifetime: rotate it or issue another")]
    CredentialTooOld(u32),
}

impl Refusal {
    /// A stable name for metrics and dashboards.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::CredentialRevoked => "credential_revoked",
            Refusal::CredentialExpired => "credential_expired",
            Refusal::PrincipalSuspended => "principal_suspended",
            Refusal::PrincipalRevoked => "principal_revoked",
            Refusal::PrincipalExpired => "principal_expired",
            Refusal::CredentialIdle(_) => "credential_idle",
            Refusal::CredentialTooOld(_) => "credential_too_old",
        }
    }
}

/// A principal authenticates (with a key, a workload token or a sign-in) only while Active and
/// unexpired.
pub fn principal_may_authenticate(principal: &Principal, now: DateTime<Utc>) -> Result<(), Refusal> {
    match principal.status {
        PrincipalStatus::Suspended => Err(Refusal::PrincipalSuspended),
        PrincipalStatus::Revoked => Err(Refusal::PrincipalRevoked),
        PrincipalStatus::Active if principal.is_expired(now) => Err(Refusal::PrincipalExpired),
        PrincipalStatus::Active => Ok(()),
    }
}

/// A credential authenticates only when it is Active and unexpired and its principal is Active
/// and unexpired. The secret check is the caller's, and must come first.
pub fn may_authenticate(credential: &Credential, principal: &Principal, now: DateTime<Utc>) -> Result<(), Refusal> {
    match credential.status_at(now) {
        CredentialStatus::Revoked => return Err(Refusal::CredentialRevoked),
        CredentialStatus::Expired => return Err(Refusal::CredentialExpired),
        CredentialStatus::Active => {}
    }
    principal_may_authenticate(principal, now)?;
    if credential.principal_id != principal.id || credential.org_id != principal.org_id {
        // A store inconsistency; refuse rather than mint a token for the wrong identity.
        return Err(Refusal::PrincipalRevoked);
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Role {
    pub id: RoleId,
    pub name: String,
    pub description: String,
    pub permissions: Vec<Permission>,
    pub principal_types: Vec<PrincipalType>,
    /// `None` for a built-in role available to every organisation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_id: Option<OrgId>,
    pub built_in: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<Actor>,
}

impl Role {
    pub fn new_org_role(
        org_id: OrgId,
        name: &str,
        description: Option<&str>,
        permissions: Vec<Permission>,
        principal_types: Vec<PrincipalType>,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<Self, DomainError> {
        let name = validate_name("name", name, ROLE_NAME_MAX)?;
        if crate::roles::builtin(&name).is_some() {
            return Err(DomainError::conflict(format!("'{name}' is the name of a built-in role")));
        }
        if let Some(builtin) = crate::names::imitates_builtin_role(&name) {
            return Err(DomainError::conflict(format!(
                "name imitates the built-in role '{builtin}' (the same after case folding, NFKC and the Unicode confusable skeleton)"
            )));
        }
        let description = match description {
            None => String::new(),
            Some(d) => crate::names::validate_description("description", d, ROLE_DESCRIPTION_MAX)?,
        };
        if permissions.is_empty() || permissions.len() > ROLE_PERMISSIONS_MAX {
            return Err(DomainError::invalid(format!("permissions must list 1-{ROLE_PERMISSIONS_MAX} permissions")));
        }
        if principal_types.is_empty() {
            return Err(DomainError::invalid("principalTypes must list at least one principal type"));
        }
        let mut permissions = permissions;
        permissions.sort();
        permissions.dedup();
        let mut principal_types = principal_types;
        principal_types.sort_by_key(|t| *t as u8);
        principal_types.dedup();
        Ok(Self {
            id: RoleId::generate(),
            name,
            description,
            permissions,
            principal_types,
            org_id: Some(org_id),
            built_in: false,
            created_at: Some(now),
            created_by: Some(actor),
        })
    }

    pub fn is_available_to(&self, org: &OrgId) -> bool {
        self.org_id.as_ref().is_none_or(|o| o == org)
    }

    pub fn supports(&self, t: PrincipalType) -> bool {
        self.principal_types.contains(&t)
    }

    /// The rule for assigning this role to an API-key principal of `org`.
    pub fn check_assignable(&self, org: &OrgId) -> Result<(), DomainError> {
        if !self.is_available_to(org) {
            return Err(DomainError::unprocessable(format!("role '{}' does not exist or is not available to this organisation", self.id)));
        }
        if !self.supports(PrincipalType::ApiKey) {
            return Err(DomainError::unprocessable(format!("role '{}' does not support ApiKey principals", self.id)));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleAssignment {
    pub org_id: OrgId,
    pub principal_id: PrincipalId,
    pub role_id: RoleId,
    pub assigned_at: DateTime<Utc>,
    pub assigned_by: Actor,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn org() -> OrgId {
        OrgId::parse("acme").unwrap()
    }

    fn principal(status: PrincipalStatus) -> Principal {
        Principal::new(org(), "billing", Some(status), None, Actor::system("test"), now()).unwrap()
    }

    fn credential(p: &Principal, expires_at: Option<DateTime<Utc>>) -> Credential {
        let mut c = Credential::new(p, KeyId::generate(), "ci", None, "hash".into(), Actor::system("t"), now()).unwrap();
        c.expires_at = expires_at;
        c
    }

    #[test]
    fn daily_uses_count_per_day_shift_at_midnight_and_keep_thirty_days() {
        let day = |d: i64| DateTime::from_timestamp(d * 86_400 + 3_600, 0).unwrap();
        let first = DailyUses::after_use(None, day(20_000));
        assert_eq!(first, DailyUses { day: 20_000, counts: vec![1] });
        let second = DailyUses::after_use(Some(&first), day(20_000));
        assert_eq!(second.counts, vec![2]);
        let later = DailyUses::after_use(Some(&second), day(20_003));
        assert_eq!(later, DailyUses { day: 20_003, counts: vec![1, 0, 0, 2] });
        assert_eq!(DailyUses::after_use(Some(&later), day(20_002)).counts, vec![2, 0, 0, 2], "a clock behind counts today");
        let month_on = DailyUses::after_use(Some(&later), day(20_003 + 29));
        assert_eq!(month_on.counts.len(), 30);
        assert_eq!(month_on.counts[29], 1, "the 30th day back is kept");
        let gone = DailyUses::after_use(Some(&later), day(20_003 + 30));
        assert_eq!(gone.counts, vec![1], "older days drop out");
        assert_eq!(DailyUses::from_parts(later.day, later.latest(), later.earlier()), later);
        let window = later.within_window(day(20_004));
        assert_eq!(window.iter().map(|(_, c)| *c).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(window[0].0.to_string(), "2024-10-07");
        assert_eq!(later.within_window(day(20_003 + 29)).len(), 1, "a day 30 or more days back is outside");
    }

    #[test]
    fn use_windows_count_within_one_second_and_restart_after_it() {
        let at = DateTime::from_timestamp(1_000, 250_000_000).unwrap();
        assert!(!UseWindow::is_full(None, at, 1));
        let first = UseWindow::after_use(None, at);
        assert_eq!(first, UseWindow { second: 1_000, count: 1 });
        assert!(UseWindow::is_full(Some(first), at, 1));
        assert!(!UseWindow::is_full(Some(first), at, 2));
        let second = UseWindow::after_use(Some(first), at + Duration::milliseconds(700));
        assert_eq!(second, UseWindow { second: 1_000, count: 2 });
        // The next second starts a fresh window, however full the last one was.
        let next = at + Duration::seconds(1);
        assert!(!UseWindow::is_full(Some(second), next, 2));
        assert_eq!(UseWindow::after_use(Some(second), next), UseWindow { second: 1_001, count: 1 });
        // A window stamped ahead of this clock is still the current one.
        let behind = at - Duration::seconds(1);
        assert!(UseWindow::is_full(Some(second), behind, 2));
        assert_eq!(UseWindow::after_use(Some(first), behind), UseWindow { second: 1_000, count: 2 });
    }

    #[test]
    fn transitions() {
        use PrincipalStatus::*;
        assert!(Active.can_become(Suspended));
        assert!(Suspended.can_become(Active));
        assert!(Active.can_become(Revoked));
        assert!(Suspended.can_become(Revoked));
        assert!(!Revoked.can_become(Active));
        assert!(!Revoked.can_become(Suspended));
    }

    #[test]
    fn new_principal_cannot_start_revoked_or_expired() {
        assert!(Principal::new(org(), "x", Some(PrincipalStatus::Revoked), None, Actor::system("t"), now()).is_err());
        let past = now() - Duration::seconds(1);
        assert!(Principal::new(org(), "x", None, Some(past), Actor::system("t"), now()).is_err());
        assert!(Principal::new(org(), "  ", None, None, Actor::system("t"), now()).is_err());
        assert!(Principal::new(org(), &"n".repeat(129), None, None, Actor::system("t"), now()).is_err());
        assert!(Principal::new(org(), "bad\nname", None, None, Actor::system("t"), now()).is_err());
    }

    #[test]
    fn apply_bumps_version_and_refuses_leaving_revoked() {
        let p = principal(PrincipalStatus::Active);
        let change = PrincipalChange { status: Some(PrincipalStatus::Suspended), ..Default::default() };
        let next = p.apply(&change, now()).unwrap().unwrap();
        assert_eq!(next.version, 2);
        assert_eq!(p.apply(&PrincipalChange::default(), now()).unwrap(), None);
        let revoked = principal(PrincipalStatus::Active)
            .apply(&PrincipalChange { status: Some(PrincipalStatus::Revoked), ..Default::default() }, now())
            .unwrap()
            .unwrap();
        assert!(revoked.apply(&change, now()).is_err());
        let rename = PrincipalChange { display_name: Some("new".into()), ..Default::default() };
        assert!(revoked.apply(&rename, now()).is_err());
    }

    #[test]
    fn authentication_rule() {
        let t = now();
        let active = principal(PrincipalStatus::Active);
        assert_eq!(may_authenticate(&credential(&active, None), &active, t), Ok(()));
        let expired = credential(&active, Some(t - Duration::seconds(1)));
        assert_eq!(may_authenticate(&expired, &active, t), Err(Refusal::CredentialExpired));
        let revoked = credential(&active, None).revoked(Actor::system("t"), t);
        assert_eq!(may_authenticate(&revoked, &active, t), Err(Refusal::CredentialRevoked));
        let mut suspended = active.clone();
        suspended.status = PrincipalStatus::Suspended;
        assert_eq!(may_authenticate(&credential(&active, None), &suspended, t), Err(Refusal::PrincipalSuspended));
        let mut gone = active.clone();
        gone.status = PrincipalStatus::Revoked;
        assert_eq!(may_authenticate(&credential(&active, None), &gone, t), Err(Refusal::PrincipalRevoked));
        let mut old = active.clone();
        old.expires_at = Some(t - Duration::seconds(5));
        assert_eq!(may_authenticate(&credential(&active, None), &old, t), Err(Refusal::PrincipalExpired));
        let other = principal(PrincipalStatus::Active);
        assert!(may_authenticate(&credential(&other, None), &active, t).is_err());
    }

    #[test]
    fn revoke_is_idempotent_and_keeps_first_revocation() {
        let p = principal(PrincipalStatus::Active);
        let c = credential(&p, None);
        let first = c.revoked(Actor::system("a"), now());
        let second = first.revoked(Actor::system("b"), now() + Duration::seconds(10));
        assert_eq!(first, second);
    }

    #[test]
    fn assignability() {
        let acme = org();
        let other = OrgId::parse("other").unwrap();
        let owner = crate::roles::builtin("org-owner").unwrap();
        assert!(owner.check_assignable(&acme).is_err());
        let admin = crate::roles::builtin("iam-admin").unwrap();
        assert!(admin.check_assignable(&acme).is_ok());
        let custom = Role::new_org_role(
            other.clone(),
            "deployer",
            None,
            vec![Permission::parse("ci:deploy").unwrap()],
            vec![PrincipalType::ApiKey],
            Actor::system("t"),
            now(),
        )
        .unwrap();
        assert!(custom.check_assignable(&other).is_ok());
        assert!(custom.check_assignable(&acme).is_err());
    }

    #[test]
    fn org_role_cannot_shadow_a_builtin() {
        let r = Role::new_org_role(
            org(),
            "iam-admin",
            None,
            vec![Permission::parse("a:b").unwrap()],
            vec![PrincipalType::ApiKey],
            Actor::system("t"),
            now(),
        );
        assert!(r.is_err());
    }
}
