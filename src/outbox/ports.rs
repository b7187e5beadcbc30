use std::{future::Future, time::Duration};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

use std::collections::{HashMap, HashSet};

use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::domain::{DeadLetter, Delivery, GroupStatus, OutboxBacklog, OutboxError, Published};
pub use crate::kernel::events::RelayWake;
use crate::kernel::{
    PageRequest, StoreError, UserId,
    events::{BusMessage, EventEnvelope, NewEvent},
};

/// A stream of events with consumer groups, in the image of Redis Streams:
/// every group sees every entry once; within a group each entry goes to one
/// consumer and stays pending until acknowledged; pending entries idle past
/// a threshold can be claimed by another consumer.
pub trait EventBus: Clone + Send + Sync + 'static {
    /// True when a published entry survives a crash of this process (Redis).
    /// When false (in-process bus), an outbox row counts as published only
    /// once every group has acknowledged it, and unfinished rows are handed
    /// to the bus again after a restart.
    fn is_durable(&self) -> bool;

    /// How many partitions (streams) the bus spreads events over, by
    /// aggregate ([`partition_of`]); 1 unless configured. A consumer group
    /// runs one reader per partition.
    ///
    /// [`partition_of`]: super::domain::partition_of
    fn partitions(&self) -> u16 {
        1
    }

    /// The same bus reading partition `p`: `fetch`, `reclaim` and `ack`
    /// work on that partition's stream; `publish`, `ensure_group` and
    /// `groups` always span every partition.
    fn partition(&self, p: u16) -> Self {
        debug_assert!(p < self.partitions());
        self.clone()
    }

    /// Appends the messages, each to its aggregate's partition, in order;
    /// answers the id each got in its stream, in the messages' order
    /// (`None` on a bus without stream ids).
    fn publish(
        &self,
        messages: &[BusMessage],
    ) -> impl Future<Output = anyhow::Result<Vec<Option<String>>>> + Send;

    /// Creates the group on every partition where it does not exist,
    /// reading from the start of the stream.
    fn ensure_group(&self, group: &str) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Up to `count` entries never delivered to `group`, waiting up to `block` for one.
    fn fetch(
        &self,
        group: &str,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> impl Future<Output = anyhow::Result<Vec<Delivery>>> + Send;

    /// Takes over up to `count` entries pending in `group` for other
    /// consumers (theirs crashed, or lost its partition while holding
    /// them), counting the delivery; never the caller's own, which it still
    /// holds in order. An entry
    /// delivered n times is due once idle for [`retry_after`]`(min_idle, n)`:
    /// `min_idle`, then twice, four times… as long — the retry backoff.
    ///
    /// [`retry_after`]: super::domain::retry_after
    fn reclaim(
        &self,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> impl Future<Output = anyhow::Result<Vec<Delivery>>> + Send;

    fn ack(&self, group: &str, ids: &[String]) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Makes `consumer` the one reader of this partition in `group` for
    /// `ttl`: takes it when nobody holds it, extends it when `consumer`
    /// does; false while another consumer holds it. One reader per
    /// partition is what keeps an aggregate's events in order across
    /// instances (as Kafka assigns a partition to one consumer). A bus
    /// inside one process has one reader per partition anyway.
    fn own(
        &self,
        _group: &str,
        _consumer: &str,
        _ttl: Duration,
    ) -> impl Future<Output = anyhow::Result<bool>> + Send {
        async { Ok(true) }
    }

    /// Lets go of this partition in `group` if `consumer` holds it (a
    /// graceful stop: the next reader need not wait for the hold to lapse).
    fn disown(
        &self,
        _group: &str,
        _consumer: &str,
    ) -> impl Future<Output = anyhow::Result<()>> + Send {
        async { Ok(()) }
    }

    /// Claims for `consumer` every entry pending in `group` on this
    /// partition, whoever held it, in stream order, counting the delivery:
    /// what a new reader of the partition handles first, before anything
    /// newer.
    fn take_over(
        &self,
        group: &str,
        consumer: &str,
    ) -> impl Future<Output = anyhow::Result<Vec<Delivery>>> + Send {
        self.reclaim(group, consumer, Duration::ZERO, 10_000)
    }

    /// Every group on every partition.
    fn groups(&self) -> impl Future<Output = anyhow::Result<Vec<GroupStatus>>> + Send;

    /// Trims every partition's stream below what every group may still
    /// need (its oldest pending entry, or what follows its last delivered
    /// one), and answers the groups that lag behind a stream at its hard
    /// cap: entries they never read are being dropped there. A bus that
    /// drops entries once every group acknowledged them has nothing to do.
    fn trim(&self) -> impl Future<Output = anyhow::Result<Vec<String>>> + Send {
        async { Ok(Vec::new()) }
    }
}

pub trait OutboxRepository: Clone + Send + Sync + 'static {
    fn backlog(&self) -> impl Future<Output = Result<OutboxBacklog, OutboxError>> + Send;

    /// Up to `page.fetch()` dead letters newest first, older than the dead
    /// letter `page.after`; open ones only unless `include_replayed`.
    fn dead_letters(
        &self,
        include_replayed: bool,
        page: PageRequest,
    ) -> impl Future<Output = Result<Vec<DeadLetter>, OutboxError>> + Send;

    /// Events the delivery audit sent each group again.
    fn redelivered(&self)
    -> impl Future<Output = Result<HashMap<String, u64>, OutboxError>> + Send;

    /// Dead letters not yet replayed.
    fn open_dead_letter_count(&self) -> impl Future<Output = Result<u64, OutboxError>> + Send;

    /// Marks the dead letter replayed and writes its event back to the outbox
    /// for its consumer only, with `DeadLetterReplayed`
    /// ([`DeadLetter::replayed`]) naming the admin, atomically. Returns the
    /// new outbox row id.
    fn replay_dead_letter(
        &self,
        id: i64,
        admin: UserId,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<i64, OutboxError>> + Send;
}

/// The outbox writer inside a unit of work: the events commit with the
/// change they describe, or not at all.
pub trait OutboxWriter: Send {
    fn append(
        &mut self,
        events: Vec<NewEvent>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// A consumer of events: a saga step or a listener. The outbox infra
/// delivers each event once per consumer: it opens the transaction `T`,
/// records the inbox row in it, calls `handle`, commits, and only then
/// acknowledges. The handler's decisions are use-case code over ports
/// implemented for `T`. Handlers are declared as [`Subscriber`]s.
pub trait EventHandler<T>: Send + Sync + 'static {
    /// The consumer group name, e.g. `receipts`.
    fn name(&self) -> &'static str;

    /// Events of other types are acknowledged without being handled.
    fn handles(&self, event_type: &str) -> bool;

    fn handle<'a>(
        &'a self,
        tx: &'a mut T,
        event: &'a EventEnvelope,
    ) -> BoxFuture<'a, anyhow::Result<()>>;
}

/// A consumer group and the event types it handles; events of other types
/// are acknowledged unhandled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscription {
    /// The consumer group, e.g. `receipts`.
    pub group: &'static str,
    /// `None`: every type.
    types: Option<&'static [&'static str]>,
}

