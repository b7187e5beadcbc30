//! Redemption: the request writes a pending job and its event; the
//! `coupon-redemptions` consumer decides it (owner, unused, in its window),
//! marks the coupon used, pays the vendor once and finishes the job.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::CouponService;
use crate::{
    coupon::{
        domain::{
            Campaign, CouponError, FailReason, Job, JobStatus, RedeemableCoupon, redemption_verdict,
        },
        ports::{CouponPorts, CouponRepository, RedemptionTx},
    },
    kernel::{
        Clock, Fault, UnitOfWork, UserCouponId, UserId,
        events::{CouponRedemptionFinished, CouponRedemptionRequested, NewEvent, RelayWake, types},
        idempotency::{self, RequestKey},
        retry_on_conflict,
    },
    outbox::ports::{Delivered, OutboxWriter, Subscriber, Subscription},
};

impl<P: CouponPorts> CouponService<P> {
    /// Starts a redemption job; the worker decides it (a coupon that is
    /// not the caller's fails there, like any other reason).
    pub async fn request_redemption(
        &self,
        user: UserId,
        user_coupon: UserCouponId,
        key: Option<&RequestKey>,
    ) -> Result<Uuid, CouponError> {
        let job =
            retry_on_conflict(|| self.request_redemption_once(user, user_coupon, key)).await?;
        self.wake.wake();
        Ok(job)
    }

    /// Writes a pending job and its `CouponRedemptionRequested` event in
    /// one transaction (with the key and its answer, the job id).
    async fn request_redemption_once(
        &self,
        user: UserId,
        user_coupon: UserCouponId,
        key: Option<&RequestKey>,
    ) -> Result<Uuid, CouponError> {
        let now = self.clock.now();
        let mut tx = self.uow.begin().await?;
        if let Some(first) = idempotency::claim(&mut tx, key, now).await? {
            return Ok(first);
        }
        let job = Job::pending(user, user_coupon);
        tx.insert_job(&job, now).await?;
        let event = NewEvent::new(
            types::COUPON_REDEMPTION_REQUESTED,
            "coupon_job",
            job.id,
            &CouponRedemptionRequested {
                job_id: job.id,
                user_id: user.value(),
                user_coupon_id: user_coupon.value(),
            },
        );
        tx.append(vec![event], now).await?;
        idempotency::finish(tx, key, &job.id).await?;
        Ok(job.id)
    }

    /// The caller's job; another user's answers `JobNotFound`.
    pub async fn job(&self, user: UserId, id: Uuid) -> Result<Job, CouponError> {
        match self.repo.job(id).await? {
            Some(job) if job.user == user => Ok(job),
            _ => Err(CouponError::JobNotFound),
        }
    }
}

/// What the redemption step decided for one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redemption {
    /// The job was already finished (a redelivery): nothing changed.
    AlreadyFinished,
    Succeeded {
        campaign: Campaign,
    },
    Failed(FailReason),
}

