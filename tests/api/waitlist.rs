//! The waitlist over HTTP: joining a sold-out schedule, leaving, and seats
//! freed again (a released hold, a cancelled ticket) held for the next in
//! line, once each, with a `waitlist_offer` notification.

use serde_json::{Value, json};

use crate::{
    helpers::{TestApp, assert_problem, count, eventually, outbox_payloads, spawn_app},
    sales::{Sale, WAIT, assert_invariants, charge, get_as, hold, pay, sale},
};

/// Sells the sale out: `user` holds every seat; answers the first hold.
pub(crate) async fn sell_out(app: &TestApp, user: i64, sale: &Sale) -> Value {
    sell_out_holds(app, user, sale).await.swap_remove(0)
}

/// Sells the sale out: `user` holds every seat; answers the holds.
async fn sell_out_holds(app: &TestApp, user: i64, sale: &Sale) -> Vec<Value> {
    let token = app.admitted_token(user, &sale.concert).await;
    let mut holds = Vec::new();
    for seat in &sale.seats {
        let resp = hold(app, user, &token, sale, *seat).await;
        assert_eq!(resp.status(), 201);
        holds.push(resp.json::<Value>().await.unwrap());
    }
    holds
}

/// The user gives the hold back (204).
pub(crate) async fn give_back(app: &TestApp, user: i64, held: &Value) {
    let resp = app
        .client
        .delete(app.url(&format!("/v1/reservations/{}", held["id"])))
        .bearer_auth(app.user_token(user))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
}

pub(crate) async fn waitlist(
    app: &TestApp,
    method: reqwest::Method,
    user: i64,
    schedule: &Value,
) -> reqwest::Response {
    app.client
        .request(
            method,
            app.url(&format!("/v1/schedules/{schedule}/waitlist")),
        )
        .bearer_auth(app.user_token(user))
        .send()
        .await
        .unwrap()
}

/// Joins the schedule's waitlist for `quantity` seats (as the query
/// parameter says it).
async fn join_for(app: &TestApp, user: i64, schedule: &Value, quantity: &str) -> reqwest::Response {
    app.post(&format!(
        "/v1/schedules/{schedule}/waitlist?quantity={quantity}"
    ))
    .bearer_auth(app.user_token(user))
    .send()
    .await
    .unwrap()
}

