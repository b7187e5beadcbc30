//! The door over HTTP: staff scan a ticket's code; the first scan admits,
//! every later one is told the first gate and time; a user's token, a
//! tampered code, another show's code and a refunded ticket's are
//! refused; fifty scans of one code at once admit exactly one.

use boxoffice::auth::domain::Role;
use futures::future::join_all;
use serde_json::{Value, json};

use crate::{
    helpers::{TestApp, assert_problem, outbox_payloads, spawn_app},
    sales::{confirmed_ticket_on, sale},
    tickets::{refund_until_void, tickets_of},
};

async fn scan(app: &TestApp, token: &str, body: Value) -> reqwest::Response {
    app.post("/v1/checkins")
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// A ticket of `user`'s for a seat bought on a fresh sale: (ticket, schedule).
async fn bought_ticket(app: &TestApp, user: i64) -> (Value, Value) {
    let sale = sale(app, 2).await;
    confirmed_ticket_on(app, user, &sale, sale.seats[0]).await;
    (tickets_of(app, user, 1).await.remove(0), sale.schedule)
}

#[tokio::test]
async fn staff_admit_a_ticket_once_and_refuse_the_rest() {
    let app = spawn_app().await;
    let (ticket, schedule) = bought_ticket(&app, 61).await;
    let code = ticket["code"].as_str().unwrap();
    let staff = app.token(7_000, Role::Staff);

    let by_user = scan(
        &app,
        &app.user_token(61),
        json!({"code": code, "gate": "north"}),
    )
    .await;
    assert_problem(by_user, 403, "forbidden").await;

    let other_show =
        json!({"code": code, "gate": "north", "scheduleId": schedule.as_i64().unwrap() + 1_000});
    assert_problem(scan(&app, &staff, other_show).await, 409, "wrong_schedule").await;

    let mut parts: Vec<String> = code.split('.').map(str::to_owned).collect();
    let other_seat = ticket["seatId"].as_i64().unwrap() + 1;
    let claims =
        json!({"tid": ticket["id"], "sch": schedule, "seat": other_seat, "sub": 61, "ver": 1});
    parts[1] = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        claims.to_string(),
    );
    let tampered = json!({"code": parts.join("."), "gate": "north"});
    assert_problem(scan(&app, &staff, tampered).await, 422, "invalid_code").await;
    let no_gate = json!({"code": code, "gate": ""});
    assert_problem(scan(&app, &staff, no_gate).await, 400, "validation_failed").await;

    let first = scan(
        &app,
        &staff,
        json!({"code": code, "gate": "north", "scheduleId": schedule}),
    )
    .await;
    assert_eq!(first.status(), 200);
    let admitted: Value = first.json().await.unwrap();
    assert_eq!(admitted["ticketId"], ticket["id"]);
    assert_eq!(admitted["seat"], ticket["seatId"]);
    assert_eq!(admitted["holder"], 61);
    assert_eq!(admitted["scheduleId"], schedule);
    assert_eq!(admitted["gate"], "north");

    let admin = app.admin_token();
    let again = scan(&app, &admin, json!({"code": code, "gate": "south"})).await;
    let refused = assert_problem(again, 409, "already_checked_in").await;
    assert_eq!(refused["gate"], "north", "the first scan's gate");
    assert_eq!(refused["at"], admitted["at"], "the first scan's time");

    let events = outbox_payloads(&app.db, "TicketCheckedIn").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["ticketId"], ticket["id"]);
    assert_eq!(events[0]["gate"], "north");
}

#[tokio::test]
async fn fifty_concurrent_scans_at_ten_gates_admit_exactly_one() {
    let app = spawn_app().await;
    let (ticket, _) = bought_ticket(&app, 62).await;
    let code = ticket["code"].as_str().unwrap();
    let staff = app.token(7_001, Role::Staff);
    let scans = (0..50).map(|i| {
        let body = json!({"code": code, "gate": format!("gate-{}", i % 10)});
        let (app, staff) = (&app, &staff);
        async move {
            let resp = scan(app, staff, body).await;
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap())
        }
    });
    let answers = join_all(scans).await;
    let admitted: Vec<&Value> = answers
        .iter()
        .filter(|(status, _)| *status == 200)
        .map(|(_, body)| body)
        .collect();
    assert_eq!(admitted.len(), 1, "{answers:?}");
    for (status, body) in &answers {
        if *status != 200 {
            assert_eq!(*status, 409, "{body}");
            assert_eq!(body["code"], "already_checked_in");
            assert_eq!(body["gate"], admitted[0]["gate"]);
            assert_eq!(body["at"], admitted[0]["at"]);
        }
    }
    assert_eq!(outbox_payloads(&app.db, "TicketCheckedIn").await.len(), 1);
}

