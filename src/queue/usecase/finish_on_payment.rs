//! The end of a buyer's turn: once they paid, their place in the waiting
//! room goes to the next in line.

use crate::{
    kernel::{
        Clock, ConcertId, UserId,
        events::{PaymentCompleted, types},
    },
    outbox::ports::{Delivered, Subscriber, Subscription},
    queue::{domain::QueueError, ports::QueueStore},
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

impl<T: Send + 'static, S: QueueStore, C: Clock> Subscriber<T> for FinishOnPayment<S, C> {
    const SUBSCRIPTION: Subscription = Subscription::of("queue", &[types::PAYMENT_COMPLETED]);
    type Payload = PaymentCompleted;
    type Error = QueueError;

    /// The consumer's transaction goes unused: the waiting room lives in its store.
    async fn on(&self, _: &mut T, paid: Delivered<'_, PaymentCompleted>) -> Result<(), QueueError> {
        self.store
            .finish(
                ConcertId(paid.payload.concert_id),
                UserId(paid.payload.user_id),
                paid.event.occurred_at,
                self.clock.now(),
            )
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::outbox::ports::EventHandler;
    use chrono::TimeDelta;
    use uuid::Uuid;

    use super::*;
    use crate::{
        kernel::{ManualClock, events::EventEnvelope},
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
