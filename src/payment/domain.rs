use chrono::{DateTime, Utc};

use crate::kernel::{PaymentId, Points, ReservationId, UserId};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentStatus {
    Paid,
    Confirmed,
    Refunded,
}

impl PaymentStatus {
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "paid" => Some(PaymentStatus::Paid),
            "confirmed" => Some(PaymentStatus::Confirmed),
            "refunded" => Some(PaymentStatus::Refunded),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    pub id: PaymentId,
    pub user: UserId,
    pub reservation: ReservationId,
    pub amount: Points,
    pub status: PaymentStatus,
}

/// How long a paid hold keeps its seat while the confirmation is on its way.
pub const CONFIRMATION_GRACE_MINUTES: i64 = 10;
/// Attempts of a compensation step before it is marked failed.
pub const MAX_COMPENSATION_ATTEMPTS: i32 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompensationStatus {
    Pending,
    Succeeded,
    Failed,
}

impl CompensationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CompensationStatus::Pending => "pending",
            CompensationStatus::Succeeded => "succeeded",
            CompensationStatus::Failed => "failed",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "pending" => Some(CompensationStatus::Pending),
            "succeeded" => Some(CompensationStatus::Succeeded),
            "failed" => Some(CompensationStatus::Failed),
            _ => None,
        }
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

/// Delay before the next attempt after `attempts` failures: the base,
/// then twice, four times… as long (growth stops after ten doublings).
pub fn retry_delay(base: std::time::Duration, attempts: i32) -> std::time::Duration {
    base * (1_u32 << (attempts - 1).clamp(0, 10))
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
    #[error(transparent)]
    Unavailable(anyhow::Error),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_and_stop_growing() {
        let base = std::time::Duration::from_secs(1);
        assert_eq!(retry_delay(base, 1).as_secs(), 1);
        assert_eq!(retry_delay(base, 4).as_secs(), 8);
        assert_eq!(retry_delay(base, 40).as_secs(), 1024);
    }
}
