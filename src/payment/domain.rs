use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::catalog::domain::ScheduleStatus;
use crate::kernel::Fault;
use crate::kernel::{
    ConcertId, OrderId, PaymentId, Points, ReservationId, ScheduleId, TicketId, UserId, backoff,
    events::{CompensationFailed, NewEvent, PaymentCompleted, PaymentRefunded, types},
};
use crate::reservation::domain::{NotPayable, Order, Reservation};

/// A payment's status; the database column holds these names.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    strum::EnumString,
    strum::IntoStaticStr,
    serde::Serialize,
    serde::Deserialize,
)]
#[strum(serialize_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    Paid,
    Confirmed,
    Refunded,
}

crate::kernel::stored_name!(PaymentStatus);

/// A payment; with a key, also the answer a retried pay request gets back.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Payment {
    pub id: PaymentId,
    pub user: UserId,
    /// The first (or only) seat it bought.
    pub reservation: ReservationId,
    /// The order it paid for (`None`: paid before orders existed).
    #[serde(default)]
    pub order: Option<OrderId>,
    pub concert: ConcertId,
    pub amount: Points,
    pub status: PaymentStatus,
    /// Given back so far seat by seat (a holder's cancellation of one
    /// ticket of the order); a whole refund gives back the rest.
    #[serde(default)]
    pub refunded: Points,
}

impl Payment {
    /// What is still paid: the amount less what seat cancellations gave
    /// back.
    pub fn unrefunded(&self) -> Points {
        self.amount
            .checked_sub(self.refunded)
            .unwrap_or(Points::ZERO)
    }

    /// `PaymentCompleted` of this payment for the `seats` it bought.
    pub fn completed(&self, seats: &[ReservationId]) -> NewEvent {
        NewEvent::new(
            types::PAYMENT_COMPLETED,
            "payment",
            self.id,
            &PaymentCompleted {
                payment_id: self.id.value(),
                reservation_id: self.reservation.value(),
                user_id: self.user.value(),
                amount: self.amount.value(),
                concert_id: self.concert.value(),
                order_id: self.order.map(OrderId::value),
                reservation_ids: seats.iter().map(|id| id.value()).collect(),
            },
        )
    }

    /// `PaymentRefunded` of this payment, refunded by `saga`: all that
    /// was still paid.
    pub fn refunded(&self, saga: &str) -> PaymentRefunded {
        self.refunded_seat(saga, self.reservation, self.unrefunded())
    }

    /// `PaymentRefunded` of `amount` of this payment given back by `saga`
    /// for the seat `reservation`, with what stays paid after it.
    pub fn refunded_seat(
        &self,
        saga: &str,
        reservation: ReservationId,
        amount: Points,
    ) -> PaymentRefunded {
        let remaining = self
            .unrefunded()
            .checked_sub(amount)
            .unwrap_or(Points::ZERO);
        PaymentRefunded {
            payment_id: self.id.value(),
            reservation_id: reservation.value(),
            user_id: self.user.value(),
            amount: amount.value(),
            reason: Some(
                match saga {
                    CANCEL_SAGA => "cancelled",
                    SCHEDULE_CANCEL_SAGA => "schedule_cancelled",
                    TICKET_CANCEL_SAGA => "ticket_cancelled",
                    _ => "seat_lost",
                }
                .into(),
            ),
            remaining: Some(remaining.value()),
        }
    }

    /// Whether the refund step of `saga` finds anything to give back: the
    /// payment saga refunds a payment still `paid` (its seat was never
    /// confirmed; a confirmed one has its seat), a cancellation a
    /// `confirmed` one; a refunded payment already was.
    pub fn is_refundable(&self, saga: &str) -> bool {
        self.status == refunds_from(saga)
    }
}

/// The status a refund step of `saga` takes a payment from.
pub fn refunds_from(saga: &str) -> PaymentStatus {
    if cancels_ticket(saga) {
        PaymentStatus::Confirmed
    } else {
        PaymentStatus::Paid
    }
}

