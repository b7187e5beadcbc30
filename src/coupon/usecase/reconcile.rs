//! The ledger's reconciler: makes the issue ledger agree with the
//! database (rebuilt when missing, lost holders added, entries whose write
//! never landed dropped) and records each repair as an event.

use chrono::TimeDelta;

use super::CouponService;
use crate::{
    coupon::{
        domain::{Campaign, CouponError, LedgerDrift, ReconcileReport, ledger_drift},
        ports::{CouponLedger, CouponPorts, CouponRepository},
    },
    kernel::{Clock, CouponId, Transaction, UnitOfWork, events::RelayWake, keyed::KeyedLocks},
    outbox::ports::OutboxWriter,
};

/// Loads the ledger from the database rows (once, even when a thousand
/// requests found it missing at the same moment).
pub(super) async fn rebuild_ledger<R: CouponRepository, L: CouponLedger>(
    rebuilds: &KeyedLocks<CouponId>,
    ledger: &L,
    repo: &R,
    campaign: &Campaign,
) -> Result<bool, CouponError> {
    let _turn = rebuilds.lock(campaign.id).await;
    // Those who waited for the lock find the ledger back (a cheap look,
    // not a copy of every holder).
    if ledger.issued(campaign.id).await?.is_some() {
        return Ok(false);
    }
    let holders = repo.holders(campaign.id).await?;
    let loaded = ledger.load(campaign, &holders).await?;
    if loaded {
        metrics::counter!("coupon_ledger_rebuilds_total").increment(1);
        tracing::warn!(coupon = %campaign.id, holders = holders.len(), "coupon ledger rebuilt from the database");
    }
    Ok(loaded)
}

impl<P: CouponPorts> CouponService<P> {
    /// Makes the ledger agree with the database: rebuilds it when missing,
    /// adds holders it lost, drops entries whose write never landed.
    pub async fn reconcile(&self, coupon: CouponId) -> Result<ReconcileReport, CouponError> {
        let campaign = self.campaign(coupon).await?;
        let mut report = ReconcileReport {
            coupon: Some(coupon),
            ..ReconcileReport::default()
        };
        let snapshot = match self.ledger.snapshot(coupon).await? {
            Some(snapshot) => snapshot,
            None => {
                report.rebuilt =
                    rebuild_ledger(&self.rebuilds, &self.ledger, &self.repo, &campaign).await?;
                self.record_repair(&report).await?;
                return Ok(report);
            }
        };
        let holders = self.repo.holders(coupon).await?;
        let stale_before = self.clock.now() - self.grace;
        let drift = ledger_drift(&holders, &snapshot, stale_before);
        if drift.is_empty() {
            return Ok(report);
        }
        self.ledger.repair(coupon, &drift).await?;
        self.sold_out.forget(coupon);
        let LedgerDrift { add, remove } = drift;
        report.added = add.iter().map(|(user, _)| *user).collect();
        report.removed = remove
            .iter()
            .filter(|e| !add.iter().any(|(user, _)| *user == e.user))
            .map(|e| e.user)
            .collect();
        metrics::counter!("coupon_ledger_repairs_total")
            .increment((report.added.len() + report.removed.len()) as u64);
        self.record_repair(&report).await?;
        Ok(report)
    }

    /// Writes `CouponLedgerRepaired` for a repair the ledger already took
    /// (the ledger is not transactional with the database: a failure here
    /// leaves the repair done and unrecorded, and is reported as an error).
    async fn record_repair(&self, report: &ReconcileReport) -> Result<(), CouponError> {
        let Some(event) = report.event() else {
            return Ok(());
        };
        let mut tx = self.uow.begin().await?;
        tx.append(vec![event], self.clock.now()).await?;
        tx.commit().await?;
        self.wake.wake();
        Ok(())
    }

    /// Reconciles every campaign still running (or ended within a day).
    pub async fn reconcile_all(&self) -> Result<Vec<ReconcileReport>, CouponError> {
        let since = self.clock.now() - TimeDelta::days(1);
        let mut reports = Vec::new();
        for campaign in self.repo.campaigns(Some(since)).await? {
            self.campaigns.remember(&campaign);
            let report = self.reconcile(campaign.id).await?;
            if report.repaired() {
                reports.push(report);
            }
        }
        Ok(reports)
    }
}

#[cfg(test)]
mod tests {
    use super::super::fake::{FakeRepo, another_instance, assert_full, service};
    use crate::{
        coupon::{
            domain::{CouponError, IssuedCoupon},
            infra::memory::MemoryCouponLedger,
        },
        kernel::{CouponId, UserCouponId, UserId, events::types},
    };

    #[tokio::test]
    async fn the_reconciler_adds_holders_the_ledger_lost_and_then_finds_nothing() {
        let repo = FakeRepo::default();
        let ledger = MemoryCouponLedger::default();
        let (service, _) = service(repo.clone(), ledger.clone()).await;
        service.issue(CouponId(1), UserId(1), None).await.unwrap();
        // A holder the database has and the ledger forgot (e.g. a failover).
        repo.uow.world().won.push(IssuedCoupon {
            id: UserCouponId(50),
            coupon: CouponId(1),
            user: UserId(2),
            number: 2,
        });
        let report = service.reconcile(CouponId(1)).await.unwrap();
        assert_eq!(report.added, vec![UserId(2)]);
        assert!(report.removed.is_empty() && !report.rebuilt);
        let repaired = |repo: &FakeRepo| -> Vec<serde_json::Value> {
            let world = repo.uow.world();
            (world.outbox.iter())
                .filter(|e| e.event_type == types::COUPON_LEDGER_REPAIRED)
                .map(|e| e.payload.clone())
                .collect()
        };
        assert_eq!(
            repaired(&repo),
            vec![serde_json::json!({"couponId": 1, "added": [2], "removed": [], "rebuilt": false})],
            "the repair is recorded as an event"
        );
        assert!(!service.reconcile(CouponId(1)).await.unwrap().repaired());
        assert_eq!(repaired(&repo).len(), 1, "nothing to repair, no event");
        assert_full(&service, UserId(2), UserId(3)).await;
    }

    #[tokio::test]
    async fn a_missing_ledger_is_rebuilt_by_the_reconciler() {
        let repo = FakeRepo::default();
        let (first, _) = service(repo.clone(), MemoryCouponLedger::default()).await;
        first.issue(CouponId(1), UserId(1), None).await.unwrap();
        // Another instance whose ledger lost the campaign altogether.
        let fresh = another_instance(repo, MemoryCouponLedger::default());
        let report = fresh.reconcile(CouponId(1)).await.unwrap();
        assert!(report.rebuilt);
        assert!(matches!(
            fresh.issue(CouponId(1), UserId(1), None).await,
            Err(CouponError::AlreadyIssued)
        ));
    }
}
