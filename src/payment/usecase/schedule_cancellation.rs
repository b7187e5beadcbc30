//! An admin cancels a schedule: the sale stops, then its holds are released
//! and its tickets refunded in batches until it is cancelled.
//! Not in catalog, where the schedule's status lives: the work is refunding
//! payments, the status changes only through catalog's `SeatTx` port, and
//! catalog cannot call payment (payment depends on it).

use chrono::{DateTime, Utc};

use super::{Compensations, PaymentService};
use crate::{
    catalog::{domain::ScheduleStatus, ports::SeatTx},
    kernel::{
        Clock, Page, PageRequest, PaymentId, ReservationId, ScheduleId, StoreError, Transaction,
        UnitOfWork, UserId,
        events::{CompensationScheduled, NewEvent, RelayWake, ScheduleCancellation, types},
        retry_on_conflict,
    },
    outbox::ports::OutboxWriter,
    payment::{
        domain::{
            CANCELLATION_BATCH, CancellationProgress, CancellationWork, MAX_SCHEDULE_PAGE,
            PaymentError, REFUND_STEP, SCHEDULE_CANCEL_SAGA, cancellation_finished,
        },
        ports::{PaymentPorts, PaymentRepository, PaymentTx},
    },
    reservation::{ports::ReservationRepository, usecase as reservations},
};

impl<P: PaymentPorts> PaymentService<P> {
    /// An admin cancels a schedule: its sale stops at once (no new holds)
    /// and the compensation runner then releases its holds and refunds its
    /// tickets in batches. Cancelling again changes nothing; the answer is
    /// the progress either way.
    pub async fn cancel_schedule(
        &self,
        schedule: ScheduleId,
        admin: UserId,
    ) -> Result<CancellationProgress, PaymentError> {
        retry_on_conflict(|| self.stop_sale(schedule, admin)).await?;
        self.wake.wake();
        self.cancellation(schedule).await
    }

    async fn stop_sale(&self, schedule: ScheduleId, admin: UserId) -> Result<(), PaymentError> {
        let now = self.clock.now();
        let mut tx = self.uow.begin().await?;
        // The write first (SQLite's lock); the read only tells why not.
        let step = (ScheduleStatus::OnSale, ScheduleStatus::Cancelling);
        let announced = types::SCHEDULE_CANCELLATION_STARTED;
        if change_sale(&mut tx, schedule, step, announced, Some(admin), now).await? {
            tx.commit().await?;
            metrics::counter!("schedule_cancellations_total").increment(1);
            return Ok(());
        }
        match tx.schedule_status(schedule).await? {
            None => Err(PaymentError::ScheduleNotFound(schedule)),
            Some(_) => Ok(()),
        }
    }

    /// A page of schedules, newest first, each with its sale status and
    /// cancellation progress (the console's Schedules tab).
    pub async fn schedules(
        &self,
        asked: PageRequest,
    ) -> Result<Page<CancellationProgress>, PaymentError> {
        let page = asked.at_most(MAX_SCHEDULE_PAGE);
        let ids = self.payments.schedule_ids(page).await?;
        let mut rows = Vec::with_capacity(ids.len());
        for id in ids {
            // A schedule deleted between the two reads is left out.
            if let Some(progress) = self
                .payments
                .cancellation_progress(id, SCHEDULE_CANCEL_SAGA)
                .await?
            {
                rows.push(progress);
            }
        }
        Ok(Page::of(rows, page, |progress| progress.schedule.value()))
    }

    /// How far the schedule's cancellation (if any) has come.
    pub async fn cancellation(
        &self,
        schedule: ScheduleId,
    ) -> Result<CancellationProgress, PaymentError> {
        self.payments
            .cancellation_progress(schedule, SCHEDULE_CANCEL_SAGA)
            .await?
            .ok_or(PaymentError::ScheduleNotFound(schedule))
    }
}

