//! First come, first served, one per user: the campaign and its window,
//! the sold-out memory, the request's key, then the issuer's decision,
//! answered alike whichever issuer decided.

use super::{CouponService, sold_out::Remembered};
use crate::kernel::Fault;
use crate::{
    coupon::{
        domain::{CouponError, Issued, IssuedCoupon, RecordError},
        ports::{CouponPorts, CouponRepository, IssueOutcome, IssueRequest},
    },
    kernel::{
        Clock, CouponId, UserId,
        events::RelayWake,
        idempotency::{self, RequestKey},
    },
};

impl<P: CouponPorts> CouponService<P> {
    /// First come, first served, one per user. Rejections come from the
    /// issuer alone; a winner's row is written, and if that fails (its
    /// number handed back) the caller hears `Unavailable`. With a key, the
    /// winner's answer is written with its row, and a retry hears it again.
    pub async fn issue(
        &self,
        coupon: CouponId,
        user: UserId,
        key: Option<&RequestKey>,
    ) -> Result<Issued, CouponError> {
        let campaign = self.campaign(coupon).await?;
        let now = self.clock.now();
        campaign.window(now)?;
        match self.sold_out.answer(coupon, user, now) {
            Some(Remembered::Holder) => return self.replay(coupon, user, key).await,
            Some(Remembered::SoldOut) => return Err(self.sold_out_answer()),
            None => {}
        }
        // A key already used (for this request: replay; for another:
        // refuse) never takes a number.
        if let Some(first) = idempotency::replay(&self.uow, key).await? {
            return Ok(first);
        }
        let request = IssueRequest {
            campaign: &campaign,
            user,
            key,
            now,
        };
        match self.issuer.issue(request).await? {
            IssueOutcome::Won(row) => Ok(self.won(&row)),
            IssueOutcome::AlreadyIssued => self.replay(coupon, user, key).await,
            IssueOutcome::SoldOut => {
                self.remember_sold_out(&campaign, now).await;
                Err(self.sold_out_answer())
            }
            IssueOutcome::NotWritten(refused) => {
                // Whatever number it took was handed back: this instance
                // stops refusing the campaign from memory.
                self.sold_out.forget(coupon);
                self.not_written(coupon, user, key, refused).await
            }
        }
    }

    /// The answer to a winner whose write did not land.
    async fn not_written(
        &self,
        coupon: CouponId,
        user: UserId,
        key: Option<&RequestKey>,
        refused: RecordError,
    ) -> Result<Issued, CouponError> {
        match refused {
            // The database holds their coupon already (the issuer's view
            // had lost it, or their other request won first).
            RecordError::DuplicateUser => self.replay(coupon, user, key).await,
            RecordError::KeyReused => Err(CouponError::Fault(Fault::KeyReused)),
            RecordError::DuplicateNumber => {
                metrics::counter!("coupon_issue_total", "result" => "retry").increment(1);
                Err(CouponError::Fault(Fault::Unavailable(anyhow::anyhow!(
                    "coupon {coupon}: the issue number is held by a racing writer or since before a ledger rebuild; retry"
                ))))
            }
            RecordError::Failed(cause) => {
                metrics::counter!("coupon_issue_total", "result" => "failed").increment(1);
                Err(CouponError::Fault(Fault::Unavailable(
                    cause.context("recording an issued coupon"),
                )))
            }
        }
    }

    /// A winner's answer, once its row and event are committed.
    fn won(&self, row: &IssuedCoupon) -> Issued {
        self.wake.wake();
        metrics::counter!("coupon_issue_total", "result" => "issued").increment(1);
        row.answer()
    }

    fn sold_out_answer(&self) -> CouponError {
        metrics::counter!("coupon_issue_total", "result" => "sold_out").increment(1);
        CouponError::SoldOut
    }

