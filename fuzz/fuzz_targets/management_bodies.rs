//! The JSON body of every management route that takes one, with a valid admin token: the first
//! byte picks the route, the rest is the body. No 5xx, always JSON (problem+json on refusal).
#![no_main]

use axum::body::Body;
use axum::http::Request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    let instance = &*iam_fuzz::INSTANCE;
    let p = &instance.principal;
    let (method, uri) = match selector % 6 {
        0 => ("POST", "/iam/api-keys".to_owned()),
        1 => ("PATCH", format!("/iam/api-keys/{p}")),
        2 => ("POST", format!("/iam/api-keys/{p}/credentials")),
        3 => ("POST", "/iam/webhooks".to_owned()),
        4 => ("PATCH", "/iam/webhooks/wh_0000000000000000000000".to_owned()),
        _ => ("POST", "/iam/roles".to_owned()),
    };
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {}", instance.admin_token))
        .body(Body::from(body.to_vec()))
        .unwrap();
    iam_fuzz::check(request);
});
