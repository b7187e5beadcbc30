//! Identity tokens from a production identity provider: RS256 and ES256
//! signed with keys generated here, checked through a JWKS file (by `kid`),
//! one PEM public key or a key set served over HTTP that rotates, with
//! `iss` and `aud` enforced; string subjects mapped to users; and every way
//! a token can be wrong answered 401.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicUsize, Ordering},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{TimeDelta, Utc};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{
    TEST_JWT_SECRET, TestApp, assert_problem, count, eventually, sign, spawn_app_with,
    test_settings,
};

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
    let resp = app
        .get("/v1/wallet")
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    if status >= 500 {
        panic!(
            "GET /v1/wallet answered {status}: {}",
            resp.text().await.unwrap()
        );
    }
    status
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
    let mut staff = claims(45);
    staff["role"] = json!("staff");
    let staff = signed(Algorithm::RS256, Some("rsa-1"), &idp.rsa, &staff);
    assert_eq!(
        wallet_status(&app, &staff).await,
        403,
        "a provider's staff may only scan"
    );

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

/// A throwaway identity provider endpoint serving a key set that the test
/// changes at will, counting the fetches.
struct JwksServer {
    url: String,
    body: Arc<Mutex<String>>,
    fetches: Arc<AtomicUsize>,
}

impl JwksServer {
    async fn start(keys: &Value) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().unwrap()
        );
        let body = Arc::new(Mutex::new(keys.to_string()));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (served, counted) = (body.clone(), fetches.clone());
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let (served, counted) = (served.clone(), counted.clone());
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0_u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    counted.fetch_add(1, Ordering::SeqCst);
                    let body = served.lock().unwrap().clone();
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(answer.as_bytes()).await;
                });
            }
        });
        Self { url, body, fetches }
    }

    fn publish(&self, keys: &Value) {
        *self.body.lock().unwrap() = keys.to_string();
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

/// `idp`'s RSA key alone, under `kid`.
fn rsa_set(idp: &Provider, kid: &str) -> Value {
    let mut key = idp.jwks["keys"][0].clone();
    key["kid"] = json!(kid);
    json!({"keys": [key]})
}

fn claims_of(sub: &str) -> Value {
    let mut c = claims(1);
    c["sub"] = json!(sub);
    c
}

async fn balance(app: &TestApp, token: &str) -> i64 {
    let resp = app
        .get("/v1/wallet")
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json::<Value>().await.unwrap()["balance"]
        .as_i64()
        .unwrap()
}

#[tokio::test]
async fn a_key_set_url_is_fetched_again_when_the_provider_rotates_its_keys() {
    let (old, new) = (provider(), provider());
    let idp = JwksServer::start(&rsa_set(&old, "2026-11")).await;
    let app = spawn_app_with(|s| {
        s.jwt_jwks_url = Some(idp.url.clone());
        s.jwt_issuer = Some(ISSUER.into());
        s.jwt_audience = Some(AUDIENCE.into());
    })
    .await;
    assert_eq!(idp.fetches(), 1, "fetched once at start");
    let by_old = signed(
        Algorithm::RS256,
        Some("2026-11"),
        &old.rsa,
        &claims_of("auth0|5f1c"),
    );
    assert_eq!(wallet_status(&app, &by_old).await, 200);
    assert_eq!(idp.fetches(), 1, "a known key needs no fetch");

    // The provider rotates: a token under the new kid makes the server
    // fetch the set again, once, and is accepted — no restart.
    idp.publish(&json!({"keys": [
        rsa_set(&old, "2026-11")["keys"][0], rsa_set(&new, "2026-12")["keys"][0]
    ]}));
    let by_new = signed(
        Algorithm::RS256,
        Some("2026-12"),
        &new.rsa,
        &claims_of("auth0|5f1c"),
    );
    assert_eq!(wallet_status(&app, &by_new).await, 200, "the rotated key");
    assert_eq!(idp.fetches(), 2);

    // Tokens naming keys nobody published cannot make it hammer the
    // provider: within five seconds of a fetch there is no other.
    for n in 0..20 {
        let forged = signed(
            Algorithm::RS256,
            Some(&format!("made-up-{n}")),
            &new.rsa,
            &claims_of("auth0|5f1c"),
        );
        let resp = app
            .get("/v1/wallet")
            .bearer_auth(&forged)
            .send()
            .await
            .unwrap();
        assert_problem(resp, 401, "unauthorized").await;
    }
    assert_eq!(idp.fetches(), 2, "rate-limited");
}

#[tokio::test]
async fn a_key_set_url_is_fetched_again_every_ttl_so_a_withdrawn_key_stops_working() {
    let (old, new) = (provider(), provider());
    let idp = JwksServer::start(&json!({"keys": [
        rsa_set(&old, "old")["keys"][0], rsa_set(&new, "new")["keys"][0]
    ]}))
    .await;
    let app = spawn_app_with(|s| {
        s.jwt_jwks_url = Some(idp.url.clone());
        s.jwt_jwks_refresh_seconds = 1;
        s.jwt_issuer = Some(ISSUER.into());
        s.jwt_audience = Some(AUDIENCE.into());
    })
    .await;
    let by_old = signed(Algorithm::RS256, Some("old"), &old.rsa, &claims_of("kc-1"));
    assert_eq!(wallet_status(&app, &by_old).await, 200);
    idp.publish(&rsa_set(&new, "new"));
    eventually(
        "the withdrawn key refused after a refresh",
        std::time::Duration::from_secs(15),
        || async { (wallet_status(&app, &by_old).await == 401).then_some(()) },
    )
    .await;
    let by_new = signed(Algorithm::RS256, Some("new"), &new.rsa, &claims_of("kc-1"));
    assert_eq!(wallet_status(&app, &by_new).await, 200);
    assert!(idp.fetches() >= 2, "fetched on its TTL");
}

#[tokio::test]
async fn a_server_whose_key_set_url_does_not_answer_does_not_start() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/jwks.json", closed.local_addr().unwrap());
    drop(closed);
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(dir.path());
    settings.database_url = format!("sqlite://{}", dir.path().join("t.db").display());
    settings.jwt_jwks_url = Some(url.clone());
    settings.jwt_issuer = Some(ISSUER.into());
    settings.jwt_audience = Some(AUDIENCE.into());
    let refused = boxoffice::app::Application::build(&settings).await;
    let why = format!("{:#}", refused.err().expect("refused"));
    assert!(why.contains("fetching the key set"), "{why}");
}

