//! An organisation's credential policy: the rules its administrators set for every credential
//! of the organisation, enforced at issue, rotation, change and exchange. The default policy
//! (no policy stored) changes nothing, so existing organisations keep working as before.
//! The rules are here; reading, caching and setting the policy are in [`setting`].

pub mod setting;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::error::DomainError;
use crate::model::{Actor, Credential, Refusal};

/// The longest lifetime or idle period a policy may name: ten years, far beyond any sensible
/// rule, and small enough that the arithmetic on it never overflows.
pub const MAX_POLICY_DAYS: u32 = 3_650;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CredentialPolicy {
    /// A credential may live at most this many days from its creation: issues and rotations
    /// get an expiry within it (the maximum when none is asked for), a change may not move the
    /// expiry beyond it, and an older credential (issued before the policy) refuses exchange.
    pub max_lifetime_days: Option<u32>,
    /// Every new credential must have an expiry; a change may not lift one.
    pub expiry_required: bool,
    /// A credential unused for more than this many days (counted from its creation when never
    /// used) refuses exchange with `invalid_grant`; rotating it or issuing another is the cure.
    pub max_idle_days: Option<u32>,
    /// Whether credentials may be issued or rotated at all. Revocation is never blocked.
    pub allow_credential_creation: bool,
    /// Who last set the policy, and when; absent for the default.
    pub updated_at: Option<DateTime<Utc>>,
    pub updated_by: Option<Actor>,
}

impl Default for CredentialPolicy {
    fn default() -> Self {
        Self {
            max_lifetime_days: None,
            expiry_required: false,
            max_idle_days: None,
            allow_credential_creation: true,
            updated_at: None,
            updated_by: None,
        }
    }
}

fn days(n: u32) -> Duration {
    Duration::days(i64::from(n))
}

impl CredentialPolicy {
    /// The rules as asked for, checked: each number of days between 1 and [`MAX_POLICY_DAYS`].
    pub fn new(
        max_lifetime_days: Option<u32>,
        expiry_required: bool,
        max_idle_days: Option<u32>,
        allow_credential_creation: bool,
    ) -> Result<Self, DomainError> {
        for (field, value) in [("maxLifetimeDays", max_lifetime_days), ("maxIdleDays", max_idle_days)] {
            if value.is_some_and(|d| !(1..=MAX_POLICY_DAYS).contains(&d)) {
                return Err(DomainError::invalid(format!("{field} must be between 1 and {MAX_POLICY_DAYS}, or null for no limit")));
            }
        }
        Ok(Self { max_lifetime_days, expiry_required, max_idle_days, allow_credential_creation, updated_at: None, updated_by: None })
    }

    pub fn set_by(self, actor: Actor, at: DateTime<Utc>) -> Self {
        Self { updated_at: Some(at), updated_by: Some(actor), ..self }
    }

    /// Whether the rules are the default's (who set them aside).
    pub fn is_default(&self) -> bool {
        let default = Self::default();
        (self.max_lifetime_days, self.expiry_required, self.max_idle_days, self.allow_credential_creation)
            == (default.max_lifetime_days, default.expiry_required, default.max_idle_days, default.allow_credential_creation)
    }

    /// Issue and rotation create a credential: refused while creation is off.
    pub fn check_creation(&self) -> Result<(), DomainError> {
        match self.allow_credential_creation {
            true => Ok(()),
            false => Err(DomainError::conflict(
                "the organisation's credential policy does not allow creating credentials (allowCredentialCreation is false)",
            )),
        }
    }

