//! [`SeatTx`] over the database: the seat and schedule changes other
//! modules make inside their own transactions (holds, payments,
//! confirmations, cancellations). Every change is a compare-and-set on the
//! row: it applies only from the state the caller expects.

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, DbErr, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
    UpdateMany,
    sea_query::{Expr, ExprTrait},
};

use super::{availability_is, on_sale, sale_status, schedule, seat, seat_from_row};
use crate::{
    catalog::{
        domain::{Availability, HeldSeat, ScheduleStatus, SeatHold, SeatStatus},
        ports::SeatTx,
    },
    db::{DbTx, compare_and_set},
    kernel::{ConcertId, Points, ReservationId, ScheduleId, SeatId, StoreError},
};

/// An update of the seat that applies only while it stands `status` for
/// `reservation`: the compare-and-set every post-hold change shares.
fn while_reserved(
    seat_id: SeatId,
    reservation: ReservationId,
    status: SeatStatus,
) -> UpdateMany<seat::Entity> {
    seat::Entity::update_many()
        .filter(seat::Column::Id.eq(seat_id.value()))
        .filter(seat::Column::ReservationId.eq(reservation.value()))
        .filter(seat::Column::Status.eq(status.as_str()))
}

fn while_held_by(seat_id: SeatId, reservation: ReservationId) -> UpdateMany<seat::Entity> {
    while_reserved(seat_id, reservation, SeatStatus::Held)
}

/// Moves the seat to `status`, held until `held_until` (nothing once sold
/// or free), under a new version.
fn into_status(
    update: UpdateMany<seat::Entity>,
    status: SeatStatus,
    held_until: Option<DateTime<Utc>>,
) -> UpdateMany<seat::Entity> {
    update
        .col_expr(seat::Column::Status, Expr::value(status.as_str()))
        .col_expr(seat::Column::HeldUntil, Expr::value(held_until))
        .col_expr(
            seat::Column::Version,
            Expr::col(seat::Column::Version).add(1),
        )
}

/// The update that puts a seat back on sale: free, no holder, no
/// reservation, a new version.
fn on_sale_again(update: UpdateMany<seat::Entity>) -> UpdateMany<seat::Entity> {
    into_status(update, SeatStatus::Available, None)
        .col_expr(seat::Column::HolderId, Expr::value(Option::<i64>::None))
        .col_expr(
            seat::Column::ReservationId,
            Expr::value(Option::<i64>::None),
        )
}

