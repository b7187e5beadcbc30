//! The events a room records atomically with each change, for the
//! scheduler to forward to the main bus.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::kernel::{ConcertId, UserId};

/// A waiting-room event, recorded by the store atomically with the change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueEventKind {
    Entered,
    Admitted,
    Left,
    Expired,
}

impl QueueEventKind {
    pub fn event_type(self) -> &'static str {
        match self {
            QueueEventKind::Entered => "QueueEntered",
            QueueEventKind::Admitted => "QueueAdmitted",
            QueueEventKind::Left => "QueueLeft",
            QueueEventKind::Expired => "QueueExpired",
        }
    }

    pub fn parse(code: &str) -> Option<Self> {
        match code {
            "entered" => Some(QueueEventKind::Entered),
            "admitted" => Some(QueueEventKind::Admitted),
            "left" => Some(QueueEventKind::Left),
            "expired" => Some(QueueEventKind::Expired),
            _ => None,
        }
    }
}

/// One recorded event, as the store hands it over for forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueEvent {
    /// The store's id for the record (unique per concert); the envelope's
    /// event id is derived from it, so forwarding twice is harmless.
    pub id: String,
    pub kind: QueueEventKind,
    pub concert: ConcertId,
    pub token_id: Uuid,
    pub user: UserId,
    pub at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_kind_round_trips_its_code_and_names_its_event() {
        let kinds = [
            ("entered", QueueEventKind::Entered, "QueueEntered"),
            ("admitted", QueueEventKind::Admitted, "QueueAdmitted"),
            ("left", QueueEventKind::Left, "QueueLeft"),
            ("expired", QueueEventKind::Expired, "QueueExpired"),
        ];
        for (code, kind, event_type) in kinds {
            assert_eq!(QueueEventKind::parse(code), Some(kind));
            assert_eq!(kind.event_type(), event_type);
        }
        assert_eq!(QueueEventKind::parse("Entered"), None);
        assert_eq!(QueueEventKind::parse(""), None);
    }
}
