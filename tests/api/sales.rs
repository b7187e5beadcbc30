//! Seat holds, the wallet, payments and the saga, over HTTP against the
//! real stores. Every test ends by checking the money and seat invariants.

use std::time::Duration;

use futures::future::join_all;
use serde_json::{Value, json};

use crate::helpers::{
    TestApp, assert_problem, column, concert_body, count, eventually, outbox_drained,
    outbox_payloads, page_ids, spawn_app, spawn_app_with,
};

pub(crate) const WAIT: Duration = Duration::from_secs(20);

pub(crate) struct Sale {
    pub(crate) concert: Value,
    pub(crate) schedule: Value,
    pub(crate) seats: Vec<i64>,
}

pub(crate) async fn sale(app: &TestApp, seats: i64) -> Sale {
    let created = app.create_concert(&concert_body(1, seats - 1)).await;
    let schedule = created["schedules"][0]["id"].clone();
    let ids = seat_ids(app, &schedule).await;
    Sale {
        concert: created["id"].clone(),
        schedule,
        seats: ids,
    }
}

pub(crate) async fn seat_ids(app: &TestApp, schedule: &Value) -> Vec<i64> {
    column(
        &app.db,
        &format!("SELECT id FROM seats WHERE schedule_id = {schedule} ORDER BY number"),
    )
    .await
}

pub(crate) async fn exec(app: &TestApp, sql: &str) {
    use sea_orm::ConnectionTrait;
    app.db.execute_unprepared(sql).await.unwrap();
}

pub(crate) async fn charge(app: &TestApp, user: i64, amount: Value) -> reqwest::Response {
    app.post("/v1/wallet/charges")
        .bearer_auth(app.user_token(user))
        .json(&json!({"amount": amount}))
        .send()
        .await
        .unwrap()
}

pub(crate) async fn hold(
    app: &TestApp,
    user: i64,
    token: &str,
    sale: &Sale,
    seat: i64,
) -> reqwest::Response {
    app.post("/v1/reservations")
        .bearer_auth(app.user_token(user))
        .header("x-queue-token", token)
        .json(&json!({"scheduleId": sale.schedule, "seatId": seat}))
        .send()
        .await
        .unwrap()
}

pub(crate) async fn pay(
    app: &TestApp,
    user: i64,
    token: &str,
    reservation: &Value,
) -> reqwest::Response {
    app.post("/v1/payments")
        .bearer_auth(app.user_token(user))
        .header("x-queue-token", token)
        .json(&json!({"reservationId": reservation}))
        .send()
        .await
        .unwrap()
}

pub(crate) async fn balance(app: &TestApp, user: i64) -> i64 {
    let body: Value = app
        .get("/v1/wallet")
        .bearer_auth(app.user_token(user))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["balance"].as_i64().unwrap()
}

pub(crate) async fn get_as(app: &TestApp, user: i64, path: &str) -> Value {
    let resp = app
        .get(path)
        .bearer_auth(app.user_token(user))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "GET {path}");
    resp.json().await.unwrap()
}

/// Σcharged − Σpaid + Σrefunded = Σbalances, every balance equals its last
/// ledger row, and no seat is sold twice or sold while held by another.
pub(crate) async fn assert_invariants(app: &TestApp) {
    assert_ledger_invariants(&app.db).await;
}

/// The same invariants, read straight from a database.
pub(crate) async fn assert_ledger_invariants(db: &sea_orm::DatabaseConnection) {
    let ledger = count(
        db,
        "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM wallet_transactions",
    )
    .await;
    let balances = count(
        db,
        "SELECT CAST(COALESCE(SUM(balance), 0) AS BIGINT) FROM wallets",
    )
    .await;
    assert_eq!(
        ledger, balances,
        "charged − paid + refunded must equal the balances"
    );
    let mismatched = count(
        db,
        "SELECT COUNT(*) FROM wallets w WHERE w.balance <> COALESCE((SELECT t.balance_after FROM wallet_transactions t \
         WHERE t.user_id = w.user_id ORDER BY t.id DESC LIMIT 1), 0)",
    )
    .await;
    assert_eq!(mismatched, 0, "every balance equals its last ledger row");
    let twice = count(
        db,
        "SELECT COUNT(*) FROM (SELECT seat_id FROM reservations WHERE status = 'confirmed' GROUP BY seat_id HAVING COUNT(*) > 1) d",
    )
    .await;
    assert_eq!(twice, 0, "no seat confirmed twice");
    let sold_wrongly = count(
        db,
        "SELECT COUNT(*) FROM seats s WHERE s.status = 'sold' AND NOT EXISTS (SELECT 1 FROM reservations r \
         WHERE r.seat_id = s.id AND r.status = 'confirmed' AND r.id = s.reservation_id)",
    )
    .await;
    assert_eq!(
        sold_wrongly, 0,
        "every sold seat belongs to its confirmed reservation"
    );
}

/// Admitted queue tokens for many users at once.
pub(crate) async fn tokens(
    app: &TestApp,
    users: impl IntoIterator<Item = i64>,
    concert: &Value,
) -> Vec<(i64, String)> {
    join_all(
        users
            .into_iter()
            .map(|u| async move { (u, app.admitted_token(u, concert).await) }),
    )
    .await
}

#[tokio::test]
async fn exactly_one_of_a_hundred_concurrent_holds_wins_the_seat() {
    let app = spawn_app().await;
    let sale = sale(&app, 2).await;
    let holders = tokens(&app, 1..=100, &sale.concert).await;
    let seat = sale.seats[0];
    let results = join_all(holders.iter().map(|(u, t)| hold(&app, *u, t, &sale, seat))).await;
    let mut won = 0;
    for resp in results {
        match resp.status().as_u16() {
            201 => won += 1,
            _ => {
                assert_problem(resp, 409, "seat_unavailable").await;
            }
        }
    }
    assert_eq!(won, 1);
    assert_eq!(
        count(
            &app.db,
            &format!("SELECT COUNT(*) FROM reservations WHERE seat_id = {seat}")
        )
        .await,
        1
    );
    assert_invariants(&app).await;
}

