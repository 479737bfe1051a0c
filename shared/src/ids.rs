//! Identifiers that can only exist in a valid form: parse, don't validate.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::random;

/// Base62 digits of a random 128-bit value, left-padded so every id has the same length.
pub const RANDOM_ID_LEN: usize = 22;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct IdError(pub String);

fn is_base62(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// 22 base62 characters. Ids are minted from 128 random bits, but any string of this shape is
/// accepted as one (and then simply not found): the contract promises clients exactly this
/// shape, and a check for the 128-bit range would refuse some strings that match it.
fn is_random_id(s: &str) -> bool {
    s.len() == RANDOM_ID_LEN && is_base62(s)
}

pub(crate) fn encode_u128(value: u128) -> String {
    format!("{:0>width$}", base62::encode(value), width = RANDOM_ID_LEN)
}

pub(crate) fn random_id() -> String {
    encode_u128(u128::from_be_bytes(random::bytes::<16>()))
}

macro_rules! string_id {
    ($(#[$meta:meta])* $name:ident, $parse:expr, $what:literal) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn parse(raw: &str) -> Result<Self, IdError> {
                let check: fn(&str) -> bool = $parse;
                if check(raw) {
                    Ok(Self(raw.to_owned()))
                } else {
                    Err(IdError(format!(concat!("'{}' is not a valid ", $what), truncate(raw))))
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                Self::parse(&raw).map_err(serde::de::Error::custom)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }
    };
}

/// Error messages echo the offending value, but never more than a short prefix of it.
pub(crate) fn truncate(raw: &str) -> String {
    const MAX: usize = 80;
    if raw.chars().count() <= MAX {
        raw.to_owned()
    } else {
        let prefix: String = raw.chars().take(MAX).collect();
        format!("{prefix}…")
    }
}

string_id!(
    /// Organisation id: 1–64 characters of `a-z`, `0-9` and `-`.
    OrgId,
    |s| (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
    "organisation id (1-64 characters of a-z, 0-9 and -)"
);

string_id!(
    /// API-key principal id: `akp_` followed by 22 base62 characters.
    PrincipalId,
    |s| s.strip_prefix("akp_").is_some_and(is_random_id),
    "principal id (akp_ followed by 22 base62 characters)"
);

string_id!(
    /// Public half of an API key: 22 base62 characters (128 random bits).
    KeyId,
    is_random_id,
    "key id (22 base62 characters)"
);

string_id!(
    /// Role id: built-in roles use their name (`iam-admin`); organisation roles are `role_` + 22 base62.
    RoleId,
    |s| (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'),
    "role id (1-64 characters of a-z, 0-9, - and _)"
);

string_id!(
    /// A permission such as `iam:api-keys:write`: two or more `:`-separated segments of `a-z`, `0-9`, `-`.
    Permission,
    |s| s.len() <= 128
        && s.split(':').count() >= 2
        && s.split(':').all(|seg| !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')),
    "permission (segments of a-z, 0-9 and - separated by ':', e.g. iam:api-keys:read)"
);

string_id!(
    /// A webhook endpoint's id: `wh_` followed by 22 base62 characters.
    WebhookId,
    |s| s.strip_prefix("wh_").is_some_and(is_random_id),
    "webhook id (wh_ followed by 22 base62 characters)"
);

string_id!(
    /// A service account's trust policy: `tp_` followed by 22 base62 characters.
    TrustPolicyId,
    |s| s.strip_prefix("tp_").is_some_and(is_random_id),
    "trust policy id (tp_ followed by 22 base62 characters)"
);

impl TrustPolicyId {
    pub fn generate() -> Self {
        Self(format!("tp_{}", random_id()))
    }
}

impl WebhookId {
    pub fn generate() -> Self {
        Self(format!("wh_{}", random_id()))
    }
}

impl PrincipalId {
    pub fn generate() -> Self {
        Self(format!("akp_{}", random_id()))
    }
}

impl KeyId {
    pub fn generate() -> Self {
        Self(random_id())
    }
}

impl RoleId {
    /// Organisation role ids are lowercase (role ids sit in URLs), so their 128 random bits are hex.
    pub fn generate() -> Self {
        let hex: String = random::bytes::<16>().iter().map(|b| format!("{b:02x}")).collect();
        Self(format!("role_{hex}"))
    }

    /// Built-in role ids are their well-known names.
    pub(crate) fn builtin(name: &'static str) -> Self {
        Self(name.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse() {
        for _ in 0..200 {
            let p = PrincipalId::generate();
            assert_eq!(PrincipalId::parse(p.as_str()).unwrap(), p);
            let k = KeyId::generate();
            assert_eq!(KeyId::parse(k.as_str()).unwrap(), k);
            assert_eq!(k.as_str().len(), RANDOM_ID_LEN);
        }
    }

    #[test]
    fn rejects_bad_ids() {
        assert!(OrgId::parse("").is_err());
        assert!(OrgId::parse("Acme").is_err());
        assert!(OrgId::parse(&"a".repeat(65)).is_err());
        assert!(OrgId::parse("acme-1").is_ok());
        assert!(PrincipalId::parse("akp_short").is_err());
        assert!(PrincipalId::parse(&format!("akp_{}", "z".repeat(22))).is_ok(), "the documented shape, whatever its value");
        assert!(PrincipalId::parse(&format!("akp_{}", "z".repeat(21))).is_err());
        assert!(PrincipalId::parse(&format!("akp_{}-", "z".repeat(21))).is_err());
        assert!(KeyId::parse("0000000000000000000000").is_ok());
        assert!(Permission::parse("iam:api-keys:read").is_ok());
        assert!(Permission::parse("iam").is_err());
        assert!(Permission::parse("iam::read").is_err());
        assert!(Permission::parse("IAM:x").is_err());
    }

    #[test]
    fn error_message_truncates_long_input() {
        let err = OrgId::parse(&"X".repeat(10_000)).unwrap_err();
        assert!(err.0.len() < 300);
    }
}
