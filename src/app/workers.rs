//! Which background workers run: the relay, the consumers (saga steps and
//! listeners), the waiting-room scheduler, the hold sweeper, the
//! compensation runner and the coupon reconciler.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use chrono::TimeDelta;
use sea_orm::DatabaseConnection;
use tokio_util::sync::CancellationToken;

use super::{adapters::Adapters, services::Services};
use crate::{
    admin::{
        infra::{
            db::{DbAlerts, expiring_alerts},
            webhook::Webhook,
        },
        usecase::{Housekeeping, Retention, Watchdog, WebhookDelivery},
    },
    config::Settings,
    coupon::infra::db::expiring_jobs,
    coupon::{self, usecase::CouponRedeemer},
    db::DbExpiring,
    kernel::{SystemClock, alerts::AlertSink, watch::StallProbe},
    listeners::infra::notifications::expiring_notifications,
    listeners::{
        infra::{receipts::LocalReceiptProvider, sink::Sink},
        usecase::{DataPlatformExporter, Notifier, ReceiptIssuer},
    },
    outbox::{
        domain::redelivery_window,
        infra::db::{expiring_dead_letters, expiring_inbox},
    },
    outbox::{
        infra::{
            consumer::{ConsumerRunner, ConsumerSettings, Handler},
            relay::{Relay, RelaySettings, mark_finished},
        },
        ports::EventBus,
        usecase::GroupWatch,
    },
    payment::{self, usecase::PaymentSaga},
    queue::{infra::scheduler::QueueScheduler, usecase::FinishOnPayment},
    reservation::{
        self,
        usecase::{ConfirmOnPayment, WaitlistOffers},
    },
    ticket::usecase::IssueTickets,
    worker::{Pass, periodically},
};

pub type Worker = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Every consumer of the event stream, each its own consumer group.
fn handlers(s: &Services, settings: &Settings) -> anyhow::Result<Vec<Handler>> {
    Ok(vec![
        Arc::new(DataPlatformExporter::new(Sink::parse(
            &settings.data_platform_sink,
        )?)),
        Arc::new(ReceiptIssuer::new(LocalReceiptProvider, SystemClock)),
        Arc::new(ConfirmOnPayment::new(SystemClock)),
        Arc::new(WaitlistOffers::new(SystemClock, s.reservations.policy())),
        Arc::new(PaymentSaga::new(SystemClock)),
        Arc::new(Notifier::new(SystemClock)),
        Arc::new(FinishOnPayment::new(s.queue.store().clone(), SystemClock)),
        Arc::new(CouponRedeemer::new(SystemClock)),
        Arc::new(IssueTickets::new(s.tickets.codes().clone(), SystemClock)),
    ])
}

