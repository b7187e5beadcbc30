//! Identity tokens from a production identity provider: RS256 and ES256
//! signed with keys generated here, checked through a JWKS file (by `kid`)
//! or one PEM public key, with `iss` and `aud` enforced; and every way a
//! token can be wrong answered 401.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{TimeDelta, Utc};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};

use crate::helpers::{TEST_JWT_SECRET, TestApp, assert_problem, sign, spawn_app_with};

const ISSUER: &str = "https://id.example.test/";
const AUDIENCE: &str = "boxoffice";

/// An identity provider: an RSA and a P-256 key, their public halves as a
/// key set and as PEM files.
struct Provider {
    rsa: EncodingKey,
    ec: EncodingKey,
    rsa_public_pem: String,
    jwks: Value,
}

fn provider() -> Provider {
    let mut rng = rand_core_06::OsRng;
    let rsa_key = rsa::RsaPrivateKey::new(&mut rng, 2048).unwrap();
    let rsa_public = rsa_key.to_public_key();
    let ec_key = p256::SecretKey::random(&mut rng);
    let mut ec_jwk: Value = serde_json::from_str(&ec_key.public_key().to_jwk_string()).unwrap();
    ec_jwk["kid"] = json!("ec-1");
    ec_jwk["alg"] = json!("ES256");
    ec_jwk["use"] = json!("sig");
    let b64 = |bytes: Vec<u8>| URL_SAFE_NO_PAD.encode(bytes);
    Provider {
        rsa: EncodingKey::from_rsa_pem(rsa_key.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes())
            .unwrap(),
        ec: EncodingKey::from_ec_pem(ec_key.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes())
            .unwrap(),
        rsa_public_pem: rsa_public.to_public_key_pem(LineEnding::LF).unwrap(),
        jwks: json!({"keys": [
            {"kty": "RSA", "kid": "rsa-1", "alg": "RS256", "use": "sig",
             "n": b64(rsa_public.n().to_bytes_be()), "e": b64(rsa_public.e().to_bytes_be())},
            ec_jwk,
        ]}),
    }
}

fn claims(user: i64) -> Value {
    json!({
        "sub": user.to_string(),
        "iss": ISSUER,
        "aud": AUDIENCE,
        "exp": (Utc::now() + TimeDelta::minutes(10)).timestamp(),
        "iat": Utc::now().timestamp(),
    })
}

