use std::{any::Any, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};

use super::{
    domain::{
        Availability, CatalogError, Concert, ConcertDraft, CreatedConcert, MAX_CONCERT_PAGE,
        MAX_SCHEDULE_PAGE, MAX_SEAT_PAGE, NewConcert, ScheduleStatus, ScheduleSummary, Seat,
        SeatFilter, SeatListing,
    },
    ports::CatalogRepository,
};
use crate::kernel::{
    Clock, ConcertId, Page, PageRequest, ScheduleId, UserId,
    events::RelayWake,
    keyed::KeyedLocks,
    snapshot::{self, Snapshots, Weighed},
};

/// How long a schedule's count of available seats is served before it is
/// counted again (unless told otherwise): the schedules list shows
/// availability at most this old, and costs the database one count per
/// schedule per this period, however many read it.
pub const AVAILABILITY_TTL: Duration = Duration::from_secs(1);

/// How many schedules' counts one process keeps.
const AVAILABILITY_KEPT: u64 = 100_000;

#[derive(Clone)]
pub struct CatalogService<R, C, W> {
    repo: R,
    clock: C,
    wake: W,
    /// Seat-map pages read lately (off until [`CatalogService::snapshotting`]).
    seat_maps: Snapshots<SeatMapKey, SeatListing>,
    /// Seat-map pages as the caller rendered them, with the snapshot each
    /// was rendered from (none while snapshots are off).
    rendered: Option<moka::sync::Cache<SeatMapKey, Arc<Rendering>>>,
    /// Available seats per schedule, counted lately.
    availability: moka::sync::Cache<ScheduleId, u64>,
    /// One count at a time per concert: concurrent readers of a page whose
    /// counts expired wait for one query instead of each running it.
    counting: KeyedLocks<ConcertId>,
}

fn availability_cache(ttl: Duration) -> moka::sync::Cache<ScheduleId, u64> {
    moka::sync::Cache::builder()
        .max_capacity(AVAILABILITY_KEPT)
        .time_to_live(ttl)
        .build()
}

/// A page rendered from one snapshot, good until a hold on it lapses.
struct Rendering {
    from: Arc<SeatListing>,
    until: Option<DateTime<Utc>>,
    value: Arc<dyn Any + Send + Sync>,
    /// The page it was rendered from and the rendering (a JSON body, say)
    /// together: it keeps both alive.
    weight: usize,
}

impl Weighed for Rendering {
    fn weight(&self) -> usize {
        self.weight
    }
}

/// One page of one schedule's seat map, as asked for.
type SeatMapKey = (ScheduleId, SeatFilter, PageRequest);

impl<R: CatalogRepository, C: Clock, W: RelayWake> CatalogService<R, C, W> {
    pub fn new(repo: R, clock: C, wake: W) -> Self {
        Self {
            repo,
            clock,
            wake,
            seat_maps: Snapshots::new(Duration::ZERO, 0),
            rendered: None,
            availability: availability_cache(AVAILABILITY_TTL),
            counting: KeyedLocks::default(),
        }
    }

    /// Keeps each schedule's count of available seats `ttl` (tests).
    pub fn counting_availability_every(self, ttl: Duration) -> Self {
        Self {
            availability: availability_cache(ttl),
            ..self
        }
    }

    /// Serves seat-map pages from snapshots up to `ttl` old (see
    /// `kernel::snapshot`): a hold, release, sale or expiry committed on
    /// this instance retires its schedule's pages at once; another
    /// instance's change shows within `ttl`. The snapshots and the pages
    /// rendered from them weigh `budget` bytes at most together (half
    /// each), however many distinct pages clients ask for; the least
    /// recently read go first.
    pub fn snapshotting(self, ttl: Duration, budget: usize) -> Self {
        Self {
            seat_maps: Snapshots::new(ttl, budget / 2),
            rendered: (!ttl.is_zero()).then(|| snapshot::bounded(ttl, budget / 2)),
            ..self
        }
    }

