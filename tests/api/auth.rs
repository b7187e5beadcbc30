use boxoffice::{
    auth::{
        domain::{Identity, Role},
        infra::jwt::JwtCodec,
        ports::TokenCodec,
    },
    kernel::{UserId, Validity},
};
use chrono::{TimeDelta, Utc};
use serde_json::json;

use crate::helpers::{TEST_JWT_SECRET, assert_problem, concert_body, sign, spawn_app};

#[tokio::test]
async fn admin_endpoint_refuses_missing_invalid_expired_and_non_admin_tokens() {
    let app = spawn_app().await;
    let body = concert_body(1, 1);
    let exp = (Utc::now() + TimeDelta::hours(1)).timestamp();
    let expired = JwtCodec::new(TEST_JWT_SECRET.as_bytes())
        .issue(
            Identity {
                user_id: UserId(1),
                role: Role::Admin,
            },
            Validity::new(Utc::now() - TimeDelta::hours(2), TimeDelta::hours(1)),
        )
        .unwrap();
    let cases: Vec<(Option<String>, u16, &str)> = vec![
        (None, 401, "unauthorized"),
        (Some("not-a-jwt".into()), 401, "unauthorized"),
        (
            Some(sign(
                json!({"sub": "1", "role": "admin", "exp": exp}),
                "wrong-secret",
            )),
            401,
            "unauthorized",
        ),
        (Some(expired), 401, "unauthorized"),
        (
            Some(sign(
                json!({"sub": "abc", "role": "admin", "exp": exp}),
                TEST_JWT_SECRET,
            )),
            401,
            "unauthorized",
        ),
        (
            Some(sign(
                json!({"sub": "1", "role": "root", "exp": exp}),
                TEST_JWT_SECRET,
            )),
            401,
            "unauthorized",
        ),
        (
            Some(sign(json!({"sub": "1", "role": "admin"}), TEST_JWT_SECRET)),
            401,
            "unauthorized",
        ),
        (Some(app.user_token(5)), 403, "forbidden"),
    ];
    for (token, status, code) in cases {
        let mut req = app.post("/v1/admin/concerts").json(&body);
        if let Some(token) = &token {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.unwrap();
        if status == 401 {
            assert_eq!(resp.headers()["www-authenticate"], "Bearer");
        }
        assert_problem(resp, status, code).await;
    }
    let concerts: serde_json::Value = app
        .get("/v1/concerts")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        concerts,
        serde_json::json!({"items": []}),
        "a refused request must not write anything"
    );
}

#[tokio::test]
async fn seat_map_needs_a_user_token_and_an_admitted_queue_token() {
    let app = spawn_app().await;
    let created = app.create_concert(&concert_body(1, 1)).await;
    let path = format!("/v1/schedules/{}/seats", created["schedules"][0]["id"]);
    let queue_token = app.admitted_token(3, &created["id"]).await;

    let no_identity = app
        .get(&path)
        .header("x-queue-token", &queue_token)
        .send()
        .await
        .unwrap();
    assert_problem(no_identity, 401, "unauthorized").await;
    let no_queue_token = app
        .get(&path)
        .bearer_auth(app.user_token(3))
        .send()
        .await
        .unwrap();
    assert_problem(no_queue_token, 401, "unauthorized").await;
    let resp = app
        .get(&path)
        .bearer_auth(app.user_token(3))
        .header("x-queue-token", &queue_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // Admins are users too, and queue like everyone else.
    let admin_queue_token = app.admitted_token(9_000, &created["id"]).await;
    let resp = app
        .get(&path)
        .bearer_auth(app.admin_token())
        .header("x-queue-token", &admin_queue_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

/// A door staff account scans tickets and does nothing else: every user's
/// and operator's endpoint refuses its token 403, and nothing is written.
#[tokio::test]
async fn a_staff_token_may_neither_buy_nor_operate() {
    let app = spawn_app().await;
    let created = app.create_concert(&concert_body(1, 1)).await;
    let schedule = &created["schedules"][0]["id"];
    let queue_token = app.admitted_token(77, &created["id"]).await;
    let seat = app.seat_page(77, &queue_token, schedule, "").await["items"][0].clone();
    let staff = app.token(77, Role::Staff);

    let wallet = app
        .get("/v1/wallet")
        .bearer_auth(&staff)
        .send()
        .await
        .unwrap();
    let problem = assert_problem(wallet, 403, "forbidden").await;
    assert_eq!(problem["detail"], "staff tokens may only scan tickets");
    let hold = app
        .post("/v1/reservations")
        .bearer_auth(&staff)
        .header("x-queue-token", &queue_token)
        .json(&json!({"scheduleId": schedule, "seatId": seat["id"]}))
        .send()
        .await
        .unwrap();
    assert_problem(hold, 403, "forbidden").await;
    let queue = app
        .post("/v1/queue/tokens")
        .bearer_auth(&staff)
        .json(&json!({"concertId": created["id"]}))
        .send()
        .await
        .unwrap();
    assert_problem(queue, 403, "forbidden").await;
    let operate = app
        .post("/v1/admin/concerts")
        .bearer_auth(&staff)
        .json(&concert_body(1, 1))
        .send()
        .await
        .unwrap();
    let problem = assert_problem(operate, 403, "forbidden").await;
    assert_ne!(problem["detail"], "staff tokens may only scan tickets");

    let after = app.seat_page(77, &queue_token, schedule, "").await["items"][0].clone();
    assert_eq!(after["status"], "available", "no seat was held: {after}");
    let concerts = app.get_json("/v1/concerts").await;
    assert_eq!(
        concerts["items"].as_array().unwrap().len(),
        1,
        "no concert made"
    );
}
