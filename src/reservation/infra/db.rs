//! Reservations in the database: the reads, and the transaction-scoped
//! repository the hold, the payment and the saga write through.

use anyhow::anyhow;
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseBackend, DatabaseConnection, DbErr,
    EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Set, Statement,
    sea_query::{Expr, LockBehavior, LockType, OnConflict},
};

use crate::{
    db::{DbTx, Paged, all_as, compare_and_set, ids_of, one_as},
    kernel::{
        ConcertId, OrderId, PageRequest, PaymentId, Points, ReservationId, ScheduleId, SeatId,
        StoreError, UserId,
    },
    reservation::{
        domain::{
            NewOrder, NewReservation, Order, Reservation, ReservationError, ReservationStatus,
            Transition, WaitlistEntry,
        },
        ports::{ReservationRepository, ReservationTx, WaitlistTx},
    },
};

pub mod reservation {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "reservations")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub user_id: i64,
        pub concert_id: i64,
        pub schedule_id: i64,
        pub seat_id: i64,
        pub price: i64,
        pub status: String,
        pub expires_at: DateTimeUtc,
        pub payment_id: Option<i64>,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
        pub order_id: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod order {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "orders")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub user_id: i64,
        pub concert_id: i64,
        pub schedule_id: i64,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod waitlist {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "waitlist")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub schedule_id: i64,
        pub user_id: i64,
        /// How many seats the place waits for.
        pub quantity: i32,
        /// `waiting`, `offered`, `left` or `closed` (sales ended first).
        pub status: String,
        pub queued_at: DateTimeUtc,
        pub reservation_id: Option<i64>,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

const WAITING: &str = "waiting";

fn to_entry(row: &waitlist::Model) -> WaitlistEntry {
    WaitlistEntry {
        id: row.id,
        schedule: ScheduleId(row.schedule_id),
        user: UserId(row.user_id),
        quantity: u32::try_from(row.quantity).unwrap_or(1),
    }
}

crate::db::module_error_from_db_err!(ReservationError);

fn to_reservation(row: reservation::Model) -> anyhow::Result<Reservation> {
    Ok(Reservation {
        id: ReservationId(row.id),
        user: UserId(row.user_id),
        concert: ConcertId(row.concert_id),
        schedule: ScheduleId(row.schedule_id),
        seat: SeatId(row.seat_id),
        price: Points::new(row.price).map_err(|e| anyhow!("reservation {}: {e}", row.id))?,
        status: ReservationStatus::parse(&row.status)
            .ok_or_else(|| anyhow!("reservation {} has unknown status {:?}", row.id, row.status))?,
        expires_at: row.expires_at,
        payment: row.payment_id.map(PaymentId),
        order: row.order_id.map(OrderId),
    })
}

fn to_order(row: order::Model, seats: Vec<Reservation>) -> Order {
    Order {
        id: OrderId(row.id),
        user: UserId(row.user_id),
        concert: ConcertId(row.concert_id),
        schedule: ScheduleId(row.schedule_id),
        created_at: row.created_at,
        seats,
    }
}

/// The orders of `rows` with their seats, read in one more query.
async fn with_seats<C: ConnectionTrait>(
    rows: Vec<order::Model>,
    conn: &C,
) -> Result<Vec<Order>, StoreError> {
    let ids: Vec<i64> = rows.iter().map(|row| row.id).collect();
    let query = reservation::Entity::find()
        .filter(reservation::Column::OrderId.is_in(ids))
        .order_by_asc(reservation::Column::SeatId);
    let mut seats = all_as(query, conn, to_reservation).await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let id = Some(OrderId(row.id));
            let (theirs, rest) = seats.drain(..).partition(|r: &Reservation| r.order == id);
            seats = rest;
            to_order(row, theirs)
        })
        .collect())
}

fn held() -> &'static str {
    ReservationStatus::Held.as_str()
}

#[derive(Clone)]
pub struct DbReservations {
    db: DatabaseConnection,
}

impl DbReservations {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

impl ReservationRepository for DbReservations {
    async fn unpaid_holds(
        &self,
        schedule: ScheduleId,
        max: u64,
    ) -> Result<Vec<ReservationId>, ReservationError> {
        // `Transition::Withdraw` applies to these.
        let query = reservation::Entity::find()
            .filter(reservation::Column::ScheduleId.eq(schedule.value()))
            .filter(reservation::Column::Status.eq(held()))
            .filter(reservation::Column::PaymentId.is_null())
            .order_by_asc(reservation::Column::Id)
            .limit(max);
        Ok(ids_of(query, reservation::Column::Id, &self.db, ReservationId).await?)
    }