fn signed(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

/// A token whose header says `alg: none`, with no signature.
fn unsigned(claims: &Value) -> String {
    let part = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
    format!(
        "{}.{}.",
        part(&json!({"alg": "none", "typ": "JWT"})),
        part(claims)
    )
}

async fn wallet_status(app: &TestApp, token: &str) -> u16 {
    app.get("/v1/wallet")
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_providers_rs256_and_es256_tokens_are_checked_against_its_key_set() {
    let idp = provider();
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, idp.jwks.to_string()).unwrap();
    let app = spawn_app_with(|s| {
        s.jwt_jwks_file = Some(jwks.clone());
        s.jwt_issuer = Some(ISSUER.into());
        s.jwt_audience = Some(AUDIENCE.into());
    })
    .await;

    let rs = signed(Algorithm::RS256, Some("rsa-1"), &idp.rsa, &claims(41));
    assert_eq!(wallet_status(&app, &rs).await, 200, "RS256 by kid");
    let es = signed(Algorithm::ES256, Some("ec-1"), &idp.ec, &claims(42));
    assert_eq!(wallet_status(&app, &es).await, 200, "ES256 by kid");
    let mut admin = claims(43);
    admin["role"] = json!("admin");
    let admin = signed(Algorithm::RS256, Some("rsa-1"), &idp.rsa, &admin);
    let resp = app
        .get("/v1/admin/alerts")
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "the role claim is honoured");
    let resp = app
        .get("/v1/admin/alerts")
        .bearer_auth(&rs)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403, "no role claim: a user");

    let with = |edit: &dyn Fn(&mut Value)| {
        let mut c = claims(44);
        edit(&mut c);
        c
    };
    let public_pem = idp.rsa_public_pem.as_bytes();
    let refused: Vec<(&str, String)> = vec![
        (
            "an unknown kid",
            signed(Algorithm::RS256, Some("rsa-2"), &idp.rsa, &claims(44)),
        ),
        (
            "no kid with two keys",
            signed(Algorithm::RS256, None, &idp.rsa, &claims(44)),
        ),
        (
            "the EC key's kid on an RS256 token",
            signed(Algorithm::RS256, Some("ec-1"), &idp.rsa, &claims(44)),
        ),
        (
            "signed by another key under a known kid",
            signed(Algorithm::ES256, Some("ec-1"), &provider().ec, &claims(44)),
        ),
        (
            "another issuer",
            signed(
                Algorithm::RS256,
                Some("rsa-1"),
                &idp.rsa,
                &with(&|c| c["iss"] = json!("https://evil.test/")),
            ),
        ),
        (
            "no issuer",
            signed(
                Algorithm::RS256,
                Some("rsa-1"),
                &idp.rsa,
                &with(&|c| {
                    c.as_object_mut().unwrap().remove("iss");
                }),
            ),
        ),
        (
            "another audience",
            signed(
                Algorithm::RS256,
                Some("rsa-1"),
                &idp.rsa,
                &with(&|c| c["aud"] = json!("someone-else")),
            ),
        ),
        (
            "no audience",
            signed(
                Algorithm::RS256,
                Some("rsa-1"),
                &idp.rsa,
                &with(&|c| {
                    c.as_object_mut().unwrap().remove("aud");
                }),
            ),
        ),
        (
            "expired",
            signed(
                Algorithm::RS256,
                Some("rsa-1"),
                &idp.rsa,
                &with(&|c| c["exp"] = json!((Utc::now() - TimeDelta::minutes(1)).timestamp())),
            ),
        ),
        ("alg none", unsigned(&claims(44))),
        (
            "HS256 with the public key as the secret",
            signed(
                Algorithm::HS256,
                Some("rsa-1"),
                &EncodingKey::from_secret(public_pem),
                &claims(44),
            ),
        ),
        (
            "HS256 with the development secret",
            sign(claims(44), TEST_JWT_SECRET),
        ),
    ];
    for (what, token) in refused {
        let resp = app
            .get("/v1/wallet")
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{what}");
        assert_problem(resp, 401, "unauthorized").await;
    }
}

#[tokio::test]
async fn one_pem_public_key_checks_tokens_without_a_kid() {
    let idp = provider();
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("idp.pem");
    std::fs::write(&pem, &idp.rsa_public_pem).unwrap();
    let app = spawn_app_with(|s| {
        s.jwt_public_key_file = Some(pem.clone());
        s.jwt_issuer = Some(ISSUER.into());
        s.jwt_audience = Some(AUDIENCE.into());
    })
    .await;
    let token = signed(Algorithm::RS256, None, &idp.rsa, &claims(45));
    assert_eq!(wallet_status(&app, &token).await, 200);
    let mut no_iss = claims(45);
    no_iss.as_object_mut().unwrap().remove("iss");
    let token = signed(Algorithm::RS256, None, &idp.rsa, &no_iss);
    assert_eq!(
        wallet_status(&app, &token).await,
        401,
        "the issuer is required with a provider's keys"
    );
    let es = signed(Algorithm::ES256, None, &idp.ec, &claims(45));
    assert_eq!(
        wallet_status(&app, &es).await,
        401,
        "not this key's algorithm"
    );
    let hs = signed(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(idp.rsa_public_pem.as_bytes()),
        &claims(45),
    );
    assert_eq!(wallet_status(&app, &hs).await, 401, "algorithm confusion");
}
