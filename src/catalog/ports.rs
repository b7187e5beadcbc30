use std::future::Future;

use chrono::{DateTime, Utc};

use super::domain::{
    CatalogError, Concert, CreatedConcert, HeldSeat, NewConcert, ScheduleSale, ScheduleStatus,
    ScheduleSummary, Seat, SeatFilter, SeatHold, SeatListing,
};
use crate::kernel::{
    Clock, ConcertId, PageRequest, ReservationId, ScheduleId, SeatId, StoreError, events::RelayWake,
};

crate::kernel::ports::ports_bundle! {
    /// The adapters the catalog's use cases run over, named once: the
    /// composition root picks them (`app::services`), tests pick fakes.
    pub trait CatalogPorts for CatalogAdapters<R, C, W> {
        type Repo: CatalogRepository;
        type Clock: Clock;
        /// Told after a commit that wrote to the outbox.
        type Wake: RelayWake;
    }
}

pub trait CatalogRepository: Clone + Send + Sync + 'static {
    /// Stores the concert with all its schedules and seats atomically.
    fn create_concert(
        &self,
        concert: &NewConcert,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<CreatedConcert, CatalogError>> + Send;

    /// Up to `page.fetch()` concerts in id order, after the concert `page.after`.
    fn list_concerts(
        &self,
        page: PageRequest,
    ) -> impl Future<Output = Result<Vec<Concert>, CatalogError>> + Send;

    /// Up to `page.fetch()` schedules of the concert in start order, after
    /// the schedule `page.after`; `None` when the concert does not exist,
    /// `Invalid` when `page.after` is not one of its schedules. Their
    /// `available_seats` are left at 0: counting is [`Self::count_available`]'s.
    fn list_schedules(
        &self,
        concert: ConcertId,
        page: PageRequest,
    ) -> impl Future<Output = Result<Option<Vec<ScheduleSummary>>, CatalogError>> + Send;

    /// How many seats of each of `schedules` are available at `now` (free,
    /// or held with `held_until <= now`); a schedule with none may be left
    /// out. One query for them all.
    fn count_available(
        &self,
        schedules: &[ScheduleId],
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<(ScheduleId, u64)>, CatalogError>> + Send;

    /// Up to `page.fetch()` seats of the schedule that pass `filter` at
    /// `now`, in number order, after the seat `page.after`, if the schedule
    /// is on sale; `Invalid` when `page.after` is not one of its seats.
    fn list_seats(
        &self,
        schedule: ScheduleId,
        filter: &SeatFilter,
        page: PageRequest,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<SeatListing, CatalogError>> + Send;

    fn concert_exists(
        &self,
        concert: ConcertId,
    ) -> impl Future<Output = Result<bool, CatalogError>> + Send;

    /// The concert a schedule belongs to; `None` when there is no such schedule.
    fn concert_of_schedule(
        &self,
        schedule: ScheduleId,
    ) -> impl Future<Output = Result<Option<ConcertId>, CatalogError>> + Send;

    /// Whether any concert exists (the demo seed only fills an empty catalog).
    fn is_empty(&self) -> impl Future<Output = Result<bool, CatalogError>> + Send;
}

/// One seat, read outside any transaction (a hint: only a compare-and-set
/// in [`SeatTx`] decides who gets it).
pub trait SeatReads: Clone + Send + Sync + 'static {
    /// `None` when the seat is not in that schedule.
    fn seat(
        &self,
        schedule: ScheduleId,
        seat: SeatId,
    ) -> impl Future<Output = Result<Option<Seat>, StoreError>> + Send;

    /// Every seat of the schedule, by id (what best-available chooses
    /// from: where each stands and whether it is free).
    fn schedule_seats(
        &self,
        schedule: ScheduleId,
    ) -> impl Future<Output = Result<Vec<Seat>, StoreError>> + Send;

    /// The seats of `ids` (any schedule), by id; unknown ones left out.
    fn seats_by_id(
        &self,
        ids: &[SeatId],
    ) -> impl Future<Output = Result<Vec<Seat>, StoreError>> + Send;

    /// Which of `schedules` start at or before `by`.
    fn starting_by(
        &self,
        schedules: &[ScheduleId],
        by: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<ScheduleId>, StoreError>> + Send;
}

/// Schedules' sale status and seat counts, read outside any transaction
/// (the payment module follows cancellations through it).
pub trait ScheduleReads: Clone + Send + Sync + 'static {
    /// Up to `max` schedules being cancelled (oldest id first), with when
    /// that began.
    fn cancelling_schedules(
        &self,
        max: u64,
    ) -> impl Future<Output = Result<Vec<(ScheduleId, DateTime<Utc>)>, StoreError>> + Send;

    /// Up to `page.fetch()` schedule ids, newest first, below `page.after`.
    fn schedule_ids(
        &self,
        page: PageRequest,
    ) -> impl Future<Output = Result<Vec<ScheduleId>, StoreError>> + Send;

    /// The schedule's sale status, its seats and how many are sold; `None`
    /// for an unknown schedule.
    fn sale(
        &self,
        schedule: ScheduleId,
    ) -> impl Future<Output = Result<Option<ScheduleSale>, StoreError>> + Send;
}

/// Seats inside a unit of work. Every change is a compare-and-set on the
/// seat row: the first statement to change a seat locks it, so a
/// transaction that touches a seat touches it before its reservation.
pub trait SeatTx: Send {
    /// Holds the seat for the hold's user until its `until` if it is free
    /// at `now` ([`Seat::availability`] says available) and its schedule is
    /// on sale. `None` when it is not.
    fn try_hold(
        &mut self,
        hold: SeatHold,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<HeldSeat>, StoreError>> + Send;

    /// Whether the seat is in the schedule (to tell 404 from 409).
    fn exists(
        &mut self,
        schedule: ScheduleId,
        seat: SeatId,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Ties the seat to the reservation that now holds it.
    fn attach(
        &mut self,
        seat: SeatId,
        reservation: ReservationId,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Frees the seat if `reservation` still holds it; true if it did.
    fn release(
        &mut self,
        seat: SeatId,
        reservation: ReservationId,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Keeps the seat held by `reservation` until `until`; false if the
    /// reservation no longer holds it.
    fn extend(
        &mut self,
        seat: SeatId,
        reservation: ReservationId,
        until: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Sells the seat to the holder of `reservation`; false if it no longer
    /// holds it.
    fn sell(
        &mut self,
        seat: SeatId,
        reservation: ReservationId,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Puts a seat sold to `reservation` back on sale (its ticket was
    /// cancelled); false if it is not sold to that reservation.
    fn unsell(
        &mut self,
        seat: SeatId,
        reservation: ReservationId,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The schedule's sale status and when it last changed; `None` for an
    /// unknown schedule.
    fn schedule_status(
        &mut self,
        schedule: ScheduleId,
    ) -> impl Future<Output = Result<Option<(ScheduleStatus, DateTime<Utc>)>, StoreError>> + Send;

    /// Compare-and-set of the schedule's sale status; true if it was `from`
    /// and is now `to`.
    fn set_schedule_status(
        &mut self,
        schedule: ScheduleId,
        from: ScheduleStatus,
        to: ScheduleStatus,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// How many of the schedule's seats are available at `now` (free, or
    /// held past their expiry).
    fn free_seats(
        &mut self,
        schedule: ScheduleId,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Up to `max` of the schedule's seats available at `now`, lowest id
    /// first (the lock order).
    fn free_seat_ids(
        &mut self,
        schedule: ScheduleId,
        now: DateTime<Utc>,
        max: u64,
    ) -> impl Future<Output = Result<Vec<SeatId>, StoreError>> + Send;

    /// When the schedule's show starts; `None` for an unknown schedule.
    fn starts_at(
        &mut self,
        schedule: ScheduleId,
    ) -> impl Future<Output = Result<Option<DateTime<Utc>>, StoreError>> + Send;
}
