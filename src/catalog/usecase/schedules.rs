//! A concert's schedules in start order, each on-sale one with its count of
//! available seats, counted at most once per period however many read it.

use super::CatalogService;
use crate::{
    catalog::{
        domain::{CatalogError, MAX_SCHEDULE_PAGE, ScheduleStatus, ScheduleSummary},
        ports::{CatalogPorts, CatalogRepository},
    },
    kernel::{Clock, ConcertId, Page, PageRequest, ScheduleId},
};

impl<P: CatalogPorts> CatalogService<P> {
    /// A page of a concert's schedules in start order, each on-sale one
    /// with its available seats as counted within
    /// [`AVAILABILITY_TTL`](super::AVAILABILITY_TTL): the list needs no
    /// login, so its cost must not follow its read rate.
    pub async fn list_schedules(
        &self,
        concert: ConcertId,
        asked: PageRequest,
    ) -> Result<Page<ScheduleSummary>, CatalogError> {
        let page = asked.at_most(MAX_SCHEDULE_PAGE);
        let mut rows = self
            .repo
            .list_schedules(concert, page)
            .await?
            .ok_or(CatalogError::ConcertNotFound(concert))?;
        self.count_available(concert, &mut rows).await?;
        Ok(Page::of(rows, page, |schedule| schedule.id.value()).map(ScheduleSummary::as_offered))
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
                .filter(|schedule| schedule.status == ScheduleStatus::OnSale)
                .filter(|schedule| !self.availability.contains_key(&schedule.id))
                .map(|schedule| schedule.id)
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
                    let available = counts
                        .iter()
                        .find(|(schedule, _)| *schedule == id)
                        .map_or(0, |(_, available)| *available);
                    self.availability.insert(id, available);
                }
            }
        }
        for row in rows {
            row.available_seats = self.availability.get(&row.id).unwrap_or(0);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::TimeDelta;

    use crate::{
        catalog::{
            domain::{CatalogError, ScheduleStatus, ScheduleSummary},
            usecase::fake::{harness, t0},
        },
        kernel::{ConcertId, PageRequest, ScheduleId},
    };

    /// Schedule `id` of concert 1, `id` days after `t0`, with 42 seats available.
    fn schedule(id: i64, status: ScheduleStatus) -> ScheduleSummary {
        ScheduleSummary {
            id: ScheduleId(id),
            concert_id: ConcertId(1),
            starts_at: t0() + TimeDelta::days(id),
            available_seats: 42,
            status,
        }
    }

    #[tokio::test]
    async fn schedules_of_a_known_concert_are_counted_as_of_now() {
        let h = harness();
        let summary = schedule(1, ScheduleStatus::OnSale);
        h.repo.0.lock().unwrap().schedules.push(summary.clone());
        h.clock.advance(TimeDelta::minutes(1));

        let page = h
            .service
            .list_schedules(ConcertId(1), PageRequest::asked(None, 10))
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
            h.repo
                .0
                .lock()
                .unwrap()
                .schedules
                .push(schedule(id, status));
        }
        let reads =
            (0..20).map(|_| service.list_schedules(ConcertId(1), PageRequest::asked(None, 10)));
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
            .list_schedules(ConcertId(1), PageRequest::asked(None, 10))
            .await
            .unwrap();
        assert_eq!(page.items[0].available_seats, 42, "within the period");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let page = service
            .list_schedules(ConcertId(1), PageRequest::asked(None, 10))
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
            h.repo
                .0
                .lock()
                .unwrap()
                .schedules
                .push(schedule(id, status));
        }
        let page = h
            .service
            .list_schedules(ConcertId(1), PageRequest::asked(None, 10))
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
                .list_schedules(ConcertId(1), PageRequest::asked(None, 10))
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
            h.service
                .list_schedules(ConcertId(5), PageRequest::asked(None, 10))
                .await,
            Err(CatalogError::ConcertNotFound(ConcertId(5)))
        ));
    }
}
