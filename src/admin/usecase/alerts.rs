//! Raising, listing, acknowledging and resolving admin alerts.

use std::sync::Arc;

use futures::{FutureExt, future::BoxFuture};
use tokio::sync::Notify;

use crate::{
    admin::{
        domain::{AdminError, Alert, AlertFilter, MAX_ALERT_PAGE, NewAlert},
        ports::{AlertRepository, Raising},
    },
    kernel::{
        Clock, Page, PageRequest, UserId,
        alerts::AlertSink,
        events::{AlertAcknowledged, NewEvent, types},
        trace,
    },
};

#[derive(Clone)]
pub struct AlertService<R, C> {
    repo: R,
    clock: C,
    /// A webhook is configured: new alerts are queued for it.
    webhook: bool,
    /// Wakes the webhook delivery right after an alert is queued.
    queued: Arc<Notify>,
}

impl<R: AlertRepository, C: Clock> AlertService<R, C> {
    pub fn new(repo: R, clock: C, webhook: bool) -> Self {
        Self {
            repo,
            clock,
            webhook,
            queued: Arc::new(Notify::new()),
        }
    }

    /// What the webhook delivery waits on between its polls.
    pub fn queued(&self) -> Arc<Notify> {
        self.queued.clone()
    }

    /// Stores the alert with its `AlertRaised` event and, with a webhook,
    /// queues it there (posted by [`super::WebhookDelivery`], retried
    /// until the webhook takes it).
    pub async fn raise(&self, alert: NewAlert) -> Result<Alert, AdminError> {
        self.store(alert, None).await
    }

    /// Raises the alert of a watchdog `condition`.
    pub async fn raise_for(&self, condition: &str, alert: NewAlert) -> Result<Alert, AdminError> {
        self.store(alert, Some(condition.to_owned())).await
    }

    async fn store(&self, alert: NewAlert, condition: Option<String>) -> Result<Alert, AdminError> {
        let raising = Raising {
            condition,
            queue_for_webhook: self.webhook,
            traceparent: trace::current_traceparent(),
        };
        let stored = self.repo.insert(&alert, raising, self.clock.now()).await?;
        metrics::counter!("admin_alerts_raised_total", "severity" => stored.severity.as_str())
            .increment(1);
        if self.webhook {
            self.queued.notify_one();
        }
        Ok(stored)
    }

    /// The unresolved alerts whose condition starts with `prefix`.
    pub async fn open(&self, prefix: &str) -> Result<Vec<Alert>, AdminError> {
        self.repo.open_conditions(prefix).await
    }

    /// Marks a condition's alert resolved (with `AlertResolved`).
    pub async fn resolve(&self, alert: &Alert) -> Result<bool, AdminError> {
        self.repo.resolve(alert, self.clock.now()).await
    }

