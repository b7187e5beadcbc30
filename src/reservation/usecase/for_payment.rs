//! The reservation's part of the payment module's transactions: claiming a
//! hold for a payment, recording it paid, withdrawing a hold from a
//! cancelled schedule, and cancelling a refunded ticket.

use chrono::{DateTime, Utc};

use crate::{
    catalog::ports::SeatTx,
    kernel::{PaymentId, ReservationId, StoreError, UserId, events::types, failpoint},
    outbox::ports::OutboxWriter,
    reservation::{
        domain::{NotPayable, Reservation, Transition},
        ports::ReservationTx,
    },
};

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
) -> Result<Result<(), NotPayable>, StoreError> {
    if hold.user != user {
        return Ok(Err(NotPayable::NotFound));
    }
    // Lets a test stretch the moment before the payment locks anything.
    failpoint::step("reservation::claim::before_seat")
        .await
        .map_err(StoreError::Unavailable)?;
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
) -> Result<(), StoreError> {
    tx.set_payment(id, payment, now).await
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

/// Every ticket `payment` bought is cancelled ([`cancel_ticket`]), in seat
/// order; how many were.
pub async fn cancel_tickets<T: ReservationTx + SeatTx + OutboxWriter>(
    tx: &mut T,
    payment: PaymentId,
    now: DateTime<Utc>,
) -> anyhow::Result<usize> {
    let mut cancelled = 0;
    for ticket in tx.of_payment(payment).await? {
        if cancel_ticket(tx, ticket.id, payment, now).await? {
            cancelled += 1;
        }
    }
    Ok(cancelled)
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;
    use crate::{
        catalog::domain::SeatState,
        kernel::{Clock, Transaction, UnitOfWork},
        reservation::{
            domain::ReservationStatus,
            usecase::fake::{ALICE, BOB, SCHEDULE, completed, harness},
        },
    };

    #[tokio::test]
    async fn a_cancelled_ticket_frees_its_seat_once_and_only_for_its_payment() {
        let h = harness(1, 4);
        let r = h.paid_hold(ALICE, 0).await;
        h.confirm(&completed(&r, PaymentId(99))).await;
        assert!(matches!(h.seat(h.seats[0]), SeatState::Sold { .. }));

        // Each refund in a transaction of its own.
        let refund = async |payment| {
            let mut tx = h.store.begin().await.unwrap();
            let cancelled = cancel_ticket(&mut tx, r.id, payment, h.clock.now())
                .await
                .unwrap();
            tx.commit().await.unwrap();
            cancelled
        };
        assert!(
            !refund(PaymentId(98)).await,
            "another payment's refund leaves the ticket alone"
        );
        assert!(refund(PaymentId(99)).await);
        assert_eq!(h.status(r.id), ReservationStatus::Released);
        assert_eq!(h.seat(h.seats[0]), SeatState::Available);
        assert_eq!(h.events().last(), Some(&types::TICKET_CANCELLED));

        assert!(
            !refund(PaymentId(99)).await,
            "a second refund finds nothing to cancel"
        );
        let cancelled = h
            .events()
            .iter()
            .filter(|event| **event == types::TICKET_CANCELLED)
            .count();
        assert_eq!(cancelled, 1);
        // The seat is on sale again.
        h.service.hold(BOB, SCHEDULE, h.seats[0]).await.unwrap();
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
}
