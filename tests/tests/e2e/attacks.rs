//! RFC 8725 attacks against the verifier crate and the management routes: every forged,
//! altered or misdirected token is refused.

use axum::http::{Method, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use iam_tests::{AUDIENCE, ISSUER, TestApp};
use iam_verifier::Expectations;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

struct Forge {
    claims: Value,
    kid: String,
    real_key: EncodingKey,
    other_key: EncodingKey,
    public_pem: Vec<u8>,
}

impl Forge {
    fn header(&self) -> Header {
        let mut h = Header::new(Algorithm::RS256);
        h.typ = Some("at+jwt".into());
        h.kid = Some(self.kid.clone());
        h
    }

    fn with_real_key(&self, header: Header, claims: &Value) -> String {
        jsonwebtoken::encode(&header, claims, &self.real_key).unwrap()
    }

    fn claims_with(&self, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
        let mut c = self.claims.clone();
        edit(c.as_object_mut().unwrap());
        c
    }

    fn all(&self) -> Vec<(&'static str, String)> {
        let now = chrono::Utc::now().timestamp();
        let mut forged = Vec::new();
        for alg in ["none", "None", "NONE", "nOnE"] {
            let header = json!({"alg": alg, "typ": "at+jwt", "kid": self.kid});
            forged.push(("alg none", format!("{}.{}.", b64(&header), b64(&self.claims))));
        }
        let mut hs = Header::new(Algorithm::HS256);
        hs.typ = Some("at+jwt".into());
        hs.kid = Some(self.kid.clone());
        forged.push((
            "HS256 keyed with the RSA public key",
            jsonwebtoken::encode(&hs, &self.claims, &EncodingKey::from_secret(&self.public_pem).unwrap()).unwrap(),
        ));
        let mut unknown = self.header();
        unknown.kid = Some("no-such-key".into());
        forged.push(("unknown kid", jsonwebtoken::encode(&unknown, &self.claims, &self.other_key).unwrap()));
        for kid in ["../../../../etc/passwd", "' OR '1'='1' --", "k1\u{0000}", "/dev/null"] {
            let mut h = self.header();
            h.kid = Some(kid.into());
            forged.push(("kid with path or SQL characters", jsonwebtoken::encode(&h, &self.claims, &self.other_key).unwrap()));
        }
        let mut no_kid = self.header();
        no_kid.kid = None;
        forged.push(("no kid", self.with_real_key(no_kid, &self.claims)));
        let mut signed_by_stranger = self.header();
        signed_by_stranger.kid = Some(self.kid.clone());
        forged.push(("right kid, wrong key", jsonwebtoken::encode(&signed_by_stranger, &self.claims, &self.other_key).unwrap()));
        let mut jku = self.header();
        jku.jku = Some("https://evil.example/jwks.json".into());
        forged.push(("jku header", self.with_real_key(jku, &self.claims)));
        let mut x5u = self.header();
        x5u.x5u = Some("https://evil.example/cert.pem".into());
        forged.push(("x5u header", self.with_real_key(x5u, &self.claims)));
        let embedded: jsonwebtoken::jwk::Jwk = serde_json::from_value(json!({"kty": "oct", "k": "c2VjcmV0"})).unwrap();
        let mut jwk = self.header();
        jwk.jwk = Some(embedded);
        forged.push(("jwk header", self.with_real_key(jwk, &self.claims)));
        forged.push((
            "missing exp",
            self.with_real_key(
                self.header(),
                &self.claims_with(|c| {
                    c.remove("exp");
                }),
            ),
        ));
        forged.push((
            "expired",
            self.with_real_key(
                self.header(),
                &self.claims_with(|c| {
                    c.insert("exp".into(), json!(now - 120));
                }),
            ),
        ));
        forged.push((
            "nbf in the future",
            self.with_real_key(
                self.header(),
                &self.claims_with(|c| {
                    c.insert("nbf".into(), json!(now + 600));
                }),
            ),
        ));
        forged.push((
            "wrong iss",
            self.with_real_key(
                self.header(),
                &self.claims_with(|c| {
                    c.insert("iss".into(), json!("https://evil.example/iam"));
                }),
            ),
        ));
        forged.push((
            "wrong aud",
            self.with_real_key(
                self.header(),
                &self.claims_with(|c| {
                    c.insert("aud".into(), json!("someone-else"));
                }),
            ),
        ));
        let mut typ = self.header();
        typ.typ = Some("JWT".into());
        forged.push(("wrong typ", self.with_real_key(typ, &self.claims)));
        let mut no_typ = self.header();
        no_typ.typ = None;
        forged.push(("no typ", self.with_real_key(no_typ, &self.claims)));
        forged.push((
            "over 8 KiB",
            self.with_real_key(
                self.header(),
                &self.claims_with(|c| {
                    c.insert("padding".into(), json!("x".repeat(9000)));
                }),
            ),
        ));
        let genuine = self.with_real_key(self.header(), &self.claims);
        let mut parts: Vec<&str> = genuine.split('.').collect();
        let tampered_claims = b64(&self.claims_with(|c| {
            c.insert("scope".into(), json!("iam:api-keys:read iam:api-keys:write iam:credentials:write"));
        }));
        parts[1] = &tampered_claims;
        forged.push(("claims altered after signing", parts.join(".")));
        forged.push(("garbage", "a.b.c".into()));
        forged.push(("empty", String::new()));
        forged
    }
}

async fn forge(app: &TestApp) -> Forge {
    let genuine = app.downstream_token(&app.acme_key).await;
    let claims = jsonwebtoken::dangerous::insecure_decode::<Value>(&genuine).unwrap().claims;
    let kid = jsonwebtoken::decode_header(&genuine).unwrap().kid.unwrap();
    let doc = iam_tests::signing_key();
    let real_key = EncodingKey::from_rsa_pem(doc.private_key_pem.expose_secret().as_bytes()).unwrap();
    let other = iam_shared::token::SigningKeyDocument::generate().unwrap();
    let other_key = EncodingKey::from_rsa_pem(other.private_key_pem.expose_secret().as_bytes()).unwrap();
    use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey};
    let private = rsa::PrivateKey::from_pkcs8_pem(doc.private_key_pem.expose_secret()).unwrap();
    let public_pem = private.to_public_key().to_public_key_pem(rsa::pkcs8::LineEnding::LF).unwrap().into_bytes();
    Forge { claims, kid, real_key, other_key, public_pem }
}

