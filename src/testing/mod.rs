//! An in-memory unit of work for use-case tests: one `World` of seats,
//! reservations, wallets, payments, compensations and outbox events. A
//! transaction works on a copy and commit puts the copy back, so a use case
//! that returns early (dropping its transaction) leaves nothing behind,
//! exactly like a rolled-back database transaction. Every compare-and-set
//! follows the same rule the SQL adapters encode (`Transition::applies_to`
//! and friends). Faults can be injected: an outage, or conflicts at commit.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use chrono::{DateTime, Utc};

use crate::{
    catalog::{
        domain::{HeldSeat, ScheduleStatus, Seat, SeatState},
        ports::{SeatReads, SeatTx},
    },
    coupon::{
        domain::{FailReason, IssuedCoupon, Job, JobStatus, RecordError, RedeemableCoupon, Winner},
        ports::{IssueTx, RedemptionTx},
    },
    kernel::{
        ConcertId, PageRequest, PaymentId, Points, ReservationId, ScheduleId, SeatId, StoreError,
        Transaction, UnitOfWork, UserCouponId, UserId, VendorId,
        events::{NewEvent, RelayWake},
        idempotency::{IdempotencyTx, Recall, RequestKey},
    },
    outbox::ports::OutboxWriter,
    payment::{
        domain::{
            AfterFailure, CancellationProgress, Compensation, CompensationStatus, DueCompensation,
            NewPayment, Payment, PaymentError, PaymentStatus,
        },
        ports::{PaymentRepository, PaymentTx},
    },
    reservation::{
        domain::{
            NewReservation, Reservation, ReservationError, ReservationStatus, Transition,
            WaitlistEntry,
        },
        ports::{ReservationRepository, ReservationTx, WaitlistTx},
    },
    wallet::{
        domain::{EntryKind, LedgerEntry, WalletError},
        ports::{WalletRepository, WalletTx},
    },
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemSeat {
    pub schedule: ScheduleId,
    pub concert: ConcertId,
    pub number: u32,
    pub price: Points,
    pub state: SeatState,
    pub reservation: Option<ReservationId>,
}

/// Everything the saga's stores hold.
#[derive(Debug, Clone, Default)]
pub struct World {
    pub seats: BTreeMap<SeatId, MemSeat>,
    pub reservations: BTreeMap<ReservationId, Reservation>,
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
    next_id: i64,
}

/// One (schedule, user) row of the waitlist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemWaitlistPlace {
    pub id: i64,
    pub schedule: ScheduleId,
    pub user: UserId,
    /// `waiting`, `offered` or `left`.
    pub status: &'static str,
    pub reservation: Option<ReservationId>,
}

impl World {
    /// The users waiting on a schedule, first in line first.
    pub fn waiting(&self, schedule: ScheduleId) -> Vec<UserId> {
        self.waitlist
            .iter()
            .filter(|p| p.schedule == schedule && p.status == "waiting")
            .map(|p| p.user)
            .collect()
    }
}

impl World {
    fn next_id(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id
    }

    pub fn add_seat(
        &mut self,
        schedule: ScheduleId,
        concert: ConcertId,
        number: u32,
        price: i64,
    ) -> SeatId {
        let id = SeatId(self.next_id());
        self.seats.insert(
            id,
            MemSeat {
                schedule,
                concert,
                number,
                price: Points::new(price).expect("a valid price"),
                state: SeatState::Available,
                reservation: None,
            },
        );
        id
    }

    pub fn balance(&self, user: UserId) -> i64 {
        self.balances.get(&user).map_or(0, |p| p.value())
    }

    /// The schedule of the seat a payment paid for.
    pub fn schedule_of(&self, payment: &Payment) -> Option<ScheduleId> {
        self.reservations
            .get(&payment.reservation)
            .map(|r| r.schedule)
    }

