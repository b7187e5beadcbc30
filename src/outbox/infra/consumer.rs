//! The consumer runner: reads one consumer group, applies each event once
//! (the handler's effect and its inbox row commit together), acknowledges
//! only after the commit, reclaims what crashed consumers left pending, and
//! dead-letters what keeps failing.

use std::{collections::VecDeque, sync::Arc, time::Duration};

use chrono::Utc;
use futures::StreamExt;
use sea_orm::DatabaseConnection;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{
    db::{insert_dead_letter, record_in_inbox},
    relay::RelayWaker,
};
use crate::{
    db::{DbTx, begin_timed},
    kernel::{
        Transaction,
        alerts::{AlertSink, NewAlert, Severity},
        events::{BusMessage, EventEnvelope, RelayWake},
        failpoint, trace,
    },
    outbox::{
        domain::{Delivery, Lanes, gives_up, reports_dead_letter, retry_after},
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
    /// Aggregates handled at once (1: one event at a time).
    pub lanes: usize,
    /// How long a reader's hold on its partition lasts unless renewed (a
    /// third of it): how soon another instance takes over from one that
    /// died.
    pub ownership: Duration,
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

    /// Reads the partition while it is this consumer's: takes it (and
    /// every entry its previous reader left pending, first) when nobody
    /// holds it, keeps it while it runs, lets go of it when stopped. The
    /// entries are handled by aggregate lanes ([`Lanes`]): an aggregate's
    /// in stream order, a failing one retried with backoff while its later
    /// ones wait, other aggregates side by side (up to `lanes` at once).
    pub async fn run(self, cancel: CancellationToken) {
        let group = self.handler.name();
        while let Err(err) = self.bus.ensure_group(group).await {
            tracing::warn!(group, error = %err, "consumer: cannot create its group yet");
            if sleep_or_cancel(&cancel, Duration::from_secs(1)).await {
                return;
            }
        }
        let hold = self.settings.ownership.max(Duration::from_millis(30));
        let renew_every = hold / 3;
        let mut owned_until: Option<Instant> = None;
        let mut renewed = Instant::now() - renew_every;
        let mut lanes: Lanes<Instant> = Lanes::default();
        let reclaim_every = (self.settings.claim_idle / 2).max(Duration::from_millis(10));
        let mut last_reclaim = Instant::now();
        let cap = self.settings.batch_size.max(1) * 8;
        loop {
            if cancel.is_cancelled() {
                break;
            }
            if renewed.elapsed() >= renew_every {
                renewed = Instant::now();
                match self.bus.own(group, &self.consumer, hold).await {
                    Ok(true) => {
                        if owned_until.is_none() {
                            // A new reader starts where the last one left.
                            match self.bus.take_over(group, &self.consumer).await {
                                Ok(left) => {
                                    if !left.is_empty() {
                                        tracing::info!(
                                            group,
                                            entries = left.len(),
                                            "consumer: took the partition over with entries pending"
                                        );
                                    }
                                    left.into_iter().for_each(|d| lanes.push(d));
                                }
                                Err(err) => {
                                    tracing::warn!(
                                        group,
                                        error = format!("{err:#}"),
                                        "consumer: cannot take over the partition's pending entries yet"
                                    );
                                    renewed = Instant::now() - renew_every;
                                    if sleep_or_cancel(&cancel, Duration::from_millis(500)).await {
                                        break;
                                    }
                                    continue;
                                }
                            }
                            metrics::counter!("consumer_partitions_taken_total", "consumer" => group).increment(1);
                        }
                        owned_until = Some(renewed + hold);
                    }
                    Ok(false) => {
                        if owned_until.take().is_some() {
                            tracing::warn!(
                                group,
                                "consumer: another consumer holds the partition now; standing by"
                            );
                            lanes.clear();
                        }
                    }
                    Err(err) => {
                        tracing::warn!(
                            group,
                            error = format!("{err:#}"),
                            "consumer: cannot renew its hold on the partition"
                        );
                        if owned_until.is_some_and(|until| until <= Instant::now()) {
                            owned_until = None;
                            lanes.clear();
                        }
                    }
                }
            }
            if owned_until.is_none() {
                // Standing by: another consumer reads this partition.
                if sleep_or_cancel(&cancel, renew_every).await {
                    break;
                }
                continue;
            }
            // Entries another consumer still held when this one took over
            // (it had not noticed yet), once idle: they join their lanes
            // in stream order.
            if last_reclaim.elapsed() >= reclaim_every {
                last_reclaim = Instant::now();
                match (self.bus)
                    .reclaim(
                        group,
                        &self.consumer,
                        self.settings.claim_idle,
                        self.settings.batch_size,
                    )
                    .await
                {
                    Ok(taken) => taken.into_iter().for_each(|d| lanes.push(d)),
                    Err(err) => tracing::warn!(
                        group,
                        error = format!("{err:#}"),
                        "consumer: reclaim failed"
                    ),
                }
            }
            // Fetch unless enough is held; wait no longer than the next
            // retry or the next renewal.
            let until_renewal = renew_every.saturating_sub(renewed.elapsed());
            let wait = match lanes.next_due() {
                Some(None) => Duration::from_millis(1),
                Some(Some(at)) => at.saturating_duration_since(Instant::now()),
                None => self.settings.block,
            }
            .min(self.settings.block)
            .min(until_renewal)
            .max(Duration::from_millis(1));
            if lanes.held() < cap {
                let fetched = tokio::select! {
                    () = cancel.cancelled() => break,
                    fetched = self.bus.fetch(group, &self.consumer, self.settings.batch_size, wait) => fetched,
                };
                match fetched {
                    Ok(deliveries) => deliveries.into_iter().for_each(|d| lanes.push(d)),
                    Err(err) => {
                        tracing::warn!(
                            group,
                            error = format!("{err:#}"),
                            "consumer: fetch failed; retrying"
                        );
                        if sleep_or_cancel(&cancel, Duration::from_millis(500)).await {
                            break;
                        }
                    }
                }
            } else if sleep_or_cancel(&cancel, wait).await {
                break;
            }
            // Stop handling in time to renew the hold: a reader busy past
            // it would share the partition with the next one.
            self.handle_due(&mut lanes, renewed + renew_every).await;
        }
        if owned_until.is_some()
            && let Err(err) = self.bus.disown(group, &self.consumer).await
        {
            tracing::warn!(
                group,
                error = format!("{err:#}"),
                "consumer: cannot let go of the partition; it lapses by itself"
            );
        }
    }

    /// Handles every lane that may go now, up to `lanes` at once, each in
    /// its stream order, and hands back what waits for a retry. Each event
    /// is handled in an `event` span continuing the trace of the request
    /// (or handler) that wrote it, so its log lines and the events its
    /// handler writes carry the same trace id.
    async fn handle_due(&self, lanes: &mut Lanes<Instant>, until: Instant) {
        let due = lanes.take_due(Instant::now());
        if due.is_empty() {
            return;
        }
        let width = if self.settings.lanes <= 1 {
            1
        } else {
            self.settings.lanes
        };
        let left: Vec<_> = futures::stream::iter(due)
            .map(|(key, items)| async move {
                let (rest, not_before) = self.drain(items, until).await;
                (key, rest, not_before)
            })
            .buffer_unordered(width)
            .collect()
            .await;
        for (key, rest, not_before) in left {
            lanes.put_back(key, rest, not_before);
        }
    }

    /// Handles a lane's deliveries in order until one fails (that one and
    /// the rest wait for its retry, after the backoff of its deliveries) or
    /// `until` comes (the rest go on at once, after the hold's renewal).
    async fn drain(
        &self,
        mut items: VecDeque<Delivery>,
        until: Instant,
    ) -> (VecDeque<Delivery>, Option<Instant>) {
        while let Some(head) = items.front_mut() {
            if Instant::now() >= until {
                return (items, None);
            }
            if self.process_one(head).await {
                items.pop_front();
                continue;
            }
            let wait = retry_after(self.settings.claim_idle, head.deliveries);
            head.deliveries = head.deliveries.saturating_add(1);
            return (items, Some(Instant::now() + wait));
        }
        (items, None)
    }

    /// Handles one delivery (a dead letter when undecodable or out of
    /// tries) and acknowledges it when finished; false when it failed and
    /// is to be tried again.
    async fn process_one(&self, delivery: &Delivery) -> bool {
        let group = self.handler.name();
        let finished = match &delivery.message {
            Err(reason) => self.dead_letter(delivery, None, reason).await,
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
                ctx.scope(self.handle(delivery, message).instrument(span))
                    .await
            }
        };
        if finished
            && let Err(err) = self
                .bus
                .ack(group, std::slice::from_ref(&delivery.id))
                .await
        {
            // Not acknowledged: the next reader takes it over, and the
            // inbox drops it.
            tracing::warn!(group, error = format!("{err:#}"), "consumer: ack failed");
        }
        finished
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
        let mut tx = begin_timed(&self.db).await?;
        // The inbox row goes first: a concurrent duplicate blocks on it (or
        // conflicts) instead of applying the effect a second time.
        if !record_in_inbox(tx.conn(), name, event.event_id, Utc::now()).await? {
            return Ok(Outcome::Duplicate);
        }
        self.handler.handle(&mut tx, event).await?;
        failpoint::step(&format!("consumer::before_commit::{name}")).await?;
        let wrote_events = tx.wrote_events();
        tx.commit().await?;
        if wrote_events && let Some(relay) = &self.wake {
            relay.wake();
        }
        // Committed but not acknowledged: redelivered, and the inbox says so.
        failpoint::step(&format!("consumer::after_commit::{name}")).await?;
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