/// The redemption worker's step, inside the consumer's transaction: checks
/// the coupon (owner, unused, in its window), marks it used with an
/// optimistic version check, pays the vendor once, finishes the job and
/// writes `CouponRedemptionFinished`.
pub async fn redeem<T: RedemptionTx + OutboxWriter>(
    tx: &mut T,
    request: &CouponRedemptionRequested,
    now: DateTime<Utc>,
) -> Result<Redemption, CouponError> {
    let Some(job) = tx.job(request.job_id).await? else {
        return Err(
            Fault::unexpected(format!("redemption job {} does not exist", request.job_id)).into(),
        );
    };
    if job.status != JobStatus::Pending {
        return Ok(Redemption::AlreadyFinished);
    }
    let coupon = tx.redeemable(UserCouponId(request.user_coupon_id)).await?;
    let verdict = redemption_verdict(
        UserId(request.user_id),
        coupon.as_ref().map(RedeemableCoupon::facts),
        now,
    );
    let outcome = match (verdict, coupon) {
        (Err(reason), _) => Redemption::Failed(reason),
        (Ok(()), None) => Redemption::Failed(FailReason::NotYourCoupon),
        (Ok(()), Some(coupon)) => {
            if tx.mark_used(coupon.id, coupon.version, now).await? {
                tx.pay_vendor(
                    coupon.campaign.vendor,
                    coupon.id,
                    request.job_id,
                    coupon.campaign.discount,
                    now,
                )
                .await?;
                Redemption::Succeeded {
                    campaign: coupon.campaign,
                }
            } else {
                Redemption::Failed(FailReason::AlreadyUsed)
            }
        }
    };
    let (status, reason) = match &outcome {
        Redemption::Succeeded { .. } => (JobStatus::Succeeded, None),
        Redemption::Failed(reason) => (JobStatus::Failed, Some(*reason)),
        Redemption::AlreadyFinished => unreachable!("returned above"),
    };
    tx.finish_job(request.job_id, status, reason, now).await?;
    metrics::counter!("coupon_redemptions_total", "result" => reason.map_or("succeeded", FailReason::code))
        .increment(1);
    let finished = CouponRedemptionFinished {
        job_id: request.job_id,
        user_id: request.user_id,
        user_coupon_id: request.user_coupon_id,
        status: status.as_str().into(),
        reason: reason.map(|reason| reason.code().into()),
        coupon_id: match &outcome {
            Redemption::Succeeded { campaign } => Some(campaign.id.value()),
            _ => None,
        },
        vendor_id: match &outcome {
            Redemption::Succeeded { campaign } => Some(campaign.vendor.value()),
            _ => None,
        },
        amount: match &outcome {
            Redemption::Succeeded { campaign } => campaign.discount,
            _ => 0,
        },
    };
    let event = NewEvent::new(
        types::COUPON_REDEMPTION_FINISHED,
        "coupon_job",
        request.job_id,
        &finished,
    );
    tx.append(vec![event], now).await?;
    Ok(outcome)
}

/// The `coupon-redemptions` consumer.
pub struct CouponRedeemer<C> {
    clock: C,
}

impl<C> CouponRedeemer<C> {
    pub fn new(clock: C) -> Self {
        Self { clock }
    }
}