#[tokio::test]
async fn holds_are_limited_per_user_visible_to_their_owner_and_can_be_released() {
    let app = spawn_app().await;
    let sale = sale(&app, 6).await;
    let token = app.admitted_token(1, &sale.concert).await;
    let mut held = Vec::new();
    for seat in &sale.seats[..4] {
        let resp = hold(&app, 1, &token, &sale, *seat).await;
        assert_eq!(resp.status(), 201);
        held.push(resp.json::<Value>().await.unwrap());
    }
    assert_eq!(held[0]["status"], "held");
    assert_eq!(held[0]["price"], 150000);
    assert!(held[0]["expiresAt"].is_string());
    assert_problem(
        hold(&app, 1, &token, &sale, sale.seats[4]).await,
        409,
        "hold_limit",
    )
    .await;
    assert_problem(
        hold(&app, 1, &token, &sale, 999_999).await,
        404,
        "not_found",
    )
    .await;

    let id = held[0]["id"].clone();
    let other = app
        .get(&format!("/v1/reservations/{id}"))
        .bearer_auth(app.user_token(2))
        .send()
        .await
        .unwrap();
    assert_problem(other, 404, "not_found").await;
    assert_eq!(
        get_as(&app, 1, &format!("/v1/reservations/{id}")).await["status"],
        "held"
    );

    let release = |user: i64| {
        app.client
            .delete(app.url(&format!("/v1/reservations/{id}")))
            .bearer_auth(app.user_token(user))
            .send()
    };
    assert_problem(release(2).await.unwrap(), 404, "not_found").await;
    assert_eq!(release(1).await.unwrap().status(), 204);
    assert_problem(release(1).await.unwrap(), 409, "reservation_not_held").await;
    assert_eq!(
        get_as(&app, 1, &format!("/v1/reservations/{id}")).await["status"],
        "released"
    );
    // Released: the seat is free and the limit has room again.
    assert_eq!(
        hold(&app, 1, &token, &sale, sale.seats[0]).await.status(),
        201
    );
    assert_invariants(&app).await;
}

#[tokio::test]
async fn concurrent_charges_add_up_exactly_and_bad_amounts_change_nothing() {
    let app = spawn_app().await;
    let results = join_all((0..10).map(|_| charge(&app, 7, json!(1_000)))).await;
    assert!(results.iter().all(|r| r.status() == 201));
    assert_eq!(balance(&app, 7).await, 10_000);
    let page = get_as(&app, 7, "/v1/wallet/transactions?limit=4").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 4);
    assert_eq!(page["items"][0]["balanceAfter"], 10_000);
    assert_eq!(page["items"][0]["kind"], "charge");
    assert_eq!(page["nextCursor"], page["items"][3]["id"], "{page}");
    let rest = get_as(
        &app,
        7,
        &format!(
            "/v1/wallet/transactions?limit=100&after={}",
            page["nextCursor"]
        ),
    )
    .await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 6);
    assert!(rest.get("nextCursor").is_none(), "{rest}");
    // `cursor`, the old name of `after`, still reads the same page.
    let old_name = get_as(
        &app,
        7,
        &format!(
            "/v1/wallet/transactions?limit=100&cursor={}",
            page["nextCursor"]
        ),
    )
    .await;
    assert_eq!(old_name, rest);
    // Two full pages: the second is the last and names no next page.
    let first_half = get_as(&app, 7, "/v1/wallet/transactions?limit=5").await;
    assert_eq!(first_half["nextCursor"], first_half["items"][4]["id"]);
    let second_half = get_as(
        &app,
        7,
        &format!(
            "/v1/wallet/transactions?limit=5&after={}",
            first_half["nextCursor"]
        ),
    )
    .await;
    assert_eq!(second_half["items"].as_array().unwrap().len(), 5);
    assert!(
        second_half.get("nextCursor").is_none(),
        "a full last page ends the list: {second_half}"
    );
    let ids: Vec<i64> = first_half["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second_half["items"].as_array().unwrap())
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 10);
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    let whole = get_as(&app, 7, "/v1/wallet/transactions?limit=10").await;
    assert_eq!(whole["items"].as_array().unwrap().len(), 10);
    assert!(whole.get("nextCursor").is_none(), "{whole}");

    for bad in [
        json!(0),
        json!(-5),
        json!(10_000_001),
        json!(1e30),
        json!(1.5),
        json!("100"),
        json!(null),
    ] {
        assert_problem(charge(&app, 7, bad).await, 400, "validation_failed").await;
    }
    assert_eq!(balance(&app, 7).await, 10_000);
    assert_eq!(
        count(&app.db, "SELECT COUNT(*) FROM wallet_transactions").await,
        10
    );
    assert_eq!(
        balance(&app, 8).await,
        0,
        "a user who never charged has zero"
    );
    assert_invariants(&app).await;
}

#[tokio::test]
async fn concurrent_payments_never_overdraw_and_one_hold_is_paid_once() {
    // Paying ends the buyer's turn in the waiting room (the `queue`
    // consumer); paused here, so the racing payments meet only each other
    // and the wallet, not a turn that ended a moment ago.
    let app = spawn_app_with(|s| s.paused_consumers = vec!["queue".into()]).await;
    let sale = sale(&app, 6).await;
    exec(
        &app,
        &format!(
            "UPDATE seats SET price = 2000 WHERE schedule_id = {}",
            sale.schedule
        ),
    )
    .await;
    let token = app.admitted_token(1, &sale.concert).await;
    assert_eq!(charge(&app, 1, json!(5_000)).await.status(), 201);
    let mut reservations = Vec::new();
    for seat in &sale.seats[..4] {
        reservations.push(
            hold(&app, 1, &token, &sale, *seat)
                .await
                .json::<Value>()
                .await
                .unwrap()["id"]
                .clone(),
        );
    }
    let results = join_all(reservations.iter().map(|r| pay(&app, 1, &token, r))).await;
    let mut paid = 0;
    for resp in results {
        if resp.status() == 201 {
            paid += 1;
        } else {
            assert_problem(resp, 409, "insufficient_points").await;
        }
    }
    assert_eq!(paid, 2);
    assert_eq!(balance(&app, 1).await, 1_000);

    // Five payments racing for one hold: one wins.
    let other = app.admitted_token(2, &sale.concert).await;
    assert_eq!(charge(&app, 2, json!(100_000)).await.status(), 201);
    let r = hold(&app, 2, &other, &sale, sale.seats[4])
        .await
        .json::<Value>()
        .await
        .unwrap()["id"]
        .clone();
    let results = join_all((0..5).map(|_| pay(&app, 2, &other, &r))).await;
    let statuses: Vec<u16> = results.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 409 || *s == 403),
        "{statuses:?}"
    );
    assert_eq!(balance(&app, 2).await, 98_000);
    assert_eq!(
        count(
            &app.db,
            &format!("SELECT COUNT(*) FROM payments WHERE reservation_id = {r}")
        )
        .await,
        1
    );
    eventually("confirmations", WAIT, || async {
        (count(
            &app.db,
            "SELECT COUNT(*) FROM payments WHERE status = 'confirmed'",
        )
        .await
            == 3)
            .then_some(())
    })
    .await;
    assert_invariants(&app).await;
}

