//! The delivery audit's tables: which groups subscribe to which event
//! types (registered by the handlers at start), and the pass over the
//! outbox, inbox and dead letters — on PostgreSQL under a transaction-level
//! advisory lock, so one instance audits at a time.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DatabaseBackend, DatabaseConnection,
    DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set, Statement,
    TransactionTrait,
    sea_query::{Expr, ExprTrait, OnConflict},
};
use uuid::Uuid;

use super::db::{dead_letter, event_subscription, inbox, outbox};
use crate::{
    kernel::SystemClock,
    outbox::{
        domain::{EntryId, OutboxError, Published},
        ports::{AuditPass, DeliveryLedger, EventBus},
        usecase::DeliveryAuditor,
    },
    worker::{Pass, periodically, sleep_or_cancel},
};

/// Rows one audit pass looks at.
const AUDIT_BATCH: u64 = 1_000;

/// Registers every consumer's subscriptions, then audits every half of
/// `after` (1 to 30 s), at once again while a whole batch was looked at,
/// until cancelled. Errors are logged and retried.
pub async fn run<B: EventBus>(
    db: DatabaseConnection,
    bus: B,
    subscriptions: Vec<(&'static str, Vec<&'static str>)>,
    after: std::time::Duration,
    cancel: tokio_util::sync::CancellationToken,
) {
    for (consumer, types) in &subscriptions {
        while let Err(err) = register_subscriptions(&db, consumer, types, Utc::now()).await {
            tracing::warn!(consumer, error = %err, "delivery audit: cannot register subscriptions yet");
            if sleep_or_cancel(&cancel, std::time::Duration::from_secs(1)).await {
                return;
            }
        }
    }
    let every = (after / 2).clamp(
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(30),
    );
    let auditor = DeliveryAuditor::new(
        DbDeliveryLedger::new(db),
        bus,
        SystemClock,
        chrono::TimeDelta::from_std(after).unwrap_or(chrono::TimeDelta::MAX),
        AUDIT_BATCH,
    );
    let auditor = &auditor;
    periodically("delivery audit", every, cancel, || async move {
        let report = auditor.pass().await?;
        Ok::<_, OutboxError>(Pass::full(report.checked, AUDIT_BATCH))
    })
    .await;
}

/// The advisory lock of an audit pass (`"boxaudit"` as a number).
const AUDIT_LOCK: i64 = 0x626f_7861_7564_6974;

/// Records that `consumer` must handle these event types (and no others
/// it was subscribed to before): its handler's `handles`, registered by
/// every process that runs the consumer. A consumer removed from the code
/// keeps its rows until they are deleted by hand.
pub async fn register_subscriptions(
    db: &DatabaseConnection,
    consumer: &str,
    types: &[&str],
    now: DateTime<Utc>,
) -> Result<(), OutboxError> {
    let txn = db.begin().await?;
    event_subscription::Entity::delete_many()
        .filter(event_subscription::Column::Consumer.eq(consumer))
        .filter(event_subscription::Column::EventType.is_not_in(types.iter().copied()))
        .exec(&txn)
        .await?;
    if !types.is_empty() {
        event_subscription::Entity::insert_many(types.iter().map(|t| {
            event_subscription::ActiveModel {
                consumer: Set(consumer.to_owned()),
                event_type: Set((*t).to_owned()),
                registered_at: Set(now),
                redelivered: Set(0),
            }
        }))
        .on_conflict(
            OnConflict::columns([
                event_subscription::Column::Consumer,
                event_subscription::Column::EventType,
            ])
            .do_nothing()
            .to_owned(),
        )
        .exec_without_returning(&txn)
        .await?;
    }
    txn.commit().await?;
    Ok(())
}

#[derive(Clone)]
pub struct DbDeliveryLedger {
    db: DatabaseConnection,
}

impl DbDeliveryLedger {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

pub struct DbAuditPass {
    txn: DatabaseTransaction,
}

impl DeliveryLedger for DbDeliveryLedger {
    type Pass = DbAuditPass;

    async fn begin(&self) -> Result<Option<DbAuditPass>, OutboxError> {
        let txn = self.db.begin().await?;
        if txn.get_database_backend() == DatabaseBackend::Postgres {
            let row = txn
                .query_one_raw(Statement::from_sql_and_values(
                    DatabaseBackend::Postgres,
                    "SELECT pg_try_advisory_xact_lock($1) AS locked",
                    [AUDIT_LOCK.into()],
                ))
                .await?;
            let locked = row
                .and_then(|r| r.try_get::<bool>("", "locked").ok())
                .unwrap_or(false);
            if !locked {
                txn.rollback().await?;
                return Ok(None);
            }
        }
        Ok(Some(DbAuditPass { txn }))
    }
}

impl AuditPass for DbAuditPass {
    async fn subscriptions(&mut self) -> Result<HashMap<String, Vec<String>>, OutboxError> {
        let rows = event_subscription::Entity::find()
            .order_by_asc(event_subscription::Column::Consumer)
            .all(&self.txn)
            .await?;
        let mut by_type: HashMap<String, Vec<String>> = HashMap::new();
        for row in rows {
            by_type
                .entry(row.event_type)
                .or_default()
                .push(row.consumer);
        }
        Ok(by_type)
    }

