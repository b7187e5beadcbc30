//! Queue tokens: HS256 JWTs with their own audience, so an identity token
//! can never pass for a queue token or the other way round.

use anyhow::Context;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    kernel::{ConcertId, UserId, Validity},
    queue::{
        domain::{QueueError, QueuePass},
        ports::QueueTokens,
    },
};

const AUDIENCE: &str = "boxoffice-queue";

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    jti: Uuid,
    sub: String,
    concert: i64,
    aud: String,
    exp: i64,
    iat: i64,
}

pub struct JwtQueueTokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl JwtQueueTokens {
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_exp = false;
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "sub", "aud"]);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }
}

impl QueueTokens for JwtQueueTokens {
    fn issue(&self, pass: &QueuePass, validity: Validity) -> Result<String, QueueError> {
        let claims = Claims {
            jti: pass.token_id,
            sub: pass.user.to_string(),
            concert: pass.concert.value(),
            aud: AUDIENCE.to_owned(),
            iat: validity.from.timestamp(),
            exp: validity.until().timestamp(),
        };
        Ok(
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
                .context("signing a queue token")?,
        )
    }

    fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<QueuePass, QueueError> {
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|_| QueueError::BadToken)?
            .claims;
        if claims.exp <= now.timestamp() {
            return Err(QueueError::BadToken);
        }
        let user = claims
            .sub
            .parse::<i64>()
            .ok()
            .filter(|u| *u > 0)
            .ok_or(QueueError::BadToken)?;
        Ok(QueuePass {
            token_id: claims.jti,
            user: UserId(user),
            concert: ConcertId(claims.concert),
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;
    use crate::auth::{
        domain::{Identity, Role},
        infra::jwt::JwtCodec,
        ports::TokenCodec,
    };

    #[test]
    fn round_trip_expiry_and_no_confusion_with_identity_tokens() {
        let tokens = JwtQueueTokens::new(b"s");
        let now = Utc::now();
        let pass = QueuePass {
            token_id: Uuid::new_v4(),
            user: UserId(5),
            concert: ConcertId(9),
        };
        let token = tokens
            .issue(&pass, Validity::new(now, TimeDelta::minutes(1)))
            .unwrap();
        assert_eq!(tokens.verify(&token, now).unwrap(), pass);
        assert!(matches!(
            tokens.verify(&token, now + TimeDelta::minutes(1)),
            Err(QueueError::BadToken)
        ));
        assert!(matches!(
            JwtQueueTokens::new(b"other").verify(&token, now),
            Err(QueueError::BadToken)
        ));

        let identity = JwtCodec::new(b"s")
            .issue(
                Identity {
                    user_id: UserId(5),
                    role: Role::User,
                },
                Validity::new(now, TimeDelta::minutes(1)),
            )
            .unwrap();
        assert!(matches!(
            tokens.verify(&identity, now),
            Err(QueueError::BadToken)
        ));
        assert!(
            JwtCodec::new(b"s").verify(&token, now).is_err(),
            "a queue token is no identity token"
        );
    }
}
