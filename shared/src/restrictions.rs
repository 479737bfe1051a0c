//! Restrictions bound to one credential, beyond what its principal holds: a permission
//! ceiling, the source networks it may be used from, and the audiences its tokens may name.
//! Enforced at the exchange once the secret is proved; set at issue, kept by rotation, and
//! changed later only by a caller with the authority to issue (the key's own token may only
//! narrow them: a leaked key cannot lift its own limits).

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::DomainError;
use crate::ids::Permission;

/// Bounds that keep a restricted credential's item small: its exchange rewrites the whole item,
/// and each extra kilobyte is one more write unit per exchange (ARCHITECTURE.md, capacity).
pub const MAX_CEILING_PERMISSIONS: usize = 20;
pub const MAX_SOURCE_CIDRS: usize = 10;
pub const MAX_AUDIENCES: usize = 5;
const MAX_AUDIENCE_LEN: usize = 256;

/// A network a credential may be used from, IPv4 or IPv6, stored in its canonical form (host
/// bits cleared: `10.1.2.3/8` is `10.0.0.0/8`). A bare address is a network of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceCidr(ipnet::IpNet);

impl SourceCidr {
    pub fn contains(&self, address: IpAddr) -> bool {
        self.0.contains(&address.to_canonical())
    }

    /// Whether every address of `other` is in this network.
    pub fn covers(&self, other: &SourceCidr) -> bool {
        self.0.contains(&other.0)
    }
}

impl FromStr for SourceCidr {
    type Err = DomainError;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let invalid =
            || DomainError::invalid(format!("'{raw}' is not an IPv4 or IPv6 network (for example 203.0.113.0/24 or 2001:db8::/32)"));
        let net = match raw.parse::<ipnet::IpNet>() {
            Ok(net) => net,
            Err(_) => ipnet::IpNet::from(raw.parse::<IpAddr>().map_err(|_| invalid())?.to_canonical()),
        };
        Ok(Self(net.trunc()))
    }
}

impl fmt::Display for SourceCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for SourceCidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SourceCidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// What a credential may do beyond its principal's own limits. `None` in a field is no
/// restriction of that kind; a present list is never empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Restrictions {
    /// The ceiling: a token's scope is what the principal holds ∩ this ∩ what was asked for.
    #[serde(default)]
    pub permissions: Option<BTreeSet<Permission>>,
    #[serde(default)]
    pub source_cidrs: Option<BTreeSet<SourceCidr>>,
    #[serde(default)]
    pub audiences: Option<BTreeSet<String>>,
}

/// Why a credential's own restrictions refused an exchange (after its secret was proved).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestrictionRefusal {
    #[error("the credential may not be used from this network address")]
    Source,
    #[error("the credential may not be used for the audience '{0}'")]
    Audience(String),
    #[error("the credential's permission ceiling does not include '{0}'")]
    Permission(Permission),
}

impl RestrictionRefusal {
    /// A stable name for metrics and dashboards.
    pub fn code(&self) -> &'static str {
        match self {
            RestrictionRefusal::Source => "source",
            RestrictionRefusal::Audience(_) => "audience",
            RestrictionRefusal::Permission(_) => "permission",
        }
    }
}

impl Restrictions {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Refuses empty lists (leave a field out for no restriction) and lists past their bounds.
    pub fn validate(&self) -> Result<(), DomainError> {
        fn bounded(field: &str, len: Option<usize>, max: usize) -> Result<(), DomainError> {
            match len {
                Some(0) => Err(DomainError::invalid(format!("restrictions.{field} must not be empty; leave it out for no restriction"))),
                Some(n) if n > max => Err(DomainError::invalid(format!("restrictions.{field} may list at most {max} entries"))),
                _ => Ok(()),
            }
        }
        bounded("permissions", self.permissions.as_ref().map(BTreeSet::len), MAX_CEILING_PERMISSIONS)?;
        bounded("sourceCidrs", self.source_cidrs.as_ref().map(BTreeSet::len), MAX_SOURCE_CIDRS)?;
        bounded("audiences", self.audiences.as_ref().map(BTreeSet::len), MAX_AUDIENCES)?;
        if let Some(bad) = self
            .audiences
            .iter()
            .flatten()
            .find(|a| a.is_empty() || a.chars().count() > MAX_AUDIENCE_LEN || a.chars().any(char::is_control))
        {
            return Err(DomainError::invalid(format!(
                "restrictions.audiences: '{}' is not an audience (1 to {MAX_AUDIENCE_LEN} characters, no control characters)",
                bad.escape_debug()
            )));
        }
        Ok(())
    }

    /// Whether these allow nothing that `before` refused: each kind restricted at least as much.
    pub fn narrows(&self, before: &Restrictions) -> bool {
        fn subset<T: Ord>(after: &Option<BTreeSet<T>>, before: &Option<BTreeSet<T>>) -> bool {
            match (after, before) {
                (_, None) => true,
                (None, Some(_)) => false,
                (Some(a), Some(b)) => a.is_subset(b),
            }
        }
        let sources = match (&self.source_cidrs, &before.source_cidrs) {
            (_, None) => true,
            (None, Some(_)) => false,
            (Some(after), Some(before)) => after.iter().all(|a| before.iter().any(|b| b.covers(a))),
        };
        subset(&self.permissions, &before.permissions) && sources && subset(&self.audiences, &before.audiences)
    }