    /// Validates and stores the concert; `ConcertCreated` (naming the admin
    /// who created it) is written to the outbox in the same transaction.
    pub async fn create_concert(
        &self,
        draft: ConcertDraft,
        admin: Option<UserId>,
    ) -> Result<CreatedConcert, CatalogError> {
        let now = self.clock.now();
        let mut concert = NewConcert::parse(draft, now)?;
        concert.created_by = admin;
        let created = self.repo.create_concert(&concert, now).await?;
        self.wake.wake();
        Ok(created)
    }

    /// A page of concerts in id order.
    pub async fn list_concerts(
        &self,
        after: Option<i64>,
        limit: u64,
    ) -> Result<Page<Concert>, CatalogError> {
        let page = PageRequest::new(after, limit, MAX_CONCERT_PAGE);
        let rows = self.repo.list_concerts(page).await?;
        Ok(Page::of(rows, page, |c| c.id.value()))
    }

    /// A page of a concert's schedules in start order, each on-sale one
    /// with its available seats as counted within [`AVAILABILITY_TTL`]: the
    /// list needs no login, so its cost must not follow its read rate.
    pub async fn list_schedules(
        &self,
        concert: ConcertId,
        after: Option<i64>,
        limit: u64,
    ) -> Result<Page<ScheduleSummary>, CatalogError> {
        let page = PageRequest::new(after, limit, MAX_SCHEDULE_PAGE);
        let mut rows = self
            .repo
            .list_schedules(concert, page)
            .await?
            .ok_or(CatalogError::ConcertNotFound(concert))?;
        self.count_available(concert, &mut rows).await?;
        Ok(Page::of(rows, page, |s| s.id.value()).map(ScheduleSummary::as_offered))
    }

    /// Fills in the rows' available seats from the counts kept, counting
    /// the on-sale ones missing in one query (one reader per concert at a
    /// time; who waited finds them counted).
    async fn count_available(
        &self,
        concert: ConcertId,
        rows: &mut [ScheduleSummary],
    ) -> Result<(), CatalogError> {
        let missing = |rows: &[ScheduleSummary]| -> Vec<ScheduleId> {
            rows.iter()
                .filter(|s| s.status == ScheduleStatus::OnSale)
                .filter(|s| !self.availability.contains_key(&s.id))
                .map(|s| s.id)
                .collect()
        };
        if !missing(rows).is_empty() {
            let _turn = self.counting.lock(concert).await;
            let missing = missing(rows);
            if !missing.is_empty() {
                let counts = self
                    .repo
                    .count_available(&missing, self.clock.now())
                    .await?;
                for id in missing {
                    let n = counts.iter().find(|(s, _)| *s == id).map_or(0, |(_, n)| *n);
                    self.availability.insert(id, n);
                }
            }
        }
        for row in rows {
            row.available_seats = self.availability.get(&row.id).unwrap_or(0);
        }
        Ok(())
    }

