//! The sold-out memory: once a campaign sells out, the rest of its rush is
//! refused from memory for a second at a time, without asking the issuer.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
};

use chrono::{DateTime, TimeDelta, Utc};

use super::CouponService;
use crate::{
    coupon::{domain::Campaign, ports::CouponPorts},
    kernel::{CouponId, UserId, keyed::ExpiringMemo},
};

/// How long a sold-out campaign is answered from memory. Only refusals
/// come from it: a number freed meanwhile (a revoked write, a reconciler
/// repair elsewhere) is handed out again at most this much later.
const SOLD_OUT_MEMORY: TimeDelta = TimeDelta::seconds(1);
/// Larger campaigns are not copied into memory when they sell out.
const SOLD_OUT_MEMO_MAX_QUANTITY: u32 = 100_000;
/// Campaigns remembered at most.
const SOLD_OUT_MEMO_CAMPAIGNS: usize = 1_000;

/// After a campaign sells out, nearly every request of the rush is a
/// refusal. Those are answered here, without a ledger round trip: a holder
/// hears `AlreadyIssued` (or their replay), everyone else `SoldOut`,
/// exactly as the issuer would have said.
#[derive(Clone)]
pub(super) struct SoldOutMemo {
    /// Who held each campaign when it was seen sold out.
    campaigns: ExpiringMemo<CouponId, Arc<HashSet<UserId>>>,
    /// Campaigns whose holders are being copied, so one request does it.
    refreshing: Arc<Mutex<HashSet<CouponId>>>,
}

impl Default for SoldOutMemo {
    fn default() -> Self {
        Self {
            campaigns: ExpiringMemo::new(SOLD_OUT_MEMO_CAMPAIGNS),
            refreshing: Arc::default(),
        }
    }
}

/// What the memo knows of a user's request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Remembered {
    Holder,
    SoldOut,
}

impl SoldOutMemo {
    pub(super) fn answer(
        &self,
        coupon: CouponId,
        user: UserId,
        now: DateTime<Utc>,
    ) -> Option<Remembered> {
        let holders = self.campaigns.get(&coupon, now)?;
        Some(if holders.contains(&user) {
            Remembered::Holder
        } else {
            Remembered::SoldOut
        })
    }

    /// Claims the refresh of a campaign; false when another request has it
    /// or the memo is still fresh.
    fn claim(&self, coupon: CouponId, now: DateTime<Utc>) -> bool {
        !self.campaigns.is_fresh(&coupon, now)
            && self
                .refreshing
                .lock()
                .is_ok_and(|mut refreshing| refreshing.insert(coupon))
    }

    /// Remembers who holds a sold-out campaign until `until`, or forgets
    /// it (`None`: not sold out after all), and ends the refresh.
    fn store(&self, coupon: CouponId, holders: Option<HashSet<UserId>>, until: DateTime<Utc>) {
        match holders {
            Some(holders) => self.campaigns.remember(coupon, Arc::new(holders), until),
            None => self.campaigns.forget(&coupon),
        }
        if let Ok(mut refreshing) = self.refreshing.lock() {
            refreshing.remove(&coupon);
        }
    }

    pub(super) fn forget(&self, coupon: CouponId) {
        self.campaigns.forget(&coupon);
    }
}

impl<P: CouponPorts> CouponService<P> {
    /// Copies the holders of a campaign the issuer just called sold out,
    /// so the rest of the rush is answered from memory.
    pub(super) async fn remember_sold_out(&self, campaign: &Campaign, now: DateTime<Utc>) {
        if campaign.quantity > SOLD_OUT_MEMO_MAX_QUANTITY || !self.sold_out.claim(campaign.id, now)
        {
            return;
        }
        let holders = self
            .issuer
            .sold_out_holders(campaign)
            .await
            .unwrap_or_else(|err| {
                tracing::debug!(coupon = %campaign.id, error = %err, "sold-out campaign not copied");
                None
            });
        self.sold_out
            .store(campaign.id, holders, now + SOLD_OUT_MEMORY);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, atomic::Ordering};

    use chrono::TimeDelta;

    use super::super::fake::{FakeIssuer, FakeRepo, assert_full, service, service_issuing};
    use crate::{
        coupon::{
            domain::{CouponError, Winner},
            infra::memory::MemoryCouponLedger,
            ports::CouponLedger,
        },
        kernel::{CouponId, UserId},
    };

    #[tokio::test]
    async fn a_sold_out_rush_is_answered_from_memory_for_a_second() {
        let repo = FakeRepo::default();
        let ledger = MemoryCouponLedger::default();
        let (service, clock) = service(repo.clone(), ledger.clone()).await;
        let c = CouponId(1);
        service.issue(c, UserId(1), None).await.unwrap();
        service.issue(c, UserId(2), None).await.unwrap();
        assert!(matches!(
            service.issue(c, UserId(3), None).await,
            Err(CouponError::SoldOut)
        ));
        // Number 2 is given back (as a write failing elsewhere gives its
        // number back, with no row): this instance goes on refusing from
        // memory for a second, and still knows who holds a coupon.
        assert!(
            ledger
                .revoke(
                    &Winner {
                        coupon: c,
                        user: UserId(2),
                        number: 2
                    },
                    true
                )
                .await
                .unwrap()
        );
        repo.uow.world().won.retain(|row| row.user != UserId(2));
        assert_full(&service, UserId(1), UserId(4)).await;
        clock.advance(TimeDelta::milliseconds(1_001));
        assert_eq!(service.issue(c, UserId(4), None).await.unwrap().number, 2);
    }

    #[tokio::test]
    async fn without_the_sold_out_memory_every_request_reaches_the_strategy() {
        let repo = FakeRepo::default();
        let issuer = FakeIssuer::over(&repo).keeping_no_holders();
        let service = service_issuing(&repo, Arc::new(issuer.clone()));
        let c = CouponId(1);
        service.issue(c, UserId(1), None).await.unwrap();
        service.issue(c, UserId(2), None).await.unwrap();
        for user in [3, 4, 3] {
            assert!(matches!(
                service.issue(c, UserId(user), None).await,
                Err(CouponError::SoldOut)
            ));
        }
        assert_eq!(issuer.calls.load(Ordering::SeqCst), 5);
        assert_eq!(
            repo.holder_reads.load(Ordering::SeqCst),
            0,
            "nothing copied"
        );
    }
}
