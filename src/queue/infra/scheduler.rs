//! The admission scheduler: ticks every room at a fixed interval and
//! forwards the rooms' recorded events to the event bus. Any number of
//! instances may run it; the store accounts the admission rate.

use std::{convert::Infallible, time::Duration};

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    kernel::{
        Fault, PageRequest,
        events::{BusMessage, EventEnvelope},
    },
    outbox::ports::EventBus,
    queue::{
        domain::{MAX_ROOM_PAGE, QueueError, QueueEvent},
        ports::{QueuePorts, QueueStore},
        usecase::QueueService,
    },
    worker::{Pass, periodically},
};

/// Derives stable event ids, so an event forwarded twice is one event.
const EVENT_NAMESPACE: Uuid = Uuid::from_u128(0x6b6f_7565_7565_4000_8000_626f_786f_6666);
const FORWARD_BATCH: usize = 1_000;
const GAUGES_EVERY: Duration = Duration::from_secs(1);

pub struct QueueScheduler<P: QueuePorts, B> {
    service: QueueService<P>,
    bus: B,
    interval: Duration,
}

pub fn envelope(event: &QueueEvent) -> BusMessage {
    BusMessage {
        outbox_id: None,
        target: None,
        event: EventEnvelope {
            event_id: Uuid::new_v5(
                &EVENT_NAMESPACE,
                format!("{}:{}", event.concert, event.id).as_bytes(),
            ),
            event_type: event.kind.event_type().to_owned(),
            aggregate_type: "queue".to_owned(),
            aggregate_id: event.concert.to_string(),
            occurred_at: event.at,
            payload: serde_json::json!({
                "concertId": event.concert.value(),
                "tokenId": event.token_id,
                "userId": event.user.value(),
            }),
            traceparent: None,
        },
    }
}

impl<P: QueuePorts, B: EventBus> QueueScheduler<P, B> {
    pub fn new(service: QueueService<P>, bus: B, interval: Duration) -> Self {
        Self {
            service,
            bus,
            interval,
        }
    }

    /// Ticks every `interval`, and sets the rooms' gauges every second,
    /// until `cancel`.
    pub async fn run(self, cancel: CancellationToken) {
        let scheduler = &self;
        let ticks = periodically(
            "queue scheduler",
            self.interval,
            cancel.clone(),
            || async move {
                scheduler.tick().await;
                Ok::<_, Infallible>(Pass::Idle)
            },
        );
        let gauges = periodically("queue gauges", GAUGES_EVERY, cancel, || async move {
            scheduler.set_gauges().await;
            Ok::<_, Infallible>(Pass::Idle)
        });
        tokio::join!(ticks, gauges);
    }

    /// Admits in every room, then forwards the rooms' events; failures are
    /// logged and the next tick tries again.
    async fn tick(&self) {
        match self.service.tick_all().await {
            Ok(outcomes) => {
                for (concert, outcome) in outcomes {
                    if outcome.failover {
                        metrics::counter!("queue_failovers_total").increment(1);
                        tracing::warn!(
                            %concert,
                            "waiting room: its Redis primary failed over; admission restarts from \
                             no credit, places and turns lost with the old primary's last writes \
                             are re-entered or re-admitted in queue order"
                        );
                    }
                    metrics::counter!("queue_admitted_total").increment(outcome.admitted);
                    metrics::counter!("queue_dropped_total").increment(outcome.dropped_waiting);
                    metrics::counter!("queue_expired_total").increment(outcome.expired_active);
                }
            }
            Err(err) => tracing::warn!(error = %err, "queue scheduler: tick failed"),
        }
        if let Err(err) = self.forward_events().await {
            tracing::warn!(error = %err, "queue scheduler: forwarding events failed");
        }
    }

    /// The waiting and active gauges of every room.
    async fn set_gauges(&self) {
        let mut after = None;
        while let Ok(page) = self
            .service
            .stats(PageRequest::asked(after, MAX_ROOM_PAGE))
            .await
        {
            for (room, _) in page.items {
                let concert = room.concert.to_string();
                metrics::gauge!("queue_waiting", "concert" => concert.clone())
                    .set(room.waiting as f64);
                metrics::gauge!("queue_active", "concert" => concert).set(room.active as f64);
            }
            if page.next_cursor.is_none() {
                break;
            }
            after = page.next_cursor;
        }
    }

    /// Moves every room's recorded events to the bus: publish first, then
    /// forget, so a crash in between forwards them again under the same ids.
    pub async fn forward_events(&self) -> Result<(), QueueError> {
        let store = self.service.store();
        for concert in store.concerts().await? {
            loop {
                let events = store.pending_events(concert, FORWARD_BATCH).await?;
                if events.is_empty() {
                    break;
                }
                let messages: Vec<BusMessage> = events.iter().map(envelope).collect();
                self.bus
                    .publish(&messages)
                    .await
                    .map_err(|cause| QueueError::Fault(Fault::Unavailable(cause)))?;
                let ids: Vec<String> = events.into_iter().map(|e| e.id).collect();
                store.forwarded(concert, &ids).await?;
                if ids.len() < FORWARD_BATCH {
                    break;
                }
            }
        }
        Ok(())
    }
}
