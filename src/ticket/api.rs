//! Tickets over HTTP: the holder's tickets and their QR images, the
//! public keys a scanner verifies codes with, and the door's check-in.

use chrono::{DateTime, Utc};
use poem::http::{StatusCode, header};
use poem_openapi::{
    ApiResponse, Enum, Object, OpenApi, ResponseContent,
    param::{Path, Query},
    payload::{Binary, Json},
};

use super::{
    domain::{
        AtTheDoor, ChangeCursor, CheckIn, DoorView, Gate, GateCount, MAX_BATCH, MAX_DOOR_PAGE,
        MAX_PAGE, OfflineScan, PublicKey, QrFormat, Refusal, RefusalReason, ScanOutcome,
        ScanResult, Ticket, TicketError, TicketStatus,
    },
    ports::TicketPorts,
    usecase::TicketService,
};
use crate::{
    auth::api::{AdminAuth, ScannerAuth, UserAuth},
    kernel::{PageRequest, ScheduleId, TicketId, UserId},
    web::{
        ApiTags,
        guarded::Unguarded,
        paging::{PageBody, PageSize},
        problem::{AdminRead, ApiResult, Problem, ProblemDetails, Unrefused, UserPage, UserRead},
        reply::Success,
        strict::JsonString,
    },
};

#[derive(Debug, Clone, Copy, Enum)]
#[oai(rename = "TicketStatus", rename_all = "lowercase")]
pub enum StatusBody {
    /// Admits its holder.
    Valid,
    /// Cancelled (refunded, or its schedule cancelled): admits nobody.
    Void,
}

#[derive(Debug, Object)]
#[oai(rename = "Ticket", rename_all = "camelCase")]
pub struct TicketBody {
    pub id: i64,
    pub reservation_id: i64,
    pub schedule_id: i64,
    pub seat_id: i64,
    /// 1 when issued; a re-issue (transfer) counts up, and only the code
    /// of the current version admits.
    pub version: u32,
    pub status: StatusBody,
    /// A compact JWS (`alg: EdDSA`, `kid` in the header) over the claims
    /// `tid` (ticket id), `sch` (schedule id), `seat` (seat id), `sub`
    /// (holder's user id) and `ver` (version); verify it with the keys of
    /// `GET /v1/tickets/keys`.
    pub code: String,
    pub issued_at: DateTime<Utc>,
}

fn body(t: Ticket) -> TicketBody {
    TicketBody {
        id: t.id.value(),
        reservation_id: t.reservation.value(),
        schedule_id: t.schedule.value(),
        seat_id: t.seat.value(),
        version: t.version,
        status: match t.status {
            TicketStatus::Valid => StatusBody::Valid,
            TicketStatus::Void => StatusBody::Void,
        },
        code: t.code.code,
        issued_at: t.issued_at,
    }
}

/// One public key, as a JWK (RFC 8037).
#[derive(Debug, Object)]
#[oai(rename = "TicketKey")]
pub struct KeyBody {
    /// Always `OKP`.
    pub kty: String,
    /// Always `Ed25519`.
    pub crv: String,
    /// The public key, base64url.
    pub x: String,
    /// The key's RFC 7638 thumbprint, named in the header of the codes it signs.
    pub kid: String,
    /// Always `sig`.
    #[oai(rename = "use")]
    pub key_use: String,
    /// Always `EdDSA`.
    pub alg: String,
}

/// A JWK Set (RFC 7517).
#[derive(Debug, Object)]
#[oai(rename = "TicketKeySet")]
pub struct KeySetBody {
    pub keys: Vec<KeyBody>,
}

fn key_body(key: PublicKey) -> KeyBody {
    KeyBody {
        kty: "OKP".into(),
        crv: "Ed25519".into(),
        x: key.x,
        kid: key.kid,
        key_use: "sig".into(),
        alg: "EdDSA".into(),
    }
}

