//! Response bodies. Credentials have a view of their own: the stored hash never leaves the store.

use chrono::{DateTime, NaiveDate, Utc};
use iam_shared::ids::{KeyId, OrgId, PrincipalId};
use iam_shared::leaks::LEAK_REPORT_ACTOR;
use iam_shared::model::{Actor, Credential, CredentialStatus, DailyUses};
use iam_shared::restrictions::Restrictions;
use serde::Serialize;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListResponse<T: Serialize> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CredentialView {
    pub key_id: KeyId,
    pub client_id: String,
    pub principal_id: PrincipalId,
    pub org_id: OrgId,
    pub name: String,
    pub status: CredentialStatus,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub created_by: Actor,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_by: Option<Actor>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub last_used_from: Option<String>,
    pub usage: UsageView,
    pub rotated_from: Option<KeyId>,
    pub rotated_to: Option<KeyId>,
    pub restrictions: Restrictions,
    pub self_rotation: bool,
    /// Why a revoked credential was: `leaked` (reported through the leak route) or `manual`.
    pub revocation_reason: Option<&'static str>,
}

/// A credential's exchanges per UTC day over the last 30 days, newest first.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageView {
    pub exchanges_last_30_days: u64,
    pub days: Vec<DayUsage>,
}

#[derive(Serialize)]
pub struct DayUsage {
    pub date: NaiveDate,
    pub exchanges: u32,
}

impl UsageView {
    fn new(daily: Option<&DailyUses>, now: DateTime<Utc>) -> Self {
        let days: Vec<DayUsage> = daily
            .map(|d| d.within_window(now))
            .unwrap_or_default()
            .into_iter()
            .map(|(date, exchanges)| DayUsage { date, exchanges })
            .collect();
        Self { exchanges_last_30_days: days.iter().map(|d| u64::from(d.exchanges)).sum(), days }
    }
}

impl CredentialView {
    pub fn new(c: &Credential, now: DateTime<Utc>) -> Self {
        Self {
            key_id: c.key_id.clone(),
            client_id: iam_shared::api_key::client_id(&c.key_id),
            principal_id: c.principal_id.clone(),
            org_id: c.org_id.clone(),
            name: c.name.clone(),
            status: c.status_at(now),
            expires_at: c.expires_at,
            created_at: c.created_at,
            created_by: c.created_by.clone(),
            revoked_at: c.revoked_at,
            revoked_by: c.revoked_by.clone(),
            last_used_at: c.last_used_at,
            last_used_from: c.last_used_from.clone(),
            usage: UsageView::new(c.daily_uses.as_ref(), now),
            rotated_from: c.rotated_from.clone(),
            rotated_to: c.rotated_to.clone(),
            restrictions: c.restrictions.clone(),
            self_rotation: c.self_rotation,
            revocation_reason: c.revoked_by.as_ref().map(|by| if by.0 == LEAK_REPORT_ACTOR { "leaked" } else { "manual" }),
        }
    }
}
