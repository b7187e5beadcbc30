use futures::{FutureExt, future::BoxFuture};

use super::{
    domain::{AdminError, Alert, AlertFilter, MAX_ALERT_LIST, NewAlert},
    ports::{AlertNotifier, AlertRepository},
};
use crate::kernel::{Clock, alerts::AlertSink};

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

    pub async fn list(&self, mut filter: AlertFilter) -> Result<Vec<Alert>, AdminError> {
        filter.limit = filter.limit.clamp(1, MAX_ALERT_LIST);
        self.repo.list(filter).await
    }

    pub async fn acknowledge(&self, id: i64) -> Result<(), AdminError> {
        if self.repo.acknowledge(id, self.clock.now()).await? {
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
        filters: Vec<AlertFilter>,
        acks: Vec<(i64, DateTime<Utc>)>,
        down: bool,
    }

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

        async fn list(&self, filter: AlertFilter) -> Result<Vec<Alert>, AdminError> {
            self.check()?;
            let mut alerts = self.0.lock().unwrap();
            alerts.filters.push(filter);
            Ok(alerts
                .rows
                .iter()
                .take(filter.limit as usize)
                .cloned()
                .collect())
        }

        async fn acknowledge(&self, id: i64, now: DateTime<Utc>) -> Result<bool, AdminError> {
            self.check()?;
            let mut alerts = self.0.lock().unwrap();
            alerts.acks.push((id, now));
            match alerts.rows.iter_mut().find(|a| a.id == id) {
                Some(alert) => {
                    alert.acknowledged = true;
                    Ok(true)
                }
                None => Ok(false),
            }
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
        for limit in [0, 20, MAX_ALERT_LIST, MAX_ALERT_LIST + 1, u64::MAX] {
            h.service
                .list(AlertFilter {
                    limit,
                    ..AlertFilter::default()
                })
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
            .map(|f| f.limit)
            .collect();
        assert_eq!(
            limits,
            vec![1, 20, MAX_ALERT_LIST, MAX_ALERT_LIST, MAX_ALERT_LIST]
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
            limit: 1,
        };
        let listed = h.service.list(filter).await.unwrap();
        assert_eq!(listed.iter().map(|a| a.id).collect::<Vec<_>>(), vec![1]);
        assert_eq!(h.repo.0.lock().unwrap().filters, vec![filter]);
    }

    #[tokio::test]
    async fn the_list_fails_when_the_store_is_down() {
        let h = harness(false);
        h.repo.0.lock().unwrap().down = true;
        assert!(matches!(
            h.service.list(AlertFilter::default()).await,
            Err(AdminError::Unavailable(_))
        ));
    }

    // --- acknowledge ---

    #[tokio::test]
    async fn acknowledging_marks_the_alert_at_the_clock_time() {
        let h = harness(false);
        let stored = h.service.raise(alert()).await.unwrap();
        h.clock.advance(TimeDelta::minutes(2));
        h.service.acknowledge(stored.id).await.unwrap();
        let alerts = h.repo.0.lock().unwrap();
        assert!(alerts.rows[0].acknowledged);
        assert_eq!(alerts.acks, vec![(stored.id, t0() + TimeDelta::minutes(2))]);
    }

    #[tokio::test]
    async fn acknowledging_twice_is_fine() {
        let h = harness(false);
        let stored = h.service.raise(alert()).await.unwrap();
        h.service.acknowledge(stored.id).await.unwrap();
        h.service.acknowledge(stored.id).await.unwrap();
    }

    #[tokio::test]
    async fn acknowledging_an_unknown_alert_is_not_found() {
        let h = harness(false);
        h.service.raise(alert()).await.unwrap();
        assert!(matches!(
            h.service.acknowledge(42).await,
            Err(AdminError::AlertNotFound(42))
        ));
        assert!(!h.repo.0.lock().unwrap().rows[0].acknowledged);
    }

    #[tokio::test]
    async fn acknowledging_while_the_store_is_down_is_unavailable_not_not_found() {
        let h = harness(false);
        h.repo.0.lock().unwrap().down = true;
        assert!(matches!(
            h.service.acknowledge(1).await,
            Err(AdminError::Unavailable(_))
        ));
    }
}
