//! What the three listeners share as consumers: each reads the event's
//! envelope itself (the export writes it whole; receipts and notifications
//! read the payload by event type), so none declares a payload to decode.

use std::future::Future;

use serde::de::IgnoredAny;

use crate::{
    kernel::events::EventEnvelope,
    listeners::domain::ListenerError,
    outbox::ports::{Delivered, Subscriber, Subscription},
};

/// A listener: its consumer group and the event types it takes, and what
/// it does with one, inside the consumer's transaction `T`.
pub trait Listener<T>: Send + Sync + 'static {
    const SUBSCRIPTION: Subscription;

    fn hear(
        &self,
        tx: &mut T,
        event: &EventEnvelope,
    ) -> impl Future<Output = Result<(), ListenerError>> + Send;
}

/// A [`Listener`] as the outbox delivers to it: a [`Subscriber`] that
/// decodes nothing.
pub struct Listening<L>(pub(super) L);

impl<T: Send, L: Listener<T>> Subscriber<T> for Listening<L> {
    const SUBSCRIPTION: Subscription = L::SUBSCRIPTION;
    type Payload = IgnoredAny;
    type Error = ListenerError;

    async fn on(&self, tx: &mut T, heard: Delivered<'_, IgnoredAny>) -> Result<(), ListenerError> {
        self.0.hear(tx, heard.event).await
    }
}
