//! Payments over HTTP, and the admin view of compensations.

use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Header, Path, Query},
    payload::Json,
};

use super::{
    domain::{
        CancellationProgress, CompensationStatus, DEFAULT_COMPENSATION_PAGE, DEFAULT_SCHEDULE_PAGE,
        MAX_COMPENSATION_PAGE, MAX_PAGE, MAX_SCHEDULE_PAGE, Payment, PaymentError, PaymentStatus,
    },
    ports::PaymentPorts,
    usecase::PaymentService,
};
use crate::{
    auth::api::{AdminAuth, UserAuth},
    catalog::api::ScheduleStatusBody,
    kernel::{OrderId, PageRequest, PaymentId, ReservationId, ScheduleId, TicketId},
    web::{
        ApiTags,
        admission::QueueToken,
        guarded::{Guarded, Unguarded},
        idempotency::request_key,
        paging::{PageBody, PageSize},
        problem::{AdminPage, AdminRead, ApiResult, Problem, UserPage, UserRead},
        reply::{NewestFirst, Success},
    },
};

const _: () = assert!(DEFAULT_COMPENSATION_PAGE == 100 && MAX_COMPENSATION_PAGE == 500);
const _: () = assert!(DEFAULT_SCHEDULE_PAGE == 20 && MAX_SCHEDULE_PAGE == 100);

#[derive(Debug, Object, serde::Serialize)]
#[oai(rename = "Pay", rename_all = "camelCase")]
pub struct PayBody {
    /// The order to pay for: every seat of it still held, in one payment.
    pub order_id: Option<i64>,
    /// One held seat (an order of one), instead of `orderId`.
    pub reservation_id: Option<i64>,
}

/// `paid` at first; `confirmed` once the seat is sold to you, or `refunded`
/// if it could not be, or once you cancelled the ticket.
#[derive(Debug, Clone, Copy, poem_openapi::Enum, serde::Serialize, serde::Deserialize)]
#[oai(rename = "PaymentStatus", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum StatusBody {
    Paid,
    Confirmed,
    Refunded,
}

#[derive(Debug, Object, serde::Serialize, serde::Deserialize)]
#[oai(rename = "Payment", rename_all = "camelCase")]
#[serde(rename_all = "camelCase")]
pub struct PaymentBody {
    pub id: i64,
    /// The first (or only) seat it bought.
    pub reservation_id: i64,
    /// The order it paid for.
    #[oai(skip_serializing_if_is_none)]
    pub order_id: Option<i64>,
    // The enum's description says what each status means (a doc comment
    // here would make poem-openapi wrap the reference in `allOf`).
    pub status: StatusBody,
    pub amount: i64,
    /// Given back so far: the prices of the order's tickets cancelled one
    /// by one (the payment stays `confirmed` while others are sold), or
    /// the whole `amount` once `refunded`.
    pub refunded_amount: i64,
}

fn body(p: &Payment) -> PaymentBody {
    PaymentBody {
        id: p.id.value(),
        reservation_id: p.reservation.value(),
        order_id: p.order.map(OrderId::value),
        status: match p.status {
            PaymentStatus::Paid => StatusBody::Paid,
            PaymentStatus::Confirmed => StatusBody::Confirmed,
            PaymentStatus::Refunded => StatusBody::Refunded,
        },
        amount: p.amount.value(),
        refunded_amount: match p.status {
            PaymentStatus::Refunded => p.amount.value(),
            _ => p.refunded.value(),
        },
    }
}

#[derive(Debug, Clone, Copy, poem_openapi::Enum)]
#[oai(rename = "CompensationStatus", rename_all = "lowercase")]
pub enum CompensationStatusBody {
    Pending,
    Succeeded,
    Failed,
}

#[derive(Debug, Object)]
#[oai(
    rename = "Compensation",
    rename_all = "camelCase",
    skip_serializing_if_is_none
)]
pub struct CompensationBody {
    pub id: i64,
    pub saga: String,
    pub step: String,
    pub payment_id: i64,
    pub status: CompensationStatusBody,
    pub attempts: i32,
    pub last_error: Option<String>,
}

