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
