use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::kernel::events::BusMessage;

/// The Redis stream every event goes to.
pub const STREAM_KEY: &str = "bo:events";

/// How long an entry delivered `deliveries` times must have been idle
/// before it is delivered again (doubling, at most 1024 × `min_idle`).
pub fn retry_after(min_idle: std::time::Duration, deliveries: u32) -> std::time::Duration {
    min_idle * (1_u32 << deliveries.saturating_sub(1).min(10))
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