/// How long a scanner may keep the key set: a code naming a `kid` it does
/// not know is a reason to fetch it again sooner.
const KEY_SET_CACHE_CONTROL: &str = "public, max-age=300";

#[derive(ApiResponse)]
enum KeysResponse {
    /// Every key a valid code may be signed with, the one signing new
    /// codes first. A scanner that meets a code naming a `kid` it does not
    /// have fetches the set again.
    #[oai(status = 200)]
    Ok(Json<KeySetBody>, #[oai(header = "Cache-Control")] String),
}

#[derive(ResponseContent)]
enum QrImage {
    #[oai(content_type = "image/svg+xml")]
    Svg(Binary<Vec<u8>>),
    #[oai(content_type = "image/png")]
    Png(Binary<Vec<u8>>),
}

#[derive(ApiResponse)]
enum QrResponse {
    /// The ticket's code as a QR image: SVG, or PNG when `Accept` names
    /// `image/png` (before `image/svg+xml`, if both).
    #[oai(status = 200)]
    Ok(QrImage),
}

/// Whom to hand a ticket on to.
#[derive(Debug, Object)]
#[oai(rename = "TransferRequest", rename_all = "camelCase")]
pub struct TransferRequest {
    /// The user id of the new holder: 1 or more, not your own. Users are
    /// not registered anywhere (a user id is whatever a token names), so
    /// any such id is someone.
    pub to_user: i64,
}

/// A scan at the door.
#[derive(Debug, Object)]
#[oai(rename = "CheckInRequest", rename_all = "camelCase")]
pub struct CheckInRequest {
    /// The code scanned: a ticket's `code` (compact JWS).
    #[oai(validator(max_length = 4096))]
    pub code: JsonString,
    /// The door it was scanned at, 1–64 characters.
    #[oai(validator(min_length = 1, max_length = 64))]
    pub gate: JsonString,
    /// The show this door admits to, if the scanner knows it: a code of
    /// another schedule is then refused (409 `wrong_schedule`).
    pub schedule_id: Option<i64>,
}

/// A ticket admitted.
#[derive(Debug, Object)]
#[oai(rename = "CheckIn", rename_all = "camelCase")]
pub struct CheckInBody {
    pub ticket_id: i64,
    /// The seat's id.
    pub seat: i64,
    /// The holder's user id.
    pub holder: i64,
    pub schedule_id: i64,
    /// The gate of this, the first, scan.
    pub gate: String,
    /// When it was admitted.
    pub at: DateTime<Utc>,
}

fn check_in_body(admitted: CheckIn) -> CheckInBody {
    CheckInBody {
        ticket_id: admitted.ticket.value(),
        seat: admitted.seat.value(),
        holder: admitted.holder.value(),
        schedule_id: admitted.schedule.value(),
        gate: admitted.scan.gate,
        at: admitted.scan.at,
    }
}

/// A ticket as the door sees it.
#[derive(Debug, Clone, Copy, Enum)]
#[oai(rename = "DoorStatus", rename_all = "snake_case")]
pub enum DoorStatusBody {
    /// Admits its holder once.
    Valid,
    /// Cancelled: admits nobody.
    Void,
    /// Admitted already.
    CheckedIn,
}

/// One line of a schedule's check-in list.
#[derive(Debug, Object)]
#[oai(rename = "CheckInListItem", rename_all = "camelCase")]
pub struct CheckInListItem {
    pub ticket_id: i64,
    /// Only a code of this version admits.
    pub version: u32,
    pub status: DoorStatusBody,
}

fn list_item(t: Ticket) -> CheckInListItem {
    CheckInListItem {
        ticket_id: t.id.value(),
        version: t.version,
        status: match t.at_the_door() {
            AtTheDoor::Valid => DoorStatusBody::Valid,
            AtTheDoor::Void => DoorStatusBody::Void,
            AtTheDoor::CheckedIn => DoorStatusBody::CheckedIn,
        },
    }
}

/// A page of a schedule's check-in list.
#[derive(Debug, Object)]
#[oai(
    rename = "CheckInListPage",
    rename_all = "camelCase",
    skip_serializing_if_is_none
)]
pub struct CheckInListPage {
    pub items: Vec<CheckInListItem>,
    /// Pass as `after` (with the same `since`, if any) to read the next
    /// page; absent on the last page.
    pub next_cursor: Option<i64>,
    /// On the first page of a pass (no `after`) only: once every page of
    /// the pass is read, pass it as `since` to read what changed after.
    pub since_cursor: Option<i64>,
}