/// Whether the saga's refund also cancels the ticket (a buyer's or an
/// admin's cancellation) rather than refunding a seat that was never sold.
pub fn cancels_ticket(saga: &str) -> bool {
    saga == CANCEL_SAGA || saga == SCHEDULE_CANCEL_SAGA || saga == TICKET_CANCEL_SAGA
}

/// The refund step of one seat's cancellation ([`TICKET_CANCEL_SAGA`]): it
/// names the seat's reservation, so each seat of a payment is refunded at
/// most once (one step per saga, step and payment).
pub fn seat_refund_step(seat: ReservationId) -> String {
    format!("{REFUND_STEP}:{seat}")
}

/// The seat a [`seat_refund_step`] names.
pub fn refunded_seat(step: &str) -> Option<ReservationId> {
    let id = step.strip_prefix(REFUND_STEP)?.strip_prefix(':')?;
    id.parse().ok().map(ReservationId)
}

/// What the cancellation of one seat of `payment` gives back: its price,
/// never more than is still paid, and all that is still paid with the
/// last seat sold (so the seats' refunds add up to the amount paid).
pub fn seat_refund(payment: &Payment, price: Points, last_seat: bool) -> Points {
    let rest = payment.unrefunded();
    if last_seat { rest } else { price.min(rest) }
}

/// How far an admin's cancellation of a schedule has come.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancellationProgress {
    pub schedule: ScheduleId,
    pub status: ScheduleStatus,
    pub seats: u64,
    pub sold: u64,
    /// Refunds scheduled by the cancellation and not yet done (including
    /// ones that gave up and wait for an admin's retry: `refunds_failed`).
    pub refunds_pending: u64,
    pub refunds_failed: u64,
    pub refunds_done: u64,
}

/// What one pass over a cancelling schedule found still to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CancellationWork {
    /// Unpaid holds released in this pass.
    pub holds: usize,
    /// Sold tickets whose refund this pass scheduled.
    pub tickets: usize,
    /// Payments of the schedule still on their way: paid and not yet
    /// confirmed or refunded, or with a cancellation refund not yet done.
    pub unsettled: u64,
}

/// A cancelling schedule is cancelled once a pass finds nothing left to
/// release, refund or wait for, and the request is at least
/// [`CANCELLATION_SETTLE`] old (a hold or payment that was already
/// committing when the sale stopped has landed by then and is handled by
/// an earlier pass).
pub fn cancellation_finished(
    work: CancellationWork,
    requested_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> bool {
    work == CancellationWork::default() && now - requested_at >= CANCELLATION_SETTLE
}

/// Why a buyer may not cancel a ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelRefused {
    /// Only a confirmed ticket is cancelled: a payment still `paid` waits
    /// for its seat, a refunded one was already given back.
    NotConfirmed,
    /// The show starts within the cut-off.
    WindowClosed,
}

/// Whether the buyer may cancel the ticket `payment` bought for a show
/// starting at `starts_at`: only a confirmed ticket, and only until
/// `cutoff` before the show.
pub fn may_cancel(
    payment: &Payment,
    starts_at: DateTime<Utc>,
    cutoff: TimeDelta,
    now: DateTime<Utc>,
) -> Result<(), CancelRefused> {
    if payment.status != PaymentStatus::Confirmed {
        return Err(CancelRefused::NotConfirmed);
    }
    if now > starts_at - cutoff {
        return Err(CancelRefused::WindowClosed);
    }
    Ok(())
}

/// What one payment buys: the user's unpaid holds of one order, read
/// before paying (a hold's user, seat, schedule, price and concert never
/// change, so the queue check and the pay transaction both work from it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purchase {
    pub user: UserId,
    pub concert: ConcertId,
    pub schedule: ScheduleId,
    pub order: Option<OrderId>,
    /// One or more, by seat id (the order the pay transaction locks them in).
    pub seats: Vec<Reservation>,
}

