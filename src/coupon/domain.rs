use std::collections::HashSet;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::kernel::Fault;
use crate::kernel::{
    CouponId, UserCouponId, UserId, VendorId,
    events::{CouponCreated, CouponIssued, CouponLedgerRepaired, NewEvent, VendorCreated, types},
};

pub const MAX_NAME_LEN: usize = 200;
pub const MAX_DISCOUNT: i64 = 10_000_000;
pub const MAX_QUANTITY: i64 = 1_000_000;
/// List pages (vendors, campaigns, a user's coupons): 50 unless asked
/// otherwise, never more than 200.
pub const DEFAULT_PAGE: u64 = 50;
pub const MAX_PAGE: u64 = 200;

/// A coupon campaign. Nothing about it changes after creation, so instances
/// may cache it for the whole sale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Campaign {
    pub id: CouponId,
    pub name: String,
    pub discount: i64,
    pub quantity: u32,
    pub valid_from: DateTime<Utc>,
    pub valid_until: DateTime<Utc>,
    pub vendor: VendorId,
}

impl Campaign {
    /// `CouponCreated`, naming the admin; written with the campaign.
    pub fn created(&self, admin: UserId) -> NewEvent {
        NewEvent::new(
            types::COUPON_CREATED,
            "coupon",
            self.id,
            &CouponCreated {
                coupon_id: self.id.value(),
                name: self.name.clone(),
                discount: self.discount,
                quantity: i64::from(self.quantity),
                vendor_id: self.vendor.value(),
                valid_from: self.valid_from,
                valid_until: self.valid_until,
                admin_id: Some(admin.value()),
            },
        )
    }

    /// Who holds the campaign by its rows' (holder, number), for an issuer
    /// that keeps no ledger; `None` when a number is free (freed since the
    /// refusal, say).
    pub fn holders_if_sold_out(&self, holders: Vec<(UserId, u32)>) -> Option<HashSet<UserId>> {
        (holders.len() >= self.quantity as usize)
            .then(|| holders.into_iter().map(|(user, _)| user).collect())
    }

    /// Whether coupons may be issued or used at `now`.
    pub fn window(&self, now: DateTime<Utc>) -> Result<(), CouponError> {
        if now < self.valid_from {
            Err(CouponError::NotStarted)
        } else if now >= self.valid_until {
            Err(CouponError::Ended)
        } else {
            Ok(())
        }
    }
}

/// A validated request to create a campaign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignDraft {
    pub name: String,
    pub discount: i64,
    pub quantity: u32,
    pub valid_from: DateTime<Utc>,
    pub valid_until: DateTime<Utc>,
    pub vendor: VendorId,
}

impl CampaignDraft {
    pub fn parse(
        name: &str,
        discount: i64,
        quantity: i64,
        valid_from: DateTime<Utc>,
        valid_until: DateTime<Utc>,
        vendor: i64,
    ) -> Result<Self, CouponError> {
        let name = parse_name(name)?;
        if !(1..=MAX_DISCOUNT).contains(&discount) {
            return Err(CouponError::Invalid(format!(
                "discount must be between 1 and {MAX_DISCOUNT} points"
            )));
        }
        if !(1..=MAX_QUANTITY).contains(&quantity) {
            return Err(CouponError::Invalid(format!(
                "quantity must be between 1 and {MAX_QUANTITY}"
            )));
        }
        if valid_until <= valid_from {
            return Err(CouponError::Invalid(
                "validUntil must be after validFrom".into(),
            ));
        }
        Ok(Self {
            name,
            discount,
            quantity: u32::try_from(quantity).unwrap_or(u32::MAX),
            valid_from,
            valid_until,
            vendor: VendorId(vendor),
        })
    }
}

