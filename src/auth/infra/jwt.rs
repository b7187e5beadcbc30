//! Identity tokens as JWTs: HS256 with a shared secret for development (and
//! `boxoffice token`), or an identity provider's RS256/ES256 tokens checked
//! against its published keys (a JWKS file or one PEM public key), with
//! `iss` and `aud` enforced when configured. A provider's key set may be
//! replaced while the server runs (see `jwks.rs`).

use std::sync::{Arc, RwLock};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use jsonwebtoken::{
    Algorithm, DecodingKey, EncodingKey, Header, Validation,
    jwk::{AlgorithmParameters, EllipticCurve, JwkSet},
};
use serde::{Deserialize, Serialize};

use crate::{
    auth::{
        domain::{AuthError, Claimed, Identity, Role, Subject},
        ports::TokenCodec,
    },
    kernel::{UserId, Validity},
};

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    /// Required in HS256 tokens (ours); an identity provider that does not
    /// know boxoffice's roles leaves it out: a user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    role: Option<Role>,
    exp: i64,
    #[serde(default)]
    iat: i64,
    /// Not before: a token an identity provider issued for later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<i64>,
}

/// How far ahead of this server's clock an identity provider's may run: a
/// token is refused before its `nbf` less this. (`exp` is strict.)
pub const NBF_LEEWAY_SECONDS: i64 = 30;

/// The algorithms an identity provider's keys may sign with.
const PROVIDER_ALGORITHMS: [Algorithm; 2] = [Algorithm::RS256, Algorithm::ES256];

/// One public key of an identity provider.
struct ProviderKey {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

/// An identity provider's public keys.
pub struct KeyRing {
    keys: Vec<ProviderKey>,
    /// The set as published (normalised), to tell a changed set from the
    /// same one fetched again.
    published: String,
}

impl KeyRing {
    /// The RS256 and ES256 (P-256) keys of a JSON Web Key Set; other keys
    /// are skipped, and a set with none of these is refused.
    pub fn from_jwks(json: &str) -> anyhow::Result<Self> {
        let set: JwkSet = serde_json::from_str(json).context("not a JSON Web Key Set")?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            let algorithm = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Algorithm::RS256,
                AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
                    Algorithm::ES256
                }
                _ => continue,
            };
            // A key that names its algorithm must name this one.
            if let Some(named) = jwk.common.key_algorithm
                && format!("{named:?}") != format!("{algorithm:?}")
            {
                continue;
            }
            keys.push(ProviderKey {
                kid: jwk.common.key_id.clone(),
                algorithm,
                key: DecodingKey::from_jwk(jwk).context("an unusable key in the key set")?,
            });
        }
        if keys.is_empty() {
            bail!("the key set has no RS256 or ES256 (P-256) key");
        }
        Ok(Self {
            keys,
            published: serde_json::to_string(&set).unwrap_or_default(),
        })
    }

    /// One PEM public key: RSA (RS256) or P-256 (ES256).
    pub fn from_pem(pem: &[u8]) -> anyhow::Result<Self> {
        let (algorithm, key) = match DecodingKey::from_rsa_pem(pem) {
            Ok(key) => (Algorithm::RS256, key),
            Err(_) => (
                Algorithm::ES256,
                DecodingKey::from_ec_pem(pem).context("not a PEM RSA or EC (P-256) public key")?,
            ),
        };
        Ok(Self {
            keys: vec![ProviderKey {
                kid: None,
                algorithm,
                key,
            }],
            published: String::from_utf8_lossy(pem).into_owned(),
        })
    }

    /// The key a token's header asks for: its `kid` when it names one
    /// (the only key otherwise), and only for the algorithm that key signs
    /// with — so a token cannot pick an algorithm the key was not made for.
    /// `UnknownKey` when the `kid` is not in the set.
    fn key_for(&self, header: &Header) -> Result<&ProviderKey, AuthError> {
        let key = match &header.kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid))
                .ok_or(AuthError::UnknownKey)?,
            None if self.keys.len() == 1 => &self.keys[0],
            None => return Err(AuthError::Invalid),
        };
        if key.algorithm == header.alg {
            Ok(key)
        } else {
            Err(AuthError::Invalid)
        }
    }

    /// Whether `other` is the same set as published.
    pub fn same_as(&self, other: &KeyRing) -> bool {
        self.published == other.published
    }
}

/// An identity provider's current keys, shared by the codec and whoever
/// fetches the set again, and replaced whole.
#[derive(Clone)]
pub struct ProviderKeys(Arc<RwLock<Arc<KeyRing>>>);

