//! Orders of several seats over HTTP against the real stores: held all
//! together or not at all, best-available in rows, one payment for the
//! order, and a crowd racing for overlapping orders.

use std::collections::HashSet;

use chrono::TimeDelta;
use futures::future::join_all;
use serde_json::{Value, json};

use crate::{
    helpers::{TestApp, assert_problem, count, eventually, spawn_app},
    sales::{WAIT, assert_invariants, balance, charge, get_as, sale, tokens},
};

pub(crate) async fn order(app: &TestApp, user: i64, token: &str, body: Value) -> reqwest::Response {
    app.post("/v1/orders")
        .bearer_auth(app.user_token(user))
        .header("x-queue-token", token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

pub(crate) async fn pay_order(
    app: &TestApp,
    user: i64,
    token: &str,
    order: &Value,
) -> reqwest::Response {
    app.post("/v1/payments")
        .bearer_auth(app.user_token(user))
        .header("x-queue-token", token)
        .json(&json!({"orderId": order}))
        .send()
        .await
        .unwrap()
}

fn seat_ids(order: &Value) -> Vec<i64> {
    (order["seats"].as_array().unwrap().iter())
        .map(|seat| seat["id"].as_i64().unwrap())
        .collect()
}

async fn held_seats(app: &TestApp, schedule: &Value) -> i64 {
    count(
        &app.db,
        &format!(
            "SELECT COUNT(*) FROM seats WHERE schedule_id = {schedule} AND status <> 'available'"
        ),
    )
    .await
}

#[tokio::test]
async fn an_order_holds_its_seats_together_is_paid_once_and_confirmed_together() {
    let app = spawn_app().await;
    let sale = sale(&app, 8).await;
    let token = app.admitted_token(1, &sale.concert).await;
    let wanted = vec![sale.seats[3], sale.seats[1], sale.seats[2]];
    let resp = order(
        &app,
        1,
        &token,
        json!({"scheduleId": sale.schedule, "seatIds": wanted}),
    )
    .await;
    assert_eq!(resp.status(), 201);
    let placed: Value = resp.json().await.unwrap();
    assert_eq!(placed["status"], "held");
    assert_eq!(
        seat_ids(&placed),
        vec![sale.seats[1], sale.seats[2], sale.seats[3]]
    );
    assert_eq!(placed["seats"][0]["number"], 2);
    assert_eq!(placed["amount"], 3 * 90_000);
    assert!(placed["expiresAt"].is_string());
    let order_id = placed["id"].clone();
    assert_eq!(
        get_as(&app, 1, &format!("/v1/orders/{order_id}")).await["seats"],
        placed["seats"]
    );
    let mine = get_as(&app, 1, "/v1/users/me/orders").await;
    assert_eq!(mine["items"][0]["id"], order_id);
    assert_eq!(
        app.get(&format!("/v1/orders/{order_id}"))
            .bearer_auth(app.user_token(2))
            .send()
            .await
            .unwrap()
            .status(),
        404,
        "someone else's order"
    );

    assert_eq!(charge(&app, 1, json!(500_000)).await.status(), 201);
    // With a key, concurrent retries pay once and get the same payment.
    let keyed = || {
        app.post("/v1/payments")
            .bearer_auth(app.user_token(1))
            .header("x-queue-token", &token)
            .header("Idempotency-Key", "order-pay-1")
            .json(&json!({"orderId": order_id}))
            .send()
    };
    let answers = join_all((0..3).map(|_| keyed())).await;
    let mut payments = Vec::new();
    for resp in answers {
        let resp = resp.unwrap();
        assert_eq!(resp.status(), 201);
        payments.push(resp.json::<Value>().await.unwrap());
    }
    let payment = payments[0].clone();
    assert!(
        payments.iter().all(|p| p["id"] == payment["id"]),
        "{payments:?}"
    );
    assert_eq!(payment["amount"], 3 * 90_000);
    assert_eq!(payment["orderId"], order_id);
    assert_eq!(balance(&app, 1).await, 500_000 - 3 * 90_000);
    // Nothing is left to pay.
    assert_problem(
        pay_order(&app, 1, &token, &order_id).await,
        409,
        "already_paid",
    )
    .await;
    eventually("the order to be confirmed", WAIT, || async {
        (get_as(&app, 1, &format!("/v1/orders/{order_id}")).await["status"] == "confirmed")
            .then_some(())
    })
    .await;
    let confirmed = get_as(&app, 1, &format!("/v1/orders/{order_id}")).await;
    assert!(
        (confirmed["seats"].as_array().unwrap().iter()).all(|seat| seat["status"] == "confirmed")
    );
    eventually("the payment to be confirmed", WAIT, || async {
        (get_as(&app, 1, &format!("/v1/payments/{}", payment["id"])).await["status"] == "confirmed")
            .then_some(())
    })
    .await;
    assert_invariants(&app).await;
}

#[tokio::test]
async fn an_order_with_one_taken_seat_holds_nothing_and_names_the_seat() {
    let app = spawn_app().await;
    let sale = sale(&app, 6).await;
    let token = app.admitted_token(1, &sale.concert).await;
    let other = app.admitted_token(2, &sale.concert).await;
    let taken = sale.seats[2];
    let resp = order(
        &app,
        2,
        &other,
        json!({"scheduleId": sale.schedule, "seatIds": [taken]}),
    )
    .await;
    assert_eq!(resp.status(), 201);
    let problem = assert_problem(
        order(
            &app,
            1,
            &token,
            json!({"scheduleId": sale.schedule, "seatIds": [sale.seats[1], taken, sale.seats[3]]}),
        )
        .await,
        409,
        "seat_unavailable",
    )
    .await;
    assert_eq!(problem["seats"], json!([taken]));
    assert_eq!(
        held_seats(&app, &sale.schedule).await,
        1,
        "only the other buyer's seat"
    );
    assert_eq!(
        count(
            &app.db,
            "SELECT COUNT(*) FROM reservations WHERE user_id = 1"
        )
        .await,
        0
    );
}

#[tokio::test]
async fn bad_orders_are_refused_and_hold_nothing() {
    let app = spawn_app().await;
    let sale = sale(&app, 8).await;
    let token = app.admitted_token(1, &sale.concert).await;
    let s = &sale.seats;
    for body in [
        json!({"scheduleId": sale.schedule}),
        json!({"scheduleId": sale.schedule, "seatIds": []}),
        json!({"scheduleId": sale.schedule, "seatIds": [s[0], s[0]]}),
        json!({"scheduleId": sale.schedule, "seatIds": [s[0]], "grade": "R", "quantity": 1}),
        json!({"scheduleId": sale.schedule, "grade": "R"}),
        json!({"scheduleId": sale.schedule, "grade": "R", "quantity": 0}),
        json!({"scheduleId": sale.schedule, "seatIds": "all"}),
    ] {
        assert_problem(order(&app, 1, &token, body).await, 400, "validation_failed").await;
    }
    assert_problem(
        order(
            &app,
            1,
            &token,
            json!({"scheduleId": sale.schedule, "seatIds": [s[0], s[1], s[2], s[3], s[4]]}),
        )
        .await,
        409,
        "hold_limit",
    )
    .await;
    assert_problem(
        order(
            &app,
            1,
            &token,
            json!({"scheduleId": sale.schedule, "seatIds": [999_999]}),
        )
        .await,
        404,
        "not_found",
    )
    .await;
    let problem = assert_problem(
        order(
            &app,
            1,
            &token,
            json!({"scheduleId": sale.schedule, "grade": "VIP", "quantity": 2}),
        )
        .await,
        409,
        "seat_unavailable",
    )
    .await;
    assert_eq!(problem["seats"], json!([]));
    assert_problem(
        app.post("/v1/payments")
            .bearer_auth(app.user_token(1))
            .header("x-queue-token", &token)
            .json(&json!({"orderId": 1, "reservationId": 1}))
            .send()
            .await
            .unwrap(),
        400,
        "validation_failed",
    )
    .await;
    assert_eq!(held_seats(&app, &sale.schedule).await, 0);
}

#[tokio::test]
async fn best_available_seats_a_party_together_in_the_front_most_row() {
    let app = spawn_app().await;
    let starts_at = (chrono::Utc::now() + TimeDelta::days(30)).to_rfc3339();
    let row = |label: &str| json!({"grade": "R", "price": 1_000, "count": 5, "row": label});
    let created = app
        .create_concert(&json!({
            "title": "Rows",
            "venue": "Hall",
            "schedules": [{"startsAt": starts_at, "seats": [row("1"), row("2"), row("3")]}]
        }))
        .await;
    let (concert, schedule) = (created["id"].clone(), created["schedules"][0]["id"].clone());
    let token = app.admitted_token(1, &concert).await;
    let other = app.admitted_token(2, &concert).await;
    // Seats 1, 2 and 4 of row 1 are taken: row 1 has no three together.
    let row_one: Vec<i64> = crate::helpers::column(
        &app.db,
        &format!("SELECT id FROM seats WHERE schedule_id = {schedule} ORDER BY number LIMIT 5"),
    )
    .await;
    let resp = order(
        &app,
        2,
        &other,
        json!({"scheduleId": schedule, "seatIds": [row_one[0], row_one[1], row_one[3]]}),
    )
    .await;
    assert_eq!(resp.status(), 201);
    let resp = order(
        &app,
        1,
        &token,
        json!({"scheduleId": schedule, "grade": "R", "quantity": 3}),
    )
    .await;
    assert_eq!(resp.status(), 201);
    let placed: Value = resp.json().await.unwrap();
    let rows: Vec<&Value> = placed["seats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["row"])
        .collect();
    assert_eq!(
        rows,
        vec!["2", "2", "2"],
        "together, in the front-most row with room"
    );
    let numbers: Vec<i64> = (placed["seats"].as_array().unwrap().iter())
        .map(|s| s["number"].as_i64().unwrap())
        .collect();
    assert_eq!(
        numbers,
        vec![6, 7, 8],
        "from the row's start: no lone seat left"
    );
}

/// 200 buyers race for overlapping orders of four seats on 40 seats: no
/// order is held in part, no seat is in two orders, every paid order is
/// confirmed whole, and the money adds up.
#[tokio::test]
async fn a_crowd_racing_for_overlapping_orders_never_splits_or_shares_a_seat() {
    let app = spawn_app().await;
    let sale = sale(&app, 40).await;
    let buyers = tokens(&app, 1..=200, &sale.concert).await;
    join_all(
        buyers
            .iter()
            .map(|(user, _)| charge(&app, *user, json!(1_000_000))),
    )
    .await;
    // Buyer n wants four seats starting at a spot that overlaps its
    // neighbours' (every seat is wanted by about 20 buyers).
    let wanted = |user: i64| -> Vec<i64> {
        let start = ((user * 7) % 37) as usize;
        sale.seats[start..start + 4].to_vec()
    };
    let (app_ref, schedule, wanted_ref) = (&app, &sale.schedule, &wanted);
    let results = join_all(buyers.iter().map(|(user, token)| async move {
        let resp = order(
            app_ref,
            *user,
            token,
            json!({"scheduleId": schedule, "seatIds": wanted_ref(*user)}),
        )
        .await;
        (
            *user,
            token,
            resp.status().as_u16(),
            resp.json::<Value>().await.unwrap(),
        )
    }))
    .await;
    let mut won = Vec::new();
    let mut seats_taken = HashSet::new();
    for (user, token, status, body) in &results {
        match status {
            201 => {
                let seats = seat_ids(body);
                assert_eq!(seats.len(), 4, "a whole order");
                assert_eq!(seats, wanted(*user));
                for seat in seats {
                    assert!(seats_taken.insert(seat), "seat {seat} in two orders");
                }
                won.push((
                    *user,
                    (*token).clone(),
                    body["id"].clone(),
                    body["amount"].as_i64().unwrap(),
                ));
            }
            409 => assert_eq!(body["code"], "seat_unavailable", "{body}"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(!won.is_empty());
    assert!(won.len() <= 10, "40 seats hold at most ten orders of four");
    let held = count(
        &app.db,
        &format!(
            "SELECT COUNT(*) FROM reservations WHERE schedule_id = {}",
            sale.schedule
        ),
    )
    .await;
    assert_eq!(
        held as usize,
        4 * won.len(),
        "no partial order left anything held"
    );
    // Every winner pays; the saga confirms each order whole.
    let paid = join_all(
        won.iter()
            .map(|(user, token, order, _)| pay_order(&app, *user, token, order)),
    )
    .await;
    assert!(paid.iter().all(|resp| resp.status() == 201));
    eventually("every order confirmed", WAIT, || async {
        (count(
            &app.db,
            "SELECT COUNT(*) FROM reservations WHERE status = 'confirmed'",
        )
        .await
            == 4 * won.len() as i64)
            .then_some(())
    })
    .await;
    for (user, _, order, amount) in &won {
        assert_eq!(balance(&app, *user).await, 1_000_000 - amount);
        assert_eq!(
            get_as(&app, *user, &format!("/v1/orders/{order}")).await["status"],
            "confirmed"
        );
    }
    println!(
        "contention: 200 buyers, {} orders of four won, {} refused, {} seats sold of 40",
        won.len(),
        results.len() - won.len(),
        seats_taken.len()
    );
    assert_invariants(&app).await;
}
