//! The event pipeline end to end: outbox → relay → bus → consumers, with
//! crashes, duplicates, poison messages and replays.

use std::{collections::HashSet, sync::Arc, time::Duration};

use boxoffice::{
    admin::{infra::db::DbAlerts, usecase::AlertService},
    kernel::{
        SystemClock,
        alerts::AlertSink,
        events::{BusMessage, EventEnvelope, NewEvent, PaymentCompleted, types},
    },
    listeners::{infra::receipts::LocalReceiptProvider, usecase::ReceiptIssuer},
    outbox::{
        infra::{
            AnyBus,
            consumer::{ConsumerRunner, ConsumerSettings},
            db::append_events,
            redis::{RedisBus, read_all},
            relay::{Relay, RelaySettings, RelayWaker},
        },
        ports::EventBus,
    },
};
use chrono::Utc;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::helpers::{TestApp, count, eventually, redis_url, spawn_app, spawn_app_with};

const WAIT: Duration = Duration::from_secs(20);

fn payment(id: i64) -> NewEvent {
    NewEvent::new(
        types::PAYMENT_COMPLETED,
        "payment",
        id,
        &PaymentCompleted {
            payment_id: id,
            reservation_id: id,
            user_id: 100 + id,
            amount: 1_000 * id,
            concert_id: 0,
            order_id: None,
            reservation_ids: Vec::new(),
        },
    )
}

async fn write_events(app: &TestApp, events: Vec<NewEvent>) {
    append_events(&app.db, events, Utc::now())
        .await
        .expect("outbox insert");
}

fn lines_of_type<'a>(lines: &'a [Value], event_type: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["type"] == event_type).collect()
}

async fn pipeline_status(app: &TestApp) -> Value {
    app.get_json("/v1/admin/events").await
}

/// Waits until the outbox is empty and every consumer group has finished.
async fn drained(app: &TestApp) -> Value {
    eventually("the pipeline to drain", WAIT, || async {
        let status = pipeline_status(app).await;
        let consumers = status["consumers"].as_array().cloned().unwrap_or_default();
        let idle =
            consumers.len() >= 2 && consumers.iter().all(|c| c["pending"] == 0 && c["lag"] == 0);
        (status["outboxPending"] == 0 && idle).then_some(status)
    })
    .await
}

#[tokio::test]
async fn a_created_concert_reaches_the_data_platform_once() {
    let app = spawn_app().await;
    let created = app
        .create_concert(&crate::helpers::concert_body(2, 3))
        .await;
    let status = drained(&app).await;
    assert_eq!(status["deadLetters"], 0);
    let names: HashSet<String> = status["consumers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    let expected = [
        "data-platform",
        "receipts",
        "reservations",
        "waitlist",
        "payments",
        "notifications",
        "queue",
        "coupon-redemptions",
        "tickets",
    ];
    assert_eq!(
        names,
        expected
            .iter()
            .map(|n| n.to_string())
            .collect::<HashSet<_>>()
    );

    let lines = app.data_platform_lines();
    let concerts = lines_of_type(&lines, "ConcertCreated");
    assert_eq!(concerts.len(), 1, "{lines:?}");
    let line = concerts[0];
    assert_eq!(line["aggregateType"], "concert");
    assert_eq!(line["aggregateId"], created["id"].to_string());
    assert_eq!(line["payload"]["seatCount"], 5);
    assert!(Uuid::parse_str(line["eventId"].as_str().unwrap()).is_ok());
    assert!(chrono::DateTime::parse_from_rfc3339(line["occurredAt"].as_str().unwrap()).is_ok());
}

#[tokio::test]
async fn every_payment_gets_one_receipt_and_one_data_platform_line() {
    let app = spawn_app().await;
    write_events(&app, (1..=20).map(payment).collect()).await;
    drained(&app).await;
    assert_eq!(count(&app.db, "SELECT COUNT(*) FROM receipts").await, 20);
    assert_eq!(
        count(&app.db, "SELECT COUNT(DISTINCT payment_id) FROM receipts").await,
        20
    );
    assert_eq!(
        count(&app.db, "SELECT CAST(SUM(amount) AS BIGINT) FROM receipts").await,
        1_000 * (1..=20).sum::<i64>()
    );
    assert_eq!(
        count(
            &app.db,
            "SELECT COUNT(*) FROM receipts WHERE number = 'R-000000000007' AND user_id = 107"
        )
        .await,
        1
    );
    let lines = app.data_platform_lines();
    assert_eq!(lines_of_type(&lines, "PaymentCompleted").len(), 20);
}

