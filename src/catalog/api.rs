//! HTTP endpoints of the catalog: the public concert listing, the seat map,
//! and the admin's "create a concert" call.

use chrono::{DateTime, Utc};
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Header, Path, Query},
    payload::Json,
};

use super::{
    domain::{
        Availability, CatalogError, ConcertDraft, CreatedConcert, DEFAULT_CONCERT_PAGE,
        DEFAULT_SEAT_PAGE, MAX_CONCERT_PAGE, MAX_GRADE_CHARS, MAX_ROW_CHARS, MAX_SCHEDULE_PAGE,
        MAX_SCHEDULES, MAX_SEAT_BLOCKS, MAX_SEAT_PAGE, MAX_SECTION_CHARS, MAX_TEXT_CHARS,
        ScheduleDraft, ScheduleStatus, SeatBlockDraft, SeatFilter, SeatPlace,
    },
    ports::CatalogPorts,
    usecase::{CatalogService, Renderings},
};
use crate::{
    auth::api::{AdminAuth, UserAuth},
    kernel::{ConcertId, PageRequest, ScheduleId},
    web::{
        ApiTags,
        admission::QueueToken,
        guarded::{Guard, Unguarded},
        paging::{PageBody, PageSize},
        problem::{AdminCreate, ApiResult, Problem},
        rendered::RenderedJson,
        reply::Success,
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
    #[oai(validator(min_items = 1, max_items = 500))]
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
    /// Where these seats stand; give each row a block of its own.
    #[oai(flatten)]
    pub place: SeatPlaceBody,
}

/// Where a seat stands in the hall, when the hall says: seats of one row
/// whose numbers follow on sit next to each other.
#[derive(Debug, Object)]
#[oai(
    rename = "SeatPlace",
    rename_all = "camelCase",
    skip_serializing_if_is_none
)]
pub struct SeatPlaceBody {
    /// The hall's section, e.g. `Floor` or `Balcony`.
    #[oai(validator(min_length = 1, max_length = 32))]
    pub section: Option<JsonString>,
    /// The row, e.g. `A` or `12`.
    #[oai(validator(min_length = 1, max_length = 16))]
    pub row: Option<JsonString>,
}

impl From<SeatPlaceBody> for SeatPlace {
    fn from(body: SeatPlaceBody) -> Self {
        Self {
            section: body.section.map(|section| section.0),
            row: body.row.map(|row| row.0),
        }
    }
}

impl From<SeatPlace> for SeatPlaceBody {
    fn from(place: SeatPlace) -> Self {
        Self {
            section: place.section.map(JsonString),
            row: place.row.map(JsonString),
        }
    }
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
    /// Seats that are free (never held, or held past their expiry), as
    /// counted within the last second; 0 when the schedule is not on sale.
    pub available_seats: u64,
    // No doc comment on an enum-typed field: poem-openapi would wrap the
    // reference in `allOf` to carry it, which client generators refuse.
    // The enum's own description says it.
    pub status: ScheduleStatusBody,
}

/// A schedule's sale: `on_sale`; `cancelling` once an admin cancelled it,
/// while holds are released and tickets refunded; `cancelled` once every one
/// is.
#[derive(Debug, Clone, Copy, poem_openapi::Enum)]
#[oai(rename = "ScheduleSaleStatus", rename_all = "snake_case")]
pub enum ScheduleStatusBody {
    OnSale,
    Cancelling,
    Cancelled,
}

impl From<ScheduleStatus> for ScheduleStatusBody {
    fn from(status: ScheduleStatus) -> Self {
        match status {
            ScheduleStatus::OnSale => Self::OnSale,
            ScheduleStatus::Cancelling => Self::Cancelling,
            ScheduleStatus::Cancelled => Self::Cancelled,
        }
    }
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
    #[oai(flatten)]
    pub place: SeatPlaceBody,
}

#[derive(ApiResponse)]
enum CreateConcertResponse {
    /// The concert, its schedules and their seats were created.
    #[oai(status = 201)]
    Created(Json<ConcertCreatedBody>),
}

#[derive(ApiResponse)]
enum ListSeatsResponse {
    /// The page; send its `ETag` back in `If-None-Match` to get 304 while it
    /// is unchanged.
    #[oai(status = 200)]
    Ok(
        RenderedJson<PageBody<SeatBody>>,
        #[oai(header = "ETag")] String,
        #[oai(header = "Cache-Control")] String,
    ),
    /// The page is the one whose `ETag` you sent in `If-None-Match`.
    #[oai(status = 304)]
    NotModified(
        #[oai(header = "ETag")] String,
        #[oai(header = "Cache-Control")] String,
    ),
}

