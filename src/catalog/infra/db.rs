//! The catalog stored with sea-orm (SQLite or PostgreSQL): the tables, the
//! row conversions every port shares, and the stalled-cancellation watch.
//! Each port's implementation has its own file under `db/`.

mod reads;
mod repository;
mod seat_tx;

use anyhow::anyhow;
use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, Condition, DatabaseConnection,
    sea_query::{Query, SelectStatement},
};

use crate::{
    catalog::domain::{
        Availability, CatalogError, ScheduleStatus, Seat, SeatPlace, SeatState, SeatStatus,
    },
    kernel::{Points, ScheduleId, SeatId, StoreError, UserId},
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
        pub section: Option<String>,
        pub row_label: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

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

/// The schedule's id while it is on sale: seats are read and held only
/// under it, so a cancelled schedule sells nothing.
fn on_sale(schedule_id: ScheduleId) -> SelectStatement {
    Query::select()
        .column(schedule::Column::Id)
        .from(schedule::Entity)
        .and_where(schedule::Column::Id.eq(schedule_id.value()))
        .and_where(schedule::Column::Status.eq(ScheduleStatus::OnSale.as_str()))
        .to_owned()
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

fn seat_from_row(row: seat::Model) -> anyhow::Result<Seat> {
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
            return Err(anyhow!(
                "seat {} has an inconsistent state {status:?}",
                row.id
            ));
        }
    };
    Ok(Seat {
        id: SeatId(row.id),
        schedule_id: ScheduleId(row.schedule_id),
        number: u32::try_from(row.number)?,
        grade: row.grade,
        price: Points::new(row.price)?,
        place: SeatPlace {
            section: row.section,
            row: row.row_label,
        },
        state,
    })
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