#[derive(ApiResponse)]
enum PayResponse {
    /// Paid; the seat is confirmed shortly (see `GET /v1/payments/{id}`).
    #[oai(status = 201)]
    Created(Json<PaymentBody>),
}

#[derive(Debug, Clone, Copy, poem_openapi::Enum)]
#[oai(rename = "RefundStatus", rename_all = "lowercase")]
pub enum RefundStatusBody {
    /// The refund is scheduled; `GET /v1/payments/{id}` reads `refunded`
    /// once the points are back and the seat is on sale again.
    Pending,
}

#[derive(Debug, Object)]
#[oai(rename = "Refund", rename_all = "camelCase")]
pub struct RefundBody {
    pub payment_id: i64,
    pub status: RefundStatusBody,
}

#[derive(ApiResponse)]
enum RefundResponse {
    /// The cancellation is accepted; the refund follows shortly.
    #[oai(status = 202)]
    Accepted(Json<RefundBody>),
}

/// A cancellation of (part of) `payment` accepted: its refund is pending.
fn accepted(payment: &Payment) -> RefundResponse {
    RefundResponse::Accepted(Json(RefundBody {
        payment_id: payment.id.value(),
        status: RefundStatusBody::Pending,
    }))
}

/// A schedule's sale, and how far its cancellation has come.
#[derive(Debug, Object)]
#[oai(rename = "ScheduleSale", rename_all = "camelCase")]
pub struct ScheduleSaleBody {
    pub id: i64,
    pub status: ScheduleStatusBody,
    pub seats: u64,
    /// Seats sold now (a refunded ticket's seat is no longer sold).
    pub sold: u64,
    /// Refunds of the cancellation not yet done, including `refundsFailed`.
    pub refunds_pending: u64,
    /// Refunds that gave up and wait for an admin's retry
    /// (`POST /v1/admin/compensations/{id}/retry`).
    pub refunds_failed: u64,
    pub refunds_done: u64,
}

fn sale_body(p: &CancellationProgress) -> ScheduleSaleBody {
    ScheduleSaleBody {
        id: p.schedule.value(),
        status: p.status.into(),
        seats: p.seats,
        sold: p.sold,
        refunds_pending: p.refunds_pending,
        refunds_failed: p.refunds_failed,
        refunds_done: p.refunds_done,
    }
}

#[derive(ApiResponse)]
enum CancelScheduleResponse {
    /// The sale has stopped; holds are released and tickets refunded in
    /// batches (see `GET /v1/admin/schedules/{id}`).
    #[oai(status = 202)]
    Accepted(Json<ScheduleSaleBody>),
}

#[derive(ApiResponse)]
enum ScheduleSalesResponse {
    /// Newest schedules first.
    #[oai(status = 200)]
    Ok(Json<PageBody<ScheduleSaleBody>>),
}

#[derive(ApiResponse)]
enum RetryResponse {
    /// Scheduled to run again at once.
    #[oai(status = 202)]
    Accepted,
}

pub type PaymentApi<P> = Guarded<PaymentService<P>>;
pub type PaymentAdminApi<P> = Unguarded<PaymentService<P>>;

crate::refusals! {
    PayRefusals {
        400: [validation_failed],
        401: [unauthorized],
        403: [forbidden, queue_not_admitted],
        404: [not_found],
        409: [hold_expired, already_paid, insufficient_points, idempotency_conflict, sales_closed],
        413: [payload_too_large],
        415: [unsupported_media_type],
        429: [rate_limited],
    }
    CancelTicketRefusals {
        400: [validation_failed],
        401: [unauthorized],
        404: [not_found],
        409: [not_confirmed, cancel_window_closed, already_cancelled],
        429: [rate_limited],
    }
    CancelOneTicketRefusals {
        400: [validation_failed],
        401: [unauthorized],
        404: [not_found],
        409: [not_confirmed, cancel_window_closed, already_cancelled, ticket_void, already_checked_in, ticket_transferred],
        429: [rate_limited],
    }
    RetryRefusals {
        400: [validation_failed],
        401: [unauthorized],
        403: [forbidden],
        404: [not_found],
        409: [not_failed],
    }
}

