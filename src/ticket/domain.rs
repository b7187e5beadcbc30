//! What a ticket is, what its code says, and what the saga's two events do
//! to it.

use std::collections::HashMap;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::kernel::{
    Fault, ReservationId, ScheduleId, SeatId, TicketId, UserId,
    events::{
        NewEvent, ReservationChanged, TicketCheckedIn, TicketIssued, TicketTransferred, types,
    },
};

/// The consumer group that issues and voids tickets.
pub const TICKETS_CONSUMER: &str = "tickets";
/// A holder's list of tickets: at most 100 a page.
pub const MAX_PAGE: u64 = 100;
/// A schedule's check-in list for offline scanners: at most 1000 a page.
pub const MAX_DOOR_PAGE: u64 = 1000;
/// The version a ticket is issued with (a transfer re-issues it with the
/// next one).
pub const FIRST_VERSION: u32 = 1;

/// A ticket's status; the database column holds these names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::EnumString, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum TicketStatus {
    /// Admits its holder.
    Valid,
    /// Cancelled (refunded, or its schedule cancelled): admits nobody.
    Void,
}

crate::kernel::stored_name!(TicketStatus);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub id: TicketId,
    pub reservation: ReservationId,
    pub holder: UserId,
    pub schedule: ScheduleId,
    pub seat: SeatId,
    pub version: u32,
    pub status: TicketStatus,
    pub code: SignedCode,
    pub issued_at: DateTime<Utc>,
    /// The first scan at the door, once there was one.
    pub checked_in: Option<Scan>,
}

impl Ticket {
    /// What its code says.
    pub fn claims(&self) -> TicketClaims {
        TicketClaims {
            tid: self.id.value(),
            sch: self.schedule.value(),
            seat: self.seat.value(),
            sub: self.holder.value(),
            ver: self.version,
        }
    }

    /// What an offline scanner needs to know of it.
    pub fn at_the_door(&self) -> AtTheDoor {
        match (self.status, &self.checked_in) {
            (TicketStatus::Void, _) => AtTheDoor::Void,
            (TicketStatus::Valid, Some(_)) => AtTheDoor::CheckedIn,
            (TicketStatus::Valid, None) => AtTheDoor::Valid,
        }
    }

    /// The code to draw as a QR image: a void ticket's code admits nobody,
    /// so it is not handed out as an image.
    pub fn admitting_code(&self) -> Result<&str, TicketError> {
        match self.status {
            TicketStatus::Valid => Ok(&self.code.code),
            TicketStatus::Void => Err(TicketError::Void(self.id)),
        }
    }

    /// The event of a change of this ticket (`TicketIssued`, `TicketVoided`).
    pub fn event(&self, event_type: &'static str) -> NewEvent {
        NewEvent::new(
            event_type,
            "ticket",
            self.id,
            &TicketIssued {
                ticket_id: self.id.value(),
                reservation_id: self.reservation.value(),
                user_id: self.holder.value(),
                schedule_id: self.schedule.value(),
                seat_id: self.seat.value(),
                version: self.version,
                kid: self.code.kid.clone(),
            },
        )
    }
}

/// Whether the holder may hand `ticket` on to `to`: another user (a user id
/// is whatever a token names, so any id from 1 on is someone), and only a
/// valid ticket not yet admitted at the door.
pub fn may_transfer(ticket: &Ticket, to: UserId) -> Result<(), TicketError> {
    if to.value() < 1 {
        return Err(TicketError::Invalid(format!(
            "toUser: a user id, 1 or more; got {to}"
        )));
    }
    if to == ticket.holder {
        return Err(TicketError::Invalid(
            "toUser: the ticket is yours already; name another user".into(),
        ));
    }
    transferable(ticket)
}

