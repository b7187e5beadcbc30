use chrono::{DateTime, Utc};

use crate::kernel::Fault;
use crate::{
    catalog::domain::{ScheduleStatus, Seat},
    kernel::{
        ConcertId, OrderId, PaymentId, Points, ReservationId, ScheduleId, SeatId, UserId,
        events::{NewEvent, ReservationChanged, types},
    },
};

pub const DEFAULT_HOLD_MINUTES: u32 = 5;
pub const DEFAULT_HOLD_LIMIT: u32 = 4;
/// A buyer's list of reservations: at most 100 a page.
pub const MAX_PAGE: u64 = 100;

/// A reservation's status; the database column holds these names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::EnumString, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum ReservationStatus {
    Held,
    Confirmed,
    Expired,
    Released,
}

crate::kernel::stored_name!(ReservationStatus);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub id: ReservationId,
    pub user: UserId,
    pub concert: ConcertId,
    pub schedule: ScheduleId,
    pub seat: SeatId,
    pub price: Points,
    pub status: ReservationStatus,
    pub expires_at: DateTime<Utc>,
    /// Set once a payment for it committed; the saga confirms it next.
    pub payment: Option<PaymentId>,
    /// The order it was held in (`None`: held before orders existed).
    pub order: Option<OrderId>,
}

impl Reservation {
    pub fn is_paid(&self) -> bool {
        self.payment.is_some()
    }

    /// The status a client should see: an unpaid hold past its expiry is
    /// expired even before the sweeper has marked it.
    pub fn status_at(&self, now: DateTime<Utc>) -> ReservationStatus {
        match self.status {
            ReservationStatus::Held if !self.is_paid() && self.expires_at <= now => {
                ReservationStatus::Expired
            }
            status => status,
        }
    }

    /// Whether the hold still counts against the user's limit: held and
    /// either unexpired or paid (a paid hold waits for its confirmation).
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.status == ReservationStatus::Held && (self.expires_at > now || self.is_paid())
    }

    /// Why `user` cannot pay for this reservation, when the claim on it
    /// failed: someone else's reservation is not found (ids cannot be
    /// probed); a paid or confirmed one is already paid; anything else
    /// has expired or was released.
    pub fn why_not_payable(&self, user: UserId) -> NotPayable {
        if self.user != user {
            NotPayable::NotFound
        } else if self.is_paid() || self.status == ReservationStatus::Confirmed {
            NotPayable::AlreadyPaid
        } else {
            NotPayable::Expired
        }
    }

    /// What a completed payment does to this reservation.
    pub fn on_payment(&self, payment: PaymentId) -> OnPayment {
        match self.status {
            ReservationStatus::Confirmed if self.payment == Some(payment) => {
                OnPayment::AlreadyConfirmed
            }
            ReservationStatus::Held if self.payment == Some(payment) => OnPayment::SellSeat,
            _ => OnPayment::Fail,
        }
    }

    /// The event of a change of this reservation.
    pub fn event(&self, event_type: &'static str) -> NewEvent {
        NewEvent::new(
            event_type,
            "reservation",
            self.id,
            &ReservationChanged {
                reservation_id: self.id.value(),
                user_id: self.user.value(),
                concert_id: self.concert.value(),
                schedule_id: self.schedule.value(),
                seat_id: self.seat.value(),
                payment_id: self.payment.map(PaymentId::value),
                order_id: self.order.map(OrderId::value),
            },
        )
    }
}

/// Why a hold cannot be paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotPayable {
    NotFound,
    Expired,
    AlreadyPaid,
}

/// What `PaymentCompleted` does to the reservation it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnPayment {
    /// A redelivery after the confirmation committed: nothing to do.
    AlreadyConfirmed,
    /// The paid hold still stands: sell its seat and confirm.
    SellSeat,
    /// The hold was lost (or is not this payment's): the payment must be
    /// refunded.
    Fail,
}

