use super::{
    domain::{DeadLetter, EventPipelineStatus, OutboxError},
    ports::{EventBus, OutboxRepository, RelayWake},
};
use crate::kernel::Clock;

pub const MAX_DEAD_LETTER_LIST: u64 = 500;

/// The operator's view of the event pipeline and the dead-letter replay.
#[derive(Clone)]
pub struct EventPipeline<R, B, W, C> {
    repo: R,
    bus: B,
    wake: W,
    clock: C,
}

impl<R: OutboxRepository, B: EventBus, W: RelayWake, C: Clock> EventPipeline<R, B, W, C> {
    pub fn new(repo: R, bus: B, wake: W, clock: C) -> Self {
        Self {
            repo,
            bus,
            wake,
            clock,
        }
    }

    pub async fn status(&self) -> Result<EventPipelineStatus, OutboxError> {
        let backlog = self.repo.backlog().await?;
        let dead_letters = self.repo.open_dead_letter_count().await?;
        let groups = self.bus.groups().await.map_err(OutboxError::Unavailable)?;
        Ok(EventPipelineStatus {
            backlog,
            groups,
            dead_letters,
        })
    }

    pub async fn dead_letters(
        &self,
        include_replayed: bool,
        limit: u64,
    ) -> Result<Vec<DeadLetter>, OutboxError> {
        self.repo
            .dead_letters(include_replayed, limit.clamp(1, MAX_DEAD_LETTER_LIST))
            .await
    }

    /// Sends a dead letter's event back to the consumer that gave up on it.
    pub async fn replay(&self, dead_letter: i64) -> Result<i64, OutboxError> {
        let outbox_id = self
            .repo
            .replay_dead_letter(dead_letter, self.clock.now())
            .await?;
        self.wake.wake();
        Ok(outbox_id)
    }
}