/// Whether `ticket` may change hands at all: valid and not yet admitted
/// (409 `ticket_void` or `already_checked_in` otherwise).
pub fn transferable(ticket: &Ticket) -> Result<(), TicketError> {
    match ticket.at_the_door() {
        AtTheDoor::Valid => Ok(()),
        AtTheDoor::Void => Err(TicketError::VoidCode(ticket.id)),
        AtTheDoor::CheckedIn => Err(refusal(&ticket.claims(), Some(ticket))),
    }
}

impl Ticket {
    /// The ticket handed on to `to`: the next version, whose code (`code`,
    /// signed over [`Ticket::claims`] of the result) replaces the old one.
    pub fn handed_to(&self, to: UserId) -> Ticket {
        Ticket {
            holder: to,
            version: self.version + 1,
            ..self.clone()
        }
    }

    /// `TicketTransferred` of this ticket, handed on from `from`.
    pub fn transferred_from(&self, from: UserId) -> NewEvent {
        NewEvent::new(
            types::TICKET_TRANSFERRED,
            "ticket",
            self.id,
            &TicketTransferred {
                ticket_id: self.id.value(),
                reservation_id: self.reservation.value(),
                from_user_id: from.value(),
                to_user_id: self.holder.value(),
                schedule_id: self.schedule.value(),
                seat_id: self.seat.value(),
                version: self.version,
                kid: self.code.kid.clone(),
            },
        )
    }
}

/// A ticket about to be stored: what the saga knows of the seat sold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTicket {
    pub reservation: ReservationId,
    pub holder: UserId,
    pub schedule: ScheduleId,
    pub seat: SeatId,
    pub status: TicketStatus,
}

impl NewTicket {
    /// The ticket of the reservation an event names, in `status`.
    pub fn of(sold: &ReservationChanged, status: TicketStatus) -> Self {
        Self {
            reservation: ReservationId(sold.reservation_id),
            holder: UserId(sold.user_id),
            schedule: ScheduleId(sold.schedule_id),
            seat: SeatId(sold.seat_id),
            status,
        }
    }

    /// The ticket it becomes once stored with its id and code.
    pub fn stored(self, id: TicketId, code: SignedCode, issued_at: DateTime<Utc>) -> Ticket {
        Ticket {
            id,
            reservation: self.reservation,
            holder: self.holder,
            schedule: self.schedule,
            seat: self.seat,
            version: FIRST_VERSION,
            status: self.status,
            code,
            issued_at,
            checked_in: None,
        }
    }

    /// What the code of the ticket stored with `id` says.
    pub fn claims(&self, id: TicketId) -> TicketClaims {
        TicketClaims {
            tid: id.value(),
            sch: self.schedule.value(),
            seat: self.seat.value(),
            sub: self.holder.value(),
            ver: FIRST_VERSION,
        }
    }
}

/// What a code says: which ticket, for which show and seat, whose, and
/// which version (a transfer re-issues the ticket with the next one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketClaims {
    /// The ticket's id.
    pub tid: i64,
    /// The schedule (the show) it admits to.
    pub sch: i64,
    pub seat: i64,
    /// The holder's user id.
    pub sub: i64,
    pub ver: u32,
}

/// A code as signed: the compact JWS and the id of the key that signed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCode {
    pub code: String,
    pub kid: String,
}

/// The public half of a signing key, as a scanner needs it: its id (the
/// RFC 7638 thumbprint) and its Ed25519 point, base64url.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub kid: String,
    pub x: String,
}

/// A stored signing key, as far as choosing one goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// Keys are numbered in the order they were made.
    pub generation: i64,
    pub retired: bool,
}

/// Which stored keys sign and verify: the newest key not retired signs;
/// every key not retired verifies, newest first, so codes signed before a
/// rotation stay valid. `None`: no usable key is stored yet.
pub fn key_choice(keys: &[KeyRecord]) -> Option<Vec<i64>> {
    let mut usable: Vec<i64> = keys
        .iter()
        .filter(|key| !key.retired)
        .map(|key| key.generation)
        .collect();
    usable.sort_unstable_by(|a, b| b.cmp(a));
    (!usable.is_empty()).then_some(usable)
}