/// The status changes of a reservation, each a compare-and-set: it applies
/// only while [`Transition::applies_to`] holds, which the store checks in
/// the same statement that makes the change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Locks the user's unexpired, unpaid hold for their payment (the
    /// status stays `held`; the payment is recorded on it next).
    ClaimForPayment { user: UserId, now: DateTime<Utc> },
    /// The user gives back an unexpired, unpaid hold.
    Release { user: UserId, now: DateTime<Utc> },
    /// An unpaid hold past its expiry ends.
    Lapse { now: DateTime<Utc> },
    /// An unpaid hold whose seat a new hold took over ends.
    Replace,
    /// The paid hold's seat was sold to it.
    Confirm { payment: PaymentId },
    /// The paid hold could not be confirmed: it ends, and the payment is
    /// refunded.
    FailConfirmation,
    /// Its schedule was cancelled: an unpaid hold ends at once, expired or
    /// not (a paid one is settled by the payment saga).
    Withdraw,
    /// The buyer's ticket, sold for `payment`, was cancelled and refunded:
    /// the reservation ends `released` and its seat is free again.
    Cancel { payment: PaymentId },
}

impl Transition {
    pub fn applies_to(self, r: &Reservation) -> bool {
        let unpaid_hold = r.status == ReservationStatus::Held && !r.is_paid();
        match self {
            Transition::ClaimForPayment { user, now } | Transition::Release { user, now } => {
                unpaid_hold && r.user == user && r.expires_at > now
            }
            Transition::Lapse { now } => unpaid_hold && r.expires_at <= now,
            Transition::Replace | Transition::Withdraw => unpaid_hold,
            Transition::Confirm { payment } => {
                r.status == ReservationStatus::Held && r.payment == Some(payment)
            }
            Transition::FailConfirmation => r.status == ReservationStatus::Held,
            Transition::Cancel { payment } => {
                r.status == ReservationStatus::Confirmed && r.payment == Some(payment)
            }
        }
    }

    /// The status it applies to.
    pub fn source(self) -> ReservationStatus {
        match self {
            Transition::Cancel { .. } => ReservationStatus::Confirmed,
            _ => ReservationStatus::Held,
        }
    }

    /// The status it leaves behind.
    pub fn target(self) -> ReservationStatus {
        match self {
            Transition::ClaimForPayment { .. } => ReservationStatus::Held,
            Transition::Release { .. } | Transition::Cancel { .. } | Transition::Withdraw => {
                ReservationStatus::Released
            }
            Transition::Lapse { .. } | Transition::Replace | Transition::FailConfirmation => {
                ReservationStatus::Expired
            }
            Transition::Confirm { .. } => ReservationStatus::Confirmed,
        }
    }
}

/// How holds behave; from configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldPolicy {
    pub hold_minutes: u32,
    pub per_user_limit: u32,
    /// Sales close this long before the show starts.
    pub sales_close_before_minutes: u32,
}

impl HoldPolicy {
    /// Whether the show starting at `starts_at` no longer sells at `now`.
    pub fn sales_closed(self, starts_at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        crate::catalog::domain::sales_closed(
            starts_at,
            chrono::TimeDelta::minutes(self.sales_close_before_minutes.into()),
            now,
        )
    }

    /// The latest show start whose sales have closed at `now`: a show
    /// starting at or before it sells nothing.
    pub fn sales_closed_for_starts_by(self, now: DateTime<Utc>) -> DateTime<Utc> {
        now + chrono::TimeDelta::minutes(self.sales_close_before_minutes.into())
    }

    /// Whether a user holding `live` seats may hold one more.
    /// Whether a user with `live` seats held may hold `more`.
    pub fn allows(self, live: u64, more: usize) -> bool {
        live.saturating_add(more as u64) <= u64::from(self.per_user_limit)
    }

    pub fn allows_another(self, live: u64) -> bool {
        live < u64::from(self.per_user_limit)
    }