pub fn workers(
    a: &mut Adapters,
    s: &Services,
    settings: &Settings,
    cancel: &CancellationToken,
) -> anyhow::Result<Vec<Worker>> {
    let mut workers: Vec<Worker> = Vec::new();
    // Every process that checks tokens keeps its key set fresh.
    if let Some(key_set) = &a.key_set {
        workers.push(Box::pin(key_set.clone().refresh_every(
            Duration::from_secs(settings.jwt_jwks_refresh_seconds),
            cancel.clone(),
        )));
    }
    // Every process with Redis tells the others' relays when it committed
    // events; the ones that run a relay listen.
    let wake_channel = crate::outbox::infra::relay::wake_channel(&settings.redis_prefix);
    if let Some(conn) = &a.redis {
        workers.push(Box::pin(crate::outbox::infra::relay::wake_others(
            a.waker.clone(),
            conn.clone(),
            wake_channel.clone(),
            cancel.clone(),
        )));
    }
    if !settings.workers {
        return Ok(workers);
    }
    if let Some(finished) = a.finished.take() {
        workers.push(Box::pin(mark_finished(
            a.db.clone(),
            finished,
            cancel.clone(),
        )));
    }
    // A cluster passes a PUBLISH to every node: listening on one is enough.
    let listen_on = settings
        .redis_url
        .clone()
        .or_else(|| settings.redis_cluster_nodes.first().cloned());
    if let Some(url) = listen_on {
        workers.push(Box::pin(crate::outbox::infra::relay::woken_by_others(
            a.waker.clone(),
            redis::Client::open(url.as_str())?,
            wake_channel,
            cancel.clone(),
        )));
    }
    let handlers = handlers(s, settings)?;
    // Which event types each group must handle: what the delivery audit
    // holds the bus to.
    let subscriptions = handlers
        .iter()
        .map(|h| {
            let types = crate::kernel::events::types::ALL
                .iter()
                .copied()
                .filter(|t| h.handles(t))
                .collect();
            (h.name(), types)
        })
        .collect();
    workers.push(Box::pin(crate::outbox::infra::audit::run(
        a.db.clone(),
        a.bus.clone(),
        subscriptions,
        Duration::from_secs(settings.delivery_audit_after_seconds),
        cancel.clone(),
    )));
    let relay = Relay::new(
        a.db.clone(),
        a.bus.clone(),
        a.waker.clone(),
        RelaySettings {
            batch_size: settings.relay_batch_size,
            poll_interval: Duration::from_millis(settings.relay_poll_ms),
            retention: Duration::from_secs(settings.outbox_retention_hours * 3600),
        },
    )
    .registering(handlers.iter().map(|h| h.name()))
    .alerting(Arc::new(s.alerts.clone()));
    workers.push(Box::pin(relay.run(cancel.clone())));
    let scheduler = QueueScheduler::new(
        s.queue.clone(),
        a.bus.clone(),
        Duration::from_millis(settings.queue_tick_ms),
    );
    workers.push(Box::pin(scheduler.run(cancel.clone())));
    let reservations = s.reservations.clone();
    workers.push(Box::pin(reservation::infra::sweeper::run(
        move |batch| {
            let reservations = reservations.clone();
            async move {
                // Waitlists of shows whose sales closed end here too.
                if let Err(err) = reservations.close_waitlists(batch).await {
                    tracing::warn!(error = %err, "closing waitlists failed; retrying");
                }
                reservations.sweep(batch).await
            }
        },
        Duration::from_secs(1),
        cancel.clone(),
    )));
    let compensations = s.compensations.clone();
    workers.push(Box::pin(payment::infra::compensation::run(
        move || {
            let compensations = compensations.clone();
            async move {
                let refunds = compensations.run_due().await?;
                let cancellations = compensations.advance_cancellations().await?;
                Ok(refunds + cancellations)
            }
        },
        Duration::from_millis(250),
        cancel.clone(),
    )));
    let probes: Vec<Arc<dyn StallProbe>> = vec![
        Arc::new(crate::outbox::infra::db::stalled_outbox(a.db.clone())),
        Arc::new(GroupWatch(a.bus.clone())),
        Arc::new(payment::infra::db::stalled_payments(a.db.clone())),
        Arc::new(payment::infra::db::stalled_compensations(a.db.clone())),
        Arc::new(crate::catalog::infra::db::stalled_cancellations(
            a.db.clone(),
        )),
    ];
    let watchdog = Watchdog::new(
        s.alerts.clone(),
        probes,
        SystemClock,
        TimeDelta::seconds(i64::try_from(settings.watchdog_after_seconds).unwrap_or(i64::MAX)),
    );
    workers.push(Box::pin(watchdog.run(cancel.clone())));
    if settings.alert_webhook_url.is_some() {
        let webhook = Webhook::new(
            settings.alert_webhook_url.clone(),
            settings.alert_webhook_secret.clone(),
        )?;
        let delivery = WebhookDelivery::new(DbAlerts::new(a.db.clone()), webhook, SystemClock);
        workers.push(Box::pin(delivery.run(s.alerts.queued(), cancel.clone())));
    }
    workers.push(Box::pin(housekeeping(
        &a.db,
        settings,
        Duration::from_secs(settings.retention_sweep_seconds),
        cancel.clone(),
    )));
    // A bench lock strategy keeps no ledger: nothing to reconcile.
    #[cfg(feature = "bench-strategies")]
    let reconciles = settings.coupon_lock_strategy == coupon::infra::locks::LockStrategy::Ledger;
    #[cfg(not(feature = "bench-strategies"))]
    let reconciles = true;
    if reconciles {
        workers.push(Box::pin(coupon::infra::reconciler::run(
            s.coupons.clone(),
            Arc::new(s.alerts.clone()),
            Duration::from_secs(settings.coupon_reconcile_seconds),
            cancel.clone(),
        )));
    }

    let consumer_settings = ConsumerSettings {
        batch_size: 64,
        block: Duration::from_secs(1),
        claim_idle: Duration::from_millis(settings.consumer_claim_idle_ms),
        max_deliveries: settings.consumer_max_deliveries,
        ownership: Duration::from_millis(settings.consumer_hold_ms),
        lanes: match a.db.get_database_backend() {
            // One writer at a time: lanes would only wait for each other.
            sea_orm::DatabaseBackend::Sqlite => 1,
            _ => settings.consumer_lanes as usize,
        },
    };
    let instance = instance_name();
    let alert_sink: Arc<dyn AlertSink> = Arc::new(s.alerts.clone());
    for handler in handlers {
        if settings
            .paused_consumers
            .iter()
            .any(|p| p == handler.name())
        {
            // Registered, so the bus keeps its entries, but not run.
            let (bus, group, cancel) = (a.bus.clone(), handler.name(), cancel.clone());
            workers.push(Box::pin(async move {
                if let Err(err) = bus.ensure_group(group).await {
                    tracing::warn!(group, error = %err, "cannot register the paused consumer group");
                }
                cancel.cancelled().await;
            }));
            continue;
        }
        // One reader per partition; the instances sharing a group share
        // out each partition's entries.
        for partition in 0..a.bus.partitions() {
            let runner = ConsumerRunner::new(
                a.db.clone(),
                a.bus.partition(partition),
                handler.clone(),
                instance.clone(),
                consumer_settings.clone(),
                alert_sink.clone(),
            )
            .waking(a.waker.clone());
            workers.push(Box::pin(runner.run(cancel.clone())));
        }
    }
    Ok(workers)
}

