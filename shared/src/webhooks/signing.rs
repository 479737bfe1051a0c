//! Standard Webhooks signatures, and the secrets they are made with.
//!
//! A secret is `whsec_` and the base64 of 32 bytes; a signature is the base64 of
//! HMAC-SHA256(secret bytes, `{webhook-id}.{webhook-timestamp}.{body}`), sent as `v1,<sig>` in
//! `webhook-signature` (several, space-separated, while a rotation overlaps). The secret bytes
//! are HMAC-SHA256(service webhook key, organisation, endpoint, generation): derived when
//! needed, never stored.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretBox, SecretString};
use sha2::{Digest, Sha256};

use super::Webhook;

/// The service's key that webhook secrets are derived from.
pub struct WebhookKey(SecretBox<[u8; 32]>);

impl std::fmt::Debug for WebhookKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookKey([redacted])")
    }
}

impl WebhookKey {
    /// Key material shorter than this is refused: an empty or truncated secret or file would
    /// make every endpoint's secret computable by anyone.
    pub const MIN_MATERIAL: usize = 32;

    /// From stored key material (a Secrets Manager secret string, a key file) of at least
    /// [`Self::MIN_MATERIAL`] bytes, as its SHA-256: the template's 64 generated characters
    /// make a full key.
    pub fn from_material(material: &[u8]) -> Result<Self, String> {
        if material.len() < Self::MIN_MATERIAL {
            return Err(format!("the webhook key material is {} bytes; at least {} are needed", material.len(), Self::MIN_MATERIAL));
        }
        Ok(Self(SecretBox::new(Box::new(Sha256::digest(material).into()))))
    }

    pub fn generate() -> Self {
        Self(SecretBox::new(Box::new(crate::random::bytes::<32>())))
    }

    /// The signing secret of `webhook`'s `generation`.
    pub fn secret(&self, webhook: &Webhook, generation: u32) -> WebhookSecret {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(self.0.expose_secret()).expect("HMAC takes any key length");
        mac.update(format!("infuse-iam webhook secret\0{}\0{}\0{generation}", webhook.org_id, webhook.id).as_bytes());
        WebhookSecret(SecretBox::new(Box::new(mac.finalize().into_bytes().into())))
    }
}

/// One endpoint's signing secret. Its `Debug` is redacted; [`WebhookSecret::reveal`] is for
/// the one answer that shows it.
pub struct WebhookSecret(SecretBox<[u8; 32]>);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret([redacted])")
    }
}

impl WebhookSecret {
    /// `whsec_<base64>`, as Standard Webhooks libraries take it.
    pub fn reveal(&self) -> SecretString {
        SecretString::from(format!("whsec_{}", STANDARD.encode(self.0.expose_secret())))
    }

    /// `v1,<signature>` of the message `id` sent at `timestamp` (Unix seconds) with `body`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(self.0.expose_secret()).expect("HMAC takes any key length");
        mac.update(format!("{id}.{timestamp}.").as_bytes());
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// The `webhook-signature` header: one signature per secret that signs at `timestamp`.
pub fn signature_header(key: &WebhookKey, webhook: &Webhook, id: &str, timestamp: i64, body: &[u8]) -> String {
    let at = chrono::DateTime::from_timestamp(timestamp, 0).unwrap_or_else(crate::model::now);
    webhook.signing_generations(at).into_iter().map(|g| key.secret(webhook, g).sign(id, timestamp, body)).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::OrgId;
    use crate::model::Actor;
    use crate::webhooks::WebhookChange;

    #[test]
    fn signs_as_an_independent_hmac_does() {
        // Computed with Python's hmac and base64 modules.
        let secret = WebhookSecret(SecretBox::new(Box::new(core::array::from_fn(|i| i as u8 + 1))));
        assert_eq!(secret.reveal().expose_secret(), "whsec_AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=");
        let signature = secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#);
        assert_eq!(signature, "v1,frM35V2Z51bxs4v81I6TpLnscXkhXtKLP/7WPYVyj3A=");
        assert_eq!(format!("{secret:?}"), "WebhookSecret([redacted])");
    }

    #[test]
    fn short_key_material_is_refused() {
        assert!(WebhookKey::from_material(b"").is_err());
        assert!(WebhookKey::from_material(&[7u8; 31]).is_err());
        assert!(WebhookKey::from_material(&[7u8; 32]).is_ok());
    }

    #[test]
    fn secrets_differ_by_endpoint_and_generation_and_overlap_after_rotation() {
        let key = WebhookKey::generate();
        let now = crate::model::now();
        let change = WebhookChange { url: Some("https://hooks.example.com/".into()), ..Default::default() };
        let w = Webhook::new(&OrgId::parse("acme").unwrap(), &change, false, Actor::system("t"), now).unwrap();
        let other = Webhook::new(&OrgId::parse("acme").unwrap(), &change, false, Actor::system("t"), now).unwrap();
        let reveal = |s: WebhookSecret| s.reveal().expose_secret().to_owned();
        assert_ne!(reveal(key.secret(&w, 1)), reveal(key.secret(&other, 1)));
        assert_ne!(reveal(key.secret(&w, 1)), reveal(key.secret(&w, 2)));
        assert!(reveal(key.secret(&w, 1)).starts_with("whsec_"));
        let rotated = w.rotated(now);
        let header = signature_header(&key, &rotated, "ae_1", now.timestamp(), b"{}");
        assert_eq!(header.split(' ').count(), 2, "both secrets sign during the overlap");
        assert_eq!(header.split(' ').nth(1), Some(key.secret(&w, 1).sign("ae_1", now.timestamp(), b"{}").as_str()));
    }
}
