//! The source address behind the optional CloudFront edge: the viewer address the edge sends
//! is believed only with the edge's secret; otherwise API Gateway's `sourceIp` stands, however
//! the headers were dressed up.

use iam_api::source_address::{EdgeTrust, ORIGIN_SECRET_HEADER, VIEWER_IP_HEADER, source_address};
use lambda_http::request::LambdaRequest;
use secrecy::SecretString;
use serde_json::{Value, json};

const FIXTURE: &str = include_str!("../../fixtures/apigw-http-v2.json");
/// The fixture's `requestContext.http.sourceIp`: the address API Gateway saw.
const GATEWAY_SOURCE: &str = "203.0.113.10";
const SECRET: &str = "0f6c1d2e3a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f";

/// The address the service establishes for a payload v2 event carrying `headers`.
fn source_of(headers: Value, edge: Option<&EdgeTrust>) -> Option<String> {
    let mut event: Value = serde_json::from_str(FIXTURE).unwrap();
    for (name, value) in headers.as_object().unwrap() {
        event["headers"][name] = value.clone();
    }
    let request: LambdaRequest = serde_json::from_value(event).expect("payload v2 event");
    let (parts, _) = lambda_http::Request::from(request).into_parts();
    source_address(&parts, edge)
}

fn edge() -> EdgeTrust {
    EdgeTrust::new(SecretString::from(SECRET))
}

#[test]
fn behind_the_edge_the_viewer_address_is_believed() {
    let from_edge = json!({ORIGIN_SECRET_HEADER: SECRET, VIEWER_IP_HEADER: "198.51.100.7"});
    assert_eq!(source_of(from_edge, Some(&edge())).as_deref(), Some("198.51.100.7"));
    let ipv6 = json!({ORIGIN_SECRET_HEADER: SECRET, VIEWER_IP_HEADER: "2001:db8::17"});
    assert_eq!(source_of(ipv6, Some(&edge())).as_deref(), Some("2001:db8::17"));
}

#[test]
fn without_the_edge_header_the_gateway_source_stands() {
    // Edge configured, but the request came straight to the origin: no secret, no viewer.
    assert_eq!(source_of(json!({}), Some(&edge())).as_deref(), Some(GATEWAY_SOURCE));
    // The secret but no viewer address (or one that is not an address): the gateway's.
    assert_eq!(source_of(json!({ORIGIN_SECRET_HEADER: SECRET}), Some(&edge())).as_deref(), Some(GATEWAY_SOURCE));
    let garbage = json!({ORIGIN_SECRET_HEADER: SECRET, VIEWER_IP_HEADER: "198.51.100.7, 10.0.0.1"});
    assert_eq!(source_of(garbage, Some(&edge())).as_deref(), Some(GATEWAY_SOURCE));
}

#[test]
fn a_forged_viewer_address_is_ignored() {
    let forged = [
        // A caller at the origin naming an address, without the secret, with a wrong one, or
        // with a prefix of the right one.
        json!({VIEWER_IP_HEADER: "198.51.100.7"}),
        json!({ORIGIN_SECRET_HEADER: "guess", VIEWER_IP_HEADER: "198.51.100.7"}),
        json!({ORIGIN_SECRET_HEADER: &SECRET[..32], VIEWER_IP_HEADER: "198.51.100.7"}),
        json!({ORIGIN_SECRET_HEADER: format!("{SECRET}x"), VIEWER_IP_HEADER: "198.51.100.7"}),
        // Forwarding headers are never believed, with or without the edge.
        json!({"x-forwarded-for": "198.51.100.7", "forwarded": "for=198.51.100.7", "x-real-ip": "198.51.100.7"}),
    ];
    for headers in forged {
        assert_eq!(source_of(headers.clone(), Some(&edge())).as_deref(), Some(GATEWAY_SOURCE), "{headers}");
    }
    // With no edge configured, even the right secret vouches for nothing.
    let from_edge = json!({ORIGIN_SECRET_HEADER: SECRET, VIEWER_IP_HEADER: "198.51.100.7"});
    assert_eq!(source_of(from_edge, None).as_deref(), Some(GATEWAY_SOURCE));
}
