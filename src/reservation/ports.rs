use std::future::Future;

use chrono::{DateTime, Utc};

use super::domain::{HoldPolicy, Reservation, ReservationError};
use crate::kernel::{ReservationId, ScheduleId, SeatId, UserId};

pub trait ReservationRepository: Clone + Send + Sync + 'static {
    /// Holds the seat for the user, atomically: the seat changes hands only
    /// if it is free now, and only while the user holds fewer than the limit.
    /// Writes `ReservationHeld` (and `ReservationExpired` for a lapsed hold it
    /// replaced) to the outbox in the same transaction.
    fn hold(
        &self,
        user: UserId,
        schedule: ScheduleId,
        seat: SeatId,
        policy: HoldPolicy,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Reservation, ReservationError>> + Send;

    fn get(
        &self,
        id: ReservationId,
    ) -> impl Future<Output = Result<Option<Reservation>, ReservationError>> + Send;

    /// Gives the seat back (an unpaid, unexpired hold of this user only).
    fn release(
        &self,
        id: ReservationId,
        user: UserId,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), ReservationError>> + Send;

    /// Marks up to `max` unpaid holds past their expiry as expired, frees
    /// their seats and writes `ReservationExpired`. Returns how many.
    fn expire_due(
        &self,
        now: DateTime<Utc>,
        max: u64,
    ) -> impl Future<Output = Result<u64, ReservationError>> + Send;
}