impl<P: PaymentPorts> Compensations<P> {
    /// One pass over the schedules being cancelled: releases a batch of
    /// each one's unpaid holds, schedules the refunds of a batch of its
    /// tickets, and declares it cancelled once nothing is left
    /// ([`cancellation_finished`]). Returns how much it did, so the runner
    /// comes straight back while there is more.
    pub async fn advance_cancellations(&self) -> Result<usize, PaymentError> {
        let mut done = 0;
        for (schedule, requested_at) in self.payments.cancelling_schedules(16).await? {
            let holds = self
                .reservations
                .unpaid_holds(schedule, CANCELLATION_BATCH)
                .await?;
            let mut released = 0;
            for id in holds {
                if retry_on_conflict(|| self.withdraw(id)).await? {
                    released += 1;
                }
            }
            let tickets = self
                .payments
                .tickets_to_refund(schedule, SCHEDULE_CANCEL_SAGA, CANCELLATION_BATCH)
                .await?;
            if !tickets.is_empty() {
                retry_on_conflict(|| self.schedule_refunds(&tickets)).await?;
            }
            let mut work = CancellationWork {
                holds: released,
                tickets: tickets.len(),
                unsettled: 0,
            };
            if work == CancellationWork::default() {
                work.unsettled = self
                    .payments
                    .unsettled(schedule, SCHEDULE_CANCEL_SAGA)
                    .await?;
                if cancellation_finished(work, requested_at, self.clock.now()) {
                    retry_on_conflict(|| self.finish_cancellation(schedule)).await?;
                }
            }
            done += work.holds + work.tickets;
        }
        if done > 0 {
            self.wake.wake();
        }
        Ok(done)
    }

    async fn withdraw(&self, hold: ReservationId) -> Result<bool, PaymentError> {
        let now = self.clock.now();
        let mut tx = self.uow.begin().await?;
        let withdrawn = reservations::withdraw_hold(&mut tx, hold, now).await?;
        tx.commit().await?;
        Ok(withdrawn)
    }

