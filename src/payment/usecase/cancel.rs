//! A buyer cancels a confirmed ticket: checked against the cut-off and
//! scheduled as a refund step the compensation runner carries out.

use chrono::{DateTime, TimeDelta, Utc};

use super::PaymentService;
use crate::{
    catalog::ports::SeatTx,
    kernel::{
        Clock, PaymentId, Transaction, UnitOfWork, UserId,
        events::{CompensationScheduled, NewEvent, RelayWake, types},
        retry_on_conflict,
    },
    outbox::ports::OutboxWriter,
    payment::{
        domain::{CANCEL_SAGA, CancelRefused, Payment, PaymentError, REFUND_STEP, may_cancel},
        ports::{PaymentPorts, PaymentTx},
    },
    reservation::ports::ReservationTx,
};

impl<P: PaymentPorts> PaymentService<P> {
    /// The buyer cancels the ticket `id` bought: checked against the
    /// cut-off and scheduled as the cancellation saga's refund step, once
    /// (a second request, or a concurrent one, is refused). The runner then
    /// refunds the points, frees the seat and tells the buyer.
    pub async fn cancel(&self, id: PaymentId, user: UserId) -> Result<Payment, PaymentError> {
        let payment = self.get(id, user).await?;
        retry_on_conflict(|| self.cancel_once(id)).await?;
        self.wake.wake();
        metrics::counter!("cancellations_total").increment(1);
        Ok(payment)
    }

    async fn cancel_once(&self, id: PaymentId) -> Result<(), PaymentError> {
        let now = self.clock.now();
        let mut tx = self.uow.begin().await?;
        let payment = tx.payment(id).await?.ok_or(PaymentError::NotFound(id))?;
        let ticket = ReservationTx::get(&mut tx, payment.reservation)
            .await?
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "payment {id} names unknown reservation {}",
                    payment.reservation
                )
            })?;
        let starts_at = tx.starts_at(ticket.schedule).await?.ok_or_else(|| {
            anyhow::anyhow!(
                "reservation {} names unknown schedule {}",
                ticket.id,
                ticket.schedule
            )
        })?;
        may_cancel_now(&payment, starts_at, self.cancel_cutoff, now)?;
        if !schedule_refund(&mut tx, CANCEL_SAGA, REFUND_STEP, id, now).await? {
            return Err(PaymentError::AlreadyCancelled(id));
        }
        tx.commit().await?;
        Ok(())
    }
}

/// [`may_cancel`], answered as the buyer hears it.
pub(super) fn may_cancel_now(
    payment: &Payment,
    starts_at: DateTime<Utc>,
    cutoff: TimeDelta,
    now: DateTime<Utc>,
) -> Result<(), PaymentError> {
    match may_cancel(payment, starts_at, cutoff, now) {
        Ok(()) => Ok(()),
        Err(CancelRefused::NotConfirmed) => Err(PaymentError::NotConfirmed(payment.id)),
        Err(CancelRefused::WindowClosed) => Err(PaymentError::CancelWindowClosed(payment.id)),
    }
}

