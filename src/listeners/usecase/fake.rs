//! The listeners' test fakes: events as the stream delivers them, a sink,
//! a receipt provider and the consumer's transaction.

use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use crate::{
    kernel::{
        StoreError,
        events::{EventEnvelope, NewEvent, PaymentCompleted},
    },
    listeners::{
        domain::{NewNotification, Receipt},
        ports::{DataPlatformSink, NotificationTx, ReceiptProvider, ReceiptTx},
    },
    outbox::ports::OutboxWriter,
};

pub fn event(event_type: &str, payload: serde_json::Value) -> EventEnvelope {
    EventEnvelope {
        event_id: Uuid::from_u128(7),
        event_type: event_type.into(),
        aggregate_type: "payment".into(),
        aggregate_id: "5".into(),
        occurred_at: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
        payload,
        traceparent: None,
    }
}

pub fn paid(amount: i64) -> EventEnvelope {
    event(
        "PaymentCompleted",
        json!({
            "paymentId": 5,
            "reservationId": 41,
            "userId": 3,
            "amount": amount,
            "concertId": 1,
        }),
    )
}

/// Fails as the named service does while it is down.
fn reachable(down: bool, service: &str) -> anyhow::Result<()> {
    if down {
        anyhow::bail!("{service} down");
    }
    Ok(())
}

#[derive(Default)]
pub struct FakeSink {
    pub written: Mutex<Vec<EventEnvelope>>,
    pub down: bool,
}

impl FakeSink {
    pub fn down() -> Self {
        Self {
            down: true,
            ..Self::default()
        }
    }
}

impl DataPlatformSink for FakeSink {
    async fn write(&self, event: &EventEnvelope) -> anyhow::Result<()> {
        reachable(self.down, "collector")?;
        self.written.lock().unwrap().push(event.clone());
        Ok(())
    }
}

/// Numbers receipts after the payment, as the port requires (same
/// payment, same number).
#[derive(Default)]
pub struct FakeProvider {
    pub asked: Mutex<Vec<PaymentCompleted>>,
    pub cancelled: Mutex<Vec<String>>,
    pub down: bool,
}

impl FakeProvider {
    pub fn down() -> Self {
        Self {
            down: true,
            ..Self::default()
        }
    }
}

impl ReceiptProvider for FakeProvider {
    async fn issue(&self, payment: &PaymentCompleted) -> anyhow::Result<String> {
        self.asked.lock().unwrap().push(payment.clone());
        reachable(self.down, "tax service")?;
        Ok(format!("R-{}", payment.payment_id))
    }

    async fn cancel(&self, number: &str) -> anyhow::Result<()> {
        reachable(self.down, "tax service")?;
        self.cancelled.lock().unwrap().push(number.into());
        Ok(())
    }
}

/// What the listeners store in the consumer's transaction.
#[derive(Default)]
pub struct FakeTx {
    pub receipts: Vec<(Receipt, Uuid)>,
    pub cancelled: Vec<i64>,
    pub notifications: Vec<NewNotification>,
    pub events: Vec<NewEvent>,
}

impl ReceiptTx for FakeTx {
    async fn store_receipt(
        &mut self,
        receipt: &Receipt,
        event_id: Uuid,
        _: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        // One receipt per payment, like the unique index.
        if self
            .receipts
            .iter()
            .any(|(r, _)| r.payment_id == receipt.payment_id)
        {
            return Ok(false);
        }
        self.receipts.push((receipt.clone(), event_id));
        Ok(true)
    }

    async fn receipt_of(&mut self, payment_id: i64) -> Result<Option<(Receipt, bool)>, StoreError> {
        Ok(self
            .receipts
            .iter()
            .find(|(r, _)| r.payment_id == payment_id)
            .map(|(r, _)| (r.clone(), self.cancelled.contains(&payment_id))))
    }

    async fn mark_receipt_cancelled(
        &mut self,
        payment_id: i64,
        _: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        if self.cancelled.contains(&payment_id) {
            return Ok(false);
        }
        self.cancelled.push(payment_id);
        Ok(true)
    }
}

impl OutboxWriter for FakeTx {
    async fn append(&mut self, events: Vec<NewEvent>, _: DateTime<Utc>) -> Result<(), StoreError> {
        self.events.extend(events);
        Ok(())
    }
}

impl NotificationTx for FakeTx {
    async fn record_notification(
        &mut self,
        notification: NewNotification,
        _: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.notifications.push(notification);
        Ok(())
    }
}