    pub fn until(self, now: DateTime<Utc>) -> DateTime<Utc> {
        now + chrono::TimeDelta::minutes(self.hold_minutes.into())
    }
}

/// A hold about to be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewReservation {
    pub user: UserId,
    pub concert: ConcertId,
    pub schedule: ScheduleId,
    pub seat: SeatId,
    pub price: Points,
    pub expires_at: DateTime<Utc>,
    pub order: Option<OrderId>,
}

/// The most seats one order may name (the hold limit is usually lower).
pub const MAX_ORDER_SEATS: usize = 50;

/// Which seats an order asks for: named ones, or the best `quantity`
/// free seats of a grade (next to each other in one row when there are
/// such, see [`crate::catalog::domain::best_available`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeatChoice {
    Seats(Vec<SeatId>),
    BestAvailable { grade: String, quantity: usize },
}

impl SeatChoice {
    /// The choice a request makes: seat ids (1.., each once) or a grade
    /// and a quantity, never both; a choice of more seats than one person
    /// may hold is refused for the hold limit. Named seats come back in
    /// id order, the order every transaction locks seats in.
    pub fn parse(
        seat_ids: Option<Vec<i64>>,
        grade: Option<String>,
        quantity: Option<u32>,
        policy: HoldPolicy,
    ) -> Result<Self, ReservationError> {
        let invalid = |why: &str| Err(ReservationError::InvalidOrder(why.to_owned()));
        let choice = match (seat_ids, grade, quantity) {
            (Some(ids), None, None) => {
                let mut seats: Vec<SeatId> = ids.into_iter().map(SeatId).collect();
                seats.sort_unstable();
                let named = seats.len();
                seats.dedup();
                if seats.len() != named {
                    return invalid("seatIds names a seat twice");
                }
                SeatChoice::Seats(seats)
            }
            (None, Some(grade), Some(quantity)) => {
                let grade = grade.trim().to_owned();
                if grade.is_empty() {
                    return invalid("grade must not be blank");
                }
                SeatChoice::BestAvailable {
                    grade,
                    quantity: quantity as usize,
                }
            }
            _ => return invalid("give either seatIds, or grade and quantity"),
        };
        match choice.count() {
            0 => invalid("an order holds at least one seat"),
            n if n > MAX_ORDER_SEATS || !policy.allows(0, n) => {
                Err(ReservationError::HoldLimit(policy.per_user_limit))
            }
            _ => Ok(choice),
        }
    }

    pub fn count(&self) -> usize {
        match self {
            SeatChoice::Seats(seats) => seats.len(),
            SeatChoice::BestAvailable { quantity, .. } => *quantity,
        }
    }
}

/// An order about to be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewOrder {
    pub user: UserId,
    pub concert: ConcertId,
    pub schedule: ScheduleId,
}

impl NewOrder {
    /// The order as stored under `id` at `created_at`, before its seats.
    pub fn stored(self, id: OrderId, created_at: DateTime<Utc>) -> Order {
        let NewOrder {
            user,
            concert,
            schedule,
        } = self;
        Order {
            id,
            user,
            concert,
            schedule,
            created_at,
            seats: Vec::new(),
        }
    }
}

/// The seats one buyer holds, pays for and is refunded together: one
/// reservation per seat, all of one schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub id: OrderId,
    pub user: UserId,
    pub concert: ConcertId,
    pub schedule: ScheduleId,
    pub created_at: DateTime<Utc>,
    /// By seat id.
    pub seats: Vec<Reservation>,
}

/// An order with what the buyer sees of each seat: its number, grade and
/// place in the hall (read from the catalog).
#[derive(Debug, Clone, PartialEq)]
pub struct OrderView {
    pub order: Order,
    /// The catalog's seats of the order, by id.
    pub places: Vec<Seat>,
}

impl OrderView {
    pub fn place_of(&self, seat: SeatId) -> Option<&Seat> {
        self.places.iter().find(|found| found.id == seat)
    }
}

