//! The coupon use cases' test fakes: a repository over the in-memory
//! unit of work, a service over it, a ledger after a failover and an issuer
//! standing in for a lock strategy.

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
};

use chrono::{DateTime, TimeDelta, Utc};
use futures::{FutureExt, future::BoxFuture};
use uuid::Uuid;

use super::{CouponAdapters, CouponService, LedgerIssuer};
use crate::{
    coupon::{
        domain::{
            Campaign, CampaignCounts, CampaignDraft, CouponError, CouponState, HeldCoupon,
            IssuedCoupon, Job, LedgerDrift, LedgerSnapshot, LedgerStep, RecordError, Vendor,
            Winner, first_come,
        },
        infra::{
            memory::MemoryCouponLedger,
            winner_queue::{WinnerSender, winner_queue},
        },
        ports::{
            CouponAdapterTypes, CouponIssuer, CouponLedger, CouponRepository, IssueOutcome,
            IssueRequest,
        },
    },
    kernel::{
        CouponId, ManualClock, PageRequest, UserCouponId, UserId, VendorId, events::RelayWake,
        idempotency::RequestKey,
    },
    testing::MemoryUow,
};

pub const ADMIN: UserId = UserId(9_000);

#[derive(Clone, Copy)]
pub struct NoWake;

impl RelayWake for NoWake {
    fn wake(&self) {}
}

/// Campaign 1 and the vendors; the coupons won live in the unit of work
/// (`uow.world().won`, with the unique (coupon, user) and (coupon,
/// number) rules).
#[derive(Clone, Default)]
pub struct FakeRepo {
    pub holder_reads: Arc<AtomicUsize>,
    vendors: Arc<Mutex<Vec<Vendor>>>,
    /// The transactional side (keys, jobs, coupons won) the service shares.
    pub uow: MemoryUow,
}

pub fn key(user: i64, coupon: i64, key: &str) -> RequestKey {
    RequestKey::new(UserId(user), "coupon.issue", key, &coupon).unwrap()
}

/// Two coupons of campaign 1, valid for an hour from [`t0`].
pub fn campaign() -> Campaign {
    Campaign {
        id: CouponId(1),
        name: "Coffee".into(),
        discount: 500,
        quantity: 2,
        valid_from: t0(),
        valid_until: t0() + TimeDelta::hours(1),
        vendor: VendorId(1),
    }
}

pub fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

impl CouponRepository for FakeRepo {
    async fn create_vendor(
        &self,
        name: String,
        admin: UserId,
        _: DateTime<Utc>,
    ) -> Result<Vendor, CouponError> {
        let mut vendors = self.vendors.lock().unwrap();
        let vendor = Vendor {
            id: VendorId(vendors.len() as i64 + 1),
            name,
            balance: 0,
        };
        vendors.push(vendor.clone());
        self.uow.world().outbox.push(vendor.created(admin));
        Ok(vendor)
    }
    async fn vendors(&self, page: PageRequest) -> Result<Vec<Vendor>, CouponError> {
        Ok(self
            .vendors
            .lock()
            .unwrap()
            .iter()
            .filter(|v| page.after.is_none_or(|after| v.id.value() > after))
            .take(page.fetch() as usize)
            .cloned()
            .collect())
    }
    async fn create_campaign(
        &self,
        draft: CampaignDraft,
        admin: UserId,
        _: DateTime<Utc>,
    ) -> Result<Campaign, CouponError> {
        let campaign = Campaign {
            id: CouponId(2),
            name: draft.name,
            discount: draft.discount,
            quantity: draft.quantity,
            valid_from: draft.valid_from,
            valid_until: draft.valid_until,
            vendor: draft.vendor,
        };
        self.uow.world().outbox.push(campaign.created(admin));
        Ok(campaign)
    }
    async fn campaign(&self, id: CouponId) -> Result<Option<Campaign>, CouponError> {
        Ok((id == CouponId(1)).then(campaign))
    }
    async fn campaigns(&self, _: Option<DateTime<Utc>>) -> Result<Vec<Campaign>, CouponError> {
        Ok(vec![campaign()])
    }
    async fn campaign_page(
        &self,
        page: PageRequest,
    ) -> Result<Vec<(Campaign, CampaignCounts)>, CouponError> {
        let mut rows = Vec::new();
        if page.after.is_none_or(|after| after > 1) {
            rows.push((campaign(), self.stats(&campaign()).await?));
        }
        Ok(rows)
    }
    async fn holders(&self, _: CouponId) -> Result<Vec<(UserId, u32)>, CouponError> {
        self.holder_reads.fetch_add(1, Ordering::SeqCst);
        Ok(self
            .uow
            .world()
            .won
            .iter()
            .map(|r| (r.user, r.number))
            .collect())
    }
    async fn held_by(
        &self,
        _: CouponId,
        user: UserId,
    ) -> Result<Option<IssuedCoupon>, CouponError> {
        Ok(self
            .uow
            .world()
            .won
            .iter()
            .find(|r| r.user == user)
            .cloned())
    }
    async fn wallet_of(
        &self,
        user: UserId,
        now: DateTime<Utc>,
        page: PageRequest,
    ) -> Result<Vec<HeldCoupon>, CouponError> {
        let coffee = campaign();
        Ok(self
            .uow
            .world()
            .won
            .iter()
            .rev()
            .filter(|r| r.user == user)
            .filter(|r| page.after.is_none_or(|after| r.id.value() < after))
            .take(page.fetch() as usize)
            .map(|r| HeldCoupon {
                id: r.id,
                coupon: r.coupon,
                name: coffee.name.clone(),
                discount: coffee.discount,
                number: r.number,
                state: CouponState::of(false, coffee.valid_until, now),
                valid_until: coffee.valid_until,
                issued_at: t0(),
            })
            .collect())
    }
    async fn job(&self, id: Uuid) -> Result<Option<Job>, CouponError> {
        Ok(self.uow.world().jobs.get(&id).cloned())
    }
    async fn stats(&self, campaign: &Campaign) -> Result<CampaignCounts, CouponError> {
        let issued = self
            .uow
            .world()
            .won
            .iter()
            .filter(|r| r.coupon == campaign.id)
            .count() as u64;
        Ok(CampaignCounts {
            issued,
            ..CampaignCounts::default()
        })
    }
}

