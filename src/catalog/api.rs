//! HTTP endpoints of the catalog: the public concert listing, the seat map,
//! and the admin's "create a concert" call.

use chrono::{DateTime, Utc};
use poem_openapi::{ApiResponse, Object, OpenApi, param::Path, payload::Json};

use super::{
    domain::{
        Availability, CatalogError, ConcertDraft, CreatedConcert, MAX_GRADE_CHARS, MAX_SCHEDULES,
        MAX_SEAT_BLOCKS, MAX_TEXT_CHARS, ScheduleDraft, SeatBlockDraft,
    },
    ports::CatalogRepository,
    usecase::CatalogService,
};
use crate::{
    auth::api::{AdminAuth, UserAuth},
    kernel::{Clock, ConcertId, ScheduleId, events::RelayWake},
    web::{
        ApiTags,
        admission::{Admission, QueueToken},
        problem::Problem,
        strict::JsonString,
    },
};

#[derive(Debug, Object)]
#[oai(rename = "CreateConcert", rename_all = "camelCase")]
pub struct CreateConcertBody {
    #[oai(validator(min_length = 1, max_length = 200))]
    pub title: JsonString,
    #[oai(validator(min_length = 1, max_length = 200))]
    pub venue: JsonString,
    #[oai(validator(min_items = 1, max_items = 100))]
    pub schedules: Vec<CreateScheduleBody>,
}

#[derive(Debug, Object)]
#[oai(rename = "CreateSchedule", rename_all = "camelCase")]
pub struct CreateScheduleBody {
    /// When the performance starts (RFC 3339); must be in the future.
    pub starts_at: DateTime<Utc>,
    /// Seat blocks; seats are numbered 1..n in this order.
    #[oai(validator(min_items = 1, max_items = 50))]
    pub seats: Vec<CreateSeatBlockBody>,
}

#[derive(Debug, Object)]
#[oai(rename = "CreateSeatBlock", rename_all = "camelCase")]
pub struct CreateSeatBlockBody {
    #[oai(validator(min_length = 1, max_length = 32))]
    pub grade: JsonString,
    /// Price in points.
    #[oai(validator(minimum(value = "0"), maximum(value = "1000000000000")))]
    pub price: i64,
    #[oai(validator(minimum(value = "1"), maximum(value = "20000")))]
    pub count: i64,
}

#[derive(Debug, Object)]
#[oai(rename = "ConcertCreated", rename_all = "camelCase")]
pub struct ConcertCreatedBody {
    pub id: i64,
    pub schedules: Vec<ScheduleCreatedBody>,
}

#[derive(Debug, Object)]
#[oai(rename = "ScheduleCreated", rename_all = "camelCase")]
pub struct ScheduleCreatedBody {
    pub id: i64,
    pub starts_at: DateTime<Utc>,
    pub seat_count: u32,
}

#[derive(Debug, Object)]
#[oai(rename = "Concert", rename_all = "camelCase")]
pub struct ConcertBody {
    pub id: i64,
    pub title: String,
    pub venue: String,
}

#[derive(Debug, Object)]
#[oai(rename = "Schedule", rename_all = "camelCase")]
pub struct ScheduleBody {
    pub id: i64,
    pub starts_at: DateTime<Utc>,
    /// Seats that are free now (never held, or held past their expiry).
    pub available_seats: u64,
}

#[derive(Debug, Clone, Copy, poem_openapi::Enum)]
#[oai(rename = "SeatStatus", rename_all = "lowercase")]
pub enum SeatStatusBody {
    Available,
    Held,
    Sold,
}

#[derive(Debug, Object)]
#[oai(rename = "Seat", rename_all = "camelCase")]
pub struct SeatBody {
    pub id: i64,
    pub number: u32,
    pub grade: String,
    pub price: i64,
    pub status: SeatStatusBody,
}

#[derive(ApiResponse)]
enum CreateConcertResponse {
    /// The concert, its schedules and their seats were created.
    #[oai(status = 201)]
    Created(Json<ConcertCreatedBody>),
}

#[derive(ApiResponse)]
enum ListConcertsResponse {
    #[oai(status = 200)]
    Ok(Json<Vec<ConcertBody>>),
}

#[derive(ApiResponse)]
enum ListSchedulesResponse {
    #[oai(status = 200)]
    Ok(Json<Vec<ScheduleBody>>),
}

#[derive(ApiResponse)]
enum ListSeatsResponse {
    #[oai(status = 200)]
    Ok(Json<Vec<SeatBody>>),
}

pub struct CatalogApi<R, C, W> {
    service: CatalogService<R, C, W>,
    admission: Admission,
}

impl<R, C, W> CatalogApi<R, C, W> {
    /// `admission` is the waiting room's check: only admitted buyers see the seat map.
    pub fn new(service: CatalogService<R, C, W>, admission: Admission) -> Self {
        Self { service, admission }
    }
}

