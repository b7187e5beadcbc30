//! An in-memory unit of work for use-case tests: one `World` of seats,
//! reservations, wallets, payments, compensations and outbox events. A
//! transaction works on a copy and commit puts the copy back, so a use case
//! that returns early (dropping its transaction) leaves nothing behind,
//! exactly like a rolled-back database transaction. Every compare-and-set
//! follows the same rule the SQL adapters encode (`Transition::applies_to`
//! and friends). Faults can be injected: an outage, or conflicts at commit.
//!
//! This file holds the world and its transactions; each aggregate's port
//! implementations live in the file named after it.

mod alerts;
mod catalog;
mod coupons;
mod idempotency;
mod outbox;
mod payments;
mod reservations;
mod tickets;
mod waitlist;
mod wallet;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use chrono::{DateTime, Utc};

pub use alerts::RaisedAlerts;
pub use catalog::MemSeat;
pub use outbox::Wakes;
pub use waitlist::MemWaitlistPlace;

use crate::{
    catalog::domain::ScheduleStatus,
    coupon::domain::{IssuedCoupon, Job},
    kernel::{
        OrderId, PageRequest, PaymentId, Points, ReservationId, ScheduleId, SeatId, StoreError,
        Transaction, UnitOfWork, UserId, events::NewEvent,
    },
    payment::domain::{Compensation, Payment},
    reservation::domain::{Order, Reservation},
    wallet::domain::LedgerEntry,
};

/// Everything the saga's stores hold.
#[derive(Debug, Clone, Default)]
pub struct World {
    pub seats: BTreeMap<SeatId, MemSeat>,
    pub reservations: BTreeMap<ReservationId, Reservation>,
    /// Orders as stored (their seats are the reservations naming them).
    pub orders: BTreeMap<OrderId, Order>,
    pub balances: HashMap<UserId, Points>,
    /// Ledger rows, oldest first, with the payment they belong to.
    pub ledger: Vec<(UserId, LedgerEntry, Option<PaymentId>)>,
    pub payments: BTreeMap<PaymentId, Payment>,
    /// When each schedule's show starts (absent: an unknown schedule).
    pub shows: HashMap<ScheduleId, DateTime<Utc>>,
    /// Schedules whose sale status changed, and when (absent: on sale).
    pub schedule_statuses: HashMap<ScheduleId, (ScheduleStatus, DateTime<Utc>)>,
    pub compensations: BTreeMap<i64, Compensation>,
    /// Committed outbox events, in order.
    pub outbox: Vec<NewEvent>,
    /// Users whose holds were counted under a user lock, in order.
    pub user_locks: Vec<UserId>,
    /// Idempotency keys: (user, scope, key) → (fingerprint, answer once
    /// stored).
    pub keys: HashMap<(UserId, &'static str, String), (String, Option<String>)>,
    /// Redemption jobs written by requests.
    pub jobs: BTreeMap<uuid::Uuid, Job>,
    /// Coupons won, with the unique (coupon, user) and (coupon, number) rules.
    pub won: Vec<IssuedCoupon>,
    /// Waitlist places, in join order (a place joined again moves to the end).
    pub waitlist: Vec<MemWaitlistPlace>,
    /// Tickets, with the ticket module's own rules (its events stay there:
    /// what the payment flows write goes to `outbox`).
    pub tickets: crate::ticket::usecase::fake::FakeTx,
    next_id: i64,
}

impl World {
    /// One id sequence for every table, like a shared database sequence.
    fn next_id(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id
    }

    pub fn event_types(&self) -> Vec<&'static str> {
        self.outbox.iter().map(|event| event.event_type).collect()
    }

    /// The payloads of the events of `event_type` written, oldest first.
    pub fn payloads(&self, event_type: &str) -> Vec<serde_json::Value> {
        (self.outbox.iter())
            .filter(|event| event.event_type == event_type)
            .map(|event| event.payload.clone())
            .collect()
    }
}

/// One page of `rows` (in id order) as the SQL adapters read it: ids below
/// the cursor, the newest first, one row more than the page.
fn newest_first<T>(
    rows: impl DoubleEndedIterator<Item = T>,
    id: impl Fn(&T) -> i64,
    page: PageRequest,
) -> Vec<T> {
    rows.rev()
        .filter(|row| page.after.is_none_or(|after| id(row) < after))
        .take(page.fetch() as usize)
        .collect()
}

#[derive(Debug, Default)]
struct Faults {
    down: bool,
    conflicts_at_commit: u32,
    commits: u32,
}

/// The unit of work, and the read-side repositories over the same world.
#[derive(Clone, Default)]
pub struct MemoryUow {
    world: Arc<Mutex<World>>,
    faults: Arc<Mutex<Faults>>,
}

impl MemoryUow {
    pub fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().expect("world lock")
    }

    /// Every store call fails as unreachable until `set_down(false)`.
    pub fn set_down(&self, down: bool) {
        self.faults.lock().expect("faults").down = down;
    }

    /// The next `count` commits fail with a conflict (as a deadlock would).
    pub fn conflict_next_commits(&self, count: u32) {
        self.faults.lock().expect("faults").conflicts_at_commit = count;
    }

    /// Commits that succeeded.
    pub fn commits(&self) -> u32 {
        self.faults.lock().expect("faults").commits
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.faults.lock().expect("faults").down {
            return Err(StoreError::Unavailable(anyhow::anyhow!("store down")));
        }
        Ok(())
    }
}

/// A transaction: a private copy of the world, put back on commit.
pub struct MemTx {
    work: World,
    uow: MemoryUow,
}

impl UnitOfWork for MemoryUow {
    type Tx = MemTx;

    async fn begin(&self) -> Result<MemTx, StoreError> {
        self.check()?;
        Ok(MemTx {
            work: self.world().clone(),
            uow: self.clone(),
        })
    }
}

impl Transaction for MemTx {
    async fn commit(self) -> Result<(), StoreError> {
        self.uow.check()?;
        {
            let mut faults = self.uow.faults.lock().expect("faults");
            if faults.conflicts_at_commit > 0 {
                faults.conflicts_at_commit -= 1;
                return Err(StoreError::Conflict(anyhow::anyhow!("deadlock detected")));
            }
            faults.commits += 1;
        }
        *self.uow.world() = self.work;
        Ok(())
    }
}

impl MemTx {
    fn check(&self) -> Result<(), StoreError> {
        self.uow.check()
    }
}
