//! The compensation runner: due refund steps attempted, retried with backoff
//! and given up with an alert, and an admin's list and retry of them.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};

use futures::StreamExt;
use tracing::Instrument;

use super::{PaymentService, ticket_refund};
use crate::kernel::Fault;
use crate::{
    kernel::{
        Clock, Page, PageRequest, Transaction, UnitOfWork, UserId,
        alerts::{AlertSink, NewAlert, Severity},
        events::{CompensationRetried, NewEvent, RelayWake, types},
        failpoint, retry_on_conflict,
        trace::{self, TraceContext},
    },
    outbox::ports::OutboxWriter,
    payment::{
        domain::{
            Compensation, CompensationStatus, DueCompensation, MAX_COMPENSATION_PAGE, Payment,
            PaymentError, PaymentStatus, TICKET_CANCEL_SAGA, after_failure, can_retry,
            cancels_ticket,
        },
        ports::{PaymentPorts, PaymentRepository, PaymentTx},
    },
    reservation::usecase as reservations,
};

/// Due compensation steps taken per pass.
pub const DUE_BATCH: u64 = 400;
/// Due steps attempted together in one transaction (a mass cancellation's
/// refunds commit in batches; a failing step is retried alone).
pub const REFUND_BATCH: usize = 50;
/// Batches of one pass run at once.
pub const REFUND_CONCURRENCY: usize = 4;

/// Runs due compensation steps: the refund of a payment whose seat could
/// not be confirmed or whose ticket was cancelled, retried with backoff,
/// given up (and alerted) after [`MAX_COMPENSATION_ATTEMPTS`].
///
/// [`MAX_COMPENSATION_ATTEMPTS`]: crate::payment::domain::MAX_COMPENSATION_ATTEMPTS
#[derive(Clone)]
pub struct Compensations<P: PaymentPorts> {
    pub(super) uow: P::Uow,
    pub(super) payments: P::Payments,
    /// Where a cancellation finds the schedule's unpaid holds.
    pub(super) reservations: P::Reservations,
    pub(super) clock: P::Clock,
    pub(super) wake: P::Wake,
    alerts: Arc<dyn AlertSink>,
    retry_base: Duration,
}

