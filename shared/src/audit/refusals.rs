//! Refusals in the trail. A refusal changes nothing, so its record is written on its own, and
//! only for callers who proved who they are (an authenticated management caller, or an exchange
//! whose secret was proved): an unknown key or a wrong secret costs the server nothing, trail
//! included. One record per actor, action, reason and minute, whose `repeats` counts the rest,
//! so a flood grows a tally, not the trail.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{AuditEntry, time_key};
use crate::authority::AuthorityRule;
use crate::error::DomainError;
use crate::exchange::ExchangeError;

/// The stable rule name of a management refusal worth a record: the authority rules (a missing
/// permission, acting beyond one's authority, removing the last administrator). Malformed
/// requests and missing objects are client mistakes, logged and not recorded.
pub fn management_reason(e: &DomainError) -> Option<&'static str> {
    Some(match e {
        DomainError::Forbidden(_) => "missing_permission",
        DomainError::BeyondAuthority(rule) => match rule {
            AuthorityRule::TargetBeyondAuthority(_) => "target_beyond_authority",
            AuthorityRule::GrantBeyondAuthority(_) => "grant_beyond_authority",
            AuthorityRule::OwnStatusOrExpiry => "own_status_or_expiry",
            AuthorityRule::SelfGrant => "self_grant",
            AuthorityRule::WidenOwnCredential => "widen_own_credential",
            AuthorityRule::NotSelfRotatable => "not_self_rotatable",
        },
        DomainError::LastAdministrator(_) => "last_administrator",
        _ => return None,
    })
}

/// The stable name of an exchange refused after its secret was proved.
pub fn exchange_reason(e: &ExchangeError) -> Option<String> {
    Some(match e {
        ExchangeError::Refused(refusal) => refusal.code().to_owned(),
        ExchangeError::Restricted(r) => format!("restricted_{}", r.code()),
        ExchangeError::InvalidScope(_) => "invalid_scope".to_owned(),
        ExchangeError::InvalidTarget(_) => "invalid_target".to_owned(),
        ExchangeError::OverKeyLimit(_) => OVER_KEY_LIMIT.to_owned(),
        ExchangeError::Federation(refusal) => refusal.code().to_owned(),
        _ => return None,
    })
}

/// The sort key of a refusal's record: its minute, then what it aggregates. Every refusal of
/// one bucket lands on the one record.
pub fn bucket_key(entry: &AuditEntry) -> String {
    let reason = entry.reason.as_deref().unwrap_or("");
    format!("{}#R#{}#{}#{}", time_key(entry.minute()), entry.actor, entry.action, reason)
}

/// How often one instance writes the tally of a key over its exchange limit: the first refusal
/// at once, the rest added at most this often, so a fleet hammering one key costs one write per
/// interval and instance (the limit exists to spare the store).
const TALLY_INTERVAL: Duration = Duration::from_secs(5);
const TALLY_BUCKETS: usize = 10_000;
/// The one refusal whose tally is held back: every other one is written as it happens.
pub const OVER_KEY_LIMIT: &str = "over_key_limit";

/// Refusals of a key over its limit that this instance has seen and not yet written, per bucket.
#[derive(Default)]
pub struct RefusalTally(Mutex<HashMap<String, (Instant, u64)>>);

impl RefusalTally {
    /// How many refusals of `entry`'s bucket to write now (this one and those held back since
    /// the last write), or `None` to hold this one back. Only a key over its exchange limit is
    /// held back; a tally lost with its instance loses at most one interval of that count,
    /// never its record.
    pub fn due(&self, entry: &AuditEntry) -> Option<u64> {
        if entry.reason.as_deref() != Some(OVER_KEY_LIMIT) {
            return Some(1);
        }
        let mut buckets = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= TALLY_BUCKETS {
            buckets.clear();
        }
        let now = Instant::now();
        match buckets.get_mut(&bucket_key(entry)) {
            Some((written, held)) if now.duration_since(*written) < TALLY_INTERVAL => {
                *held += 1;
                None
            }
            Some((written, held)) => {
                let due = *held + 1;
                *written = now;
                *held = 0;
                Some(due)
            }
            None => {
                buckets.insert(bucket_key(entry), (now, 0));
                Some(1)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::OrgId;
    use crate::model::Actor;

    #[test]
    fn a_key_hammered_past_its_limit_is_written_once_per_interval_and_nothing_else_is_held() {
        let tally = RefusalTally::default();
        let org = OrgId::parse("acme").unwrap();
        let entry = AuditEntry::new(&org, &Actor::system("t"), "token.exchange", crate::model::now()).refused(OVER_KEY_LIMIT);
        assert_eq!(tally.due(&entry), Some(1));
        for _ in 0..1000 {
            assert_eq!(tally.due(&entry), None);
        }
        let other = entry.clone().refused("principal_suspended");
        for _ in 0..3 {
            assert_eq!(tally.due(&other), Some(1), "every other refusal is counted as it happens");
        }
    }
}