/// The fakes' ports, over the ledger `L` (in memory, or one that failed over).
pub type Fakes<L = MemoryCouponLedger> =
    CouponAdapterTypes<MemoryUow, FakeRepo, L, ManualClock, NoWake, WinnerSender>;

pub type Service<L = MemoryCouponLedger> = CouponService<Fakes<L>>;

/// A service issuing through the ledger over `repo`'s stores.
pub fn service_over<L: CouponLedger>(repo: FakeRepo, ledger: L, clock: ManualClock) -> Service<L> {
    let adapters = CouponAdapters {
        uow: repo.uow.clone(),
        repo,
        ledger,
        clock,
    };
    let issuer = LedgerIssuer::new(adapters.clone(), winner_queue());
    CouponService::new(adapters, NoWake, TimeDelta::seconds(30), Arc::new(issuer))
}

/// Another instance a minute into campaign 1 over the same stores, with a
/// ledger of its own (one that lost everything, or failed over).
pub fn another_instance<L: CouponLedger>(repo: FakeRepo, ledger: L) -> Service<L> {
    service_over(repo, ledger, ManualClock::new(t0() + TimeDelta::minutes(1)))
}

/// A service a minute into campaign 1, whose ledger is loaded.
pub async fn service(repo: FakeRepo, ledger: MemoryCouponLedger) -> (Service, ManualClock) {
    let clock = ManualClock::new(t0() + TimeDelta::minutes(1));
    ledger.load(&campaign(), &[]).await.unwrap();
    (service_over(repo, ledger, clock.clone()), clock)
}

/// A service over the same stores that also knows campaign 2.
pub async fn service_with_two(repo: FakeRepo) -> (Service, ManualClock) {
    let (service, clock) = service(repo, MemoryCouponLedger::default()).await;
    let mut second = campaign();
    second.id = CouponId(2);
    service.campaigns.remember(&second);
    service.ledger.load(&second, &[]).await.unwrap();
    (service, clock)
}

/// A service a minute into campaign 1 whose issues `issuer` decides.
pub fn service_issuing(repo: &FakeRepo, issuer: Arc<dyn CouponIssuer>) -> Service {
    let adapters = CouponAdapters {
        uow: repo.uow.clone(),
        repo: repo.clone(),
        ledger: MemoryCouponLedger::default(),
        clock: ManualClock::new(t0() + TimeDelta::minutes(1)),
    };
    CouponService::new(adapters, NoWake, TimeDelta::seconds(30), issuer)
}

/// The number `user` wins of `coupon`.
pub async fn number_won<L: CouponLedger>(
    service: &Service<L>,
    coupon: CouponId,
    user: UserId,
) -> u32 {
    service.issue(coupon, user, None).await.unwrap().number
}

/// Campaign 1 is taken: `holder` hears "already yours", `late` "sold out".
pub async fn assert_full<L: CouponLedger>(service: &Service<L>, holder: UserId, late: UserId) {
    assert!(matches!(
        service.issue(CouponId(1), holder, None).await,
        Err(CouponError::AlreadyIssued)
    ));
    assert!(matches!(
        service.issue(CouponId(1), late, None).await,
        Err(CouponError::SoldOut)
    ));
}

