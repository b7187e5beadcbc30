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

    use std::sync::Mutex;

    use chrono::DateTime;

    use super::*;
    use crate::{auth::infra::jwt::JwtCodec, kernel::ManualClock};

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    /// Knows the tokens `user-7` and `admin-1`, says `expired` has expired,
    /// and records what it was asked.
    #[derive(Default)]
    struct FakeCodec {
        issued: Mutex<Vec<(Identity, DateTime<Utc>, TimeDelta)>>,
        verified_at: Mutex<Vec<DateTime<Utc>>>,
        cannot_sign: bool,
    }

    impl TokenCodec for FakeCodec {
        fn issue(
            &self,
            identity: Identity,
            now: DateTime<Utc>,
            ttl: TimeDelta,
        ) -> Result<String, AuthError> {
            if self.cannot_sign {
                return Err(AuthError::Unexpected(anyhow::anyhow!("no signing key")));
            }
            self.issued.lock().unwrap().push((identity, now, ttl));
            Ok(format!("{:?}-{}", identity.role, identity.user_id).to_lowercase())
        }

        fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<Identity, AuthError> {
            self.verified_at.lock().unwrap().push(now);
            match token {
                "user-7" => Ok(Identity {
                    user_id: UserId(7),
                    role: Role::User,
                }),
                "admin-1" => Ok(Identity {
                    user_id: UserId(1),
                    role: Role::Admin,
                }),
                "expired" => Err(AuthError::Expired),
                _ => Err(AuthError::Invalid),
            }
        }
    }

    #[test]
    fn minting_signs_the_identity_at_the_clock_time_for_the_ttl() {
        let codec = FakeCodec::default();
        let clock = ManualClock::new(t0());
        let token = mint_token(&codec, &clock, UserId(7), Role::User, TimeDelta::hours(2)).unwrap();
        assert_eq!(token, "user-7");
        assert_eq!(
            *codec.issued.lock().unwrap(),
            vec![(
                Identity {
                    user_id: UserId(7),
                    role: Role::User
                },
                t0(),
                TimeDelta::hours(2)
            )]
        );
    }

    #[test]
    fn minting_fails_when_the_codec_cannot_sign() {
        let codec = FakeCodec {
            cannot_sign: true,
            ..FakeCodec::default()
        };
        let clock = ManualClock::new(t0());
        assert!(matches!(
            mint_token(&codec, &clock, UserId(1), Role::Admin, TimeDelta::hours(1)),
            Err(AuthError::Unexpected(_))
        ));
    }

    #[test]
    fn authentication_verifies_at_the_clock_time_and_answers_the_identity() {
        let codec = FakeCodec::default();
        let clock = ManualClock::new(t0());
        clock.advance(TimeDelta::seconds(42));
        let identity = authenticate(&codec, &clock, "user-7", Role::User).unwrap();
        assert_eq!(identity.user_id, UserId(7));
        assert_eq!(
            *codec.verified_at.lock().unwrap(),
            vec![t0() + TimeDelta::seconds(42)]
        );
    }

    #[test]
    fn an_admin_passes_where_a_user_or_an_admin_is_required() {
        let codec = FakeCodec::default();
        let clock = ManualClock::new(t0());
        for required in [Role::User, Role::Admin] {
            let identity = authenticate(&codec, &clock, "admin-1", required).unwrap();
            assert_eq!(identity.role, Role::Admin);
        }
    }

    #[test]
    fn a_user_is_forbidden_where_an_admin_is_required() {
        let codec = FakeCodec::default();
        let clock = ManualClock::new(t0());
        assert!(matches!(
            authenticate(&codec, &clock, "user-7", Role::Admin),
            Err(AuthError::Forbidden(Role::Admin))
        ));
    }

    #[test]
    fn an_expired_or_invalid_token_is_refused_whatever_the_role_required() {
        let codec = FakeCodec::default();
        let clock = ManualClock::new(t0());
        for required in [Role::User, Role::Admin] {
            assert!(matches!(
                authenticate(&codec, &clock, "expired", required),
                Err(AuthError::Expired)
            ));
            assert!(matches!(
                authenticate(&codec, &clock, "forged", required),
                Err(AuthError::Invalid)
            ));
        }
    }

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