impl SeatTx for DbTx {
    /// Holds the seat for the user until `until` if it is free now (never
    /// held, or held past its expiry). `None` when someone else holds or
    /// bought it.
    async fn try_hold(
        &mut self,
        hold: SeatHold,
        now: DateTime<Utc>,
    ) -> Result<Option<HeldSeat>, StoreError> {
        let SeatHold {
            schedule: schedule_id,
            seat: seat_id,
            user,
            until,
        } = hold;
        let conn = self.conn();
        // The write comes first: on SQLite it takes the write lock before
        // anything is read, so the transaction never works from a stale snapshot.
        let taken = into_status(seat::Entity::update_many(), SeatStatus::Held, Some(until))
            .col_expr(seat::Column::HolderId, Expr::value(user.value()))
            .col_expr(
                seat::Column::ReservationId,
                Expr::value(Option::<i64>::None),
            )
            .filter(seat::Column::Id.eq(seat_id.value()))
            .filter(seat::Column::ScheduleId.eq(schedule_id.value()))
            .filter(availability_is(Availability::Available, now))
            .filter(seat::Column::ScheduleId.in_subquery(on_sale(schedule_id)))
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
            price: Points::new(held.price).map_err(|err| DbErr::Custom(err.to_string()))?,
            concert: ConcertId(concert),
            starts_at,
            seat: seat_from_row(held).map_err(StoreError::Unexpected)?,
        }))
    }

    async fn exists(
        &mut self,
        schedule_id: ScheduleId,
        seat_id: SeatId,
    ) -> Result<bool, StoreError> {
        Ok(seat::Entity::find_by_id(seat_id.value())
            .filter(seat::Column::ScheduleId.eq(schedule_id.value()))
            .one(self.conn())
            .await?
            .is_some())
    }

    async fn attach(
        &mut self,
        seat_id: SeatId,
        reservation: ReservationId,
    ) -> Result<(), StoreError> {
        seat::Entity::update_many()
            .col_expr(
                seat::Column::ReservationId,
                Expr::value(reservation.value()),
            )
            .filter(seat::Column::Id.eq(seat_id.value()))
            .exec(self.conn())
            .await?;
        Ok(())
    }

    async fn release(
        &mut self,
        seat_id: SeatId,
        reservation: ReservationId,
    ) -> Result<bool, StoreError> {
        let release = on_sale_again(while_held_by(seat_id, reservation));
        Ok(compare_and_set(release, self.conn()).await?)
    }

    /// Keeps the seat held by `reservation` until `until` (a paid hold waits
    /// for its confirmation). False if the reservation no longer holds it.
    async fn extend(
        &mut self,
        seat_id: SeatId,
        reservation: ReservationId,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let extend = while_held_by(seat_id, reservation)
            .col_expr(seat::Column::HeldUntil, Expr::value(until));
        Ok(compare_and_set(extend, self.conn()).await?)
    }

    /// Sells the seat to the holder of `reservation`; false if it no longer
    /// holds it (the hold lapsed and someone else took the seat).
    async fn sell(
        &mut self,
        seat_id: SeatId,
        reservation: ReservationId,
    ) -> Result<bool, StoreError> {
        let sell = into_status(while_held_by(seat_id, reservation), SeatStatus::Sold, None);
        Ok(compare_and_set(sell, self.conn()).await?)
    }

    async fn unsell(
        &mut self,
        seat_id: SeatId,
        reservation: ReservationId,
    ) -> Result<bool, StoreError> {
        let sold_to_it = while_reserved(seat_id, reservation, SeatStatus::Sold);
        Ok(compare_and_set(on_sale_again(sold_to_it), self.conn()).await?)
    }

    async fn free_seats(
        &mut self,
        schedule_id: ScheduleId,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        Ok(seat::Entity::find()
            .filter(seat::Column::ScheduleId.eq(schedule_id.value()))
            .filter(availability_is(Availability::Available, now))
            .count(self.conn())
            .await?)
    }

    async fn free_seat_ids(
        &mut self,
        schedule_id: ScheduleId,
        now: DateTime<Utc>,
        max: u64,
    ) -> Result<Vec<SeatId>, StoreError> {
        Ok(seat::Entity::find()
            .select_only()
            .column(seat::Column::Id)
            .filter(seat::Column::ScheduleId.eq(schedule_id.value()))
            .filter(availability_is(Availability::Available, now))
            .order_by_asc(seat::Column::Id)
            .limit(max)
            .into_tuple::<i64>()
            .all(self.conn())
            .await?
            .into_iter()
            .map(SeatId)
            .collect())
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
        let change = schedule::Entity::update_many()
            .col_expr(schedule::Column::Status, Expr::value(to.as_str()))
            .col_expr(schedule::Column::StatusChangedAt, Expr::value(now))
            .filter(schedule::Column::Id.eq(id.value()))
            .filter(schedule::Column::Status.eq(from.as_str()));
        Ok(compare_and_set(change, self.conn()).await?)
    }

    async fn starts_at(&mut self, id: ScheduleId) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(schedule::Entity::find_by_id(id.value())
            .one(self.conn())
            .await?
            .map(|row| row.starts_at))
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;
    use sea_orm::TransactionTrait;

    use super::*;
    use crate::{
        catalog::{
            domain::{NewConcert, NewSchedule, SeatBlock, SeatPlace},
            infra::db::DbCatalog,
            ports::CatalogRepository,
        },
        kernel::UserId,
    };

    #[tokio::test]
    async fn a_held_seat_is_sold_and_put_back_only_for_its_own_reservation() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("seats.db").display());
        let db = crate::db::connect(&url).await.unwrap();
        crate::db::migrate(&db).await.unwrap();
        let now = Utc::now();
        let one_seat = NewConcert {
            title: "Concert".into(),
            venue: "Hall".into(),
            schedules: vec![NewSchedule {
                starts_at: now + TimeDelta::days(1),
                seat_blocks: vec![SeatBlock {
                    grade: "R".into(),
                    price: Points::new(10).unwrap(),
                    count: 1,
                    place: SeatPlace::default(),
                }],
            }],
            created_by: None,
        };
        let created = DbCatalog::new(db.clone())
            .create_concert(&one_seat, now)
            .await
            .unwrap();
        let schedule = created.schedules[0].id;
        let row = seat::Entity::find().one(&db).await.unwrap().unwrap();
        let seat_id = SeatId(row.id);

        let mut tx = DbTx::new(db.begin().await.unwrap());
        let (mine, other) = (ReservationId(7), ReservationId(8));
        let until = now + TimeDelta::minutes(5);
        let hold = SeatHold {
            schedule,
            seat: seat_id,
            user: UserId(1),
            until,
        };
        let held = tx.try_hold(hold, now).await;
        assert!(held.unwrap().is_some());
        tx.attach(seat_id, mine).await.unwrap();
        assert!(
            !tx.sell(seat_id, other).await.unwrap(),
            "not its reservation"
        );
        assert!(tx.sell(seat_id, mine).await.unwrap());
        assert!(
            !tx.release(seat_id, mine).await.unwrap(),
            "a sold seat is no hold"
        );
        assert!(tx.unsell(seat_id, mine).await.unwrap());

        let back = seat::Entity::find_by_id(seat_id.value())
            .one(tx.conn())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back.status, SeatStatus::Available.as_str());
        assert_eq!((back.holder_id, back.held_until), (None, None));
        assert_eq!(back.reservation_id, None);
        assert_eq!(back.version, row.version + 3, "hold, sale and return");
    }
}
