use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, RwLock},
};

use chrono::{DateTime, TimeDelta, Utc};
use futures::{FutureExt, future::BoxFuture};
use uuid::Uuid;

use super::{
    domain::{
        Campaign, CampaignDraft, CampaignStats, CouponError, FailReason, HeldCoupon, Issued,
        IssuedCoupon, Job, JobStatus, LedgerStep, MAX_PAGE, ReconcileReport, RecordError,
        RedeemableCoupon, Vendor, Winner, ledger_drift, parse_name, redemption_verdict,
    },
    ports::{CouponLedger, CouponRepository, IssueTx, LockedIssue, LockedIssuer, RedemptionTx},
};
use crate::{
    kernel::{
        Clock, CouponId, Page, PageRequest, StoreError, Transaction, UnitOfWork, UserCouponId,
        UserId,
        events::{
            CouponRedemptionFinished, CouponRedemptionRequested, EventEnvelope, NewEvent,
            RelayWake, types,
        },
        failpoint,
        idempotency::{self, IdempotencyTx, RequestKey},
        keyed::{ExpiringMemo, KeyedLocks},
        retry_on_conflict,
    },
    outbox::ports::{EventHandler, OutboxWriter},
};

#[derive(Clone)]
pub struct CouponService<U, R, L, C, W> {
    uow: U,
    repo: R,
    ledger: L,
    clock: C,
    wake: W,
    /// Campaigns never change, so the flood is answered without reading them.
    campaigns: Arc<RwLock<HashMap<CouponId, Campaign>>>,
    /// One rebuild per campaign at a time in this instance.
    rebuilds: KeyedLocks<CouponId>,
    /// Ledger entries without a row younger than this may still be writing.
    grace: TimeDelta,
    /// Campaigns this instance just saw sold out, with who held them then.
    sold_out: SoldOutMemo,
    /// Whether refusals of a sold-out campaign come from `sold_out` (always
    /// in a release; the bench turns it off to compare lock strategies
    /// request for request).
    remembers_sold_out: bool,
    /// The bench's lock strategy in the ledger's place (never in a
    /// release: see [`LockedIssuer`]).
    locked: Option<Arc<dyn LockedIssuer>>,
}

/// How long a sold-out campaign is answered from memory. Only refusals
/// come from it: a number freed meanwhile (a revoked write, a reconciler
/// repair elsewhere) is handed out again at most this much later.
const SOLD_OUT_MEMORY: TimeDelta = TimeDelta::seconds(1);
/// Larger campaigns are not copied into memory when they sell out.
const SOLD_OUT_MEMO_MAX_QUANTITY: u32 = 100_000;

/// After a campaign sells out, nearly every request of the rush is a
/// refusal. Those are answered here, without a ledger round trip, for a
/// second at a time: a holder hears `AlreadyIssued` (or their replay),
/// everyone else `SoldOut`, exactly as the ledger would have said.
#[derive(Clone)]
struct SoldOutMemo {
    /// Who held each campaign when it was seen sold out.
    campaigns: ExpiringMemo<CouponId, Arc<HashSet<UserId>>>,
    /// Campaigns whose holders are being copied, so one request does it.
    refreshing: Arc<Mutex<HashSet<CouponId>>>,
}

/// Campaigns remembered at most.
const SOLD_OUT_MEMO_CAMPAIGNS: usize = 1_000;

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
enum Remembered {
    Holder,
    SoldOut,
}

impl SoldOutMemo {
    fn answer(&self, coupon: CouponId, user: UserId, now: DateTime<Utc>) -> Option<Remembered> {
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
            && self.refreshing.lock().is_ok_and(|mut r| r.insert(coupon))
    }

    /// Remembers who holds a sold-out campaign until `until`, or forgets
    /// it (`None`: not sold out after all), and ends the refresh.
    fn store(
        &self,
        coupon: CouponId,
        holders: Option<HashSet<UserId>>,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) {
        match holders {
            Some(holders) => self.campaigns.remember(coupon, Arc::new(holders), until),
            None => self.campaigns.forget(&coupon),
        }
        if let Ok(mut refreshing) = self.refreshing.lock() {
            refreshing.remove(&coupon);
        }
    }

    fn forget(&self, coupon: CouponId) {
        self.campaigns.forget(&coupon);
    }
}

