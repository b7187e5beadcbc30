//! Reservations in the database, and the seat compare-and-sets they drive.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use anyhow::anyhow;
use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseBackend, DatabaseConnection, DbErr,
    EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Set, Statement,
    TransactionTrait, sea_query::Expr,
};

use crate::{
    catalog::infra::db::seats,
    kernel::{
        ConcertId, Points, ReservationId, ScheduleId, SeatId, UserId,
        events::{NewEvent, ReservationChanged, types},
    },
    outbox::infra::db::append_events,
    reservation::{
        domain::{HoldPolicy, Reservation, ReservationError, ReservationStatus},
        ports::ReservationRepository,
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
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

crate::db::module_error_from_db_err!(ReservationError);

pub fn to_reservation(row: reservation::Model) -> Result<Reservation, ReservationError> {
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
        paid: row.payment_id.is_some(),
    })
}

pub fn event(
    event_type: &'static str,
    r: &reservation::Model,
    payment_id: Option<i64>,
) -> NewEvent {
    NewEvent::new(
        event_type,
        "reservation",
        r.id,
        &ReservationChanged {
            reservation_id: r.id,
            user_id: r.user_id,
            concert_id: r.concert_id,
            schedule_id: r.schedule_id,
            seat_id: r.seat_id,
            payment_id,
        },
    )
}

/// Serialises one user's holds on PostgreSQL, so concurrent requests of the
/// same user cannot together pass the hold limit. (SQLite has one writer.)
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

/// Expires an unpaid lapsed hold whose seat was taken over; writes the event.
async fn expire_replaced<C: ConnectionTrait>(
    conn: &C,
    id: i64,
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    let expired = reservation::Entity::update_many()
        .col_expr(reservation::Column::Status, Expr::value("expired"))
        .col_expr(reservation::Column::UpdatedAt, Expr::value(now))
        .filter(reservation::Column::Id.eq(id))
        .filter(reservation::Column::Status.eq("held"))
        .filter(reservation::Column::PaymentId.is_null())
        .exec(conn)
        .await?;
    if expired.rows_affected == 1
        && let Some(row) = reservation::Entity::find_by_id(id).one(conn).await?
    {
        append_events(
            conn,
            vec![event(types::RESERVATION_EXPIRED, &row, None)],
            now,
        )
        .await?;
    }
    Ok(())
}

/// How long this instance answers "taken" for a seat it just saw lost in
/// a race, without asking the database again.
const LOST_RACE_MEMORY: TimeDelta = TimeDelta::seconds(1);
/// Remembered seats kept at most (expired ones are dropped first).
const LOST_RACE_CAPACITY: usize = 10_000;

type TakenUntil = HashMap<(ScheduleId, SeatId), DateTime<Utc>>;
type SeatGates = HashMap<(ScheduleId, SeatId), Arc<tokio::sync::Mutex<()>>>;

#[derive(Clone)]
pub struct DbReservations {
    db: DatabaseConnection,
    /// Seats this instance just saw taken, until when. When 1,000 buyers
    /// rush one seat, the first wave reads it and races the compare-and-set;
    /// everyone after them is refused from here, without a database round
    /// trip. Only a refusal is ever answered from it, only for a second,
    /// and a release on this instance forgets everything: at worst a buyer
    /// on another instance hears "taken" for a second after an early release.
    lost_races: Arc<Mutex<TakenUntil>>,
    /// One hold attempt per seat at a time on this instance. The rest of a
    /// rush waits here, not in the database's row lock and the connection
    /// pool, and is refused from `lost_races` once the first attempt won.
    /// The compare-and-set in the database still decides between instances.
    gates: Arc<Mutex<SeatGates>>,
}

/// A turn at one seat's gate; leaving it drops the gate when nobody else
/// is waiting.
struct SeatTurn {
    gates: Arc<Mutex<SeatGates>>,
    key: (ScheduleId, SeatId),
    gate: Arc<tokio::sync::Mutex<()>>,
}

impl SeatTurn {
    fn new(gates: &Arc<Mutex<SeatGates>>, key: (ScheduleId, SeatId)) -> Self {
        let gate = gates
            .lock()
            .map(|mut g| g.entry(key).or_default().clone())
            .unwrap_or_default();
        Self {
            gates: gates.clone(),
            key,
            gate,
        }
    }
}

impl Drop for SeatTurn {
    fn drop(&mut self) {
        if let Ok(mut gates) = self.gates.lock()
            // This turn and the map itself: nobody else waits.
            && Arc::strong_count(&self.gate) <= 2
        {
            gates.remove(&self.key);
        }
    }
}

impl DbReservations {
    pub fn new(db: DatabaseConnection) -> Self {
        Self {
            db,
            lost_races: Arc::default(),
            gates: Arc::default(),
        }
    }

