//! User notifications: what an event tells its user, recorded in the
//! consumer's transaction, and the page a polling client reads.

use chrono::{DateTime, Utc};

use crate::{
    kernel::{
        Clock, PageRequest, StoreError, UserId,
        events::{
            CouponRedemptionFinished, EventEnvelope, PaymentRefunded, ReservationChanged,
            WaitlistChanged, types,
        },
    },
    listeners::{
        domain::{
            ListenerError, NOTIFICATIONS_CONSUMER, NewNotification, Notification, notification_for,
        },
        ports::{NotificationRepository, NotificationTx},
        usecase::{Listener, Listening},
    },
    outbox::ports::Subscription,
};

/// The user an event concerns, for the events users are told about.
fn user_of(event: &EventEnvelope) -> Result<UserId, ListenerError> {
    let payload = event.payload.clone();
    let user = match event.event_type.as_str() {
        types::PAYMENT_REFUNDED => {
            serde_json::from_value::<PaymentRefunded>(payload).map(|paid| paid.user_id)
        }
        types::COUPON_REDEMPTION_FINISHED => {
            serde_json::from_value::<CouponRedemptionFinished>(payload).map(|job| job.user_id)
        }
        types::WAITLIST_OFFERED | types::WAITLIST_CLOSED => {
            serde_json::from_value::<WaitlistChanged>(payload).map(|place| place.user_id)
        }
        _ => serde_json::from_value::<ReservationChanged>(payload).map(|hold| hold.user_id),
    };
    user.map(UserId)
        .map_err(|err| ListenerError::malformed(event, err))
}

/// Records the notification an event gives its user, if any; returns
/// whether there was one.
pub async fn notify<T: NotificationTx>(
    tx: &mut T,
    event: &EventEnvelope,
    now: DateTime<Utc>,
) -> Result<bool, ListenerError> {
    let Some((kind, message)) = notification_for(&event.event_type, &event.payload) else {
        return Ok(false);
    };
    let notification = NewNotification {
        user: user_of(event)?,
        kind,
        message,
        event_id: event.event_id,
    };
    tx.record_notification(notification, now).await?;
    Ok(true)
}

/// The notifications listener: what a user is told, pollable.
pub struct Notifier<C> {
    clock: C,
}

impl<C> Notifier<C> {
    pub fn new(clock: C) -> Listening<Self> {
        Listening(Self { clock })
    }
}

impl<T: NotificationTx + 'static, C: Clock> Listener<T> for Notifier<C> {
    const SUBSCRIPTION: Subscription = Subscription::of(
        NOTIFICATIONS_CONSUMER,
        &[
            types::RESERVATION_CONFIRMED,
            types::RESERVATION_EXPIRED,
            types::PAYMENT_REFUNDED,
            types::COUPON_REDEMPTION_FINISHED,
            types::WAITLIST_OFFERED,
            types::WAITLIST_CLOSED,
        ],
    );

    /// Each type names its user in its own payload ([`user_of`]).
    async fn hear(&self, tx: &mut T, event: &EventEnvelope) -> Result<(), ListenerError> {
        notify(tx, event, self.clock.now()).await?;
        Ok(())
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
        asked: PageRequest,
    ) -> Result<NotificationPage, StoreError> {
        let page = asked.at_most(MAX_NOTIFICATION_PAGE);
        let items = self.repo.list(user, page).await?;
        let next_cursor = items.last().map(|n| n.id).or(asked.after);
        Ok(NotificationPage { items, next_cursor })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use serde_json::json;
    use uuid::Uuid;

    use super::*;
    use crate::listeners::usecase::fake::{self, FakeTx, event, paid};

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
            let stored = &tx.notifications[0];
            assert_eq!(
                (stored.user, stored.kind, stored.event_id),
                (UserId(3), kind, event.event_id)
            );
        }
    }

    #[tokio::test]
    async fn an_event_nobody_is_told_about_records_nothing_and_a_bad_payload_is_an_error() {
        let mut tx = FakeTx::default();
        let event = paid(1_000);
        assert!(!notify(&mut tx, &event, event.occurred_at).await.unwrap());
        let broken = fake::event("PaymentRefunded", json!({"amount": 5}));
        assert!(notify(&mut tx, &broken, broken.occurred_at).await.is_err());
        assert!(tx.notifications.is_empty());
    }

    /// Notifications of several users, ids in order.
    #[derive(Clone, Default)]
    struct FakeNotifications(Arc<Mutex<Vec<(UserId, Notification)>>>);

    impl NotificationRepository for FakeNotifications {
        async fn list(
            &self,
            user: UserId,
            page: PageRequest,
        ) -> Result<Vec<Notification>, StoreError> {
            Ok(self
                .0
                .lock()
                .unwrap()
                .iter()
                .filter(|(u, n)| *u == user && page.after.is_none_or(|a| n.id > a))
                .take(page.limit as usize)
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
        let page = async |user, after, limit| {
            let asked = PageRequest::asked(after, limit);
            service.page(UserId(user), asked).await.unwrap()
        };
        let first = page(3, None, 2).await;
        assert_eq!(
            first.items.iter().map(|n| n.id).collect::<Vec<_>>(),
            vec![1, 3]
        );
        assert_eq!(first.next_cursor, Some(3));
        let rest = page(3, first.next_cursor, 0).await;
        assert_eq!(rest.items.iter().map(|n| n.id).collect::<Vec<_>>(), vec![4]);
        let nothing_new = page(3, Some(4), 50).await;
        assert!(nothing_new.items.is_empty());
        assert_eq!(nothing_new.next_cursor, Some(4), "the same cursor again");
        assert_eq!(page(9, None, 50).await.next_cursor, None);
    }
}
