//! Requests the service makes to addresses outside itself (GitHub's key endpoint today; an
//! issuer's discovery document and webhooks next). Each is an attack surface: whoever controls
//! the URL or its DNS would otherwise make the service reach its own network (the instance
//! metadata service, a database, the Lambda runtime API on loopback). So:
//!
//! - https only (plain http only to a loopback host, and only when the operator's
//!   `allow_loopback` switch is on, for local testing);
//! - the address connected to must be public: the resolver that the connector uses refuses a
//!   name with any forbidden address, so the check and the connection use one DNS answer (a
//!   rebinding answer between them cannot exist), and an IP literal in the URL, which the
//!   connector would not resolve, is checked before connecting;
//! - no redirects, bounded size and time.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::http::uri::Scheme;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;

/// Why an outbound request was not made, or failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboundError {
    #[error("the URL is not one the service may fetch: {0}")]
    Url(String),
    #[error("{host} resolves to {address}, which is not a public address")]
    ForbiddenAddress { host: String, address: IpAddr },
    #[error("{0} could not be resolved")]
    Resolve(String),
    #[error("the server answered a redirect (HTTP {0}), which is not followed")]
    Redirect(u16),
    #[error("the server answered HTTP {0}")]
    Status(u16),
    #[error("the answer is larger than {0} bytes")]
    TooLarge(usize),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the request failed: {0}")]
    Transport(String),
}

/// The operator's choices for outbound requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboundRules {
    /// Allows loopback addresses (and plain http to them): for tests and local issuers only.
    /// Off in every deployed template: in Lambda, loopback is the runtime's own API.
    pub allow_loopback: bool,
    pub max_bytes: usize,
    pub timeout: Duration,
}

impl Default for OutboundRules {
    fn default() -> Self {
        Self { allow_loopback: false, max_bytes: 256 * 1024, timeout: Duration::from_secs(5) }
    }
}

/// Whether the service must not connect to `ip`: anything but a public unicast address.
/// Addresses that embed an IPv4 address (IPv4-mapped and -compatible, NAT64, 6to4) are judged
/// by the address they embed, so `::ffff:169.254.169.254` is the metadata service too.
pub fn is_forbidden(ip: IpAddr, allow_loopback: bool) -> bool {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4, allow_loopback),
        IpAddr::V6(v6) if v6.is_loopback() => !allow_loopback,
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => forbidden_v4(v4, allow_loopback),
            None => forbidden_v6(v6),
        },
    }
}

fn forbidden_v4(ip: Ipv4Addr, allow_loopback: bool) -> bool {
    let [a, b, c, _] = ip.octets();
    if ip.is_loopback() {
        return !allow_loopback;
    }
    a == 0                                  // "this network", 0.0.0.0 included
        || ip.is_private()                  // 10/8, 172.16/12, 192.168/16
        || ip.is_link_local()               // 169.254/16: the instance metadata service
        || (a == 100 && (b & 0xc0) == 64)   // 100.64/10: carrier-grade NAT
        || (a == 192 && b == 0 && c == 0)   // 192.0.0/24: IETF protocol assignments
        || (a == 198 && (b & 0xfe) == 18)   // 198.18/15: benchmarking
        || (a == 192 && b == 88 && c == 99) // 192.88.99/24: 6to4 relay anycast (deprecated)
        || ip.is_documentation()
        || ip.is_multicast()
        || a >= 240 // reserved, and the broadcast address
}

fn forbidden_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    ip.is_unspecified()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00            // fc00::/7 unique local, fd00:ec2::254 included
        || (s[0] & 0xffc0) == 0xfe80            // fe80::/10 link-local
        || (s[0] & 0xffc0) == 0xfec0            // fec0::/10 site-local (deprecated)
        || (s[0] == 0x2001 && s[1] == 0x0db8)   // documentation
        || (s[0] == 0x2001 && s[1] == 0)        // Teredo: tunnels to anywhere
        || (s[0] == 0x0064 && s[1] == 0xff9b && s[2] == 1) // 64:ff9b:1::/48, local-use NAT64
        || (s[0] == 0x0100 && s[1] == 0 && s[2] == 0 && s[3] == 0) // 100::/64 discard
        || (s[0] & 0xfff0) == 0x3ff0            // 3fff::/20 documentation
        || (s[0] == 0x2001 && s[1] == 2 && s[2] == 0) // 2001:2::/48 benchmarking
        || (s[0] == 0x2001 && (s[1] & 0xfff0) == 0x0020) // 2001:20::/28 ORCHIDv2
        || s[0] == 0x5f00 // 5f00::/16 SRv6 segment identifiers
}