impl ProviderKeys {
    pub fn new(ring: KeyRing) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(ring))))
    }

    pub fn current(&self) -> Arc<KeyRing> {
        match self.0.read() {
            Ok(ring) => ring.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Puts `ring` in place of the current keys; true when it differs.
    pub fn replace(&self, ring: KeyRing) -> bool {
        let mut current = match self.0.write() {
            Ok(current) => current,
            Err(poisoned) => poisoned.into_inner(),
        };
        let changed = !current.same_as(&ring);
        if changed {
            *current = Arc::new(ring);
        }
        changed
    }
}

/// Signs development tokens (HS256) and verifies identity tokens.
pub struct JwtCodec {
    encoding: EncodingKey,
    /// HS256 verification, unless an identity provider's keys are set.
    secret: Option<DecodingKey>,
    provider: Option<ProviderKeys>,
    issuer: Option<String>,
    audience: Option<String>,
}

impl JwtCodec {
    /// HS256 with a shared secret (development, tests).
    pub fn new(secret: &[u8]) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret),
            secret: Some(DecodingKey::from_secret(secret)),
            provider: None,
            issuer: None,
            audience: None,
        }
    }

    /// Accepts the identity provider's RS256/ES256 tokens instead of HS256
    /// ones (the secret still signs `boxoffice token`'s tokens, which this
    /// server then refuses).
    pub fn with_provider_keys(mut self, keys: ProviderKeys) -> Self {
        self.secret = None;
        self.provider = Some(keys);
        self
    }

    /// Requires `iss` and/or `aud` to be these.
    pub fn requiring(mut self, issuer: Option<String>, audience: Option<String>) -> Self {
        self.issuer = issuer;
        self.audience = audience;
        self
    }

    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        // Expiry is checked against the injected clock in `verify`.
        validation.validate_exp = false;
        let mut required = vec!["exp", "sub"];
        match &self.issuer {
            Some(issuer) => {
                validation.set_issuer(&[issuer]);
                required.push("iss");
            }
            None => validation.iss = None,
        }
        match &self.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            // A provider's tokens carry an audience; without one configured
            // it is not checked. HS256 tokens with any audience are refused
            // (the queue tokens, signed with the same secret, carry theirs).
            None if algorithm != Algorithm::HS256 => validation.validate_aud = false,
            None => {}
        }
        validation.set_required_spec_claims(&required);
        validation
    }
}

impl TokenCodec for JwtCodec {
    fn issue(&self, identity: Identity, validity: Validity) -> Result<String, AuthError> {
        let claims = Claims {
            sub: identity.user_id.to_string(),
            role: Some(identity.role),
            iat: validity.from.timestamp(),
            exp: validity.until().timestamp(),
            nbf: None,
        };
        Ok(
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
                .context("signing a JWT")?,
        )
    }

    fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<Claimed, AuthError> {
        // `alg: none` and unknown algorithms fail here.
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Invalid)?;
        let ring = self.provider.as_ref().map(ProviderKeys::current);
        let (key, algorithm) = match (&self.secret, &ring) {
            (Some(secret), _) if header.alg == Algorithm::HS256 => (secret, Algorithm::HS256),
            (_, Some(ring)) if PROVIDER_ALGORITHMS.contains(&header.alg) => {
                let found = ring.key_for(&header)?;
                (&found.key, found.algorithm)
            }
            // Anything else — HS256 when a provider's keys are set (a token
            // "signed" with the public key as an HMAC secret), RS256 with
            // only a secret — is refused.
            _ => return Err(AuthError::Invalid),
        };
        let claims = jsonwebtoken::decode::<Claims>(token, key, &self.validation(algorithm))
            .map_err(|_| AuthError::Invalid)?
            .claims;
        if claims.exp <= now.timestamp() {
            return Err(AuthError::Expired);
        }
        if claims
            .nbf
            .is_some_and(|nbf| nbf > now.timestamp() + NBF_LEEWAY_SECONDS)
        {
            return Err(AuthError::Invalid);
        }
        // Our own tokens name the user; a provider's name one of its
        // subjects, whatever its form (`auth0|…`, a UUID, a number).
        let subject = if algorithm == Algorithm::HS256 {
            claims
                .sub
                .parse::<i64>()
                .ok()
                .filter(|id| *id > 0)
                .map(|id| Subject::User(UserId(id)))
        } else {
            Subject::external(&claims.sub)
        }
        .ok_or(AuthError::Invalid)?;
        let role = match (claims.role, algorithm) {
            (Some(role), _) => role,
            (None, Algorithm::HS256) => return Err(AuthError::Invalid),
            (None, _) => Role::User,
        };
        Ok(Claimed { subject, role })
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;

    fn token(claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"a-secret-for-the-nbf-test"),
        )
        .unwrap()
    }

    #[test]
    fn a_staff_token_carries_role_staff_both_ways() {
        let codec = JwtCodec::new(b"a-secret-for-the-nbf-test");
        let now = Utc::now();
        let staff = Identity {
            user_id: UserId(3),
            role: Role::Staff,
        };
        let issued = codec
            .issue(staff, Validity::new(now, TimeDelta::minutes(5)))
            .unwrap();
        let claims = jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(&issued)
            .unwrap()
            .claims;
        assert_eq!(claims["role"], "staff");
        assert_eq!(codec.verify(&issued, now).unwrap().role, Role::Staff);
        let written = token(serde_json::json!({
            "sub": "3", "role": "staff", "exp": now.timestamp() + 600
        }));
        assert_eq!(
            codec.verify(&written, now).unwrap(),
            Claimed {
                subject: Subject::User(UserId(3)),
                role: Role::Staff
            }
        );
    }

    #[test]
    fn a_token_is_refused_before_its_not_before_beyond_the_leeway() {
        let codec = JwtCodec::new(b"a-secret-for-the-nbf-test");
        let now = Utc::now();
        let with_nbf = |nbf: i64| {
            token(serde_json::json!({
                "sub": "7", "role": "user", "exp": now.timestamp() + 600, "nbf": nbf
            }))
        };
        let later = with_nbf(now.timestamp() + NBF_LEEWAY_SECONDS + 60);
        assert!(matches!(codec.verify(&later, now), Err(AuthError::Invalid)));
        let skewed = with_nbf(now.timestamp() + NBF_LEEWAY_SECONDS - 5);
        assert_eq!(
            codec.verify(&skewed, now).unwrap().subject,
            Subject::User(UserId(7))
        );
        let past = with_nbf(now.timestamp() - 60);
        assert!(codec.verify(&past, now).is_ok());
        let later_accepted_later = codec.verify(&later, now + TimeDelta::seconds(61));
        assert!(later_accepted_later.is_ok(), "valid once its time comes");
    }
}