/// Why `boxoffice ticket-keys retire` refuses a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RetireRefusal {
    #[error("no stored ticket key has that kid")]
    Unknown,
    #[error("that ticket key is retired already")]
    AlreadyRetired,
    #[error(
        "that key signs the codes issued now: run `boxoffice ticket-keys rotate` first, so \
         another key signs, then retire this one"
    )]
    Signing,
}

/// Whether the stored key `generation` (`None`: no key has the kid asked
/// for) may be retired. Retiring makes its codes fail at every door, so
/// the key that signs now is refused: rotate first, then retire it.
pub fn may_retire(keys: &[KeyRecord], generation: Option<i64>) -> Result<i64, RetireRefusal> {
    let generation = generation.ok_or(RetireRefusal::Unknown)?;
    let key = keys
        .iter()
        .find(|key| key.generation == generation)
        .ok_or(RetireRefusal::Unknown)?;
    if key.retired {
        return Err(RetireRefusal::AlreadyRetired);
    }
    match key_choice(keys) {
        Some(usable) if usable.first() == Some(&generation) => Err(RetireRefusal::Signing),
        _ => Ok(generation),
    }
}

/// What a `ReservationConfirmed` does to the reservation's ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnSold {
    /// None yet: issue it.
    Issue,
    /// A redelivery, or the cancellation got here first (the ticket is
    /// void already): nothing to do.
    AlreadyThere,
}

pub fn on_sold(existing: Option<&Ticket>) -> OnSold {
    match existing {
        None => OnSold::Issue,
        Some(_) => OnSold::AlreadyThere,
    }
}

/// What a `TicketCancelled` does to the reservation's ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnCancelled {
    /// It becomes void.
    Void(TicketId),
    /// Not issued yet (the cancellation overtook the sale, e.g. resent by
    /// the delivery audit): it is recorded void now, so the issue that
    /// follows finds it and issues nothing.
    RecordVoid,
    /// Void already: a redelivery.
    AlreadyVoid,
}

pub fn on_cancelled(existing: Option<&Ticket>) -> OnCancelled {
    match existing {
        None => OnCancelled::RecordVoid,
        Some(ticket) if ticket.status == TicketStatus::Void => OnCancelled::AlreadyVoid,
        Some(ticket) => OnCancelled::Void(ticket.id),
    }
}

/// A ticket as the door sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtTheDoor {
    /// Admits its holder once.
    Valid,
    /// Cancelled: admits nobody.
    Void,
    /// Admitted already.
    CheckedIn,
}

/// A door's name, as a scanner sends it: 1 to 64 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gate(String);

impl Gate {
    pub const MAX_CHARS: usize = 64;

