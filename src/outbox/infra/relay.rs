//! The relay: moves committed outbox rows to the event bus, in id order, in
//! batches. Woken right after a commit that wrote events, with a polling
//! fallback for rows written by other instances.

use std::{sync::Arc, time::Duration};

use chrono::{TimeDelta, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseBackend, DatabaseConnection, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Statement, TransactionTrait,
    sea_query::{Expr, LockBehavior, LockType},
};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::db::{bus_message, outbox};
use crate::kernel::alerts::{AlertSink, NewAlert, Severity};
use crate::kernel::failpoint;
use crate::outbox::{
    domain::OutboxBacklog,
    ports::{EventBus, OutboxRepository, RelayWake},
};
use crate::worker::sleep_or_cancel;

#[derive(Debug, Clone)]
pub struct RelaySettings {
    pub batch_size: u64,
    pub poll_interval: Duration,
    /// Rows delivered to every group longer ago than this are deleted.
    pub retention: Duration,
}

/// Wakes the relay of this process and, through [`wake_others`] when Redis
/// is configured, every other instance's. `notify_one` keeps one permit, so
/// a wake that arrives while the relay (or the publisher) is busy is not
/// lost, and a burst of commits costs one wake-up.
#[derive(Clone, Default)]
pub struct RelayWaker {
    here: Arc<Notify>,
    others: Arc<Notify>,
}

impl RelayWaker {
    /// Wakes this process's relay only (a wake-up from another instance).
    pub fn wake_here(&self) {
        self.here.notify_one();
    }
}

impl RelayWake for RelayWaker {
    fn wake(&self) {
        self.here.notify_one();
        self.others.notify_one();
    }
}

/// The Redis channel instances wake each other's relays on.
pub fn wake_channel(prefix: &str) -> String {
    format!("{prefix}:relay-wake")
}

/// Tells every instance's relay, through Redis `PUBLISH` on `channel`,
/// that this one committed events, so a commit on an instance without a
/// relay (`--workers false`) or on another instance than the relay's is
/// published at once rather than at the relay's next poll. One `PUBLISH`
/// per burst of commits; an error is logged and the poll stays the
/// fallback.
pub async fn wake_others(
    waker: RelayWaker,
    mut conn: crate::redis_client::Conn,
    channel: String,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = waker.others.notified() => {}
        }
        let sent: redis::RedisResult<i64> = redis::cmd("PUBLISH")
            .arg(&channel)
            .arg("1")
            .query_async(&mut conn)
            .await;
        if let Err(err) = sent {
            tracing::debug!(error = %err, "relay wake-up not published; the other instances poll");
        }
    }
}

/// Wakes this process's relay whenever another instance says it committed
/// events (see [`wake_others`]); reconnects by itself.
pub async fn woken_by_others(
    waker: RelayWaker,
    client: redis::Client,
    channel: String,
    cancel: CancellationToken,
) {
    use futures::StreamExt;
    loop {
        let listened = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            let mut messages = pubsub.on_message();
            while messages.next().await.is_some() {
                waker.wake_here();
            }
            redis::RedisResult::Ok(())
        };
        tokio::select! {
            () = cancel.cancelled() => return,
            ended = listened => if let Err(err) = ended {
                tracing::debug!(error = %err, "relay wake-up channel lost; listening again");
            },
        }
        if sleep_or_cancel(&cancel, Duration::from_secs(1)).await {
            return;
        }
    }
}

pub struct Relay<B> {
    db: DatabaseConnection,
    bus: B,
    waker: RelayWaker,
    settings: RelaySettings,
    /// Told when a stream reaches its hard cap with a group behind.
    alerts: Option<Arc<dyn AlertSink>>,
    /// The consumer groups registered before the first publish.
    groups: Vec<String>,
}

const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(60);
/// The advisory lock of a relay pass (`"boxrelay"` as a number).
const RELAY_LOCK: i64 = 0x626f_7872_656c_6179;
const GAUGES_EVERY: Duration = Duration::from_secs(1);

impl<B: EventBus> Relay<B> {
    pub fn new(db: DatabaseConnection, bus: B, waker: RelayWaker, settings: RelaySettings) -> Self {
        Self {
            db,
            bus,
            waker,
            settings,
            alerts: None,
            groups: Vec::new(),
        }
    }

    /// Raises an alert when a stream reaches its hard cap with a group
    /// that has not read what is being dropped.
    #[must_use]
    pub fn alerting(mut self, alerts: Arc<dyn AlertSink>) -> Self {
        self.alerts = Some(alerts);
        self
    }

    /// Registers these consumer groups on the bus before anything is
    /// published. An in-process bus drops an entry once every group it
    /// knows has acknowledged it, so a group whose consumer starts a moment
    /// after the relay (a restart with a backlog) would otherwise never see
    /// the entries the quicker groups finished first.
    #[must_use]
    pub fn registering<S: Into<String>>(mut self, groups: impl IntoIterator<Item = S>) -> Self {
        self.groups = groups.into_iter().map(Into::into).collect();
        self
    }

