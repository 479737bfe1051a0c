//! Verifying a workload's OIDC token against its issuer's published keys, with the rules of our
//! own verifier: the algorithm is the key's (RS256 on an RSA key, ES256 on a P-256 key; never
//! `none`, never HMAC, so a token "signed" with the public key as an HMAC secret is refused
//! before any key is used), no key URL or key embedded in the header, and `iss`, `aud`, `exp`,
//! `nbf`, an `iat` not in the future and a maximum age since `iat`.

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use super::FederationRefusal;

/// A workload token is a few kilobytes at most; anything larger is refused unread.
pub const MAX_EXTERNAL_TOKEN_BYTES: usize = 16 * 1024;
/// Clock skew tolerated between the issuer and this service.
pub const LEEWAY_SECS: u64 = 60;

/// What the token must say.
#[derive(Debug, Clone)]
pub struct ExternalExpectations<'a> {
    pub issuer: &'a str,
    /// The audience `aud` must hold, or `None` to leave it to the trust policies (each names
    /// its own; `aud` must still be present).
    pub audience: Option<&'a str>,
    /// The longest a token may have lived (since `iat`) when it is presented.
    pub max_age_secs: u64,
    /// Unix seconds now.
    pub now: u64,
}

/// The algorithm `jwk` may sign with, if it is a key this service accepts.
fn algorithm_of(jwk: &Jwk) -> Option<Algorithm> {
    let by_type = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == jsonwebtoken::jwk::EllipticCurve::P256 => Algorithm::ES256,
        _ => return None,
    };
    // A key that names its algorithm must name that one.
    match jwk.common.key_algorithm {
        None => Some(by_type),
        Some(named) if format!("{named:?}") == format!("{by_type:?}") => Some(by_type),
        Some(_) => None,
    }
}

/// The `alg` a token's header names, if it has a JSON header naming one.
fn claimed_algorithm(token: &str) -> Option<String> {
    use base64::Engine;
    let header = token.split('.').next()?;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).ok()?;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&raw).ok()?;
    header.get("alg")?.as_str().map(str::to_owned)
}

/// The `iss` a token claims, unverified: only to choose which trusted issuer's keys to verify
/// it with (and then `iss` is verified too). Refuses what [`verify_external`] would refuse
/// before reading a key.
pub fn claimed_issuer(token: &str) -> Result<String, FederationRefusal> {
    use base64::Engine;
    if token.len() > MAX_EXTERNAL_TOKEN_BYTES {
        return Err(FederationRefusal::TooLarge(MAX_EXTERNAL_TOKEN_BYTES));
    }
    let mut parts = token.split('.');
    let (Some(_), Some(payload), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(FederationRefusal::Malformed);
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).map_err(|_| FederationRefusal::Malformed)?;
    let claims: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&raw).map_err(|_| FederationRefusal::Malformed)?;
    claims.get("iss").and_then(|v| v.as_str()).map(str::to_owned).ok_or(FederationRefusal::MissingClaim("iss"))
}

