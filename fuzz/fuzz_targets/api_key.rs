//! The API-key parser: never panics; whatever parses re-serialises to the same text.
#![no_main]

use iam_shared::api_key::ApiKey;
use libfuzzer_sys::fuzz_target;
use secrecy::ExposeSecret;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(key) = ApiKey::parse(text) {
        assert_eq!(key.to_secret_string().expose_secret(), text);
    }
});
