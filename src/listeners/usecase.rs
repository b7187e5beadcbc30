//! The listeners: the data-platform export, receipts and user
//! notifications, each a consumer of the event stream.

use anyhow::Context;
use futures::{FutureExt, future::BoxFuture};

use super::{
    domain::{DATA_PLATFORM_CONSUMER, Notification, RECEIPTS_CONSUMER, Receipt, notification_for},
    ports::{DataPlatformSink, NotificationRepository, NotificationTx, ReceiptProvider, ReceiptTx},
};
use crate::{
    kernel::{
        Clock, UserId,
        events::{
            CouponRedemptionFinished, EventEnvelope, NewEvent, PaymentCompleted, PaymentRefunded,
            ReceiptIssued, ReservationChanged, WaitlistChanged, types,
        },
    },
    outbox::ports::{EventHandler, OutboxWriter},
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

/// Issues the receipt of a payment, stores it in the consumer's
/// transaction and, the first time, writes `ReceiptIssued`.
pub async fn record_receipt<T: ReceiptTx + OutboxWriter>(
    tx: &mut T,
    provider: &impl ReceiptProvider,
    event: &EventEnvelope,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<Receipt> {
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
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<bool> {
    let refunded: PaymentRefunded = serde_json::from_value(event.payload.clone())
        .context("the PaymentRefunded payload is malformed")?;
    let Some((receipt, cancelled)) = tx.receipt_of(refunded.payment_id).await? else {
        anyhow::bail!(
            "payment {} has no receipt yet; its cancellation waits for it",
            refunded.payment_id
        );
    };
    if cancelled {
        return Ok(false);
    }
    provider.cancel(&receipt.number).await?;
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

/// The user an event concerns, for the events users are told about.
fn user_of(event: &EventEnvelope) -> anyhow::Result<UserId> {
    let payload = event.payload.clone();
    let user = match event.event_type.as_str() {
        types::PAYMENT_REFUNDED => serde_json::from_value::<PaymentRefunded>(payload)?.user_id,
        types::COUPON_REDEMPTION_FINISHED => {
            serde_json::from_value::<CouponRedemptionFinished>(payload)?.user_id
        }
        types::WAITLIST_OFFERED | types::WAITLIST_CLOSED => {
            serde_json::from_value::<WaitlistChanged>(payload)?.user_id
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

impl<T: ReceiptTx + OutboxWriter + 'static, P: ReceiptProvider, C: Clock> EventHandler<T>
    for ReceiptIssuer<P, C>
{
    fn name(&self) -> &'static str {
        RECEIPTS_CONSUMER
    }

    fn handles(&self, event_type: &str) -> bool {
        event_type == types::PAYMENT_COMPLETED || event_type == types::PAYMENT_REFUNDED
    }

    fn handle<'a>(
        &'a self,
        tx: &'a mut T,
        event: &'a EventEnvelope,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        async move {
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
                | types::WAITLIST_OFFERED
                | types::WAITLIST_CLOSED
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

/// The most notifications one page holds.
pub const MAX_NOTIFICATION_PAGE: u64 = 100;

/// A page of notifications and the cursor to poll from next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationPage {
    pub items: Vec<Notification>,
    /// The last id seen; the caller's own cursor again when nothing is new.
    pub next_cursor: Option<i64>,
}

/// What a polling client reads.
#[derive(Clone)]
pub struct NotificationService<R> {
    repo: R,
}

impl<R: NotificationRepository> NotificationService<R> {
    pub fn new(repo: R) -> Self {
        Self { repo }
    }

    /// The user's notifications after `after`, oldest first.
    pub async fn page(
        &self,
        user: UserId,
        after: Option<i64>,
        limit: u64,
    ) -> Result<NotificationPage, crate::kernel::StoreError> {
        let items = self
            .repo
            .list(user, after, limit.clamp(1, MAX_NOTIFICATION_PAGE))
            .await?;
        let next_cursor = items.last().map(|n| n.id).or(after);
        Ok(NotificationPage { items, next_cursor })
    }
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
            traceparent: None,
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
        cancelled: Mutex<Vec<String>>,
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

        async fn cancel(&self, number: &str) -> anyhow::Result<()> {
            if self.down {
                anyhow::bail!("tax service down");
            }
            self.cancelled.lock().unwrap().push(number.into());
            Ok(())
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

    /// What the listeners store in the consumer's transaction.
    #[derive(Default)]
    struct FakeTx {
        receipts: Vec<(Receipt, Uuid)>,
        cancelled: Vec<i64>,
        notifications: Vec<(UserId, String, String, Uuid)>,
        events: Vec<NewEvent>,
    }

    impl ReceiptTx for FakeTx {
        async fn store_receipt(
            &mut self,
            receipt: &Receipt,
            event_id: Uuid,
            _: chrono::DateTime<chrono::Utc>,
        ) -> Result<bool, crate::kernel::StoreError> {
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

        async fn receipt_of(
            &mut self,
            payment_id: i64,
        ) -> Result<Option<(Receipt, bool)>, crate::kernel::StoreError> {
            Ok(self
                .receipts
                .iter()
                .find(|(r, _)| r.payment_id == payment_id)
                .map(|(r, _)| (r.clone(), self.cancelled.contains(&payment_id))))
        }

        async fn mark_receipt_cancelled(
            &mut self,
            payment_id: i64,
            _: chrono::DateTime<chrono::Utc>,
        ) -> Result<bool, crate::kernel::StoreError> {
            if self.cancelled.contains(&payment_id) {
                return Ok(false);
            }
            self.cancelled.push(payment_id);
            Ok(true)
        }
    }

    impl OutboxWriter for FakeTx {
        async fn append(
            &mut self,
            events: Vec<NewEvent>,
            _: chrono::DateTime<chrono::Utc>,
        ) -> Result<(), crate::kernel::StoreError> {
            self.events.extend(events);
            Ok(())
        }
    }

    impl NotificationTx for FakeTx {
        async fn record_notification(
            &mut self,
            user: UserId,
            kind: &str,
            message: &str,
            event_id: Uuid,
            _: chrono::DateTime<chrono::Utc>,
        ) -> Result<(), crate::kernel::StoreError> {
            self.notifications
                .push((user, kind.into(), message.into(), event_id));
            Ok(())
        }
    }

    // --- record_receipt and notify (the consumers' steps) ---

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
        let now = chrono::Utc::now();
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
        let now = chrono::Utc::now();
        record_receipt(&mut tx, &FakeProvider::default(), &paid(10), now)
            .await
            .unwrap();
        let down = FakeProvider {
            down: true,
            ..FakeProvider::default()
        };
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
        let provider = FakeProvider {
            down: true,
            ..FakeProvider::default()
        };
        let event = paid(1_000);
        assert!(
            record_receipt(&mut tx, &provider, &event, event.occurred_at)
                .await
                .is_err()
        );
        assert!(tx.receipts.is_empty());
    }

    #[tokio::test]
    async fn the_user_an_event_concerns_is_notified_once_per_event() {
        let cases = [
            (
                "ReservationConfirmed",
                json!({"reservationId": 41, "userId": 3, "concertId": 1, "scheduleId": 1, "seatId": 9}),
                "reservation_confirmed",
            ),
            (
                "PaymentRefunded",
                json!({"paymentId": 5, "reservationId": 41, "userId": 3, "amount": 700}),
                "payment_refunded",
            ),
            (
                "CouponRedemptionFinished",
                json!({"jobId": Uuid::from_u128(1), "userId": 3, "userCouponId": 2, "status": "succeeded", "amount": 0}),
                "coupon_redeemed",
            ),
            (
                "WaitlistOffered",
                json!({"entryId": 8, "scheduleId": 1, "userId": 3, "reservationId": 41, "seatId": 9, "expiresAt": "2026-12-04T10:05:00Z"}),
                "waitlist_offer",
            ),
        ];
        for (event_type, payload, kind) in cases {
            let mut tx = FakeTx::default();
            let event = event(event_type, payload);
            assert!(notify(&mut tx, &event, event.occurred_at).await.unwrap());
            assert_eq!(tx.notifications.len(), 1, "{event_type}");
            let (user, stored_kind, _, event_id) = &tx.notifications[0];
            assert_eq!(
                (*user, stored_kind.as_str(), *event_id),
                (UserId(3), kind, event.event_id)
            );
        }
    }

    #[tokio::test]
    async fn an_event_nobody_is_told_about_records_nothing_and_a_bad_payload_is_an_error() {
        let mut tx = FakeTx::default();
        let event = paid(1_000);
        assert!(!notify(&mut tx, &event, event.occurred_at).await.unwrap());
        let broken = super::tests::event("PaymentRefunded", json!({"amount": 5}));
        assert!(notify(&mut tx, &broken, broken.occurred_at).await.is_err());
        assert!(tx.notifications.is_empty());
    }

    #[test]
    fn each_listener_takes_the_events_it_is_for() {
        let exporter = DataPlatformExporter::new(FakeSink::default());
        let receipts = ReceiptIssuer::new(FakeProvider::default(), crate::kernel::SystemClock);
        let notifier = Notifier::new(crate::kernel::SystemClock);
        assert!(EventHandler::<FakeTx>::handles(&exporter, "AnythingAtAll"));
        assert!(EventHandler::<FakeTx>::handles(
            &receipts,
            "PaymentCompleted"
        ));
        assert!(
            EventHandler::<FakeTx>::handles(&receipts, "PaymentRefunded"),
            "a refund voids the receipt"
        );
        assert!(!EventHandler::<FakeTx>::handles(
            &receipts,
            "PaymentConfirmed"
        ));
        assert!(EventHandler::<FakeTx>::handles(
            &notifier,
            "ReservationExpired"
        ));
        assert!(!EventHandler::<FakeTx>::handles(
            &notifier,
            "PaymentCompleted"
        ));
        assert_eq!(EventHandler::<FakeTx>::name(&receipts), RECEIPTS_CONSUMER);
    }

    /// Notifications of several users, ids in order.
    #[derive(Clone, Default)]
    struct FakeNotifications(std::sync::Arc<Mutex<Vec<(UserId, Notification)>>>);

    impl NotificationRepository for FakeNotifications {
        async fn list(
            &self,
            user: UserId,
            after: Option<i64>,
            limit: u64,
        ) -> Result<Vec<Notification>, crate::kernel::StoreError> {
            Ok(self
                .0
                .lock()
                .unwrap()
                .iter()
                .filter(|(u, n)| *u == user && after.is_none_or(|a| n.id > a))
                .take(limit as usize)
                .map(|(_, n)| n.clone())
                .collect())
        }
    }

    #[tokio::test]
    async fn a_poll_reads_the_users_own_notifications_after_the_cursor() {
        let store = FakeNotifications::default();
        for (id, user) in [(1, 3), (2, 4), (3, 3), (4, 3)] {
            store.0.lock().unwrap().push((
                UserId(user),
                Notification {
                    id,
                    kind: "reservation_confirmed".into(),
                    message: format!("n{id}"),
                    created_at: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
                },
            ));
        }
        let service = NotificationService::new(store);
        let first = service.page(UserId(3), None, 2).await.unwrap();
        assert_eq!(
            first.items.iter().map(|n| n.id).collect::<Vec<_>>(),
            vec![1, 3]
        );
        assert_eq!(first.next_cursor, Some(3));
        let rest = service.page(UserId(3), first.next_cursor, 0).await.unwrap();
        assert_eq!(rest.items.iter().map(|n| n.id).collect::<Vec<_>>(), vec![4]);
        let nothing_new = service.page(UserId(3), Some(4), 50).await.unwrap();
        assert!(nothing_new.items.is_empty());
        assert_eq!(nothing_new.next_cursor, Some(4), "the same cursor again");
        assert_eq!(
            service.page(UserId(9), None, 50).await.unwrap().next_cursor,
            None
        );
    }
}
