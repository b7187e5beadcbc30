use std::future::Future;

use chrono::{DateTime, Utc};

use crate::kernel::events::NewEvent;

use super::domain::{AdminError, Alert, AlertFilter, NewAlert, QueuedAlert};
use crate::kernel::PageRequest;

/// What the store needs to write a new alert besides the alert itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Raising {
    /// The watchdog condition it stands for, if any.
    pub condition: Option<String>,
    /// Queue it for the webhook (one is configured).
    pub queue_for_webhook: bool,
    /// The trace it was raised in; the webhook post carries it.
    pub traceparent: Option<String>,
}

pub trait AlertRepository: Clone + Send + Sync + 'static {
    /// Stores the alert and its `AlertRaised` event ([`Alert::raised`]) in
    /// one transaction.
    fn insert(
        &self,
        alert: &NewAlert,
        raising: Raising,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Alert, AdminError>> + Send;

    /// Up to `page.fetch()` alerts that pass `filter`, newest first, older
    /// than the alert `page.after`.
    fn list(
        &self,
        filter: AlertFilter,
        page: PageRequest,
    ) -> impl Future<Output = Result<Vec<Alert>, AdminError>> + Send;

    /// `false` when no such alert exists. Acknowledging twice is fine; the
    /// call that acknowledges it writes `event` with it, in one transaction.
    fn acknowledge(
        &self,
        id: i64,
        event: NewEvent,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, AdminError>> + Send;

    /// The alerts whose condition starts with `prefix` and has not been
    /// resolved, oldest first.
    fn open_conditions(
        &self,
        prefix: &str,
    ) -> impl Future<Output = Result<Vec<Alert>, AdminError>> + Send;

    /// Marks the alert resolved with its `AlertResolved` event, in one
    /// transaction; false (and no event) if it already was.
    fn resolve(
        &self,
        alert: &Alert,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, AdminError>> + Send;
}

/// The alerts waiting for the webhook: a stored queue several instances
/// share.
pub trait WebhookQueue: Clone + Send + Sync + 'static {
    /// Up to `max` alerts due at `now`, oldest first, each moved `claim`
    /// ahead so no other instance posts it meanwhile.
    fn claim_due(
        &self,
        now: DateTime<Utc>,
        claim: chrono::TimeDelta,
        max: u64,
    ) -> impl Future<Output = Result<Vec<QueuedAlert>, AdminError>> + Send;

    fn delivered(
        &self,
        id: i64,
        attempts: i32,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), AdminError>> + Send;

    fn refused(&self, refusal: &Refusal<'_>)
    -> impl Future<Output = Result<(), AdminError>> + Send;
}

/// A refused webhook post of an alert, as the queue records it.
pub struct Refusal<'a> {
    pub alert: i64,
    /// The alert's attempts so far, this one counted if it was tried.
    pub attempts: i32,
    /// When to try again; `None` gives up.
    pub next: Option<DateTime<Utc>>,
    pub error: &'a str,
}

/// Where alerts are pushed besides the database (Slack/Notion-style
/// webhook), carrying the trace the alert was raised in.
pub trait AlertNotifier: Clone + Send + Sync + 'static {
    fn notify(
        &self,
        alert: &Alert,
        traceparent: Option<&str>,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
}
