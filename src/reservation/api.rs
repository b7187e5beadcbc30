//! Seat holds over HTTP.

use chrono::{DateTime, Utc};
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Path, Query},
    payload::Json,
};

use super::{
    domain::{
        MAX_PAGE, OrderStatus, OrderView, Reservation, ReservationError, ReservationStatus,
        SeatChoice,
    },
    ports::ReservationPorts,
    usecase::ReservationService,
};
use crate::{
    auth::api::UserAuth,
    kernel::{OrderId, PageRequest, ReservationId, ScheduleId, SeatId},
    web::{
        ApiTags,
        admission::QueueToken,
        guarded::Guarded,
        paging::{PageBody, PageSize},
        problem::{ApiResult, Problem, ProblemDetails, UserPage, UserRead},
        reply::Success,
    },
};

#[derive(Debug, Object)]
#[oai(rename = "HoldSeat", rename_all = "camelCase")]
pub struct HoldBody {
    pub schedule_id: i64,
    pub seat_id: i64,
}

#[derive(Debug, Clone, Copy, poem_openapi::Enum)]
#[oai(rename = "ReservationStatus", rename_all = "lowercase")]
pub enum StatusBody {
    Held,
    Confirmed,
    Expired,
    Released,
}

#[derive(Debug, Object)]
#[oai(rename = "Reservation", rename_all = "camelCase")]
pub struct ReservationBody {
    pub id: i64,
    pub schedule_id: i64,
    pub seat_id: i64,
    pub status: StatusBody,
    /// When an unpaid hold lapses.
    pub expires_at: DateTime<Utc>,
    /// Points to pay.
    pub price: i64,
}

fn body(r: &Reservation, now: DateTime<Utc>) -> ReservationBody {
    ReservationBody {
        id: r.id.value(),
        schedule_id: r.schedule.value(),
        seat_id: r.seat.value(),
        status: status_body(r.status_at(now)),
        expires_at: r.expires_at,
        price: r.price.value(),
    }
}

/// An order: either `seatIds`, or `grade` and `quantity` for the best
/// seats available.
#[derive(Debug, Object, serde::Serialize)]
#[oai(rename = "PlaceOrder", rename_all = "camelCase")]
pub struct OrderRequestBody {
    pub schedule_id: i64,
    /// The seats to hold, 1 up to the hold limit, each once.
    pub seat_ids: Option<Vec<i64>>,
    /// Best-available: the grade of seats wanted…
    #[oai(validator(max_length = 32))]
    pub grade: Option<String>,
    /// …and how many, next to each other in one row when the hall has them.
    #[oai(validator(minimum(value = "1"), maximum(value = "50")))]
    pub quantity: Option<u32>,
}

#[derive(Debug, Clone, Copy, poem_openapi::Enum)]
#[oai(rename = "OrderStatus", rename_all = "lowercase")]
pub enum OrderStatusBody {
    Held,
    Paid,
    Confirmed,
    Expired,
    Released,
}

/// One seat of an order.
#[derive(Debug, Object)]
#[oai(rename = "OrderSeat", rename_all = "camelCase")]
pub struct OrderSeatBody {
    /// The seat's id.
    pub id: i64,
    /// The reservation holding it for the order.
    pub reservation_id: i64,
    pub number: Option<u32>,
    #[oai(skip_serializing_if_is_none)]
    pub section: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub row: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub grade: Option<String>,
    pub price: i64,
    pub status: StatusBody,
}

#[derive(Debug, Object)]
#[oai(rename = "Order", rename_all = "camelCase")]
pub struct OrderBody {
    pub id: i64,
    pub schedule_id: i64,
    pub status: OrderStatusBody,
    /// By seat id.
    pub seats: Vec<OrderSeatBody>,
    /// When its unpaid holds lapse.
    pub expires_at: Option<DateTime<Utc>>,
    /// Points to pay for every seat.
    pub amount: i64,
    pub created_at: DateTime<Utc>,
}