    pub fn event_types(&self) -> Vec<&'static str> {
        self.outbox.iter().map(|e| e.event_type).collect()
    }

    fn seat_of(&self, id: SeatId) -> Option<Seat> {
        self.seats.get(&id).map(|s| Seat {
            id,
            schedule_id: s.schedule,
            number: s.number,
            grade: "R".into(),
            price: s.price,
            state: s.state,
        })
    }

    fn held_by(&self, seat: SeatId, reservation: ReservationId) -> bool {
        self.seats.get(&seat).is_some_and(|s| {
            s.reservation == Some(reservation) && matches!(s.state, SeatState::Held { .. })
        })
    }

    fn ledger_row(
        &mut self,
        user: UserId,
        kind: EntryKind,
        amount: i64,
        after: Points,
        payment: Option<PaymentId>,
        now: DateTime<Utc>,
    ) {
        let id = self.next_id();
        self.ledger.push((
            user,
            LedgerEntry {
                id,
                kind,
                amount,
                balance_after: after,
                created_at: now,
            },
            payment,
        ));
    }
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

    /// The next `n` commits fail with a conflict (as a deadlock would).
    pub fn conflict_next_commits(&self, n: u32) {
        self.faults.lock().expect("faults").conflicts_at_commit = n;
    }

    /// Commits that succeeded.
    pub fn commits(&self) -> u32 {
        self.faults.lock().expect("faults").commits
    }

    fn unpaid_holds_of(&self, schedule: ScheduleId, max: u64) -> Vec<ReservationId> {
        self.world()
            .reservations
            .values()
            .filter(|r| r.schedule == schedule && Transition::Withdraw.applies_to(r))
            .map(|r| r.id)
            .take(max as usize)
            .collect()
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.faults.lock().expect("faults").down {
            return Err(StoreError::Unavailable(anyhow::anyhow!("store down")));
        }
        Ok(())
    }
}

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

impl IdempotencyTx for MemTx {
    async fn claim(&mut self, key: &RequestKey, _: DateTime<Utc>) -> Result<Recall, StoreError> {
        self.check()?;
        let id = (key.user(), key.scope(), key.key().to_owned());
        match self.work.keys.get(&id) {
            Some((fingerprint, Some(answer))) => Ok(Recall::of(key, fingerprint, answer.clone())),
            Some((_, None)) => Err(StoreError::Unexpected(anyhow::anyhow!(
                "a committed key without its answer"
            ))),
            None => {
                self.work
                    .keys
                    .insert(id, (key.fingerprint().to_owned(), None));
                Ok(Recall::Fresh)
            }
        }
    }

    async fn remember(
        &mut self,
        key: &RequestKey,
        body: String,
        _: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.check()?;
        let id = (key.user(), key.scope(), key.key().to_owned());
        if self.work.keys.contains_key(&id) {
            return Ok(false);
        }
        self.work
            .keys
            .insert(id, (key.fingerprint().to_owned(), Some(body)));
        Ok(true)
    }

    async fn recall(&mut self, key: &RequestKey) -> Result<Recall, StoreError> {
        self.check()?;
        let id = (key.user(), key.scope(), key.key().to_owned());
        Ok(match self.work.keys.get(&id) {
            Some((fingerprint, Some(answer))) => Recall::of(key, fingerprint, answer.clone()),
            _ => Recall::Fresh,
        })
    }

    async fn answer(&mut self, key: &RequestKey, body: String) -> Result<(), StoreError> {
        self.check()?;
        let id = (key.user(), key.scope(), key.key().to_owned());
        let claimed =
            self.work.keys.get_mut(&id).ok_or_else(|| {
                StoreError::Unexpected(anyhow::anyhow!("the key was not claimed"))
            })?;
        claimed.1 = Some(body);
        Ok(())
    }
}

impl IssueTx for MemTx {
    async fn insert_winners(
        &mut self,
        winners: &[Winner],
        _: DateTime<Utc>,
    ) -> Result<Vec<IssuedCoupon>, RecordError> {
        let mut written = Vec::new();
        for w in winners {
            let taken = |c: &IssuedCoupon| c.coupon == w.coupon;
            if self.work.won.iter().any(|c| taken(c) && c.user == w.user) {
                return Err(RecordError::DuplicateUser);
            }
            if self
                .work
                .won
                .iter()
                .any(|c| taken(c) && c.number == w.number)
            {
                return Err(RecordError::DuplicateNumber);
            }
            let row = IssuedCoupon {
                id: UserCouponId(self.work.next_id()),
                coupon: w.coupon,
                user: w.user,
                number: w.number,
            };
            self.work.won.push(row.clone());
            written.push(row);
        }
        Ok(written)
    }
}

