//! One in-memory catalog for the catalog use cases' tests: a repository
//! holding concert 1 and schedule 1 from the start, and the harness that
//! builds a service over it, a manual clock and a wake that counts.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeDelta, Utc};

use super::CatalogService;
use crate::kernel::Fault;
use crate::{
    catalog::{
        domain::{
            Availability, CatalogError, Concert, ConcertDraft, CreatedConcert, CreatedSchedule,
            NewConcert, ScheduleDraft, ScheduleStatus, ScheduleSummary, Seat, SeatBlockDraft,
            SeatFilter, SeatListing, SeatPlace, SeatState,
        },
        ports::{CatalogAdapters, CatalogPorts, CatalogRepository},
    },
    kernel::{
        ConcertId, ManualClock, Page, PageRequest, Points, ScheduleId, SeatId, cache::Weighed,
    },
    testing::Wakes,
};

pub fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

/// What the tests render: weighed by their items.
impl Weighed for Page<(Seat, Availability)> {
    fn weight(&self) -> usize {
        self.items.len() * std::mem::size_of::<(Seat, Availability)>()
    }
}

impl Weighed for Vec<Availability> {
    fn weight(&self) -> usize {
        self.len()
    }
}

#[derive(Default)]
pub struct Catalog {
    pub stored: Vec<(NewConcert, DateTime<Utc>)>,
    /// Concert 1 has these schedules; schedule 1 (of concert 1) these seats.
    pub schedules: Vec<ScheduleSummary>,
    pub seats: Vec<Seat>,
    pub schedule_reads: Vec<DateTime<Utc>>,
    pub counted: Vec<Vec<ScheduleId>>,
    pub page_requests: Vec<PageRequest>,
    pub down: bool,
}

/// Hand-written fake: concert 1 and schedule 1 exist from the start;
/// every created concert is recorded.
#[derive(Clone, Default)]
pub struct FakeRepo(pub Arc<Mutex<Catalog>>);

impl FakeRepo {
    fn check(&self) -> Result<(), CatalogError> {
        if self.0.lock().unwrap().down {
            return Err(CatalogError::Fault(Fault::Unavailable(anyhow::anyhow!(
                "database down"
            ))));
        }
        Ok(())
    }

    pub fn stored(&self) -> Vec<(NewConcert, DateTime<Utc>)> {
        self.0.lock().unwrap().stored.clone()
    }
}

impl CatalogRepository for FakeRepo {
    async fn create_concert(
        &self,
        concert: &NewConcert,
        now: DateTime<Utc>,
    ) -> Result<CreatedConcert, CatalogError> {
        self.check()?;
        let mut catalog = self.0.lock().unwrap();
        catalog.stored.push((concert.clone(), now));
        Ok(CreatedConcert {
            id: ConcertId(catalog.stored.len() as i64 + 1),
            schedules: concert
                .schedules
                .iter()
                .zip(10..)
                .map(|(s, id)| CreatedSchedule {
                    id: ScheduleId(id),
                    starts_at: s.starts_at,
                    seat_count: s.seat_count(),
                })
                .collect(),
        })
    }

    async fn list_concerts(&self, page: PageRequest) -> Result<Vec<Concert>, CatalogError> {
        self.check()?;
        let mut catalog = self.0.lock().unwrap();
        catalog.page_requests.push(page);
        Ok((1..=3)
            .map(|id| Concert {
                id: ConcertId(id),
                title: format!("Concert {id}"),
                venue: "Hall".into(),
            })
            .filter(|c| page.after.is_none_or(|after| c.id.value() > after))
            .take(page.fetch() as usize)
            .collect())
    }

    async fn list_schedules(
        &self,
        concert: ConcertId,
        page: PageRequest,
    ) -> Result<Option<Vec<ScheduleSummary>>, CatalogError> {
        self.check()?;
        let mut catalog = self.0.lock().unwrap();
        catalog.page_requests.push(page);
        Ok((concert == ConcertId(1)).then(|| {
            catalog
                .schedules
                .iter()
                .skip_while(|s| page.after.is_some_and(|after| s.id.value() != after))
                .skip(usize::from(page.after.is_some()))
                .take(page.fetch() as usize)
                .map(|s| ScheduleSummary {
                    available_seats: 0,
                    ..s.clone()
                })
                .collect()
        }))
    }