    /// The expiry of a credential issued at `now` that asked for `asked`: within the maximum
    /// lifetime (the maximum itself when none was asked for), and present when required.
    pub fn expiry_at_issue(&self, asked: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, DomainError> {
        self.check_creation()?;
        match (asked, self.max_lifetime_days) {
            (Some(at), Some(max)) if at > now + days(max) => {
                Err(DomainError::invalid(format!("expiresAt is beyond the organisation's maximum credential lifetime of {max} days")))
            }
            (None, Some(max)) => Ok(Some(now + days(max))),
            (None, None) if self.expiry_required => Err(DomainError::invalid("the organisation's credential policy requires expiresAt")),
            (asked, _) => Ok(asked),
        }
    }

    /// The expiry of a rotation's successor created at `now`, which the rotation computed as
    /// `expires_at`: brought within the maximum lifetime (a rotation asks for no expiry of its
    /// own, so it is capped rather than refused). A credential with no expiry cannot rotate
    /// while one is required and no maximum gives one: give it an expiry first.
    pub fn successor_expiry(&self, expires_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, DomainError> {
        self.check_creation()?;
        match (expires_at, self.max_lifetime_days) {
            (Some(at), Some(max)) => Ok(Some(at.min(now + days(max)))),
            (None, Some(max)) => Ok(Some(now + days(max))),
            (None, None) if self.expiry_required => Err(DomainError::conflict(
                "the organisation's credential policy requires an expiry, and this credential has none: give it one (PATCH expiresAt), then rotate",
            )),
            (at, None) => Ok(at),
        }
    }

    /// A change after issue leaves the credential within the policy: an expiry, if required,
    /// and no later than its creation plus the maximum lifetime.
    pub fn check_change(&self, changed: &Credential) -> Result<(), DomainError> {
        match (changed.expires_at, self.max_lifetime_days) {
            (Some(at), Some(max)) if at > changed.created_at + days(max) => Err(DomainError::invalid(format!(
                "expiresAt is beyond the organisation's maximum credential lifetime of {max} days from the credential's creation"
            ))),
            (None, Some(_)) => {
                Err(DomainError::invalid("the organisation's credential policy limits credential lifetime: expiresAt cannot be lifted"))
            }
            (None, None) if self.expiry_required => {
                Err(DomainError::invalid("the organisation's credential policy requires an expiry: expiresAt cannot be lifted"))
            }
            _ => Ok(()),
        }
    }

    /// Whether `credential` may still exchange at `now` under the policy: not idle longer than
    /// allowed, and not older than the maximum lifetime.
    pub fn admits_use(&self, credential: &Credential, now: DateTime<Utc>) -> Result<(), Refusal> {
        if let Some(max) = self.max_idle_days {
            let last = credential.last_used_at.unwrap_or(credential.created_at);
            if now - last > days(max) {
                return Err(Refusal::CredentialIdle(max));
            }
        }
        if let Some(max) = self.max_lifetime_days
            && now - credential.created_at > days(max)
        {
            return Err(Refusal::CredentialTooOld(max));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{KeyId, OrgId};
    use crate::model::{Principal, now};

    fn credential(created_days_ago: i64, used_days_ago: Option<i64>) -> Credential {
        let p = Principal::new(OrgId::parse("acme").unwrap(), "svc", None, None, Actor::system("t"), now()).unwrap();
        let mut c = Credential::new(&p, KeyId::generate(), "ci", None, String::new(), Actor::system("t"), now()).unwrap();
        c.created_at = now() - Duration::days(created_days_ago);
        c.last_used_at = used_days_ago.map(|d| now() - Duration::days(d));
        c
    }

    #[test]
    fn the_default_changes_nothing() {
        let policy = CredentialPolicy::default();
        assert!(policy.is_default());
        let now = now();
        assert_eq!(policy.expiry_at_issue(None, now).unwrap(), None);
        assert_eq!(policy.successor_expiry(None, now).unwrap(), None);
        assert!(policy.check_change(&credential(4_000, None)).is_ok());
        assert!(policy.admits_use(&credential(4_000, Some(3_000)), now).is_ok());
    }

    #[test]
    fn bounds_are_checked() {
        for bad in [Some(0), Some(MAX_POLICY_DAYS + 1)] {
            assert!(CredentialPolicy::new(bad, false, None, true).is_err());
            assert!(CredentialPolicy::new(None, false, bad, true).is_err());
        }
        assert!(CredentialPolicy::new(Some(1), true, Some(MAX_POLICY_DAYS), false).is_ok());
    }

    #[test]
    fn each_rule_holds_where_it_applies() {
        let now = now();
        let max = CredentialPolicy::new(Some(90), false, None, true).unwrap();
        assert_eq!(max.expiry_at_issue(None, now).unwrap(), Some(now + Duration::days(90)), "the maximum when none is asked");
        assert!(max.expiry_at_issue(Some(now + Duration::days(91)), now).is_err());
        assert_eq!(max.successor_expiry(Some(now + Duration::days(400)), now).unwrap(), Some(now + Duration::days(90)));
        assert!(max.admits_use(&credential(91, Some(0)), now) == Err(Refusal::CredentialTooOld(90)));
        assert!(max.admits_use(&credential(89, None), now).is_ok());
        let mut changed = credential(10, None);
        assert!(max.check_change(&changed).is_err(), "no expiry is beyond any maximum");
        changed.expires_at = Some(changed.created_at + Duration::days(91));
        assert!(max.check_change(&changed).is_err());
        changed.expires_at = Some(changed.created_at + Duration::days(90));
        assert!(max.check_change(&changed).is_ok());

        let required = CredentialPolicy::new(None, true, None, true).unwrap();
        assert!(required.expiry_at_issue(None, now).is_err());
        assert!(required.successor_expiry(None, now).is_err());
        assert!(required.check_change(&credential(1, None)).is_err());

        let idle = CredentialPolicy::new(None, false, Some(30), true).unwrap();
        assert_eq!(idle.admits_use(&credential(31, None), now), Err(Refusal::CredentialIdle(30)), "never used counts from creation");
        assert_eq!(idle.admits_use(&credential(100, Some(31)), now), Err(Refusal::CredentialIdle(30)));
        assert!(idle.admits_use(&credential(100, Some(29)), now).is_ok());

        let closed = CredentialPolicy::new(None, false, None, false).unwrap();
        assert!(closed.expiry_at_issue(None, now).is_err());
        assert!(closed.successor_expiry(None, now).is_err());
        assert!(closed.admits_use(&credential(1, None), now).is_ok(), "existing keys keep working");
    }
}
