//! Abuse limits (per user, per client IP; shared through Redis across
//! instances) on the operations a crowd hammers, and CORS for browser
//! clients on other origins.

use std::num::NonZeroU32;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{
    TestApp, assert_problem, redis_url, spawn_app, spawn_app_with, spawn_sibling,
};

fn one() -> Option<NonZeroU32> {
    NonZeroU32::new(1)
}

async fn charge(app: &TestApp, user: i64) -> reqwest::Response {
    app.post("/v1/wallet/charges")
        .bearer_auth(app.user_token(user))
        .json(&json!({"amount": 100}))
        .send()
        .await
        .unwrap()
}

async fn balance(app: &TestApp, user: i64) -> i64 {
    let resp = app
        .get("/v1/wallet")
        .bearer_auth(app.user_token(user))
        .send()
        .await
        .unwrap();
    resp.json::<serde_json::Value>().await.unwrap()["balance"]
        .as_i64()
        .unwrap()
}

/// A 429 `rate_limited` with a `Retry-After` of at least a second.
async fn assert_limited(resp: reqwest::Response) {
    let retry: u64 = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!(retry >= 1, "Retry-After {retry}");
    assert_problem(resp, 429, "rate_limited").await;
}

#[tokio::test]
async fn a_user_over_the_limit_is_told_to_wait_and_changes_nothing() {
    // One request a second per user: in the PostgreSQL run the buckets are
    // in Redis, in the SQLite run in the process.
    let app = spawn_app_with(|s| s.rate_limit_per_user = one()).await;
    assert_eq!(charge(&app, 1).await.status(), 201);
    assert_limited(charge(&app, 1).await).await;
    assert_eq!(
        balance(&app, 1).await,
        100,
        "the refused charge changed nothing"
    );
    assert_eq!(
        charge(&app, 2).await.status(),
        201,
        "another user is not held up"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    assert_eq!(
        charge(&app, 1).await.status(),
        201,
        "a second later: allowed again"
    );
    // Reads are not limited.
    for _ in 0..3 {
        balance(&app, 1).await;
    }
}

#[tokio::test]
async fn every_limited_operation_counts_and_refuses_with_429() {
    let app = spawn_app_with(|s| s.rate_limit_per_user = one()).await;
    let requests: [(Method, &str, Option<serde_json::Value>); 8] = [
        (
            Method::POST,
            "/v1/queue/tokens",
            Some(json!({"concertId": 424242})),
        ),
        (Method::POST, "/v1/coupons/424242/issue", None),
        (
            Method::POST,
            "/v1/reservations",
            Some(json!({"scheduleId": 1, "seatId": 1})),
        ),
        (
            Method::POST,
            "/v1/wallet/charges",
            Some(json!({"amount": 5})),
        ),
        (
            Method::POST,
            "/v1/payments",
            Some(json!({"reservationId": 424242})),
        ),
        (Method::POST, "/v1/payments/424242/refunds", None),
        (Method::POST, "/v1/schedules/424242/waitlist", None),
        (Method::POST, "/v1/user-coupons/424242/redemptions", None),
    ];
    for (user, (method, path, body)) in (10..).zip(requests) {
        let send = || {
            let mut req = app
                .client
                .request(method.clone(), app.url(path))
                .bearer_auth(app.user_token(user))
                .header("x-queue-token", "not-admitted");
            if let Some(body) = &body {
                req = req.json(body);
            }
            req.send()
        };
        let first = send().await.unwrap();
        assert_ne!(first.status(), StatusCode::TOO_MANY_REQUESTS, "{path}");
        assert_limited(send().await.unwrap()).await;
    }
}

async fn charge_from(app: &TestApp, user: i64, forwarded_for: &str) -> reqwest::Response {
    app.post("/v1/wallet/charges")
        .bearer_auth(app.user_token(user))
        .header("x-forwarded-for", forwarded_for)
        .json(&json!({"amount": 100}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn one_address_over_its_limit_is_refused_whoever_it_says_it_is() {
    let app = spawn_app_with(|s| s.rate_limit_per_ip = one()).await;
    assert_eq!(charge_from(&app, 3, "198.51.100.1").await.status(), 201);
    // Nobody is a trusted proxy: the header is the client's invention.
    assert_limited(charge_from(&app, 4, "198.51.100.2").await).await;
    assert_eq!(balance(&app, 4).await, 0);
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_limit() {
    let app = spawn_app_with(|s| {
        s.rate_limit_per_ip = one();
        s.trusted_proxies = vec!["127.0.0.0/8".into()];
    })
    .await;
    // The load balancer (loopback here) appends each client's address.
    assert_eq!(charge_from(&app, 3, "198.51.100.1").await.status(), 201);
    assert_eq!(charge_from(&app, 4, "198.51.100.2").await.status(), 201);
    // A client spoofing an address left of the one the proxy saw is
    // counted at the one the proxy saw.
    assert_limited(charge_from(&app, 5, "203.0.113.77, 198.51.100.1").await).await;
    assert_eq!(balance(&app, 5).await, 0);
}

#[tokio::test]
async fn the_per_user_limit_holds_across_instances_sharing_redis() {
    let first = spawn_app_with(|s| {
        s.redis_url = Some(redis_url());
        s.rate_limit_per_user = one();
    })
    .await;
    let second = spawn_sibling(&first, |s| s.rate_limit_per_user = one()).await;
    assert_eq!(charge(&first, 5).await.status(), 201);
    assert_limited(charge(&second, 5).await).await;
    assert_eq!(charge(&second, 6).await.status(), 201);
    assert_eq!(balance(&first, 5).await, 100);
}

#[tokio::test]
async fn browsers_on_an_allowed_origin_get_cors_answers_and_others_do_not() {
    let app =
        spawn_app_with(|s| s.cors_allowed_origins = vec!["https://shop.example".into()]).await;
    let preflight = |origin: &'static str| {
        app.client
            .request(Method::OPTIONS, app.url("/v1/wallet/charges"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type, idempotency-key",
            )
            .send()
    };
    let ok = preflight("https://shop.example").await.unwrap();
    assert!(ok.status().is_success(), "{}", ok.status());
    let header = |resp: &reqwest::Response, name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_lowercase())
            .unwrap_or_default()
    };
    assert_eq!(
        header(&ok, "access-control-allow-origin"),
        "https://shop.example"
    );
    assert!(header(&ok, "access-control-allow-methods").contains("post"));
    for wanted in ["authorization", "content-type", "idempotency-key"] {
        assert!(
            header(&ok, "access-control-allow-headers").contains(wanted),
            "{wanted}: {:?}",
            ok.headers()
        );
    }
    let refused = preflight("https://evil.example").await.unwrap();
    assert_eq!(header(&refused, "access-control-allow-origin"), "");

    let read = app
        .get("/v1/concerts")
        .header("origin", "https://shop.example")
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    assert_eq!(
        header(&read, "access-control-allow-origin"),
        "https://shop.example"
    );

    // Without the flag no origin is allowed.
    let plain = spawn_app().await;
    let read = plain
        .get("/v1/concerts")
        .header("origin", "https://shop.example")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&read, "access-control-allow-origin"), "");
}

#[tokio::test]
async fn the_catalog_lists_anyone_may_read_are_under_the_per_ip_limit() {
    let app = spawn_app_with(|s| s.rate_limit_per_ip = one()).await;
    for path in ["/v1/concerts", "/v1/concerts/1/schedules"] {
        let first = app.get(path).send().await.unwrap();
        assert_ne!(first.status(), StatusCode::TOO_MANY_REQUESTS, "{path}");
        assert_limited(app.get(path).send().await.unwrap()).await;
        // A second a bucket: the next path starts full again.
        tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    }
}
