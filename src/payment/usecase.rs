//! Payments and the payment side of the saga: the pay transaction, what a
//! confirmed or failed reservation does to the payment, and the refund
//! compensation with its retry policy.

use std::{sync::Arc, time::Duration};

use chrono::{TimeDelta, Utc};
use futures::{FutureExt, StreamExt, future::BoxFuture};
use tracing::Instrument;

use crate::kernel::trace;

use super::{
    domain::{
        CANCEL_SAGA, CANCELLATION_BATCH, CONFIRMATION_GRACE_MINUTES, CancelRefused,
        CancellationProgress, CancellationWork, Compensation, CompensationStatus,
        DEFAULT_CANCEL_CUTOFF_MINUTES, MAX_COMPENSATION_PAGE, MAX_PAGE, MAX_SCHEDULE_PAGE,
        NewPayment, Payment, PaymentError, PaymentStatus, REFUND_SAGA, REFUND_STEP,
        SCHEDULE_CANCEL_SAGA, after_failure, can_retry, cancellation_finished, cancels_ticket,
        may_cancel,
    },
    ports::{PaymentRepository, PaymentTx},
};
use crate::{
    catalog::{
        domain::{ScheduleStatus, sales_closed},
        ports::SeatTx,
    },
    kernel::{
        Clock, Page, PageRequest, PaymentId, ReservationId, ScheduleId, Transaction, UnitOfWork,
        UserId,
        alerts::{AlertSink, NewAlert, Severity},
        events::{
            CompensationRetried, CompensationScheduled, EventEnvelope, NewEvent, PaymentConfirmed,
            RelayWake, ReservationChanged, ScheduleCancellation, types,
        },
        idempotency::{self, IdempotencyTx, RequestKey},
        retry_on_conflict,
    },
    outbox::ports::{EventHandler, OutboxWriter},
    reservation::{
        domain::{NotPayable, Reservation, ReservationError},
        ports::{ReservationRepository, ReservationTx},
        usecase as reservations,
    },
    wallet::{domain::EntryKind, ports::WalletTx},
};

#[derive(Clone)]
pub struct PaymentService<U, P, R, C, W> {
    uow: U,
    payments: P,
    reservations: R,
    clock: C,
    wake: W,
    /// How long before the show a buyer may still cancel.
    cancel_cutoff: TimeDelta,
    /// How long before the show sales (payments too) close.
    sales_close_before: TimeDelta,
}

