//! The public key set: every signing key a verifier may meet, as a public JWK with the time it
//! was published and the time from which it may sign. It is stored apart from the private keys
//! (its own secret in AWS) so that every function that only verifies (the management API, the
//! JWKS, discovery) reads this and never the private key; only the exchange and the rotation
//! function can read that.
//!
//! The rotation function writes a key here before it stages the private key, and a key may
//! sign only from `activatesAt` (its publication plus the activation delay), so no verifier
//! meets a `kid` it could not have fetched. The decisions are here, without I/O; reading and
//! writing the set is in [`crate::signing_keys`].

use serde::{Deserialize, Serialize};

use crate::token::{KeyError, PublicJwk, SigningKey};

/// One published key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishedKey {
    pub jwk: PublicJwk,
    /// Unix seconds.
    pub published_at: i64,
    /// Unix seconds: a signer may sign with this key from then on.
    pub activates_at: i64,
}

impl PublishedKey {
    pub fn kid(&self) -> &str {
        &self.jwk.kid
    }
}

/// A key staged in the private secret, as the set needs to know it.
pub struct StagedKey {
    pub jwk: PublicJwk,
    /// When its secret version was created (Unix seconds); 0 when unknown.
    pub created_at: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKeySet {
    pub keys: Vec<PublishedKey>,
}

impl PublicKeySet {
    pub fn from_json(raw: &str) -> Result<Self, KeyError> {
        // Public data, so serde's message may be shown as it is.
        serde_json::from_str(raw).map_err(|e| KeyError::Document(format!("not a public key set: {e}")))
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a public key set always serialises")
    }

    pub fn get(&self, kid: &str) -> Option<&PublishedKey> {
        self.keys.iter().find(|k| k.kid() == kid)
    }

    /// What a verifier accepts. An empty set verifies nothing: refused rather than served, so
    /// a deployment that was never given its keys fails loudly at start.
    pub fn jwks(&self) -> Result<Vec<PublicJwk>, KeyError> {
        if self.keys.is_empty() {
            return Err(KeyError::Source(
                "the public key set is empty: the first rotation fills it, or run `iam-admin publish-signing-keys`".into(),
            ));
        }
        Ok(self.keys.iter().map(|k| k.jwk.clone()).collect())
    }

    /// Whether `key` is published here as exactly this key: a set naming the kid with another
    /// public key would make every token it signs unverifiable.
    fn publishes(&self, key: &SigningKey) -> Option<&PublishedKey> {
        self.get(key.kid()).filter(|p| p.jwk == *key.public_jwk())
    }

    /// Which of the private secret's keys signs at `now` (Unix seconds): `current` once it is
    /// active, `previous` until then. `current` signs early only when it is the only published
    /// key (a new deployment, or one recovered with `init-signing-key`), since no verifier can
    /// then hold tokens from any other.
    pub fn signer_at<'a>(&self, current: &'a SigningKey, previous: Option<&'a SigningKey>, now: i64) -> Result<&'a SigningKey, KeyError> {
        let previous = previous.filter(|p| p.kid() != current.kid()).filter(|p| self.publishes(p).is_some());
        match (self.publishes(current), previous) {
            (Some(published), _) if published.activates_at <= now => Ok(current),
            (_, Some(previous)) => Ok(previous),
            (Some(_), None) => Ok(current),
            (None, None) => Err(KeyError::Source(format!(
                "the signing key '{}' is not in the public key set, so verifiers could not check its tokens; \
                 run `iam-admin publish-signing-keys`",
                current.kid()
            ))),
        }
    }