    async fn get(&self, id: ReservationId) -> Result<Option<Reservation>, ReservationError> {
        Ok(one_as(
            reservation::Entity::find_by_id(id.value()),
            &self.db,
            to_reservation,
        )
        .await?)
    }

    async fn order(&self, id: OrderId) -> Result<Option<Order>, ReservationError> {
        let Some(row) = order::Entity::find_by_id(id.value()).one(&self.db).await? else {
            return Ok(None);
        };
        Ok(with_seats(vec![row], &self.db).await?.pop())
    }

    async fn orders_of_user(
        &self,
        user: UserId,
        page: PageRequest,
    ) -> Result<Vec<Order>, ReservationError> {
        let rows = order::Entity::find()
            .filter(order::Column::UserId.eq(user.value()))
            .newest_first(order::Column::Id, page)
            .all(&self.db)
            .await?;
        Ok(with_seats(rows, &self.db).await?)
    }

    async fn of_user(
        &self,
        user: UserId,
        page: PageRequest,
    ) -> Result<Vec<Reservation>, ReservationError> {
        let query = reservation::Entity::find()
            .filter(reservation::Column::UserId.eq(user.value()))
            .newest_first(reservation::Column::Id, page);
        Ok(all_as(query, &self.db, to_reservation).await?)
    }

    async fn lapsed(
        &self,
        now: DateTime<Utc>,
        max: u64,
    ) -> Result<Vec<ReservationId>, ReservationError> {
        let query = reservation::Entity::find()
            .filter(reservation::Column::Status.eq(held()))
            .filter(reservation::Column::PaymentId.is_null())
            .filter(reservation::Column::ExpiresAt.lte(now))
            .order_by_asc(reservation::Column::ExpiresAt)
            .limit(max);
        Ok(ids_of(query, reservation::Column::Id, &self.db, ReservationId).await?)
    }

    async fn waitlisted_schedules(&self, max: u64) -> Result<Vec<ScheduleId>, ReservationError> {
        let query = waitlist::Entity::find()
            .distinct()
            .filter(waitlist::Column::Status.eq(WAITING))
            .order_by_asc(waitlist::Column::ScheduleId)
            .limit(max);
        Ok(ids_of(query, waitlist::Column::ScheduleId, &self.db, ScheduleId).await?)
    }
}

/// Serialises one user's holds on PostgreSQL until the transaction ends.
/// (SQLite has one writer.)
async fn lock_user<C: ConnectionTrait>(conn: &C, user: UserId) -> Result<(), DbErr> {
    if conn.get_database_backend() == DatabaseBackend::Postgres {
        conn.execute_raw(Statement::from_sql_and_values(
            DatabaseBackend::Postgres,
            "SELECT pg_advisory_xact_lock(8243, $1::int4)",
            [((user.value() % i64::from(i32::MAX)) as i32).into()],
        ))
        .await?;
    }
    Ok(())
}

impl ReservationTx for DbTx {
    async fn lock_user_and_count_live(
        &mut self,
        user: UserId,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        lock_user(self.conn(), user).await?;
        // `Reservation::is_live` in SQL.
        Ok(reservation::Entity::find()
            .filter(reservation::Column::UserId.eq(user.value()))
            .filter(reservation::Column::Status.eq(held()))
            .filter(
                sea_orm::Condition::any()
                    .add(reservation::Column::ExpiresAt.gt(now))
                    .add(reservation::Column::PaymentId.is_not_null()),
            )
            .count(self.conn())
            .await?)
    }

    async fn insert(
        &mut self,
        new: &NewReservation,
        now: DateTime<Utc>,
    ) -> Result<Reservation, StoreError> {
        let row = reservation::ActiveModel {
            user_id: Set(new.user.value()),
            concert_id: Set(new.concert.value()),
            schedule_id: Set(new.schedule.value()),
            seat_id: Set(new.seat.value()),
            price: Set(new.price.value()),
            status: Set(held().into()),
            expires_at: Set(new.expires_at),
            payment_id: Set(None),
            order_id: Set(new.order.map(OrderId::value)),
            created_at: Set(now),
            updated_at: Set(now),
            ..Default::default()
        }
        .insert(self.conn())
        .await?;
        to_reservation(row).map_err(StoreError::Unexpected)
    }

