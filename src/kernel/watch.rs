//! Things that must not stay stuck (an unpublished outbox row, a consumer
//! group behind, a payment left `paid`, a schedule left `cancelling`, a
//! compensation left open): the port through which one watchdog asks each
//! module what of it has been stuck too long.

use chrono::{DateTime, TimeDelta, Utc};
use futures::future::BoxFuture;

use super::{StoreError, alerts::Severity};

/// One stuck thing, or one kind of stuck things with their ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stall {
    /// What it is, unique while it lasts: `watchdog:<probe>` or
    /// `watchdog:<probe>:<which>` (e.g. `watchdog:group-lag:receipts`).
    pub condition: String,
    pub severity: Severity,
    /// For the operator, naming the ids.
    pub message: String,
    /// How long the oldest of it has been stuck.
    pub age: TimeDelta,
}

/// One look of the watchdog: at `now`, for what has been stuck since
/// before `since`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Look {
    pub since: DateTime<Utc>,
    pub now: DateTime<Utc>,
}

impl Look {
    /// How long a thing must have been stuck to count.
    pub fn threshold(&self) -> TimeDelta {
        self.now - self.since
    }
}

/// One kind of thing a watchdog watches. Object-safe, so the watchdog
/// holds every module's as `Arc<dyn StallProbe>`.
pub trait StallProbe: Send + Sync + 'static {
    /// The condition every stall it reports starts with, e.g.
    /// `watchdog:payments-paid` (and the metric label).
    fn name(&self) -> &'static str;

    /// What has been stuck since before `look.since`.
    fn stalls(&self, look: Look) -> BoxFuture<'_, Result<Vec<Stall>, StoreError>>;
}

/// The ids a stall message names at most (the count says the rest).
pub const NAMED_IDS: usize = 20;

/// `"3 payments left paid for over 300 s: 4, 9, 12"`, naming at most
/// [`NAMED_IDS`] ids.
pub fn naming(what: &str, total: u64, ids: &[String], after: TimeDelta) -> String {
    let mut named = ids
        .iter()
        .take(NAMED_IDS)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if total > ids.len().min(NAMED_IDS) as u64 {
        named.push_str(", …");
    }
    format!("{total} {what} for over {} s: {named}", after.num_seconds())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_names_the_ids_and_says_when_there_are_more() {
        let ids: Vec<String> = (1..=3).map(|i| i.to_string()).collect();
        assert_eq!(
            naming("payments left paid", 3, &ids, TimeDelta::seconds(300)),
            "3 payments left paid for over 300 s: 1, 2, 3"
        );
        let many: Vec<String> = (1..=25).map(|i| i.to_string()).collect();
        let message = naming("x", 40, &many, TimeDelta::seconds(5));
        assert!(message.ends_with("19, 20, …"), "{message}");
        assert!(message.starts_with("40 x for over 5 s: 1, 2"));
    }
}
