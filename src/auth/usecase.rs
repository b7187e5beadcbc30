use chrono::TimeDelta;

use super::{
    domain::{AuthError, Identity, Role},
    ports::TokenCodec,
};
use crate::kernel::{Clock, UserId};

/// Mints a token, as the identity provider would in production
/// (`boxoffice token`, the demo seed, tests).
pub fn mint_token(
    codec: &dyn TokenCodec,
    clock: &impl Clock,
    user_id: UserId,
    role: Role,
    ttl: TimeDelta,
) -> Result<String, AuthError> {
    codec.issue(Identity { user_id, role }, clock.now(), ttl)
}

/// Verifies a bearer token and checks that its role is enough.
pub fn authenticate(
    codec: &dyn TokenCodec,
    clock: &impl Clock,
    token: &str,
    required: Role,
) -> Result<Identity, AuthError> {
    let identity = codec.verify(token, clock.now())?;
    if identity.has(required) {
        Ok(identity)
    } else {
        Err(AuthError::Forbidden(required))
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::{auth::infra::jwt::JwtCodec, kernel::ManualClock};

    fn codec() -> JwtCodec {
        JwtCodec::new(b"test-secret")
    }

    #[test]
    fn a_minted_token_authenticates_until_it_expires() {
        let clock = ManualClock::new(Utc::now());
        let token = mint_token(
            &codec(),
            &clock,
            UserId(7),
            Role::User,
            TimeDelta::minutes(5),
        )
        .unwrap();
        let identity = authenticate(&codec(), &clock, &token, Role::User).unwrap();
        assert_eq!(
            identity,
            Identity {
                user_id: UserId(7),
                role: Role::User
            }
        );

        clock.advance(TimeDelta::minutes(5));
        assert!(matches!(
            authenticate(&codec(), &clock, &token, Role::User),
            Err(AuthError::Expired)
        ));
    }

    #[test]
    fn a_user_token_is_refused_where_admin_is_required() {
        let clock = ManualClock::new(Utc::now());
        let token = mint_token(
            &codec(),
            &clock,
            UserId(7),
            Role::User,
            TimeDelta::minutes(5),
        )
        .unwrap();
        assert!(matches!(
            authenticate(&codec(), &clock, &token, Role::Admin),
            Err(AuthError::Forbidden(Role::Admin))
        ));
    }

    #[test]
    fn a_token_signed_with_another_secret_is_invalid() {
        let clock = ManualClock::new(Utc::now());
        let other = JwtCodec::new(b"another-secret");
        let token = mint_token(
            &other,
            &clock,
            UserId(7),
            Role::Admin,
            TimeDelta::minutes(5),
        )
        .unwrap();
        assert!(matches!(
            authenticate(&codec(), &clock, &token, Role::User),
            Err(AuthError::Invalid)
        ));
        assert!(matches!(
            authenticate(&codec(), &clock, "not-a-jwt", Role::User),
            Err(AuthError::Invalid)
        ));
    }
}