    /// The set after a rotation step: exactly the keys still staged, plus `new`. A staged key
    /// keeps its entry; one the set lacks (staged before the set existed) is published as of
    /// its version's creation, which is when the JWKS first served it. Keys no longer staged are
    /// dropped (the rotation refuses to unstage one whose tokens may still be valid).
    pub fn rebuilt(&self, staged: &[StagedKey], new: Option<PublishedKey>, activation_delay_secs: i64) -> Self {
        let mut keys: Vec<PublishedKey> = Vec::new();
        for key in staged {
            if keys.iter().any(|k| k.kid() == key.jwk.kid) {
                continue;
            }
            let entry = match self.get(&key.jwk.kid).filter(|p| p.jwk == key.jwk) {
                Some(kept) => kept.clone(),
                None => PublishedKey {
                    jwk: key.jwk.clone(),
                    published_at: key.created_at,
                    activates_at: key.created_at.saturating_add(activation_delay_secs),
                },
            };
            keys.push(entry);
        }
        if let Some(new) = new {
            keys.retain(|k| k.kid() != new.kid());
            keys.push(new);
        }
        Self { keys }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::SigningKeyDocument;
    use std::sync::LazyLock;

    static KEYS: LazyLock<[SigningKeyDocument; 2]> =
        LazyLock::new(|| [SigningKeyDocument::generate().unwrap(), SigningKeyDocument::generate().unwrap()]);

    fn key(i: usize) -> SigningKey {
        SigningKey::from_document(&KEYS[i]).unwrap()
    }

    fn published(key: &SigningKey, published_at: i64, activates_at: i64) -> PublishedKey {
        PublishedKey { jwk: key.public_jwk().clone(), published_at, activates_at }
    }

    #[test]
    fn the_current_key_signs_once_active_and_the_previous_one_until_then() {
        let (current, previous) = (key(0), key(1));
        let set = PublicKeySet { keys: vec![published(&previous, 0, 0), published(&current, 100, 200)] };
        assert_eq!(set.signer_at(&current, Some(&previous), 199).unwrap().kid(), previous.kid());
        assert_eq!(set.signer_at(&current, Some(&previous), 200).unwrap().kid(), current.kid());
        // The only key: nothing else can have signed, so it signs at once.
        let alone = PublicKeySet { keys: vec![published(&current, 100, 200)] };
        assert_eq!(alone.signer_at(&current, None, 150).unwrap().kid(), current.kid());
        assert_eq!(
            alone.signer_at(&current, Some(&previous), 150).unwrap().kid(),
            current.kid(),
            "an unpublished previous key never signs"
        );
    }

    #[test]
    fn a_key_missing_from_the_set_or_published_as_another_key_never_signs() {
        let (current, previous) = (key(0), key(1));
        let empty = PublicKeySet::default();
        assert!(empty.signer_at(&current, None, 0).is_err());
        assert!(empty.jwks().is_err());
        let mut forged = published(&previous, 0, 0);
        forged.jwk.kid = current.kid().to_owned();
        let mismatched = PublicKeySet { keys: vec![forged] };
        assert!(mismatched.signer_at(&current, None, 10).is_err(), "the kid is there, but with another public key");
        let only_previous = PublicKeySet { keys: vec![published(&previous, 0, 0)] };
        assert_eq!(only_previous.signer_at(&current, Some(&previous), 10).unwrap().kid(), previous.kid());
    }

    #[test]
    fn a_rebuild_keeps_staged_entries_backfills_missing_ones_and_drops_the_rest() {
        let (a, b) = (key(0), key(1));
        let set = PublicKeySet { keys: vec![published(&a, 10, 20)] };
        let staged = [StagedKey { jwk: a.public_jwk().clone(), created_at: 5 }, StagedKey { jwk: b.public_jwk().clone(), created_at: 7 }];
        let rebuilt = set.rebuilt(&staged, None, 100);
        assert_eq!(rebuilt.keys, vec![published(&a, 10, 20), published(&b, 7, 107)]);
        let only_b = rebuilt.rebuilt(&staged[1..], None, 100);
        assert_eq!(only_b.keys, vec![published(&b, 7, 107)], "an unstaged key is dropped");
        let with_new = only_b.rebuilt(&staged[1..], Some(published(&a, 50, 60)), 100);
        assert_eq!(with_new.keys, vec![published(&b, 7, 107), published(&a, 50, 60)]);
        assert_eq!(PublicKeySet::from_json(&with_new.to_json()).unwrap(), with_new);
        assert!(PublicKeySet::from_json(r#"{"placeholder": true}"#).is_err());
    }
}
