use chrono::{DateTime, Utc};

pub use crate::kernel::alerts::{NewAlert, Severity};

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
}

/// Which alerts to list (newest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AlertFilter {
    pub acknowledged: Option<bool>,
    pub severity: Option<Severity>,
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("alert {0} does not exist")]
    AlertNotFound(i64),
    #[error(transparent)]
    Unavailable(anyhow::Error),
    /// A concurrent transaction kept getting in the way, even after retries.
    #[error(transparent)]
    Conflict(anyhow::Error),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

crate::kernel::module_error_from_store_err!(AdminError);
