//! Payments and their compensations in the world: the payment transaction
//! port and the payment reads (schedule cancellation's progress included).

use chrono::{DateTime, Utc};

use super::{MemTx, MemoryUow, World, newest_first};
use crate::{
    catalog::domain::{ScheduleStatus, SeatState},
    kernel::{PageRequest, PaymentId, Points, ScheduleId, StoreError, UserId, events::NewEvent},
    payment::{
        domain::{
            AfterFailure, CancellationProgress, Compensation, CompensationStatus, DueCompensation,
            NewPayment, Payment, PaymentError, PaymentStatus,
        },
        ports::{PaymentRepository, PaymentTx},
    },
};

impl World {
    /// The schedule of the seat a payment paid for.
    pub fn schedule_of(&self, payment: &Payment) -> Option<ScheduleId> {
        self.reservations
            .get(&payment.reservation)
            .map(|reservation| reservation.schedule)
    }

    /// The saga's compensations of payments for seats of this schedule.
    fn refunds_of(&self, schedule: ScheduleId, saga: &str) -> impl Iterator<Item = &Compensation> {
        self.compensations.values().filter(move |compensation| {
            compensation.saga == saga
                && self
                    .payments
                    .get(&compensation.payment)
                    .is_some_and(|payment| self.schedule_of(payment) == Some(schedule))
        })
    }
}