/// One scan made offline.
#[derive(Debug, Object)]
#[oai(rename = "OfflineScan", rename_all = "camelCase")]
pub struct OfflineScanBody {
    /// The code scanned: a ticket's `code` (compact JWS).
    #[oai(validator(max_length = 4096))]
    pub code: JsonString,
    /// The door it was scanned at, 1–64 characters.
    #[oai(validator(min_length = 1, max_length = 64))]
    pub gate: JsonString,
    /// When it was scanned, by the scanner's clock (RFC 3339); kept to the
    /// microsecond.
    pub scanned_at: DateTime<Utc>,
}

/// An upload of scans made offline.
#[derive(Debug, Object)]
#[oai(rename = "CheckInBatchRequest", rename_all = "camelCase")]
pub struct CheckInBatchRequest {
    /// 1 to 500 scans, in any order.
    #[oai(validator(min_items = 1, max_items = 500))]
    pub scans: Vec<OfflineScanBody>,
    /// The show these doors admit to, if the scanner knows it: a code of
    /// another schedule is then `wrong_schedule`.
    pub schedule_id: Option<i64>,
}

/// What became of one scan.
#[derive(Debug, Clone, Copy, Enum)]
#[oai(rename = "OfflineScanResult", rename_all = "snake_case")]
pub enum ScanResultKind {
    /// This scan is the ticket's first (`gate`, `at`: this scan).
    Admitted,
    /// An earlier scan is the first (`gate`, `at`: that scan's).
    AlreadyCheckedIn,
    /// Not a code this server signed.
    InvalidCode,
    /// `scannedAt` is more than five minutes ahead of the server's clock.
    InvalidScanTime,
    /// The code of an older version: the ticket was re-issued.
    TicketSuperseded,
    /// The ticket was cancelled.
    TicketVoid,
    /// The code is for another schedule than `scheduleId`.
    WrongSchedule,
    /// A signed code of no ticket.
    NotFound,
}

/// One scan's answer.
#[derive(Debug, Object)]
#[oai(
    rename = "OfflineScanAnswer",
    rename_all = "camelCase",
    skip_serializing_if_is_none
)]
pub struct ScanAnswerBody {
    /// The code as uploaded.
    pub code: String,
    pub result: ScanResultKind,
    /// The ticket the code names, when it is a code this server signed.
    pub ticket_id: Option<i64>,
    /// `admitted` and `already_checked_in`: the gate of the ticket's first scan.
    pub gate: Option<String>,
    /// `admitted` and `already_checked_in`: the time of the ticket's first scan.
    pub at: Option<DateTime<Utc>>,
}

/// The answers, one a scan, in upload order.
#[derive(Debug, Object)]
#[oai(rename = "CheckInBatchAnswer")]
pub struct CheckInBatchBody {
    pub results: Vec<ScanAnswerBody>,
}

