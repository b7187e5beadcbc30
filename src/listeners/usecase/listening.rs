//! What the three listeners share as consumers: each reads the event's
//! envelope itself (the export writes it whole; receipts and notifications
//! read the payload by event type), so none declares a payload to decode.

use std::future::Future;

use serde::de::IgnoredAny;

use crate::{
    kernel::events::EventEnvelope, listeners::domain::ListenerError, outbox::ports::Subscriber,
};

/// A listener: its consumer group, the event types it takes and what it
/// does with one, inside the consumer's transaction `T`.
pub trait Listener<T>: Send + Sync + 'static {
    /// The consumer group, e.g. `receipts`.
    const GROUP: &'static str;
    /// The event types it takes; `None`: every type.
    const TYPES: Option<&'static [&'static str]>;

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
    const GROUP: &'static str = L::GROUP;
    const TYPES: Option<&'static [&'static str]> = L::TYPES;
    type Payload = IgnoredAny;
    type Error = ListenerError;

    async fn on(
        &self,
        tx: &mut T,
        event: &EventEnvelope,
        _payload: IgnoredAny,
    ) -> Result<(), ListenerError> {
        self.0.hear(tx, event).await
    }
}
