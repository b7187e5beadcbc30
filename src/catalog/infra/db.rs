//! The catalog stored with sea-orm (SQLite or PostgreSQL).

use anyhow::anyhow;
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, DatabaseConnection, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, Set, TransactionTrait, sea_query::Query,
};

use crate::{
    catalog::{
        domain::{
            Availability, CatalogError, Concert, CreatedConcert, CreatedSchedule, HeldSeat,
            NewConcert, ScheduleSale, ScheduleStatus, ScheduleSummary, Seat, SeatFilter,
            SeatListing, SeatState, SeatStatus,
        },
        ports::{CatalogRepository, ScheduleReads, SeatReads, SeatTx},
    },
    db::DbTx,
    kernel::{
        ConcertId, PageRequest, Points, ReservationId, ScheduleId, SeatId, StoreError, Transaction,
        UserId,
    },
    outbox::ports::OutboxWriter,
};

pub(crate) mod concert {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "concerts")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub title: String,
        pub venue: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod schedule {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "schedules")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub concert_id: i64,
        pub starts_at: DateTimeUtc,
        /// `ScheduleStatus`: `on_sale`, `cancelling`, `cancelled`.
        pub status: String,
        pub status_changed_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod seat {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "seats")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub schedule_id: i64,
        pub number: i32,
        pub grade: String,
        pub price: i64,
        pub status: String,
        pub holder_id: Option<i64>,
        pub held_until: Option<DateTimeUtc>,
        pub version: i64,
        pub reservation_id: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Rows per multi-row INSERT: well under SQLite's and PostgreSQL's bind
/// parameter limits for the seat table's columns.
const SEAT_INSERT_CHUNK: usize = 2_000;

#[derive(Clone)]
pub struct DbCatalog {
    db: DatabaseConnection,
}

