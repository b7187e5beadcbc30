//! The housekeeping sweeper: nothing grows without bound in a
//! long-running deployment.

use crate::kernel::Clock;

/// How long one kind of row is kept.
pub struct Retention {
    pub rows: std::sync::Arc<dyn crate::kernel::retention::Expiring>,
    pub keep: chrono::TimeDelta,
}

/// Batches one sweep removes of one kind of row at most, so a backlog is
/// worked off over several sweeps instead of one long one.
pub const MAX_BATCHES_PER_SWEEP: u32 = 20;

/// The housekeeping sweeper: nothing grows without bound in a long-running
/// deployment. Each kind of row past its retention goes, in batches.
pub struct Housekeeping<C> {
    policies: Vec<Retention>,
    clock: C,
    batch: u64,
}

impl<C: Clock> Housekeeping<C> {
    pub fn new(policies: Vec<Retention>, clock: C, batch: u64) -> Self {
        Self {
            policies,
            clock,
            batch: batch.max(1),
        }
    }

    /// One sweep; answers how many rows of each kind went. A kind whose
    /// store fails is skipped until the next sweep; the others still run.
    pub async fn sweep(&self) -> Vec<(&'static str, u64)> {
        let now = self.clock.now();
        let mut removed = Vec::with_capacity(self.policies.len());
        for policy in &self.policies {
            let name = policy.rows.name();
            let before = now - policy.keep;
            let mut total = 0;
            for _ in 0..MAX_BATCHES_PER_SWEEP {
                match policy.rows.purge(before, self.batch).await {
                    Ok(n) => {
                        total += n;
                        if n < self.batch {
                            break;
                        }
                    }
                    Err(err) => {
                        tracing::warn!(rows = name, error = %err, "retention sweep failed; retrying next time");
                        break;
                    }
                }
            }
            metrics::counter!("retention_rows_removed_total", "rows" => name).increment(total);
            removed.push((name, total));
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use chrono::{DateTime, TimeDelta, Utc};
    use futures::{FutureExt, future::BoxFuture};

    use super::*;
    use crate::kernel::{ManualClock, StoreError, retention::Expiring};

    /// Rows stamped with a time; a purge removes those before the
    /// cutoff, at most a batch.
    struct Rows {
        name: &'static str,
        stamps: Mutex<Vec<DateTime<Utc>>>,
        cutoffs: Mutex<Vec<DateTime<Utc>>>,
        down: bool,
    }

    impl Rows {
        fn new(name: &'static str, stamps: Vec<DateTime<Utc>>, down: bool) -> Arc<Self> {
            Arc::new(Self {
                name,
                stamps: Mutex::new(stamps),
                cutoffs: Mutex::default(),
                down,
            })
        }
    }

    impl Expiring for Rows {
        fn name(&self) -> &'static str {
            self.name
        }

        fn purge(
            &self,
            before: DateTime<Utc>,
            batch: u64,
        ) -> BoxFuture<'_, Result<u64, StoreError>> {
            async move {
                self.cutoffs.lock().unwrap().push(before);
                if self.down {
                    return Err(StoreError::Unavailable(anyhow::anyhow!("down")));
                }
                let mut stamps = self.stamps.lock().unwrap();
                let mut removed = 0;
                stamps.retain(|t| {
                    let go = *t < before && removed < batch;
                    removed += u64::from(go);
                    !go
                });
                Ok(removed)
            }
            .boxed()
        }
    }

    #[tokio::test]
    async fn each_kind_keeps_its_own_period_and_goes_in_batches() {
        let now = Utc::now();
        let old = now - TimeDelta::days(10);
        let inbox = Rows::new("inbox", vec![old; 25], false);
        let alerts = Rows::new("alerts", vec![old, now - TimeDelta::hours(1), now], false);
        let sweeper = Housekeeping::new(
            vec![
                Retention {
                    rows: inbox.clone(),
                    keep: TimeDelta::days(7),
                },
                Retention {
                    rows: alerts.clone(),
                    keep: TimeDelta::minutes(30),
                },
            ],
            ManualClock::new(now),
            10,
        );
        assert_eq!(sweeper.sweep().await, vec![("inbox", 25), ("alerts", 2)]);
        assert!(inbox.stamps.lock().unwrap().is_empty());
        assert_eq!(inbox.cutoffs.lock().unwrap().len(), 3, "10 + 10 + 5");
        assert_eq!(inbox.cutoffs.lock().unwrap()[0], now - TimeDelta::days(7));
        assert_eq!(*alerts.stamps.lock().unwrap(), vec![now]);
        assert_eq!(sweeper.sweep().await, vec![("inbox", 0), ("alerts", 0)]);
    }

    #[tokio::test]
    async fn a_backlog_is_worked_off_over_several_sweeps_and_a_failing_store_is_skipped() {
        let now = Utc::now();
        let old = now - TimeDelta::days(10);
        let backlog = Rows::new("notifications", vec![old; 50], false);
        let broken = Rows::new("dead_letters", vec![old], true);
        let sweeper = Housekeeping::new(
            vec![
                Retention {
                    rows: broken.clone(),
                    keep: TimeDelta::days(1),
                },
                Retention {
                    rows: backlog.clone(),
                    keep: TimeDelta::days(1),
                },
            ],
            ManualClock::new(now),
            2,
        );
        let first = sweeper.sweep().await;
        assert_eq!(
            first,
            vec![
                ("dead_letters", 0),
                ("notifications", u64::from(MAX_BATCHES_PER_SWEEP) * 2)
            ]
        );
        assert_eq!(
            broken.cutoffs.lock().unwrap().len(),
            1,
            "tried once, then skipped"
        );
        sweeper.sweep().await;
        assert!(
            backlog.stamps.lock().unwrap().is_empty(),
            "the rest went next time"
        );
    }
}
