//! The payment's saga step: what a reservation's confirmation or failure
//! does to the payment it names.

use chrono::Utc;

use crate::{
    kernel::{
        Clock, PaymentId,
        events::{CompensationScheduled, NewEvent, PaymentConfirmed, ReservationChanged, types},
    },
    outbox::ports::{Delivered, OutboxWriter, Subscriber, Subscription},
    payment::{
        domain::{PaymentError, PaymentStatus, REFUND_SAGA, REFUND_STEP},
        ports::PaymentTx,
    },
};

/// The payment's saga step on the reservation's answer: a confirmed
/// reservation confirms the payment; a failed one schedules the refund.
pub struct PaymentSaga<C> {
    clock: C,
}

impl<C> PaymentSaga<C> {
    pub fn new(clock: C) -> Self {
        Self { clock }
    }
}

/// What the payment saga does with a reservation's answer: a confirmed
/// reservation confirms the payment (`PaymentConfirmed`), a failed one
/// schedules the refund (`CompensationScheduled`). A redelivery, or a
/// refund that got there first, changes nothing and writes nothing.
pub async fn on_reservation_answer<T: PaymentTx + OutboxWriter>(
    tx: &mut T,
    event_type: &str,
    changed: &ReservationChanged,
    now: chrono::DateTime<Utc>,
) -> Result<(), PaymentError> {
    let payment = PaymentId(
        changed
            .payment_id
            .ok_or_else(|| anyhow::anyhow!("{event_type} without a payment id"))?,
    );
    let event = if event_type == types::RESERVATION_CONFIRMED {
        tx.set_payment_status(payment, PaymentStatus::Paid, PaymentStatus::Confirmed, now)
            .await?
            .then(|| {
                NewEvent::new(
                    types::PAYMENT_CONFIRMED,
                    "payment",
                    payment,
                    &PaymentConfirmed {
                        payment_id: payment.value(),
                        reservation_id: changed.reservation_id,
                        user_id: changed.user_id,
                    },
                )
            })
    } else {
        tx.schedule_compensation(REFUND_SAGA, REFUND_STEP, payment, now)
            .await?
            .then(|| {
                NewEvent::new(
                    types::COMPENSATION_SCHEDULED,
                    "payment",
                    payment,
                    &CompensationScheduled {
                        payment_id: payment.value(),
                        saga: REFUND_SAGA.into(),
                        step: REFUND_STEP.into(),
                    },
                )
            })
    };
    if let Some(event) = event {
        tx.append(vec![event], now).await?;
    }
    Ok(())
}

impl<T: PaymentTx + OutboxWriter, C: Clock> Subscriber<T> for PaymentSaga<C> {
    const SUBSCRIPTION: Subscription = Subscription::of(
        "payments",
        &[
            types::RESERVATION_CONFIRMED,
            types::RESERVATION_CONFIRMATION_FAILED,
        ],
    );
    type Payload = ReservationChanged;
    type Error = PaymentError;

    async fn on(
        &self,
        tx: &mut T,
        answer: Delivered<'_, ReservationChanged>,
    ) -> Result<(), PaymentError> {
        let now = self.clock.now();
        on_reservation_answer(tx, &answer.event.event_type, &answer.payload, now).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        kernel::alerts::Severity,
        payment::{domain::CompensationStatus, usecase::fake::*},
        wallet::domain::EntryKind,
    };

    #[tokio::test]
    async fn a_confirmed_reservation_confirms_its_payment_once() {
        let h = harness();
        let payment = h.paid(ALICE).await;
        h.answer(types::RESERVATION_CONFIRMED, &payment).await;
        h.answer(types::RESERVATION_CONFIRMED, &payment).await;
        let stored = h.store.world().payments[&payment.id].clone();
        assert_eq!(stored.status, PaymentStatus::Confirmed);
        assert!(h.store.world().compensations.is_empty());
        assert_eq!(
            h.store.world().event_types(),
            vec![types::PAYMENT_COMPLETED, types::PAYMENT_CONFIRMED],
            "confirmed once, announced once"
        );
    }

    #[tokio::test]
    async fn a_failed_confirmation_schedules_one_refund_which_runs_once() {
        let h = harness();
        let payment = h.paid(ALICE).await;
        h.answer(types::RESERVATION_CONFIRMATION_FAILED, &payment)
            .await;
        h.answer(types::RESERVATION_CONFIRMATION_FAILED, &payment)
            .await;
        let step = h.compensation();
        assert_eq!(
            (step.saga.as_str(), step.step.as_str()),
            (REFUND_SAGA, REFUND_STEP)
        );

        h.compensations.run_due().await.unwrap();
        assert_eq!(h.balance(ALICE), 5_000, "the points came back");
        {
            let world = h.store.world();
            assert_eq!(world.payments[&payment.id].status, PaymentStatus::Refunded);
            let (_, row, _) = world.ledger.last().cloned().unwrap();
            assert_eq!((row.kind, row.amount), (EntryKind::Refund, PRICE));
            assert_eq!(world.event_types().last(), Some(&types::PAYMENT_REFUNDED));
        }
        assert_eq!(h.compensation().status, CompensationStatus::Succeeded);
        assert_eq!(h.alerts.all().len(), 1);
        assert_eq!(h.alerts.all()[0].severity, Severity::Warning);

        // Nothing due any more: a second pass refunds nothing.
        h.compensations.run_due().await.unwrap();
        assert_eq!(h.balance(ALICE), 5_000);
    }
}
