use crate::kernel::{Fault, events::EventEnvelope};

pub const DATA_PLATFORM_CONSUMER: &str = "data-platform";
pub const RECEIPTS_CONSUMER: &str = "receipts";
pub const NOTIFICATIONS_CONSUMER: &str = "notifications";

/// Why a listener did not handle an event; the consumer delivers it again
/// (and dead-letters it after its last delivery).
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    /// The event does not carry what the listener needs.
    #[error("the {event_type} payload is malformed: {detail}")]
    Malformed { event_type: String, detail: String },
    /// A refund came before its payment's receipt.
    #[error("payment {0} has no receipt yet; its cancellation waits for it")]
    NoReceiptYet(i64),
    /// The outside system the listener hands events to (the data platform,
    /// the receipt provider) failed.
    #[error("the {system} failed: {cause:#}")]
    Downstream {
        system: &'static str,
        cause: anyhow::Error,
    },
    #[error(transparent)]
    Fault(Fault),
}

crate::kernel::module_error!(ListenerError);

impl ListenerError {
    pub fn malformed(event: &EventEnvelope, detail: impl std::fmt::Display) -> Self {
        Self::Malformed {
            event_type: event.event_type.clone(),
            detail: detail.to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub number: String,
    pub payment_id: i64,
    pub user_id: i64,
    pub amount: i64,
}

/// One NDJSON line for the data platform: the envelope's fields as a JSON
/// object, newline-terminated.
pub fn data_platform_line(event: &EventEnvelope) -> String {
    let mut line = serde_json::to_string(event).unwrap_or_default();
    line.push('\n');
    line
}

/// What a user is told, in their notification list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub id: i64,
    pub kind: String,
    pub message: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// A notification to record for `user`, given by the event `event_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNotification {
    pub user: crate::kernel::UserId,
    pub kind: &'static str,
    pub message: String,
    pub event_id: uuid::Uuid,
}

/// The notification an event gives its user, if any: (kind, message).
pub fn notification_for(
    event_type: &str,
    payload: &serde_json::Value,
) -> Option<(&'static str, String)> {
    let reservation = payload["reservationId"].as_i64().unwrap_or_default();
    match event_type {
        "ReservationConfirmed" => Some((
            "reservation_confirmed",
            format!("Your seat is yours: reservation {reservation} is confirmed."),
        )),
        "WaitlistOffered" => {
            let offer = payload["reservationId"].as_i64().unwrap_or_default();
            let seat = payload["seatId"].as_i64().unwrap_or_default();
            let until = payload["expiresAt"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map_or_else(
                    || "soon".to_owned(),
                    |t| t.to_utc().format("%Y-%m-%d %H:%M:%S UTC").to_string(),
                );
            let order = payload["orderId"].as_i64().unwrap_or_default();
            let message = match payload["quantity"].as_u64() {
                Some(seats) if seats > 1 => format!(
                    "{seats} seats came free and are held for you together as order {order}, until {until}. Pay the order (orderId {order}) with an admitted queue token before then or they go to the next in line."
                ),
                _ => format!(
                    "A seat came free and is held for you: seat {seat}, reservation {offer}, order {order}, until {until}. Pay with an admitted queue token before then or it goes to the next in line."
                ),
            };
            Some(("waitlist_offer", message))
        }
        "WaitlistClosed" => {
            let schedule = payload["scheduleId"].as_i64().unwrap_or_default();
            Some((
                "waitlist_closed",
                format!(
                    "Sales for schedule {schedule} have closed, so your place on its waitlist has ended."
                ),
            ))
        }
        "ReservationExpired" => Some((
            "reservation_expired",
            format!("Your hold on reservation {reservation} expired and the seat was released."),
        )),
        "PaymentRefunded" => {
            let amount = payload["amount"].as_i64().unwrap_or_default();
            Some((
                "payment_refunded",
                if payload["reason"] == "cancelled" {
                    format!(
                        "Your ticket for reservation {reservation} is cancelled; {amount} points were refunded."
                    )
                } else if payload["reason"] == "schedule_cancelled" {
                    format!(
                        "The show of reservation {reservation} was cancelled; your {amount} points were refunded."
                    )
                } else {
                    format!(
                        "We could not confirm your seat for reservation {reservation}; {amount} points were refunded."
                    )
                },
            ))
        }
        "CouponRedemptionFinished" => {
            let coupon = payload["userCouponId"].as_i64().unwrap_or_default();
            if payload["status"] == "succeeded" {
                Some(("coupon_redeemed", format!("Your coupon {coupon} was used.")))
            } else {
                let reason = match payload["reason"].as_str().unwrap_or_default() {
                    "already_used" => "it was already used",
                    "expired" => "it has expired",
                    "not_started" => "it cannot be used yet",
                    _ => "it does not belong to you",
                };
                Some((
                    "coupon_redemption_failed",
                    format!("Your coupon {coupon} could not be used: {reason}."),
                ))
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use serde_json::json;
    use uuid::Uuid;

    use super::*;

    #[test]
    fn a_line_carries_the_envelope_fields_in_camel_case() {
        let event = EventEnvelope {
            event_id: Uuid::nil(),
            event_type: "PaymentCompleted".into(),
            aggregate_type: "payment".into(),
            aggregate_id: "7".into(),
            occurred_at: Utc::now(),
            payload: json!({"amount": 5}),
            traceparent: None,
        };
        let line = data_platform_line(&event);
        assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        for key in [
            "eventId",
            "type",
            "aggregateType",
            "aggregateId",
            "occurredAt",
            "payload",
        ] {
            assert!(value.get(key).is_some(), "missing {key}");
        }
        assert_eq!(value["type"], "PaymentCompleted");
    }

    /// What a finished redemption of coupon 12 tells its user: (kind, message).
    fn coupon_finished(status: &str, reason: Option<&str>) -> (&'static str, String) {
        let payload = json!({
            "jobId": Uuid::nil(),
            "userId": 3,
            "userCouponId": 12,
            "status": status,
            "reason": reason,
        });
        notification_for("CouponRedemptionFinished", &payload).unwrap()
    }

    #[test]
    fn a_waitlist_offer_names_the_seat_the_hold_and_its_deadline() {
        let payload = json!({
            "entryId": 4, "scheduleId": 2, "userId": 3, "reservationId": 77,
            "seatId": 12, "expiresAt": "2026-12-04T10:05:00Z"
        });
        let (kind, message) = notification_for("WaitlistOffered", &payload).unwrap();
        assert_eq!(kind, "waitlist_offer");
        for part in ["seat 12", "reservation 77", "2026-12-04 10:05:00 UTC"] {
            assert!(message.contains(part), "{message}");
        }
        assert_eq!(notification_for("WaitlistJoined", &payload), None);
    }

    #[test]
    fn a_waitlist_offer_of_several_seats_says_how_many_and_names_the_order() {
        let payload = json!({
            "entryId": 4, "scheduleId": 2, "userId": 3, "reservationId": 77,
            "seatId": 12, "expiresAt": "2026-12-04T10:05:00Z", "quantity": 3,
            "orderId": 9
        });
        let (kind, message) = notification_for("WaitlistOffered", &payload).unwrap();
        assert_eq!(kind, "waitlist_offer");
        for part in ["3 seats", "order 9", "2026-12-04 10:05:00 UTC"] {
            assert!(message.contains(part), "{message}");
        }
    }

    #[test]
    fn a_confirmed_or_expired_reservation_tells_its_user_which_reservation() {
        let payload = json!({"reservationId": 41, "userId": 3});
        let (kind, message) = notification_for("ReservationConfirmed", &payload).unwrap();
        assert_eq!(kind, "reservation_confirmed");
        assert!(message.contains("reservation 41 is confirmed"), "{message}");

        let (kind, message) = notification_for("ReservationExpired", &payload).unwrap();
        assert_eq!(kind, "reservation_expired");
        assert!(message.contains("reservation 41 expired"), "{message}");
    }

    #[test]
    fn a_refund_tells_the_reservation_and_the_points_returned() {
        let payload = json!({"paymentId": 5, "reservationId": 41, "userId": 3, "amount": 90000});
        let (kind, message) = notification_for("PaymentRefunded", &payload).unwrap();
        assert_eq!(kind, "payment_refunded");
        assert!(message.contains("reservation 41"), "{message}");
        assert!(message.contains("90000 points were refunded"), "{message}");
        assert!(message.contains("could not confirm"), "{message}");
        for (reason, says) in [
            ("cancelled", "ticket for reservation 41 is cancelled"),
            ("schedule_cancelled", "show of reservation 41 was cancelled"),
            ("seat_lost", "could not confirm your seat"),
        ] {
            let mut payload = payload.clone();
            payload["reason"] = json!(reason);
            let (kind, message) = notification_for("PaymentRefunded", &payload).unwrap();
            assert_eq!(kind, "payment_refunded");
            assert!(message.contains(says), "{reason}: {message}");
        }
    }

    #[test]
    fn a_redeemed_coupon_is_reported_as_used() {
        let (kind, message) = coupon_finished("succeeded", None);
        assert_eq!(kind, "coupon_redeemed");
        assert_eq!(message, "Your coupon 12 was used.");
    }

    #[test]
    fn a_failed_redemption_says_why_in_words() {
        let cases = [
            ("already_used", "it was already used"),
            ("expired", "it has expired"),
            ("not_started", "it cannot be used yet"),
            ("not_your_coupon", "it does not belong to you"),
        ];
        for (reason, words) in cases {
            let (kind, message) = coupon_finished("failed", Some(reason));
            assert_eq!(kind, "coupon_redemption_failed");
            assert_eq!(
                message,
                format!("Your coupon 12 could not be used: {words}.")
            );
        }
    }

    #[test]
    fn a_redemption_that_did_not_succeed_is_a_failure_whatever_its_status_says() {
        let (kind, _) = coupon_finished("pending", None);
        assert_eq!(kind, "coupon_redemption_failed");
    }

    #[test]
    fn events_nobody_is_told_about_give_no_notification() {
        let payload = json!({"reservationId": 41, "userId": 3, "amount": 10});
        for event_type in [
            "PaymentCompleted",
            "ReservationHeld",
            "ReservationConfirmationFailed",
            "ConcertCreated",
            "reservationconfirmed",
            "",
        ] {
            assert_eq!(notification_for(event_type, &payload), None, "{event_type}");
        }
    }
}