/// Only the request side of a redemption lives here (the step's own tests
/// use a smaller fake).
impl RedemptionTx for MemTx {
    async fn insert_job(&mut self, job: &Job, _: DateTime<Utc>) -> Result<(), StoreError> {
        self.check()?;
        self.work.jobs.insert(job.id, job.clone());
        Ok(())
    }

    async fn job(&mut self, id: uuid::Uuid) -> Result<Option<Job>, StoreError> {
        self.check()?;
        Ok(self.work.jobs.get(&id).cloned())
    }

    async fn redeemable(
        &mut self,
        _: UserCouponId,
    ) -> Result<Option<RedeemableCoupon>, StoreError> {
        Ok(None)
    }

    async fn mark_used(
        &mut self,
        _: UserCouponId,
        _: i64,
        _: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        Ok(false)
    }

    async fn pay_vendor(
        &mut self,
        _: VendorId,
        _: UserCouponId,
        _: uuid::Uuid,
        _: i64,
        _: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        Ok(false)
    }

    async fn finish_job(
        &mut self,
        job: uuid::Uuid,
        status: JobStatus,
        reason: Option<FailReason>,
        _: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.check()?;
        if let Some(job) = self.work.jobs.get_mut(&job) {
            job.status = status;
            job.reason = reason;
        }
        Ok(())
    }
}

impl OutboxWriter for MemTx {
    async fn append(&mut self, events: Vec<NewEvent>, _: DateTime<Utc>) -> Result<(), StoreError> {
        self.check()?;
        self.work.outbox.extend(events);
        Ok(())
    }
}

