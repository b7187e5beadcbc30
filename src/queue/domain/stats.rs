//! A room's sizes as the admins' room list shows them, and that list's
//! page sizes.

use super::{Place, QueueSettings, QueueStatus};
use crate::kernel::ConcertId;

/// The admin's room list: 50 rooms a page unless asked otherwise, at most 200.
pub const DEFAULT_ROOM_PAGE: u64 = 50;
pub const MAX_ROOM_PAGE: u64 = 200;

/// A room's sizes at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueStats {
    pub concert: ConcertId,
    pub waiting: u64,
    pub active: u64,
    pub admitted_last_minute: u64,
    /// Admissions since the room opened (a counter: a console samples it
    /// to plot admissions per second).
    pub admitted_total: u64,
    pub oldest_wait_seconds: u64,
}

impl QueueStats {
    /// How long the last person in line should expect to wait.
    pub fn tail_wait_seconds(&self, settings: &QueueSettings) -> u64 {
        if self.waiting == 0 {
            return 0;
        }
        QueueStatus::new(
            Place::Waiting {
                position: self.waiting,
            },
            self.admitted_last_minute,
            settings,
        )
        .estimated_wait_seconds
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::domain::fixtures::settings;

    #[test]
    fn the_tail_wait_is_zero_for_an_empty_room_and_the_last_places_estimate_otherwise() {
        let mut stats = QueueStats {
            concert: ConcertId(1),
            waiting: 0,
            active: 3,
            admitted_last_minute: 0,
            admitted_total: 0,
            oldest_wait_seconds: 0,
        };
        assert_eq!(stats.tail_wait_seconds(&settings()), 0);
        stats.waiting = 101;
        assert_eq!(
            stats.tail_wait_seconds(&settings()),
            3,
            "101 / 50 per second"
        );
        stats.admitted_last_minute = 60;
        assert_eq!(stats.tail_wait_seconds(&settings()), 101);
    }
}
