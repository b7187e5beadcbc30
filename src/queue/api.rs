//! The waiting room's HTTP endpoints (users and admins), and the gate
//! (`AdmissionCheck`) the seat map, holds and payments pass through.

use chrono::{DateTime, Utc};
use futures::{FutureExt, future::BoxFuture};
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Path, Query},
    payload::Json,
    types::MaybeUndefined,
};

use super::{
    domain::{
        DEFAULT_ROOM_PAGE, MAX_ROOM_PAGE, Place, QueueError, QueueSettings, QueueStatus,
        QueueingMethod, SettingsChange,
    },
    ports::QueuePorts,
    usecase::QueueService,
};
use crate::{
    auth::api::{AdminAuth, UserAuth},
    kernel::{ConcertId, PageRequest, ScheduleId, UserId},
    web::{
        ApiTags,
        admission::{AdmissionCheck, QueueToken},
        guarded::{Guarded, Unguarded},
        paging::{PageBody, PageSize},
        problem::{AdminPage, ApiResult, Problem},
        reply::Success,
    },
};

/// The waiting room is the gate in front of the seat map, holds and
/// payments.
impl<P: QueuePorts> AdmissionCheck for QueueService<P> {
    fn check_schedule(
        &self,
        token: &str,
        user: UserId,
        schedule: ScheduleId,
    ) -> BoxFuture<'_, Result<(), Problem>> {
        let token = token.to_owned();
        async move {
            QueueService::check_schedule(self, &token, user, schedule)
                .await
                .map_err(Problem::from)
        }
        .boxed()
    }
}

#[derive(Debug, Object)]
#[oai(rename = "EnterQueue", rename_all = "camelCase")]
pub struct EnterBody {
    pub concert_id: i64,
}

#[derive(Debug, Clone, Copy, poem_openapi::Enum)]
#[oai(rename = "QueueState", rename_all = "lowercase")]
pub enum StateBody {
    /// In the pre-queue of a room not yet open (no position until `opensAt`).
    Prequeue,
    Waiting,
    Active,
    Expired,
}

#[derive(Debug, Object)]
#[oai(
    rename = "QueueTicket",
    rename_all = "camelCase",
    skip_serializing_if_is_none
)]
pub struct TicketBody {
    /// Send it as `X-Queue-Token` to poll, and to the seat map, reservations and payments.
    pub token: String,
    pub status: StateBody,
    /// 1 is the head of the queue; absent once admitted and in the pre-queue.
    pub position: Option<u64>,
    pub poll_after_seconds: u32,
    /// While `prequeue`: when the room opens.
    pub opens_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Object)]
#[oai(
    rename = "QueueStatus",
    rename_all = "camelCase",
    skip_serializing_if_is_none
)]
pub struct StatusBody {
    pub status: StateBody,
    pub position: Option<u64>,
    pub ahead: u64,
    /// From the admission rate measured over the last minute.
    pub estimated_wait_seconds: u64,
    /// Until when an admitted token may reserve and pay.
    pub active_until: Option<DateTime<Utc>>,
    /// Poll again after this long; a waiting token that stops polling loses its place.
    pub poll_after_seconds: u32,
    /// While `prequeue`: when the room opens and the pre-queue is placed
    /// in a random order ahead of later arrivals.
    pub opens_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, poem_openapi::Enum)]
#[oai(rename = "QueueingMethod", rename_all = "lowercase")]
pub enum MethodBody {
    Fifo,
    Random,
    Closed,
}

impl From<QueueingMethod> for MethodBody {
    fn from(m: QueueingMethod) -> Self {
        match m {
            QueueingMethod::Fifo => MethodBody::Fifo,
            QueueingMethod::Random => MethodBody::Random,
            QueueingMethod::Closed => MethodBody::Closed,
        }
    }
}

impl From<MethodBody> for QueueingMethod {
    fn from(m: MethodBody) -> Self {
        match m {
            MethodBody::Fifo => QueueingMethod::Fifo,
            MethodBody::Random => QueueingMethod::Random,
            MethodBody::Closed => QueueingMethod::Closed,
        }
    }
}

/// A room's settings as they stand.
#[derive(Debug, Clone, Object)]
#[oai(
    rename = "QueueSettings",
    rename_all = "camelCase",
    skip_serializing_if_is_none
)]
pub struct SettingsBody {
    pub admit_per_second: i64,
    pub max_active: i64,
    pub active_ttl_seconds: i64,
    pub heartbeat_grace_seconds: i64,
    /// Before this, arrivals enter the pre-queue and nobody is admitted;
    /// absent when the room has no opening time.
    pub opens_at: Option<DateTime<Utc>>,
    pub queueing_method: MethodBody,
    /// Nobody is admitted while paused; places are kept.
    pub paused: bool,
}

