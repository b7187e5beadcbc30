use std::future::Future;

use chrono::{DateTime, Utc};

use super::domain::{
    NewOrder, NewReservation, Order, Reservation, ReservationError, Transition, WaitlistEntry,
};
use crate::{
    catalog::ports::{SeatReads, SeatTx},
    kernel::{
        Clock, OrderId, PageRequest, PaymentId, ReservationId, ScheduleId, SeatId, StoreError,
        UnitOfWork, UserId, events::RelayWake,
    },
    outbox::ports::OutboxWriter,
};

crate::kernel::ports::ports_bundle! {
    /// The adapters the reservation use cases run over, named once: the
    /// composition root picks them (`app::services`), tests pick fakes.
    pub trait ReservationPorts for ReservationAdapters<U, R, S, C, W> {
        /// One transaction changes seats, reservations, waitlists and the
        /// outbox together.
        type Uow: UnitOfWork<Tx: SeatTx + ReservationTx + WaitlistTx + OutboxWriter>;
        type Reservations: ReservationRepository;
        type Seats: SeatReads;
        type Clock: Clock;
        type Wake: RelayWake;
    }
}

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

    /// The order with its seats (by seat id).
    fn order(
        &self,
        id: OrderId,
    ) -> impl Future<Output = Result<Option<Order>, ReservationError>> + Send;

    /// Up to `page.fetch()` of the user's orders with their seats, newest
    /// first, older than the order `page.after`.
    fn orders_of_user(
        &self,
        user: UserId,
        page: PageRequest,
    ) -> impl Future<Output = Result<Vec<Order>, ReservationError>> + Send;

    /// Up to `max` unpaid holds (expired or not) on the schedule, oldest
    /// first ([`Transition::Withdraw`] applies to them).
    fn unpaid_holds(
        &self,
        schedule: ScheduleId,
        max: u64,
    ) -> impl Future<Output = Result<Vec<ReservationId>, ReservationError>> + Send;

    /// Up to `max` unpaid holds past their expiry at `now`, oldest first.
    fn lapsed(
        &self,
        now: DateTime<Utc>,
        max: u64,
    ) -> impl Future<Output = Result<Vec<ReservationId>, ReservationError>> + Send;

    /// Up to `max` schedules someone waits on, by id.
    fn waitlisted_schedules(
        &self,
        max: u64,
    ) -> impl Future<Output = Result<Vec<ScheduleId>, ReservationError>> + Send;
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

    /// Stores an order, without seats yet (each hold names it).
    fn insert_order(
        &mut self,
        new: &NewOrder,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Order, StoreError>> + Send;

    /// The reservations a payment was recorded on, by seat id.
    fn of_payment(
        &mut self,
        payment: PaymentId,
    ) -> impl Future<Output = Result<Vec<Reservation>, StoreError>> + Send;

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

/// A schedule's waitlist inside a unit of work: one waiting place per user,
/// in the order they joined.
pub trait WaitlistTx: Send {
    /// Puts the user at the tail of the schedule's waitlist for
    /// `quantity` seats; `None` when they already wait there (joining
    /// again after an offer or after leaving starts a new place at the
    /// tail).
    fn join(
        &mut self,
        schedule: ScheduleId,
        user: UserId,
        quantity: u32,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<WaitlistEntry>, StoreError>> + Send;

    /// Takes the user's waiting place off; `None` when they had none.
    fn leave(
        &mut self,
        schedule: ScheduleId,
        user: UserId,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<WaitlistEntry>, StoreError>> + Send;

    /// The user's place (1 = first in line) and how many seats it waits
    /// for, if waiting.
    fn waitlist_position(
        &mut self,
        schedule: ScheduleId,
        user: UserId,
    ) -> impl Future<Output = Result<Option<(u64, u32)>, StoreError>> + Send;

    /// The first waiting place that waits for at most `fits` seats, locked
    /// until the transaction ends; on PostgreSQL a place another
    /// transaction is offering seats to is skipped, so two seats freed at
    /// once go to the first two in line.
    fn next_waiting(
        &mut self,
        schedule: ScheduleId,
        fits: u64,
    ) -> impl Future<Output = Result<Option<WaitlistEntry>, StoreError>> + Send;

    /// Up to `max` places still waiting on the schedule leave the line as
    /// `closed` (each a compare-and-set: a place offered meanwhile stays
    /// offered); the ones that did, in line order.
    fn close_waiting(
        &mut self,
        schedule: ScheduleId,
        now: DateTime<Utc>,
        max: u64,
    ) -> impl Future<Output = Result<Vec<WaitlistEntry>, StoreError>> + Send;

    /// The place leaves the line with the hold made for it, if it is still
    /// waiting (a compare-and-set); true if it did.
    fn mark_offered(
        &mut self,
        entry: i64,
        reservation: ReservationId,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}