    async fn schedule_refunds(&self, tickets: &[PaymentId]) -> Result<(), PaymentError> {
        let now = self.clock.now();
        let mut tx = self.uow.begin().await?;
        let mut events = Vec::new();
        for payment in tickets {
            if tx
                .schedule_compensation(SCHEDULE_CANCEL_SAGA, REFUND_STEP, *payment, now)
                .await?
            {
                events.push(NewEvent::new(
                    types::COMPENSATION_SCHEDULED,
                    "payment",
                    *payment,
                    &CompensationScheduled {
                        payment_id: payment.value(),
                        saga: SCHEDULE_CANCEL_SAGA.into(),
                        step: REFUND_STEP.into(),
                    },
                ));
            }
        }
        tx.append(events, now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn finish_cancellation(&self, schedule: ScheduleId) -> Result<(), PaymentError> {
        let now = self.clock.now();
        let mut tx = self.uow.begin().await?;
        let step = (ScheduleStatus::Cancelling, ScheduleStatus::Cancelled);
        let announced = types::SCHEDULE_CANCELLED;
        if change_sale(&mut tx, schedule, step, announced, None, now).await? {
            tx.commit().await?;
        }
        Ok(())
    }
}

/// Moves the schedule's sale status `from` → `to` and announces it with
/// `event_type`, in the caller's transaction (which the caller commits);
/// false, with nothing written, when the status was not `from`.
async fn change_sale(
    tx: &mut (impl SeatTx + OutboxWriter),
    schedule: ScheduleId,
    (from, to): (ScheduleStatus, ScheduleStatus),
    event_type: &'static str,
    admin: Option<UserId>,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    if !tx.set_schedule_status(schedule, from, to, now).await? {
        return Ok(false);
    }
    let announcement = ScheduleCancellation {
        schedule_id: schedule.value(),
        admin_id: admin.map(UserId::value),
    };
    let event = NewEvent::new(event_type, "schedule", schedule, &announcement);
    tx.append(vec![event], now).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;
    use crate::{
        catalog::domain::SeatHold,
        kernel::ConcertId,
        payment::{domain::PaymentStatus, usecase::fake::*},
        reservation::domain::ReservationStatus,
    };

    #[tokio::test]
    async fn an_admin_cancels_a_schedule_its_holds_end_and_every_ticket_is_refunded_once() {
        let h = harness();
        for user in [ALICE, BOB] {
            h.fund(user, 10 * PRICE);
        }
        let show = h.clock.now() + TimeDelta::days(3);
        let alice = h.ticket(ALICE, show).await;
        let bob = h.ticket(BOB, show).await;
        let hold = h.held(BOB);
        // A payment on its way (paid, not yet confirmed) when the sale stops.
        let unconfirmed_hold = h.held(ALICE);
        let unconfirmed = h.pay(ALICE, unconfirmed_hold.id).await.unwrap();
        let schedule = ScheduleId(3);

        let started = h.payments.cancel_schedule(schedule, ADMIN).await.unwrap();
        assert_eq!(started.status, ScheduleStatus::Cancelling);
        assert_eq!(started.sold, 2);
        assert!(
            h.payments.cancel_schedule(schedule, ADMIN).await.is_ok(),
            "cancelling again changes nothing"
        );
        assert_eq!(
            h.store
                .world()
                .event_types()
                .iter()
                .filter(|t| **t == types::SCHEDULE_CANCELLATION_STARTED)
                .count(),
            1
        );
        assert!(matches!(
            h.payments.cancel_schedule(ScheduleId(404), ADMIN).await,
            Err(PaymentError::ScheduleNotFound(_))
        ));

        // The first pass releases the hold and schedules both refunds.
        assert_eq!(h.compensations.advance_cancellations().await.unwrap(), 3);
        assert_eq!(
            h.store.world().reservations[&hold.id].status,
            ReservationStatus::Released
        );
        assert_eq!(h.compensations.run_due().await.unwrap(), 2);
        for ticket in [&alice, &bob] {
            assert_eq!(h.status(ticket.id).status, PaymentStatus::Refunded);
        }
        assert_eq!(h.balance(BOB), 10 * PRICE);
        // Nothing new to do, but the paid payment is still on its way.
        assert_eq!(h.compensations.advance_cancellations().await.unwrap(), 0);
        h.clock.advance(TimeDelta::minutes(1));
        h.compensations.advance_cancellations().await.unwrap();
        assert_eq!(
            h.payments.cancellation(schedule).await.unwrap().status,
            ScheduleStatus::Cancelling,
            "a payment on its way keeps it cancelling"
        );
        // Its confirmation comes through, and that ticket is refunded too.
        h.answer(types::RESERVATION_CONFIRMED, &unconfirmed).await;
        assert_eq!(h.compensations.advance_cancellations().await.unwrap(), 1);
        h.compensations.run_due().await.unwrap();
        h.compensations.advance_cancellations().await.unwrap();
        let done = h.payments.cancellation(schedule).await.unwrap();
        assert_eq!(
            (done.status, done.refunds_done, done.refunds_pending),
            (ScheduleStatus::Cancelled, 3, 0)
        );
        assert_eq!(h.balance(ALICE), 10 * PRICE, "every point back, once");
        assert_eq!(
            h.store
                .world()
                .event_types()
                .iter()
                .filter(|t| **t == types::SCHEDULE_CANCELLED)
                .count(),
            1
        );
        assert!(h.alerts.all().is_empty());
    }

    #[tokio::test]
    async fn admins_page_through_schedules_newest_first_with_their_sale_status() {
        let h = harness();
        for schedule in [3, 4, 5] {
            h.store
                .world()
                .add_seat(ScheduleId(schedule), ConcertId(7), 1, PRICE);
        }
        h.payments
            .cancel_schedule(ScheduleId(4), ADMIN)
            .await
            .unwrap();
        let first = h
            .payments
            .schedules(PageRequest::asked(None, 2))
            .await
            .unwrap();
        let rows = |page: &Page<CancellationProgress>| {
            page.items
                .iter()
                .map(|p| (p.schedule, p.status, p.seats))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            rows(&first),
            vec![
                (ScheduleId(5), ScheduleStatus::OnSale, 1),
                (ScheduleId(4), ScheduleStatus::Cancelling, 1)
            ]
        );
        assert_eq!(first.next_cursor, Some(4));
        let second = h
            .payments
            .schedules(PageRequest::asked(first.next_cursor, 2))
            .await
            .unwrap();
        assert_eq!(
            rows(&second),
            vec![(ScheduleId(3), ScheduleStatus::OnSale, 1)]
        );
        assert_eq!(second.next_cursor, None);
    }

    #[tokio::test]
    async fn a_cancelled_schedule_takes_no_new_hold() {
        let h = harness();
        let hold = h.held(ALICE);
        let seat = hold.seat;
        h.payments
            .cancel_schedule(ScheduleId(3), ADMIN)
            .await
            .unwrap();
        let mut tx = h.store.begin().await.unwrap();
        let later = h.clock.now() + TimeDelta::minutes(10);
        assert!(
            tx.try_hold(
                SeatHold {
                    schedule: ScheduleId(3),
                    seat,
                    user: BOB,
                    until: later + TimeDelta::minutes(5),
                },
                later
            )
            .await
            .unwrap()
            .is_none(),
            "even a lapsed hold's seat is off sale"
        );
    }
}