impl From<QueueSettings> for SettingsBody {
    fn from(s: QueueSettings) -> Self {
        Self {
            admit_per_second: s.admit_per_second.into(),
            max_active: s.max_active.into(),
            active_ttl_seconds: s.active_ttl_seconds.into(),
            heartbeat_grace_seconds: s.heartbeat_grace_seconds.into(),
            opens_at: s.opens_at,
            queueing_method: s.method.into(),
            paused: s.paused,
        }
    }
}

/// A change of a room's settings: the four rates are given whole; an
/// opening rule left out keeps its current value (`opensAt: null` removes
/// the opening time).
#[derive(Debug, Clone, Object)]
#[oai(rename = "QueueSettingsChange", rename_all = "camelCase")]
pub struct SettingsChangeBody {
    #[oai(validator(minimum(value = "1"), maximum(value = "100000")))]
    pub admit_per_second: i64,
    #[oai(validator(minimum(value = "1"), maximum(value = "1000000")))]
    pub max_active: i64,
    #[oai(validator(minimum(value = "10"), maximum(value = "86400")))]
    pub active_ttl_seconds: i64,
    #[oai(validator(minimum(value = "30"), maximum(value = "3600")))]
    pub heartbeat_grace_seconds: i64,
    /// RFC 3339; before it, arrivals enter the pre-queue. `null` removes
    /// the opening time; leaving the field out keeps it.
    #[oai(nullable)]
    pub opens_at: MaybeUndefined<DateTime<Utc>>,
    pub queueing_method: Option<MethodBody>,
    pub paused: Option<bool>,
}

#[derive(Debug, Object)]
#[oai(rename = "QueueRoom", rename_all = "camelCase")]
pub struct RoomBody {
    pub concert_id: i64,
    pub waiting: u64,
    pub active: u64,
    pub admitted_last_minute: u64,
    /// Admissions since the room opened; sample it to plot the rate.
    pub admitted_total: u64,
    pub oldest_wait_seconds: u64,
    /// The estimated wait of the last person in line.
    pub tail_wait_seconds: u64,
    pub settings: SettingsBody,
}

#[derive(ApiResponse)]
enum EnterResponse {
    /// In the room (the same place again if the user already had one).
    #[oai(status = 201)]
    Created(Json<TicketBody>),
}

#[derive(ApiResponse)]
enum LeaveResponse {
    /// Left; an active slot goes to the next person.
    #[oai(status = 204)]
    Left,
}

fn state(place: Place) -> StateBody {
    match place {
        Place::Waiting { .. } => StateBody::Waiting,
        Place::Active { .. } => StateBody::Active,
        Place::Gone => StateBody::Expired,
    }
}

fn position(place: Place) -> Option<u64> {
    match place {
        Place::Waiting { position } => Some(position),
        _ => None,
    }
}

/// The state a client sees: a waiting place of a room not yet open is in
/// the pre-queue, without a position.
fn shown_state(status: &QueueStatus) -> StateBody {
    if status.is_prequeue() {
        StateBody::Prequeue
    } else {
        state(status.place)
    }
}

fn shown_position(status: &QueueStatus) -> Option<u64> {
    if status.is_prequeue() {
        None
    } else {
        position(status.place)
    }
}

fn status_body(status: QueueStatus) -> StatusBody {
    StatusBody {
        status: shown_state(&status),
        position: shown_position(&status),
        opens_at: status.opens_at,
        ahead: status.ahead,
        estimated_wait_seconds: status.estimated_wait_seconds,
        active_until: match status.place {
            Place::Active { until } => Some(until),
            _ => None,
        },
        poll_after_seconds: status.poll_after_seconds,
    }
}

pub type QueueApi<P> = Guarded<QueueService<P>>;
pub type QueueAdminApi<P> = Unguarded<QueueService<P>>;

crate::refusals! {
    EnterRefusals {
        400: [validation_failed],
        401: [unauthorized],
        404: [not_found],
        409: [queue_closed],
        413: [payload_too_large],
        415: [unsupported_media_type],
        429: [rate_limited],
    }
    StatusRefusals {
        401: [unauthorized],
        429: [rate_limited],
    }
    QueueTokenRefusals {
        401: [unauthorized],
    }
    SettingsRefusals {
        400: [validation_failed],
        401: [unauthorized],
        403: [forbidden],
        404: [not_found],
        413: [payload_too_large],
        415: [unsupported_media_type],
    }
}