impl<U, P, R, C, W> PaymentService<U, P, R, C, W>
where
    U: UnitOfWork,
    U::Tx: ReservationTx + SeatTx + WalletTx + PaymentTx + OutboxWriter + IdempotencyTx,
    P: PaymentRepository,
    R: ReservationRepository,
    C: Clock,
    W: RelayWake,
{
    pub fn new(uow: U, payments: P, reservations: R, clock: C, wake: W) -> Self {
        Self {
            uow,
            payments,
            reservations,
            clock,
            wake,
            cancel_cutoff: TimeDelta::minutes(DEFAULT_CANCEL_CUTOFF_MINUTES.into()),
            sales_close_before: TimeDelta::zero(),
        }
    }

    /// Payments are refused from `before` the show on (sales closed).
    #[must_use]
    pub fn with_sales_close(mut self, before: TimeDelta) -> Self {
        self.sales_close_before = before;
        self
    }

    /// Buyers may cancel until `cutoff` before the show.
    #[must_use]
    pub fn with_cancel_cutoff(mut self, cutoff: TimeDelta) -> Self {
        self.cancel_cutoff = cutoff;
        self
    }

    /// The user's own hold, read once before paying: its user, seat,
    /// schedule, price and concert never change, so the waiting-room check
    /// and the pay transaction both work from this copy.
    pub async fn hold_of(
        &self,
        user: UserId,
        reservation: ReservationId,
    ) -> Result<Reservation, PaymentError> {
        self.reservations
            .get(reservation)
            .await
            .map_err(from_reservations)?
            .filter(|r| r.user == user)
            .ok_or(PaymentError::ReservationNotFound(reservation))
    }

    /// The payment a request with `key` already made, if one did: a retry
    /// gets it back even though its queue token was finished by it.
    pub async fn replay(&self, key: Option<&RequestKey>) -> Result<Option<Payment>, PaymentError> {
        Ok(idempotency::replay(&self.uow, key).await?)
    }

    /// In one transaction: claim the user's unexpired hold, record the
    /// payment, take its price from the wallet and write `PaymentCompleted`.
    /// With a key, a retry of a payment that happened answers that payment
    /// as it was then, and takes nothing.
    pub async fn pay(
        &self,
        hold: &Reservation,
        key: Option<&RequestKey>,
    ) -> Result<Payment, PaymentError> {
        let payment = retry_on_conflict(|| self.pay_once(hold, key)).await?;
        self.wake.wake();
        metrics::counter!("payments_total").increment(1);
        Ok(payment)
    }

    async fn pay_once(
        &self,
        hold: &Reservation,
        key: Option<&RequestKey>,
    ) -> Result<Payment, PaymentError> {
        let user = hold.user;
        let now = self.clock.now();
        let mut tx = self.uow.begin().await?;
        // The key is the first row written: a retry with it waits here.
        if let Some(first) = idempotency::claim(&mut tx, key, now).await? {
            return Ok(first);
        }
        let id = hold.id;
        // Dropping the transaction on any refusal undoes everything below.
        let keep_seat_until = now + TimeDelta::minutes(CONFIRMATION_GRACE_MINUTES);
        match reservations::claim_for_payment(&mut tx, hold, user, keep_seat_until, now).await? {
            Ok(()) => {}
            Err(NotPayable::NotFound) => return Err(PaymentError::ReservationNotFound(id)),
            Err(NotPayable::Expired) => return Err(PaymentError::HoldExpired(id)),
            Err(NotPayable::AlreadyPaid) => return Err(PaymentError::AlreadyPaid(id)),
        }
        // After the claim (the write that takes the locks first); dropping
        // the transaction undoes it.
        if tx
            .starts_at(hold.schedule)
            .await?
            .is_some_and(|starts_at| sales_closed(starts_at, self.sales_close_before, now))
        {
            return Err(PaymentError::SalesClosed(hold.schedule));
        }
        // Lets a test keep the seat and reservation locked here while a
        // hold races.
        fail::fail_point!("payment::after_claim");
        let payment = tx
            .insert_payment(
                &NewPayment {
                    user,
                    reservation: id,
                    concert: hold.concert,
                    schedule: hold.schedule,
                    amount: hold.price,
                },
                now,
            )
            .await?;
        if tx.debit(user, hold.price, payment.id, now).await?.is_none() {
            return Err(PaymentError::InsufficientPoints);
        }
        reservations::mark_paid(&mut tx, id, payment.id, now).await?;
        tx.append(vec![payment.completed()], now).await?;
        fail::fail_point!("payment::before_commit", |_| Err(
            PaymentError::Unavailable(anyhow::anyhow!("failpoint payment::before_commit"))
        ));
        idempotency::finish(tx, key, &payment).await?;
        Ok(payment)
    }

    /// The user's own payment; someone else's answers not found.
    pub async fn get(&self, id: PaymentId, user: UserId) -> Result<Payment, PaymentError> {
        match self.payments.get(id).await? {
            Some(payment) if payment.user == user => Ok(payment),
            _ => Err(PaymentError::NotFound(id)),
        }
    }

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
        match may_cancel(&payment, starts_at, self.cancel_cutoff, now) {
            Ok(()) => {}
            Err(CancelRefused::NotConfirmed) => return Err(PaymentError::NotConfirmed(id)),
            Err(CancelRefused::WindowClosed) => return Err(PaymentError::CancelWindowClosed(id)),
        }
        if !tx
            .schedule_compensation(CANCEL_SAGA, REFUND_STEP, id, now)
            .await?
        {
            return Err(PaymentError::AlreadyCancelled(id));
        }
        let event = NewEvent::new(
            types::COMPENSATION_SCHEDULED,
            "payment",
            id,
            &CompensationScheduled {
                payment_id: id.value(),
                saga: CANCEL_SAGA.into(),
                step: REFUND_STEP.into(),
            },
        );
        tx.append(vec![event], now).await?;
        tx.commit().await?;
        Ok(())
    }

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
        if tx
            .set_schedule_status(
                schedule,
                ScheduleStatus::OnSale,
                ScheduleStatus::Cancelling,
                now,
            )
            .await?
        {
            let event = NewEvent::new(
                types::SCHEDULE_CANCELLATION_STARTED,
                "schedule",
                schedule,
                &ScheduleCancellation {
                    schedule_id: schedule.value(),
                    admin_id: Some(admin.value()),
                },
            );
            tx.append(vec![event], now).await?;
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
        after: Option<i64>,
        limit: u64,
    ) -> Result<Page<CancellationProgress>, PaymentError> {
        let page = PageRequest::new(after, limit, MAX_SCHEDULE_PAGE);
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
        Ok(Page::of(rows, page, |p| p.schedule.value()))
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

    /// A page of the user's own payments, newest first.
    pub async fn mine(
        &self,
        user: UserId,
        after: Option<i64>,
        limit: u64,
    ) -> Result<Page<Payment>, PaymentError> {
        let page = PageRequest::new(after, limit, MAX_PAGE);
        let rows = self.payments.of_user(user, page).await?;
        Ok(Page::of(rows, page, |p| p.id.value()))
    }

    /// A page of compensation steps, newest first.
    pub async fn compensations(
        &self,
        status: Option<CompensationStatus>,
        after: Option<i64>,
        limit: u64,
    ) -> Result<Page<Compensation>, PaymentError> {
        let page = PageRequest::new(after, limit, MAX_COMPENSATION_PAGE);
        let rows = self.payments.compensations(status, page).await?;
        Ok(Page::of(rows, page, |c| c.id))
    }

    /// An admin's retry of a step that gave up: pending again, due now,
    /// with its attempts counted afresh.
    /// An admin's retry of a failed compensation step: due at once, its
    /// attempts counted afresh, with `CompensationRetried` naming the admin.
    pub async fn retry_compensation(&self, id: i64, admin: UserId) -> Result<(), PaymentError> {
        let Some(compensation) = self.payments.compensation(id).await? else {
            return Err(PaymentError::CompensationNotFound(id));
        };
        if !can_retry(&compensation) {
            return Err(PaymentError::CompensationNotFailed(id));
        }
        let now = self.clock.now();
        let mut tx = self.uow.begin().await?;
        if !tx.reopen_compensation(id, now).await? {
            return Err(PaymentError::CompensationNotFailed(id));
        }
        let event = NewEvent::new(
            types::COMPENSATION_RETRIED,
            "payment",
            compensation.payment,
            &CompensationRetried {
                compensation_id: id,
                payment_id: compensation.payment.value(),
                admin_id: admin.value(),
            },
        );
        tx.append(vec![event], now).await?;
        tx.commit().await?;
        self.wake.wake();
        Ok(())
    }
}

