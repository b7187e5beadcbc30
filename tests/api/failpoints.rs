//! Failure injection with the `fail` crate (built with `--features
//! failpoints`). Failpoints are global to the process, so `scripts/test`
//! runs this module on its own, one test at a time, and the other runs skip
//! it; `FailScenario` also keeps two of these tests from overlapping.
//!
//! Each test blocks a step until it has seen the failure hold (nothing
//! happened, or it happened and was retried), then lets it through and
//! checks that the effect landed exactly once.

use std::time::Duration;

use chrono::TimeDelta;
use serde_json::{Value, json};

use crate::{
    helpers::{
        TestApp, assert_problem, count, eventually, outbox_drained, spawn_app, spawn_app_with,
    },
    sales::{
        WAIT, assert_invariants, balance, charge, exec, get_as, hold, paid_then_seat_lost, pay,
        sale,
    },
    waitlist::{give_back, sell_out, waitlist},
};

/// Armed failpoints, disarmed when dropped (also when the test fails).
struct Armed {
    names: Vec<String>,
    _scenario: fail::FailScenario<'static>,
}

impl Armed {
    fn new(points: &[(&str, &str)]) -> Self {
        let scenario = fail::FailScenario::setup();
        for (name, action) in points {
            fail::cfg(*name, action).expect("a valid failpoint action");
        }
        Self {
            names: points.iter().map(|(name, _)| (*name).to_owned()).collect(),
            _scenario: scenario,
        }
    }

    fn disarm(&self, name: &str) {
        fail::remove(name);
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        for name in &self.names {
            fail::remove(name);
        }
    }
}

/// A user with an admitted queue token, a charged wallet and a held seat:
/// (queue token, reservation).
async fn held_seat(app: &TestApp, user: i64) -> (String, Value) {
    let sale = sale(app, 2).await;
    let token = app.admitted_token(user, &sale.concert).await;
    assert_eq!(charge(app, user, json!(200_000)).await.status(), 201);
    let reservation: Value = hold(app, user, &token, &sale, sale.seats[0])
        .await
        .json()
        .await
        .unwrap();
    (token, reservation)
}

/// A user with an admitted queue token, a charged wallet and a paid seat.
async fn paid_seat(app: &TestApp, user: i64) -> Value {
    let (token, reservation) = held_seat(app, user).await;
    let resp = pay(app, user, &token, &reservation["id"]).await;
    assert_eq!(resp.status(), 201);
    resp.json().await.unwrap()
}

async fn receipts_for(app: &TestApp, payment: &Value) -> i64 {
    count(
        &app.db,
        &format!(
            "SELECT COUNT(*) FROM receipts WHERE payment_id = {}",
            payment["id"]
        ),
    )
    .await
}

fn data_platform_lines_for(app: &TestApp, payment: &Value) -> usize {
    app.data_platform_lines()
        .iter()
        .filter(|l| l["type"] == "PaymentCompleted" && l["payload"]["paymentId"] == payment["id"])
        .count()
}

/// The value of one Prometheus counter series (0 when absent).
async fn counter(app: &TestApp, series: &str) -> f64 {
    app.metrics_text()
        .await
        .lines()
        .filter_map(|line| line.strip_prefix(series))
        .filter_map(|rest| rest.trim().parse::<f64>().ok())
        .sum()
}

