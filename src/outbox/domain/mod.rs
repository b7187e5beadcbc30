mod lanes;

pub use lanes::{LaneKey, Lanes};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::kernel::Fault;
use crate::kernel::{
    UserId, backoff,
    events::{BusMessage, DeadLetterReplayed, EventDeadLettered, NewEvent, types},
};

/// The Redis stream every event goes to.
pub const STREAM_KEY: &str = "bo:events";

/// How long an entry delivered `deliveries` times must have been idle
/// before it is delivered again: the system's one backoff rule (doubling,
/// at most 1024 × `min_idle`).
pub fn retry_after(min_idle: std::time::Duration, deliveries: u32) -> std::time::Duration {
    backoff::doubling(min_idle, deliveries)
}

/// The longest an event can keep coming back to one consumer from the
/// stream: redelivered with backoff after each failure until it is
/// dead-lettered. A processed inbox row must be kept at least this long
/// (and as long as the event's outbox row exists, which the sweeper also
/// checks), or a late redelivery would be applied a second time.
pub fn redelivery_window(
    claim_idle: std::time::Duration,
    max_deliveries: u32,
) -> std::time::Duration {
    (1..=max_deliveries)
        .map(|delivery| retry_after(claim_idle, delivery))
        .sum()
}

/// What the consumer runner does with a delivery whose handler failed:
/// retried later (left pending, reclaimed with backoff) until it has been
/// delivered `max_deliveries` times, then set aside as a dead letter.
pub fn gives_up(deliveries: u32, max_deliveries: u32) -> bool {
    deliveries >= max_deliveries
}

/// What a group's giving up on an entry writes besides the dead letter:
/// the `EventDeadLettered` event and an alert (`true`), or neither when
/// the entry is itself about the pipeline's trouble (an alert raised or
/// resolved, another dead letter), so a listener that fails everything
/// cannot feed itself an endless chain of dead letters. An undecodable
/// entry is always reported.
pub fn reports_dead_letter(event_type: Option<&str>) -> bool {
    event_type.is_none_or(|t| !types::ABOUT_THE_PIPELINE.contains(&t))
}

/// The event recorded with dead letter `id` of `event` in `consumer`.
pub fn dead_lettered(
    id: i64,
    consumer: &str,
    event_id: Uuid,
    event_type: &str,
    deliveries: u32,
    error: &str,
) -> NewEvent {
    NewEvent::new(
        types::EVENT_DEAD_LETTERED,
        "dead_letter",
        id,
        &EventDeadLettered {
            dead_letter_id: id,
            event_id,
            event_type: event_type.to_owned(),
            consumer: consumer.to_owned(),
            deliveries,
            error: error.chars().take(2000).collect(),
        },
    )
}

/// One delivery of a bus entry to a consumer. `message` is an error when the
/// entry could not be decoded (it is dead-lettered, never retried).
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// The bus's own entry id (a Redis stream id such as `1700000000000-0`).
    pub id: String,
    /// How many times this entry has been delivered to its group, this one included.
    pub deliveries: u32,
    pub message: Result<BusMessage, String>,
}

/// The partition an event goes to when the bus spreads events over
/// `partitions` streams: a hash of its aggregate, so one aggregate's events
/// share one stream and keep their order there. FNV-1a, so every process
/// and every release agrees.
pub fn partition_of(aggregate_type: &str, aggregate_id: &str, partitions: u16) -> u16 {
    if partitions <= 1 {
        return 0;
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in aggregate_type
        .bytes()
        .chain(std::iter::once(b':'))
        .chain(aggregate_id.bytes())
    {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % u64::from(partitions)) as u16
}

/// One consumer group on one partition of the bus, as the bus sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupStatus {
    pub name: String,
    pub partition: u16,
    /// The partition's stream (the Redis key), for the operator.
    pub stream: String,
    /// Delivered but not yet acknowledged.
    pub pending: u64,
    /// In the stream but not yet delivered to the group.
    pub lag: u64,
    /// How far it has read, when the bus can say (Redis).
    pub horizon: Option<ReadHorizon>,
}