    /// The stored summaries' counts; records when and what it counted.
    async fn count_available(
        &self,
        schedules: &[ScheduleId],
        now: DateTime<Utc>,
    ) -> Result<Vec<(ScheduleId, u64)>, CatalogError> {
        self.check()?;
        let mut catalog = self.0.lock().unwrap();
        catalog.schedule_reads.push(now);
        catalog.counted.push(schedules.to_vec());
        Ok(catalog
            .schedules
            .iter()
            .filter(|s| schedules.contains(&s.id))
            .map(|s| (s.id, s.available_seats))
            .collect())
    }

    async fn list_seats(
        &self,
        schedule: ScheduleId,
        filter: &SeatFilter,
        page: PageRequest,
        now: DateTime<Utc>,
    ) -> Result<SeatListing, CatalogError> {
        self.check()?;
        let mut catalog = self.0.lock().unwrap();
        catalog.page_requests.push(page);
        let seats = catalog
            .seats
            .iter()
            .filter(|s| page.after.is_none_or(|after| s.id.value() > after))
            .filter(|s| filter.status.is_none_or(|want| s.availability(now) == want))
            .filter(|s| filter.grade.as_ref().is_none_or(|g| &s.grade == g))
            .take(page.fetch() as usize)
            .cloned()
            .collect();
        Ok(match schedule {
            ScheduleId(1) => SeatListing::Seats(seats),
            ScheduleId(3) => SeatListing::OffSale(ScheduleStatus::Cancelled),
            _ => SeatListing::NoSchedule,
        })
    }

    async fn concert_exists(&self, concert: ConcertId) -> Result<bool, CatalogError> {
        self.check()?;
        Ok(concert == ConcertId(1))
    }

    async fn concert_of_schedule(
        &self,
        schedule: ScheduleId,
    ) -> Result<Option<ConcertId>, CatalogError> {
        self.check()?;
        Ok((schedule == ScheduleId(1)).then_some(ConcertId(1)))
    }

    async fn is_empty(&self) -> Result<bool, CatalogError> {
        self.check()?;
        Ok(self.0.lock().unwrap().stored.is_empty())
    }
}

pub fn demo(now: DateTime<Utc>) -> ConcertDraft {
    ConcertDraft {
        title: " Demo ".into(),
        venue: "Hall".into(),
        schedules: vec![ScheduleDraft {
            starts_at: now + TimeDelta::days(1),
            seat_blocks: vec![SeatBlockDraft {
                grade: "R".into(),
                price: 10,
                count: 3,
                place: SeatPlace::default(),
            }],
        }],
    }
}

pub fn seat(number: u32, state: SeatState) -> Seat {
    Seat {
        id: SeatId(i64::from(number)),
        schedule_id: ScheduleId(1),
        number,
        grade: "R".into(),
        price: Points::new(10).unwrap(),
        place: SeatPlace::default(),
        state,
    }
}

/// The catalog's ports as these tests fake them.
pub type Fakes = CatalogAdapters<FakeRepo, ManualClock, Wakes>;

pub struct Harness {
    pub service: CatalogService<Fakes>,
    pub repo: FakeRepo,
    pub clock: ManualClock,
    pub wake: Wakes,
}

pub fn harness() -> Harness {
    let repo = FakeRepo::default();
    let clock = ManualClock::new(t0());
    let wake = Wakes::default();
    Harness {
        service: CatalogService::new(repo.clone(), clock.clone(), wake.clone()),
        repo,
        clock,
        wake,
    }
}

impl<P: CatalogPorts> CatalogService<P> {
    /// The page `render_seats` renders, as it is given to `render`.
    pub(super) async fn list_seats(
        &self,
        schedule: ScheduleId,
        filter: &SeatFilter,
        asked: PageRequest,
    ) -> Result<Page<(Seat, Availability)>, CatalogError> {
        let page = self
            .render_seats(&self.renderings(), schedule, filter, asked, |page| page)
            .await?;
        Ok((*page).clone())
    }
}

/// Whether the use case answered that the database is down.
pub fn unavailable<T>(result: Result<T, CatalogError>) -> bool {
    matches!(result, Err(CatalogError::Fault(Fault::Unavailable(_))))
}

pub fn invalid_detail<T: std::fmt::Debug>(result: Result<T, CatalogError>) -> String {
    match result {
        Err(CatalogError::Invalid(detail)) => detail,
        other => panic!("expected Invalid, got {other:?}"),
    }
}