/// The IPv4 address an IPv6 one carries: mapped (`::ffff:a.b.c.d`), compatible (`::a.b.c.d`),
/// translated (`::ffff:0:a.b.c.d`), well-known NAT64 (`64:ff9b::/96`), or 6to4
/// (`2002:AABB:CCDD::/48`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let tail = || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    // Compatible `::a.b.c.d`, translated `::ffff:0:a.b.c.d` (SIIT), well-known NAT64.
    if s[..6] == [0; 6] || (s[..4] == [0; 4] && s[4] == 0xffff && s[5] == 0) || (s[0] == 0x0064 && s[1] == 0xff9b && s[2..6] == [0; 4]) {
        return Some(tail());
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8));
    }
    None
}

/// Looks up a host name's addresses: the system's resolver in production, a table in tests
/// (which is how a hostile DNS answer is simulated).
pub trait Resolve: Send + Sync + 'static {
    fn lookup(&self, host: &str) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send + '_>>;
}

/// The operating system's resolver, through tokio's blocking pool.
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn lookup(&self, host: &str) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send + '_>> {
        let host = host.to_owned();
        Box::pin(async move { Ok(tokio::net::lookup_host((host.as_str(), 0)).await?.map(|a| a.ip()).collect()) })
    }
}

/// The connector's resolver: answers a name's addresses only when every one is allowed, so
/// the connection is made to an address this check saw.
#[derive(Clone)]
struct CheckingResolver {
    inner: Arc<dyn Resolve>,
    allow_loopback: bool,
}

type Resolving = Pin<Box<dyn Future<Output = Result<std::vec::IntoIter<SocketAddr>, Box<dyn std::error::Error + Send + Sync>>> + Send>>;

impl tower_service::Service<Name> for CheckingResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Resolving;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let (inner, allow_loopback) = (self.inner.clone(), self.allow_loopback);
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addresses = inner.lookup(&host).await.map_err(|_| Box::new(OutboundError::Resolve(host.clone())))?;
            if addresses.is_empty() {
                return Err(Box::new(OutboundError::Resolve(host)) as Self::Error);
            }
            if let Some(&address) = addresses.iter().find(|ip| is_forbidden(**ip, allow_loopback)) {
                return Err(Box::new(OutboundError::ForbiddenAddress { host, address }) as Self::Error);
            }
            Ok(addresses.into_iter().map(|ip| SocketAddr::new(ip, 0)).collect::<Vec<_>>().into_iter())
        })
    }
}

/// An HTTP client held to the rules above.
pub struct Outbound {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector<CheckingResolver>>, Full<Bytes>>,
    rules: OutboundRules,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound").field("rules", &self.rules).finish_non_exhaustive()
    }
}

impl Outbound {
    pub fn new(rules: OutboundRules) -> Result<Self, OutboundError> {
        Self::with_resolver(rules, Arc::new(SystemResolver))
    }

    pub fn with_resolver(rules: OutboundRules, resolver: Arc<dyn Resolve>) -> Result<Self, OutboundError> {
        let mut http = HttpConnector::new_with_resolver(CheckingResolver { inner: resolver, allow_loopback: rules.allow_loopback });
        http.enforce_http(false);
        http.set_connect_timeout(Some(rules.timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(rustls::crypto::ring::default_provider())
            .map_err(|e| OutboundError::Transport(format!("no root certificates: {e}")))?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(hyper_util::rt::TokioExecutor::new()).build(https);
        Ok(Self { client, rules })
    }

    /// The URL, parsed by the parser the connector uses, if the rules allow fetching it: https
    /// (or http to a loopback host, when loopback is allowed), and an IP-literal host allowed.
    pub fn check_url(&self, url: &str) -> Result<hyper::Uri, OutboundError> {
        check_url(url, self.rules.allow_loopback)
    }

    /// GETs `url` and answers its body, under the rules: a redirect or any status other than
    /// 2xx is an error, as is a body over the size bound or an answer over the time bound.
    pub async fn get(&self, url: &str) -> Result<Vec<u8>, OutboundError> {
        let uri = self.check_url(url)?;
        let request = hyper::Request::get(uri)
            .header(hyper::header::USER_AGENT, concat!("infuse-iam/", env!("CARGO_PKG_VERSION")))
            .header(hyper::header::ACCEPT, "application/json")
            .body(Full::new(Bytes::new()))
            .map_err(|e| OutboundError::Url(e.to_string()))?;
        let max_bytes = self.rules.max_bytes;
        let fetch = async {
            let response = self.client.request(request).await.map_err(|e| connect_error(&e))?;
            let status = response.status();
            if status.is_redirection() {
                return Err(OutboundError::Redirect(status.as_u16()));
            }
            if !status.is_success() {
                return Err(OutboundError::Status(status.as_u16()));
            }
            let body = Limited::new(response.into_body(), max_bytes).collect().await.map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    OutboundError::TooLarge(max_bytes)
                } else {
                    OutboundError::Transport(e.to_string())
                }
            })?;
            Ok(body.to_bytes().to_vec())
        };
        tokio::time::timeout(self.rules.timeout, fetch).await.map_err(|_| OutboundError::Timeout(self.rules.timeout))?
    }
}