fn order_body(view: &OrderView, now: DateTime<Utc>) -> OrderBody {
    let order = &view.order;
    OrderBody {
        id: order.id.value(),
        schedule_id: order.schedule.value(),
        status: match order.status_at(now) {
            OrderStatus::Held => OrderStatusBody::Held,
            OrderStatus::Paid => OrderStatusBody::Paid,
            OrderStatus::Confirmed => OrderStatusBody::Confirmed,
            OrderStatus::Expired => OrderStatusBody::Expired,
            OrderStatus::Released => OrderStatusBody::Released,
        },
        seats: (order.seats.iter())
            .map(|r| {
                let seat = view.place_of(r.seat);
                OrderSeatBody {
                    id: r.seat.value(),
                    reservation_id: r.id.value(),
                    number: seat.map(|s| s.number),
                    section: seat.and_then(|s| s.place.section.clone()),
                    row: seat.and_then(|s| s.place.row.clone()),
                    grade: seat.map(|s| s.grade.clone()),
                    price: r.price.value(),
                    status: status_body(r.status_at(now)),
                }
            })
            .collect(),
        expires_at: order.expires_at(),
        amount: order.amount().value(),
        created_at: order.created_at,
    }
}

#[derive(ApiResponse)]
enum OrderResponse {
    /// Every seat is held for you until `expiresAt`; pay with
    /// `POST /v1/payments {orderId}`.
    #[oai(status = 201)]
    Created(Json<OrderBody>),
}

fn status_body(status: ReservationStatus) -> StatusBody {
    match status {
        ReservationStatus::Held => StatusBody::Held,
        ReservationStatus::Confirmed => StatusBody::Confirmed,
        ReservationStatus::Expired => StatusBody::Expired,
        ReservationStatus::Released => StatusBody::Released,
    }
}

#[derive(ApiResponse)]
enum HoldResponse {
    /// The seat is held for you until `expiresAt`.
    #[oai(status = 201)]
    Created(Json<ReservationBody>),
}

/// Your place on a schedule's waitlist.
#[derive(Debug, Object)]
#[oai(rename = "WaitlistPlace", rename_all = "camelCase")]
pub struct WaitlistBody {
    /// 1 = first in line: the next seats freed on this schedule are held
    /// for you once as many as you wait for are free.
    pub position: u64,
    /// How many seats you wait for, offered together as one order.
    pub quantity: u32,
}

#[derive(ApiResponse)]
enum JoinResponse {
    /// On the waitlist: freed seats will be held in your name as one
    /// order for `holdMinutes`, with a `waitlist_offer` notification.
    #[oai(status = 201)]
    Created(Json<WaitlistBody>),
}

#[derive(ApiResponse)]
enum LeaveResponse {
    /// Off the waitlist.
    #[oai(status = 204)]
    Left,
}

#[derive(ApiResponse)]
enum ReleaseResponse {
    /// The seat is free again.
    #[oai(status = 204)]
    Released,
}

pub type ReservationApi<P> = Guarded<ReservationService<P>>;

crate::refusals! {
    HoldRefusals {
        400: [validation_failed],
        401: [unauthorized],
        403: [forbidden, queue_not_admitted],
        404: [not_found],
        409: [seat_unavailable, hold_limit, not_on_sale, sales_closed],
        413: [payload_too_large],
        415: [unsupported_media_type],
        429: [rate_limited],
    }
    ReleaseRefusals {
        400: [validation_failed],
        401: [unauthorized],
        404: [not_found],
        409: [reservation_not_held],
    }
    JoinWaitlistRefusals {
        400: [validation_failed],
        401: [unauthorized],
        404: [not_found],
        409: [seats_available, already_waitlisted, not_on_sale, sales_closed],
        429: [rate_limited],
    }
}

#[OpenApi(tag = "ApiTags::Reservations")]
impl<P: ReservationPorts> ReservationApi<P> {
    /// Hold a seat. Exactly one of any number of concurrent requests for a seat wins.
    #[oai(path = "/v1/reservations", method = "post", operation_id = "holdSeat")]
    async fn hold(
        &self,
        auth: UserAuth,
        queue: QueueToken,
        request: &poem::Request,
        req: Json<HoldBody>,
    ) -> ApiResult<HoldResponse, HoldRefusals> {
        self.guard.limit(auth.0.user_id, request).await?;
        let schedule = ScheduleId(req.0.schedule_id);
        self.guard.admit(&queue, auth.0.user_id, schedule).await?;
        let reservation = self
            .service
            .hold(auth.0.user_id, schedule, SeatId(req.0.seat_id))
            .await?;
        Ok(HoldResponse::Created(Json(body(
            &reservation,
            self.service.now(),
        ))))
    }

