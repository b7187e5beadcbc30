//! A holder cancels one ticket of an order: checked like a whole
//! cancellation (confirmed, before the cut-off) and scheduled as a refund
//! step of its own, named after the seat, which the compensation runner
//! carries out: that seat's price back to the wallet that paid, the seat
//! back on sale (`TicketCancelled`: the waitlist is offered it), and the
//! payment `refunded` with its last seat. The ticket is void from the
//! request on (`TicketVoided`), so its code admits nobody and cannot be
//! handed on while the refund is under way.

use chrono::{DateTime, Utc};

use super::{
    PaymentService,
    cancel::{may_cancel_now, schedule_refund},
    compensations::Attempt,
};
use crate::{
    catalog::ports::SeatTx,
    kernel::{
        Clock, Fault, Points, TicketId, Transaction, UnitOfWork, UserId,
        events::{NewEvent, RelayWake, types},
        retry_on_conflict,
    },
    outbox::ports::OutboxWriter,
    payment::{
        domain::{
            Compensation, Payment, PaymentError, PaymentStatus, TICKET_CANCEL_SAGA, refunded_seat,
            seat_refund, seat_refund_step,
        },
        ports::{PaymentPorts, PaymentTx},
    },
    reservation::{domain::ReservationStatus, ports::ReservationTx, usecase as reservations},
    ticket::{
        domain::{AtTheDoor, Ticket, TicketStatus},
        ports::TicketTx,
    },
    wallet::{domain::Posting, ports::WalletTx},
};

impl<P: PaymentPorts> PaymentService<P> {
    /// The holder cancels their ticket `id`, one seat of an order: checked
    /// and scheduled as that seat's refund step, once (a second request,
    /// or a concurrent one, is refused). Answers the payment it belongs to.
    pub async fn cancel_ticket(&self, id: TicketId, user: UserId) -> Result<Payment, PaymentError> {
        let payment = retry_on_conflict(|| self.cancel_ticket_once(id, user)).await?;
        self.wake.wake();
        metrics::counter!("ticket_cancellations_total").increment(1);
        Ok(payment)
    }

    async fn cancel_ticket_once(
        &self,
        id: TicketId,
        user: UserId,
    ) -> Result<Payment, PaymentError> {
        let now = self.clock.now();
        let mut tx = self.uow.begin().await?;
        let ticket = TicketTx::ticket(&mut tx, id)
            .await?
            .filter(|ticket| ticket.holder == user)
            .ok_or(PaymentError::TicketNotFound(id))?;
        let seat = ReservationTx::get(&mut tx, ticket.reservation)
            .await?
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "ticket {id} names unknown reservation {}",
                    ticket.reservation
                )
            })?;
        match ticket.at_the_door() {
            AtTheDoor::Valid => {}
            // Voided by its cancellation, whose refund has not freed the
            // seat yet: this request is a retry of that one.
            AtTheDoor::Void if seat.status == ReservationStatus::Confirmed => {
                return Err(PaymentError::TicketAlreadyCancelled(id));
            }
            AtTheDoor::Void => return Err(PaymentError::TicketVoid(id)),
            AtTheDoor::CheckedIn => return Err(PaymentError::TicketCheckedIn(id)),
        }
        let paid_by = seat
            .payment
            .ok_or_else(|| anyhow::anyhow!("ticket {id}'s reservation {} is unpaid", seat.id))?;
        let payment = tx.payment(paid_by).await?.ok_or_else(|| {
            anyhow::anyhow!("reservation {} names unknown payment {paid_by}", seat.id)
        })?;
        if payment.user != user {
            return Err(PaymentError::TicketTransferred(id));
        }
        let starts_at = tx.starts_at(seat.schedule).await?.ok_or_else(|| {
            anyhow::anyhow!(
                "reservation {} names unknown schedule {}",
                seat.id,
                seat.schedule
            )
        })?;
        may_cancel_now(&payment, starts_at, self.cancel_cutoff, now)?;
        // The code stops admitting now, not when the refund is carried
        // out: no scan, and no transfer to someone else, can come between
        // the request and the refund. A transfer or scan that landed since
        // the read fails this compare-and-set; the retry reads why.
        if !tx.void_seen(&ticket, now).await? {
            return Err(
                Fault::conflict(format!("ticket {id} changed while it was cancelled")).into(),
            );
        }
        let voided = Ticket {
            status: TicketStatus::Void,
            ..ticket
        };
        tx.append(vec![voided.event(types::TICKET_VOIDED)], now)
            .await?;
        let step = seat_refund_step(seat.id);
        if !schedule_refund(&mut tx, TICKET_CANCEL_SAGA, &step, paid_by, now).await? {
            return Err(PaymentError::TicketAlreadyCancelled(id));
        }
        tx.commit().await?;
        Ok(payment)
    }
}

