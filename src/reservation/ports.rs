use std::future::Future;

use chrono::{DateTime, Utc};

use super::domain::{NewReservation, Reservation, ReservationError, Transition};
use crate::kernel::{PageRequest, PaymentId, ReservationId, SeatId, StoreError, UserId};

/// Reads of reservations, outside any transaction.
pub trait ReservationRepository: Clone + Send + Sync + 'static {
    fn get(
        &self,
        id: ReservationId,
    ) -> impl Future<Output = Result<Option<Reservation>, ReservationError>> + Send;

    /// Up to `page.fetch()` of the user's reservations, newest first,
    /// older than the reservation `page.after`.
    fn of_user(
        &self,
        user: UserId,
        page: PageRequest,
    ) -> impl Future<Output = Result<Vec<Reservation>, ReservationError>> + Send;

    /// Up to `max` unpaid holds past their expiry at `now`, oldest first.
    fn lapsed(
        &self,
        now: DateTime<Utc>,
        max: u64,
    ) -> impl Future<Output = Result<Vec<ReservationId>, ReservationError>> + Send;
}

/// Reservations inside a unit of work: what the hold, the payment and the
/// saga change together with seats, wallets and the outbox.
pub trait ReservationTx: Send {
    /// Serialises the user's holds until the transaction ends (so two
    /// concurrent holds of one user cannot pass the limit together) and
    /// counts the user's live holds ([`Reservation::is_live`]).
    fn lock_user_and_count_live(
        &mut self,
        user: UserId,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    fn insert(
        &mut self,
        new: &NewReservation,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Reservation, StoreError>> + Send;

    fn get(
        &mut self,
        id: ReservationId,
    ) -> impl Future<Output = Result<Option<Reservation>, StoreError>> + Send;

    /// Held reservations on the seat other than `except` (the lapsed hold a
    /// new one took the seat from).
    fn held_on_seat(
        &mut self,
        seat: SeatId,
        except: ReservationId,
    ) -> impl Future<Output = Result<Vec<Reservation>, StoreError>> + Send;

    /// Applies the transition if [`Transition::applies_to`] the stored
    /// reservation, in one compare-and-set that locks the row; true if it did.
    fn transition(
        &mut self,
        id: ReservationId,
        change: Transition,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Records the payment on the hold it claimed.
    fn set_payment(
        &mut self,
        id: ReservationId,
        payment: PaymentId,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}