impl PaymentTx for MemTx {
    async fn reopen_compensation(
        &mut self,
        id: i64,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.check()?;
        match self.work.compensations.get_mut(&id) {
            Some(failed) if failed.status == CompensationStatus::Failed => {
                failed.status = CompensationStatus::Pending;
                failed.attempts = 0;
                failed.next_attempt_at = now;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn insert_payment(
        &mut self,
        new: &NewPayment,
        _: DateTime<Utc>,
    ) -> Result<Payment, StoreError> {
        self.check()?;
        let payment = Payment {
            id: PaymentId(self.work.next_id()),
            user: new.user,
            reservation: new.reservation,
            order: new.order,
            concert: new.concert,
            amount: new.amount,
            status: PaymentStatus::Paid,
            refunded: Points::ZERO,
        };
        self.work.payments.insert(payment.id, payment.clone());
        Ok(payment)
    }

    async fn payment(&mut self, id: PaymentId) -> Result<Option<Payment>, StoreError> {
        self.check()?;
        Ok(self.work.payments.get(&id).cloned())
    }

    async fn set_payment_status(
        &mut self,
        id: PaymentId,
        from: PaymentStatus,
        to: PaymentStatus,
        _: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.check()?;
        match self.work.payments.get_mut(&id) {
            Some(payment) if payment.status == from => {
                payment.status = to;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn record_refund(
        &mut self,
        seen: &Payment,
        refunded: Points,
        status: PaymentStatus,
        _: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.check()?;
        match self.work.payments.get_mut(&seen.id) {
            Some(payment) if payment.status == seen.status && payment.refunded == seen.refunded => {
                payment.status = status;
                payment.refunded = refunded;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn schedule_compensation(
        &mut self,
        saga: &str,
        step: &str,
        payment: PaymentId,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.check()?;
        let exists = self.work.compensations.values().any(|compensation| {
            compensation.saga == saga
                && compensation.step == step
                && compensation.payment == payment
        });
        if !exists {
            let id = self.work.next_id();
            self.work.compensations.insert(
                id,
                Compensation {
                    id,
                    saga: saga.into(),
                    step: step.into(),
                    payment,
                    status: CompensationStatus::Pending,
                    attempts: 0,
                    last_error: None,
                    next_attempt_at: now,
                    traceparent: crate::kernel::trace::current_traceparent(),
                },
            );
        }
        Ok(!exists)
    }

    async fn claim_compensation(
        &mut self,
        id: i64,
        _: DateTime<Utc>,
    ) -> Result<Option<Compensation>, StoreError> {
        self.check()?;
        Ok(self
            .work
            .compensations
            .get(&id)
            .filter(|compensation| compensation.status == CompensationStatus::Pending)
            .cloned())
    }

    async fn complete_compensation(&mut self, id: i64, _: DateTime<Utc>) -> Result<(), StoreError> {
        self.check()?;
        if let Some(compensation) = self.work.compensations.get_mut(&id) {
            compensation.status = CompensationStatus::Succeeded;
            compensation.attempts += 1;
            compensation.last_error = None;
        }
        Ok(())
    }
}

impl PaymentRepository for MemoryUow {
    async fn get(&self, id: PaymentId) -> Result<Option<Payment>, PaymentError> {
        self.check()?;
        Ok(self.world().payments.get(&id).cloned())
    }

    async fn compensations(
        &self,
        status: Option<CompensationStatus>,
        page: PageRequest,
    ) -> Result<Vec<Compensation>, PaymentError> {
        self.check()?;
        let world = self.world();
        let wanted = (world.compensations.values())
            .filter(|compensation| status.is_none_or(|wanted| compensation.status == wanted));
        Ok(newest_first(
            wanted.cloned(),
            |compensation| compensation.id,
            page,
        ))
    }

    async fn of_user(&self, user: UserId, page: PageRequest) -> Result<Vec<Payment>, PaymentError> {
        self.check()?;
        let world = self.world();
        let theirs = (world.payments.values()).filter(|payment| payment.user == user);
        Ok(newest_first(
            theirs.cloned(),
            |payment| payment.id.value(),
            page,
        ))
    }

    async fn cancelling_schedules(
        &self,
        max: u64,
    ) -> Result<Vec<(ScheduleId, DateTime<Utc>)>, PaymentError> {
        self.check()?;
        let world = self.world();
        let mut found: Vec<_> = world
            .schedule_statuses
            .iter()
            .filter(|(_, (status, _))| *status == ScheduleStatus::Cancelling)
            .map(|(id, (_, at))| (*id, *at))
            .collect();
        found.sort();
        found.truncate(max as usize);
        Ok(found)
    }

    async fn tickets_to_refund(
        &self,
        schedule: ScheduleId,
        saga: &str,
        max: u64,
    ) -> Result<Vec<PaymentId>, PaymentError> {
        self.check()?;
        let world = self.world();
        Ok(world
            .payments
            .values()
            .filter(|payment| {
                payment.status == PaymentStatus::Confirmed
                    && world.schedule_of(payment) == Some(schedule)
                    && !world.compensations.values().any(|compensation| {
                        compensation.saga == saga && compensation.payment == payment.id
                    })
            })
            .map(|payment| payment.id)
            .take(max as usize)
            .collect())
    }

    async fn unsettled(&self, schedule: ScheduleId, saga: &str) -> Result<u64, PaymentError> {
        self.check()?;
        let world = self.world();
        let paid = world
            .payments
            .values()
            .filter(|payment| {
                payment.status == PaymentStatus::Paid
                    && world.schedule_of(payment) == Some(schedule)
            })
            .count();
        let refunding = world
            .refunds_of(schedule, saga)
            .filter(|refund| refund.status != CompensationStatus::Succeeded)
            .count();
        Ok((paid + refunding) as u64)
    }

    async fn schedule_ids(&self, page: PageRequest) -> Result<Vec<ScheduleId>, PaymentError> {
        self.check()?;
        let mut ids: Vec<ScheduleId> = self
            .world()
            .seats
            .values()
            .map(|seat| seat.schedule)
            .collect();
        ids.sort();
        ids.dedup();
        Ok(newest_first(ids.into_iter(), |id| id.value(), page))
    }

    async fn cancellation_progress(
        &self,
        schedule: ScheduleId,
        saga: &str,
    ) -> Result<Option<CancellationProgress>, PaymentError> {
        self.check()?;
        let world = self.world();
        let seats: Vec<_> = world
            .seats
            .values()
            .filter(|seat| seat.schedule == schedule)
            .collect();
        if seats.is_empty() {
            return Ok(None);
        }
        let status = world
            .schedule_statuses
            .get(&schedule)
            .map_or(ScheduleStatus::OnSale, |(status, _)| *status);
        let refunds = |wanted: CompensationStatus| {
            world
                .refunds_of(schedule, saga)
                .filter(|refund| refund.status == wanted)
                .count() as u64
        };
        let failed = refunds(CompensationStatus::Failed);
        Ok(Some(CancellationProgress {
            schedule,
            status,
            seats: seats.len() as u64,
            sold: seats
                .iter()
                .filter(|seat| matches!(seat.state, SeatState::Sold { .. }))
                .count() as u64,
            refunds_pending: refunds(CompensationStatus::Pending) + failed,
            refunds_failed: failed,
            refunds_done: refunds(CompensationStatus::Succeeded),
        }))
    }

    async fn compensation(&self, id: i64) -> Result<Option<Compensation>, PaymentError> {
        self.check()?;
        Ok(self.world().compensations.get(&id).cloned())
    }

    async fn due_compensations(
        &self,
        now: DateTime<Utc>,
        max: u64,
    ) -> Result<Vec<DueCompensation>, PaymentError> {
        self.check()?;
        Ok(self
            .world()
            .compensations
            .values()
            .filter(|compensation| {
                compensation.status == CompensationStatus::Pending
                    && compensation.next_attempt_at <= now
            })
            .map(|compensation| DueCompensation {
                id: compensation.id,
                traceparent: compensation.traceparent.clone(),
            })
            .take(max as usize)
            .collect())
    }

    async fn record_failure(
        &self,
        failure: &AfterFailure,
        event: NewEvent,
    ) -> Result<bool, PaymentError> {
        self.check()?;
        let mut guard = self.world();
        let world = &mut *guard;
        match world.compensations.get_mut(&failure.step) {
            Some(pending) if pending.status == CompensationStatus::Pending => {
                pending.attempts = failure.attempts;
                pending.status = failure.status;
                pending.next_attempt_at = failure.next_attempt_at;
                pending.last_error = Some(failure.last_error.clone());
                world.outbox.push(event);
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}
