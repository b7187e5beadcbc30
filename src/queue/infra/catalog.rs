//! The waiting room's view of the catalog, through the catalog's use cases.

use std::time::Duration;

use crate::kernel::Fault;
use crate::{
    catalog::{domain::CatalogError, ports::CatalogPorts, usecase::CatalogService},
    kernel::{ConcertId, ScheduleId, cache::Cache},
    queue::{domain::QueueError, ports::ConcertDirectory},
};

impl From<CatalogError> for QueueError {
    fn from(err: CatalogError) -> Self {
        match err {
            CatalogError::Fault(Fault::Unavailable(cause)) => {
                QueueError::Fault(Fault::Unavailable(cause))
            }
            other => QueueError::Fault(Fault::Unexpected(other.into())),
        }
    }
}

impl<P: CatalogPorts> ConcertDirectory for CatalogService<P> {
    async fn concert_exists(&self, concert: ConcertId) -> Result<bool, QueueError> {
        Ok(CatalogService::concert_exists(self, concert).await?)
    }

    async fn concert_of_schedule(
        &self,
        schedule: ScheduleId,
    ) -> Result<Option<ConcertId>, QueueError> {
        Ok(CatalogService::concert_of_schedule(self, schedule).await?)
    }
}

/// Remembers which concerts exist and which concert a schedule belongs to
/// (concerts are never deleted and a schedule never moves), so entering a
/// room, and the waiting-room check on every seat-map, hold and payment
/// request, cost no database round trip after the first. An unknown
/// concert is asked again each time: it may be created later.
#[derive(Clone)]
pub struct CachedDirectory<D> {
    inner: D,
    concerts: Cache<ConcertId, ()>,
    schedules: Cache<ScheduleId, ConcertId>,
}

/// How many concerts and schedules one process remembers, and for how long
/// (what it remembers never changes: the bounds are on memory only).
const REMEMBERED: u64 = 100_000;
const REMEMBERED_FOR: Duration = Duration::from_secs(24 * 3600);

impl<D> CachedDirectory<D> {
    pub fn new(inner: D) -> Self {
        Self {
            inner,
            concerts: Cache::new(REMEMBERED, REMEMBERED_FOR),
            schedules: Cache::new(REMEMBERED, REMEMBERED_FOR),
        }
    }
}

impl<D: ConcertDirectory> ConcertDirectory for CachedDirectory<D> {
    async fn concert_exists(&self, concert: ConcertId) -> Result<bool, QueueError> {
        if self.concerts.get(&concert).is_some() {
            return Ok(true);
        }
        let exists = self.inner.concert_exists(concert).await?;
        if exists {
            self.concerts.insert(concert, ());
        }
        Ok(exists)
    }

    async fn concert_of_schedule(
        &self,
        schedule: ScheduleId,
    ) -> Result<Option<ConcertId>, QueueError> {
        if let Some(concert) = self.schedules.get(&schedule) {
            return Ok(Some(concert));
        }
        let found = self.inner.concert_of_schedule(schedule).await?;
        if let Some(concert) = found {
            self.schedules.insert(schedule, concert);
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use super::*;

    /// Concert 1 exists; concert 2 appears after the first question.
    #[derive(Clone, Default)]
    struct Counting(Arc<AtomicUsize>);

    impl ConcertDirectory for Counting {
        async fn concert_exists(&self, concert: ConcertId) -> Result<bool, QueueError> {
            let asked = self.0.fetch_add(1, Ordering::SeqCst);
            Ok(concert == ConcertId(1) || (concert == ConcertId(2) && asked > 0))
        }

        async fn concert_of_schedule(
            &self,
            _schedule: ScheduleId,
        ) -> Result<Option<ConcertId>, QueueError> {
            Ok(None)
        }
    }

    #[tokio::test]
    async fn a_known_concert_is_asked_once_and_an_unknown_one_every_time() {
        let asked = Counting::default();
        let directory = CachedDirectory::new(asked.clone());
        assert!(!directory.concert_exists(ConcertId(2)).await.unwrap());
        assert!(directory.concert_exists(ConcertId(2)).await.unwrap());
        for _ in 0..3 {
            assert!(directory.concert_exists(ConcertId(1)).await.unwrap());
        }
        assert!(directory.concert_exists(ConcertId(2)).await.unwrap());
        // 2 (unknown, then created), 1 once; no question after either is known.
        assert_eq!(asked.0.load(Ordering::SeqCst), 3);
    }
}
