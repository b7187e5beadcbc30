//! The door over HTTP: staff scan a ticket's code; the first scan admits,
//! every later one is told the first gate and time; a user's token, a
//! tampered code, another show's code and a refunded ticket's are
//! refused; fifty scans of one code at once admit exactly one. Offline
//! scanners upload their scans later (the earliest scan wins, even over an
//! online one made after it) and poll the check-in list for changes.

use boxoffice::auth::domain::Role;
use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use futures::future::join_all;
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};

use crate::{
    helpers::{TestApp, assert_problem, outbox_payloads, spawn_app},
    sales::{confirmed_ticket_on, sale},
    tickets::{refund_until_void, tickets_of},
};

pub(crate) async fn scan(app: &TestApp, token: &str, body: Value) -> reqwest::Response {
    app.post("/v1/checkins")
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// A ticket of `user`'s for a seat bought on a fresh sale: (ticket, schedule).
pub(crate) async fn bought_ticket(app: &TestApp, user: i64) -> (Value, Value) {
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

/// The one scan of `answers` (status, body) that admitted; every other
/// was told the first scan's gate and time.
pub(crate) fn one_admitted(answers: &[(u16, Value)]) -> &Value {
    let admitted: Vec<&Value> = answers
        .iter()
        .filter(|(status, _)| *status == 200)
        .map(|(_, body)| body)
        .collect();
    assert_eq!(admitted.len(), 1, "{answers:?}");
    for (status, body) in answers {
        if *status != 200 {
            assert_eq!(*status, 409, "{body}");
            assert_eq!(body["code"], "already_checked_in", "{body}");
            assert_eq!(body["gate"], admitted[0]["gate"], "the first scan's gate");
            assert_eq!(body["at"], admitted[0]["at"], "the first scan's time");
        }
    }
    admitted[0]
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
    one_admitted(&answers);
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
    assert_eq!(before["items"], json!([line]));

    let body = json!({"code": ticket["code"], "gate": "north"});
    assert_eq!(scan(&app, &staff, body).await.status(), 200);
    let after: Value = list(staff).await.json().await.unwrap();
    assert_eq!(after["items"][0]["status"], "checked_in");
}

async fn upload(app: &TestApp, token: &str, body: Value) -> reqwest::Response {
    app.post("/v1/checkins/batch")
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn time(value: &Value) -> DateTime<Utc> {
    value.as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn an_offline_upload_admits_the_earliest_scan_even_over_an_online_one_made_later() {
    let app = spawn_app().await;
    let (ticket, schedule) = bought_ticket(&app, 65).await;
    let code = ticket["code"].as_str().unwrap();
    let staff = app.token(7_004, Role::Staff);
    let now = Utc::now().trunc_subsecs(0);
    let minutes = |n| now + TimeDelta::minutes(n);
    let offline = |code: &str, gate: &str, at: DateTime<Utc>| json!({"code": code, "gate": gate, "scannedAt": at.to_rfc3339()});

    let online = scan(&app, &staff, json!({"code": code, "gate": "online"})).await;
    assert_eq!(online.status(), 200);

    let one = json!({"scans": [offline(code, "north", minutes(-3))]});
    let by_user = upload(&app, &app.user_token(65), one).await;
    assert_problem(by_user, 403, "forbidden").await;
    let too_many: Vec<Value> = (0..501).map(|_| offline(code, "g", minutes(-1))).collect();
    let refused = upload(&app, &staff, json!({"scans": too_many})).await;
    assert_problem(refused, 400, "validation_failed").await;
    let none = upload(&app, &staff, json!({"scans": []})).await;
    assert_problem(none, 400, "validation_failed").await;

    let scans = json!({"scheduleId": schedule, "scans": [
        offline(code, "south", minutes(-1)),
        offline(code, "north", minutes(-3)),
        offline("not.a.code", "north", minutes(-3)),
        offline(code, "north", minutes(20)),
    ]});
    let resp = upload(&app, &staff, scans).await;
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    let results = answer["results"].as_array().unwrap();
    let kinds: Vec<&str> = results
        .iter()
        .map(|r| r["result"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "already_checked_in",
            "admitted",
            "invalid_code",
            "invalid_scan_time"
        ],
        "{answer}"
    );
    for answered in &results[..2] {
        assert_eq!(answered["ticketId"], ticket["id"]);
        assert_eq!(answered["gate"], "north", "the earliest scan's gate");
        assert_eq!(time(&answered["at"]), minutes(-3));
    }
    assert_eq!(results[0]["code"], code);
    assert!(results[2].get("ticketId").is_none());

    let again = scan(&app, &staff, json!({"code": code, "gate": "online"})).await;
    let refused = assert_problem(again, 409, "already_checked_in").await;
    assert_eq!(refused["gate"], "north", "the online answer agrees");
    assert_eq!(time(&refused["at"]), minutes(-3));

    let events = outbox_payloads(&app.db, "TicketCheckedIn").await;
    let gates: Vec<(&Value, &Value)> = events.iter().map(|e| (&e["gate"], &e["offline"])).collect();
    assert_eq!(
        gates,
        [
            (&json!("online"), &json!(false)),
            (&json!("north"), &json!(true))
        ]
    );
}

#[tokio::test]
async fn the_change_cursor_lists_the_tickets_changed_between_two_polls() {
    let app = spawn_app().await;
    let sale = sale(&app, 2).await;
    confirmed_ticket_on(&app, 66, &sale, sale.seats[0]).await;
    confirmed_ticket_on(&app, 67, &sale, sale.seats[1]).await;
    let first = tickets_of(&app, 66, 1).await.remove(0);
    let second = tickets_of(&app, 67, 1).await.remove(0);
    // Both issued long ago, as far as the change cursor goes.
    let aged = format!(
        "UPDATE tickets SET updated_at = '2020-01-01T00:00:00+00:00' WHERE schedule_id = {}",
        sale.schedule
    );
    app.db.execute_unprepared(&aged).await.unwrap();
    let staff = app.token(7_005, Role::Staff);
    let list = |query: String| {
        let path = format!("/v1/schedules/{}/checkin-list?{query}", sale.schedule);
        let request = app.get(&path).bearer_auth(&staff);
        async move {
            let resp = request.send().await.unwrap();
            assert_eq!(resp.status(), 200);
            resp.json::<Value>().await.unwrap()
        }
    };
    let ids = |page: &Value| -> Vec<Value> {
        let items = page["items"].as_array().unwrap();
        items.iter().map(|i| i["ticketId"].clone()).collect()
    };

    let full = list("limit=1".into()).await;
    assert_eq!(ids(&full), [first["id"].clone()]);
    let cursor = full["sinceCursor"]
        .as_i64()
        .expect("the first page's cursor");
    let rest = list(format!("limit=1&after={}", full["nextCursor"])).await;
    assert_eq!(ids(&rest), [second["id"].clone()]);
    assert!(rest.get("sinceCursor").is_none(), "{rest}");

    let quiet = list(format!("since={cursor}")).await;
    assert_eq!(ids(&quiet), Vec::<Value>::new(), "nothing changed");
    let cursor = quiet["sinceCursor"].as_i64().unwrap();

    let body = json!({"code": first["code"], "gate": "north"});
    assert_eq!(scan(&app, &staff, body).await.status(), 200);
    let changed = list(format!("since={cursor}")).await;
    assert_eq!(ids(&changed), [first["id"].clone()]);
    assert_eq!(changed["items"][0]["status"], "checked_in");
    let cursor = changed["sinceCursor"].as_i64().unwrap();

    let scanned_at = (Utc::now() - TimeDelta::hours(1)).to_rfc3339();
    let offline =
        json!({"scans": [{"code": second["code"], "gate": "east", "scannedAt": scanned_at}]});
    assert_eq!(upload(&app, &staff, offline).await.status(), 200);
    let changed = list(format!("since={cursor}")).await;
    let items = changed["items"].as_array().unwrap();
    let line = json!({"ticketId": second["id"], "version": 1, "status": "checked_in"});
    assert!(
        items.contains(&line),
        "an offline check-in of an hour ago is a change now: {changed}"
    );

    let bad = app
        .get(&format!(
            "/v1/schedules/{}/checkin-list?since=-5",
            sale.schedule
        ))
        .bearer_auth(&staff)
        .send()
        .await
        .unwrap();
    assert_problem(bad, 400, "validation_failed").await;
}

#[tokio::test]
async fn concurrent_uploads_of_one_code_keep_the_earliest_scan() {
    let app = spawn_app().await;
    let (ticket, _) = bought_ticket(&app, 68).await;
    let code = ticket["code"].as_str().unwrap();
    let staff = app.token(7_006, Role::Staff);
    let now = Utc::now().trunc_subsecs(0);
    let uploads = (0..10).map(|i| {
        let at = now - TimeDelta::minutes(20 - i);
        let body = json!({"scans": [{"code": code, "gate": format!("gate-{i}"), "scannedAt": at.to_rfc3339()}]});
        let (app, staff) = (&app, &staff);
        async move { upload(app, staff, body).await.status().as_u16() }
    });
    let statuses = join_all(uploads).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");

    let again = scan(&app, &staff, json!({"code": code, "gate": "online"})).await;
    let refused = assert_problem(again, 409, "already_checked_in").await;
    assert_eq!(refused["gate"], "gate-0", "the earliest of the ten");
    assert_eq!(time(&refused["at"]), now - TimeDelta::minutes(20));
    let events = outbox_payloads(&app.db, "TicketCheckedIn").await;
    assert!(events.iter().any(|e| e["gate"] == "gate-0"));
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
