//! The seat map of one schedule: each seat with its availability as of now,
//! read from a snapshot and rendered once per change while snapshots are on.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};

use super::CatalogService;
use crate::{
    catalog::{
        domain::{Availability, CatalogError, MAX_SEAT_PAGE, Seat, SeatFilter, SeatListing},
        ports::{CatalogPorts, CatalogRepository},
    },
    kernel::{
        Clock, Page, PageRequest, ScheduleId,
        cache::{Cache, Weighed},
    },
};

/// One page of one schedule's seat map, as asked for.
pub(super) type SeatMapKey = (ScheduleId, SeatFilter, PageRequest);

/// A page rendered from one snapshot, good until a hold on it lapses.
struct Rendering<T> {
    from: Arc<SeatListing>,
    until: Option<DateTime<Utc>>,
    value: Arc<T>,
    /// The page it was rendered from and the rendering (a JSON body, say)
    /// together: it keeps both alive.
    weight: usize,
}

impl<T> Weighed for Rendering<T> {
    fn weight(&self) -> usize {
        self.weight
    }
}

/// Seat-map pages as one caller renders them (`T`: its response body),
/// each with the snapshot it was rendered from; none while snapshots are
/// off. Made by [`CatalogService::renderings`], held by the caller.
pub struct Renderings<T> {
    pages: Option<Cache<SeatMapKey, Arc<Rendering<T>>>>,
}

impl<T> Clone for Renderings<T> {
    fn clone(&self) -> Self {
        Self {
            pages: self.pages.clone(),
        }
    }
}

impl<T: Send + Sync + 'static> Renderings<T> {
    pub(super) fn new(ttl: Duration, budget: usize) -> Self {
        Self {
            pages: (!ttl.is_zero()).then(|| Cache::weighed(budget, ttl)),
        }
    }

    /// The rendering of `key` made from `listing`, if it still shows `now`.
    fn get(
        &self,
        key: &SeatMapKey,
        listing: &Arc<SeatListing>,
        now: DateTime<Utc>,
    ) -> Option<Arc<T>> {
        let found = self.pages.as_ref()?.get(key)?;
        let current =
            Arc::ptr_eq(&found.from, listing) && found.until.is_none_or(|until| until > now);
        current.then(|| found.value.clone())
    }

    fn keep(&self, key: SeatMapKey, rendering: Rendering<T>) {
        if let Some(pages) = &self.pages {
            pages.insert(key, Arc::new(rendering));
            // As for the snapshots: keep within the budget at every render.
            pages.settle();
        }
    }
}

