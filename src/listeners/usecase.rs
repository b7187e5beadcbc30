//! The listeners: the data-platform export, receipts and user
//! notifications, each a consumer of the event stream.

use anyhow::Context;
use futures::{FutureExt, future::BoxFuture};

use super::{
    domain::{DATA_PLATFORM_CONSUMER, RECEIPTS_CONSUMER, Receipt, notification_for},
    ports::{DataPlatformSink, NotificationTx, ReceiptProvider, ReceiptTx},
};
use crate::{
    kernel::{
        Clock, UserId,
        events::{
            CouponRedemptionFinished, EventEnvelope, PaymentCompleted, PaymentRefunded,
            ReservationChanged, types,
        },
    },
    outbox::ports::EventHandler,
};

pub async fn export_event(
    sink: &impl DataPlatformSink,
    event: &EventEnvelope,
) -> anyhow::Result<()> {
    sink.write(event).await
}

pub async fn issue_receipt(
    provider: &impl ReceiptProvider,
    event: &EventEnvelope,
) -> anyhow::Result<Receipt> {
    let payment: PaymentCompleted = serde_json::from_value(event.payload.clone())
        .context("the PaymentCompleted payload is malformed")?;
    anyhow::ensure!(
        payment.amount >= 0,
        "payment {} has a negative amount",
        payment.payment_id
    );
    let number = provider.issue(&payment).await?;
    Ok(Receipt {
        number,
        payment_id: payment.payment_id,
        user_id: payment.user_id,
        amount: payment.amount,
    })
}

/// Issues the receipt of a payment and stores it in the consumer's
/// transaction.
pub async fn record_receipt<T: ReceiptTx>(
    tx: &mut T,
    provider: &impl ReceiptProvider,
    event: &EventEnvelope,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<Receipt> {
    let receipt = issue_receipt(provider, event).await?;
    tx.store_receipt(&receipt, event.event_id, now).await?;
    Ok(receipt)
}

/// The user an event concerns, for the events users are told about.
fn user_of(event: &EventEnvelope) -> anyhow::Result<UserId> {
    let payload = event.payload.clone();
    let user = match event.event_type.as_str() {
        types::PAYMENT_REFUNDED => serde_json::from_value::<PaymentRefunded>(payload)?.user_id,
        types::COUPON_REDEMPTION_FINISHED => {
            serde_json::from_value::<CouponRedemptionFinished>(payload)?.user_id
        }
        _ => serde_json::from_value::<ReservationChanged>(payload)?.user_id,
    };
    Ok(UserId(user))
}

/// Records the notification an event gives its user, if any; returns
/// whether there was one.
pub async fn notify<T: NotificationTx>(
    tx: &mut T,
    event: &EventEnvelope,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<bool> {
    let Some((kind, message)) = notification_for(&event.event_type, &event.payload) else {
        return Ok(false);
    };
    let user = user_of(event)?;
    tx.record_notification(user, kind, &message, event.event_id, now)
        .await?;
    Ok(true)
}

/// The data-platform exporter: every event, one NDJSON line.
pub struct DataPlatformExporter<S> {
    sink: S,
}

impl<S> DataPlatformExporter<S> {
    pub fn new(sink: S) -> Self {
        Self { sink }
    }
}

impl<T: Send + 'static, S: DataPlatformSink> EventHandler<T> for DataPlatformExporter<S> {
    fn name(&self) -> &'static str {
        DATA_PLATFORM_CONSUMER
    }

    fn handles(&self, _event_type: &str) -> bool {
        true
    }

    fn handle<'a>(
        &'a self,
        _tx: &'a mut T,
        event: &'a EventEnvelope,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        export_event(&self.sink, event).boxed()
    }
}

/// The receipt issuer: one receipt per `PaymentCompleted`.
pub struct ReceiptIssuer<P, C> {
    provider: P,
    clock: C,
}

impl<P, C> ReceiptIssuer<P, C> {
    pub fn new(provider: P, clock: C) -> Self {
        Self { provider, clock }
    }
}

impl<T: ReceiptTx + 'static, P: ReceiptProvider, C: Clock> EventHandler<T> for ReceiptIssuer<P, C> {
    fn name(&self) -> &'static str {
        RECEIPTS_CONSUMER
    }

    fn handles(&self, event_type: &str) -> bool {
        event_type == types::PAYMENT_COMPLETED
    }

    fn handle<'a>(
        &'a self,
        tx: &'a mut T,
        event: &'a EventEnvelope,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        async move {
            record_receipt(tx, &self.provider, event, self.clock.now()).await?;
            metrics::counter!("receipts_issued_total").increment(1);
            Ok(())
        }
        .boxed()
    }
}

/// The notifications listener: what a user is told, pollable.
pub struct Notifier<C> {
    clock: C,
}

impl<C> Notifier<C> {
    pub fn new(clock: C) -> Self {
        Self { clock }
    }
}

impl<T: NotificationTx + 'static, C: Clock> EventHandler<T> for Notifier<C> {
    fn name(&self) -> &'static str {
        "notifications"
    }

    fn handles(&self, event_type: &str) -> bool {
        matches!(
            event_type,
            types::RESERVATION_CONFIRMED
                | types::RESERVATION_EXPIRED
                | types::PAYMENT_REFUNDED
                | types::COUPON_REDEMPTION_FINISHED
        )
    }

    fn handle<'a>(
        &'a self,
        tx: &'a mut T,
        event: &'a EventEnvelope,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        async move {
            notify(tx, event, self.clock.now()).await?;
            Ok(())
        }
        .boxed()
    }
}
