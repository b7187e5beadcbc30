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

/// Confirm-or-fail, inside the consumer's transaction.
pub async fn confirm_payment<T: ReservationTx + SeatTx + OutboxWriter>(
    tx: &mut T,
    payment: &PaymentCompleted,
    now: DateTime<Utc>,
) -> Result<Confirmation, ReservationError> {
    let id = ReservationId(payment.reservation_id);
    let paid_by = PaymentId(payment.payment_id);
    let Some(reservation) = tx.get(id).await? else {
        return Err(Fault::unexpected(format!(
            "payment {} names unknown reservation {}",
            payment.payment_id, payment.reservation_id
        ))
        .into());
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
                return Err(Fault::conflict(format!(
                    "reservation {id} changed while its seat was being sold"
                ))
                .into());
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
