//! The reservation's saga step: on `PaymentCompleted` the held seat is
//! sold and the hold confirmed, or the confirmation fails so the payment
//! is refunded.

use chrono::{DateTime, Utc};

use crate::{
    catalog::ports::SeatTx,
    kernel::{
        Clock, Fault, PaymentId, ReservationId,
        events::{PaymentCompleted, types},
    },
    outbox::ports::{Delivered, OutboxWriter, Subscriber, Subscription},
    reservation::{
        domain::{OnPayment, Reservation, ReservationError, Transition},
        ports::ReservationTx,
    },
};

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

/// Confirm-or-fail, inside the consumer's transaction, for every seat the
/// payment bought together: all of them are sold and confirmed, or — when
/// one hold was lost — none is, every one fails (its seat freed if still
/// held for it) and the payment is refunded.
pub async fn confirm_payment<T: ReservationTx + SeatTx + OutboxWriter>(
    tx: &mut T,
    payment: &PaymentCompleted,
    now: DateTime<Utc>,
) -> Result<Confirmation, ReservationError> {
    let paid_by = PaymentId(payment.payment_id);
    let mut seats = Vec::new();
    for id in payment.reservations() {
        let Some(reservation) = tx.get(ReservationId(id)).await? else {
            return Err(Fault::unexpected(format!(
                "payment {} names unknown reservation {id}",
                payment.payment_id
            ))
            .into());
        };
        let decision = reservation.on_payment(paid_by);
        let reservation = Reservation {
            // The event names the payment even if the row lost it.
            payment: Some(paid_by),
            ..reservation
        };
        seats.push((reservation, decision));
    }
    // The lock order: seats by id.
    seats.sort_by_key(|(r, _)| r.seat);
    let decisions: Vec<OnPayment> = seats.iter().map(|(_, d)| *d).collect();
    let seats: Vec<Reservation> = seats.into_iter().map(|(r, _)| r).collect();
    if decisions.iter().all(|d| *d == OnPayment::AlreadyConfirmed) {
        return Ok(Confirmation::AlreadyConfirmed);
    }
    let mut sold = Vec::new();
    let mut lost = !decisions.iter().all(|d| *d == OnPayment::SellSeat);
    if !lost {
        for reservation in &seats {
            if !tx.sell(reservation.seat, reservation.id).await? {
                lost = true;
                break;
            }
            sold.push(reservation);
        }
    }
    let outcome = if lost {
        // Seats sold above go back; seats still held for the order are freed.
        for reservation in &sold {
            tx.unsell(reservation.seat, reservation.id).await?;
        }
        for (reservation, decision) in seats.iter().zip(&decisions) {
            // Only a hold this payment claimed has a seat to give back.
            if *decision == OnPayment::SellSeat {
                tx.release(reservation.seat, reservation.id).await?;
            }
            tx.transition(reservation.id, Transition::FailConfirmation, now)
                .await?;
        }
        metrics::counter!("reservation_confirmations_failed_total").increment(seats.len() as u64);
        Confirmation::Failed
    } else {
        for reservation in &seats {
            let confirm = Transition::Confirm { payment: paid_by };
            if !tx.transition(reservation.id, confirm, now).await? {
                // Rolled back and redelivered: the next attempt sees why.
                return Err(Fault::conflict(format!(
                    "reservation {} changed while its seat was being sold",
                    reservation.id
                ))
                .into());
            }
        }
        metrics::counter!("reservations_confirmed_total").increment(seats.len() as u64);
        Confirmation::Confirmed
    };
    let event_type = match outcome {
        Confirmation::Confirmed => types::RESERVATION_CONFIRMED,
        _ => types::RESERVATION_CONFIRMATION_FAILED,
    };
    let events = seats.iter().map(|r| r.event(event_type)).collect();
    tx.append(events, now).await?;
    Ok(outcome)
}

impl<T, C> Subscriber<T> for ConfirmOnPayment<C>
where
    T: ReservationTx + SeatTx + OutboxWriter,
    C: Clock,
{
    const SUBSCRIPTION: Subscription =
        Subscription::of("reservations", &[types::PAYMENT_COMPLETED]);
    type Payload = PaymentCompleted;
    type Error = ReservationError;

    async fn on(
        &self,
        tx: &mut T,
        payment: Delivered<'_, PaymentCompleted>,
    ) -> Result<(), ReservationError> {
        confirm_payment(tx, &payment.payload, self.clock.now()).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        catalog::domain::SeatState,
        kernel::{UnitOfWork, events::NewEvent},
        reservation::{
            domain::ReservationStatus,
            usecase::fake::{ALICE, BOB, completed, harness},
        },
    };

    #[tokio::test]
    async fn a_paid_hold_is_confirmed_and_its_seat_sold_once() {
        let h = harness(1, 4);
        let r = h.paid_hold(ALICE, 0).await;
        let event = completed(&r, PaymentId(99));
        assert_eq!(h.confirm(&event).await, Confirmation::Confirmed);
        assert_eq!(h.status(r.id), ReservationStatus::Confirmed);
        assert_eq!(h.seat(h.seats[0]), SeatState::Sold { owner: ALICE });
        let last: NewEvent = h.store.world().outbox.last().cloned().unwrap();
        assert_eq!(last.event_type, types::RESERVATION_CONFIRMED);
        assert_eq!(last.payload["paymentId"], 99);

        assert_eq!(h.confirm(&event).await, Confirmation::AlreadyConfirmed);
        assert_eq!(h.events().len(), 2, "a redelivery writes nothing");
    }

    #[tokio::test]
    async fn a_paid_hold_whose_seat_went_to_someone_else_fails_confirmation() {
        let h = harness(1, 4);
        let r = h.paid_hold_retaken().await;
        let outcome = h.confirm(&completed(&r, PaymentId(99))).await;
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
        let r = h.paid_hold(ALICE, 0).await;
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
}
