//! Where a visitor stands in a room, the token that proves who they are,
//! and what a status poll answers (position, estimated wait, next poll).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::QueueSettings;
use crate::kernel::{ConcertId, UserId};

/// The longest a client is told to wait before its next poll.
pub const MAX_POLL_AFTER_SECONDS: u32 = 10;

/// A place in a waiting room, as the store knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Waiting {
        position: u64,
    },
    Active {
        until: DateTime<Utc>,
    },
    /// Dropped, left, expired or never there.
    Gone,
}

/// What entering answers: the token id (the same for the same person
/// while they hold a place) and where they stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub token_id: Uuid,
    pub place: Place,
}

/// The proof a client carries (`X-Queue-Token`), once its signature is
/// verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueuePass {
    pub token_id: Uuid,
    pub user: UserId,
    pub concert: ConcertId,
}

/// A status poll's answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueueStatus {
    pub place: Place,
    /// People ahead (waiting only).
    pub ahead: u64,
    pub estimated_wait_seconds: u64,
    pub poll_after_seconds: u32,
    /// Set while the room has not opened yet and the place is in its
    /// pre-queue (no position until the opening).
    pub opens_at: Option<DateTime<Utc>>,
}

impl QueueStatus {
    /// Derives the estimate and poll interval from the measured admission
    /// rate (falling back to the configured rate before anyone was admitted).
    pub fn new(place: Place, admitted_last_minute: u64, settings: &QueueSettings) -> Self {
        match place {
            Place::Waiting { position } => {
                let ahead = position.saturating_sub(1);
                let measured = admitted_last_minute as f64 / 60.0;
                let rate = if measured > 0.0 {
                    measured
                } else {
                    f64::from(settings.admit_per_second)
                };
                let wait = (position as f64 / rate).ceil() as u64;
                // Poll more often near the head; never less often than the
                // heartbeat grace allows.
                let poll = (wait / 5).clamp(1, u64::from(MAX_POLL_AFTER_SECONDS)) as u32;
                Self {
                    place,
                    ahead,
                    estimated_wait_seconds: wait,
                    poll_after_seconds: poll,
                    opens_at: None,
                }
            }
            Place::Active { .. } => Self {
                place,
                ahead: 0,
                estimated_wait_seconds: 0,
                poll_after_seconds: MAX_POLL_AFTER_SECONDS,
                opens_at: None,
            },
            Place::Gone => Self {
                place,
                ahead: 0,
                estimated_wait_seconds: 0,
                poll_after_seconds: 0,
                opens_at: None,
            },
        }
    }

    /// The answer at `now`: before the room opens, a waiting place is in
    /// the pre-queue — no position yet (the draw is not revealed), the
    /// wait is the time to the opening, and polls keep the place.
    pub fn at(
        place: Place,
        admitted_last_minute: u64,
        settings: &QueueSettings,
        now: DateTime<Utc>,
    ) -> Self {
        match (place, settings.opens_at) {
            (Place::Waiting { .. }, Some(opens_at)) if now < opens_at => {
                let wait = ((opens_at - now).num_milliseconds().max(0) as u64).div_ceil(1000);
                Self {
                    place,
                    ahead: 0,
                    estimated_wait_seconds: wait,
                    poll_after_seconds: (wait / 5).clamp(1, u64::from(MAX_POLL_AFTER_SECONDS))
                        as u32,
                    opens_at: Some(opens_at),
                }
            }
            _ => Self::new(place, admitted_last_minute, settings),
        }
    }

    /// Whether the place is in the pre-queue of a room not yet open.
    pub fn is_prequeue(&self) -> bool {
        self.opens_at.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::domain::{
        QueueingMethod,
        fixtures::{at, settings},
    };

    #[test]
    fn the_estimate_uses_the_measured_rate_once_there_is_one() {
        let waiting = Place::Waiting { position: 600 };
        let configured = QueueStatus::new(waiting, 0, &settings());
        assert_eq!(
            (configured.ahead, configured.estimated_wait_seconds),
            (599, 12)
        );
        let measured = QueueStatus::new(waiting, 600, &settings());
        assert_eq!(
            measured.estimated_wait_seconds, 60,
            "10 admitted per second measured"
        );
        assert_eq!(measured.poll_after_seconds, MAX_POLL_AFTER_SECONDS);
        let head = QueueStatus::new(Place::Waiting { position: 1 }, 600, &settings());
        assert_eq!((head.ahead, head.poll_after_seconds), (0, 1));
        assert_eq!(
            QueueStatus::new(Place::Gone, 0, &settings()).poll_after_seconds,
            0
        );
    }

    #[test]
    fn a_waiting_place_before_the_opening_is_prequeue_and_nothing_else_is() {
        let room = settings().with_opening(Some(at(100)), QueueingMethod::Fifo, false);
        let waiting = Place::Waiting { position: 40 };
        let early = QueueStatus::at(waiting, 0, &room, at(0));
        assert_eq!(early.opens_at, Some(at(100)));
        assert_eq!((early.ahead, early.estimated_wait_seconds), (0, 100));
        assert_eq!(early.poll_after_seconds, MAX_POLL_AFTER_SECONDS);
        let open = QueueStatus::at(waiting, 0, &room, at(100));
        assert!(!open.is_prequeue());
        assert_eq!(open, QueueStatus::new(waiting, 0, &room));
        let gone = QueueStatus::at(Place::Gone, 0, &room, at(0));
        assert!(!gone.is_prequeue(), "a lost place is not in the pre-queue");
    }
}