    /// Hold several seats of one schedule as one order, all or nothing.
    ///
    /// Name the seats (`seatIds`), or ask for `quantity` seats of a
    /// `grade`: the best free ones are picked, next to each other in one
    /// row when the hall has such, never stranding a single empty seat
    /// between taken ones when another choice avoids it. Every seat is
    /// held in one transaction or none is: 409 `seat_unavailable` names in
    /// `seats` the ones someone else has. The seats count against the
    /// hold limit together (409 `hold_limit`).
    #[oai(path = "/v1/orders", method = "post", operation_id = "placeOrder")]
    async fn place_order(
        &self,
        auth: UserAuth,
        queue: QueueToken,
        request: &poem::Request,
        req: Json<OrderRequestBody>,
    ) -> ApiResult<OrderResponse, HoldRefusals> {
        let user = auth.0.user_id;
        self.guard.limit(user, request).await?;
        let OrderRequestBody {
            schedule_id,
            seat_ids,
            grade,
            quantity,
        } = req.0;
        let choice = SeatChoice::parse(seat_ids, grade, quantity, self.service.policy())?;
        let schedule = ScheduleId(schedule_id);
        self.guard.admit(&queue, user, schedule).await?;
        let order = self.service.order(user, schedule, choice).await?;
        Ok(OrderResponse::Created(Json(order_body(
            &order,
            self.service.now(),
        ))))
    }

    /// One of your orders.
    #[oai(path = "/v1/orders/:id", method = "get", operation_id = "getOrder")]
    async fn get_order(
        &self,
        auth: UserAuth,
        id: Path<i64>,
    ) -> ApiResult<Success<OrderBody>, UserRead> {
        let order = self
            .service
            .get_order(OrderId(id.0), auth.0.user_id)
            .await?;
        Ok(Success::json(order_body(&order, self.service.now())))
    }

    /// Your orders, newest first.
    #[oai(
        path = "/v1/users/me/orders",
        method = "get",
        operation_id = "myOrders"
    )]
    async fn my_orders(
        &self,
        auth: UserAuth,
        /// `nextCursor` of the previous page.
        after: Query<Option<i64>>,
        /// Page size, 1–100 (default 20).
        limit: PageSize<MAX_PAGE, 20>,
    ) -> ApiResult<Success<PageBody<OrderBody>>, UserPage> {
        let asked = PageRequest::asked(after.0, limit.get());
        let page = self.service.my_orders(auth.0.user_id, asked).await?;
        let now = self.service.now();
        Ok(Success::page(page, |o| order_body(&o, now)))
    }

    /// One of your reservations.
    #[oai(
        path = "/v1/reservations/:id",
        method = "get",
        operation_id = "getReservation"
    )]
    async fn get(
        &self,
        auth: UserAuth,
        id: Path<i64>,
    ) -> ApiResult<Success<ReservationBody>, UserRead> {
        let reservation = self
            .service
            .get(ReservationId(id.0), auth.0.user_id)
            .await?;
        Ok(Success::json(body(&reservation, self.service.now())))
    }

    /// Your reservations (holds, tickets, lapsed and released ones), newest first.
    #[oai(
        path = "/v1/users/me/reservations",
        method = "get",
        operation_id = "myReservations"
    )]
    async fn mine(
        &self,
        auth: UserAuth,
        /// `nextCursor` of the previous page.
        after: Query<Option<i64>>,
        /// Page size, 1–100 (default 20).
        limit: PageSize<MAX_PAGE, 20>,
    ) -> ApiResult<Success<PageBody<ReservationBody>>, UserPage> {
        let asked = PageRequest::asked(after.0, limit.get());
        let page = self.service.mine(auth.0.user_id, asked).await?;
        let now = self.service.now();
        Ok(Success::page(page, |r| body(&r, now)))
    }

    /// Release a hold early.
    #[oai(
        path = "/v1/reservations/:id",
        method = "delete",
        operation_id = "releaseReservation"
    )]
    async fn release(
        &self,
        auth: UserAuth,
        id: Path<i64>,
    ) -> ApiResult<ReleaseResponse, ReleaseRefusals> {
        self.service
            .release(ReservationId(id.0), auth.0.user_id)
            .await?;
        Ok(ReleaseResponse::Released)
    }

    /// Wait for seats of a sold-out schedule.
    ///
    /// `quantity` seats (1 to the hold limit, default 1) are waited for
    /// and offered together. Every seat freed again (a hold lapsed or given back, a ticket
    /// cancelled) goes to the first place in line whose quantity fits the
    /// seats free at that moment: that many seats are held at once in its
    /// user's name as one order for `holdMinutes`, with a `waitlist_offer`
    /// notification naming the order (pay it with `POST /v1/payments
    /// {orderId}`); an offer that lapses frees its seats for the next.
    /// Fairness: a place waiting for more seats than are free keeps its
    /// place while a smaller place behind it takes what is free; it is
    /// offered its seats as soon as that many are free at once. Paying
    /// still takes an admitted queue token. 400 `validation_failed` for a
    /// quantity out of range, 409 `seats_available` while at least
    /// `quantity` seats are free, 409 `already_waitlisted` for a second
    /// place, 409 `not_on_sale` for a cancelled schedule, 409
    /// `sales_closed` once sales have closed.
    #[oai(
        path = "/v1/schedules/:id/waitlist",
        method = "post",
        operation_id = "joinWaitlist"
    )]
    async fn join_waitlist(
        &self,
        auth: UserAuth,
        req: &poem::Request,
        id: Path<i64>,
        /// How many seats to wait for (1 to the hold limit; default 1).
        quantity: Query<Option<u32>>,
    ) -> ApiResult<JoinResponse, JoinWaitlistRefusals> {
        self.guard.limit(auth.0.user_id, req).await?;
        let quantity = quantity.0.unwrap_or(1);
        let position = self
            .service
            .join_waitlist(auth.0.user_id, ScheduleId(id.0), quantity)
            .await?;
        Ok(JoinResponse::Created(Json(WaitlistBody {
            position,
            quantity,
        })))
    }

    /// Your place on a schedule's waitlist (404 when you are not waiting).
    ///
    /// With how many seats it waits for.
    #[oai(
        path = "/v1/schedules/:id/waitlist",
        method = "get",
        operation_id = "getWaitlistPlace"
    )]
    async fn waitlist_place(
        &self,
        auth: UserAuth,
        id: Path<i64>,
    ) -> ApiResult<Success<WaitlistBody>, UserRead> {
        let (position, quantity) = self
            .service
            .waitlist_position(auth.0.user_id, ScheduleId(id.0))
            .await?;
        Ok(Success::json(WaitlistBody { position, quantity }))
    }

    /// Leave a schedule's waitlist.
    #[oai(
        path = "/v1/schedules/:id/waitlist",
        method = "delete",
        operation_id = "leaveWaitlist"
    )]
    async fn leave_waitlist(
        &self,
        auth: UserAuth,
        id: Path<i64>,
    ) -> ApiResult<LeaveResponse, UserRead> {
        self.service
            .leave_waitlist(auth.0.user_id, ScheduleId(id.0))
            .await?;
        Ok(LeaveResponse::Left)
    }
}