impl Subscription {
    /// `group`, handling the events of these types.
    pub const fn of(group: &'static str, types: &'static [&'static str]) -> Self {
        Self {
            group,
            types: Some(types),
        }
    }

    /// `group`, handling every event.
    pub const fn of_every_type(group: &'static str) -> Self {
        Self { group, types: None }
    }

    pub fn handles(&self, event_type: &str) -> bool {
        self.types.is_none_or(|types| types.contains(&event_type))
    }
}

/// An event as its subscriber gets it: the envelope it came in, and its
/// payload decoded.
pub struct Delivered<'a, P> {
    pub event: &'a EventEnvelope,
    pub payload: P,
}

/// A consumer group declared by what it is: its subscription, what the
/// payload of its events decodes to and what it does with one. Every
/// subscriber is an [`EventHandler`] through the one adapter below, so no
/// handler writes its own name, filter or decoding.
pub trait Subscriber<T>: Send + Sync + 'static {
    const SUBSCRIPTION: Subscription;
    /// What the payload of its events decodes to.
    type Payload: DeserializeOwned + Send;
    /// Its use case's error.
    type Error: std::error::Error + Send + Sync + 'static;

    fn on(
        &self,
        tx: &mut T,
        event: Delivered<'_, Self::Payload>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

impl<T: Send, S: Subscriber<T>> EventHandler<T> for S {
    fn name(&self) -> &'static str {
        S::SUBSCRIPTION.group
    }

    fn handles(&self, event_type: &str) -> bool {
        S::SUBSCRIPTION.handles(event_type)
    }

    fn handle<'a>(
        &'a self,
        tx: &'a mut T,
        event: &'a EventEnvelope,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let payload = serde_json::from_value(event.payload.clone()).map_err(|err| {
                anyhow::anyhow!(
                    "{} cannot read its {} event: {err}",
                    S::SUBSCRIPTION.group,
                    event.event_type
                )
            })?;
            Ok(self.on(tx, Delivered { event, payload }).await?)
        })
    }
}