#[OpenApi(tag = "ApiTags::Payments")]
impl<P: PaymentPorts> PaymentApi<P> {
    /// Pay for a held seat with wallet points. With `Idempotency-Key`, a
    /// retry replays the first answer.
    #[oai(path = "/v1/payments", method = "post", operation_id = "pay")]
    async fn pay(
        &self,
        auth: UserAuth,
        queue: QueueToken,
        request: &poem::Request,
        req: Json<PayBody>,
        /// Makes retries safe: the same key and body pay once.
        #[oai(name = "Idempotency-Key")]
        key: Header<Option<String>>,
    ) -> ApiResult<PayResponse, PayRefusals> {
        let user = auth.0.user_id;
        self.guard.limit(user, request).await?;
        let key = request_key(user, "payment.pay", key.0.as_deref(), &req.0)?;
        let purchase = match (req.0.order_id, req.0.reservation_id) {
            (Some(order), None) => self.service.order_of(user, OrderId(order)).await,
            (None, Some(hold)) => self.service.hold_of(user, ReservationId(hold)).await,
            _ => Err(PaymentError::InvalidRequest(
                "give either orderId or reservationId".into(),
            )),
        };
        // A keyed retry of a payment that went through is answered as it
        // was, though its holds are paid now.
        if let Some(first) = self.service.replay(key.as_ref()).await? {
            return Ok(PayResponse::Created(Json(body(&first))));
        }
        let purchase = purchase?;
        self.guard.admit(&queue, user, purchase.schedule).await?;
        let payment = self.service.pay(&purchase, key.as_ref()).await?;
        Ok(PayResponse::Created(Json(body(&payment))))
    }

    /// One of your payments.
    #[oai(path = "/v1/payments/:id", method = "get", operation_id = "getPayment")]
    async fn get(
        &self,
        auth: UserAuth,
        id: Path<i64>,
    ) -> ApiResult<Success<PaymentBody>, UserRead> {
        let payment = self.service.get(PaymentId(id.0), auth.0.user_id).await?;
        Ok(Success::json(body(&payment)))
    }

    /// Cancel the ticket a payment bought and get the points back, until
    /// the configured cut-off before the show (409 `cancel_window_closed`
    /// after it; 409 `not_confirmed` for a payment whose seat is not
    /// confirmed or that was refunded; 409 `already_cancelled` while the
    /// cancellation is under way). The seat goes back on sale.
    #[oai(
        path = "/v1/payments/:id/refunds",
        method = "post",
        operation_id = "cancelTicket"
    )]
    async fn cancel(
        &self,
        auth: UserAuth,
        req: &poem::Request,
        id: Path<i64>,
    ) -> ApiResult<RefundResponse, CancelTicketRefusals> {
        self.guard.limit(auth.0.user_id, req).await?;
        let payment = self.service.cancel(PaymentId(id.0), auth.0.user_id).await?;
        Ok(accepted(&payment))
    }

    /// Cancel one ticket of an order (yours, bought with your points) and
    /// get that seat's price back, until the configured cut-off before the
    /// show. The ticket is void at once (its code admits nobody and it can
    /// no longer be handed on); the refund follows shortly, through the
    /// same steps as a whole cancellation: the seat goes back on sale (and
    /// to the waitlist), and the payment's `refundedAmount` grows by
    /// the seat's price; it stays `confirmed` until its last ticket is
    /// cancelled, then reads `refunded`. Cancelling the whole order
    /// afterwards refunds only the rest. Refused: 404 for anyone else's
    /// ticket; 409 `ticket_void` (cancelled already), `already_checked_in`
    /// (admitted at the door), `ticket_transferred` (handed on to you: the
    /// points go back only to the buyer, who no longer holds it),
    /// `cancel_window_closed` after the cut-off, `not_confirmed` when the
    /// payment is not confirmed (e.g. the whole order was refunded), and
    /// `already_cancelled` while this ticket's cancellation is under way
    /// (each ticket is refunded once, whatever the retries). Of a
    /// cancellation, a transfer and a scan of one ticket at once, exactly
    /// one lands.
    #[oai(
        path = "/v1/tickets/:id/refunds",
        method = "post",
        operation_id = "cancelOneTicket"
    )]
    async fn cancel_one(
        &self,
        auth: UserAuth,
        req: &poem::Request,
        id: Path<i64>,
    ) -> ApiResult<RefundResponse, CancelOneTicketRefusals> {
        self.guard.limit(auth.0.user_id, req).await?;
        let payment = (self.service)
            .cancel_ticket(TicketId(id.0), auth.0.user_id)
            .await?;
        Ok(accepted(&payment))
    }

    /// Your payments, newest first.
    #[oai(
        path = "/v1/users/me/payments",
        method = "get",
        operation_id = "myPayments"
    )]
    async fn mine(
        &self,
        auth: UserAuth,
        /// `nextCursor` of the previous page.
        after: Query<Option<i64>>,
        /// Page size, 1–100 (default 20).
        limit: PageSize<MAX_PAGE, 20>,
    ) -> ApiResult<NewestFirst<PaymentBody>, UserPage> {
        let asked = PageRequest::asked(after.0, limit.get());
        let page = self.service.mine(auth.0.user_id, asked).await?;
        Ok(NewestFirst::page(page, |p| body(&p)))
    }
}