/// One seat's refund step, in the runner's transaction: the seat's ticket
/// is cancelled (its seat back on sale, `TicketCancelled`) and its price
/// credited with `PaymentRefunded`; the payment stays `confirmed` while
/// other seats are sold and is `refunded` with the last. Nothing to do
/// when the payment is no longer confirmed, the seat was cancelled already
/// (a whole cancellation got there first), or its ticket was admitted at
/// the door after the request.
pub(super) async fn refund_seat<T>(
    tx: &mut T,
    step: &Compensation,
    payment: Payment,
    now: DateTime<Utc>,
) -> Result<Attempt, PaymentError>
where
    T: PaymentTx + ReservationTx + SeatTx + WalletTx + TicketTx + OutboxWriter,
{
    let Some(seat) = refunded_seat(&step.step) else {
        return Err(Fault::unexpected(format!(
            "compensation {} has no seat in its step {:?}",
            step.id, step.step
        ))
        .into());
    };
    if !payment.is_refundable(TICKET_CANCEL_SAGA) {
        return Ok(Attempt::NothingToRefund);
    }
    let admitted = (tx.ticket_of(seat).await?).is_some_and(|t| t.checked_in.is_some());
    if admitted {
        // Scanned at the door after the request: the seat was used.
        return Ok(Attempt::NothingToRefund);
    }
    let Some(reservation) = ReservationTx::get(tx, seat).await? else {
        return Err(Fault::unexpected(format!("refund of unknown reservation {seat}")).into());
    };
    if !reservations::cancel_ticket(tx, seat, payment.id, now).await? {
        return Ok(Attempt::NothingToRefund);
    }
    let still_sold = (tx.of_payment(payment.id).await?.iter())
        .filter(|r| r.status == ReservationStatus::Confirmed)
        .count();
    let last = still_sold == 0;
    let amount = seat_refund(&payment, reservation.price, last);
    let status = if last {
        PaymentStatus::Refunded
    } else {
        PaymentStatus::Confirmed
    };
    let refunded = payment.refunded.saturating_add(amount);
    if !tx.record_refund(&payment, refunded, status, now).await? {
        return Err(Fault::conflict(format!(
            "payment {} changed while a seat was refunded",
            payment.id
        ))
        .into());
    }
    credit(tx, &payment, amount, now).await?;
    let event = NewEvent::new(
        types::PAYMENT_REFUNDED,
        "payment",
        payment.id,
        &payment.refunded_seat(TICKET_CANCEL_SAGA, seat, amount),
    );
    tx.append(vec![event], now).await?;
    metrics::counter!("seat_refunds_total").increment(1);
    Ok(Attempt::Cancelled(Payment {
        status,
        refunded,
        ..payment
    }))
}