impl SeatTx for MemTx {
    async fn try_hold(
        &mut self,
        schedule: ScheduleId,
        seat: SeatId,
        user: UserId,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<HeldSeat>, StoreError> {
        self.check()?;
        if self
            .work
            .schedule_statuses
            .get(&schedule)
            .is_some_and(|(status, _)| *status != ScheduleStatus::OnSale)
        {
            return Ok(None);
        }
        let Some(found) = self
            .work
            .seats
            .get_mut(&seat)
            .filter(|s| s.schedule == schedule)
        else {
            return Ok(None);
        };
        let free = match found.state {
            SeatState::Available => true,
            SeatState::Held { until, .. } => until <= now,
            SeatState::Sold { .. } => false,
        };
        if !free {
            return Ok(None);
        }
        found.state = SeatState::Held {
            holder: user,
            until,
        };
        found.reservation = None;
        let (price, concert) = (found.price, found.concert);
        Ok(Some(HeldSeat {
            price,
            concert,
            // A schedule the test gave no start to starts in the far future.
            starts_at: self
                .work
                .shows
                .get(&schedule)
                .copied()
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
        }))
    }

    async fn exists(&mut self, schedule: ScheduleId, seat: SeatId) -> Result<bool, StoreError> {
        self.check()?;
        Ok(self
            .work
            .seats
            .get(&seat)
            .is_some_and(|s| s.schedule == schedule))
    }

    async fn attach(&mut self, seat: SeatId, reservation: ReservationId) -> Result<(), StoreError> {
        self.check()?;
        if let Some(s) = self.work.seats.get_mut(&seat) {
            s.reservation = Some(reservation);
        }
        Ok(())
    }

    async fn release(
        &mut self,
        seat: SeatId,
        reservation: ReservationId,
    ) -> Result<bool, StoreError> {
        self.check()?;
        if !self.work.held_by(seat, reservation) {
            return Ok(false);
        }
        let s = self.work.seats.get_mut(&seat).expect("checked above");
        s.state = SeatState::Available;
        s.reservation = None;
        Ok(true)
    }

    async fn extend(
        &mut self,
        seat: SeatId,
        reservation: ReservationId,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.check()?;
        if !self.work.held_by(seat, reservation) {
            return Ok(false);
        }
        let s = self.work.seats.get_mut(&seat).expect("checked above");
        if let SeatState::Held { holder, .. } = s.state {
            s.state = SeatState::Held { holder, until };
        }
        Ok(true)
    }

    async fn sell(&mut self, seat: SeatId, reservation: ReservationId) -> Result<bool, StoreError> {
        self.check()?;
        if !self.work.held_by(seat, reservation) {
            return Ok(false);
        }
        let s = self.work.seats.get_mut(&seat).expect("checked above");
        if let SeatState::Held { holder, .. } = s.state {
            s.state = SeatState::Sold { owner: holder };
        }
        Ok(true)
    }

    async fn unsell(
        &mut self,
        seat: SeatId,
        reservation: ReservationId,
    ) -> Result<bool, StoreError> {
        self.check()?;
        match self.work.seats.get_mut(&seat) {
            Some(s)
                if s.reservation == Some(reservation)
                    && matches!(s.state, SeatState::Sold { .. }) =>
            {
                s.state = SeatState::Available;
                s.reservation = None;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn schedule_status(
        &mut self,
        schedule: ScheduleId,
    ) -> Result<Option<(ScheduleStatus, DateTime<Utc>)>, StoreError> {
        self.check()?;
        if let Some(known) = self.work.schedule_statuses.get(&schedule) {
            return Ok(Some(*known));
        }
        Ok(self
            .work
            .seats
            .values()
            .any(|s| s.schedule == schedule)
            .then_some((ScheduleStatus::OnSale, DateTime::<Utc>::UNIX_EPOCH)))
    }

    async fn set_schedule_status(
        &mut self,
        schedule: ScheduleId,
        from: ScheduleStatus,
        to: ScheduleStatus,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        match self.schedule_status(schedule).await? {
            Some((status, _)) if status == from => {
                self.work.schedule_statuses.insert(schedule, (to, now));
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn starts_at(
        &mut self,
        schedule: ScheduleId,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.check()?;
        Ok(self.work.shows.get(&schedule).copied())
    }

    async fn free_seats(
        &mut self,
        schedule: ScheduleId,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        self.check()?;
        Ok(self
            .work
            .seats
            .values()
            .filter(|s| s.schedule == schedule)
            .filter(|s| match s.state {
                SeatState::Available => true,
                SeatState::Held { until, .. } => until <= now,
                SeatState::Sold { .. } => false,
            })
            .count() as u64)
    }
}

fn entry_of(place: &MemWaitlistPlace) -> WaitlistEntry {
    WaitlistEntry {
        id: place.id,
        schedule: place.schedule,
        user: place.user,
    }
}

impl WaitlistTx for MemTx {
    async fn join(
        &mut self,
        schedule: ScheduleId,
        user: UserId,
        _now: DateTime<Utc>,
    ) -> Result<Option<WaitlistEntry>, StoreError> {
        self.check()?;
        let work = &mut self.work;
        let existing = work
            .waitlist
            .iter()
            .position(|p| p.schedule == schedule && p.user == user);
        let place = match existing {
            Some(i) if work.waitlist[i].status == "waiting" => return Ok(None),
            Some(i) => {
                let mut place = work.waitlist.remove(i);
                place.status = "waiting";
                place.reservation = None;
                place
            }
            None => MemWaitlistPlace {
                id: work.next_id(),
                schedule,
                user,
                status: "waiting",
                reservation: None,
            },
        };
        let entry = entry_of(&place);
        work.waitlist.push(place);
        Ok(Some(entry))
    }

    async fn leave(
        &mut self,
        schedule: ScheduleId,
        user: UserId,
        _now: DateTime<Utc>,
    ) -> Result<Option<WaitlistEntry>, StoreError> {
        self.check()?;
        Ok(self
            .work
            .waitlist
            .iter_mut()
            .find(|p| p.schedule == schedule && p.user == user && p.status == "waiting")
            .map(|p| {
                p.status = "left";
                entry_of(p)
            }))
    }

    async fn waitlist_position(
        &mut self,
        schedule: ScheduleId,
        user: UserId,
    ) -> Result<Option<u64>, StoreError> {
        self.check()?;
        Ok(self
            .work
            .waiting(schedule)
            .iter()
            .position(|u| *u == user)
            .map(|i| i as u64 + 1))
    }

    async fn close_waiting(
        &mut self,
        schedule: ScheduleId,
        _now: DateTime<Utc>,
        max: u64,
    ) -> Result<Vec<WaitlistEntry>, StoreError> {
        self.check()?;
        Ok(self
            .work
            .waitlist
            .iter_mut()
            .filter(|p| p.schedule == schedule && p.status == "waiting")
            .take(max as usize)
            .map(|p| {
                p.status = "closed";
                entry_of(p)
            })
            .collect())
    }

    async fn next_waiting(
        &mut self,
        schedule: ScheduleId,
    ) -> Result<Option<WaitlistEntry>, StoreError> {
        self.check()?;
        Ok(self
            .work
            .waitlist
            .iter()
            .find(|p| p.schedule == schedule && p.status == "waiting")
            .map(entry_of))
    }

    async fn mark_offered(
        &mut self,
        entry: i64,
        reservation: ReservationId,
        _now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.check()?;
        Ok(self
            .work
            .waitlist
            .iter_mut()
            .find(|p| p.id == entry && p.status == "waiting")
            .map(|p| {
                p.status = "offered";
                p.reservation = Some(reservation);
            })
            .is_some())
    }
}

impl ReservationTx for MemTx {
    async fn lock_user_and_count_live(
        &mut self,
        user: UserId,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        self.check()?;
        self.work.user_locks.push(user);
        Ok(self
            .work
            .reservations
            .values()
            .filter(|r| r.user == user && r.is_live(now))
            .count() as u64)
    }

    async fn insert(
        &mut self,
        new: &NewReservation,
        _: DateTime<Utc>,
    ) -> Result<Reservation, StoreError> {
        self.check()?;
        let reservation = Reservation {
            id: ReservationId(self.work.next_id()),
            user: new.user,
            concert: new.concert,
            schedule: new.schedule,
            seat: new.seat,
            price: new.price,
            status: ReservationStatus::Held,
            expires_at: new.expires_at,
            payment: None,
        };
        self.work
            .reservations
            .insert(reservation.id, reservation.clone());
        Ok(reservation)
    }

    async fn get(&mut self, id: ReservationId) -> Result<Option<Reservation>, StoreError> {
        self.check()?;
        Ok(self.work.reservations.get(&id).cloned())
    }

    async fn held_on_seat(
        &mut self,
        seat: SeatId,
        except: ReservationId,
    ) -> Result<Vec<Reservation>, StoreError> {
        self.check()?;
        Ok(self
            .work
            .reservations
            .values()
            .filter(|r| r.seat == seat && r.id != except && r.status == ReservationStatus::Held)
            .cloned()
            .collect())
    }

    async fn transition(
        &mut self,
        id: ReservationId,
        change: Transition,
        _: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.check()?;
        let Some(r) = self.work.reservations.get_mut(&id) else {
            return Ok(false);
        };
        if !change.applies_to(r) {
            return Ok(false);
        }
        r.status = change.target();
        Ok(true)
    }

    async fn set_payment(
        &mut self,
        id: ReservationId,
        payment: PaymentId,
        _: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.check()?;
        if let Some(r) = self.work.reservations.get_mut(&id) {
            r.payment = Some(payment);
        }
        Ok(())
    }
}

impl WalletTx for MemTx {
    async fn credit(
        &mut self,
        user: UserId,
        amount: Points,
        kind: EntryKind,
        payment: Option<PaymentId>,
        now: DateTime<Utc>,
    ) -> Result<Option<Points>, StoreError> {
        self.check()?;
        let balance = self
            .work
            .balances
            .get(&user)
            .copied()
            .unwrap_or(Points::ZERO);
        let Some(after) = balance.checked_add(amount) else {
            return Ok(None);
        };
        self.work.balances.insert(user, after);
        self.work
            .ledger_row(user, kind, amount.value(), after, payment, now);
        Ok(Some(after))
    }

    async fn debit(
        &mut self,
        user: UserId,
        amount: Points,
        payment: PaymentId,
        now: DateTime<Utc>,
    ) -> Result<Option<Points>, StoreError> {
        self.check()?;
        let balance = self.work.balance(user);
        if balance < amount.value() {
            return Ok(None);
        }
        let after = Points::new(balance - amount.value()).expect("not negative");
        self.work.balances.insert(user, after);
        self.work.ledger_row(
            user,
            EntryKind::Payment,
            -amount.value(),
            after,
            Some(payment),
            now,
        );
        Ok(Some(after))
    }
}

impl PaymentTx for MemTx {
    async fn reopen_compensation(
        &mut self,
        id: i64,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.check()?;
        let world = &mut self.work;
        match world.compensations.get_mut(&id) {
            Some(c) if c.status == CompensationStatus::Failed => {
                c.status = CompensationStatus::Pending;
                c.attempts = 0;
                c.next_attempt_at = now;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn insert_payment(
        &mut self,
        new: &NewPayment,
        _: DateTime<Utc>,
    ) -> Result<Payment, StoreError> {
        self.check()?;
        let payment = Payment {
            id: PaymentId(self.work.next_id()),
            user: new.user,
            reservation: new.reservation,
            concert: new.concert,
            amount: new.amount,
            status: PaymentStatus::Paid,
        };
        self.work.payments.insert(payment.id, payment.clone());
        Ok(payment)
    }

    async fn payment(&mut self, id: PaymentId) -> Result<Option<Payment>, StoreError> {
        self.check()?;
        Ok(self.work.payments.get(&id).cloned())
    }

    async fn set_payment_status(
        &mut self,
        id: PaymentId,
        from: PaymentStatus,
        to: PaymentStatus,
        _: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.check()?;
        match self.work.payments.get_mut(&id) {
            Some(p) if p.status == from => {
                p.status = to;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn schedule_compensation(
        &mut self,
        saga: &str,
        step: &str,
        payment: PaymentId,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.check()?;
        let exists = self
            .work
            .compensations
            .values()
            .any(|c| c.saga == saga && c.step == step && c.payment == payment);
        if !exists {
            let id = self.work.next_id();
            self.work.compensations.insert(
                id,
                Compensation {
                    id,
                    saga: saga.into(),
                    step: step.into(),
                    payment,
                    status: CompensationStatus::Pending,
                    attempts: 0,
                    last_error: None,
                    next_attempt_at: now,
                    traceparent: crate::kernel::trace::current_traceparent(),
                },
            );
        }
        Ok(!exists)
    }

    async fn claim_compensation(
        &mut self,
        id: i64,
        _: DateTime<Utc>,
    ) -> Result<Option<Compensation>, StoreError> {
        self.check()?;
        Ok(self
            .work
            .compensations
            .get(&id)
            .filter(|c| c.status == CompensationStatus::Pending)
            .cloned())
    }

    async fn complete_compensation(&mut self, id: i64, _: DateTime<Utc>) -> Result<(), StoreError> {
        self.check()?;
        if let Some(c) = self.work.compensations.get_mut(&id) {
            c.status = CompensationStatus::Succeeded;
            c.attempts += 1;
            c.last_error = None;
        }
        Ok(())
    }
}

impl ReservationRepository for MemoryUow {
    async fn get(&self, id: ReservationId) -> Result<Option<Reservation>, ReservationError> {
        self.check()?;
        Ok(self.world().reservations.get(&id).cloned())
    }

    async fn unpaid_holds(
        &self,
        schedule: ScheduleId,
        max: u64,
    ) -> Result<Vec<ReservationId>, ReservationError> {
        self.check()?;
        Ok(self.unpaid_holds_of(schedule, max))
    }

    async fn of_user(
        &self,
        user: UserId,
        page: PageRequest,
    ) -> Result<Vec<Reservation>, ReservationError> {
        self.check()?;
        Ok(self
            .world()
            .reservations
            .values()
            .rev()
            .filter(|r| r.user == user && page.after.is_none_or(|a| r.id.value() < a))
            .take(page.fetch() as usize)
            .cloned()
            .collect())
    }

    async fn waitlisted_schedules(&self, max: u64) -> Result<Vec<ScheduleId>, ReservationError> {
        self.check()?;
        let mut ids: Vec<ScheduleId> = self
            .world()
            .waitlist
            .iter()
            .filter(|p| p.status == "waiting")
            .map(|p| p.schedule)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids.truncate(max as usize);
        Ok(ids)
    }

    async fn lapsed(
        &self,
        now: DateTime<Utc>,
        max: u64,
    ) -> Result<Vec<ReservationId>, ReservationError> {
        self.check()?;
        Ok(self
            .world()
            .reservations
            .values()
            .filter(|r| Transition::Lapse { now }.applies_to(r))
            .map(|r| r.id)
            .take(max as usize)
            .collect())
    }
}

impl SeatReads for MemoryUow {
    /// A schedule the test gave no start to starts in the far future.
    async fn starting_by(
        &self,
        schedules: &[ScheduleId],
        by: DateTime<Utc>,
    ) -> Result<Vec<ScheduleId>, StoreError> {
        self.check()?;
        let world = self.world();
        Ok(schedules
            .iter()
            .copied()
            .filter(|s| world.shows.get(s).is_some_and(|starts| *starts <= by))
            .collect())
    }

    async fn seat(&self, schedule: ScheduleId, seat: SeatId) -> Result<Option<Seat>, StoreError> {
        self.check()?;
        Ok(self
            .world()
            .seat_of(seat)
            .filter(|s| s.schedule_id == schedule))
    }
}

impl WalletRepository for MemoryUow {
    async fn balance(&self, user: UserId) -> Result<Points, WalletError> {
        self.check()?;
        Ok(self
            .world()
            .balances
            .get(&user)
            .copied()
            .unwrap_or(Points::ZERO))
    }

    async fn entries(
        &self,
        user: UserId,
        before: Option<i64>,
        limit: u64,
    ) -> Result<Vec<LedgerEntry>, WalletError> {
        self.check()?;
        Ok(self
            .world()
            .ledger
            .iter()
            .rev()
            .filter(|(u, e, _)| *u == user && before.is_none_or(|b| e.id < b))
            .take(limit as usize)
            .map(|(_, e, _)| e.clone())
            .collect())
    }
}

impl PaymentRepository for MemoryUow {
    async fn get(&self, id: PaymentId) -> Result<Option<Payment>, PaymentError> {
        self.check()?;
        Ok(self.world().payments.get(&id).cloned())
    }

    async fn compensations(
        &self,
        status: Option<CompensationStatus>,
        page: PageRequest,
    ) -> Result<Vec<Compensation>, PaymentError> {
        self.check()?;
        Ok(self
            .world()
            .compensations
            .values()
            .rev()
            .filter(|c| status.is_none_or(|s| c.status == s))
            .filter(|c| page.after.is_none_or(|after| c.id < after))
            .take(page.fetch() as usize)
            .cloned()
            .collect())
    }

    async fn of_user(&self, user: UserId, page: PageRequest) -> Result<Vec<Payment>, PaymentError> {
        self.check()?;
        Ok(self
            .world()
            .payments
            .values()
            .rev()
            .filter(|p| p.user == user && page.after.is_none_or(|a| p.id.value() < a))
            .take(page.fetch() as usize)
            .cloned()
            .collect())
    }

    async fn cancelling_schedules(
        &self,
        max: u64,
    ) -> Result<Vec<(ScheduleId, DateTime<Utc>)>, PaymentError> {
        self.check()?;
        let world = self.world();
        let mut found: Vec<_> = world
            .schedule_statuses
            .iter()
            .filter(|(_, (status, _))| *status == ScheduleStatus::Cancelling)
            .map(|(id, (_, at))| (*id, *at))
            .collect();
        found.sort();
        found.truncate(max as usize);
        Ok(found)
    }

    async fn unpaid_holds(
        &self,
        schedule: ScheduleId,
        max: u64,
    ) -> Result<Vec<ReservationId>, PaymentError> {
        self.check()?;
        Ok(self.unpaid_holds_of(schedule, max))
    }

    async fn tickets_to_refund(
        &self,
        schedule: ScheduleId,
        saga: &str,
        max: u64,
    ) -> Result<Vec<PaymentId>, PaymentError> {
        self.check()?;
        let world = self.world();
        Ok(world
            .payments
            .values()
            .filter(|p| {
                p.status == PaymentStatus::Confirmed
                    && world.schedule_of(p) == Some(schedule)
                    && !world
                        .compensations
                        .values()
                        .any(|c| c.saga == saga && c.payment == p.id)
            })
            .map(|p| p.id)
            .take(max as usize)
            .collect())
    }

    async fn unsettled(&self, schedule: ScheduleId, saga: &str) -> Result<u64, PaymentError> {
        self.check()?;
        let world = self.world();
        let paid = world
            .payments
            .values()
            .filter(|p| p.status == PaymentStatus::Paid && world.schedule_of(p) == Some(schedule))
            .count();
        let refunding = world
            .compensations
            .values()
            .filter(|c| {
                c.saga == saga
                    && c.status != CompensationStatus::Succeeded
                    && world
                        .payments
                        .get(&c.payment)
                        .is_some_and(|p| world.schedule_of(p) == Some(schedule))
            })
            .count();
        Ok((paid + refunding) as u64)
    }

    async fn schedule_ids(&self, page: PageRequest) -> Result<Vec<ScheduleId>, PaymentError> {
        self.check()?;
        let mut ids: Vec<ScheduleId> = self.world().seats.values().map(|s| s.schedule).collect();
        ids.sort();
        ids.dedup();
        Ok(ids
            .into_iter()
            .rev()
            .filter(|id| page.after.is_none_or(|a| id.value() < a))
            .take(page.fetch() as usize)
            .collect())
    }

    async fn cancellation_progress(
        &self,
        schedule: ScheduleId,
        saga: &str,
    ) -> Result<Option<CancellationProgress>, PaymentError> {
        self.check()?;
        let world = self.world();
        let seats: Vec<_> = world
            .seats
            .values()
            .filter(|s| s.schedule == schedule)
            .collect();
        if seats.is_empty() {
            return Ok(None);
        }
        let status = world
            .schedule_statuses
            .get(&schedule)
            .map_or(ScheduleStatus::OnSale, |(s, _)| *s);
        let refunds = |wanted: CompensationStatus| {
            world
                .compensations
                .values()
                .filter(|c| {
                    c.saga == saga
                        && c.status == wanted
                        && world
                            .payments
                            .get(&c.payment)
                            .is_some_and(|p| world.schedule_of(p) == Some(schedule))
                })
                .count() as u64
        };
        let failed = refunds(CompensationStatus::Failed);
        Ok(Some(CancellationProgress {
            schedule,
            status,
            seats: seats.len() as u64,
            sold: seats
                .iter()
                .filter(|s| matches!(s.state, SeatState::Sold { .. }))
                .count() as u64,
            refunds_pending: refunds(CompensationStatus::Pending) + failed,
            refunds_failed: failed,
            refunds_done: refunds(CompensationStatus::Succeeded),
        }))
    }

    async fn compensation(&self, id: i64) -> Result<Option<Compensation>, PaymentError> {
        self.check()?;
        Ok(self.world().compensations.get(&id).cloned())
    }

    async fn due_compensations(
        &self,
        now: DateTime<Utc>,
        max: u64,
    ) -> Result<Vec<DueCompensation>, PaymentError> {
        self.check()?;
        Ok(self
            .world()
            .compensations
            .values()
            .filter(|c| c.status == CompensationStatus::Pending && c.next_attempt_at <= now)
            .map(|c| DueCompensation {
                id: c.id,
                traceparent: c.traceparent.clone(),
            })
            .take(max as usize)
            .collect())
    }

    async fn record_failure(
        &self,
        id: i64,
        failure: &AfterFailure,
        event: NewEvent,
        _: DateTime<Utc>,
    ) -> Result<bool, PaymentError> {
        self.check()?;
        let mut guard = self.world();
        let world = &mut *guard;
        match world.compensations.get_mut(&id) {
            Some(c) if c.status == CompensationStatus::Pending => {
                c.attempts = failure.attempts;
                c.status = failure.status;
                c.next_attempt_at = failure.next_attempt_at;
                c.last_error = Some(failure.last_error.clone());
                world.outbox.push(event);
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

/// Counts relay wake-ups.
#[derive(Clone, Default)]
pub struct Wakes(Arc<Mutex<u32>>);

impl Wakes {
    pub fn count(&self) -> u32 {
        *self.0.lock().expect("wakes")
    }
}

impl RelayWake for Wakes {
    fn wake(&self) {
        *self.0.lock().expect("wakes") += 1;
    }
}

/// Collects raised alerts.
#[derive(Clone, Default)]
pub struct RaisedAlerts(Arc<Mutex<Vec<crate::kernel::alerts::NewAlert>>>);

impl RaisedAlerts {
    pub fn all(&self) -> Vec<crate::kernel::alerts::NewAlert> {
        self.0.lock().expect("alerts").clone()
    }
}

impl crate::kernel::alerts::AlertSink for RaisedAlerts {
    fn raise(&self, alert: crate::kernel::alerts::NewAlert) -> futures::future::BoxFuture<'_, ()> {
        self.0.lock().expect("alerts").push(alert);
        Box::pin(async {})
    }
}
