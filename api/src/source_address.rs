//! Where a request came from: API Gateway's `sourceIp` in Lambda, the TCP peer locally, and,
//! behind the optional CloudFront edge (`edge.yaml`), the viewer's address that the edge
//! writes into [`VIEWER_IP_HEADER`]. That header is believed only on a request that also
//! carries the edge's shared secret in [`ORIGIN_SECRET_HEADER`]: without it, anyone calling
//! the origin directly could name any address they like. No other client-supplied header
//! (`X-Forwarded-For`, say) is ever believed.

use std::net::IpAddr;
use std::sync::OnceLock;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use lambda_http::request::RequestContext;
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use crate::config;

/// The shared secret CloudFront adds to every origin request (an origin custom header, which
/// overwrites any viewer header of that name).
pub const ORIGIN_SECRET_HEADER: &str = "x-iam-origin-secret";
/// The viewer's address, set by the edge's viewer-request function (which overwrites any
/// viewer header of that name).
pub const VIEWER_IP_HEADER: &str = "x-iam-viewer-ip";

/// The edge this deployment sits behind (`IAM_EDGE_ORIGIN_SECRET`), when it has one.
pub struct EdgeTrust {
    origin_secret: SecretString,
}

impl EdgeTrust {
    pub fn new(origin_secret: SecretString) -> Self {
        Self { origin_secret }
    }

    /// Whether `parts` carries the edge's secret, compared in constant time.
    fn vouches_for(&self, parts: &Parts) -> bool {
        parts
            .headers
            .get(ORIGIN_SECRET_HEADER)
            .is_some_and(|given| bool::from(given.as_bytes().ct_eq(self.origin_secret.expose_secret().as_bytes())))
    }
}

/// The edge of this process, read once from the environment.
fn configured_edge() -> Option<&'static EdgeTrust> {
    static EDGE: OnceLock<Option<EdgeTrust>> = OnceLock::new();
    EDGE.get_or_init(|| config::edge_origin_secret().map(EdgeTrust::new)).as_ref()
}

/// The caller's network address as this process can establish it (see the module's comment).
pub struct SourceAddress(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for SourceAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(source_address(parts, configured_edge())))
    }
}

/// The address of the request in `parts`, given the edge (if any) this deployment trusts.
pub fn source_address(parts: &Parts, edge: Option<&EdgeTrust>) -> Option<String> {
    if edge.is_some_and(|e| e.vouches_for(parts)) {
        let viewer = parts.headers.get(VIEWER_IP_HEADER).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<IpAddr>().ok());
        if let Some(viewer) = viewer {
            return Some(viewer.to_string());
        }
        // The edge always sets it; without one, fall back to what the connection shows.
        tracing::warn!("a request from the edge carried no valid viewer address");
    }
    if let Some(RequestContext::ApiGatewayV2(ctx)) = parts.extensions.get::<RequestContext>() {
        return ctx.http.source_ip.clone();
    }
    parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip().to_string())
}
