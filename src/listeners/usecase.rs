use anyhow::Context;

use super::{
    domain::Receipt,
    ports::{DataPlatformSink, ReceiptProvider},
};
use crate::kernel::events::{EventEnvelope, PaymentCompleted};

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
