//! The reservation use cases' test harness: a service over one in-memory
//! store with a manual clock, and the builders several flows' tests share.

use chrono::{TimeDelta, Utc};

use super::{Confirmation, ReservationService, confirm_payment};
use crate::{
    catalog::domain::SeatState,
    kernel::{
        Clock, ConcertId, ManualClock, PaymentId, ReservationId, ScheduleId, SeatId, Transaction,
        UnitOfWork, UserId, events::PaymentCompleted,
    },
    reservation::{
        domain::{HoldPolicy, Reservation, ReservationStatus},
        ports::ReservationAdapters,
    },
    testing::{MemoryUow, Wakes},
};

pub const SCHEDULE: ScheduleId = ScheduleId(100);
pub const ALICE: UserId = UserId(1);
pub const BOB: UserId = UserId(2);
pub const CAROL: UserId = UserId(3);

/// Every port over the one in-memory world, on a clock the test moves.
pub type Fakes = ReservationAdapters<MemoryUow, MemoryUow, MemoryUow, ManualClock, Wakes>;

pub type Service = ReservationService<Fakes>;

/// A reservation service over one in-memory store, with handles to look
/// inside it and move its clock.
pub struct Harness {
    pub service: Service,
    pub store: MemoryUow,
    pub clock: ManualClock,
    pub wakes: Wakes,
    pub seats: Vec<SeatId>,
}

/// `seats` seats on sale for [`SCHEDULE`], at most `limit` live holds
/// per user, five-minute holds, sales closing an hour before the show.
pub fn harness(seats: u32, limit: u32) -> Harness {
    let store = MemoryUow::default();
    let seats = (1..=seats)
        .map(|number| {
            store
                .world()
                .add_seat(SCHEDULE, ConcertId(7), number, 1_000)
        })
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
    pub fn events(&self) -> Vec<&'static str> {
        self.store.world().event_types()
    }

    pub fn seat(&self, seat: SeatId) -> SeatState {
        self.store.world().seats[&seat].state
    }

    pub fn status(&self, id: ReservationId) -> ReservationStatus {
        self.store.world().reservations[&id].status
    }

    /// The user's hold of the `seat`th seat, marked paid ([`Self::pay`]).
    pub async fn paid_hold(&self, user: UserId, seat: usize) -> Reservation {
        let hold = (self.service.hold(user, SCHEDULE, self.seats[seat]).await).unwrap();
        self.pay(hold.id);
        hold
    }

    /// ALICE's paid hold of the first seat, after it lapsed unconfirmed and
    /// BOB's hold took the seat.
    pub async fn paid_hold_retaken(&self) -> Reservation {
        let paid = self.paid_hold(ALICE, 0).await;
        self.clock.advance(TimeDelta::minutes(6));
        (self.service.hold(BOB, SCHEDULE, self.seats[0]).await).unwrap();
        paid
    }

    /// The saga's step for a payment, in a transaction of its own.
    pub async fn confirm(&self, payment: &PaymentCompleted) -> Confirmation {
        let mut tx = self.store.begin().await.unwrap();
        let outcome = confirm_payment(&mut tx, payment, self.clock.now())
            .await
            .unwrap();
        tx.commit().await.unwrap();
        outcome
    }

    /// The show of [`SCHEDULE`] starts `starts_in` from now.
    pub fn show_in(&self, starts_in: TimeDelta) {
        let starts_at = self.clock.now() + starts_in;
        self.store.world().shows.insert(SCHEDULE, starts_at);
    }

    /// Marks the hold paid, as a payment would, without a payment flow.
    pub fn pay(&self, id: ReservationId) {
        self.store
            .world()
            .reservations
            .get_mut(&id)
            .expect("a reservation")
            .payment = Some(PaymentId(99));
    }
}

/// The `PaymentCompleted` a payment of `reservation` publishes.
pub fn completed(reservation: &Reservation, payment: PaymentId) -> PaymentCompleted {
    PaymentCompleted {
        payment_id: payment.value(),
        reservation_id: reservation.id.value(),
        user_id: reservation.user.value(),
        amount: reservation.price.value(),
        concert_id: reservation.concert.value(),
        order_id: reservation.order.map(|id| id.value()),
        reservation_ids: Vec::new(),
    }
}