fn scan_answer(code: String, scanned: ScanResult) -> ScanAnswerBody {
    let (result, first) = match scanned.outcome {
        ScanOutcome::Admitted(first) => (ScanResultKind::Admitted, Some(first)),
        ScanOutcome::AlreadyCheckedIn(first) => (ScanResultKind::AlreadyCheckedIn, Some(first)),
        ScanOutcome::InvalidCode => (ScanResultKind::InvalidCode, None),
        ScanOutcome::InvalidScanTime => (ScanResultKind::InvalidScanTime, None),
        ScanOutcome::Superseded => (ScanResultKind::TicketSuperseded, None),
        ScanOutcome::Void => (ScanResultKind::TicketVoid, None),
        ScanOutcome::WrongSchedule => (ScanResultKind::WrongSchedule, None),
        ScanOutcome::NotFound => (ScanResultKind::NotFound, None),
    };
    let (gate, at) = first.map(|scan| (scan.gate, scan.at)).unzip();
    ScanAnswerBody {
        code,
        result,
        ticket_id: scanned.ticket.map(|id| id.value()),
        gate,
        at,
    }
}

/// Why the door refused a scan: the problem code the scanner heard.
#[derive(Debug, Clone, Copy, Enum)]
#[oai(rename = "RefusalReason", rename_all = "snake_case")]
pub enum RefusalReasonBody {
    InvalidCode,
    AlreadyCheckedIn,
    TicketSuperseded,
    TicketVoid,
    WrongSchedule,
    NotFound,
}

/// A refused scan.
#[derive(Debug, Object)]
#[oai(rename = "DoorRefusal", rename_all = "camelCase")]
pub struct RefusalBody {
    pub gate: String,
    pub reason: RefusalReasonBody,
    /// The ticket its code names; absent for a code that did not verify.
    pub ticket_id: Option<i64>,
    pub at: DateTime<Utc>,
}

fn refusal_body(r: Refusal) -> RefusalBody {
    RefusalBody {
        gate: r.gate,
        reason: match r.reason {
            RefusalReason::InvalidCode => RefusalReasonBody::InvalidCode,
            RefusalReason::AlreadyCheckedIn => RefusalReasonBody::AlreadyCheckedIn,
            RefusalReason::TicketSuperseded => RefusalReasonBody::TicketSuperseded,
            RefusalReason::TicketVoid => RefusalReasonBody::TicketVoid,
            RefusalReason::WrongSchedule => RefusalReasonBody::WrongSchedule,
            RefusalReason::NotFound => RefusalReasonBody::NotFound,
        },
        ticket_id: r.ticket.map(TicketId::value),
        at: r.at,
    }
}

/// The check-ins at one gate.
#[derive(Debug, Object)]
#[oai(rename = "DoorGate", rename_all = "camelCase")]
pub struct GateBody {
    pub gate: String,
    /// Tickets admitted at this gate.
    pub checked_in: u64,
    /// Check-ins within the last 60 seconds.
    pub last_minute: u64,
    /// Check-ins in each of the last 15 minutes, oldest first (the last
    /// is `lastMinute`).
    pub per_minute: Vec<u64>,
}

fn gate_body(g: GateCount) -> GateBody {
    GateBody {
        last_minute: g.last_minute(),
        gate: g.gate,
        checked_in: g.checked_in,
        per_minute: g.per_minute,
    }
}

/// A schedule's door.
#[derive(Debug, Object)]
#[oai(rename = "Door", rename_all = "camelCase")]
pub struct DoorBody {
    pub schedule_id: i64,
    /// Tickets that admit (valid ones).
    pub tickets_sold: u64,
    /// Tickets admitted.
    pub checked_in: u64,
    /// By gate name.
    pub gates: Vec<GateBody>,
    /// Every gate's check-ins in each of the last 15 minutes, oldest
    /// first.
    pub checkins_per_minute: Vec<u64>,
    /// The last 20 refused scans, newest first.
    pub recent_refusals: Vec<RefusalBody>,
}

fn door_body(v: DoorView) -> DoorBody {
    DoorBody {
        schedule_id: v.schedule.value(),
        tickets_sold: v.sold,
        checked_in: v.checked_in,
        gates: v.gates.into_iter().map(gate_body).collect(),
        checkins_per_minute: v.per_minute,
        recent_refusals: v.recent_refusals.into_iter().map(refusal_body).collect(),
    }
}

pub type TicketApi<P> = Unguarded<TicketService<P>>;

