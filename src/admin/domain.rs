use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::kernel::Fault;
pub use crate::kernel::alerts::{NewAlert, Severity};
use crate::kernel::{
    backoff,
    events::{AlertRaised, NewEvent, types},
};

/// Alert pages: 100 unless asked otherwise, at most 500.
pub const DEFAULT_ALERT_PAGE: u64 = 100;
pub const MAX_ALERT_PAGE: u64 = 500;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub id: i64,
    pub severity: Severity,
    pub source: String,
    pub message: String,
    pub created_at: DateTime<Utc>,
    pub acknowledged: bool,
    /// The watchdog condition it stands for (`watchdog:<what>`), if any.
    pub condition: Option<String>,
    /// When its condition cleared (watchdog alerts only).
    pub resolved_at: Option<DateTime<Utc>>,
    pub webhook: WebhookStatus,
    /// Attempts to post it to the webhook so far.
    pub webhook_attempts: i32,
}

impl Alert {
    /// `AlertRaised`, written with the alert in its transaction.
    pub fn raised(&self) -> NewEvent {
        self.event(types::ALERT_RAISED)
    }

    /// `AlertResolved`, written with the resolution.
    pub fn resolved(&self) -> NewEvent {
        self.event(types::ALERT_RESOLVED)
    }

    fn event(&self, event_type: &'static str) -> NewEvent {
        NewEvent::new(
            event_type,
            "alert",
            self.id,
            &AlertRaised {
                alert_id: self.id,
                severity: self.severity.as_str().to_owned(),
                source: self.source.clone(),
                message: self.message.clone(),
                condition: self.condition.clone(),
            },
        )
    }
}

/// Where an alert is on its way to the webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookStatus {
    /// No webhook was configured when it was raised.
    None,
    /// Waiting for its next attempt.
    Queued,
    Delivered,
    /// Refused for [`WEBHOOK_GIVE_UP_AFTER`]; only the database has it.
    GaveUp,
}

/// Which alerts to list (newest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AlertFilter {
    pub acknowledged: Option<bool>,
    pub severity: Option<Severity>,
}

/// An alert claimed for a webhook attempt, with the trace it was raised in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedAlert {
    pub alert: Alert,
    pub traceparent: Option<String>,
}

/// The first retry of a refused webhook post comes this much later, each
/// next one twice as late…
pub const WEBHOOK_RETRY_BASE: Duration = Duration::from_secs(1);
/// …up to this far apart…
pub const WEBHOOK_RETRY_MAX: Duration = Duration::from_secs(300);
/// …for this long after the alert was raised; then it stays in the
/// database (and the console) only.
pub const WEBHOOK_GIVE_UP_AFTER: TimeDelta = TimeDelta::hours(24);
/// A claimed alert is not taken by another instance for this long, so a
/// process that dies mid-post delays the alert, never loses it.
pub const WEBHOOK_CLAIM: TimeDelta = TimeDelta::seconds(30);

/// When to post an alert again after its `attempts`-th refused post, or
/// `None` to give up (it is older than [`WEBHOOK_GIVE_UP_AFTER`]).
pub fn webhook_retry_at(
    attempts: i32,
    raised_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    if now - raised_at >= WEBHOOK_GIVE_UP_AFTER {
        return None;
    }
    let delay =
        backoff::doubling(WEBHOOK_RETRY_BASE, attempts.max(1) as u32).min(WEBHOOK_RETRY_MAX);
    Some(now + TimeDelta::from_std(delay).unwrap_or(TimeDelta::MAX))
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("alert {0} does not exist")]
    AlertNotFound(i64),
    /// The watchdog condition already has an open alert (raised by
    /// another instance meanwhile).
    #[error("an alert of {0} is already open")]
    AlreadyOpen(String),
    #[error(transparent)]
    Fault(Fault),
}

crate::kernel::module_error!(AdminError);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_post_is_retried_ever_later_up_to_five_minutes_apart_for_a_day() {
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let later =
            |attempts, now| webhook_retry_at(attempts, t0, now).map(|at| (at - now).num_seconds());
        assert_eq!(later(1, t0), Some(1));
        assert_eq!(later(2, t0), Some(2));
        assert_eq!(later(5, t0), Some(16));
        assert_eq!(later(9, t0), Some(256));
        assert_eq!(later(10, t0), Some(300));
        assert_eq!(later(400, t0 + TimeDelta::hours(23)), Some(300));
        assert_eq!(
            later(401, t0 + TimeDelta::hours(24)),
            None,
            "a day on, it gives up"
        );
    }
}
