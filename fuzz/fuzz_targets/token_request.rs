//! The token endpoint in all three request forms (JSON; client_credentials as a form, with the
//! client in the form or in HTTP Basic; RFC 8693 token exchange as a form): the first byte picks
//! the form, the rest is the body (and, for Basic, the credentials up to the first 0xFF byte).
//! No 5xx, always JSON.
#![no_main]

use axum::body::Body;
use axum::http::Request;
use base64::Engine;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let mut request = Request::post("/iam/auth/token");
    let body = match selector % 4 {
        0 => {
            request = request.header("content-type", "application/json");
            rest.to_vec()
        }
        1 => {
            request = request.header("content-type", "application/x-www-form-urlencoded");
            rest.to_vec()
        }
        2 => {
            let (basic, form) = rest.split_at(rest.iter().position(|&b| b == 0xFF).unwrap_or(rest.len()));
            let encoded = base64::engine::general_purpose::STANDARD.encode(basic);
            request =
                request.header("content-type", "application/x-www-form-urlencoded").header("authorization", format!("Basic {encoded}"));
            [b"grant_type=client_credentials&".as_slice(), form.get(1..).unwrap_or_default()].concat()
        }
        _ => {
            request = request.header("content-type", "application/x-www-form-urlencoded");
            [b"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&".as_slice(), rest].concat()
        }
    };
    iam_fuzz::check(request.body(Body::from(body)).unwrap());
});
