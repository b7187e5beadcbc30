//! Handing tickets on and cancelling them one by one, over HTTP: a
//! transferred ticket's old code is refused at the door and its new one
//! admits the new holder; one seat of an order of two is refunded alone
//! (points, seat, void ticket, a partial payment), then the rest with the
//! whole order.

use boxoffice::auth::domain::Role;
use futures::future::join_all;
use serde_json::{Value, json};

use crate::{
    door::{bought_ticket, scan},
    helpers::{TestApp, assert_problem, count, eventually, outbox_payloads, spawn_app},
    orders::{order, pay_order},
    sales::{WAIT, assert_invariants, balance, charge, get_as, sale},
    tickets::tickets_of,
};

async fn transfer(app: &TestApp, user: i64, id: &Value, to: Value) -> reqwest::Response {
    app.post(&format!("/v1/tickets/{id}/transfer"))
        .bearer_auth(app.user_token(user))
        .json(&json!({"toUser": to}))
        .send()
        .await
        .unwrap()
}

async fn cancel_one(app: &TestApp, user: i64, id: &Value) -> reqwest::Response {
    app.post(&format!("/v1/tickets/{id}/refunds"))
        .bearer_auth(app.user_token(user))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_transferred_tickets_old_code_is_superseded_and_the_new_one_admits_the_new_holder() {
    let app = spawn_app().await;
    let (ticket, schedule) = bought_ticket(&app, 81).await;
    let id = &ticket["id"];
    for to in [json!(81), json!(0)] {
        assert_problem(transfer(&app, 81, id, to).await, 400, "validation_failed").await;
    }
    assert_problem(transfer(&app, 82, id, json!(83)).await, 404, "not_found").await;

    // Two transfers at once: exactly one wins.
    let answers = join_all([82, 83].map(|to| {
        let app = &app;
        async move {
            let resp = transfer(app, 81, id, json!(to)).await;
            (
                to,
                resp.status().as_u16(),
                resp.json::<Value>().await.unwrap(),
            )
        }
    }))
    .await;

    let won: Vec<_> = answers.iter().filter(|(_, s, _)| *s == 200).collect();
    assert_eq!(won.len(), 1, "{answers:?}");
    for (_, status, body) in &answers {
        if *status != 200 {
            // Lost the race (409), or read the ticket after it moved (404).
            assert!(
                (*status == 409 && body["code"] == "ticket_changed") || *status == 404,
                "{status} {body}"
            );
        }
    }
    let (holder, _, moved) = won[0];
    assert_eq!(moved["version"], 2);
    assert_eq!(moved["status"], "valid");
    assert_ne!(moved["code"], ticket["code"], "a new code");
    assert_eq!(tickets_of(&app, *holder, 1).await[0]["id"], *id);
    let old = get_as(&app, 81, "/v1/users/me/tickets").await;
    assert_eq!(old["items"], json!([]), "the old holder no longer lists it");
    let events = outbox_payloads(&app.db, "TicketTransferred").await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        (&events[0]["fromUserId"], &events[0]["toUserId"]),
        (&json!(81), &json!(holder))
    );

    let staff = app.token(7_100, Role::Staff);
    let list = app
        .get(&format!("/v1/schedules/{schedule}/checkin-list"))
        .bearer_auth(&staff)
        .send()
        .await
        .unwrap();
    let list: Value = list.json().await.unwrap();
    assert_eq!(
        list["items"][0]["version"], 2,
        "offline scanners see the new version"
    );
    let stale = json!({"code": ticket["code"], "gate": "north"});
    assert_problem(scan(&app, &staff, stale).await, 409, "ticket_superseded").await;
    let fresh = scan(
        &app,
        &staff,
        json!({"code": moved["code"], "gate": "north"}),
    )
    .await;
    assert_eq!(fresh.status(), 200);
    let admitted: Value = fresh.json().await.unwrap();
    assert_eq!(admitted["holder"], *holder);

    let after = transfer(&app, *holder, id, json!(81)).await;
    assert_problem(after, 409, "already_checked_in").await;
}

