use futures::{FutureExt, future::BoxFuture};

use super::{
    domain::{AdminError, Alert, AlertFilter, MAX_ALERT_PAGE, NewAlert},
    ports::{AlertNotifier, AlertRepository},
};
use crate::kernel::{
    Clock, Page, PageRequest, UserId,
    alerts::AlertSink,
    events::{AlertAcknowledged, NewEvent, types},
};

#[derive(Clone)]
pub struct AlertService<R, N, C> {
    repo: R,
    notifier: N,
    clock: C,
}

impl<R: AlertRepository, N: AlertNotifier, C: Clock> AlertService<R, N, C> {
    pub fn new(repo: R, notifier: N, clock: C) -> Self {
        Self {
            repo,
            notifier,
            clock,
        }
    }

    /// Stores the alert, then pushes it to the webhook. A webhook failure is
    /// logged, never lost: the alert is already in the database.
    pub async fn raise(&self, alert: NewAlert) -> Result<Alert, AdminError> {
        let stored = self.repo.insert(&alert, self.clock.now()).await?;
        metrics::counter!("admin_alerts_raised_total", "severity" => stored.severity.as_str())
            .increment(1);
        if let Err(err) = self.notifier.notify(&stored).await {
            tracing::warn!(alert = stored.id, error = %err, "alert webhook failed");
        }
        Ok(stored)
    }

    /// A page of the alerts that pass `filter`, newest first.
    pub async fn list(
        &self,
        filter: AlertFilter,
        after: Option<i64>,
        limit: u64,
    ) -> Result<Page<Alert>, AdminError> {
        let page = PageRequest::new(after, limit, MAX_ALERT_PAGE);
        let rows = self.repo.list(filter, page).await?;
        Ok(Page::of(rows, page, |a| a.id))
    }

    /// Acknowledges an alert; the first acknowledgement writes
    /// `AlertAcknowledged` with the admin who did it.
    pub async fn acknowledge(&self, id: i64, admin: UserId) -> Result<(), AdminError> {
        let event = NewEvent::new(
            types::ALERT_ACKNOWLEDGED,
            "alert",
            id,
            &AlertAcknowledged {
                alert_id: id,
                admin_id: admin.value(),
            },
        );
        if self.repo.acknowledge(id, event, self.clock.now()).await? {
            Ok(())
        } else {
            Err(AdminError::AlertNotFound(id))
        }
    }
}

