//! The production issuer: the ledger decides (rebuilt from the database
//! when missing or stale), the winners' writer records the winner, and a
//! write that does not land hands its number back.

use std::{
    collections::HashSet,
    sync::{Mutex, OnceLock},
};

use anyhow::anyhow;
use futures::{FutureExt, future::BoxFuture};
use tokio::sync::oneshot;

use super::{CouponAdapters, reconcile::rebuild_ledger, winners::write_winners};
use crate::kernel::Fault;
use crate::{
    coupon::{
        domain::{Campaign, CouponError, IssuedCoupon, LedgerStep, RecordError, Winner},
        ports::{
            CouponIssuer, CouponLedger, CouponPorts, IssueOutcome, IssueRequest, QueuedWinner,
            WinnerQueue,
        },
    },
    kernel::{Clock, CouponId, UserId, failpoint, keyed::KeyedLocks},
};

pub struct LedgerIssuer<P: CouponPorts> {
    adapters: CouponAdapters<P>,
    winners: P::Winners,
    /// The queue's receiving end, until the first winner starts the writer.
    batches: Mutex<Option<<P::Winners as WinnerQueue>::Batches>>,
    /// Set once the writer runs, so later winners skip the lock above.
    writer: OnceLock<()>,
    /// One rebuild per campaign at a time in this instance.
    rebuilds: KeyedLocks<CouponId>,
}

impl<P: CouponPorts> LedgerIssuer<P> {
    /// Winners are written through the adapters' unit of work by a writer
    /// that takes them from the queue `(winners, batches)`.
    pub fn new(
        adapters: CouponAdapters<P>,
        (winners, batches): (P::Winners, <P::Winners as WinnerQueue>::Batches),
    ) -> Self {
        Self {
            adapters,
            winners,
            batches: Mutex::new(Some(batches)),
            writer: OnceLock::new(),
            rebuilds: KeyedLocks::default(),
        }
    }

    async fn decide(&self, request: IssueRequest<'_>) -> Result<IssueOutcome, CouponError> {
        let campaign = request.campaign;
        let coupon = campaign.id;
        let mut step = self.adapters.ledger.issue(request).await?;
        if step == LedgerStep::Stale {
            metrics::counter!("coupon_ledger_failovers_total").increment(1);
            tracing::warn!(
                %coupon,
                "coupon ledger written before a Redis failover: rebuilding it from the database"
            );
        }
        if matches!(step, LedgerStep::Missing | LedgerStep::Stale) {
            rebuild_ledger(
                &self.rebuilds,
                &self.adapters.ledger,
                &self.adapters.repo,
                campaign,
            )
            .await?;
            step = self.adapters.ledger.issue(request).await?;
        }
        match step {
            LedgerStep::Issued(number) => {
                let now = self.adapters.clock.now();
                self.record(IssueRequest { now, ..request }, number).await
            }
            LedgerStep::AlreadyIssued => Ok(IssueOutcome::AlreadyIssued),
            LedgerStep::SoldOut => Ok(IssueOutcome::SoldOut),
            LedgerStep::Missing | LedgerStep::Stale => Err(CouponError::Fault(Fault::Unavailable(
                anyhow!("the coupon ledger of {coupon} vanished again while being rebuilt"),
            ))),
        }
    }

    async fn record(
        &self,
        request: IssueRequest<'_>,
        number: u32,
    ) -> Result<IssueOutcome, CouponError> {
        match self.write(&request, number).await {
            Ok(row) => {
                if request.key.is_some() {
                    failpoint::step("idempotency::committed")
                        .await
                        .map_err(|cause| CouponError::Fault(Fault::Unavailable(cause)))?;
                }
                Ok(IssueOutcome::Won(row))
            }
            Err(refused) => {
                // A number someone holds since before a rebuild stays out
                // of circulation until the reconciler records its holder;
                // any other (a holder the ledger had lost, a reused key, a
                // failed write) is handed out again.
                let free_number = !matches!(refused, RecordError::DuplicateNumber);
                self.revoke(&request.winner(number), free_number).await;
                Ok(IssueOutcome::NotWritten(refused))
            }
        }
    }

    /// Hands the winner to the winners' writer and waits for its answer.
    async fn write(
        &self,
        request: &IssueRequest<'_>,
        number: u32,
    ) -> Result<IssuedCoupon, RecordError> {
        let quantity = request.campaign.quantity;
        // With a key, the number taken from the ledger is the claim.
        if request.key.is_some() {
            failpoint::step("idempotency::claimed")
                .await
                .map_err(RecordError::Failed)?;
        }
        failpoint::step("coupon::record_issue")
            .await
            .map_err(RecordError::Failed)?;
        if number == 0 || number > quantity {
            return Err(RecordError::Failed(anyhow!(
                "issue number {number} is outside 1..={quantity}"
            )));
        }
        self.start_writer();
        let (reply, answer) = oneshot::channel();
        let winner = QueuedWinner {
            winner: request.winner(number),
            key: request.key.cloned(),
            at: request.now,
            reply,
        };
        self.winners
            .push(winner)
            .map_err(|_| RecordError::Failed(anyhow!("the winners' writer has stopped")))?;
        answer
            .await
            .map_err(|_| RecordError::Failed(anyhow!("the winners' writer dropped a winner")))?
    }

    /// Starts the winners' writer with the first winner (it needs a
    /// runtime, which a service built for the OpenAPI document lacks).
    fn start_writer(&self) {
        self.writer.get_or_init(|| {
            let batches = self.batches.lock().ok().and_then(|mut b| b.take());
            if let Some(batches) = batches {
                tokio::spawn(write_winners(self.adapters.uow.clone(), batches));
            }
        });
    }