/// A vendor or campaign name: trimmed, 1 to 200 characters, no control
/// characters.
pub fn parse_name(raw: &str) -> Result<String, CouponError> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_LEN {
        return Err(CouponError::Invalid(format!(
            "name must be 1 to {MAX_NAME_LEN} characters"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(CouponError::Invalid(
            "name must not contain control characters".into(),
        ));
    }
    Ok(name.to_owned())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vendor {
    pub id: VendorId,
    pub name: String,
    pub balance: i64,
}

impl Vendor {
    /// `VendorCreated`, naming the admin; written with the vendor.
    pub fn created(&self, admin: UserId) -> NewEvent {
        NewEvent::new(
            types::VENDOR_CREATED,
            "vendor",
            self.id,
            &VendorCreated {
                vendor_id: self.id.value(),
                name: self.name.clone(),
                admin_id: admin.value(),
            },
        )
    }
}

/// What the ledger answered for one issue request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerStep {
    /// The user won; the number is theirs (1..=quantity, never shared).
    Issued(u32),
    AlreadyIssued,
    SoldOut,
    /// The ledger does not know this campaign (Redis lost it): rebuild it
    /// from the database and ask again.
    Missing,
    /// The ledger was written on a Redis primary that has since failed over
    /// (asynchronous replication may have lost its last writes), and the
    /// store dropped it: rebuild it from the database and ask again.
    Stale,
}

/// First come, first served decided from a campaign's count read under a
/// lock (the lock strategies the bench compares with the ledger): a holder
/// is refused, a full campaign is sold out, anyone else takes the next
/// number. Only right while the caller holds the campaign's lock, or checks
/// on writing that the count has not moved.
pub fn first_come(held: bool, issued: u32, quantity: u32) -> LedgerStep {
    if held {
        LedgerStep::AlreadyIssued
    } else if issued >= quantity {
        LedgerStep::SoldOut
    } else {
        LedgerStep::Issued(issued + 1)
    }
}

/// One user's entry in a ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerEntry {
    pub user: UserId,
    pub number: u32,
    /// When the ledger step ran; `None` for entries loaded from the database.
    pub issued_at: Option<DateTime<Utc>>,
}

/// A consistent copy of one campaign's ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerSnapshot {
    pub quantity: u32,
    pub entries: Vec<LedgerEntry>,
}

/// A coupon a user holds, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCoupon {
    pub id: UserCouponId,
    pub coupon: CouponId,
    pub user: UserId,
    pub number: u32,
}

impl IssuedCoupon {
    /// What the winner hears (and, with a key, a retry hears again).
    pub fn answer(&self) -> Issued {
        Issued {
            user_coupon: self.id,
            number: self.number,
        }
    }
}

/// A winner the ledger just gave a number, to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Winner {
    pub coupon: CouponId,
    pub user: UserId,
    pub number: u32,
}

impl IssuedCoupon {
    /// `CouponIssued`, written with the winner's row.
    pub fn issued(&self) -> NewEvent {
        NewEvent::new(
            types::COUPON_ISSUED,
            "coupon",
            self.coupon,
            &CouponIssued {
                coupon_id: self.coupon.value(),
                user_coupon_id: self.id.value(),
                user_id: self.user.value(),
                issue_number: i64::from(self.number),
            },
        )
    }
}

/// A won (or, with the same `Idempotency-Key`, re-answered) coupon.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Issued {
    pub user_coupon: UserCouponId,
    pub number: u32,
}

/// Why the database refused to record a winner.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The user already has this coupon (the ledger had lost them).
    #[error("the user already holds this coupon")]
    DuplicateUser,
    /// Another user holds this issue number (the ledger was rebuilt while a
    /// winner was still writing).
    #[error("the issue number is taken")]
    DuplicateNumber,
    /// The request's `Idempotency-Key` already names another request.
    #[error("the Idempotency-Key was used with a different request")]
    KeyReused,
    #[error(transparent)]
    Failed(anyhow::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CouponState {
    Issued,
    Used,
    Expired,
}

impl CouponState {
    /// The state a client sees: an unused coupon past its campaign's end is
    /// expired.
    pub fn of(used: bool, valid_until: DateTime<Utc>, now: DateTime<Utc>) -> Self {
        if used {
            CouponState::Used
        } else if now >= valid_until {
            CouponState::Expired
        } else {
            CouponState::Issued
        }
    }
}

/// A user's coupon with what the client shows about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldCoupon {
    pub id: UserCouponId,
    pub coupon: CouponId,
    pub name: String,
    pub discount: i64,
    pub number: u32,
    pub state: CouponState,
    pub valid_until: DateTime<Utc>,
    pub issued_at: DateTime<Utc>,
}