/// Where an order stands, read from its seats (which move together).
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum OrderStatus {
    /// Held, not paid yet.
    Held,
    /// Paid; the saga confirms the seats next.
    Paid,
    /// Tickets: at least one seat sold to it.
    Confirmed,
    /// Every hold lapsed, or the confirmation failed and was refunded.
    Expired,
    /// Given back, withdrawn, or every ticket cancelled.
    Released,
}

impl Order {
    pub fn status_at(&self, now: DateTime<Utc>) -> OrderStatus {
        let has = |status| self.seats.iter().any(|r| r.status_at(now) == status);
        if has(ReservationStatus::Confirmed) {
            OrderStatus::Confirmed
        } else if (self.seats.iter()).any(|r| r.status == ReservationStatus::Held && r.is_paid()) {
            OrderStatus::Paid
        } else if has(ReservationStatus::Held) {
            OrderStatus::Held
        } else if has(ReservationStatus::Released) {
            OrderStatus::Released
        } else {
            OrderStatus::Expired
        }
    }

    /// What the order costs: every seat in it.
    pub fn amount(&self) -> Points {
        (self.seats.iter()).fold(Points::ZERO, |sum, r| sum.saturating_add(r.price))
    }

    /// When its unpaid holds lapse.
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.seats.iter().map(|r| r.expires_at).min()
    }

    /// The seats a payment for it covers: its unpaid holds still standing
    /// at `now`, or why there are none.
    pub fn payable(
        &self,
        user: UserId,
        now: DateTime<Utc>,
    ) -> Result<Vec<Reservation>, NotPayable> {
        if self.user != user {
            return Err(NotPayable::NotFound);
        }
        let open: Vec<Reservation> = (self.seats.iter())
            .filter(|r| Transition::ClaimForPayment { user, now }.applies_to(r))
            .cloned()
            .collect();
        if !open.is_empty() {
            Ok(open)
        } else if (self.seats.iter())
            .any(|r| r.is_paid() || r.status == ReservationStatus::Confirmed)
        {
            Err(NotPayable::AlreadyPaid)
        } else {
            Err(NotPayable::Expired)
        }
    }
}

/// A place on a schedule's waitlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitlistEntry {
    pub id: i64,
    pub schedule: ScheduleId,
    pub user: UserId,
    /// How many seats the place waits for, offered together as one order.
    pub quantity: u32,
}

/// Whether somebody may join a schedule's waitlist for `quantity` seats:
/// only a schedule on sale with fewer than `quantity` seats free (with
/// enough free, they should hold them).
pub fn may_join_waitlist(
    schedule: ScheduleId,
    status: ScheduleStatus,
    free_seats: u64,
    quantity: u32,
) -> Result<(), ReservationError> {
    if status != ScheduleStatus::OnSale {
        return Err(ReservationError::NotOnSale(schedule));
    }
    if free_seats >= u64::from(quantity) {
        return Err(ReservationError::SeatsAvailable(free_seats));
    }
    Ok(())
}

impl HoldPolicy {
    /// How many seats one waitlist place may wait for: 1 to the hold
    /// limit.
    pub fn waitlist_quantity(self, quantity: u32) -> Result<u32, ReservationError> {
        if quantity == 0 || quantity > self.per_user_limit {
            return Err(ReservationError::InvalidOrder(format!(
                "quantity must be 1 to {}, not {quantity}",
                self.per_user_limit
            )));
        }
        Ok(quantity)
    }
}

/// The events a freed seat is offered on: a hold that lapsed or was
/// given back (or withdrawn), and a cancelled ticket. (A refund of a seat
/// lost to someone else frees nothing.)
pub const SEAT_FREEING: &[&str] = &[
    types::RESERVATION_EXPIRED,
    types::RESERVATION_RELEASED,
    types::TICKET_CANCELLED,
    // An order whose confirmation failed frees the seats it still held.
    types::RESERVATION_CONFIRMATION_FAILED,
];