    /// A page of the alerts that pass `filter`, newest first.
    pub async fn list(
        &self,
        filter: AlertFilter,
        asked: PageRequest,
    ) -> Result<Page<Alert>, AdminError> {
        let read = |page| self.repo.list(filter, page);
        asked.read(MAX_ALERT_PAGE, read, |a| a.id).await
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

impl<R: AlertRepository, C: Clock> AlertSink for AlertService<R, C> {
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
    use crate::kernel::Fault;
    use chrono::{DateTime, TimeDelta, Utc};

    use super::*;
    use crate::{
        admin::{
            domain::{Severity, WebhookStatus},
            usecase::fake::FakeAlerts,
        },
        kernel::{ManualClock, trace::TraceContext},
    };

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    const ADMIN: UserId = UserId(9_000);

    fn alert() -> NewAlert {
        NewAlert {
            severity: Severity::Critical,
            source: "test".into(),
            message: "boom".into(),
        }
    }

    struct Harness {
        service: AlertService<FakeAlerts, ManualClock>,
        repo: FakeAlerts,
        clock: ManualClock,
    }

    fn harness(webhook: bool) -> Harness {
        let repo = FakeAlerts::default();
        let clock = ManualClock::new(t0());
        Harness {
            service: AlertService::new(repo.clone(), clock.clone(), webhook),
            repo,
            clock,
        }
    }

    // --- raise ---

    #[tokio::test]
    async fn a_raised_alert_is_stored_with_its_event_and_queued_for_the_webhook_in_its_trace() {
        let h = harness(true);
        h.clock.advance(TimeDelta::seconds(30));
        let ctx = TraceContext::root(None);
        let stored = ctx.scope(h.service.raise(alert())).await.unwrap();

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
        assert_eq!(stored.webhook, WebhookStatus::Queued);
        assert_eq!(h.repo.alerts(), vec![stored.clone()]);
        let world = h.repo.0.lock().unwrap();
        assert_eq!(world.rows[0].raising.traceparent, Some(ctx.traceparent()));
        assert_eq!(world.events.len(), 1);
        assert_eq!(world.events[0].event_type, types::ALERT_RAISED);
        assert_eq!(
            world.events[0].payload,
            serde_json::json!({"alertId": 1, "severity": "critical", "source": "test", "message": "boom"})
        );
    }

    #[tokio::test]
    async fn without_a_webhook_an_alert_is_stored_and_not_queued() {
        let h = harness(false);
        let stored = h.service.raise(alert()).await.unwrap();
        assert_eq!(stored.webhook, WebhookStatus::None);
        assert_eq!(h.repo.0.lock().unwrap().rows[0].next_at, None);
    }

    #[tokio::test]
    async fn an_alert_that_cannot_be_stored_is_an_error() {
        let h = harness(true);
        h.repo.0.lock().unwrap().down = true;
        assert!(matches!(
            h.service.raise(alert()).await,
            Err(AdminError::Fault(Fault::Unavailable(_)))
        ));
    }

    #[tokio::test]
    async fn the_alert_sink_stores_like_raise() {
        let h = harness(true);
        AlertSink::raise(&h.service, alert()).await;
        assert_eq!(h.repo.alerts().len(), 1);
    }

    #[tokio::test]
    async fn the_alert_sink_never_fails_its_caller_when_the_store_is_down() {
        let h = harness(true);
        h.repo.0.lock().unwrap().down = true;
        // Returns (), no panic: the alert only goes to the log.
        AlertSink::raise(&h.service, alert()).await;
        assert!(h.repo.alerts().is_empty());
    }

    #[tokio::test]
    async fn a_condition_alert_stays_open_until_resolved_once_with_an_event() {
        let h = harness(false);
        let raised = h
            .service
            .raise_for("watchdog:outbox", alert())
            .await
            .unwrap();
        h.service.raise(alert()).await.unwrap();
        assert_eq!(
            h.service.open("watchdog:").await.unwrap(),
            vec![raised.clone()]
        );
        h.clock.advance(TimeDelta::minutes(1));
        assert!(h.service.resolve(&raised).await.unwrap());
        assert!(!h.service.resolve(&raised).await.unwrap(), "once");
        assert!(h.service.open("watchdog:").await.unwrap().is_empty());
        assert_eq!(
            h.repo.alerts()[0].resolved_at,
            Some(t0() + TimeDelta::minutes(1))
        );
        assert_eq!(
            h.repo.event_types(),
            vec![
                types::ALERT_RAISED,
                types::ALERT_RAISED,
                types::ALERT_RESOLVED
            ]
        );
    }

    // --- list ---

    #[tokio::test]
    async fn the_list_limit_is_kept_between_one_and_the_maximum() {
        let h = harness(false);
        for limit in [0, 20, MAX_ALERT_PAGE, MAX_ALERT_PAGE + 1, u64::MAX] {
            h.service
                .list(AlertFilter::default(), PageRequest::asked(None, limit))
                .await
                .unwrap();
        }
        let limits: Vec<u64> = (h.repo.0.lock().unwrap().filters.iter())
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
        let first = h
            .service
            .list(filter, PageRequest::asked(None, 1))
            .await
            .unwrap();
        assert_eq!(
            first.items.iter().map(|a| a.id).collect::<Vec<_>>(),
            vec![2]
        );
        assert_eq!(first.next_cursor, Some(2), "an older alert follows");
        let older = h
            .service
            .list(filter, PageRequest::asked(first.next_cursor, 1))
            .await
            .unwrap();
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
            h.service
                .list(AlertFilter::default(), PageRequest::asked(None, 10))
                .await,
            Err(AdminError::Fault(Fault::Unavailable(_)))
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
        assert!(alerts.rows[0].alert.acknowledged);
        assert_eq!(alerts.acks, vec![(stored.id, t0() + TimeDelta::minutes(2))]);
    }

    #[tokio::test]
    async fn acknowledging_twice_is_fine_and_recorded_once_with_the_admin() {
        let h = harness(false);
        let stored = h.service.raise(alert()).await.unwrap();
        h.service.acknowledge(stored.id, ADMIN).await.unwrap();
        h.service.acknowledge(stored.id, UserId(8)).await.unwrap();
        let alerts = h.repo.0.lock().unwrap();
        let acks: Vec<_> = (alerts.events.iter())
            .filter(|e| e.event_type == types::ALERT_ACKNOWLEDGED)
            .collect();
        assert_eq!(acks.len(), 1);
        assert_eq!(
            acks[0].payload,
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
        assert!(!h.repo.alerts()[0].acknowledged);
    }

    #[tokio::test]
    async fn acknowledging_while_the_store_is_down_is_unavailable_not_not_found() {
        let h = harness(false);
        h.repo.0.lock().unwrap().down = true;
        assert!(matches!(
            h.service.acknowledge(1, ADMIN).await,
            Err(AdminError::Fault(Fault::Unavailable(_)))
        ));
    }
}