impl Purchase {
    /// One hold, paid alone (an order of one, or a hold from before orders).
    pub fn of_hold(hold: Reservation) -> Self {
        Self {
            user: hold.user,
            concert: hold.concert,
            schedule: hold.schedule,
            order: hold.order,
            seats: vec![hold],
        }
    }

    /// The order's holds still open for `user` at `now`, or why it cannot
    /// be paid.
    pub fn of_order(order: &Order, user: UserId, now: DateTime<Utc>) -> Result<Self, PaymentError> {
        let seats = order.payable(user, now).map_err(|why| match why {
            NotPayable::NotFound => PaymentError::OrderNotFound(order.id),
            NotPayable::Expired => PaymentError::OrderExpired(order.id),
            NotPayable::AlreadyPaid => PaymentError::OrderAlreadyPaid(order.id),
        })?;
        Ok(Self {
            user,
            concert: order.concert,
            schedule: order.schedule,
            order: Some(order.id),
            seats,
        })
    }

    /// What it costs: every seat's price.
    pub fn amount(&self) -> Points {
        (self.seats.iter()).fold(Points::ZERO, |sum, hold| sum.saturating_add(hold.price))
    }

    pub fn reservations(&self) -> Vec<ReservationId> {
        self.seats.iter().map(|hold| hold.id).collect()
    }
}

/// A payment about to be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPayment {
    pub user: UserId,
    pub reservation: ReservationId,
    pub order: Option<OrderId>,
    pub concert: ConcertId,
    /// The schedule of the seat it buys.
    pub schedule: ScheduleId,
    pub amount: Points,
}

/// How long a paid hold keeps its seat while the confirmation is on its way.
pub const CONFIRMATION_GRACE_MINUTES: i64 = 10;
/// A buyer's list of payments: at most 100 a page.
pub const MAX_PAGE: u64 = 100;
/// The admin's schedule list: 20 a page unless asked otherwise, at most 100
/// (each row costs a few counts).
pub const DEFAULT_SCHEDULE_PAGE: u64 = 20;
pub const MAX_SCHEDULE_PAGE: u64 = 100;
/// The admin's compensation list: 100 a page unless asked otherwise, at most 500.
pub const DEFAULT_COMPENSATION_PAGE: u64 = 100;
pub const MAX_COMPENSATION_PAGE: u64 = 500;
/// Attempts of a compensation step before it is marked failed.
pub const MAX_COMPENSATION_ATTEMPTS: i32 = 5;

/// The saga and step names of the refund compensation (stored in the
/// `compensations` rows and shown to admins).
pub const REFUND_SAGA: &str = "payment";
pub const REFUND_STEP: &str = "refund";
/// The saga of a ticket its buyer cancelled: one refund step per payment.
pub const CANCEL_SAGA: &str = "cancellation";
/// The saga of one ticket of an order its holder cancelled: one refund
/// step per seat ([`seat_refund_step`]).
pub const TICKET_CANCEL_SAGA: &str = "ticket_cancellation";
/// The saga of an admin's cancellation of a whole schedule: one refund step
/// per sold ticket.
pub const SCHEDULE_CANCEL_SAGA: &str = "schedule_cancellation";
/// Holds released, or refunds scheduled, per step of a schedule's
/// cancellation.
pub const CANCELLATION_BATCH: u64 = 200;
/// See [`cancellation_finished`].
pub const CANCELLATION_SETTLE: TimeDelta = TimeDelta::seconds(5);
/// How long before the show a buyer may still cancel, unless configured.
pub const DEFAULT_CANCEL_CUTOFF_MINUTES: u32 = 1_440;

/// A compensation's status; the database column holds these names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::EnumString, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum CompensationStatus {
    Pending,
    Succeeded,
    Failed,
}

