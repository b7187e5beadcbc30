use std::future::Future;

use chrono::{DateTime, Utc};

use super::domain::{
    AfterFailure, CancellationProgress, Compensation, CompensationStatus, DueCompensation,
    NewPayment, Payment, PaymentError, PaymentStatus,
};
use crate::{
    catalog::ports::SeatTx,
    kernel::{
        Clock, PageRequest, PaymentId, Points, ScheduleId, StoreError, UnitOfWork, UserId,
        events::{NewEvent, RelayWake},
        idempotency::IdempotencyTx,
    },
    outbox::ports::OutboxWriter,
    reservation::ports::{ReservationRepository, ReservationTx},
    ticket::ports::TicketTx,
    wallet::ports::WalletTx,
};

crate::kernel::ports::ports_bundle! {
    /// The adapters the payment use cases and the compensation runner run
    /// over, named once: the composition root picks them (`app::services`),
    /// tests pick fakes. The runner uses all but idempotency.
    pub trait PaymentPorts for PaymentAdapters<U, P, R, C, W> {
        /// One transaction claims the hold, moves the points and the seat,
        /// records the payment, the request key and the outbox event.
        type Uow: UnitOfWork<
            Tx: ReservationTx
                    + SeatTx
                    + WalletTx
                    + PaymentTx
                    + TicketTx
                    + OutboxWriter
                    + IdempotencyTx,
        >;
        type Payments: PaymentRepository;
        type Reservations: ReservationRepository;
        type Clock: Clock;
        type Wake: RelayWake;
    }
}

/// Payments and compensations outside any transaction.
pub trait PaymentRepository: Clone + Send + Sync + 'static {
    fn get(
        &self,
        id: PaymentId,
    ) -> impl Future<Output = Result<Option<Payment>, PaymentError>> + Send;

    /// Up to `page.fetch()` of the user's payments, newest first, older
    /// than the payment `page.after`.
    fn of_user(
        &self,
        user: UserId,
        page: PageRequest,
    ) -> impl Future<Output = Result<Vec<Payment>, PaymentError>> + Send;

    /// Up to `page.fetch()` compensation steps in `status`, newest first,
    /// older than the step `page.after`.
    fn compensations(
        &self,
        status: Option<CompensationStatus>,
        page: PageRequest,
    ) -> impl Future<Output = Result<Vec<Compensation>, PaymentError>> + Send;

    fn compensation(
        &self,
        id: i64,
    ) -> impl Future<Output = Result<Option<Compensation>, PaymentError>> + Send;

    /// Ids of pending compensations due at `now`, the longest due first.
    fn due_compensations(
        &self,
        now: DateTime<Utc>,
        max: u64,
    ) -> impl Future<Output = Result<Vec<DueCompensation>, PaymentError>> + Send;

    /// Up to `max` schedules being cancelled, with when that began.
    fn cancelling_schedules(
        &self,
        max: u64,
    ) -> impl Future<Output = Result<Vec<(ScheduleId, DateTime<Utc>)>, PaymentError>> + Send;

    /// Up to `max` confirmed payments for the schedule's seats with no
    /// refund step of `saga` yet.
    fn tickets_to_refund(
        &self,
        schedule: ScheduleId,
        saga: &str,
        max: u64,
    ) -> impl Future<Output = Result<Vec<PaymentId>, PaymentError>> + Send;

    /// Payments for the schedule's seats still on their way: `paid` (not
    /// yet confirmed or refunded), or with a refund step of `saga` not yet
    /// succeeded.
    fn unsettled(
        &self,
        schedule: ScheduleId,
        saga: &str,
    ) -> impl Future<Output = Result<u64, PaymentError>> + Send;

    /// Up to `page.fetch()` schedule ids, newest first, below `page.after`.
    fn schedule_ids(
        &self,
        page: PageRequest,
    ) -> impl Future<Output = Result<Vec<ScheduleId>, PaymentError>> + Send;

    /// The schedule's sale status, seats and the refunds of `saga`; `None`
    /// for an unknown schedule.
    fn cancellation_progress(
        &self,
        schedule: ScheduleId,
        saga: &str,
    ) -> impl Future<Output = Result<Option<CancellationProgress>, PaymentError>> + Send;

    /// Records a failed attempt of a still-pending step with its `event`
    /// (`CompensationFailed` or `CompensationGaveUp`) in one transaction;
    /// false (and no event) if it was no longer pending.
    fn record_failure(
        &self,
        failure: &AfterFailure,
        event: NewEvent,
    ) -> impl Future<Output = Result<bool, PaymentError>> + Send;
}

/// Payments and compensations inside a unit of work.
pub trait PaymentTx: Send {
    /// Puts a failed step back to pending, due at `now`, with its attempts
    /// counted from zero; false if it was not failed (any more).
    fn reopen_compensation(
        &mut self,
        id: i64,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    fn insert_payment(
        &mut self,
        new: &NewPayment,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Payment, StoreError>> + Send;

    fn payment(
        &mut self,
        id: PaymentId,
    ) -> impl Future<Output = Result<Option<Payment>, StoreError>> + Send;

    /// Compare-and-set of the status; true if it was `from` and is now `to`.
    fn set_payment_status(
        &mut self,
        id: PaymentId,
        from: PaymentStatus,
        to: PaymentStatus,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Records a refund of `seen`: `refunded` given back in all, now in
    /// `status` — a compare-and-set on the status and refunded amount
    /// `seen` has; true if this one did.
    fn record_refund(
        &mut self,
        seen: &Payment,
        refunded: Points,
        status: PaymentStatus,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Schedules a compensation step, due at `now`, once: scheduling the
    /// same saga step for the same payment again changes nothing (false).
    fn schedule_compensation(
        &mut self,
        saga: &str,
        step: &str,
        payment: PaymentId,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Takes a pending step for this attempt (locking it, so another
    /// runner waits and then finds it taken); `None` when it is not pending.
    fn claim_compensation(
        &mut self,
        id: i64,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<Compensation>, StoreError>> + Send;

    /// Marks the claimed step succeeded (one more attempt, no error).
    fn complete_compensation(
        &mut self,
        id: i64,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}