    /// One hold attempt, the seat's gate held: a cheap look first, then
    /// the compare-and-set and the reservation in one transaction.
    async fn attempt_hold(
        &self,
        user: UserId,
        schedule: ScheduleId,
        seat: SeatId,
        policy: HoldPolicy,
        now: DateTime<Utc>,
    ) -> Result<Reservation, ReservationError> {
        let until = now + TimeDelta::minutes(policy.hold_minutes.into());
        match seats::visibly_taken(&self.db, schedule, seat, now).await? {
            None => return Err(ReservationError::SeatNotFound { schedule, seat }),
            Some(true) => {
                self.remember_taken(schedule, seat, now);
                return Err(ReservationError::SeatUnavailable);
            }
            Some(false) => {}
        }
        let txn = self.db.begin().await?;
        // The seat first: under a flood for one seat, the losers learn it
        // from this one statement and leave.
        let held = seats::try_hold(&txn, schedule, seat, user, until, now).await?;
        let Some(held) = held else {
            return Err(if seats::exists(&txn, schedule, seat).await? {
                self.remember_taken(schedule, seat, now);
                ReservationError::SeatUnavailable
            } else {
                ReservationError::SeatNotFound { schedule, seat }
            });
        };
        lock_user(&txn, user).await?;
        let live = reservation::Entity::find()
            .filter(reservation::Column::UserId.eq(user.value()))
            .filter(reservation::Column::Status.eq("held"))
            .filter(
                sea_orm::Condition::any()
                    .add(reservation::Column::ExpiresAt.gt(now))
                    .add(reservation::Column::PaymentId.is_not_null()),
            )
            .count(&txn)
            .await?;
        if live >= u64::from(policy.per_user_limit) {
            // Dropping the transaction rolls the seat back too.
            return Err(ReservationError::HoldLimit(policy.per_user_limit));
        }
        let row = reservation::ActiveModel {
            user_id: Set(user.value()),
            concert_id: Set(held.concert.value()),
            schedule_id: Set(schedule.value()),
            seat_id: Set(seat.value()),
            price: Set(held.price.value()),
            status: Set("held".into()),
            expires_at: Set(until),
            payment_id: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
            ..Default::default()
        }
        .insert(&txn)
        .await?;
        seats::attach(&txn, seat, row.id).await?;
        // The lapsed hold this one took the seat from is over now.
        let replaced: Vec<i64> = reservation::Entity::find()
            .select_only()
            .column(reservation::Column::Id)
            .filter(reservation::Column::SeatId.eq(seat.value()))
            .filter(reservation::Column::Status.eq("held"))
            .filter(reservation::Column::Id.ne(row.id))
            .into_tuple()
            .all(&txn)
            .await?;
        for previous in replaced {
            expire_replaced(&txn, previous, now).await?;
        }
        append_events(&txn, vec![event(types::RESERVATION_HELD, &row, None)], now).await?;
        txn.commit().await?;
        to_reservation(row)
    }

    fn known_taken(&self, schedule: ScheduleId, seat: SeatId, now: DateTime<Utc>) -> bool {
        self.lost_races
            .lock()
            .ok()
            .and_then(|seats| seats.get(&(schedule, seat)).copied())
            .is_some_and(|until| until > now)
    }

    fn remember_taken(&self, schedule: ScheduleId, seat: SeatId, now: DateTime<Utc>) {
        if let Ok(mut seats) = self.lost_races.lock() {
            if seats.len() >= LOST_RACE_CAPACITY {
                seats.retain(|_, until| *until > now);
                if seats.len() >= LOST_RACE_CAPACITY {
                    seats.clear();
                }
            }
            seats.insert((schedule, seat), now + LOST_RACE_MEMORY);
        }
    }

    fn forget_taken(&self) {
        if let Ok(mut seats) = self.lost_races.lock() {
            seats.clear();
        }
    }
}

impl ReservationRepository for DbReservations {
    async fn hold(
        &self,
        user: UserId,
        schedule: ScheduleId,
        seat: SeatId,
        policy: HoldPolicy,
        now: DateTime<Utc>,
    ) -> Result<Reservation, ReservationError> {
        if self.known_taken(schedule, seat, now) {
            return Err(ReservationError::SeatUnavailable);
        }
        let turn = SeatTurn::new(&self.gates, (schedule, seat));
        let _inside = turn.gate.lock().await;
        if self.known_taken(schedule, seat, now) {
            return Err(ReservationError::SeatUnavailable);
        }
        self.attempt_hold(user, schedule, seat, policy, now).await
    }

    async fn get(&self, id: ReservationId) -> Result<Option<Reservation>, ReservationError> {
        reservation::Entity::find_by_id(id.value())
            .one(&self.db)
            .await?
            .map(to_reservation)
            .transpose()
    }