#[OpenApi]
impl<R: CatalogRepository, C: Clock, W: RelayWake> CatalogApi<R, C, W> {
    /// Create a concert with its schedules and seats in one call.
    #[oai(
        path = "/v1/admin/concerts",
        method = "post",
        tag = "ApiTags::Admin",
        operation_id = "createConcert"
    )]
    async fn create_concert(
        &self,
        auth: AdminAuth,
        body: Json<CreateConcertBody>,
    ) -> Result<CreateConcertResponse, Problem> {
        let created = self
            .service
            .create_concert(draft_from(body.0), Some(auth.0.user_id))
            .await?;
        Ok(CreateConcertResponse::Created(Json(created_body(created))))
    }

    /// List concerts.
    #[oai(
        path = "/v1/concerts",
        method = "get",
        tag = "ApiTags::Catalog",
        operation_id = "listConcerts"
    )]
    async fn list_concerts(&self) -> Result<ListConcertsResponse, Problem> {
        let concerts = self.service.list_concerts().await?;
        Ok(ListConcertsResponse::Ok(Json(
            concerts
                .into_iter()
                .map(|c| ConcertBody {
                    id: c.id.value(),
                    title: c.title,
                    venue: c.venue,
                })
                .collect(),
        )))
    }

    /// List a concert's schedules with the number of seats still available.
    #[oai(
        path = "/v1/concerts/:id/schedules",
        method = "get",
        tag = "ApiTags::Catalog",
        operation_id = "listSchedules"
    )]
    async fn list_schedules(&self, id: Path<i64>) -> Result<ListSchedulesResponse, Problem> {
        let schedules = self.service.list_schedules(ConcertId(id.0)).await?;
        Ok(ListSchedulesResponse::Ok(Json(
            schedules
                .into_iter()
                .map(|s| ScheduleBody {
                    id: s.id.value(),
                    starts_at: s.starts_at,
                    available_seats: s.available_seats,
                })
                .collect(),
        )))
    }

    /// The seat map of one schedule. Needs an admitted queue token for its concert.
    #[oai(
        path = "/v1/schedules/:id/seats",
        method = "get",
        tag = "ApiTags::Catalog",
        operation_id = "listSeats"
    )]
    async fn list_seats(
        &self,
        auth: UserAuth,
        queue: QueueToken,
        id: Path<i64>,
    ) -> Result<ListSeatsResponse, Problem> {
        let schedule = ScheduleId(id.0);
        self.admission
            .require(&queue, auth.0.user_id, schedule)
            .await?;
        let seats = self.service.list_seats(schedule).await?;
        Ok(ListSeatsResponse::Ok(Json(
            seats
                .into_iter()
                .map(|(seat, availability)| SeatBody {
                    id: seat.id.value(),
                    number: seat.number,
                    grade: seat.grade,
                    price: seat.price.value(),
                    status: match availability {
                        Availability::Available => SeatStatusBody::Available,
                        Availability::Held => SeatStatusBody::Held,
                        Availability::Sold => SeatStatusBody::Sold,
                    },
                })
                .collect(),
        )))
    }
}

fn draft_from(body: CreateConcertBody) -> ConcertDraft {
    ConcertDraft {
        title: body.title.0,
        venue: body.venue.0,
        schedules: body
            .schedules
            .into_iter()
            .map(|s| ScheduleDraft {
                starts_at: s.starts_at,
                seat_blocks: s
                    .seats
                    .into_iter()
                    .map(|b| SeatBlockDraft {
                        grade: b.grade.0,
                        price: b.price,
                        count: b.count,
                    })
                    .collect(),
            })
            .collect(),
    }
}

fn created_body(created: CreatedConcert) -> ConcertCreatedBody {
    ConcertCreatedBody {
        id: created.id.value(),
        schedules: created
            .schedules
            .into_iter()
            .map(|s| ScheduleCreatedBody {
                id: s.id.value(),
                starts_at: s.starts_at,
                seat_count: s.seat_count,
            })
            .collect(),
    }
}

impl From<CatalogError> for Problem {
    fn from(err: CatalogError) -> Self {
        match err {
            CatalogError::Invalid(detail) => Problem::validation(detail),
            CatalogError::ConcertNotFound(_) | CatalogError::ScheduleNotFound(_) => {
                Problem::not_found(err.to_string())
            }
            CatalogError::Unavailable(cause) | CatalogError::Conflict(cause) => {
                Problem::outage("catalog store", &cause)
            }
            CatalogError::Unexpected(cause) => Problem::bug("catalog store", &cause),
        }
    }
}

// Keep the documented limits and the domain's limits in one place of truth.
const _: () = {
    assert!(MAX_TEXT_CHARS == 200);
    assert!(MAX_GRADE_CHARS == 32);
    assert!(MAX_SCHEDULES == 100);
    assert!(MAX_SEAT_BLOCKS == 50);
};
