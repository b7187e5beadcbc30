//! The waiting room over HTTP: entering, polling, leaving, the guard in
//! front of the seat map, admin settings and stats, events, two instances.

use std::time::Duration;

use boxoffice::{
    kernel::{ConcertId, UserId, Validity},
    queue::{domain::QueuePass, infra::tokens::JwtQueueTokens, ports::QueueTokens},
};
use chrono::{TimeDelta, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{
    TEST_QUEUE_SECRET, TestApp, assert_problem, concert_body, eventually, redis_url, spawn_app,
    spawn_app_with, spawn_sibling,
};

const WAIT: Duration = Duration::from_secs(20);

async fn seats_with(
    app: &TestApp,
    user: i64,
    queue_token: Option<&str>,
    created: &Value,
) -> reqwest::Response {
    let mut req = app
        .get(&format!(
            "/v1/schedules/{}/seats",
            created["schedules"][0]["id"]
        ))
        .bearer_auth(app.user_token(user));
    if let Some(token) = queue_token {
        req = req.header("x-queue-token", token);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn entering_twice_keeps_the_place_and_positions_follow_arrival() {
    // One admitted at a time, so the rest wait in order.
    let app = spawn_app_with(|s| s.queue_max_active = 1).await;
    let concert = app.create_concert(&concert_body(1, 1)).await["id"].clone();
    let first = app.admitted_token(1, &concert).await;
    let second = app.enter_queue(2, &concert).await;
    let third = app.enter_queue(3, &concert).await;
    assert_eq!(
        (second["status"].as_str(), second["position"].as_u64()),
        (Some("waiting"), Some(1))
    );
    assert_eq!(third["position"], 2);
    assert!(third["pollAfterSeconds"].as_u64().unwrap() >= 1);

    let again = app.enter_queue(3, &concert).await;
    assert_eq!(again["position"], 2, "one identity, one place");
    let status = app.queue_status(third["token"].as_str().unwrap()).await;
    assert_eq!(status["status"], "waiting");
    assert_eq!(
        (status["position"].as_u64(), status["ahead"].as_u64()),
        (Some(2), Some(1))
    );
    assert!(status["estimatedWaitSeconds"].as_u64().is_some());
    assert!(status["activeUntil"].is_null());

    let active = app.queue_status(&first).await;
    assert_eq!(active["status"], "active");
    assert!(chrono::DateTime::parse_from_rfc3339(active["activeUntil"].as_str().unwrap()).is_ok());

    // The first leaves: the second is admitted on the next tick, the third moves up.
    let resp = app
        .client
        .delete(app.url("/v1/queue/tokens/current"))
        .header("x-queue-token", &first)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(app.queue_status(&first).await["status"], "expired");
    let second_token = second["token"].as_str().unwrap().to_owned();
    eventually("the second to be admitted", WAIT, || async {
        (app.queue_status(&second_token).await["status"] == "active").then_some(())
    })
    .await;
    assert_eq!(
        app.queue_status(third["token"].as_str().unwrap()).await["position"],
        1
    );
}

#[tokio::test]
async fn a_flood_of_polls_is_paced_and_the_honest_poller_is_answered() {
    // One poll a second on average after a burst of ten.
    let app = spawn_app_with(|s| {
        s.queue_max_active = 1;
        s.queue_poll_pace_ms = 1_000;
    })
    .await;
    let concert = app.create_concert(&concert_body(1, 1)).await["id"].clone();
    let flood = app.enter_queue(1, &concert).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let honest = app.enter_queue(2, &concert).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut paced = 0;
    for _ in 0..30 {
        let resp = app
            .get("/v1/queue/status")
            .header("x-queue-token", &flood)
            .send()
            .await
            .unwrap();
        if resp.status() == 429 {
            let retry_after: u64 = resp.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=1).contains(&retry_after), "Retry-After {retry_after}");
            let problem = assert_problem(resp, 429, "rate_limited").await;
            assert!(
                problem["detail"]
                    .as_str()
                    .unwrap()
                    .contains("pollAfterSeconds"),
                "{problem}"
            );
            paced += 1;
        } else {
            assert_eq!(resp.status(), 200);
        }
    }
    assert!(
        paced >= 30 - 12,
        "only {paced} of 30 rapid polls were paced"
    );
    // Answered 200 (`queue_status` checks it), not paced: another token
    // keeps its own pace. It is second in line, or first once the
    // scheduler has admitted the flood's token to the room's one slot.
    let status = app.queue_status(&honest).await;
    assert_eq!(status["status"], "waiting", "{status}");
    let position = status["position"].as_u64().unwrap();
    assert!((1..=2).contains(&position), "{status}");
}

#[tokio::test]
async fn the_seat_map_admits_only_the_right_admitted_token() {
    let app = spawn_app_with(|s| s.queue_max_active = 1).await;
    let created = app.create_concert(&concert_body(1, 1)).await;
    let other = app.create_concert(&concert_body(1, 1)).await;
    let admitted = app.admitted_token(1, &created["id"]).await;
    let waiting = app.enter_queue(2, &created["id"]).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let other_concert = app.admitted_token(1, &other["id"]).await;

    assert_eq!(
        seats_with(&app, 1, Some(&admitted), &created)
            .await
            .status(),
        200
    );
    assert_problem(
        seats_with(&app, 2, Some(&waiting), &created).await,
        403,
        "queue_not_admitted",
    )
    .await;
    assert_problem(
        seats_with(&app, 1, Some(&other_concert), &created).await,
        403,
        "forbidden",
    )
    .await;
    assert_problem(
        seats_with(&app, 2, Some(&admitted), &created).await,
        403,
        "forbidden",
    )
    .await;
    assert_problem(
        seats_with(&app, 1, None, &created).await,
        401,
        "unauthorized",
    )
    .await;
    assert_problem(
        seats_with(&app, 1, Some("garbage"), &created).await,
        401,
        "unauthorized",
    )
    .await;

    let forged = JwtQueueTokens::new(b"someone-else").issue(
        &QueuePass {
            token_id: Uuid::new_v4(),
            user: UserId(1),
            concert: ConcertId(created["id"].as_i64().unwrap()),
        },
        Validity::new(Utc::now(), TimeDelta::hours(1)),
    );
    assert_problem(
        seats_with(&app, 1, Some(&forged.unwrap()), &created).await,
        401,
        "unauthorized",
    )
    .await;
    let expired = JwtQueueTokens::new(TEST_QUEUE_SECRET.as_bytes()).issue(
        &QueuePass {
            token_id: Uuid::new_v4(),
            user: UserId(1),
            concert: ConcertId(created["id"].as_i64().unwrap()),
        },
        Validity::new(Utc::now() - TimeDelta::hours(2), TimeDelta::hours(1)),
    );
    assert_problem(
        seats_with(&app, 1, Some(&expired.unwrap()), &created).await,
        401,
        "unauthorized",
    )
    .await;
    // An identity token is not a queue token.
    assert_problem(
        seats_with(&app, 1, Some(&app.user_token(1)), &created).await,
        401,
        "unauthorized",
    )
    .await;

    let resp = app
        .client
        .delete(app.url("/v1/queue/tokens/current"))
        .header("x-queue-token", &admitted)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_problem(
        seats_with(&app, 1, Some(&admitted), &created).await,
        403,
        "queue_not_admitted",
    )
    .await;
}

#[tokio::test]
async fn bad_queue_requests_are_refused() {
    let app = spawn_app().await;
    let user = app.user_token(1);
    let enter = |body: Value| {
        app.post("/v1/queue/tokens")
            .bearer_auth(&user)
            .json(&body)
            .send()
    };
    assert_problem(
        enter(json!({"concertId": 424242})).await.unwrap(),
        404,
        "not_found",
    )
    .await;
    assert_problem(
        enter(json!({"concertId": "one"})).await.unwrap(),
        400,
        "validation_failed",
    )
    .await;
    assert_problem(enter(json!({})).await.unwrap(), 400, "validation_failed").await;
    let anonymous = app
        .post("/v1/queue/tokens")
        .json(&json!({"concertId": 1}))
        .send()
        .await
        .unwrap();
    assert_problem(anonymous, 401, "unauthorized").await;
    assert_problem(
        app.get("/v1/queue/status").send().await.unwrap(),
        401,
        "unauthorized",
    )
    .await;
    let forged = app
        .get("/v1/queue/status")
        .header("x-queue-token", "x.y.z")
        .send()
        .await
        .unwrap();
    assert_problem(forged, 401, "unauthorized").await;
    let leave = app
        .client
        .delete(app.url("/v1/queue/tokens/current"))
        .send()
        .await
        .unwrap();
    assert_problem(leave, 401, "unauthorized").await;
}

#[tokio::test]
async fn admins_see_the_rooms_and_change_settings_at_runtime() {
    let app = spawn_app_with(|s| s.queue_max_active = 2).await;
    let admin = app.admin_token();
    let concert = app.create_concert(&concert_body(1, 1)).await["id"].clone();
    for user in 1..=5 {
        app.enter_queue(user, &concert).await;
    }
    let rooms = eventually("two admitted", WAIT, || async {
        let rooms = app.get_json("/v1/admin/queue").await;
        (rooms["items"][0]["active"] == 2).then_some(rooms)
    })
    .await;
    assert_eq!(rooms["items"].as_array().unwrap().len(), 1, "{rooms}");
    assert!(
        rooms.get("nextCursor").is_none(),
        "one room, one page: {rooms}"
    );
    let room = &rooms["items"][0];
    assert_eq!(room["concertId"], concert);
    assert_eq!(
        (
            room["waiting"].as_u64(),
            room["admittedLastMinute"].as_u64()
        ),
        (Some(3), Some(2))
    );
    assert_eq!(room["admittedTotal"], 2);
    // 3 waiting at the measured 2 a minute.
    assert_eq!(room["tailWaitSeconds"], 90);
    assert_eq!(room["settings"]["maxActive"], 2);

    let settings = json!({"admitPerSecond": 100, "maxActive": 4, "activeTtlSeconds": 300, "heartbeatGraceSeconds": 60});
    let put = |body: Value, token: String, concert: Value| {
        app.client
            .put(app.url(&format!("/v1/admin/queue/{concert}/settings")))
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    let resp = put(settings.clone(), admin.clone(), concert.clone())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut stored = settings.clone();
    stored["queueingMethod"] = json!("fifo");
    stored["paused"] = json!(false);
    assert_eq!(resp.json::<Value>().await.unwrap(), stored);
    let changed = crate::helpers::outbox_payloads(&app.db, "QueueSettingsChanged").await;
    assert_eq!(changed.len(), 1);
    assert_eq!(
        (
            &changed[0]["concertId"],
            &changed[0]["maxActive"],
            &changed[0]["adminId"]
        ),
        (&concert, &json!(4), &json!(9_000)),
        "the change is recorded with the admin who made it"
    );
    eventually("the new cap to take effect", WAIT, || async {
        (app.get_json("/v1/admin/queue").await["items"][0]["active"] == 4).then_some(())
    })
    .await;

    let mut zero = settings.clone();
    zero["admitPerSecond"] = json!(0);
    assert_problem(
        put(zero, admin.clone(), concert.clone()).await.unwrap(),
        400,
        "validation_failed",
    )
    .await;
    let mut short_grace = settings.clone();
    short_grace["heartbeatGraceSeconds"] = json!(5);
    assert_problem(
        put(short_grace, admin.clone(), concert.clone())
            .await
            .unwrap(),
        400,
        "validation_failed",
    )
    .await;
    assert_problem(
        put(settings.clone(), admin.clone(), json!(424242))
            .await
            .unwrap(),
        404,
        "not_found",
    )
    .await;
    assert_problem(
        put(settings.clone(), app.user_token(1), concert.clone())
            .await
            .unwrap(),
        403,
        "forbidden",
    )
    .await;
    assert_eq!(
        app.get_json("/v1/admin/queue").await["items"][0]["settings"]["maxActive"],
        4,
        "refused changes change nothing"
    );
}

#[tokio::test]
async fn a_room_opens_with_its_pre_queue_shuffled_ahead_of_later_arrivals_and_can_pause_and_close()
{
    let app = spawn_app().await;
    let admin = app.admin_token();
    let concert = app.create_concert(&concert_body(1, 1)).await["id"].clone();
    let put = |body: Value| {
        app.client
            .put(app.url(&format!("/v1/admin/queue/{concert}/settings")))
            .bearer_auth(admin.clone())
            .json(&body)
            .send()
    };
    let opens_at = (Utc::now() + TimeDelta::seconds(3)).to_rfc3339();
    let rates = json!({"admitPerSecond": 100, "maxActive": 1, "activeTtlSeconds": 300, "heartbeatGraceSeconds": 60});
    let mut opening = rates.clone();
    opening["opensAt"] = json!(opens_at);
    let resp = put(opening).await.unwrap();
    assert_eq!(resp.status(), 200);
    let saved: Value = resp.json().await.unwrap();
    assert_eq!(
        (&saved["queueingMethod"], &saved["paused"]),
        (&json!("fifo"), &json!(false))
    );
    let opens = chrono::DateTime::parse_from_rfc3339(saved["opensAt"].as_str().unwrap()).unwrap();

    let mut early = Vec::new();
    for user in 1..=6 {
        let ticket = app.enter_queue(user, &concert).await;
        assert_eq!(ticket["status"], "prequeue", "{ticket}");
        assert!(
            ticket.get("position").is_none(),
            "no place before the opening"
        );
        early.push(ticket["token"].as_str().unwrap().to_owned());
    }
    let status = app.queue_status(&early[0]).await;
    assert_eq!(status["status"], "prequeue");
    let said = chrono::DateTime::parse_from_rfc3339(status["opensAt"].as_str().unwrap()).unwrap();
    assert_eq!(said, opens);
    assert!(status["estimatedWaitSeconds"].as_u64().unwrap() <= 3);
    assert_eq!(
        app.get_json("/v1/admin/queue").await["items"][0]["active"],
        0,
        "nobody is admitted before the opening"
    );

    // At the opening one is admitted (maxActive 1); the other five hold
    // the first five places, and a later arrival queues behind them.
    eventually("the opening", WAIT, || async {
        (app.get_json("/v1/admin/queue").await["items"][0]["active"] == 1).then_some(())
    })
    .await;
    // Settled: one active for five minutes, nobody else admitted meanwhile.
    let mut states = Vec::new();
    for token in &early {
        states.push(app.queue_status(token).await);
    }
    let mut positions: Vec<u64> = states
        .iter()
        .filter_map(|s| s["position"].as_u64())
        .collect();
    positions.sort();
    assert_eq!(positions, [1, 2, 3, 4, 5], "{states:?}");
    let late = app.enter_queue(7, &concert).await;
    assert_eq!(
        (&late["status"], &late["position"]),
        (&json!("waiting"), &json!(6))
    );

    // Paused: the active one leaves and nobody takes the slot.
    let mut paused = rates.clone();
    paused["paused"] = json!(true);
    let saved: Value = put(paused).await.unwrap().json().await.unwrap();
    assert_eq!(saved["paused"], true);
    assert!(
        saved["opensAt"].is_string(),
        "left out, the opening is kept"
    );
    let active = early
        .iter()
        .zip(&states)
        .find(|(_, s)| s["status"] == "active")
        .unwrap()
        .0
        .clone();
    let resp = app
        .client
        .delete(app.url("/v1/queue/tokens/current"))
        .header("x-queue-token", &active)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let room = &app.get_json("/v1/admin/queue").await["items"][0];
    assert_eq!(
        (&room["active"], &room["waiting"]),
        (&json!(0), &json!(6)),
        "{room}"
    );
    let mut resumed = rates.clone();
    resumed["paused"] = json!(false);
    put(resumed).await.unwrap();
    eventually("admission to resume", WAIT, || async {
        (app.get_json("/v1/admin/queue").await["items"][0]["active"] == 1).then_some(())
    })
    .await;

    // Closed: newcomers are refused, a held place is still answered.
    let mut closed = rates.clone();
    closed["queueingMethod"] = json!("closed");
    assert_eq!(put(closed).await.unwrap().status(), 200);
    let resp = app
        .post("/v1/queue/tokens")
        .bearer_auth(app.user_token(8))
        .json(&json!({ "concertId": concert }))
        .send()
        .await
        .unwrap();
    assert_problem(resp, 409, "queue_closed").await;
    let again = app.enter_queue(7, &concert).await;
    let now_late = app.queue_status(late["token"].as_str().unwrap()).await;
    assert_eq!(
        (&again["status"], &again["position"]),
        (&now_late["status"], &now_late["position"]),
        "the same place"
    );

    let mut bad = rates.clone();
    bad["queueingMethod"] = json!("lottery");
    assert_problem(put(bad).await.unwrap(), 400, "validation_failed").await;
    assert_eq!(
        app.get_json("/v1/admin/queue").await["items"][0]["settings"]["queueingMethod"],
        "closed"
    );
}

#[tokio::test]
async fn the_rooms_come_in_pages_in_concert_order() {
    let app = spawn_app().await;
    let mut concerts = Vec::new();
    for user in 1..=3 {
        let concert = app.create_concert(&concert_body(1, 1)).await["id"].clone();
        app.admitted_token(user, &concert).await;
        concerts.push(concert);
    }
    let rooms = |page: &Value| -> Vec<Value> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["concertId"].clone())
            .collect()
    };
    let all = app.get_json("/v1/admin/queue").await;
    assert_eq!(rooms(&all), concerts);
    assert!(all.get("nextCursor").is_none(), "{all}");
    let first = app.get_json("/v1/admin/queue?limit=2").await;
    assert_eq!(rooms(&first), concerts[..2].to_vec());
    assert_eq!(first["nextCursor"], concerts[1]);
    let rest = app
        .get_json(&format!(
            "/v1/admin/queue?limit=2&after={}",
            first["nextCursor"]
        ))
        .await;
    assert_eq!(rooms(&rest), concerts[2..].to_vec());
    assert_eq!(rest["items"][0]["active"], 1);
    assert!(rest.get("nextCursor").is_none(), "{rest}");
}