#[tokio::test]
async fn a_payment_is_confirmed_with_a_receipt_a_notification_and_the_turn_ends() {
    let app = spawn_app().await;
    let sale = sale(&app, 2).await;
    let token = app.admitted_token(3, &sale.concert).await;
    charge(&app, 3, json!(200_000)).await;
    let reservation = hold(&app, 3, &token, &sale, sale.seats[0])
        .await
        .json::<Value>()
        .await
        .unwrap();
    let resp = pay(&app, 3, &token, &reservation["id"]).await;
    assert_eq!(resp.status(), 201);
    let payment: Value = resp.json().await.unwrap();
    assert_eq!(
        (payment["status"].as_str(), payment["amount"].as_i64()),
        (Some("paid"), Some(150_000))
    );

    let path = format!("/v1/payments/{}", payment["id"]);
    eventually("the payment to be confirmed", WAIT, || async {
        (get_as(&app, 3, &path).await["status"] == "confirmed").then_some(())
    })
    .await;
    assert_eq!(
        get_as(&app, 3, &format!("/v1/reservations/{}", reservation["id"])).await["status"],
        "confirmed"
    );
    assert_eq!(
        count(
            &app.db,
            &format!(
                "SELECT COUNT(*) FROM seats WHERE id = {} AND status = 'sold'",
                sale.seats[0]
            )
        )
        .await,
        1
    );
    let other = app
        .get(&path)
        .bearer_auth(app.user_token(4))
        .send()
        .await
        .unwrap();
    assert_problem(other, 404, "not_found").await;
    counts_eventually(
        &app,
        "a receipt",
        &format!(
            "SELECT COUNT(*) FROM receipts WHERE payment_id = {}",
            payment["id"]
        ),
        1,
    )
    .await;
    let notes = eventually("the confirmation notice", WAIT, || async {
        let notes = get_as(&app, 3, "/v1/users/me/notifications").await;
        (notes["items"].as_array().unwrap().len() == 1).then_some(notes)
    })
    .await;
    assert_eq!(notes["items"][0]["kind"], "reservation_confirmed");
    let after = get_as(
        &app,
        3,
        &format!("/v1/users/me/notifications?after={}", notes["nextCursor"]),
    )
    .await;
    assert!(after["items"].as_array().unwrap().is_empty());
    assert_eq!(after["nextCursor"], notes["nextCursor"]);
    eventually("the queue turn to end", WAIT, || async {
        (app.queue_status(&token).await["status"] == "expired").then_some(())
    })
    .await;
    assert_invariants(&app).await;
}

/// Waits until `sql` counts `expected` rows.
async fn counts_eventually(app: &TestApp, what: &str, sql: &str, expected: i64) {
    eventually(what, WAIT, || async {
        (count(&app.db, sql).await == expected).then_some(())
    })
    .await;
}

/// A paid, confirmed ticket of `user`'s on the sale's first seat: (queue
/// token, reservation, payment).
async fn confirmed_ticket(app: &TestApp, user: i64, sale: &Sale) -> (String, Value, Value) {
    confirmed_ticket_on(app, user, sale, sale.seats[0]).await
}

pub(crate) async fn confirmed_ticket_on(
    app: &TestApp,
    user: i64,
    sale: &Sale,
    seat: i64,
) -> (String, Value, Value) {
    let token = app.admitted_token(user, &sale.concert).await;
    charge(app, user, json!(200_000)).await;
    let reservation: Value = hold(app, user, &token, sale, seat)
        .await
        .json()
        .await
        .unwrap();
    let resp = pay(app, user, &token, &reservation["id"]).await;
    assert_eq!(resp.status(), 201);
    let payment: Value = resp.json().await.unwrap();
    let path = format!("/v1/payments/{}", payment["id"]);
    eventually("the payment to be confirmed", WAIT, || async {
        (get_as(app, user, &path).await["status"] == "confirmed").then_some(())
    })
    .await;
    (token, reservation, payment)
}

