//! The event envelope every module publishes through the outbox, and the
//! payloads of events that cross module boundaries (the published language).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A domain event about to be written to the outbox, inside the same
/// transaction as the state change it describes.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub event_type: &'static str,
    pub aggregate_type: &'static str,
    pub aggregate_id: String,
    pub payload: serde_json::Value,
    /// The trace of the work that made the event (see `kernel::trace`).
    pub traceparent: Option<String>,
}

impl NewEvent {
    pub fn new(
        event_type: &'static str,
        aggregate_type: &'static str,
        aggregate_id: impl ToString,
        payload: &impl Serialize,
    ) -> Self {
        Self {
            event_type,
            aggregate_type,
            aggregate_id: aggregate_id.to_string(),
            // Serialising a plain data struct to a JSON value cannot fail.
            payload: serde_json::to_value(payload).unwrap_or(serde_json::Value::Null),
            traceparent: super::trace::current_traceparent(),
        }
    }
}

/// An event as it travels: the same fields in a Redis stream entry and in a
/// data-platform NDJSON line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventEnvelope {
    pub event_id: Uuid,
    #[serde(rename = "type")]
    pub event_type: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub occurred_at: DateTime<Utc>,
    pub payload: serde_json::Value,
    /// The W3C trace context of the request (or job) that wrote the event;
    /// whoever handles it continues that trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// An envelope on the bus, with the outbox row it came from (none for events
/// recorded outside the database, such as the waiting room's) and, for a
/// replayed dead letter, the one consumer group it is meant for.
#[derive(Debug, Clone, PartialEq)]
pub struct BusMessage {
    pub outbox_id: Option<i64>,
    pub target: Option<String>,
    pub event: EventEnvelope,
}

/// Wakes the outbox relay right after a commit that wrote events, so
/// publishing does not wait for the relay's next poll.
pub trait RelayWake: Clone + Send + Sync + 'static {
    fn wake(&self);
}

pub mod types {
    pub const CONCERT_CREATED: &str = "ConcertCreated";
    pub const RESERVATION_HELD: &str = "ReservationHeld";
    pub const RESERVATION_RELEASED: &str = "ReservationReleased";
    pub const RESERVATION_EXPIRED: &str = "ReservationExpired";
    pub const RESERVATION_CONFIRMED: &str = "ReservationConfirmed";
    pub const RESERVATION_CONFIRMATION_FAILED: &str = "ReservationConfirmationFailed";
    /// A sold ticket was cancelled (by its buyer, or with its schedule) and
    /// its seat is free again; the payload is a `ReservationChanged`.
    pub const TICKET_CANCELLED: &str = "TicketCancelled";
    pub const WAITLIST_JOINED: &str = "WaitlistJoined";
    pub const WAITLIST_LEFT: &str = "WaitlistLeft";
    /// A freed seat was held for the next user on the waitlist.
    pub const WAITLIST_OFFERED: &str = "WaitlistOffered";
    /// Sales of the schedule closed while the user still waited: their
    /// place ended (one event per place).
    pub const WAITLIST_CLOSED: &str = "WaitlistClosed";
    pub const WALLET_CHARGED: &str = "WalletCharged";
    pub const PAYMENT_COMPLETED: &str = "PaymentCompleted";
    pub const PAYMENT_REFUNDED: &str = "PaymentRefunded";
    pub const COUPON_CREATED: &str = "CouponCreated";
    pub const COUPON_ISSUED: &str = "CouponIssued";
    pub const COUPON_REDEMPTION_REQUESTED: &str = "CouponRedemptionRequested";
    pub const COUPON_REDEMPTION_FINISHED: &str = "CouponRedemptionFinished";
    pub const PAYMENT_CONFIRMED: &str = "PaymentConfirmed";
    pub const COMPENSATION_SCHEDULED: &str = "CompensationScheduled";
    pub const RECEIPT_ISSUED: &str = "ReceiptIssued";
    /// A refunded payment's receipt was voided; the payload is a
    /// `ReceiptIssued` (the receipt that no longer counts).
    pub const RECEIPT_CANCELLED: &str = "ReceiptCancelled";
    pub const VENDOR_CREATED: &str = "VendorCreated";
    pub const QUEUE_SETTINGS_CHANGED: &str = "QueueSettingsChanged";
    pub const ALERT_ACKNOWLEDGED: &str = "AlertAcknowledged";
    pub const COMPENSATION_RETRIED: &str = "CompensationRetried";
    pub const DEAD_LETTER_REPLAYED: &str = "DeadLetterReplayed";
    /// An admin stopped a schedule's sale; its holds and tickets follow.
    pub const SCHEDULE_CANCELLATION_STARTED: &str = "ScheduleCancellationStarted";
    /// Every hold of a cancelled schedule released, every ticket refunded.
    pub const SCHEDULE_CANCELLED: &str = "ScheduleCancelled";
    /// An admin alert was stored (and queued for the webhook).
    pub const ALERT_RAISED: &str = "AlertRaised";
    /// A watchdog's condition cleared and its alert was marked resolved.
    pub const ALERT_RESOLVED: &str = "AlertResolved";
    /// A compensation attempt failed; it is retried later with backoff.
    pub const COMPENSATION_FAILED: &str = "CompensationFailed";
    /// A compensation failed its last attempt and waits for an admin.
    pub const COMPENSATION_GAVE_UP: &str = "CompensationGaveUp";
    /// A consumer group gave up on an event and stored it as a dead letter.
    pub const EVENT_DEAD_LETTERED: &str = "EventDeadLettered";
    /// The reconciler made a coupon's ledger agree with the database.
    pub const COUPON_LEDGER_REPAIRED: &str = "CouponLedgerRepaired";
    /// A sold seat's ticket was issued with its signed code.
    pub const TICKET_ISSUED: &str = "TicketIssued";
    /// A cancelled ticket became void; the payload is a `TicketIssued`
    /// (the ticket that no longer admits).
    pub const TICKET_VOIDED: &str = "TicketVoided";
    /// A ticket was scanned at the door for the first time.
    pub const TICKET_CHECKED_IN: &str = "TicketCheckedIn";
    /// A holder handed a ticket on: a new holder, version and code.
    pub const TICKET_TRANSFERRED: &str = "TicketTransferred";