/// Seat maps change by the second during an on-sale: a client may keep a
/// page but must ask again (with `If-None-Match`) before using it.
const SEAT_MAP_CACHE_CONTROL: &str = "private, no-cache";

/// Whether `If-None-Match` names `etag` (a list, weak tags or `*` included).
fn matches_etag(if_none_match: Option<&str>, etag: &str) -> bool {
    if_none_match.is_some_and(|header| {
        header
            .split(',')
            .map(str::trim)
            .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
    })
}

pub type CatalogAdminApi<P> = Unguarded<CatalogService<P>>;

pub struct CatalogApi<P: CatalogPorts> {
    service: CatalogService<P>,
    /// Seat-map pages as answered, once per snapshot of each.
    seat_pages: Renderings<RenderedJson<PageBody<SeatBody>>>,
    /// The waiting room's gate (only admitted buyers see the seat map) and
    /// the per-IP limit on the lists anyone may read without signing in.
    guard: Guard,
}

impl<P: CatalogPorts> CatalogApi<P> {
    pub fn new(service: CatalogService<P>, guard: Guard) -> Self {
        Self {
            seat_pages: service.renderings(),
            service,
            guard,
        }
    }
}

crate::refusals! {
    ListConcertsRefusals {
        400: [validation_failed],
        429: [rate_limited],
    }
    ListSchedulesRefusals {
        400: [validation_failed],
        404: [not_found],
        429: [rate_limited],
    }
    ListSeatsRefusals {
        400: [validation_failed],
        401: [unauthorized],
        403: [forbidden, queue_not_admitted],
        404: [not_found],
        409: [not_on_sale],
    }
}

#[OpenApi(tag = "ApiTags::Admin")]
impl<P: CatalogPorts> CatalogAdminApi<P> {
    /// Create a concert with its schedules and seats in one call.
    #[oai(
        path = "/v1/admin/concerts",
        method = "post",
        operation_id = "createConcert"
    )]
    async fn create_concert(
        &self,
        auth: AdminAuth,
        body: Json<CreateConcertBody>,
    ) -> ApiResult<CreateConcertResponse, AdminCreate> {
        let created = self
            .service
            .create_concert(draft_from(body.0), Some(auth.0.user_id))
            .await?;
        Ok(CreateConcertResponse::Created(Json(created_body(created))))
    }
}

#[OpenApi(tag = "ApiTags::Catalog")]
impl<P: CatalogPorts> CatalogApi<P> {
    /// List concerts, oldest first, a page at a time.
    #[oai(path = "/v1/concerts", method = "get", operation_id = "listConcerts")]
    async fn list_concerts(
        &self,
        req: &poem::Request,
        /// `nextCursor` of the previous page.
        after: Query<Option<i64>>,
        /// Page size, 1–200 (default 50).
        limit: PageSize<MAX_CONCERT_PAGE, DEFAULT_CONCERT_PAGE>,
    ) -> ApiResult<Success<PageBody<ConcertBody>>, ListConcertsRefusals> {
        self.guard.limit_address(req)?;
        let asked = PageRequest::asked(after.0, limit.get());
        let page = self.service.list_concerts(asked).await?;
        Ok(Success::page(page, |c| ConcertBody {
            id: c.id.value(),
            title: c.title,
            venue: c.venue,
        }))
    }

