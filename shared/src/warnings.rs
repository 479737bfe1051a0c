//! Warnings before keys stop working: what a scheduled sweep tells an organisation about its
//! credentials and principals (`Credential Expiring`, `Credential Expired`, `Credential Unused`,
//! `Principal Expiring`). Each warning is an audit record written through the outbox like any
//! change, so it reaches EventBridge and the organisation's webhooks the same way, with the
//! record's id as its stable event id.
//!
//! A warning is sent once however often the sweep runs: each has a *once key* naming what it
//! warns of (the credential, the threshold, and the expiry or last use it was computed from),
//! and the store writes the record only with the first claim of its key. A changed expiry or a
//! new use is a new fact, and warns again. When the sweep has not run for a while, only the
//! nearest threshold crossed is sent (a key that expires tomorrow is not also "14 days away").

use chrono::{DateTime, Duration, SecondsFormat, Utc};

use crate::audit::AuditEntry;
use crate::model::{Actor, Credential, CredentialStatus, Principal, PrincipalStatus};
use crate::store::{Store, StoreError};

/// The actor of every warning.
pub const SWEEP_ACTOR: &str = "warnings";

/// Default days before expiry at which `Credential Expiring` and `Principal Expiring` are sent.
pub const DEFAULT_EXPIRING_DAYS: &[u32] = &[14, 7, 1];
/// Default days without an exchange after which `Credential Unused` is sent.
pub const DEFAULT_UNUSED_DAYS: u32 = 30;
/// A credential that expired longer ago than this when the sweep first sees it is not announced:
/// it stopped working before anyone could have acted on the warning.
pub const EXPIRED_NOTICE_DAYS: i64 = 7;
/// How many items one page of a sweep reads.
pub const SWEEP_PAGE: usize = 200;

/// What the operator configured (`IAM_WARN_EXPIRING_DAYS`, `IAM_WARN_UNUSED_DAYS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarningSettings {
    /// Distinct, ascending, each at least 1.
    expiring_days: Vec<u32>,
    /// `None` turns `Credential Unused` off.
    unused_days: Option<u32>,
}

impl Default for WarningSettings {
    fn default() -> Self {
        Self::new(DEFAULT_EXPIRING_DAYS, Some(DEFAULT_UNUSED_DAYS)).unwrap_or_else(|_| unreachable!("the defaults are valid"))
    }
}

impl WarningSettings {
    pub fn new(expiring_days: &[u32], unused_days: Option<u32>) -> Result<Self, String> {
        if expiring_days.iter().any(|d| !(1..=365).contains(d)) {
            return Err("expiry warning thresholds are whole days from 1 to 365".into());
        }
        if unused_days.is_some_and(|d| !(1..=3650).contains(&d)) {
            return Err("the unused-credential warning is a whole number of days from 1 to 3650 (0 turns it off)".into());
        }
        let mut expiring_days = expiring_days.to_vec();
        expiring_days.sort_unstable();
        expiring_days.dedup();
        Ok(Self { expiring_days, unused_days })
    }

    /// `thresholds` as `14,7,1` (empty: no expiry warnings); `unused` as days, `0` for off.
    pub fn parse(thresholds: Option<&str>, unused: Option<&str>) -> Result<Self, String> {
        let expiring: Vec<u32> = match thresholds.map(str::trim) {
            None => DEFAULT_EXPIRING_DAYS.to_vec(),
            Some("") => Vec::new(),
            Some(list) => list
                .split(',')
                .map(|d| d.trim().parse::<u32>().map_err(|_| format!("{d:?} is not a whole number of days")))
                .collect::<Result<_, _>>()?,
        };
        let unused = match unused.map(str::trim) {
            None | Some("") => Some(DEFAULT_UNUSED_DAYS),
            Some(days) => match days.parse::<u32>().map_err(|_| format!("{days:?} is not a whole number of days"))? {
                0 => None,
                days => Some(days),
            },
        };
        Self::new(&expiring, unused)
    }

    pub fn expiring_days(&self) -> &[u32] {
        &self.expiring_days
    }

    pub fn unused_days(&self) -> Option<u32> {
        self.unused_days
    }

    /// The nearest threshold `expires_at` is within at `now`, if it is in the future and
    /// within one.
    fn threshold(&self, expires_at: DateTime<Utc>, now: DateTime<Utc>) -> Option<u32> {
        if expires_at <= now {
            return None;
        }
        self.expiring_days.iter().copied().find(|days| expires_at - now <= Duration::days(i64::from(*days)))
    }
}

