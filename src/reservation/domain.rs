use chrono::{DateTime, Utc};

use crate::kernel::{ConcertId, Points, ReservationId, ScheduleId, SeatId, UserId};

pub const DEFAULT_HOLD_MINUTES: u32 = 5;
pub const DEFAULT_HOLD_LIMIT: u32 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservationStatus {
    Held,
    Confirmed,
    Expired,
    Released,
}

impl ReservationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ReservationStatus::Held => "held",
            ReservationStatus::Confirmed => "confirmed",
            ReservationStatus::Expired => "expired",
            ReservationStatus::Released => "released",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "held" => Some(ReservationStatus::Held),
            "confirmed" => Some(ReservationStatus::Confirmed),
            "expired" => Some(ReservationStatus::Expired),
            "released" => Some(ReservationStatus::Released),
            _ => None,
        }
    }
}

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
    pub paid: bool,
}

impl Reservation {
    /// The status a client should see: an unpaid hold past its expiry is
    /// expired even before the sweeper has marked it.
    pub fn status_at(&self, now: DateTime<Utc>) -> ReservationStatus {
        match self.status {
            ReservationStatus::Held if !self.paid && self.expires_at <= now => {
                ReservationStatus::Expired
            }
            status => status,
        }
    }
}

/// How holds behave; from configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldPolicy {
    pub hold_minutes: u32,
    pub per_user_limit: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum ReservationError {
    #[error("seat {seat} does not exist in schedule {schedule}")]
    SeatNotFound { schedule: ScheduleId, seat: SeatId },
    #[error("the seat is held or sold by someone else")]
    SeatUnavailable,
    #[error("you already hold {0} seats, the most one person may hold")]
    HoldLimit(u32),
    #[error("reservation {0} does not exist")]
    NotFound(ReservationId),
    #[error("reservation {0} is no longer held")]
    NotHeld(ReservationId),
    #[error(transparent)]
    Unavailable(anyhow::Error),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;

    #[test]
    fn an_unpaid_hold_past_its_expiry_reads_as_expired() {
        let now = Utc::now();
        let mut r = Reservation {
            id: ReservationId(1),
            user: UserId(1),
            concert: ConcertId(1),
            schedule: ScheduleId(1),
            seat: SeatId(1),
            price: Points::new(10).unwrap(),
            status: ReservationStatus::Held,
            expires_at: now,
            paid: false,
        };
        assert_eq!(
            r.status_at(now - TimeDelta::seconds(1)),
            ReservationStatus::Held
        );
        assert_eq!(r.status_at(now), ReservationStatus::Expired);
        r.paid = true;
        assert_eq!(
            r.status_at(now),
            ReservationStatus::Held,
            "a paid hold waits for its confirmation"
        );
    }
}
