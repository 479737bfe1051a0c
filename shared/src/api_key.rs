//! The API key format: `ik_<keyId>.<keySecret>`.
//!
//! `keyId` is 128 random bits in 22 base62 characters. `keySecret` is 256 random bits in 44
//! base62 characters followed by a 6-character base62 CRC32 of everything before it
//! (`ik_<keyId>.<body>`), so a secret scanner can tell a real key from noise without a lookup,
//! and a key pasted with a typo is rejected before any database read.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

use crate::ids::{KeyId, RANDOM_ID_LEN, encode_u128};
use crate::random;

pub const KEY_PREFIX: &str = "ik_";
const SECRET_BODY_LEN: usize = 2 * RANDOM_ID_LEN;
const CHECKSUM_LEN: usize = 6;
pub const SECRET_LEN: usize = SECRET_BODY_LEN + CHECKSUM_LEN;
/// `ik_` + keyId + `.` + secret.
pub const KEY_LEN: usize = KEY_PREFIX.len() + RANDOM_ID_LEN + 1 + SECRET_LEN;

/// Why a string is not an API key. Never carries the input: it may be a real secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormatError {
    #[error("the key does not start with ik_")]
    Prefix,
    #[error("the key id is malformed")]
    KeyId,
    #[error("the key secret is malformed")]
    Secret,
    #[error("the key checksum does not match")]
    Checksum,
}

/// A complete API key. `Debug` shows only the key id.
pub struct ApiKey {
    key_id: KeyId,
    secret: SecretString,
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey(ik_{}.[REDACTED])", self.key_id)
    }
}

fn checksum(prefix_and_body: &str) -> String {
    let crc = crc32fast::hash(prefix_and_body.as_bytes());
    format!("{:0>width$}", base62::encode(crc), width = CHECKSUM_LEN)
}

fn is_u128_chunk(chunk: &str) -> bool {
    chunk.bytes().all(|b| b.is_ascii_alphanumeric()) && base62::decode(chunk).is_ok()
}

impl ApiKey {
    pub fn generate() -> Self {
        Self::from_random(KeyId::generate(), u128::from_be_bytes(random::bytes::<16>()), u128::from_be_bytes(random::bytes::<16>()))
    }

    /// The key made of a key id and 256 random bits (two halves of the secret body).
    fn from_random(key_id: KeyId, high: u128, low: u128) -> Self {
        let body = format!("{}{}", encode_u128(high), encode_u128(low));
        let sum = checksum(&format!("{KEY_PREFIX}{key_id}.{body}"));
        Self { key_id, secret: SecretString::from(format!("{body}{sum}")) }
    }

    pub fn parse(raw: &str) -> Result<Self, KeyFormatError> {
        let rest = raw.strip_prefix(KEY_PREFIX).ok_or(KeyFormatError::Prefix)?;
        let (key_id, secret) = rest.split_once('.').ok_or(KeyFormatError::Secret)?;
        Self::from_parts(key_id, secret)
    }

    /// The OAuth client-credentials form: `client_id` = `ik_<keyId>`, `client_secret` = `<keySecret>`.
    pub fn from_client_credentials(client_id: &str, client_secret: &str) -> Result<Self, KeyFormatError> {
        let key_id = client_id.strip_prefix(KEY_PREFIX).ok_or(KeyFormatError::Prefix)?;
        Self::from_parts(key_id, client_secret)
    }

    fn from_parts(key_id: &str, secret: &str) -> Result<Self, KeyFormatError> {
        let key_id = KeyId::parse(key_id).map_err(|_| KeyFormatError::KeyId)?;
        if secret.len() != SECRET_LEN || !secret.is_ascii() {
            return Err(KeyFormatError::Secret);
        }
        let (body, sum) = secret.split_at(SECRET_BODY_LEN);
        let (hi, lo) = body.split_at(RANDOM_ID_LEN);
        if !is_u128_chunk(hi) || !is_u128_chunk(lo) {
            return Err(KeyFormatError::Secret);
        }
        if checksum(&format!("{KEY_PREFIX}{key_id}.{body}")) != sum {
            return Err(KeyFormatError::Checksum);
        }
        Ok(Self { key_id, secret: SecretString::from(secret.to_owned()) })
    }

    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    pub fn secret(&self) -> &SecretString {
        &self.secret
    }

