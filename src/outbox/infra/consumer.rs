//! The consumer runner: reads one consumer group, applies each event once
//! (the handler's effect and its inbox row commit together), acknowledges
//! only after the commit, reclaims what crashed consumers left pending, and
//! dead-letters what keeps failing.

use std::{collections::HashMap, sync::Arc, time::Duration};

use chrono::Utc;
use futures::StreamExt;
use sea_orm::{DatabaseConnection, TransactionTrait};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{
    db::{insert_dead_letter, record_in_inbox},
    relay::RelayWaker,
};
use crate::{
    db::DbTx,
    kernel::{
        Transaction,
        alerts::{AlertSink, NewAlert, Severity},
        events::{BusMessage, EventEnvelope, RelayWake},
        trace,
    },
    outbox::{
        domain::{Delivery, gives_up, reports_dead_letter, retry_after},
        ports::{EventBus, EventHandler},
    },
    worker::sleep_or_cancel,
};

/// A consumer as the runner holds it: its handler works in a database
/// transaction.
pub type Handler = Arc<dyn EventHandler<DbTx>>;

#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    pub batch_size: usize,
    /// How long one fetch waits for new entries.
    pub block: Duration,
    /// Pending entries idle this long are taken over: their consumer crashed,
    /// or their handler failed (the first retry delay; later ones double).
    pub claim_idle: Duration,
    /// After this many deliveries a failing entry goes to `dead_letters`.
    pub max_deliveries: u32,
    /// Aggregates handled at once from one fetched batch (1: one event at
    /// a time).
    pub lanes: usize,
}

pub struct ConsumerRunner<B> {
    db: DatabaseConnection,
    bus: B,
    handler: Handler,
    consumer: String,
    settings: ConsumerSettings,
    /// Woken after a handler's commit that wrote events, so the next saga
    /// step's event is published at once instead of at the relay's poll.
    wake: Option<RelayWaker>,
    alerts: Arc<dyn AlertSink>,
}

enum Outcome {
    Applied,
    Duplicate,
    Skipped,
}

impl<B: EventBus> ConsumerRunner<B> {
    pub fn new(
        db: DatabaseConnection,
        bus: B,
        handler: Handler,
        consumer: String,
        settings: ConsumerSettings,
        alerts: Arc<dyn AlertSink>,
    ) -> Self {
        Self {
            db,
            bus,
            handler,
            consumer,
            settings,
            alerts,
            wake: None,
        }
    }

    /// Wakes `relay` after every handled event whose handler wrote events.
    pub fn waking(self, relay: RelayWaker) -> Self {
        Self {
            wake: Some(relay),
            ..self
        }
    }

    pub async fn run(self, cancel: CancellationToken) {
        let group = self.handler.name();
        while let Err(err) = self.bus.ensure_group(group).await {
            tracing::warn!(group, error = %err, "consumer: cannot create its group yet");
            if sleep_or_cancel(&cancel, Duration::from_secs(1)).await {
                return;
            }
        }
        let mut last_reclaim = tokio::time::Instant::now();
        let reclaim_every = (self.settings.claim_idle / 2).max(Duration::from_millis(10));
        loop {
            if cancel.is_cancelled() {
                return;
            }
            if last_reclaim.elapsed() >= reclaim_every {
                last_reclaim = tokio::time::Instant::now();
                match self
                    .bus
                    .reclaim(
                        group,
                        &self.consumer,
                        self.settings.claim_idle,
                        self.settings.batch_size,
                    )
                    .await
                {
                    Ok(deliveries) => self.process(deliveries).await,
                    Err(err) => {
                        tracing::warn!(
                            group,
                            error = format!("{err:#}"),
                            "consumer: reclaim failed"
                        );
                    }
                }
            }
            let block = self.settings.block.min(reclaim_every);
            let fetched = tokio::select! {
                () = cancel.cancelled() => return,
                fetched = self.bus.fetch(group, &self.consumer, self.settings.batch_size, block) => fetched,
            };
            match fetched {
                Ok(deliveries) => self.process(deliveries).await,
                Err(err) => {
                    tracing::warn!(
                        group,
                        error = format!("{err:#}"),
                        "consumer: fetch failed; retrying"
                    );
                    if sleep_or_cancel(&cancel, Duration::from_millis(500)).await {
                        return;
                    }
                }
            }
        }
    }