crate::kernel::stored_name!(CompensationStatus);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compensation {
    pub id: i64,
    pub saga: String,
    pub step: String,
    pub payment: PaymentId,
    pub status: CompensationStatus,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub next_attempt_at: DateTime<Utc>,
    /// The trace of the work that scheduled the step; its attempts
    /// continue it (see `kernel::trace`).
    pub traceparent: Option<String>,
}

/// A compensation step due for an attempt, with the trace it continues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueCompensation {
    pub id: i64,
    pub traceparent: Option<String>,
}

/// What happens to a compensation step after a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AfterFailure {
    /// The step's id.
    pub step: i64,
    pub failed_at: DateTime<Utc>,
    pub attempts: i32,
    pub status: CompensationStatus,
    pub next_attempt_at: DateTime<Utc>,
    /// Recorded so an admin sees why (bounded).
    pub last_error: String,
}

impl AfterFailure {
    pub fn gave_up(&self) -> bool {
        self.status == CompensationStatus::Failed
    }

    /// The event recorded with the failure: `CompensationFailed` while it
    /// is retried, `CompensationGaveUp` once it waits for an admin.
    pub fn event(&self, step: &Compensation) -> NewEvent {
        let gave_up = self.gave_up();
        NewEvent::new(
            if gave_up {
                types::COMPENSATION_GAVE_UP
            } else {
                types::COMPENSATION_FAILED
            },
            "compensation",
            step.id,
            &CompensationFailed {
                compensation_id: step.id,
                payment_id: step.payment.value(),
                saga: step.saga.clone(),
                step: step.step.clone(),
                attempts: self.attempts,
                error: self.last_error.clone(),
                next_attempt_at: (!gave_up).then_some(self.next_attempt_at),
            },
        )
    }
}

/// The retry policy of compensation steps: retried with exponential
/// backoff from `base`; after [`MAX_COMPENSATION_ATTEMPTS`] failures the
/// step stops as `failed` until an admin retries it.
pub fn after_failure(
    step: i64,
    attempts_before: i32,
    error: &str,
    base: Duration,
    now: DateTime<Utc>,
) -> AfterFailure {
    let attempts = attempts_before + 1;
    let gave_up = attempts >= MAX_COMPENSATION_ATTEMPTS;
    let delay = backoff::doubling(base, attempts.max(0) as u32);
    AfterFailure {
        step,
        failed_at: now,
        attempts,
        status: if gave_up {
            CompensationStatus::Failed
        } else {
            CompensationStatus::Pending
        },
        next_attempt_at: now + TimeDelta::from_std(delay).unwrap_or(TimeDelta::MAX),
        last_error: error.chars().take(2000).collect(),
    }
}

/// Whether an admin may retry the step: only a step that gave up.
pub fn can_retry(compensation: &Compensation) -> bool {
    compensation.status == CompensationStatus::Failed
}

#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    #[error("reservation {0} does not exist")]
    ReservationNotFound(ReservationId),
    #[error("the hold on reservation {0} has expired or was released")]
    HoldExpired(ReservationId),
    #[error("reservation {0} is already paid")]
    AlreadyPaid(ReservationId),
    #[error("the wallet holds fewer points than the price")]
    InsufficientPoints,
    #[error("payment {0} does not exist")]
    NotFound(PaymentId),
    #[error("compensation {0} does not exist")]
    CompensationNotFound(i64),
    #[error("compensation {0} has not failed, so there is nothing to retry")]
    CompensationNotFailed(i64),
    #[error("payment {0} is not a confirmed ticket, so there is nothing to cancel")]
    NotConfirmed(PaymentId),
    #[error("payment {0}'s show starts too soon to cancel the ticket")]
    CancelWindowClosed(PaymentId),
    #[error("payment {0}'s ticket is already being cancelled")]
    AlreadyCancelled(PaymentId),
    #[error("schedule {0} does not exist")]
    ScheduleNotFound(ScheduleId),
    #[error("sales of schedule {0} have closed: the show starts soon")]
    SalesClosed(ScheduleId),
    #[error("order {0} does not exist")]
    OrderNotFound(OrderId),
    #[error("the holds of order {0} have expired or were released")]
    OrderExpired(OrderId),
    #[error("order {0} is already paid")]
    OrderAlreadyPaid(OrderId),
    #[error("ticket {0} does not exist")]
    TicketNotFound(TicketId),
    #[error("ticket {0} is void: it was cancelled already")]
    TicketVoid(TicketId),
    #[error("ticket {0} was admitted at the door: it can no longer be cancelled")]
    TicketCheckedIn(TicketId),
    #[error(
        "ticket {0} was handed on to you: only its buyer, whose points paid for it, may cancel it"
    )]
    TicketTransferred(TicketId),
    #[error("ticket {0} is already being cancelled")]
    TicketAlreadyCancelled(TicketId),
    #[error("{0}")]
    InvalidRequest(String),
    #[error(transparent)]
    Fault(Fault),
}

