//! Seat holds and the reservation side of the payment saga. Every decision
//! is here: whether a hold is won, the hold limit, which lapsed hold a new
//! one replaces, and confirm-or-fail when a payment completes.

use chrono::{DateTime, TimeDelta, Utc};
use futures::{FutureExt, future::BoxFuture};

use super::{
    domain::{
        HoldPolicy, NewReservation, NotPayable, OnPayment, Reservation, ReservationError,
        Transition,
    },
    ports::{ReservationRepository, ReservationTx},
};
use crate::{
    catalog::{
        domain::Availability,
        ports::{SeatReads, SeatTx},
    },
    kernel::{
        Clock, PaymentId, ReservationId, ScheduleId, SeatId, Transaction, UnitOfWork, UserId,
        events::{EventEnvelope, PaymentCompleted, RelayWake, types},
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
    U::Tx: SeatTx + ReservationTx + OutboxWriter,
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
        let Some(held) = tx
            .try_hold(schedule, seat, user, self.policy.until(now), now)
            .await?
        else {
            return Err(if tx.exists(schedule, seat).await? {
                self.remember_taken((schedule, seat), now);
                ReservationError::SeatUnavailable
            } else {
                ReservationError::SeatNotFound { schedule, seat }
            });
        };
        let live = tx.lock_user_and_count_live(user, now).await?;
        if !self.policy.allows_another(live) {
            // Dropping the transaction gives the seat back too.
            return Err(ReservationError::HoldLimit(self.policy.per_user_limit));
        }
        let reservation = tx
            .insert(
                &NewReservation {
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
        tx.attach(seat, reservation.id).await?;
        let mut events = vec![reservation.event(types::RESERVATION_HELD)];
        // The lapsed hold this one took the seat from is over now.
        for previous in tx.held_on_seat(seat, reservation.id).await? {
            if tx.transition(previous.id, Transition::Replace, now).await? {
                events.push(previous.event(types::RESERVATION_EXPIRED));
            }
        }
        tx.append(events, now).await?;
        tx.commit().await?;
        Ok(reservation)
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

    async fn expire_once(&self, id: ReservationId) -> Result<bool, ReservationError> {
        let now = self.clock.now();
        let mut tx = self.uow.begin().await?;
        let Some(reservation) = tx.get(id).await? else {
            return Ok(false);
        };
        let lapse = Transition::Lapse { now };
        // A payment may have claimed it since it was listed.
        if !lapse.applies_to(&reservation) {
            return Ok(false);
        }
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
}

/// Claims the user's unexpired, unpaid hold for a payment, inside the
/// payment's transaction: the reservation module's part of `pay`, published
/// for the payment module. The seat is kept held until `keep_seat_until`
/// while the confirmation travels the event bus. Of several concurrent
/// payments for one hold exactly one gets past here.
pub async fn claim_for_payment<T: ReservationTx + SeatTx>(
    tx: &mut T,
    id: ReservationId,
    user: UserId,
    keep_seat_until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Result<Reservation, NotPayable>, crate::kernel::StoreError> {
    let Some(reservation) = tx.get(id).await?.filter(|r| r.user == user) else {
        return Ok(Err(NotPayable::NotFound));
    };
    // The seat first (lock order), then the reservation.
    let kept = tx.extend(reservation.seat, id, keep_seat_until).await?;
    if !kept
        || !tx
            .transition(id, Transition::ClaimForPayment { user, now }, now)
            .await?
    {
        let current = tx.get(id).await?.unwrap_or(reservation);
        return Ok(Err(current.why_not_payable(user)));
    }
    Ok(Ok(reservation))
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
