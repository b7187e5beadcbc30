use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::kernel::{
    UserId, backoff,
    events::{BusMessage, DeadLetterReplayed, NewEvent, types},
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
}

/// A consumer group over every partition: the sums, and each partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerStatus {
    pub name: String,
    pub pending: u64,
    pub lag: u64,
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
    Unavailable(anyhow::Error),
    /// A concurrent transaction kept getting in the way, even after retries.
    #[error(transparent)]
    Conflict(anyhow::Error),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

crate::kernel::module_error_from_store_err!(OutboxError);

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

    #[test]
    fn group_rows_are_summed_per_consumer_with_their_partitions_in_order() {
        let row = |name: &str, partition: u16, pending: u64, lag: u64| GroupStatus {
            name: name.into(),
            partition,
            stream: format!("s{partition}"),
            pending,
            lag,
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
                    partitions: vec![row("data-platform", 0, 1, 0)],
                },
                ConsumerStatus {
                    name: "receipts".into(),
                    pending: 7,
                    lag: 10,
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
}
