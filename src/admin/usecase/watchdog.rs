//! The watchdogs: every few seconds, ask each module what of it has been
//! stuck past the threshold; raise one alert per stuck condition (naming
//! the ids) and mark it resolved once the condition clears.

use std::{sync::Arc, time::Duration};

use chrono::TimeDelta;
use tokio_util::sync::CancellationToken;

use super::AlertService;
use crate::{
    admin::{
        domain::{AdminError, NewAlert},
        ports::AlertRepository,
    },
    kernel::{
        Clock,
        watch::{Look, StallProbe},
    },
    worker::{Pass, periodically},
};

/// Every watchdog condition starts with this.
pub const WATCHDOG: &str = "watchdog:";

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatchReport {
    pub stalls: u32,
    pub raised: u32,
    pub resolved: u32,
    /// Probes that could not answer (their alerts stay as they were).
    pub failed: u32,
}

pub struct Watchdog<R, C> {
    alerts: AlertService<R, C>,
    probes: Vec<Arc<dyn StallProbe>>,
    clock: C,
    after: TimeDelta,
}

impl<R: AlertRepository, C: Clock> Watchdog<R, C> {
    pub fn new(
        alerts: AlertService<R, C>,
        probes: Vec<Arc<dyn StallProbe>>,
        clock: C,
        after: TimeDelta,
    ) -> Self {
        Self {
            alerts,
            probes,
            clock,
            after,
        }
    }

    /// One look at every probe. A condition found with no open alert gets
    /// one; an open alert of a probe that answered and no longer finds its
    /// condition is resolved. A probe that fails changes nothing.
    pub async fn pass(&self) -> Result<WatchReport, AdminError> {
        let now = self.clock.now();
        let look = Look {
            since: now - self.after,
            now,
        };
        let open = self.alerts.open(WATCHDOG).await?;
        let mut report = WatchReport::default();
        for probe in &self.probes {
            let name = probe.name();
            let stalls = match probe.stalls(look).await {
                Ok(stalls) => stalls,
                Err(err) => {
                    tracing::warn!(probe = name, error = %err, "watchdog: probe failed; its alerts stay as they are");
                    report.failed += 1;
                    continue;
                }
            };
            let oldest = stalls
                .iter()
                .map(|s| s.age.num_milliseconds())
                .max()
                .unwrap_or(0);
            metrics::gauge!("watchdog_stalls", "probe" => name).set(stalls.len() as f64);
            metrics::gauge!("watchdog_oldest_stall_seconds", "probe" => name)
                .set(oldest as f64 / 1000.0);
            report.stalls += stalls.len() as u32;
            for stall in &stalls {
                if open
                    .iter()
                    .any(|a| a.condition.as_deref() == Some(stall.condition.as_str()))
                {
                    continue;
                }
                let alert = NewAlert {
                    severity: stall.severity,
                    source: stall.condition.clone(),
                    message: stall.message.clone(),
                };
                match self.alerts.raise_for(&stall.condition, alert).await {
                    Ok(_) => report.raised += 1,
                    Err(AdminError::AlreadyOpen(_)) => {}
                    Err(err) => return Err(err),
                }
            }
            let mine = |condition: &str| {
                condition == name
                    || condition
                        .strip_prefix(name)
                        .is_some_and(|rest| rest.starts_with(':'))
            };
            for alert in &open {
                let Some(condition) = alert.condition.as_deref() else {
                    continue;
                };
                if mine(condition)
                    && !stalls.iter().any(|s| s.condition == condition)
                    && self.alerts.resolve(alert).await?
                {
                    report.resolved += 1;
                }
            }
        }
        Ok(report)
    }

