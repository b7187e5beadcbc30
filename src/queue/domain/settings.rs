//! A room's settings: the admission rates an admin sets, range-checked,
//! and how an admin's change applies to them.

use chrono::{DateTime, Utc};

use super::{MAX_POLL_AFTER_SECONDS, QueueError, QueueingMethod};

/// How a concert's waiting room admits people. Changed at runtime by admins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSettings {
    /// People admitted per second, from the head of the queue.
    pub admit_per_second: u32,
    /// Never more than this many active (admitted, not yet done) at once.
    pub max_active: u32,
    /// How long an admitted person may stay active.
    pub active_ttl_seconds: u32,
    /// A waiting person who has not polled for this long loses the place.
    pub heartbeat_grace_seconds: u32,
    /// Before this, arrivals enter the pre-queue and nobody is admitted; at
    /// it, the pre-queue (in its drawn order) stands ahead of later arrivals.
    pub opens_at: Option<DateTime<Utc>>,
    pub method: QueueingMethod,
    /// Admit nobody; every place is kept (heartbeats still count).
    pub paused: bool,
}

pub const MAX_ADMIT_PER_SECOND: u32 = 100_000;
pub const MAX_ACTIVE: u32 = 1_000_000;
pub const ACTIVE_TTL_RANGE: (u32, u32) = (10, 86_400);
/// The grace must comfortably exceed the longest poll interval we hand out.
pub const HEARTBEAT_GRACE_RANGE: (u32, u32) = (3 * MAX_POLL_AFTER_SECONDS, 3_600);

impl QueueSettings {
    pub fn parse(
        admit_per_second: i64,
        max_active: i64,
        active_ttl_seconds: i64,
        heartbeat_grace_seconds: i64,
    ) -> Result<Self, QueueError> {
        let within = |name: &str, value: i64, min: u32, max: u32| -> Result<u32, QueueError> {
            u32::try_from(value)
                .ok()
                .filter(|v| (min..=max).contains(v))
                .ok_or_else(|| {
                    QueueError::Invalid(format!("{name} must be between {min} and {max}"))
                })
        };
        Ok(Self {
            admit_per_second: within("admitPerSecond", admit_per_second, 1, MAX_ADMIT_PER_SECOND)?,
            max_active: within("maxActive", max_active, 1, MAX_ACTIVE)?,
            active_ttl_seconds: within(
                "activeTtlSeconds",
                active_ttl_seconds,
                ACTIVE_TTL_RANGE.0,
                ACTIVE_TTL_RANGE.1,
            )?,
            heartbeat_grace_seconds: within(
                "heartbeatGraceSeconds",
                heartbeat_grace_seconds,
                HEARTBEAT_GRACE_RANGE.0,
                HEARTBEAT_GRACE_RANGE.1,
            )?,
            opens_at: None,
            method: QueueingMethod::Fifo,
            paused: false,
        })
    }

    /// The settings an admin's change makes of these: the rates are given
    /// whole; an opening rule left out keeps its current value.
    pub fn changed(&self, change: &SettingsChange) -> Self {
        Self {
            opens_at: change.opens_at.unwrap_or(self.opens_at),
            method: change.method.unwrap_or(self.method),
            paused: change.paused.unwrap_or(self.paused),
            ..change.rates
        }
    }
}

/// An admin's change of a room's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettingsChange {
    /// The rates, always given (their opening rules are ignored).
    pub rates: QueueSettings,
    /// `Some(None)` removes the opening time; `None` keeps it.
    pub opens_at: Option<Option<DateTime<Utc>>>,
    pub method: Option<QueueingMethod>,
    pub paused: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::domain::fixtures::{at, room, settings};

    #[test]
    fn settings_are_range_checked() {
        assert!(QueueSettings::parse(0, 100, 600, 30).is_err());
        assert!(QueueSettings::parse(50, 0, 600, 30).is_err());
        assert!(QueueSettings::parse(50, 100, 5, 30).is_err());
        assert!(QueueSettings::parse(50, 100, 600, 10).is_err());
        assert!(QueueSettings::parse(-1, 100, 600, 30).is_err());
        assert!(QueueSettings::parse(i64::MAX, 100, 600, 30).is_err());
        assert_eq!(settings().admit_per_second, 50);
    }

    #[test]
    fn settings_accept_each_range_inclusive_and_name_the_field_they_refuse() {
        let lowest = QueueSettings::parse(1, 1, 10, 30).unwrap();
        assert_eq!(
            lowest,
            QueueSettings {
                admit_per_second: 1,
                max_active: 1,
                active_ttl_seconds: ACTIVE_TTL_RANGE.0,
                heartbeat_grace_seconds: HEARTBEAT_GRACE_RANGE.0,
                opens_at: None,
                method: QueueingMethod::Fifo,
                paused: false,
            }
        );
        QueueSettings::parse(
            i64::from(MAX_ADMIT_PER_SECOND),
            i64::from(MAX_ACTIVE),
            i64::from(ACTIVE_TTL_RANGE.1),
            i64::from(HEARTBEAT_GRACE_RANGE.1),
        )
        .unwrap();

        let refused = |result: Result<QueueSettings, QueueError>| match result {
            Err(QueueError::Invalid(detail)) => detail,
            other => panic!("expected Invalid, got {other:?}"),
        };
        assert!(refused(QueueSettings::parse(100_001, 1, 10, 30)).starts_with("admitPerSecond"));
        assert!(refused(QueueSettings::parse(1, 1_000_001, 10, 30)).starts_with("maxActive"));
        assert!(refused(QueueSettings::parse(1, 1, 86_401, 30)).starts_with("activeTtlSeconds"));
        assert!(
            refused(QueueSettings::parse(1, 1, 10, 3_601)).starts_with("heartbeatGraceSeconds")
        );
        assert!(refused(QueueSettings::parse(1, 1, 10, 29)).contains("between 30 and 3600"));
    }

    #[test]
    fn admission_rules_come_from_the_change_and_opening_rules_from_it_only_when_given() {
        let current = settings().with_opening(Some(at(5)), QueueingMethod::Random, true);
        let rates = room(7, 8).with_opening(None, QueueingMethod::Closed, false);
        let kept = current.changed(&SettingsChange {
            rates,
            opens_at: None,
            method: None,
            paused: None,
        });
        assert_eq!(
            kept,
            room(7, 8).with_opening(Some(at(5)), QueueingMethod::Random, true)
        );
        let all = current.changed(&SettingsChange {
            rates,
            opens_at: Some(None),
            method: Some(QueueingMethod::Fifo),
            paused: Some(false),
        });
        assert_eq!(all, room(7, 8));
    }
}
