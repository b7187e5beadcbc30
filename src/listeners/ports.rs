use std::future::Future;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::domain::{NewNotification, Notification, Receipt};
use crate::kernel::{
    PageRequest, StoreError, UserId,
    events::{EventEnvelope, PaymentCompleted},
};

/// Where the data platform reads events from (a file directory, an HTTP
/// collector). Writes may repeat after a crash; the event id is the
/// idempotency key downstream.
pub trait DataPlatformSink: Send + Sync + 'static {
    fn write(&self, event: &EventEnvelope) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// Issues receipt numbers (a tax or e-receipt service in production).
/// Must answer the same number for the same payment.
pub trait ReceiptProvider: Send + Sync + 'static {
    fn issue(
        &self,
        payment: &PaymentCompleted,
    ) -> impl Future<Output = anyhow::Result<String>> + Send;

    /// Voids the receipt `number` (its payment was refunded). Must accept
    /// the same receipt twice.
    fn cancel(&self, number: &str) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// Receipts inside the consumer's transaction.
pub trait ReceiptTx: Send {
    /// Stores the receipt; a second one for the same payment is ignored
    /// (false).
    fn store_receipt(
        &mut self,
        receipt: &Receipt,
        event_id: Uuid,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The payment's receipt, and whether it was cancelled.
    fn receipt_of(
        &mut self,
        payment_id: i64,
    ) -> impl Future<Output = Result<Option<(Receipt, bool)>, StoreError>> + Send;

    /// Marks the payment's receipt cancelled; false if it already was.
    fn mark_receipt_cancelled(
        &mut self,
        payment_id: i64,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// User notifications inside the consumer's transaction.
pub trait NotificationTx: Send {
    /// Records one notification per event (a second for the same event is
    /// ignored).
    fn record_notification(
        &mut self,
        notification: NewNotification,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// A user's notifications, read outside any transaction.
pub trait NotificationRepository: Clone + Send + Sync + 'static {
    /// Up to `page.limit` oldest first, ids above `page.after` when given.
    fn list(
        &self,
        user: UserId,
        page: PageRequest,
    ) -> impl Future<Output = Result<Vec<Notification>, StoreError>> + Send;
}
