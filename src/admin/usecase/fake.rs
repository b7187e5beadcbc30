//! One in-memory alert store for the admin use cases' tests: the
//! repository, the webhook queue and a webhook that can be down.

use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, TimeDelta, Utc};

use crate::kernel::Fault;
use crate::{
    admin::{
        domain::{AdminError, Alert, AlertFilter, NewAlert, QueuedAlert, WebhookStatus},
        ports::{AlertNotifier, AlertRepository, Raising, Refusal, WebhookQueue},
    },
    kernel::{PageRequest, events::NewEvent},
};

#[derive(Debug, Clone)]
pub struct Row {
    pub alert: Alert,
    pub raising: Raising,
    pub next_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
}

#[derive(Default)]
pub struct Alerts {
    pub rows: Vec<Row>,
    pub filters: Vec<(AlertFilter, PageRequest)>,
    pub acks: Vec<(i64, DateTime<Utc>)>,
    /// Events committed with the alerts' changes, in order.
    pub events: Vec<NewEvent>,
    pub down: bool,
}

#[derive(Clone, Default)]
pub struct FakeAlerts(pub Arc<Mutex<Alerts>>);

impl FakeAlerts {
    /// The stored alerts, unless the database is down.
    fn open(&self) -> Result<MutexGuard<'_, Alerts>, AdminError> {
        Ok(Fault::unless_down(&self.0, |alerts| alerts.down)?)
    }

    pub fn alerts(&self) -> Vec<Alert> {
        self.0
            .lock()
            .unwrap()
            .rows
            .iter()
            .map(|r| r.alert.clone())
            .collect()
    }

    pub fn event_types(&self) -> Vec<&'static str> {
        self.0
            .lock()
            .unwrap()
            .events
            .iter()
            .map(|e| e.event_type)
            .collect()
    }
}

impl AlertRepository for FakeAlerts {
    async fn insert(
        &self,
        alert: &NewAlert,
        raising: Raising,
        now: DateTime<Utc>,
    ) -> Result<Alert, AdminError> {
        let mut alerts = self.open()?;
        let stored = Alert {
            id: alerts.rows.len() as i64 + 1,
            severity: alert.severity,
            source: alert.source.clone(),
            message: alert.message.clone(),
            created_at: now,
            acknowledged: false,
            condition: raising.condition.clone(),
            resolved_at: None,
            webhook: if raising.queue_for_webhook {
                WebhookStatus::Queued
            } else {
                WebhookStatus::None
            },
            webhook_attempts: 0,
        };
        alerts.events.push(stored.raised());
        alerts.rows.push(Row {
            alert: stored.clone(),
            next_at: raising.queue_for_webhook.then_some(now),
            raising,
            error: None,
        });
        Ok(stored)
    }

    async fn list(&self, filter: AlertFilter, page: PageRequest) -> Result<Vec<Alert>, AdminError> {
        let mut alerts = self.open()?;
        alerts.filters.push((filter, page));
        Ok((alerts.rows.iter().rev())
            .map(|r| &r.alert)
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
        let mut alerts = self.open()?;
        alerts.acks.push((id, now));
        let Some(row) = alerts.rows.iter_mut().find(|r| r.alert.id == id) else {
            return Ok(false);
        };
        if !row.alert.acknowledged {
            row.alert.acknowledged = true;
            alerts.events.push(event);
        }
        Ok(true)
    }

    async fn open_conditions(&self, prefix: &str) -> Result<Vec<Alert>, AdminError> {
        Ok((self.open()?.rows.iter())
            .map(|r| &r.alert)
            .filter(|a| a.resolved_at.is_none())
            .filter(|a| {
                a.condition
                    .as_deref()
                    .is_some_and(|c| c.starts_with(prefix))
            })
            .cloned()
            .collect())
    }

    async fn resolve(&self, alert: &Alert, now: DateTime<Utc>) -> Result<bool, AdminError> {
        let mut alerts = self.open()?;
        let Some(row) = alerts.rows.iter_mut().find(|r| r.alert.id == alert.id) else {
            return Ok(false);
        };
        if row.alert.resolved_at.is_some() {
            return Ok(false);
        }
        row.alert.resolved_at = Some(now);
        alerts.events.push(alert.resolved());
        Ok(true)
    }
}

impl WebhookQueue for FakeAlerts {
    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        claim: TimeDelta,
        max: u64,
    ) -> Result<Vec<QueuedAlert>, AdminError> {
        let mut alerts = self.open()?;
        let mut due = Vec::new();
        for row in alerts.rows.iter_mut() {
            if due.len() as u64 == max {
                break;
            }
            if row.next_at.is_some_and(|at| at <= now) {
                row.next_at = Some(now + claim);
                due.push(QueuedAlert {
                    alert: row.alert.clone(),
                    traceparent: row.raising.traceparent.clone(),
                });
            }
        }
        Ok(due)
    }

    async fn delivered(&self, id: i64, attempts: i32, _: DateTime<Utc>) -> Result<(), AdminError> {
        let mut alerts = self.open()?;
        let row = alerts.rows.iter_mut().find(|r| r.alert.id == id).unwrap();
        row.next_at = None;
        row.alert.webhook = WebhookStatus::Delivered;
        row.alert.webhook_attempts = attempts;
        Ok(())
    }

    async fn refused(&self, refusal: &Refusal<'_>) -> Result<(), AdminError> {
        let mut alerts = self.open()?;
        let row = alerts.rows.iter_mut().find(|r| r.alert.id == refusal.alert);
        let row = row.unwrap();
        row.next_at = refusal.next;
        row.error = Some(refusal.error.to_owned());
        row.alert.webhook_attempts = refusal.attempts;
        if refusal.next.is_none() {
            row.alert.webhook = WebhookStatus::GaveUp;
        }
        Ok(())
    }
}

/// An alert id posted, with the traceparent it carried.
pub type Post = (i64, Option<String>);

/// Records every post it was sent; while `down`, refuses them.
#[derive(Clone, Default)]
pub struct FakeWebhook {
    pub sent: Arc<Mutex<Vec<Post>>>,
    pub down: Arc<Mutex<bool>>,
}

impl FakeWebhook {
    pub fn set_down(&self, down: bool) {
        *self.down.lock().unwrap() = down;
    }

    pub fn received(&self) -> Vec<i64> {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .map(|(id, _)| *id)
            .collect()
    }
}

impl AlertNotifier for FakeWebhook {
    async fn notify(&self, alert: &Alert, traceparent: Option<&str>) -> anyhow::Result<()> {
        if *self.down.lock().unwrap() {
            anyhow::bail!("503 from the webhook")
        }
        self.sent
            .lock()
            .unwrap()
            .push((alert.id, traceparent.map(str::to_owned)));
        Ok(())
    }
}