/// A redemption job's status; the database column holds these names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::EnumString, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum JobStatus {
    Pending,
    Succeeded,
    Failed,
}

crate::kernel::stored_name!(JobStatus);

/// A held coupon's stored status; the database column holds these names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::EnumString, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum CouponStatus {
    Issued,
    Used,
}

crate::kernel::stored_name!(CouponStatus);

/// A held coupon as the redemption step reads it, with its campaign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedeemableCoupon {
    pub id: UserCouponId,
    pub owner: UserId,
    pub status: CouponStatus,
    /// For the optimistic check of marking it used.
    pub version: i64,
    pub campaign: Campaign,
}

impl RedeemableCoupon {
    pub fn facts(&self) -> RedemptionFacts {
        RedemptionFacts {
            owner: self.owner,
            used: self.status == CouponStatus::Used,
            valid_from: self.campaign.valid_from,
            valid_until: self.campaign.valid_until,
        }
    }
}

/// Why a redemption job failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailReason {
    /// Unknown coupon, or somebody else's (the two look the same, so ids
    /// cannot be probed).
    NotYourCoupon,
    AlreadyUsed,
    Expired,
    NotStarted,
}

impl FailReason {
    pub fn code(self) -> &'static str {
        match self {
            FailReason::NotYourCoupon => "not_your_coupon",
            FailReason::AlreadyUsed => "already_used",
            FailReason::Expired => "expired",
            FailReason::NotStarted => "not_started",
        }
    }

    pub fn parse(code: &str) -> Option<Self> {
        [
            FailReason::NotYourCoupon,
            FailReason::AlreadyUsed,
            FailReason::Expired,
            FailReason::NotStarted,
        ]
        .into_iter()
        .find(|r| r.code() == code)
    }

    pub fn message(self) -> &'static str {
        match self {
            FailReason::NotYourCoupon => "This coupon does not belong to you.",
            FailReason::AlreadyUsed => "This coupon has already been used.",
            FailReason::Expired => "This coupon has expired.",
            FailReason::NotStarted => "This coupon cannot be used yet.",
        }
    }
}

/// The facts a redemption is decided on.
#[derive(Debug, Clone, Copy)]
pub struct RedemptionFacts {
    pub owner: UserId,
    pub used: bool,
    pub valid_from: DateTime<Utc>,
    pub valid_until: DateTime<Utc>,
}

/// Whether `requester` may use the coupon described by `facts` at `now`.
pub fn redemption_verdict(
    requester: UserId,
    facts: Option<RedemptionFacts>,
    now: DateTime<Utc>,
) -> Result<(), FailReason> {
    let Some(facts) = facts.filter(|f| f.owner == requester) else {
        return Err(FailReason::NotYourCoupon);
    };
    if facts.used {
        Err(FailReason::AlreadyUsed)
    } else if now >= facts.valid_until {
        Err(FailReason::Expired)
    } else if now < facts.valid_from {
        Err(FailReason::NotStarted)
    } else {
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: Uuid,
    pub user: UserId,
    pub user_coupon: UserCouponId,
    pub status: JobStatus,
    pub reason: Option<FailReason>,
}

impl Job {
    /// A new redemption request, not yet decided.
    pub fn pending(user: UserId, user_coupon: UserCouponId) -> Self {
        Self {
            id: Uuid::now_v7(),
            user,
            user_coupon,
            status: JobStatus::Pending,
            reason: None,
        }
    }
}

/// A campaign's counts as the database keeps them (counters on the
/// campaign's row, kept in the transactions that issue and redeem).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CampaignCounts {
    pub issued: u64,
    pub redeemed: u64,
    pub vendor_balance: i64,
}

