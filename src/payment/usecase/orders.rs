//! An order of several seats through the whole saga: one payment for every
//! seat, confirmed together or refunded together, and a cancelled order
//! cancelling every ticket.

use chrono::TimeDelta;

use super::fake::*;
use crate::{
    catalog::domain::SeatState,
    kernel::{
        Clock, Transaction, UnitOfWork,
        events::{PaymentCompleted, types},
    },
    payment::domain::{Payment, PaymentError, PaymentStatus},
    reservation::{
        domain::{Order, Reservation, ReservationStatus},
        usecase::{self as reservations, Confirmation},
    },
    testing::World,
};

impl Harness {
    /// The `PaymentCompleted` the payment wrote, as the saga receives it.
    fn completed_event(&self) -> PaymentCompleted {
        let payload = self.store.world().payloads(types::PAYMENT_COMPLETED)[0].clone();
        serde_json::from_value(payload).unwrap()
    }

    pub(super) async fn confirm(&self) -> Confirmation {
        let completed = self.completed_event();
        let mut tx = self.store.begin().await.unwrap();
        let outcome = reservations::confirm_payment(&mut tx, &completed, self.clock.now())
            .await
            .unwrap();
        tx.commit().await.unwrap();
        outcome
    }

    /// An order of `seats` seats of Alice's, paid from a wallet of 5,000.
    pub(super) async fn paid_order(&self, seats: usize) -> (Order, Payment) {
        let order = self.held_order(ALICE, seats);
        self.fund(ALICE, 5_000);
        let purchase = self.payments.order_of(ALICE, order.id).await.unwrap();
        let payment = self.payments.pay(&purchase, None).await.unwrap();
        (order, payment)
    }

    /// What `read` sees of each seat of the order, in seat order.
    fn each_seat<T>(&self, order: &Order, read: impl Fn(&World, &Reservation) -> T) -> Vec<T> {
        let world = self.store.world();
        order.seats.iter().map(|r| read(&world, r)).collect()
    }

    fn statuses(&self, order: &Order) -> Vec<ReservationStatus> {
        self.each_seat(order, |world, r| world.reservations[&r.id].status)
    }

    fn seat_states(&self, order: &Order) -> Vec<SeatState> {
        self.each_seat(order, |world, r| world.seats[&r.seat].state)
    }
}

#[tokio::test]
async fn one_payment_buys_every_seat_of_the_order_and_the_saga_confirms_them_together() {
    let h = harness();
    let (order, payment) = h.paid_order(3).await;
    assert_eq!(payment.amount.value(), 3 * PRICE);
    assert_eq!(payment.order, Some(order.id));
    assert_eq!(
        h.balance(ALICE),
        5_000 - 3 * PRICE,
        "one debit for the order"
    );
    {
        let world = h.store.world();
        assert!(
            order
                .seats
                .iter()
                .all(|r| world.reservations[&r.id].payment == Some(payment.id))
        );
        assert_eq!(world.event_types(), vec![types::PAYMENT_COMPLETED]);
    }
    let completed = h.completed_event();
    let ids: Vec<i64> = order.seats.iter().map(|r| r.id.value()).collect();
    assert_eq!(completed.reservations(), ids);
    assert_eq!(completed.order_id, Some(order.id.value()));
    // Paying again finds nothing left to pay.
    assert!(matches!(
        h.payments.order_of(ALICE, order.id).await,
        Err(PaymentError::OrderAlreadyPaid(_))
    ));
    assert!(matches!(
        h.payments.order_of(BOB, order.id).await,
        Err(PaymentError::OrderNotFound(_))
    ));

    assert_eq!(h.confirm().await, Confirmation::Confirmed);
    assert_eq!(h.statuses(&order), vec![ReservationStatus::Confirmed; 3]);
    assert!(
        h.seat_states(&order)
            .iter()
            .all(|s| matches!(s, SeatState::Sold { .. }))
    );
    let confirmed = h.store.world().payloads(types::RESERVATION_CONFIRMED);
    assert_eq!(confirmed.len(), 3, "one per seat, for the tickets");
    assert_eq!(
        h.confirm().await,
        Confirmation::AlreadyConfirmed,
        "a redelivery"
    );
    for _ in 0..3 {
        h.answer(types::RESERVATION_CONFIRMED, &payment).await;
    }
    assert_eq!(h.status(payment.id).status, PaymentStatus::Confirmed);
}

#[tokio::test]
async fn one_lost_seat_fails_the_whole_order_frees_the_rest_and_refunds_every_point() {
    let h = harness();
    let (order, payment) = h.paid_order(2).await;
    // The second seat's hold was lost while the payment travelled.
    let lost = order.seats[1].seat;
    h.store.world().seats.get_mut(&lost).unwrap().state = SeatState::Held {
        holder: BOB,
        until: h.clock.now() + TimeDelta::minutes(5),
    };
    h.store.world().seats.get_mut(&lost).unwrap().reservation = None;

    assert_eq!(h.confirm().await, Confirmation::Failed);
    assert_eq!(h.statuses(&order), vec![ReservationStatus::Expired; 2]);
    let states = h.seat_states(&order);
    assert_eq!(
        states[0],
        SeatState::Available,
        "the seat it still held is free"
    );
    assert!(matches!(states[1], SeatState::Held { holder, .. } if holder == BOB));
    assert_eq!(
        h.store
            .world()
            .payloads(types::RESERVATION_CONFIRMATION_FAILED)
            .len(),
        2
    );
    assert!(
        h.store
            .world()
            .payloads(types::RESERVATION_CONFIRMED)
            .is_empty()
    );

    h.answer(types::RESERVATION_CONFIRMATION_FAILED, &payment)
        .await;
    h.answer(types::RESERVATION_CONFIRMATION_FAILED, &payment)
        .await;
    h.compensations.run_due().await.unwrap();
    assert_eq!(
        h.balance(ALICE),
        5_000,
        "both seats' points came back, once"
    );
    assert_eq!(h.status(payment.id).status, PaymentStatus::Refunded);
}

#[tokio::test]
async fn cancelling_an_order_cancels_every_ticket_and_refunds_the_whole_price() {
    let h = harness();
    h.store.world().shows.insert(
        crate::kernel::ScheduleId(3),
        h.clock.now() + TimeDelta::days(7),
    );
    let (order, payment) = h.paid_order(2).await;
    h.confirm().await;
    h.answer(types::RESERVATION_CONFIRMED, &payment).await;

    h.payments.cancel(payment.id, ALICE).await.unwrap();
    h.compensations.run_due().await.unwrap();
    assert_eq!(h.balance(ALICE), 5_000);
    assert_eq!(h.statuses(&order), vec![ReservationStatus::Released; 2]);
    assert_eq!(h.seat_states(&order), vec![SeatState::Available; 2]);
    assert_eq!(h.store.world().payloads(types::TICKET_CANCELLED).len(), 2);
}
