use std::{collections::HashSet, future::Future};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::domain::{
    Campaign, CampaignCounts, CampaignDraft, CouponError, FailReason, HeldCoupon, IssuedCoupon,
    Job, JobStatus, LedgerDrift, LedgerSnapshot, LedgerStep, RecordError, RedeemableCoupon, Vendor,
    Winner,
};
use crate::{
    kernel::{
        Clock, CouponId, PageRequest, StoreError, UnitOfWork, UserCouponId, UserId, VendorId,
        events::RelayWake,
        idempotency::{IdempotencyTx, RequestKey},
    },
    outbox::ports::OutboxWriter,
};

crate::kernel::ports::ports_bundle! {
    /// The adapters the coupon room's use cases (the service and the ledger's
    /// issuer) run over, named once: the composition root picks them
    /// (`app::services`), tests pick fakes.
    pub trait CouponPorts for CouponAdapterTypes<U, R, L, C, W, Q> {
        /// Issue (the winners' rows) and redemption share the unit of work.
        type Uow: UnitOfWork<Tx: IssueTx + RedemptionTx + OutboxWriter + IdempotencyTx>;
        type Repo: CouponRepository;
        type Ledger: CouponLedger;
        type Clock: Clock;
        type Wake: RelayWake;
        /// Carries the ledger's winners to their writer.
        type Winners: WinnerQueue;
    }
}

/// The issue ledger: who won each campaign and with which number. It
/// answers the flood (duplicates, sold out) on its own; the database only
/// sees winners. Redis in production, in-process in the embedded shape.
pub trait CouponLedger: Clone + Send + Sync + 'static {
    /// One atomic step: already issued? sold out? else record the user with
    /// a free number in 1..=quantity. A ledger the store can tell is from
    /// before a failover of its Redis primary (it may have lost its last
    /// writes) is dropped, and the answer is [`LedgerStep::Stale`]. The
    /// quantity is the ledger's own (the one loaded), not the request's
    /// campaign's.
    fn issue(
        &self,
        request: IssueRequest<'_>,
    ) -> impl Future<Output = Result<LedgerStep, CouponError>> + Send;

    /// Undoes a winner whose database write failed, if the entry is still
    /// the winner's user with its number. `free_number` hands the number
    /// out again; it is false when the database says another user holds it.
    fn revoke(
        &self,
        winner: &Winner,
        free_number: bool,
    ) -> impl Future<Output = Result<bool, CouponError>> + Send;

    /// Loads a campaign's ledger (its quantity and the database rows'
    /// holders), unless it is already there (then nothing changes and the
    /// answer is false).
    fn load(
        &self,
        campaign: &Campaign,
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
        drift: &LedgerDrift,
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

/// What an issuer answered for one issue request.
#[derive(Debug)]
pub enum IssueOutcome {
    /// The user won: their row, its `CouponIssued` event and (with a key)
    /// the answer a retry hears are written.
    Won(IssuedCoupon),
    AlreadyIssued,
    SoldOut,
    /// The user won but their write was refused or failed; any number
    /// taken for them was handed back.
    NotWritten(RecordError),
}

impl IssueOutcome {
    /// The answer to a first-come step that gave the user no number.
    pub fn refused(step: LedgerStep) -> Self {
        match step {
            LedgerStep::AlreadyIssued => Self::AlreadyIssued,
            _ => Self::SoldOut,
        }
    }
}

/// One issue request, as the service hands it to the issuer.
#[derive(Debug, Clone, Copy)]
pub struct IssueRequest<'a> {
    pub campaign: &'a Campaign,
    pub user: UserId,
    /// Written with the winner's row, so that a retry hears its answer.
    pub key: Option<&'a RequestKey>,
    pub now: DateTime<Utc>,
}

impl IssueRequest<'_> {
    /// The request's user as the winner of `number`.
    pub fn winner(&self, number: u32) -> Winner {
        Winner {
            coupon: self.campaign.id,
            user: self.user,
            number,
        }
    }
}

/// Decides who wins a first-come-first-served coupon and writes the
/// winner. In a release this is always the ledger's
/// ([`LedgerIssuer`](super::usecase::LedgerIssuer)); the bench build adds
/// the classic lock strategies (`infra::locks`) to compare with it through
/// the same route. The campaign, its window, keys, answers and the sold-out
/// memory stay with the service whichever issuer decides.
pub trait CouponIssuer: Send + Sync + 'static {
    fn issue<'a>(
        &'a self,
        request: IssueRequest<'a>,
    ) -> BoxFuture<'a, Result<IssueOutcome, CouponError>>;

    /// Who holds a campaign this issuer just called sold out, for the
    /// sold-out memory; `None` when it is not sold out after all, or when
    /// the issuer wants every request of the rush.
    fn sold_out_holders<'a>(
        &'a self,
        campaign: &'a Campaign,
    ) -> BoxFuture<'a, Result<Option<HashSet<UserId>>, CouponError>>;
}

/// A winner on its way to the winners' writer, with the way back to the
/// request that won.
pub struct QueuedWinner {
    pub winner: Winner,
    /// The request's key, written with the row and the winner's answer.
    pub key: Option<RequestKey>,
    /// When the ledger gave the number.
    pub at: DateTime<Utc>,
    pub reply: oneshot::Sender<Result<IssuedCoupon, RecordError>>,
}

/// Carries winners from the requests that won them to the one task that
/// writes them (the use case's winners' writer), and groups them: whoever
/// won while a batch was being committed is handed over together. The
/// adapter only queues; what is written, and what each winner hears, is
/// the writer's.
pub trait WinnerQueue: Send + Sync + 'static {
    /// The queue's receiving end.
    type Batches: WinnerBatches;

    /// Queues a winner; gives it back when the writer has stopped.
    fn push(&self, winner: QueuedWinner) -> Result<(), QueuedWinner>;
}

/// The receiving end of a [`WinnerQueue`].
pub trait WinnerBatches: Send + 'static {
    /// Waits for a winner, then takes every one waiting (`max` at most);
    /// empty once the queue is gone.
    fn next_batch(&mut self, max: usize) -> impl Future<Output = Vec<QueuedWinner>> + Send;
}

/// Writes a winner inside a transaction the caller holds, exactly as the
/// winners' writer writes a batch (the row, its campaign's count,
/// `CouponIssued`, the key's answer). For the bench's lock strategies, which
/// must write under their own lock; the composition root hands them the use
/// case's.
pub trait WinnerRecorder<Tx>: Send + Sync + 'static {
    fn record<'a>(
        &'a self,
        tx: &'a mut Tx,
        winner: Winner,
        key: Option<RequestKey>,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<IssuedCoupon, RecordError>>;
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
