//! Canned admin-API data for the console's tests, and the keys to drive it.

use chrono::{DateTime, Utc};
use crossterm::event::{KeyCode, KeyEvent};

use crate::{
    api::{
        Alert, Compensation, ConsumerLag, CouponStats, DeadLetter, Door, DoorGate, DoorRefusal,
        EventPipeline, PartitionLag, QueueRoom, QueueSettings, ScheduleSale, Snapshot,
    },
    app::{Action, App, Command},
    keys,
};

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

fn room(concert: i64, total: u64) -> QueueRoom {
    QueueRoom {
        concert_id: concert,
        waiting: 4_812 / concert as u64,
        active: 950,
        admitted_last_minute: 3_000,
        admitted_total: total,
        oldest_wait_seconds: 95,
        tail_wait_seconds: 97,
        settings: QueueSettings {
            admit_per_second: 50,
            max_active: 1_000,
            active_ttl_seconds: 600,
            heartbeat_grace_seconds: 60,
            opens_at: None,
            queueing_method: "fifo".into(),
            paused: false,
        },
    }
}

/// Four rooms with their opening rules: open, paused, closed, and one
/// that opens at 10:00:00 on 2026-11-22 (after the fixtures' clock).
pub fn opening_rooms(total: u64) -> Snapshot {
    let mut snapshot = snapshot(total);
    let mut paused = room(2, 10);
    paused.settings.paused = true;
    let mut closed = room(3, 0);
    closed.settings.queueing_method = "closed".into();
    let mut early = room(4, 0);
    early.settings.opens_at = Some(at("2026-11-22T10:00:00Z"));
    snapshot.rooms = vec![room(1, total), paused, closed, early];
    snapshot
}

/// The time the fixtures' screens are drawn at.
pub fn now() -> DateTime<Utc> {
    at("2026-11-22T09:58:00Z")
}

/// Two rooms (the first has admitted `total` so far), two alerts (one
/// unacknowledged), a failed compensation, a dead letter, a campaign, and
/// three schedules (on sale, cancelling, cancelled).
pub fn snapshot(total: u64) -> Snapshot {
    Snapshot {
        rooms: vec![room(1, total), room(2, 10)],
        alerts: vec![
            Alert {
                id: 7,
                severity: "warning".into(),
                source: "coupons".into(),
                message: "coupon 3: the issue ledger was missing and was rebuilt".into(),
                created_at: at("2026-11-22T10:00:05Z"),
                acknowledged: true,
                condition: None,
                resolved_at: None,
                webhook: "delivered".into(),
                webhook_attempts: 1,
            },
            Alert {
                id: 9,
                severity: "critical".into(),
                source: "saga:payment".into(),
                message: "compensation 4 (refund of payment 12) failed 5 times".into(),
                created_at: at("2026-11-22T10:01:00Z"),
                acknowledged: false,
                condition: None,
                resolved_at: None,
                webhook: "queued".into(),
                webhook_attempts: 3,
            },
        ],
        compensations: vec![
            Compensation {
                id: 3,
                saga: "payment".into(),
                step: "refund".into(),
                payment_id: 11,
                status: "succeeded".into(),
                attempts: 1,
                last_error: None,
            },
            Compensation {
                id: 4,
                saga: "payment".into(),
                step: "refund".into(),
                payment_id: 12,
                status: "failed".into(),
                attempts: 5,
                last_error: Some("the wallet is at its cap".into()),
            },
        ],
        events: EventPipeline {
            outbox_pending: 12,
            oldest_pending_seconds: 0.4,
            consumers: vec![
                ConsumerLag {
                    name: "data-platform".into(),
                    pending: 3,
                    lag: 40,
                    redelivered: 2,
                    partitions: vec![
                        PartitionLag {
                            partition: 0,
                            stream: "bo:events:{p0}".into(),
                            pending: 1,
                            lag: 40,
                        },
                        PartitionLag {
                            partition: 1,
                            stream: "bo:events:{p1.2}".into(),
                            pending: 2,
                            lag: 0,
                        },
                    ],
                },
                ConsumerLag {
                    name: "receipts".into(),
                    pending: 0,
                    lag: 0,
                    redelivered: 0,
                    partitions: vec![
                        PartitionLag {
                            partition: 0,
                            stream: "bo:events:{p0}".into(),
                            pending: 0,
                            lag: 0,
                        },
                        PartitionLag {
                            partition: 1,
                            stream: "bo:events:{p1.2}".into(),
                            pending: 0,
                            lag: 0,
                        },
                    ],
                },
            ],
            dead_letters: 1,
        },
        dead_letters: vec![DeadLetter {
            id: 2,
            consumer: "receipts".into(),
            event_type: "PaymentCompleted".into(),
            deliveries: 5,
            last_error: "receipt provider timed out".into(),
            envelope: r#"{"eventId":"0b9c…","type":"PaymentCompleted","aggregateType":"payment","aggregateId":"41","payload":{"paymentId":41,"amount":150000}}"#.into(),
            created_at: at("2026-11-22T09:59:00Z"),
        }],
        coupons: vec![CouponStats {
            id: 3,
            name: "Free coffee".into(),
            quantity: 1_000,
            issued: 1_000,
            redeemed: 412,
            remaining: 0,
            vendor_balance: 206_000,
            ledger_issued: Some(1_000),
        }],
        schedules: vec![
            ScheduleSale {
                id: 6,
                status: "on_sale".into(),
                seats: 20_000,
                sold: 18_250,
                refunds_pending: 0,
                refunds_failed: 0,
                refunds_done: 0,
            },
            ScheduleSale {
                id: 5,
                status: "cancelling".into(),
                seats: 10_000,
                sold: 6_000,
                refunds_pending: 4_000,
                refunds_failed: 1,
                refunds_done: 6_000,
            },
            ScheduleSale {
                id: 4,
                status: "cancelled".into(),
                seats: 500,
                sold: 0,
                refunds_pending: 0,
                refunds_failed: 0,
                refunds_done: 480,
            },
        ],
    }
}

