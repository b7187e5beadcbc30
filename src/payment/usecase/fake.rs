//! One in-memory world for the payment flows' tests: a harness holding the
//! service and the runner over it, and the steps that set up a hold or a ticket.

use std::{sync::Arc, time::Duration};

use chrono::{TimeDelta, Utc};

use super::{Compensations, PaymentService, on_reservation_answer};
use crate::{
    kernel::{
        Clock, ConcertId, ManualClock, OrderId, PaymentId, Points, ReservationId, ScheduleId,
        Transaction, UnitOfWork, UserId,
        events::{PaymentCompleted, ReservationChanged, types},
        idempotency::RequestKey,
    },
    payment::{
        domain::{Compensation, Payment, PaymentError},
        ports::PaymentAdapters,
    },
    reservation::{
        domain::{Order, Reservation, ReservationStatus},
        usecase as reservations,
    },
    testing::{MemoryUow, RaisedAlerts, Wakes},
};

pub const ALICE: UserId = UserId(1);
pub const BOB: UserId = UserId(2);
pub const ADMIN: UserId = UserId(9_000);
pub const PRICE: i64 = 1_000;

/// Every port over the one in-memory world, on a clock the tests move.
pub type Fakes = PaymentAdapters<MemoryUow, MemoryUow, MemoryUow, ManualClock, Wakes>;

pub struct Harness {
    pub payments: PaymentService<Fakes>,
    pub compensations: Compensations<Fakes>,
    pub store: MemoryUow,
    pub clock: ManualClock,
    pub wakes: Wakes,
    pub alerts: RaisedAlerts,
}

pub fn harness() -> Harness {
    let store = MemoryUow::default();
    let clock = ManualClock::new(Utc::now());
    let wakes = Wakes::default();
    let alerts = RaisedAlerts::default();
    let payments = PaymentService::new(
        store.clone(),
        store.clone(),
        store.clone(),
        clock.clone(),
        wakes.clone(),
    );
    Harness {
        compensations: payments
            .compensation_runner(Arc::new(alerts.clone()), Duration::from_secs(1)),
        payments,
        store,
        clock,
        wakes,
        alerts,
    }
}

impl Harness {
    /// `seats` seats held by `user` for five minutes as one order, as a
    /// won order leaves them.
    pub fn held_order(&self, user: UserId, seats: usize) -> Order {
        let id = OrderId(70_000 + self.store.world().orders.len() as i64);
        let order = Order {
            id,
            user,
            concert: ConcertId(7),
            schedule: ScheduleId(3),
            created_at: self.clock.now(),
            seats: Vec::new(),
        };
        self.store.world().orders.insert(id, order);
        for _ in 0..seats {
            let hold = self.held(user);
            let mut world = self.store.world();
            world.reservations.get_mut(&hold.id).unwrap().order = Some(id);
        }
        self.store.world().order(id).unwrap()
    }

    /// A seat held by `user` for five minutes, as a won hold leaves it.
    pub fn held(&self, user: UserId) -> Reservation {
        let mut world = self.store.world();
        let seat = world.add_seat(ScheduleId(3), ConcertId(7), 1, PRICE);
        let until = self.clock.now() + TimeDelta::minutes(5);
        let reservation = Reservation {
            id: ReservationId(seat.value() + 1_000),
            user,
            concert: ConcertId(7),
            schedule: ScheduleId(3),
            seat,
            price: Points::new(PRICE).unwrap(),
            status: ReservationStatus::Held,
            expires_at: until,
            payment: None,
            order: None,
        };
        let s = world.seats.get_mut(&seat).unwrap();
        s.state = crate::catalog::domain::SeatState::Held {
            holder: user,
            until,
        };
        s.reservation = Some(reservation.id);
        world
            .reservations
            .insert(reservation.id, reservation.clone());
        reservation
    }

    /// A hold of `user`'s ([`Self::held`]) and a wallet of `points`.
    pub fn funded_hold(&self, user: UserId, points: i64) -> Reservation {
        let hold = self.held(user);
        self.fund(user, points);
        hold
    }

    /// A fresh hold of `user`'s paid from a wallet of 5,000 points.
    pub async fn paid(&self, user: UserId) -> Payment {
        let hold = self.funded_hold(user, 5_000);
        self.pay(user, hold.id).await.unwrap()
    }

    /// A payment whose seat could not be confirmed: its refund step is due.
    pub async fn unconfirmed(&self, user: UserId) -> Payment {
        let payment = self.paid(user).await;
        self.answer(types::RESERVATION_CONFIRMATION_FAILED, &payment)
            .await;
        payment
    }

    /// What the API does: the user's hold, then the payment.
    pub async fn pay(&self, user: UserId, id: ReservationId) -> Result<Payment, PaymentError> {
        self.pay_keyed(user, id, None).await
    }

    pub async fn pay_keyed(
        &self,
        user: UserId,
        id: ReservationId,
        key: Option<&RequestKey>,
    ) -> Result<Payment, PaymentError> {
        let hold = self.payments.hold_of(user, id).await?;
        if let Some(first) = self.payments.replay(key).await? {
            return Ok(first);
        }
        self.payments.pay(&hold, key).await
    }

    pub fn fund(&self, user: UserId, points: i64) {
        self.store
            .world()
            .balances
            .insert(user, Points::new(points).unwrap());
    }

    pub fn balance(&self, user: UserId) -> i64 {
        self.store.world().balance(user)
    }

    /// What the consumer runner does with a reservation's answer.
    pub async fn answer(&self, event_type: &str, payment: &Payment) {
        let changed = ReservationChanged {
            reservation_id: payment.reservation.value(),
            user_id: payment.user.value(),
            concert_id: 7,
            schedule_id: 3,
            seat_id: 1,
            payment_id: Some(payment.id.value()),
            order_id: None,
        };
        let mut tx = self.store.begin().await.unwrap();
        on_reservation_answer(&mut tx, event_type, &changed, self.clock.now())
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }

    pub fn compensation(&self) -> Compensation {
        let world = self.store.world();
        assert_eq!(world.compensations.len(), 1, "one compensation");
        world.compensations.values().next().cloned().unwrap()
    }

    /// A confirmed ticket of `user`'s for a show starting at `show`,
    /// as the saga leaves it: paid, the seat sold, the payment confirmed.
    pub async fn ticket(&self, user: UserId, show: chrono::DateTime<Utc>) -> Payment {
        self.store.world().shows.insert(ScheduleId(3), show);
        let hold = self.held(user);
        let payment = self.pay(user, hold.id).await.unwrap();
        let completed = PaymentCompleted {
            payment_id: payment.id.value(),
            reservation_id: hold.id.value(),
            user_id: user.value(),
            amount: PRICE,
            concert_id: 7,
            order_id: None,
            reservation_ids: Vec::new(),
        };
        let mut tx = self.store.begin().await.unwrap();
        reservations::confirm_payment(&mut tx, &completed, self.clock.now())
            .await
            .unwrap();
        tx.commit().await.unwrap();
        self.answer(types::RESERVATION_CONFIRMED, &payment).await;
        self.status(payment.id)
    }

    pub fn status(&self, id: PaymentId) -> Payment {
        self.store.world().payments[&id].clone()
    }
}
