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

    use chrono::{DateTime, Utc};

    use super::*;
    use crate::kernel::{ManualClock, alerts::Severity};

    #[derive(Clone, Default)]
    struct FakeRepo(Arc<Mutex<Vec<Alert>>>);

    impl AlertRepository for FakeRepo {
        async fn insert(&self, alert: &NewAlert, now: DateTime<Utc>) -> Result<Alert, AdminError> {
            let mut alerts = self.0.lock().unwrap();
            let stored = Alert {
                id: alerts.len() as i64 + 1,
                severity: alert.severity,
                source: alert.source.clone(),
                message: alert.message.clone(),
                created_at: now,
                acknowledged: false,
            };
            alerts.push(stored.clone());
            Ok(stored)
        }

        async fn list(&self, filter: AlertFilter) -> Result<Vec<Alert>, AdminError> {
            let alerts = self.0.lock().unwrap();
            Ok(alerts.iter().take(filter.limit as usize).cloned().collect())
        }

        async fn acknowledge(&self, id: i64, _now: DateTime<Utc>) -> Result<bool, AdminError> {
            let mut alerts = self.0.lock().unwrap();
            match alerts.iter_mut().find(|a| a.id == id) {
                Some(alert) => {
                    alert.acknowledged = true;
                    Ok(true)
                }
                None => Ok(false),
            }
        }
    }

    #[derive(Clone, Default)]
    struct FailingNotifier(Arc<Mutex<u32>>);

    impl AlertNotifier for FailingNotifier {
        async fn notify(&self, _alert: &Alert) -> anyhow::Result<()> {
            *self.0.lock().unwrap() += 1;
            anyhow::bail!("webhook down")
        }
    }

    fn alert() -> NewAlert {
        NewAlert {
            severity: Severity::Critical,
            source: "test".into(),
            message: "boom".into(),
        }
    }

    #[tokio::test]
    async fn a_failing_webhook_does_not_lose_the_alert() {
        let repo = FakeRepo::default();
        let notifier = FailingNotifier::default();
        let service =
            AlertService::new(repo.clone(), notifier.clone(), ManualClock::new(Utc::now()));
        let stored = service.raise(alert()).await.unwrap();
        assert_eq!(stored.id, 1);
        assert_eq!(*notifier.0.lock().unwrap(), 1);
        assert_eq!(repo.0.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn acknowledging_an_unknown_alert_is_not_found() {
        let service = AlertService::new(
            FakeRepo::default(),
            FailingNotifier::default(),
            ManualClock::new(Utc::now()),
        );
        assert!(matches!(
            service.acknowledge(42).await,
            Err(AdminError::AlertNotFound(42))
        ));
        let stored = service.raise(alert()).await.unwrap();
        service.acknowledge(stored.id).await.unwrap();
        assert!(
            service
                .list(AlertFilter {
                    limit: 0,
                    ..Default::default()
                })
                .await
                .unwrap()[0]
                .acknowledged
        );
    }
}
