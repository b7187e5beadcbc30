//! Rows a module keeps only for a while (processed inbox entries, old
//! idempotency keys, read notifications, finished jobs, resolved dead
//! letters, acknowledged alerts): the port through which one background
//! sweeper removes them in batches.

use futures::future::BoxFuture;

use chrono::{DateTime, Utc};

use super::StoreError;

/// One kind of row with a retention period. Object-safe, so the sweeper
/// holds every module's as `Arc<dyn Expiring>`.
pub trait Expiring: Send + Sync + 'static {
    /// What the rows are (the metric label), e.g. `inbox`.
    fn name(&self) -> &'static str;

    /// Deletes up to `batch` rows whose retention ended before `before`;
    /// answers how many.
    fn purge(&self, before: DateTime<Utc>, batch: u64) -> BoxFuture<'_, Result<u64, StoreError>>;
}
