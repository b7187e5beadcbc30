//! Alerts delivered, not fired: the stored queue of alerts waiting for the
//! webhook, posted oldest first and retried with backoff until the webhook
//! takes them (or a day has passed).

use std::{sync::Arc, time::Duration};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{
    admin::{
        domain::{AdminError, WEBHOOK_CLAIM, webhook_retry_at},
        ports::{AlertNotifier, Refusal, WebhookQueue},
    },
    kernel::Clock,
};

/// Alerts one pass claims at most.
pub const WEBHOOK_BATCH: u64 = 50;

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WebhookPass {
    pub delivered: u32,
    pub refused: u32,
    /// Claimed but not tried: the webhook had just refused an older one.
    pub deferred: u32,
}

#[derive(Clone)]
pub struct WebhookDelivery<Q, N, C> {
    queue: Q,
    webhook: N,
    clock: C,
}

impl<Q: WebhookQueue, N: AlertNotifier, C: Clock> WebhookDelivery<Q, N, C> {
    pub fn new(queue: Q, webhook: N, clock: C) -> Self {
        Self {
            queue,
            webhook,
            clock,
        }
    }

    /// Posts the alerts due, oldest first. Once the webhook refuses one,
    /// the rest of the batch waits for that one's retry instead of each
    /// waiting out its own refusal: they go in order when it is back.
    pub async fn deliver_due(&self) -> Result<WebhookPass, AdminError> {
        let due = (self.queue)
            .claim_due(self.clock.now(), WEBHOOK_CLAIM, WEBHOOK_BATCH)
            .await?;
        let mut pass = WebhookPass::default();
        let mut down: Option<(i64, String)> = None;
        for queued in due {
            let alert = &queued.alert;
            if let Some((first, error)) = &down {
                let next = webhook_retry_at(
                    alert.webhook_attempts.max(1),
                    alert.created_at,
                    self.clock.now(),
                );
                let why =
                    format!("not tried: the webhook refused alert {first} just before ({error})");
                let refusal = Refusal {
                    alert: alert.id,
                    attempts: alert.webhook_attempts,
                    next,
                    error: &why,
                };
                self.queue.refused(&refusal).await?;
                pass.deferred += 1;
                continue;
            }
            let attempts = alert.webhook_attempts + 1;
            match self
                .webhook
                .notify(alert, queued.traceparent.as_deref())
                .await
            {
                Ok(()) => {
                    self.queue
                        .delivered(alert.id, attempts, self.clock.now())
                        .await?;
                    metrics::counter!("alert_webhook_posts_total", "outcome" => "delivered")
                        .increment(1);
                    pass.delivered += 1;
                }
                Err(err) => {
                    let error = format!("{err:#}");
                    let next = webhook_retry_at(attempts, alert.created_at, self.clock.now());
                    let refusal = Refusal {
                        alert: alert.id,
                        attempts,
                        next,
                        error: &error,
                    };
                    self.queue.refused(&refusal).await?;
                    let outcome = if next.is_some() {
                        "retrying"
                    } else {
                        "gave_up"
                    };
                    metrics::counter!("alert_webhook_posts_total", "outcome" => outcome)
                        .increment(1);
                    tracing::warn!(
                        alert = alert.id,
                        attempts,
                        error,
                        outcome,
                        "alert webhook refused the post"
                    );
                    pass.refused += 1;
                    down = Some((alert.id, error));
                }
            }
        }
        Ok(pass)
    }