crate::kernel::module_error!(PaymentError);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_step_backs_off_exponentially_then_gives_up() {
        let now = Utc::now();
        let base = Duration::from_secs(1);
        let first = after_failure(7, 0, "boom", base, now);
        assert_eq!((first.step, first.failed_at), (7, now));
        assert_eq!(first.attempts, 1);
        assert_eq!(first.status, CompensationStatus::Pending);
        assert_eq!(first.next_attempt_at, now + TimeDelta::seconds(1));
        let third = after_failure(7, 2, "boom", base, now);
        assert_eq!(third.next_attempt_at, now + TimeDelta::seconds(4));
        assert!(!third.gave_up());
        let last = after_failure(
            7,
            MAX_COMPENSATION_ATTEMPTS - 1,
            &"x".repeat(5000),
            base,
            now,
        );
        assert!(last.gave_up());
        assert_eq!(last.status, CompensationStatus::Failed);
        assert_eq!(last.last_error.len(), 2000, "the stored error is bounded");
    }

    fn payment(status: PaymentStatus) -> Payment {
        Payment {
            id: PaymentId(1),
            user: UserId(2),
            reservation: ReservationId(3),
            order: None,
            concert: ConcertId(4),
            amount: Points::new(100).unwrap(),
            status,
            refunded: Points::ZERO,
        }
    }

    #[test]
    fn a_seat_gives_back_its_price_and_the_last_one_the_rest() {
        let points = |n| Points::new(n).unwrap();
        let paid = Payment {
            amount: points(250),
            ..payment(PaymentStatus::Confirmed)
        };
        assert_eq!(seat_refund(&paid, points(100), false), points(100));
        let after_one = Payment {
            refunded: points(100),
            ..paid.clone()
        };
        assert_eq!(after_one.unrefunded(), points(150));
        assert_eq!(seat_refund(&after_one, points(100), true), points(150));
        let discounted = Payment {
            refunded: points(200),
            ..paid.clone()
        };
        assert_eq!(
            seat_refund(&discounted, points(100), false),
            points(50),
            "never more than is still paid"
        );
        let event = after_one.refunded_seat(TICKET_CANCEL_SAGA, ReservationId(8), points(100));
        assert_eq!(event.amount, 100);
        assert_eq!(event.remaining, Some(50));
        assert_eq!(event.reservation_id, 8);
        assert_eq!(event.reason.as_deref(), Some("ticket_cancelled"));
        assert_eq!(after_one.refunded(CANCEL_SAGA).amount, 150, "the rest");
        assert_eq!(after_one.refunded(CANCEL_SAGA).remaining, Some(0));

        let step = seat_refund_step(ReservationId(41));
        assert_eq!(step, "refund:41");
        assert_eq!(refunded_seat(&step), Some(ReservationId(41)));
        assert_eq!(refunded_seat(REFUND_STEP), None);
        assert_eq!(refunded_seat("refund:x"), None);
        assert!(cancels_ticket(TICKET_CANCEL_SAGA));
        assert!(payment(PaymentStatus::Confirmed).is_refundable(TICKET_CANCEL_SAGA));
    }

    #[test]
    fn each_saga_refunds_only_from_its_own_status() {
        use PaymentStatus::*;
        for (saga, from) in [(REFUND_SAGA, Paid), (CANCEL_SAGA, Confirmed)] {
            for status in [Paid, Confirmed, Refunded] {
                assert_eq!(
                    payment(status).is_refundable(saga),
                    status == from,
                    "{saga} from {status:?}"
                );
            }
        }
        assert_eq!(
            payment(Confirmed).refunded(CANCEL_SAGA).reason.as_deref(),
            Some("cancelled")
        );
        assert_eq!(
            payment(Paid).refunded(REFUND_SAGA).reason.as_deref(),
            Some("seat_lost")
        );
    }

    #[test]
    fn a_ticket_is_cancelled_only_when_confirmed_and_until_the_cutoff() {
        let now = Utc::now();
        let show = now + TimeDelta::hours(25);
        let day = TimeDelta::hours(24);
        assert_eq!(
            may_cancel(&payment(PaymentStatus::Confirmed), show, day, now),
            Ok(())
        );
        assert_eq!(
            may_cancel(&payment(PaymentStatus::Confirmed), show, day, show - day),
            Ok(()),
            "the cut-off itself is still in time"
        );
        assert_eq!(
            may_cancel(
                &payment(PaymentStatus::Confirmed),
                show,
                day,
                show - day + TimeDelta::seconds(1)
            ),
            Err(CancelRefused::WindowClosed)
        );
        assert_eq!(
            may_cancel(
                &payment(PaymentStatus::Confirmed),
                now - TimeDelta::hours(1),
                TimeDelta::zero(),
                now
            ),
            Err(CancelRefused::WindowClosed),
            "a show that has started"
        );
        for status in [PaymentStatus::Paid, PaymentStatus::Refunded] {
            assert_eq!(
                may_cancel(&payment(status), show, day, now),
                Err(CancelRefused::NotConfirmed),
                "{status:?}"
            );
        }
    }

    #[test]
    fn a_schedule_is_cancelled_once_nothing_is_left_and_the_request_has_settled() {
        let asked = Utc::now();
        let settled = asked + CANCELLATION_SETTLE;
        assert!(cancellation_finished(
            CancellationWork::default(),
            asked,
            settled
        ));
        assert!(
            !cancellation_finished(
                CancellationWork::default(),
                asked,
                settled - TimeDelta::milliseconds(1)
            ),
            "a hold committing as the sale stopped may still land"
        );
        for work in [
            CancellationWork {
                holds: 1,
                ..Default::default()
            },
            CancellationWork {
                tickets: 1,
                ..Default::default()
            },
            CancellationWork {
                unsettled: 1,
                ..Default::default()
            },
        ] {
            assert!(
                !cancellation_finished(work, asked, settled + TimeDelta::hours(1)),
                "{work:?}"
            );
        }
        assert!(cancels_ticket(SCHEDULE_CANCEL_SAGA) && cancels_ticket(CANCEL_SAGA));
        assert!(!cancels_ticket(REFUND_SAGA));
        assert!(payment(PaymentStatus::Confirmed).is_refundable(SCHEDULE_CANCEL_SAGA));
        assert_eq!(
            payment(PaymentStatus::Confirmed)
                .refunded(SCHEDULE_CANCEL_SAGA)
                .reason
                .as_deref(),
            Some("schedule_cancelled")
        );
    }

    #[test]
    fn statuses_map_to_their_column_names_and_back() {
        for status in [
            PaymentStatus::Paid,
            PaymentStatus::Confirmed,
            PaymentStatus::Refunded,
        ] {
            assert_eq!(PaymentStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(PaymentStatus::Paid.as_str(), "paid");
        assert_eq!(CompensationStatus::Pending.as_str(), "pending");
        assert_eq!(PaymentStatus::parse("PAID"), None);
    }
}
