//! Admin views of the event pipeline: backlog, consumer lag, dead letters.

use chrono::{DateTime, Utc};
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Path, Query},
    payload::Json,
};

use super::{
    domain::OutboxError,
    ports::{EventBus, OutboxRepository, RelayWake},
    usecase::{DEFAULT_DEAD_LETTER_PAGE, EventPipeline, MAX_DEAD_LETTER_PAGE},
};
use crate::{
    auth::api::AdminAuth,
    kernel::{Clock, PageRequest},
    web::{
        ApiTags,
        guarded::Unguarded,
        paging::PageSize,
        problem::{AdminOnly, AdminPage, ApiResult, Problem},
        reply::{NewestFirst, Success},
    },
};

const _: () = assert!(DEFAULT_DEAD_LETTER_PAGE == 100 && MAX_DEAD_LETTER_PAGE == 500);

#[derive(Debug, Object)]
#[oai(rename = "ConsumerLag", rename_all = "camelCase")]
pub struct ConsumerLagBody {
    /// The consumer group, e.g. `receipts`.
    pub name: String,
    /// Delivered to the group but not yet acknowledged.
    pub pending: u64,
    /// In the stream but not yet delivered to the group.
    pub lag: u64,
    /// Events the delivery audit sent the group again because it never
    /// handled them and could no longer receive them from the stream
    /// (lost by Redis).
    pub redelivered: u64,
    /// The same per partition of the event stream
    /// (`--event-stream-partitions`), by partition number.
    pub partitions: Vec<PartitionLagBody>,
}

#[derive(Debug, Object)]
#[oai(rename = "PartitionLag", rename_all = "camelCase")]
pub struct PartitionLagBody {
    pub partition: u16,
    /// The partition's stream (Redis key).
    pub stream: String,
    pub pending: u64,
    pub lag: u64,
}

#[derive(Debug, Object)]
#[oai(rename = "EventPipelineStatus", rename_all = "camelCase")]
pub struct EventsBody {
    /// Outbox rows not yet published.
    pub outbox_pending: u64,
    /// Age of the oldest unpublished row (0 when none).
    pub oldest_pending_seconds: f64,
    pub consumers: Vec<ConsumerLagBody>,
    /// Dead letters not yet replayed.
    pub dead_letters: u64,
}

#[derive(Debug, Object)]
#[oai(
    rename = "DeadLetter",
    rename_all = "camelCase",
    skip_serializing_if_is_none
)]
pub struct DeadLetterBody {
    pub id: i64,
    pub consumer: String,
    pub event_id: uuid::Uuid,
    pub event_type: String,
    pub deliveries: u32,
    pub last_error: String,
    /// The event as it was delivered, as JSON text (`eventId`, `type`,
    /// `aggregateType`, `aggregateId`, `occurredAt`, `payload`).
    pub envelope: String,
    pub created_at: DateTime<Utc>,
    pub replayed_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Object)]
#[oai(rename = "Replay", rename_all = "camelCase")]
pub struct ReplayBody {
    /// The outbox row that carries the event back to its consumer.
    pub outbox_id: i64,
}

#[derive(ApiResponse)]
enum ReplayResponse {
    /// The event is on its way back to the consumer that gave up on it.
    #[oai(status = 202)]
    Accepted(Json<ReplayBody>),
}

pub type EventsApi<R, B, W, C> = Unguarded<EventPipeline<R, B, W, C>>;

crate::refusals! {
    ReplayRefusals {
        400: [validation_failed],
        401: [unauthorized],
        403: [forbidden],
        404: [not_found],
        409: [already_replayed],
    }
}

#[OpenApi(tag = "ApiTags::Admin")]
impl<R: OutboxRepository, B: EventBus, W: RelayWake, C: Clock> EventsApi<R, B, W, C> {
    /// Outbox backlog, consumer-group lag (in all and per stream
    /// partition) and the dead-letter count.
    #[oai(
        path = "/v1/admin/events",
        method = "get",
        operation_id = "eventPipelineStatus"
    )]
    async fn status(&self, _auth: AdminAuth) -> ApiResult<Success<EventsBody>, AdminOnly> {
        let status = self.service.status().await?;
        let age = status.backlog.oldest_pending.map_or(0.0, |t| {
            (Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0
        });
        Ok(Success::json(EventsBody {
            outbox_pending: status.backlog.pending,
            oldest_pending_seconds: age,
            consumers: status
                .groups
                .into_iter()
                .map(|g| ConsumerLagBody {
                    name: g.name,
                    pending: g.pending,
                    lag: g.lag,
                    redelivered: g.redelivered,
                    partitions: g
                        .partitions
                        .into_iter()
                        .map(|p| PartitionLagBody {
                            partition: p.partition,
                            stream: p.stream,
                            pending: p.pending,
                            lag: p.lag,
                        })
                        .collect(),
                })
                .collect(),
            dead_letters: status.dead_letters,
        }))
    }

    /// List dead letters (events a consumer gave up on).
    #[oai(
        path = "/v1/admin/dead-letters",
        method = "get",
        operation_id = "listDeadLetters"
    )]
    async fn dead_letters(
        &self,
        _auth: AdminAuth,
        /// Also list dead letters already replayed.
        #[oai(name = "includeReplayed")]
        include_replayed: Query<Option<bool>>,
        /// `nextCursor` of the previous page.
        after: Query<Option<i64>>,
        /// Page size, 1–500 (default 100).
        limit: PageSize<MAX_DEAD_LETTER_PAGE, DEFAULT_DEAD_LETTER_PAGE>,
    ) -> ApiResult<NewestFirst<DeadLetterBody>, AdminPage> {
        let include_replayed = include_replayed.0.unwrap_or(false);
        let asked = PageRequest::asked(after.0, limit.get());
        let letters = self.service.dead_letters(include_replayed, asked).await?;
        Ok(NewestFirst::page(letters, |d| DeadLetterBody {
            id: d.id,
            consumer: d.consumer,
            event_id: d.event_id,
            event_type: d.event_type,
            deliveries: d.deliveries,
            last_error: d.last_error,
            envelope: d.envelope,
            created_at: d.created_at,
            replayed_at: d.replayed_at,
        }))
    }

    /// Send a dead letter's event back to its consumer.
    #[oai(
        path = "/v1/admin/dead-letters/:id/replay",
        method = "post",
        operation_id = "replayDeadLetter"
    )]
    async fn replay(
        &self,
        auth: AdminAuth,
        id: Path<i64>,
    ) -> ApiResult<ReplayResponse, ReplayRefusals> {
        let outbox_id = self.service.replay(id.0, auth.0.user_id).await?;
        Ok(ReplayResponse::Accepted(Json(ReplayBody { outbox_id })))
    }
}

impl From<OutboxError> for Problem {
    fn from(err: OutboxError) -> Self {
        match err {
            OutboxError::DeadLetterNotFound(_) => Problem::not_found(err.to_string()),
            OutboxError::AlreadyReplayed(_) => {
                Problem::conflict("already_replayed", err.to_string())
            }
            OutboxError::Fault(fault) => Problem::fault("event pipeline", &fault),
        }
    }
}
