use crate::kernel::events::EventEnvelope;

pub const DATA_PLATFORM_CONSUMER: &str = "data-platform";
pub const RECEIPTS_CONSUMER: &str = "receipts";

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
}

/// What a user is told, in their notification list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub id: i64,
    pub kind: String,
    pub message: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
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
        "ReservationExpired" => Some((
            "reservation_expired",
            format!("Your hold on reservation {reservation} expired and the seat was released."),
        )),
        "PaymentRefunded" => Some((
            "payment_refunded",
            format!(
                "We could not confirm your seat for reservation {reservation}; {} points were refunded.",
                payload["amount"].as_i64().unwrap_or_default()
            ),
        )),
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