#[tokio::test]
async fn a_buyer_cancels_a_ticket_once_and_gets_points_seat_and_notice_back() {
    let app = spawn_app().await;
    let sale = sale(&app, 2).await;
    let (_, reservation, payment) = confirmed_ticket(&app, 31, &sale).await;
    let path = format!("/v1/payments/{}", payment["id"]);
    let refunds = format!("{path}/refunds");
    counts_eventually(
        &app,
        "the receipt",
        &format!(
            "SELECT COUNT(*) FROM receipts WHERE payment_id = {}",
            payment["id"]
        ),
        1,
    )
    .await;

    let other = app
        .post(&refunds)
        .bearer_auth(app.user_token(32))
        .send()
        .await
        .unwrap();
    assert_problem(other, 404, "not_found").await;
    // Five at once: one cancellation.
    let answers =
        join_all((0..5).map(|_| app.post(&refunds).bearer_auth(app.user_token(31)).send())).await;
    let mut accepted = 0;
    for resp in answers {
        let resp = resp.unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap();
        match status {
            202 => {
                accepted += 1;
                assert_eq!(
                    body,
                    json!({"paymentId": payment["id"], "status": "pending"})
                );
            }
            409 => assert!(
                body["code"] == "already_cancelled" || body["code"] == "not_confirmed",
                "{body}"
            ),
            _ => panic!("{status}: {body}"),
        }
    }
    assert_eq!(accepted, 1);

    eventually("the refund", WAIT, || async {
        (get_as(&app, 31, &path).await["status"] == "refunded").then_some(())
    })
    .await;
    assert_eq!(balance(&app, 31).await, 200_000, "every point back");
    assert_eq!(
        get_as(&app, 31, &format!("/v1/reservations/{}", reservation["id"])).await["status"],
        "released"
    );
    assert_eq!(
        count(
            &app.db,
            &format!(
                "SELECT COUNT(*) FROM seats WHERE id = {} AND status = 'available'",
                sale.seats[0]
            )
        )
        .await,
        1,
        "the seat is on sale again"
    );
    for (event, expected) in [("PaymentRefunded", 1), ("TicketCancelled", 1)] {
        assert_eq!(
            outbox_payloads(&app.db, event).await.len(),
            expected,
            "{event}"
        );
    }
    assert_eq!(
        outbox_payloads(&app.db, "PaymentRefunded").await[0]["reason"],
        "cancelled"
    );
    counts_eventually(
        &app,
        "the receipt voided",
        &format!(
            "SELECT COUNT(*) FROM receipts WHERE payment_id = {} AND cancelled_at IS NOT NULL",
            payment["id"]
        ),
        1,
    )
    .await;
    let notice = eventually("the refund notice", WAIT, || async {
        let notes = get_as(&app, 31, "/v1/users/me/notifications").await;
        notes["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["kind"] == "payment_refunded")
            .cloned()
    })
    .await;
    assert!(
        notice["message"].as_str().unwrap().contains("cancelled"),
        "{notice}"
    );

    let again = app
        .post(&refunds)
        .bearer_auth(app.user_token(31))
        .send()
        .await
        .unwrap();
    assert_problem(again, 409, "not_confirmed").await;
    let token = app.admitted_token(33, &sale.concert).await;
    assert_eq!(
        hold(&app, 33, &token, &sale, sale.seats[0]).await.status(),
        201,
        "someone else buys it"
    );
    outbox_drained(&app.db, WAIT).await;
    assert_eq!(
        count(&app.db, &format!("SELECT COUNT(*) FROM wallet_transactions WHERE kind = 'refund' AND payment_id = {}", payment["id"])).await,
        1
    );
    assert_invariants(&app).await;
}

#[tokio::test]
async fn a_ticket_is_not_cancelled_near_the_show_and_bad_requests_change_nothing() {
    let app = spawn_app().await;
    let mut body = concert_body(1, 1);
    body["schedules"][0]["startsAt"] =
        json!((chrono::Utc::now() + chrono::TimeDelta::hours(2)).to_rfc3339());
    let created = app.create_concert(&body).await;
    let schedule = created["schedules"][0]["id"].clone();
    let seats = seat_ids(&app, &schedule).await;
    let sale = Sale {
        concert: created["id"].clone(),
        schedule,
        seats,
    };
    let (_, _, payment) = confirmed_ticket(&app, 41, &sale).await;
    let refunds = format!("/v1/payments/{}/refunds", payment["id"]);
    let cancel = |path: String| app.post(&path).bearer_auth(app.user_token(41)).send();
    assert_problem(
        cancel(refunds.clone()).await.unwrap(),
        409,
        "cancel_window_closed",
    )
    .await;
    let unknown = cancel("/v1/payments/999999/refunds".into()).await.unwrap();
    assert_problem(unknown, 404, "not_found").await;
    let bad = cancel("/v1/payments/x/refunds".into()).await.unwrap();
    assert_eq!(bad.status(), 400);
    let anonymous = app.post(&refunds).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(
        count(&app.db, "SELECT COUNT(*) FROM compensations").await,
        0,
        "nothing scheduled"
    );
    assert_eq!(
        get_as(&app, 41, &format!("/v1/payments/{}", payment["id"])).await["status"],
        "confirmed"
    );
    assert_invariants(&app).await;
}

#[tokio::test]
async fn an_admin_cancels_a_schedule_and_every_hold_and_ticket_is_settled_once() {
    let app = spawn_app().await;
    let sale = sale(&app, 6).await;
    let mut tickets = Vec::new();
    for (i, user) in [51, 52, 53].into_iter().enumerate() {
        tickets.push(
            confirmed_ticket_on(&app, user, &sale, sale.seats[i])
                .await
                .2,
        );
    }
    let holder = app.admitted_token(54, &sale.concert).await;
    let held: Value = hold(&app, 54, &holder, &sale, sale.seats[3])
        .await
        .json()
        .await
        .unwrap();
    let cancel = format!("/v1/admin/schedules/{}/cancel", sale.schedule);
    let progress = format!("/v1/admin/schedules/{}", sale.schedule);
    let as_user = app
        .post(&cancel)
        .bearer_auth(app.user_token(51))
        .send()
        .await
        .unwrap();
    assert_eq!(as_user.status(), 403);

    let resp = app
        .post(&cancel)
        .bearer_auth(app.admin_token())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let started: Value = resp.json().await.unwrap();
    assert_eq!(started["status"], "cancelling", "{started}");
    assert_eq!(
        (started["seats"].as_i64(), started["sold"].as_i64()),
        (Some(6), Some(3))
    );
    // Off sale at once.
    let listed = app
        .get(&format!("/v1/concerts/{}/schedules", sale.concert))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(
        (
            &listed["items"][0]["status"],
            &listed["items"][0]["availableSeats"]
        ),
        (&json!("cancelling"), &json!(0)),
        "{listed}"
    );
    let late = app.admitted_token(55, &sale.concert).await;
    assert_problem(
        hold(&app, 55, &late, &sale, sale.seats[4]).await,
        409,
        "seat_unavailable",
    )
    .await;
    let map = app
        .get(&format!("/v1/schedules/{}/seats", sale.schedule))
        .bearer_auth(app.user_token(55))
        .header("x-queue-token", &late)
        .send()
        .await
        .unwrap();
    assert_problem(map, 409, "not_on_sale").await;

    let done = eventually("the schedule cancelled", WAIT, || async {
        let resp = app
            .get(&progress)
            .bearer_auth(app.admin_token())
            .send()
            .await
            .unwrap();
        let body: Value = resp.json().await.unwrap();
        (body["status"] == "cancelled").then_some(body)
    })
    .await;
    assert_eq!(
        done,
        json!({"id": sale.schedule, "status": "cancelled", "seats": 6, "sold": 0,
               "refundsPending": 0, "refundsFailed": 0, "refundsDone": 3})
    );
    for (user, payment) in [51, 52, 53].into_iter().zip(&tickets) {
        assert_eq!(
            balance(&app, user).await,
            200_000,
            "user {user}: every point back"
        );
        let path = format!("/v1/payments/{}", payment["id"]);
        assert_eq!(get_as(&app, user, &path).await["status"], "refunded");
    }
    assert_eq!(
        get_as(&app, 54, &format!("/v1/reservations/{}", held["id"])).await["status"],
        "released"
    );
    let refunds = outbox_payloads(&app.db, "PaymentRefunded").await;
    assert_eq!(refunds.len(), 3);
    assert!(refunds.iter().all(|r| r["reason"] == "schedule_cancelled"));
    for event in ["ScheduleCancellationStarted", "ScheduleCancelled"] {
        assert_eq!(outbox_payloads(&app.db, event).await.len(), 1, "{event}");
    }
    let listed = app
        .get("/v1/admin/schedules?limit=5")
        .bearer_auth(app.admin_token())
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(listed["items"][0], done, "newest first, with its progress");
    let again = app
        .post(&cancel)
        .bearer_auth(app.admin_token())
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 202, "cancelling again changes nothing");
    assert_eq!(again.json::<Value>().await.unwrap(), done);
    let unknown = app
        .post("/v1/admin/schedules/424242/cancel")
        .bearer_auth(app.admin_token())
        .send()
        .await
        .unwrap();
    assert_problem(unknown, 404, "not_found").await;
    outbox_drained(&app.db, WAIT).await;
    assert_invariants(&app).await;
}