    /// Looks every tenth of the threshold (1–30 s) until `cancel`.
    pub async fn run(self, cancel: CancellationToken) {
        let every = (self.after.to_std().unwrap_or(Duration::from_secs(300)) / 10)
            .clamp(Duration::from_secs(1), Duration::from_secs(30));
        let watchdog = &self;
        periodically("watchdog", every, cancel, || async move {
            watchdog.pass().await.map(|_| Pass::Idle)
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use chrono::{DateTime, Utc};
    use futures::{FutureExt, future::BoxFuture};

    use super::*;
    use crate::{
        admin::usecase::fake::FakeAlerts,
        kernel::{ManualClock, StoreError, alerts::Severity, events::types, watch::Stall},
    };

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    /// Things stuck since given times, by condition; `down` fails.
    struct Probe {
        name: &'static str,
        stuck: Mutex<Vec<(String, DateTime<Utc>)>>,
        down: Mutex<bool>,
    }

    impl Probe {
        fn new(name: &'static str) -> Arc<Self> {
            Arc::new(Self {
                name,
                stuck: Mutex::default(),
                down: Mutex::new(false),
            })
        }

        fn set(&self, stuck: &[(&str, DateTime<Utc>)]) {
            *self.stuck.lock().unwrap() =
                stuck.iter().map(|(c, at)| (c.to_string(), *at)).collect();
        }
    }

    impl StallProbe for Probe {
        fn name(&self) -> &'static str {
            self.name
        }

        fn stalls(&self, look: Look) -> BoxFuture<'_, Result<Vec<Stall>, StoreError>> {
            async move {
                if *self.down.lock().unwrap() {
                    return Err(StoreError::Unavailable(anyhow::anyhow!("down")));
                }
                Ok((self.stuck.lock().unwrap().iter())
                    .filter(|(_, at)| *at < look.since)
                    .map(|(condition, at)| Stall {
                        condition: condition.clone(),
                        severity: Severity::Critical,
                        message: format!("{condition} stuck: ids 4, 9"),
                        age: look.now - *at,
                    })
                    .collect())
            }
            .boxed()
        }
    }

    #[tokio::test]
    async fn a_stuck_condition_is_alerted_once_and_resolved_when_it_clears() {
        let repo = FakeAlerts::default();
        let clock = ManualClock::new(t0());
        let payments = Probe::new("watchdog:payments-paid");
        let groups = Probe::new("watchdog:groups");
        let watchdog = Watchdog::new(
            AlertService::new(repo.clone(), clock.clone(), false),
            vec![payments.clone(), groups.clone()],
            clock.clone(),
            TimeDelta::seconds(300),
        );
        payments.set(&[("watchdog:payments-paid", t0())]);
        groups.set(&[
            ("watchdog:groups:lag:receipts", t0()),
            ("watchdog:groups:lag:queue", t0() + TimeDelta::seconds(200)),
        ]);
        // Not stuck long enough yet.
        clock.advance(TimeDelta::seconds(299));
        assert_eq!(watchdog.pass().await.unwrap(), WatchReport::default());

        clock.advance(TimeDelta::seconds(2));
        let report = watchdog.pass().await.unwrap();
        assert_eq!((report.stalls, report.raised), (2, 2));
        let alerts = repo.alerts();
        assert_eq!(
            alerts[0].condition.as_deref(),
            Some("watchdog:payments-paid")
        );
        assert_eq!(alerts[0].message, "watchdog:payments-paid stuck: ids 4, 9");
        assert_eq!(alerts[1].source, "watchdog:groups:lag:receipts");
        // Still stuck: no second alert. The queue group now too.
        clock.advance(TimeDelta::seconds(200));
        let report = watchdog.pass().await.unwrap();
        assert_eq!((report.stalls, report.raised, report.resolved), (3, 1, 0));

        // The receipts group caught up; the payments probe is down, so its
        // alert stays open whatever it would say.
        groups.set(&[("watchdog:groups:lag:queue", t0())]);
        payments.set(&[]);
        *payments.down.lock().unwrap() = true;
        let report = watchdog.pass().await.unwrap();
        assert_eq!((report.resolved, report.failed), (1, 1));
        let open: Vec<String> = (repo.alerts().iter())
            .filter(|a| a.resolved_at.is_none())
            .filter_map(|a| a.condition.clone())
            .collect();
        assert_eq!(
            open,
            vec!["watchdog:payments-paid", "watchdog:groups:lag:queue"]
        );

        *payments.down.lock().unwrap() = false;
        assert_eq!(watchdog.pass().await.unwrap().resolved, 1);
        // Stuck again later: a new alert.
        payments.set(&[("watchdog:payments-paid", t0())]);
        assert_eq!(watchdog.pass().await.unwrap().raised, 1);
        assert_eq!(
            repo.event_types(),
            vec![
                types::ALERT_RAISED,
                types::ALERT_RAISED,
                types::ALERT_RAISED,
                types::ALERT_RESOLVED,
                types::ALERT_RESOLVED,
                types::ALERT_RAISED,
            ]
        );
    }

    #[tokio::test]
    async fn a_probe_never_resolves_another_probes_alert_even_with_a_shared_prefix() {
        let repo = FakeAlerts::default();
        let clock = ManualClock::new(t0() + TimeDelta::hours(1));
        let short = Probe::new("watchdog:outbox");
        let long = Probe::new("watchdog:outbox-unpublished");
        long.set(&[("watchdog:outbox-unpublished", t0())]);
        let watchdog = Watchdog::new(
            AlertService::new(repo.clone(), clock.clone(), false),
            vec![short, long.clone()],
            clock,
            TimeDelta::seconds(300),
        );
        assert_eq!(watchdog.pass().await.unwrap().raised, 1);
        assert_eq!(
            watchdog.pass().await.unwrap(),
            WatchReport {
                stalls: 1,
                ..WatchReport::default()
            }
        );
    }
}
