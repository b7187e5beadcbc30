use std::future::Future;

use chrono::{DateTime, Utc};

use super::domain::{
    AfterFailure, Compensation, CompensationStatus, NewPayment, Payment, PaymentError,
    PaymentStatus,
};
use crate::kernel::{PageRequest, PaymentId, StoreError, UserId};

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
    ) -> impl Future<Output = Result<Vec<i64>, PaymentError>> + Send;

    /// Records a failed attempt of a still-pending step; false if it was
    /// no longer pending.
    fn record_failure(
        &self,
        id: i64,
        failure: &AfterFailure,
        now: DateTime<Utc>,
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