/// The process dies after the commit: some events were never handed to the
/// bus, some were handed over but not consumed. After a restart every event
/// is applied exactly once.
#[tokio::test]
async fn events_left_behind_by_a_crashed_process_are_delivered_after_a_restart() {
    let first = spawn_app_with(|s| s.workers = false).await;
    write_events(&first, vec![payment(1), payment(2)]).await;
    let relay = Relay::new(
        first.db.clone(),
        first.bus.clone(),
        RelayWaker::default(),
        RelaySettings {
            batch_size: 100,
            poll_interval: Duration::from_millis(20),
            retention: Duration::from_secs(3600),
        },
    );
    assert_eq!(
        relay.relay_batch().await.unwrap(),
        2,
        "handed to the bus, never consumed"
    );
    write_events(&first, vec![payment(3)]).await;
    assert_eq!(count(&first.db, "SELECT COUNT(*) FROM receipts").await, 0);
    // Nothing consumes in `first`; it is as good as dead from here on.

    let database_url = first.settings.database_url.clone();
    let stream = first.settings.event_stream.clone();
    let sink = first.settings.data_platform_sink.clone();
    let restarted = spawn_app_with(move |s| {
        s.database_url = database_url;
        s.event_stream = stream;
        s.data_platform_sink = sink;
    })
    .await;
    drained(&restarted).await;
    assert_eq!(
        count(&restarted.db, "SELECT COUNT(*) FROM receipts").await,
        3
    );
    assert_eq!(
        count(
            &restarted.db,
            "SELECT COUNT(*) FROM outbox WHERE published_at IS NULL"
        )
        .await,
        0
    );
    assert_eq!(
        lines_of_type(&first.data_platform_lines(), "PaymentCompleted").len(),
        3
    );
}

#[tokio::test]
async fn the_same_message_delivered_twice_has_its_effect_once() {
    let app = spawn_app().await;
    drained(&app).await;
    let message = BusMessage {
        outbox_id: None,
        target: None,
        event: EventEnvelope {
            event_id: Uuid::new_v4(),
            event_type: types::PAYMENT_COMPLETED.into(),
            aggregate_type: "payment".into(),
            aggregate_id: "42".into(),
            occurred_at: Utc::now(),
            payload: json!({"paymentId": 42, "reservationId": 1, "userId": 7, "amount": 5000}),
            traceparent: None,
        },
    };
    app.bus
        .publish(&[message.clone(), message.clone()])
        .await
        .unwrap();
    drained(&app).await;
    assert_eq!(
        count(
            &app.db,
            "SELECT COUNT(*) FROM receipts WHERE payment_id = 42"
        )
        .await,
        1
    );
    let lines = app.data_platform_lines();
    let copies = lines
        .iter()
        .filter(|l| l["eventId"] == message.event.event_id.to_string())
        .count();
    assert_eq!(copies, 1, "the exporter's inbox drops the duplicate too");
}

fn alerts_for(app: &TestApp) -> Arc<dyn AlertSink> {
    Arc::new(AlertService::new(
        DbAlerts::new(app.db.clone()),
        SystemClock,
        false,
    ))
}