#[OpenApi(tag = "ApiTags::Queue")]
impl<P: QueuePorts> QueueApi<P> {
    /// Enter a concert's waiting room.
    ///
    /// Before the room's `opensAt` the answer is `prequeue` (everyone in it is placed in a random order at the opening,
    /// ahead of later arrivals); a closed room answers 409 `queue_closed`.
    #[oai(
        path = "/v1/queue/tokens",
        method = "post",
        operation_id = "enterQueue"
    )]
    async fn enter(
        &self,
        auth: UserAuth,
        req: &poem::Request,
        body: Json<EnterBody>,
    ) -> ApiResult<EnterResponse, EnterRefusals> {
        self.guard.limit(auth.0.user_id, req).await?;
        let admission = self
            .service
            .enter(auth.0.user_id, ConcertId(body.0.concert_id))
            .await?;
        Ok(EnterResponse::Created(Json(TicketBody {
            token: admission.token,
            status: shown_state(&admission.status),
            position: shown_position(&admission.status),
            poll_after_seconds: admission.status.poll_after_seconds,
            opens_at: admission.status.opens_at,
        })))
    }

    /// Where you stand; polling is also the heartbeat that keeps your place.
    #[oai(
        path = "/v1/queue/status",
        method = "get",
        operation_id = "queueStatus"
    )]
    async fn status(&self, token: QueueToken) -> ApiResult<Success<StatusBody>, StatusRefusals> {
        let status = self.service.status(&token.0.key).await?;
        Ok(Success::json(status_body(status)))
    }

    /// Leave the waiting room (or give up an admitted slot).
    #[oai(
        path = "/v1/queue/tokens/current",
        method = "delete",
        operation_id = "leaveQueue"
    )]
    async fn leave(&self, token: QueueToken) -> ApiResult<LeaveResponse, QueueTokenRefusals> {
        self.service.leave(&token.0.key).await?;
        Ok(LeaveResponse::Left)
    }
}

#[OpenApi(tag = "ApiTags::Admin")]
impl<P: QueuePorts> QueueAdminApi<P> {
    /// The waiting rooms in use, in concert order, a page at a time: sizes,
    /// admissions and settings.
    #[oai(path = "/v1/admin/queue", method = "get", operation_id = "listQueues")]
    async fn rooms(
        &self,
        _auth: AdminAuth,
        /// `nextCursor` of the previous page (a concert id).
        after: Query<Option<i64>>,
        /// Page size, 1–200 (default 50).
        limit: PageSize<MAX_ROOM_PAGE, DEFAULT_ROOM_PAGE>,
    ) -> ApiResult<Success<PageBody<RoomBody>>, AdminPage> {
        let asked = PageRequest::asked(after.0, limit.get());
        let rooms = self.service.stats(asked).await?;
        Ok(Success::page(rooms, |(stats, settings)| RoomBody {
            concert_id: stats.concert.value(),
            waiting: stats.waiting,
            active: stats.active,
            admitted_last_minute: stats.admitted_last_minute,
            admitted_total: stats.admitted_total,
            oldest_wait_seconds: stats.oldest_wait_seconds,
            tail_wait_seconds: stats.tail_wait_seconds(&settings),
            settings: settings.into(),
        }))
    }

    /// Change a concert's waiting-room settings; takes effect within a second.
    #[oai(
        path = "/v1/admin/queue/:concert_id/settings",
        method = "put",
        operation_id = "updateQueueSettings"
    )]
    async fn update_settings(
        &self,
        auth: AdminAuth,
        concert_id: Path<i64>,
        body: Json<SettingsChangeBody>,
    ) -> ApiResult<Success<SettingsBody>, SettingsRefusals> {
        let b = body.0;
        let change = SettingsChange {
            rates: QueueSettings::parse(
                b.admit_per_second,
                b.max_active,
                b.active_ttl_seconds,
                b.heartbeat_grace_seconds,
            )?,
            opens_at: match b.opens_at {
                MaybeUndefined::Undefined => None,
                MaybeUndefined::Null => Some(None),
                MaybeUndefined::Value(at) => Some(Some(at)),
            },
            method: b.queueing_method.map(Into::into),
            paused: b.paused,
        };
        let saved = self
            .service
            .update_settings(ConcertId(concert_id.0), change, auth.0.user_id)
            .await?;
        Ok(Success::json(saved.into()))
    }
}

impl From<QueueError> for Problem {
    fn from(err: QueueError) -> Self {
        match err {
            QueueError::Invalid(detail) => Problem::validation(detail),
            QueueError::ConcertNotFound(_) => Problem::not_found(err.to_string()),
            QueueError::BadToken => Problem::unauthorized(err.to_string()),
            QueueError::NotYourToken | QueueError::WrongConcert { .. } => {
                Problem::forbidden(err.to_string())
            }
            QueueError::Closed(_) => Problem::new(
                poem::http::StatusCode::CONFLICT,
                "queue_closed",
                err.to_string(),
            ),
            QueueError::NotAdmitted(_) => Problem::new(
                poem::http::StatusCode::FORBIDDEN,
                "queue_not_admitted",
                err.to_string(),
            ),
            QueueError::PollingTooFast(wait) => {
                Problem::rate_limited(format!("{err}; poll at your pollAfterSeconds"), wait)
            }
            QueueError::Fault(fault) => Problem::fault("waiting room", &fault),
        }
    }
}

const _: () = assert!(DEFAULT_ROOM_PAGE == 50 && MAX_ROOM_PAGE == 200);
