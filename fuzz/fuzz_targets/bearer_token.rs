//! Bearer-token parsing and verification on a management route: anything but the real token
//! is 401 (431 past the header limit), never a 5xx.
#![no_main]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else { return };
    let instance = &*iam_fuzz::INSTANCE;
    if token.trim() == instance.admin_token {
        return;
    }
    let Ok(request) = Request::get("/iam/api-keys").header("authorization", format!("Bearer {token}")).body(Body::empty()) else {
        return;
    };
    let status = iam_fuzz::check(request);
    assert!(status == StatusCode::UNAUTHORIZED || status == StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "{status}");
});
