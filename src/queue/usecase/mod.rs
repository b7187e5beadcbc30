//! The waiting room's flows: a visit (enter, poll, leave), the admission
//! gate other modules ask, the admins' settings and room list, the
//! scheduler's tick, and the end of a buyer's turn once they paid.

mod admission;
#[cfg(test)]
mod fake;
mod finish_on_payment;
mod settings;
mod stats;
mod tick;
mod visit;

use std::sync::Arc;

use super::{
    domain::{PollPacing, QueueSettings},
    ports::{QueuePorts, QueueTokens},
};

pub use finish_on_payment::FinishOnPayment;
pub use visit::{Admission, QUEUE_TOKEN_TTL};

/// The waiting room's use cases, over its store, its settings, the
/// catalog's concerts and the token signer.
#[derive(Clone)]
pub struct QueueService<P: QueuePorts> {
    store: P::Store,
    settings: P::Settings,
    directory: P::Directory,
    clock: P::Clock,
    tokens: Arc<dyn QueueTokens>,
    defaults: QueueSettings,
    /// The pre-queue's and the lottery's numbers: uniform, independent.
    draw: fn() -> u64,
    /// The pace of status polls (off when `None`).
    pacing: Option<Arc<PollPacing>>,
}

impl<P: QueuePorts> QueueService<P> {
    pub fn new(
        store: P::Store,
        settings: P::Settings,
        directory: P::Directory,
        clock: P::Clock,
        tokens: Arc<dyn QueueTokens>,
        defaults: QueueSettings,
    ) -> Self {
        Self {
            store,
            settings,
            directory,
            clock,
            tokens,
            defaults,
            draw: rand::random::<u64>,
            pacing: None,
        }
    }

    /// Paces status polls: a token polling far faster than told is
    /// answered `PollingTooFast` without a store round trip.
    pub fn pacing_polls(mut self, pacing: Option<PollPacing>) -> Self {
        self.pacing = pacing.map(Arc::new);
        self
    }

    /// Draws the pre-queue's numbers with `draw` (tests make them known).
    pub fn drawing_with(mut self, draw: fn() -> u64) -> Self {
        self.draw = draw;
        self
    }

    pub fn store(&self) -> &P::Store {
        &self.store
    }
}