    /// Every type the outbox carries: a consumer group is subscribed to
    /// the ones its handler handles, and the delivery audit holds it to
    /// them. A new type goes here too.
    pub const ALL: &[&str] = &[
        CONCERT_CREATED,
        RESERVATION_HELD,
        RESERVATION_RELEASED,
        RESERVATION_EXPIRED,
        RESERVATION_CONFIRMED,
        RESERVATION_CONFIRMATION_FAILED,
        TICKET_CANCELLED,
        WAITLIST_JOINED,
        WAITLIST_LEFT,
        WAITLIST_OFFERED,
        WAITLIST_CLOSED,
        WALLET_CHARGED,
        PAYMENT_COMPLETED,
        PAYMENT_REFUNDED,
        COUPON_CREATED,
        COUPON_ISSUED,
        COUPON_REDEMPTION_REQUESTED,
        COUPON_REDEMPTION_FINISHED,
        PAYMENT_CONFIRMED,
        COMPENSATION_SCHEDULED,
        RECEIPT_ISSUED,
        RECEIPT_CANCELLED,
        VENDOR_CREATED,
        QUEUE_SETTINGS_CHANGED,
        ALERT_ACKNOWLEDGED,
        COMPENSATION_RETRIED,
        DEAD_LETTER_REPLAYED,
        SCHEDULE_CANCELLATION_STARTED,
        SCHEDULE_CANCELLED,
        ALERT_RAISED,
        ALERT_RESOLVED,
        COMPENSATION_FAILED,
        COMPENSATION_GAVE_UP,
        EVENT_DEAD_LETTERED,
        COUPON_LEDGER_REPAIRED,
        TICKET_ISSUED,
        TICKET_VOIDED,
        TICKET_CHECKED_IN,
        TICKET_TRANSFERRED,
    ];

    /// Events about the pipeline's own trouble. A dead letter of one of
    /// these raises no alert and writes no event of its own, so a listener
    /// that fails everything cannot feed itself an endless chain of them.
    pub const ABOUT_THE_PIPELINE: &[&str] = &[ALERT_RAISED, ALERT_RESOLVED, EVENT_DEAD_LETTERED];
}

/// Payload of the `Reservation*` events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReservationChanged {
    pub reservation_id: i64,
    pub user_id: i64,
    pub concert_id: i64,
    pub schedule_id: i64,
    pub seat_id: i64,
    /// Set on `ReservationConfirmed` / `ReservationConfirmationFailed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<i64>,
    /// The order the seat was held in (absent before orders existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<i64>,
}