crate::refusals! {
    QrRefusals {
        400: [validation_failed],
        401: [unauthorized],
        404: [not_found],
        410: [ticket_void],
    }
    DoorPage {
        400: [validation_failed],
        401: [unauthorized],
    }
    BatchRefusals {
        400: [validation_failed],
        401: [unauthorized],
        413: [payload_too_large],
        415: [unsupported_media_type],
    }
    TransferRefusals {
        400: [validation_failed],
        401: [unauthorized],
        404: [not_found],
        409: [already_checked_in, ticket_changed, ticket_void],
        413: [payload_too_large],
        415: [unsupported_media_type],
    }
    CheckInRefusals {
        400: [validation_failed],
        401: [unauthorized],
        404: [not_found],
        409: [already_checked_in, ticket_superseded, ticket_void, wrong_schedule],
        413: [payload_too_large],
        415: [unsupported_media_type],
        422: [invalid_code],
    }
}

#[OpenApi(tag = "ApiTags::Tickets")]
impl<P: TicketPorts> TicketApi<P> {
    /// The public keys ticket codes are signed with, as a JWK Set
    /// (`OKP`/`Ed25519`, by `kid`): what a scanner verifies codes with
    /// offline. No sign-in needed.
    #[oai(path = "/v1/tickets/keys", method = "get", operation_id = "ticketKeys")]
    async fn keys(&self) -> ApiResult<KeysResponse, Unrefused> {
        let keys = self.service.keys().await?;
        Ok(KeysResponse::Ok(
            Json(KeySetBody {
                keys: keys.into_iter().map(key_body).collect(),
            }),
            KEY_SET_CACHE_CONTROL.to_owned(),
        ))
    }

