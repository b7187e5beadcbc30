//! The waiting room's view of the catalog, through the catalog's use cases.

use crate::{
    catalog::{domain::CatalogError, ports::CatalogRepository, usecase::CatalogService},
    kernel::{Clock, ConcertId, ScheduleId, events::RelayWake},
    queue::{domain::QueueError, ports::ConcertDirectory},
};

impl From<CatalogError> for QueueError {
    fn from(err: CatalogError) -> Self {
        match err {
            CatalogError::Unavailable(cause) => QueueError::Unavailable(cause),
            other => QueueError::Unexpected(other.into()),
        }
    }
}

impl<R: CatalogRepository, C: Clock, W: RelayWake> ConcertDirectory for CatalogService<R, C, W> {
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

/// Remembers which concert a schedule belongs to (it never changes), so the
/// waiting-room check on every seat-map, hold and payment request costs no
/// database round trip after the first.
#[derive(Clone)]
pub struct CachedDirectory<D> {
    inner: D,
    schedules: std::sync::Arc<std::sync::RwLock<std::collections::HashMap<ScheduleId, ConcertId>>>,
}

impl<D> CachedDirectory<D> {
    pub fn new(inner: D) -> Self {
        Self {
            inner,
            schedules: Default::default(),
        }
    }
}

impl<D: ConcertDirectory> ConcertDirectory for CachedDirectory<D> {
    async fn concert_exists(&self, concert: ConcertId) -> Result<bool, QueueError> {
        self.inner.concert_exists(concert).await
    }

    async fn concert_of_schedule(
        &self,
        schedule: ScheduleId,
    ) -> Result<Option<ConcertId>, QueueError> {
        let known = self
            .schedules
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&schedule)
            .copied();
        if let Some(concert) = known {
            return Ok(Some(concert));
        }
        let found = self.inner.concert_of_schedule(schedule).await?;
        if let Some(concert) = found {
            self.schedules
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(schedule, concert);
        }
        Ok(found)
    }
}
