//! Receipts: one per payment, issued through the provider and stored in
//! the consumer's transaction; voided when the payment is refunded.

use chrono::{DateTime, Utc};

use crate::{
    kernel::{
        Clock,
        events::{
            EventEnvelope, NewEvent, PaymentCompleted, PaymentRefunded, ReceiptIssued, types,
        },
    },
    listeners::{
        domain::{ListenerError, RECEIPTS_CONSUMER, Receipt},
        ports::{ReceiptProvider, ReceiptTx},
        usecase::{Listener, Listening},
    },
    outbox::ports::{OutboxWriter, Subscription},
};

fn provider_failed(cause: anyhow::Error) -> ListenerError {
    ListenerError::Downstream {
        system: "receipt provider",
        cause,
    }
}

pub async fn issue_receipt(
    provider: &impl ReceiptProvider,
    event: &EventEnvelope,
) -> Result<Receipt, ListenerError> {
    let payment: PaymentCompleted = serde_json::from_value(event.payload.clone())
        .map_err(|err| ListenerError::malformed(event, err))?;
    if payment.amount < 0 {
        return Err(ListenerError::malformed(
            event,
            format!("payment {} has a negative amount", payment.payment_id),
        ));
    }
    let number = provider.issue(&payment).await.map_err(provider_failed)?;
    Ok(Receipt {
        number,
        payment_id: payment.payment_id,
        user_id: payment.user_id,
        amount: payment.amount,
    })
}

/// Issues the receipt of a payment, stores it in the consumer's
/// transaction and, the first time, writes `ReceiptIssued`.
pub async fn record_receipt<T: ReceiptTx + OutboxWriter>(
    tx: &mut T,
    provider: &impl ReceiptProvider,
    event: &EventEnvelope,
    now: DateTime<Utc>,
) -> Result<Receipt, ListenerError> {
    let receipt = issue_receipt(provider, event).await?;
    if tx.store_receipt(&receipt, event.event_id, now).await? {
        let issued = NewEvent::new(
            types::RECEIPT_ISSUED,
            "receipt",
            receipt.payment_id,
            &ReceiptIssued {
                number: receipt.number.clone(),
                payment_id: receipt.payment_id,
                user_id: receipt.user_id,
                amount: receipt.amount,
            },
        );
        tx.append(vec![issued], now).await?;
    }
    Ok(receipt)
}

/// Voids the receipt of a refunded payment through the provider, marks it
/// cancelled and, the first time, writes `ReceiptCancelled`. A refund that
/// arrives before its payment's receipt fails, so it is retried once the
/// receipt exists; a second refund event changes nothing.
pub async fn cancel_receipt<T: ReceiptTx + OutboxWriter>(
    tx: &mut T,
    provider: &impl ReceiptProvider,
    event: &EventEnvelope,
    now: DateTime<Utc>,
) -> Result<bool, ListenerError> {
    let refunded: PaymentRefunded = serde_json::from_value(event.payload.clone())
        .map_err(|err| ListenerError::malformed(event, err))?;
    if refunded.remaining.is_some_and(|paid| paid > 0) {
        // One seat of an order refunded: the receipt stands for the rest.
        return Ok(false);
    }
    let Some((receipt, cancelled)) = tx.receipt_of(refunded.payment_id).await? else {
        return Err(ListenerError::NoReceiptYet(refunded.payment_id));
    };
    if cancelled {
        return Ok(false);
    }
    provider
        .cancel(&receipt.number)
        .await
        .map_err(provider_failed)?;
    if !tx.mark_receipt_cancelled(receipt.payment_id, now).await? {
        return Ok(false);
    }
    let event = NewEvent::new(
        types::RECEIPT_CANCELLED,
        "receipt",
        receipt.payment_id,
        &ReceiptIssued {
            number: receipt.number,
            payment_id: receipt.payment_id,
            user_id: receipt.user_id,
            amount: receipt.amount,
        },
    );
    tx.append(vec![event], now).await?;
    Ok(true)
}

/// The receipt issuer: one receipt per `PaymentCompleted`, voided on its
/// `PaymentRefunded`.
pub struct ReceiptIssuer<P, C> {
    provider: P,
    clock: C,
}

impl<P, C> ReceiptIssuer<P, C> {
    pub fn new(provider: P, clock: C) -> Listening<Self> {
        Listening(Self { provider, clock })
    }
}