#[OpenApi(tag = "ApiTags::Admin")]
impl<P: PaymentPorts> PaymentAdminApi<P> {
    /// Cancel a schedule: its sale stops at once, every hold is released
    /// and every ticket refunded (exactly once each) through the
    /// compensation machinery. Cancelling again changes nothing.
    #[oai(
        path = "/v1/admin/schedules/:id/cancel",
        method = "post",
        operation_id = "cancelSchedule"
    )]
    async fn cancel_schedule(
        &self,
        auth: AdminAuth,
        id: Path<i64>,
    ) -> ApiResult<CancelScheduleResponse, AdminRead> {
        let progress = self
            .service
            .cancel_schedule(ScheduleId(id.0), auth.0.user_id)
            .await?;
        Ok(CancelScheduleResponse::Accepted(Json(sale_body(&progress))))
    }

    /// Schedules with their sale status and cancellation progress.
    #[oai(
        path = "/v1/admin/schedules",
        method = "get",
        operation_id = "listScheduleSales"
    )]
    async fn schedule_sales(
        &self,
        _auth: AdminAuth,
        /// `nextCursor` of the previous page.
        after: Query<Option<i64>>,
        /// Page size, 1–100 (default 20).
        limit: PageSize<MAX_SCHEDULE_PAGE, DEFAULT_SCHEDULE_PAGE>,
    ) -> ApiResult<ScheduleSalesResponse, AdminPage> {
        let asked = PageRequest::asked(after.0, limit.get());
        let page = self.service.schedules(asked).await?;
        Ok(ScheduleSalesResponse::Ok(Json(PageBody::from_page(
            page,
            |p| sale_body(&p),
        ))))
    }

    /// A schedule's sale status and its cancellation's progress.
    #[oai(
        path = "/v1/admin/schedules/:id",
        method = "get",
        operation_id = "getScheduleSale"
    )]
    async fn schedule_sale(
        &self,
        _auth: AdminAuth,
        id: Path<i64>,
    ) -> ApiResult<Success<ScheduleSaleBody>, AdminRead> {
        let progress = self.service.cancellation(ScheduleId(id.0)).await?;
        Ok(Success::json(sale_body(&progress)))
    }

    /// Compensation steps of the payment saga.
    #[oai(
        path = "/v1/admin/compensations",
        method = "get",
        operation_id = "listCompensations"
    )]
    async fn compensations(
        &self,
        _auth: AdminAuth,
        /// Only compensations in this state.
        status: Query<Option<CompensationStatusBody>>,
        /// `nextCursor` of the previous page.
        after: Query<Option<i64>>,
        /// Page size, 1–500 (default 100).
        limit: PageSize<MAX_COMPENSATION_PAGE, DEFAULT_COMPENSATION_PAGE>,
    ) -> ApiResult<NewestFirst<CompensationBody>, AdminPage> {
        let status = status.0.map(|s| match s {
            CompensationStatusBody::Pending => CompensationStatus::Pending,
            CompensationStatusBody::Succeeded => CompensationStatus::Succeeded,
            CompensationStatusBody::Failed => CompensationStatus::Failed,
        });
        let asked = PageRequest::asked(after.0, limit.get());
        let page = self.service.compensations(status, asked).await?;
        Ok(NewestFirst::page(page, |c| CompensationBody {
            id: c.id,
            saga: c.saga,
            step: c.step,
            payment_id: c.payment.value(),
            status: match c.status {
                CompensationStatus::Pending => CompensationStatusBody::Pending,
                CompensationStatus::Succeeded => CompensationStatusBody::Succeeded,
                CompensationStatus::Failed => CompensationStatusBody::Failed,
            },
            attempts: c.attempts,
            last_error: c.last_error,
        }))
    }

    /// Run a failed compensation again.
    #[oai(
        path = "/v1/admin/compensations/:id/retry",
        method = "post",
        operation_id = "retryCompensation"
    )]
    async fn retry(
        &self,
        auth: AdminAuth,
        id: Path<i64>,
    ) -> ApiResult<RetryResponse, RetryRefusals> {
        self.service
            .retry_compensation(id.0, auth.0.user_id)
            .await?;
        Ok(RetryResponse::Accepted)
    }
}