/// One warning: its audit record, and the key that makes it once-only.
#[derive(Debug, Clone, PartialEq)]
pub struct Warning {
    pub once: String,
    pub entry: AuditEntry,
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// What `credential` warrants at `now`: nothing for a revoked credential, or one a rotation
/// retired (its expiry is the grace period its owners chose).
pub fn credential_warnings(c: &Credential, now: DateTime<Utc>, settings: &WarningSettings) -> Vec<Warning> {
    if c.status != CredentialStatus::Active || c.rotated_to.is_some() {
        return Vec::new();
    }
    let entry = |action: &str, detail: serde_json::Value| {
        AuditEntry::new(&c.org_id, &Actor::system(SWEEP_ACTOR), action, now).principal(&c.principal_id).key(&c.key_id).detail(detail)
    };
    let mut warnings = Vec::new();
    if let Some(expires_at) = c.expires_at {
        if let Some(days) = settings.threshold(expires_at, now) {
            warnings.push(Warning {
                once: format!("credential.expiring#{}#{days}#{}", c.key_id, stamp(expires_at)),
                entry: entry("credential.expiring", serde_json::json!({"name": c.name, "expiresAt": expires_at, "daysBefore": days})),
            });
        }
        if expires_at <= now && now - expires_at <= Duration::days(EXPIRED_NOTICE_DAYS) {
            warnings.push(Warning {
                once: format!("credential.expired#{}#{}", c.key_id, stamp(expires_at)),
                entry: entry("credential.expired", serde_json::json!({"name": c.name, "expiresAt": expires_at})),
            });
            return warnings;
        }
        if expires_at <= now {
            return warnings;
        }
    }
    if let Some(days) = settings.unused_days {
        let since = c.last_used_at.unwrap_or(c.created_at);
        if now - since >= Duration::days(i64::from(days)) {
            warnings.push(Warning {
                once: format!("credential.unused#{}#{}", c.key_id, stamp(since)),
                entry: entry(
                    "credential.unused",
                    serde_json::json!({"name": c.name, "lastUsedAt": c.last_used_at, "idleDays": days, "expiresAt": c.expires_at}),
                ),
            });
        }
    }
    warnings
}

/// What `principal` warrants at `now`: `Principal Expiring` while it is Active and its expiry
/// is within a threshold.
pub fn principal_warnings(p: &Principal, now: DateTime<Utc>, settings: &WarningSettings) -> Vec<Warning> {
    let Some(expires_at) = p.expires_at.filter(|_| p.status == PrincipalStatus::Active) else { return Vec::new() };
    let Some(days) = settings.threshold(expires_at, now) else { return Vec::new() };
    vec![Warning {
        once: format!("principal.expiring#{}#{days}#{}", p.id, stamp(expires_at)),
        entry: AuditEntry::new(&p.org_id, &Actor::system(SWEEP_ACTOR), "principal.expiring", now)
            .principal(&p.id)
            .detail(serde_json::json!({"displayName": p.display_name, "expiresAt": expires_at, "daysBefore": days})),
    }]
}

/// What one sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SweepReport {
    pub credentials_read: usize,
    pub principals_read: usize,
    /// Warnings recorded by this sweep.
    pub sent: usize,
    /// Warnings due that an earlier sweep had already recorded.
    pub already_sent: usize,
}