impl<R: AlertRepository, N: AlertNotifier, C: Clock> AlertSink for AlertService<R, N, C> {
    fn raise(&self, alert: NewAlert) -> BoxFuture<'_, ()> {
        async move {
            if let Err(err) = AlertService::raise(self, alert.clone()).await {
                // The alert store itself is down: the log is the last resort.
                tracing::error!(
                    severity = alert.severity.as_str(),
                    source = %alert.source,
                    message = %alert.message,
                    error = %err,
                    "could not store an admin alert"
                );
            }
        }
        .boxed()
    }
}

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

    use super::*;
    use crate::kernel::{ManualClock, alerts::Severity};

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    #[derive(Default)]
    struct Alerts {
        rows: Vec<Alert>,
        filters: Vec<(AlertFilter, PageRequest)>,
        acks: Vec<(i64, DateTime<Utc>)>,
        events: Vec<NewEvent>,
        down: bool,
    }

    const ADMIN: UserId = UserId(9_000);

    #[derive(Clone, Default)]
    struct FakeRepo(Arc<Mutex<Alerts>>);

    impl FakeRepo {
        fn check(&self) -> Result<(), AdminError> {
            if self.0.lock().unwrap().down {
                return Err(AdminError::Unavailable(anyhow::anyhow!("database down")));
            }
            Ok(())
        }
    }

    impl AlertRepository for FakeRepo {
        async fn insert(&self, alert: &NewAlert, now: DateTime<Utc>) -> Result<Alert, AdminError> {
            self.check()?;
            let mut alerts = self.0.lock().unwrap();
            let stored = Alert {
                id: alerts.rows.len() as i64 + 1,
                severity: alert.severity,
                source: alert.source.clone(),
                message: alert.message.clone(),
                created_at: now,
                acknowledged: false,
            };
            alerts.rows.push(stored.clone());
            Ok(stored)
        }

        async fn list(
            &self,
            filter: AlertFilter,
            page: PageRequest,
        ) -> Result<Vec<Alert>, AdminError> {
            self.check()?;
            let mut alerts = self.0.lock().unwrap();
            alerts.filters.push((filter, page));
            Ok(alerts
                .rows
                .iter()
                .rev()
                .filter(|a| page.after.is_none_or(|after| a.id < after))
                .take(page.fetch() as usize)
                .cloned()
                .collect())
        }

        async fn acknowledge(
            &self,
            id: i64,
            event: NewEvent,
            now: DateTime<Utc>,
        ) -> Result<bool, AdminError> {
            self.check()?;
            let mut alerts = self.0.lock().unwrap();
            alerts.acks.push((id, now));
            let Some(alert) = alerts.rows.iter_mut().find(|a| a.id == id) else {
                return Ok(false);
            };
            if !alert.acknowledged {
                alert.acknowledged = true;
                alerts.events.push(event);
            }
            Ok(true)
        }
    }

    /// Records what it was sent; `failing` makes every push fail.
    #[derive(Clone, Default)]
    struct FakeNotifier {
        sent: Arc<Mutex<Vec<Alert>>>,
        failing: bool,
    }

    impl AlertNotifier for FakeNotifier {
        async fn notify(&self, alert: &Alert) -> anyhow::Result<()> {
            self.sent.lock().unwrap().push(alert.clone());
            if self.failing {
                anyhow::bail!("webhook down")
            }
            Ok(())
        }
    }

    fn alert() -> NewAlert {
        NewAlert {
            severity: Severity::Critical,
            source: "test".into(),
            message: "boom".into(),
        }
    }

    struct Harness {
        service: AlertService<FakeRepo, FakeNotifier, ManualClock>,
        repo: FakeRepo,
        notifier: FakeNotifier,
        clock: ManualClock,
    }

    fn harness(failing_webhook: bool) -> Harness {
        let repo = FakeRepo::default();
        let notifier = FakeNotifier {
            failing: failing_webhook,
            ..FakeNotifier::default()
        };
        let clock = ManualClock::new(t0());
        Harness {
            service: AlertService::new(repo.clone(), notifier.clone(), clock.clone()),
            repo,
            notifier,
            clock,
        }
    }

    // --- raise ---

    #[tokio::test]
    async fn a_raised_alert_is_stored_at_the_clock_time_then_pushed_as_stored() {
        let h = harness(false);
        h.clock.advance(TimeDelta::seconds(30));
        let stored = h.service.raise(alert()).await.unwrap();

        assert_eq!(stored.id, 1);
        assert_eq!(stored.created_at, t0() + TimeDelta::seconds(30));
        assert_eq!(
            (
                stored.severity,
                stored.source.as_str(),
                stored.message.as_str()
            ),
            (Severity::Critical, "test", "boom")
        );
        assert!(!stored.acknowledged);
        assert_eq!(h.repo.0.lock().unwrap().rows, vec![stored.clone()]);
        assert_eq!(*h.notifier.sent.lock().unwrap(), vec![stored]);
    }

    #[tokio::test]
    async fn a_failing_webhook_does_not_lose_the_alert() {
        let h = harness(true);
        let stored = h.service.raise(alert()).await.unwrap();
        assert_eq!(stored.id, 1);
        assert_eq!(h.notifier.sent.lock().unwrap().len(), 1);
        assert_eq!(h.repo.0.lock().unwrap().rows.len(), 1);
    }

    #[tokio::test]
    async fn an_alert_that_cannot_be_stored_is_an_error_and_is_not_pushed() {
        let h = harness(false);
        h.repo.0.lock().unwrap().down = true;
        assert!(matches!(
            h.service.raise(alert()).await,
            Err(AdminError::Unavailable(_))
        ));
        assert!(h.notifier.sent.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn the_alert_sink_stores_and_pushes_like_raise() {
        let h = harness(false);
        AlertSink::raise(&h.service, alert()).await;
        assert_eq!(h.repo.0.lock().unwrap().rows.len(), 1);
        assert_eq!(h.notifier.sent.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn the_alert_sink_never_fails_its_caller_when_the_store_is_down() {
        let h = harness(false);
        h.repo.0.lock().unwrap().down = true;
        // Returns (), no panic: the alert only goes to the log.
        AlertSink::raise(&h.service, alert()).await;
        assert!(h.repo.0.lock().unwrap().rows.is_empty());
        assert!(h.notifier.sent.lock().unwrap().is_empty());
    }

    // --- list ---

    #[tokio::test]
    async fn the_list_limit_is_kept_between_one_and_the_maximum() {
        let h = harness(false);
        for limit in [0, 20, MAX_ALERT_PAGE, MAX_ALERT_PAGE + 1, u64::MAX] {
            h.service
                .list(AlertFilter::default(), None, limit)
                .await
                .unwrap();
        }
        let limits: Vec<u64> = h
            .repo
            .0
            .lock()
            .unwrap()
            .filters
            .iter()
            .map(|(_, page)| page.limit)
            .collect();
        assert_eq!(
            limits,
            vec![1, 20, MAX_ALERT_PAGE, MAX_ALERT_PAGE, MAX_ALERT_PAGE]
        );
    }

    #[tokio::test]
    async fn the_list_passes_its_filter_on_and_answers_the_repository_rows() {
        let h = harness(false);
        h.service.raise(alert()).await.unwrap();
        h.service.raise(alert()).await.unwrap();
        let filter = AlertFilter {
            acknowledged: Some(false),
            severity: Some(Severity::Warning),
        };
        let first = h.service.list(filter, None, 1).await.unwrap();
        assert_eq!(
            first.items.iter().map(|a| a.id).collect::<Vec<_>>(),
            vec![2]
        );
        assert_eq!(first.next_cursor, Some(2), "an older alert follows");
        let older = h.service.list(filter, first.next_cursor, 1).await.unwrap();
        assert_eq!(
            older.items.iter().map(|a| a.id).collect::<Vec<_>>(),
            vec![1]
        );
        assert_eq!(older.next_cursor, None);
        assert_eq!(
            h.repo.0.lock().unwrap().filters,
            vec![
                (filter, PageRequest::new(None, 1, MAX_ALERT_PAGE)),
                (filter, PageRequest::new(Some(2), 1, MAX_ALERT_PAGE)),
            ]
        );
    }

    #[tokio::test]
    async fn the_list_fails_when_the_store_is_down() {
        let h = harness(false);
        h.repo.0.lock().unwrap().down = true;
        assert!(matches!(
            h.service.list(AlertFilter::default(), None, 10).await,
            Err(AdminError::Unavailable(_))
        ));
    }

    // --- acknowledge ---

    #[tokio::test]
    async fn acknowledging_marks_the_alert_at_the_clock_time() {
        let h = harness(false);
        let stored = h.service.raise(alert()).await.unwrap();
        h.clock.advance(TimeDelta::minutes(2));
        h.service.acknowledge(stored.id, ADMIN).await.unwrap();
        let alerts = h.repo.0.lock().unwrap();
        assert!(alerts.rows[0].acknowledged);
        assert_eq!(alerts.acks, vec![(stored.id, t0() + TimeDelta::minutes(2))]);
    }

    #[tokio::test]
    async fn acknowledging_twice_is_fine_and_recorded_once_with_the_admin() {
        let h = harness(false);
        let stored = h.service.raise(alert()).await.unwrap();
        h.service.acknowledge(stored.id, ADMIN).await.unwrap();
        h.service.acknowledge(stored.id, UserId(8)).await.unwrap();
        let alerts = h.repo.0.lock().unwrap();
        assert_eq!(alerts.events.len(), 1);
        assert_eq!(alerts.events[0].event_type, types::ALERT_ACKNOWLEDGED);
        assert_eq!(
            alerts.events[0].payload,
            serde_json::json!({"alertId": stored.id, "adminId": ADMIN.value()})
        );
    }

    #[tokio::test]
    async fn acknowledging_an_unknown_alert_is_not_found() {
        let h = harness(false);
        h.service.raise(alert()).await.unwrap();
        assert!(matches!(
            h.service.acknowledge(42, ADMIN).await,
            Err(AdminError::AlertNotFound(42))
        ));
        assert!(!h.repo.0.lock().unwrap().rows[0].acknowledged);
    }

    #[tokio::test]
    async fn acknowledging_while_the_store_is_down_is_unavailable_not_not_found() {
        let h = harness(false);
        h.repo.0.lock().unwrap().down = true;
        assert!(matches!(
            h.service.acknowledge(1, ADMIN).await,
            Err(AdminError::Unavailable(_))
        ));
    }

    mod housekeeping {
        use std::sync::{Arc, Mutex};

        use chrono::{DateTime, TimeDelta, Utc};
        use futures::{FutureExt, future::BoxFuture};

        use super::super::*;
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
}