    /// Revocation is the compensation of a failed write; if it fails too,
    /// the reconciler drops the orphan entry after the grace period.
    async fn revoke(&self, winner: &Winner, free_number: bool) {
        if let Err(err) = self.adapters.ledger.revoke(winner, free_number).await {
            let Winner {
                coupon,
                user,
                number,
            } = winner;
            tracing::warn!(%coupon, %user, number, error = %err, "cannot revoke a coupon ledger entry; the reconciler will");
        }
    }
}

impl<P: CouponPorts> CouponIssuer for LedgerIssuer<P> {
    fn issue<'a>(
        &'a self,
        request: IssueRequest<'a>,
    ) -> BoxFuture<'a, Result<IssueOutcome, CouponError>> {
        self.decide(request).boxed()
    }

    /// The ledger's entries, when they fill the campaign.
    fn sold_out_holders<'a>(
        &'a self,
        campaign: &'a Campaign,
    ) -> BoxFuture<'a, Result<Option<HashSet<UserId>>, CouponError>> {
        async move {
            let snapshot = self.adapters.ledger.snapshot(campaign.id).await?;
            Ok(snapshot
                .filter(|s| s.entries.len() >= s.quantity as usize)
                .map(|s| s.entries.iter().map(|e| e.user).collect()))
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use crate::kernel::Fault;
    use std::sync::{Arc, atomic::Ordering};

    use super::super::fake::{
        FailedOver, FakeRepo, another_instance, assert_full, campaign, number_won, service,
    };
    use crate::{
        coupon::{
            domain::{CouponError, LedgerSnapshot},
            infra::memory::MemoryCouponLedger,
            ports::CouponLedger,
        },
        kernel::{CouponId, UserId},
    };

    #[tokio::test]
    async fn a_failed_write_is_revoked_and_reported_unavailable() {
        let repo = FakeRepo::default();
        let ledger = MemoryCouponLedger::default();
        let (service, _) = service(repo.clone(), ledger.clone()).await;
        repo.uow.set_down(true);
        assert!(matches!(
            service.issue(CouponId(1), UserId(1), None).await,
            Err(CouponError::Fault(Fault::Unavailable(_)))
        ));
        repo.uow.set_down(false);
        assert_eq!(ledger.issued(CouponId(1)).await.unwrap(), Some(0));
        // The number is handed out again.
        assert_eq!(number_won(&service, CouponId(1), UserId(2)).await, 1);
    }

    #[tokio::test]
    async fn a_holder_the_ledger_forgot_is_answered_from_the_database() {
        let repo = FakeRepo::default();
        let (first, _) = service(repo.clone(), MemoryCouponLedger::default()).await;
        first.issue(CouponId(1), UserId(1), None).await.unwrap();
        // A ledger that lost the holder says "won"; the database says
        // "already yours".
        let (fresh, _) = service(repo.clone(), MemoryCouponLedger::default()).await;
        assert!(matches!(
            fresh.issue(CouponId(1), UserId(1), None).await,
            Err(CouponError::AlreadyIssued)
        ));
        assert_eq!(repo.uow.world().won.len(), 1);
        let snapshot: Option<LedgerSnapshot> = fresh.ledger.snapshot(CouponId(1)).await.unwrap();
        assert_eq!(
            snapshot.unwrap().entries.len(),
            0,
            "the number the fresh ledger handed out was revoked (the reconciler adds the holder back)"
        );
    }

    #[tokio::test]
    async fn a_missing_ledger_is_rebuilt_once() {
        let repo = FakeRepo::default();
        let (service, _) = service(repo.clone(), MemoryCouponLedger::default()).await;
        service.issue(CouponId(1), UserId(1), None).await.unwrap();
        let lost = another_instance(repo.clone(), MemoryCouponLedger::default());
        let tasks: Vec<_> = (10..20)
            .map(|user| {
                let lost = lost.clone();
                tokio::spawn(async move { lost.issue(CouponId(1), UserId(user), None).await })
            })
            .collect();
        let mut won = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(issued) => {
                    assert_eq!(issued.number, 2);
                    won += 1;
                }
                Err(CouponError::SoldOut) => {}
                Err(other) => panic!("{other}"),
            }
        }
        assert_eq!(won, 1);
        assert_eq!(repo.holder_reads.load(Ordering::SeqCst), 1, "one rebuild");
    }

    #[tokio::test]
    async fn a_ledger_from_before_a_failover_is_rebuilt_from_the_database_before_it_answers() {
        let repo = FakeRepo::default();
        let (service, _) = service(repo.clone(), MemoryCouponLedger::default()).await;
        assert_eq!(number_won(&service, CouponId(1), UserId(1)).await, 1);
        // The promoted replica knows the campaign but not user 1's number.
        let replica = MemoryCouponLedger::default();
        replica.load(&campaign(), &[]).await.unwrap();
        let failed_over = FailedOver {
            inner: Arc::new(std::sync::Mutex::new(replica)),
            stale: Arc::new(true.into()),
        };
        let after = another_instance(repo.clone(), failed_over.clone());
        // Rebuilt first: user 2 gets number 2, not user 1's number 1 again.
        assert_eq!(number_won(&after, CouponId(1), UserId(2)).await, 2);
        assert_eq!(repo.holder_reads.load(Ordering::SeqCst), 1, "one rebuild");
        assert_full(&after, UserId(1), UserId(3)).await;
        let snapshot = failed_over
            .ledger()
            .snapshot(CouponId(1))
            .await
            .unwrap()
            .unwrap();
        let numbers: Vec<(UserId, u32)> = snapshot
            .entries
            .iter()
            .map(|e| (e.user, e.number))
            .collect();
        assert_eq!(numbers, vec![(UserId(1), 1), (UserId(2), 2)]);
    }
}
