use std::future::Future;

use chrono::{DateTime, Utc};

use crate::kernel::events::NewEvent;

use super::domain::{AdminError, Alert, AlertFilter, NewAlert};
use crate::kernel::PageRequest;

pub trait AlertRepository: Clone + Send + Sync + 'static {
    fn insert(
        &self,
        alert: &NewAlert,
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
}

/// Where alerts are pushed besides the database (Slack/Notion-style webhook).
pub trait AlertNotifier: Clone + Send + Sync + 'static {
    fn notify(&self, alert: &Alert) -> impl Future<Output = anyhow::Result<()>> + Send;
}