    /// Your tickets, valid and void, newest first.
    #[oai(
        path = "/v1/users/me/tickets",
        method = "get",
        operation_id = "myTickets"
    )]
    async fn mine(
        &self,
        auth: UserAuth,
        /// `nextCursor` of the previous page.
        after: Query<Option<i64>>,
        /// Page size, 1–100 (default 20).
        limit: PageSize<MAX_PAGE, 20>,
    ) -> ApiResult<Success<PageBody<TicketBody>>, UserPage> {
        let asked = PageRequest::asked(after.0, limit.get());
        let page = self.service.mine(auth.0.user_id, asked).await?;
        Ok(Success::page(page, body))
    }

    /// One of your tickets (404 for anyone else's).
    #[oai(path = "/v1/tickets/:id", method = "get", operation_id = "getTicket")]
    async fn get(&self, auth: UserAuth, id: Path<i64>) -> ApiResult<Success<TicketBody>, UserRead> {
        let ticket = self.service.get(TicketId(id.0), auth.0.user_id).await?;
        Ok(Success::json(body(ticket)))
    }

    /// Your ticket's code as a QR image to show at the door: SVG, or PNG
    /// with `Accept: image/png`. 404 for anyone else's ticket; 410
    /// `ticket_void` once the ticket was cancelled (it admits nobody).
    #[oai(
        path = "/v1/tickets/:id/qr",
        method = "get",
        operation_id = "getTicketQr"
    )]
    async fn qr(
        &self,
        auth: UserAuth,
        request: &poem::Request,
        id: Path<i64>,
    ) -> ApiResult<QrResponse, QrRefusals> {
        let accept = request
            .headers()
            .get(header::ACCEPT)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        let format = QrFormat::accepted(accept);
        let image = self
            .service
            .qr(TicketId(id.0), auth.0.user_id, format)
            .await?;
        Ok(QrResponse::Ok(match format {
            QrFormat::Svg => QrImage::Svg(Binary(image)),
            QrFormat::Png => QrImage::Png(Binary(image)),
        }))
    }

    /// Hands your ticket on to another user (`toUser`): in one step the
    /// ticket gets the next `version`, the new holder and a new `code`
    /// signed over both, answered here. The old code is refused at the
    /// door from now on (409 `ticket_superseded`), the check-in list shows
    /// the new version, and the ticket moves from your tickets to theirs.
    /// Refused: 400 `validation_failed` for a `toUser` below 1 or your own;
    /// 404 for anyone else's ticket; 409 `ticket_void` for a cancelled
    /// ticket, `already_checked_in` for one admitted at the door, and
    /// `ticket_changed` when a concurrent request changed it first (of two
    /// concurrent transfers exactly one wins).
    #[oai(
        path = "/v1/tickets/:id/transfer",
        method = "post",
        operation_id = "transferTicket"
    )]
    async fn transfer(
        &self,
        auth: UserAuth,
        id: Path<i64>,
        request: Json<TransferRequest>,
    ) -> ApiResult<Success<TicketBody>, TransferRefusals> {
        let moved = (self.service)
            .transfer(TicketId(id.0), auth.0.user_id, UserId(request.to_user))
            .await?;
        Ok(Success::json(body(moved)))
    }

    /// Admits a ticket at the door (staff or admin token): its code is
    /// verified against the keys of `GET /v1/tickets/keys`, and the first
    /// scan of a ticket answers 200 with its seat and holder. Refused:
    /// 422 `invalid_code` for a code this server did not sign (forged,
    /// altered, unreadable); 404 for a signed code of no ticket; 409
    /// `already_checked_in` with the first scan's `gate` and `at`;
    /// 409 `ticket_superseded` for the code of an older version (the
    /// ticket was re-issued), `ticket_void` for a cancelled ticket, and
    /// `wrong_schedule` when `scheduleId` names another show. Of any
    /// number of concurrent scans of one ticket, exactly one is admitted.
    #[oai(path = "/v1/checkins", method = "post", operation_id = "checkIn")]
    async fn check_in(
        &self,
        _auth: ScannerAuth,
        body: Json<CheckInRequest>,
    ) -> ApiResult<Success<CheckInBody>, CheckInRefusals> {
        let gate = Gate::parse(&body.gate.0)?;
        let schedule = body.schedule_id.map(ScheduleId);
        let admitted = (self.service)
            .check_in(&body.code.0, &gate, schedule)
            .await?;
        Ok(Success::json(check_in_body(admitted)))
    }

    /// Uploads scans made offline (staff or admin token): 1 to 500 scans
    /// (more: 400), each answered on its own, in upload order. The
    /// earliest scan of a ticket is its first, whatever the order the
    /// scans arrive in: an offline scan earlier than a ticket's recorded
    /// first scan (online, or in an earlier upload) replaces it, and every
    /// later scan (of this upload or any after it, online too) is told
    /// `already_checked_in` with the earliest scan's `gate` and `at`. Of
    /// two scans of one code in an upload, the earlier is the one that
    /// may be admitted. A scan refused on its own: `invalid_code`,
    /// `invalid_scan_time` (more than five minutes ahead of the server's
    /// clock), `wrong_schedule` (with `scheduleId`), `ticket_superseded`,
    /// `ticket_void`, `not_found`. Uploading the same scans again is
    /// harmless and answers the same.
    #[oai(
        path = "/v1/checkins/batch",
        method = "post",
        operation_id = "checkInBatch"
    )]
    async fn check_in_batch(
        &self,
        _auth: ScannerAuth,
        body: Json<CheckInBatchRequest>,
    ) -> ApiResult<Success<CheckInBatchBody>, BatchRefusals> {
        let Json(body) = body;
        let scans = (body.scans.iter())
            .map(|scan| {
                Ok(OfflineScan {
                    code: scan.code.0.clone(),
                    gate: Gate::parse(&scan.gate.0)?,
                    at: scan.scanned_at,
                })
            })
            .collect::<Result<Vec<_>, TicketError>>()?;
        debug_assert!(scans.len() <= MAX_BATCH);
        let schedule = body.schedule_id.map(ScheduleId);
        let results = self.service.check_in_batch(&scans, schedule).await?;
        let codes = body.scans.into_iter().map(|scan| scan.code.0);
        Ok(Success::json(CheckInBatchBody {
            results: codes.zip(results).map(|(c, r)| scan_answer(c, r)).collect(),
        }))
    }

    /// A schedule's tickets for a scanner that checks codes offline
    /// (staff or admin token): each ticket's id, the version whose code
    /// admits, and whether it is `valid`, `void` or `checked_in`; oldest
    /// first, paged by `nextCursor`. A schedule without tickets lists none.
    /// The first page of a pass also answers `sinceCursor`: once the pass
    /// is read, `?since=<sinceCursor>` lists only the tickets changed
    /// since (issued, voided, checked in, re-issued), paged the same way,
    /// with a `sinceCursor` for the poll after. A poll may list a ticket
    /// again that an earlier one listed (changes are read with a
    /// two-minute overlap, so a change committed late is never missed):
    /// apply each line as the ticket's current state.
    #[oai(
        path = "/v1/schedules/:id/checkin-list",
        method = "get",
        operation_id = "checkInList"
    )]
    async fn checkin_list(
        &self,
        _auth: ScannerAuth,
        id: Path<i64>,
        /// `nextCursor` of the previous page.
        after: Query<Option<i64>>,
        /// `sinceCursor` of an earlier pass: only the tickets changed since.
        since: Query<Option<i64>>,
        /// Page size, 1–1000 (default 500).
        limit: PageSize<MAX_DOOR_PAGE, 500>,
    ) -> ApiResult<Success<CheckInListPage>, DoorPage> {
        let asked = PageRequest::asked(after.0, limit.get());
        let since = since.0.map(ChangeCursor);
        let (page, next) = (self.service)
            .checkin_list(ScheduleId(id.0), since, asked)
            .await?;
        let page = page.map(list_item);
        Ok(Success::json(CheckInListPage {
            items: page.items,
            next_cursor: page.next_cursor,
            since_cursor: next.map(|cursor| cursor.0),
        }))
    }

    /// A schedule's door for operators: tickets sold and admitted, per
    /// gate with its check-ins of the last 15 minutes, and the last 20
    /// refused scans with their reason. 404 for an unknown schedule.
    #[oai(
        path = "/v1/admin/schedules/:id/door",
        method = "get",
        operation_id = "scheduleDoor",
        tag = "ApiTags::Admin"
    )]
    async fn door(
        &self,
        _auth: AdminAuth,
        id: Path<i64>,
    ) -> ApiResult<Success<DoorBody>, AdminRead> {
        let view = self.service.door(ScheduleId(id.0)).await?;
        Ok(Success::json(door_body(view)))
    }
}

impl From<TicketError> for Problem {
    fn from(err: TicketError) -> Self {
        match err {
            TicketError::NotFound(_) | TicketError::ScheduleNotFound(_) => {
                Problem::not_found(err.to_string())
            }
            TicketError::Void(_) => Problem::new(StatusCode::GONE, "ticket_void", err.to_string()),
            TicketError::Invalid(_) => Problem::validation(err.to_string()),
            TicketError::Forged => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_code",
                err.to_string(),
            ),
            TicketError::VoidCode(_) => Problem::conflict("ticket_void", err.to_string()),
            TicketError::Superseded(_) => Problem::conflict("ticket_superseded", err.to_string()),
            TicketError::Changed(_) => Problem::conflict("ticket_changed", err.to_string()),
            TicketError::WrongSchedule { .. } => {
                Problem::conflict("wrong_schedule", err.to_string())
            }
            TicketError::AlreadyCheckedIn(ref first) => {
                Problem::conflict("already_checked_in", err.to_string()).with(ProblemDetails {
                    gate: Some(first.gate.clone()),
                    at: Some(first.at),
                    ..ProblemDetails::default()
                })
            }
            TicketError::Fault(fault) => Problem::fault("ticket store", &fault),
        }
    }
}