#[tokio::test]
async fn any_string_subject_maps_to_one_user_of_its_own() {
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
    let token = |sub: &str| signed(Algorithm::RS256, Some("rsa-1"), &idp.rsa, &claims_of(sub));

    // Twenty first requests of one Auth0 subject at once: one user, whose
    // wallet gets every charge.
    let auth0 = "auth0|5f1c8e0a9b7d6c5e4f3a2b1c";
    let charges = (0..20).map(|n| {
        app.post("/v1/wallet/charges")
            .bearer_auth(token(auth0))
            .header("idempotency-key", format!("first-sight-{n}"))
            .json(&json!({"amount": 10}))
            .send()
    });
    for resp in futures::future::join_all(charges).await {
        assert_eq!(resp.unwrap().status(), 201);
    }
    assert_eq!(balance(&app, &token(auth0)).await, 200);
    assert_eq!(
        count(
            &app.db,
            "SELECT COUNT(*) FROM identity_subjects WHERE subject LIKE 'auth0|%'"
        )
        .await,
        1
    );

    // Keycloak's and Cognito's UUIDs, a number, the longest allowed: each
    // a user of its own, with nothing of the Auth0 user's.
    let longest = "s".repeat(255);
    for sub in [
        "f47ac10b-58cc-4372-a567-0e02b2c3d479",
        "41",
        longest.as_str(),
    ] {
        assert_eq!(balance(&app, &token(sub)).await, 0, "{sub}");
    }
    assert_eq!(
        balance(&app, &token(auth0)).await,
        200,
        "still the same user"
    );

    for (what, sub) in [("too long", "s".repeat(256)), ("empty", String::new())] {
        let resp = app
            .get("/v1/wallet")
            .bearer_auth(token(&sub))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{what}");
    }
}