impl<U, R, L, C, W> CouponService<U, R, L, C, W>
where
    U: UnitOfWork,
    U::Tx: RedemptionTx + OutboxWriter + IdempotencyTx,
    R: CouponRepository,
    L: CouponLedger,
    C: Clock,
    W: RelayWake,
{
    pub fn new(uow: U, repo: R, ledger: L, clock: C, wake: W, grace: TimeDelta) -> Self {
        Self {
            uow,
            repo,
            ledger,
            clock,
            wake,
            campaigns: Arc::default(),
            rebuilds: KeyedLocks::default(),
            grace,
            sold_out: SoldOutMemo::default(),
            remembers_sold_out: true,
            locked: None,
        }
    }

    /// Decides issues with a lock strategy instead of the ledger (the
    /// bench's like-for-like comparison; see [`LockedIssuer`]). Everything
    /// around the decision (the campaign, its window, keys, answers, the
    /// sold-out memory) stays as it is.
    pub fn issuing_with(mut self, issuer: Arc<dyn LockedIssuer>) -> Self {
        self.locked = Some(issuer);
        self
    }

    /// Sends every request of a sold-out campaign to the ledger (or the
    /// lock strategy) instead of answering refusals from memory.
    pub fn without_sold_out_memory(mut self) -> Self {
        self.remembers_sold_out = false;
        self
    }

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
    pub async fn vendors(
        &self,
        after: Option<i64>,
        limit: u64,
    ) -> Result<Page<Vendor>, CouponError> {
        let page = PageRequest::new(after, limit, MAX_PAGE);
        let rows = self.repo.vendors(page).await?;
        Ok(Page::of(rows, page, |v| v.id.value()))
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
        if let Err(err) = self.ledger.load(campaign.id, campaign.quantity, &[]).await {
            tracing::warn!(coupon = %campaign.id, error = %err, "coupon ledger not prepared yet");
        }
        self.remember(&campaign);
        Ok(campaign)
    }

    fn remember(&self, campaign: &Campaign) {
        if let Ok(mut cache) = self.campaigns.write() {
            cache.insert(campaign.id, campaign.clone());
        }
    }

    pub async fn campaign(&self, id: CouponId) -> Result<Campaign, CouponError> {
        let cached = self
            .campaigns
            .read()
            .ok()
            .and_then(|cache| cache.get(&id).cloned());
        if let Some(campaign) = cached {
            return Ok(campaign);
        }
        let campaign = self.repo.campaign(id).await?.ok_or(CouponError::NotFound)?;
        self.remember(&campaign);
        Ok(campaign)
    }

    /// First come, first served, one per user. Rejections come from the
    /// ledger alone; a winner's row is written, and if that fails the ledger
    /// entry is revoked and the caller hears `Unavailable`. With a key, the
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
        let remembered = self
            .remembers_sold_out
            .then(|| self.sold_out.answer(coupon, user, now))
            .flatten();
        match remembered {
            Some(Remembered::Holder) => return self.replay(coupon, user, key).await,
            Some(Remembered::SoldOut) => return Err(self.sold_out_answer()),
            None => {}
        }
        // A key already used (for this request: replay; for another:
        // refuse) never takes a number.
        if let Some(first) = idempotency::replay(&self.uow, key).await? {
            return Ok(first);
        }
        if let Some(issuer) = &self.locked {
            return self
                .issue_locked(issuer.as_ref(), &campaign, user, key, now)
                .await;
        }
        let mut step = self.ledger.issue(coupon, user, now).await?;
        if step == LedgerStep::Stale {
            metrics::counter!("coupon_ledger_failovers_total").increment(1);
            tracing::warn!(
                %coupon,
                "coupon ledger written before a Redis failover: rebuilding it from the database"
            );
        }
        if matches!(step, LedgerStep::Missing | LedgerStep::Stale) {
            self.rebuild(&campaign).await?;
            step = self.ledger.issue(coupon, user, now).await?;
        }
        match step {
            LedgerStep::Issued(number) => self.record(&campaign, user, number, key).await,
            LedgerStep::AlreadyIssued => self.replay(coupon, user, key).await,
            LedgerStep::SoldOut => {
                self.remember_sold_out(&campaign, now).await;
                Err(self.sold_out_answer())
            }
            LedgerStep::Missing | LedgerStep::Stale => Err(CouponError::Unavailable(
                anyhow::anyhow!("the coupon ledger of {coupon} vanished again while being rebuilt"),
            )),
        }
    }

    /// The issue decided and written by a lock strategy, answered as the
    /// ledger's path answers.
    async fn issue_locked(
        &self,
        issuer: &dyn LockedIssuer,
        campaign: &Campaign,
        user: UserId,
        key: Option<&RequestKey>,
        now: DateTime<Utc>,
    ) -> Result<Issued, CouponError> {
        match issuer.issue(campaign, user, key, now).await {
            Ok(LockedIssue::Won(row)) => Ok(self.won(&row)),
            // The user's other request won first.
            Ok(LockedIssue::AlreadyIssued) | Err(RecordError::DuplicateUser) => {
                self.replay(campaign.id, user, key).await
            }
            Ok(LockedIssue::SoldOut) => {
                self.remember_sold_out(campaign, now).await;
                Err(self.sold_out_answer())
            }
            Err(RecordError::KeyReused) => Err(CouponError::KeyReused),
            Err(RecordError::DuplicateNumber) => {
                metrics::counter!("coupon_issue_total", "result" => "retry").increment(1);
                Err(CouponError::Unavailable(anyhow::anyhow!(
                    "coupon {} issue number taken by a racing writer; retry",
                    campaign.id
                )))
            }
            Err(RecordError::Failed(cause)) => {
                metrics::counter!("coupon_issue_total", "result" => "failed").increment(1);
                Err(CouponError::Unavailable(
                    cause.context("issuing a coupon under the lock strategy"),
                ))
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

    /// Copies the holders of a campaign the ledger just called sold out,
    /// so the rest of the rush is answered from memory.
    async fn remember_sold_out(&self, campaign: &Campaign, now: DateTime<Utc>) {
        if !self.remembers_sold_out
            || campaign.quantity > SOLD_OUT_MEMO_MAX_QUANTITY
            || !self.sold_out.claim(campaign.id, now)
        {
            return;
        }
        // A lock strategy keeps no ledger: its holders are the rows. A
        // number freed since the refusal means it is not sold out.
        let holders = if self.locked.is_some() {
            self.repo.holders(campaign.id).await.map(|rows| {
                (rows.len() >= campaign.quantity as usize)
                    .then(|| rows.into_iter().map(|(user, _)| user).collect())
            })
        } else {
            self.ledger.snapshot(campaign.id).await.map(|snapshot| {
                snapshot
                    .filter(|s| s.entries.len() >= s.quantity as usize)
                    .map(|s| s.entries.iter().map(|e| e.user).collect())
            })
        };
        let holders = holders.unwrap_or_else(|err| {
            tracing::debug!(coupon = %campaign.id, error = %err, "sold-out campaign not copied");
            None
        });
        self.sold_out
            .store(campaign.id, holders, now + SOLD_OUT_MEMORY, now);
    }

    async fn record(
        &self,
        campaign: &Campaign,
        user: UserId,
        number: u32,
        key: Option<&RequestKey>,
    ) -> Result<Issued, CouponError> {
        let now = self.clock.now();
        // With a key, the number taken from the ledger is the claim.
        let claimed = match key {
            Some(_) => failpoint::step("idempotency::claimed").await,
            None => Ok(()),
        };
        let recorded = match claimed {
            Ok(()) => {
                self.repo
                    .record_issue(campaign, user, number, key, now)
                    .await
            }
            Err(cause) => Err(RecordError::Failed(cause)),
        };
        if key.is_some() && recorded.is_ok() {
            failpoint::step("idempotency::committed")
                .await
                .map_err(CouponError::Unavailable)?;
        }
        match recorded {
            Ok(row) => Ok(self.won(&row)),
            Err(RecordError::DuplicateUser) => {
                // The ledger had lost this holder: give the number back and
                // answer from the database.
                self.revoke(campaign.id, user, number, true).await;
                self.replay(campaign.id, user, key).await
            }
            Err(RecordError::KeyReused) => {
                self.revoke(campaign.id, user, number, true).await;
                Err(CouponError::KeyReused)
            }
            Err(RecordError::DuplicateNumber) => {
                // Someone holds this number since before a rebuild; keep it
                // out of circulation and let the reconciler record them.
                self.revoke(campaign.id, user, number, false).await;
                metrics::counter!("coupon_issue_total", "result" => "retry").increment(1);
                Err(CouponError::Unavailable(anyhow::anyhow!(
                    "coupon {} issue number {number} is already taken; the ledger is being repaired",
                    campaign.id
                )))
            }
            Err(RecordError::Failed(cause)) => {
                self.revoke(campaign.id, user, number, true).await;
                metrics::counter!("coupon_issue_total", "result" => "failed").increment(1);
                Err(CouponError::Unavailable(
                    cause.context("recording an issued coupon"),
                ))
            }
        }
    }

    /// Revocation is the compensation of a failed write; if it fails too,
    /// the reconciler drops the orphan entry after the grace period.
    async fn revoke(&self, coupon: CouponId, user: UserId, number: u32, free_number: bool) {
        self.sold_out.forget(coupon);
        if let Err(err) = self.ledger.revoke(coupon, user, number, free_number).await {
            tracing::warn!(%coupon, %user, number, error = %err, "cannot revoke a coupon ledger entry; the reconciler will");
        }
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
            None => Err(CouponError::Unavailable(anyhow::anyhow!(
                "coupon {coupon} for user {user} is still being recorded; retry with the same key"
            ))),
        }
    }

    /// Loads the ledger from the database rows (once, even when a thousand
    /// requests found it missing at the same moment).
    async fn rebuild(&self, campaign: &Campaign) -> Result<bool, CouponError> {
        let _turn = self.rebuilds.lock(campaign.id).await;
        // Those who waited for the lock find the ledger back (a cheap look,
        // not a copy of every holder).
        if self.ledger.issued(campaign.id).await?.is_some() {
            return Ok(false);
        }
        let holders = self.repo.holders(campaign.id).await?;
        let loaded = self
            .ledger
            .load(campaign.id, campaign.quantity, &holders)
            .await?;
        if loaded {
            metrics::counter!("coupon_ledger_rebuilds_total").increment(1);
            tracing::warn!(coupon = %campaign.id, holders = holders.len(), "coupon ledger rebuilt from the database");
        }
        Ok(loaded)
    }

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
                report.rebuilt = self.rebuild(&campaign).await?;
                self.record_repair(&report).await?;
                return Ok(report);
            }
        };
        let holders = self.repo.holders(coupon).await?;
        let stale_before = self.clock.now() - self.grace;
        let (add, remove) = ledger_drift(&holders, &snapshot, stale_before);
        if add.is_empty() && remove.is_empty() {
            return Ok(report);
        }
        self.ledger.repair(coupon, &add, &remove).await?;
        self.sold_out.forget(coupon);
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
            self.remember(&campaign);
            let report = self.reconcile(campaign.id).await?;
            if report.repaired() {
                reports.push(report);
            }
        }
        Ok(reports)
    }

    /// A page of campaigns, newest first, with their counts: one database
    /// read and one ledger round trip for the whole page.
    pub async fn campaigns(
        &self,
        after: Option<i64>,
        limit: u64,
    ) -> Result<Page<CampaignStats>, CouponError> {
        let request = PageRequest::new(after, limit, MAX_PAGE);
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
        Ok(page.map(|(campaign, counts)| CampaignStats {
            campaign,
            issued: counts.issued,
            redeemed: counts.redeemed,
            vendor_balance: counts.vendor_balance,
            ledger_issued: ledger.next().flatten(),
        }))
    }

    pub async fn stats(&self, coupon: CouponId) -> Result<CampaignStats, CouponError> {
        let campaign = self.campaign(coupon).await?;
        self.stats_of(campaign).await
    }

    async fn stats_of(&self, campaign: Campaign) -> Result<CampaignStats, CouponError> {
        let counts = self.repo.stats(&campaign).await?;
        // The admin view stays up when only the ledger's store is down.
        let ledger_issued = self.ledger.issued(campaign.id).await.unwrap_or(None);
        Ok(CampaignStats {
            campaign,
            issued: counts.issued,
            redeemed: counts.redeemed,
            vendor_balance: counts.vendor_balance,
            ledger_issued,
        })
    }

    /// A page of the user's coupons, newest first.
    pub async fn wallet_of(
        &self,
        user: UserId,
        after: Option<i64>,
        limit: u64,
    ) -> Result<Page<HeldCoupon>, CouponError> {
        let page = PageRequest::new(after, limit, MAX_PAGE);
        let rows = self.repo.wallet_of(user, self.clock.now(), page).await?;
        Ok(Page::of(rows, page, |c| c.id.value()))
    }

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