/// Holds for `window` that `check` keeps returning true.
async fn stays(what: &str, window: Duration, mut check: impl AsyncFnMut() -> bool) {
    let until = tokio::time::Instant::now() + window;
    while tokio::time::Instant::now() < until {
        assert!(check().await, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_relay_failing_before_or_after_publishing_loses_nothing_and_applies_nothing_twice() {
    let app = spawn_app().await;
    let armed = Armed::new(&[("relay::before_publish", "return")]);
    let payment = paid_seat(&app, 1).await;
    stays(
        "nothing reaches the bus while publishing fails",
        Duration::from_millis(800),
        async || receipts_for(&app, &payment).await == 0,
    )
    .await;
    assert!(
        count(
            &app.db,
            "SELECT COUNT(*) FROM outbox WHERE published_at IS NULL"
        )
        .await
            > 0
    );

    // Now every batch reaches the bus but is never marked: it goes out again
    // and again, and the consumers' inboxes keep each effect single.
    fail::cfg("relay::after_publish", "return").unwrap();
    armed.disarm("relay::before_publish");
    eventually("the receipt despite the failing relay", WAIT, || async {
        (receipts_for(&app, &payment).await == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    armed.disarm("relay::after_publish");
    outbox_drained(&app.db, WAIT).await;
    let path = format!("/v1/payments/{}", payment["id"]);
    eventually("the confirmation", WAIT, || async {
        (get_as(&app, 1, &path).await["status"] == "confirmed").then_some(())
    })
    .await;
    assert_eq!(receipts_for(&app, &payment).await, 1);
    eventually("the data-platform line", WAIT, || async {
        (data_platform_lines_for(&app, &payment) >= 1).then_some(())
    })
    .await;
    assert_eq!(data_platform_lines_for(&app, &payment), 1);
    assert!(
        counter(
            &app,
            r#"consumer_events_total{consumer="receipts",outcome="duplicate"}"#
        )
        .await
            >= 1.0,
        "the republished batches reached the consumers and were recognised"
    );
    assert_invariants(&app).await;
}

#[tokio::test]
async fn a_consumer_failing_before_its_commit_applies_the_event_once_it_recovers() {
    // Enough deliveries that the blocked event is not dead-lettered meanwhile.
    let app = spawn_app_with(|s| s.consumer_max_deliveries = 50).await;
    let armed = Armed::new(&[("consumer::before_commit::receipts", "return")]);
    let payment = paid_seat(&app, 2).await;
    let path = format!("/v1/payments/{}", payment["id"]);
    // The other consumers go on: the payment is confirmed, no receipt yet.
    eventually("the confirmation", WAIT, || async {
        (get_as(&app, 2, &path).await["status"] == "confirmed").then_some(())
    })
    .await;
    stays(
        "no receipt while its consumer cannot commit",
        Duration::from_millis(800),
        async || receipts_for(&app, &payment).await == 0,
    )
    .await;
    armed.disarm("consumer::before_commit::receipts");
    eventually("the receipt after recovery", WAIT, || async {
        (receipts_for(&app, &payment).await == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receipts_for(&app, &payment).await, 1);
    assert_eq!(count(&app.db, "SELECT COUNT(*) FROM dead_letters").await, 0);
    assert_invariants(&app).await;
}

#[tokio::test]
async fn a_waitlist_offer_whose_commit_failed_is_made_once_when_it_recovers() {
    let app = spawn_app_with(|s| s.consumer_max_deliveries = 50).await;
    let sale = sale(&app, 2).await;
    let (alice, bob) = (71, 72);
    let first = sell_out(&app, alice, &sale).await;
    let joined = waitlist(&app, reqwest::Method::POST, bob, &sale.schedule).await;
    assert_eq!(joined.status(), 201);

    let armed = Armed::new(&[("consumer::before_commit::waitlist", "return")]);
    give_back(&app, alice, &first).await;
    let offers = || async {
        count(
            &app.db,
            &format!("SELECT COUNT(*) FROM reservations WHERE user_id = {bob}"),
        )
        .await
    };
    stays(
        "no offer while the waitlist consumer cannot commit",
        Duration::from_millis(800),
        async || offers().await == 0,
    )
    .await;
    armed.disarm("consumer::before_commit::waitlist");
    eventually("the offer after recovery", WAIT, || async {
        (offers().await == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(offers().await, 1);
    assert_eq!(
        count(
            &app.db,
            "SELECT COUNT(*) FROM outbox WHERE event_type = 'WaitlistOffered'"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &app.db,
            &format!("SELECT COUNT(*) FROM waitlist WHERE user_id = {bob} AND status = 'offered'")
        )
        .await,
        1
    );
    assert_eq!(count(&app.db, "SELECT COUNT(*) FROM dead_letters").await, 0);
    assert_invariants(&app).await;
}

#[tokio::test]
async fn a_consumer_failing_after_its_commit_is_redelivered_and_the_inbox_drops_it() {
    let app = spawn_app().await;
    let before = counter(
        &app,
        r#"consumer_events_total{consumer="receipts",outcome="duplicate"}"#,
    )
    .await;
    let _armed = Armed::new(&[("consumer::after_commit::receipts", "1*return")]);
    let payment = paid_seat(&app, 3).await;
    eventually("the redelivery to be recognised", WAIT, || async {
        let now = counter(
            &app,
            r#"consumer_events_total{consumer="receipts",outcome="duplicate"}"#,
        )
        .await;
        (now > before).then_some(())
    })
    .await;
    assert_eq!(receipts_for(&app, &payment).await, 1);
    assert_eq!(
        count(
            &app.db,
            "SELECT COUNT(*) FROM inbox WHERE consumer = 'receipts'"
        )
        .await,
        1,
        "one PaymentCompleted, recorded once"
    );
    assert_eq!(count(&app.db, "SELECT COUNT(*) FROM dead_letters").await, 0);
}

#[tokio::test]
async fn a_coupon_write_failing_after_the_ledger_step_is_revoked_and_a_retry_wins() {
    let app = spawn_app().await;
    let (coupon, _) = app.create_coupon(1, TimeDelta::days(1)).await;
    let _armed = Armed::new(&[("coupon::record_issue", "1*return")]);
    let issue = || {
        app.post(&format!("/v1/coupons/{coupon}/issue"))
            .bearer_auth(app.user_token(7))
            .header("idempotency-key", "issue-7")
            .send()
    };
    let failed = issue().await.unwrap();
    assert!(failed.headers().contains_key("retry-after"));
    assert_problem(failed, 503, "unavailable").await;
    assert_eq!(count(&app.db, "SELECT COUNT(*) FROM user_coupons").await, 0);
    assert_eq!(app.coupon_stats(coupon).await["ledgerIssued"], 0, "revoked");

    let won = issue().await.unwrap();
    assert_eq!(won.status(), 201);
    let body: Value = won.json().await.unwrap();
    assert_eq!(
        body["issueNumber"], 1,
        "the revoked number was handed out again"
    );
    let again: Value = issue().await.unwrap().json().await.unwrap();
    assert_eq!(again, body, "the retry with the same key replays the win");
    assert_eq!(count(&app.db, "SELECT COUNT(*) FROM user_coupons").await, 1);
}

#[tokio::test]
async fn a_payment_failing_before_its_commit_changes_nothing_and_a_retry_pays() {
    let app = spawn_app().await;
    let sale = sale(&app, 2).await;
    let token = app.admitted_token(4, &sale.concert).await;
    assert_eq!(charge(&app, 4, json!(200_000)).await.status(), 201);
    let reservation: Value = hold(&app, 4, &token, &sale, sale.seats[0])
        .await
        .json()
        .await
        .unwrap();
    let _armed = Armed::new(&[("payment::before_commit", "1*return")]);
    let pay_with_key = || {
        app.post("/v1/payments")
            .bearer_auth(app.user_token(4))
            .header("x-queue-token", &token)
            .header("idempotency-key", "pay-4")
            .json(&json!({"reservationId": reservation["id"]}))
            .send()
    };
    let failed = pay_with_key().await.unwrap();
    assert!(failed.headers().contains_key("retry-after"));
    assert_problem(failed, 503, "unavailable").await;
    assert_eq!(balance(&app, 4).await, 200_000, "no points taken");
    assert_eq!(count(&app.db, "SELECT COUNT(*) FROM payments").await, 0);
    assert_eq!(
        count(
            &app.db,
            "SELECT COUNT(*) FROM outbox WHERE event_type = 'PaymentCompleted'"
        )
        .await,
        0
    );
    let held = get_as(&app, 4, &format!("/v1/reservations/{}", reservation["id"])).await;
    assert_eq!(held["status"], "held");

    // The same key is free again: the failed attempt left no answer behind.
    let paid = pay_with_key().await.unwrap();
    assert_eq!(paid.status(), 201);
    let body: Value = paid.json().await.unwrap();
    assert_eq!(body["status"], "paid");
    assert_eq!(
        balance(&app, 4).await,
        200_000 - body["amount"].as_i64().unwrap()
    );
    assert_eq!(count(&app.db, "SELECT COUNT(*) FROM payments").await, 1);
    assert_invariants(&app).await;
}

#[tokio::test]
async fn a_failing_compensation_step_is_retried_until_the_refund_lands() {
    let _armed = Armed::new(&[("compensation::refund", "2*return")]);
    let (app, payment, stop) = paid_then_seat_lost("SELECT 1").await;
    let path = format!("/v1/payments/{}", payment["id"]);
    eventually("the refund", WAIT, || async {
        (get_as(&app, 5, &path).await["status"] == "refunded").then_some(())
    })
    .await;
    stop.cancel();
    let compensations = app.get_json("/v1/admin/compensations").await;
    assert_eq!(compensations["items"][0]["status"], "succeeded");
    assert_eq!(
        compensations["items"][0]["attempts"], 3,
        "two injected failures, then the refund: {compensations}"
    );
    assert_eq!(balance(&app, 5).await, 150_000, "points restored once");
    assert_eq!(
        count(
            &app.db,
            "SELECT COUNT(*) FROM wallet_transactions WHERE kind = 'refund'"
        )
        .await,
        1
    );
    assert_invariants(&app).await;
}

/// One race on a seat whose hold lapses while its owner pays and someone
/// else grabs it. Returns (pay status, hold status).
async fn race_on_a_lapsing_seat(
    app: &TestApp,
    owner: i64,
    thief: i64,
    points: &[(&str, &str)],
    hold_after: Duration,
) -> (u16, u16) {
    let sale = sale(app, 2).await;
    let seat = sale.seats[0];
    let owner_token = app.admitted_token(owner, &sale.concert).await;
    let thief_token = app.admitted_token(thief, &sale.concert).await;
    assert_eq!(charge(app, owner, json!(200_000)).await.status(), 201);
    let reservation: Value = hold(app, owner, &owner_token, &sale, seat)
        .await
        .json()
        .await
        .unwrap();
    // The hold lapses 150 ms from now, in both rows.
    let lapse = (chrono::Utc::now() + TimeDelta::milliseconds(150)).to_rfc3339();
    exec(
        app,
        &format!(
            "UPDATE reservations SET expires_at = '{lapse}' WHERE id = {}",
            reservation["id"]
        ),
    )
    .await;
    exec(
        app,
        &format!("UPDATE seats SET held_until = '{lapse}' WHERE id = {seat}"),
    )
    .await;
    let _armed = Armed::new(points);
    let paying = pay(app, owner, &owner_token, &reservation["id"]);
    let grabbing = async {
        tokio::time::sleep(hold_after).await;
        hold(app, thief, &thief_token, &sale, seat).await
    };
    let (paid, grabbed) = tokio::join!(paying, grabbing);
    let statuses = (paid.status().as_u16(), grabbed.status().as_u16());
    let bodies = (paid.text().await.unwrap(), grabbed.text().await.unwrap());
    assert!(
        matches!(statuses, (201, 409) | (409, 201)),
        "exactly one of the payment and the new hold gets the seat, never a 5xx: {statuses:?} {bodies:?}"
    );
    statuses
}

/// A payment and a new hold on the same just-lapsed seat used to lock the
/// seat and the old reservation in opposite orders and deadlock on
/// PostgreSQL (500 for the loser). Failpoints make each interleaving
/// certain: every transaction now takes the seat row first. A failpoint's
/// sleep blocks its thread, so the server gets worker threads of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_payment_racing_a_new_hold_on_a_lapsing_seat_never_deadlocks() {
    let app = spawn_app().await;
    let retried_before = counter(&app, "db_conflict_retries_total").await;
    let mut outcomes = Vec::new();
    for round in 0..6_i64 {
        let (owner, thief) = (100 + round * 2, 101 + round * 2);
        // The payment read the hold before it lapsed, then stalls; the new
        // hold takes the lapsed seat and keeps its row locked meanwhile.
        let hold_first = race_on_a_lapsing_seat(
            &app,
            owner,
            thief,
            // Wide margins: the new hold (sent at 170 ms) must reach the
            // seat before the payment wakes, even on a busy machine.
            &[
                ("reservation::claim::before_seat", "return(600)"),
                ("reservation::hold::after_seat", "return(700)"),
            ],
            Duration::from_millis(170),
        )
        .await;
        outcomes.push(hold_first);
        // The payment claims the seat and the hold before the lapse and
        // stalls holding both; the new hold comes after the lapse.
        let (owner, thief) = (200 + round * 2, 201 + round * 2);
        let pay_first = race_on_a_lapsing_seat(
            &app,
            owner,
            thief,
            &[("payment::after_claim", "return(700)")],
            Duration::from_millis(170),
        )
        .await;
        outcomes.push(pay_first);
    }
    // Both interleavings happened, and each ended with one winner.
    assert!(outcomes.contains(&(409, 201)), "{outcomes:?}");
    assert!(outcomes.contains(&(201, 409)), "{outcomes:?}");
    if crate::helpers::backend() == crate::helpers::Backend::Postgres {
        // One lock order: PostgreSQL never had to break a deadlock. (SQLite
        // has one writer; a stale read snapshot is retried there.)
        assert_eq!(
            counter(&app, "db_conflict_retries_total").await,
            retried_before,
            "no transaction was rolled back for a deadlock"
        );
    }
    outbox_drained(&app.db, WAIT).await;
    assert_eq!(
        count(
            &app.db,
            "SELECT COUNT(*) FROM (SELECT seat_id FROM reservations WHERE status IN ('held', 'confirmed') GROUP BY seat_id HAVING COUNT(*) > 1) AS doubled"
        )
        .await,
        0,
        "no seat held or sold twice"
    );
    assert_invariants(&app).await;
}

/// One user's four keyed requests — a charge, a payment, a coupon issue and
/// a redemption — each with its own key, and how to count its effect.
struct KeyedRequests<'a> {
    app: &'a TestApp,
    user: i64,
    token: String,
    reservation: Value,
    coupon: i64,
    user_coupon: Value,
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Charge,
    Pay,
    Issue,
    Redeem,
}

const OPS: [Op; 4] = [Op::Charge, Op::Pay, Op::Issue, Op::Redeem];

impl<'a> KeyedRequests<'a> {
    async fn new(app: &'a TestApp, user: i64) -> Self {
        let (token, reservation) = held_seat(app, user).await;
        let (coupon, _) = app.create_coupon(5, TimeDelta::days(1)).await;
        // A coupon won without a key, to redeem with one.
        let (owned, _) = app.create_coupon(5, TimeDelta::days(1)).await;
        let won: Value = app.issue_coupon(owned, user).await.json().await.unwrap();
        Self {
            app,
            user,
            token,
            reservation: reservation["id"].clone(),
            coupon,
            user_coupon: won["userCouponId"].clone(),
        }
    }

    async fn send(&self, op: Op) -> (u16, Value) {
        let app = self.app;
        let req = match op {
            Op::Charge => app
                .post("/v1/wallet/charges")
                .json(&json!({"amount": 1_000})),
            Op::Pay => app
                .post("/v1/payments")
                .header("x-queue-token", &self.token)
                .json(&json!({"reservationId": self.reservation})),
            Op::Issue => app.post(&format!("/v1/coupons/{}/issue", self.coupon)),
            Op::Redeem => app.post(&format!(
                "/v1/user-coupons/{}/redemptions",
                self.user_coupon
            )),
        };
        let resp = req
            .bearer_auth(app.user_token(self.user))
            .header("idempotency-key", format!("{op:?}-key"))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        if status == 503 {
            assert!(resp.headers().contains_key("retry-after"), "{op:?}");
        }
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// How many times the request's effect landed.
    async fn effects(&self, op: Op) -> i64 {
        let sql = match op {
            Op::Charge => format!(
                "SELECT COUNT(*) FROM wallet_transactions WHERE user_id = {} AND kind = 'charge' AND amount = 1000",
                self.user
            ),
            Op::Pay => format!(
                "SELECT COUNT(*) FROM payments WHERE user_id = {}",
                self.user
            ),
            Op::Issue => format!(
                "SELECT COUNT(*) FROM user_coupons WHERE coupon_id = {}",
                self.coupon
            ),
            Op::Redeem => format!(
                "SELECT COUNT(*) FROM coupon_jobs WHERE user_coupon_id = {}",
                self.user_coupon
            ),
        };
        count(&self.app.db, &sql).await
    }

    /// The answer must name the one effect in the database.
    async fn assert_names_the_effect(&self, op: Op, body: &Value) {
        let db = &self.app.db;
        let (sql, field) = match op {
            Op::Charge => (
                format!("SELECT balance FROM wallets WHERE user_id = {}", self.user),
                "balance",
            ),
            Op::Pay => (
                format!("SELECT id FROM payments WHERE user_id = {}", self.user),
                "id",
            ),
            Op::Issue => (
                format!(
                    "SELECT id FROM user_coupons WHERE coupon_id = {}",
                    self.coupon
                ),
                "userCouponId",
            ),
            Op::Redeem => {
                // The one job there is, found by the answer's id.
                let job = get_as(
                    self.app,
                    self.user,
                    &format!("/v1/coupon-jobs/{}", body["jobId"].as_str().unwrap()),
                )
                .await;
                assert_eq!(job["userCouponId"], self.user_coupon, "{op:?}: {body}");
                return;
            }
        };
        let values: Vec<i64> = crate::helpers::column(db, &sql).await;
        assert_eq!(body[field], json!(values[0]), "{op:?}: {body}");
    }
}

fn created(op: Op) -> u16 {
    match op {
        Op::Redeem => 202,
        _ => 201,
    }
}

/// The steps before a keyed request's commit: the key's claim (for a coupon
/// issue, the number taken from the ledger) and, for the coupon issue, its
/// batched write, for the others the key's answer.
fn before_commit(op: Op) -> &'static [&'static str] {
    match op {
        Op::Issue => &["idempotency::claimed", "coupon::record_issue"],
        _ => &["idempotency::claimed", "idempotency::answered"],
    }
}

#[tokio::test]
async fn a_keyed_request_failing_before_its_commit_leaves_no_key_and_runs_once_when_retried() {
    let app = spawn_app().await;
    let keyed = KeyedRequests::new(&app, 11).await;
    for op in OPS {
        for step in before_commit(op) {
            let armed = Armed::new(&[(step, "1*return")]);
            let (status, body) = keyed.send(op).await;
            assert_eq!(status, 503, "{op:?} at {step}: {body}");
            armed.disarm(step);
            drop(armed);
            assert_eq!(
                keyed.effects(op).await,
                0,
                "{op:?} at {step}: nothing landed"
            );
        }
        let (status, first) = keyed.send(op).await;
        assert_eq!(status, created(op), "{op:?}: {first}");
        let (status, again) = keyed.send(op).await;
        assert_eq!((status, &again), (created(op), &first), "{op:?} replays");
        assert_eq!(keyed.effects(op).await, 1, "{op:?} landed once");
        keyed.assert_names_the_effect(op, &first).await;
    }
    assert_eq!(
        count(&app.db, "SELECT COUNT(*) FROM idempotency_keys").await,
        4,
        "one key per request, none left behind by a failed try"
    );
    outbox_drained(&app.db, WAIT).await;
    assert_invariants(&app).await;
}

#[tokio::test]
async fn a_keyed_request_whose_reply_is_lost_after_its_commit_gets_its_answer_back() {
    let app = spawn_app().await;
    let keyed = KeyedRequests::new(&app, 12).await;
    for op in OPS {
        let armed = Armed::new(&[("idempotency::committed", "1*return")]);
        let (status, body) = keyed.send(op).await;
        assert_eq!(status, 503, "{op:?}: the reply was lost: {body}");
        armed.disarm("idempotency::committed");
        drop(armed);
        assert_eq!(keyed.effects(op).await, 1, "{op:?}: the work was committed");
        // The retry hears the committed answer (for the payment, although
        // its queue token may be finished by the payment by now).
        let (status, first) = keyed.send(op).await;
        assert_eq!(status, created(op), "{op:?}: {first}");
        keyed.assert_names_the_effect(op, &first).await;
        let (status, again) = keyed.send(op).await;
        assert_eq!((status, &again), (created(op), &first), "{op:?}");
        assert_eq!(keyed.effects(op).await, 1, "{op:?}: never twice");
    }
    outbox_drained(&app.db, WAIT).await;
    assert_invariants(&app).await;
}