    async fn get(&mut self, id: ReservationId) -> Result<Option<Reservation>, StoreError> {
        one_as(
            reservation::Entity::find_by_id(id.value()),
            self.conn(),
            to_reservation,
        )
        .await
    }

    async fn insert_order(
        &mut self,
        new: &NewOrder,
        now: DateTime<Utc>,
    ) -> Result<Order, StoreError> {
        let row = order::ActiveModel {
            user_id: Set(new.user.value()),
            concert_id: Set(new.concert.value()),
            schedule_id: Set(new.schedule.value()),
            created_at: Set(now),
            ..Default::default()
        }
        .insert(self.conn())
        .await?;
        Ok(new.stored(OrderId(row.id), row.created_at))
    }

    async fn of_payment(&mut self, payment: PaymentId) -> Result<Vec<Reservation>, StoreError> {
        let query = reservation::Entity::find()
            .filter(reservation::Column::PaymentId.eq(payment.value()))
            .order_by_asc(reservation::Column::SeatId);
        all_as(query, self.conn(), to_reservation).await
    }

    async fn held_on_seat(
        &mut self,
        seat: SeatId,
        except: ReservationId,
    ) -> Result<Vec<Reservation>, StoreError> {
        let query = reservation::Entity::find()
            .filter(reservation::Column::SeatId.eq(seat.value()))
            .filter(reservation::Column::Status.eq(held()))
            .filter(reservation::Column::Id.ne(except.value()));
        all_as(query, self.conn(), to_reservation).await
    }

    async fn transition(
        &mut self,
        id: ReservationId,
        change: Transition,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        use reservation::Column;
        // `Transition::applies_to` as the condition of one UPDATE.
        let mut update = reservation::Entity::update_many()
            .col_expr(Column::Status, Expr::value(change.target().as_str()))
            .col_expr(Column::UpdatedAt, Expr::value(now))
            .filter(Column::Id.eq(id.value()))
            .filter(Column::Status.eq(change.source().as_str()));
        update = match change {
            Transition::ClaimForPayment { user, now } | Transition::Release { user, now } => update
                .filter(Column::PaymentId.is_null())
                .filter(Column::UserId.eq(user.value()))
                .filter(Column::ExpiresAt.gt(now)),
            Transition::Lapse { now } => update
                .filter(Column::PaymentId.is_null())
                .filter(Column::ExpiresAt.lte(now)),
            Transition::Replace | Transition::Withdraw => {
                update.filter(Column::PaymentId.is_null())
            }
            Transition::Confirm { payment } | Transition::Cancel { payment } => {
                update.filter(Column::PaymentId.eq(payment.value()))
            }
            Transition::FailConfirmation => update,
        };
        Ok(compare_and_set(update, self.conn()).await?)
    }

    async fn set_payment(
        &mut self,
        id: ReservationId,
        payment: PaymentId,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        reservation::Entity::update_many()
            .col_expr(reservation::Column::PaymentId, Expr::value(payment.value()))
            .col_expr(reservation::Column::UpdatedAt, Expr::value(now))
            .filter(reservation::Column::Id.eq(id.value()))
            .exec(self.conn())
            .await?;
        Ok(())
    }
}

impl DbTx {
    async fn waiting_row(
        &self,
        schedule: ScheduleId,
        user: UserId,
    ) -> Result<Option<waitlist::Model>, DbErr> {
        waitlist::Entity::find()
            .filter(waitlist::Column::ScheduleId.eq(schedule.value()))
            .filter(waitlist::Column::UserId.eq(user.value()))
            .filter(waitlist::Column::Status.eq(WAITING))
            .one(self.conn())
            .await
    }
}

impl WaitlistTx for DbTx {
    async fn join(
        &mut self,
        schedule: ScheduleId,
        user: UserId,
        quantity: u32,
        now: DateTime<Utc>,
    ) -> Result<Option<WaitlistEntry>, StoreError> {
        use waitlist::Column;
        // One row per (schedule, user): a new one, or an old one (offered
        // or left) back at the tail; one already waiting is left alone.
        let changed = waitlist::Entity::insert(waitlist::ActiveModel {
            schedule_id: Set(schedule.value()),
            user_id: Set(user.value()),
            quantity: Set(i32::try_from(quantity).unwrap_or(i32::MAX)),
            status: Set(WAITING.into()),
            queued_at: Set(now),
            reservation_id: Set(None),
            updated_at: Set(now),
            ..Default::default()
        })
        .on_conflict(
            OnConflict::columns([Column::ScheduleId, Column::UserId])
                .update_columns([
                    Column::Quantity,
                    Column::Status,
                    Column::QueuedAt,
                    Column::ReservationId,
                    Column::UpdatedAt,
                ])
                .action_and_where(Column::Status.ne(WAITING))
                .to_owned(),
        )
        .exec_without_returning(self.conn())
        .await?;
        if changed == 0 {
            return Ok(None);
        }
        Ok(self
            .waiting_row(schedule, user)
            .await?
            .as_ref()
            .map(to_entry))
    }

