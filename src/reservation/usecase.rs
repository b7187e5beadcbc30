//! Seat holds and the reservation side of the payment saga. Every decision
//! is here: whether a hold is won, the hold limit, which lapsed hold a new
//! one replaces, and confirm-or-fail when a payment completes.

use chrono::{DateTime, TimeDelta, Utc};
use futures::{FutureExt, future::BoxFuture};

use super::{
    domain::{
        HoldPolicy, MAX_PAGE, NewReservation, NotPayable, OnPayment, Reservation, ReservationError,
        Transition, WaitlistEntry, frees_a_seat, may_join_waitlist,
    },
    ports::{ReservationRepository, ReservationTx, WaitlistTx},
};
use crate::{
    catalog::{
        domain::Availability,
        ports::{SeatReads, SeatTx},
    },
    kernel::{
        Clock, Page, PageRequest, PaymentId, ReservationId, ScheduleId, SeatId, Transaction,
        UnitOfWork, UserId,
        events::{
            EventEnvelope, NewEvent, PaymentCompleted, RelayWake, ReservationChanged,
            WaitlistChanged, types,
        },
        keyed::{ExpiringMemo, KeyedLocks},
        retry_on_conflict,
    },
    outbox::ports::{EventHandler, OutboxWriter},
};

/// How long this instance answers "taken" for a seat it just saw lost in
/// a race, without asking the database again.
const LOST_RACE_MEMORY: TimeDelta = TimeDelta::seconds(1);
/// Remembered seats kept at most.
const LOST_RACE_CAPACITY: usize = 10_000;

type SeatKey = (ScheduleId, SeatId);

/// How many waited-on schedules one pass of [`ReservationService::close_waitlists`]
/// looks at (the lowest ids first).
pub const WAITLISTS_CHECKED: u64 = 10_000;

#[derive(Clone)]
pub struct ReservationService<U, R, S, C, W> {
    uow: U,
    repo: R,
    seats: S,
    clock: C,
    wake: W,
    policy: HoldPolicy,
    /// Seats this instance just saw taken. When 1,000 buyers rush one
    /// seat, the first reads it and races the compare-and-set; everyone
    /// after is refused from here without a database round trip. Only a
    /// refusal is answered from it, only for a second, and a release on
    /// this instance forgets everything: at worst a buyer on another
    /// instance hears "taken" for a second after an early release.
    lost_races: ExpiringMemo<SeatKey, ()>,
    /// One hold attempt per seat at a time on this instance: the rest of a
    /// rush waits here, not in the database's row lock and connection pool.
    /// The compare-and-set in the database still decides between instances.
    gates: KeyedLocks<SeatKey>,
}