/// Campaign 1 (two coupons): user 1 wins, asks again, user 2 wins, user
/// 3 is too late.
pub async fn first_come_first_served<L: CouponLedger>(service: &Service<L>) {
    assert_eq!(number_won(service, CouponId(1), UserId(1)).await, 1);
    assert!(matches!(
        service.issue(CouponId(1), UserId(1), None).await,
        Err(CouponError::AlreadyIssued)
    ));
    assert_eq!(number_won(service, CouponId(1), UserId(2)).await, 2);
    assert!(matches!(
        service.issue(CouponId(1), UserId(3), None).await,
        Err(CouponError::SoldOut)
    ));
}

/// The ledger on a Redis replica promoted by a failover: it missed the
/// old primary's last writes, and its first issue answers `Stale`,
/// dropping the ledger as the Redis script does.
#[derive(Clone)]
pub struct FailedOver {
    pub inner: Arc<Mutex<MemoryCouponLedger>>,
    pub stale: Arc<AtomicBool>,
}

impl FailedOver {
    pub fn ledger(&self) -> MemoryCouponLedger {
        self.inner.lock().unwrap().clone()
    }
}

impl CouponLedger for FailedOver {
    async fn issue(&self, request: IssueRequest<'_>) -> Result<LedgerStep, CouponError> {
        if self.stale.swap(false, Ordering::SeqCst) {
            *self.inner.lock().unwrap() = MemoryCouponLedger::default();
            return Ok(LedgerStep::Stale);
        }
        self.ledger().issue(request).await
    }

    async fn revoke(&self, winner: &Winner, free: bool) -> Result<bool, CouponError> {
        self.ledger().revoke(winner, free).await
    }

    async fn load(
        &self,
        campaign: &Campaign,
        holders: &[(UserId, u32)],
    ) -> Result<bool, CouponError> {
        self.ledger().load(campaign, holders).await
    }

    async fn snapshot(&self, coupon: CouponId) -> Result<Option<LedgerSnapshot>, CouponError> {
        self.ledger().snapshot(coupon).await
    }

    async fn repair(&self, coupon: CouponId, drift: &LedgerDrift) -> Result<(), CouponError> {
        self.ledger().repair(coupon, drift).await
    }

    async fn issued(&self, coupon: CouponId) -> Result<Option<u64>, CouponError> {
        self.ledger().issued(coupon).await
    }

    async fn issued_many(&self, coupons: &[CouponId]) -> Result<Vec<Option<u64>>, CouponError> {
        self.ledger().issued_many(coupons).await
    }
}

/// A lock strategy in memory: the decision under one mutex, writing into
/// the fake repository's coupons won; `fail_next` makes the next call's
/// write fail with that error.
#[derive(Clone)]
pub struct FakeIssuer {
    repo: FakeRepo,
    pub calls: Arc<AtomicUsize>,
    pub fail_next: Arc<Mutex<Option<RecordError>>>,
    /// Whether it tells the sold-out memory who holds a sold-out campaign.
    keeps_holders: bool,
}

impl FakeIssuer {
    pub fn over(repo: &FakeRepo) -> Self {
        Self {
            repo: repo.clone(),
            calls: Arc::default(),
            fail_next: Arc::default(),
            keeps_holders: true,
        }
    }

    /// Every request of a sold-out rush reaches this issuer.
    pub fn keeping_no_holders(mut self) -> Self {
        self.keeps_holders = false;
        self
    }
}

impl CouponIssuer for FakeIssuer {
    fn issue<'a>(
        &'a self,
        IssueRequest { campaign, user, .. }: IssueRequest<'a>,
    ) -> BoxFuture<'a, Result<IssueOutcome, CouponError>> {
        async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if let Some(err) = self.fail_next.lock().unwrap().take() {
                return Ok(IssueOutcome::NotWritten(err));
            }
            let mut world = self.repo.uow.world();
            let held = world.won.iter().any(|r| r.user == user);
            Ok(
                match first_come(held, world.won.len() as u32, campaign.quantity) {
                    LedgerStep::Issued(number) => {
                        let row = IssuedCoupon {
                            id: UserCouponId(world.won.len() as i64 + 1),
                            coupon: campaign.id,
                            user,
                            number,
                        };
                        world.won.push(row.clone());
                        IssueOutcome::Won(row)
                    }
                    step => IssueOutcome::refused(step),
                },
            )
        }
        .boxed()
    }

    /// The rows, as a lock strategy keeps no ledger.
    fn sold_out_holders<'a>(
        &'a self,
        campaign: &'a Campaign,
    ) -> BoxFuture<'a, Result<Option<HashSet<UserId>>, CouponError>> {
        async move {
            if !self.keeps_holders {
                return Ok(None);
            }
            Ok(campaign.holders_if_sold_out(self.repo.holders(campaign.id).await?))
        }
        .boxed()
    }
}