    /// Handles deliveries, acknowledging each as soon as it is finished; a
    /// failure leaves that entry pending and moves on. The batch is split
    /// into lanes by aggregate (the key the stream is partitioned by), and
    /// up to `lanes` of them run at once: one aggregate's events are
    /// handled in their stream order, different aggregates side by side
    /// (as another instance of this group would handle them anyway). Each
    /// event is handled in an `event` span continuing the trace of the
    /// request (or handler) that wrote it, so its log lines and the events
    /// its handler writes carry the same trace id.
    pub async fn process(&self, deliveries: Vec<Delivery>) {
        if self.settings.lanes <= 1 {
            for delivery in deliveries {
                self.process_one(delivery).await;
            }
            return;
        }
        futures::stream::iter(lanes_of(deliveries))
            .for_each_concurrent(self.settings.lanes, |lane| async move {
                for delivery in lane {
                    self.process_one(delivery).await;
                }
            })
            .await;
    }

    async fn process_one(&self, delivery: Delivery) {
        let group = self.handler.name();
        let finished = match &delivery.message {
            Err(reason) => self.dead_letter(&delivery, None, reason).await,
            Ok(message) => {
                let event = &message.event;
                let span = tracing::info_span!(
                    "event",
                    consumer = group,
                    event_id = %event.event_id,
                    event_type = %event.event_type,
                    trace_id = tracing::field::Empty,
                    span_id = tracing::field::Empty,
                );
                let ctx = trace::begin(&span, trace::parse(event.traceparent.as_deref()), None);
                ctx.scope(self.handle(&delivery, message).instrument(span))
                    .await
            }
        };
        if finished
            && let Err(err) = self
                .bus
                .ack(group, std::slice::from_ref(&delivery.id))
                .await
        {
            // Not acknowledged: it will be reclaimed and dropped by the inbox.
            tracing::warn!(group, error = format!("{err:#}"), "consumer: ack failed");
        }
    }

    /// Handles one decodable delivery; whether it may be acknowledged.
    async fn handle(&self, delivery: &Delivery, message: &BusMessage) -> bool {
        let group = self.handler.name();
        match self.apply(message.target.as_deref(), &message.event).await {
            Ok(outcome) => {
                let label = match outcome {
                    Outcome::Applied => "applied",
                    Outcome::Duplicate => "duplicate",
                    Outcome::Skipped => "skipped",
                };
                metrics::counter!("consumer_events_total", "consumer" => group, "outcome" => label)
                    .increment(1);
                if !matches!(outcome, Outcome::Skipped) {
                    tracing::debug!(target: "boxoffice::trace", outcome = label, "consumer: event handled");
                }
                true
            }
            Err(err) if gives_up(delivery.deliveries, self.settings.max_deliveries) => {
                let reason = format!("{err:#}");
                self.dead_letter(delivery, Some(&message.event), &reason)
                    .await
            }
            Err(err) => {
                metrics::counter!("consumer_events_total", "consumer" => group, "outcome" => "failed")
                    .increment(1);
                tracing::warn!(
                    group,
                    event = %message.event.event_id,
                    delivery = delivery.deliveries,
                    retry_in_ms = retry_after(self.settings.claim_idle, delivery.deliveries).as_millis() as u64,
                    error = format!("{err:#}"),
                    "consumer: handler failed; the event stays pending and will be retried"
                );
                false
            }
        }
    }

    async fn apply(&self, target: Option<&str>, event: &EventEnvelope) -> anyhow::Result<Outcome> {
        let name = self.handler.name();
        let meant_for_us = target.is_none_or(|t| t == name);
        if !meant_for_us || !self.handler.handles(&event.event_type) {
            return Ok(Outcome::Skipped);
        }
        let mut tx = DbTx::new(self.db.begin().await?);
        // The inbox row goes first: a concurrent duplicate blocks on it (or
        // conflicts) instead of applying the effect a second time.
        if !record_in_inbox(tx.conn(), name, event.event_id, Utc::now()).await? {
            return Ok(Outcome::Duplicate);
        }
        self.handler.handle(&mut tx, event).await?;
        fail::fail_point!(&format!("consumer::before_commit::{name}"), |_| Err(
            anyhow::anyhow!("failpoint consumer::before_commit::{name}")
        ));
        let wrote_events = tx.wrote_events();
        tx.commit().await?;
        if wrote_events && let Some(relay) = &self.wake {
            relay.wake();
        }
        // Committed but not acknowledged: redelivered, and the inbox says so.
        fail::fail_point!(&format!("consumer::after_commit::{name}"), |_| Err(
            anyhow::anyhow!("failpoint consumer::after_commit::{name}")
        ));
        Ok(Outcome::Applied)
    }

