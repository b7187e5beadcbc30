//! Retention: in a long-running deployment nothing grows without bound.
//! With every retention set to a second, the sweeper removes what is past
//! it, and keeps what is still needed (open dead letters, unacknowledged
//! alerts, pending jobs, and the inbox rows of any event that may still be
//! delivered again).

use std::time::Duration;

use boxoffice::outbox::ports::EventBus;
use chrono::TimeDelta;
use serde_json::json;

use crate::{
    helpers::{TestApp, count, eventually, outbox_drained, spawn_app_with},
    sales::{WAIT, exec},
};

async fn rows(app: &TestApp, table: &str, condition: &str) -> i64 {
    count(
        &app.db,
        &format!("SELECT COUNT(*) FROM {table} WHERE {condition}"),
    )
    .await
}

#[tokio::test]
async fn rows_past_their_retention_go_and_what_is_still_needed_stays() {
    let app = spawn_app_with(|s| {
        s.inbox_retention_seconds = 1;
        s.idempotency_retention_seconds = 1;
        s.notification_retention_seconds = 1;
        s.coupon_job_retention_seconds = 1;
        s.dead_letter_retention_seconds = 1;
        s.alert_retention_seconds = 1;
        s.retention_sweep_seconds = 1;
        // Redeliveries end within 50 + 100 + 200 ms, under the inbox's second.
        s.consumer_claim_idle_ms = 50;
        s.consumer_max_deliveries = 3;
    })
    .await;

    // A charge with a key (an idempotency row, and inbox rows of every
    // consumer of WalletCharged), and a redeemed coupon (a finished job, a
    // notification).
    let charged = app
        .post("/v1/wallet/charges")
        .bearer_auth(app.user_token(7))
        .header("Idempotency-Key", "retention-1")
        .json(&json!({"amount": 1_000}))
        .send()
        .await
        .unwrap();
    assert_eq!(charged.status(), 201);
    let (coupon, _) = app.create_coupon(5, TimeDelta::hours(1)).await;
    let held = app.won_coupon(coupon, 7).await;
    let job = app.redeem(7, held).await;
    assert_eq!(job["status"], "succeeded");
    // Resolved and open dead letters and alerts, from long ago.
    for (event, replayed) in [
        (
            "00000000-0000-0000-0000-000000000001",
            "'2020-01-02T00:00:00+00:00'",
        ),
        ("00000000-0000-0000-0000-000000000002", "NULL"),
    ] {
        exec(
            &app,
            &format!(
                "INSERT INTO dead_letters (consumer, event_id, event_type, envelope, deliveries, last_error, created_at, replayed_at) \
                 VALUES ('receipts', '{event}', 'PaymentCompleted', '{{}}', 5, 'boom', '2020-01-01T00:00:00+00:00', {replayed})"
            ),
        )
        .await;
    }
    for (acknowledged, at) in [("true", "'2020-01-02T00:00:00+00:00'"), ("false", "NULL")] {
        exec(
            &app,
            &format!(
                "INSERT INTO admin_alerts (severity, source, message, created_at, acknowledged, acknowledged_at) \
                 VALUES ('warning', 'test', 'old', '2020-01-01T00:00:00+00:00', {acknowledged}, {at})"
            ),
        )
        .await;
    }
    outbox_drained(&app.db, WAIT).await;
    eventually(
        "every consumer to have handled the events",
        WAIT,
        || async { (rows(&app, "notifications", "user_id = 7").await == 1).then_some(()) },
    )
    .await;
    // Every group finished every event (none lags or holds one), so the
    // inbox is complete before it is counted.
    eventually("every group idle", WAIT, || async {
        let groups = app.bus.groups().await.ok()?;
        groups
            .iter()
            .all(|g| g.lag == 0 && g.pending == 0)
            .then_some(())
    })
    .await;
    let inbox = rows(&app, "inbox", "1 = 1").await;
    assert!(inbox > 0);

    eventually("the expired rows to go", WAIT, || async {
        let left = (
            rows(&app, "idempotency_keys", "1 = 1").await,
            rows(&app, "notifications", "1 = 1").await,
            rows(&app, "coupon_jobs", "1 = 1").await,
            rows(&app, "dead_letters", "replayed_at IS NOT NULL").await,
            rows(&app, "admin_alerts", "acknowledged_at IS NOT NULL").await,
        );
        (left == (0, 0, 0, 0, 0)).then_some(())
    })
    .await;
    // What is still needed stays.
    assert_eq!(rows(&app, "dead_letters", "replayed_at IS NULL").await, 1);
    assert_eq!(
        rows(&app, "admin_alerts", "acknowledged_at IS NULL").await,
        1
    );
    // The events are still in the outbox (published rows go after the
    // outbox's own retention), so they may still come back: their inbox
    // rows must stay whatever the inbox retention says.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(rows(&app, "inbox", "1 = 1").await, inbox);

    // Once the outbox has let the events go, their inbox rows go too.
    exec(&app, "DELETE FROM outbox WHERE published_at IS NOT NULL").await;
    eventually("the inbox rows to go", WAIT, || async {
        (rows(&app, "inbox", "1 = 1").await == 0).then_some(())
    })
    .await;

    // The sweeps are counted.
    let metrics = app.metrics_text().await;
    for kind in [
        "inbox",
        "idempotency_keys",
        "notifications",
        "coupon_jobs",
        "dead_letters",
        "admin_alerts",
    ] {
        assert!(
            metrics.contains(&format!("retention_rows_removed_total{{rows=\"{kind}\"}}")),
            "{kind} in the metrics"
        );
    }
}

#[tokio::test]
async fn an_inbox_retention_shorter_than_a_redelivery_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = crate::helpers::test_settings(dir.path());
    settings.inbox_retention_seconds = 60;
    settings.consumer_claim_idle_ms = 30_000;
    settings.consumer_max_deliveries = 5;
    let refused = boxoffice::app::Application::build(&settings).await;
    let message = format!("{:#}", refused.err().expect("refused"));
    assert!(message.contains("inbox-retention-seconds"), "{message}");
}
