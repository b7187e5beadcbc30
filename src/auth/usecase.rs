use std::sync::Arc;

use chrono::TimeDelta;

use super::{
    domain::{AuthError, Identity, Role, Subject},
    ports::{KeySetSource, SubjectDirectory, TokenCodec},
};
use crate::kernel::{Clock, UserId, Validity};

/// Mints a token, as the identity provider would in production
/// (`boxoffice token`, the demo seed, tests).
pub fn mint_token(
    codec: &dyn TokenCodec,
    clock: &impl Clock,
    user_id: UserId,
    role: Role,
    ttl: TimeDelta,
) -> Result<String, AuthError> {
    codec.issue(Identity { user_id, role }, Validity::new(clock.now(), ttl))
}

/// What checking a bearer token goes through: the codec, the provider's
/// key set when it is fetched from a URL, and the subject directory.
#[derive(Clone)]
pub struct Verifier {
    pub codec: Arc<dyn TokenCodec>,
    pub keys: Option<Arc<dyn KeySetSource>>,
    pub subjects: Arc<dyn SubjectDirectory>,
}

impl Verifier {
    /// Verifies a bearer token, checks that its role is enough and names
    /// the user. A token signed with a key the server does not know makes
    /// it fetch the provider's key set again (rate-limited by the source)
    /// and try once more, so a rotated key is accepted without a restart.
    /// A provider's subject is mapped to its user id, recorded on first
    /// sight, only once the role is known to be enough.
    pub async fn authenticate(
        &self,
        clock: &impl Clock,
        token: &str,
        required: Role,
    ) -> Result<Identity, AuthError> {
        let claimed = match self.codec.verify(token, clock.now()) {
            Err(AuthError::UnknownKey) => match &self.keys {
                Some(keys) => {
                    keys.refresh().await?;
                    match self.codec.verify(token, clock.now()) {
                        Err(AuthError::UnknownKey) => Err(AuthError::Invalid),
                        verified => verified,
                    }
                }
                None => Err(AuthError::Invalid),
            },
            verified => verified,
        }?;
        if let Some(refusal) = claimed.role.refusal(required) {
            return Err(refusal);
        }
        let user_id = match &claimed.subject {
            Subject::User(id) => *id,
            Subject::External(sub) => self.subjects.user_for(sub).await?,
        };
        Ok(Identity {
            user_id,
            role: claimed.role,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::kernel::Fault;
    use std::{
        collections::HashMap,
        sync::{
            Mutex,
            atomic::{AtomicBool, AtomicUsize, Ordering},
        },
    };

    use chrono::{DateTime, Utc};
    use futures::{FutureExt, future::BoxFuture};

    use super::*;
    use crate::{
        auth::{domain::Claimed, infra::jwt::JwtCodec},
        kernel::ManualClock,
    };

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    /// Knows the tokens `user-7`, `admin-1`, `staff-3` and the provider's
    /// `auth0|5f1c` (a user), `okta-admin` (an admin) and `okta-staff`
    /// (door staff), says `expired`
    /// has expired, says `rotated` is signed by a key it only knows once
    /// `knows_rotated_key` is set, and records what it was asked.
    #[derive(Default)]
    struct FakeCodec {
        issued: Mutex<Vec<(Identity, Validity)>>,
        verified_at: Mutex<Vec<DateTime<Utc>>>,
        cannot_sign: bool,
        knows_rotated_key: Arc<AtomicBool>,
    }

    impl TokenCodec for FakeCodec {
        fn issue(&self, identity: Identity, validity: Validity) -> Result<String, AuthError> {
            if self.cannot_sign {
                return Err(AuthError::Fault(Fault::Unexpected(anyhow::anyhow!(
                    "no signing key"
                ))));
            }
            self.issued.lock().unwrap().push((identity, validity));
            Ok(format!("{:?}-{}", identity.role, identity.user_id).to_lowercase())
        }

        fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<Claimed, AuthError> {
            self.verified_at.lock().unwrap().push(now);
            let claimed = |subject, role| Ok(Claimed { subject, role });
            match token {
                "user-7" => claimed(Subject::User(UserId(7)), Role::User),
                "admin-1" => claimed(Subject::User(UserId(1)), Role::Admin),
                "staff-3" => claimed(Subject::User(UserId(3)), Role::Staff),
                "okta-staff" => claimed(Subject::External(token.into()), Role::Staff),
                "auth0|5f1c" => claimed(Subject::External(token.into()), Role::User),
                "okta-admin" => claimed(Subject::External(token.into()), Role::Admin),
                "rotated" if self.knows_rotated_key.load(Ordering::SeqCst) => {
                    claimed(Subject::External("new-key-user".into()), Role::User)
                }
                "rotated" | "unknown-kid" => Err(AuthError::UnknownKey),
                "expired" => Err(AuthError::Expired),
                _ => Err(AuthError::Invalid),
            }
        }
    }

    /// The provider's key set: each refresh teaches the codec the rotated
    /// key when `rotates`.
    struct FakeKeys {
        refreshes: AtomicUsize,
        rotates: bool,
        down: bool,
        codec_knows: Arc<AtomicBool>,
    }

    impl KeySetSource for FakeKeys {
        fn refresh(&self) -> BoxFuture<'_, Result<(), AuthError>> {
            async move {
                self.refreshes.fetch_add(1, Ordering::SeqCst);
                if self.down {
                    return Err(AuthError::Fault(Fault::Unavailable(anyhow::anyhow!(
                        "provider down"
                    ))));
                }
                if self.rotates {
                    self.codec_knows.store(true, Ordering::SeqCst);
                }
                Ok(())
            }
            .boxed()
        }
    }

    /// Hands out user ids from 1,000 on, one per subject, and records the
    /// subjects it was asked about.
    #[derive(Default)]
    struct FakeDirectory {
        ids: Mutex<HashMap<String, UserId>>,
        asked: Mutex<Vec<String>>,
        down: bool,
    }

    impl SubjectDirectory for FakeDirectory {
        fn user_for<'a>(&'a self, subject: &'a str) -> BoxFuture<'a, Result<UserId, AuthError>> {
            async move {
                self.asked.lock().unwrap().push(subject.to_owned());
                if self.down {
                    return Err(AuthError::Fault(Fault::Unavailable(anyhow::anyhow!(
                        "database down"
                    ))));
                }
                let mut ids = self.ids.lock().unwrap();
                let next = UserId(1_000 + ids.len() as i64);
                Ok(*ids.entry(subject.to_owned()).or_insert(next))
            }
            .boxed()
        }
    }

    struct Harness {
        verifier: Verifier,
        codec: Arc<FakeCodec>,
        keys: Arc<FakeKeys>,
        directory: Arc<FakeDirectory>,
        clock: ManualClock,
    }

    fn harness_with(rotates: bool, keys_down: bool, directory_down: bool) -> Harness {
        let codec = Arc::new(FakeCodec::default());
        let keys = Arc::new(FakeKeys {
            refreshes: AtomicUsize::new(0),
            rotates,
            down: keys_down,
            codec_knows: codec.knows_rotated_key.clone(),
        });
        let directory = Arc::new(FakeDirectory {
            down: directory_down,
            ..FakeDirectory::default()
        });
        Harness {
            verifier: Verifier {
                codec: codec.clone(),
                keys: Some(keys.clone()),
                subjects: directory.clone(),
            },
            codec,
            keys,
            directory,
            clock: ManualClock::new(t0()),
        }
    }

    fn harness() -> Harness {
        harness_with(false, false, false)
    }

    /// Whether the answer is that a table or the provider is down.
    fn outage<T>(result: Result<T, AuthError>) -> bool {
        matches!(result, Err(AuthError::Fault(Fault::Unavailable(_))))
    }

    /// Whether the answer is that only an admin may.
    fn needs_admin<T>(result: Result<T, AuthError>) -> bool {
        matches!(result, Err(AuthError::Forbidden(Role::Admin)))
    }

    impl Harness {
        /// Checks `token` for `required` at the harness's clock.
        async fn authenticate(&self, token: &str, required: Role) -> Result<Identity, AuthError> {
            self.verifier
                .authenticate(&self.clock, token, required)
                .await
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
                Validity::new(t0(), TimeDelta::hours(2))
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
            Err(AuthError::Fault(Fault::Unexpected(_)))
        ));
    }

    #[tokio::test]
    async fn authentication_verifies_at_the_clock_time_and_answers_the_identity() {
        let h = harness();
        h.clock.advance(TimeDelta::seconds(42));
        let identity = h.authenticate("user-7", Role::User).await.unwrap();
        assert_eq!(identity.user_id, UserId(7));
        assert_eq!(
            *h.codec.verified_at.lock().unwrap(),
            vec![t0() + TimeDelta::seconds(42)]
        );
        assert!(
            h.directory.asked.lock().unwrap().is_empty(),
            "our own tokens name the user"
        );
    }

    #[tokio::test]
    async fn a_providers_subject_maps_to_one_user_id_for_good() {
        let h = harness();
        let first = h.authenticate("auth0|5f1c", Role::User).await.unwrap();
        let again = h.authenticate("auth0|5f1c", Role::User).await.unwrap();
        let admin = h.authenticate("okta-admin", Role::Admin).await.unwrap();
        assert_eq!(first, again);
        assert_eq!(first.role, Role::User);
        assert_ne!(
            admin.user_id, first.user_id,
            "another subject, another user"
        );
        assert_eq!(admin.role, Role::Admin);
    }

    #[tokio::test]
    async fn the_role_is_checked_before_a_subject_is_recorded() {
        let h = harness();
        assert!(needs_admin(h.authenticate("auth0|5f1c", Role::Admin).await));
        assert!(h.directory.asked.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_subject_table_that_cannot_be_reached_is_an_outage() {
        let h = harness_with(false, false, true);
        assert!(outage(h.authenticate("auth0|5f1c", Role::User).await));
    }

    #[tokio::test]
    async fn an_unknown_key_fetches_the_key_set_again_and_a_rotated_key_passes() {
        let h = harness_with(true, false, false);
        let identity = h.authenticate("rotated", Role::User).await.unwrap();
        assert_eq!(identity.user_id, UserId(1_000));
        assert_eq!(h.keys.refreshes.load(Ordering::SeqCst), 1);
        h.authenticate("rotated", Role::User).await.unwrap();
        assert_eq!(
            h.keys.refreshes.load(Ordering::SeqCst),
            1,
            "a known key needs no fetch"
        );
    }

    #[tokio::test]
    async fn a_key_the_provider_never_published_stays_refused() {
        let h = harness();
        assert!(matches!(
            h.authenticate("unknown-kid", Role::User).await,
            Err(AuthError::Invalid)
        ));
        assert_eq!(h.keys.refreshes.load(Ordering::SeqCst), 1);
        // A key set fetched again that has another new key: refused too.
        let h = harness_with(true, false, false);
        assert!(matches!(
            h.authenticate("unknown-kid", Role::User).await,
            Err(AuthError::Invalid)
        ));
    }

    #[tokio::test]
    async fn an_unknown_key_while_the_provider_is_down_is_an_outage() {
        let h = harness_with(false, true, false);
        assert!(outage(h.authenticate("rotated", Role::User).await));
        assert_eq!(h.keys.refreshes.load(Ordering::SeqCst), 1, "it was asked");
    }

    #[tokio::test]
    async fn without_a_key_set_url_an_unknown_key_is_simply_invalid() {
        let mut h = harness();
        h.verifier.keys = None;
        assert!(matches!(
            h.authenticate("rotated", Role::User).await,
            Err(AuthError::Invalid)
        ));
    }

    #[tokio::test]
    async fn an_admin_passes_where_a_user_or_an_admin_is_required() {
        let h = harness();
        for required in [Role::User, Role::Admin] {
            let identity = h.authenticate("admin-1", required).await.unwrap();
            assert_eq!(identity.role, Role::Admin);
        }
    }

    #[tokio::test]
    async fn staff_pass_where_staff_are_required_and_nowhere_else() {
        let h = harness();
        let identity = h.authenticate("staff-3", Role::Staff).await.unwrap();
        assert_eq!(identity.role, Role::Staff);
        assert!(matches!(
            h.authenticate("staff-3", Role::User).await,
            Err(AuthError::StaffScansOnly)
        ));
        assert!(needs_admin(h.authenticate("staff-3", Role::Admin).await));
        let admin = h.authenticate("admin-1", Role::Staff).await.unwrap();
        assert_eq!(admin.role, Role::Admin, "admins may scan too");
        assert!(matches!(
            h.authenticate("user-7", Role::Staff).await,
            Err(AuthError::Forbidden(Role::Staff))
        ));
    }

    #[tokio::test]
    async fn a_providers_staff_subject_is_recorded_only_once_it_may_scan() {
        let h = harness();
        assert!(matches!(
            h.authenticate("okta-staff", Role::User).await,
            Err(AuthError::StaffScansOnly)
        ));
        assert!(h.directory.asked.lock().unwrap().is_empty());
        let identity = h.authenticate("okta-staff", Role::Staff).await.unwrap();
        assert_eq!(identity.role, Role::Staff);
        assert_eq!(*h.directory.asked.lock().unwrap(), vec!["okta-staff"]);
    }

    #[tokio::test]
    async fn a_user_is_forbidden_where_an_admin_is_required() {
        let h = harness();
        assert!(needs_admin(h.authenticate("user-7", Role::Admin).await));
    }

    #[tokio::test]
    async fn an_expired_or_invalid_token_is_refused_whatever_the_role_required() {
        let h = harness();
        for required in [Role::User, Role::Admin] {
            assert!(matches!(
                h.authenticate("expired", required).await,
                Err(AuthError::Expired)
            ));
            assert!(matches!(
                h.authenticate("forged", required).await,
                Err(AuthError::Invalid)
            ));
        }
        assert_eq!(h.keys.refreshes.load(Ordering::SeqCst), 0);
    }

    /// The real codec with the fake directory.
    fn real(secret: &[u8]) -> Verifier {
        Verifier {
            codec: Arc::new(JwtCodec::new(secret)),
            keys: None,
            subjects: Arc::new(FakeDirectory::default()),
        }
    }

    /// A token for user 7 as `role`, minted by `codec` for five minutes.
    fn user_7_token(codec: &dyn TokenCodec, clock: &ManualClock, role: Role) -> String {
        mint_token(codec, clock, UserId(7), role, TimeDelta::minutes(5)).unwrap()
    }

    #[tokio::test]
    async fn a_minted_token_authenticates_until_it_expires() {
        let verifier = real(b"test-secret");
        let clock = ManualClock::new(Utc::now());
        let token = user_7_token(verifier.codec.as_ref(), &clock, Role::User);
        let identity = verifier
            .authenticate(&clock, &token, Role::User)
            .await
            .unwrap();
        assert_eq!(
            identity,
            Identity {
                user_id: UserId(7),
                role: Role::User
            }
        );

        clock.advance(TimeDelta::minutes(5));
        assert!(matches!(
            verifier.authenticate(&clock, &token, Role::User).await,
            Err(AuthError::Expired)
        ));
    }

    #[tokio::test]
    async fn a_user_token_is_refused_where_admin_is_required() {
        let verifier = real(b"test-secret");
        let clock = ManualClock::new(Utc::now());
        let token = user_7_token(verifier.codec.as_ref(), &clock, Role::User);
        assert!(needs_admin(
            verifier.authenticate(&clock, &token, Role::Admin).await
        ));
    }

    #[tokio::test]
    async fn a_minted_staff_token_says_staff_and_may_only_scan() {
        let verifier = real(b"test-secret");
        let clock = ManualClock::new(Utc::now());
        let token = user_7_token(verifier.codec.as_ref(), &clock, Role::Staff);
        let identity = verifier
            .authenticate(&clock, &token, Role::Staff)
            .await
            .unwrap();
        assert_eq!(identity.role, Role::Staff);
        assert!(matches!(
            verifier.authenticate(&clock, &token, Role::User).await,
            Err(AuthError::StaffScansOnly)
        ));
    }

    #[tokio::test]
    async fn a_token_signed_with_another_secret_is_invalid() {
        let verifier = real(b"test-secret");
        let clock = ManualClock::new(Utc::now());
        let token = user_7_token(&JwtCodec::new(b"another-secret"), &clock, Role::Admin);
        assert!(matches!(
            verifier.authenticate(&clock, &token, Role::User).await,
            Err(AuthError::Invalid)
        ));
        assert!(matches!(
            verifier.authenticate(&clock, "not-a-jwt", Role::User).await,
            Err(AuthError::Invalid)
        ));
    }
}