#[tokio::test]
async fn one_ticket_of_an_order_of_two_is_refunded_alone_then_the_rest_with_the_order() {
    let app = spawn_app().await;
    let sale = sale(&app, 4).await;
    let user = 91;
    let token = app.admitted_token(user, &sale.concert).await;
    let seats = vec![sale.seats[0], sale.seats[1]];
    let placed = order(
        &app,
        user,
        &token,
        json!({"scheduleId": sale.schedule, "seatIds": seats}),
    )
    .await;
    assert_eq!(placed.status(), 201);
    let placed: Value = placed.json().await.unwrap();
    assert_eq!(charge(&app, user, json!(500_000)).await.status(), 201);
    let paid = pay_order(&app, user, &token, &placed["id"]).await;
    assert_eq!(paid.status(), 201);
    let payment: Value = paid.json().await.unwrap();
    let tickets = tickets_of(&app, user, 2).await;
    let (first, second) = (&tickets[0], &tickets[1]);
    let price = (placed["seats"].as_array().unwrap().iter())
        .find(|seat| seat["id"] == first["seatId"])
        .expect("the ticket's seat is in the order")["price"]
        .as_i64()
        .unwrap();
    let amount = payment["amount"].as_i64().unwrap();
    let start = balance(&app, user).await;

    assert_problem(cancel_one(&app, 92, &first["id"]).await, 404, "not_found").await;
    // Retries at once cancel it once.
    let answers = join_all((0..3).map(|_| cancel_one(&app, user, &first["id"]))).await;
    let mut accepted = 0;
    for resp in answers {
        if resp.status() == 202 {
            accepted += 1;
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["paymentId"], payment["id"]);
        } else {
            // Under way still, or done already (the runner was quick).
            assert_eq!(resp.status(), 409);
            let refused: Value = resp.json().await.unwrap();
            assert!(
                refused["code"] == "already_cancelled" || refused["code"] == "ticket_void",
                "{refused}"
            );
        }
    }
    assert_eq!(accepted, 1);

    let path = format!("/v1/tickets/{}", first["id"]);
    eventually("the ticket to be void", WAIT, || async {
        (get_as(&app, user, &path).await["status"] == "void").then_some(())
    })
    .await;
    let payment_path = format!("/v1/payments/{}", payment["id"]);
    let partial = eventually("the seat's refund", WAIT, || async {
        let now = get_as(&app, user, &payment_path).await;
        (now["refundedAmount"] == price).then_some(now)
    })
    .await;
    assert_eq!(partial["status"], "confirmed", "one seat is still sold");
    assert_eq!(balance(&app, user).await, start + price);
    let freed = first["seatId"].as_i64().unwrap();
    let available = count(
        &app.db,
        &format!("SELECT COUNT(*) FROM seats WHERE id = {freed} AND status = 'available'"),
    )
    .await;
    assert_eq!(available, 1, "the seat is on sale again");
    let kept = get_as(&app, user, &format!("/v1/tickets/{}", second["id"])).await;
    assert_eq!(kept["status"], "valid");
    assert_problem(
        cancel_one(&app, user, &first["id"]).await,
        409,
        "ticket_void",
    )
    .await;
    assert_invariants(&app).await;

    // The whole order now refunds only the rest.
    let whole = app
        .post(&format!("{payment_path}/refunds"))
        .bearer_auth(app.user_token(user))
        .send()
        .await
        .unwrap();
    assert_eq!(whole.status(), 202);
    let refunded = eventually("the whole refund", WAIT, || async {
        let now = get_as(&app, user, &payment_path).await;
        (now["status"] == "refunded").then_some(now)
    })
    .await;
    assert_eq!(refunded["refundedAmount"], payment["amount"]);
    assert_eq!(balance(&app, user).await, start + amount);
    let path = format!("/v1/tickets/{}", second["id"]);
    eventually("the other ticket to be void", WAIT, || async {
        (get_as(&app, user, &path).await["status"] == "void").then_some(())
    })
    .await;
    assert_invariants(&app).await;
}