    pub fn parse(name: &str) -> Result<Self, TicketError> {
        let chars = name.chars().count();
        if (1..=Self::MAX_CHARS).contains(&chars) {
            Ok(Self(name.to_owned()))
        } else {
            Err(TicketError::Invalid(format!(
                "gate: 1 to {} characters, got {chars}",
                Self::MAX_CHARS
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A scan at the door: where and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    pub gate: String,
    pub at: DateTime<Utc>,
}

/// A ticket admitted: what its code says and the scan that admitted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckIn {
    pub ticket: TicketId,
    pub holder: UserId,
    pub schedule: ScheduleId,
    pub seat: SeatId,
    pub version: u32,
    pub scan: Scan,
}

impl CheckIn {
    /// The admission a verified code asks for.
    pub fn of(claims: &TicketClaims, scan: Scan) -> Self {
        Self {
            ticket: TicketId(claims.tid),
            holder: UserId(claims.sub),
            schedule: ScheduleId(claims.sch),
            seat: SeatId(claims.seat),
            version: claims.ver,
            scan,
        }
    }

    /// `TicketCheckedIn` of a scan at the door.
    pub fn event(&self) -> NewEvent {
        self.event_of(false)
    }

    /// `TicketCheckedIn`, saying whether the scan was made offline.
    pub fn event_of(&self, offline: bool) -> NewEvent {
        NewEvent::new(
            types::TICKET_CHECKED_IN,
            "ticket",
            self.ticket,
            &TicketCheckedIn {
                ticket_id: self.ticket.value(),
                user_id: self.holder.value(),
                schedule_id: self.schedule.value(),
                seat_id: self.seat.value(),
                version: self.version,
                gate: self.scan.gate.clone(),
                checked_in_at: self.scan.at,
                offline,
            },
        )
    }
}

/// Why a verified code whose check-in changed nothing admits nobody, from
/// the ticket as it is now: void before superseded before already checked
/// in, so the scanner hears the reason that outlasts the others.
pub fn refusal(claims: &TicketClaims, now: Option<&Ticket>) -> TicketError {
    let id = TicketId(claims.tid);
    match now {
        None => TicketError::NotFound(id),
        Some(ticket) if ticket.status == TicketStatus::Void => TicketError::VoidCode(id),
        Some(ticket) if ticket.version != claims.ver => TicketError::Superseded(id),
        Some(Ticket {
            checked_in: Some(first),
            ..
        }) => TicketError::AlreadyCheckedIn(Box::new(first.clone())),
        // Nothing stops this code now (a change undone between the update
        // and this read): the scanner may scan it again.
        Some(_) => TicketError::Fault(Fault::conflict(format!(
            "ticket {id} changed while it was scanned"
        ))),
    }
}

/// An upload of offline scans holds 1 to 500 of them.
pub const MAX_BATCH: usize = 500;
/// The body of such an upload may be this large (500 scans of long codes):
/// larger than the limit of other requests.
pub const BATCH_BODY_LIMIT: usize = 1024 * 1024;
/// How far a scanner's clock may run ahead of the server's: a scan time
/// further in the future than this is refused (`invalid_scan_time`).
pub const SCAN_CLOCK_SKEW: TimeDelta = TimeDelta::minutes(5);

/// A scan made offline, as uploaded: the code, the gate and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfflineScan {
    pub code: String,
    pub gate: Gate,
    pub at: DateTime<Utc>,
}

/// What became of one uploaded scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanOutcome {
    /// This scan is the ticket's first (the earliest known).
    Admitted(Scan),
    /// An earlier scan (online, or offline in this or another upload) is
    /// the first: its gate and time.
    AlreadyCheckedIn(Scan),
    /// Not a code this server signed.
    InvalidCode,
    /// Scanned further in the future than [`SCAN_CLOCK_SKEW`].
    InvalidScanTime,
    Superseded,
    Void,
    WrongSchedule,
    NotFound,
}

/// One uploaded scan's answer: its ticket when the code names one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanResult {
    pub ticket: Option<TicketId>,
    pub outcome: ScanOutcome,
}

/// Why a scan is refused before anything is read or written: a code not
/// signed here, a scan time in the future, a code of another show.
pub fn screen_scan(
    claims: Option<&TicketClaims>,
    at: DateTime<Utc>,
    now: DateTime<Utc>,
    schedule: Option<ScheduleId>,
) -> Result<&TicketClaims, ScanOutcome> {
    let Some(claims) = claims else {
        return Err(ScanOutcome::InvalidCode);
    };
    if at > now + SCAN_CLOCK_SKEW {
        return Err(ScanOutcome::InvalidScanTime);
    }
    if schedule.is_some_and(|s| s.value() != claims.sch) {
        return Err(ScanOutcome::WrongSchedule);
    }
    Ok(claims)
}

/// Of the scans kept (by their index in the upload, with their code and
/// time), the one of each code that may become its ticket's first: the
/// earliest, and of two at the same time the one uploaded first.
pub fn earliest_per_code<'a>(
    kept: impl IntoIterator<Item = (usize, &'a str, DateTime<Utc>)>,
) -> Vec<usize> {
    let mut first: HashMap<&str, (DateTime<Utc>, usize)> = HashMap::new();
    for (index, code, at) in kept {
        first
            .entry(code)
            .and_modify(|seen| *seen = (*seen).min((at, index)))
            .or_insert((at, index));
    }
    let mut chosen: Vec<usize> = first.into_values().map(|(_, index)| index).collect();
    chosen.sort_unstable();
    chosen
}

/// What an uploaded scan of a verified code became, from the ticket as it
/// is once the upload's check-ins are written: admitted when the ticket's
/// first scan is this one (and it was its code's earliest in the upload),
/// otherwise the reason a scan of the code admits nobody now.
pub fn scan_outcome(
    claims: &TicketClaims,
    scan: &Scan,
    earliest: bool,
    now: Option<&Ticket>,
) -> Result<ScanOutcome, TicketError> {
    if let Some(ticket) = now
        && earliest
        && ticket.status == TicketStatus::Valid
        && ticket.version == claims.ver
        && ticket.checked_in.as_ref() == Some(scan)
    {
        return Ok(ScanOutcome::Admitted(scan.clone()));
    }
    match refusal(claims, now) {
        TicketError::NotFound(_) => Ok(ScanOutcome::NotFound),
        TicketError::VoidCode(_) => Ok(ScanOutcome::Void),
        TicketError::Superseded(_) => Ok(ScanOutcome::Superseded),
        TicketError::AlreadyCheckedIn(first) => Ok(ScanOutcome::AlreadyCheckedIn(*first)),
        other => Err(other),
    }
}

/// How far back a change cursor reaches before the time it names: a
/// change is stamped with its writer's clock before its transaction
/// commits, so a poll may miss a change stamped just before it that
/// committed just after; the next poll, reaching this far back, reads it
/// (a change read twice is harmless).
pub const CHANGE_OVERLAP: TimeDelta = TimeDelta::minutes(2);

/// A position in a schedule's changes: the server's time (microseconds
/// since the epoch) when a pass over its check-in list began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeCursor(pub i64);

impl ChangeCursor {
    pub fn at(now: DateTime<Utc>) -> Self {
        Self(now.timestamp_micros())
    }

