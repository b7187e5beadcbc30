use std::future::Future;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use uuid::Uuid;

use super::domain::{
    Campaign, CampaignCounts, CampaignDraft, CouponError, FailReason, HeldCoupon, IssuedCoupon,
    Job, JobStatus, LedgerEntry, LedgerSnapshot, LedgerStep, RecordError, RedeemableCoupon, Vendor,
    Winner,
};
use crate::kernel::{
    CouponId, PageRequest, StoreError, UserCouponId, UserId, VendorId, idempotency::RequestKey,
};

/// The issue ledger: who won each campaign and with which number. It
/// answers the flood (duplicates, sold out) on its own; the database only
/// sees winners. Redis in production, in-process in the embedded shape.
pub trait CouponLedger: Clone + Send + Sync + 'static {
    /// One atomic step: already issued? sold out? else record the user with
    /// a free number in 1..=quantity. A ledger the store can tell is from
    /// before a failover of its Redis primary (it may have lost its last
    /// writes) is dropped, and the answer is [`LedgerStep::Stale`].
    fn issue(
        &self,
        coupon: CouponId,
        user: UserId,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<LedgerStep, CouponError>> + Send;

    /// Undoes a winner whose database write failed, if the entry is still
    /// `user` with `number`. `free_number` hands the number out again; it
    /// is false when the database says another user holds it.
    fn revoke(
        &self,
        coupon: CouponId,
        user: UserId,
        number: u32,
        free_number: bool,
    ) -> impl Future<Output = Result<bool, CouponError>> + Send;

    /// Loads a campaign's ledger from the database rows, unless it is
    /// already there (then nothing changes and the answer is false).
    fn load(
        &self,
        coupon: CouponId,
        quantity: u32,
        holders: &[(UserId, u32)],
    ) -> impl Future<Output = Result<bool, CouponError>> + Send;

    /// A consistent copy of the ledger, `None` when it is not loaded.
    fn snapshot(
        &self,
        coupon: CouponId,
    ) -> impl Future<Output = Result<Option<LedgerSnapshot>, CouponError>> + Send;

    /// Applies the reconciler's repairs atomically: adds holders the ledger
    /// lost and drops entries that are still exactly as snapshotted.
    fn repair(
        &self,
        coupon: CouponId,
        add: &[(UserId, u32)],
        remove: &[LedgerEntry],
    ) -> impl Future<Output = Result<(), CouponError>> + Send;

    /// How many users the ledger has recorded; `None` when not loaded.
    fn issued(
        &self,
        coupon: CouponId,
    ) -> impl Future<Output = Result<Option<u64>, CouponError>> + Send;

    /// [`CouponLedger::issued`] of several campaigns, read together (one
    /// small pipeline per campaign, each in its own cluster slot), in the
    /// order asked.
    fn issued_many(
        &self,
        coupons: &[CouponId],
    ) -> impl Future<Output = Result<Vec<Option<u64>>, CouponError>> + Send;
}

