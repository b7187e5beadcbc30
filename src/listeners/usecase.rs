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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use chrono::DateTime;
    use serde_json::json;
    use uuid::Uuid;

    use super::*;

    fn event(event_type: &str, payload: serde_json::Value) -> EventEnvelope {
        EventEnvelope {
            event_id: Uuid::from_u128(7),
            event_type: event_type.into(),
            aggregate_type: "payment".into(),
            aggregate_id: "5".into(),
            occurred_at: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            payload,
        }
    }

    fn paid(amount: i64) -> EventEnvelope {
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

    #[derive(Default)]
    struct FakeSink {
        written: Mutex<Vec<EventEnvelope>>,
        down: bool,
    }

    impl DataPlatformSink for FakeSink {
        async fn write(&self, event: &EventEnvelope) -> anyhow::Result<()> {
            if self.down {
                anyhow::bail!("collector down");
            }
            self.written.lock().unwrap().push(event.clone());
            Ok(())
        }
    }

    /// Numbers receipts after the payment, as the port requires (same
    /// payment, same number).
    #[derive(Default)]
    struct FakeProvider {
        asked: Mutex<Vec<PaymentCompleted>>,
        down: bool,
    }

    impl ReceiptProvider for FakeProvider {
        async fn issue(&self, payment: &PaymentCompleted) -> anyhow::Result<String> {
            self.asked.lock().unwrap().push(payment.clone());
            if self.down {
                anyhow::bail!("tax service down");
            }
            Ok(format!("R-{}", payment.payment_id))
        }
    }

    // --- export_event ---

    #[tokio::test]
    async fn every_event_goes_to_the_sink_unchanged() {
        let sink = FakeSink::default();
        let event = event("QueueEntered", json!({"concertId": 1}));
        export_event(&sink, &event).await.unwrap();
        assert_eq!(*sink.written.lock().unwrap(), vec![event]);
    }

    #[tokio::test]
    async fn a_sink_failure_fails_the_export_so_it_is_retried() {
        let sink = FakeSink {
            down: true,
            ..FakeSink::default()
        };
        let err = export_event(&sink, &paid(10)).await.unwrap_err();
        assert!(err.to_string().contains("collector down"));
    }

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
        let provider = FakeProvider {
            down: true,
            ..FakeProvider::default()
        };
        let err = issue_receipt(&provider, &paid(10)).await.unwrap_err();
        assert!(err.to_string().contains("tax service down"));
    }
}
