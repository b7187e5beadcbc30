//! `PaymentCompleted` ends the buyer's turn in the waiting room, so the
//! slot goes to the next person at the next tick.

use chrono::Utc;
use futures::{FutureExt, future::BoxFuture};
use sea_orm::DatabaseTransaction;

use crate::{
    kernel::{
        ConcertId, UserId,
        events::{EventEnvelope, PaymentCompleted, types},
    },
    outbox::infra::consumer::EventHandler,
    queue::ports::QueueStore,
};

pub struct FinishOnPayment<S> {
    store: S,
}

impl<S> FinishOnPayment<S> {
    pub fn new(store: S) -> Self {
        Self { store }
    }
}

impl<S: QueueStore> EventHandler for FinishOnPayment<S> {
    fn name(&self) -> &'static str {
        "queue"
    }

    fn handles(&self, event_type: &str) -> bool {
        event_type == types::PAYMENT_COMPLETED
    }

    fn handle<'a>(
        &'a self,
        _txn: &'a DatabaseTransaction,
        event: &'a EventEnvelope,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        async move {
            let payment: PaymentCompleted = serde_json::from_value(event.payload.clone())?;
            self.store
                .finish(
                    ConcertId(payment.concert_id),
                    UserId(payment.user_id),
                    Utc::now(),
                )
                .await?;
            Ok(())
        }
        .boxed()
    }
}