/// A failure of the reservation module's reads, as the payment module
/// answers it: an outage stays an outage.
fn from_reservations(err: ReservationError) -> PaymentError {
    match err {
        ReservationError::Unavailable(cause) | ReservationError::Conflict(cause) => {
            PaymentError::Unavailable(cause)
        }
        other => PaymentError::Unexpected(anyhow::anyhow!(other)),
    }
}

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
) -> anyhow::Result<()> {
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

impl<T: PaymentTx + OutboxWriter, C: Clock> EventHandler<T> for PaymentSaga<C> {
    fn name(&self) -> &'static str {
        "payments"
    }

    fn handles(&self, event_type: &str) -> bool {
        event_type == types::RESERVATION_CONFIRMED
            || event_type == types::RESERVATION_CONFIRMATION_FAILED
    }

    fn handle<'a>(
        &'a self,
        tx: &'a mut T,
        event: &'a EventEnvelope,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        async move {
            let changed: ReservationChanged = serde_json::from_value(event.payload.clone())?;
            on_reservation_answer(tx, &event.event_type, &changed, self.clock.now()).await
        }
        .boxed()
    }
}

/// Due compensation steps taken per pass.
pub const DUE_BATCH: u64 = 50;
/// Steps of one pass run at once.
pub const REFUND_CONCURRENCY: usize = 8;

/// Runs due compensation steps: the refund of a payment whose seat could
/// not be confirmed, retried with backoff, given up (and alerted) after
/// [`super::domain::MAX_COMPENSATION_ATTEMPTS`].
#[derive(Clone)]
pub struct Compensations<U, P, C, W> {
    uow: U,
    payments: P,
    clock: C,
    wake: W,
    alerts: Arc<dyn AlertSink>,
    retry_base: Duration,
}

/// What one attempt of a step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// Another runner had it, or it is no longer pending.
    NotPending,
    /// The payment was refunded now (its seat could not be confirmed).
    Refunded(Payment),
    /// The ticket was cancelled and its payment refunded now.
    Cancelled(Payment),
    /// Nothing was left to refund (already refunded or confirmed).
    NothingToRefund,
}