/// The user's reservations (newest first) once one is held on `seat`.
async fn offered(app: &TestApp, user: i64, seat: i64) -> Value {
    eventually("the seat to be offered", WAIT, || async {
        get_as(app, user, "/v1/users/me/reservations").await["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["seatId"] == seat && r["status"] == "held")
            .cloned()
    })
    .await
}

/// Waits for the user's `waitlist_offer` notification; returns its message.
async fn offer_notice(app: &TestApp, user: i64) -> String {
    eventually("the waitlist_offer notification", WAIT, || async {
        get_as(app, user, "/v1/users/me/notifications").await["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["kind"] == "waitlist_offer")
            .map(|n| n["message"].as_str().unwrap().to_owned())
    })
    .await
}

#[tokio::test]
async fn freed_seats_go_to_the_waitlist_in_order_once_each() {
    use reqwest::Method;
    let app = spawn_app().await;
    let sale = sale(&app, 2).await;
    let seat = sale.seats[0];
    let (bob, carol, dave) = (62, 63, 64);

    assert_problem(
        waitlist(&app, Method::POST, bob, &sale.schedule).await,
        409,
        "seats_available",
    )
    .await;

    let alice = 61;
    let held = sell_out(&app, alice, &sale).await;

    let joined = waitlist(&app, Method::POST, bob, &sale.schedule).await;
    assert_eq!(joined.status(), 201);
    assert_eq!(
        joined.json::<Value>().await.unwrap(),
        json!({"position": 1, "quantity": 1})
    );
    let joined = waitlist(&app, Method::POST, carol, &sale.schedule).await;
    assert_eq!(joined.json::<Value>().await.unwrap()["position"], 2);
    assert_problem(
        waitlist(&app, Method::POST, bob, &sale.schedule).await,
        409,
        "already_waitlisted",
    )
    .await;
    let place = waitlist(&app, Method::GET, carol, &sale.schedule).await;
    assert_eq!(place.json::<Value>().await.unwrap()["position"], 2);
    assert_problem(
        waitlist(&app, Method::DELETE, dave, &sale.schedule).await,
        404,
        "not_found",
    )
    .await;
    assert_problem(
        waitlist(&app, Method::POST, dave, &json!(424242)).await,
        404,
        "not_found",
    )
    .await;
    // Dave joins and leaves: the line is Bob, Carol again.
    assert_eq!(
        waitlist(&app, Method::POST, dave, &sale.schedule)
            .await
            .status(),
        201
    );
    assert_eq!(
        waitlist(&app, Method::DELETE, dave, &sale.schedule)
            .await
            .status(),
        204
    );

    // Alice gives the seat back: it is held for Bob.
    give_back(&app, alice, &held).await;
    let offer = offered(&app, bob, seat).await;
    let notice = offer_notice(&app, bob).await;
    assert!(
        notice.contains(&format!("reservation {}", offer["id"])),
        "{notice}"
    );
    assert_problem(
        waitlist(&app, Method::GET, bob, &sale.schedule).await,
        404,
        "not_found",
    )
    .await;
    let place = waitlist(&app, Method::GET, carol, &sale.schedule).await;
    assert_eq!(place.json::<Value>().await.unwrap()["position"], 1);

    // Bob pays for the offer (with an admitted queue token) and then
    // cancels the ticket: the seat is held for Carol.
    let (_, reservation, payment) = confirmed_ticket_on_offer(&app, bob, &sale, &offer).await;
    assert_eq!(reservation["id"], offer["id"]);
    let resp = app
        .post(&format!("/v1/payments/{}/refunds", payment["id"]))
        .bearer_auth(app.user_token(bob))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let carols = offered(&app, carol, seat).await;
    offer_notice(&app, carol).await;

    let offers = outbox_payloads(&app.db, "WaitlistOffered").await;
    let users: Vec<&Value> = offers.iter().map(|o| &o["userId"]).collect();
    assert_eq!(
        users,
        [&json!(bob), &json!(carol)],
        "one offer each, in order"
    );
    assert_eq!(offers[1]["reservationId"], carols["id"]);
    assert_eq!(
        count(
            &app.db,
            "SELECT COUNT(*) FROM waitlist WHERE status = 'waiting'"
        )
        .await,
        0
    );
    assert_invariants(&app).await;
}

/// A place waiting for two seats: one freed seat is not enough; the second
/// makes the offer, both seats held at once as one order in the waiting
/// user's name, named by the notification and paid by its `orderId`.
#[tokio::test]
async fn two_freed_seats_are_held_for_a_place_of_two_as_one_order_paid_by_its_id() {
    use reqwest::Method;
    let app = spawn_app().await;
    let sale = sale(&app, 3).await;
    let (alice, bob) = (81, 82);
    let holds = sell_out_holds(&app, alice, &sale).await;
    for bad in ["0", "5", "-1"] {
        assert_problem(
            join_for(&app, bob, &sale.schedule, bad).await,
            400,
            "validation_failed",
        )
        .await;
    }
    assert_eq!(count(&app.db, "SELECT COUNT(*) FROM waitlist").await, 0);
    let joined = join_for(&app, bob, &sale.schedule, "2").await;
    assert_eq!(joined.status(), 201);
    assert_eq!(
        joined.json::<Value>().await.unwrap(),
        json!({"position": 1, "quantity": 2})
    );
    let place = waitlist(&app, Method::GET, bob, &sale.schedule).await;
    assert_eq!(
        place.json::<Value>().await.unwrap(),
        json!({"position": 1, "quantity": 2})
    );

    give_back(&app, alice, &holds[0]).await;
    // One seat free: a place for two is not offered it, and joining for
    // one is refused while one is free.
    assert_problem(
        join_for(&app, 83, &sale.schedule, "1").await,
        409,
        "seats_available",
    )
    .await;
    give_back(&app, alice, &holds[1]).await;

    let order = eventually("the order of two to be held for bob", WAIT, || async {
        get_as(&app, bob, "/v1/users/me/orders").await["items"]
            .as_array()
            .unwrap()
            .first()
            .cloned()
    })
    .await;
    assert_eq!(order["status"], "held");
    let seats: Vec<&Value> = (order["seats"].as_array().unwrap().iter())
        .map(|seat| &seat["id"])
        .collect();
    assert_eq!(seats, [&json!(sale.seats[0]), &json!(sale.seats[1])]);
    let notice = offer_notice(&app, bob).await;
    for part in ["2 seats", &format!("order {}", order["id"])] {
        assert!(notice.contains(part), "{notice}");
    }
    let offers = outbox_payloads(&app.db, "WaitlistOffered").await;
    assert_eq!(offers.len(), 1, "one offer");
    assert_eq!(offers[0]["orderId"], order["id"]);
    assert_eq!(offers[0]["quantity"], 2);
    assert_problem(
        waitlist(&app, Method::GET, bob, &sale.schedule).await,
        404,
        "not_found",
    )
    .await;

    let token = app.admitted_token(bob, &sale.concert).await;
    charge(&app, bob, json!(500_000)).await;
    let resp = crate::orders::pay_order(&app, bob, &token, &order["id"]).await;
    assert_eq!(resp.status(), 201);
    let path = format!("/v1/orders/{}", order["id"]);
    eventually("the order to be confirmed", WAIT, || async {
        (get_as(&app, bob, &path).await["status"] == "confirmed").then_some(())
    })
    .await;
    assert_invariants(&app).await;
}

/// Pays for a hold the waitlist made (the buyer still needs an admitted
/// queue token) and waits for the confirmation.
async fn confirmed_ticket_on_offer(
    app: &TestApp,
    user: i64,
    sale: &Sale,
    offer: &Value,
) -> (String, Value, Value) {
    let token = app.admitted_token(user, &sale.concert).await;
    charge(app, user, json!(200_000)).await;
    let resp = pay(app, user, &token, &offer["id"]).await;
    assert_eq!(resp.status(), 201);
    let payment: Value = resp.json().await.unwrap();
    let path = format!("/v1/payments/{}", payment["id"]);
    eventually("the payment to be confirmed", WAIT, || async {
        (get_as(app, user, &path).await["status"] == "confirmed").then_some(())
    })
    .await;
    (token, offer.clone(), payment)
}

/// Sales close `--sales-close-minutes-before-start` before the show: a hold
/// and a waitlist join are refused with 409 `sales_closed` and leave
/// nothing behind (here the show is 30 days away and sales close 31 days
/// before it).
#[tokio::test]
async fn holds_and_waitlist_joins_are_refused_once_sales_close() {
    use reqwest::Method;
    let app = crate::helpers::spawn_app_with(|s| {
        s.sales_close_minutes_before_start = 31 * 24 * 60;
    })
    .await;
    let sale = sale(&app, 2).await;
    let token = app.admitted_token(61, &sale.concert).await;
    assert_problem(
        hold(&app, 61, &token, &sale, sale.seats[0]).await,
        409,
        "sales_closed",
    )
    .await;
    assert_problem(
        waitlist(&app, Method::POST, 62, &sale.schedule).await,
        409,
        "sales_closed",
    )
    .await;
    assert_eq!(count(&app.db, "SELECT COUNT(*) FROM reservations").await, 0);
    assert_eq!(count(&app.db, "SELECT COUNT(*) FROM waitlist").await, 0);
}

/// When sales close, the places still waiting end: each user hears it
/// (`waitlist_closed`), nobody is offered a seat any more, and one event
/// per place is written. Time is moved by starting the show now.
#[tokio::test]
async fn open_waitlist_places_end_with_a_notice_when_sales_close() {
    use reqwest::Method;
    use sea_orm::{ConnectionTrait, DatabaseBackend, Statement};
    let app = spawn_app().await;
    let sale = sale(&app, 2).await;
    sell_out(&app, 71, &sale).await;
    for user in [72, 73, 74] {
        assert_eq!(
            waitlist(&app, Method::POST, user, &sale.schedule)
                .await
                .status(),
            201
        );
    }
    assert_eq!(
        waitlist(&app, Method::DELETE, 73, &sale.schedule)
            .await
            .status(),
        204
    );

    let backend = app.db.get_database_backend();
    let sql = match backend {
        DatabaseBackend::Postgres => "UPDATE schedules SET starts_at = $1 WHERE id = $2",
        _ => "UPDATE schedules SET starts_at = ? WHERE id = ?",
    };
    app.db
        .execute_raw(Statement::from_sql_and_values(
            backend,
            sql,
            [
                chrono::Utc::now().into(),
                sale.schedule.as_i64().unwrap().into(),
            ],
        ))
        .await
        .unwrap();

    for user in [72, 74] {
        let notice = eventually("the waitlist_closed notification", WAIT, || async {
            get_as(&app, user, "/v1/users/me/notifications").await["items"]
                .as_array()
                .unwrap()
                .iter()
                .find(|n| n["kind"] == "waitlist_closed")
                .map(|n| n["message"].as_str().unwrap().to_owned())
        })
        .await;
        assert!(notice.contains("closed"), "{notice}");
        assert_problem(
            waitlist(&app, Method::GET, user, &sale.schedule).await,
            404,
            "not_found",
        )
        .await;
    }
    let closed = outbox_payloads(&app.db, "WaitlistClosed").await;
    assert_eq!(closed.len(), 2, "one event per place still waiting");
    assert_eq!(
        count(
            &app.db,
            "SELECT COUNT(*) FROM waitlist WHERE status = 'closed'"
        )
        .await,
        2
    );
    assert_eq!(
        count(
            &app.db,
            "SELECT COUNT(*) FROM waitlist WHERE status = 'left'"
        )
        .await,
        1,
        "who had left stays left"
    );
}
