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