    async fn leave(
        &mut self,
        schedule: ScheduleId,
        user: UserId,
        now: DateTime<Utc>,
    ) -> Result<Option<WaitlistEntry>, StoreError> {
        let Some(row) = self.waiting_row(schedule, user).await? else {
            return Ok(None);
        };
        let left = waitlist::Entity::update_many()
            .col_expr(waitlist::Column::Status, Expr::value("left"))
            .col_expr(waitlist::Column::UpdatedAt, Expr::value(now))
            .filter(waitlist::Column::Id.eq(row.id))
            .filter(waitlist::Column::Status.eq(WAITING))
            .exec(self.conn())
            .await?
            .rows_affected;
        Ok((left == 1).then(|| to_entry(&row)))
    }

    async fn waitlist_position(
        &mut self,
        schedule: ScheduleId,
        user: UserId,
    ) -> Result<Option<(u64, u32)>, StoreError> {
        use waitlist::Column;
        let Some(row) = self.waiting_row(schedule, user).await? else {
            return Ok(None);
        };
        let ahead = waitlist::Entity::find()
            .filter(Column::ScheduleId.eq(schedule.value()))
            .filter(Column::Status.eq(WAITING))
            .filter(
                sea_orm::Condition::any()
                    .add(Column::QueuedAt.lt(row.queued_at))
                    .add(
                        sea_orm::Condition::all()
                            .add(Column::QueuedAt.eq(row.queued_at))
                            .add(Column::Id.lt(row.id)),
                    ),
            )
            .count(self.conn())
            .await?;
        Ok(Some((ahead + 1, to_entry(&row).quantity)))
    }

    async fn next_waiting(
        &mut self,
        schedule: ScheduleId,
        fits: u64,
    ) -> Result<Option<WaitlistEntry>, StoreError> {
        use waitlist::Column;
        let mut query = waitlist::Entity::find()
            .filter(Column::ScheduleId.eq(schedule.value()))
            .filter(Column::Status.eq(WAITING))
            .filter(Column::Quantity.lte(i64::try_from(fits).unwrap_or(i64::MAX)))
            .order_by_asc(Column::QueuedAt)
            .order_by_asc(Column::Id)
            .limit(1);
        if self.conn().get_database_backend() == DatabaseBackend::Postgres {
            query = query.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
        }
        Ok(query.one(self.conn()).await?.as_ref().map(to_entry))
    }

    async fn close_waiting(
        &mut self,
        schedule: ScheduleId,
        now: DateTime<Utc>,
        max: u64,
    ) -> Result<Vec<WaitlistEntry>, StoreError> {
        use waitlist::Column;
        let rows = waitlist::Entity::find()
            .filter(Column::ScheduleId.eq(schedule.value()))
            .filter(Column::Status.eq(WAITING))
            .order_by_asc(Column::QueuedAt)
            .order_by_asc(Column::Id)
            .limit(max)
            .all(self.conn())
            .await?;
        let mut closed = Vec::with_capacity(rows.len());
        for row in rows {
            let done = waitlist::Entity::update_many()
                .col_expr(Column::Status, Expr::value("closed"))
                .col_expr(Column::UpdatedAt, Expr::value(now))
                .filter(Column::Id.eq(row.id))
                .filter(Column::Status.eq(WAITING))
                .exec(self.conn())
                .await?
                .rows_affected;
            if done == 1 {
                closed.push(to_entry(&row));
            }
        }
        Ok(closed)
    }

    async fn mark_offered(
        &mut self,
        entry: i64,
        reservation: ReservationId,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        Ok(waitlist::Entity::update_many()
            .col_expr(waitlist::Column::Status, Expr::value("offered"))
            .col_expr(
                waitlist::Column::ReservationId,
                Expr::value(reservation.value()),
            )
            .col_expr(waitlist::Column::UpdatedAt, Expr::value(now))
            .filter(waitlist::Column::Id.eq(entry))
            .filter(waitlist::Column::Status.eq(WAITING))
            .exec(self.conn())
            .await?
            .rows_affected
            == 1)
    }
}
