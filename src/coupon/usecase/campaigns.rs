//! The admin's vendors and campaigns, this instance's cache of campaigns
//! (they never change), their counts, and a user's wallet.

use std::time::Duration;

use super::CouponService;
use crate::{
    coupon::{
        domain::{
            Campaign, CampaignDraft, CampaignStats, CouponError, HeldCoupon, MAX_PAGE, Vendor,
            parse_name,
        },
        ports::{CouponLedger, CouponPorts, CouponRepository},
    },
    kernel::{Clock, CouponId, Page, PageRequest, UserId, cache::Cache, events::RelayWake},
};

/// How many campaigns one instance keeps, and for how long (a campaign
/// never changes: the bounds are on memory only).
const CAMPAIGNS_KEPT: u64 = 10_000;
const CAMPAIGNS_KEPT_FOR: Duration = Duration::from_secs(24 * 3600);

/// Campaigns by id, read lately.
#[derive(Clone)]
pub(super) struct CampaignCache(Cache<CouponId, Campaign>);

impl Default for CampaignCache {
    fn default() -> Self {
        Self(Cache::new(CAMPAIGNS_KEPT, CAMPAIGNS_KEPT_FOR))
    }
}

impl CampaignCache {
    fn get(&self, id: CouponId) -> Option<Campaign> {
        self.0.get(&id)
    }

    pub(super) fn remember(&self, campaign: &Campaign) {
        self.0.insert(campaign.id, campaign.clone());
    }
}

impl<P: CouponPorts> CouponService<P> {
    /// A new vendor, recorded with the admin who created it.
    pub async fn create_vendor(&self, name: &str, admin: UserId) -> Result<Vendor, CouponError> {
        let name = parse_name(name)?;
        let vendor = self
            .repo
            .create_vendor(name, admin, self.clock.now())
            .await?;
        self.wake.wake();
        Ok(vendor)
    }

    /// A page of vendors in id order.
    pub async fn vendors(&self, asked: PageRequest) -> Result<Page<Vendor>, CouponError> {
        let read = |page| self.repo.vendors(page);
        asked.read(MAX_PAGE, read, |v| v.id.value()).await
    }

    pub async fn create_campaign(
        &self,
        draft: CampaignDraft,
        admin: UserId,
    ) -> Result<Campaign, CouponError> {
        let campaign = self
            .repo
            .create_campaign(draft, admin, self.clock.now())
            .await?;
        self.wake.wake();
        // A ledger that cannot be prepared now is built on first use.
        if let Err(err) = self.ledger.load(&campaign, &[]).await {
            tracing::warn!(coupon = %campaign.id, error = %err, "coupon ledger not prepared yet");
        }
        self.campaigns.remember(&campaign);
        Ok(campaign)
    }

    pub async fn campaign(&self, id: CouponId) -> Result<Campaign, CouponError> {
        if let Some(campaign) = self.campaigns.get(id) {
            return Ok(campaign);
        }
        let campaign = self.repo.campaign(id).await?.ok_or(CouponError::NotFound)?;
        self.campaigns.remember(&campaign);
        Ok(campaign)
    }

    /// A page of campaigns, newest first, with their counts: one database
    /// read and one ledger round trip for the whole page.
    pub async fn campaigns(&self, asked: PageRequest) -> Result<Page<CampaignStats>, CouponError> {
        let request = asked.at_most(MAX_PAGE);
        let rows = self.repo.campaign_page(request).await?;
        let page = Page::of(rows, request, |(c, _)| c.id.value());
        let ids: Vec<CouponId> = page.items.iter().map(|(c, _)| c.id).collect();
        // The admin view stays up when only the ledger's store is down.
        let mut ledger = self
            .ledger
            .issued_many(&ids)
            .await
            .unwrap_or_default()
            .into_iter();
        Ok(page.map(|(campaign, counts)| counts.of(campaign, ledger.next().flatten())))
    }

    pub async fn stats(&self, coupon: CouponId) -> Result<CampaignStats, CouponError> {
        let campaign = self.campaign(coupon).await?;
        self.stats_of(campaign).await
    }

    async fn stats_of(&self, campaign: Campaign) -> Result<CampaignStats, CouponError> {
        let counts = self.repo.stats(&campaign).await?;
        // The admin view stays up when only the ledger's store is down.
        let ledger_issued = self.ledger.issued(campaign.id).await.unwrap_or(None);
        Ok(counts.of(campaign, ledger_issued))
    }