    /// The changes to read for it: those stamped at or after this time.
    pub fn changed_from(self) -> Result<DateTime<Utc>, TicketError> {
        DateTime::from_timestamp_micros(self.0)
            .filter(|_| self.0 >= 0)
            .map(|at| at - CHANGE_OVERLAP)
            .ok_or_else(|| TicketError::Invalid(format!("since: no such cursor {}", self.0)))
    }
}

/// Which image of a code a client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QrFormat {
    Svg,
    Png,
}

impl QrFormat {
    /// The format an `Accept` header asks for: PNG when it names
    /// `image/png` before `image/svg+xml`, SVG otherwise.
    pub fn accepted(accept: &str) -> Self {
        let accept = accept.to_ascii_lowercase();
        match (accept.find("image/png"), accept.find("image/svg+xml")) {
            (Some(png), Some(svg)) if png < svg => Self::Png,
            (Some(_), None) => Self::Png,
            _ => Self::Svg,
        }
    }
}

/// Why the door refused a scan: the problem code the scanner heard, which
/// the table of refusals holds too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::EnumString, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum RefusalReason {
    InvalidCode,
    AlreadyCheckedIn,
    TicketSuperseded,
    TicketVoid,
    WrongSchedule,
    NotFound,
}

crate::kernel::stored_name!(RefusalReason);

/// A refused scan, as operators see it at the door.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The show of the door (or, scanned without one, of the code);
    /// unknown for a forged code scanned without a schedule.
    pub schedule: Option<ScheduleId>,
    pub gate: String,
    pub reason: RefusalReason,
    /// The ticket its code names, once the code verified.
    pub ticket: Option<TicketId>,
    pub at: DateTime<Utc>,
}