    async fn release(
        &self,
        id: ReservationId,
        user: UserId,
        now: DateTime<Utc>,
    ) -> Result<(), ReservationError> {
        let txn = self.db.begin().await?;
        let released = reservation::Entity::update_many()
            .col_expr(reservation::Column::Status, Expr::value("released"))
            .col_expr(reservation::Column::UpdatedAt, Expr::value(now))
            .filter(reservation::Column::Id.eq(id.value()))
            .filter(reservation::Column::UserId.eq(user.value()))
            .filter(reservation::Column::Status.eq("held"))
            .filter(reservation::Column::PaymentId.is_null())
            .filter(reservation::Column::ExpiresAt.gt(now))
            .exec(&txn)
            .await?;
        if released.rows_affected == 0 {
            return Err(ReservationError::NotHeld(id));
        }
        let row = reservation::Entity::find_by_id(id.value())
            .one(&txn)
            .await?
            .ok_or(ReservationError::NotFound(id))?;
        seats::release(&txn, SeatId(row.seat_id), row.id).await?;
        append_events(
            &txn,
            vec![event(types::RESERVATION_RELEASED, &row, None)],
            now,
        )
        .await?;
        txn.commit().await?;
        self.forget_taken();
        Ok(())
    }

    async fn expire_due(&self, now: DateTime<Utc>, max: u64) -> Result<u64, ReservationError> {
        let due: Vec<i64> = reservation::Entity::find()
            .select_only()
            .column(reservation::Column::Id)
            .filter(reservation::Column::Status.eq("held"))
            .filter(reservation::Column::PaymentId.is_null())
            .filter(reservation::Column::ExpiresAt.lte(now))
            .order_by_asc(reservation::Column::ExpiresAt)
            .limit(max)
            .into_tuple()
            .all(&self.db)
            .await?;
        let mut expired = 0;
        for id in due {
            let txn = self.db.begin().await?;
            // The same conditions again: a payment may have claimed it meanwhile.
            let done = reservation::Entity::update_many()
                .col_expr(reservation::Column::Status, Expr::value("expired"))
                .col_expr(reservation::Column::UpdatedAt, Expr::value(now))
                .filter(reservation::Column::Id.eq(id))
                .filter(reservation::Column::Status.eq("held"))
                .filter(reservation::Column::PaymentId.is_null())
                .filter(reservation::Column::ExpiresAt.lte(now))
                .exec(&txn)
                .await?;
            if done.rows_affected == 1
                && let Some(row) = reservation::Entity::find_by_id(id).one(&txn).await?
            {
                seats::release(&txn, SeatId(row.seat_id), row.id).await?;
                append_events(
                    &txn,
                    vec![event(types::RESERVATION_EXPIRED, &row, None)],
                    now,
                )
                .await?;
                expired += 1;
            }
            txn.commit().await?;
        }
        Ok(expired)
    }
}

/// A hold a payment may take, as seen inside the payment's transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayableHold {
    pub reservation: ReservationId,
    pub concert: ConcertId,
    pub seat: SeatId,
    pub price: Points,
}

/// Why a hold cannot be paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotPayable {
    NotFound,
    Expired,
    AlreadyPaid,
}

/// Claims the user's unexpired, unpaid hold for a payment inside the
/// payment's transaction. The conditional UPDATE locks the row, so of
/// several concurrent payments for one hold exactly one gets past here.
pub async fn claim_for_payment<C: ConnectionTrait>(
    conn: &C,
    id: ReservationId,
    user: UserId,
    now: DateTime<Utc>,
) -> Result<Result<PayableHold, NotPayable>, DbErr> {
    let claimed = reservation::Entity::update_many()
        .col_expr(reservation::Column::UpdatedAt, Expr::value(now))
        .filter(reservation::Column::Id.eq(id.value()))
        .filter(reservation::Column::UserId.eq(user.value()))
        .filter(reservation::Column::Status.eq("held"))
        .filter(reservation::Column::PaymentId.is_null())
        .filter(reservation::Column::ExpiresAt.gt(now))
        .exec(conn)
        .await?;
    let row = reservation::Entity::find_by_id(id.value())
        .one(conn)
        .await?;
    let Some(row) = row.filter(|r| r.user_id == user.value()) else {
        return Ok(Err(NotPayable::NotFound));
    };
    if claimed.rows_affected == 0 {
        return Ok(Err(
            if row.payment_id.is_some() || row.status == "confirmed" {
                NotPayable::AlreadyPaid
            } else {
                NotPayable::Expired
            },
        ));
    }
    Ok(Ok(PayableHold {
        reservation: id,
        concert: ConcertId(row.concert_id),
        seat: SeatId(row.seat_id),
        price: Points::new(row.price).map_err(|e| DbErr::Custom(e.to_string()))?,
    }))
}

/// Records the payment on the claimed hold.
pub async fn mark_paid<C: ConnectionTrait>(
    conn: &C,
    id: ReservationId,
    payment: i64,
) -> Result<(), DbErr> {
    reservation::Entity::update_many()
        .col_expr(reservation::Column::PaymentId, Expr::value(payment))
        .filter(reservation::Column::Id.eq(id.value()))
        .exec(conn)
        .await?;
    Ok(())
}