#[derive(Debug, thiserror::Error)]
pub enum ReservationError {
    #[error("seat {seat} does not exist in schedule {schedule}")]
    SeatNotFound { schedule: ScheduleId, seat: SeatId },
    #[error("{} held or sold by someone else", unavailable(.0))]
    SeatUnavailable(Vec<SeatId>),
    #[error("fewer than {quantity} seats of grade {grade:?} are free on this schedule")]
    TooFewSeats { grade: String, quantity: usize },
    #[error("invalid order: {0}")]
    InvalidOrder(String),
    #[error("order {0} does not exist")]
    OrderNotFound(OrderId),
    #[error("you already hold {0} seats, the most one person may hold")]
    HoldLimit(u32),
    #[error("reservation {0} does not exist")]
    NotFound(ReservationId),
    #[error("reservation {0} is no longer held")]
    NotHeld(ReservationId),
    #[error("schedule {0} does not exist")]
    ScheduleNotFound(ScheduleId),
    #[error("schedule {0} is not on sale")]
    NotOnSale(ScheduleId),
    #[error("sales of schedule {0} have closed: the show starts soon")]
    SalesClosed(ScheduleId),
    #[error("seats are still free on this schedule ({0}): hold one instead of waiting")]
    SeatsAvailable(u64),
    #[error("you are already on this schedule's waitlist")]
    AlreadyWaitlisted,
    #[error("you are not on this schedule's waitlist")]
    NotWaitlisted,
    #[error(transparent)]
    Fault(Fault),
}

crate::kernel::module_error!(ReservationError);

fn unavailable(seats: &[SeatId]) -> String {
    match seats {
        [] => "the seat is".to_owned(),
        [seat] => format!("seat {seat} is"),
        _ => {
            let ids: Vec<String> = seats.iter().map(ToString::to_string).collect();
            format!("seats {} are", ids.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;

    fn reservation(
        status: ReservationStatus,
        expires_at: DateTime<Utc>,
        payment: Option<PaymentId>,
    ) -> Reservation {
        Reservation {
            id: ReservationId(1),
            user: UserId(1),
            concert: ConcertId(1),
            schedule: ScheduleId(1),
            seat: SeatId(1),
            price: Points::new(10).unwrap(),
            status,
            expires_at,
            payment,
            order: None,
        }
    }

    #[test]
    fn an_unpaid_hold_past_its_expiry_reads_as_expired() {
        let now = Utc::now();
        let mut hold = reservation(ReservationStatus::Held, now, None);
        assert_eq!(
            hold.status_at(now - TimeDelta::seconds(1)),
            ReservationStatus::Held
        );
        assert_eq!(hold.status_at(now), ReservationStatus::Expired);
        hold.payment = Some(PaymentId(9));
        assert_eq!(
            hold.status_at(now),
            ReservationStatus::Held,
            "a paid hold waits for its confirmation"
        );
    }

    #[test]
    fn only_the_ticket_a_payment_bought_is_cancelled_and_only_once() {
        let ticket = reservation(ReservationStatus::Confirmed, Utc::now(), Some(PaymentId(9)));
        let cancel = Transition::Cancel {
            payment: PaymentId(9),
        };
        assert!(cancel.applies_to(&ticket));
        assert_eq!(cancel.source(), ReservationStatus::Confirmed);
        assert_eq!(cancel.target(), ReservationStatus::Released);
        assert!(
            !Transition::Cancel {
                payment: PaymentId(8)
            }
            .applies_to(&ticket),
            "another payment's refund leaves it alone"
        );
        for status in [
            ReservationStatus::Held,
            ReservationStatus::Released,
            ReservationStatus::Expired,
        ] {
            let other = Reservation {
                status,
                ..ticket.clone()
            };
            assert!(!cancel.applies_to(&other), "{status:?} is no ticket");
        }
        assert_eq!(
            Transition::Confirm {
                payment: PaymentId(9)
            }
            .source(),
            ReservationStatus::Held
        );
    }
}