impl<P: CatalogPorts> CatalogService<P> {
    /// A cache for the pages one caller renders, within the budget and time
    /// to live [`CatalogService::snapshotting`] set (off without snapshots).
    pub fn renderings<T: Send + Sync + 'static>(&self) -> Renderings<T> {
        Renderings::new(self.snapshot_ttl, self.rendering_budget)
    }

    /// A page of the seat map in number order, each seat with its
    /// availability as of now (`filter` keeps the seats a buyer asked
    /// for), as `render` makes it (a response body, say). While snapshots
    /// are on, a rendering is reused for as long as the snapshot it came
    /// from is served and no hold on the page has lapsed since: a rush of
    /// readers renders each page once per change, not once per read.
    pub async fn render_seats<T: Weighed + Send + Sync + 'static>(
        &self,
        renderings: &Renderings<T>,
        schedule: ScheduleId,
        filter: &SeatFilter,
        asked: PageRequest,
        render: impl FnOnce(Page<(Seat, Availability)>) -> T,
    ) -> Result<Arc<T>, CatalogError> {
        let now = self.clock.now();
        let page = asked.at_most(MAX_SEAT_PAGE);
        let listing = self.seat_listing(schedule, filter, page, now).await?;
        let key = (schedule, filter.clone(), page);
        if let Some(value) = renderings.get(&key, &listing, now) {
            return Ok(value);
        }
        let until = match &*listing {
            SeatListing::Seats(seats) => seats.iter().filter_map(|seat| seat.changes_at(now)).min(),
            _ => None,
        };
        let value = Arc::new(render(page_as_of(&listing, page, now)));
        renderings.keep(
            key,
            Rendering {
                weight: listing.weight() + value.weight(),
                from: listing,
                until,
                value: value.clone(),
            },
        );
        Ok(value)
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
    use std::{sync::Arc, time::Duration};

    use chrono::{DateTime, TimeDelta, Utc};

    use crate::{
        catalog::{
            domain::{Availability, CatalogError, Seat, SeatFilter, SeatState},
            usecase::{
                CatalogService,
                fake::{Fakes, harness, seat, t0, unavailable},
            },
        },
        kernel::{Page, PageRequest, ScheduleId, UserId},
    };

    /// The first page of the schedule's whole seat map.
    async fn first_page(
        service: &CatalogService<Fakes>,
        schedule: ScheduleId,
    ) -> Result<Page<(Seat, Availability)>, CatalogError> {
        service
            .list_seats(
                schedule,
                &SeatFilter::default(),
                PageRequest::asked(None, 10),
            )
            .await
    }

    /// Seat 1 free, seat 2 held by user 1 until `until`.
    fn free_and_held(until: DateTime<Utc>) -> Vec<Seat> {
        let held = SeatState::Held {
            holder: UserId(1),
            until,
        };
        vec![seat(1, SeatState::Available), seat(2, held)]
    }

    #[tokio::test]
    async fn a_schedule_off_sale_offers_no_seat_map() {
        let h = harness();
        assert!(matches!(
            first_page(&h.service, ScheduleId(3)).await,
            Err(CatalogError::NotOnSale(ScheduleId(3)))
        ));
    }

    #[tokio::test]
    async fn seats_of_an_unknown_schedule_are_not_found() {
        let h = harness();
        assert!(matches!(
            first_page(&h.service, ScheduleId(2)).await,
            Err(CatalogError::ScheduleNotFound(ScheduleId(2)))
        ));
        h.repo.0.lock().unwrap().down = true;
        assert!(unavailable(first_page(&h.service, ScheduleId(1)).await));
    }

    #[tokio::test]
    async fn each_seat_shows_its_availability_as_of_the_clock() {
        let h = harness();
        let until = t0() + TimeDelta::minutes(5);
        let mut seats = free_and_held(until);
        seats.push(seat(3, SeatState::Sold { owner: UserId(2) }));
        h.repo.0.lock().unwrap().seats = seats;
        let availability = async || {
            let page = first_page(&h.service, ScheduleId(1)).await.unwrap();
            page.items
                .into_iter()
                .map(|(seat, availability)| (seat.number, availability))
                .collect::<Vec<_>>()
        };

        assert_eq!(
            availability().await,
            vec![
                (1, Availability::Available),
                (2, Availability::Held),
                (3, Availability::Sold)
            ]
        );
        h.clock.advance(TimeDelta::minutes(5));
        assert_eq!(
            availability().await,
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
        h.repo.0.lock().unwrap().seats = free_and_held(until);
        let renders = std::sync::atomic::AtomicUsize::new(0);
        let (snapshotted, direct) = (service.renderings(), h.service.renderings());
        let render = |service: &CatalogService<_>| {
            let renders = &renders;
            let service = service.clone();
            let renderings = if service.snapshot_ttl.is_zero() {
                direct.clone()
            } else {
                snapshotted.clone()
            };
            async move {
                service
                    .render_seats(
                        &renderings,
                        ScheduleId(1),
                        &SeatFilter::default(),
                        PageRequest::asked(None, 10),
                        |page| {
                            renders.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            page.items
                                .iter()
                                .map(|(_, availability)| *availability)
                                .collect::<Vec<_>>()
                        },
                    )
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
        let page = async |filter: &SeatFilter, after: Option<i64>, limit: u64| {
            h.service
                .list_seats(ScheduleId(1), filter, PageRequest::asked(after, limit))
                .await
                .unwrap()
        };

        let all = SeatFilter::default();
        let first = page(&all, None, 2).await;
        assert_eq!(numbers(&first), vec![1, 2]);
        assert_eq!(first.next_cursor, Some(2));
        let second = page(&all, first.next_cursor, 2).await;
        assert_eq!(numbers(&second), vec![3, 4]);
        let last = page(&all, second.next_cursor, 2).await;
        assert_eq!(numbers(&last), vec![5]);
        assert_eq!(last.next_cursor, None);

        let available = SeatFilter {
            status: Some(Availability::Available),
            grade: Some("R".into()),
        };
        assert_eq!(numbers(&page(&available, None, 10).await), vec![1, 3]);
        h.clock.advance(TimeDelta::minutes(5));
        let lapsed = page(&available, None, 10).await;
        assert_eq!(
            numbers(&lapsed),
            vec![1, 2, 3],
            "a lapsed hold is available again"
        );
        assert!(
            lapsed
                .items
                .iter()
                .all(|(_, a)| *a == Availability::Available)
        );
    }
}
