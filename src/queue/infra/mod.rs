pub mod catalog;
pub mod db;
pub mod memory;
pub mod redis;
pub mod scheduler;
pub mod tokens;

use chrono::{DateTime, Utc};

use crate::{
    kernel::{ConcertId, UserId},
    queue::{
        domain::{
            Entry, Lineup, Place, QueueError, QueueEvent, QueuePass, QueueSettings, QueueStats,
            TickOutcome,
        },
        ports::QueueStore,
    },
    redis_or_memory::{RedisOrMemory, forward},
};

/// The store the composition root picked: Redis in production, in-process
/// in the embedded shape.
pub type AnyQueueStore = RedisOrMemory<redis::RedisQueueStore, memory::MemoryQueueStore>;

impl<R: QueueStore, M: QueueStore> QueueStore for RedisOrMemory<R, M> {
    forward! {
        async fn enter(&self, newcomer: &QueuePass, lineup: Lineup, now: DateTime<Utc>) -> Result<Entry, QueueError>;
        async fn status(&self, pass: &QueuePass, now: DateTime<Utc>) -> Result<(Place, u64), QueueError>;
        async fn is_active(&self, pass: &QueuePass, now: DateTime<Utc>) -> Result<bool, QueueError>;
        async fn leave(&self, pass: &QueuePass, now: DateTime<Utc>) -> Result<bool, QueueError>;
        async fn finish(&self, concert: ConcertId, user: UserId, paid_at: DateTime<Utc>, now: DateTime<Utc>) -> Result<bool, QueueError>;
        async fn tick(&self, concert: ConcertId, settings: &QueueSettings, now: DateTime<Utc>) -> Result<TickOutcome, QueueError>;
        async fn concerts(&self) -> Result<Vec<ConcertId>, QueueError>;
        async fn stats(&self, concert: ConcertId, now: DateTime<Utc>) -> Result<QueueStats, QueueError>;
        async fn pending_events(&self, concert: ConcertId, max: usize) -> Result<Vec<QueueEvent>, QueueError>;
        async fn forwarded(&self, concert: ConcertId, ids: &[String]) -> Result<(), QueueError>;
    }
}