/// The door of `schedule` mid-entry: two gates, the north one busier, and
/// three refused scans.
pub fn door(schedule: i64) -> Door {
    let gate = |name: &str, checked_in, per_minute: Vec<u64>| DoorGate {
        gate: name.into(),
        checked_in,
        last_minute: *per_minute.last().unwrap(),
        per_minute,
    };
    let refusal = |time: &str, gate: &str, reason: &str, ticket| DoorRefusal {
        gate: gate.into(),
        reason: reason.into(),
        ticket_id: ticket,
        at: at(&format!("2026-12-07T{time}Z")),
    };
    Door {
        schedule_id: schedule,
        tickets_sold: 18_250,
        checked_in: 9_120,
        gates: vec![
            gate(
                "north",
                6_000,
                vec![
                    0, 0, 12, 40, 80, 120, 160, 150, 140, 150, 160, 170, 150, 140, 130,
                ],
            ),
            gate(
                "south",
                3_120,
                vec![0, 0, 0, 10, 30, 60, 80, 90, 80, 70, 80, 90, 80, 70, 60],
            ),
        ],
        checkins_per_minute: vec![
            0, 0, 12, 50, 110, 180, 240, 240, 220, 220, 240, 260, 230, 210, 190,
        ],
        recent_refusals: vec![
            refusal("19:41:05", "north", "already_checked_in", Some(8_812)),
            refusal("19:40:51", "south", "invalid_code", None),
            refusal("19:39:12", "north", "ticket_void", Some(77)),
        ],
    }
}

/// The console after its first refresh of [`snapshot`], at the fixtures' clock.
pub fn loaded() -> App {
    let mut app = App::new("http://x");
    app.clock = now;
    app.update(Action::Data(Box::new(snapshot(100))));
    app
}

pub fn press(app: &mut App, code: KeyCode) -> Option<Command> {
    keys::on_key(app, KeyEvent::from(code))
}

pub fn type_in(app: &mut App, text: &str) {
    for c in text.chars() {
        press(app, KeyCode::Char(c));
    }
}

/// The first room's settings in [`snapshot`].
pub fn rates() -> QueueSettings {
    snapshot(0).rooms[0].settings.clone()
}