/// The verified claims of `token`, or why it is refused.
pub fn verify_external(
    token: &str,
    keys: &JwkSet,
    expect: &ExternalExpectations<'_>,
) -> Result<serde_json::Map<String, serde_json::Value>, FederationRefusal> {
    if token.len() > MAX_EXTERNAL_TOKEN_BYTES {
        return Err(FederationRefusal::TooLarge(MAX_EXTERNAL_TOKEN_BYTES));
    }
    // Before any key is looked at: only the two asymmetric algorithms (read here, so `none`,
    // which the library does not parse, is refused as an algorithm), and nothing in the header
    // that points elsewhere for a key.
    match claimed_algorithm(token).as_deref() {
        Some("RS256" | "ES256") => {}
        Some(_) => return Err(FederationRefusal::Algorithm),
        None => return Err(FederationRefusal::Malformed),
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| FederationRefusal::Malformed)?;
    if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
        return Err(FederationRefusal::Algorithm);
    }
    if header.jku.is_some() || header.x5u.is_some() || header.jwk.is_some() || header.x5c.is_some() {
        return Err(FederationRefusal::Header);
    }
    let kid = header.kid.ok_or(FederationRefusal::UnknownKey)?;
    let jwk = keys.keys.iter().find(|k| k.common.key_id.as_deref() == Some(kid.as_str())).ok_or(FederationRefusal::UnknownKey)?;
    if algorithm_of(jwk) != Some(header.alg) {
        return Err(FederationRefusal::Algorithm);
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|_| FederationRefusal::UnknownKey)?;
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[expect.issuer]);
    match expect.audience {
        Some(audience) => validation.set_audience(&[audience]),
        None => validation.validate_aud = false,
    }
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    // Times are checked below against the caller's clock, not the library's.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, &key, &validation).map_err(|e| {
        use jsonwebtoken::errors::ErrorKind;
        match e.kind() {
            ErrorKind::InvalidIssuer => FederationRefusal::UntrustedIssuer,
            ErrorKind::InvalidAudience => FederationRefusal::WrongAudience,
            ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
                "exp" => FederationRefusal::MissingClaim("exp"),
                "iss" => FederationRefusal::MissingClaim("iss"),
                "aud" => FederationRefusal::MissingClaim("aud"),
                _ => FederationRefusal::MissingClaim("sub"),
            },
            ErrorKind::InvalidSignature => FederationRefusal::Signature,
            _ => FederationRefusal::Malformed,
        }
    })?;
    let claims = data.claims;
    let time = |name: &'static str| claims.get(name).map(|v| v.as_u64().ok_or(FederationRefusal::Malformed)).transpose();
    let exp = time("exp")?.ok_or(FederationRefusal::MissingClaim("exp"))?;
    if expect.now > exp + LEEWAY_SECS {
        return Err(FederationRefusal::Expired);
    }
    if time("nbf")?.is_some_and(|nbf| nbf > expect.now + LEEWAY_SECS) {
        return Err(FederationRefusal::NotYetValid);
    }
    let iat = claims.get("iat").and_then(|v| v.as_u64()).ok_or(FederationRefusal::MissingClaim("iat"))?;
    if iat > expect.now + LEEWAY_SECS {
        return Err(FederationRefusal::IssuedInFuture);
    }
    if expect.now.saturating_sub(iat) > expect.max_age_secs + LEEWAY_SECS {
        return Err(FederationRefusal::TooOld);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::{EncodingKey, Header};
    use secrecy::ExposeSecret;
    use serde_json::json;

    use super::*;
    use crate::token::{SigningKey, SigningKeyDocument};

    struct Issuer {
        doc: SigningKeyDocument,
        jwks: JwkSet,
        public_json: String,
    }

    fn issuer() -> Issuer {
        let doc = SigningKeyDocument::generate().unwrap();
        let public = serde_json::to_value(SigningKey::from_document(&doc).unwrap().public_jwk()).unwrap();
        let jwks: JwkSet = serde_json::from_value(json!({"keys": [public.clone()]})).unwrap();
        Issuer { doc, jwks, public_json: public.to_string() }
    }

    const NOW: u64 = 1_800_000_000;

    fn expect() -> ExternalExpectations<'static> {
        ExternalExpectations { issuer: "https://ci.example", audience: Some("https://iam.example"), max_age_secs: 600, now: NOW }
    }

    fn claims() -> serde_json::Value {
        json!({"iss": "https://ci.example", "aud": "https://iam.example", "sub": "repo:acme/api:ref:refs/heads/main",
            "iat": NOW - 10, "nbf": NOW - 10, "exp": NOW + 300, "repository_id": "1"})
    }

    fn sign(issuer: &Issuer, claims: &serde_json::Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(issuer.doc.kid.clone());
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_rsa_pem(issuer.doc.private_key_pem.expose_secret().as_bytes()).unwrap())
            .unwrap()
    }

    fn with(change: impl FnOnce(&mut serde_json::Value)) -> serde_json::Value {
        let mut c = claims();
        change(&mut c);
        c
    }

    #[test]
    fn a_well_formed_token_is_verified_and_every_time_rule_holds() {
        let i = issuer();
        let verified = verify_external(&sign(&i, &claims()), &i.jwks, &expect()).unwrap();
        assert_eq!(verified["repository_id"], "1");
        let refused = |c: serde_json::Value| verify_external(&sign(&i, &c), &i.jwks, &expect()).unwrap_err();
        assert_eq!(refused(with(|c| c["exp"] = json!(NOW - 120))), FederationRefusal::Expired);
        assert_eq!(refused(with(|c| c["nbf"] = json!(NOW + 600))), FederationRefusal::NotYetValid);
        assert_eq!(refused(with(|c| c["iat"] = json!(NOW + 600))), FederationRefusal::IssuedInFuture);
        assert_eq!(refused(with(|c| c["iat"] = json!(NOW - 3600))), FederationRefusal::TooOld);
        assert_eq!(refused(with(|c| c["aud"] = json!("sts.amazonaws.com"))), FederationRefusal::WrongAudience);
        assert_eq!(refused(with(|c| c["iss"] = json!("https://evil.example"))), FederationRefusal::UntrustedIssuer);
        assert_eq!(refused(with(|c| drop(c.as_object_mut().unwrap().remove("iat")))), FederationRefusal::MissingClaim("iat"));
    }

    #[test]
    fn algorithms_are_pinned_to_the_key() {
        let i = issuer();
        let body = URL_SAFE_NO_PAD.encode(claims().to_string());
        // `alg: none`, unsigned.
        let none = format!("{}.{body}.", URL_SAFE_NO_PAD.encode(json!({"alg": "none", "kid": i.doc.kid}).to_string()));
        let refused = verify_external(&none, &i.jwks, &expect()).unwrap_err();
        assert_eq!(refused, FederationRefusal::Algorithm);
        // HS256 keyed with the issuer's public key, the classic confusion.
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(i.doc.kid.clone());
        let hmac = jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(i.public_json.as_bytes()).unwrap()).unwrap();
        assert_eq!(verify_external(&hmac, &i.jwks, &expect()).unwrap_err(), FederationRefusal::Algorithm);
        // A key the token names but the issuer does not publish; a key URL in the header.
        let other = issuer();
        assert_eq!(verify_external(&sign(&other, &claims()), &i.jwks, &expect()).unwrap_err(), FederationRefusal::UnknownKey);
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(i.doc.kid.clone());
        header.jku = Some("https://evil.example/jwks".into());
        let pointed =
            jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_rsa_pem(i.doc.private_key_pem.expose_secret().as_bytes()).unwrap())
                .unwrap();
        assert_eq!(verify_external(&pointed, &i.jwks, &expect()).unwrap_err(), FederationRefusal::Header);
        // Another issuer's key under this issuer's kid: the signature does not verify.
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(i.doc.kid.clone());
        let forged = jsonwebtoken::encode(
            &header,
            &claims(),
            &EncodingKey::from_rsa_pem(other.doc.private_key_pem.expose_secret().as_bytes()).unwrap(),
        )
        .unwrap();
        assert_eq!(verify_external(&forged, &i.jwks, &expect()).unwrap_err(), FederationRefusal::Signature);
        assert_eq!(
            verify_external(&"a".repeat(MAX_EXTERNAL_TOKEN_BYTES + 1), &i.jwks, &expect()).unwrap_err(),
            FederationRefusal::TooLarge(MAX_EXTERNAL_TOKEN_BYTES)
        );
    }
}