impl From<PaymentError> for Problem {
    fn from(err: PaymentError) -> Self {
        match err {
            PaymentError::ReservationNotFound(_)
            | PaymentError::NotFound(_)
            | PaymentError::CompensationNotFound(_)
            | PaymentError::ScheduleNotFound(_) => Problem::not_found(err.to_string()),
            PaymentError::HoldExpired(_) => Problem::conflict("hold_expired", err.to_string()),
            PaymentError::SalesClosed(_) => Problem::conflict("sales_closed", err.to_string()),
            PaymentError::AlreadyPaid(_) => Problem::conflict("already_paid", err.to_string()),
            PaymentError::InsufficientPoints => {
                Problem::conflict("insufficient_points", err.to_string())
            }
            PaymentError::CompensationNotFailed(_) => {
                Problem::conflict("not_failed", err.to_string())
            }
            PaymentError::NotConfirmed(_) => Problem::conflict("not_confirmed", err.to_string()),
            PaymentError::CancelWindowClosed(_) => {
                Problem::conflict("cancel_window_closed", err.to_string())
            }
            PaymentError::AlreadyCancelled(_) => {
                Problem::conflict("already_cancelled", err.to_string())
            }
            PaymentError::OrderNotFound(_) => Problem::not_found(err.to_string()),
            PaymentError::OrderExpired(_) => Problem::conflict("hold_expired", err.to_string()),
            PaymentError::OrderAlreadyPaid(_) => Problem::conflict("already_paid", err.to_string()),
            PaymentError::InvalidRequest(_) => Problem::validation(err.to_string()),
            PaymentError::TicketNotFound(_) => Problem::not_found(err.to_string()),
            PaymentError::TicketVoid(_) => Problem::conflict("ticket_void", err.to_string()),
            PaymentError::TicketCheckedIn(_) => {
                Problem::conflict("already_checked_in", err.to_string())
            }
            PaymentError::TicketTransferred(_) => {
                Problem::conflict("ticket_transferred", err.to_string())
            }
            PaymentError::TicketAlreadyCancelled(_) => {
                Problem::conflict("already_cancelled", err.to_string())
            }
            PaymentError::Fault(fault) => Problem::fault("payment store", &fault),
        }
    }
}