impl CampaignCounts {
    /// What an admin sees of `campaign` with these counts and the ledger's.
    pub fn of(self, campaign: Campaign, ledger_issued: Option<u64>) -> CampaignStats {
        CampaignStats {
            campaign,
            issued: self.issued,
            redeemed: self.redeemed,
            vendor_balance: self.vendor_balance,
            ledger_issued,
        }
    }
}

/// What an admin sees of a campaign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignStats {
    pub campaign: Campaign,
    pub issued: u64,
    pub redeemed: u64,
    pub vendor_balance: i64,
    /// The ledger's count; `None` when the ledger is not loaded (or its
    /// store is down).
    pub ledger_issued: Option<u64>,
}

/// What the reconciler changed in one campaign's ledger.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    pub coupon: Option<CouponId>,
    /// The ledger was missing and was loaded from the database.
    pub rebuilt: bool,
    /// Holders in the database the ledger did not know.
    pub added: Vec<UserId>,
    /// Ledger entries with no row, older than the grace period (a winner
    /// whose write failed and whose revocation was lost).
    pub removed: Vec<UserId>,
}

impl ReconcileReport {
    pub fn repaired(&self) -> bool {
        self.rebuilt || !self.added.is_empty() || !self.removed.is_empty()
    }

    /// `CouponLedgerRepaired` for a report that repaired something.
    pub fn event(&self) -> Option<NewEvent> {
        let coupon = self.coupon.filter(|_| self.repaired())?;
        Some(NewEvent::new(
            types::COUPON_LEDGER_REPAIRED,
            "coupon",
            coupon.0,
            &CouponLedgerRepaired {
                coupon_id: coupon.0,
                added: self.added.iter().map(|u| u.value()).collect(),
                removed: self.removed.iter().map(|u| u.value()).collect(),
                rebuilt: self.rebuilt,
            },
        ))
    }
}

/// What the ledger must change to agree with the database: holders to add
/// (the database is the truth) and stale entries to drop.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerDrift {
    pub add: Vec<(UserId, u32)>,
    pub remove: Vec<LedgerEntry>,
}

impl LedgerDrift {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }
}

/// Compares the ledger with the database rows and says what to change.
pub fn ledger_drift(
    rows: &[(UserId, u32)],
    snapshot: &LedgerSnapshot,
    stale_before: DateTime<Utc>,
) -> LedgerDrift {
    use std::collections::HashMap;
    let held: HashMap<UserId, u32> = rows.iter().copied().collect();
    let known: HashMap<UserId, LedgerEntry> =
        snapshot.entries.iter().map(|e| (e.user, *e)).collect();
    let mut add = Vec::new();
    let mut remove = Vec::new();
    for (user, number) in rows {
        match known.get(user) {
            Some(entry) if entry.number == *number => {}
            Some(entry) => {
                remove.push(*entry);
                add.push((*user, *number));
            }
            None => add.push((*user, *number)),
        }
    }
    for entry in &snapshot.entries {
        let stale = entry.issued_at.is_none_or(|at| at < stale_before);
        if !held.contains_key(&entry.user) && stale {
            remove.push(*entry);
        }
    }
    LedgerDrift { add, remove }
}

#[derive(Debug, thiserror::Error)]
pub enum CouponError {
    #[error("{0}")]
    Invalid(String),
    #[error("no such coupon")]
    NotFound,
    #[error("no such vendor")]
    VendorNotFound,
    #[error("no such job")]
    JobNotFound,
    #[error("this coupon is not available yet")]
    NotStarted,
    #[error("this coupon campaign has ended")]
    Ended,
    #[error("all coupons have been issued")]
    SoldOut,
    #[error("you already have this coupon")]
    AlreadyIssued,
    #[error(transparent)]
    Fault(Fault),
}