/// A consumer group over every partition: the sums, and each partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerStatus {
    pub name: String,
    pub pending: u64,
    pub lag: u64,
    /// Events the delivery audit sent this group again, since it was
    /// first registered.
    pub redelivered: u64,
    /// By partition number.
    pub partitions: Vec<GroupStatus>,
}

/// Gathers the bus's per-partition rows into one status per consumer
/// group, groups by name and partitions by number.
pub fn by_consumer(mut groups: Vec<GroupStatus>) -> Vec<ConsumerStatus> {
    groups.sort_by(|a, b| (&a.name, a.partition).cmp(&(&b.name, b.partition)));
    let mut out: Vec<ConsumerStatus> = Vec::new();
    for group in groups {
        match out.last_mut() {
            Some(last) if last.name == group.name => {
                last.pending += group.pending;
                last.lag += group.lag;
                last.partitions.push(group);
            }
            _ => out.push(ConsumerStatus {
                name: group.name.clone(),
                pending: group.pending,
                lag: group.lag,
                redelivered: 0,
                partitions: vec![group],
            }),
        }
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxBacklog {
    pub pending: u64,
    pub oldest_pending: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub id: i64,
    pub consumer: String,
    pub event_id: Uuid,
    pub event_type: String,
    pub deliveries: u32,
    pub last_error: String,
    /// The event as it was delivered (JSON), for an operator to read.
    pub envelope: String,
    pub created_at: DateTime<Utc>,
    pub replayed_at: Option<DateTime<Utc>>,
}

impl DeadLetter {
    /// `DeadLetterReplayed`, naming the admin; written with the replay.
    pub fn replayed(&self, admin: UserId) -> NewEvent {
        NewEvent::new(
            types::DEAD_LETTER_REPLAYED,
            "dead_letter",
            self.id,
            &DeadLetterReplayed {
                dead_letter_id: self.id,
                event_id: self.event_id,
                event_type: self.event_type.clone(),
                consumer: self.consumer.clone(),
                admin_id: admin.value(),
            },
        )
    }
}

/// A stream entry's id, `<milliseconds>-<sequence>`: ordered within a
/// stream, and a new stream (after a `DEL` or a `FLUSHALL`) or a promoted
/// replica's goes on from the time it is written, past every id handed
/// out before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryId {
    pub ms: u64,
    pub seq: u64,
}

impl EntryId {
    pub fn parse(id: &str) -> Option<Self> {
        let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
        Some(Self {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

impl std::fmt::Display for EntryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// How far a consumer group has read one partition's stream, and what the
/// stream still holds: what tells an entry the group may still receive
/// from one it never will.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadHorizon {
    /// The stream's oldest and newest entries; `None` when it is empty.
    pub first_entry: Option<EntryId>,
    pub last_entry: Option<EntryId>,
    /// The last entry delivered to the group (`0-0` when none was).
    pub last_delivered: EntryId,
    /// The group's oldest entry delivered but not yet acknowledged.
    pub oldest_pending: Option<EntryId>,
    /// The first entry not yet delivered to the group, if any: its time
    /// says how long the group has been behind.
    pub next_undelivered: Option<EntryId>,
}

impl ReadHorizon {
    /// Whether the entry `id` may still reach the group from the stream:
    /// the stream still holds it (not deleted, trimmed, flushed, or lost
    /// with a failover), and the group has not read past it or may still
    /// be retrying it (something at or before it is pending).
    pub fn may_still_deliver(&self, id: EntryId) -> bool {
        let in_stream = self.first_entry.is_some_and(|first| first <= id)
            && self.last_entry.is_some_and(|last| id <= last);
        in_stream && (self.last_delivered < id || self.oldest_pending.is_some_and(|p| p <= id))
    }
}

/// What the bus says of one group on one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupReach {
    /// The group does not exist there (the stream was deleted or flushed):
    /// nothing in the stream will reach it.
    Gone,
    /// The bus cannot say (the in-process bus, or the bus is down): the
    /// audit waits.
    Unknown,
    Reading(ReadHorizon),
}

/// A published outbox row, as the delivery audit sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub outbox_id: i64,
    pub event_id: Uuid,
    pub event_type: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    /// Set on a row that sends the event to one group only (a replay, or
    /// the audit's own re-send).
    pub target: Option<String>,
    pub published_at: DateTime<Utc>,
    /// The id its stream gave it; `None` on a bus without ids (in-process)
    /// or for rows published before ids were kept.
    pub stream_id: Option<EntryId>,
}

/// What the delivery audit does with one published event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verdict {
    /// Every group owed it has handled or dead-lettered it: the row may go
    /// once its retention has passed.
    pub delivered: bool,
    /// The groups owed it that can no longer receive it from the stream.
    pub resend: Vec<String>,
}

/// The delivery audit's rule for one published event. The groups owed it
/// are those `subscribed` to its type (only its target, for a row sent to
/// one group) that have neither handled nor dead-lettered it (`done`).
/// Each is sent it again unless a re-send is already on its way
/// (`resending`) or the group may still receive it from the stream
/// (`reach`): a lagging or retrying group is left to its stream.
pub fn audit(
    event: &Published,
    subscribed: &[String],
    done: impl Fn(&str) -> bool,
    resending: impl Fn(&str) -> bool,
    reach: impl Fn(&str) -> GroupReach,
) -> Verdict {
    let owed: Vec<&String> = subscribed
        .iter()
        .filter(|group| event.target.as_deref().is_none_or(|t| t == group.as_str()))
        .filter(|group| !done(group))
        .collect();
    let resend = owed
        .iter()
        .filter(|group| !resending(group))
        .filter(|group| match reach(group) {
            GroupReach::Gone => true,
            GroupReach::Unknown => false,
            // Without its entry id nothing can be told: wait.
            GroupReach::Reading(horizon) => event
                .stream_id
                .is_some_and(|id| !horizon.may_still_deliver(id)),
        })
        .map(|group| (*group).clone())
        .collect();
    Verdict {
        delivered: owed.is_empty(),
        resend,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventPipelineStatus {
    pub backlog: OutboxBacklog,
    pub groups: Vec<ConsumerStatus>,
    pub dead_letters: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("dead letter {0} does not exist")]
    DeadLetterNotFound(i64),
    #[error("dead letter {0} was already replayed")]
    AlreadyReplayed(i64),
    #[error(transparent)]
    Fault(Fault),
}

crate::kernel::module_error!(OutboxError);

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn redeliveries_back_off_and_stop_at_the_limit() {
        let idle = Duration::from_millis(100);
        assert_eq!(retry_after(idle, 1), idle);
        assert_eq!(retry_after(idle, 3), idle * 4);
        assert_eq!(retry_after(idle, 50), idle * 1024);
        assert!(!gives_up(4, 5));
        assert!(gives_up(5, 5));
        assert!(gives_up(6, 5));
    }

    #[test]
    fn an_aggregate_always_goes_to_the_same_partition_and_partitions_are_all_used() {
        assert_eq!(partition_of("payment", "42", 1), 0);
        assert_eq!(partition_of("payment", "42", 0), 0);
        let first = partition_of("payment", "42", 8);
        for _ in 0..10 {
            assert_eq!(partition_of("payment", "42", 8), first);
        }
        // The type is part of the key: payment 42 and coupon 42 are different aggregates.
        let spread: std::collections::HashSet<u16> = (0..64)
            .map(|n| partition_of("payment", &n.to_string(), 8))
            .collect();
        assert_eq!(
            spread.len(),
            8,
            "64 aggregates should reach all 8 partitions"
        );
        let mut counts = [0u32; 4];
        for n in 0..4_000 {
            counts[partition_of("reservation", &n.to_string(), 4) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1_200).contains(&c)),
            "4,000 aggregates over 4 partitions should come out near 1,000 each: {counts:?}"
        );
        // Pinned: every process and every release must agree.
        assert_eq!(
            partition_of("payment", "42", 1024),
            partition_of("payment", "42", 1024)
        );
        assert_ne!(
            (0..32)
                .map(|n| partition_of("payment", &n.to_string(), 4))
                .collect::<Vec<_>>(),
            (0..32)
                .map(|n| partition_of("coupon", &n.to_string(), 4))
                .collect::<Vec<_>>(),
        );
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    fn published(target: Option<&str>) -> Published {
        Published {
            outbox_id: 1,
            event_id: Uuid::nil(),
            event_type: types::PAYMENT_COMPLETED.into(),
            aggregate_type: "payment".into(),
            aggregate_id: "7".into(),
            target: target.map(Into::into),
            published_at: at(100),
            stream_id: Some(id(100)),
        }
    }

    fn id(ms: u64) -> EntryId {
        EntryId { ms, seq: 0 }
    }

    fn groups(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn entry_ids_parse_and_order_as_redis_hands_them_out() {
        assert_eq!(
            EntryId::parse("1700000000000-3"),
            Some(EntryId {
                ms: 1_700_000_000_000,
                seq: 3
            })
        );
        assert_eq!(EntryId::parse("0-0"), Some(id(0)));
        assert_eq!(EntryId::parse("x-1"), None);
        assert!(EntryId::parse("5-10").unwrap() > EntryId::parse("5-9").unwrap());
        assert!(EntryId::parse("6-0").unwrap() > EntryId::parse("5-99").unwrap());
        assert_eq!(EntryId::parse("5-9").unwrap().to_string(), "5-9");
    }

    #[test]
    fn an_entry_is_out_of_reach_once_gone_from_the_stream_or_read_past_and_not_pending() {
        let reading = |stream: Option<(u64, u64)>, last: u64, pending: Option<u64>| ReadHorizon {
            first_entry: stream.map(|(first, _)| id(first)),
            last_entry: stream.map(|(_, last)| id(last)),
            last_delivered: id(last),
            oldest_pending: pending.map(id),
            next_undelivered: None,
        };
        // Not yet read: it may come.
        assert!(reading(Some((0, 200)), 50, None).may_still_deliver(id(100)));
        // Read past, but something at or before it is pending: it may be
        // that one, to be retried or dead-lettered.
        assert!(reading(Some((0, 200)), 200, Some(90)).may_still_deliver(id(100)));
        assert!(reading(Some((0, 200)), 200, Some(100)).may_still_deliver(id(100)));
        // Read past and nothing pending from before it: it will not come.
        assert!(!reading(Some((0, 200)), 200, None).may_still_deliver(id(100)));
        assert!(!reading(Some((0, 200)), 200, Some(150)).may_still_deliver(id(100)));
        // The stream starts after it (deleted and begun again, trimmed,
        // flushed), is empty, or ends before it (a promoted replica that
        // never had it, however soon after it the new entries came).
        assert!(!reading(Some((101, 300)), 0, None).may_still_deliver(id(100)));
        assert!(!reading(None, 0, None).may_still_deliver(id(100)));
        assert!(!reading(Some((0, 99)), 50, None).may_still_deliver(id(100)));
    }

    #[test]
    fn an_event_every_subscribed_group_finished_is_delivered() {
        let verdict = audit(
            &published(None),
            &groups(&["receipts", "reservations"]),
            |_| true,
            |_| false,
            |_| GroupReach::Gone,
        );
        assert_eq!(
            verdict,
            Verdict {
                delivered: true,
                resend: vec![]
            }
        );
        let nobody = audit(
            &published(None),
            &[],
            |_| false,
            |_| false,
            |_| GroupReach::Gone,
        );
        assert!(nobody.delivered, "a type nobody subscribes to");
    }

    #[test]
    fn a_group_owed_an_event_it_can_no_longer_receive_is_sent_it_again() {
        let gone_by = ReadHorizon {
            first_entry: Some(id(0)),
            last_entry: Some(id(600)),
            last_delivered: id(500),
            oldest_pending: None,
            next_undelivered: None,
        };
        let lagging = ReadHorizon {
            last_delivered: id(10),
            ..gone_by
        };
        let verdict = audit(
            &published(None),
            &groups(&[
                "data-platform",
                "receipts",
                "reservations",
                "notifications",
                "queue",
            ]),
            |g| g == "data-platform",
            |g| g == "notifications",
            |g| match g {
                "receipts" => GroupReach::Gone,
                "reservations" => GroupReach::Reading(gone_by),
                "queue" => GroupReach::Reading(lagging),
                _ => GroupReach::Unknown,
            },
        );
        assert_eq!(
            verdict,
            Verdict {
                delivered: false,
                resend: groups(&["receipts", "reservations"]),
            },
            "not the one that handled it, the one a re-send is on its way to, nor the lagging one"
        );
        let unknown = audit(
            &published(None),
            &groups(&["receipts"]),
            |_| false,
            |_| false,
            |_| GroupReach::Unknown,
        );
        assert_eq!(
            unknown.resend,
            Vec::<String>::new(),
            "when the bus cannot say, wait"
        );
        let no_id = Published {
            stream_id: None,
            ..published(None)
        };
        let without = audit(
            &no_id,
            &groups(&["reservations"]),
            |_| false,
            |_| false,
            |_| GroupReach::Reading(gone_by),
        );
        assert!(without.resend.is_empty(), "without its entry id, wait");
    }

    #[test]
    fn a_row_sent_to_one_group_is_owed_to_that_group_only() {
        let verdict = audit(
            &published(Some("receipts")),
            &groups(&["data-platform", "receipts"]),
            |_| false,
            |_| false,
            |_| GroupReach::Gone,
        );
        assert_eq!(verdict.resend, groups(&["receipts"]));
        let done = audit(
            &published(Some("receipts")),
            &groups(&["data-platform", "receipts"]),
            |g| g == "receipts",
            |_| false,
            |_| GroupReach::Gone,
        );
        assert!(done.delivered);
    }

    #[test]
    fn group_rows_are_summed_per_consumer_with_their_partitions_in_order() {
        let row = |name: &str, partition: u16, pending: u64, lag: u64| GroupStatus {
            name: name.into(),
            partition,
            stream: format!("s{partition}"),
            pending,
            lag,
            horizon: None,
        };
        let status = by_consumer(vec![
            row("receipts", 1, 2, 3),
            row("data-platform", 0, 1, 0),
            row("receipts", 0, 5, 7),
        ]);
        assert_eq!(
            status,
            vec![
                ConsumerStatus {
                    name: "data-platform".into(),
                    pending: 1,
                    lag: 0,
                    redelivered: 0,
                    partitions: vec![row("data-platform", 0, 1, 0)],
                },
                ConsumerStatus {
                    name: "receipts".into(),
                    pending: 7,
                    lag: 10,
                    redelivered: 0,
                    partitions: vec![row("receipts", 0, 5, 7), row("receipts", 1, 2, 3)],
                },
            ]
        );
    }

    #[test]
    fn the_redelivery_window_sums_every_backoff_before_the_dead_letter() {
        let idle = Duration::from_secs(30);
        assert_eq!(redelivery_window(idle, 1), idle);
        assert_eq!(redelivery_window(idle, 5), idle * (1 + 2 + 4 + 8 + 16));
    }

    #[test]
    fn a_dead_letter_about_the_pipeline_reports_nothing_so_no_chain_can_start() {
        assert!(reports_dead_letter(Some(types::PAYMENT_COMPLETED)));
        assert!(
            reports_dead_letter(None),
            "an undecodable entry is reported"
        );
        for t in [
            types::ALERT_RAISED,
            types::ALERT_RESOLVED,
            types::EVENT_DEAD_LETTERED,
        ] {
            assert!(!reports_dead_letter(Some(t)), "{t}");
        }
        let event = dead_lettered(
            7,
            "exporter",
            Uuid::nil(),
            types::PAYMENT_COMPLETED,
            5,
            &"x".repeat(5000),
        );
        assert_eq!(event.event_type, types::EVENT_DEAD_LETTERED);
        assert_eq!(event.aggregate_id, "7");
        assert_eq!(event.payload["error"].as_str().unwrap().len(), 2000);
        assert_eq!(event.payload["consumer"], "exporter");
    }
}