    async fn undelivered(
        &mut self,
        before: DateTime<Utc>,
        after: i64,
        max: u64,
    ) -> Result<Vec<Published>, OutboxError> {
        let rows = outbox::Entity::find()
            .filter(outbox::Column::Id.gt(after))
            .filter(outbox::Column::DeliveredAt.is_null())
            .filter(outbox::Column::PublishedAt.is_not_null())
            .filter(outbox::Column::PublishedAt.lt(before))
            .order_by_asc(outbox::Column::Id)
            .limit(max)
            .all(&self.txn)
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|row| {
                Some(Published {
                    published_at: row.published_at?,
                    outbox_id: row.id,
                    event_id: row.event_id,
                    event_type: row.event_type,
                    aggregate_type: row.aggregate_type,
                    aggregate_id: row.aggregate_id,
                    target: row.target_consumer,
                    stream_id: row.stream_id.as_deref().and_then(EntryId::parse),
                })
            })
            .collect())
    }

    async fn finished(&mut self, events: &[Uuid]) -> Result<HashSet<(String, Uuid)>, OutboxError> {
        let handled: Vec<(String, Uuid)> = inbox::Entity::find()
            .select_only()
            .column(inbox::Column::Consumer)
            .column(inbox::Column::EventId)
            .filter(inbox::Column::EventId.is_in(events.iter().copied()))
            .into_tuple()
            .all(&self.txn)
            .await?;
        // A dead letter an admin replayed no longer counts: its replay is
        // owed to the group like any event.
        let set_aside: Vec<(String, Uuid)> = dead_letter::Entity::find()
            .select_only()
            .column(dead_letter::Column::Consumer)
            .column(dead_letter::Column::EventId)
            .filter(dead_letter::Column::EventId.is_in(events.iter().copied()))
            .filter(dead_letter::Column::ReplayedAt.is_null())
            .into_tuple()
            .all(&self.txn)
            .await?;
        Ok(handled.into_iter().chain(set_aside).collect())
    }

    async fn resending(
        &mut self,
        events: &[Uuid],
        since: DateTime<Utc>,
    ) -> Result<HashSet<(String, Uuid)>, OutboxError> {
        let rows: Vec<(Option<String>, Uuid)> = outbox::Entity::find()
            .select_only()
            .column(outbox::Column::TargetConsumer)
            .column(outbox::Column::EventId)
            .filter(outbox::Column::EventId.is_in(events.iter().copied()))
            .filter(outbox::Column::TargetConsumer.is_not_null())
            .filter(outbox::Column::DeliveredAt.is_null())
            .filter(
                Condition::any()
                    .add(outbox::Column::PublishedAt.is_null())
                    .add(outbox::Column::PublishedAt.gte(since)),
            )
            .into_tuple()
            .all(&self.txn)
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(target, event)| Some((target?, event)))
            .collect())
    }

    async fn resend(&mut self, event: &Published, group: &str) -> Result<(), OutboxError> {
        // The group's own row for this event, if an earlier re-send (or a
        // replay) wrote one, is published afresh; otherwise one is written.
        let again = outbox::Entity::update_many()
            .col_expr(
                outbox::Column::PublishedAt,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .col_expr(
                outbox::Column::StreamId,
                Expr::value(Option::<String>::None),
            )
            .col_expr(
                outbox::Column::RelayedAt,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .filter(outbox::Column::EventId.eq(event.event_id))
            .filter(outbox::Column::TargetConsumer.eq(group))
            .filter(outbox::Column::DeliveredAt.is_null())
            .exec(&self.txn)
            .await?;
        if again.rows_affected == 0 {
            let original = outbox::Entity::find_by_id(event.outbox_id)
                .one(&self.txn)
                .await?
                .ok_or_else(|| {
                    anyhow::anyhow!("outbox row {} vanished during the audit", event.outbox_id)
                })?;
            outbox::Entity::insert(outbox::ActiveModel {
                event_id: Set(original.event_id),
                event_type: Set(original.event_type),
                aggregate_type: Set(original.aggregate_type),
                aggregate_id: Set(original.aggregate_id),
                payload: Set(original.payload),
                occurred_at: Set(original.occurred_at),
                target_consumer: Set(Some(group.to_owned())),
                relayed_at: Set(None),
                published_at: Set(None),
                traceparent: Set(original.traceparent),
                delivered_at: Set(None),
                stream_id: Set(None),
                ..Default::default()
            })
            .exec_without_returning(&self.txn)
            .await?;
        }
        event_subscription::Entity::update_many()
            .col_expr(
                event_subscription::Column::Redelivered,
                Expr::col(event_subscription::Column::Redelivered).add(1),
            )
            .filter(event_subscription::Column::Consumer.eq(group))
            .filter(event_subscription::Column::EventType.eq(&event.event_type))
            .exec(&self.txn)
            .await?;
        Ok(())
    }

    async fn mark_delivered(
        &mut self,
        rows: &[i64],
        now: DateTime<Utc>,
    ) -> Result<(), OutboxError> {
        if rows.is_empty() {
            return Ok(());
        }
        outbox::Entity::update_many()
            .col_expr(outbox::Column::DeliveredAt, Expr::value(now))
            .filter(outbox::Column::Id.is_in(rows.iter().copied()))
            .exec(&self.txn)
            .await?;
        Ok(())
    }

    async fn commit(self) -> Result<(), OutboxError> {
        self.txn.commit().await?;
        Ok(())
    }
}