    /// Whether a request from `source` may use the credential. An unknown source never passes a
    /// source restriction.
    pub fn check_source(&self, source: Option<&str>) -> Result<(), RestrictionRefusal> {
        let Some(allowed) = &self.source_cidrs else { return Ok(()) };
        let address = source.and_then(|s| s.parse::<IpAddr>().ok());
        match address {
            Some(a) if allowed.iter().any(|net| net.contains(a)) => Ok(()),
            _ => Err(RestrictionRefusal::Source),
        }
    }

    /// Whether a key with these restrictions still counts as a means of administration for
    /// the last-administrator rule: its ceiling (if any) keeps every `iam:` permission and it is
    /// not limited to audiences. Counted conservatively: an audience list that names the
    /// management audience still does not count, so no write can take an organisation's last
    /// administrator down to a key that cannot administer. A source restriction leaves it usable.
    pub fn permits_administration(&self) -> bool {
        let ceiling_keeps_iam = self
            .permissions
            .as_ref()
            .is_none_or(|ceiling| crate::roles::IAM_PERMISSIONS.iter().all(|iam| ceiling.iter().any(|p| p.as_str() == *iam)));
        ceiling_keeps_iam && self.audiences.is_none()
    }

    pub fn allows_audience(&self, audience: &str) -> bool {
        self.audiences.as_ref().is_none_or(|allowed| allowed.contains(audience))
    }

    pub fn within_ceiling(&self, permission: &str) -> bool {
        self.permissions.as_ref().is_none_or(|ceiling| ceiling.iter().any(|p| p.as_str() == permission))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidrs(list: &[&str]) -> Option<BTreeSet<SourceCidr>> {
        Some(list.iter().map(|c| c.parse().unwrap()).collect())
    }

    #[test]
    fn networks_parse_canonically_in_both_families() {
        assert_eq!("10.1.2.3/8".parse::<SourceCidr>().unwrap().to_string(), "10.0.0.0/8");
        assert_eq!("203.0.113.7".parse::<SourceCidr>().unwrap().to_string(), "203.0.113.7/32");
        assert_eq!("2001:db8::1/32".parse::<SourceCidr>().unwrap().to_string(), "2001:db8::/32");
        assert_eq!("::ffff:198.51.100.1".parse::<SourceCidr>().unwrap().to_string(), "198.51.100.1/32", "an IPv4-mapped address is IPv4");
        for bad in ["", "10.0.0.0/33", "example.com", "10.0.0.0/8 ", "1.2.3", "::/129"] {
            assert!(bad.parse::<SourceCidr>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sources_match_by_network_and_unknown_never_passes() {
        let r = Restrictions { source_cidrs: cidrs(&["203.0.113.0/24", "2001:db8::/32"]), ..Default::default() };
        assert_eq!(r.check_source(Some("203.0.113.200")), Ok(()));
        assert_eq!(r.check_source(Some("::ffff:203.0.113.9")), Ok(()), "IPv4-mapped form of an allowed address");
        assert_eq!(r.check_source(Some("2001:db8:1::5")), Ok(()));
        assert_eq!(r.check_source(Some("203.0.114.1")), Err(RestrictionRefusal::Source));
        assert_eq!(r.check_source(None), Err(RestrictionRefusal::Source));
        assert_eq!(r.check_source(Some("not an address")), Err(RestrictionRefusal::Source));
        assert_eq!(Restrictions::default().check_source(None), Ok(()), "no restriction: any source");
    }

    #[test]
    fn narrowing_is_per_kind_and_networks_must_be_covered() {
        let wide =
            Restrictions { source_cidrs: cidrs(&["10.0.0.0/8"]), audiences: Some(["a".into(), "b".into()].into()), ..Default::default() };
        let narrower = Restrictions { source_cidrs: cidrs(&["10.9.0.0/16"]), audiences: Some(["a".into()].into()), ..Default::default() };
        assert!(narrower.narrows(&wide));
        assert!(!wide.narrows(&narrower));
        let ceiling = Restrictions { permissions: Some([Permission::parse("a:b").unwrap()].into()), ..wide.clone() };
        assert!(ceiling.narrows(&wide), "adding a ceiling narrows");
        assert!(!wide.narrows(&ceiling), "removing one widens");
        let elsewhere = Restrictions { source_cidrs: cidrs(&["11.0.0.0/8"]), ..wide.clone() };
        assert!(!elsewhere.narrows(&wide));
        assert!(wide.narrows(&Restrictions::default()), "anything narrows no restriction");
    }

    #[test]
    fn empty_and_oversized_lists_are_refused() {
        assert!(Restrictions { permissions: Some(BTreeSet::new()), ..Default::default() }.validate().is_err());
        let many: BTreeSet<SourceCidr> = (0..=MAX_SOURCE_CIDRS).map(|i| format!("10.0.{i}.0/24").parse().unwrap()).collect();
        assert!(Restrictions { source_cidrs: Some(many), ..Default::default() }.validate().is_err());
        assert!(Restrictions { audiences: Some(["ok".into(), "bad\n".into()].into()), ..Default::default() }.validate().is_err());
        assert!(Restrictions::default().validate().is_ok());
    }
}