impl Refusal {
    /// The refusal of a scan at `gate` that was answered `err`, with the
    /// claims of its code if it verified; `None` when `err` says nothing
    /// of the code (a store outage is no refusal).
    pub fn of(
        err: &TicketError,
        claims: Option<&TicketClaims>,
        gate: &Gate,
        scanning: Option<ScheduleId>,
        at: DateTime<Utc>,
    ) -> Option<Self> {
        let reason = match err {
            TicketError::Forged => RefusalReason::InvalidCode,
            TicketError::AlreadyCheckedIn(_) => RefusalReason::AlreadyCheckedIn,
            TicketError::Superseded(_) => RefusalReason::TicketSuperseded,
            TicketError::VoidCode(_) | TicketError::Void(_) => RefusalReason::TicketVoid,
            TicketError::WrongSchedule { .. } => RefusalReason::WrongSchedule,
            TicketError::NotFound(_) => RefusalReason::NotFound,
            TicketError::Invalid(_)
            | TicketError::Changed(_)
            | TicketError::ScheduleNotFound(_)
            | TicketError::Fault(_) => {
                return None;
            }
        };
        Some(Self {
            schedule: scanning.or(claims.map(|c| ScheduleId(c.sch))),
            gate: gate.as_str().to_owned(),
            reason,
            ticket: claims.map(|c| TicketId(c.tid)),
            at,
        })
    }
}

/// The minutes of check-ins the door view counts, one window each.
pub const DOOR_MINUTES: usize = 15;
/// The refusals the door view lists, newest first.
pub const RECENT_REFUSALS: u64 = 20;
/// How long a refusal is kept: the door view shows the last few, and a
/// show's doors close within hours.
pub const REFUSAL_RETENTION: chrono::TimeDelta = chrono::TimeDelta::hours(24);

/// One minute of check-ins: after `after`, up to and including `until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub after: DateTime<Utc>,
    pub until: DateTime<Utc>,
}

impl Window {
    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        self.after < at && at <= self.until
    }
}

/// The last [`DOOR_MINUTES`] minutes up to `now`, oldest first (the last
/// ends at `now`). Bound as plain times, so every engine counts a window
/// the same way.
pub fn minute_windows(now: DateTime<Utc>) -> Vec<Window> {
    (0..DOOR_MINUTES as i64)
        .rev()
        .map(|ago| {
            let until = now - chrono::TimeDelta::minutes(ago);
            Window {
                after: until - chrono::TimeDelta::minutes(1),
                until,
            }
        })
        .collect()
}

/// The check-ins at one gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateCount {
    pub gate: String,
    pub checked_in: u64,
    /// Per window of [`minute_windows`], oldest first.
    pub per_minute: Vec<u64>,
}

impl GateCount {
    /// Check-ins within the minute before now.
    pub fn last_minute(&self) -> u64 {
        self.per_minute.last().copied().unwrap_or(0)
    }
}

/// What the store counts of a schedule's tickets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoorCounts {
    /// Tickets that admit (valid ones).
    pub sold: u64,
    /// Tickets admitted, by gate.
    pub gates: Vec<GateCount>,
}

/// A schedule's door: tickets sold, admitted, per gate and minute, and the
/// latest refusals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoorView {
    pub schedule: ScheduleId,
    pub sold: u64,
    pub checked_in: u64,
    /// By gate name.
    pub gates: Vec<GateCount>,
    /// Every gate's check-ins per window, oldest first.
    pub per_minute: Vec<u64>,
    /// Newest first.
    pub recent_refusals: Vec<Refusal>,
}

