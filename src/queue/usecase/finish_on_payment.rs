//! The end of a buyer's turn: once they paid, their place in the waiting
//! room goes to the next in line.

use futures::{FutureExt, future::BoxFuture};

use crate::{
    kernel::{
        Clock, ConcertId, UserId,
        events::{EventEnvelope, PaymentCompleted, types},
    },
    outbox::ports::EventHandler,
    queue::ports::QueueStore,
};

/// The waiting room's listener on `PaymentCompleted`: a buyer who paid
/// leaves the room, so their slot goes to the next in line at once.
pub struct FinishOnPayment<S, C> {
    store: S,
    clock: C,
}

impl<S, C> FinishOnPayment<S, C> {
    pub fn new(store: S, clock: C) -> Self {
        Self { store, clock }
    }
}

impl<T: Send + 'static, S: QueueStore, C: Clock> EventHandler<T> for FinishOnPayment<S, C> {
    fn name(&self) -> &'static str {
        "queue"
    }

    fn handles(&self, event_type: &str) -> bool {
        event_type == types::PAYMENT_COMPLETED
    }

    fn handle<'a>(
        &'a self,
        _tx: &'a mut T,
        event: &'a EventEnvelope,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        async move {
            let payment: PaymentCompleted = serde_json::from_value(event.payload.clone())?;
            self.store
                .finish(
                    ConcertId(payment.concert_id),
                    UserId(payment.user_id),
                    event.occurred_at,
                    self.clock.now(),
                )
                .await?;
            Ok(())
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;
    use uuid::Uuid;

    use super::*;
    use crate::{
        kernel::ManualClock,
        queue::usecase::fake::{ALICE, FakeStore, t0},
    };

    #[tokio::test]
    async fn a_payment_ends_the_turn_it_was_made_in_not_a_later_one() {
        let store = FakeStore::default();
        let clock = ManualClock::new(t0() + TimeDelta::seconds(30));
        let handler = FinishOnPayment::new(store.clone(), clock.clone());
        assert!(EventHandler::<()>::handles(
            &handler,
            types::PAYMENT_COMPLETED
        ));
        assert!(!EventHandler::<()>::handles(
            &handler,
            types::QUEUE_SETTINGS_CHANGED
        ));
        // Handled 30 s after the payment (a restart, a backlog): the store
        // is told when the buyer paid, so it can leave a newer visit alone.
        let event = EventEnvelope {
            event_id: Uuid::new_v4(),
            event_type: types::PAYMENT_COMPLETED.into(),
            aggregate_type: "payment".into(),
            aggregate_id: "5".into(),
            occurred_at: t0(),
            payload: serde_json::json!({
                "paymentId": 5, "reservationId": 9, "userId": ALICE.value(),
                "amount": 1000, "concertId": 7
            }),
            traceparent: None,
        };
        EventHandler::<()>::handle(&handler, &mut (), &event)
            .await
            .unwrap();
        assert_eq!(
            store.0.lock().unwrap().finishes,
            vec![(ConcertId(7), ALICE, t0(), t0() + TimeDelta::seconds(30))]
        );
    }
}
