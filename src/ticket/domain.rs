//! What a ticket is, what its code says, and what the saga's two events do
//! to it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::kernel::{
    Fault, ReservationId, ScheduleId, SeatId, TicketId, UserId,
    events::{NewEvent, ReservationChanged, TicketCheckedIn, TicketIssued, types},
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

    /// `TicketCheckedIn`.
    pub fn event(&self) -> NewEvent {
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
            TicketError::Invalid(_) | TicketError::ScheduleNotFound(_) | TicketError::Fault(_) => {
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