#[tokio::test]
async fn a_consumer_that_dies_holding_messages_is_relieved_by_another() {
    let app = spawn_app_with(|s| s.workers = false).await;
    app.bus.ensure_group("receipts").await.unwrap();
    let messages: Vec<BusMessage> = (1..=5)
        .map(|id| {
            let event = payment(id);
            BusMessage {
                outbox_id: Some(id),
                target: None,
                event: EventEnvelope {
                    event_id: Uuid::new_v4(),
                    event_type: event.event_type.into(),
                    aggregate_type: event.aggregate_type.into(),
                    aggregate_id: event.aggregate_id,
                    occurred_at: Utc::now(),
                    payload: event.payload,
                    traceparent: event.traceparent,
                },
            }
        })
        .collect();
    app.bus.publish(&messages).await.unwrap();
    // A consumer takes all five and dies before acknowledging any.
    let held = app
        .bus
        .fetch(
            "receipts",
            "crashed-consumer",
            10,
            Duration::from_millis(10),
        )
        .await
        .unwrap();
    assert_eq!(held.len(), 5);

    let rescuer = ConsumerRunner::new(
        app.db.clone(),
        app.bus.clone(),
        Arc::new(ReceiptIssuer::new(LocalReceiptProvider, SystemClock)),
        "rescuer".into(),
        ConsumerSettings {
            batch_size: 10,
            block: Duration::from_millis(50),
            claim_idle: Duration::from_millis(200),
            max_deliveries: 5,
            lanes: 1,
            ownership: Duration::from_millis(1_500),
        },
        alerts_for(&app),
    );
    let cancel = CancellationToken::new();
    let task = tokio::spawn(rescuer.run(cancel.clone()));
    eventually("the rescuer to issue all receipts", WAIT, || async {
        (count(&app.db, "SELECT COUNT(*) FROM receipts").await == 5).then_some(())
    })
    .await;
    eventually("the reclaimed entries to be acknowledged", WAIT, || async {
        let groups = app.bus.groups().await.unwrap();
        groups
            .iter()
            .any(|g| g.name == "receipts" && g.pending == 0)
            .then_some(())
    })
    .await;
    cancel.cancel();
    task.await.unwrap();
}

/// Records the order it saw each aggregate's events in, and how many
/// events it was handling at once. Event 3 of aggregate `a` fails its
/// first two tries.
#[derive(Default)]
struct LaneProbe {
    failures_left: std::sync::atomic::AtomicUsize,
    seen: std::sync::Mutex<Vec<(String, i64)>>,
    in_flight: std::sync::atomic::AtomicUsize,
    most_at_once: std::sync::atomic::AtomicUsize,
}

impl boxoffice::outbox::ports::EventHandler<boxoffice::db::DbTx> for LaneProbe {
    fn name(&self) -> &'static str {
        "lane-probe"
    }

    fn handles(&self, event_type: &str) -> bool {
        event_type == "LaneProbed"
    }

    fn handle<'a>(
        &'a self,
        _tx: &'a mut boxoffice::db::DbTx,
        event: &'a EventEnvelope,
    ) -> futures::future::BoxFuture<'a, anyhow::Result<()>> {
        use std::sync::atomic::Ordering;
        Box::pin(async move {
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_at_once.fetch_max(now, Ordering::SeqCst);
            // An even event takes longer than the odd one after it: handled
            // side by side, they would finish out of order.
            let seq = event.payload["seq"].as_i64().unwrap();
            tokio::time::sleep(Duration::from_millis(if seq % 2 == 0 { 30 } else { 1 })).await;
            if event.aggregate_id == "a"
                && seq == 3
                && self
                    .failures_left
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
            {
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
                self.seen.lock().unwrap().push(("a-failed".into(), seq));
                anyhow::bail!("event a/3 fails for now");
            }
            self.seen.lock().unwrap().push((
                event.aggregate_id.clone(),
                event.payload["seq"].as_i64().unwrap(),
            ));
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        })
    }
}

