use super::{
    domain::{
        Availability, CatalogError, Concert, ConcertDraft, CreatedConcert, NewConcert,
        ScheduleSummary, Seat,
    },
    ports::CatalogRepository,
};
use crate::kernel::{Clock, ConcertId, ScheduleId, events::RelayWake};

#[derive(Clone)]
pub struct CatalogService<R, C, W> {
    repo: R,
    clock: C,
    wake: W,
}

impl<R: CatalogRepository, C: Clock, W: RelayWake> CatalogService<R, C, W> {
    pub fn new(repo: R, clock: C, wake: W) -> Self {
        Self { repo, clock, wake }
    }

    /// Validates and stores the concert; `ConcertCreated` is written to the
    /// outbox in the same transaction.
    pub async fn create_concert(
        &self,
        draft: ConcertDraft,
    ) -> Result<CreatedConcert, CatalogError> {
        let now = self.clock.now();
        let concert = NewConcert::parse(draft, now)?;
        let created = self.repo.create_concert(&concert, now).await?;
        self.wake.wake();
        Ok(created)
    }

    pub async fn list_concerts(&self) -> Result<Vec<Concert>, CatalogError> {
        self.repo.list_concerts().await
    }

    pub async fn list_schedules(
        &self,
        concert: ConcertId,
    ) -> Result<Vec<ScheduleSummary>, CatalogError> {
        self.repo
            .list_schedules(concert, self.clock.now())
            .await?
            .ok_or(CatalogError::ConcertNotFound(concert))
    }

    /// The seat map with each seat's availability as of now.
    pub async fn list_seats(
        &self,
        schedule: ScheduleId,
    ) -> Result<Vec<(Seat, Availability)>, CatalogError> {
        let now = self.clock.now();
        let seats = self
            .repo
            .list_seats(schedule)
            .await?
            .ok_or(CatalogError::ScheduleNotFound(schedule))?;
        Ok(seats
            .into_iter()
            .map(|seat| {
                let availability = seat.availability(now);
                (seat, availability)
            })
            .collect())
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
        self.create_concert(demo).await.map(Some)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use chrono::{DateTime, TimeDelta, Utc};

    use super::*;
    use crate::{
        catalog::domain::{ScheduleDraft, SeatBlockDraft, SeatState},
        kernel::{ManualClock, Points, SeatId, UserId},
    };

    #[derive(Clone)]
    struct NoWake;

    impl RelayWake for NoWake {
        fn wake(&self) {}
    }

    /// Hand-written fake: records what it was asked to store.
    #[derive(Clone, Default)]
    struct FakeRepo {
        stored: Arc<Mutex<Vec<NewConcert>>>,
        seats: Arc<Mutex<Vec<Seat>>>,
    }

    impl CatalogRepository for FakeRepo {
        async fn create_concert(
            &self,
            concert: &NewConcert,
            _now: DateTime<Utc>,
        ) -> Result<CreatedConcert, CatalogError> {
            self.stored.lock().unwrap().push(concert.clone());
            Ok(CreatedConcert {
                id: ConcertId(1),
                schedules: vec![],
            })
        }

        async fn list_concerts(&self) -> Result<Vec<Concert>, CatalogError> {
            Ok(vec![])
        }

        async fn list_schedules(
            &self,
            _concert: ConcertId,
            _now: DateTime<Utc>,
        ) -> Result<Option<Vec<ScheduleSummary>>, CatalogError> {
            Ok(None)
        }

        async fn list_seats(
            &self,
            schedule: ScheduleId,
        ) -> Result<Option<Vec<Seat>>, CatalogError> {
            let seats = self.seats.lock().unwrap().clone();
            Ok((schedule == ScheduleId(1)).then_some(seats))
        }

        async fn concert_exists(&self, concert: ConcertId) -> Result<bool, CatalogError> {
            Ok(concert == ConcertId(1))
        }

        async fn concert_of_schedule(
            &self,
            schedule: ScheduleId,
        ) -> Result<Option<ConcertId>, CatalogError> {
            Ok((schedule == ScheduleId(1)).then_some(ConcertId(1)))
        }

        async fn is_empty(&self) -> Result<bool, CatalogError> {
            Ok(self.stored.lock().unwrap().is_empty())
        }
    }

    fn demo(now: DateTime<Utc>) -> ConcertDraft {
        ConcertDraft {
            title: "Demo".into(),
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

    #[tokio::test]
    async fn invalid_drafts_never_reach_the_repository() {
        let clock = ManualClock::new(Utc::now());
        let repo = FakeRepo::default();
        let service = CatalogService::new(repo.clone(), clock.clone(), NoWake);
        let mut draft = demo(clock.now());
        draft.venue = String::new();
        assert!(matches!(
            service.create_concert(draft).await,
            Err(CatalogError::Invalid(_))
        ));
        assert!(repo.stored.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn seeds_only_an_empty_catalog() {
        let clock = ManualClock::new(Utc::now());
        let repo = FakeRepo::default();
        let service = CatalogService::new(repo.clone(), clock.clone(), NoWake);
        assert!(
            service
                .seed_if_empty(demo(clock.now()))
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            service
                .seed_if_empty(demo(clock.now()))
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(repo.stored.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn unknown_ids_are_not_found_and_seat_availability_follows_the_clock() {
        let clock = ManualClock::new(Utc::now());
        let repo = FakeRepo::default();
        repo.seats.lock().unwrap().push(Seat {
            id: SeatId(9),
            schedule_id: ScheduleId(1),
            number: 1,
            grade: "R".into(),
            price: Points::new(10).unwrap(),
            state: SeatState::Held {
                holder: UserId(1),
                until: clock.now() + TimeDelta::minutes(5),
            },
        });
        let service = CatalogService::new(repo, clock.clone(), NoWake);

        assert!(matches!(
            service.list_schedules(ConcertId(5)).await,
            Err(CatalogError::ConcertNotFound(ConcertId(5)))
        ));
        assert!(matches!(
            service.list_seats(ScheduleId(2)).await,
            Err(CatalogError::ScheduleNotFound(ScheduleId(2)))
        ));
        assert_eq!(
            service.list_seats(ScheduleId(1)).await.unwrap()[0].1,
            Availability::Held
        );
        clock.advance(TimeDelta::minutes(5));
        assert_eq!(
            service.list_seats(ScheduleId(1)).await.unwrap()[0].1,
            Availability::Available
        );
    }
}