/// Credits `amount` of `payment` back to the wallet that paid it (nothing
/// for nothing).
pub(super) async fn credit<T: WalletTx>(
    tx: &mut T,
    payment: &Payment,
    amount: Points,
    now: DateTime<Utc>,
) -> Result<(), PaymentError> {
    if amount == Points::ZERO {
        return Ok(());
    }
    tx.credit(Posting::refund(payment.user, amount, payment.id), now)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the refund would take the wallet past its cap"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;
    use crate::{
        catalog::domain::SeatState,
        kernel::{
            Points, ReservationId, ScheduleId,
            events::{ReservationChanged, types},
        },
        payment::{
            domain::{CANCEL_SAGA, CompensationStatus},
            usecase::fake::*,
        },
        reservation::{domain::Order, usecase::Confirmation},
        ticket::{
            domain::{Scan, TicketStatus},
            usecase::{fake::test_codes, issue_ticket, void_ticket},
        },
        wallet::domain::EntryKind,
    };

    impl Harness {
        /// Alice's order of `seats` seats for a show in three days, paid
        /// from a wallet of 5,000, confirmed, and each seat's ticket issued.
        async fn ticketed_order(&self, seats: usize) -> (Order, Payment, Vec<TicketId>) {
            let show = self.clock.now() + TimeDelta::days(3);
            self.store.world().shows.insert(ScheduleId(3), show);
            let (order, payment) = self.paid_order(seats).await;
            assert_eq!(self.confirm().await, Confirmation::Confirmed);
            self.answer(types::RESERVATION_CONFIRMED, &payment).await;
            let codes = test_codes();
            let mut tickets = std::mem::take(&mut self.store.world().tickets);
            let mut ids = Vec::new();
            for seat in &order.seats {
                issue_ticket(&mut tickets, &codes, &self.sold(seat.id), self.clock.now())
                    .await
                    .unwrap();
                ids.push(tickets.tickets.last().unwrap().id);
            }
            self.store.world().tickets = tickets;
            (order, self.status(payment.id), ids)
        }

        /// The seat's reservation as its ticket events name it.
        fn sold(&self, id: ReservationId) -> ReservationChanged {
            let world = self.store.world();
            let r = &world.reservations[&id];
            ReservationChanged {
                reservation_id: id.value(),
                user_id: r.user.value(),
                concert_id: r.concert.value(),
                schedule_id: r.schedule.value(),
                seat_id: r.seat.value(),
                payment_id: r.payment.map(|p| p.value()),
                order_id: r.order.map(|o| o.value()),
            }
        }

        /// What the tickets consumer does with every `TicketCancelled`.
        async fn void_cancelled(&self) {
            let cancelled = self.store.world().payloads(types::TICKET_CANCELLED);
            let mut tickets = std::mem::take(&mut self.store.world().tickets);
            for payload in cancelled {
                let changed: ReservationChanged = serde_json::from_value(payload).unwrap();
                void_ticket(&mut tickets, &test_codes(), &changed, self.clock.now())
                    .await
                    .unwrap();
            }
            self.store.world().tickets = tickets;
        }

        fn ticket_status(&self, id: TicketId) -> TicketStatus {
            let world = self.store.world();
            world
                .tickets
                .tickets
                .iter()
                .find(|t| t.id == id)
                .unwrap()
                .status
        }

        fn refunds(&self, payment: &Payment) -> Vec<i64> {
            let world = self.store.world();
            (world.ledger.iter())
                .filter(|(_, e, p)| e.kind == EntryKind::Refund && *p == Some(payment.id))
                .map(|(_, e, _)| e.amount)
                .collect()
        }
    }

    #[tokio::test]
    async fn one_ticket_of_two_is_refunded_once_its_seat_freed_and_the_payment_partial() {
        let h = harness();
        let (order, payment, tickets) = h.ticketed_order(2).await;
        assert_eq!(h.balance(ALICE), 5_000 - 2 * PRICE);

        let accepted = h.payments.cancel_ticket(tickets[0], ALICE).await.unwrap();
        assert_eq!(accepted.id, payment.id);
        let step = h.compensation();
        assert_eq!(step.saga, TICKET_CANCEL_SAGA);
        assert_eq!(step.step, seat_refund_step(order.seats[0].id));
        assert!(
            matches!(
                h.payments.cancel_ticket(tickets[0], ALICE).await,
                Err(PaymentError::TicketAlreadyCancelled(_))
            ),
            "a retry while the first is under way"
        );

        h.compensations.run_due().await.unwrap();
        h.compensations.run_due().await.unwrap();
        assert_eq!(h.balance(ALICE), 5_000 - PRICE, "one seat's price back");
        assert_eq!(h.refunds(&payment), vec![PRICE], "one ledger row");
        let now = h.status(payment.id);
        assert_eq!(now.status, PaymentStatus::Confirmed, "one seat still sold");
        assert_eq!(now.refunded, Points::new(PRICE).unwrap());
        {
            let world = h.store.world();
            let (freed, kept) = (&order.seats[0], &order.seats[1]);
            assert_eq!(world.seats[&freed.seat].state, SeatState::Available);
            assert!(matches!(
                world.seats[&kept.seat].state,
                SeatState::Sold { .. }
            ));
            let cancelled = world.payloads(types::TICKET_CANCELLED);
            assert_eq!(cancelled.len(), 1);
            assert_eq!(cancelled[0]["reservationId"], freed.id.value());
            let refunded = world.payloads(types::PAYMENT_REFUNDED);
            assert_eq!(refunded.len(), 1);
            assert_eq!(refunded[0]["amount"], PRICE);
            assert_eq!(refunded[0]["remaining"], PRICE);
            assert_eq!(refunded[0]["reason"], "ticket_cancelled");
        }
        h.void_cancelled().await;
        assert_eq!(h.ticket_status(tickets[0]), TicketStatus::Void);
        assert_eq!(h.ticket_status(tickets[1]), TicketStatus::Valid);
        assert!(matches!(
            h.payments.cancel_ticket(tickets[0], ALICE).await,
            Err(PaymentError::TicketVoid(_))
        ));

        // The last ticket refunds the rest and the payment with it.
        h.payments.cancel_ticket(tickets[1], ALICE).await.unwrap();
        h.compensations.run_due().await.unwrap();
        assert_eq!(h.balance(ALICE), 5_000);
        let now = h.status(payment.id);
        assert_eq!(now.status, PaymentStatus::Refunded);
        assert_eq!(now.refunded, payment.amount);
        assert_eq!(h.refunds(&payment), vec![PRICE, PRICE]);
    }

    #[tokio::test]
    async fn cancelling_the_whole_order_after_one_ticket_refunds_only_the_rest() {
        let h = harness();
        let (_, payment, tickets) = h.ticketed_order(3).await;
        h.payments.cancel_ticket(tickets[1], ALICE).await.unwrap();
        h.compensations.run_due().await.unwrap();
        assert_eq!(h.balance(ALICE), 5_000 - 2 * PRICE);

        h.payments.cancel(payment.id, ALICE).await.unwrap();
        h.compensations.run_due().await.unwrap();
        assert_eq!(h.balance(ALICE), 5_000, "everything back, nothing twice");
        assert_eq!(h.refunds(&payment), vec![PRICE, 2 * PRICE]);
        let now = h.status(payment.id);
        assert_eq!(now.status, PaymentStatus::Refunded);
        assert_eq!(now.refunded, payment.amount);
        assert_eq!(
            h.store.world().payloads(types::TICKET_CANCELLED).len(),
            3,
            "each ticket cancelled once"
        );
        assert!(
            (h.store.world().compensations.values())
                .all(|c| c.status == CompensationStatus::Succeeded)
        );
    }

    #[tokio::test]
    async fn a_ticket_refund_that_finds_the_whole_order_refunded_gives_nothing_back() {
        let h = harness();
        let (_, payment, tickets) = h.ticketed_order(2).await;
        h.payments.cancel_ticket(tickets[0], ALICE).await.unwrap();
        h.payments.cancel(payment.id, ALICE).await.unwrap();
        let whole = (h.store.world().compensations.values())
            .find(|c| c.saga == CANCEL_SAGA)
            .unwrap()
            .id;
        h.compensations.attempt(whole).await.unwrap();
        h.compensations.run_due().await.unwrap();
        assert_eq!(h.balance(ALICE), 5_000);
        assert_eq!(h.refunds(&payment), vec![2 * PRICE]);
    }

    #[tokio::test]
    async fn refused_for_others_void_admitted_transferred_or_late_tickets() {
        let h = harness();
        let (_, payment, tickets) = h.ticketed_order(3).await;
        assert!(matches!(
            h.payments.cancel_ticket(tickets[0], BOB).await,
            Err(PaymentError::TicketNotFound(_))
        ));
        assert!(matches!(
            h.payments.cancel_ticket(TicketId(9_999), ALICE).await,
            Err(PaymentError::TicketNotFound(_))
        ));
        {
            let mut world = h.store.world();
            let all = &mut world.tickets.tickets;
            all[0].status = TicketStatus::Void;
            all[1].checked_in = Some(Scan {
                gate: "north".into(),
                at: h.clock.now(),
            });
            all[2].holder = BOB;
        }
        assert!(
            matches!(
                h.payments.cancel_ticket(tickets[0], ALICE).await,
                Err(PaymentError::TicketAlreadyCancelled(_))
            ),
            "void while its seat is still sold: its cancellation is under way"
        );
        assert!(matches!(
            h.payments.cancel_ticket(tickets[1], ALICE).await,
            Err(PaymentError::TicketCheckedIn(_))
        ));
        assert!(matches!(
            h.payments.cancel_ticket(tickets[2], BOB).await,
            Err(PaymentError::TicketTransferred(_))
        ));
        h.store.world().tickets.tickets[2].holder = ALICE;
        h.clock.advance(TimeDelta::days(3) - TimeDelta::hours(1));
        assert!(matches!(
            h.payments.cancel_ticket(tickets[2], ALICE).await,
            Err(PaymentError::CancelWindowClosed(p)) if p == payment.id
        ));
        assert!(
            h.store.world().compensations.is_empty(),
            "nothing scheduled"
        );
    }

    #[tokio::test]
    async fn a_cancelled_ticket_is_void_from_the_request_on_and_voided_once() {
        let h = harness();
        let (_, _, tickets) = h.ticketed_order(2).await;
        h.payments.cancel_ticket(tickets[0], ALICE).await.unwrap();
        // Before the refund runs: its code admits nobody and cannot be
        // handed on (both need a valid ticket).
        assert_eq!(h.ticket_status(tickets[0]), TicketStatus::Void);
        assert_eq!(h.ticket_status(tickets[1]), TicketStatus::Valid);
        let voided = h.store.world().payloads(types::TICKET_VOIDED);
        assert_eq!(voided.len(), 1);
        assert_eq!(voided[0]["ticketId"], tickets[0].value());

        h.compensations.run_due().await.unwrap();
        h.void_cancelled().await;
        assert_eq!(
            h.store.world().payloads(types::TICKET_VOIDED).len(),
            1,
            "the seat's cancellation finds it void already"
        );
    }

    #[tokio::test]
    async fn a_ticket_admitted_before_its_refund_ran_is_not_refunded() {
        let h = harness();
        let (_, payment, tickets) = h.ticketed_order(2).await;
        h.payments.cancel_ticket(tickets[0], ALICE).await.unwrap();
        // A step scheduled before tickets were voided at the request (an
        // earlier release): its ticket stayed valid and was admitted.
        h.store.world().tickets.tickets[0].status = TicketStatus::Valid;
        h.store.world().tickets.tickets[0].checked_in = Some(Scan {
            gate: "north".into(),
            at: h.clock.now(),
        });
        h.compensations.run_due().await.unwrap();
        assert!(h.refunds(&payment).is_empty());
        assert_eq!(h.status(payment.id).refunded, Points::ZERO);
        assert!(h.store.world().payloads(types::TICKET_CANCELLED).is_empty());
        assert_eq!(h.compensation().status, CompensationStatus::Succeeded);
    }
}
