use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::kernel::{
    ConcertId, PaymentId, Points, ReservationId, UserId, backoff,
    events::{NewEvent, PaymentCompleted, PaymentRefunded, types},
};

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

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(value: &str) -> Option<Self> {
        value.parse().ok()
    }
}

/// A payment; with a key, also the answer a retried pay request gets back.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Payment {
    pub id: PaymentId,
    pub user: UserId,
    pub reservation: ReservationId,
    pub concert: ConcertId,
    pub amount: Points,
    pub status: PaymentStatus,
}

impl Payment {
    pub fn completed(&self) -> NewEvent {
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
            },
        )
    }

    pub fn refunded(&self) -> PaymentRefunded {
        PaymentRefunded {
            payment_id: self.id.value(),
            reservation_id: self.reservation.value(),
            user_id: self.user.value(),
            amount: self.amount.value(),
        }
    }

    /// Whether a refund step finds anything to give back: only a payment
    /// still `paid` (its seat was never confirmed) is refunded; a refunded
    /// one already was, a confirmed one has its seat.
    pub fn is_refundable(&self) -> bool {
        self.status == PaymentStatus::Paid
    }
}

/// A payment about to be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPayment {
    pub user: UserId,
    pub reservation: ReservationId,
    pub concert: ConcertId,
    pub amount: Points,
}

/// How long a paid hold keeps its seat while the confirmation is on its way.
pub const CONFIRMATION_GRACE_MINUTES: i64 = 10;
/// The admin's compensation list: 100 a page unless asked otherwise, at most 500.
pub const DEFAULT_COMPENSATION_PAGE: u64 = 100;
pub const MAX_COMPENSATION_PAGE: u64 = 500;
/// Attempts of a compensation step before it is marked failed.
pub const MAX_COMPENSATION_ATTEMPTS: i32 = 5;

/// The saga and step names of the refund compensation (stored in the
/// `compensations` rows and shown to admins).
pub const REFUND_SAGA: &str = "payment";
pub const REFUND_STEP: &str = "refund";

/// A compensation's status; the database column holds these names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::EnumString, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum CompensationStatus {
    Pending,
    Succeeded,
    Failed,
}

impl CompensationStatus {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(value: &str) -> Option<Self> {
        value.parse().ok()
    }
}

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
}

/// What happens to a compensation step after a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AfterFailure {
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
}

/// The retry policy of compensation steps: retried with exponential
/// backoff from `base`; after [`MAX_COMPENSATION_ATTEMPTS`] failures the
/// step stops as `failed` until an admin retries it.
pub fn after_failure(
    attempts_before: i32,
    error: &str,
    base: Duration,
    now: DateTime<Utc>,
) -> AfterFailure {
    let attempts = attempts_before + 1;
    let gave_up = attempts >= MAX_COMPENSATION_ATTEMPTS;
    let delay = backoff::doubling(base, attempts.max(0) as u32);
    AfterFailure {
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
    /// The `Idempotency-Key` was used for a different request.
    #[error("this Idempotency-Key was used with a different request")]
    KeyReused,
    #[error(transparent)]
    Unavailable(anyhow::Error),
    /// A concurrent transaction kept getting in the way, even after retries.
    #[error(transparent)]
    Conflict(anyhow::Error),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

crate::kernel::module_error_from_store_err!(PaymentError);
crate::kernel::idempotency::module_error_from_key_err!(PaymentError);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_step_backs_off_exponentially_then_gives_up() {
        let now = Utc::now();
        let base = Duration::from_secs(1);
        let first = after_failure(0, "boom", base, now);
        assert_eq!(first.attempts, 1);
        assert_eq!(first.status, CompensationStatus::Pending);
        assert_eq!(first.next_attempt_at, now + TimeDelta::seconds(1));
        let third = after_failure(2, "boom", base, now);
        assert_eq!(third.next_attempt_at, now + TimeDelta::seconds(4));
        assert!(!third.gave_up());
        let last = after_failure(MAX_COMPENSATION_ATTEMPTS - 1, &"x".repeat(5000), base, now);
        assert!(last.gave_up());
        assert_eq!(last.status, CompensationStatus::Failed);
        assert_eq!(last.last_error.len(), 2000, "the stored error is bounded");
    }

    #[test]
    fn only_a_paid_payment_is_refunded() {
        let mut payment = Payment {
            id: PaymentId(1),
            user: UserId(2),
            reservation: ReservationId(3),
            concert: ConcertId(4),
            amount: Points::new(100).unwrap(),
            status: PaymentStatus::Paid,
        };
        assert!(payment.is_refundable());
        for status in [PaymentStatus::Confirmed, PaymentStatus::Refunded] {
            payment.status = status;
            assert!(!payment.is_refundable(), "{status:?}");
        }
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