    /// A page of the seat map in number order, each seat with its
    /// availability as of now (`filter` keeps the seats a buyer asked
    /// for), as `render` makes it (a response body, say). While snapshots
    /// are on, a rendering is reused for as long as the snapshot it came
    /// from is served and no hold on the page has lapsed since: a rush of
    /// readers renders each page once per change, not once per read.
    pub async fn render_seats<T: Weighed + Send + Sync + 'static>(
        &self,
        schedule: ScheduleId,
        filter: &SeatFilter,
        after: Option<i64>,
        limit: u64,
        render: impl FnOnce(Page<(Seat, Availability)>) -> T,
    ) -> Result<Arc<T>, CatalogError> {
        let now = self.clock.now();
        let page = PageRequest::new(after, limit, MAX_SEAT_PAGE);
        let listing = self.seat_listing(schedule, filter, page, now).await?;
        let key = (schedule, filter.clone(), page);
        if let Some(value) = self.rendering(&key, &listing, now) {
            return Ok(value);
        }
        let until = match &*listing {
            SeatListing::Seats(seats) => seats.iter().filter_map(|s| s.changes_at(now)).min(),
            _ => None,
        };
        let value = Arc::new(render(page_as_of(&listing, page, now)));
        if let Some(rendered) = &self.rendered {
            rendered.insert(
                key,
                Arc::new(Rendering {
                    weight: listing.weight() + value.weight(),
                    from: listing,
                    until,
                    value: value.clone(),
                }),
            );
            // As for the snapshots: keep within the budget at every render.
            rendered.run_pending_tasks();
        }
        Ok(value)
    }

    /// The rendering of `key` made from `listing`, if it still shows `now`.
    fn rendering<T: Send + Sync + 'static>(
        &self,
        key: &SeatMapKey,
        listing: &Arc<SeatListing>,
        now: DateTime<Utc>,
    ) -> Option<Arc<T>> {
        let found = self.rendered.as_ref()?.get(key)?;
        if !Arc::ptr_eq(&found.from, listing) || found.until.is_some_and(|until| until <= now) {
            return None;
        }
        found.value.clone().downcast::<T>().ok()
    }

    /// The snapshot (or a fresh read) of one page's seats; an unknown or
    /// cancelled schedule is refused.
    async fn seat_listing(
        &self,
        schedule: ScheduleId,
        filter: &SeatFilter,
        page: PageRequest,
        now: DateTime<Utc>,
    ) -> Result<Arc<SeatListing>, CatalogError> {
        let listing = self
            .seat_maps
            .get_or_read(schedule, (schedule, filter.clone(), page), || {
                self.repo.list_seats(schedule, filter, page, now)
            })
            .await?;
        match &*listing {
            SeatListing::Seats(_) => Ok(listing),
            SeatListing::NoSchedule => Err(CatalogError::ScheduleNotFound(schedule)),
            // A cancelled show offers no seat, free or not.
            SeatListing::OffSale(_) => Err(CatalogError::NotOnSale(schedule)),
        }
    }

    pub async fn concert_exists(&self, concert: ConcertId) -> Result<bool, CatalogError> {
        self.repo.concert_exists(concert).await
    }

    pub async fn concert_of_schedule(
        &self,
        schedule: ScheduleId,
    ) -> Result<Option<ConcertId>, CatalogError> {
        self.repo.concert_of_schedule(schedule).await
    }

    /// Fills an empty catalog with `demo`; returns what it created, if anything.
    pub async fn seed_if_empty(
        &self,
        demo: ConcertDraft,
    ) -> Result<Option<CreatedConcert>, CatalogError> {
        if !self.repo.is_empty().await? {
            return Ok(None);
        }
        self.create_concert(demo, None).await.map(Some)
    }
}

