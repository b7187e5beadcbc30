use std::future::Future;

use chrono::{DateTime, Utc};

use super::domain::{CatalogError, Concert, CreatedConcert, NewConcert, ScheduleSummary, Seat};
use crate::kernel::{ConcertId, ScheduleId};

pub trait CatalogRepository: Clone + Send + Sync + 'static {
    /// Stores the concert with all its schedules and seats atomically.
    fn create_concert(
        &self,
        concert: &NewConcert,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<CreatedConcert, CatalogError>> + Send;

    fn list_concerts(&self) -> impl Future<Output = Result<Vec<Concert>, CatalogError>> + Send;

    /// `None` when the concert does not exist. Seats count as available when
    /// free or held with `held_until <= now`.
    fn list_schedules(
        &self,
        concert: ConcertId,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<Vec<ScheduleSummary>>, CatalogError>> + Send;

    /// `None` when the schedule does not exist. Seats in number order.
    fn list_seats(
        &self,
        schedule: ScheduleId,
    ) -> impl Future<Output = Result<Option<Vec<Seat>>, CatalogError>> + Send;

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
