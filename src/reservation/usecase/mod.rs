//! Seat holds and the reservation side of the payment saga, one file per
//! flow. Every decision is here: whether a hold is won, the hold limit,
//! which lapsed hold a new one replaces, and confirm-or-fail when a payment
//! completes.

#[cfg(test)]
mod fake;
mod for_payment;
mod hold;
mod order;
mod saga;
mod waitlist;

pub use for_payment::{cancel_ticket, cancel_tickets, claim_for_payment, mark_paid, withdraw_hold};
pub use saga::{ConfirmOnPayment, Confirmation, confirm_payment};
pub use waitlist::{WAITLISTS_CHECKED, WaitlistOffers, offer_freed_seat};

use chrono::{DateTime, TimeDelta, Utc};

use super::{
    domain::{HoldPolicy, NewOrder, NewReservation, OrderView, Reservation, Transition},
    ports::{ReservationPorts, ReservationTx},
};
use crate::{
    catalog::{domain::HeldSeat, ports::SeatTx},
    kernel::{
        Clock, ScheduleId, SeatId, StoreError, UserId,
        events::{NewEvent, types},
        keyed::{ExpiringMemo, KeyedLocks},
    },
};

/// How long this instance answers "taken" for a seat it just saw lost in
/// a race, without asking the database again.
const LOST_RACE_MEMORY: TimeDelta = TimeDelta::seconds(1);
/// Remembered seats kept at most.
const LOST_RACE_CAPACITY: usize = 10_000;

type SeatKey = (ScheduleId, SeatId);

#[derive(Clone)]
pub struct ReservationService<P: ReservationPorts> {
    policy: HoldPolicy,
    uow: P::Uow,
    repo: P::Reservations,
    seats: P::Seats,
    clock: P::Clock,
    wake: P::Wake,
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
    /// One best-available pick per schedule at a time on this instance.
    picks: KeyedLocks<ScheduleId>,
}

impl<P: ReservationPorts> ReservationService<P> {
    pub fn new(
        uow: P::Uow,
        repo: P::Reservations,
        seats: P::Seats,
        clock: P::Clock,
        wake: P::Wake,
        policy: HoldPolicy,
    ) -> Self {
        Self {
            uow,
            repo,
            seats,
            clock,
            wake,
            policy,
            lost_races: ExpiringMemo::new(LOST_RACE_CAPACITY),
            gates: KeyedLocks::default(),
            picks: KeyedLocks::default(),
        }
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
) -> Result<(Reservation, Vec<NewEvent>), StoreError> {
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

/// Stores an order of the seats just taken for it ([`SeatTx::try_hold`]),
/// in seat order: the order row, then one hold per seat, each held until
/// `expires_at`. Returns the order (with the seats as held) and the
/// events to write.
async fn record_order<T: ReservationTx + SeatTx>(
    tx: &mut T,
    user: UserId,
    schedule: ScheduleId,
    seats: Vec<(SeatId, HeldSeat)>,
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(OrderView, Vec<NewEvent>), StoreError> {
    let concert = seats.first().map(|(_, held)| held.concert);
    let Some(concert) = concert else {
        return Err(StoreError::Unexpected(anyhow::anyhow!(
            "an order of no seats"
        )));
    };
    let mut order = tx
        .insert_order(
            &NewOrder {
                user,
                concert,
                schedule,
            },
            now,
        )
        .await?;
    let mut events = Vec::new();
    let mut places = Vec::with_capacity(seats.len());
    for (seat, held) in seats {
        let new = NewReservation {
            user,
            concert,
            schedule,
            seat,
            price: held.price,
            expires_at,
            order: Some(order.id),
        };
        let (reservation, mut written) = record_hold(tx, new, now).await?;
        order.seats.push(reservation);
        places.push(held.seat);
        events.append(&mut written);
    }
    Ok((OrderView { order, places }, events))
}
