//! The port through which any module raises an operator alert. The admin
//! module stores alerts and forwards them to a webhook.

use futures::future::BoxFuture;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "info" => Some(Severity::Info),
            "warning" => Some(Severity::Warning),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAlert {
    pub severity: Severity,
    /// The component that raised it, e.g. `consumer:receipts`.
    pub source: String,
    pub message: String,
}

/// Object-safe so background workers can hold an `Arc<dyn AlertSink>`.
/// Raising never fails the caller: a sink that cannot store the alert logs
/// it instead.
pub trait AlertSink: Send + Sync + 'static {
    fn raise(&self, alert: NewAlert) -> BoxFuture<'_, ()>;
}