pub trait CouponRepository: Clone + Send + Sync + 'static {
    /// Creates the vendor and its `VendorCreated` event
    /// ([`Vendor::created`]) in one transaction.
    fn create_vendor(
        &self,
        name: String,
        admin: UserId,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vendor, CouponError>> + Send;

    /// Up to `page.fetch()` vendors in id order, after the vendor `page.after`.
    fn vendors(
        &self,
        page: PageRequest,
    ) -> impl Future<Output = Result<Vec<Vendor>, CouponError>> + Send;

    /// Creates the campaign and its `CouponCreated` event
    /// ([`Campaign::created`]) in one transaction; `VendorNotFound` for an
    /// unknown vendor.
    fn create_campaign(
        &self,
        draft: CampaignDraft,
        admin: UserId,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Campaign, CouponError>> + Send;

    fn campaign(
        &self,
        id: CouponId,
    ) -> impl Future<Output = Result<Option<Campaign>, CouponError>> + Send;

    /// Up to `page.fetch()` campaigns newest first, before the campaign
    /// `page.after`, each with its counts (one read, no count per campaign).
    fn campaign_page(
        &self,
        page: PageRequest,
    ) -> impl Future<Output = Result<Vec<(Campaign, CampaignCounts)>, CouponError>> + Send;

    /// Campaigns whose validity window ends after `ending_after`, newest first.
    fn campaigns(
        &self,
        ending_after: Option<DateTime<Utc>>,
    ) -> impl Future<Output = Result<Vec<Campaign>, CouponError>> + Send;

    /// Records a winner, its `CouponIssued` event and, with a key, the key
    /// with its answer ([`IssuedCoupon::answer`]) in one transaction.
    fn record_issue(
        &self,
        campaign: &Campaign,
        user: UserId,
        number: u32,
        key: Option<&RequestKey>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<IssuedCoupon, RecordError>> + Send;

    /// Every (holder, issue number) of a campaign.
    fn holders(
        &self,
        coupon: CouponId,
    ) -> impl Future<Output = Result<Vec<(UserId, u32)>, CouponError>> + Send;

    fn held_by(
        &self,
        coupon: CouponId,
        user: UserId,
    ) -> impl Future<Output = Result<Option<IssuedCoupon>, CouponError>> + Send;

    /// Up to `page.fetch()` of the user's coupons newest first, before the
    /// user coupon `page.after`.
    fn wallet_of(
        &self,
        user: UserId,
        now: DateTime<Utc>,
        page: PageRequest,
    ) -> impl Future<Output = Result<Vec<HeldCoupon>, CouponError>> + Send;

    fn job(&self, id: Uuid) -> impl Future<Output = Result<Option<Job>, CouponError>> + Send;

    /// Issued and redeemed counts and the vendor balance (not the ledger).
    fn stats(
        &self,
        campaign: &Campaign,
    ) -> impl Future<Output = Result<CampaignCounts, CouponError>> + Send;
}

/// What a lock strategy answered for one issue request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockedIssue {
    /// The user won: their row, its `CouponIssued` event and (with a key)
    /// the answer a retry hears are written.
    Won(IssuedCoupon),
    AlreadyIssued,
    SoldOut,
}

/// Another way to serve first come, first served: take a lock, read the
/// campaign's count and the user's holding, decide with
/// [`first_come`](super::domain::first_come), write the winner with
/// [`record_winners`](super::usecase::record_winners), let go. Only the
/// benchmark builds one (the `bench-strategies` cargo feature,
/// `--coupon-lock-strategy`), to serve the classic lock strategies through
/// the production route and compare them with the ledger like for like; a
/// release build has no implementation of it and always uses the ledger.
pub trait LockedIssuer: Send + Sync + 'static {
    fn issue<'a>(
        &'a self,
        campaign: &'a Campaign,
        user: UserId,
        key: Option<&'a RequestKey>,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<LockedIssue, RecordError>>;
}

/// The winners' rows inside a transaction.
pub trait IssueTx: Send {
    /// Inserts the winners' rows at `now`, in one statement, and adds them
    /// to their campaigns' issued counts. A unique index refusing one fails
    /// them all: `DuplicateUser` (the (coupon, user) index) or
    /// `DuplicateNumber` (the (coupon, number) index).
    fn insert_winners(
        &mut self,
        winners: &[Winner],
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<IssuedCoupon>, RecordError>> + Send;
}

/// The redemption's stores, inside a transaction (the request's, or the
/// consumer's).
pub trait RedemptionTx: Send {
    /// Writes a new (pending) redemption job.
    fn insert_job(
        &mut self,
        job: &Job,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn job(&mut self, id: Uuid) -> impl Future<Output = Result<Option<Job>, StoreError>> + Send;

    fn redeemable(
        &mut self,
        id: UserCouponId,
    ) -> impl Future<Output = Result<Option<RedeemableCoupon>, StoreError>> + Send;

    /// Marks the coupon used if it is still issued at `version` (optimistic
    /// check) and counts it in its campaign's redeemed count; false if
    /// someone else changed it first.
    fn mark_used(
        &mut self,
        id: UserCouponId,
        version: i64,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Records the vendor's payment for this coupon and adds it to the
    /// vendor's balance, once per coupon; false if it was already paid.
    fn pay_vendor(
        &mut self,
        vendor: VendorId,
        coupon: UserCouponId,
        job: Uuid,
        amount: i64,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    fn finish_job(
        &mut self,
        job: Uuid,
        status: JobStatus,
        reason: Option<FailReason>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}