#[tokio::test]
async fn the_verifier_refuses_every_attack() {
    let app = TestApp::new().await;
    let forge = forge(&app).await;
    let jwks = app.call(Method::GET, "/iam/.well-known/jwks.json", None, None).await;
    let keys = iam_verifier::keys_from_jwks(jwks.raw.as_bytes()).unwrap();
    let expect = Expectations::new(ISSUER, AUDIENCE).for_organisation("acme");
    // The control: a genuine token passes, so the refusals below are about the attacks.
    let genuine = app.downstream_token(&app.acme_key).await;
    assert!(iam_verifier::verify(&genuine, &keys, &expect).is_ok());
    let attacks = forge.all();
    assert!(attacks.len() >= 25);
    for (name, token) in attacks {
        assert!(iam_verifier::verify(&token, &keys, &expect).is_err(), "the verifier accepted: {name}");
    }
    // A genuine token of another organisation, for a service that holds acme's data only.
    let globex = app.downstream_token(&app.globex_key).await;
    assert_eq!(iam_verifier::verify(&globex, &keys, &expect).unwrap_err(), iam_verifier::Rejection::OtherOrganisation);
    let any_organisation = Expectations::new(ISSUER, AUDIENCE);
    assert_eq!(iam_verifier::verify(&globex, &keys, &any_organisation).unwrap().org_id, "globex", "unset, any organisation verifies");
    // The same through the JWKS-fetching verifier a downstream service uses.
    let remote = iam_verifier::RemoteVerifier::new(
        format!("{ISSUER}/.well-known/jwks.json"),
        Expectations::new(format!("{ISSUER}/"), AUDIENCE),
        iam_tests::RouterFetch(app.router.clone()),
    )
    .for_organisation("acme");
    assert_eq!(remote.verify(&genuine).await.unwrap().org_id, "acme", "a trailing '/' on the issuer is no different");
    assert_eq!(remote.verify(&globex).await.unwrap_err(), iam_verifier::Rejection::OtherOrganisation);
}

#[tokio::test]
async fn the_management_routes_refuse_every_attack() {
    let app = TestApp::new().await;
    let forge = forge(&app).await;
    for (name, token) in forge.all() {
        let r = app.call(Method::GET, "/iam/api-keys", Some(&token), None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "the management API accepted: {name}");
    }
}

#[tokio::test]
async fn a_valid_token_of_another_organisation_reaches_nothing_here() {
    let app = TestApp::new().await;
    let acme = app.admin().await;
    let p = app.create_principal(&acme, "acme-only").await;
    let globex = app.token(&app.globex_key).await;
    for (method, uri) in [(Method::GET, format!("/iam/api-keys/{p}")), (Method::GET, format!("/iam/api-keys/{p}/credentials"))] {
        assert_eq!(app.call(method, &uri, Some(&globex), None).await.status, StatusCode::NOT_FOUND);
    }
    let list = app.call(Method::GET, "/iam/api-keys", Some(&globex), None).await;
    assert!(!list.raw.contains(&p));
}