impl DoorView {
    pub fn new(schedule: ScheduleId, counts: DoorCounts, recent_refusals: Vec<Refusal>) -> Self {
        let mut gates = counts.gates;
        gates.sort_by(|a, b| a.gate.cmp(&b.gate));
        let mut per_minute = vec![0; DOOR_MINUTES];
        for gate in &gates {
            for (total, n) in per_minute.iter_mut().zip(&gate.per_minute) {
                *total += n;
            }
        }
        Self {
            schedule,
            sold: counts.sold,
            checked_in: gates.iter().map(|g| g.checked_in).sum(),
            gates,
            per_minute,
            recent_refusals,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TicketError {
    #[error("ticket {0} does not exist")]
    NotFound(TicketId),
    #[error("ticket {0} is void: it was cancelled and admits nobody")]
    Void(TicketId),
    #[error("{0}")]
    Invalid(String),
    #[error("not a ticket code this server signed (forged, altered or unreadable)")]
    Forged,
    #[error("ticket {0} is void: it was cancelled and admits nobody")]
    VoidCode(TicketId),
    #[error("ticket {0} was re-issued: this code is an older version and admits nobody")]
    Superseded(TicketId),
    #[error("already checked in at gate {} at {}", .0.gate, .0.at)]
    AlreadyCheckedIn(Box<Scan>),
    #[error(
        "ticket {0} changed while it was being transferred (handed on, scanned or cancelled meanwhile); read it again"
    )]
    Changed(TicketId),
    #[error("the ticket is for schedule {code}, not schedule {scanning}")]
    WrongSchedule { code: i64, scanning: i64 },
    #[error("schedule {0} does not exist")]
    ScheduleNotFound(ScheduleId),
    #[error(transparent)]
    Fault(Fault),
}

crate::kernel::module_error!(TicketError);

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket(status: TicketStatus) -> Ticket {
        Ticket {
            id: TicketId(7),
            reservation: ReservationId(41),
            holder: UserId(3),
            schedule: ScheduleId(2),
            seat: SeatId(40),
            version: FIRST_VERSION,
            status,
            code: SignedCode {
                code: "a.b.c".into(),
                kid: "k".into(),
            },
            issued_at: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            checked_in: None,
        }
    }

    #[test]
    fn a_sale_issues_once() {
        assert_eq!(on_sold(None), OnSold::Issue);
        assert_eq!(
            on_sold(Some(&ticket(TicketStatus::Valid))),
            OnSold::AlreadyThere
        );
        assert_eq!(
            on_sold(Some(&ticket(TicketStatus::Void))),
            OnSold::AlreadyThere,
            "a ticket voided before its sale arrived stays void"
        );
    }

    #[test]
    fn a_cancellation_voids_once_even_before_the_issue() {
        assert_eq!(on_cancelled(None), OnCancelled::RecordVoid);
        assert_eq!(
            on_cancelled(Some(&ticket(TicketStatus::Valid))),
            OnCancelled::Void(TicketId(7))
        );
        assert_eq!(
            on_cancelled(Some(&ticket(TicketStatus::Void))),
            OnCancelled::AlreadyVoid
        );
    }

    #[test]
    fn a_void_ticket_has_no_admitting_code() {
        assert_eq!(
            ticket(TicketStatus::Valid).admitting_code().unwrap(),
            "a.b.c"
        );
        assert!(matches!(
            ticket(TicketStatus::Void).admitting_code(),
            Err(TicketError::Void(TicketId(7)))
        ));
    }

    #[test]
    fn the_claims_name_ticket_show_seat_holder_and_version() {
        assert_eq!(
            ticket(TicketStatus::Valid).claims(),
            TicketClaims {
                tid: 7,
                sch: 2,
                seat: 40,
                sub: 3,
                ver: 1
            }
        );
    }