    /// Delivers until `cancel`: right after an alert is queued (`queued`),
    /// and every second for the retries that fall due.
    pub async fn run(self, queued: Arc<Notify>, cancel: CancellationToken) {
        loop {
            match self.deliver_due().await {
                Ok(pass)
                    if pass.delivered + pass.refused + pass.deferred >= WEBHOOK_BATCH as u32
                        && pass.refused == 0 =>
                {
                    continue;
                }
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(error = %err, "alert webhook: cannot read the queue; retrying")
                }
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = queued.notified() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, TimeDelta, Utc};

    use super::*;
    use crate::{
        admin::{
            domain::{NewAlert, Severity, WebhookStatus},
            usecase::{
                AlertService,
                fake::{FakeAlerts, FakeWebhook},
            },
        },
        kernel::{ManualClock, trace::TraceContext},
    };

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn alert(message: &str) -> NewAlert {
        NewAlert {
            severity: Severity::Warning,
            source: "test".into(),
            message: message.into(),
        }
    }

    struct Harness {
        alerts: AlertService<FakeAlerts, ManualClock>,
        delivery: WebhookDelivery<FakeAlerts, FakeWebhook, ManualClock>,
        repo: FakeAlerts,
        webhook: FakeWebhook,
        clock: ManualClock,
    }

    fn harness() -> Harness {
        let repo = FakeAlerts::default();
        let webhook = FakeWebhook::default();
        let clock = ManualClock::new(t0());
        Harness {
            alerts: AlertService::new(repo.clone(), clock.clone(), true),
            delivery: WebhookDelivery::new(repo.clone(), webhook.clone(), clock.clone()),
            repo,
            webhook,
            clock,
        }
    }

    #[tokio::test]
    async fn a_queued_alert_is_posted_once_with_the_trace_it_was_raised_in() {
        let h = harness();
        let ctx = TraceContext::root(None);
        let raised = ctx.scope(h.alerts.raise(alert("a"))).await.unwrap();
        let pass = h.delivery.deliver_due().await.unwrap();
        assert_eq!(pass.delivered, 1);
        assert_eq!(
            *h.webhook.sent.lock().unwrap(),
            vec![(raised.id, Some(ctx.traceparent()))]
        );
        assert_eq!(h.repo.alerts()[0].webhook, WebhookStatus::Delivered);
        assert_eq!(
            h.delivery.deliver_due().await.unwrap(),
            WebhookPass::default(),
            "once"
        );
        h.clock.advance(TimeDelta::hours(1));
        h.delivery.deliver_due().await.unwrap();
        assert_eq!(h.webhook.received(), vec![raised.id]);
    }

    #[tokio::test]
    async fn alerts_raised_while_the_webhook_is_down_arrive_in_order_once_it_is_back() {
        let h = harness();
        h.webhook.set_down(true);
        for n in 0..3 {
            h.alerts.raise(alert(&format!("a{n}"))).await.unwrap();
        }
        let pass = h.delivery.deliver_due().await.unwrap();
        assert_eq!(
            (pass.delivered, pass.refused, pass.deferred),
            (0, 1, 2),
            "one try, the others wait behind it"
        );
        // Retried with backoff: 1 s, 2 s, 4 s… never before it is due.
        for wait in [1, 2, 4, 8] {
            assert_eq!(
                h.delivery.deliver_due().await.unwrap(),
                WebhookPass::default(),
                "not due yet"
            );
            h.clock.advance(TimeDelta::seconds(wait));
            assert_eq!(h.delivery.deliver_due().await.unwrap().refused, 1);
        }
        assert_eq!(h.repo.alerts()[0].webhook_attempts, 5);
        assert!(
            h.repo.0.lock().unwrap().rows[0]
                .error
                .as_deref()
                .unwrap()
                .contains("503")
        );
        h.webhook.set_down(false);
        h.clock.advance(TimeDelta::seconds(16));
        assert_eq!(h.delivery.deliver_due().await.unwrap().delivered, 3);
        assert_eq!(h.webhook.received(), vec![1, 2, 3]);
        assert!(
            h.repo
                .alerts()
                .iter()
                .all(|a| a.webhook == WebhookStatus::Delivered)
        );
    }

    #[tokio::test]
    async fn a_webhook_down_for_a_day_is_given_up_and_the_alert_stays_in_the_database() {
        let h = harness();
        h.webhook.set_down(true);
        h.alerts.raise(alert("a")).await.unwrap();
        h.delivery.deliver_due().await.unwrap();
        for _ in 0..400 {
            h.clock.advance(TimeDelta::minutes(5));
            h.delivery.deliver_due().await.unwrap();
        }
        let stored = &h.repo.alerts()[0];
        assert_eq!(stored.webhook, WebhookStatus::GaveUp);
        let attempts = stored.webhook_attempts;
        assert!(
            (280..=300).contains(&attempts),
            "{attempts} tries over a day"
        );
        h.webhook.set_down(false);
        h.clock.advance(TimeDelta::hours(1));
        h.delivery.deliver_due().await.unwrap();
        assert!(h.webhook.received().is_empty());
    }

    #[tokio::test]
    async fn a_claimed_alert_is_not_posted_twice_by_two_instances() {
        let h = harness();
        h.alerts.raise(alert("a")).await.unwrap();
        // Another instance claimed it and died before posting.
        let claimed = h.repo.claim_due(t0(), WEBHOOK_CLAIM, 10).await.unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(h.delivery.deliver_due().await.unwrap().delivered, 0);
        h.clock.advance(WEBHOOK_CLAIM);
        assert_eq!(
            h.delivery.deliver_due().await.unwrap().delivered,
            1,
            "its claim ran out"
        );
    }
}