#[tokio::test]
async fn a_schedule_cancellation_voids_every_ticket_and_refunds_what_is_still_paid() {
    let app = spawn_app().await;
    let sale = sale(&app, 4).await;
    let user = 95;
    let token = app.admitted_token(user, &sale.concert).await;
    let body = json!({"scheduleId": sale.schedule, "seatIds": [sale.seats[0], sale.seats[1]]});
    let placed: Value = order(&app, user, &token, body).await.json().await.unwrap();
    assert_eq!(charge(&app, user, json!(500_000)).await.status(), 201);
    let paid = pay_order(&app, user, &token, &placed["id"]).await;
    assert_eq!(paid.status(), 201);
    let payment: Value = paid.json().await.unwrap();
    let tickets = tickets_of(&app, user, 2).await;
    let start = balance(&app, user).await;
    // One ticket handed on, the other cancelled alone first.
    assert_eq!(
        transfer(&app, user, &tickets[0]["id"], json!(96))
            .await
            .status(),
        200
    );
    assert_eq!(
        cancel_one(&app, user, &tickets[1]["id"]).await.status(),
        202
    );
    let payment_path = format!("/v1/payments/{}", payment["id"]);
    eventually("the seat's refund", WAIT, || async {
        let now = get_as(&app, user, &payment_path).await;
        (now["refundedAmount"].as_i64() > Some(0)).then_some(())
    })
    .await;

    let cancel = app
        .post(&format!("/v1/admin/schedules/{}/cancel", sale.schedule))
        .bearer_auth(app.admin_token())
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 202);
    let staff = app.token(7_101, Role::Staff);
    let list = format!("/v1/schedules/{}/checkin-list", sale.schedule);
    eventually("every ticket void", WAIT, || async {
        let page: Value = (app.get(&list).bearer_auth(&staff).send().await.unwrap())
            .json()
            .await
            .unwrap();
        let items = page["items"].as_array().cloned().unwrap_or_default();
        (items.len() == 2 && items.iter().all(|t| t["status"] == "void")).then_some(())
    })
    .await;
    let refunded = eventually("the rest refunded", WAIT, || async {
        let now = get_as(&app, user, &payment_path).await;
        (now["status"] == "refunded").then_some(now)
    })
    .await;
    assert_eq!(refunded["refundedAmount"], payment["amount"]);
    let amount = payment["amount"].as_i64().unwrap();
    assert_eq!(balance(&app, user).await, start + amount, "all of it, once");
    let new_holder = get_as(&app, 96, &format!("/v1/tickets/{}", tickets[0]["id"])).await;
    assert_eq!(new_holder["status"], "void");
    assert_invariants(&app).await;
}

/// The holder cancels a ticket while also handing it on, and staff scan
/// it, all at once: exactly one of the three lands. The cancellation
/// voids the code in its own transaction, so the ticket is never both
/// refunded and handed on or admitted.
#[tokio::test]
async fn a_cancellation_a_transfer_and_a_scan_of_one_ticket_at_once_one_lands() {
    let app = spawn_app().await;
    let staff = app.token(7_200, Role::Staff);
    let mut won = [0; 3];
    for round in 0..6 {
        let holder = 2_100 + round;
        let (ticket, _) = bought_ticket(&app, holder).await;
        let id = &ticket["id"];
        let door = json!({"code": ticket["code"], "gate": "east"});
        let (cancelled, moved, scanned) = tokio::join!(
            cancel_one(&app, holder, id),
            transfer(&app, holder, id, json!(2_900)),
            scan(&app, &staff, door),
        );
        let landed = [
            cancelled.status() == 202,
            moved.status() == 200,
            scanned.status() == 200,
        ];
        for (status, body) in [
            (cancelled.status(), cancelled.text().await.unwrap()),
            (moved.status(), moved.text().await.unwrap()),
            (scanned.status(), scanned.text().await.unwrap()),
        ] {
            assert!(
                [200, 202, 404, 409].contains(&status.as_u16()),
                "{status} {body}"
            );
        }
        assert_eq!(
            landed.iter().filter(|l| **l).count(),
            1,
            "round {round}: {landed:?}"
        );
        let which = landed.iter().position(|l| *l).unwrap();
        won[which] += 1;
        let is = |condition: &str| {
            let query = format!("SELECT COUNT(*) FROM tickets WHERE id = {id} AND {condition}");
            let db = &app.db;
            async move { count(db, &query).await == 1 }
        };
        let step = format!("refund:{}", ticket["reservationId"]);
        let refunds = count(
            &app.db,
            &format!("SELECT COUNT(*) FROM compensations WHERE step = '{step}'"),
        )
        .await;
        let void = is("status = 'void'").await;
        let moved = is("user_id = 2900").await;
        let admitted = is("checked_in_at IS NOT NULL").await;
        let outcome = (void, moved, admitted, refunds);
        match which {
            0 => assert_eq!(outcome, (true, false, false, 1), "cancelled"),
            1 => assert_eq!(outcome, (false, true, false, 0), "handed on"),
            _ => assert_eq!(outcome, (false, false, true, 0), "admitted"),
        }
    }
    eprintln!("cancel / transfer / scan races: {won:?} won");
    assert_invariants(&app).await;
}
