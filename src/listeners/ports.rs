use std::future::Future;

use crate::kernel::events::{EventEnvelope, PaymentCompleted};

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
}