impl<T: RedemptionTx + OutboxWriter + 'static, C: Clock> Subscriber<T> for CouponRedeemer<C> {
    const SUBSCRIPTION: Subscription =
        Subscription::of("coupon-redemptions", &[types::COUPON_REDEMPTION_REQUESTED]);
    type Payload = CouponRedemptionRequested;
    type Error = CouponError;

    async fn on(
        &self,
        tx: &mut T,
        request: Delivered<'_, CouponRedemptionRequested>,
    ) -> Result<(), CouponError> {
        redeem(tx, &request.payload, self.clock.now()).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, TimeDelta, Utc};
    use uuid::Uuid;

    use super::super::fake::{FakeRepo, campaign, service, t0};
    use super::*;
    use crate::{
        coupon::{domain::CouponStatus, infra::memory::MemoryCouponLedger},
        kernel::{StoreError, VendorId},
    };

    #[tokio::test]
    async fn a_redemption_request_with_a_key_writes_one_job() {
        let repo = FakeRepo::default();
        let (service, _) = service(repo.clone(), MemoryCouponLedger::default()).await;
        let k = |coupon: i64, key: &str| {
            RequestKey::new(UserId(1), "coupon.redeem", key, &coupon).unwrap()
        };
        let first = service
            .request_redemption(UserId(1), UserCouponId(4), Some(&k(4, "r")))
            .await
            .unwrap();
        let again = service
            .request_redemption(UserId(1), UserCouponId(4), Some(&k(4, "r")))
            .await
            .unwrap();
        assert_eq!(again, first);
        assert!(matches!(
            service
                .request_redemption(UserId(1), UserCouponId(5), Some(&k(5, "r")))
                .await,
            Err(CouponError::Fault(Fault::KeyReused))
        ));
        let world = repo.uow.world();
        assert_eq!(world.jobs.len(), 1);
        assert_eq!(world.outbox.len(), 1, "one CouponRedemptionRequested");
    }

    #[tokio::test]
    async fn a_redemption_request_that_conflicts_is_retried_and_an_outage_leaves_no_key() {
        let repo = FakeRepo::default();
        let (service, _) = service(repo.clone(), MemoryCouponLedger::default()).await;
        let k = RequestKey::new(UserId(1), "coupon.redeem", "r", &4).unwrap();
        repo.uow.set_down(true);
        assert!(matches!(
            service
                .request_redemption(UserId(1), UserCouponId(4), Some(&k))
                .await,
            Err(CouponError::Fault(Fault::Unavailable(_)))
        ));
        repo.uow.set_down(false);
        assert!(repo.uow.world().keys.is_empty(), "no key stuck");
        repo.uow.conflict_next_commits(2);
        let job = service
            .request_redemption(UserId(1), UserCouponId(4), Some(&k))
            .await
            .unwrap();
        assert_eq!(
            repo.uow.world().jobs.keys().copied().collect::<Vec<_>>(),
            vec![job]
        );
    }

    #[tokio::test]
    async fn a_redemption_request_is_a_job_only_its_user_can_read() {
        let repo = FakeRepo::default();
        let (service, _) = service(repo.clone(), MemoryCouponLedger::default()).await;
        let id = service
            .request_redemption(UserId(1), UserCouponId(4), None)
            .await
            .unwrap();
        let job = service.job(UserId(1), id).await.unwrap();
        assert_eq!(
            (job.user_coupon, job.status),
            (UserCouponId(4), JobStatus::Pending)
        );
        assert!(matches!(
            service.job(UserId(2), id).await,
            Err(CouponError::JobNotFound)
        ));
        assert!(matches!(
            service.job(UserId(1), Uuid::from_u128(99)).await,
            Err(CouponError::JobNotFound)
        ));
    }

    /// The redemption step's stores in memory: one job, one coupon.
    #[derive(Default)]
    struct RedemptionFake {
        job: Option<Job>,
        coupon: Option<RedeemableCoupon>,
        /// Someone else marks the coupon used between the read and the write.
        lose_the_race: bool,
        vendor_payments: Vec<(VendorId, UserCouponId, i64)>,
        finished: Option<(JobStatus, Option<FailReason>)>,
        events: Vec<NewEvent>,
    }

    impl RedemptionTx for RedemptionFake {
        async fn insert_job(&mut self, job: &Job, _: DateTime<Utc>) -> Result<(), StoreError> {
            self.job = Some(job.clone());
            Ok(())
        }

        async fn job(&mut self, id: Uuid) -> Result<Option<Job>, StoreError> {
            Ok(self.job.clone().filter(|j| j.id == id))
        }

        async fn redeemable(
            &mut self,
            id: UserCouponId,
        ) -> Result<Option<RedeemableCoupon>, StoreError> {
            Ok(self.coupon.clone().filter(|c| c.id == id))
        }

        async fn mark_used(
            &mut self,
            id: UserCouponId,
            version: i64,
            _: DateTime<Utc>,
        ) -> Result<bool, StoreError> {
            let Some(coupon) = self.coupon.as_mut().filter(|c| c.id == id) else {
                return Ok(false);
            };
            if self.lose_the_race
                || coupon.version != version
                || coupon.status != CouponStatus::Issued
            {
                return Ok(false);
            }
            coupon.status = CouponStatus::Used;
            coupon.version += 1;
            Ok(true)
        }

        async fn pay_vendor(
            &mut self,
            vendor: VendorId,
            coupon: UserCouponId,
            _: Uuid,
            amount: i64,
            _: DateTime<Utc>,
        ) -> Result<bool, StoreError> {
            if self.vendor_payments.iter().any(|(_, c, _)| *c == coupon) {
                return Ok(false);
            }
            self.vendor_payments.push((vendor, coupon, amount));
            Ok(true)
        }

        async fn finish_job(
            &mut self,
            _: Uuid,
            status: JobStatus,
            reason: Option<FailReason>,
            _: DateTime<Utc>,
        ) -> Result<(), StoreError> {
            self.finished = Some((status, reason));
            Ok(())
        }
    }

    impl OutboxWriter for RedemptionFake {
        async fn append(
            &mut self,
            events: Vec<NewEvent>,
            _: DateTime<Utc>,
        ) -> Result<(), StoreError> {
            self.events.extend(events);
            Ok(())
        }
    }

    const JOB: Uuid = Uuid::from_u128(7);

    fn redemption(owner: UserId) -> RedemptionFake {
        RedemptionFake {
            job: Some(Job {
                id: JOB,
                user: owner,
                user_coupon: UserCouponId(3),
                status: JobStatus::Pending,
                reason: None,
            }),
            coupon: Some(RedeemableCoupon {
                id: UserCouponId(3),
                owner,
                status: CouponStatus::Issued,
                version: 1,
                campaign: campaign(),
            }),
            ..RedemptionFake::default()
        }
    }

    fn request(user: i64) -> CouponRedemptionRequested {
        CouponRedemptionRequested {
            job_id: JOB,
            user_id: user,
            user_coupon_id: 3,
        }
    }

    #[tokio::test]
    async fn a_redemption_marks_the_coupon_used_pays_the_vendor_once_and_finishes_the_job() {
        let mut tx = redemption(UserId(5));
        let now = t0() + TimeDelta::minutes(1);
        let outcome = redeem(&mut tx, &request(5), now).await.unwrap();
        assert_eq!(
            outcome,
            Redemption::Succeeded {
                campaign: campaign()
            }
        );
        assert_eq!(tx.coupon.as_ref().unwrap().status, CouponStatus::Used);
        assert_eq!(
            tx.vendor_payments,
            vec![(VendorId(1), UserCouponId(3), 500)]
        );
        assert_eq!(tx.finished, Some((JobStatus::Succeeded, None)));
        assert_eq!(tx.events.len(), 1);
        assert_eq!(tx.events[0].event_type, types::COUPON_REDEMPTION_FINISHED);
        assert_eq!(tx.events[0].payload["amount"], 500);
        assert_eq!(tx.events[0].payload["status"], "succeeded");
    }

    #[tokio::test]
    async fn a_finished_job_is_not_redeemed_again_and_an_unknown_one_is_an_error() {
        let mut tx = redemption(UserId(5));
        tx.job.as_mut().unwrap().status = JobStatus::Succeeded;
        assert_eq!(
            redeem(&mut tx, &request(5), t0()).await.unwrap(),
            Redemption::AlreadyFinished
        );
        assert!(tx.events.is_empty() && tx.vendor_payments.is_empty());
        tx.job = None;
        assert!(redeem(&mut tx, &request(5), t0()).await.is_err());
    }

    #[tokio::test]
    async fn each_refusal_fails_the_job_with_its_reason_and_pays_nobody() {
        let inside = t0() + TimeDelta::minutes(1);
        let cases: Vec<(RedemptionFake, i64, DateTime<Utc>, FailReason)> = vec![
            (redemption(UserId(5)), 6, inside, FailReason::NotYourCoupon),
            (
                RedemptionFake {
                    coupon: None,
                    ..redemption(UserId(5))
                },
                5,
                inside,
                FailReason::NotYourCoupon,
            ),
            (
                {
                    let mut tx = redemption(UserId(5));
                    tx.coupon.as_mut().unwrap().status = CouponStatus::Used;
                    tx
                },
                5,
                inside,
                FailReason::AlreadyUsed,
            ),
            (
                redemption(UserId(5)),
                5,
                t0() + TimeDelta::hours(1),
                FailReason::Expired,
            ),
            (
                redemption(UserId(5)),
                5,
                t0() - TimeDelta::seconds(1),
                FailReason::NotStarted,
            ),
            (
                RedemptionFake {
                    lose_the_race: true,
                    ..redemption(UserId(5))
                },
                5,
                inside,
                FailReason::AlreadyUsed,
            ),
        ];
        for (mut tx, user, now, reason) in cases {
            assert_eq!(
                redeem(&mut tx, &request(user), now).await.unwrap(),
                Redemption::Failed(reason)
            );
            assert_eq!(tx.finished, Some((JobStatus::Failed, Some(reason))));
            assert!(tx.vendor_payments.is_empty(), "{reason:?}");
            assert_eq!(tx.events[0].payload["reason"], reason.code());
        }
    }
}