#[tokio::test]
async fn buyers_page_through_their_own_reservations_and_payments() {
    let app = spawn_app().await;
    let sale = sale(&app, 5).await;
    let token = app.admitted_token(21, &sale.concert).await;
    charge(&app, 21, json!(500_000)).await;
    let mut held = Vec::new();
    for seat in &sale.seats[..3] {
        let r: Value = hold(&app, 21, &token, &sale, *seat)
            .await
            .json()
            .await
            .unwrap();
        held.push(r["id"].as_i64().unwrap());
    }
    let resp = app
        .client
        .delete(app.url(&format!("/v1/reservations/{}", held[1])))
        .bearer_auth(app.user_token(21))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let resp = pay(&app, 21, &token, &json!(held[2])).await;
    assert_eq!(resp.status(), 201);
    let payment: Value = resp.json().await.unwrap();
    let other = app.admitted_token(22, &sale.concert).await;
    assert_eq!(
        hold(&app, 22, &other, &sale, sale.seats[3]).await.status(),
        201
    );

    let first = get_as(&app, 21, "/v1/users/me/reservations?limit=2").await;
    assert_eq!(page_ids(&first), vec![held[2], held[1]]);
    assert_eq!(first["items"][1]["status"], "released");
    let next = format!(
        "/v1/users/me/reservations?limit=2&after={}",
        first["nextCursor"]
    );
    let second = get_as(&app, 21, &next).await;
    assert_eq!(page_ids(&second), vec![held[0]]);
    assert!(second.get("nextCursor").is_none(), "{second}");
    assert_eq!(
        page_ids(&get_as(&app, 22, "/v1/users/me/reservations").await).len(),
        1,
        "only your own"
    );

    let payments = get_as(&app, 21, "/v1/users/me/payments").await;
    assert_eq!(page_ids(&payments), vec![payment["id"].as_i64().unwrap()]);
    assert_eq!(payments["items"][0]["reservationId"], held[2]);
    assert_eq!(
        page_ids(&get_as(&app, 22, "/v1/users/me/payments").await),
        Vec::<i64>::new()
    );

    for path in [
        "/v1/users/me/payments?limit=0",
        "/v1/users/me/reservations?limit=101",
        "/v1/users/me/reservations?after=x",
    ] {
        let resp = app
            .get(path)
            .bearer_auth(app.user_token(21))
            .send()
            .await
            .unwrap();
        assert_problem(resp, 400, "validation_failed").await;
    }
    let resp = app.get("/v1/users/me/payments").send().await.unwrap();
    assert_eq!(resp.status(), 401);
}

/// Pays for a seat while the reservations consumer is paused, lets someone
/// else take the seat, then runs the consumer: the confirmation fails.
/// Returns the app, the payment and a handle stopping the consumer.
pub(crate) async fn paid_then_seat_lost(
    before_confirming: &str,
) -> (TestApp, Value, tokio_util::sync::CancellationToken) {
    use std::sync::Arc;

    use boxoffice::{
        admin::{infra::db::DbAlerts, usecase::AlertService},
        kernel::SystemClock,
        outbox::infra::consumer::{ConsumerRunner, ConsumerSettings},
        reservation::usecase::ConfirmOnPayment,
    };

    let app = spawn_app_with(|s| s.paused_consumers = vec!["reservations".into()]).await;
    let sale = sale(&app, 2).await;
    let token = app.admitted_token(5, &sale.concert).await;
    charge(&app, 5, json!(150_000)).await;
    let reservation = hold(&app, 5, &token, &sale, sale.seats[0])
        .await
        .json::<Value>()
        .await
        .unwrap();
    let payment: Value = pay(&app, 5, &token, &reservation["id"])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(balance(&app, 5).await, 0);
    // The hold lapsed before the confirmation came, and someone else took the seat.
    exec(
        &app,
        &format!(
            "UPDATE seats SET held_until = '2020-01-01T00:00:00+00:00' WHERE id = {}",
            sale.seats[0]
        ),
    )
    .await;
    let thief = app.admitted_token(6, &sale.concert).await;
    assert_eq!(
        hold(&app, 6, &thief, &sale, sale.seats[0]).await.status(),
        201
    );
    exec(&app, before_confirming).await;

    let cancel = tokio_util::sync::CancellationToken::new();
    let runner = ConsumerRunner::new(
        app.db.clone(),
        app.bus.clone(),
        Arc::new(ConfirmOnPayment::new(SystemClock)),
        "test-confirmer".into(),
        ConsumerSettings {
            batch_size: 16,
            block: Duration::from_millis(50),
            claim_idle: Duration::from_millis(300),
            max_deliveries: 3,
            lanes: 1,
            ownership: Duration::from_millis(1_500),
        },
        Arc::new(AlertService::new(
            DbAlerts::new(app.db.clone()),
            SystemClock,
            false,
        )),
    );
    tokio::spawn(runner.run(cancel.clone()));
    (app, payment, cancel)
}