crate::kernel::module_error!(CouponError);

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn drafts_are_validated() {
        let ok = CampaignDraft::parse(" Summer ", 500, 1_000, at(0), at(60), 1).unwrap();
        assert_eq!(ok.name, "Summer");
        assert!(CampaignDraft::parse("", 500, 1, at(0), at(60), 1).is_err());
        assert!(CampaignDraft::parse("x", 0, 1, at(0), at(60), 1).is_err());
        assert!(CampaignDraft::parse("x", 1, 0, at(0), at(60), 1).is_err());
        assert!(CampaignDraft::parse("x", 1, MAX_QUANTITY + 1, at(0), at(60), 1).is_err());
        assert!(CampaignDraft::parse("x", 1, 1, at(60), at(60), 1).is_err());
        assert!(CampaignDraft::parse("a\u{7}b", 1, 1, at(0), at(60), 1).is_err());
    }

    #[test]
    fn redemption_reasons() {
        let facts = RedemptionFacts {
            owner: UserId(1),
            used: false,
            valid_from: at(0),
            valid_until: at(100),
        };
        assert_eq!(redemption_verdict(UserId(1), Some(facts), at(50)), Ok(()));
        assert_eq!(
            redemption_verdict(UserId(2), Some(facts), at(50)),
            Err(FailReason::NotYourCoupon)
        );
        assert_eq!(
            redemption_verdict(UserId(1), None, at(50)),
            Err(FailReason::NotYourCoupon)
        );
        let used = RedemptionFacts {
            used: true,
            ..facts
        };
        assert_eq!(
            redemption_verdict(UserId(1), Some(used), at(50)),
            Err(FailReason::AlreadyUsed)
        );
        assert_eq!(
            redemption_verdict(UserId(1), Some(facts), at(100)),
            Err(FailReason::Expired)
        );
        assert_eq!(
            redemption_verdict(UserId(1), Some(facts), at(-1)),
            Err(FailReason::NotStarted)
        );
    }

    #[test]
    fn drift_adds_missing_holders_and_drops_only_stale_orphans() {
        let now = at(1_000);
        let snapshot = LedgerSnapshot {
            quantity: 10,
            entries: vec![
                LedgerEntry {
                    user: UserId(1),
                    number: 1,
                    issued_at: None,
                },
                LedgerEntry {
                    user: UserId(2),
                    number: 2,
                    issued_at: Some(now - TimeDelta::minutes(5)),
                },
                LedgerEntry {
                    user: UserId(3),
                    number: 3,
                    issued_at: Some(now),
                },
                LedgerEntry {
                    user: UserId(4),
                    number: 9,
                    issued_at: None,
                },
            ],
        };
        let rows = [(UserId(1), 1), (UserId(4), 4), (UserId(5), 5)];
        let drift = ledger_drift(&rows, &snapshot, now - TimeDelta::seconds(30));
        assert_eq!(drift.add, vec![(UserId(4), 4), (UserId(5), 5)]);
        let removed: Vec<_> = drift.remove.iter().map(|e| (e.user, e.number)).collect();
        // User 3 may still be writing; user 2's write never landed.
        assert_eq!(removed, vec![(UserId(4), 9), (UserId(2), 2)]);
    }

    #[test]
    fn state_of_a_held_coupon() {
        assert_eq!(CouponState::of(true, at(0), at(10)), CouponState::Used);
        assert_eq!(CouponState::of(false, at(10), at(10)), CouponState::Expired);
        assert_eq!(CouponState::of(false, at(11), at(10)), CouponState::Issued);
    }

    #[test]
    fn first_come_refuses_a_holder_then_a_full_campaign_then_gives_the_next_number() {
        assert_eq!(first_come(true, 0, 10), LedgerStep::AlreadyIssued);
        assert_eq!(first_come(true, 10, 10), LedgerStep::AlreadyIssued);
        assert_eq!(first_come(false, 10, 10), LedgerStep::SoldOut);
        assert_eq!(first_come(false, 11, 10), LedgerStep::SoldOut);
        assert_eq!(first_come(false, 0, 10), LedgerStep::Issued(1));
        assert_eq!(first_come(false, 9, 10), LedgerStep::Issued(10));
    }
}
