//! Asking the trail: filters, a time range and a cursor, newest first unless asked otherwise.
//! Both stores answer from a key range (the time) and apply the rest with [`AuditQuery::matches`].

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};

use super::{AuditOutcome, AuditRecord, time_key};
use crate::error::DomainError;
use crate::ids::PrincipalId;
use crate::model::Actor;

pub const MAX_PAGE: usize = 200;
pub const DEFAULT_PAGE: usize = 50;

/// Where a page ends: the sort key of its last record, opaque to clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditCursor(pub String);

impl AuditCursor {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0.as_bytes())
    }

    pub fn decode(s: &str) -> Result<Self, DomainError> {
        let bad = || DomainError::invalid("cursor is not one this service returned");
        if s.len() > 1024 {
            return Err(bad());
        }
        let bytes = URL_SAFE_NO_PAD.decode(s).map_err(|_| bad())?;
        let key = String::from_utf8(bytes).map_err(|_| bad())?;
        // Every sort key starts with a fixed-width time; anything else was not ours.
        match key.len() > 18 && key.as_bytes()[..17].iter().all(u8::is_ascii_digit) && key.as_bytes()[17] == b'#' {
            true => Ok(Self(key)),
            false => Err(bad()),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub principal_id: Option<PrincipalId>,
    pub actor: Option<Actor>,
    pub action: Option<String>,
    pub outcome: Option<AuditOutcome>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub limit: usize,
    pub after: Option<AuditCursor>,
    /// Oldest first (an export); newest first otherwise.
    pub oldest_first: bool,
}

impl AuditQuery {
    pub fn new(limit: usize) -> Self {
        Self { limit, ..Self::default() }
    }

    pub fn validate(&self) -> Result<(), DomainError> {
        if self.limit == 0 || self.limit > MAX_PAGE {
            return Err(DomainError::invalid(format!("limit must be between 1 and {MAX_PAGE}")));
        }
        if let (Some(from), Some(to)) = (self.from, self.to)
            && from > to
        {
            return Err(DomainError::invalid("from must not be after to"));
        }
        // A cursor continues the query it came from: one outside this query's time range was
        // not (the filters changed between pages).
        let (low, high) = self.key_range();
        if let Some(AuditCursor(after)) = &self.after
            && (after.as_str() < low.as_str() || after.as_str() > high.as_str())
        {
            return Err(DomainError::invalid("the cursor belongs to another time range: start again without it"));
        }
        Ok(())
    }

    /// The sort-key range the time filter allows, inclusive: `[low, high]`.
    pub fn key_range(&self) -> (String, String) {
        let low = self.from.map_or_else(|| "0".repeat(17), time_key);
        // '~' sorts after every character a key continues with.
        let high = format!("{}~", self.to.map_or_else(|| "9".repeat(17), time_key));
        (low, high)
    }

    pub fn matches(&self, r: &AuditRecord) -> bool {
        let e = &r.entry;
        self.principal_id.as_ref().is_none_or(|p| e.principal_id.as_ref() == Some(p))
            && self.actor.as_ref().is_none_or(|a| &e.actor == a)
            && self.action.as_ref().is_none_or(|a| &e.action == a)
            && self.outcome.is_none_or(|o| e.outcome == o)
            && self.from.is_none_or(|from| e.at >= from)
            && self.to.is_none_or(|to| e.at <= to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_continues_only_the_time_range_it_came_from() {
        let now = crate::model::now();
        let cursor = AuditCursor(format!("{}#{:012}", super::time_key(now), 7));
        let same = AuditQuery { after: Some(cursor.clone()), ..AuditQuery::new(10) };
        assert!(same.validate().is_ok());
        let later = AuditQuery { from: Some(now + chrono::Duration::hours(1)), ..same.clone() };
        assert!(later.validate().is_err());
        let earlier = AuditQuery { to: Some(now - chrono::Duration::hours(1)), ..same };
        assert!(earlier.validate().is_err());
        assert!(AuditCursor::decode(&"A".repeat(2000)).is_err());
        assert_eq!(AuditCursor::decode(&cursor.encode()).unwrap(), cursor);
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditPage {
    pub items: Vec<AuditRecord>,
    pub next: Option<AuditCursor>,
}