/// Payload of the `Waitlist*` events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WaitlistChanged {
    pub entry_id: i64,
    pub schedule_id: i64,
    pub user_id: i64,
    /// `WaitlistOffered`: the hold made for the user, its seat and expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seat_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// How many seats the place waits for (absent in events written
    /// before places had a quantity: one); `WaitlistOffered`: how many
    /// seats the offer holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<u32>,
    /// `WaitlistOffered`: the order holding the offered seats (paid with
    /// `POST /v1/payments {orderId}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConcertCreated {
    pub concert_id: i64,
    pub title: String,
    pub venue: String,
    pub schedule_ids: Vec<i64>,
    pub seat_count: u64,
    /// The admin who created it (absent in events written before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_id: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentCompleted {
    pub payment_id: i64,
    pub reservation_id: i64,
    pub user_id: i64,
    pub amount: i64,
    /// Absent in events written before payments carried it.
    #[serde(default)]
    pub concert_id: i64,
    /// The order paid for, when the payment named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<i64>,
    /// Every reservation (seat) the payment covers, by id; absent in events
    /// of one seat written before orders existed (`reservationId` alone).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reservation_ids: Vec<i64>,
}

impl PaymentCompleted {
    /// The reservations paid for, by id.
    pub fn reservations(&self) -> Vec<i64> {
        if self.reservation_ids.is_empty() {
            vec![self.reservation_id]
        } else {
            self.reservation_ids.clone()
        }
    }
}

/// Payload of `ScheduleCancellationStarted` and `ScheduleCancelled`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleCancellation {
    pub schedule_id: i64,
    /// The admin who cancelled it (on `ScheduleCancellationStarted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_id: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRefunded {
    pub payment_id: i64,
    pub reservation_id: i64,
    pub user_id: i64,
    pub amount: i64,
    /// Why: `seat_lost` (the seat could not be confirmed) or `cancelled`
    /// (the buyer cancelled the ticket), `schedule_cancelled`, or
    /// `ticket_cancelled` (one seat of an order). Absent in events written
    /// before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What stays paid after this refund: more than 0 after a seat of an
    /// order was refunded and others are still sold. Absent in events
    /// written before per-ticket refunds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WalletCharged {
    pub user_id: i64,
    pub amount: i64,
    pub balance_after: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CouponCreated {
    pub coupon_id: i64,
    pub name: String,
    pub discount: i64,
    pub quantity: i64,
    pub vendor_id: i64,
    pub valid_from: DateTime<Utc>,
    pub valid_until: DateTime<Utc>,
    /// The admin who created it (absent in events written before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_id: Option<i64>,
}

// Admin actions: each carries the admin's user id, so the data platform
// has an audit trail of who changed what.

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VendorCreated {
    pub vendor_id: i64,
    pub name: String,
    pub admin_id: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueSettingsChanged {
    pub concert_id: i64,
    pub admit_per_second: u32,
    pub max_active: u32,
    pub active_ttl_seconds: u32,
    pub heartbeat_grace_seconds: u32,
    #[serde(default)]
    pub opens_at: Option<DateTime<Utc>>,
    /// `fifo`, `random` or `closed`.
    #[serde(default)]
    pub queueing_method: String,
    #[serde(default)]
    pub paused: bool,
    pub admin_id: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertAcknowledged {
    pub alert_id: i64,
    pub admin_id: i64,
}

/// An alert stored, or resolved (`AlertResolved` carries the same shape).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertRaised {
    pub alert_id: i64,
    pub severity: String,
    pub source: String,
    pub message: String,
    /// The watchdog condition it stands for, if a watchdog raised it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
}

/// A compensation attempt that failed (`CompensationFailed`, retried at
/// `nextAttemptAt`) or was the last one (`CompensationGaveUp`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompensationFailed {
    pub compensation_id: i64,
    pub payment_id: i64,
    pub saga: String,
    pub step: String,
    pub attempts: i32,
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventDeadLettered {
    pub dead_letter_id: i64,
    pub event_id: uuid::Uuid,
    pub event_type: String,
    pub consumer: String,
    pub deliveries: u32,
    pub error: String,
}

/// Who the reconciler put back into a coupon's ledger (`added`: holders
/// the ledger had lost) and took out (`removed`: entries whose database
/// write never landed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CouponLedgerRepaired {
    pub coupon_id: i64,
    pub added: Vec<i64>,
    pub removed: Vec<i64>,
    pub rebuilt: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompensationRetried {
    pub compensation_id: i64,
    pub payment_id: i64,
    pub admin_id: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterReplayed {
    pub dead_letter_id: i64,
    pub event_id: uuid::Uuid,
    pub event_type: String,
    pub consumer: String,
    pub admin_id: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CouponIssued {
    pub coupon_id: i64,
    pub user_coupon_id: i64,
    pub user_id: i64,
    pub issue_number: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CouponRedemptionRequested {
    pub job_id: Uuid,
    pub user_id: i64,
    pub user_coupon_id: i64,
}

/// The end of a redemption job: `status` is `succeeded` or `failed` (with
/// `reason`); on success the vendor was paid `amount`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CouponRedemptionFinished {
    pub job_id: Uuid,
    pub user_id: i64,
    pub user_coupon_id: i64,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coupon_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor_id: Option<i64>,
    #[serde(default)]
    pub amount: i64,
}

/// The saga confirmed a payment (its seat was sold).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentConfirmed {
    pub payment_id: i64,
    pub reservation_id: i64,
    pub user_id: i64,
}

/// A compensation step was scheduled (e.g. the refund of a payment whose
/// seat could not be confirmed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompensationScheduled {
    pub payment_id: i64,
    pub saga: String,
    pub step: String,
}

/// A receipt was issued for a payment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceiptIssued {
    pub number: String,
    pub payment_id: i64,
    pub user_id: i64,
    pub amount: i64,
}

