//! The reads other modules make of schedules and seats outside any
//! transaction: [`SeatReads`] and [`ScheduleReads`].

use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect};

use super::{DbCatalog, sale_status, schedule, seat, seat_from_row};
use crate::{
    catalog::{
        domain::{ScheduleSale, ScheduleStatus, Seat, SeatStatus},
        ports::{ScheduleReads, SeatReads},
    },
    db::{Paged, all_as, ids_of, one_as},
    kernel::{PageRequest, ScheduleId, SeatId, StoreError},
};

impl SeatReads for DbCatalog {
    async fn starting_by(
        &self,
        schedules: &[ScheduleId],
        by: DateTime<Utc>,
    ) -> Result<Vec<ScheduleId>, StoreError> {
        if schedules.is_empty() {
            return Ok(Vec::new());
        }
        let query = schedule::Entity::find()
            .filter(schedule::Column::Id.is_in(schedules.iter().map(|id| id.value())))
            .filter(schedule::Column::StartsAt.lte(by));
        ids_of(query, schedule::Column::Id, &self.db, ScheduleId).await
    }

    async fn seat(
        &self,
        schedule: ScheduleId,
        seat_id: SeatId,
    ) -> Result<Option<Seat>, StoreError> {
        let query = seat::Entity::find_by_id(seat_id.value())
            .filter(seat::Column::ScheduleId.eq(schedule.value()));
        one_as(query, &self.db, seat_from_row).await
    }

    async fn seats_by_id(&self, ids: &[SeatId]) -> Result<Vec<Seat>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let query = seat::Entity::find()
            .filter(seat::Column::Id.is_in(ids.iter().map(|id| id.value())))
            .order_by_asc(seat::Column::Id);
        all_as(query, &self.db, seat_from_row).await
    }

    async fn schedule_seats(&self, schedule: ScheduleId) -> Result<Vec<Seat>, StoreError> {
        let query = seat::Entity::find()
            .filter(seat::Column::ScheduleId.eq(schedule.value()))
            .order_by_asc(seat::Column::Id);
        all_as(query, &self.db, seat_from_row).await
    }
}

impl ScheduleReads for DbCatalog {
    async fn cancelling_schedules(
        &self,
        max: u64,
    ) -> Result<Vec<(ScheduleId, DateTime<Utc>)>, StoreError> {
        Ok(schedule::Entity::find()
            .filter(schedule::Column::Status.eq(ScheduleStatus::Cancelling.as_str()))
            .order_by_asc(schedule::Column::Id)
            .limit(max)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|row| {
                (
                    ScheduleId(row.id),
                    row.status_changed_at.unwrap_or(row.starts_at),
                )
            })
            .collect())
    }

    async fn schedule_ids(&self, page: PageRequest) -> Result<Vec<ScheduleId>, StoreError> {
        let query = schedule::Entity::find().newest_first(schedule::Column::Id, page);
        ids_of(query, schedule::Column::Id, &self.db, ScheduleId).await
    }

    async fn sale(&self, id: ScheduleId) -> Result<Option<ScheduleSale>, StoreError> {
        let Some(row) = schedule::Entity::find_by_id(id.value())
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        let status = sale_status(&row)?;
        let seats = seat::Entity::find()
            .filter(seat::Column::ScheduleId.eq(id.value()))
            .count(&self.db)
            .await?;
        let sold = seat::Entity::find()
            .filter(seat::Column::ScheduleId.eq(id.value()))
            .filter(seat::Column::Status.eq(SeatStatus::Sold.as_str()))
            .count(&self.db)
            .await?;
        Ok(Some(ScheduleSale {
            status,
            seats,
            sold,
        }))
    }
}