#[tokio::test]
async fn a_refunded_tickets_code_is_refused_as_void() {
    let app = spawn_app().await;
    let sale = sale(&app, 2).await;
    let (_, _, payment) = confirmed_ticket_on(&app, 63, &sale, sale.seats[0]).await;
    let ticket = tickets_of(&app, 63, 1).await.remove(0);
    refund_until_void(&app, 63, &payment, &ticket["id"]).await;
    let staff = app.token(7_002, Role::Staff);
    let body = json!({"code": ticket["code"], "gate": "north"});
    assert_problem(scan(&app, &staff, body).await, 409, "ticket_void").await;
    assert!(outbox_payloads(&app.db, "TicketCheckedIn").await.is_empty());
}

#[tokio::test]
async fn offline_scanners_read_a_schedules_tickets_with_their_door_status() {
    let app = spawn_app().await;
    let (ticket, schedule) = bought_ticket(&app, 64).await;
    let staff = app.token(7_003, Role::Staff);
    let path = format!("/v1/schedules/{schedule}/checkin-list?limit=10");
    let list = |token: String| {
        let request = app.get(&path).bearer_auth(token);
        async move { request.send().await.unwrap() }
    };
    assert_problem(list(app.user_token(64)).await, 403, "forbidden").await;

    let before: Value = list(staff.clone()).await.json().await.unwrap();
    let line = json!({"ticketId": ticket["id"], "version": 1, "status": "valid"});
    assert_eq!(before, json!({"items": [line]}));

    let body = json!({"code": ticket["code"], "gate": "north"});
    assert_eq!(scan(&app, &staff, body).await.status(), 200);
    let after: Value = list(staff).await.json().await.unwrap();
    assert_eq!(after["items"][0]["status"], "checked_in");
}

#[tokio::test]
async fn operators_see_the_door_sold_admitted_per_gate_and_the_refusals() {
    let app = spawn_app().await;
    let sale = sale(&app, 3).await;
    confirmed_ticket_on(&app, 65, &sale, sale.seats[0]).await;
    confirmed_ticket_on(&app, 66, &sale, sale.seats[1]).await;
    let ticket = tickets_of(&app, 65, 1).await.remove(0);
    let schedule = sale.schedule.as_i64().unwrap();
    let staff = app.token(7_004, Role::Staff);
    let at = |gate: &str, code: &Value| json!({"code": code, "gate": gate, "scheduleId": schedule});

    assert_eq!(
        scan(&app, &staff, at("north", &ticket["code"]))
            .await
            .status(),
        200
    );
    let again = scan(&app, &staff, at("south", &ticket["code"])).await;
    assert_problem(again, 409, "already_checked_in").await;
    let forged = scan(&app, &staff, at("east", &json!("not.a.code"))).await;
    assert_problem(forged, 422, "invalid_code").await;

    let path = format!("/v1/admin/schedules/{schedule}/door");
    let by_user = app.get(&path).bearer_auth(app.user_token(65)).send().await;
    assert_problem(by_user.unwrap(), 403, "forbidden").await;
    let unknown = app
        .get(&format!("/v1/admin/schedules/{}/door", schedule + 1_000))
        .bearer_auth(app.admin_token())
        .send()
        .await;
    assert_problem(unknown.unwrap(), 404, "not_found").await;

    let door = app.get_json(&path).await;
    assert_eq!(door["scheduleId"], schedule);
    assert_eq!(door["ticketsSold"], 2);
    assert_eq!(door["checkedIn"], 1);
    let mut just_now = vec![0; 15];
    just_now[14] = 1;
    assert_eq!(
        door["gates"],
        json!([{"gate": "north", "checkedIn": 1, "lastMinute": 1, "perMinute": just_now}])
    );
    assert_eq!(door["checkinsPerMinute"], json!(just_now));
    let refusals = door["recentRefusals"].as_array().unwrap();
    let seen: Vec<_> = refusals
        .iter()
        .map(|r| {
            (
                r["gate"].clone(),
                r["reason"].clone(),
                r["ticketId"].clone(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (json!("east"), json!("invalid_code"), Value::Null),
            (
                json!("south"),
                json!("already_checked_in"),
                ticket["id"].clone()
            ),
        ],
        "newest first: {door}"
    );
    assert!(refusals.iter().all(|r| r["at"].is_string()));
}