/// A ticket issued (`TicketIssued`) or voided (`TicketVoided`): which
/// ticket, of which reservation, whose, for which show and seat, its
/// version and the key that signed its code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TicketIssued {
    pub ticket_id: i64,
    pub reservation_id: i64,
    pub user_id: i64,
    pub schedule_id: i64,
    pub seat_id: i64,
    pub version: u32,
    pub kid: String,
}

/// A ticket admitted at the door (`TicketCheckedIn`): which ticket, whose,
/// for which show and seat, the version its code carried, and the first
/// scan's gate and time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TicketCheckedIn {
    pub ticket_id: i64,
    pub user_id: i64,
    pub schedule_id: i64,
    pub seat_id: i64,
    pub version: u32,
    pub gate: String,
    pub checked_in_at: DateTime<Utc>,
    /// Scanned offline and uploaded later (`POST /v1/checkins/batch`): an
    /// earlier scan uploaded after a later one becomes the first, and this
    /// event then follows the later scan's.
    #[serde(default)]
    pub offline: bool,
}

/// A ticket handed on (`TicketTransferred`): which ticket, of which
/// reservation, from whom to whom, for which show and seat, its new
/// version and the key that signed its new code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TicketTransferred {
    pub ticket_id: i64,
    pub reservation_id: i64,
    pub from_user_id: i64,
    pub to_user_id: i64,
    pub schedule_id: i64,
    pub seat_id: i64,
    pub version: u32,
    pub kid: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::trace::TraceContext;

    #[tokio::test]
    async fn an_event_carries_the_trace_it_was_made_in() {
        let made = |n: i64| NewEvent::new(types::WALLET_CHARGED, "wallet", n, &n);
        assert_eq!(made(1).traceparent, None, "outside any trace: none");
        let ctx = TraceContext::root(None);
        let event = ctx.scope(async { made(2) }).await;
        assert_eq!(event.traceparent, Some(ctx.traceparent()));
        let envelope = EventEnvelope {
            event_id: Uuid::new_v4(),
            event_type: event.event_type.into(),
            aggregate_type: event.aggregate_type.into(),
            aggregate_id: event.aggregate_id,
            occurred_at: Utc::now(),
            payload: event.payload,
            traceparent: event.traceparent,
        };
        let span = tracing::info_span!(
            "event",
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty
        );
        let handled = crate::kernel::trace::begin(
            &span,
            crate::kernel::trace::parse(envelope.traceparent.as_deref()),
            None,
        );
        assert_eq!(handled.trace_id, ctx.trace_id, "its handler continues it");
        assert_ne!(handled.span_id, ctx.span_id);
        let line: serde_json::Value = serde_json::to_value(&envelope).unwrap();
        assert_eq!(line["traceparent"], ctx.traceparent());
    }
}