/// The page of `listing` with each seat's availability as of `now`.
fn page_as_of(
    listing: &SeatListing,
    page: PageRequest,
    now: DateTime<Utc>,
) -> Page<(Seat, Availability)> {
    let seats = match listing {
        SeatListing::Seats(seats) => seats.clone(),
        SeatListing::NoSchedule | SeatListing::OffSale(_) => Vec::new(),
    };
    Page::of(seats, page, |seat| seat.id.value()).map(|seat| {
        let availability = seat.availability(now);
        (seat, availability)
    })
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    };

    use chrono::{DateTime, TimeDelta, Utc};

    use super::*;
    use crate::{
        catalog::domain::{
            CreatedSchedule, ScheduleDraft, ScheduleStatus, SeatBlockDraft, SeatState,
        },
        kernel::{ManualClock, Points, SeatId},
    };

    fn t0() -> DateTime<Utc> {
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

    #[derive(Clone, Default)]
    struct CountingWake(Arc<AtomicUsize>);

    impl CountingWake {
        fn count(&self) -> usize {
            self.0.load(Ordering::SeqCst)
        }
    }

    impl RelayWake for CountingWake {
        fn wake(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[derive(Default)]
    struct Catalog {
        stored: Vec<(NewConcert, DateTime<Utc>)>,
        /// Concert 1 has these schedules; schedule 1 (of concert 1) these seats.
        schedules: Vec<ScheduleSummary>,
        seats: Vec<Seat>,
        schedule_reads: Vec<DateTime<Utc>>,
        counted: Vec<Vec<ScheduleId>>,
        page_requests: Vec<PageRequest>,
        down: bool,
    }

    /// Hand-written fake: concert 1 and schedule 1 exist from the start;
    /// every created concert is recorded.
    #[derive(Clone, Default)]
    struct FakeRepo(Arc<Mutex<Catalog>>);

    impl FakeRepo {
        fn check(&self) -> Result<(), CatalogError> {
            if self.0.lock().unwrap().down {
                return Err(CatalogError::Unavailable(anyhow::anyhow!("database down")));
            }
            Ok(())
        }

        fn stored(&self) -> Vec<(NewConcert, DateTime<Utc>)> {
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

    fn demo(now: DateTime<Utc>) -> ConcertDraft {
        ConcertDraft {
            title: " Demo ".into(),
            venue: "Hall".into(),
            schedules: vec![ScheduleDraft {
                starts_at: now + TimeDelta::days(1),
                seat_blocks: vec![SeatBlockDraft {
                    grade: "R".into(),
                    price: 10,
                    count: 3,
                }],
            }],
        }
    }

    fn seat(number: u32, state: SeatState) -> Seat {
        Seat {
            id: SeatId(i64::from(number)),
            schedule_id: ScheduleId(1),
            number,
            grade: "R".into(),
            price: Points::new(10).unwrap(),
            state,
        }
    }

    struct Harness {
        service: CatalogService<FakeRepo, ManualClock, CountingWake>,
        repo: FakeRepo,
        clock: ManualClock,
        wake: CountingWake,
    }

    fn harness() -> Harness {
        let repo = FakeRepo::default();
        let clock = ManualClock::new(t0());
        let wake = CountingWake::default();
        Harness {
            service: CatalogService::new(repo.clone(), clock.clone(), wake.clone()),
            repo,
            clock,
            wake,
        }
    }

    impl<R: CatalogRepository, C: Clock, W: RelayWake> CatalogService<R, C, W> {
        /// The page `render_seats` renders, as it is given to `render`.
        async fn list_seats(
            &self,
            schedule: ScheduleId,
            filter: &SeatFilter,
            after: Option<i64>,
            limit: u64,
        ) -> Result<Page<(Seat, Availability)>, CatalogError> {
            let page = self
                .render_seats(schedule, filter, after, limit, |page| page)
                .await?;
            Ok((*page).clone())
        }
    }

    fn invalid_detail<T: std::fmt::Debug>(result: Result<T, CatalogError>) -> String {
        match result {
            Err(CatalogError::Invalid(detail)) => detail,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    // --- create_concert ---

    #[tokio::test]
    async fn a_valid_concert_is_stored_parsed_at_the_clock_time_and_wakes_the_relay() {
        let h = harness();
        let created = h.service.create_concert(demo(t0()), None).await.unwrap();

        let stored = h.repo.stored();
        assert_eq!(stored.len(), 1);
        let (concert, at) = &stored[0];
        assert_eq!(*at, t0());
        assert_eq!(concert.title, "Demo", "trimmed before storing");
        assert_eq!(concert.schedules[0].seat_count(), 3);
        assert_eq!(created.schedules.len(), 1);
        assert_eq!(created.schedules[0].seat_count, 3);
        assert_eq!(h.wake.count(), 1);
    }

    #[tokio::test]
    async fn invalid_drafts_never_reach_the_repository() {
        let h = harness();
        let mut blank_venue = demo(t0());
        blank_venue.venue = String::new();
        assert!(
            invalid_detail(h.service.create_concert(blank_venue, None).await).contains("venue")
        );

        let mut no_schedules = demo(t0());
        no_schedules.schedules.clear();
        assert!(
            invalid_detail(h.service.create_concert(no_schedules, None).await)
                .contains("schedules")
        );

        let mut free_seats = demo(t0());
        free_seats.schedules[0].seat_blocks[0].price = -1;
        assert!(invalid_detail(h.service.create_concert(free_seats, None).await).contains("price"));

        let mut no_seats = demo(t0());
        no_seats.schedules[0].seat_blocks[0].count = 0;
        assert!(invalid_detail(h.service.create_concert(no_seats, None).await).contains("count"));

        assert!(h.repo.stored().is_empty());
        assert_eq!(h.wake.count(), 0);
    }

    #[tokio::test]
    async fn a_schedule_the_clock_has_passed_is_refused() {
        let h = harness();
        let draft = demo(t0());
        h.clock.advance(TimeDelta::days(1));
        assert!(invalid_detail(h.service.create_concert(draft, None).await).contains("future"));
        assert!(h.repo.stored().is_empty());
    }

    #[tokio::test]
    async fn a_failed_store_is_reported_and_wakes_nobody() {
        let h = harness();
        h.repo.0.lock().unwrap().down = true;
        assert!(matches!(
            h.service.create_concert(demo(t0()), None).await,
            Err(CatalogError::Unavailable(_))
        ));
        assert_eq!(h.wake.count(), 0);
    }

    // --- seed_if_empty ---

    #[tokio::test]
    async fn seeds_only_an_empty_catalog() {
        let h = harness();
        assert!(h.service.seed_if_empty(demo(t0())).await.unwrap().is_some());
        assert!(h.service.seed_if_empty(demo(t0())).await.unwrap().is_none());
        assert_eq!(h.repo.stored().len(), 1);
        assert_eq!(h.wake.count(), 1);
    }

    #[tokio::test]
    async fn an_invalid_seed_is_refused_like_any_other_concert() {
        let h = harness();
        let mut demo = demo(t0());
        demo.title = "\u{7}".into();
        assert!(invalid_detail(h.service.seed_if_empty(demo).await).contains("title"));
        assert!(h.repo.stored().is_empty());
    }

    #[tokio::test]
    async fn seeding_while_the_database_is_down_is_unavailable() {
        let h = harness();
        h.repo.0.lock().unwrap().down = true;
        assert!(matches!(
            h.service.seed_if_empty(demo(t0())).await,
            Err(CatalogError::Unavailable(_))
        ));
    }

    // --- listings ---

    #[tokio::test]
    async fn concerts_come_in_pages_with_a_cursor_while_more_follow() {
        let h = harness();
        let first = h.service.list_concerts(None, 2).await.unwrap();
        assert_eq!(
            first.items.iter().map(|c| c.id).collect::<Vec<_>>(),
            vec![ConcertId(1), ConcertId(2)]
        );
        assert_eq!(first.next_cursor, Some(2));
        let last = h.service.list_concerts(first.next_cursor, 2).await.unwrap();
        assert_eq!(
            last.items.iter().map(|c| c.id).collect::<Vec<_>>(),
            vec![ConcertId(3)]
        );
        assert_eq!(last.next_cursor, None);
        h.repo.0.lock().unwrap().down = true;
        assert!(matches!(
            h.service.list_concerts(None, 2).await,
            Err(CatalogError::Unavailable(_))
        ));
    }

    #[tokio::test]
    async fn every_page_size_is_kept_within_its_maximum() {
        let h = harness();
        h.service.list_concerts(None, u64::MAX).await.unwrap();
        h.service.list_concerts(None, 0).await.unwrap();
        h.service
            .list_schedules(ConcertId(1), None, u64::MAX)
            .await
            .unwrap();
        h.service
            .list_seats(ScheduleId(1), &SeatFilter::default(), None, u64::MAX)
            .await
            .unwrap();
        let limits: Vec<u64> = h
            .repo
            .0
            .lock()
            .unwrap()
            .page_requests
            .iter()
            .map(|p| p.limit)
            .collect();
        assert_eq!(
            limits,
            vec![MAX_CONCERT_PAGE, 1, MAX_SCHEDULE_PAGE, MAX_SEAT_PAGE]
        );
    }

    #[tokio::test]
    async fn schedules_of_a_known_concert_are_counted_as_of_now() {
        let h = harness();
        let summary = ScheduleSummary {
            id: ScheduleId(1),
            concert_id: ConcertId(1),
            starts_at: t0() + TimeDelta::days(3),
            available_seats: 42,
            status: ScheduleStatus::OnSale,
        };
        h.repo.0.lock().unwrap().schedules.push(summary.clone());
        h.clock.advance(TimeDelta::minutes(1));

        let page = h
            .service
            .list_schedules(ConcertId(1), None, 10)
            .await
            .unwrap();
        assert_eq!(page.items, vec![summary]);
        assert_eq!(page.next_cursor, None);
        assert_eq!(
            h.repo.0.lock().unwrap().schedule_reads,
            vec![t0() + TimeDelta::minutes(1)]
        );
    }

    #[tokio::test]
    async fn availability_is_counted_once_per_period_however_many_read_it() {
        let h = harness();
        let service = h
            .service
            .clone()
            .counting_availability_every(Duration::from_millis(200));
        for (id, status) in [(1, ScheduleStatus::OnSale), (2, ScheduleStatus::Cancelled)] {
            h.repo.0.lock().unwrap().schedules.push(ScheduleSummary {
                id: ScheduleId(id),
                concert_id: ConcertId(1),
                starts_at: t0() + TimeDelta::days(id),
                available_seats: 42,
                status,
            });
        }
        let reads = (0..20).map(|_| service.list_schedules(ConcertId(1), None, 10));
        for page in futures::future::join_all(reads).await {
            assert_eq!(page.unwrap().items[0].available_seats, 42);
        }
        assert_eq!(
            h.repo.0.lock().unwrap().counted,
            vec![vec![ScheduleId(1)]],
            "one count for twenty readers, and none for a schedule off sale"
        );

        h.repo.0.lock().unwrap().schedules[0].available_seats = 41;
        let page = service
            .list_schedules(ConcertId(1), None, 10)
            .await
            .unwrap();
        assert_eq!(page.items[0].available_seats, 42, "within the period");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let page = service
            .list_schedules(ConcertId(1), None, 10)
            .await
            .unwrap();
        assert_eq!(page.items[0].available_seats, 41, "counted again after it");
        assert_eq!(h.repo.0.lock().unwrap().counted.len(), 2);
    }

    #[tokio::test]
    async fn a_cancelled_schedule_offers_no_seat() {
        let h = harness();
        for (id, status) in [
            (1, ScheduleStatus::OnSale),
            (2, ScheduleStatus::Cancelling),
            (3, ScheduleStatus::Cancelled),
        ] {
            h.repo.0.lock().unwrap().schedules.push(ScheduleSummary {
                id: ScheduleId(id),
                concert_id: ConcertId(1),
                starts_at: t0() + TimeDelta::days(id),
                available_seats: 42,
                status,
            });
        }
        let page = h
            .service
            .list_schedules(ConcertId(1), None, 10)
            .await
            .unwrap();
        let offered: Vec<_> = page
            .items
            .iter()
            .map(|s| (s.status, s.available_seats))
            .collect();
        assert_eq!(
            offered,
            vec![
                (ScheduleStatus::OnSale, 42),
                (ScheduleStatus::Cancelling, 0),
                (ScheduleStatus::Cancelled, 0)
            ]
        );
    }

    #[tokio::test]
    async fn a_known_concert_without_schedules_lists_none_rather_than_not_found() {
        let h = harness();
        assert!(
            h.service
                .list_schedules(ConcertId(1), None, 10)
                .await
                .unwrap()
                .items
                .is_empty()
        );
    }

    #[tokio::test]
    async fn schedules_of_an_unknown_concert_are_not_found() {
        let h = harness();
        assert!(matches!(
            h.service.list_schedules(ConcertId(5), None, 10).await,
            Err(CatalogError::ConcertNotFound(ConcertId(5)))
        ));
    }

    #[tokio::test]
    async fn a_schedule_off_sale_offers_no_seat_map() {
        let h = harness();
        assert!(matches!(
            h.service
                .list_seats(ScheduleId(3), &SeatFilter::default(), None, 10)
                .await,
            Err(CatalogError::NotOnSale(ScheduleId(3)))
        ));
    }

    #[tokio::test]
    async fn seats_of_an_unknown_schedule_are_not_found() {
        let h = harness();
        assert!(matches!(
            h.service
                .list_seats(ScheduleId(2), &SeatFilter::default(), None, 10)
                .await,
            Err(CatalogError::ScheduleNotFound(ScheduleId(2)))
        ));
        h.repo.0.lock().unwrap().down = true;
        assert!(matches!(
            h.service
                .list_seats(ScheduleId(1), &SeatFilter::default(), None, 10)
                .await,
            Err(CatalogError::Unavailable(_))
        ));
    }

    #[tokio::test]
    async fn each_seat_shows_its_availability_as_of_the_clock() {
        let h = harness();
        let until = t0() + TimeDelta::minutes(5);
        h.repo.0.lock().unwrap().seats = vec![
            seat(1, SeatState::Available),
            seat(
                2,
                SeatState::Held {
                    holder: UserId(1),
                    until,
                },
            ),
            seat(3, SeatState::Sold { owner: UserId(2) }),
        ];
        let availability = |seats: Page<(Seat, Availability)>| {
            seats
                .items
                .into_iter()
                .map(|(s, a)| (s.number, a))
                .collect::<Vec<_>>()
        };

        assert_eq!(
            availability(
                h.service
                    .list_seats(ScheduleId(1), &SeatFilter::default(), None, 10)
                    .await
                    .unwrap()
            ),
            vec![
                (1, Availability::Available),
                (2, Availability::Held),
                (3, Availability::Sold)
            ]
        );
        h.clock.advance(TimeDelta::minutes(5));
        assert_eq!(
            availability(
                h.service
                    .list_seats(ScheduleId(1), &SeatFilter::default(), None, 10)
                    .await
                    .unwrap()
            ),
            vec![
                (1, Availability::Available),
                (2, Availability::Available),
                (3, Availability::Sold)
            ]
        );
    }

    #[tokio::test]
    async fn a_rendered_page_is_reused_until_its_snapshot_changes_or_a_hold_on_it_lapses() {
        let h = harness();
        let service = h
            .service
            .clone()
            .snapshotting(Duration::from_secs(3_600), 1 << 20);
        let until = t0() + TimeDelta::minutes(5);
        h.repo.0.lock().unwrap().seats = vec![
            seat(1, SeatState::Available),
            seat(
                2,
                SeatState::Held {
                    holder: UserId(1),
                    until,
                },
            ),
        ];
        let renders = std::sync::atomic::AtomicUsize::new(0);
        let render = |service: &CatalogService<_, _, _>| {
            let renders = &renders;
            let service = service.clone();
            async move {
                service
                    .render_seats(ScheduleId(1), &SeatFilter::default(), None, 10, |page| {
                        renders.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        page.items.iter().map(|(_, a)| *a).collect::<Vec<_>>()
                    })
                    .await
                    .unwrap()
            }
        };
        let first = render(&service).await;
        assert_eq!(*first, vec![Availability::Available, Availability::Held]);
        let again = render(&service).await;
        assert!(Arc::ptr_eq(&first, &again), "one rendering per snapshot");
        assert_eq!(renders.load(std::sync::atomic::Ordering::SeqCst), 1);

        // The hold lapses by time alone: the same snapshot renders anew.
        h.clock.advance(TimeDelta::minutes(5));
        let lapsed = render(&service).await;
        assert_eq!(
            *lapsed,
            vec![Availability::Available, Availability::Available]
        );
        assert_eq!(renders.load(std::sync::atomic::Ordering::SeqCst), 2);

        // A change committed on this instance retires the snapshot and its rendering.
        h.repo.0.lock().unwrap().seats[0].state = SeatState::Sold { owner: UserId(3) };
        crate::kernel::snapshot::touch(ScheduleId(1));
        let sold = render(&service).await;
        assert_eq!(*sold, vec![Availability::Sold, Availability::Available]);
        assert_eq!(renders.load(std::sync::atomic::Ordering::SeqCst), 3);

        // Without snapshots every read renders.
        render(&h.service).await;
        render(&h.service).await;
        assert_eq!(renders.load(std::sync::atomic::Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn the_seat_map_pages_by_seat_and_filters_by_availability_and_grade() {
        let h = harness();
        let until = t0() + TimeDelta::minutes(5);
        let mut seats: Vec<Seat> = (1..=5).map(|n| seat(n, SeatState::Available)).collect();
        seats[1].state = SeatState::Held {
            holder: UserId(1),
            until,
        };
        seats[3].state = SeatState::Sold { owner: UserId(2) };
        seats[4].grade = "S".into();
        h.repo.0.lock().unwrap().seats = seats;
        let numbers = |page: &Page<(Seat, Availability)>| {
            page.items.iter().map(|(s, _)| s.number).collect::<Vec<_>>()
        };

        let all = SeatFilter::default();
        let first = h
            .service
            .list_seats(ScheduleId(1), &all, None, 2)
            .await
            .unwrap();
        assert_eq!(numbers(&first), vec![1, 2]);
        assert_eq!(first.next_cursor, Some(2));
        let second = h
            .service
            .list_seats(ScheduleId(1), &all, first.next_cursor, 2)
            .await
            .unwrap();
        assert_eq!(numbers(&second), vec![3, 4]);
        let last = h
            .service
            .list_seats(ScheduleId(1), &all, second.next_cursor, 2)
            .await
            .unwrap();
        assert_eq!(numbers(&last), vec![5]);
        assert_eq!(last.next_cursor, None);

        let available = SeatFilter {
            status: Some(Availability::Available),
            grade: Some("R".into()),
        };
        let page = h
            .service
            .list_seats(ScheduleId(1), &available, None, 10)
            .await
            .unwrap();
        assert_eq!(numbers(&page), vec![1, 3]);
        h.clock.advance(TimeDelta::minutes(5));
        let page = h
            .service
            .list_seats(ScheduleId(1), &available, None, 10)
            .await
            .unwrap();
        assert_eq!(
            numbers(&page),
            vec![1, 2, 3],
            "a lapsed hold is available again"
        );
        assert!(
            page.items
                .iter()
                .all(|(_, a)| *a == Availability::Available)
        );
    }

    // --- lookups for other modules ---

    #[tokio::test]
    async fn lookups_answer_what_the_catalog_holds() {
        let h = harness();
        assert!(h.service.concert_exists(ConcertId(1)).await.unwrap());
        assert!(!h.service.concert_exists(ConcertId(2)).await.unwrap());
        assert_eq!(
            h.service.concert_of_schedule(ScheduleId(1)).await.unwrap(),
            Some(ConcertId(1))
        );
        assert_eq!(
            h.service.concert_of_schedule(ScheduleId(2)).await.unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn lookups_fail_when_the_database_is_down() {
        let h = harness();
        h.repo.0.lock().unwrap().down = true;
        assert!(matches!(
            h.service.concert_exists(ConcertId(1)).await,
            Err(CatalogError::Unavailable(_))
        ));
        assert!(matches!(
            h.service.concert_of_schedule(ScheduleId(1)).await,
            Err(CatalogError::Unavailable(_))
        ));
    }
}