impl<T, P, C> Listener<T> for ReceiptIssuer<P, C>
where
    T: ReceiptTx + OutboxWriter + 'static,
    P: ReceiptProvider,
    C: Clock,
{
    const SUBSCRIPTION: Subscription = Subscription::of(
        RECEIPTS_CONSUMER,
        &[types::PAYMENT_COMPLETED, types::PAYMENT_REFUNDED],
    );

    /// Each type is read by its step.
    async fn hear(&self, tx: &mut T, event: &EventEnvelope) -> Result<(), ListenerError> {
        if event.event_type == types::PAYMENT_REFUNDED {
            if cancel_receipt(tx, &self.provider, event, self.clock.now()).await? {
                metrics::counter!("receipts_cancelled_total").increment(1);
            }
            return Ok(());
        }
        record_receipt(tx, &self.provider, event, self.clock.now()).await?;
        metrics::counter!("receipts_issued_total").increment(1);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::listeners::usecase::fake::{FakeProvider, FakeTx, event, paid};

    // --- issue_receipt ---

    #[tokio::test]
    async fn a_payment_gets_a_receipt_numbered_by_the_provider() {
        let provider = FakeProvider::default();
        let receipt = issue_receipt(&provider, &paid(90_000)).await.unwrap();
        assert_eq!(
            receipt,
            Receipt {
                number: "R-5".into(),
                payment_id: 5,
                user_id: 3,
                amount: 90_000,
            }
        );
        assert_eq!(
            *provider.asked.lock().unwrap(),
            vec![PaymentCompleted {
                payment_id: 5,
                reservation_id: 41,
                user_id: 3,
                amount: 90_000,
                concert_id: 1,
                order_id: None,
                reservation_ids: Vec::new(),
            }]
        );
    }

    #[tokio::test]
    async fn a_free_payment_still_gets_a_receipt() {
        let provider = FakeProvider::default();
        assert_eq!(issue_receipt(&provider, &paid(0)).await.unwrap().amount, 0);
    }

    #[tokio::test]
    async fn a_payment_written_before_it_carried_the_concert_still_gets_a_receipt() {
        let provider = FakeProvider::default();
        let old = event(
            "PaymentCompleted",
            json!({"paymentId": 5, "reservationId": 41, "userId": 3, "amount": 10}),
        );
        issue_receipt(&provider, &old).await.unwrap();
        assert_eq!(provider.asked.lock().unwrap()[0].concert_id, 0);
    }

    #[tokio::test]
    async fn a_malformed_payload_is_refused_before_the_provider_is_asked() {
        let provider = FakeProvider::default();
        for payload in [
            json!({"reservationId": 41, "userId": 3, "amount": 10}),
            json!({"paymentId": "5", "reservationId": 41, "userId": 3, "amount": 10}),
            json!(null),
        ] {
            let err = issue_receipt(&provider, &event("PaymentCompleted", payload))
                .await
                .unwrap_err();
            assert!(err.to_string().contains("malformed"), "{err}");
        }
        assert!(provider.asked.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_negative_amount_is_refused_before_the_provider_is_asked() {
        let provider = FakeProvider::default();
        let err = issue_receipt(&provider, &paid(-1)).await.unwrap_err();
        assert!(err.to_string().contains("negative"), "{err}");
        assert!(provider.asked.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_provider_failure_fails_the_receipt_so_it_is_retried() {
        let provider = FakeProvider::down();
        let err = issue_receipt(&provider, &paid(10)).await.unwrap_err();
        assert!(err.to_string().contains("tax service down"));
    }

    // --- record_receipt and cancel_receipt (the consumer's steps) ---

    fn refunded(reason: &str) -> EventEnvelope {
        event(
            "PaymentRefunded",
            json!({"paymentId": 5, "reservationId": 41, "userId": 3, "amount": 90_000, "reason": reason}),
        )
    }

    #[tokio::test]
    async fn a_refund_voids_the_receipt_once_and_waits_for_a_receipt_not_yet_issued() {
        let provider = FakeProvider::default();
        let mut tx = FakeTx::default();
        let now = Utc::now();
        let early = cancel_receipt(&mut tx, &provider, &refunded("cancelled"), now)
            .await
            .unwrap_err();
        assert!(early.to_string().contains("no receipt yet"), "{early}");

        record_receipt(&mut tx, &provider, &paid(90_000), now)
            .await
            .unwrap();
        assert!(
            cancel_receipt(&mut tx, &provider, &refunded("cancelled"), now)
                .await
                .unwrap()
        );
        assert!(
            !cancel_receipt(&mut tx, &provider, &refunded("cancelled"), now)
                .await
                .unwrap(),
            "a second refund event changes nothing"
        );
        assert_eq!(*provider.cancelled.lock().unwrap(), vec!["R-5".to_owned()]);
        let types: Vec<_> = tx.events.iter().map(|e| e.event_type).collect();
        assert_eq!(types, vec![types::RECEIPT_ISSUED, types::RECEIPT_CANCELLED]);
        assert_eq!(tx.events[1].payload["number"], "R-5");
    }

    #[tokio::test]
    async fn a_provider_that_cannot_void_the_receipt_leaves_it_for_the_retry() {
        let mut tx = FakeTx::default();
        let now = Utc::now();
        record_receipt(&mut tx, &FakeProvider::default(), &paid(10), now)
            .await
            .unwrap();
        let down = FakeProvider::down();
        assert!(
            cancel_receipt(&mut tx, &down, &refunded("seat_lost"), now)
                .await
                .is_err()
        );
        assert!(tx.cancelled.is_empty());
    }

    #[tokio::test]
    async fn a_receipt_is_issued_and_stored_under_its_event() {
        let mut tx = FakeTx::default();
        let provider = FakeProvider::default();
        let event = paid(1_000);
        let receipt = record_receipt(&mut tx, &provider, &event, event.occurred_at)
            .await
            .unwrap();
        assert_eq!(receipt.number, "R-5");
        assert_eq!(tx.receipts, vec![(receipt, event.event_id)]);
        assert_eq!(tx.events.len(), 1);
        assert_eq!(tx.events[0].event_type, types::RECEIPT_ISSUED);
        assert_eq!(tx.events[0].payload["number"], "R-5");
        // A second receipt for the payment is neither stored nor announced.
        record_receipt(&mut tx, &provider, &event, event.occurred_at)
            .await
            .unwrap();
        assert_eq!((tx.receipts.len(), tx.events.len()), (1, 1));
    }

    #[tokio::test]
    async fn a_receipt_the_provider_cannot_issue_stores_nothing() {
        let mut tx = FakeTx::default();
        let provider = FakeProvider::down();
        let event = paid(1_000);
        assert!(
            record_receipt(&mut tx, &provider, &event, event.occurred_at)
                .await
                .is_err()
        );
        assert!(tx.receipts.is_empty());
    }
}
