//! The outbox, inbox, dead-letter and subscription tables (sea-orm).

use std::collections::HashMap;

use anyhow::Context;
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait,
    PaginatorTrait, QueryFilter, QuerySelect, Set, TransactionTrait, sea_query::Expr,
};
use uuid::Uuid;

use crate::{
    db::{DbTx, Paged, insert_new},
    kernel::{
        PageRequest, StoreError, Transaction, UserId,
        events::{BusMessage, EventEnvelope, NewEvent},
    },
    outbox::{
        domain::{DeadLetter, OutboxBacklog, OutboxError, dead_lettered, reports_dead_letter},
        ports::{OutboxRepository, OutboxWriter},
    },
};

pub mod outbox {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "outbox")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub event_id: Uuid,
        pub event_type: String,
        pub aggregate_type: String,
        pub aggregate_id: String,
        pub payload: String,
        pub occurred_at: DateTimeUtc,
        pub target_consumer: Option<String>,
        pub relayed_at: Option<DateTimeUtc>,
        pub published_at: Option<DateTimeUtc>,
        pub traceparent: Option<String>,
        /// When every group subscribed to its type had handled or
        /// dead-lettered it (the delivery audit); retention counts from it.
        pub delivered_at: Option<DateTimeUtc>,
        /// The id the Redis stream gave it (`<ms>-<seq>`), kept by the relay.
        pub stream_id: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod inbox {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "inbox")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub consumer: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub event_id: Uuid,
        pub processed_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod dead_letter {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "dead_letters")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub consumer: String,
        pub event_id: Uuid,
        pub event_type: String,
        pub envelope: String,
        pub deliveries: i32,
        pub last_error: String,
        pub created_at: DateTimeUtc,
        pub replayed_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod event_subscription {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "event_subscriptions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub consumer: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub event_type: String,
        pub registered_at: DateTimeUtc,
        /// Events of this type the audit sent this group again.
        pub redelivered: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The outbox writer: call it with the transaction of the state change the
/// events describe, so both commit or neither does.
pub async fn append_events<C: ConnectionTrait>(
    txn: &C,
    events: Vec<NewEvent>,
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    if events.is_empty() {
        return Ok(());
    }
    let rows = events.into_iter().map(|event| outbox::ActiveModel {
        event_id: Set(Uuid::now_v7()),
        event_type: Set(event.event_type.to_owned()),
        aggregate_type: Set(event.aggregate_type.to_owned()),
        aggregate_id: Set(event.aggregate_id),
        payload: Set(event.payload.to_string()),
        occurred_at: Set(now),
        target_consumer: Set(None),
        relayed_at: Set(None),
        published_at: Set(None),
        traceparent: Set(event.traceparent),
        ..Default::default()
    });
    outbox::Entity::insert_many(rows)
        .exec_without_returning(txn)
        .await?;
    Ok(())
}

impl OutboxWriter for DbTx {
    async fn append(
        &mut self,
        events: Vec<NewEvent>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.note_events_written(&events);
        Ok(append_events(self.conn(), events, now).await?)
    }
}

pub fn bus_message(row: &outbox::Model) -> anyhow::Result<BusMessage> {
    Ok(BusMessage {
        outbox_id: Some(row.id),
        target: row.target_consumer.clone(),
        event: EventEnvelope {
            event_id: row.event_id,
            event_type: row.event_type.clone(),
            aggregate_type: row.aggregate_type.clone(),
            aggregate_id: row.aggregate_id.clone(),
            occurred_at: row.occurred_at,
            payload: serde_json::from_str(&row.payload)
                .with_context(|| format!("outbox row {} has a payload that is not JSON", row.id))?,
            traceparent: row.traceparent.clone(),
        },
    })
}

/// Records that `consumer` applied `event_id`, inside the handler's
/// transaction. Returns false when it already had (a duplicate delivery).
pub async fn record_in_inbox<C: ConnectionTrait>(
    txn: &C,
    consumer: &str,
    event_id: Uuid,
    now: DateTime<Utc>,
) -> Result<bool, DbErr> {
    let row = inbox::ActiveModel {
        consumer: Set(consumer.to_owned()),
        event_id: Set(event_id),
        processed_at: Set(now),
    };
    insert_new(row, [inbox::Column::Consumer, inbox::Column::EventId], txn).await
}

/// Stores a dead letter and, when the rule says so
/// ([`reports_dead_letter`](crate::outbox::domain::reports_dead_letter)),
/// its `EventDeadLettered` event, in one transaction.
pub async fn insert_dead_letter(
    db: &DatabaseConnection,
    consumer: &str,
    envelope: Option<&EventEnvelope>,
    raw: &str,
    deliveries: u32,
    error: &str,
    now: DateTime<Utc>,
) -> Result<i64, StoreError> {
    let mut tx = DbTx::new(db.begin().await?);
    let row =
        dead_letter::ActiveModel {
            consumer: Set(consumer.to_owned()),
            event_id: Set(envelope.map_or(Uuid::nil(), |e| e.event_id)),
            event_type: Set(
                envelope.map_or_else(|| "undecodable".to_owned(), |e| e.event_type.clone())
            ),
            envelope: Set(
                envelope.map_or_else(|| raw.to_owned(), |e| serde_json::json!(e).to_string())
            ),
            deliveries: Set(i32::try_from(deliveries).unwrap_or(i32::MAX)),
            last_error: Set(error.chars().take(4000).collect()),
            created_at: Set(now),
            replayed_at: Set(None),
            ..Default::default()
        }
        .insert(tx.conn())
        .await?;
    if reports_dead_letter(envelope.map(|e| e.event_type.as_str())) {
        let event = dead_lettered(
            row.id,
            consumer,
            row.event_id,
            &row.event_type,
            deliveries,
            error,
        );
        tx.append(vec![event], now).await?;
    }
    tx.commit().await?;
    Ok(row.id)
}

#[derive(Clone)]
pub struct DbOutbox {
    db: DatabaseConnection,
}

impl DbOutbox {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

crate::db::module_error_from_db_err!(OutboxError);

fn to_dead_letter(row: dead_letter::Model) -> DeadLetter {
    DeadLetter {
        id: row.id,
        consumer: row.consumer,
        event_id: row.event_id,
        event_type: row.event_type,
        deliveries: u32::try_from(row.deliveries).unwrap_or(0),
        last_error: row.last_error,
        envelope: row.envelope,
        created_at: row.created_at,
        replayed_at: row.replayed_at,
    }
}

impl OutboxRepository for DbOutbox {
    async fn backlog(&self) -> Result<OutboxBacklog, OutboxError> {
        let (pending, oldest): (i64, Option<DateTime<Utc>>) = outbox::Entity::find()
            .select_only()
            .column_as(outbox::Column::Id.count(), "pending")
            .column_as(outbox::Column::OccurredAt.min(), "oldest")
            .filter(outbox::Column::PublishedAt.is_null())
            .into_tuple()
            .one(&self.db)
            .await?
            .unwrap_or((0, None));
        Ok(OutboxBacklog {
            pending: pending.max(0) as u64,
            oldest_pending: oldest,
        })
    }

    async fn dead_letters(
        &self,
        include_replayed: bool,
        page: PageRequest,
    ) -> Result<Vec<DeadLetter>, OutboxError> {
        let mut query = dead_letter::Entity::find();
        if !include_replayed {
            query = query.filter(dead_letter::Column::ReplayedAt.is_null());
        }
        Ok(query
            .newest_first(dead_letter::Column::Id, page)
            .all(&self.db)
            .await?
            .into_iter()
            .map(to_dead_letter)
            .collect())
    }

    async fn redelivered(&self) -> Result<HashMap<String, u64>, OutboxError> {
        redelivered_per_group(&self.db).await
    }

    async fn open_dead_letter_count(&self) -> Result<u64, OutboxError> {
        Ok(dead_letter::Entity::find()
            .filter(dead_letter::Column::ReplayedAt.is_null())
            .count(&self.db)
            .await?)
    }

    async fn replay_dead_letter(
        &self,
        id: i64,
        admin: UserId,
        now: DateTime<Utc>,
    ) -> Result<i64, OutboxError> {
        let mut tx = DbTx::new(self.db.begin().await?);
        let txn = tx.conn();
        let claimed = dead_letter::Entity::update_many()
            .col_expr(dead_letter::Column::ReplayedAt, Expr::value(now))
            .filter(dead_letter::Column::Id.eq(id))
            .filter(dead_letter::Column::ReplayedAt.is_null())
            .exec(txn)
            .await?;
        let row = dead_letter::Entity::find_by_id(id)
            .one(txn)
            .await?
            .ok_or(OutboxError::DeadLetterNotFound(id))?;
        if claimed.rows_affected == 0 {
            return Err(OutboxError::AlreadyReplayed(id));
        }
        let envelope: EventEnvelope = serde_json::from_str(&row.envelope)
            .context("the dead letter's event cannot be decoded, so it cannot be replayed")?;
        let inserted = outbox::ActiveModel {
            event_id: Set(envelope.event_id),
            event_type: Set(envelope.event_type),
            aggregate_type: Set(envelope.aggregate_type),
            aggregate_id: Set(envelope.aggregate_id),
            payload: Set(envelope.payload.to_string()),
            occurred_at: Set(envelope.occurred_at),
            target_consumer: Set(Some(row.consumer.clone())),
            relayed_at: Set(None),
            published_at: Set(None),
            ..Default::default()
        }
        .insert(txn)
        .await?;
        tx.append(vec![to_dead_letter(row).replayed(admin)], now)
            .await?;
        tx.commit().await?;
        Ok(inserted.id)
    }
}

/// Processed inbox rows whose event can no longer come back: past their
/// retention and no longer in the outbox (an unpublished or unfinished row
/// may still be delivered again, so its inbox rows stay).
pub fn expiring_inbox(db: DatabaseConnection) -> crate::db::DbExpiring {
    crate::db::DbExpiring::new(
        db,
        "inbox",
        "inbox",
        "processed_at < {before} AND NOT EXISTS \
         (SELECT 1 FROM outbox WHERE outbox.event_id = inbox.event_id)",
    )
}

/// Dead letters an admin replayed, past their retention (open ones stay).
pub fn expiring_dead_letters(db: DatabaseConnection) -> crate::db::DbExpiring {
    crate::db::DbExpiring::new(
        db,
        "dead_letters",
        "dead_letters",
        "replayed_at IS NOT NULL AND replayed_at < {before}",
    )
}

/// Outbox rows the relay has not published (Redis down, relays stopped).
pub fn stalled_outbox(db: DatabaseConnection) -> crate::db::DbStalled {
    crate::db::DbStalled::new(
        db,
        "watchdog:outbox-unpublished",
        ("outbox", "published_at IS NULL", "occurred_at"),
        crate::kernel::alerts::Severity::Critical,
        "outbox row(s) unpublished",
    )
}

/// Events the audit sent each group again, all types together.
async fn redelivered_per_group(
    db: &DatabaseConnection,
) -> Result<HashMap<String, u64>, OutboxError> {
    // Summed here: PostgreSQL's SUM of a bigint is a numeric.
    let rows: Vec<(String, i64)> = event_subscription::Entity::find()
        .select_only()
        .column(event_subscription::Column::Consumer)
        .column(event_subscription::Column::Redelivered)
        .into_tuple()
        .all(db)
        .await?;
    let mut per_group: HashMap<String, u64> = HashMap::new();
    for (consumer, redelivered) in rows {
        *per_group.entry(consumer).or_default() += u64::try_from(redelivered).unwrap_or(0);
    }
    Ok(per_group)
}