/// Writes winners in the caller's transaction: their rows, their
/// `CouponIssued` events and, for those who sent one, their key with their
/// answer. A key another request holds fails the lot with `KeyReused` (the
/// caller writes the others again without that one), as a unique index
/// refusing a row fails it with `DuplicateUser` / `DuplicateNumber`.
pub async fn record_winners<T: IssueTx + OutboxWriter + IdempotencyTx>(
    tx: &mut T,
    winners: &[(Winner, Option<RequestKey>)],
    now: DateTime<Utc>,
) -> Result<Vec<IssuedCoupon>, RecordError> {
    let failed = |err: StoreError| RecordError::Failed(err.into());
    let rows: Vec<Winner> = winners.iter().map(|(w, _)| w.clone()).collect();
    let written = tx.insert_winners(&rows, now).await?;
    tx.append(written.iter().map(IssuedCoupon::issued).collect(), now)
        .await
        .map_err(failed)?;
    for (winner, key) in winners {
        let Some(key) = key else { continue };
        let row = written
            .iter()
            .find(|row| row.coupon == winner.coupon && row.user == winner.user)
            .ok_or_else(|| RecordError::Failed(anyhow::anyhow!("a winner was not written")))?;
        let answer =
            serde_json::to_string(&row.answer()).map_err(|err| RecordError::Failed(err.into()))?;
        if !tx.remember(key, answer, now).await.map_err(failed)? {
            return Err(RecordError::KeyReused);
        }
    }
    Ok(written)
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
) -> anyhow::Result<Redemption> {
    let Some(job) = tx.job(request.job_id).await? else {
        anyhow::bail!("redemption job {} does not exist", request.job_id);
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
        reason: reason.map(|r| r.code().into()),
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

impl<T: RedemptionTx + OutboxWriter + 'static, C: Clock> EventHandler<T> for CouponRedeemer<C> {
    fn name(&self) -> &'static str {
        "coupon-redemptions"
    }

    fn handles(&self, event_type: &str) -> bool {
        event_type == types::COUPON_REDEMPTION_REQUESTED
    }

    fn handle<'a>(
        &'a self,
        tx: &'a mut T,
        event: &'a EventEnvelope,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        async move {
            let request: CouponRedemptionRequested = serde_json::from_value(event.payload.clone())?;
            redeem(tx, &request, self.clock.now()).await?;
            Ok(())
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use chrono::{DateTime, Utc};

    use super::*;
    use crate::{
        coupon::{
            domain::{CampaignCounts, IssuedCoupon, LedgerEntry, LedgerSnapshot},
            infra::memory::MemoryCouponLedger,
        },
        kernel::{ManualClock, Transaction, VendorId},
        testing::MemoryUow,
    };

    const ADMIN: UserId = UserId(9_000);

    #[derive(Clone, Copy)]
    struct NoWake;

    impl RelayWake for NoWake {
        fn wake(&self) {}
    }

    /// Holds rows in memory with the unique (coupon, user) rule;
    /// `fail_next` makes the next winner's write fail.
    #[derive(Clone, Default)]
    struct FakeRepo {
        rows: Arc<Mutex<Vec<IssuedCoupon>>>,
        fail_next: Arc<Mutex<Option<()>>>,
        holder_reads: Arc<AtomicUsize>,
        vendors: Arc<Mutex<Vec<Vendor>>>,
        /// The transactional side (keys, jobs) the service shares.
        uow: MemoryUow,
    }

    fn key(user: i64, coupon: i64, key: &str) -> RequestKey {
        RequestKey::new(UserId(user), "coupon.issue", key, &coupon).unwrap()
    }

    fn campaign() -> Campaign {
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

    fn t0() -> DateTime<Utc> {
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
        async fn record_issue(
            &self,
            campaign: &Campaign,
            user: UserId,
            number: u32,
            key: Option<&RequestKey>,
            _: DateTime<Utc>,
        ) -> Result<IssuedCoupon, RecordError> {
            if self.fail_next.lock().unwrap().take().is_some() {
                return Err(RecordError::Failed(anyhow::anyhow!("disk full")));
            }
            let mut rows = self.rows.lock().unwrap();
            // The unique (coupon, user) index.
            if rows.iter().any(|r| r.user == user) {
                return Err(RecordError::DuplicateUser);
            }
            let row = IssuedCoupon {
                id: UserCouponId(rows.len() as i64 + 1),
                coupon: campaign.id,
                user,
                number,
            };
            // The key's row, with its answer, in the same transaction.
            if let Some(key) = key {
                let mut world = self.uow.world();
                let id = (key.user(), key.scope(), key.key().to_owned());
                if world.keys.contains_key(&id) {
                    return Err(RecordError::KeyReused);
                }
                let answer = serde_json::to_string(&row.answer()).unwrap();
                world
                    .keys
                    .insert(id, (key.fingerprint().to_owned(), Some(answer)));
            }
            rows.push(row.clone());
            Ok(row)
        }
        async fn holders(&self, _: CouponId) -> Result<Vec<(UserId, u32)>, CouponError> {
            self.holder_reads.fetch_add(1, Ordering::SeqCst);
            Ok(self
                .rows
                .lock()
                .unwrap()
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
                .rows
                .lock()
                .unwrap()
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
            let c = campaign();
            Ok(self
                .rows
                .lock()
                .unwrap()
                .iter()
                .rev()
                .filter(|r| r.user == user)
                .filter(|r| page.after.is_none_or(|after| r.id.value() < after))
                .take(page.fetch() as usize)
                .map(|r| HeldCoupon {
                    id: r.id,
                    coupon: r.coupon,
                    name: c.name.clone(),
                    discount: c.discount,
                    number: r.number,
                    state: crate::coupon::domain::CouponState::of(false, c.valid_until, now),
                    valid_until: c.valid_until,
                    issued_at: t0(),
                })
                .collect())
        }
        async fn job(&self, id: Uuid) -> Result<Option<Job>, CouponError> {
            Ok(self.uow.world().jobs.get(&id).cloned())
        }
        async fn stats(&self, campaign: &Campaign) -> Result<CampaignCounts, CouponError> {
            let issued = self
                .rows
                .lock()
                .unwrap()
                .iter()
                .filter(|r| r.coupon == campaign.id)
                .count() as u64;
            Ok(CampaignCounts {
                issued,
                ..CampaignCounts::default()
            })
        }
    }

    type Service = CouponService<MemoryUow, FakeRepo, MemoryCouponLedger, ManualClock, NoWake>;

    async fn service(repo: FakeRepo, ledger: MemoryCouponLedger) -> (Service, ManualClock) {
        let clock = ManualClock::new(t0() + TimeDelta::minutes(1));
        ledger.load(CouponId(1), 2, &[]).await.unwrap();
        let service = CouponService::new(
            repo.uow.clone(),
            repo,
            ledger,
            clock.clone(),
            NoWake,
            TimeDelta::seconds(30),
        );
        (service, clock)
    }

    /// Campaign 1 (two coupons): user 1 wins, asks again, user 2 wins, user
    /// 3 is too late.
    async fn first_come_first_served<L: CouponLedger>(
        service: &CouponService<MemoryUow, FakeRepo, L, ManualClock, NoWake>,
    ) {
        let c = CouponId(1);
        assert_eq!(service.issue(c, UserId(1), None).await.unwrap().number, 1);
        assert!(matches!(
            service.issue(c, UserId(1), None).await,
            Err(CouponError::AlreadyIssued)
        ));
        assert_eq!(service.issue(c, UserId(2), None).await.unwrap().number, 2);
        assert!(matches!(
            service.issue(c, UserId(3), None).await,
            Err(CouponError::SoldOut)
        ));
    }

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
    async fn a_failed_write_is_revoked_and_reported_unavailable() {
        let repo = FakeRepo::default();
        let ledger = MemoryCouponLedger::default();
        let (service, _) = service(repo.clone(), ledger.clone()).await;
        *repo.fail_next.lock().unwrap() = Some(());
        assert!(matches!(
            service.issue(CouponId(1), UserId(1), None).await,
            Err(CouponError::Unavailable(_))
        ));
        assert_eq!(ledger.issued(CouponId(1)).await.unwrap(), Some(0));
        // The number is handed out again.
        assert_eq!(
            service
                .issue(CouponId(1), UserId(2), None)
                .await
                .unwrap()
                .number,
            1
        );
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
        assert_eq!(repo.rows.lock().unwrap().len(), 1);
        assert_eq!(
            fresh
                .ledger
                .snapshot(CouponId(1))
                .await
                .unwrap()
                .unwrap()
                .entries
                .len(),
            0,
            "the number the fresh ledger handed out was revoked (the reconciler adds the holder back)"
        );
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
            Err(CouponError::KeyReused)
        ));
        assert_eq!(
            other_campaign.ledger.issued(CouponId(2)).await.unwrap(),
            Some(0),
            "a reused key takes no number"
        );
        assert_eq!(repo.rows.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_key_whose_write_was_cut_off_is_unavailable_then_runs_afresh() {
        let repo = FakeRepo::default();
        let ledger = MemoryCouponLedger::default();
        let (service, clock) = service(repo.clone(), ledger.clone()).await;
        // The ledger counts user 1 but the process died before the row and
        // the key were written.
        assert_eq!(
            ledger
                .issue(CouponId(1), UserId(1), clock.now())
                .await
                .unwrap(),
            LedgerStep::Issued(1)
        );
        let k = key(1, 1, "k");
        assert!(matches!(
            service.issue(CouponId(1), UserId(1), Some(&k)).await,
            Err(CouponError::Unavailable(_))
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
        assert_eq!(repo.rows.lock().unwrap().len(), 1);
    }

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
            Err(CouponError::KeyReused)
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
            Err(CouponError::Unavailable(_))
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

    fn winner(user: i64, number: u32) -> (Winner, Option<RequestKey>) {
        let w = Winner {
            coupon: CouponId(1),
            user: UserId(user),
            number,
        };
        (w, None)
    }

    #[tokio::test]
    async fn winners_are_written_with_their_events_and_keys_in_one_transaction() {
        let uow = MemoryUow::default();
        let mut tx = uow.begin().await.unwrap();
        let (first, _) = winner(1, 1);
        let batch = vec![(first, Some(key(1, 1, "k"))), winner(2, 2)];
        let written = record_winners(&mut tx, &batch, t0()).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(written.len(), 2);
        let world = uow.world();
        assert_eq!(world.won, written);
        assert_eq!(world.event_types(), vec![types::COUPON_ISSUED; 2]);
        assert_eq!(
            world.outbox[0].payload["userCouponId"],
            written[0].id.value()
        );
        let stored = &world.keys[&(UserId(1), "coupon.issue", "k".to_owned())];
        assert_eq!(
            stored
                .1
                .as_deref()
                .map(idempotency::decode::<Issued>)
                .map(Result::unwrap),
            Some(written[0].answer()),
            "the key answers what the winner heard"
        );
    }

    #[tokio::test]
    async fn a_batch_with_a_taken_key_or_a_duplicate_is_refused_whole() {
        let uow = MemoryUow::default();
        let mut tx = uow.begin().await.unwrap();
        let (w, _) = winner(1, 1);
        record_winners(&mut tx, &[(w, Some(key(1, 1, "k")))], t0())
            .await
            .unwrap();
        tx.commit().await.unwrap();

        let mut tx = uow.begin().await.unwrap();
        let (other, _) = winner(2, 2);
        let reused = vec![
            winner(3, 3),
            (
                other,
                Some(RequestKey::new(UserId(1), "coupon.issue", "k", &2).unwrap()),
            ),
        ];
        assert!(matches!(
            record_winners(&mut tx, &reused, t0()).await,
            Err(RecordError::KeyReused)
        ));
        drop(tx);
        let mut tx = uow.begin().await.unwrap();
        assert!(matches!(
            record_winners(&mut tx, &[winner(1, 5)], t0()).await,
            Err(RecordError::DuplicateUser)
        ));
        assert!(matches!(
            record_winners(&mut tx, &[winner(6, 1)], t0()).await,
            Err(RecordError::DuplicateNumber)
        ));
        drop(tx);
        assert_eq!(uow.world().won.len(), 1, "nothing of the refused batches");
        assert_eq!(uow.world().outbox.len(), 1);
    }

    /// A service over the same stores that also knows campaign 2.
    async fn service_with_two(repo: FakeRepo) -> (Service, ManualClock) {
        let (service, clock) = service(repo, MemoryCouponLedger::default()).await;
        let mut second = campaign();
        second.id = CouponId(2);
        service.remember(&second);
        service.ledger.load(CouponId(2), 2, &[]).await.unwrap();
        (service, clock)
    }

    #[tokio::test]
    async fn a_missing_ledger_is_rebuilt_once() {
        let repo = FakeRepo::default();
        let (service, _) = service(repo.clone(), MemoryCouponLedger::default()).await;
        service.issue(CouponId(1), UserId(1), None).await.unwrap();
        let lost = CouponService::new(
            repo.uow.clone(),
            repo.clone(),
            MemoryCouponLedger::default(),
            ManualClock::new(t0() + TimeDelta::minutes(1)),
            NoWake,
            TimeDelta::seconds(30),
        );
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

    /// The ledger on a Redis replica promoted by a failover: it missed the
    /// old primary's last writes, and its first issue answers `Stale`,
    /// dropping the ledger as the Redis script does.
    #[derive(Clone)]
    struct FailedOver {
        inner: Arc<std::sync::Mutex<MemoryCouponLedger>>,
        stale: Arc<std::sync::atomic::AtomicBool>,
    }

    impl FailedOver {
        fn ledger(&self) -> MemoryCouponLedger {
            self.inner.lock().unwrap().clone()
        }
    }

    impl CouponLedger for FailedOver {
        async fn issue(
            &self,
            coupon: CouponId,
            user: UserId,
            now: DateTime<Utc>,
        ) -> Result<LedgerStep, CouponError> {
            if self.stale.swap(false, Ordering::SeqCst) {
                *self.inner.lock().unwrap() = MemoryCouponLedger::default();
                return Ok(LedgerStep::Stale);
            }
            self.ledger().issue(coupon, user, now).await
        }

        async fn revoke(
            &self,
            coupon: CouponId,
            user: UserId,
            number: u32,
            free: bool,
        ) -> Result<bool, CouponError> {
            self.ledger().revoke(coupon, user, number, free).await
        }

        async fn load(
            &self,
            coupon: CouponId,
            quantity: u32,
            holders: &[(UserId, u32)],
        ) -> Result<bool, CouponError> {
            self.ledger().load(coupon, quantity, holders).await
        }

        async fn snapshot(&self, coupon: CouponId) -> Result<Option<LedgerSnapshot>, CouponError> {
            self.ledger().snapshot(coupon).await
        }

        async fn repair(
            &self,
            coupon: CouponId,
            add: &[(UserId, u32)],
            remove: &[LedgerEntry],
        ) -> Result<(), CouponError> {
            self.ledger().repair(coupon, add, remove).await
        }

        async fn issued(&self, coupon: CouponId) -> Result<Option<u64>, CouponError> {
            self.ledger().issued(coupon).await
        }

        async fn issued_many(&self, coupons: &[CouponId]) -> Result<Vec<Option<u64>>, CouponError> {
            self.ledger().issued_many(coupons).await
        }
    }

    #[tokio::test]
    async fn a_ledger_from_before_a_failover_is_rebuilt_from_the_database_before_it_answers() {
        let repo = FakeRepo::default();
        let (service, _) = service(repo.clone(), MemoryCouponLedger::default()).await;
        assert_eq!(
            service
                .issue(CouponId(1), UserId(1), None)
                .await
                .unwrap()
                .number,
            1
        );
        // The promoted replica knows the campaign but not user 1's number.
        let replica = MemoryCouponLedger::default();
        replica.load(CouponId(1), 2, &[]).await.unwrap();
        let failed_over = FailedOver {
            inner: Arc::new(std::sync::Mutex::new(replica)),
            stale: Arc::new(true.into()),
        };
        let after = CouponService::new(
            repo.uow.clone(),
            repo.clone(),
            failed_over.clone(),
            ManualClock::new(t0() + TimeDelta::minutes(1)),
            NoWake,
            TimeDelta::seconds(30),
        );
        // Rebuilt first: user 2 gets number 2, not user 1's number 1 again.
        assert_eq!(
            after
                .issue(CouponId(1), UserId(2), None)
                .await
                .unwrap()
                .number,
            2
        );
        assert_eq!(repo.holder_reads.load(Ordering::SeqCst), 1, "one rebuild");
        assert!(matches!(
            after.issue(CouponId(1), UserId(1), None).await,
            Err(CouponError::AlreadyIssued)
        ));
        assert!(matches!(
            after.issue(CouponId(1), UserId(3), None).await,
            Err(CouponError::SoldOut)
        ));
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

    #[tokio::test]
    async fn a_sold_out_rush_is_answered_from_memory_for_a_second() {
        let ledger = MemoryCouponLedger::default();
        let (service, clock) = service(FakeRepo::default(), ledger.clone()).await;
        let c = CouponId(1);
        service.issue(c, UserId(1), None).await.unwrap();
        service.issue(c, UserId(2), None).await.unwrap();
        assert!(matches!(
            service.issue(c, UserId(3), None).await,
            Err(CouponError::SoldOut)
        ));
        // Another instance gives number 2 back: this one goes on refusing
        // from memory for a second, and still knows who holds a coupon.
        assert!(ledger.revoke(c, UserId(2), 2, true).await.unwrap());
        assert!(matches!(
            service.issue(c, UserId(4), None).await,
            Err(CouponError::SoldOut)
        ));
        assert!(matches!(
            service.issue(c, UserId(1), None).await,
            Err(CouponError::AlreadyIssued)
        ));
        clock.advance(TimeDelta::milliseconds(1_001));
        assert_eq!(service.issue(c, UserId(4), None).await.unwrap().number, 2);
    }

    /// A lock strategy in memory: the decision under one mutex, writing
    /// into the fake repository's rows; `fail_next` makes the next call
    /// fail with that error.
    #[derive(Clone)]
    struct FakeIssuer {
        rows: Arc<Mutex<Vec<IssuedCoupon>>>,
        calls: Arc<AtomicUsize>,
        fail_next: Arc<Mutex<Option<RecordError>>>,
    }

    impl FakeIssuer {
        fn over(repo: &FakeRepo) -> Self {
            Self {
                rows: repo.rows.clone(),
                calls: Arc::default(),
                fail_next: Arc::default(),
            }
        }
    }

    impl LockedIssuer for FakeIssuer {
        fn issue<'a>(
            &'a self,
            campaign: &'a Campaign,
            user: UserId,
            _: Option<&'a RequestKey>,
            _: DateTime<Utc>,
        ) -> BoxFuture<'a, Result<LockedIssue, RecordError>> {
            async move {
                self.calls.fetch_add(1, Ordering::SeqCst);
                if let Some(err) = self.fail_next.lock().unwrap().take() {
                    return Err(err);
                }
                let mut rows = self.rows.lock().unwrap();
                let held = rows.iter().any(|r| r.user == user);
                match super::super::domain::first_come(held, rows.len() as u32, campaign.quantity) {
                    LedgerStep::Issued(number) => {
                        let row = IssuedCoupon {
                            id: UserCouponId(rows.len() as i64 + 1),
                            coupon: campaign.id,
                            user,
                            number,
                        };
                        rows.push(row.clone());
                        Ok(LockedIssue::Won(row))
                    }
                    LedgerStep::AlreadyIssued => Ok(LockedIssue::AlreadyIssued),
                    _ => Ok(LockedIssue::SoldOut),
                }
            }
            .boxed()
        }
    }

    #[tokio::test]
    async fn a_lock_strategy_decides_in_the_ledgers_place_and_is_answered_alike() {
        let repo = FakeRepo::default();
        let ledger = MemoryCouponLedger::default();
        let (service, _) = service(repo.clone(), ledger.clone()).await;
        let issuer = FakeIssuer::over(&repo);
        let service = service.issuing_with(Arc::new(issuer.clone()));
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
        assert!(matches!(
            service.issue(c, UserId(4), None).await,
            Err(CouponError::SoldOut)
        ));
        assert!(matches!(
            service.issue(c, UserId(2), None).await,
            Err(CouponError::AlreadyIssued)
        ));
        assert_eq!(issuer.calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn without_the_sold_out_memory_every_request_reaches_the_strategy() {
        let repo = FakeRepo::default();
        let (service, _) = service(repo.clone(), MemoryCouponLedger::default()).await;
        let issuer = FakeIssuer::over(&repo);
        let service = service
            .issuing_with(Arc::new(issuer.clone()))
            .without_sold_out_memory();
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

    #[tokio::test]
    async fn a_lock_strategys_failures_are_answered_as_the_ledgers_path_answers_them() {
        let repo = FakeRepo::default();
        let (service, _) = service(repo.clone(), MemoryCouponLedger::default()).await;
        let issuer = FakeIssuer::over(&repo);
        let service = service.issuing_with(Arc::new(issuer.clone()));
        let c = CouponId(1);
        let fail = |err| *issuer.fail_next.lock().unwrap() = Some(err);
        fail(RecordError::Failed(anyhow::anyhow!("connection reset")));
        assert!(matches!(
            service.issue(c, UserId(1), None).await,
            Err(CouponError::Unavailable(_))
        ));
        fail(RecordError::DuplicateNumber);
        assert!(matches!(
            service.issue(c, UserId(1), None).await,
            Err(CouponError::Unavailable(_))
        ));
        fail(RecordError::KeyReused);
        assert!(matches!(
            service.issue(c, UserId(1), None).await,
            Err(CouponError::KeyReused)
        ));
        // The user's other request won while this one waited for the lock.
        fail(RecordError::DuplicateUser);
        assert!(matches!(
            service.issue(c, UserId(1), None).await,
            Err(CouponError::AlreadyIssued)
        ));
        assert!(repo.rows.lock().unwrap().is_empty());
        // A key that already won is replayed without asking the strategy.
        let k = key(1, 1, "k");
        repo.record_issue(&campaign(), UserId(1), 1, Some(&k), t0())
            .await
            .unwrap();
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

    /// The redemption step's stores in memory: one job, one coupon.
    #[derive(Default)]
    struct RedemptionFake {
        job: Option<Job>,
        coupon: Option<RedeemableCoupon>,
        /// Someone else marks the coupon used between the read and the write.
        lose_the_race: bool,
        vendor_payments: Vec<(VendorId, UserCouponId, i64)>,
        finished: Option<(JobStatus, Option<FailReason>)>,
        events: Vec<crate::kernel::events::NewEvent>,
    }

    impl RedemptionTx for RedemptionFake {
        async fn insert_job(
            &mut self,
            job: &Job,
            _: DateTime<Utc>,
        ) -> Result<(), crate::kernel::StoreError> {
            self.job = Some(job.clone());
            Ok(())
        }

        async fn job(&mut self, id: Uuid) -> Result<Option<Job>, crate::kernel::StoreError> {
            Ok(self.job.clone().filter(|j| j.id == id))
        }

        async fn redeemable(
            &mut self,
            id: UserCouponId,
        ) -> Result<Option<RedeemableCoupon>, crate::kernel::StoreError> {
            Ok(self.coupon.clone().filter(|c| c.id == id))
        }

        async fn mark_used(
            &mut self,
            id: UserCouponId,
            version: i64,
            _: DateTime<Utc>,
        ) -> Result<bool, crate::kernel::StoreError> {
            let Some(coupon) = self.coupon.as_mut().filter(|c| c.id == id) else {
                return Ok(false);
            };
            if self.lose_the_race
                || coupon.version != version
                || coupon.status != crate::coupon::domain::CouponStatus::Issued
            {
                return Ok(false);
            }
            coupon.status = crate::coupon::domain::CouponStatus::Used;
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
        ) -> Result<bool, crate::kernel::StoreError> {
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
        ) -> Result<(), crate::kernel::StoreError> {
            self.finished = Some((status, reason));
            Ok(())
        }
    }

    impl OutboxWriter for RedemptionFake {
        async fn append(
            &mut self,
            events: Vec<crate::kernel::events::NewEvent>,
            _: DateTime<Utc>,
        ) -> Result<(), crate::kernel::StoreError> {
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
                status: crate::coupon::domain::CouponStatus::Issued,
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
        assert_eq!(
            tx.coupon.as_ref().unwrap().status,
            crate::coupon::domain::CouponStatus::Used
        );
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
                    tx.coupon.as_mut().unwrap().status = crate::coupon::domain::CouponStatus::Used;
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

    #[tokio::test]
    async fn the_reconciler_adds_holders_the_ledger_lost_and_then_finds_nothing() {
        let repo = FakeRepo::default();
        let ledger = MemoryCouponLedger::default();
        let (service, _) = service(repo.clone(), ledger.clone()).await;
        service.issue(CouponId(1), UserId(1), None).await.unwrap();
        // A holder the database has and the ledger forgot (e.g. a failover).
        repo.rows.lock().unwrap().push(IssuedCoupon {
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
        assert!(matches!(
            service.issue(CouponId(1), UserId(2), None).await,
            Err(CouponError::AlreadyIssued)
        ));
        assert!(matches!(
            service.issue(CouponId(1), UserId(3), None).await,
            Err(CouponError::SoldOut)
        ));
    }

    #[tokio::test]
    async fn a_missing_ledger_is_rebuilt_by_the_reconciler() {
        let repo = FakeRepo::default();
        let (first, _) = service(repo.clone(), MemoryCouponLedger::default()).await;
        first.issue(CouponId(1), UserId(1), None).await.unwrap();
        // Another instance whose ledger lost the campaign altogether.
        let fresh = CouponService::new(
            repo.uow.clone(),
            repo,
            MemoryCouponLedger::default(),
            ManualClock::new(t0() + TimeDelta::minutes(1)),
            NoWake,
            TimeDelta::seconds(30),
        );
        let report = fresh.reconcile(CouponId(1)).await.unwrap();
        assert!(report.rebuilt);
        assert!(matches!(
            fresh.issue(CouponId(1), UserId(1), None).await,
            Err(CouponError::AlreadyIssued)
        ));
    }

    #[tokio::test]
    async fn a_vendor_is_created_with_a_trimmed_name_listed_and_recorded_with_its_admin() {
        let repo = FakeRepo::default();
        let (service, _) = service(repo.clone(), MemoryCouponLedger::default()).await;
        let vendor = service.create_vendor("  Café Nero ", ADMIN).await.unwrap();
        assert_eq!(vendor.name, "Café Nero");
        let page = service.vendors(None, 10).await.unwrap();
        assert_eq!(page.items, vec![vendor.clone()]);
        assert_eq!(page.next_cursor, None);
        let second = service.create_vendor("Bakery", ADMIN).await.unwrap();
        let first_page = service.vendors(None, 1).await.unwrap();
        assert_eq!(first_page.items, vec![vendor.clone()]);
        assert_eq!(first_page.next_cursor, Some(vendor.id.value()));
        let next = service.vendors(first_page.next_cursor, 1).await.unwrap();
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
        assert_eq!(
            service
                .issue(CouponId(2), UserId(1), None)
                .await
                .unwrap()
                .number,
            1
        );
    }

    #[tokio::test]
    async fn stats_put_the_database_count_beside_the_ledger_count() {
        let (service, _) = service(FakeRepo::default(), MemoryCouponLedger::default()).await;
        service.issue(CouponId(1), UserId(1), None).await.unwrap();
        let stats = service.stats(CouponId(1)).await.unwrap();
        assert_eq!((stats.issued, stats.ledger_issued), (1, Some(1)));
        let all = service.campaigns(None, 10).await.unwrap();
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
        let other = CouponService::new(
            MemoryUow::default(),
            FakeRepo::default(),
            MemoryCouponLedger::default(),
            ManualClock::new(t0()),
            NoWake,
            TimeDelta::seconds(30),
        );
        assert_eq!(other.stats(CouponId(1)).await.unwrap().ledger_issued, None);
    }

    #[tokio::test]
    async fn a_users_coupons_are_their_own() {
        let (service, _) = service(FakeRepo::default(), MemoryCouponLedger::default()).await;
        service.issue(CouponId(1), UserId(1), None).await.unwrap();
        service.issue(CouponId(1), UserId(2), None).await.unwrap();
        let mine = service.wallet_of(UserId(1), None, 10).await.unwrap();
        assert_eq!(mine.items.len(), 1);
        assert_eq!(mine.items[0].number, 1);
        assert_eq!(mine.next_cursor, None);
        assert!(
            service
                .wallet_of(UserId(3), None, 10)
                .await
                .unwrap()
                .items
                .is_empty()
        );
    }
}