    /// Runs until cancelled. Errors (database or bus down) are logged and
    /// retried; the relay never gives up.
    pub async fn run(self, cancel: CancellationToken) {
        for group in &self.groups {
            while let Err(err) = self.bus.ensure_group(group).await {
                tracing::warn!(
                    group,
                    error = format!("{err:#}"),
                    "relay: cannot register a consumer group yet"
                );
                if sleep_or_cancel(&cancel, Duration::from_secs(1)).await {
                    return;
                }
            }
        }
        if !self.bus.is_durable() {
            // Rows handed to an in-process bus that died with the last
            // process are handed over again.
            while let Err(err) = self.forget_unfinished().await {
                tracing::warn!(error = %err, "relay: cannot reset unfinished rows yet");
                if sleep_or_cancel(&cancel, Duration::from_secs(1)).await {
                    return;
                }
            }
        }
        let mut last_housekeeping = tokio::time::Instant::now() - HOUSEKEEPING_EVERY;
        let mut last_gauges = tokio::time::Instant::now() - GAUGES_EVERY;
        loop {
            match self.relay_batch().await {
                Ok(n) if n as u64 >= self.settings.batch_size => continue,
                Ok(_) => {}
                Err(err) => {
                    metrics::counter!("outbox_relay_errors_total").increment(1);
                    tracing::warn!(error = %err, "relay: batch failed; retrying");
                    if sleep_or_cancel(&cancel, Duration::from_millis(500)).await {
                        return;
                    }
                    continue;
                }
            }
            if last_gauges.elapsed() >= GAUGES_EVERY {
                last_gauges = tokio::time::Instant::now();
                self.update_gauges().await;
            }
            if last_housekeeping.elapsed() >= HOUSEKEEPING_EVERY {
                last_housekeeping = tokio::time::Instant::now();
                if let Err(err) = self.delete_old_published().await {
                    tracing::warn!(error = %err, "relay: retention cleanup failed");
                }
                self.trim_streams().await;
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = self.waker.here.notified() => {}
                () = tokio::time::sleep(self.settings.poll_interval) => {}
            }
        }
    }

    /// Publishes up to one batch; returns how many rows it relayed.
    ///
    /// On PostgreSQL one relay at a time does (a transaction-level advisory
    /// lock), and its rows are locked `FOR UPDATE` for the duration, so
    /// several relays never publish a row twice nor out of order. If the bus accepts the batch but the commit fails, the rows
    /// are published again later: delivery is at least once, and consumers
    /// are idempotent.
    pub async fn relay_batch(&self) -> anyhow::Result<usize> {
        if self.db.get_database_backend() == DatabaseBackend::Postgres {
            let txn = self.db.begin().await?;
            // One relay publishes at a time: two relays taking consecutive
            // batches side by side could land the later batch's XADD first
            // and put an aggregate's events out of order in its stream. The
            // others skip this pass; the commits that wake them wake the
            // one holding the lock too, so nothing waits for a poll.
            let locked: bool = txn
                .query_one_raw(Statement::from_sql_and_values(
                    DatabaseBackend::Postgres,
                    "SELECT pg_try_advisory_xact_lock($1) AS locked",
                    [RELAY_LOCK.into()],
                ))
                .await?
                .map(|row| row.try_get("", "locked"))
                .transpose()?
                .unwrap_or(false);
            if !locked {
                metrics::counter!("outbox_relay_passes_skipped_total").increment(1);
                return Ok(0);
            }
            let n = self.relay_batch_on(&txn, true).await?;
            txn.commit().await?;
            Ok(n)
        } else {
            // SQLite has one writer and the embedded shape one relay.
            self.relay_batch_on(&self.db, false).await
        }
    }

    async fn relay_batch_on<C: ConnectionTrait>(
        &self,
        conn: &C,
        lock: bool,
    ) -> anyhow::Result<usize> {
        let durable = self.bus.is_durable();
        let mut query = outbox::Entity::find()
            .filter(outbox::Column::PublishedAt.is_null())
            .order_by_asc(outbox::Column::Id)
            .limit(self.settings.batch_size);
        if !durable {
            query = query.filter(outbox::Column::RelayedAt.is_null());
        }
        if lock {
            query = query.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
        }
        let rows = query.all(conn).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let messages = rows
            .iter()
            .map(bus_message)
            .collect::<anyhow::Result<Vec<_>>>()?;
        failpoint::step("relay::before_publish").await?;
        let stream_ids = self.bus.publish(&messages).await?;
        failpoint::step("relay::after_publish").await?;
        let now = Utc::now();
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let mut update = outbox::Entity::update_many()
            .col_expr(outbox::Column::RelayedAt, Expr::value(now))
            .filter(outbox::Column::Id.is_in(ids));
        if durable {
            update = update.col_expr(outbox::Column::PublishedAt, Expr::value(now));
        }
        // Each row keeps the id its stream gave it (one statement: a CASE
        // over the row ids), which the delivery audit compares with how far
        // each group read.
        let mut by_row = rows
            .iter()
            .zip(&stream_ids)
            .filter_map(|(row, id)| Some((row.id, id.clone()?)));
        if let Some((first_row, first_id)) = by_row.next() {
            let case = by_row.fold(
                Expr::case(outbox::Column::Id.eq(first_row), first_id),
                |case, (row, id)| case.case(outbox::Column::Id.eq(row), id),
            );
            update = update.col_expr(
                outbox::Column::StreamId,
                case.finally(Expr::col(outbox::Column::StreamId)).into(),
            );
        }
        update.exec(conn).await?;
        for row in &rows {
            let latency = (now - row.occurred_at).to_std().unwrap_or_default();
            metrics::histogram!("outbox_relay_latency_seconds").record(latency.as_secs_f64());
        }
        metrics::counter!("outbox_relayed_total").increment(rows.len() as u64);
        Ok(rows.len())
    }

