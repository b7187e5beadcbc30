//! The door as operators see it, in the database: refused scans in their
//! own table (pruned by the retention sweeper), and a schedule's counts
//! as aggregates over its tickets.

use anyhow::anyhow;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, ExprTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, QueryTrait, Set,
    sea_query::{Alias, Expr, Func, Query},
};

use super::db::ticket;
use crate::{
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
        // Whether the schedule exists, read from catalog's table by name:
        // this adapter does not reach into catalog's adapter.
        let backend = self.db.get_database_backend();
        let exists = Query::select()
            .expr(Expr::val(1))
            .from(Alias::new("schedules"))
            .and_where(Expr::col(Alias::new("id")).eq(schedule.value()))
            .to_owned();
        if self
            .db
            .query_one_raw(backend.build(&exists))
            .await?
            .is_none()
        {
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

#[cfg(test)]
mod tests {
    use chrono::{DateTime, TimeDelta, Utc};
    use sea_orm::{ActiveModelTrait, Set};

    use super::*;
    use crate::{
        kernel::retention::Expiring,
        ticket::domain::{DOOR_MINUTES, minute_windows},
    };

    /// A database with one schedule, `ScheduleId(1)`, and a ticket per
    /// `(gate, checked in at)`, `None` for one not scanned yet.
    async fn door_with(scans: &[Option<(&str, DateTime<Utc>)>]) -> (tempfile::TempDir, DbDoor) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("door.db").display());
        let db = crate::db::connect(&url).await.unwrap();
        crate::db::migrate(&db).await.unwrap();
        let now = Utc::now();
        // Catalog's rows by SQL: this module's tests do not use catalog's
        // adapter either.
        db.execute_unprepared(
            "INSERT INTO concerts (title, venue, created_at) VALUES ('t', 'v', CURRENT_TIMESTAMP); \
             INSERT INTO schedules (concert_id, starts_at, status) \
             VALUES (1, CURRENT_TIMESTAMP, 'on_sale')",
        )
        .await
        .unwrap();
        for (n, scan) in scans.iter().enumerate() {
            ticket::ActiveModel {
                reservation_id: Set(n as i64 + 1),
                user_id: Set(1),
                schedule_id: Set(1),
                seat_id: Set(n as i64 + 1),
                version: Set(1),
                status: Set(TicketStatus::Valid.as_str().into()),
                code: Set(String::new()),
                kid: Set(String::new()),
                issued_at: Set(now),
                updated_at: Set(now),
                checked_in_at: Set(scan.map(|(_, at)| at)),
                checked_in_gate: Set(scan.map(|(gate, _)| gate.to_owned())),
                ..Default::default()
            }
            .insert(&db)
            .await
            .unwrap();
        }
        (dir, DbDoor::new(db))
    }

    #[tokio::test]
    async fn the_table_counts_each_gate_and_minute_as_the_fake_does() {
        let now = DateTime::parse_from_rfc3339("2026-12-07T20:00:00.5Z")
            .unwrap()
            .to_utc();
        let ago = |s: i64| now - TimeDelta::milliseconds(s);
        let (_dir, door) = door_with(&[
            Some(("north", now)),
            Some(("north", ago(60_000))),
            Some(("north", ago(60_001))),
            Some(("south", ago(899_999))),
            Some(("south", ago(900_000))),
            None,
        ])
        .await;
        let counts = door
            .counts(ScheduleId(1), &minute_windows(now))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(counts.sold, 6);
        let mut gates = counts.gates;
        gates.sort_by(|a, b| a.gate.cmp(&b.gate));
        let mut north = vec![0; DOOR_MINUTES];
        north[DOOR_MINUTES - 1] = 1;
        north[DOOR_MINUTES - 2] = 2;
        let mut south = vec![0; DOOR_MINUTES];
        south[0] = 1;
        assert_eq!(
            gates,
            vec![
                GateCount {
                    gate: "north".into(),
                    checked_in: 3,
                    per_minute: north
                },
                GateCount {
                    gate: "south".into(),
                    checked_in: 2,
                    per_minute: south
                },
            ],
            "a minute is after its start, up to and including its end: one minute ago \
             is the minute before the last"
        );
        assert_eq!(
            door.counts(ScheduleId(2), &minute_windows(now))
                .await
                .unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn refusals_are_read_back_newest_first_and_pruned_by_age() {
        let (_dir, door) = door_with(&[]).await;
        let now = Utc::now();
        for (n, reason) in [RefusalReason::InvalidCode, RefusalReason::TicketVoid]
            .into_iter()
            .enumerate()
        {
            let refusal = Refusal {
                schedule: Some(ScheduleId(1)),
                gate: format!("g{n}"),
                reason,
                ticket: (n == 1).then_some(TicketId(7)),
                at: now - TimeDelta::hours(30 - 29 * n as i64),
            };
            door.record(&refusal).await.unwrap();
        }
        let recent = door.recent_refusals(ScheduleId(1), 20).await.unwrap();
        let seen: Vec<_> = recent
            .iter()
            .map(|r| (r.gate.as_str(), r.reason, r.ticket))
            .collect();
        assert_eq!(
            seen,
            vec![
                ("g1", RefusalReason::TicketVoid, Some(TicketId(7))),
                ("g0", RefusalReason::InvalidCode, None),
            ]
        );
        let expiring = expiring_refusals(door.db.clone());
        let before = now - crate::ticket::domain::REFUSAL_RETENTION;
        assert_eq!(expiring.purge(before, 100).await.unwrap(), 1);
        let left = door.recent_refusals(ScheduleId(1), 20).await.unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].gate, "g1");
    }
}
