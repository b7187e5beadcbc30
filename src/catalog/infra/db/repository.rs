//! [`CatalogRepository`] over the database: concerts created with their
//! schedules and seats, the listings, and the lookups.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, Set, TransactionTrait,
};

use super::{
    DbCatalog, availability_is, concert, on_sale, sale_status, schedule, seat, seat_from_row,
};
use crate::{
    catalog::{
        domain::{
            Availability, CatalogError, Concert, CreatedConcert, CreatedSchedule, NewConcert,
            ScheduleStatus, ScheduleSummary, SeatFilter, SeatListing, SeatStatus,
        },
        ports::CatalogRepository,
    },
    db::{DbTx, Paged},
    kernel::{ConcertId, PageRequest, ScheduleId, Transaction},
    outbox::ports::OutboxWriter,
};

/// Rows per multi-row INSERT: well under SQLite's and PostgreSQL's bind
/// parameter limits for the seat table's columns.
const SEAT_INSERT_CHUNK: usize = 2_000;

impl CatalogRepository for DbCatalog {
    async fn create_concert(
        &self,
        new: &NewConcert,
        now: DateTime<Utc>,
    ) -> Result<CreatedConcert, CatalogError> {
        let mut tx = DbTx::new(self.db.begin().await?);
        let txn = tx.conn();
        let concert = concert::ActiveModel {
            title: Set(new.title.clone()),
            venue: Set(new.venue.clone()),
            created_at: Set(now),
            ..Default::default()
        }
        .insert(txn)
        .await?;
        let mut schedules = Vec::with_capacity(new.schedules.len());
        for new_schedule in &new.schedules {
            let row = schedule::ActiveModel {
                concert_id: Set(concert.id),
                starts_at: Set(new_schedule.starts_at),
                ..Default::default()
            }
            .insert(txn)
            .await?;
            let seats: Vec<seat::ActiveModel> = new_schedule
                .seats()
                .map(|(number, block)| seat::ActiveModel {
                    schedule_id: Set(row.id),
                    number: Set(number as i32),
                    grade: Set(block.grade.clone()),
                    price: Set(block.price.value()),
                    section: Set(block.place.section.clone()),
                    row_label: Set(block.place.row.clone()),
                    status: Set(SeatStatus::Available.as_str().to_owned()),
                    holder_id: Set(None),
                    held_until: Set(None),
                    version: Set(0),
                    reservation_id: Set(None),
                    ..Default::default()
                })
                .collect();
            for chunk in seats.chunks(SEAT_INSERT_CHUNK) {
                seat::Entity::insert_many(chunk.to_vec())
                    .exec_without_returning(txn)
                    .await?;
            }
            schedules.push(CreatedSchedule {
                id: ScheduleId(row.id),
                starts_at: row.starts_at,
                seat_count: new_schedule.seat_count(),
            });
        }
        let created = CreatedConcert {
            id: ConcertId(concert.id),
            schedules,
        };
        tx.append(vec![created.event(new)], now).await?;
        tx.commit().await?;
        Ok(created)
    }

