//! Payments and the payment side of the saga: the pay transaction, what a
//! confirmed or failed reservation does to the payment, and the refund
//! compensation with its retry policy.

use std::{sync::Arc, time::Duration};

use chrono::{TimeDelta, Utc};
use futures::{FutureExt, future::BoxFuture};

use super::{
    domain::{
        CONFIRMATION_GRACE_MINUTES, Compensation, CompensationStatus, NewPayment, Payment,
        PaymentError, PaymentStatus, REFUND_SAGA, REFUND_STEP, after_failure, can_retry,
    },
    ports::{PaymentRepository, PaymentTx},
};
use crate::{
    catalog::ports::SeatTx,
    kernel::{
        Clock, PaymentId, ReservationId, ScheduleId, Transaction, UnitOfWork, UserId,
        alerts::{AlertSink, NewAlert, Severity},
        events::{EventEnvelope, NewEvent, RelayWake, ReservationChanged, types},
        retry_on_conflict,
    },
    outbox::ports::{EventHandler, OutboxWriter},
    reservation::{
        domain::NotPayable,
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
}

impl<U, P, R, C, W> PaymentService<U, P, R, C, W>
where
    U: UnitOfWork,
    U::Tx: ReservationTx + SeatTx + WalletTx + PaymentTx + OutboxWriter,
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
        }
    }

    /// In one transaction: claim the user's unexpired hold, record the
    /// payment, take its price from the wallet and write `PaymentCompleted`.
    pub async fn pay(
        &self,
        user: UserId,
        reservation: ReservationId,
    ) -> Result<Payment, PaymentError> {
        let payment = retry_on_conflict(|| self.pay_once(user, reservation)).await?;
        self.wake.wake();
        metrics::counter!("payments_total").increment(1);
        Ok(payment)
    }

    async fn pay_once(&self, user: UserId, id: ReservationId) -> Result<Payment, PaymentError> {
        let now = self.clock.now();
        let mut tx = self.uow.begin().await?;
        // Dropping the transaction on any refusal undoes everything below.
        let keep_seat_until = now + TimeDelta::minutes(CONFIRMATION_GRACE_MINUTES);
        let hold =
            match reservations::claim_for_payment(&mut tx, id, user, keep_seat_until, now).await? {
                Ok(hold) => hold,
                Err(NotPayable::NotFound) => return Err(PaymentError::ReservationNotFound(id)),
                Err(NotPayable::Expired) => return Err(PaymentError::HoldExpired(id)),
                Err(NotPayable::AlreadyPaid) => return Err(PaymentError::AlreadyPaid(id)),
            };
        let payment = tx
            .insert_payment(
                &NewPayment {
                    user,
                    reservation: id,
                    concert: hold.concert,
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
        tx.commit().await?;
        Ok(payment)
    }

    /// The user's own payment; someone else's answers not found.
    pub async fn get(&self, id: PaymentId, user: UserId) -> Result<Payment, PaymentError> {
        match self.payments.get(id).await? {
            Some(payment) if payment.user == user => Ok(payment),
            _ => Err(PaymentError::NotFound(id)),
        }
    }

    /// The schedule of the user's reservation (for the waiting-room check).
    pub async fn schedule_of(
        &self,
        reservation: ReservationId,
        user: UserId,
    ) -> Result<ScheduleId, PaymentError> {
        let found = self
            .reservations
            .get(reservation)
            .await
            .map_err(|err| PaymentError::Unexpected(anyhow::anyhow!(err)))?;
        match found {
            Some(r) if r.user == user => Ok(r.schedule),
            _ => Err(PaymentError::ReservationNotFound(reservation)),
        }
    }

    pub async fn compensations(
        &self,
        status: Option<CompensationStatus>,
        limit: u64,
    ) -> Result<Vec<Compensation>, PaymentError> {
        self.payments
            .compensations(status, limit.clamp(1, 500))
            .await
    }

    /// An admin's retry of a step that gave up: pending again, due now,
    /// with its attempts counted afresh.
    pub async fn retry_compensation(&self, id: i64) -> Result<(), PaymentError> {
        let Some(compensation) = self.payments.compensation(id).await? else {
            return Err(PaymentError::CompensationNotFound(id));
        };
        if !can_retry(&compensation)
            || !self
                .payments
                .reopen_compensation(id, self.clock.now())
                .await?
        {
            return Err(PaymentError::CompensationNotFailed(id));
        }
        Ok(())
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

/// What the payment saga does with a reservation's answer.
pub async fn on_reservation_answer<T: PaymentTx>(
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
    if event_type == types::RESERVATION_CONFIRMED {
        // A redelivery, or a refund that got there first, changes nothing.
        tx.set_payment_status(payment, PaymentStatus::Paid, PaymentStatus::Confirmed, now)
            .await?;
    } else {
        tx.schedule_compensation(REFUND_SAGA, REFUND_STEP, payment, now)
            .await?;
    }
    Ok(())
}

impl<T: PaymentTx, C: Clock> EventHandler<T> for PaymentSaga<C> {
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
    /// The payment was refunded now.
    Refunded(Payment),
    /// Nothing was left to refund (already refunded or confirmed).
    NothingToRefund,
}

impl<U, P, C, W> Compensations<U, P, C, W>
where
    U: UnitOfWork,
    U::Tx: PaymentTx + WalletTx + OutboxWriter,
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

    /// Attempts every due step once.
    pub async fn run_due(&self) -> Result<(), PaymentError> {
        for id in self
            .payments
            .due_compensations(self.clock.now(), 50)
            .await?
        {
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
                Ok(Attempt::NothingToRefund) => {
                    metrics::counter!("compensations_total", "outcome" => "succeeded").increment(1);
                }
                Ok(Attempt::NotPending) => {}
                Err(err) => self.failed(id, &format!("{err:#}")).await?,
            }
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
        let outcome = if payment.is_refundable()
            && tx
                .set_payment_status(
                    payment.id,
                    PaymentStatus::Paid,
                    PaymentStatus::Refunded,
                    now,
                )
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
                &payment.refunded(),
            );
            tx.append(vec![event], now).await?;
            Attempt::Refunded(Payment {
                status: PaymentStatus::Refunded,
                ..payment
            })
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
        if !self.payments.record_failure(id, &next, now).await? {
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