    /// List a concert's schedules in start order with the number of seats
    /// still available (a concert has at most 100, one page by default).
    #[oai(
        path = "/v1/concerts/:id/schedules",
        method = "get",
        operation_id = "listSchedules"
    )]
    async fn list_schedules(
        &self,
        req: &poem::Request,
        id: Path<i64>,
        /// `nextCursor` of the previous page.
        after: Query<Option<i64>>,
        /// Page size, 1–100 (default 100).
        limit: PageSize<MAX_SCHEDULE_PAGE, MAX_SCHEDULE_PAGE>,
    ) -> ApiResult<Success<PageBody<ScheduleBody>>, ListSchedulesRefusals> {
        self.guard.limit_address(req)?;
        let asked = PageRequest::asked(after.0, limit.get());
        let page = self.service.list_schedules(ConcertId(id.0), asked).await?;
        Ok(Success::page(page, |s| ScheduleBody {
            id: s.id.value(),
            starts_at: s.starts_at,
            available_seats: s.available_seats,
            status: s.status.into(),
        }))
    }

    /// The seat map of one schedule in seat-number order, a page at a time,
    /// optionally only the seats of one status or grade. Needs an admitted
    /// queue token for its concert; a cancelled schedule answers 409
    /// `not_on_sale`.
    #[oai(
        path = "/v1/schedules/:id/seats",
        method = "get",
        operation_id = "listSeats"
    )]
    // Each query parameter is an argument of the operation.
    #[allow(clippy::too_many_arguments)]
    async fn list_seats(
        &self,
        auth: UserAuth,
        queue: QueueToken,
        id: Path<i64>,
        /// `nextCursor` of the previous page (a seat id).
        after: Query<Option<i64>>,
        /// Page size, 1–1000 (default 500).
        limit: PageSize<MAX_SEAT_PAGE, DEFAULT_SEAT_PAGE>,
        /// Only seats with this status now (`available` includes lapsed holds).
        status: Query<Option<SeatStatusBody>>,
        /// Only seats of this grade.
        #[oai(validator(min_length = 1, max_length = 32))]
        grade: Query<Option<String>>,
        /// The `ETag` of the page you have: 304 while it is unchanged.
        #[oai(name = "If-None-Match")]
        if_none_match: Header<Option<String>>,
    ) -> ApiResult<ListSeatsResponse, ListSeatsRefusals> {
        let schedule = ScheduleId(id.0);
        self.guard.admit(&queue, auth.0.user_id, schedule).await?;
        let filter = SeatFilter {
            status: status.0.map(|s| match s {
                SeatStatusBody::Available => Availability::Available,
                SeatStatusBody::Held => Availability::Held,
                SeatStatusBody::Sold => Availability::Sold,
            }),
            grade: grade.0,
        };
        // Rendered once per snapshot of the page (and per lapsed hold), so a
        // rush of readers costs no serialising.
        let rendered = self
            .service
            .render_seats(
                &self.seat_pages,
                schedule,
                &filter,
                PageRequest::asked(after.0, limit.get()),
                |page| {
                    RenderedJson::render(&PageBody::from_page(page, |(seat, availability)| {
                        SeatBody {
                            id: seat.id.value(),
                            number: seat.number,
                            grade: seat.grade,
                            price: seat.price.value(),
                            status: match availability {
                                Availability::Available => SeatStatusBody::Available,
                                Availability::Held => SeatStatusBody::Held,
                                Availability::Sold => SeatStatusBody::Sold,
                            },
                            place: seat.place.into(),
                        }
                    }))
                },
            )
            .await?;
        let etag = rendered.etag().to_owned();
        let cache_control = SEAT_MAP_CACHE_CONTROL.to_owned();
        if matches_etag(if_none_match.0.as_deref(), &etag) {
            return Ok(ListSeatsResponse::NotModified(etag, cache_control));
        }
        Ok(ListSeatsResponse::Ok(
            (*rendered).clone(),
            etag,
            cache_control,
        ))
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
                        place: b.place.into(),
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
            CatalogError::NotOnSale(_) => Problem::conflict("not_on_sale", err.to_string()),
            CatalogError::ConcertNotFound(_) | CatalogError::ScheduleNotFound(_) => {
                Problem::not_found(err.to_string())
            }
            CatalogError::Fault(fault) => Problem::fault("catalog store", &fault),
        }
    }
}

// Keep the documented limits and the domain's limits in one place of truth.
const _: () = {
    assert!(MAX_TEXT_CHARS == 200);
    assert!(MAX_GRADE_CHARS == 32);
    assert!(MAX_SCHEDULES == 100);
    assert!(MAX_SEAT_BLOCKS == 500);
    assert!(MAX_SECTION_CHARS == 32 && MAX_ROW_CHARS == 16);
    assert!(DEFAULT_CONCERT_PAGE == 50 && MAX_CONCERT_PAGE == 200);
    assert!(DEFAULT_SEAT_PAGE == 500 && MAX_SEAT_PAGE == 1_000);
    assert!(MAX_SCHEDULE_PAGE == 100);
};

#[cfg(test)]
mod etag_tests {
    use super::*;

    #[test]
    fn if_none_match_is_read_as_the_rfc_says() {
        let tag = "\"abc\"";
        assert!(matches_etag(Some("\"abc\""), tag));
        assert!(matches_etag(Some("W/\"abc\""), tag));
        assert!(matches_etag(Some("\"x\", \"abc\""), tag));
        assert!(matches_etag(Some("*"), tag));
        assert!(!matches_etag(Some("\"abd\""), tag));
        assert!(!matches_etag(None, tag));
    }
}