impl From<ReservationError> for Problem {
    fn from(err: ReservationError) -> Self {
        match err {
            ReservationError::SeatNotFound { .. }
            | ReservationError::OrderNotFound(_)
            | ReservationError::NotFound(_)
            | ReservationError::ScheduleNotFound(_)
            | ReservationError::NotWaitlisted => Problem::not_found(err.to_string()),
            ReservationError::NotOnSale(_) => Problem::conflict("not_on_sale", err.to_string()),
            ReservationError::SalesClosed(_) => Problem::conflict("sales_closed", err.to_string()),
            ReservationError::SeatsAvailable(_) => {
                Problem::conflict("seats_available", err.to_string())
            }
            ReservationError::AlreadyWaitlisted => {
                Problem::conflict("already_waitlisted", err.to_string())
            }
            ReservationError::SeatUnavailable(ref seats) => {
                Problem::conflict("seat_unavailable", err.to_string()).with(ProblemDetails {
                    seats: Some(seats.iter().map(|seat| seat.value()).collect()),
                    ..ProblemDetails::default()
                })
            }
            ReservationError::TooFewSeats { .. } => {
                Problem::conflict("seat_unavailable", err.to_string()).with(ProblemDetails {
                    seats: Some(Vec::new()),
                    ..ProblemDetails::default()
                })
            }
            ReservationError::InvalidOrder(_) => Problem::validation(err.to_string()),
            ReservationError::HoldLimit(_) => Problem::conflict("hold_limit", err.to_string()),
            ReservationError::NotHeld(_) => {
                Problem::conflict("reservation_not_held", err.to_string())
            }
            ReservationError::Fault(fault) => Problem::fault("reservation store", &fault),
        }
    }
}
