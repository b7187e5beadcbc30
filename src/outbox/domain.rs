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

/// A consumer group as the bus sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupStatus {
    pub name: String,
    /// Delivered but not yet acknowledged.
    pub pending: u64,
    /// In the stream but not yet delivered to the group.
    pub lag: u64,
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
    pub groups: Vec<GroupStatus>,
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
    fn the_redelivery_window_sums_every_backoff_before_the_dead_letter() {
        let idle = Duration::from_secs(30);
        assert_eq!(redelivery_window(idle, 1), idle);
        assert_eq!(redelivery_window(idle, 5), idle * (1 + 2 + 4 + 8 + 16));
    }
}
