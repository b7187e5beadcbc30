//! Which background workers run: the relay, the consumers (saga steps and
//! listeners), the waiting-room scheduler, the hold sweeper, the
//! compensation runner and the coupon reconciler.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use super::{adapters::Adapters, services::Services};
use crate::{
    config::Settings,
    coupon::{self, usecase::CouponRedeemer},
    kernel::{SystemClock, alerts::AlertSink},
    listeners::{
        infra::{receipts::LocalReceiptProvider, sink::Sink},
        usecase::{DataPlatformExporter, Notifier, ReceiptIssuer},
    },
    outbox::{
        infra::{
            consumer::{ConsumerRunner, ConsumerSettings, Handler},
            relay::{Relay, RelaySettings, mark_finished},
        },
        ports::EventBus,
    },
    payment::{self, usecase::PaymentSaga},
    queue::{infra::scheduler::QueueScheduler, usecase::FinishOnPayment},
    reservation::{self, usecase::ConfirmOnPayment},
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
        Arc::new(PaymentSaga::new(SystemClock)),
        Arc::new(Notifier::new(SystemClock)),
        Arc::new(FinishOnPayment::new(s.queue.store().clone(), SystemClock)),
        Arc::new(CouponRedeemer::new(SystemClock)),
    ])
}

pub fn workers(
    a: &mut Adapters,
    s: &Services,
    settings: &Settings,
    cancel: &CancellationToken,
) -> anyhow::Result<Vec<Worker>> {
    let mut workers: Vec<Worker> = Vec::new();
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
    let relay = Relay::new(
        a.db.clone(),
        a.bus.clone(),
        a.waker.clone(),
        RelaySettings {
            batch_size: settings.relay_batch_size,
            poll_interval: Duration::from_millis(settings.relay_poll_ms),
            retention: Duration::from_secs(settings.outbox_retention_hours * 3600),
        },
    );
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
            async move { reservations.sweep(batch).await }
        },
        Duration::from_secs(1),
        cancel.clone(),
    )));
    let compensations = s.compensations.clone();
    workers.push(Box::pin(payment::infra::compensation::run(
        move || {
            let compensations = compensations.clone();
            async move { compensations.run_due().await }
        },
        Duration::from_millis(250),
        cancel.clone(),
    )));
    workers.push(Box::pin(coupon::infra::reconciler::run(
        s.coupons.clone(),
        Arc::new(s.alerts.clone()),
        Duration::from_secs(settings.coupon_reconcile_seconds),
        cancel.clone(),
    )));

    let consumer_settings = ConsumerSettings {
        batch_size: 64,
        block: Duration::from_secs(1),
        claim_idle: Duration::from_millis(settings.consumer_claim_idle_ms),
        max_deliveries: settings.consumer_max_deliveries,
    };
    let instance = instance_name();
    let alert_sink: Arc<dyn AlertSink> = Arc::new(s.alerts.clone());
    for handler in handlers(s, settings)? {
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
        let runner = ConsumerRunner::new(
            a.db.clone(),
            a.bus.clone(),
            handler,
            instance.clone(),
            consumer_settings.clone(),
            alert_sink.clone(),
        );
        workers.push(Box::pin(runner.run(cancel.clone())));
    }
    Ok(workers)
}

fn instance_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "boxoffice".into());
    let tag = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &tag[..8])
}