    /// `ik_<keyId>`: the OAuth `client_id`, public.
    pub fn client_id(&self) -> String {
        client_id(&self.key_id)
    }

    /// The full key, for the single response that shows it.
    pub fn to_secret_string(&self) -> SecretString {
        SecretString::from(format!("{KEY_PREFIX}{}.{}", self.key_id, self.secret.expose_secret()))
    }
}

pub fn client_id(key_id: &KeyId) -> String {
    format!("{KEY_PREFIX}{key_id}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generated_keys_have_the_documented_shape() {
        let key = ApiKey::generate();
        let full = key.to_secret_string();
        let full = full.expose_secret();
        assert_eq!(full.len(), KEY_LEN);
        assert!(full.starts_with("ik_"));
        let parsed = ApiKey::parse(full).unwrap();
        assert_eq!(parsed.key_id(), key.key_id());
        assert_eq!(parsed.secret().expose_secret(), key.secret().expose_secret());
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let key = ApiKey::generate();
        let shown = format!("{key:?}");
        assert!(!shown.contains(key.secret().expose_secret()));
        assert!(shown.contains(key.key_id().as_str()));
    }

    #[test]
    fn a_single_changed_character_fails_the_checksum() {
        let key = ApiKey::generate();
        let full = key.to_secret_string().expose_secret().to_owned();
        let pos = full.len() - 10;
        let mut bytes = full.into_bytes();
        bytes[pos] = if bytes[pos] == b'a' { b'b' } else { b'a' };
        let tampered = String::from_utf8(bytes).unwrap();
        assert_eq!(ApiKey::parse(&tampered).unwrap_err(), KeyFormatError::Checksum);
    }

    #[test]
    fn client_credentials_split_round_trips() {
        let key = ApiKey::generate();
        let again = ApiKey::from_client_credentials(&key.client_id(), key.secret().expose_secret()).unwrap();
        assert_eq!(again.key_id(), key.key_id());
    }

    #[test]
    fn specific_malformations() {
        assert_eq!(ApiKey::parse("").unwrap_err(), KeyFormatError::Prefix);
        assert_eq!(ApiKey::parse("ik_abc").unwrap_err(), KeyFormatError::Secret);
        assert_eq!(ApiKey::parse("ik_abc.def").unwrap_err(), KeyFormatError::KeyId);
        let key = ApiKey::generate();
        let id = key.key_id().to_string();
        assert_eq!(ApiKey::parse(&format!("ik_{id}.short")).unwrap_err(), KeyFormatError::Secret);
        assert_eq!(ApiKey::parse(&format!("ik_{id}.{}", "é".repeat(25))).unwrap_err(), KeyFormatError::Secret);
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(id in any::<u128>(), high in any::<u128>(), low in any::<u128>()) {
            let key = ApiKey::from_random(KeyId::parse(&encode_u128(id)).unwrap(), high, low);
            let full = key.to_secret_string();
            let parsed = ApiKey::parse(full.expose_secret()).unwrap();
            prop_assert_eq!(parsed.key_id(), key.key_id());
            prop_assert_eq!(parsed.secret().expose_secret(), key.secret().expose_secret());
        }

        #[test]
        fn random_strings_never_parse_and_never_panic(raw in ".{0,200}") {
            prop_assert!(ApiKey::parse(&raw).is_err());
        }

        #[test]
        fn random_well_shaped_strings_fail_the_checksum(id in "[0-9A-Za-z]{22}", body in "[0-9A-Za-z]{50}") {
            // Roughly one in 4 billion would pass by chance; the point is no panic and no acceptance.
            let candidate = format!("ik_{id}.{body}");
            prop_assert!(ApiKey::parse(&candidate).is_err());
        }

        #[test]
        fn client_credentials_never_panic(a in ".{0,80}", b in ".{0,80}") {
            let _ = ApiKey::from_client_credentials(&a, &b);
        }
    }
}