    #[test]
    fn only_a_valid_unscanned_ticket_goes_to_another_user() {
        let valid = ticket(TicketStatus::Valid);
        assert!(may_transfer(&valid, UserId(4)).is_ok());
        for to in [UserId(0), UserId(-1), valid.holder] {
            assert!(
                matches!(may_transfer(&valid, to), Err(TicketError::Invalid(_))),
                "{to}"
            );
        }
        assert!(matches!(
            may_transfer(&ticket(TicketStatus::Void), UserId(4)),
            Err(TicketError::VoidCode(TicketId(7)))
        ));
        let scanned = Ticket {
            checked_in: Some(Scan {
                gate: "north".into(),
                at: valid.issued_at,
            }),
            ..valid.clone()
        };
        assert!(matches!(
            may_transfer(&scanned, UserId(4)),
            Err(TicketError::AlreadyCheckedIn(first)) if first.gate == "north"
        ));
        let moved = valid.handed_to(UserId(4));
        assert_eq!((moved.holder, moved.version), (UserId(4), 2));
        assert_eq!((moved.claims().sub, moved.claims().ver), (4, 2));
    }

    #[test]
    fn the_newest_unretired_key_signs_and_every_unretired_one_verifies() {
        let key = |generation, retired| KeyRecord {
            generation,
            retired,
        };
        assert_eq!(key_choice(&[]), None);
        assert_eq!(key_choice(&[key(1, true)]), None);
        assert_eq!(
            key_choice(&[key(1, false), key(3, false), key(2, true)]),
            Some(vec![3, 1])
        );
    }

    #[test]
    fn an_older_key_retires_but_the_signing_one_only_after_a_rotation() {
        let key = |generation, retired| KeyRecord {
            generation,
            retired,
        };
        let keys = [key(1, false), key(2, false), key(3, true)];
        assert_eq!(may_retire(&keys, Some(1)), Ok(1));
        assert_eq!(may_retire(&keys, Some(2)), Err(RetireRefusal::Signing));
        assert_eq!(
            may_retire(&keys, Some(3)),
            Err(RetireRefusal::AlreadyRetired)
        );
        assert_eq!(may_retire(&keys, Some(4)), Err(RetireRefusal::Unknown));
        assert_eq!(may_retire(&keys, None), Err(RetireRefusal::Unknown));
        assert_eq!(
            may_retire(&[key(1, false)], Some(1)),
            Err(RetireRefusal::Signing),
            "the only key signs"
        );
    }

    #[test]
    fn only_a_refusal_of_the_code_is_recorded() {
        let gate = Gate::parse("north").unwrap();
        let at = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let claims = ticket(TicketStatus::Valid).claims();
        let outage = TicketError::Fault(Fault::conflict("the store moved on"));
        let bad_request = TicketError::Invalid("gate".into());
        for not_the_code in [outage, bad_request] {
            assert_eq!(
                Refusal::of(&not_the_code, Some(&claims), &gate, None, at),
                None
            );
        }
        let foreign = TicketError::WrongSchedule {
            code: 2,
            scanning: 9,
        };
        assert_eq!(
            Refusal::of(&foreign, Some(&claims), &gate, Some(ScheduleId(9)), at),
            Some(Refusal {
                schedule: Some(ScheduleId(9)),
                gate: "north".into(),
                reason: RefusalReason::WrongSchedule,
                ticket: Some(TicketId(7)),
                at,
            }),
            "the door that scanned it sees it"
        );
        let unknown = Refusal::of(&TicketError::Forged, None, &gate, None, at).unwrap();
        assert_eq!((unknown.schedule, unknown.ticket), (None, None));
    }

    #[test]
    fn png_only_when_asked_for_before_svg() {
        assert_eq!(QrFormat::accepted(""), QrFormat::Svg);
        assert_eq!(QrFormat::accepted("*/*"), QrFormat::Svg);
        assert_eq!(QrFormat::accepted("image/png"), QrFormat::Png);
        assert_eq!(
            QrFormat::accepted("Image/PNG, image/svg+xml"),
            QrFormat::Png
        );
        assert_eq!(
            QrFormat::accepted("image/svg+xml, image/png"),
            QrFormat::Svg
        );
    }
}
