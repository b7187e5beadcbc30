pub mod catalog;
pub mod db;
pub mod memory;
pub mod redis;
pub mod scheduler;
pub mod tokens;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{
    kernel::{ConcertId, UserId},
    queue::{
        domain::{
            Entry, Lineup, Place, QueueError, QueueEvent, QueuePass, QueueSettings, QueueStats,
            TickOutcome,
        },
        ports::QueueStore,
    },
    redis_or_memory::{RedisOrMemory, dispatch},
};

/// The store the composition root picked: Redis in production, in-process
/// in the embedded shape.
pub type AnyQueueStore = RedisOrMemory<redis::RedisQueueStore, memory::MemoryQueueStore>;

impl<R: QueueStore, M: QueueStore> QueueStore for RedisOrMemory<R, M> {
    async fn enter(
        &self,
        concert: ConcertId,
        user: UserId,
        new_token: Uuid,
        lineup: Lineup,
        now: DateTime<Utc>,
    ) -> Result<Entry, QueueError> {
        dispatch!(self, s => s.enter(concert, user, new_token, lineup, now).await)
    }

    async fn status(
        &self,
        pass: &QueuePass,
        now: DateTime<Utc>,
    ) -> Result<(Place, u64), QueueError> {
        dispatch!(self, s => s.status(pass, now).await)
    }

    async fn is_active(&self, pass: &QueuePass, now: DateTime<Utc>) -> Result<bool, QueueError> {
        dispatch!(self, s => s.is_active(pass, now).await)
    }

    async fn leave(&self, pass: &QueuePass, now: DateTime<Utc>) -> Result<bool, QueueError> {
        dispatch!(self, s => s.leave(pass, now).await)
    }

    async fn finish(
        &self,
        concert: ConcertId,
        user: UserId,
        paid_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, QueueError> {
        dispatch!(self, s => s.finish(concert, user, paid_at, now).await)
    }

    async fn tick(
        &self,
        concert: ConcertId,
        settings: &QueueSettings,
        now: DateTime<Utc>,
    ) -> Result<TickOutcome, QueueError> {
        dispatch!(self, s => s.tick(concert, settings, now).await)
    }

    async fn concerts(&self) -> Result<Vec<ConcertId>, QueueError> {
        dispatch!(self, s => s.concerts().await)
    }

    async fn stats(
        &self,
        concert: ConcertId,
        now: DateTime<Utc>,
    ) -> Result<QueueStats, QueueError> {
        dispatch!(self, s => s.stats(concert, now).await)
    }

    async fn pending_events(
        &self,
        concert: ConcertId,
        max: usize,
    ) -> Result<Vec<QueueEvent>, QueueError> {
        dispatch!(self, s => s.pending_events(concert, max).await)
    }

    async fn forwarded(&self, concert: ConcertId, ids: &[String]) -> Result<(), QueueError> {
        dispatch!(self, s => s.forwarded(concert, ids).await)
    }
}