impl Outbound {
    /// POSTs `body` to `url` under the rules and answers the status (a redirect is an error;
    /// the answer's body is read up to the size bound and dropped).
    pub async fn post(&self, url: &str, headers: &[(&str, String)], body: Vec<u8>) -> Result<u16, OutboundError> {
        self.send_post(url, headers, body, false).await.map(|(status, _)| status)
    }

    /// POSTs a form to `url` under the rules and answers the status and the body (a redirect is
    /// an error, as is a body over the size bound): an OAuth token request.
    pub async fn post_form(&self, url: &str, form: &[(&str, &str)]) -> Result<(u16, Vec<u8>), OutboundError> {
        let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish().into_bytes();
        let headers = [("content-type", "application/x-www-form-urlencoded".to_owned()), ("accept", "application/json".to_owned())];
        self.send_post(url, &headers, body, true).await
    }

    async fn send_post(
        &self,
        url: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
        keep_body: bool,
    ) -> Result<(u16, Vec<u8>), OutboundError> {
        let uri = self.check_url(url)?;
        let mut request = hyper::Request::post(uri).header(hyper::header::USER_AGENT, concat!("infuse-iam/", env!("CARGO_PKG_VERSION")));
        for (name, value) in headers {
            request = request.header(*name, value.as_str());
        }
        let request = request.body(Full::new(Bytes::from(body))).map_err(|e| OutboundError::Url(e.to_string()))?;
        let max_bytes = self.rules.max_bytes;
        let send = async {
            let response = self.client.request(request).await.map_err(|e| connect_error(&e))?;
            let status = response.status();
            if status.is_redirection() {
                return Err(OutboundError::Redirect(status.as_u16()));
            }
            let read = Limited::new(response.into_body(), max_bytes).collect().await;
            if !keep_body {
                // Read (bounded) so the connection can be reused; what it says is not kept.
                return Ok((status.as_u16(), Vec::new()));
            }
            let body = read.map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    OutboundError::TooLarge(max_bytes)
                } else {
                    OutboundError::Transport(e.to_string())
                }
            })?;
            Ok((status.as_u16(), body.to_bytes().to_vec()))
        };
        tokio::time::timeout(self.rules.timeout, send).await.map_err(|_| OutboundError::Timeout(self.rules.timeout))?
    }
}

/// The resolver's own refusal when it caused the failure, else the transport's words.
fn connect_error(error: &hyper_util::client::legacy::Error) -> OutboundError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(refusal) = e.downcast_ref::<OutboundError>() {
            return refusal.clone();
        }
        source = e.source();
    }
    OutboundError::Transport(error.to_string())
}

/// A webhook endpoint's URL, checked when it is set: the rules of every outbound request, and no
/// credentials in it (they would be stored and shown). Its DNS answer is checked again at each
/// delivery, by the connector.
pub fn check_webhook_url(url: &str, allow_loopback: bool) -> Result<(), OutboundError> {
    let uri = check_url(url, allow_loopback)?;
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(OutboundError::Url("a URL with credentials in it is not accepted".into()));
    }
    Ok(())
}