#[tokio::test]
async fn a_consumer_with_lanes_keeps_each_aggregates_order_holds_a_failing_one_back_and_handles_aggregates_side_by_side()
 {
    let app = spawn_app_with(|s| s.workers = false).await;
    app.bus.ensure_group("lane-probe").await.unwrap();
    // Four aggregates' events, ten each, one aggregate after the other.
    let messages: Vec<BusMessage> = ["a", "b", "c", "d"]
        .into_iter()
        .flat_map(|aggregate| {
            (0..10).map(move |seq| BusMessage {
                outbox_id: None,
                target: None,
                event: EventEnvelope {
                    event_id: Uuid::new_v4(),
                    event_type: "LaneProbed".into(),
                    aggregate_type: "probe".into(),
                    aggregate_id: aggregate.into(),
                    occurred_at: Utc::now(),
                    payload: json!({"seq": seq}),
                    traceparent: None,
                },
            })
        })
        .collect();
    app.bus.publish(&messages).await.unwrap();
    let probe = Arc::new(LaneProbe::default());
    probe
        .failures_left
        .store(2, std::sync::atomic::Ordering::SeqCst);
    let runner = ConsumerRunner::new(
        app.db.clone(),
        app.bus.clone(),
        probe.clone(),
        "laned".into(),
        ConsumerSettings {
            batch_size: 64,
            block: Duration::from_millis(50),
            claim_idle: Duration::from_millis(300),
            max_deliveries: 5,
            lanes: 4,
            ownership: Duration::from_millis(1_500),
        },
        alerts_for(&app),
    );
    let cancel = CancellationToken::new();
    let task = tokio::spawn(runner.run(cancel.clone()));
    eventually("every probe event handled", WAIT, || async {
        (probe.seen.lock().unwrap().len() == 42).then_some(())
    })
    .await;
    eventually("every probe event acknowledged", WAIT, || async {
        let groups = app.bus.groups().await.unwrap();
        groups
            .iter()
            .any(|g| g.name == "lane-probe" && g.pending == 0)
            .then_some(())
    })
    .await;
    cancel.cancel();
    task.await.unwrap();
    let seen = probe.seen.lock().unwrap().clone();
    // a/3 failed twice, and nothing of a came in between: a waited for its
    // retries while b, c and d went on.
    let a_from_3: Vec<&(String, i64)> = (seen.iter())
        .filter(|(a, seq)| a.starts_with('a') && *seq >= 3)
        .collect();
    assert_eq!(
        a_from_3
            .iter()
            .map(|(a, seq)| (a.as_str(), *seq))
            .take(4)
            .collect::<Vec<_>>(),
        vec![("a-failed", 3), ("a-failed", 3), ("a", 3), ("a", 4)],
        "{seen:?}"
    );
    let retried_at = seen.iter().position(|e| *e == ("a".to_owned(), 3)).unwrap();
    let others_before = seen[..retried_at]
        .iter()
        .filter(|(a, _)| a != "a" && a != "a-failed")
        .count();
    assert_eq!(
        others_before, 30,
        "the other aggregates did not wait for a: {seen:?}"
    );
    for aggregate in ["a", "b", "c", "d"] {
        let order: Vec<i64> = seen
            .iter()
            .filter(|(a, _)| a == aggregate)
            .map(|(_, seq)| *seq)
            .collect();
        assert_eq!(order, (0..10).collect::<Vec<_>>(), "aggregate {aggregate}");
    }
    let most = probe.most_at_once.load(std::sync::atomic::Ordering::SeqCst);
    assert!(most <= 4, "{most} events at once with 4 lanes");
    // SQLite lets one transaction write at a time, so there the lanes take
    // turns at the inbox row; PostgreSQL runs them side by side.
    if sea_orm::ConnectionTrait::get_database_backend(&app.db) == sea_orm::DatabaseBackend::Postgres
    {
        assert!(most >= 2, "the four aggregates were handled one at a time");
    }
}