    /// A holder asking again: with the key of their winning request they get
    /// the same answer; otherwise `AlreadyIssued`. A key the ledger counts
    /// as a holder but the database has no row for is a win still being
    /// written, or cut off by a crash: `Unavailable` until it lands or the
    /// reconciler frees the number (after its grace period), when a retry
    /// with the key runs afresh — never a stuck key, never two coupons.
    async fn replay(
        &self,
        coupon: CouponId,
        user: UserId,
        key: Option<&RequestKey>,
    ) -> Result<Issued, CouponError> {
        metrics::counter!("coupon_issue_total", "result" => "already_issued").increment(1);
        if key.is_none() {
            return Err(CouponError::AlreadyIssued);
        }
        if let Some(first) = idempotency::replay(&self.uow, key).await? {
            return Ok(first);
        }
        match self.repo.held_by(coupon, user).await? {
            Some(_) => Err(CouponError::AlreadyIssued),
            None => Err(CouponError::Fault(Fault::Unavailable(anyhow::anyhow!(
                "coupon {coupon} for user {user} is still being recorded; retry with the same key"
            )))),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::kernel::Fault;
    use std::sync::{Arc, atomic::Ordering};

    use chrono::TimeDelta;

    use super::super::fake::{
        FakeIssuer, FakeRepo, assert_full, campaign, first_come_first_served, key, service,
        service_issuing, service_with_two, t0,
    };
    use crate::{
        coupon::{
            domain::{CouponError, LedgerStep, RecordError, Winner},
            infra::memory::MemoryCouponLedger,
            ports::{CouponLedger, IssueRequest},
            usecase::winners::record_winners,
        },
        kernel::{Clock, CouponId, Transaction, UnitOfWork, UserId},
    };

    #[tokio::test]
    async fn first_come_first_served_one_per_user() {
        let (service, _) = service(FakeRepo::default(), MemoryCouponLedger::default()).await;
        first_come_first_served(&service).await;
        assert!(matches!(
            service.issue(CouponId(9), UserId(3), None).await,
            Err(CouponError::NotFound)
        ));
    }

    #[tokio::test]
    async fn a_winning_key_replays_its_win_and_names_only_that_request() {
        let repo = FakeRepo::default();
        let (service, _) = service(repo.clone(), MemoryCouponLedger::default()).await;
        let won = service
            .issue(CouponId(1), UserId(1), Some(&key(1, 1, "k")))
            .await
            .unwrap();
        let again = service
            .issue(CouponId(1), UserId(1), Some(&key(1, 1, "k")))
            .await
            .unwrap();
        assert_eq!(again, won, "the retry hears the first answer");
        assert!(matches!(
            service
                .issue(CouponId(1), UserId(1), Some(&key(1, 1, "other")))
                .await,
            Err(CouponError::AlreadyIssued)
        ));
        // The same key on another campaign is another request.
        assert!(matches!(
            service
                .issue(CouponId(9), UserId(1), Some(&key(1, 9, "k")))
                .await,
            Err(CouponError::NotFound)
        ));
        let (other_campaign, _) = service_with_two(repo.clone()).await;
        assert!(matches!(
            other_campaign
                .issue(CouponId(2), UserId(1), Some(&key(1, 2, "k")))
                .await,
            Err(CouponError::Fault(Fault::KeyReused))
        ));
        assert_eq!(
            other_campaign.ledger.issued(CouponId(2)).await.unwrap(),
            Some(0),
            "a reused key takes no number"
        );
        assert_eq!(repo.uow.world().won.len(), 1);
    }

    #[tokio::test]
    async fn a_key_whose_write_was_cut_off_is_unavailable_then_runs_afresh() {
        let repo = FakeRepo::default();
        let ledger = MemoryCouponLedger::default();
        let (service, clock) = service(repo.clone(), ledger.clone()).await;
        // The ledger counts user 1 but the process died before the row and
        // the key were written.
        let request = IssueRequest {
            campaign: &campaign(),
            user: UserId(1),
            key: None,
            now: clock.now(),
        };
        assert_eq!(ledger.issue(request).await.unwrap(), LedgerStep::Issued(1));
        let k = key(1, 1, "k");
        assert!(matches!(
            service.issue(CouponId(1), UserId(1), Some(&k)).await,
            Err(CouponError::Fault(Fault::Unavailable(_)))
        ));
        // Past the grace period the reconciler frees the number ...
        clock.advance(TimeDelta::seconds(31));
        let report = service.reconcile(CouponId(1)).await.unwrap();
        assert_eq!(report.removed, vec![UserId(1)]);
        // ... and the retry wins once.
        let won = service
            .issue(CouponId(1), UserId(1), Some(&k))
            .await
            .unwrap();
        assert_eq!(won.number, 1);
        assert_eq!(repo.uow.world().won.len(), 1);
    }

    #[tokio::test]
    async fn a_lock_strategy_decides_in_the_ledgers_place_and_is_answered_alike() {
        let repo = FakeRepo::default();
        let ledger = MemoryCouponLedger::default();
        ledger.load(&campaign(), &[]).await.unwrap();
        let issuer = FakeIssuer::over(&repo);
        let service = service_issuing(&repo, Arc::new(issuer.clone()));
        let c = CouponId(1);
        first_come_first_served(&service).await;
        assert_eq!(issuer.calls.load(Ordering::SeqCst), 4);
        assert_eq!(
            ledger.issued(c).await.unwrap(),
            Some(0),
            "the ledger was not asked"
        );
        // The sold-out memory is filled from the rows (a lock strategy
        // keeps no ledger) and answers the rest of the rush.
        assert_eq!(repo.holder_reads.load(Ordering::SeqCst), 1);
        assert_full(&service, UserId(2), UserId(4)).await;
        assert_eq!(issuer.calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_lock_strategys_failures_are_answered_as_the_ledgers_path_answers_them() {
        let repo = FakeRepo::default();
        let issuer = FakeIssuer::over(&repo);
        let service = service_issuing(&repo, Arc::new(issuer.clone()));
        let c = CouponId(1);
        let fail = |err| *issuer.fail_next.lock().unwrap() = Some(err);
        fail(RecordError::Failed(anyhow::anyhow!("connection reset")));
        assert!(matches!(
            service.issue(c, UserId(1), None).await,
            Err(CouponError::Fault(Fault::Unavailable(_)))
        ));
        fail(RecordError::DuplicateNumber);
        assert!(matches!(
            service.issue(c, UserId(1), None).await,
            Err(CouponError::Fault(Fault::Unavailable(_)))
        ));
        fail(RecordError::KeyReused);
        assert!(matches!(
            service.issue(c, UserId(1), None).await,
            Err(CouponError::Fault(Fault::KeyReused))
        ));
        // The user's other request won while this one waited for the lock.
        fail(RecordError::DuplicateUser);
        assert!(matches!(
            service.issue(c, UserId(1), None).await,
            Err(CouponError::AlreadyIssued)
        ));
        assert!(repo.uow.world().won.is_empty());
        // A key that already won is replayed without asking the strategy.
        let k = key(1, 1, "k");
        let mut tx = repo.uow.begin().await.unwrap();
        let winner = Winner {
            coupon: campaign().id,
            user: UserId(1),
            number: 1,
        };
        record_winners(&mut tx, &[(winner, Some(k.clone()))], t0())
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let calls = issuer.calls.load(Ordering::SeqCst);
        assert_eq!(
            service.issue(c, UserId(1), Some(&k)).await.unwrap().number,
            1
        );
        assert_eq!(issuer.calls.load(Ordering::SeqCst), calls);
    }

    #[tokio::test]
    async fn outside_the_window_nothing_is_issued() {
        let (service, clock) = service(FakeRepo::default(), MemoryCouponLedger::default()).await;
        clock.advance(TimeDelta::hours(2));
        assert!(matches!(
            service.issue(CouponId(1), UserId(1), None).await,
            Err(CouponError::Ended)
        ));
        clock.advance(TimeDelta::hours(-3));
        assert!(matches!(
            service.issue(CouponId(1), UserId(1), None).await,
            Err(CouponError::NotStarted)
        ));
    }
}