    async fn list_concerts(&self, page: PageRequest) -> Result<Vec<Concert>, CatalogError> {
        let rows = concert::Entity::find()
            .oldest_first(concert::Column::Id, page)
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| Concert {
                id: ConcertId(row.id),
                title: row.title,
                venue: row.venue,
            })
            .collect())
    }

    async fn list_schedules(
        &self,
        concert_id: ConcertId,
        page: PageRequest,
    ) -> Result<Option<Vec<ScheduleSummary>>, CatalogError> {
        if !self.concert_exists(concert_id).await? {
            return Ok(None);
        }
        let mut query =
            schedule::Entity::find().filter(schedule::Column::ConcertId.eq(concert_id.value()));
        if let Some(after) = page.after {
            // Start times are unique within a concert: the cursor's start
            // time is an exact keyset position.
            let cursor = schedule::Entity::find_by_id(after)
                .filter(schedule::Column::ConcertId.eq(concert_id.value()))
                .one(&self.db)
                .await?
                .ok_or_else(|| {
                    CatalogError::Invalid(format!(
                        "after: {after} is not a schedule of concert {concert_id}"
                    ))
                })?;
            query = query.filter(schedule::Column::StartsAt.gt(cursor.starts_at));
        }
        let schedules = query
            .order_by_asc(schedule::Column::StartsAt)
            .limit(page.fetch())
            .all(&self.db)
            .await?;
        Ok(Some(
            schedules
                .into_iter()
                .map(|row| ScheduleSummary {
                    id: ScheduleId(row.id),
                    concert_id,
                    starts_at: row.starts_at,
                    available_seats: 0,
                    // An unknown status sells nothing.
                    status: ScheduleStatus::parse(&row.status).unwrap_or(ScheduleStatus::Cancelled),
                })
                .collect(),
        ))
    }

    async fn count_available(
        &self,
        schedules: &[ScheduleId],
        now: DateTime<Utc>,
    ) -> Result<Vec<(ScheduleId, u64)>, CatalogError> {
        let counts: Vec<(i64, i64)> = seat::Entity::find()
            .select_only()
            .column(seat::Column::ScheduleId)
            .column_as(seat::Column::Id.count(), "available")
            .filter(seat::Column::ScheduleId.is_in(schedules.iter().map(|id| id.value())))
            .filter(availability_is(Availability::Available, now))
            .group_by(seat::Column::ScheduleId)
            .into_tuple()
            .all(&self.db)
            .await?;
        Ok(counts
            .into_iter()
            .map(|(id, available)| (ScheduleId(id), available.max(0) as u64))
            .collect())
    }

    async fn list_seats(
        &self,
        schedule_id: ScheduleId,
        filter: &SeatFilter,
        page: PageRequest,
        now: DateTime<Utc>,
    ) -> Result<SeatListing, CatalogError> {
        // The schedule itself is read only when the seats cannot tell (an
        // empty page, or a cursor that is not one of its seats): the seat
        // map is the hottest read, one query on the common path, which
        // finds seats only while their schedule is on sale.
        let schedule_row = || async {
            Ok::<_, CatalogError>(
                schedule::Entity::find_by_id(schedule_id.value())
                    .one(&self.db)
                    .await?,
            )
        };
        let mut query = seat::Entity::find()
            .filter(seat::Column::ScheduleId.eq(schedule_id.value()))
            .filter(seat::Column::ScheduleId.in_subquery(on_sale(schedule_id)));
        if let Some(after) = page.after {
            // Keyset on (schedule, number), the unique index the map is read by.
            let Some(cursor) = seat::Entity::find_by_id(after)
                .filter(seat::Column::ScheduleId.eq(schedule_id.value()))
                .one(&self.db)
                .await?
            else {
                if schedule_row().await?.is_none() {
                    return Ok(SeatListing::NoSchedule);
                }
                return Err(CatalogError::Invalid(format!(
                    "after: {after} is not a seat of schedule {schedule_id}"
                )));
            };
            query = query.filter(seat::Column::Number.gt(cursor.number));
        }
        if let Some(status) = filter.status {
            query = query.filter(availability_is(status, now));
        }
        if let Some(grade) = &filter.grade {
            query = query.filter(seat::Column::Grade.eq(grade.as_str()));
        }
        let rows = query
            .order_by_asc(seat::Column::Number)
            .limit(page.fetch())
            .all(&self.db)
            .await?;
        if rows.is_empty() {
            match schedule_row().await? {
                None => return Ok(SeatListing::NoSchedule),
                Some(row) => {
                    let status = sale_status(&row)?;
                    if status != ScheduleStatus::OnSale {
                        return Ok(SeatListing::OffSale(status));
                    }
                }
            }
        }
        let seats = rows.into_iter().map(seat_from_row);
        Ok(SeatListing::Seats(seats.collect::<anyhow::Result<_>>()?))
    }

    async fn concert_exists(&self, concert: ConcertId) -> Result<bool, CatalogError> {
        Ok(concert::Entity::find_by_id(concert.value())
            .count(&self.db)
            .await?
            > 0)
    }

    async fn concert_of_schedule(
        &self,
        schedule: ScheduleId,
    ) -> Result<Option<ConcertId>, CatalogError> {
        Ok(schedule::Entity::find_by_id(schedule.value())
            .one(&self.db)
            .await?
            .map(|row| ConcertId(row.concert_id)))
    }

    async fn is_empty(&self) -> Result<bool, CatalogError> {
        let any = concert::Entity::find().limit(1).count(&self.db).await?;
        Ok(any == 0)
    }
}
