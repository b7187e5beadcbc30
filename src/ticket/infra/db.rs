//! Tickets and the ticket-signing keys in the database.

use anyhow::anyhow;
use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, Condition, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    Set, sea_query::Expr,
};

use super::codes::TicketKey;
use crate::{
    db::{DbTx, Paged, all_as, compare_and_set, insert_new, one_as},
    kernel::{PageRequest, ReservationId, ScheduleId, SeatId, StoreError, TicketId, UserId},
    ticket::{
        domain::{
            CheckIn, FIRST_VERSION, KeyRecord, NewTicket, Scan, SignedCode, Ticket, TicketError,
            TicketStatus,
        },
        ports::{TicketRepository, TicketTx},
    },
};

pub mod ticket {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "tickets")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        #[sea_orm(unique)]
        pub reservation_id: i64,
        pub user_id: i64,
        pub schedule_id: i64,
        pub seat_id: i64,
        pub version: i32,
        pub status: String,
        /// The signed code (a compact JWS), and the key that signed it.
        pub code: String,
        pub kid: String,
        pub issued_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
        /// The first scan at the door.
        pub checked_in_at: Option<DateTimeUtc>,
        pub checked_in_gate: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod signing_key {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "ticket_signing_keys")]
    pub struct Model {
        /// 1 for the first key, one more for each rotation: the slot
        /// processes starting together race for, so they keep one key.
        #[sea_orm(primary_key, auto_increment = false)]
        pub generation: i64,
        #[sea_orm(unique)]
        pub kid: String,
        /// PKCS#8 PEM.
        pub private_key: String,
        pub created_at: DateTimeUtc,
        /// Set when its codes no longer verify.
        pub retired_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

fn to_ticket(row: ticket::Model) -> anyhow::Result<Ticket> {
    Ok(Ticket {
        id: TicketId(row.id),
        reservation: ReservationId(row.reservation_id),
        holder: UserId(row.user_id),
        schedule: ScheduleId(row.schedule_id),
        seat: SeatId(row.seat_id),
        version: u32::try_from(row.version)
            .map_err(|_| anyhow!("ticket {} has version {}", row.id, row.version))?,
        status: TicketStatus::parse(&row.status)
            .ok_or_else(|| anyhow!("ticket {} has unknown status {:?}", row.id, row.status))?,
        code: SignedCode {
            code: row.code,
            kid: row.kid,
        },
        issued_at: row.issued_at,
        checked_in: match (row.checked_in_at, row.checked_in_gate) {
            (Some(at), Some(gate)) => Some(Scan { gate, at }),
            _ => None,
        },
    })
}

#[derive(Clone)]
pub struct DbTickets {
    db: DatabaseConnection,
}

impl DbTickets {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

impl TicketRepository for DbTickets {
    async fn get(&self, id: TicketId) -> Result<Option<Ticket>, TicketError> {
        Ok(one_as(ticket::Entity::find_by_id(id.value()), &self.db, to_ticket).await?)
    }

    async fn of_holder(
        &self,
        holder: UserId,
        page: PageRequest,
    ) -> Result<Vec<Ticket>, TicketError> {
        let query = ticket::Entity::find()
            .filter(ticket::Column::UserId.eq(holder.value()))
            .newest_first(ticket::Column::Id, page);
        Ok(all_as(query, &self.db, to_ticket).await?)
    }

    async fn of_schedule(
        &self,
        schedule: ScheduleId,
        page: PageRequest,
    ) -> Result<Vec<Ticket>, TicketError> {
        let query = ticket::Entity::find()
            .filter(ticket::Column::ScheduleId.eq(schedule.value()))
            .oldest_first(ticket::Column::Id, page);
        Ok(all_as(query, &self.db, to_ticket).await?)
    }

    async fn changed_of_schedule(
        &self,
        schedule: ScheduleId,
        from: DateTime<Utc>,
        page: PageRequest,
    ) -> Result<Vec<Ticket>, TicketError> {
        let query = ticket::Entity::find()
            .filter(ticket::Column::ScheduleId.eq(schedule.value()))
            .filter(ticket::Column::UpdatedAt.gte(from))
            .oldest_first(ticket::Column::Id, page);
        Ok(all_as(query, &self.db, to_ticket).await?)
    }

    async fn many(&self, ids: &[TicketId]) -> Result<Vec<Ticket>, TicketError> {
        let query = ticket::Entity::find()
            .filter(ticket::Column::Id.is_in(ids.iter().map(|id| id.value())));
        Ok(all_as(query, &self.db, to_ticket).await?)
    }
}

/// The update that records `scan` as its ticket's first scan, stamped as
/// changed at `now`, where the ticket's id and version match and it is
/// valid; the caller says which earlier first scans it may replace.
fn first_scan(scan: &CheckIn, now: DateTime<Utc>) -> sea_orm::UpdateMany<ticket::Entity> {
    ticket::Entity::update_many()
        .col_expr(ticket::Column::CheckedInAt, Expr::value(scan.scan.at))
        .col_expr(
            ticket::Column::CheckedInGate,
            Expr::value(scan.scan.gate.clone()),
        )
        .col_expr(ticket::Column::UpdatedAt, Expr::value(now))
        .filter(ticket::Column::Id.eq(scan.ticket.value()))
        .filter(ticket::Column::Version.eq(scan.version as i32))
        .filter(ticket::Column::Status.eq(TicketStatus::Valid.as_str()))
}

impl TicketTx for DbTx {
    async fn ticket(&mut self, id: TicketId) -> Result<Option<Ticket>, StoreError> {
        one_as(
            ticket::Entity::find_by_id(id.value()),
            self.conn(),
            to_ticket,
        )
        .await
    }

    async fn ticket_of(
        &mut self,
        reservation: ReservationId,
    ) -> Result<Option<Ticket>, StoreError> {
        let query =
            ticket::Entity::find().filter(ticket::Column::ReservationId.eq(reservation.value()));
        one_as(query, self.conn(), to_ticket).await
    }

    async fn insert_ticket(
        &mut self,
        new: &NewTicket,
        now: DateTime<Utc>,
    ) -> Result<Option<TicketId>, StoreError> {
        let row = ticket::ActiveModel {
            reservation_id: Set(new.reservation.value()),
            user_id: Set(new.holder.value()),
            schedule_id: Set(new.schedule.value()),
            seat_id: Set(new.seat.value()),
            version: Set(FIRST_VERSION as i32),
            status: Set(new.status.as_str().to_owned()),
            code: Set(String::new()),
            kid: Set(String::new()),
            issued_at: Set(now),
            updated_at: Set(now),
            checked_in_at: Set(None),
            checked_in_gate: Set(None),
            ..Default::default()
        };
        if !insert_new(row, [ticket::Column::ReservationId], self.conn()).await? {
            return Ok(None);
        }
        Ok(self.ticket_of(new.reservation).await?.map(|t| t.id))
    }

    async fn set_code(&mut self, id: TicketId, code: &SignedCode) -> Result<(), StoreError> {
        ticket::Entity::update_many()
            .col_expr(ticket::Column::Code, Expr::value(code.code.clone()))
            .col_expr(ticket::Column::Kid, Expr::value(code.kid.clone()))
            .filter(ticket::Column::Id.eq(id.value()))
            .exec(self.conn())
            .await?;
        Ok(())
    }

    async fn void_ticket(&mut self, id: TicketId, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let void = ticket::Entity::update_many()
            .col_expr(
                ticket::Column::Status,
                Expr::value(TicketStatus::Void.as_str()),
            )
            .col_expr(ticket::Column::UpdatedAt, Expr::value(now))
            .filter(ticket::Column::Id.eq(id.value()))
            .filter(ticket::Column::Status.eq(TicketStatus::Valid.as_str()));
        Ok(compare_and_set(void, self.conn()).await?)
    }

    async fn void_seen(&mut self, seen: &Ticket, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let void = ticket::Entity::update_many()
            .col_expr(
                ticket::Column::Status,
                Expr::value(TicketStatus::Void.as_str()),
            )
            .col_expr(ticket::Column::UpdatedAt, Expr::value(now))
            .filter(as_seen(seen));
        Ok(compare_and_set(void, self.conn()).await?)
    }

    async fn transfer(
        &mut self,
        seen: &Ticket,
        next: &Ticket,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let handed_on = ticket::Entity::update_many()
            .col_expr(ticket::Column::UserId, Expr::value(next.holder.value()))
            .col_expr(ticket::Column::Version, Expr::value(next.version as i32))
            .col_expr(ticket::Column::Code, Expr::value(next.code.code.clone()))
            .col_expr(ticket::Column::Kid, Expr::value(next.code.kid.clone()))
            .col_expr(ticket::Column::UpdatedAt, Expr::value(now))
            .filter(as_seen(seen));
        Ok(compare_and_set(handed_on, self.conn()).await?)
    }

    async fn check_in(&mut self, scan: &CheckIn) -> Result<bool, StoreError> {
        let first = first_scan(scan, scan.scan.at).filter(ticket::Column::CheckedInAt.is_null());
        Ok(compare_and_set(first, self.conn()).await?)
    }

    async fn check_in_earlier(
        &mut self,
        scan: &CheckIn,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let first = first_scan(scan, now).filter(
            Condition::any()
                .add(ticket::Column::CheckedInAt.is_null())
                .add(ticket::Column::CheckedInAt.gt(scan.scan.at)),
        );
        Ok(compare_and_set(first, self.conn()).await?)
    }
}

/// The stored signing keys.
#[derive(Clone)]
pub struct DbTicketKeys {
    db: DatabaseConnection,
}

impl DbTicketKeys {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    /// Every stored key, retired or not, with its private key (PKCS#8 PEM).
    pub async fn stored(&self) -> Result<Vec<(KeyRecord, String)>, StoreError> {
        let rows = signing_key::Entity::find().all(&self.db).await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let record = KeyRecord {
                    generation: row.generation,
                    retired: row.retired_at.is_some(),
                };
                (record, row.private_key)
            })
            .collect())
    }

    /// The generation of the stored key `kid`, if one has it.
    pub async fn generation_of(&self, kid: &str) -> Result<Option<i64>, StoreError> {
        Ok(signing_key::Entity::find()
            .select_only()
            .column(signing_key::Column::Generation)
            .filter(signing_key::Column::Kid.eq(kid))
            .into_tuple()
            .one(&self.db)
            .await?)
    }

    /// Retires the key `generation` (a compare-and-set on it not being
    /// retired); true if this call did.
    pub async fn retire(&self, generation: i64, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let retire = signing_key::Entity::update_many()
            .col_expr(signing_key::Column::RetiredAt, Expr::value(now))
            .filter(signing_key::Column::Generation.eq(generation))
            .filter(signing_key::Column::RetiredAt.is_null());
        Ok(compare_and_set(retire, &self.db).await?)
    }

    /// Stores `key` as the generation after the newest stored one (a
    /// rotation); false when another process stored that generation first.
    pub async fn insert_next(&self, key: &TicketKey) -> Result<bool, StoreError> {
        let newest: Option<i64> = signing_key::Entity::find()
            .select_only()
            .column(signing_key::Column::Generation)
            .order_by_desc(signing_key::Column::Generation)
            .limit(1)
            .into_tuple()
            .one(&self.db)
            .await?;
        self.insert_at(newest.unwrap_or(0) + 1, key).await
    }

    /// Stores `key` as `generation` unless another process stored that
    /// generation first (then theirs stands); true if ours did.
    pub async fn insert_at(&self, generation: i64, key: &TicketKey) -> Result<bool, StoreError> {
        let row = signing_key::ActiveModel {
            generation: Set(generation),
            kid: Set(key.public().kid().to_owned()),
            private_key: Set(key.to_pem()),
            created_at: Set(Utc::now()),
            retired_at: Set(None),
        };
        Ok(insert_new(row, [signing_key::Column::Generation], &self.db).await?)
    }
}

/// The ticket row still as `seen` read it: same version and holder, valid
/// and not checked in (the compare-and-set of a holder's change).
fn as_seen(seen: &Ticket) -> sea_orm::Condition {
    sea_orm::Condition::all()
        .add(ticket::Column::Id.eq(seen.id.value()))
        .add(ticket::Column::Version.eq(seen.version as i32))
        .add(ticket::Column::UserId.eq(seen.holder.value()))
        .add(ticket::Column::Status.eq(TicketStatus::Valid.as_str()))
        .add(ticket::Column::CheckedInAt.is_null())
}