    async fn forget_unfinished(&self) -> anyhow::Result<()> {
        outbox::Entity::update_many()
            .col_expr(
                outbox::Column::RelayedAt,
                Expr::value(Option::<chrono::DateTime<Utc>>::None),
            )
            .filter(outbox::Column::PublishedAt.is_null())
            .filter(outbox::Column::RelayedAt.is_not_null())
            .exec(&self.db)
            .await?;
        Ok(())
    }

    async fn delete_old_published(&self) -> anyhow::Result<()> {
        let cutoff = Utc::now() - TimeDelta::from_std(self.settings.retention)?;
        // Only rows every subscribed group finished (the delivery audit's
        // mark): one still owed to a group stays, however old.
        let deleted = outbox::Entity::delete_many()
            .filter(outbox::Column::DeliveredAt.lt(cutoff))
            .exec(&self.db)
            .await?;
        if deleted.rows_affected > 0 {
            tracing::debug!(
                rows = deleted.rows_affected,
                "relay: deleted published outbox rows past retention"
            );
        }
        Ok(())
    }

    /// Trims the streams below what every group may still need, and
    /// alerts when one reached its hard cap with a group behind.
    async fn trim_streams(&self) {
        match self.bus.trim().await {
            Ok(lagging) if !lagging.is_empty() => {
                metrics::counter!("stream_cap_reached_total").increment(1);
                if let Some(alerts) = &self.alerts {
                    alerts
                        .raise(NewAlert {
                            severity: Severity::Critical,
                            source: "event-stream".into(),
                            message: format!(
                                "the event stream reached its hard cap (--stream-max-len): entries not yet read by {} are being dropped; the delivery audit sends them again, but the group is far behind",
                                lagging.join(", ")
                            ),
                        })
                        .await;
                }
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(
                error = format!("{err:#}"),
                "relay: trimming the streams failed"
            ),
        }
    }

    async fn update_gauges(&self) {
        let repo = super::db::DbOutbox::new(self.db.clone());
        if let Ok(OutboxBacklog {
            pending,
            oldest_pending,
        }) = repo.backlog().await
        {
            metrics::gauge!("outbox_pending").set(pending as f64);
            let age = oldest_pending.map_or(0.0, |t| {
                (Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0
            });
            metrics::gauge!("outbox_oldest_pending_seconds").set(age);
        }
        if let Ok(open) = repo.open_dead_letter_count().await {
            metrics::gauge!("dead_letters_open").set(open as f64);
        }
        if let Ok(groups) = self.bus.groups().await {
            for group in groups {
                let partition = group.partition.to_string();
                metrics::gauge!("consumer_pending", "consumer" => group.name.clone(), "partition" => partition.clone())
                    .set(group.pending as f64);
                metrics::gauge!("consumer_lag", "consumer" => group.name, "partition" => partition)
                    .set(group.lag as f64);
            }
        }
    }
}

/// Marks the rows an in-process bus reports as finished (every consumer
/// group acknowledged them) as published, in batches, until cancelled.
pub async fn mark_finished(
    db: DatabaseConnection,
    mut finished: mpsc::UnboundedReceiver<i64>,
    cancel: CancellationToken,
) {
    let mut ids = Vec::new();
    loop {
        if ids.is_empty() {
            tokio::select! {
                () = cancel.cancelled() => return,
                next = finished.recv() => match next {
                    Some(id) => ids.push(id),
                    None => return,
                },
            }
        }
        while ids.len() < 1_000 {
            match finished.try_recv() {
                Ok(id) => ids.push(id),
                Err(_) => break,
            }
        }
        let marked = outbox::Entity::update_many()
            .col_expr(outbox::Column::PublishedAt, Expr::value(Utc::now()))
            .filter(outbox::Column::Id.is_in(ids.clone()))
            .exec(&db)
            .await;
        match marked {
            Ok(_) => ids.clear(),
            Err(err) => {
                tracing::warn!(error = %err, "could not mark finished outbox rows; retrying");
                if sleep_or_cancel(&cancel, Duration::from_millis(500)).await {
                    return;
                }
            }
        }
    }
}