/// A step's span, continuing the trace of the work that scheduled it.
fn traced(step: &DueCompensation) -> (tracing::Span, TraceContext) {
    let span = tracing::info_span!(
        "compensation",
        id = step.id,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    let ctx = trace::begin(&span, trace::parse(step.traceparent.as_deref()), None);
    (span, ctx)
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

impl<P: PaymentPorts> PaymentService<P> {
    /// The compensation runner over this service's adapters, alerting
    /// `alerts` when it gives a step up; a failed step's first retry comes
    /// `retry_base` after it.
    pub fn compensation_runner(
        &self,
        alerts: Arc<dyn AlertSink>,
        retry_base: Duration,
    ) -> Compensations<P> {
        Compensations {
            uow: self.uow.clone(),
            payments: self.payments.clone(),
            reservations: self.reservations.clone(),
            clock: self.clock.clone(),
            wake: self.wake.clone(),
            alerts,
            retry_base,
        }
    }
}

impl<P: PaymentPorts> Compensations<P> {
    /// Attempts every due step once (up to [`DUE_BATCH`]); how many it
    /// found. Steps are independent (each claims its own row), so they go
    /// in batches of [`REFUND_BATCH`], each batch one transaction, a few
    /// batches at once; a batch that fails is rolled back and its steps
    /// attempted one at a time, so one failing step holds no other back.
    pub async fn run_due(&self) -> Result<usize, PaymentError> {
        let due = self
            .payments
            .due_compensations(self.clock.now(), DUE_BATCH)
            .await?;
        let found = due.len();
        let batches: Vec<Vec<DueCompensation>> =
            due.chunks(REFUND_BATCH).map(<[_]>::to_vec).collect();
        let outcomes: Vec<Result<(), PaymentError>> = futures::stream::iter(batches)
            .map(|batch| self.run_batch(batch))
            .buffer_unordered(REFUND_CONCURRENCY)
            .collect()
            .await;
        outcomes.into_iter().collect::<Result<(), _>>()?;
        Ok(found)
    }

    async fn run_batch(&self, batch: Vec<DueCompensation>) -> Result<(), PaymentError> {
        if batch.len() > 1 {
            match self.attempt_batch(&batch).await {
                Ok(outcomes) => {
                    for outcome in outcomes {
                        self.settled(outcome).await;
                    }
                    return Ok(());
                }
                Err(err) => tracing::debug!(
                    steps = batch.len(),
                    error = %format!("{err:#}"),
                    "compensation: a batch failed, its steps are attempted one at a time"
                ),
            }
        }
        for step in batch {
            let (span, ctx) = traced(&step);
            ctx.scope(self.run_one(step.id).instrument(span)).await?;
        }
        Ok(())
    }

    /// The steps' attempts in one transaction; an error rolls them all back.
    async fn attempt_batch(&self, steps: &[DueCompensation]) -> Result<Vec<Attempt>, PaymentError> {
        let now = self.clock.now();
        let mut tx = self.uow.begin().await?;
        let mut outcomes = Vec::with_capacity(steps.len());
        for step in steps {
            // Each step's events carry the trace of the work that
            // scheduled it.
            let (span, ctx) = traced(step);
            let attempt = Self::attempt_in(&mut tx, step.id, now).instrument(span);
            outcomes.push(ctx.scope(attempt).await?);
        }
        tx.commit().await?;
        Ok(outcomes)
    }

    async fn run_one(&self, id: i64) -> Result<(), PaymentError> {
        let outcome = retry_on_conflict(|| self.attempt(id)).await;
        tracing::debug!(
            target: "boxoffice::trace",
            ok = outcome.is_ok(),
            "compensation: step attempted"
        );
        match outcome {
            Ok(outcome) => self.settled(outcome).await,
            Err(err) => self.failed(id, &format!("{err:#}")).await?,
        }
        Ok(())
    }

    /// What follows a committed attempt: the relay woken, the count, and
    /// for a payment refunded because its seat could not be confirmed, an
    /// alert.
    async fn settled(&self, outcome: Attempt) {
        match outcome {
            Attempt::Refunded(payment) => {
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
            Attempt::Cancelled(_) => {
                self.wake.wake();
                metrics::counter!("compensations_total", "outcome" => "succeeded").increment(1);
            }
            Attempt::NothingToRefund => {
                metrics::counter!("compensations_total", "outcome" => "succeeded").increment(1);
            }
            Attempt::NotPending => {}
        }
    }

    /// One attempt of the refund step, in one transaction.
    pub async fn attempt(&self, id: i64) -> Result<Attempt, PaymentError> {
        let now = self.clock.now();
        let mut tx = self.uow.begin().await?;
        let outcome = Self::attempt_in(&mut tx, id, now).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    /// The refund step's attempt in the caller's transaction (which the
    /// caller commits).
    async fn attempt_in(
        tx: &mut <P::Uow as UnitOfWork>::Tx,
        id: i64,
        now: DateTime<Utc>,
    ) -> Result<Attempt, PaymentError> {
        let Some(step) = tx.claim_compensation(id, now).await? else {
            return Ok(Attempt::NotPending);
        };
        let payment = tx.payment(step.payment).await?.ok_or_else(|| {
            anyhow::anyhow!("compensation {id} names unknown payment {}", step.payment)
        })?;
        let saga = step.saga.as_str();
        let outcome = if saga == TICKET_CANCEL_SAGA {
            ticket_refund::refund_seat(tx, &step, payment, now).await?
        } else if payment.is_refundable(saga) {
            // All that is still paid: seats cancelled one by one before
            // were refunded already.
            let rest = payment.unrefunded();
            if !tx
                .record_refund(&payment, payment.amount, PaymentStatus::Refunded, now)
                .await?
            {
                return Err(Fault::conflict(format!(
                    "payment {} changed while it was refunded",
                    payment.id
                ))
                .into());
            }
            ticket_refund::credit(tx, &payment, rest, now).await?;
            let event = NewEvent::new(
                types::PAYMENT_REFUNDED,
                "payment",
                payment.id,
                &payment.refunded(saga),
            );
            tx.append(vec![event], now).await?;
            let refunded = Payment {
                status: PaymentStatus::Refunded,
                refunded: payment.amount,
                ..payment
            };
            if cancels_ticket(saga) {
                // The tickets still sold go with the refund, in the same
                // transaction.
                reservations::cancel_tickets(tx, payment.id, now).await?;
                Attempt::Cancelled(refunded)
            } else {
                Attempt::Refunded(refunded)
            }
        } else {
            Attempt::NothingToRefund
        };
        tx.complete_compensation(id, now).await?;
        failpoint::step("compensation::refund")
            .await
            .map_err(|cause| PaymentError::Fault(Fault::Unexpected(cause)))?;
        Ok(outcome)
    }

    /// Records a failed attempt: retried later with backoff, or given up
    /// with a critical alert for an admin.
    async fn failed(&self, id: i64, error: &str) -> Result<(), PaymentError> {
        let now = self.clock.now();
        let Some(step) = self.payments.compensation(id).await? else {
            return Ok(());
        };
        let next = after_failure(id, step.attempts, error, self.retry_base, now);
        let event = next.event(&step);
        if !self.payments.record_failure(&next, event).await? {
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

impl<P: PaymentPorts> PaymentService<P> {
    /// A page of compensation steps, newest first.
    pub async fn compensations(
        &self,
        status: Option<CompensationStatus>,
        asked: PageRequest,
    ) -> Result<Page<Compensation>, PaymentError> {
        let read = |page| self.payments.compensations(status, page);
        asked.read(MAX_COMPENSATION_PAGE, read, |c| c.id).await
    }

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

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;
    use crate::{
        kernel::{PaymentId, Points, events::types},
        payment::{domain::MAX_COMPENSATION_ATTEMPTS, usecase::fake::*},
    };

    #[tokio::test]
    async fn a_refund_continues_the_trace_of_the_failure_that_scheduled_it() {
        use crate::kernel::trace::TraceContext;
        let h = harness();
        let payment = h.paid(ALICE).await;
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
    async fn due_refunds_commit_together_in_one_transaction() {
        let h = harness();
        let alice = h.unconfirmed(ALICE).await;
        let bob = h.unconfirmed(BOB).await;
        let commits = h.store.commits();

        assert_eq!(h.compensations.run_due().await.unwrap(), 2);
        assert_eq!(h.store.commits(), commits + 1, "one transaction for both");
        for payment in [alice, bob] {
            assert_eq!(h.status(payment.id).status, PaymentStatus::Refunded);
        }
        assert_eq!((h.balance(ALICE), h.balance(BOB)), (5_000, 5_000));
        let world = h.store.world();
        assert_eq!(world.payloads(types::PAYMENT_REFUNDED).len(), 2);
        assert!((world.compensations.values()).all(|c| c.status == CompensationStatus::Succeeded));
    }

    #[tokio::test]
    async fn a_failing_refund_in_a_batch_is_retried_alone_and_holds_the_others_not_back() {
        let h = harness();
        let alice = h.unconfirmed(ALICE).await;
        let bob = h.unconfirmed(BOB).await;
        // Alice's refund would pass her wallet's cap: it cannot be made.
        h.fund(ALICE, Points::MAX);

        assert_eq!(h.compensations.run_due().await.unwrap(), 2);
        assert_eq!(h.status(bob.id).status, PaymentStatus::Refunded);
        assert_eq!(h.balance(BOB), 5_000, "Bob's points back once");
        assert_eq!(h.status(alice.id).status, PaymentStatus::Paid);
        let world = h.store.world();
        let step = |payment: PaymentId| {
            (world.compensations.values())
                .find(|c| c.payment == payment)
                .cloned()
                .unwrap()
        };
        assert_eq!(step(bob.id).status, CompensationStatus::Succeeded);
        let failing = step(alice.id);
        assert_eq!(failing.status, CompensationStatus::Pending);
        assert_eq!(failing.attempts, 1, "one failure recorded, alone");
        assert!(failing.last_error.unwrap().contains("cap"));
        assert_eq!(world.payloads(types::PAYMENT_REFUNDED).len(), 1);
    }

    #[tokio::test]
    async fn a_refund_finds_nothing_to_give_back_for_a_confirmed_payment() {
        let h = harness();
        let payment = h.paid(ALICE).await;
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
        let payment = h.unconfirmed(ALICE).await;
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
        let retried = h.store.world().payloads(types::COMPENSATION_RETRIED);
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
            h.unconfirmed(ALICE).await;
        }
        let compensations = async |status, after, limit| {
            let asked = PageRequest::asked(after, limit);
            h.payments.compensations(status, asked).await.unwrap()
        };
        let one = compensations(None, None, 0).await;
        assert_eq!(one.items.len(), 1, "a page holds at least one");
        let rest = compensations(None, one.next_cursor, 10).await;
        assert_eq!(rest.items.len(), 2, "the older ones follow the cursor");
        assert_eq!(rest.next_cursor, None);
        assert!(rest.items.iter().all(|c| c.id < one.items[0].id));
        let all = compensations(None, None, u64::MAX).await;
        assert_eq!(all.items.len(), 3);
        let failed = compensations(Some(CompensationStatus::Failed), None, 10).await;
        assert!(failed.items.is_empty());
    }
}
