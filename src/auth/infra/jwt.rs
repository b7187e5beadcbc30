use anyhow::Context;
use chrono::{DateTime, TimeDelta, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::{
    auth::{
        domain::{AuthError, Identity, Role},
        ports::TokenCodec,
    },
    kernel::UserId,
};

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    role: Role,
    exp: i64,
    iat: i64,
}

/// HS256 tokens signed with a shared secret.
pub struct JwtCodec {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl JwtCodec {
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        // Expiry is checked against the injected clock in `verify`.
        validation.validate_exp = false;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }
}

impl TokenCodec for JwtCodec {
    fn issue(
        &self,
        identity: Identity,
        now: DateTime<Utc>,
        ttl: TimeDelta,
    ) -> Result<String, AuthError> {
        let claims = Claims {
            sub: identity.user_id.to_string(),
            role: identity.role,
            iat: now.timestamp(),
            exp: (now + ttl).timestamp(),
        };
        Ok(
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
                .context("signing a JWT")?,
        )
    }

    fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<Identity, AuthError> {
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|_| AuthError::Invalid)?
            .claims;
        if claims.exp <= now.timestamp() {
            return Err(AuthError::Expired);
        }
        let user_id = claims
            .sub
            .parse::<i64>()
            .ok()
            .filter(|id| *id > 0)
            .ok_or(AuthError::Invalid)?;
        Ok(Identity {
            user_id: UserId(user_id),
            role: claims.role,
        })
    }
}