    /// A page of the user's coupons, newest first.
    pub async fn wallet_of(
        &self,
        user: UserId,
        asked: PageRequest,
    ) -> Result<Page<HeldCoupon>, CouponError> {
        let now = self.clock.now();
        let read = |page| self.repo.wallet_of(user, now, page);
        asked.read(MAX_PAGE, read, |c| c.id.value()).await
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::super::fake::{ADMIN, FakeRepo, campaign, number_won, service, service_over, t0};
    use crate::{
        coupon::{
            domain::{CampaignDraft, CouponError},
            infra::memory::MemoryCouponLedger,
            ports::CouponLedger,
        },
        kernel::{CouponId, ManualClock, PageRequest, UserId, events::types},
    };

    #[tokio::test]
    async fn bad_vendor_names_and_unknown_campaigns_are_refused_without_writing() {
        let (service, _) = service(FakeRepo::default(), MemoryCouponLedger::default()).await;
        // The fake's create_vendor panics if reached: validation comes first.
        for name in ["", "   ", &"x".repeat(300)] {
            assert!(matches!(
                service.create_vendor(name, ADMIN).await,
                Err(CouponError::Invalid(_))
            ));
        }
        assert!(matches!(
            service.campaign(CouponId(9)).await,
            Err(CouponError::NotFound)
        ));
        assert!(matches!(
            service.issue(CouponId(9), UserId(1), None).await,
            Err(CouponError::NotFound)
        ));
        assert_eq!(service.campaign(CouponId(1)).await.unwrap(), campaign());
    }

    #[tokio::test]
    async fn a_vendor_is_created_with_a_trimmed_name_listed_and_recorded_with_its_admin() {
        let repo = FakeRepo::default();
        let (service, _) = service(repo.clone(), MemoryCouponLedger::default()).await;
        let vendor = service.create_vendor("  Café Nero ", ADMIN).await.unwrap();
        assert_eq!(vendor.name, "Café Nero");
        let page = service.vendors(PageRequest::asked(None, 10)).await.unwrap();
        assert_eq!(page.items, vec![vendor.clone()]);
        assert_eq!(page.next_cursor, None);
        let second = service.create_vendor("Bakery", ADMIN).await.unwrap();
        let first_page = service.vendors(PageRequest::asked(None, 1)).await.unwrap();
        assert_eq!(first_page.items, vec![vendor.clone()]);
        assert_eq!(first_page.next_cursor, Some(vendor.id.value()));
        let next_page = PageRequest::asked(first_page.next_cursor, 1);
        let next = service.vendors(next_page).await.unwrap();
        assert_eq!(next.items, vec![second]);
        assert_eq!(next.next_cursor, None);
        let world = repo.uow.world();
        assert_eq!(
            world.event_types(),
            vec![types::VENDOR_CREATED, types::VENDOR_CREATED]
        );
        assert_eq!(
            world.outbox[0].payload,
            serde_json::json!({"vendorId": vendor.id.value(), "name": "Café Nero", "adminId": ADMIN.value()})
        );
    }

    #[tokio::test]
    async fn a_new_campaign_prepares_its_ledger_and_is_answered_from_memory() {
        let ledger = MemoryCouponLedger::default();
        let (service, _) = service(FakeRepo::default(), ledger.clone()).await;
        let draft =
            CampaignDraft::parse("Free refill", 300, 10, t0(), t0() + TimeDelta::hours(2), 1)
                .unwrap();
        let created = service.create_campaign(draft, ADMIN).await.unwrap();
        assert_eq!(created.id, CouponId(2));
        assert_eq!(ledger.issued(CouponId(2)).await.unwrap(), Some(0));
        // The fake repository knows only campaign 1: this one comes from
        // the instance's cache of immutable campaigns.
        assert_eq!(service.campaign(CouponId(2)).await.unwrap(), created);
        assert_eq!(number_won(&service, CouponId(2), UserId(1)).await, 1);
    }

    #[tokio::test]
    async fn stats_put_the_database_count_beside_the_ledger_count() {
        let (service, _) = service(FakeRepo::default(), MemoryCouponLedger::default()).await;
        service.issue(CouponId(1), UserId(1), None).await.unwrap();
        let stats = service.stats(CouponId(1)).await.unwrap();
        assert_eq!((stats.issued, stats.ledger_issued), (1, Some(1)));
        let all = service
            .campaigns(PageRequest::asked(None, 10))
            .await
            .unwrap();
        assert_eq!(all.items.len(), 1);
        assert_eq!(all.items[0].campaign, campaign());
        assert_eq!(
            (all.items[0].issued, all.items[0].ledger_issued),
            (1, Some(1)),
            "the page carries the ledger's count too"
        );
        assert_eq!(all.next_cursor, None);
        assert!(matches!(
            service.stats(CouponId(9)).await,
            Err(CouponError::NotFound)
        ));
        // A campaign whose ledger is not loaded here shows no ledger count.
        let other = service_over(
            FakeRepo::default(),
            MemoryCouponLedger::default(),
            ManualClock::new(t0()),
        );
        assert_eq!(other.stats(CouponId(1)).await.unwrap().ledger_issued, None);
    }

    #[tokio::test]
    async fn a_users_coupons_are_their_own() {
        let (service, _) = service(FakeRepo::default(), MemoryCouponLedger::default()).await;
        service.issue(CouponId(1), UserId(1), None).await.unwrap();
        service.issue(CouponId(1), UserId(2), None).await.unwrap();
        let mine = service
            .wallet_of(UserId(1), PageRequest::asked(None, 10))
            .await
            .unwrap();
        assert_eq!(mine.items.len(), 1);
        assert_eq!(mine.items[0].number, 1);
        assert_eq!(mine.next_cursor, None);
        assert!(
            service
                .wallet_of(UserId(3), PageRequest::asked(None, 10))
                .await
                .unwrap()
                .items
                .is_empty()
        );
    }
}