#[tokio::test]
async fn waiting_room_events_reach_the_data_platform() {
    let app = spawn_app().await;
    let concert = app.create_concert(&concert_body(1, 1)).await["id"].clone();
    let token = app.admitted_token(5, &concert).await;
    app.client
        .delete(app.url("/v1/queue/tokens/current"))
        .header("x-queue-token", &token)
        .send()
        .await
        .unwrap();
    let lines = eventually("queue events as data-platform lines", WAIT, || async {
        let lines: Vec<Value> = app
            .data_platform_lines()
            .into_iter()
            .filter(|l| l["aggregateType"] == "queue")
            .collect();
        (lines.len() >= 3).then_some(lines)
    })
    .await;
    let types: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
    assert_eq!(types, vec!["QueueEntered", "QueueAdmitted", "QueueLeft"]);
    assert!(
        lines
            .iter()
            .all(|l| l["payload"]["userId"] == 5 && l["aggregateId"] == json!(concert.to_string()))
    );
}

/// Two server instances, each running the admission scheduler, on one Redis.
#[tokio::test]
async fn two_instances_on_one_redis_never_over_admit() {
    let first = spawn_app_with(|s| {
        s.redis_url = Some(redis_url());
        s.queue_max_active = 7;
        s.queue_admit_per_second = 1_000;
    })
    .await;
    let second = spawn_sibling(&first, |s| {
        s.queue_max_active = 7;
        s.queue_admit_per_second = 1_000;
    })
    .await;
    let concert = first.create_concert(&concert_body(1, 1)).await["id"].clone();
    let mut tokens = Vec::new();
    for user in 1..=30 {
        let app = if user % 2 == 0 { &first } else { &second };
        tokens.push(
            app.enter_queue(user, &concert).await["token"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    eventually("seven admitted", WAIT, || async {
        (first.get_json("/v1/admin/queue").await["items"][0]["active"] == 7).then_some(())
    })
    .await;
    // Give both schedulers many more ticks to over-admit, if they could.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut active = 0;
    for token in &tokens {
        if second.queue_status(token).await["status"] == "active" {
            active += 1;
        }
    }
    assert_eq!(active, 7);
    assert_eq!(
        second.get_json("/v1/admin/queue").await["items"][0]["waiting"],
        23
    );
}