    /// Stores the entry in `dead_letters` and raises an alert. Returns
    /// whether it may be acknowledged (false if it could not be stored).
    async fn dead_letter(
        &self,
        delivery: &Delivery,
        event: Option<&EventEnvelope>,
        reason: &str,
    ) -> bool {
        let group = self.handler.name();
        let stored = insert_dead_letter(
            &self.db,
            group,
            event,
            &delivery.id,
            delivery.deliveries,
            reason,
            Utc::now(),
        )
        .await;
        let id = match stored {
            Ok(id) => id,
            Err(err) => {
                tracing::error!(group, error = %err, "consumer: cannot store a dead letter; keeping the entry pending");
                return false;
            }
        };
        metrics::counter!("dead_letters_total", "consumer" => group).increment(1);
        if !reports_dead_letter(event.map(|e| e.event_type.as_str())) {
            tracing::error!(
                group,
                dead_letter = id,
                reason,
                "consumer: set aside an event about the pipeline itself (no alert, so no chain)"
            );
            return true;
        }
        if let Some(relay) = &self.wake {
            relay.wake(); // its EventDeadLettered
        }
        let what = event.map_or_else(
            || format!("undecodable stream entry {}", delivery.id),
            |e| format!("{} {}", e.event_type, e.event_id),
        );
        self.alerts
            .raise(NewAlert {
                severity: Severity::Critical,
                source: format!("consumer:{group}"),
                message: format!(
                    "dead letter {id}: {what} failed {} time(s) and was set aside; last error: {reason}",
                    delivery.deliveries
                ),
            })
            .await;
        true
    }
}

/// `deliveries` split by aggregate, each lane in stream order; an entry
/// that could not be decoded is a lane of its own.
fn lanes_of(deliveries: Vec<Delivery>) -> Vec<Vec<Delivery>> {
    let mut lanes: Vec<Vec<Delivery>> = Vec::new();
    let mut by_aggregate: HashMap<(String, String), usize> = HashMap::new();
    for delivery in deliveries {
        let key = delivery
            .message
            .as_ref()
            .ok()
            .map(|m| (m.event.aggregate_type.clone(), m.event.aggregate_id.clone()));
        match key.and_then(|key| match by_aggregate.get(&key) {
            Some(&lane) => Some(lane),
            None => {
                by_aggregate.insert(key, lanes.len());
                None
            }
        }) {
            Some(lane) => lanes[lane].push(delivery),
            None => lanes.push(vec![delivery]),
        }
    }
    lanes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(id: &str, aggregate: Option<&str>) -> Delivery {
        Delivery {
            id: id.to_owned(),
            deliveries: 1,
            message: aggregate.map_or_else(
                || Err("undecodable".to_owned()),
                |aggregate| {
                    Ok(BusMessage {
                        outbox_id: None,
                        target: None,
                        event: EventEnvelope {
                            event_id: uuid::Uuid::new_v4(),
                            event_type: "T".into(),
                            aggregate_type: "payment".into(),
                            aggregate_id: aggregate.to_owned(),
                            occurred_at: Utc::now(),
                            payload: serde_json::Value::Null,
                            traceparent: None,
                        },
                    })
                },
            ),
        }
    }

    #[test]
    fn a_batch_splits_by_aggregate_and_keeps_each_aggregates_order() {
        let lanes = lanes_of(vec![
            delivery("1", Some("a")),
            delivery("2", Some("b")),
            delivery("3", None),
            delivery("4", Some("a")),
            delivery("5", None),
            delivery("6", Some("b")),
            delivery("7", Some("a")),
        ]);
        let ids: Vec<Vec<&str>> = lanes
            .iter()
            .map(|lane| lane.iter().map(|d| d.id.as_str()).collect())
            .collect();
        assert_eq!(
            ids,
            vec![vec!["1", "4", "7"], vec!["2", "6"], vec!["3"], vec!["5"]]
        );
    }
}