/// Schedules the refund `step` of `saga` for `payment` with its
/// `CompensationScheduled`, once: false (nothing written) when it was
/// scheduled before.
pub(super) async fn schedule_refund<T: PaymentTx + OutboxWriter>(
    tx: &mut T,
    saga: &str,
    step: &str,
    payment: PaymentId,
    now: DateTime<Utc>,
) -> Result<bool, PaymentError> {
    if !tx.schedule_compensation(saga, step, payment, now).await? {
        return Ok(false);
    }
    let event = NewEvent::new(
        types::COMPENSATION_SCHEDULED,
        "payment",
        payment,
        &CompensationScheduled {
            payment_id: payment.value(),
            saga: saga.into(),
            step: step.into(),
        },
    );
    tx.append(vec![event], now).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;
    use crate::{
        payment::{
            domain::{CompensationStatus, PaymentStatus},
            usecase::fake::*,
        },
        reservation::domain::ReservationStatus,
        wallet::domain::EntryKind,
    };

    /// ALICE's confirmed ticket for a show `starts_in` from now, bought
    /// from a wallet of ten prices.
    async fn alices_ticket(starts_in: TimeDelta) -> (Harness, Payment) {
        let h = harness();
        h.fund(ALICE, 10 * PRICE);
        let ticket = h.ticket(ALICE, h.clock.now() + starts_in).await;
        (h, ticket)
    }

    #[tokio::test]
    async fn a_buyer_cancels_a_ticket_once_and_gets_the_points_and_the_seat_back() {
        let (h, ticket) = alices_ticket(TimeDelta::days(3)).await;
        assert_eq!(ticket.status, PaymentStatus::Confirmed);
        assert_eq!(h.balance(ALICE), 9 * PRICE);

        let accepted = h.payments.cancel(ticket.id, ALICE).await.unwrap();
        assert_eq!(accepted.id, ticket.id);
        let step = h.compensation();
        assert_eq!(
            (step.saga.as_str(), step.status),
            (CANCEL_SAGA, CompensationStatus::Pending)
        );
        assert!(
            matches!(
                h.payments.cancel(ticket.id, ALICE).await,
                Err(PaymentError::AlreadyCancelled(_))
            ),
            "a second cancellation while the first is under way"
        );
        assert_eq!(h.balance(ALICE), 9 * PRICE, "nothing refunded yet");

        h.compensations.run_due().await.unwrap();
        assert_eq!(h.status(ticket.id).status, PaymentStatus::Refunded);
        assert_eq!(h.balance(ALICE), 10 * PRICE);
        {
            let world = h.store.world();
            let reservation = &world.reservations[&ticket.reservation];
            assert_eq!(reservation.status, ReservationStatus::Released);
            assert_eq!(
                world.seats[&reservation.seat].state,
                crate::catalog::domain::SeatState::Available,
                "the seat is on sale again"
            );
            let refunds: Vec<_> = world
                .ledger
                .iter()
                .filter(|(_, e, p)| e.kind == EntryKind::Refund && *p == Some(ticket.id))
                .collect();
            assert_eq!(refunds.len(), 1);
            let refunded = world.payloads(types::PAYMENT_REFUNDED);
            assert_eq!(refunded.len(), 1);
            assert_eq!(refunded[0]["reason"], "cancelled");
            assert_eq!(
                world
                    .event_types()
                    .iter()
                    .filter(|t| **t == types::TICKET_CANCELLED)
                    .count(),
                1
            );
        }
        assert!(h.alerts.all().is_empty(), "a cancellation is no incident");
        assert_eq!(h.compensation().status, CompensationStatus::Succeeded);

        assert!(matches!(
            h.payments.cancel(ticket.id, ALICE).await,
            Err(PaymentError::NotConfirmed(_))
        ));
        h.compensations.run_due().await.unwrap();
        assert_eq!(h.balance(ALICE), 10 * PRICE, "refunded once");
    }

    #[tokio::test]
    async fn cancelling_is_refused_past_the_cutoff_before_confirmation_and_for_others() {
        let (h, ticket) = alices_ticket(TimeDelta::hours(2)).await;
        assert!(matches!(
            h.payments.cancel(ticket.id, ALICE).await,
            Err(PaymentError::CancelWindowClosed(_))
        ));
        let late = h.payments.clone().with_cancel_cutoff(TimeDelta::hours(1));
        late.cancel(ticket.id, ALICE).await.unwrap();
        assert_eq!(h.compensation().saga, CANCEL_SAGA);

        assert!(matches!(
            h.payments.cancel(ticket.id, BOB).await,
            Err(PaymentError::NotFound(_))
        ));
        let hold = h.held(ALICE);
        let unconfirmed = h.pay(ALICE, hold.id).await.unwrap();
        assert!(matches!(
            h.payments.cancel(unconfirmed.id, ALICE).await,
            Err(PaymentError::NotConfirmed(_))
        ));
        assert_eq!(
            h.store.world().compensations.len(),
            1,
            "nothing else scheduled"
        );
    }

    #[tokio::test]
    async fn a_cancellation_whose_refund_fails_is_retried_and_refunds_once() {
        let (h, ticket) = alices_ticket(TimeDelta::days(3)).await;
        h.payments.cancel(ticket.id, ALICE).await.unwrap();
        h.store.set_down(true);
        h.compensations.run_due().await.ok();
        h.store.set_down(false);
        assert_eq!(h.status(ticket.id).status, PaymentStatus::Confirmed);
        h.clock.advance(TimeDelta::minutes(1));
        let (a, b) = tokio::join!(h.compensations.run_due(), h.compensations.run_due());
        a.unwrap();
        b.unwrap();
        h.compensations.run_due().await.unwrap();
        assert_eq!(h.status(ticket.id).status, PaymentStatus::Refunded);
        assert_eq!(h.balance(ALICE), 10 * PRICE, "one refund");
    }
}