fn check_url(url: &str, allow_loopback: bool) -> Result<hyper::Uri, OutboundError> {
    let uri: hyper::Uri = url.parse().map_err(|_| OutboundError::Url(format!("{url} is not a URL")))?;
    let host = uri.host().ok_or_else(|| OutboundError::Url(format!("{url} names no host")))?;
    let literal = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().ok();
    if let Some(address) = literal.filter(|ip| is_forbidden(*ip, allow_loopback)) {
        return Err(OutboundError::ForbiddenAddress { host: host.to_owned(), address });
    }
    let loopback_host = host.eq_ignore_ascii_case("localhost") || literal.is_some_and(|ip| ip.is_loopback());
    match uri.scheme() {
        Some(s) if *s == Scheme::HTTPS => Ok(uri),
        Some(s) if *s == Scheme::HTTP && allow_loopback && loopback_host => Ok(uri),
        _ => Err(OutboundError::Url(format!("{url}: only https is allowed"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_unicast_addresses_are_allowed() {
        let forbidden = [
            "127.0.0.1",
            "127.3.4.5",
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.0.1",
            "100.64.0.1",
            "100.127.255.255",
            "192.0.0.8",
            "198.18.0.1",
            "192.0.2.1",
            "198.51.100.1",
            "203.0.113.1",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00:ec2::254",
            "fc00::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "2001::1",
            "::ffff:169.254.169.254",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::1",
            "2002:a9fe:a9fe::1",
            "2002:0a00:0001::1",
            "100::1",
        ];
        for address in forbidden {
            assert!(is_forbidden(address.parse().unwrap(), false), "{address} must be forbidden");
        }
        let allowed =
            ["140.82.112.3", "8.8.8.8", "1.1.1.1", "100.128.0.1", "172.32.0.1", "2606:4700::1111", "::ffff:8.8.8.8", "2002:0808:0808::1"];
        for address in allowed {
            assert!(!is_forbidden(address.parse().unwrap(), false), "{address} is public");
        }
        assert!(!is_forbidden("127.0.0.1".parse().unwrap(), true) && !is_forbidden("::1".parse().unwrap(), true), "loopback when allowed");
        assert!(is_forbidden("169.254.169.254".parse().unwrap(), true), "the metadata service never");
    }

    #[test]
    fn urls_must_be_https_except_to_loopback_when_allowed() {
        assert!(check_url("https://api.github.com/meta/public_keys/secret_scanning", false).is_ok());
        for url in ["http://api.github.com/x", "ftp://example.com/", "example.com", "https:///nohost"] {
            assert!(matches!(check_url(url, false), Err(OutboundError::Url(_))), "{url}");
        }
        for url in
            ["https://169.254.169.254/latest/meta-data", "https://[fd00:ec2::254]/", "https://[::ffff:a9fe:a9fe]/", "https://127.0.0.1/"]
        {
            assert!(matches!(check_url(url, false), Err(OutboundError::ForbiddenAddress { .. })), "{url}");
        }
        assert!(check_url("http://127.0.0.1:8080/keys", true).is_ok());
        assert!(check_url("http://localhost:8080/keys", true).is_ok());
        assert!(check_url("http://localhost:8080/keys", false).is_err());
        assert!(check_url("http://example.com/keys", true).is_err(), "plain http only to loopback");
    }

    struct Table(Vec<IpAddr>);

    impl Resolve for Table {
        fn lookup(&self, _: &str) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send + '_>> {
            let answer = self.0.clone();
            Box::pin(async move { Ok(answer) })
        }
    }

    #[tokio::test]
    async fn a_name_resolving_to_a_forbidden_address_is_never_connected_to() {
        for answer in [vec!["169.254.169.254"], vec!["140.82.112.3", "10.0.0.7"], vec!["fd00:ec2::254"], vec!["127.0.0.1"]] {
            let addresses: Vec<IpAddr> = answer.iter().map(|a| a.parse().unwrap()).collect();
            let outbound = Outbound::with_resolver(OutboundRules::default(), Arc::new(Table(addresses))).unwrap();
            let refused = outbound.get("https://keys.example.test/").await;
            assert!(matches!(refused, Err(OutboundError::ForbiddenAddress { .. })), "{answer:?}: {refused:?}");
        }
        let outbound = Outbound::with_resolver(OutboundRules::default(), Arc::new(Table(vec![]))).unwrap();
        assert!(matches!(outbound.get("https://nothing.example.test/").await, Err(OutboundError::Resolve(_))));
    }
}