/// The delivery audit's view of the database: one pass at a time across
/// instances.
pub trait DeliveryLedger: Clone + Send + Sync + 'static {
    type Pass: AuditPass;

    /// Starts a pass, unless another instance is auditing right now
    /// (`None`).
    fn begin(&self) -> impl Future<Output = Result<Option<Self::Pass>, OutboxError>> + Send;
}

/// One audit pass: everything it reads and writes commits together.
pub trait AuditPass: Send {
    /// The consumer groups subscribed to each event type.
    fn subscriptions(
        &mut self,
    ) -> impl Future<Output = Result<HashMap<String, Vec<String>>, OutboxError>> + Send;

    /// Up to `max` rows published before `before` and not yet delivered to
    /// every group they are owed to, after the row `after`, oldest first.
    fn undelivered(
        &mut self,
        before: DateTime<Utc>,
        after: i64,
        max: u64,
    ) -> impl Future<Output = Result<Vec<Published>, OutboxError>> + Send;

    /// Which of these events each group has handled (inbox) or set aside
    /// (an open dead letter).
    fn finished(
        &mut self,
        events: &[Uuid],
    ) -> impl Future<Output = Result<HashSet<(String, Uuid)>, OutboxError>> + Send;

    /// Which of these events a re-send to one group is on its way for: a
    /// row for that group alone, not yet published or published since
    /// `since`.
    fn resending(
        &mut self,
        events: &[Uuid],
        since: DateTime<Utc>,
    ) -> impl Future<Output = Result<HashSet<(String, Uuid)>, OutboxError>> + Send;

    /// Sends the event to `group` again: its row for that group is
    /// published afresh, or one is written; counted for the group.
    fn resend(
        &mut self,
        event: &Published,
        group: &str,
    ) -> impl Future<Output = Result<(), OutboxError>> + Send;

    /// These rows reached every group owed them.
    fn mark_delivered(
        &mut self,
        rows: &[i64],
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), OutboxError>> + Send;

    fn commit(self) -> impl Future<Output = Result<(), OutboxError>> + Send;
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Deserialize)]
    struct Paid {
        amount: i64,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("refused {0}")]
    struct Refused(i64);

    /// Adds up the amounts it is given; refuses a negative one.
    struct Till;

    impl Subscriber<i64> for Till {
        const SUBSCRIPTION: Subscription = Subscription::of("till", &["Paid"]);
        type Payload = Paid;
        type Error = Refused;

        async fn on(&self, total: &mut i64, paid: Delivered<'_, Paid>) -> Result<(), Refused> {
            let amount = paid.payload.amount;
            if amount < 0 {
                return Err(Refused(amount));
            }
            *total += amount;
            Ok(())
        }
    }

    fn event(event_type: &str, payload: serde_json::Value) -> EventEnvelope {
        EventEnvelope {
            event_id: Uuid::new_v4(),
            event_type: event_type.into(),
            aggregate_type: "payment".into(),
            aggregate_id: "1".into(),
            occurred_at: Utc::now(),
            payload,
            traceparent: None,
        }
    }

    #[test]
    fn a_subscription_takes_its_own_types_or_every_type() {
        let till = Subscription::of("till", &["Paid"]);
        assert!(till.handles("Paid") && !till.handles("Refunded"));
        assert!(Subscription::of_every_type("export").handles("Refunded"));
    }

    #[tokio::test]
    async fn a_subscriber_is_a_handler_named_filtered_and_decoded_by_its_declaration() {
        let handler: &dyn EventHandler<i64> = &Till;
        assert_eq!(handler.name(), "till");
        assert!(handler.handles("Paid") && !handler.handles("Refunded"));
        let mut total = 0;
        let paid = event("Paid", serde_json::json!({"amount": 5}));
        handler.handle(&mut total, &paid).await.unwrap();
        assert_eq!(total, 5);
        let malformed = event("Paid", serde_json::json!({"amount": "five"}));
        let err = handler.handle(&mut total, &malformed).await.unwrap_err();
        assert!(
            err.to_string().contains("till cannot read its Paid event"),
            "{err}"
        );
        let refused = event("Paid", serde_json::json!({"amount": -1}));
        let err = handler.handle(&mut total, &refused).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "refused -1",
            "the use case's error reads through"
        );
        assert_eq!(total, 5);
    }
}
