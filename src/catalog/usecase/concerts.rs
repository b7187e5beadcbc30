//! Concerts: created by an admin (or seeded into an empty catalog), listed
//! in pages, and the lookups other modules make of them.

use super::CatalogService;
use crate::{
    catalog::{
        domain::{
            CatalogError, Concert, ConcertDraft, CreatedConcert, MAX_CONCERT_PAGE, NewConcert,
        },
        ports::{CatalogPorts, CatalogRepository},
    },
    kernel::{Clock, ConcertId, Page, PageRequest, ScheduleId, UserId, events::RelayWake},
};

impl<P: CatalogPorts> CatalogService<P> {
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

    /// A page of concerts in id order.
    pub async fn list_concerts(&self, asked: PageRequest) -> Result<Page<Concert>, CatalogError> {
        let read = |page| self.repo.list_concerts(page);
        asked.read(MAX_CONCERT_PAGE, read, |c| c.id.value()).await
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
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use crate::{
        catalog::{
            domain::{MAX_CONCERT_PAGE, MAX_SCHEDULE_PAGE, MAX_SEAT_PAGE, SeatFilter},
            usecase::fake::{demo, harness, invalid_detail, t0, unavailable},
        },
        kernel::{ConcertId, PageRequest, ScheduleId},
    };

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
        assert!(unavailable(
            h.service.create_concert(demo(t0()), None).await
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
        assert!(unavailable(h.service.seed_if_empty(demo(t0())).await));
    }

    // --- listings ---

    #[tokio::test]
    async fn concerts_come_in_pages_with_a_cursor_while_more_follow() {
        let h = harness();
        let concerts = async |after| h.service.list_concerts(PageRequest::asked(after, 2)).await;
        let first = concerts(None).await.unwrap();
        assert_eq!(
            first.items.iter().map(|c| c.id).collect::<Vec<_>>(),
            vec![ConcertId(1), ConcertId(2)]
        );
        assert_eq!(first.next_cursor, Some(2));
        let last = concerts(first.next_cursor).await.unwrap();
        assert_eq!(
            last.items.iter().map(|c| c.id).collect::<Vec<_>>(),
            vec![ConcertId(3)]
        );
        assert_eq!(last.next_cursor, None);
        h.repo.0.lock().unwrap().down = true;
        assert!(unavailable(concerts(None).await));
    }

    /// Every listing of the room, concerts, schedules and seats alike.
    #[tokio::test]
    async fn every_page_size_is_kept_within_its_maximum() {
        let h = harness();
        h.service
            .list_concerts(PageRequest::asked(None, u64::MAX))
            .await
            .unwrap();
        h.service
            .list_concerts(PageRequest::asked(None, 0))
            .await
            .unwrap();
        h.service
            .list_schedules(ConcertId(1), PageRequest::asked(None, u64::MAX))
            .await
            .unwrap();
        h.service
            .list_seats(
                ScheduleId(1),
                &SeatFilter::default(),
                PageRequest::asked(None, u64::MAX),
            )
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
        assert!(unavailable(h.service.concert_exists(ConcertId(1)).await));
        assert!(unavailable(
            h.service.concert_of_schedule(ScheduleId(1)).await
        ));
    }
}