impl<U, R, S, C, W> ReservationService<U, R, S, C, W>
where
    U: UnitOfWork,
    U::Tx: SeatTx + ReservationTx + WaitlistTx + OutboxWriter,
    R: ReservationRepository,
    S: SeatReads,
    C: Clock,
    W: RelayWake,
{
    pub fn new(uow: U, repo: R, seats: S, clock: C, wake: W, policy: HoldPolicy) -> Self {
        Self {
            uow,
            repo,
            seats,
            clock,
            wake,
            policy,
            lost_races: ExpiringMemo::new(LOST_RACE_CAPACITY),
            gates: KeyedLocks::default(),
        }
    }

    /// Holds the seat for the user: exactly one of any number of
    /// concurrent requests for a free seat wins.
    pub async fn hold(
        &self,
        user: UserId,
        schedule: ScheduleId,
        seat: SeatId,
    ) -> Result<Reservation, ReservationError> {
        let key = (schedule, seat);
        if self.lost_races.is_fresh(&key, self.clock.now()) {
            return Err(ReservationError::SeatUnavailable);
        }
        let _turn = self.gates.lock(key).await;
        let now = self.clock.now();
        if self.lost_races.is_fresh(&key, now) {
            return Err(ReservationError::SeatUnavailable);
        }
        // A cheap look first: the losers of a visibly taken seat leave
        // without a transaction.
        match self.seats.seat(schedule, seat).await? {
            None => return Err(ReservationError::SeatNotFound { schedule, seat }),
            Some(found) if found.availability(now) != Availability::Available => {
                self.remember_taken(key, now);
                return Err(ReservationError::SeatUnavailable);
            }
            Some(_) => {}
        }
        let reservation = retry_on_conflict(|| self.attempt_hold(user, schedule, seat)).await?;
        self.wake.wake();
        Ok(reservation)
    }

    async fn attempt_hold(
        &self,
        user: UserId,
        schedule: ScheduleId,
        seat: SeatId,
    ) -> Result<Reservation, ReservationError> {
        let now = self.clock.now();
        let mut tx = self.uow.begin().await?;
        // The seat first (the lock order: seat, then reservations): under
        // a flood for one seat the losers learn it from this one statement.
        let held = tx
            .try_hold(schedule, seat, user, self.policy.until(now), now)
            .await?;
        // Lets a test hold the seat row's lock here while a payment races.
        fail::fail_point!("reservation::hold::after_seat");
        let Some(held) = held else {
            return Err(if tx.exists(schedule, seat).await? {
                self.remember_taken((schedule, seat), now);
                ReservationError::SeatUnavailable
            } else {
                ReservationError::SeatNotFound { schedule, seat }
            });
        };
        // Dropping the transaction gives the seat back.
        if self.policy.sales_closed(held.starts_at, now) {
            return Err(ReservationError::SalesClosed(schedule));
        }
        let live = tx.lock_user_and_count_live(user, now).await?;
        if !self.policy.allows_another(live) {
            // Dropping the transaction gives the seat back too.
            return Err(ReservationError::HoldLimit(self.policy.per_user_limit));
        }
        let (reservation, events) = record_hold(
            &mut tx,
            NewReservation {
                user,
                concert: held.concert,
                schedule,
                seat,
                price: held.price,
                expires_at: self.policy.until(now),
            },
            now,
        )
        .await?;
        tx.append(events, now).await?;
        tx.commit().await?;
        Ok(reservation)
    }

    /// Puts the user on the waitlist of a schedule on sale with no seat
    /// free; answers their place (1 = the next freed seat is theirs).
    pub async fn join_waitlist(
        &self,
        user: UserId,
        schedule: ScheduleId,
    ) -> Result<u64, ReservationError> {
        retry_on_conflict(|| self.join_once(user, schedule)).await
    }

    async fn join_once(&self, user: UserId, schedule: ScheduleId) -> Result<u64, ReservationError> {
        let now = self.clock.now();
        let mut tx = self.uow.begin().await?;
        // The write first; a refusal below drops the transaction with it.
        let joined = tx.join(schedule, user, now).await?;
        let Some((status, _)) = tx.schedule_status(schedule).await? else {
            return Err(ReservationError::ScheduleNotFound(schedule));
        };
        if tx
            .starts_at(schedule)
            .await?
            .is_some_and(|starts_at| self.policy.sales_closed(starts_at, now))
        {
            return Err(ReservationError::SalesClosed(schedule));
        }
        may_join_waitlist(schedule, status, tx.free_seats(schedule, now).await?)?;
        let Some(entry) = joined else {
            return Err(ReservationError::AlreadyWaitlisted);
        };
        let position = tx
            .waitlist_position(schedule, user)
            .await?
            .ok_or_else(|| anyhow::anyhow!("a place just joined is not waiting"))?;
        tx.append(
            vec![waitlist_event(types::WAITLIST_JOINED, &entry, None)],
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(position)
    }

    /// Takes the user off the schedule's waitlist.
    pub async fn leave_waitlist(
        &self,
        user: UserId,
        schedule: ScheduleId,
    ) -> Result<(), ReservationError> {
        retry_on_conflict(|| async {
            let now = self.clock.now();
            let mut tx = self.uow.begin().await?;
            let Some(entry) = tx.leave(schedule, user, now).await? else {
                return Err(ReservationError::NotWaitlisted);
            };
            tx.append(
                vec![waitlist_event(types::WAITLIST_LEFT, &entry, None)],
                now,
            )
            .await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// The user's place on the schedule's waitlist.
    pub async fn waitlist_position(
        &self,
        user: UserId,
        schedule: ScheduleId,
    ) -> Result<u64, ReservationError> {
        let mut tx = self.uow.begin().await?;
        tx.waitlist_position(schedule, user)
            .await?
            .ok_or(ReservationError::NotWaitlisted)
    }

    fn remember_taken(&self, key: SeatKey, now: DateTime<Utc>) {
        self.lost_races
            .remember(key, (), now + LOST_RACE_MEMORY, now);
    }

    /// The user's own reservation; someone else's answers not found.
    pub async fn get(
        &self,
        id: ReservationId,
        user: UserId,
    ) -> Result<Reservation, ReservationError> {
        match self.repo.get(id).await? {
            Some(reservation) if reservation.user == user => Ok(reservation),
            _ => Err(ReservationError::NotFound(id)),
        }
    }

    /// A page of the user's own reservations, newest first.
    pub async fn mine(
        &self,
        user: UserId,
        after: Option<i64>,
        limit: u64,
    ) -> Result<Page<Reservation>, ReservationError> {
        let page = PageRequest::new(after, limit, MAX_PAGE);
        let rows = self.repo.of_user(user, page).await?;
        Ok(Page::of(rows, page, |r| r.id.value()))
    }

    /// Gives an unpaid, unexpired hold back early.
    pub async fn release(&self, id: ReservationId, user: UserId) -> Result<(), ReservationError> {
        let reservation = self.get(id, user).await?;
        retry_on_conflict(|| self.release_once(&reservation, user)).await?;
        // Seats this instance remembered as taken may be free now.
        self.lost_races.clear();
        self.wake.wake();
        Ok(())
    }

    async fn release_once(
        &self,
        reservation: &Reservation,
        user: UserId,
    ) -> Result<(), ReservationError> {
        let now = self.clock.now();
        let release = Transition::Release { user, now };
        if !release.applies_to(reservation) {
            return Err(ReservationError::NotHeld(reservation.id));
        }
        let mut tx = self.uow.begin().await?;
        // Seat before reservation; if the hold is gone meanwhile, dropping
        // the transaction undoes the seat.
        tx.release(reservation.seat, reservation.id).await?;
        if !tx.transition(reservation.id, release, now).await? {
            return Err(ReservationError::NotHeld(reservation.id));
        }
        tx.append(vec![reservation.event(types::RESERVATION_RELEASED)], now)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// One sweep over lapsed holds (availability already treats them as
    /// free; this frees the seat rows and tells the user). Returns how
    /// many it expired.
    pub async fn sweep(&self, max: u64) -> Result<u64, ReservationError> {
        let mut expired = 0;
        for id in self.repo.lapsed(self.clock.now(), max).await? {
            if retry_on_conflict(|| self.expire_once(id)).await? {
                expired += 1;
            }
        }
        if expired > 0 {
            self.wake.wake();
        }
        Ok(expired)
    }

    /// Ends the waitlists of schedules whose sales have closed: every place
    /// still waiting leaves the line as `closed` with a `WaitlistClosed`
    /// event (its user is notified), `max` places per transaction. Looks
    /// at the first [`WAITLISTS_CHECKED`] schedules anyone waits on.
    /// Returns how many places it closed.
    pub async fn close_waitlists(&self, max: u64) -> Result<u64, ReservationError> {
        let waited_on = self.repo.waitlisted_schedules(WAITLISTS_CHECKED).await?;
        if waited_on.is_empty() {
            return Ok(0);
        }
        let by = self.policy.sales_closed_for_starts_by(self.clock.now());
        let mut closed = 0;
        for schedule in self.seats.starting_by(&waited_on, by).await? {
            loop {
                let n = retry_on_conflict(|| self.close_waitlist_batch(schedule, max)).await?;
                closed += n;
                if n < max.max(1) {
                    break;
                }
            }
        }
        if closed > 0 {
            metrics::counter!("waitlist_places_closed_total").increment(closed);
            self.wake.wake();
        }
        Ok(closed)
    }

    async fn close_waitlist_batch(
        &self,
        schedule: ScheduleId,
        max: u64,
    ) -> Result<u64, ReservationError> {
        let now = self.clock.now();
        let mut tx = self.uow.begin().await?;
        let places = tx.close_waiting(schedule, now, max.max(1)).await?;
        if places.is_empty() {
            return Ok(0);
        }
        let events = places
            .iter()
            .map(|place| waitlist_event(types::WAITLIST_CLOSED, place, None))
            .collect();
        tx.append(events, now).await?;
        tx.commit().await?;
        Ok(places.len() as u64)
    }

    async fn expire_once(&self, id: ReservationId) -> Result<bool, ReservationError> {
        let now = self.clock.now();
        let Some(reservation) = self.repo.get(id).await? else {
            return Ok(false);
        };
        let lapse = Transition::Lapse { now };
        // A payment may have claimed it since it was listed.
        if !lapse.applies_to(&reservation) {
            return Ok(false);
        }
        // A write first (the seat, in the lock order); the reservation's
        // compare-and-set below decides, and undoes the seat if it lost.
        let mut tx = self.uow.begin().await?;
        tx.release(reservation.seat, reservation.id).await?;
        if !tx.transition(reservation.id, lapse, now).await? {
            return Ok(false);
        }
        tx.append(vec![reservation.event(types::RESERVATION_EXPIRED)], now)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// How holds behave here (waitlist offers follow it too).
    pub fn policy(&self) -> HoldPolicy {
        self.policy
    }
}

/// Stores a hold on a seat just taken for it ([`SeatTx::try_hold`]) and
/// ties the seat to it; the lapsed hold it took the seat from (if any) is
/// over now. Returns the hold and the events to write.
async fn record_hold<T: ReservationTx + SeatTx>(
    tx: &mut T,
    new: NewReservation,
    now: DateTime<Utc>,
) -> Result<(Reservation, Vec<NewEvent>), crate::kernel::StoreError> {
    let reservation = tx.insert(&new, now).await?;
    tx.attach(new.seat, reservation.id).await?;
    let mut events = vec![reservation.event(types::RESERVATION_HELD)];
    for previous in tx.held_on_seat(new.seat, reservation.id).await? {
        if tx.transition(previous.id, Transition::Replace, now).await? {
            events.push(previous.event(types::RESERVATION_EXPIRED));
        }
    }
    Ok((reservation, events))
}

fn waitlist_event(
    event_type: &'static str,
    entry: &WaitlistEntry,
    offer: Option<&Reservation>,
) -> NewEvent {
    NewEvent::new(
        event_type,
        "waitlist",
        entry.id,
        &WaitlistChanged {
            entry_id: entry.id,
            schedule_id: entry.schedule.value(),
            user_id: entry.user.value(),
            reservation_id: offer.map(|r| r.id.value()),
            seat_id: offer.map(|r| r.seat.value()),
            expires_at: offer.map(|r| r.expires_at),
        },
    )
}

/// Offers the seat `freed` names to the first user on its schedule's
/// waitlist, inside the consumer's transaction (so the offer is made
/// exactly once, with the event's inbox row): a hold in their name until
/// `policy.until(now)`, their place leaves the line, and
/// `ReservationHeld` + `WaitlistOffered` are written. `None` (nothing
/// written) when nobody waits, or the seat is no longer free — someone
/// else took it, or the schedule went off sale — and the line waits for
/// the next freed seat. An offer is not refused for the hold limit: it is
/// the one seat the user waited for.
pub async fn offer_freed_seat<T: WaitlistTx + ReservationTx + SeatTx + OutboxWriter>(
    tx: &mut T,
    freed: &ReservationChanged,
    policy: HoldPolicy,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<Reservation>> {
    let schedule = ScheduleId(freed.schedule_id);
    let seat = SeatId(freed.seat_id);
    let Some(next) = tx.next_waiting(schedule).await? else {
        return Ok(None);
    };
    // Past the close of sales a freed seat is offered to nobody.
    if tx
        .starts_at(schedule)
        .await?
        .is_some_and(|starts_at| policy.sales_closed(starts_at, now))
    {
        return Ok(None);
    }
    let expires_at = policy.until(now);
    let Some(held) = tx
        .try_hold(schedule, seat, next.user, expires_at, now)
        .await?
    else {
        return Ok(None);
    };
    let (offer, mut events) = record_hold(
        tx,
        NewReservation {
            user: next.user,
            concert: held.concert,
            schedule,
            seat,
            price: held.price,
            expires_at,
        },
        now,
    )
    .await?;
    if !tx.mark_offered(next.id, offer.id, now).await? {
        anyhow::bail!(
            "waitlist place {} changed while a seat was offered to it",
            next.id
        );
    }
    events.push(waitlist_event(types::WAITLIST_OFFERED, &next, Some(&offer)));
    tx.append(events, now).await?;
    metrics::counter!("waitlist_offers_total").increment(1);
    Ok(Some(offer))
}

/// The waitlist's consumer: every seat freed again (a hold lapsed, given
/// back or withdrawn; a ticket cancelled) is offered to the next in line.
pub struct WaitlistOffers<C> {
    clock: C,
    policy: HoldPolicy,
}

impl<C> WaitlistOffers<C> {
    pub fn new(clock: C, policy: HoldPolicy) -> Self {
        Self { clock, policy }
    }
}

impl<T, C> EventHandler<T> for WaitlistOffers<C>
where
    T: WaitlistTx + ReservationTx + SeatTx + OutboxWriter,
    C: Clock,
{
    fn name(&self) -> &'static str {
        "waitlist"
    }

    fn handles(&self, event_type: &str) -> bool {
        frees_a_seat(event_type)
    }

    fn handle<'a>(
        &'a self,
        tx: &'a mut T,
        event: &'a EventEnvelope,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        async move {
            let freed: ReservationChanged = serde_json::from_value(event.payload.clone())?;
            offer_freed_seat(tx, &freed, self.policy, self.clock.now()).await?;
            Ok(())
        }
        .boxed()
    }
}

/// Claims the user's unexpired, unpaid hold for a payment, inside the
/// payment's transaction: the reservation module's part of `pay`, published
/// for the payment module. `hold` is the reservation as read before the
/// transaction (its user, seat, price and concert never change), so the
/// transaction's first statement is a write: the seat row first (the lock
/// order), which on SQLite also takes the write lock before anything is
/// read. The seat is kept held until `keep_seat_until` while the
/// confirmation travels the event bus. Of several concurrent payments for
/// one hold exactly one gets past here.
pub async fn claim_for_payment<T: ReservationTx + SeatTx>(
    tx: &mut T,
    hold: &Reservation,
    user: UserId,
    keep_seat_until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Result<(), NotPayable>, crate::kernel::StoreError> {
    if hold.user != user {
        return Ok(Err(NotPayable::NotFound));
    }
    // Lets a test stretch the moment before the payment locks anything.
    fail::fail_point!("reservation::claim::before_seat");
    let kept = tx.extend(hold.seat, hold.id, keep_seat_until).await?;
    if !kept
        || !tx
            .transition(hold.id, Transition::ClaimForPayment { user, now }, now)
            .await?
    {
        let current = tx.get(hold.id).await?.unwrap_or_else(|| hold.clone());
        return Ok(Err(current.why_not_payable(user)));
    }
    Ok(Ok(()))
}

/// Records the payment on the hold [`claim_for_payment`] claimed.
pub async fn mark_paid<T: ReservationTx>(
    tx: &mut T,
    id: ReservationId,
    payment: PaymentId,
    now: DateTime<Utc>,
) -> Result<(), crate::kernel::StoreError> {
    tx.set_payment(id, payment, now).await
}

/// The reservation's saga step on `PaymentCompleted`: sell the held seat
/// and confirm — or, when the hold was lost, emit
/// `ReservationConfirmationFailed` so the payment is refunded.
pub struct ConfirmOnPayment<C> {
    clock: C,
}

impl<C> ConfirmOnPayment<C> {
    pub fn new(clock: C) -> Self {
        Self { clock }
    }
}

/// What the confirmation step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmation {
    Confirmed,
    Failed,
    AlreadyConfirmed,
}

/// Confirm-or-fail, inside the consumer's transaction.
pub async fn confirm_payment<T: ReservationTx + SeatTx + OutboxWriter>(
    tx: &mut T,
    payment: &PaymentCompleted,
    now: DateTime<Utc>,
) -> anyhow::Result<Confirmation> {
    let id = ReservationId(payment.reservation_id);
    let paid_by = PaymentId(payment.payment_id);
    let Some(reservation) = tx.get(id).await? else {
        anyhow::bail!(
            "payment {} names unknown reservation {}",
            payment.payment_id,
            payment.reservation_id
        );
    };
    let decision = reservation.on_payment(paid_by);
    let reservation = Reservation {
        // The event names the payment even if the row lost it.
        payment: Some(paid_by),
        ..reservation
    };
    let outcome = match decision {
        OnPayment::AlreadyConfirmed => return Ok(Confirmation::AlreadyConfirmed),
        OnPayment::SellSeat if tx.sell(reservation.seat, id).await? => {
            let confirm = Transition::Confirm { payment: paid_by };
            if !tx.transition(id, confirm, now).await? {
                // Rolled back and redelivered: the next attempt sees why.
                anyhow::bail!("reservation {id} changed while its seat was being sold");
            }
            metrics::counter!("reservations_confirmed_total").increment(1);
            Confirmation::Confirmed
        }
        OnPayment::SellSeat | OnPayment::Fail => {
            tx.transition(id, Transition::FailConfirmation, now).await?;
            metrics::counter!("reservation_confirmations_failed_total").increment(1);
            Confirmation::Failed
        }
    };
    let event_type = match outcome {
        Confirmation::Confirmed => types::RESERVATION_CONFIRMED,
        _ => types::RESERVATION_CONFIRMATION_FAILED,
    };
    tx.append(vec![reservation.event(event_type)], now).await?;
    Ok(outcome)
}

/// An unpaid hold on a cancelled schedule ends, expired or not: its seat is
/// freed and `ReservationReleased` written. False (nothing written) when it
/// is no unpaid hold any more (paid meanwhile: the saga settles it).
pub async fn withdraw_hold<T: ReservationTx + SeatTx + OutboxWriter>(
    tx: &mut T,
    id: ReservationId,
    now: DateTime<Utc>,
) -> anyhow::Result<bool> {
    let Some(hold) = tx.get(id).await? else {
        return Ok(false);
    };
    if !Transition::Withdraw.applies_to(&hold) {
        return Ok(false);
    }
    // Seat before reservation; a seat another hold took over is not ours
    // to free.
    tx.release(hold.seat, id).await?;
    if !tx.transition(id, Transition::Withdraw, now).await? {
        anyhow::bail!("hold {id} changed while it was being withdrawn");
    }
    tx.append(vec![hold.event(types::RESERVATION_RELEASED)], now)
        .await?;
    Ok(true)
}

/// A cancelled ticket, in the refund's transaction: the confirmed
/// reservation `payment` bought ends `released` and its seat goes back on
/// sale, with `TicketCancelled`. False (and nothing written) when it is not
/// that payment's ticket any more, so a repeated refund changes nothing.
pub async fn cancel_ticket<T: ReservationTx + SeatTx + OutboxWriter>(
    tx: &mut T,
    id: ReservationId,
    payment: PaymentId,
    now: DateTime<Utc>,
) -> anyhow::Result<bool> {
    let Some(ticket) = tx.get(id).await? else {
        anyhow::bail!("payment {payment} names unknown reservation {id}");
    };
    let cancel = Transition::Cancel { payment };
    if !cancel.applies_to(&ticket) {
        return Ok(false);
    }
    // Seat before reservation, as everywhere.
    if !tx.unsell(ticket.seat, id).await? {
        anyhow::bail!("the seat of ticket {id} is not sold to it");
    }
    if !tx.transition(id, cancel, now).await? {
        anyhow::bail!("ticket {id} changed while it was being cancelled");
    }
    metrics::counter!("tickets_cancelled_total").increment(1);
    tx.append(vec![ticket.event(types::TICKET_CANCELLED)], now)
        .await?;
    Ok(true)
}

impl<T, C> EventHandler<T> for ConfirmOnPayment<C>
where
    T: ReservationTx + SeatTx + OutboxWriter,
    C: Clock,
{
    fn name(&self) -> &'static str {
        "reservations"
    }

    fn handles(&self, event_type: &str) -> bool {
        event_type == types::PAYMENT_COMPLETED
    }

    fn handle<'a>(
        &'a self,
        tx: &'a mut T,
        event: &'a EventEnvelope,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        async move {
            let payment: PaymentCompleted = serde_json::from_value(event.payload.clone())?;
            confirm_payment(tx, &payment, self.clock.now()).await?;
            Ok(())
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;
    use crate::{
        catalog::domain::SeatState,
        kernel::{CONFLICT_ATTEMPTS, ConcertId, ManualClock, Points, events::NewEvent},
        reservation::domain::ReservationStatus,
        testing::{MemoryUow, Wakes},
    };

    const SCHEDULE: ScheduleId = ScheduleId(100);
    const ALICE: UserId = UserId(1);
    const BOB: UserId = UserId(2);

    type Service = ReservationService<MemoryUow, MemoryUow, MemoryUow, ManualClock, Wakes>;

    struct Harness {
        service: Service,
        store: MemoryUow,
        clock: ManualClock,
        wakes: Wakes,
        seats: Vec<SeatId>,
    }

    fn harness(seats: u32, limit: u32) -> Harness {
        let store = MemoryUow::default();
        let seats = (1..=seats)
            .map(|n| store.world().add_seat(SCHEDULE, ConcertId(7), n, 1_000))
            .collect();
        let clock = ManualClock::new(Utc::now());
        let wakes = Wakes::default();
        let service = ReservationService::new(
            store.clone(),
            store.clone(),
            store.clone(),
            clock.clone(),
            wakes.clone(),
            HoldPolicy {
                hold_minutes: 5,
                per_user_limit: limit,
                sales_close_before_minutes: 60,
            },
        );
        Harness {
            service,
            store,
            clock,
            wakes,
            seats,
        }
    }

    impl Harness {
        fn events(&self) -> Vec<&'static str> {
            self.store.world().event_types()
        }

        fn seat(&self, seat: SeatId) -> SeatState {
            self.store.world().seats[&seat].state
        }

        fn status(&self, id: ReservationId) -> ReservationStatus {
            self.store.world().reservations[&id].status
        }

        fn pay(&self, id: ReservationId) {
            self.store
                .world()
                .reservations
                .get_mut(&id)
                .expect("a reservation")
                .payment = Some(PaymentId(99));
        }
    }

    #[tokio::test]
    async fn buyers_list_their_own_reservations_newest_first_in_pages() {
        let h = harness(5, 10);
        let mut alice = Vec::new();
        for seat in &h.seats[..3] {
            alice.push(h.service.hold(ALICE, SCHEDULE, *seat).await.unwrap().id);
        }
        let bob = h.service.hold(BOB, SCHEDULE, h.seats[3]).await.unwrap().id;
        h.service.release(alice[1], ALICE).await.unwrap();
        let ids = |page: &Page<Reservation>| page.items.iter().map(|r| r.id).collect::<Vec<_>>();

        let first = h.service.mine(ALICE, None, 2).await.unwrap();
        assert_eq!(ids(&first), vec![alice[2], alice[1]]);
        assert_eq!(first.next_cursor, Some(alice[1].value()));
        assert_eq!(
            first.items[1].status,
            ReservationStatus::Released,
            "a released hold is still listed"
        );
        let second = h.service.mine(ALICE, first.next_cursor, 2).await.unwrap();
        assert_eq!(ids(&second), vec![alice[0]]);
        assert_eq!(second.next_cursor, None);
        assert_eq!(
            ids(&h.service.mine(BOB, None, 20).await.unwrap()),
            vec![bob]
        );
        assert_eq!(
            ids(&h.service.mine(ALICE, None, 0).await.unwrap()),
            vec![alice[2]],
            "a page holds at least one"
        );
        h.store.set_down(true);
        assert!(matches!(
            h.service.mine(ALICE, None, 20).await,
            Err(ReservationError::Unavailable(_))
        ));
    }

    #[tokio::test]
    async fn a_cancelled_ticket_frees_its_seat_once_and_only_for_its_payment() {
        let h = harness(1, 4);
        let r = h.service.hold(ALICE, SCHEDULE, h.seats[0]).await.unwrap();
        h.pay(r.id);
        let mut tx = h.store.begin().await.unwrap();
        confirm_payment(&mut tx, &completed(&r, PaymentId(99)), h.clock.now())
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert!(matches!(h.seat(h.seats[0]), SeatState::Sold { .. }));

        let mut tx = h.store.begin().await.unwrap();
        assert!(
            !cancel_ticket(&mut tx, r.id, PaymentId(98), h.clock.now())
                .await
                .unwrap(),
            "another payment's refund leaves the ticket alone"
        );
        assert!(
            cancel_ticket(&mut tx, r.id, PaymentId(99), h.clock.now())
                .await
                .unwrap()
        );
        tx.commit().await.unwrap();
        assert_eq!(h.status(r.id), ReservationStatus::Released);
        assert_eq!(h.seat(h.seats[0]), SeatState::Available);
        assert_eq!(h.events().last(), Some(&types::TICKET_CANCELLED));

        let mut tx = h.store.begin().await.unwrap();
        assert!(
            !cancel_ticket(&mut tx, r.id, PaymentId(99), h.clock.now())
                .await
                .unwrap(),
            "a second refund finds nothing to cancel"
        );
        tx.commit().await.unwrap();
        let cancelled = h
            .events()
            .iter()
            .filter(|e| **e == types::TICKET_CANCELLED)
            .count();
        assert_eq!(cancelled, 1);
        // The seat is on sale again.
        h.service.hold(BOB, SCHEDULE, h.seats[0]).await.unwrap();
    }

    fn completed(r: &Reservation, payment: PaymentId) -> PaymentCompleted {
        PaymentCompleted {
            payment_id: payment.value(),
            reservation_id: r.id.value(),
            user_id: r.user.value(),
            amount: r.price.value(),
            concert_id: r.concert.value(),
        }
    }

    #[tokio::test]
    async fn a_free_seat_is_held_with_its_event_and_wakes_the_relay() {
        let h = harness(1, 4);
        let r = h.service.hold(ALICE, SCHEDULE, h.seats[0]).await.unwrap();
        assert_eq!(r.status, ReservationStatus::Held);
        assert_eq!(r.price, Points::new(1_000).unwrap());
        assert_eq!(r.expires_at, h.clock.now() + TimeDelta::minutes(5));
        assert!(matches!(h.seat(h.seats[0]), SeatState::Held { holder, .. } if holder == ALICE));
        assert_eq!(h.store.world().seats[&h.seats[0]].reservation, Some(r.id));
        assert_eq!(h.events(), vec![types::RESERVATION_HELD]);
        assert_eq!(h.wakes.count(), 1);
    }

    #[tokio::test]
    async fn a_taken_seat_is_refused_and_the_rush_after_it_is_answered_from_memory() {
        let h = harness(1, 4);
        h.service.hold(ALICE, SCHEDULE, h.seats[0]).await.unwrap();
        assert!(matches!(
            h.service.hold(BOB, SCHEDULE, h.seats[0]).await,
            Err(ReservationError::SeatUnavailable)
        ));
        // The store is gone, yet the remembered loss still answers.
        h.store.set_down(true);
        assert!(matches!(
            h.service.hold(BOB, SCHEDULE, h.seats[0]).await,
            Err(ReservationError::SeatUnavailable)
        ));
        // A second later the memory is gone and the store is asked again.
        h.clock.advance(TimeDelta::seconds(2));
        assert!(matches!(
            h.service.hold(BOB, SCHEDULE, h.seats[0]).await,
            Err(ReservationError::Unavailable(_))
        ));
        assert_eq!(h.store.world().reservations.len(), 1);
        assert_eq!(h.wakes.count(), 1);
    }

    #[tokio::test]
    async fn an_unknown_seat_is_not_found_and_nothing_is_written() {
        let h = harness(1, 4);
        for (schedule, seat) in [(SCHEDULE, SeatId(999)), (ScheduleId(5), h.seats[0])] {
            assert!(matches!(
                h.service.hold(ALICE, schedule, seat).await,
                Err(ReservationError::SeatNotFound { .. })
            ));
        }
        assert!(h.events().is_empty());
        assert_eq!(h.store.commits(), 0);
    }

    #[tokio::test]
    async fn the_hold_limit_refuses_one_more_and_gives_the_seat_back() {
        let h = harness(3, 2);
        h.service.hold(ALICE, SCHEDULE, h.seats[0]).await.unwrap();
        h.service.hold(ALICE, SCHEDULE, h.seats[1]).await.unwrap();
        assert!(matches!(
            h.service.hold(ALICE, SCHEDULE, h.seats[2]).await,
            Err(ReservationError::HoldLimit(2))
        ));
        assert_eq!(h.seat(h.seats[2]), SeatState::Available);
        assert_eq!(h.events().len(), 2);
        // Another user is not limited by Alice's holds; every committed
        // hold counted under its user's lock.
        h.service.hold(BOB, SCHEDULE, h.seats[2]).await.unwrap();
        assert_eq!(h.store.world().user_locks, vec![ALICE, ALICE, BOB]);
    }

    #[tokio::test]
    async fn an_expired_hold_no_longer_counts_against_the_limit_but_a_paid_one_does() {
        let h = harness(3, 1);
        let first = h.service.hold(ALICE, SCHEDULE, h.seats[0]).await.unwrap();
        h.clock.advance(TimeDelta::minutes(6));
        let second = h.service.hold(ALICE, SCHEDULE, h.seats[1]).await.unwrap();
        assert_ne!(first.id, second.id);
        h.pay(second.id);
        h.clock.advance(TimeDelta::minutes(6));
        assert!(matches!(
            h.service.hold(ALICE, SCHEDULE, h.seats[2]).await,
            Err(ReservationError::HoldLimit(1))
        ));
    }

    #[tokio::test]
    async fn a_lapsed_hold_is_replaced_and_expired_in_the_same_transaction() {
        let h = harness(1, 4);
        let old = h.service.hold(ALICE, SCHEDULE, h.seats[0]).await.unwrap();
        h.clock.advance(TimeDelta::minutes(5));
        let new = h.service.hold(BOB, SCHEDULE, h.seats[0]).await.unwrap();
        assert_eq!(h.status(old.id), ReservationStatus::Expired);
        assert_eq!(h.status(new.id), ReservationStatus::Held);
        assert_eq!(
            h.events(),
            vec![
                types::RESERVATION_HELD,
                types::RESERVATION_HELD,
                types::RESERVATION_EXPIRED
            ]
        );
    }

    #[tokio::test]
    async fn a_paid_lapsed_hold_is_not_expired_by_the_hold_that_took_its_seat() {
        let h = harness(1, 4);
        let paid = h.service.hold(ALICE, SCHEDULE, h.seats[0]).await.unwrap();
        h.pay(paid.id);
        h.clock.advance(TimeDelta::minutes(6));
        h.service.hold(BOB, SCHEDULE, h.seats[0]).await.unwrap();
        assert_eq!(
            h.status(paid.id),
            ReservationStatus::Held,
            "its confirmation decides"
        );
    }

    #[tokio::test]
    async fn a_conflict_is_retried_and_too_many_answer_conflict_with_nothing_written() {
        let h = harness(2, 4);
        h.store.conflict_next_commits(2);
        h.service.hold(ALICE, SCHEDULE, h.seats[0]).await.unwrap();
        assert_eq!(h.events(), vec![types::RESERVATION_HELD]);

        h.store.conflict_next_commits(CONFLICT_ATTEMPTS);
        assert!(matches!(
            h.service.hold(BOB, SCHEDULE, h.seats[1]).await,
            Err(ReservationError::Conflict(_))
        ));
        assert_eq!(h.seat(h.seats[1]), SeatState::Available);
        assert_eq!(h.events().len(), 1);
    }

    #[tokio::test]
    async fn a_user_releases_their_own_live_hold_only() {
        let h = harness(3, 4);
        let mine = h.service.hold(ALICE, SCHEDULE, h.seats[0]).await.unwrap();
        assert!(matches!(
            h.service.release(mine.id, BOB).await,
            Err(ReservationError::NotFound(_))
        ));
        h.service.release(mine.id, ALICE).await.unwrap();
        assert_eq!(h.status(mine.id), ReservationStatus::Released);
        assert_eq!(h.seat(h.seats[0]), SeatState::Available);
        assert_eq!(h.events().last(), Some(&types::RESERVATION_RELEASED));
        assert!(matches!(
            h.service.release(mine.id, ALICE).await,
            Err(ReservationError::NotHeld(_))
        ));

        let paid = h.service.hold(ALICE, SCHEDULE, h.seats[1]).await.unwrap();
        h.pay(paid.id);
        let lapsed = h.service.hold(ALICE, SCHEDULE, h.seats[2]).await.unwrap();
        h.clock.advance(TimeDelta::minutes(5));
        for id in [paid.id, lapsed.id] {
            assert!(matches!(
                h.service.release(id, ALICE).await,
                Err(ReservationError::NotHeld(_))
            ));
        }
        assert!(matches!(
            h.service.release(ReservationId(12345), ALICE).await,
            Err(ReservationError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn a_release_forgets_the_seats_this_instance_saw_taken() {
        let h = harness(1, 4);
        let mine = h.service.hold(ALICE, SCHEDULE, h.seats[0]).await.unwrap();
        assert!(h.service.hold(BOB, SCHEDULE, h.seats[0]).await.is_err());
        h.service.release(mine.id, ALICE).await.unwrap();
        h.service.hold(BOB, SCHEDULE, h.seats[0]).await.unwrap();
    }

    #[tokio::test]
    async fn the_sweeper_expires_lapsed_unpaid_holds_only() {
        let h = harness(3, 4);
        let lapsing = h.service.hold(ALICE, SCHEDULE, h.seats[0]).await.unwrap();
        let paid = h.service.hold(ALICE, SCHEDULE, h.seats[1]).await.unwrap();
        h.pay(paid.id);
        h.clock.advance(TimeDelta::minutes(5));
        let fresh = h.service.hold(BOB, SCHEDULE, h.seats[2]).await.unwrap();
        let wakes = h.wakes.count();
        assert_eq!(h.service.sweep(10).await.unwrap(), 1);
        assert_eq!(h.status(lapsing.id), ReservationStatus::Expired);
        assert_eq!(h.seat(h.seats[0]), SeatState::Available);
        assert_eq!(h.status(paid.id), ReservationStatus::Held);
        assert_eq!(h.status(fresh.id), ReservationStatus::Held);
        assert_eq!(h.events().last(), Some(&types::RESERVATION_EXPIRED));
        assert_eq!(h.wakes.count(), wakes + 1);
        assert_eq!(h.service.sweep(10).await.unwrap(), 0);
        assert_eq!(
            h.wakes.count(),
            wakes + 1,
            "nothing expired, nothing to relay"
        );
    }

    #[tokio::test]
    async fn a_paid_hold_is_confirmed_and_its_seat_sold_once() {
        let h = harness(1, 4);
        let r = h.service.hold(ALICE, SCHEDULE, h.seats[0]).await.unwrap();
        h.pay(r.id);
        let event = completed(&r, PaymentId(99));
        let mut tx = h.store.begin().await.unwrap();
        let outcome = confirm_payment(&mut tx, &event, h.clock.now())
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(outcome, Confirmation::Confirmed);
        assert_eq!(h.status(r.id), ReservationStatus::Confirmed);
        assert_eq!(h.seat(h.seats[0]), SeatState::Sold { owner: ALICE });
        let last: NewEvent = h.store.world().outbox.last().cloned().unwrap();
        assert_eq!(last.event_type, types::RESERVATION_CONFIRMED);
        assert_eq!(last.payload["paymentId"], 99);

        let mut tx = h.store.begin().await.unwrap();
        assert_eq!(
            confirm_payment(&mut tx, &event, h.clock.now())
                .await
                .unwrap(),
            Confirmation::AlreadyConfirmed
        );
        tx.commit().await.unwrap();
        assert_eq!(h.events().len(), 2, "a redelivery writes nothing");
    }

    #[tokio::test]
    async fn a_paid_hold_whose_seat_went_to_someone_else_fails_confirmation() {
        let h = harness(1, 4);
        let r = h.service.hold(ALICE, SCHEDULE, h.seats[0]).await.unwrap();
        h.pay(r.id);
        h.clock.advance(TimeDelta::minutes(6));
        h.service.hold(BOB, SCHEDULE, h.seats[0]).await.unwrap();
        let mut tx = h.store.begin().await.unwrap();
        let outcome = confirm_payment(&mut tx, &completed(&r, PaymentId(99)), h.clock.now())
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(outcome, Confirmation::Failed);
        assert_eq!(h.status(r.id), ReservationStatus::Expired);
        assert!(matches!(h.seat(h.seats[0]), SeatState::Held { holder, .. } if holder == BOB));
        assert_eq!(
            h.events().last(),
            Some(&types::RESERVATION_CONFIRMATION_FAILED)
        );
    }

    #[tokio::test]
    async fn a_payment_for_a_hold_it_does_not_own_fails_and_an_unknown_one_is_an_error() {
        let h = harness(1, 4);
        let r = h.service.hold(ALICE, SCHEDULE, h.seats[0]).await.unwrap();
        h.pay(r.id);
        let mut tx = h.store.begin().await.unwrap();
        assert_eq!(
            confirm_payment(&mut tx, &completed(&r, PaymentId(5)), h.clock.now())
                .await
                .unwrap(),
            Confirmation::Failed
        );
        let unknown = PaymentCompleted {
            reservation_id: 4242,
            ..completed(&r, PaymentId(99))
        };
        assert!(
            confirm_payment(&mut tx, &unknown, h.clock.now())
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn claiming_for_payment_tells_why_a_hold_cannot_be_paid() {
        let h = harness(3, 4);
        let now = h.clock.now();
        let keep = now + TimeDelta::minutes(10);
        let r = h.service.hold(ALICE, SCHEDULE, h.seats[0]).await.unwrap();
        let mut tx = h.store.begin().await.unwrap();
        assert_eq!(
            claim_for_payment(&mut tx, &r, BOB, keep, now)
                .await
                .unwrap(),
            Err(NotPayable::NotFound)
        );
        claim_for_payment(&mut tx, &r, ALICE, keep, now)
            .await
            .unwrap()
            .unwrap();
        mark_paid(&mut tx, r.id, PaymentId(1), now).await.unwrap();
        assert_eq!(
            claim_for_payment(&mut tx, &r, ALICE, keep, now)
                .await
                .unwrap(),
            Err(NotPayable::AlreadyPaid)
        );
        drop(tx);
        let later = now + TimeDelta::minutes(5);
        let mut tx = h.store.begin().await.unwrap();
        assert_eq!(
            claim_for_payment(&mut tx, &r, ALICE, keep, later)
                .await
                .unwrap(),
            Err(NotPayable::Expired)
        );
        assert!(
            matches!(h.seat(h.seats[0]), SeatState::Held { until, .. } if until == r.expires_at),
            "a refused claim keeps nothing"
        );
    }

    // --- waitlist ---

    const CAROL: UserId = UserId(3);

    impl Harness {
        /// Holds every seat for ALICE (the schedule is sold out).
        async fn sell_out(&self) -> Vec<ReservationId> {
            let mut holds = Vec::new();
            for seat in &self.seats {
                holds.push(self.service.hold(ALICE, SCHEDULE, *seat).await.unwrap().id);
            }
            holds
        }

        /// Runs the waitlist's consumer on the last event of `event_type`
        /// written, in its own transaction, as the bus would deliver it.
        async fn deliver_last(&self, event_type: &str) -> Option<Reservation> {
            let payload = self
                .store
                .world()
                .outbox
                .iter()
                .rev()
                .find(|e| e.event_type == event_type)
                .expect("the event was written")
                .payload
                .clone();
            let freed: ReservationChanged = serde_json::from_value(payload).unwrap();
            let mut tx = self.store.begin().await.unwrap();
            let offer = offer_freed_seat(&mut tx, &freed, self.service.policy(), self.clock.now())
                .await
                .unwrap();
            tx.commit().await.unwrap();
            offer
        }

        fn waiting(&self) -> Vec<UserId> {
            self.store.world().waiting(SCHEDULE)
        }
    }

    #[tokio::test]
    async fn the_waitlist_takes_people_only_while_nothing_is_free_one_place_each() {
        let h = harness(2, 10);
        assert!(matches!(
            h.service.join_waitlist(BOB, SCHEDULE).await,
            Err(ReservationError::SeatsAvailable(2))
        ));
        assert!(h.waiting().is_empty(), "a refusal leaves no place behind");
        h.sell_out().await;
        assert_eq!(h.service.join_waitlist(BOB, SCHEDULE).await.unwrap(), 1);
        assert_eq!(h.service.join_waitlist(CAROL, SCHEDULE).await.unwrap(), 2);
        assert!(matches!(
            h.service.join_waitlist(BOB, SCHEDULE).await,
            Err(ReservationError::AlreadyWaitlisted)
        ));
        assert_eq!(h.waiting(), [BOB, CAROL]);
        assert_eq!(
            h.service.waitlist_position(CAROL, SCHEDULE).await.unwrap(),
            2
        );
        let joined = h
            .events()
            .into_iter()
            .filter(|e| *e == types::WAITLIST_JOINED)
            .count();
        assert_eq!(joined, 2);
        assert!(matches!(
            h.service.join_waitlist(BOB, ScheduleId(404)).await,
            Err(ReservationError::ScheduleNotFound(ScheduleId(404)))
        ));
    }

    #[tokio::test]
    async fn a_cancelled_schedule_has_no_waitlist() {
        let h = harness(1, 10);
        h.sell_out().await;
        h.store.world().schedule_statuses.insert(
            SCHEDULE,
            (
                crate::catalog::domain::ScheduleStatus::Cancelling,
                h.clock.now(),
            ),
        );
        assert!(matches!(
            h.service.join_waitlist(BOB, SCHEDULE).await,
            Err(ReservationError::NotOnSale(SCHEDULE))
        ));
    }

    #[tokio::test]
    async fn no_hold_is_taken_once_sales_close_and_the_seat_stays_free() {
        // Sales close an hour before the show (the harness's policy).
        let h = harness(1, 10);
        h.store
            .world()
            .shows
            .insert(SCHEDULE, h.clock.now() + TimeDelta::minutes(59));
        assert!(matches!(
            h.service.hold(ALICE, SCHEDULE, h.seats[0]).await,
            Err(ReservationError::SalesClosed(SCHEDULE))
        ));
        assert_eq!(h.seat(h.seats[0]), SeatState::Available, "rolled back");
        assert!(h.events().is_empty());
    }

    #[tokio::test]
    async fn when_sales_close_every_place_still_waiting_ends_with_an_event_each() {
        let h = harness(1, 10);
        let show = h.clock.now() + TimeDelta::minutes(90);
        h.store.world().shows.insert(SCHEDULE, show);
        h.sell_out().await;
        for user in [BOB, CAROL, UserId(4), UserId(5)] {
            h.service.join_waitlist(user, SCHEDULE).await.unwrap();
        }
        h.service.leave_waitlist(CAROL, SCHEDULE).await.unwrap();
        assert_eq!(
            h.service.close_waitlists(2).await.unwrap(),
            0,
            "still on sale"
        );

        // Sales close an hour before the show (the harness's policy).
        h.clock.advance(TimeDelta::minutes(30));
        assert_eq!(
            h.service.close_waitlists(2).await.unwrap(),
            3,
            "in batches of two"
        );
        assert!(h.waiting().is_empty());
        let closed: Vec<i64> = h
            .store
            .world()
            .outbox
            .iter()
            .filter(|e| e.event_type == types::WAITLIST_CLOSED)
            .map(|e| e.payload["userId"].as_i64().unwrap())
            .collect();
        assert_eq!(
            closed,
            vec![BOB.value(), 4, 5],
            "in line order, not who left"
        );
        assert_eq!(h.service.close_waitlists(2).await.unwrap(), 0, "once each");
        assert!(matches!(
            h.service.waitlist_position(BOB, SCHEDULE).await,
            Err(ReservationError::NotWaitlisted)
        ));
    }

    #[tokio::test]
    async fn once_sales_close_nobody_joins_the_waitlist_and_a_freed_seat_is_offered_to_nobody() {
        let h = harness(1, 10);
        h.store
            .world()
            .shows
            .insert(SCHEDULE, h.clock.now() + TimeDelta::minutes(63));
        let held = h.sell_out().await;
        h.service.join_waitlist(BOB, SCHEDULE).await.unwrap();
        // Four minutes later (the hold still live) sales have closed, an
        // hour before the show.
        h.clock.advance(TimeDelta::minutes(4));
        assert!(matches!(
            h.service.join_waitlist(CAROL, SCHEDULE).await,
            Err(ReservationError::SalesClosed(SCHEDULE))
        ));
        h.service.release(held[0], ALICE).await.unwrap();
        assert_eq!(h.deliver_last(types::RESERVATION_RELEASED).await, None);
        assert_eq!(h.seat(h.seats[0]), SeatState::Available, "no offer made");
    }

    #[tokio::test]
    async fn leaving_the_waitlist_moves_everyone_behind_up_and_rejoining_goes_to_the_tail() {
        let h = harness(1, 10);
        h.sell_out().await;
        h.service.join_waitlist(BOB, SCHEDULE).await.unwrap();
        h.service.join_waitlist(CAROL, SCHEDULE).await.unwrap();
        h.service.leave_waitlist(BOB, SCHEDULE).await.unwrap();
        assert_eq!(
            h.service.waitlist_position(CAROL, SCHEDULE).await.unwrap(),
            1
        );
        assert!(matches!(
            h.service.leave_waitlist(BOB, SCHEDULE).await,
            Err(ReservationError::NotWaitlisted)
        ));
        assert!(matches!(
            h.service.waitlist_position(BOB, SCHEDULE).await,
            Err(ReservationError::NotWaitlisted)
        ));
        assert_eq!(h.service.join_waitlist(BOB, SCHEDULE).await.unwrap(), 2);
        assert_eq!(h.events().last(), Some(&types::WAITLIST_JOINED));
        assert!(h.events().contains(&types::WAITLIST_LEFT));
    }

    #[tokio::test]
    async fn a_released_seat_is_held_for_the_first_in_line_and_offered_once() {
        let h = harness(1, 10);
        let holds = h.sell_out().await;
        h.service.join_waitlist(BOB, SCHEDULE).await.unwrap();
        h.service.join_waitlist(CAROL, SCHEDULE).await.unwrap();
        h.service.release(holds[0], ALICE).await.unwrap();

        let offer = h
            .deliver_last(types::RESERVATION_RELEASED)
            .await
            .expect("an offer");
        assert_eq!((offer.user, offer.seat), (BOB, h.seats[0]));
        assert_eq!(offer.expires_at, h.clock.now() + TimeDelta::minutes(5));
        assert_eq!(h.status(offer.id), ReservationStatus::Held);
        assert!(matches!(
            h.seat(h.seats[0]),
            SeatState::Held { holder: BOB, .. }
        ));
        assert_eq!(h.waiting(), [CAROL], "BOB's place became the offer");
        let offered = h
            .store
            .world()
            .outbox
            .iter()
            .find(|e| e.event_type == types::WAITLIST_OFFERED)
            .expect("WaitlistOffered")
            .payload
            .clone();
        assert_eq!(offered["userId"], BOB.value());
        assert_eq!(offered["reservationId"], offer.id.value());
        assert_eq!(offered["seatId"], h.seats[0].value());

        // The same event again finds the seat taken: nothing changes.
        let before = h.store.world().outbox.len();
        assert_eq!(h.deliver_last(types::RESERVATION_RELEASED).await, None);
        assert_eq!(h.waiting(), [CAROL]);
        assert_eq!(h.store.world().outbox.len(), before);
    }

    #[tokio::test]
    async fn a_lapsed_offer_passes_to_the_next_in_line() {
        let h = harness(1, 10);
        let holds = h.sell_out().await;
        h.service.join_waitlist(BOB, SCHEDULE).await.unwrap();
        h.service.join_waitlist(CAROL, SCHEDULE).await.unwrap();
        h.service.release(holds[0], ALICE).await.unwrap();
        let bobs = h.deliver_last(types::RESERVATION_RELEASED).await.unwrap();

        h.clock.advance(TimeDelta::minutes(6));
        assert_eq!(h.service.sweep(10).await.unwrap(), 1);
        assert_eq!(h.status(bobs.id), ReservationStatus::Expired);
        let carols = h
            .deliver_last(types::RESERVATION_EXPIRED)
            .await
            .expect("the next offer");
        assert_eq!((carols.user, carols.seat), (CAROL, bobs.seat));
        assert!(h.waiting().is_empty());
    }

    #[tokio::test]
    async fn a_seat_taken_before_the_offer_or_an_empty_line_offers_nothing() {
        let h = harness(1, 10);
        let holds = h.sell_out().await;
        h.service.release(holds[0], ALICE).await.unwrap();
        assert_eq!(
            h.deliver_last(types::RESERVATION_RELEASED).await,
            None,
            "nobody waits"
        );
        assert!(matches!(h.seat(h.seats[0]), SeatState::Available));

        // A buyer takes it before the event arrives; BOB keeps his place.
        h.service.hold(CAROL, SCHEDULE, h.seats[0]).await.unwrap();
        h.service.join_waitlist(BOB, SCHEDULE).await.unwrap();
        assert_eq!(h.deliver_last(types::RESERVATION_RELEASED).await, None);
        assert_eq!(h.waiting(), [BOB]);
        assert!(!h.events().contains(&types::WAITLIST_OFFERED));
    }

    #[tokio::test]
    async fn only_freed_seats_are_offered() {
        let handler = WaitlistOffers::new(
            ManualClock::new(Utc::now()),
            HoldPolicy {
                hold_minutes: 5,
                per_user_limit: 4,
                sales_close_before_minutes: 0,
            },
        );
        let handles = |t| {
            <WaitlistOffers<ManualClock> as EventHandler<crate::testing::MemTx>>::handles(
                &handler, t,
            )
        };
        for freed in [
            types::RESERVATION_EXPIRED,
            types::RESERVATION_RELEASED,
            types::TICKET_CANCELLED,
        ] {
            assert!(handles(freed), "{freed}");
        }
        for other in [
            types::PAYMENT_REFUNDED,
            types::RESERVATION_HELD,
            types::RESERVATION_CONFIRMED,
            types::WAITLIST_OFFERED,
        ] {
            assert!(!handles(other), "{other}");
        }
    }
}