impl<U, P, C, W> Compensations<U, P, C, W>
where
    U: UnitOfWork,
    U::Tx: PaymentTx + WalletTx + ReservationTx + SeatTx + OutboxWriter,
    P: PaymentRepository,
    C: Clock,
    W: RelayWake,
{
    pub fn new(
        uow: U,
        payments: P,
        clock: C,
        wake: W,
        alerts: Arc<dyn AlertSink>,
        retry_base: Duration,
    ) -> Self {
        Self {
            uow,
            payments,
            clock,
            wake,
            alerts,
            retry_base,
        }
    }

    /// Attempts every due step once (up to [`DUE_BATCH`]); how many it
    /// found.
    pub async fn run_due(&self) -> Result<usize, PaymentError> {
        let due = self
            .payments
            .due_compensations(self.clock.now(), DUE_BATCH)
            .await?;
        let found = due.len();
        // Steps are independent (each claims its own row), so a mass
        // cancellation's refunds run a few at a time.
        // Each attempt continues the trace of the work that scheduled the
        // step, so its log lines and events carry that trace id.
        let outcomes: Vec<Result<(), PaymentError>> = futures::stream::iter(due)
            .map(|step| {
                let span = tracing::info_span!(
                    "compensation",
                    id = step.id,
                    trace_id = tracing::field::Empty,
                    span_id = tracing::field::Empty,
                );
                let ctx = trace::begin(&span, trace::parse(step.traceparent.as_deref()), None);
                let attempt = async move {
                    let outcome = self.run_one(step.id).await;
                    tracing::debug!(
                        target: "boxoffice::trace",
                        ok = outcome.is_ok(),
                        "compensation: step attempted"
                    );
                    outcome
                };
                ctx.scope(attempt.instrument(span))
            })
            .buffer_unordered(REFUND_CONCURRENCY)
            .collect()
            .await;
        outcomes.into_iter().collect::<Result<(), _>>()?;
        Ok(found)
    }

    async fn run_one(&self, id: i64) -> Result<(), PaymentError> {
        match retry_on_conflict(|| self.attempt(id)).await {
            Ok(Attempt::Refunded(payment)) => {
                self.wake.wake();
                metrics::counter!("compensations_total", "outcome" => "succeeded").increment(1);
                self.alerts
                    .raise(NewAlert {
                        severity: Severity::Warning,
                        source: "saga:payment".into(),
                        message: format!(
                            "payment {} was refunded ({} points to user {}): its seat could not be confirmed",
                            payment.id, payment.amount, payment.user
                        ),
                    })
                    .await;
            }
            Ok(Attempt::Cancelled(_)) => {
                self.wake.wake();
                metrics::counter!("compensations_total", "outcome" => "succeeded").increment(1);
            }
            Ok(Attempt::NothingToRefund) => {
                metrics::counter!("compensations_total", "outcome" => "succeeded").increment(1);
            }
            Ok(Attempt::NotPending) => {}
            Err(err) => self.failed(id, &format!("{err:#}")).await?,
        }
        Ok(())
    }

    /// One pass over the schedules being cancelled: releases a batch of
    /// each one's unpaid holds, schedules the refunds of a batch of its
    /// tickets, and declares it cancelled once nothing is left
    /// ([`cancellation_finished`]). Returns how much it did, so the runner
    /// comes straight back while there is more.
    pub async fn advance_cancellations(&self) -> Result<usize, PaymentError> {
        let mut done = 0;
        for (schedule, requested_at) in self.payments.cancelling_schedules(16).await? {
            let holds = self
                .payments
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
        if tx
            .set_schedule_status(
                schedule,
                ScheduleStatus::Cancelling,
                ScheduleStatus::Cancelled,
                now,
            )
            .await?
        {
            let event = NewEvent::new(
                types::SCHEDULE_CANCELLED,
                "schedule",
                schedule,
                &ScheduleCancellation {
                    schedule_id: schedule.value(),
                    admin_id: None,
                },
            );
            tx.append(vec![event], now).await?;
            tx.commit().await?;
        }
        Ok(())
    }

    /// One attempt of the refund step, in one transaction.
    pub async fn attempt(&self, id: i64) -> Result<Attempt, PaymentError> {
        let now = self.clock.now();
        let mut tx = self.uow.begin().await?;
        let Some(step) = tx.claim_compensation(id, now).await? else {
            return Ok(Attempt::NotPending);
        };
        let payment = tx.payment(step.payment).await?.ok_or_else(|| {
            anyhow::anyhow!("compensation {id} names unknown payment {}", step.payment)
        })?;
        let saga = step.saga.as_str();
        let outcome = if payment.is_refundable(saga)
            && tx
                .set_payment_status(payment.id, payment.status, PaymentStatus::Refunded, now)
                .await?
        {
            tx.credit(
                payment.user,
                payment.amount,
                EntryKind::Refund,
                Some(payment.id),
                now,
            )
            .await?
            .ok_or_else(|| anyhow::anyhow!("the refund would take the wallet past its cap"))?;
            let event = NewEvent::new(
                types::PAYMENT_REFUNDED,
                "payment",
                payment.id,
                &payment.refunded(saga),
            );
            tx.append(vec![event], now).await?;
            let refunded = Payment {
                status: PaymentStatus::Refunded,
                ..payment
            };
            if cancels_ticket(saga) {
                // The ticket goes with the refund, in the same transaction.
                reservations::cancel_ticket(&mut tx, payment.reservation, payment.id, now).await?;
                Attempt::Cancelled(refunded)
            } else {
                Attempt::Refunded(refunded)
            }
        } else {
            Attempt::NothingToRefund
        };
        tx.complete_compensation(id, now).await?;
        fail::fail_point!("compensation::refund", |_| Err(PaymentError::Unexpected(
            anyhow::anyhow!("failpoint compensation::refund")
        )));
        tx.commit().await?;
        Ok(outcome)
    }

    /// Records a failed attempt: retried later with backoff, or given up
    /// with a critical alert for an admin.
    async fn failed(&self, id: i64, error: &str) -> Result<(), PaymentError> {
        let now = self.clock.now();
        let Some(step) = self.payments.compensation(id).await? else {
            return Ok(());
        };
        let next = after_failure(step.attempts, error, self.retry_base, now);
        let event = next.event(&step);
        if !self.payments.record_failure(id, &next, event, now).await? {
            return Ok(());
        }
        metrics::counter!("compensations_total", "outcome" => if next.gave_up() { "failed" } else { "retrying" }).increment(1);
        tracing::warn!(
            compensation = id,
            attempts = next.attempts,
            error,
            "compensation step failed"
        );
        if next.gave_up() {
            self.alerts
                .raise(NewAlert {
                    severity: Severity::Critical,
                    source: "saga:payment".into(),
                    message: format!(
                        "compensation {id} ({} {} for payment {}) failed {} times and stopped; last error: {error}. \
                         Fix the cause, then retry it (POST /v1/admin/compensations/{id}/retry).",
                        step.saga, step.step, step.payment, next.attempts
                    ),
                })
                .await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;
    use crate::{
        kernel::{
            CONFLICT_ATTEMPTS, ConcertId, ManualClock, Points, ScheduleId, events::PaymentCompleted,
        },
        payment::domain::MAX_COMPENSATION_ATTEMPTS,
        reservation::domain::{Reservation, ReservationStatus},
        testing::{MemoryUow, RaisedAlerts, Wakes},
    };

    const ALICE: UserId = UserId(1);
    const BOB: UserId = UserId(2);
    const ADMIN: UserId = UserId(9_000);
    const PRICE: i64 = 1_000;

    struct Harness {
        payments: PaymentService<MemoryUow, MemoryUow, MemoryUow, ManualClock, Wakes>,
        compensations: Compensations<MemoryUow, MemoryUow, ManualClock, Wakes>,
        store: MemoryUow,
        clock: ManualClock,
        wakes: Wakes,
        alerts: RaisedAlerts,
    }

    fn harness() -> Harness {
        let store = MemoryUow::default();
        let clock = ManualClock::new(Utc::now());
        let wakes = Wakes::default();
        let alerts = RaisedAlerts::default();
        Harness {
            payments: PaymentService::new(
                store.clone(),
                store.clone(),
                store.clone(),
                clock.clone(),
                wakes.clone(),
            ),
            compensations: Compensations::new(
                store.clone(),
                store.clone(),
                clock.clone(),
                wakes.clone(),
                Arc::new(alerts.clone()),
                Duration::from_secs(1),
            ),
            store,
            clock,
            wakes,
            alerts,
        }
    }

    impl Harness {
        /// A seat held by `user` for five minutes, as a won hold leaves it.
        fn held(&self, user: UserId) -> Reservation {
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

        /// What the API does: the user's hold, then the payment.
        async fn pay(&self, user: UserId, id: ReservationId) -> Result<Payment, PaymentError> {
            self.pay_keyed(user, id, None).await
        }

        async fn pay_keyed(
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

        fn fund(&self, user: UserId, points: i64) {
            self.store
                .world()
                .balances
                .insert(user, Points::new(points).unwrap());
        }

        fn balance(&self, user: UserId) -> i64 {
            self.store.world().balance(user)
        }

        /// What the consumer runner does with a reservation's answer.
        async fn answer(&self, event_type: &str, payment: &Payment) {
            let changed = ReservationChanged {
                reservation_id: payment.reservation.value(),
                user_id: payment.user.value(),
                concert_id: 7,
                schedule_id: 3,
                seat_id: 1,
                payment_id: Some(payment.id.value()),
            };
            let mut tx = self.store.begin().await.unwrap();
            on_reservation_answer(&mut tx, event_type, &changed, self.clock.now())
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }

        fn compensation(&self) -> Compensation {
            let world = self.store.world();
            assert_eq!(world.compensations.len(), 1, "one compensation");
            world.compensations.values().next().cloned().unwrap()
        }

        /// A confirmed ticket of `user`'s for a show starting at `show`,
        /// as the saga leaves it: paid, the seat sold, the payment confirmed.
        async fn ticket(&self, user: UserId, show: chrono::DateTime<Utc>) -> Payment {
            self.store.world().shows.insert(ScheduleId(3), show);
            let hold = self.held(user);
            let payment = self.pay(user, hold.id).await.unwrap();
            let completed = PaymentCompleted {
                payment_id: payment.id.value(),
                reservation_id: hold.id.value(),
                user_id: user.value(),
                amount: PRICE,
                concert_id: 7,
            };
            let mut tx = self.store.begin().await.unwrap();
            reservations::confirm_payment(&mut tx, &completed, self.clock.now())
                .await
                .unwrap();
            tx.commit().await.unwrap();
            self.answer(types::RESERVATION_CONFIRMED, &payment).await;
            self.status(payment.id)
        }

        fn status(&self, id: PaymentId) -> Payment {
            self.store.world().payments[&id].clone()
        }
    }

    #[tokio::test]
    async fn a_buyer_cancels_a_ticket_once_and_gets_the_points_and_the_seat_back() {
        let h = harness();
        h.fund(ALICE, 10 * PRICE);
        let show = h.clock.now() + TimeDelta::days(3);
        let ticket = h.ticket(ALICE, show).await;
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
            let refunded: Vec<_> = world
                .outbox
                .iter()
                .filter(|e| e.event_type == types::PAYMENT_REFUNDED)
                .collect();
            assert_eq!(refunded.len(), 1);
            assert_eq!(refunded[0].payload["reason"], "cancelled");
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
    async fn no_payment_once_sales_close_and_nothing_is_taken() {
        let h = harness();
        h.fund(ALICE, 10 * PRICE);
        h.store
            .world()
            .shows
            .insert(ScheduleId(3), h.clock.now() + TimeDelta::minutes(20));
        let hold = h.held(ALICE);
        let closing = h.payments.clone().with_sales_close(TimeDelta::minutes(30));
        let copy = closing.hold_of(ALICE, hold.id).await.unwrap();
        assert!(matches!(
            closing.pay(&copy, None).await,
            Err(PaymentError::SalesClosed(ScheduleId(3)))
        ));
        assert_eq!(h.balance(ALICE), 10 * PRICE, "nothing debited");
        assert!(h.store.world().payments.is_empty(), "nothing recorded");
        assert_eq!(
            h.store.world().reservations[&hold.id].status,
            ReservationStatus::Held,
            "the claim rolled back"
        );
        // Without the close (sales until the show starts) it pays.
        h.pay(ALICE, hold.id).await.unwrap();
    }

    #[tokio::test]
    async fn cancelling_is_refused_past_the_cutoff_before_confirmation_and_for_others() {
        let h = harness();
        h.fund(ALICE, 10 * PRICE);
        let soon = h.clock.now() + TimeDelta::hours(2);
        let ticket = h.ticket(ALICE, soon).await;
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
        let first = h.payments.schedules(None, 2).await.unwrap();
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
        let second = h.payments.schedules(first.next_cursor, 2).await.unwrap();
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
                ScheduleId(3),
                seat,
                BOB,
                later + TimeDelta::minutes(5),
                later
            )
            .await
            .unwrap()
            .is_none(),
            "even a lapsed hold's seat is off sale"
        );
    }

    #[tokio::test]
    async fn a_cancellation_whose_refund_fails_is_retried_and_refunds_once() {
        let h = harness();
        h.fund(ALICE, 10 * PRICE);
        let ticket = h.ticket(ALICE, h.clock.now() + TimeDelta::days(3)).await;
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

    #[tokio::test]
    async fn buyers_list_their_own_payments_newest_first_in_pages() {
        let h = harness();
        h.fund(ALICE, 10 * PRICE);
        h.fund(BOB, 10 * PRICE);
        let mut alice = Vec::new();
        for _ in 0..3 {
            let hold = h.held(ALICE);
            alice.push(h.pay(ALICE, hold.id).await.unwrap().id);
        }
        let hold = h.held(BOB);
        let bob = h.pay(BOB, hold.id).await.unwrap().id;
        let ids = |page: &Page<Payment>| page.items.iter().map(|p| p.id).collect::<Vec<_>>();

        let first = h.payments.mine(ALICE, None, 2).await.unwrap();
        assert_eq!(ids(&first), vec![alice[2], alice[1]]);
        assert_eq!(first.next_cursor, Some(alice[1].value()));
        let second = h.payments.mine(ALICE, first.next_cursor, 2).await.unwrap();
        assert_eq!(ids(&second), vec![alice[0]]);
        assert_eq!(second.next_cursor, None);
        assert_eq!(
            ids(&h.payments.mine(BOB, None, 20).await.unwrap()),
            vec![bob]
        );
        h.store.set_down(true);
        assert!(matches!(
            h.payments.mine(ALICE, None, 20).await,
            Err(PaymentError::Unavailable(_))
        ));
    }

    #[tokio::test]
    async fn paying_claims_the_hold_debits_the_wallet_and_writes_the_event_at_once() {
        let h = harness();
        let r = h.held(ALICE);
        h.fund(ALICE, 5_000);
        let payment = h.pay(ALICE, r.id).await.unwrap();
        assert_eq!(payment.status, PaymentStatus::Paid);
        assert_eq!(payment.amount.value(), PRICE);
        assert_eq!(h.balance(ALICE), 4_000);
        let world = h.store.world();
        assert_eq!(world.reservations[&r.id].payment, Some(payment.id));
        let (_, row, paid_for) = world.ledger.last().cloned().unwrap();
        assert_eq!((row.amount, paid_for), (-PRICE, Some(payment.id)));
        assert!(matches!(
            world.seats[&r.seat].state,
            crate::catalog::domain::SeatState::Held { until, .. }
                if until == h.clock.now() + TimeDelta::minutes(CONFIRMATION_GRACE_MINUTES)
        ));
        assert_eq!(world.event_types(), vec![types::PAYMENT_COMPLETED]);
        assert_eq!(world.outbox[0].payload["reservationId"], r.id.value());
        drop(world);
        assert_eq!(h.wakes.count(), 1);
    }

    #[tokio::test]
    async fn too_few_points_refuses_the_payment_and_changes_nothing() {
        let h = harness();
        let r = h.held(ALICE);
        h.fund(ALICE, PRICE - 1);
        assert!(matches!(
            h.pay(ALICE, r.id).await,
            Err(PaymentError::InsufficientPoints)
        ));
        let world = h.store.world();
        assert!(world.payments.is_empty());
        assert_eq!(world.reservations[&r.id].payment, None);
        assert!(world.outbox.is_empty());
        assert_eq!(world.balance(ALICE), PRICE - 1);
        drop(world);
        assert_eq!(h.wakes.count(), 0);
    }

    #[tokio::test]
    async fn each_refusal_of_the_hold_has_its_own_answer() {
        let h = harness();
        let r = h.held(ALICE);
        h.fund(ALICE, 10_000);
        assert!(matches!(
            h.pay(BOB, r.id).await,
            Err(PaymentError::ReservationNotFound(_))
        ));
        assert!(matches!(
            h.pay(ALICE, ReservationId(4_242)).await,
            Err(PaymentError::ReservationNotFound(_))
        ));
        h.pay(ALICE, r.id).await.unwrap();
        assert!(matches!(
            h.pay(ALICE, r.id).await,
            Err(PaymentError::AlreadyPaid(_))
        ));
        let lapsed = h.held(ALICE);
        h.clock.advance(TimeDelta::minutes(5));
        assert!(matches!(
            h.pay(ALICE, lapsed.id).await,
            Err(PaymentError::HoldExpired(_))
        ));
        assert_eq!(h.balance(ALICE), 10_000 - PRICE, "only one payment taken");
    }

    #[tokio::test]
    async fn a_deadlocked_payment_is_run_again_and_gives_up_after_a_bound() {
        let h = harness();
        let r = h.held(ALICE);
        h.fund(ALICE, 5_000);
        h.store.conflict_next_commits(CONFLICT_ATTEMPTS - 1);
        h.pay(ALICE, r.id).await.unwrap();
        assert_eq!(h.balance(ALICE), 4_000, "debited once");

        let other = h.held(ALICE);
        h.store.conflict_next_commits(CONFLICT_ATTEMPTS);
        assert!(matches!(
            h.pay(ALICE, other.id).await,
            Err(PaymentError::Conflict(_))
        ));
        assert_eq!(h.balance(ALICE), 4_000);
        assert_eq!(h.store.world().payments.len(), 1);
    }

    #[tokio::test]
    async fn an_outage_is_unavailable() {
        let h = harness();
        let r = h.held(ALICE);
        h.store.set_down(true);
        assert!(matches!(
            h.pay(ALICE, r.id).await,
            Err(PaymentError::Unavailable(_))
        ));
    }

    #[tokio::test]
    async fn a_user_sees_their_own_payment_and_hold_only() {
        let h = harness();
        let r = h.held(ALICE);
        h.fund(ALICE, 5_000);
        let payment = h.pay(ALICE, r.id).await.unwrap();
        assert_eq!(h.payments.get(payment.id, ALICE).await.unwrap(), payment);
        assert!(matches!(
            h.payments.get(payment.id, BOB).await,
            Err(PaymentError::NotFound(_))
        ));
        assert_eq!(
            h.payments.hold_of(ALICE, r.id).await.unwrap().schedule,
            ScheduleId(3)
        );
        assert!(matches!(
            h.payments.hold_of(BOB, r.id).await,
            Err(PaymentError::ReservationNotFound(_))
        ));
    }

    fn pay_key(reservation: ReservationId, key: &str) -> RequestKey {
        RequestKey::new(ALICE, "payment.pay", key, &reservation).unwrap()
    }

    #[tokio::test]
    async fn a_retried_key_gets_the_first_payment_back_and_pays_nothing_more() {
        let h = harness();
        let r = h.held(ALICE);
        h.fund(ALICE, 5_000);
        let key = pay_key(r.id, "p");
        let first = h.pay_keyed(ALICE, r.id, Some(&key)).await.unwrap();
        // The saga moves on; the retry still hears the answer of then.
        h.answer(types::RESERVATION_CONFIRMED, &first).await;
        let again = h.pay_keyed(ALICE, r.id, Some(&key)).await.unwrap();
        assert_eq!(again, first);
        assert_eq!(again.status, PaymentStatus::Paid);
        // Straight into the transaction (no replay look first): the claim
        // answers it just the same.
        let hold = h.payments.hold_of(ALICE, r.id).await.unwrap();
        assert_eq!(h.payments.pay(&hold, Some(&key)).await.unwrap(), first);
        assert_eq!(h.balance(ALICE), 4_000, "debited once");
        assert_eq!(h.store.world().payments.len(), 1);

        // The same key for another hold is refused and changes nothing.
        let other = h.held(ALICE);
        assert!(matches!(
            h.pay_keyed(ALICE, other.id, Some(&pay_key(other.id, "p")))
                .await,
            Err(PaymentError::KeyReused)
        ));
        let hold = h.payments.hold_of(ALICE, other.id).await.unwrap();
        assert!(matches!(
            h.payments.pay(&hold, Some(&pay_key(other.id, "p"))).await,
            Err(PaymentError::KeyReused)
        ));
        assert_eq!(h.balance(ALICE), 4_000);
    }

    #[tokio::test]
    async fn a_refused_or_failed_payment_leaves_its_key_free_for_a_retry() {
        let h = harness();
        let r = h.held(ALICE);
        let key = pay_key(r.id, "p");
        assert!(matches!(
            h.pay_keyed(ALICE, r.id, Some(&key)).await,
            Err(PaymentError::InsufficientPoints)
        ));
        h.fund(ALICE, 5_000);
        h.store.conflict_next_commits(CONFLICT_ATTEMPTS);
        assert!(matches!(
            h.pay_keyed(ALICE, r.id, Some(&key)).await,
            Err(PaymentError::Conflict(_))
        ));
        assert!(h.store.world().keys.is_empty(), "no key left behind");
        let paid = h.pay_keyed(ALICE, r.id, Some(&key)).await.unwrap();
        assert_eq!(paid.amount.value(), PRICE);
        assert_eq!(h.balance(ALICE), 4_000);
    }

    #[tokio::test]
    async fn a_confirmed_reservation_confirms_its_payment_once() {
        let h = harness();
        let r = h.held(ALICE);
        h.fund(ALICE, 5_000);
        let payment = h.pay(ALICE, r.id).await.unwrap();
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
        let r = h.held(ALICE);
        h.fund(ALICE, 5_000);
        let payment = h.pay(ALICE, r.id).await.unwrap();
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

    #[tokio::test]
    async fn a_refund_continues_the_trace_of_the_failure_that_scheduled_it() {
        use crate::kernel::trace::TraceContext;
        let h = harness();
        let r = h.held(ALICE);
        h.fund(ALICE, 5_000);
        let payment = h.pay(ALICE, r.id).await.unwrap();
        // The consumer handling the failure works in the buyer's trace.
        let handling = TraceContext::root(None);
        handling
            .scope(h.answer(types::RESERVATION_CONFIRMATION_FAILED, &payment))
            .await;
        assert_eq!(
            h.compensation().traceparent,
            Some(handling.traceparent()),
            "the step keeps the trace it was scheduled in"
        );

        // The runner works outside any trace; the attempt continues the step's.
        h.compensations.run_due().await.unwrap();
        let world = h.store.world();
        let refunded = world
            .outbox
            .iter()
            .find(|e| e.event_type == types::PAYMENT_REFUNDED)
            .expect("a refund event");
        let ctx = TraceContext::parse(refunded.traceparent.as_deref().unwrap()).unwrap();
        assert_eq!(ctx.trace_id, handling.trace_id, "the same trace");
        assert_ne!(ctx.span_id, handling.span_id, "a later span of it");
    }

    #[tokio::test]
    async fn a_refund_finds_nothing_to_give_back_for_a_confirmed_payment() {
        let h = harness();
        let r = h.held(ALICE);
        h.fund(ALICE, 5_000);
        let payment = h.pay(ALICE, r.id).await.unwrap();
        h.answer(types::RESERVATION_CONFIRMED, &payment).await;
        h.answer(types::RESERVATION_CONFIRMATION_FAILED, &payment)
            .await;
        let step = h.compensation();
        assert_eq!(
            h.compensations.attempt(step.id).await.unwrap(),
            Attempt::NothingToRefund
        );
        assert_eq!(h.balance(ALICE), 4_000);
        assert_eq!(h.compensation().status, CompensationStatus::Succeeded);
        assert_eq!(
            h.compensations.attempt(step.id).await.unwrap(),
            Attempt::NotPending
        );
    }

    #[tokio::test]
    async fn a_failing_refund_backs_off_gives_up_with_an_alert_and_an_admin_retries_it() {
        let h = harness();
        let r = h.held(ALICE);
        h.fund(ALICE, 5_000);
        let payment = h.pay(ALICE, r.id).await.unwrap();
        h.answer(types::RESERVATION_CONFIRMATION_FAILED, &payment)
            .await;
        // A refund that would pass the wallet's cap cannot be made.
        h.fund(ALICE, Points::MAX);

        h.compensations.run_due().await.unwrap();
        let step = h.compensation();
        assert_eq!(step.status, CompensationStatus::Pending);
        assert_eq!(step.attempts, 1);
        assert_eq!(step.next_attempt_at, h.clock.now() + TimeDelta::seconds(1));
        assert!(step.last_error.unwrap().contains("cap"));
        h.compensations.run_due().await.unwrap();
        assert_eq!(h.compensation().attempts, 1, "not due yet");

        for _ in 1..MAX_COMPENSATION_ATTEMPTS {
            h.clock.advance(TimeDelta::seconds(60));
            h.compensations.run_due().await.unwrap();
        }
        let step = h.compensation();
        assert_eq!(step.status, CompensationStatus::Failed);
        assert_eq!(step.attempts, MAX_COMPENSATION_ATTEMPTS);
        let alerts = h.alerts.all();
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].severity, Severity::Critical);
        assert_eq!(
            h.store.world().payments[&payment.id].status,
            PaymentStatus::Paid
        );
        // Every failed attempt is an event; the last says it gave up.
        let failures: Vec<(&str, serde_json::Value)> = (h.store.world().outbox.iter())
            .filter(|e| {
                e.aggregate_type == "compensation" && e.event_type != types::COMPENSATION_SCHEDULED
            })
            .map(|e| (e.event_type, e.payload.clone()))
            .collect();
        assert_eq!(failures.len(), MAX_COMPENSATION_ATTEMPTS as usize);
        assert!(
            failures[..failures.len() - 1]
                .iter()
                .all(|(t, p)| *t == types::COMPENSATION_FAILED
                    && p["nextAttemptAt"].is_string()
                    && p["error"].as_str().unwrap().contains("cap"))
        );
        let (last, payload) = failures.last().unwrap();
        assert_eq!(*last, types::COMPENSATION_GAVE_UP);
        assert_eq!(payload["attempts"], MAX_COMPENSATION_ATTEMPTS);
        assert_eq!(payload["compensationId"], step.id);
        assert!(payload.get("nextAttemptAt").is_none());

        // The cause is fixed, an admin retries, and the refund goes through.
        h.fund(ALICE, 0);
        assert!(matches!(
            h.payments.retry_compensation(9_999, ADMIN).await,
            Err(PaymentError::CompensationNotFound(_))
        ));
        h.payments.retry_compensation(step.id, ADMIN).await.unwrap();
        assert!(matches!(
            h.payments.retry_compensation(step.id, ADMIN).await,
            Err(PaymentError::CompensationNotFailed(_))
        ));
        assert_eq!(h.compensation().attempts, 0);
        let retried: Vec<_> = h
            .store
            .world()
            .outbox
            .iter()
            .filter(|e| e.event_type == types::COMPENSATION_RETRIED)
            .map(|e| e.payload.clone())
            .collect();
        assert_eq!(
            retried,
            vec![serde_json::json!({
                "compensationId": step.id,
                "paymentId": payment.id.value(),
                "adminId": ADMIN.value(),
            })],
            "one retry, naming the admin"
        );
        h.compensations.run_due().await.unwrap();
        assert_eq!(h.compensation().status, CompensationStatus::Succeeded);
        assert_eq!(h.balance(ALICE), PRICE);
    }

    #[tokio::test]
    async fn the_admin_list_is_bounded_and_filtered() {
        let h = harness();
        for _ in 0..3 {
            let r = h.held(ALICE);
            h.fund(ALICE, 5_000);
            let payment = h.pay(ALICE, r.id).await.unwrap();
            h.answer(types::RESERVATION_CONFIRMATION_FAILED, &payment)
                .await;
        }
        let one = h.payments.compensations(None, None, 0).await.unwrap();
        assert_eq!(one.items.len(), 1, "a page holds at least one");
        let rest = h
            .payments
            .compensations(None, one.next_cursor, 10)
            .await
            .unwrap();
        assert_eq!(rest.items.len(), 2, "the older ones follow the cursor");
        assert_eq!(rest.next_cursor, None);
        assert!(rest.items.iter().all(|c| c.id < one.items[0].id));
        let all = h
            .payments
            .compensations(None, None, u64::MAX)
            .await
            .unwrap();
        assert_eq!(all.items.len(), 3);
        assert!(
            h.payments
                .compensations(Some(CompensationStatus::Failed), None, 10)
                .await
                .unwrap()
                .items
                .is_empty()
        );
    }
}
