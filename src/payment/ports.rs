use std::future::Future;

use chrono::{DateTime, Utc};

use super::domain::{Compensation, CompensationStatus, Payment, PaymentError};
use crate::kernel::{PaymentId, ReservationId, ScheduleId, UserId};

pub trait PaymentRepository: Clone + Send + Sync + 'static {
    /// In one transaction: claim the user's unexpired hold, take its price
    /// from the wallet with a conditional update, record the payment and
    /// write `PaymentCompleted` to the outbox.
    fn pay(
        &self,
        user: UserId,
        reservation: ReservationId,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Payment, PaymentError>> + Send;

    fn get(
        &self,
        id: PaymentId,
    ) -> impl Future<Output = Result<Option<Payment>, PaymentError>> + Send;

    /// The schedule of the user's reservation (for the waiting-room check).
    fn schedule_of(
        &self,
        reservation: ReservationId,
        user: UserId,
    ) -> impl Future<Output = Result<Option<ScheduleId>, PaymentError>> + Send;

    fn compensations(
        &self,
        status: Option<CompensationStatus>,
        limit: u64,
    ) -> impl Future<Output = Result<Vec<Compensation>, PaymentError>> + Send;

    /// Puts a failed compensation back to pending, due now.
    fn retry_compensation(
        &self,
        id: i64,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), PaymentError>> + Send;
}
