//! The data-platform export: every event, one NDJSON line, written to the
//! sink as it arrives.

use crate::{
    kernel::events::EventEnvelope,
    listeners::{
        domain::{DATA_PLATFORM_CONSUMER, ListenerError},
        ports::DataPlatformSink,
        usecase::{Listener, Listening},
    },
    outbox::ports::Subscription,
};

pub async fn export_event(
    sink: &impl DataPlatformSink,
    event: &EventEnvelope,
) -> Result<(), ListenerError> {
    sink.write(event)
        .await
        .map_err(|cause| ListenerError::Downstream {
            system: "data platform",
            cause,
        })
}

/// The data-platform exporter: every event, one NDJSON line.
pub struct DataPlatformExporter<S> {
    sink: S,
}

impl<S> DataPlatformExporter<S> {
    pub fn new(sink: S) -> Listening<Self> {
        Listening(Self { sink })
    }
}

impl<T: Send + 'static, S: DataPlatformSink> Listener<T> for DataPlatformExporter<S> {
    const SUBSCRIPTION: Subscription = Subscription::of_every_type(DATA_PLATFORM_CONSUMER);

    /// The line is the whole envelope.
    async fn hear(&self, _tx: &mut T, event: &EventEnvelope) -> Result<(), ListenerError> {
        export_event(&self.sink, event).await
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::listeners::usecase::fake::{FakeSink, event, paid};

    // --- export_event ---

    #[tokio::test]
    async fn every_event_goes_to_the_sink_unchanged() {
        let sink = FakeSink::default();
        let event = event("QueueEntered", json!({"concertId": 1}));
        export_event(&sink, &event).await.unwrap();
        assert_eq!(*sink.written.lock().unwrap(), vec![event]);
    }

    #[tokio::test]
    async fn a_sink_failure_fails_the_export_so_it_is_retried() {
        let sink = FakeSink::down();
        let err = export_event(&sink, &paid(10)).await.unwrap_err();
        assert!(err.to_string().contains("collector down"));
    }
}