/// The retention sweeper: every kind of row that would otherwise grow
/// forever, with its configured retention.
fn housekeeping(
    db: &DatabaseConnection,
    settings: &Settings,
    every: Duration,
    cancel: CancellationToken,
) -> impl Future<Output = ()> + Send + 'static {
    // Each kind of row, by the function that names its table and condition.
    type Rows = fn(DatabaseConnection) -> DbExpiring;
    let retained: [(Rows, u64); 7] = [
        (expiring_inbox, settings.inbox_retention_seconds),
        (
            crate::db::idempotency::expiring_keys,
            settings.idempotency_retention_seconds,
        ),
        (
            expiring_notifications,
            settings.notification_retention_seconds,
        ),
        (expiring_jobs, settings.coupon_job_retention_seconds),
        (
            expiring_dead_letters,
            settings.dead_letter_retention_seconds,
        ),
        (expiring_alerts, settings.alert_retention_seconds),
        (
            crate::ticket::infra::door::expiring_refusals,
            crate::ticket::domain::REFUSAL_RETENTION
                .num_seconds()
                .unsigned_abs(),
        ),
    ];
    let policies = retained.map(|(rows, seconds)| Retention {
        rows: Arc::new(rows(db.clone())),
        keep: TimeDelta::seconds(i64::try_from(seconds).unwrap_or(i64::MAX)),
    });
    let sweeper = Housekeeping::new(policies.into(), SystemClock, RETENTION_BATCH);
    let sweeper = Arc::new(sweeper);
    periodically("housekeeping", every, cancel, move || {
        let sweeper = sweeper.clone();
        async move {
            // A kind of row whose store fails is logged and skipped inside.
            sweeper.sweep().await;
            Ok::<_, std::convert::Infallible>(Pass::Idle)
        }
    })
}

/// Rows one retention statement deletes at most.
const RETENTION_BATCH: u64 = 1_000;

/// An inbox row must outlive every redelivery of its event from the
/// stream, or a late one would be applied twice.
pub fn check_inbox_retention(settings: &Settings) -> anyhow::Result<()> {
    let window = redelivery_window(
        Duration::from_millis(settings.consumer_claim_idle_ms),
        settings.consumer_max_deliveries,
    );
    anyhow::ensure!(
        Duration::from_secs(settings.inbox_retention_seconds) >= window,
        "--inbox-retention-seconds is {} s, shorter than the {} s an event can keep being \
         redelivered (claim idle {} ms, doubling over {} deliveries); a redelivery after its \
         inbox row is gone would be applied twice",
        settings.inbox_retention_seconds,
        window.as_secs_f64().ceil(),
        settings.consumer_claim_idle_ms,
        settings.consumer_max_deliveries,
    );
    Ok(())
}

fn instance_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "boxoffice".into());
    let tag = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &tag[..8])
}
