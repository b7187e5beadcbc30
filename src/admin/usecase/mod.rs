//! The admin room's flows: alerts (raised, resolved, acknowledged), their
//! webhook delivery, the watchdogs that raise them, and housekeeping.

mod alerts;
#[cfg(test)]
mod fake;
mod housekeeping;
mod watchdog;
mod webhook;

pub use alerts::AlertService;
pub use housekeeping::{Housekeeping, MAX_BATCHES_PER_SWEEP, Retention};
pub use watchdog::{WATCHDOG, WatchReport, Watchdog};
pub use webhook::{WEBHOOK_BATCH, WebhookDelivery, WebhookPass};