impl DbCatalog {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

crate::db::module_error_from_db_err!(CatalogError);

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
                .map(|(number, grade, price)| seat::ActiveModel {
                    schedule_id: Set(row.id),
                    number: Set(number as i32),
                    grade: Set(grade.to_owned()),
                    price: Set(price.value()),
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
        let mut query = concert::Entity::find();
        if let Some(after) = page.after {
            query = query.filter(concert::Column::Id.gt(after));
        }
        let rows = query
            .order_by_asc(concert::Column::Id)
            .limit(page.fetch())
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
                .map(|s| ScheduleSummary {
                    id: ScheduleId(s.id),
                    concert_id,
                    starts_at: s.starts_at,
                    available_seats: 0,
                    // An unknown status sells nothing.
                    status: ScheduleStatus::parse(&s.status).unwrap_or(ScheduleStatus::Cancelled),
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
            .filter(seat::Column::ScheduleId.is_in(schedules.iter().map(|s| s.value())))
            .filter(availability_is(Availability::Available, now))
            .group_by(seat::Column::ScheduleId)
            .into_tuple()
            .all(&self.db)
            .await?;
        Ok(counts
            .into_iter()
            .map(|(id, n)| (ScheduleId(id), n.max(0) as u64))
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
        let on_sale = Query::select()
            .column(schedule::Column::Id)
            .from(schedule::Entity)
            .and_where(schedule::Column::Id.eq(schedule_id.value()))
            .and_where(schedule::Column::Status.eq(ScheduleStatus::OnSale.as_str()))
            .to_owned();
        let mut query = seat::Entity::find()
            .filter(seat::Column::ScheduleId.eq(schedule_id.value()))
            .filter(seat::Column::ScheduleId.in_subquery(on_sale));
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
        rows.into_iter()
            .map(seat_from_row)
            .collect::<Result<_, _>>()
            .map(SeatListing::Seats)
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
            .map(|s| ConcertId(s.concert_id)))
    }

    async fn is_empty(&self) -> Result<bool, CatalogError> {
        let any = concert::Entity::find().limit(1).count(&self.db).await?;
        Ok(any == 0)
    }
}

/// The rows [`Seat::availability`] puts in `availability` at `now`, as a
/// condition: a hold past its expiry is available.
fn availability_is(availability: Availability, now: DateTime<Utc>) -> Condition {
    let held = || seat::Column::Status.eq(SeatStatus::Held.as_str());
    match availability {
        Availability::Available => Condition::any()
            .add(seat::Column::Status.eq(SeatStatus::Available.as_str()))
            .add(
                Condition::all()
                    .add(held())
                    .add(seat::Column::HeldUntil.lte(now)),
            ),
        Availability::Held => Condition::all()
            .add(held())
            .add(seat::Column::HeldUntil.gt(now)),
        Availability::Sold => {
            Condition::all().add(seat::Column::Status.eq(SeatStatus::Sold.as_str()))
        }
    }
}

fn seat_from_row(row: seat::Model) -> Result<Seat, CatalogError> {
    let state = match (
        SeatStatus::parse(&row.status),
        row.holder_id,
        row.held_until,
    ) {
        (Some(SeatStatus::Available), _, _) => SeatState::Available,
        (Some(SeatStatus::Held), Some(holder), Some(until)) => SeatState::Held {
            holder: UserId(holder),
            until,
        },
        (Some(SeatStatus::Sold), Some(owner), _) => SeatState::Sold {
            owner: UserId(owner),
        },
        (..) => {
            let status = &row.status;
            return Err(CatalogError::Unexpected(anyhow!(
                "seat {} has an inconsistent state {status:?}",
                row.id
            )));
        }
    };
    Ok(Seat {
        id: SeatId(row.id),
        schedule_id: ScheduleId(row.schedule_id),
        number: u32::try_from(row.number).map_err(|e| CatalogError::Unexpected(e.into()))?,
        grade: row.grade,
        price: Points::new(row.price).map_err(|e| CatalogError::Unexpected(e.into()))?,
        state,
    })
}

/// Seat-state changes other modules make inside their own transactions
/// (holds, payments, confirmations). Every one is a compare-and-set on the
/// seat row: it changes the seat only from the state the caller expects.
mod seats {
    use chrono::{DateTime, Utc};
    use sea_orm::{
        ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QuerySelect,
        sea_query::{Expr, ExprTrait},
    };

    use super::{availability_is, schedule, seat};
    use crate::{
        catalog::domain::{Availability, HeldSeat, ScheduleStatus, SeatStatus},
        kernel::{ConcertId, Points, ReservationId, ScheduleId, SeatId, UserId},
    };

    /// Holds the seat for `user` until `until` if it is free now (never held,
    /// or held past its expiry). `None` when someone else holds or bought it.
    pub async fn try_hold<C: ConnectionTrait>(
        conn: &C,
        schedule_id: ScheduleId,
        seat_id: SeatId,
        user: UserId,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<HeldSeat>, DbErr> {
        // The write comes first: on SQLite it takes the write lock before
        // anything is read, so the transaction never works from a stale snapshot.
        let taken = seat::Entity::update_many()
            .col_expr(seat::Column::Status, Expr::value(SeatStatus::Held.as_str()))
            .col_expr(seat::Column::HolderId, Expr::value(user.value()))
            .col_expr(seat::Column::HeldUntil, Expr::value(until))
            .col_expr(
                seat::Column::ReservationId,
                Expr::value(Option::<i64>::None),
            )
            .col_expr(
                seat::Column::Version,
                Expr::col(seat::Column::Version).add(1),
            )
            .filter(seat::Column::Id.eq(seat_id.value()))
            .filter(seat::Column::ScheduleId.eq(schedule_id.value()))
            .filter(availability_is(Availability::Available, now))
            // Only while the schedule is on sale: a cancelled one sells nothing.
            .filter(
                seat::Column::ScheduleId.in_subquery(
                    sea_orm::sea_query::Query::select()
                        .column(schedule::Column::Id)
                        .from(schedule::Entity)
                        .and_where(schedule::Column::Id.eq(schedule_id.value()))
                        .and_where(schedule::Column::Status.eq(ScheduleStatus::OnSale.as_str()))
                        .to_owned(),
                ),
            )
            .exec(conn)
            .await?;
        if taken.rows_affected == 0 {
            return Ok(None);
        }
        let held = seat::Entity::find_by_id(seat_id.value())
            .one(conn)
            .await?
            .ok_or_else(|| DbErr::RecordNotFound(format!("seat {seat_id}")))?;
        let (concert, starts_at): (i64, DateTime<Utc>) =
            schedule::Entity::find_by_id(schedule_id.value())
                .select_only()
                .column(schedule::Column::ConcertId)
                .column(schedule::Column::StartsAt)
                .into_tuple()
                .one(conn)
                .await?
                .ok_or_else(|| DbErr::RecordNotFound(format!("schedule {schedule_id}")))?;
        Ok(Some(HeldSeat {
            price: Points::new(held.price).map_err(|e| DbErr::Custom(e.to_string()))?,
            concert: ConcertId(concert),
            starts_at,
        }))
    }

    /// Whether the seat exists in the schedule (to tell 404 from 409).
    pub async fn exists<C: ConnectionTrait>(
        conn: &C,
        schedule_id: ScheduleId,
        seat_id: SeatId,
    ) -> Result<bool, DbErr> {
        Ok(seat::Entity::find_by_id(seat_id.value())
            .filter(seat::Column::ScheduleId.eq(schedule_id.value()))
            .one(conn)
            .await?
            .is_some())
    }

    /// Ties the seat to the reservation that now holds it.
    pub async fn attach<C: ConnectionTrait>(
        conn: &C,
        seat_id: SeatId,
        reservation: ReservationId,
    ) -> Result<(), DbErr> {
        seat::Entity::update_many()
            .col_expr(
                seat::Column::ReservationId,
                Expr::value(reservation.value()),
            )
            .filter(seat::Column::Id.eq(seat_id.value()))
            .exec(conn)
            .await?;
        Ok(())
    }

    /// An update of the seat that applies only while `reservation` holds it:
    /// the compare-and-set every post-hold change shares.
    fn while_held_by(
        seat_id: SeatId,
        reservation: ReservationId,
    ) -> sea_orm::UpdateMany<seat::Entity> {
        seat::Entity::update_many()
            .filter(seat::Column::Id.eq(seat_id.value()))
            .filter(seat::Column::ReservationId.eq(reservation.value()))
            .filter(seat::Column::Status.eq(SeatStatus::Held.as_str()))
    }

    /// Frees the seat if `reservation` still holds it.
    pub async fn release<C: ConnectionTrait>(
        conn: &C,
        seat_id: SeatId,
        reservation: ReservationId,
    ) -> Result<bool, DbErr> {
        let freed = on_sale_again(while_held_by(seat_id, reservation))
            .exec(conn)
            .await?;
        Ok(freed.rows_affected == 1)
    }

    /// The update that puts a seat back on sale: free, no holder, no
    /// reservation, a new version.
    fn on_sale_again(
        update: sea_orm::UpdateMany<seat::Entity>,
    ) -> sea_orm::UpdateMany<seat::Entity> {
        update
            .col_expr(
                seat::Column::Status,
                Expr::value(SeatStatus::Available.as_str()),
            )
            .col_expr(seat::Column::HolderId, Expr::value(Option::<i64>::None))
            .col_expr(
                seat::Column::HeldUntil,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .col_expr(
                seat::Column::ReservationId,
                Expr::value(Option::<i64>::None),
            )
            .col_expr(
                seat::Column::Version,
                Expr::col(seat::Column::Version).add(1),
            )
    }

    /// Keeps the seat held by `reservation` until `until` (a paid hold waits
    /// for its confirmation). False if the reservation no longer holds it.
    pub async fn extend<C: ConnectionTrait>(
        conn: &C,
        seat_id: SeatId,
        reservation: ReservationId,
        until: DateTime<Utc>,
    ) -> Result<bool, DbErr> {
        let extended = while_held_by(seat_id, reservation)
            .col_expr(seat::Column::HeldUntil, Expr::value(until))
            .exec(conn)
            .await?;
        Ok(extended.rows_affected == 1)
    }

    /// Sells the seat to the holder of `reservation`; false if it no longer
    /// holds it (the hold lapsed and someone else took the seat).
    /// Puts a seat sold to `reservation` back on sale.
    pub async fn unsell<C: ConnectionTrait>(
        conn: &C,
        seat_id: SeatId,
        reservation: ReservationId,
    ) -> Result<bool, DbErr> {
        let sold_to_it = seat::Entity::update_many()
            .filter(seat::Column::Id.eq(seat_id.value()))
            .filter(seat::Column::ReservationId.eq(reservation.value()))
            .filter(seat::Column::Status.eq(SeatStatus::Sold.as_str()));
        let freed = on_sale_again(sold_to_it).exec(conn).await?;
        Ok(freed.rows_affected == 1)
    }

    pub async fn sell<C: ConnectionTrait>(
        conn: &C,
        seat_id: SeatId,
        reservation: ReservationId,
    ) -> Result<bool, DbErr> {
        let sold = while_held_by(seat_id, reservation)
            .col_expr(seat::Column::Status, Expr::value(SeatStatus::Sold.as_str()))
            .col_expr(
                seat::Column::HeldUntil,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .col_expr(
                seat::Column::Version,
                Expr::col(seat::Column::Version).add(1),
            )
            .exec(conn)
            .await?;
        Ok(sold.rows_affected == 1)
    }
}

impl SeatTx for DbTx {
    async fn try_hold(
        &mut self,
        schedule: ScheduleId,
        seat: SeatId,
        user: UserId,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<HeldSeat>, StoreError> {
        Ok(seats::try_hold(self.conn(), schedule, seat, user, until, now).await?)
    }

    async fn exists(&mut self, schedule: ScheduleId, seat: SeatId) -> Result<bool, StoreError> {
        Ok(seats::exists(self.conn(), schedule, seat).await?)
    }

    async fn attach(&mut self, seat: SeatId, reservation: ReservationId) -> Result<(), StoreError> {
        Ok(seats::attach(self.conn(), seat, reservation).await?)
    }

    async fn release(
        &mut self,
        seat: SeatId,
        reservation: ReservationId,
    ) -> Result<bool, StoreError> {
        Ok(seats::release(self.conn(), seat, reservation).await?)
    }

    async fn extend(
        &mut self,
        seat: SeatId,
        reservation: ReservationId,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        Ok(seats::extend(self.conn(), seat, reservation, until).await?)
    }

    async fn sell(&mut self, seat: SeatId, reservation: ReservationId) -> Result<bool, StoreError> {
        Ok(seats::sell(self.conn(), seat, reservation).await?)
    }

    async fn unsell(
        &mut self,
        seat: SeatId,
        reservation: ReservationId,
    ) -> Result<bool, StoreError> {
        Ok(seats::unsell(self.conn(), seat, reservation).await?)
    }

    async fn free_seats(
        &mut self,
        schedule: ScheduleId,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        Ok(seat::Entity::find()
            .filter(seat::Column::ScheduleId.eq(schedule.value()))
            .filter(availability_is(Availability::Available, now))
            .count(self.conn())
            .await?)
    }

    async fn schedule_status(
        &mut self,
        id: ScheduleId,
    ) -> Result<Option<(ScheduleStatus, DateTime<Utc>)>, StoreError> {
        let Some(row) = schedule::Entity::find_by_id(id.value())
            .one(self.conn())
            .await?
        else {
            return Ok(None);
        };
        let status = sale_status(&row)?;
        Ok(Some((
            status,
            row.status_changed_at.unwrap_or(row.starts_at),
        )))
    }

    async fn set_schedule_status(
        &mut self,
        id: ScheduleId,
        from: ScheduleStatus,
        to: ScheduleStatus,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let changed = schedule::Entity::update_many()
            .col_expr(
                schedule::Column::Status,
                sea_orm::sea_query::Expr::value(to.as_str()),
            )
            .col_expr(
                schedule::Column::StatusChangedAt,
                sea_orm::sea_query::Expr::value(now),
            )
            .filter(schedule::Column::Id.eq(id.value()))
            .filter(schedule::Column::Status.eq(from.as_str()))
            .exec(self.conn())
            .await?;
        Ok(changed.rows_affected == 1)
    }

    async fn starts_at(&mut self, id: ScheduleId) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(schedule::Entity::find_by_id(id.value())
            .one(self.conn())
            .await?
            .map(|s| s.starts_at))
    }
}

impl SeatReads for DbCatalog {
    async fn starting_by(
        &self,
        schedules: &[ScheduleId],
        by: DateTime<Utc>,
    ) -> Result<Vec<ScheduleId>, StoreError> {
        if schedules.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = schedule::Entity::find()
            .select_only()
            .column(schedule::Column::Id)
            .filter(schedule::Column::Id.is_in(schedules.iter().map(|s| s.value())))
            .filter(schedule::Column::StartsAt.lte(by))
            .into_tuple()
            .all(&self.db)
            .await?;
        Ok(ids.into_iter().map(ScheduleId).collect())
    }

    async fn seat(
        &self,
        schedule: ScheduleId,
        seat_id: SeatId,
    ) -> Result<Option<Seat>, StoreError> {
        seat::Entity::find_by_id(seat_id.value())
            .filter(seat::Column::ScheduleId.eq(schedule.value()))
            .one(&self.db)
            .await?
            .map(seat_from_row)
            .transpose()
            .map_err(|err| StoreError::Unexpected(anyhow!(err)))
    }
}

/// The schedule row's sale status (written by this module only).
fn sale_status(row: &schedule::Model) -> Result<ScheduleStatus, StoreError> {
    ScheduleStatus::parse(&row.status).ok_or_else(|| {
        StoreError::Unexpected(anyhow!(
            "schedule {} has an unknown status {:?}",
            row.id,
            row.status
        ))
    })
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
            .map(|s| (ScheduleId(s.id), s.status_changed_at.unwrap_or(s.starts_at)))
            .collect())
    }

    async fn schedule_ids(&self, page: PageRequest) -> Result<Vec<ScheduleId>, StoreError> {
        let mut query = schedule::Entity::find()
            .select_only()
            .column(schedule::Column::Id);
        if let Some(after) = page.after {
            query = query.filter(schedule::Column::Id.lt(after));
        }
        let ids: Vec<i64> = query
            .order_by_desc(schedule::Column::Id)
            .limit(page.fetch())
            .into_tuple()
            .all(&self.db)
            .await?;
        Ok(ids.into_iter().map(ScheduleId).collect())
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

/// Schedules whose cancellation has not finished.
pub fn stalled_cancellations(db: DatabaseConnection) -> crate::db::DbStalled {
    crate::db::DbStalled::new(
        db,
        "watchdog:schedules-cancelling",
        (
            "schedules",
            "status = 'cancelling'",
            "COALESCE(status_changed_at, starts_at)",
        ),
        crate::kernel::alerts::Severity::Critical,
        "schedule(s) left cancelling",
    )
}
