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
        domain::{Delivery, LaneKey, Lanes, gives_up, reports_dead_letter, retry_after},
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

#[derive(Clone, Copy)]
enum Outcome {
    Applied,
    Duplicate,
    Skipped,
}

/// Events applied in one transaction at most (one per lane).
const ROUND: usize = 64;

/// How many shards `due` lanes are split into: one per lane up to the
/// setting's `lanes` (side by side, as many transactions), so a backlog
/// larger than that batches each shard's lanes into shared transactions.
fn shards(due: usize, lanes: usize) -> usize {
    due.clamp(1, lanes.max(1))
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Duplicate => "duplicate",
            Outcome::Skipped => "skipped",
        }
    }
}

fn counted(group: &'static str, outcome: Outcome) {
    metrics::counter!("consumer_events_total", "consumer" => group, "outcome" => outcome.label())
        .increment(1);
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

    /// Handles every lane that may go now, each in its stream order, and
    /// hands back what waits for a retry. The due lanes are split into
    /// shards (one a lane, at most `lanes`), handled side by side.
    async fn handle_due(&self, lanes: &mut Lanes<Instant>, until: Instant) {
        let due = lanes.take_due(Instant::now());
        if due.is_empty() {
            return;
        }
        let width = shards(due.len(), self.settings.lanes);
        let mut split: Vec<Vec<_>> = (0..width).map(|_| Vec::new()).collect();
        for (i, lane) in due.into_iter().enumerate() {
            split[i % width].push(lane);
        }
        let left: Vec<_> = futures::stream::iter(split)
            .map(|shard| self.drain(shard, until))
            .buffer_unordered(width)
            .collect()
            .await;
        for (key, rest, not_before) in left.into_iter().flatten() {
            lanes.put_back(key, rest, not_before);
        }
    }

    /// Handles a shard's lanes in rounds until each is done, its head
    /// failed (it goes back to wait for its retry, after the backoff of its
    /// deliveries, with the rest behind it) or `until` comes (the rest go
    /// on at once, after the hold's renewal). A round takes the head of up
    /// to [`ROUND`] lanes and applies them in one transaction, so a lane's
    /// events still go one after the other in stream order.
    async fn drain(
        &self,
        mut shard: Vec<(LaneKey, VecDeque<Delivery>)>,
        until: Instant,
    ) -> Vec<(LaneKey, VecDeque<Delivery>, Option<Instant>)> {
        let mut left = Vec::new();
        while !shard.is_empty() {
            if Instant::now() >= until {
                left.extend(shard.into_iter().map(|(key, items)| (key, items, None)));
                return left;
            }
            let take = shard.len().min(ROUND);
            let heads: Vec<&Delivery> = shard[..take]
                .iter()
                .filter_map(|(_, items)| items.front())
                .collect();
            let finished = self.round(&heads).await;
            let mut rest: Vec<_> = shard.split_off(take);
            for ((key, mut items), finished) in shard.into_iter().zip(finished) {
                if finished {
                    items.pop_front();
                    if !items.is_empty() {
                        rest.push((key, items));
                    }
                } else if let Some(head) = items.front_mut() {
                    let wait = retry_after(self.settings.claim_idle, head.deliveries);
                    head.deliveries = head.deliveries.saturating_add(1);
                    left.push((key, items, Some(Instant::now() + wait)));
                }
            }
            // The lanes this round did not reach go first in the next.
            shard = rest;
        }
        left
    }

    /// One round: each head is dead-lettered (undecodable), skipped (not
    /// this group's), or applied; the applied ones in one transaction,
    /// each in its own savepoint, so a failing one is undone alone and the
    /// others commit. Everything finished is acknowledged together, after
    /// the commit. Whether each head finished, in order.
    async fn round(&self, heads: &[&Delivery]) -> Vec<bool> {
        let group = self.handler.name();
        let mut finished = vec![false; heads.len()];
        let mut to_apply = Vec::with_capacity(heads.len());
        for (i, delivery) in heads.iter().enumerate() {
            match &delivery.message {
                Err(reason) => finished[i] = self.dead_letter(delivery, None, reason).await,
                Ok(message) if !self.wants(message) => {
                    counted(group, Outcome::Skipped);
                    finished[i] = true;
                }
                Ok(message) => to_apply.push((i, message)),
            }
        }
        for (i, applied, span) in self.apply_all(&to_apply).await {
            finished[i] = self.settle(heads[i], applied).instrument(span).await;
        }
        let done: Vec<String> = (heads.iter().zip(&finished))
            .filter(|(_, finished)| **finished)
            .map(|(delivery, _)| delivery.id.clone())
            .collect();
        if !done.is_empty()
            && let Err(err) = self.bus.ack(group, &done).await
        {
            // Not acknowledged: the next reader takes them over, and the
            // inbox drops them.
            tracing::warn!(group, error = format!("{err:#}"), "consumer: ack failed");
        }
        finished
    }

    /// What an applied event's outcome means for its delivery: finished
    /// (applied, a duplicate, or dead-lettered after its last try), or to
    /// be tried again.
    async fn settle(&self, delivery: &Delivery, applied: anyhow::Result<Outcome>) -> bool {
        let group = self.handler.name();
        match applied {
            Ok(outcome) => {
                counted(group, outcome);
                true
            }
            Err(err) if gives_up(delivery.deliveries, self.settings.max_deliveries) => {
                let event = delivery.message.as_ref().ok().map(|m| &m.event);
                self.dead_letter(delivery, event, &format!("{err:#}")).await
            }
            Err(err) => {
                metrics::counter!("consumer_events_total", "consumer" => group, "outcome" => "failed")
                    .increment(1);
                tracing::warn!(
                    group,
                    delivery = delivery.deliveries,
                    retry_in_ms = retry_after(self.settings.claim_idle, delivery.deliveries)
                        .as_millis() as u64,
                    error = format!("{err:#}"),
                    "consumer: handler failed; the event stays pending and will be retried"
                );
                false
            }
        }
    }

    /// Whether the event is for this group: addressed to it (or to every
    /// group) and of a type it handles.
    fn wants(&self, message: &BusMessage) -> bool {
        let meant_for_us = (message.target.as_deref()).is_none_or(|t| t == self.handler.name());
        meant_for_us && self.handler.handles(&message.event.event_type)
    }

    /// Applies the events in one transaction, each in a savepoint (its
    /// inbox row and effect kept or undone together), and commits what
    /// succeeded; each event's outcome, or the error to retry it on. If the
    /// commit fails, every one of them is to be tried again (the inbox
    /// drops whatever did commit). Each event is handled in an `event`
    /// span continuing the trace of the request (or handler) that wrote
    /// it, so its log lines and the events its handler writes carry the
    /// same trace id.
    async fn apply_all(
        &self,
        events: &[(usize, &BusMessage)],
    ) -> Vec<(usize, anyhow::Result<Outcome>, tracing::Span)> {
        if events.is_empty() {
            return Vec::new();
        }
        let name = self.handler.name();
        let mut outer = match begin_timed(&self.db).await {
            Ok(tx) => tx,
            Err(err) => {
                let err = format!("{err:#}");
                return (events.iter())
                    .map(|(i, _)| (*i, Err(anyhow::anyhow!("{err}")), tracing::Span::none()))
                    .collect();
            }
        };
        metrics::histogram!("consumer_events_per_transaction", "consumer" => name)
            .record(events.len() as f64);
        let mut outcomes = Vec::with_capacity(events.len());
        for (i, message) in events {
            let event = &message.event;
            let span = tracing::info_span!(
                "event",
                consumer = name,
                event_id = %event.event_id,
                event_type = %event.event_type,
                trace_id = tracing::field::Empty,
                span_id = tracing::field::Empty,
            );
            let ctx = trace::begin(&span, trace::parse(event.traceparent.as_deref()), None);
            let applied = async {
                let outcome = self.apply(&mut outer, event).await;
                if let Ok(outcome) = &outcome {
                    tracing::debug!(target: "boxoffice::trace", outcome = outcome.label(), "consumer: event handled");
                }
                outcome
            };
            let outcome = ctx.scope(applied.instrument(span.clone())).await;
            outcomes.push((*i, outcome, span));
        }
        let committed: anyhow::Result<()> = async {
            failpoint::step(&format!("consumer::before_commit::{name}")).await?;
            let wrote_events = outer.wrote_events();
            outer.commit().await?;
            if wrote_events && let Some(relay) = &self.wake {
                relay.wake();
            }
            // Committed but not acknowledged: redelivered, and the inbox
            // says so.
            failpoint::step(&format!("consumer::after_commit::{name}")).await?;
            Ok(())
        }
        .await;
        if let Err(err) = committed {
            let err = format!("{err:#}");
            for (_, outcome, _) in &mut outcomes {
                if outcome.is_ok() {
                    *outcome = Err(anyhow::anyhow!("{err}"));
                }
            }
        }
        outcomes
    }

    /// Applies one event in a savepoint of `outer`: its inbox row first (a
    /// concurrent duplicate blocks on it, or conflicts, instead of applying
    /// the effect a second time), then the handler's effect.
    async fn apply(&self, outer: &mut DbTx, event: &EventEnvelope) -> anyhow::Result<Outcome> {
        let name = self.handler.name();
        let mut tx = outer.savepoint().await?;
        let applied: anyhow::Result<Outcome> = async {
            if !record_in_inbox(tx.conn(), name, event.event_id, Utc::now()).await? {
                return Ok(Outcome::Duplicate);
            }
            self.handler.handle(&mut tx, event).await?;
            Ok(Outcome::Applied)
        }
        .await;
        match applied {
            Ok(Outcome::Applied) => {
                outer.release_savepoint(tx).await?;
                Ok(Outcome::Applied)
            }
            other => {
                tx.rollback().await?;
                other
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_go_side_by_side_up_to_the_setting_and_share_transactions_beyond() {
        assert_eq!(shards(1, 4), 1);
        assert_eq!(shards(3, 4), 3);
        assert_eq!(shards(4, 4), 4);
        assert_eq!(shards(10_000, 4), 4);
        assert_eq!(shards(10_000, 1), 1, "SQLite: one writer");
        assert_eq!(shards(10_000, 0), 1);
    }
}