/// Reads every credential and principal, and records each warning due at `now` that was not
/// recorded before. Safe to run as often as wanted, and concurrently: a warning's once key is
/// claimed in the same atomic step as its record. A store failure stops the sweep; what it
/// recorded stays recorded, and the next run sends the rest.
pub async fn sweep<S: Store + ?Sized>(store: &S, settings: &WarningSettings, now: DateTime<Utc>) -> Result<SweepReport, StoreError> {
    let mut report = SweepReport::default();
    let mut after: Option<String> = None;
    loop {
        let page = store.sweep_credentials(after.as_deref(), SWEEP_PAGE).await?;
        report.credentials_read += page.items.len();
        for c in &page.items {
            send(store, credential_warnings(c, now, settings), &mut report).await?;
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let mut after: Option<String> = None;
    loop {
        let page = store.sweep_principals(after.as_deref(), SWEEP_PAGE).await?;
        report.principals_read += page.items.len();
        for p in &page.items {
            send(store, principal_warnings(p, now, settings), &mut report).await?;
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    Ok(report)
}

async fn send<S: Store + ?Sized>(store: &S, warnings: Vec<Warning>, report: &mut SweepReport) -> Result<(), StoreError> {
    for warning in warnings {
        if store.record_once(&warning.once, &warning.entry).await? {
            tracing::info!(action = %warning.entry.action, org = %warning.entry.org_id, key_id = ?warning.entry.key_id,
                principal_id = ?warning.entry.principal_id, "warning recorded");
            report.sent += 1;
        } else {
            report.already_sent += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{KeyId, OrgId, PrincipalId};

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn credential(expires_at: Option<&str>, last_used_at: Option<&str>) -> Credential {
        let principal = PrincipalId::generate();
        Credential {
            key_id: KeyId::generate(),
            principal_id: principal.clone(),
            org_id: OrgId::parse("acme").unwrap(),
            name: "ci".into(),
            expires_at: expires_at.map(at),
            status: CredentialStatus::Active,
            created_at: at("2026-01-01T00:00:00Z"),
            created_by: Actor::principal(&principal),
            revoked_at: None,
            revoked_by: None,
            last_used_at: last_used_at.map(at),
            secret_hash: "$argon2id$placeholder".into(),
            secret_check: None,
            recent_uses: None,
            daily_uses: None,
            last_used_from: None,
            rotated_from: None,
            rotated_to: None,
            restrictions: Default::default(),
            self_rotation: Default::default(),
        }
    }

    fn actions(warnings: &[Warning]) -> Vec<(&str, Option<u64>)> {
        warnings
            .iter()
            .map(|w| (w.entry.action.as_str(), w.entry.detail.as_ref().and_then(|d| d.get("daysBefore")).and_then(|d| d.as_u64())))
            .collect()
    }

    #[test]
    fn only_the_nearest_threshold_crossed_is_due() {
        let s = WarningSettings::default();
        let c = credential(Some("2026-06-15T00:00:00Z"), Some("2026-06-01T00:00:00Z"));
        assert!(credential_warnings(&c, at("2026-05-31T23:59:59Z"), &s).is_empty(), "more than 14 days out");
        assert_eq!(actions(&credential_warnings(&c, at("2026-06-01T00:00:00Z"), &s)), [("credential.expiring", Some(14))]);
        assert_eq!(actions(&credential_warnings(&c, at("2026-06-10T00:00:00Z"), &s)), [("credential.expiring", Some(7))]);
        assert_eq!(actions(&credential_warnings(&c, at("2026-06-14T12:00:00Z"), &s)), [("credential.expiring", Some(1))]);
        assert_eq!(actions(&credential_warnings(&c, at("2026-06-15T00:00:00Z"), &s)), [("credential.expired", None)]);
        assert!(credential_warnings(&c, at("2026-06-23T00:00:00Z"), &s).is_empty(), "expired too long ago to announce");
    }

    #[test]
    fn a_changed_expiry_or_a_new_use_is_a_new_warning() {
        let s = WarningSettings::default();
        let now = at("2026-06-10T00:00:00Z");
        let first = credential_warnings(&credential(Some("2026-06-15T00:00:00Z"), Some("2026-06-09T00:00:00Z")), now, &s);
        let mut moved = credential(Some("2026-06-16T00:00:00Z"), Some("2026-06-09T00:00:00Z"));
        moved.key_id = first[0].entry.key_id.clone().unwrap();
        assert_ne!(first[0].once, credential_warnings(&moved, now, &s)[0].once);

        let idle = credential(None, Some("2026-04-01T00:00:00Z"));
        let once = credential_warnings(&idle, now, &s);
        assert_eq!(actions(&once), [("credential.unused", None)]);
        let mut used_again = idle.clone();
        used_again.last_used_at = Some(at("2026-04-02T00:00:00Z"));
        assert_ne!(credential_warnings(&used_again, now, &s)[0].once, once[0].once);
        used_again.last_used_at = Some(at("2026-06-01T00:00:00Z"));
        assert!(credential_warnings(&used_again, now, &s).is_empty(), "used within 30 days");
    }

    #[test]
    fn revoked_and_rotated_out_credentials_are_not_warned_of() {
        let s = WarningSettings::default();
        let now = at("2026-06-14T12:00:00Z");
        let mut c = credential(Some("2026-06-15T00:00:00Z"), None);
        c.status = CredentialStatus::Revoked;
        assert!(credential_warnings(&c, now, &s).is_empty());
        c.status = CredentialStatus::Active;
        c.rotated_to = Some(KeyId::generate());
        assert!(credential_warnings(&c, now, &s).is_empty());
    }

    #[test]
    fn settings_parse_what_an_operator_writes() {
        assert_eq!(WarningSettings::parse(None, None).unwrap(), WarningSettings::default());
        let s = WarningSettings::parse(Some(" 3, 30 ,3"), Some("0")).unwrap();
        assert_eq!((s.expiring_days(), s.unused_days()), (&[3, 30][..], None));
        assert!(WarningSettings::parse(Some(""), None).unwrap().expiring_days().is_empty());
        for bad in ["0", "x", "400", "7,,1"] {
            assert!(WarningSettings::parse(Some(bad), None).is_err(), "{bad}");
        }
        assert!(WarningSettings::parse(None, Some("-1")).is_err());
    }
}
