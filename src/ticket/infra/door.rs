//! The door as operators see it, in the database: refused scans in their
//! own table (pruned by the retention sweeper), and a schedule's counts
//! as aggregates over its tickets.

use anyhow::anyhow;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, ExprTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, QueryTrait, Set,
    sea_query::{Expr, Func},
};

use super::db::ticket;
use crate::{
    catalog::infra::db::schedule,
    db::{DbExpiring, all_as},
    kernel::{ScheduleId, StoreError, TicketId},
    ticket::{
        domain::{
            DoorCounts, GateCount, Refusal, RefusalReason, TicketError, TicketStatus, Window,
        },
        ports::DoorLog,
    },
};

crate::db::module_error_from_db_err!(TicketError);

pub mod door_refusal {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "door_refusals")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub schedule_id: Option<i64>,
        pub gate: String,
        /// `RefusalReason`, the problem code the scanner heard.
        pub reason: String,
        pub ticket_id: Option<i64>,
        pub at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

fn to_refusal(row: door_refusal::Model) -> anyhow::Result<Refusal> {
    Ok(Refusal {
        schedule: row.schedule_id.map(ScheduleId),
        gate: row.gate,
        reason: RefusalReason::parse(&row.reason)
            .ok_or_else(|| anyhow!("refusal {} has unknown reason {:?}", row.id, row.reason))?,
        ticket: row.ticket_id.map(TicketId),
        at: row.at,
    })
}

/// Refusals past their retention.
pub fn expiring_refusals(db: DatabaseConnection) -> DbExpiring {
    DbExpiring::new(db, "door_refusals", "door_refusals", "at < {before}")
}

#[derive(Clone)]
pub struct DbDoor {
    db: DatabaseConnection,
}

impl DbDoor {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

/// The column of the check-ins in window `i`.
fn window_column(i: usize) -> String {
    format!("m{i}")
}

/// A count read back as the engine answers it (a 64-bit integer on both).
fn count(row: &sea_orm::QueryResult, column: &str) -> Result<u64, StoreError> {
    let n: i64 = row.try_get("", column)?;
    u64::try_from(n).map_err(|_| StoreError::Unexpected(anyhow!("{column} is {n}")))
}

impl DoorLog for DbDoor {
    async fn record(&self, refusal: &Refusal) -> Result<(), StoreError> {
        let row = door_refusal::ActiveModel {
            schedule_id: Set(refusal.schedule.map(ScheduleId::value)),
            gate: Set(refusal.gate.clone()),
            reason: Set(refusal.reason.as_str().to_owned()),
            ticket_id: Set(refusal.ticket.map(TicketId::value)),
            at: Set(refusal.at),
            ..Default::default()
        };
        door_refusal::Entity::insert(row)
            .exec_without_returning(&self.db)
            .await?;
        Ok(())
    }

    async fn counts(
        &self,
        schedule: ScheduleId,
        windows: &[Window],
    ) -> Result<Option<DoorCounts>, TicketError> {
        let known = schedule::Entity::find_by_id(schedule.value())
            .count(&self.db)
            .await?;
        if known == 0 {
            return Ok(None);
        }
        let of_schedule = ticket::Column::ScheduleId.eq(schedule.value());
        let sold = ticket::Entity::find()
            .filter(of_schedule.clone())
            .filter(ticket::Column::Status.eq(TicketStatus::Valid.as_str()))
            .count(&self.db)
            .await?;
        // One row per gate: its check-ins, and those of each window (a sum
        // over bound times, the same on every engine).
        let mut per_gate = ticket::Entity::find()
            .select_only()
            .column_as(Expr::col(ticket::Column::CheckedInGate), "gate")
            .column_as(Expr::col(ticket::Column::Id).count(), "total")
            .filter(of_schedule)
            .filter(ticket::Column::CheckedInAt.is_not_null())
            .filter(ticket::Column::CheckedInGate.is_not_null())
            .group_by(ticket::Column::CheckedInGate);
        for (i, window) in windows.iter().enumerate() {
            let inside = ticket::Column::CheckedInAt
                .gt(window.after)
                .and(ticket::Column::CheckedInAt.lte(window.until));
            let counted = Func::sum(Expr::case(inside, 1i32).finally(0i32));
            per_gate = per_gate.column_as(Expr::from(counted), window_column(i));
        }
        let statement = per_gate.build(self.db.get_database_backend());
        let rows = self.db.query_all_raw(statement).await?;
        let mut gates = Vec::with_capacity(rows.len());
        for row in &rows {
            let per_minute = (0..windows.len())
                .map(|i| count(row, &window_column(i)))
                .collect::<Result<_, _>>()?;
            gates.push(GateCount {
                gate: row.try_get("", "gate")?,
                checked_in: count(row, "total")?,
                per_minute,
            });
        }
        Ok(Some(DoorCounts { sold, gates }))
    }

    async fn recent_refusals(
        &self,
        schedule: ScheduleId,
        limit: u64,
    ) -> Result<Vec<Refusal>, TicketError> {
        let query = door_refusal::Entity::find()
            .filter(door_refusal::Column::ScheduleId.eq(schedule.value()))
            .order_by_desc(door_refusal::Column::Id)
            .limit(limit);
        Ok(all_as(query, &self.db, to_refusal).await?)
    }
}
