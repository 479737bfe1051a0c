//! A workload's OIDC token as the keyless exchange reads it: the unverified issuer peek and the
//! verification against an issuer's published keys. No input panics, and none verifies: a
//! forgery would need the issuer's private key, which the fuzzer never has.
#![no_main]

use std::sync::LazyLock;

use iam_shared::federation::{ExternalExpectations, claimed_issuer, verify_external};
use iam_shared::token::{SigningKey, SigningKeyDocument};
use jsonwebtoken::jwk::JwkSet;
use libfuzzer_sys::fuzz_target;

/// The issuer's keys: its RSA key, published as a JWKS is.
static KEYS: LazyLock<JwkSet> = LazyLock::new(|| {
    let doc = SigningKeyDocument::generate().unwrap();
    let public = serde_json::to_value(SigningKey::from_document(&doc).unwrap().public_jwk()).unwrap();
    serde_json::from_value(serde_json::json!({"keys": [public]})).unwrap()
});

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else { return };
    let _ = claimed_issuer(token);
    let expect = ExternalExpectations { issuer: "https://issuer.fuzz", audience: Some("iam"), max_age_secs: 3600, now: 1_800_000_000 };
    assert!(verify_external(token, &KEYS, &expect).is_err(), "a token verified without the issuer's private key");
});