#[tokio::test]
async fn a_lost_seat_is_refunded_with_a_notification_and_an_alert() {
    // An older compensation, long finished, of another payment: the list
    // pages from this one to it.
    let (app, payment, stop) = paid_then_seat_lost(
        "INSERT INTO compensations \
         (saga, step, payment_id, status, attempts, next_attempt_at, created_at, updated_at) \
         VALUES ('payment', 'refund', 424242, 'succeeded', 1, \
         CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
    )
    .await;
    let path = format!("/v1/payments/{}", payment["id"]);
    eventually("the refund", WAIT, || async {
        (get_as(&app, 5, &path).await["status"] == "refunded").then_some(())
    })
    .await;
    stop.cancel();
    assert_eq!(balance(&app, 5).await, 150_000, "points restored");
    let ledger = get_as(&app, 5, "/v1/wallet/transactions").await;
    let kinds: Vec<&str> = ledger["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["refund", "payment", "charge"]);
    let reservation = get_as(
        &app,
        5,
        &format!("/v1/reservations/{}", payment["reservationId"]),
    )
    .await;
    assert_eq!(reservation["status"], "expired");
    let compensations = app.get_json("/v1/admin/compensations").await;
    assert_eq!(compensations["items"].as_array().unwrap().len(), 2);
    assert_eq!(compensations["items"][0]["status"], "succeeded");
    assert_eq!(compensations["items"][0]["paymentId"], payment["id"]);
    assert_eq!(compensations["items"][1]["paymentId"], 424242);
    assert!(compensations.get("nextCursor").is_none(), "{compensations}");
    // A page at a time, newest first.
    let newest = app.get_json("/v1/admin/compensations?limit=1").await;
    assert_eq!(newest["items"], json!([compensations["items"][0]]));
    assert_eq!(newest["nextCursor"], compensations["items"][0]["id"]);
    let older = app
        .get_json(&format!(
            "/v1/admin/compensations?limit=1&after={}",
            newest["nextCursor"]
        ))
        .await;
    assert_eq!(older, json!({"items": [compensations["items"][1]]}));
    let succeeded = app
        .get_json(&format!(
            "/v1/admin/compensations?status=succeeded&limit=1&after={}",
            newest["nextCursor"]
        ))
        .await;
    assert_eq!(succeeded, older);
    // Raised just after the step it reports was recorded.
    eventually("the saga's warning alert", WAIT, || async {
        let alerts = app.get_json("/v1/admin/alerts?severity=warning").await;
        (alerts["items"].as_array().unwrap().iter())
            .any(|a| a["source"] == "saga:payment")
            .then_some(())
    })
    .await;
    eventually("the refund notice", WAIT, || async {
        let notes = get_as(&app, 5, "/v1/users/me/notifications").await;
        notes["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["kind"] == "payment_refunded")
            .then_some(())
    })
    .await;
    assert_invariants(&app).await;
}

#[tokio::test]
async fn a_compensation_that_keeps_failing_stops_alerts_and_an_admin_retry_finishes_it() {
    // The refund cannot land: the wallet is at its cap (an operator will fix it).
    let (app, payment, stop) =
        paid_then_seat_lost("UPDATE wallets SET balance = 1000000000000 WHERE user_id = 5").await;
    let failed = eventually("the compensation to give up", WAIT, || async {
        let list = app.get_json("/v1/admin/compensations?status=failed").await;
        (list["items"].as_array().unwrap().len() == 1).then_some(list)
    })
    .await;
    stop.cancel();
    assert!(failed.get("nextCursor").is_none(), "{failed}");
    let failed = &failed["items"];
    assert_eq!(failed[0]["attempts"], 5);
    assert!(
        failed[0]["lastError"].as_str().unwrap().contains("cap"),
        "{failed}"
    );
    // Raised just after the step it reports was recorded.
    eventually("the saga's critical alert", WAIT, || async {
        let critical = app.get_json("/v1/admin/alerts?severity=critical").await;
        (critical["items"].as_array().unwrap().iter())
            .any(|a| a["source"] == "saga:payment")
            .then_some(())
    })
    .await;
    assert_eq!(
        get_as(&app, 5, &format!("/v1/payments/{}", payment["id"])).await["status"],
        "paid"
    );

    exec(&app, "UPDATE wallets SET balance = 0 WHERE user_id = 5").await;
    let id = failed[0]["id"].clone();
    let retry = |token: String| {
        app.post(&format!("/v1/admin/compensations/{id}/retry"))
            .bearer_auth(token)
            .send()
    };
    assert_problem(retry(app.user_token(5)).await.unwrap(), 403, "forbidden").await;
    assert_eq!(retry(app.admin_token()).await.unwrap().status(), 202);
    let path = format!("/v1/payments/{}", payment["id"]);
    eventually("the retried refund", WAIT, || async {
        (get_as(&app, 5, &path).await["status"] == "refunded").then_some(())
    })
    .await;
    assert_eq!(balance(&app, 5).await, 150_000);
    assert_problem(retry(app.admin_token()).await.unwrap(), 409, "not_failed").await;
    assert_eq!(
        crate::helpers::outbox_payloads(&app.db, "CompensationRetried").await,
        vec![json!({"compensationId": id, "paymentId": payment["id"], "adminId": 9_000})],
        "the retry is recorded once, with the admin"
    );
    let unknown = app
        .post("/v1/admin/compensations/424242/retry")
        .bearer_auth(app.admin_token())
        .send()
        .await
        .unwrap();
    assert_problem(unknown, 404, "not_found").await;
}

#[tokio::test]
async fn bad_payment_requests_change_nothing() {
    let app = spawn_app().await;
    let sale = sale(&app, 2).await;
    let token = app.admitted_token(1, &sale.concert).await;
    let other = app.admitted_token(2, &sale.concert).await;
    charge(&app, 1, json!(500_000)).await;
    let reservation = hold(&app, 1, &token, &sale, sale.seats[0])
        .await
        .json::<Value>()
        .await
        .unwrap();
    assert_problem(pay(&app, 1, &token, &json!(424242)).await, 404, "not_found").await;
    assert_problem(
        pay(&app, 2, &other, &reservation["id"]).await,
        404,
        "not_found",
    )
    .await;
    assert_problem(
        pay(&app, 1, &token, &json!("x")).await,
        400,
        "validation_failed",
    )
    .await;
    let no_queue = app
        .post("/v1/payments")
        .bearer_auth(app.user_token(1))
        .json(&json!({"reservationId": reservation["id"]}))
        .send()
        .await
        .unwrap();
    assert_problem(no_queue, 401, "unauthorized").await;
    assert_problem(
        pay(&app, 1, &other, &reservation["id"]).await,
        403,
        "forbidden",
    )
    .await;
    assert_eq!(balance(&app, 1).await, 500_000);
    assert_eq!(count(&app.db, "SELECT COUNT(*) FROM payments").await, 0);
    assert_eq!(pay(&app, 1, &token, &reservation["id"]).await.status(), 201);
    // Paying again: refused as already paid — or, once the payment has ended
    // the buyer's turn in the waiting room, as not admitted.
    let again = pay(&app, 1, &token, &reservation["id"]).await;
    let code = if again.status() == 409 {
        "already_paid"
    } else {
        "queue_not_admitted"
    };
    let status = again.status().as_u16();
    assert_problem(again, status, code).await;
    assert_eq!(count(&app.db, "SELECT COUNT(*) FROM payments").await, 1);
    assert_invariants(&app).await;
}

#[tokio::test]
async fn expired_holds_read_expired_at_once_and_the_sweeper_frees_the_seat() {
    let app = spawn_app().await;
    let sale = sale(&app, 2).await;
    let token = app.admitted_token(6, &sale.concert).await;
    let reservation = hold(&app, 6, &token, &sale, sale.seats[0])
        .await
        .json::<Value>()
        .await
        .unwrap();
    let id = reservation["id"].clone();
    let past = "'2020-01-01T00:00:00+00:00'";
    exec(
        &app,
        &format!("UPDATE reservations SET expires_at = {past} WHERE id = {id}"),
    )
    .await;
    exec(
        &app,
        &format!(
            "UPDATE seats SET held_until = {past} WHERE id = {}",
            sale.seats[0]
        ),
    )
    .await;
    assert_eq!(
        get_as(&app, 6, &format!("/v1/reservations/{id}")).await["status"],
        "expired"
    );
    assert_problem(pay(&app, 6, &token, &id).await, 409, "hold_expired").await;
    eventually("the sweeper", WAIT, || async {
        (count(
            &app.db,
            &format!("SELECT COUNT(*) FROM reservations WHERE id = {id} AND status = 'expired'"),
        )
        .await
            == 1)
            .then_some(())
    })
    .await;
    assert_eq!(
        count(
            &app.db,
            &format!(
                "SELECT COUNT(*) FROM seats WHERE id = {} AND status = 'available'",
                sale.seats[0]
            )
        )
        .await,
        1
    );
    let notes = eventually("the expiry notice", WAIT, || async {
        let notes = get_as(&app, 6, "/v1/users/me/notifications").await;
        (!notes["items"].as_array().unwrap().is_empty()).then_some(notes)
    })
    .await;
    assert_eq!(notes["items"][0]["kind"], "reservation_expired");
    // Someone else may take the seat now.
    let token7 = app.admitted_token(7, &sale.concert).await;
    assert_eq!(
        hold(&app, 7, &token7, &sale, sale.seats[0]).await.status(),
        201
    );
    assert_invariants(&app).await;
}

#[tokio::test]
async fn an_idempotency_key_makes_charges_and_payments_safe_to_retry() {
    let app = spawn_app().await;
    let user = app.user_token(8);
    let charge_with = |key: &str, amount: i64| {
        app.post("/v1/wallet/charges")
            .bearer_auth(&user)
            .header("idempotency-key", key)
            .json(&json!({"amount": amount}))
            .send()
    };
    let first: Value = charge_with("charge-1", 200_000)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let retried = charge_with("charge-1", 200_000).await.unwrap();
    assert_eq!(retried.status(), 201);
    assert_eq!(
        retried.json::<Value>().await.unwrap(),
        first,
        "the first answer, replayed"
    );
    assert_eq!(balance(&app, 8).await, 200_000, "charged once");
    assert_problem(
        charge_with("charge-1", 5).await.unwrap(),
        409,
        "idempotency_conflict",
    )
    .await;
    assert_problem(
        charge_with(&"k".repeat(200), 5).await.unwrap(),
        400,
        "validation_failed",
    )
    .await;
    // Keys are per user.
    let other: Value = app
        .post("/v1/wallet/charges")
        .bearer_auth(app.user_token(9))
        .header("idempotency-key", "charge-1")
        .json(&json!({"amount": 7}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(other["balance"], 7);

    let sale = sale(&app, 2).await;
    let token = app.admitted_token(8, &sale.concert).await;
    let reservation = hold(&app, 8, &token, &sale, sale.seats[0])
        .await
        .json::<Value>()
        .await
        .unwrap();
    let other = hold(&app, 8, &token, &sale, sale.seats[1])
        .await
        .json::<Value>()
        .await
        .unwrap();
    let pay_for = |reservation: &Value, key: &'static str| {
        app.post("/v1/payments")
            .bearer_auth(&user)
            .header("x-queue-token", &token)
            .header("idempotency-key", key)
            .json(&json!({"reservationId": reservation["id"]}))
            .send()
    };
    let pay_with = |key: &'static str| pay_for(&reservation, key);
    let paid = pay_with("pay-1").await.unwrap();
    assert_eq!(paid.status(), 201);
    let paid: Value = paid.json().await.unwrap();
    let again = pay_with("pay-1").await.unwrap();
    assert_eq!(again.status(), 201);
    assert_eq!(again.json::<Value>().await.unwrap(), paid);
    // The key names that payment: for another hold it is refused.
    assert_problem(
        pay_for(&other, "pay-1").await.unwrap(),
        409,
        "idempotency_conflict",
    )
    .await;
    assert_eq!(count(&app.db, "SELECT COUNT(*) FROM payments").await, 1);
    assert_eq!(balance(&app, 8).await, 50_000);
    assert_invariants(&app).await;
}

/// Holds about to lapse, their payments and the expiry sweeper all at once:
/// each hold ends either paid and confirmed, or expired (and any payment
/// refunded) — never both, never money lost.
#[tokio::test]
async fn the_sweeper_racing_payments_never_leaves_a_hold_both_paid_and_expired() {
    let app = spawn_app().await;
    let sale = sale(&app, 12).await;
    let buyers = tokens(&app, 1..=10, &sale.concert).await;
    let mut holds = Vec::new();
    for ((user, token), seat) in buyers.iter().zip(&sale.seats) {
        charge(&app, *user, json!(200_000)).await;
        let r = hold(&app, *user, token, &sale, *seat)
            .await
            .json::<Value>()
            .await
            .unwrap();
        holds.push((
            *user,
            token.clone(),
            r["id"].clone(),
            r["price"].as_i64().unwrap(),
        ));
    }
    let lapse = (chrono::Utc::now() + chrono::TimeDelta::milliseconds(300)).to_rfc3339();
    exec(
        &app,
        &format!("UPDATE reservations SET expires_at = '{lapse}'"),
    )
    .await;
    exec(
        &app,
        &format!("UPDATE seats SET held_until = '{lapse}' WHERE status = 'held'"),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(250)).await;
    // Paying in a stagger across the lapse, while the sweeper runs every second.
    let payments = join_all(holds.iter().enumerate().map(|(i, (user, token, r, _))| {
        let app = &app;
        async move {
            tokio::time::sleep(Duration::from_millis(i as u64 * 15)).await;
            pay(app, *user, token, r).await.status().as_u16()
        }
    }))
    .await;
    assert!(
        payments.iter().all(|s| *s == 201 || *s == 409),
        "{payments:?}"
    );

    // Let the sweeper and the saga finish.
    eventually("every hold to settle", WAIT, || async {
        let open = count(
            &app.db,
            "SELECT COUNT(*) FROM reservations WHERE status = 'held' OR id IN (SELECT reservation_id FROM payments WHERE status = 'paid')",
        )
        .await;
        (open == 0).then_some(())
    })
    .await;
    for (user, _, r, price) in &holds {
        let reservation = get_as(&app, *user, &format!("/v1/reservations/{r}")).await;
        let paid = count(
            &app.db,
            &format!(
                "SELECT COUNT(*) FROM payments WHERE reservation_id = {r} AND status = 'confirmed'"
            ),
        )
        .await;
        let refunded = count(
            &app.db,
            &format!(
                "SELECT COUNT(*) FROM payments WHERE reservation_id = {r} AND status = 'refunded'"
            ),
        )
        .await;
        match reservation["status"].as_str().unwrap() {
            "confirmed" => assert_eq!((paid, refunded), (1, 0), "reservation {r}"),
            "expired" => assert_eq!(paid, 0, "an expired hold is never a confirmed payment: {r}"),
            other => panic!("reservation {r} ended {other}"),
        }
        let expected = if paid == 1 { 200_000 - price } else { 200_000 };
        assert_eq!(balance(&app, *user).await, expected, "user {user}");
    }
    assert_invariants(&app).await;
}

/// Owners pay while others grab the same seats across the moment their
/// holds lapse, many times over: every answer is 201 or 409 (a database
/// deadlock between the two would be retried, never a 500), no seat ends
/// with two owners, and the ledger adds up.
#[tokio::test]
async fn payments_and_new_holds_racing_on_lapsing_seats_never_answer_500() {
    let app = spawn_app().await;
    let sale = sale(&app, 24).await;
    let owners = tokens(&app, 1..=24, &sale.concert).await;
    let thieves = tokens(&app, 101..=124, &sale.concert).await;
    let mut holds = Vec::new();
    for ((user, token), seat) in owners.iter().zip(&sale.seats) {
        charge(&app, *user, json!(200_000)).await;
        let r = hold(&app, *user, token, &sale, *seat)
            .await
            .json::<Value>()
            .await
            .unwrap();
        holds.push((*user, token.clone(), r["id"].clone(), *seat));
    }
    let lapse = (chrono::Utc::now() + chrono::TimeDelta::milliseconds(300)).to_rfc3339();
    exec(
        &app,
        &format!("UPDATE reservations SET expires_at = '{lapse}'"),
    )
    .await;
    exec(
        &app,
        &format!("UPDATE seats SET held_until = '{lapse}' WHERE status = 'held'"),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(240)).await;
    let races = join_all(holds.iter().zip(&thieves).enumerate().map(
        |(i, ((owner, owner_token, r, seat), (thief, thief_token)))| {
            let (app, sale) = (&app, &sale);
            async move {
                // Staggered across the lapse, the grab a little after the pay.
                tokio::time::sleep(Duration::from_millis(i as u64 * 5)).await;
                let paying = pay(app, *owner, owner_token, r);
                let grabbing = async {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    hold(app, *thief, thief_token, sale, *seat).await
                };
                let (paid, grabbed) = tokio::join!(paying, grabbing);
                (paid.status().as_u16(), grabbed.status().as_u16())
            }
        },
    ))
    .await;
    for (paid, grabbed) in &races {
        assert!(
            [201, 409].contains(paid) && [201, 409].contains(grabbed),
            "no 5xx: {races:?}"
        );
        assert!(
            !(*paid == 201 && *grabbed == 201),
            "one seat, one winner: {races:?}"
        );
    }
    eventually("every paid hold to settle", WAIT, || async {
        let open = count(
            &app.db,
            "SELECT COUNT(*) FROM payments WHERE status = 'paid'",
        )
        .await;
        (open == 0).then_some(())
    })
    .await;
    assert_eq!(
        count(
            &app.db,
            "SELECT COUNT(*) FROM (SELECT seat_id FROM reservations WHERE status = 'confirmed' GROUP BY seat_id HAVING COUNT(*) > 1) AS doubled"
        )
        .await,
        0,
        "no seat sold twice"
    );
    assert_invariants(&app).await;
}

/// A saga step's events are published when its handler commits, not at
/// the relay's next poll: with the poll an hour away, a payment still goes
/// paid → confirmed (PaymentCompleted, written by the request, wakes the
/// relay; ReservationConfirmed, written by the reservation consumer, must
/// wake it too) and its receipt is issued (one more hop).
#[tokio::test]
async fn a_saga_step_wakes_the_relay_so_no_hop_waits_for_its_poll() {
    let app = spawn_app_with(|s| s.relay_poll_ms = 3_600_000).await;
    let sale = sale(&app, 2).await;
    let user = 31;
    assert_eq!(charge(&app, user, json!(500_000)).await.status(), 201);
    let token = app.admitted_token(user, &sale.concert).await;
    let held: Value = hold(&app, user, &token, &sale, sale.seats[0])
        .await
        .json()
        .await
        .unwrap();
    let paid = pay(&app, user, &token, &held["id"]).await;
    assert_eq!(paid.status(), 201);
    let payment: Value = paid.json().await.unwrap();
    let path = format!("/v1/payments/{}", payment["id"]);
    eventually(
        "paid → confirmed with the relay's poll an hour away",
        Duration::from_secs(20),
        || async { (get_as(&app, user, &path).await["status"] == "confirmed").then_some(()) },
    )
    .await;
    eventually("the receipt", Duration::from_secs(20), || async {
        (count(
            &app.db,
            &format!(
                "SELECT COUNT(*) FROM receipts WHERE payment_id = {}",
                payment["id"]
            ),
        )
        .await
            == 1)
            .then_some(())
    })
    .await;
}