#[tokio::test]
async fn a_poison_message_is_dead_lettered_with_an_alert_and_can_be_replayed() {
    let app = spawn_app().await;
    let admin = app.admin_token();
    let poison = NewEvent {
        event_type: types::PAYMENT_COMPLETED,
        aggregate_type: "payment",
        aggregate_id: "666".into(),
        payload: json!({"paymentId": "not-a-number"}),
        traceparent: None,
    };
    write_events(&app, vec![poison, payment(1), payment(2), payment(3)]).await;

    eventually("the good messages behind the poison one", WAIT, || async {
        (count(&app.db, "SELECT COUNT(*) FROM receipts").await == 3).then_some(())
    })
    .await;
    // (The reservations consumer sets these made-up payments aside too:
    // their reservations do not exist. Only the receipts consumer matters here.)
    let receipts_letters = |letters: Value| -> Vec<Value> {
        assert!(letters.get("nextCursor").is_none(), "one page: {letters}");
        letters["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["consumer"] == "receipts")
            .cloned()
            .collect()
    };
    let letters = eventually("a dead letter", WAIT, || async {
        let letters = receipts_letters(app.get_json("/v1/admin/dead-letters").await);
        (letters.len() == 1).then_some(letters)
    })
    .await;
    let letter = &letters[0];
    assert_eq!(letter["consumer"], "receipts");
    assert_eq!(letter["eventType"], "PaymentCompleted");
    assert_eq!(letter["deliveries"], 3);
    assert!(
        letter["lastError"].as_str().unwrap().contains("malformed"),
        "{letter}"
    );
    // The event it carried, for an operator to read.
    let envelope: Value = serde_json::from_str(letter["envelope"].as_str().unwrap()).unwrap();
    assert_eq!(envelope["eventId"], letter["eventId"], "{envelope}");
    assert_eq!(envelope["type"], "PaymentCompleted", "{envelope}");

    // Raised right after the dead letter is stored.
    let alert = eventually("a critical alert for the dead letter", WAIT, || async {
        let alerts = app
            .get_json("/v1/admin/alerts?acknowledged=false&severity=critical")
            .await;
        (alerts["items"].as_array().unwrap().iter())
            .find(|a| a["source"] == "consumer:receipts")
            .cloned()
    })
    .await;
    assert!(
        alert["message"]
            .as_str()
            .unwrap()
            .contains(letter["eventId"].as_str().unwrap())
    );
    drained(&app).await;

    // The exporter had no trouble with it: one line, even after the replay.
    let event_id = letter["eventId"].as_str().unwrap().to_owned();
    let lines_for = |app: &TestApp| {
        app.data_platform_lines()
            .iter()
            .filter(|l| l["eventId"] == event_id)
            .count()
    };
    assert_eq!(lines_for(&app), 1);

    let id = letter["id"].as_i64().unwrap();
    let replay = app
        .post(&format!("/v1/admin/dead-letters/{id}/replay"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 202);
    let again = app
        .post(&format!("/v1/admin/dead-letters/{id}/replay"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    crate::helpers::assert_problem(again, 409, "already_replayed").await;
    let replayed = crate::helpers::outbox_payloads(&app.db, "DeadLetterReplayed").await;
    assert_eq!(replayed.len(), 1, "{replayed:?}");
    assert_eq!(
        (
            &replayed[0]["deadLetterId"],
            &replayed[0]["eventId"],
            &replayed[0]["adminId"]
        ),
        (&json!(id), &json!(event_id), &json!(9_000))
    );
    let unknown = app
        .post("/v1/admin/dead-letters/999999/replay")
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    crate::helpers::assert_problem(unknown, 404, "not_found").await;

    // Still malformed, so the receipts consumer gives up on it once more.
    let all = eventually("the replayed event to fail again", WAIT, || async {
        let all = receipts_letters(
            app.get_json("/v1/admin/dead-letters?includeReplayed=true")
                .await,
        );
        (all.len() == 2).then_some(all)
    })
    .await;
    assert!(all.iter().all(|l| l["eventId"] == event_id));
    assert!(
        all.iter()
            .any(|l| l["id"] == id && l["replayedAt"].is_string())
    );
    drained(&app).await;
    assert_eq!(lines_for(&app), 1, "a replay goes to its consumer only");
    assert_eq!(count(&app.db, "SELECT COUNT(*) FROM receipts").await, 3);

    // Read a page of one at a time, every dead letter comes once, newest
    // first, each page naming the next until the last.
    let whole = app
        .get_json("/v1/admin/dead-letters?includeReplayed=true")
        .await;
    assert!(whole.get("nextCursor").is_none(), "{whole}");
    let whole = whole["items"].as_array().unwrap().clone();
    assert!(whole.len() >= 2, "{whole:?}");
    let mut after: Option<Value> = None;
    for (i, expected) in whole.iter().enumerate() {
        let path = match &after {
            None => "/v1/admin/dead-letters?includeReplayed=true&limit=1".to_owned(),
            Some(cursor) => {
                format!("/v1/admin/dead-letters?includeReplayed=true&limit=1&after={cursor}")
            }
        };
        let page = app.get_json(&path).await;
        assert_eq!(page["items"], json!([expected]), "page {i}: {page}");
        if i + 1 < whole.len() {
            assert_eq!(page["nextCursor"], expected["id"], "page {i}: {page}");
            after = Some(page["nextCursor"].clone());
        } else {
            assert!(page.get("nextCursor").is_none(), "the last page: {page}");
        }
    }
    // Without `includeReplayed`, the replayed letter is skipped, also
    // across pages.
    let open_ids: Vec<Value> = whole
        .iter()
        .filter(|l| l["replayedAt"].is_null())
        .map(|l| l["id"].clone())
        .collect();
    let mut paged_ids = Vec::new();
    let mut path = "/v1/admin/dead-letters?limit=1".to_owned();
    loop {
        let page = app.get_json(&path).await;
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 1, "{page}");
        paged_ids.extend(items.iter().map(|l| l["id"].clone()));
        match page.get("nextCursor") {
            Some(cursor) => path = format!("/v1/admin/dead-letters?limit=1&after={cursor}"),
            None => break,
        }
        assert!(paged_ids.len() <= whole.len(), "paging never ends");
    }
    assert_eq!(paged_ids, open_ids);
    assert!(!paged_ids.contains(&json!(id)), "{paged_ids:?}");

    let ack = app
        .post(&format!("/v1/admin/alerts/{}/ack", alert["id"]))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(ack.status(), 200);
    let open = app.get_json("/v1/admin/alerts?acknowledged=false").await;
    assert!(
        open["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["id"] != alert["id"])
    );
}

#[tokio::test]
async fn one_relay_publishes_an_aggregates_events_in_commit_order() {
    let app = spawn_app_with(|s| s.workers = false).await;
    app.bus.ensure_group("observer").await.unwrap();
    for seq in 0..60 {
        write_events(
            &app,
            vec![NewEvent::new(
                "Counted",
                "counter",
                "c-1",
                &json!({"seq": seq}),
            )],
        )
        .await;
    }
    let relay = Relay::new(
        app.db.clone(),
        app.bus.clone(),
        RelayWaker::default(),
        RelaySettings {
            batch_size: 7,
            poll_interval: Duration::from_millis(20),
            retention: Duration::from_secs(3600),
        },
    );
    while relay.relay_batch().await.unwrap() > 0 {}
    let mut seen = Vec::new();
    while seen.len() < 60 {
        let got = app
            .bus
            .fetch("observer", "o", 100, Duration::from_secs(2))
            .await
            .unwrap();
        assert!(!got.is_empty(), "only {} of 60 events arrived", seen.len());
        seen.extend(
            got.into_iter()
                .map(|d| d.message.unwrap().event.payload["seq"].as_i64().unwrap()),
        );
    }
    assert_eq!(seen, (0..60).collect::<Vec<_>>());
}

/// A consumer group whose consumer starts after the relay has handed a
/// backlog over (a restart with unpublished rows) still gets every event:
/// the relay registers every group before it publishes, so a quicker group
/// acknowledging an entry cannot let the in-process bus drop it early.
#[tokio::test]
async fn a_consumer_group_starting_after_the_relay_still_gets_the_backlog() {
    let app = spawn_app_with(|s| s.workers = false).await;
    write_events(&app, (1..=20).map(payment).collect()).await;
    app.bus.ensure_group("quick").await.unwrap();
    let cancel = CancellationToken::new();
    let relay = Relay::new(
        app.db.clone(),
        app.bus.clone(),
        RelayWaker::default(),
        RelaySettings {
            batch_size: 100,
            poll_interval: Duration::from_millis(20),
            retention: Duration::from_secs(3600),
        },
    )
    .registering(["quick", "late"]);
    let relay = tokio::spawn(relay.run(cancel.clone()));
    // The quick group takes and acknowledges everything before the late
    // one's consumer has even started.
    let mut quick = 0;
    while quick < 20 {
        let got = app
            .bus
            .fetch("quick", "q", 100, Duration::from_secs(2))
            .await
            .unwrap();
        assert!(!got.is_empty(), "only {quick} of 20 events arrived");
        let ids: Vec<String> = got.iter().map(|d| d.id.clone()).collect();
        app.bus.ack("quick", &ids).await.unwrap();
        quick += ids.len();
    }
    app.bus.ensure_group("late").await.unwrap();
    let late = app
        .bus
        .fetch("late", "l", 100, Duration::from_secs(2))
        .await
        .unwrap();
    let ids: HashSet<i64> = late
        .iter()
        .map(|d| {
            d.message.as_ref().unwrap().event.payload["paymentId"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        ids,
        (1..=20).collect(),
        "the late group sees the whole backlog"
    );
    cancel.cancel();
    relay.await.unwrap();
}

/// Two relays on one PostgreSQL share the rows with `FOR UPDATE SKIP
/// LOCKED`: 10,000 events, each in the stream exactly once.
#[tokio::test]
async fn two_relays_on_postgres_publish_every_event_exactly_once() {
    let url = crate::helpers::fresh_database_url().await;
    let db = boxoffice::db::connect(&url).await.unwrap();
    boxoffice::db::migrate(&db).await.unwrap();
    for chunk in 0..10 {
        let events = (0..1_000).map(|i| payment(chunk * 1_000 + i + 1)).collect();
        append_events(&db, events, Utc::now()).await.unwrap();
    }
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_connection_manager().await.unwrap();
    let stream = format!("bo:test:{}:relay", Uuid::new_v4().simple());
    let bus = AnyBus::Redis(RedisBus::new(client, conn.clone(), &stream, 1_000_000));
    let settings = RelaySettings {
        batch_size: 200,
        poll_interval: Duration::from_millis(10),
        retention: Duration::from_secs(3600),
    };
    let cancel = CancellationToken::new();
    let relays: Vec<_> = (0..2)
        .map(|_| {
            let relay = Relay::new(
                db.clone(),
                bus.clone(),
                RelayWaker::default(),
                settings.clone(),
            );
            tokio::spawn(relay.run(cancel.clone()))
        })
        .collect();
    eventually(
        "both relays to drain the outbox",
        Duration::from_secs(60),
        || async {
            (count(
                &db,
                "SELECT COUNT(*) FROM outbox WHERE published_at IS NULL",
            )
            .await
                == 0)
                .then_some(())
        },
    )
    .await;
    cancel.cancel();
    for relay in relays {
        relay.await.unwrap();
    }
    let published = read_all(&mut conn, &stream).await.unwrap();
    assert_eq!(published.len(), 10_000);
    let ids: HashSet<Uuid> = published.iter().map(|m| m.event.event_id).collect();
    assert_eq!(ids.len(), 10_000, "no event was published twice");
}

/// Records every POST it receives: (idempotency-key header, body).
async fn collector() -> (String, Arc<std::sync::Mutex<Vec<(Option<String>, String)>>>) {
    use poem::{
        EndpointExt, Route, Server, handler,
        listener::{Acceptor, Listener, TcpListener},
        post,
        web::Data,
    };
    type Seen = Arc<std::sync::Mutex<Vec<(Option<String>, String)>>>;
    #[handler]
    fn receive(req: &poem::Request, body: String, seen: Data<&Seen>) -> poem::http::StatusCode {
        let key = req.header("idempotency-key").map(str::to_owned);
        seen.lock().unwrap().push((key, body));
        poem::http::StatusCode::NO_CONTENT
    }
    let seen: Seen = Arc::default();
    let acceptor = TcpListener::bind("127.0.0.1:0")
        .into_acceptor()
        .await
        .unwrap();
    let addr = acceptor.local_addr()[0].as_socket_addr().copied().unwrap();
    let app = Route::new().at("/", post(receive)).data(seen.clone());
    tokio::spawn(Server::new_with_acceptor(acceptor).run(app));
    (format!("http://{addr}/"), seen)
}

#[tokio::test]
async fn http_collector_and_alert_webhook_receive_what_they_should() {
    let (collector_url, lines) = collector().await;
    let (webhook_url, alerts) = collector().await;
    let app = spawn_app_with(|s| {
        s.data_platform_sink = collector_url;
        s.alert_webhook_url = Some(webhook_url);
    })
    .await;
    let poison = NewEvent {
        event_type: types::PAYMENT_COMPLETED,
        aggregate_type: "payment",
        aggregate_id: "13".into(),
        payload: json!({"amount": "lots"}),
        traceparent: None,
    };
    write_events(&app, vec![payment(1), poison]).await;

    // Both payments, and the receipt issued for the valid one.
    eventually("three lines at the collector", WAIT, || async {
        let types: Vec<String> = lines
            .lock()
            .unwrap()
            .iter()
            .map(|(_, body)| {
                let line: Value = serde_json::from_str(body.trim_end()).unwrap();
                line["type"].as_str().unwrap_or_default().to_owned()
            })
            .collect();
        let payments = types.iter().filter(|t| *t == "PaymentCompleted").count();
        let receipts = types.iter().filter(|t| *t == "ReceiptIssued").count();
        (payments == 2 && receipts == 1).then_some(())
    })
    .await;
    for (key, body) in lines.lock().unwrap().iter() {
        let line: Value = serde_json::from_str(body.trim_end()).unwrap();
        assert!(body.ends_with('\n'));
        assert_eq!(
            key.as_deref(),
            line["eventId"].as_str(),
            "the event id is the idempotency key"
        );
    }
    let alert = eventually("the receipts alert at the webhook", WAIT, || async {
        alerts
            .lock()
            .unwrap()
            .iter()
            .map(|(_, body)| serde_json::from_str::<Value>(body).unwrap())
            .find(|a| {
                a["text"]
                    .as_str()
                    .unwrap()
                    .starts_with("[critical] consumer:receipts")
            })
    })
    .await;
    assert_eq!(alert["alert"]["severity"], "critical");
}
