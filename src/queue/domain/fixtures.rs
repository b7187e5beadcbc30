//! Settings and instants the domain tests share.

use chrono::{DateTime, Utc};

use super::QueueSettings;

pub fn settings() -> QueueSettings {
    QueueSettings::parse(50, 100, 600, 30).unwrap()
}

/// Settings with the given rate and cap (a minute's turn, 30 s of grace).
pub fn room(rate: u32, max_active: u32) -> QueueSettings {
    QueueSettings::parse(rate.into(), max_active.into(), 60, 30).unwrap()
}

/// `seconds` after a fixed instant.
pub fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
}
